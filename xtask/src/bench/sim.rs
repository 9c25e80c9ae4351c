//! Case 3: the scheduler in the deterministic simulation. Runs the two
//! swarm scenarios of `testkit/tests/sim.rs` and turns the lines they print
//! (simulated seconds, the ideal, and for unequal peers the blind
//! round-robin figure) into rows.

use super::measure;
use super::report::{Row, Section, Target};
use super::Opts;

/// The number after `key` in `line` (e.g. `ideal 4.200 s`).
fn after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let num: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    num.parse().ok()
}

/// The simulated seconds right after the `label:` prefix.
fn measured(line: &str, label: &str) -> Option<f64> {
    after(line, &format!("{label}:"))
}

/// Runs case 3.
pub fn run(opts: &Opts) -> Result<Section, String> {
    let mut cmd = crate::cargo();
    cmd.current_dir(&opts.root).args([
        "test",
        "-p",
        "lanspread-testkit",
        "--release",
        "--test",
        "sim",
        "--",
        "--nocapture",
        "five_equal",
        "one_slow",
    ]);
    super::log(&format!("bench 3: {}", measure::show(&cmd)));
    let out = cmd.output().map_err(|e| format!("{}: {e}", measure::show(&cmd)))?;
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut sec = Section::default();
    let mut details = String::from(
        "## Case 3: scheduler in simulation\n\n`cargo test -p lanspread-testkit --release --test sim -- --nocapture five_equal one_slow` \
         (simulated time, exact and repeatable; 200 MiB game, downloader link 100 MB/s):\n\n```text\n",
    );
    let mut found = 0;
    for line in text.lines() {
        if let Some(l) = line.find("5 equal seeders:").map(|i| &line[i..]) {
            details.push_str(l);
            details.push('\n');
            if let (Some(s), Some(i)) = (measured(l, "5 equal seeders"), after(l, "ideal")) {
                found += 1;
                sec.rows.push(
                    Row::cmp("3 sim: 5 equal seeders (10 MB/s each)", s, "ideal (bytes / sum of rates)", i, "simulated seconds".into())
                        .target(Target::AtMost(1.0 / 0.9)),
                );
                sec.reading.push(format!(
                    "Case 3: with 5 equal seeders the simulated download takes {s:.2} s = {:.3}× ideal (efficiency {:.2}).",
                    s / i,
                    i / s
                ));
            }
        }
        if let Some(l) = line.find("5 seeders, one at 1/10:").map(|i| &line[i..]) {
            details.push_str(l);
            details.push('\n');
            if let (Some(s), Some(i), Some(rr)) = (measured(l, "5 seeders, one at 1/10"), after(l, "ideal"), after(l, "would need")) {
                found += 1;
                sec.rows.push(
                    Row::cmp("3 sim: 4 × 10 MB/s + 1 × 1 MB/s seeders", s, "ideal (bytes / sum of rates)", i, "simulated seconds".into())
                        .target(Target::AtMost(1.0 / 0.9)),
                );
                sec.rows.push(Row::cmp(
                    "3 sim: 4 × 10 MB/s + 1 × 1 MB/s seeders vs blind round-robin",
                    s,
                    "blind round-robin (1/5 of the game each)",
                    rr,
                    "simulated seconds".into(),
                ));
                sec.reading.push(format!(
                    "Case 3: with one seeder at a tenth of the others' rate: {s:.2} s = {:.3}× ideal, where a blind round-robin would need {rr:.2} s ({:.1}× ideal).",
                    s / i,
                    rr / i
                ));
            }
        }
    }
    details.push_str("```\n\n");
    if !out.status.success() {
        details.push_str(&format!("The test command failed ({}); rows above are what it printed.\n\n", out.status));
    }
    details.push_str(
        "Many downloaders (1, 4, 16, 64): not reported — there is no swarming scenario (downloaders serving each other) in the simulation yet.\n\n",
    );
    sec.details = details;
    if found == 0 {
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        return Err(format!("no scenario lines in the test output ({}): {}", out.status, tail.join(" / ")));
    }
    Ok(sec)
}
