//! Case 4: library scan, timed as `lanspread status --games DIR --json`
//! (which scans with the on-disk index `.lanspread-index.bin` and saves it).
//! - first scan: no index, every file hashed (page cache dropped first when
//!   permitted); baseline: reading every file (`find -exec cat`);
//! - rescan with no change (target < 1 s); baseline: a `find` stat walk;
//! - rescan after one file of one game changed.

use super::gen::{self, Library};
use super::measure::{self, Finished};
use super::report::{Row, Section, Target};
use super::tools::Tools;
use super::{log, Opts};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const GAMES: usize = 200;
const FILES_PER_GAME: usize = 500;

fn status(opts: &Opts, lib: &Library, logs: &Path, name: &str) -> Result<Finished, String> {
    let mut cmd = Command::new(&opts.bin);
    cmd.env("LANSPREAD_CONFIG_DIR", opts.work().join("scan").join("cfg"));
    cmd.args(["status", "--json", "--games"]).arg(&lib.dir);
    let f = measure::run_measured(name, &mut cmd, logs, Duration::from_secs(1800))?;
    let v: serde_json::Value = serde_json::from_str(&f.stdout).map_err(|e| format!("status --json: {e}"))?;
    let have = v.as_array().map_or(0, |a| a.iter().filter(|g| !g["local_version"].is_null()).count());
    if have != lib.ids.len() {
        return Err(format!("status saw {have} local games, expected {}", lib.ids.len()));
    }
    Ok(f)
}

fn shell(name: &str, script: &str, dir: &Path, logs: &Path) -> Result<Finished, String> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script, "sh"]).arg(dir);
    measure::run_measured(name, &mut cmd, logs, Duration::from_secs(1800))
}

/// Runs case 4.
pub fn run(opts: &Opts, _tools: &Tools) -> Result<Section, String> {
    let avg = if opts.quick { 2 << 10 } else { 24 << 10 };
    let lib = gen::library(&opts.data(), GAMES, FILES_PER_GAME, avg)?;
    let work = opts.work().join("scan");
    let logs = work.join("logs");
    measure::fresh_dir(&work)?;
    let (mb, gb) = (lib.bytes as f64 / 1e6, lib.bytes as f64 / 1e9);
    log(&format!("bench 4: library {} games, {} files, {:.2} GB", lib.ids.len(), lib.files, gb));
    let index = lib.dir.join(".lanspread-index.bin");
    let runs = opts.runs;
    // Each first scan hashes the whole library cold: one in quick mode.
    let first_runs = if opts.quick { 1 } else { runs };

    // First scan (hash everything), alternating with the read floor.
    let (mut first, mut first_cpu, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..first_runs {
        let _ = std::fs::remove_file(&index);
        measure::settle(opts.cold);
        let f = status(opts, &lib, &logs, "status-first")?;
        log(&format!("bench 4: first scan {}: {:.3} s wall, {:.2} CPU s", r + 1, f.wall, f.cpu));
        first.push(f.wall);
        first_cpu.push(f.cpu);
        measure::settle(opts.cold);
        let c = shell("read-floor", "find \"$1\" -type f -exec cat {} + > /dev/null", &lib.dir, &logs)?;
        read.push(c.wall);
    }
    if !index.is_file() {
        return Err(format!("`lanspread status` did not save {}: the rescan figures would be first scans", index.display()));
    }
    // Rescan with nothing changed (warm), alternating with a stat walk.
    let (mut again, mut walk) = (Vec::new(), Vec::new());
    for r in 0..opts.warmup + runs {
        let f = status(opts, &lib, &logs, "status-rescan")?;
        let w = shell("stat-walk", "find \"$1\" -printf '%s %T@ %p\\n' > /dev/null", &lib.dir, &logs)?;
        if r >= opts.warmup {
            again.push(f.wall);
            walk.push(w.wall);
        }
    }
    // One file of one game changes (same bytes, new mtime) before each rescan.
    let changed = lib.dir.join(&lib.ids[lib.ids.len() / 2]).join("d0").join("f0000.bin");
    let mut one = Vec::new();
    for r in 0..opts.warmup + runs {
        let bytes = std::fs::read(&changed).map_err(|e| format!("{}: {e}", changed.display()))?;
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(&changed, bytes).map_err(|e| format!("{}: {e}", changed.display()))?;
        let f = status(opts, &lib, &logs, "status-one-changed")?;
        if r >= opts.warmup {
            one.push(f.wall);
        }
    }
    let (m_first, m_cpu, m_read) = (measure::median(&first), measure::median(&first_cpu), measure::median(&read));
    let (m_again, m_walk, m_one) = (measure::median(&again), measure::median(&walk), measure::median(&one));
    let per_core = mb / m_cpu;
    let size = format!("{} games, {} files, {:.2} GB", lib.ids.len(), lib.files, gb);
    let mut sec = Section::default();
    sec.rows.push(Row::cmp(
        "4 scan: first scan incl. hashing",
        m_first,
        "read every file (find -exec cat)",
        m_read,
        format!(
            "{size}; {:.0} MB/s wall, {per_core:.0} MB/s per CPU-second (per core); {}",
            mb / m_first,
            if opts.cold { "cold cache" } else { "warm cache" }
        ),
    ));
    sec.rows
        .push(Row::cmp("4 scan: rescan, no change", m_again, "target 1 s", 1.0, format!("{size}; warm cache")).target(Target::AtMost(1.0)));
    sec.rows.push(Row::cmp("4 scan: rescan, no change vs stat walk", m_again, "find -printf size+mtime", m_walk, "warm cache".into()));
    sec.rows.push(Row::cmp(
        "4 scan: rescan after one file changed",
        m_one,
        "find -printf size+mtime",
        m_walk,
        format!("one file of one game rewritten; no-change rescan {m_again:.3} s"),
    ));
    sec.reading.push(format!(
        "Case 4 ({size}): first scan {m_first:.2} s ({:.0} MB/s; {per_core:.0} MB/s per core, {:.2}× the time to just read the files); rescan with no change {m_again:.3} s (target < 1 s: {}); after one file changed {m_one:.3} s; a bare `find` stat walk takes {m_walk:.3} s.",
        mb / m_first,
        m_first / m_read,
        if m_again < 1.0 { "met" } else { "missed" }
    ));
    let (flo, fhi) = measure::span(&first);
    sec.details = format!(
        "## Case 4: library scan\n\nLibrary: {size} (file sizes uniform in 1 B–{} KiB, 50 files a folder). Timed: `lanspread status --games DIR --json` \
         (loads `.lanspread-index.bin`, scans, saves the index). First scan: index deleted{} before each of {first_runs} run(s): {m_first:.3} s \
         ({flo:.3}–{fhi:.3}), {m_cpu:.2} CPU s. Read floor (`find -type f -exec cat`): {m_read:.3} s. Rescans: warm cache, {} warm-up + {runs} runs; \
         the changed file is rewritten with the same bytes (new mtime) before each run.\n\n",
        2 * avg / 1024,
        if opts.cold { " and the page cache dropped" } else { "" },
        opts.warmup
    );
    Ok(sec)
}
