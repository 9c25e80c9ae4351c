//! `cargo xtask bench [--quick]`: the benchmarks of issue 7, each figure a
//! ratio against a baseline measured in the same run (the machine is shared
//! and noisy, so absolute seconds mean little on their own).
//!
//! ```text
//! cargo xtask bench [--quick] [--only 1,2,3,4,6] [--warm] [--bin PATH] [--runs N]
//! cargo xtask bench --render [--quick]
//! ```
//!
//! Cases (numbers as in the issue):
//! 1. one seeder → one downloader over loopback (`lanspread serve` / `get
//!    --no-install`, quinn and s2n) vs an rsync daemon, `cp -a` and
//!    `cp -a` + fsync, with the page cache dropped before every run when
//!    permitted (full mode measures a warm cache too);
//! 2. three rate-capped seeders on a namespaced LAN vs the ideal and nginx
//!    mirrors + aria2c (needs root);
//! 3. the scheduler scenarios of the simulation (`testkit/tests/sim.rs`);
//! 4. library scan: first scan with hashing, rescan with no change, rescan
//!    after one file changed (`lanspread status`);
//! 5. peak RSS and CPU seconds per GB, measured during case 1;
//! 6. a `perf` profile of case 1 (when perf works here).
//!
//! A full run writes `BENCHMARKS.md` (table, a short reading, details and
//! the hand-written findings of `xtask/bench/NOTES.md`); `--quick` writes
//! `target/bench/BENCHMARKS-quick.md` instead. Both write
//! `target/bench/latest.json` (one row per figure) and keep their results
//! in `target/bench/cases-{full,quick}.json`, so `--only` re-measures some
//! cases and keeps the others (each case is labelled with its run), and
//! `--render` rebuilds the document after NOTES.md changed. `--warm` keeps
//! the page cache, `--bin` benchmarks a given binary instead of building
//! the workspace's, `--runs` sets the counted runs (default 3).
//!
//! The methods follow the reference baseline scripts in `shared/bench/`
//! (`lib.sh`, `rsync.sh`, `cp-local.sh`, `lan-up.sh`, `lan-shape.sh`,
//! `lan-aria2.sh`, `make-game.py`), adapted into Rust here so the harness
//! runs on a machine without that folder.

mod gen;
mod lanbench;
mod loopback;
mod measure;
mod report;
mod scan;
mod sim;
mod tools;

use report::Row;
use std::path::{Path, PathBuf};
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask bench [--quick] [--only 1,2,3,4,6] [--warm] [--bin PATH] [--runs N] | bench --render [--quick]";

/// What one invocation does.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Smaller data, fewer runs: a fast check (< 5 min).
    pub quick: bool,
    /// Cases to run (5 is measured inside 1).
    pub only: Vec<u32>,
    /// Drop the page cache before each timed run (when permitted).
    pub cold: bool,
    /// Counted runs per figure.
    pub runs: usize,
    /// Uncounted warm-up runs before them.
    pub warmup: usize,
    /// The lanspread binary.
    pub bin: PathBuf,
    /// Whether it was given with `--bin` (else built from the workspace).
    pub bin_given: bool,
    /// Workspace root.
    pub root: PathBuf,
    /// `target/bench`.
    pub out: PathBuf,
}

impl Opts {
    /// Whether case `n` runs.
    pub fn wants(&self, n: u32) -> bool {
        self.only.contains(&n)
    }
    /// Scratch space of this run (wiped at the start).
    pub fn work(&self) -> PathBuf {
        self.out.join("work")
    }
    /// Generated inputs, kept between runs.
    pub fn data(&self) -> PathBuf {
        self.out.join("data")
    }
}

/// Entry point.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("probe-tcp") {
        // Internal: run inside a namespace by the LAN case.
        return lanbench::probe_tcp(args.get(1).ok_or("probe-tcp needs ADDR")?);
    }
    let out = crate::target_dir(root).join("bench");
    if args.first().map(String::as_str) == Some("--render") {
        // Re-render BENCHMARKS.md (or, with --quick, target/bench/BENCHMARKS-quick.md)
        // from the stored results and the current NOTES.md.
        let quick = args.iter().any(|a| a == "--quick");
        let (state, doc) = outputs(root, &out, quick);
        let text = std::fs::read_to_string(&state).map_err(|e| format!("{}: {e} (run the benchmarks first)", state.display()))?;
        let rep = report::Report::from_state(&text)?;
        std::fs::write(&doc, report::with_notes(root, &rep.markdown())).map_err(|e| format!("writing {}: {e}", doc.display()))?;
        std::fs::write(out.join("latest.json"), rep.json()).map_err(|e| format!("writing latest.json: {e}"))?;
        log(&format!("bench: {} and latest.json re-rendered from {} and xtask/bench/NOTES.md", doc.display(), state.display()));
        return Ok(());
    }
    let mut quick = false;
    let mut only: Option<Vec<u32>> = None;
    let mut warm = false;
    let mut bin = None;
    let mut runs = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--warm" => warm = true,
            "--only" => {
                let list = it.next().ok_or("--only needs a list such as 1,4")?;
                only = Some(
                    list.split(',')
                        .map(|s| s.trim().parse::<u32>().map_err(|_| format!("--only: {s:?} is not a case number")))
                        .collect::<Result<_, _>>()?,
                );
            }
            "--bin" => bin = Some(PathBuf::from(it.next().ok_or("--bin needs PATH")?)),
            "--runs" => runs = Some(it.next().ok_or("--runs needs N")?.parse::<usize>().map_err(|_| "--runs needs a number")?),
            other => return Err(format!("unknown bench argument {other:?}\n{USAGE}")),
        }
    }
    let mut only = only.unwrap_or_else(|| vec![1, 2, 3, 4, 5, 6]);
    if only.contains(&5) || only.contains(&6) {
        // Memory and the profile are measured during case 1.
        if !only.contains(&1) {
            only.push(1);
        }
    }
    if only.contains(&1) && !only.contains(&5) {
        only.push(5);
    }
    only.sort_unstable();
    let started = Instant::now();
    let bin_given = bin.is_some();
    let bin = crate::lanspread_bin(root, bin)?;
    let cold = !warm && measure::can_drop_caches();
    let opts = Opts {
        quick,
        only,
        cold,
        runs: runs.unwrap_or(3).max(1),
        warmup: if quick { 0 } else { 1 },
        bin,
        bin_given,
        root: root.to_path_buf(),
        out: out.clone(),
    };
    let _ = std::fs::remove_dir_all(opts.work());
    std::fs::create_dir_all(opts.work()).map_err(|e| format!("{}: {e}", opts.work().display()))?;
    std::fs::create_dir_all(opts.data()).map_err(|e| format!("{}: {e}", opts.data().display()))?;
    let tools = tools::ensure(&opts)?;
    log(&format!(
        "bench: {} mode, cases {:?}, {} counted run(s) after {} warm-up, page cache {}",
        if quick { "quick" } else { "full" },
        opts.only,
        opts.runs,
        opts.warmup,
        if opts.cold { "dropped before every timed run" } else { "warm (not dropped)" }
    ));

    let mut rep = report::Report::new(&opts, &tools);
    if opts.wants(1) {
        step(&mut rep, "1", || loopback::run(&opts, &tools));
    }
    if opts.wants(2) {
        step(&mut rep, "2", || lanbench::run(&opts, &tools));
    }
    if opts.wants(3) {
        step(&mut rep, "3", || sim::run(&opts));
    }
    if opts.wants(4) {
        step(&mut rep, "4", || scan::run(&opts, &tools));
    }
    rep.elapsed = started.elapsed().as_secs_f64();
    // Cases not run now (--only) keep their figures from the last run of the same mode.
    // A quick run never replaces BENCHMARKS.md: it writes target/bench/BENCHMARKS-quick.md.
    let (state, doc) = outputs(root, &out, opts.quick);
    rep.merge_previous(&state);
    std::fs::write(&state, rep.state()).map_err(|e| format!("writing {}: {e}", state.display()))?;
    let md = rep.markdown();
    std::fs::write(out.join("latest.json"), rep.json()).map_err(|e| format!("writing latest.json: {e}"))?;
    std::fs::write(&doc, report::with_notes(root, &md)).map_err(|e| format!("writing {}: {e}", doc.display()))?;
    let _ = std::fs::remove_dir_all(opts.work());
    eprintln!("\n{}", rep.summary_table());
    log(&format!("bench: done in {:.0} s; wrote {} and {}", rep.elapsed, doc.display(), out.join("latest.json").display()));
    Ok(())
}

/// Runs one case; a failing case becomes a row saying why, the others go on.
fn step(rep: &mut report::Report, case: &str, f: impl FnOnce() -> Result<report::Section, String>) {
    let t = Instant::now();
    match f() {
        Ok(section) => rep.add(case, section),
        Err(e) => {
            log(&format!("bench: case {case} failed: {e}"));
            rep.add(case, report::Section { rows: vec![Row::failed(&format!("{case}: case failed"), &e)], ..Default::default() });
        }
    }
    log(&format!("bench: case {case} took {:.0} s", t.elapsed().as_secs_f64()));
}

/// Progress on stderr with a wall-clock stamp.
pub fn log(msg: &str) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    eprintln!("[{:02}:{:02}:{:02}] {msg}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60);
}

/// (stored results, rendered document) of a mode.
fn outputs(root: &Path, out: &Path, quick: bool) -> (PathBuf, PathBuf) {
    if quick {
        (out.join("cases-quick.json"), out.join("BENCHMARKS-quick.md"))
    } else {
        (out.join("cases-full.json"), root.join("BENCHMARKS.md"))
    }
}
