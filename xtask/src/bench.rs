//! `cargo xtask bench [--quick]`: the benchmarks of issue 7, each figure a
//! ratio against a baseline measured in the same run (the machine is shared
//! and noisy, so absolute seconds mean little on their own).
//!
//! ```text
//! cargo xtask bench [--quick] [--only 1,2,3,4,6,7,8] [--warm] [--bin PATH] [--runs N]
//!                   [--trees many,deb,2gb] [--deb PKG] [--nofile N]
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
//! 6. a `perf` profile of case 1 (when perf works here);
//! 7. games shaped like real ones (issue 11): a generated tree of about
//!    16,000 files, a real game's data from a Debian package and the 2 GB
//!    game, every tool timed durably (a `sync` inside the timing), the
//!    zipped many-file game installed against `unzip`, syscall counts and
//!    peak RSS; every `lanspread` process with `RLIMIT_NOFILE` at 256
//!    (see `bench/real.rs`);
//! 8. swarming: one seeder and three downloaders started together on a
//!    namespaced LAN, every uplink capped at 100 Mbit/s: the last of the
//!    three against one downloader alone, lanspread and qBittorrent-nox,
//!    timed durably (needs root; see `bench/swarm.rs`).
//!
//! A full run writes `BENCHMARKS.md` (table, a short reading, details and
//! the hand-written findings of `xtask/bench/NOTES.md`); `--quick` writes
//! `target/bench/BENCHMARKS-quick.md` instead. Both write
//! `target/bench/latest.json` (one row per figure) and keep their results
//! in `target/bench/cases-{full,quick}.json`, so `--only` re-measures some
//! cases and keeps the others (each case is labelled with its run), and
//! `--render` rebuilds the document after NOTES.md changed. `--warm` keeps
//! the page cache, `--bin` benchmarks a given binary instead of building
//! the workspace's, `--runs` sets the counted runs (default 3, 1 with
//! `--quick`). Case 7 only: `--trees` picks its trees, `--deb` its Debian
//! package, `--nofile` the `RLIMIT_NOFILE` of its `lanspread` processes
//! (soft and hard; default 256, 0 leaves the limit alone).
//!
//! The methods follow the reference baseline scripts in `shared/bench/`
//! (`lib.sh`, `rsync.sh`, `cp-local.sh`, `lan-up.sh`, `lan-shape.sh`,
//! `lan-aria2.sh`, `make-game.py`), adapted into Rust here so the harness
//! runs on a machine without that folder.

mod deb;
pub mod gen;
mod install;
mod lanbench;
mod loopback;
mod measure;
mod real;
mod real_report;
mod report;
mod scan;
mod sim;
mod strace;
mod swarm;
mod tools;
pub mod zip;

use report::Row;
use std::path::{Path, PathBuf};
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask bench [--quick] [--only 1,2,3,4,6,7,8] [--warm] [--bin PATH] [--runs N] [--trees many,deb,2gb] [--deb PKG] [--nofile N] | bench --render [--quick]";
/// Every case (5 and 6 are measured inside 1).
pub const ALL_CASES: [u32; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

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
    /// Case 7: its trees (`many`, `deb`, `2gb`).
    pub trees: Vec<String>,
    /// Case 7: the Debian package (default: the first of `deb::FULL` or `deb::QUICK` apt knows).
    pub deb: Option<String>,
    /// Case 7: `RLIMIT_NOFILE` (soft and hard) of every `lanspread` process; 0 = unchanged.
    pub nofile: u64,
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
    let a = parse(args)?;
    let started = Instant::now();
    let bin_given = a.bin.is_some();
    let bin = crate::lanspread_bin(root, a.bin)?;
    let cold = !a.warm && measure::can_drop_caches();
    if !a.warm && !cold {
        log(
            "bench: the page cache cannot be dropped here (not root, or /proc/sys/vm/drop_caches not writable): every run has a warm cache",
        );
    }
    let quick = a.quick;
    let opts = Opts {
        quick,
        only: a.only,
        cold,
        runs: a.runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
        warmup: if quick { 0 } else { 1 },
        bin,
        bin_given,
        root: root.to_path_buf(),
        out: out.clone(),
        trees: a.trees,
        deb: a.deb,
        nofile: a.nofile,
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
    if opts.wants(7) {
        step(&mut rep, "7", || real::run(&opts, &tools));
    }
    if opts.wants(8) {
        step(&mut rep, "8", || swarm::run(&opts, &tools));
    }
    rep.elapsed = started.elapsed().as_secs_f64();
    // Cases not run now (--only) keep their figures from the last run of the same mode.
    // A quick run never replaces BENCHMARKS.md: it writes target/bench/BENCHMARKS-quick.md.
    let (state, doc) = outputs(root, &out, opts.quick);
    rep.merge_previous(&state);
    let doc = keep_cases(&doc, &rep, &out);
    std::fs::write(&state, rep.state()).map_err(|e| format!("writing {}: {e}", state.display()))?;
    let md = rep.markdown();
    std::fs::write(out.join("latest.json"), rep.json()).map_err(|e| format!("writing latest.json: {e}"))?;
    std::fs::write(&doc, report::with_notes(root, &md)).map_err(|e| format!("writing {}: {e}", doc.display()))?;
    let _ = std::fs::remove_dir_all(opts.work());
    eprintln!("\n{}", rep.summary_table());
    log(&format!("bench: done in {:.0} s; wrote {} and {}", rep.elapsed, doc.display(), out.join("latest.json").display()));
    Ok(())
}

/// The command line of a measuring run.
struct Args {
    quick: bool,
    only: Vec<u32>,
    warm: bool,
    bin: Option<PathBuf>,
    runs: Option<usize>,
    trees: Vec<String>,
    deb: Option<String>,
    nofile: u64,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a =
        Args { quick: false, only: ALL_CASES.to_vec(), warm: false, bin: None, runs: None, trees: Vec::new(), deb: None, nofile: 256 };
    let list = |v: Option<&String>, what: &str| {
        v.map(|l| l.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>()).ok_or(format!("{what} needs a list"))
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--warm" => a.warm = true,
            "--only" => {
                a.only = list(it.next(), "--only")?
                    .iter()
                    .map(|s| {
                        s.parse::<u32>().ok().filter(|n| ALL_CASES.contains(n)).ok_or_else(|| format!("--only: {s:?} is not a case number"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--bin" => a.bin = Some(PathBuf::from(it.next().ok_or("--bin needs PATH")?)),
            "--runs" => a.runs = Some(it.next().ok_or("--runs needs N")?.parse::<usize>().map_err(|_| "--runs needs a number")?),
            "--trees" => a.trees = list(it.next(), "--trees")?,
            "--deb" => a.deb = Some(it.next().ok_or("--deb needs a package name")?.clone()),
            "--nofile" => a.nofile = it.next().ok_or("--nofile needs N")?.parse::<u64>().map_err(|_| "--nofile needs a number")?,
            other => return Err(format!("unknown bench argument {other:?}\n{USAGE}")),
        }
    }
    if let Some(bad) = a.trees.iter().find(|t| !["many", "deb", "2gb"].contains(&t.as_str())) {
        return Err(format!("--trees: unknown tree {bad:?} (many, deb, 2gb)"));
    }
    if a.trees.is_empty() {
        a.trees = vec!["many".into(), "deb".into(), "2gb".into()];
    }
    if (a.only.contains(&5) || a.only.contains(&6)) && !a.only.contains(&1) {
        // Memory and the profile are measured during case 1.
        a.only.push(1);
    }
    if a.only.contains(&1) && !a.only.contains(&5) {
        a.only.push(5);
    }
    a.only.sort_unstable();
    a.only.dedup();
    Ok(a)
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

/// `doc`, unless writing it would drop a case it has (an `--only` run
/// without the stored results of the others, e.g. in a fresh target
/// directory): then `target/bench/BENCHMARKS-partial.md`.
fn keep_cases(doc: &Path, rep: &report::Report, out: &Path) -> PathBuf {
    let old = std::fs::read_to_string(doc).unwrap_or_default();
    let lost: Vec<&str> = ["1", "2", "3", "4", "7", "8"]
        .into_iter()
        .filter(|k| {
            (old.contains(&format!("\n## Case {k}")) || old.contains(&format!("\n## Swarming (case {k})")))
                && !rep.cases.iter().any(|c| c.key == *k)
        })
        .collect();
    if lost.is_empty() {
        return doc.to_path_buf();
    }
    let partial = out.join("BENCHMARKS-partial.md");
    log(&format!(
        "bench: {} has case(s) {} that this run did not measure and {} does not hold: writing {} instead",
        doc.display(),
        lost.join(", "),
        out.join("cases-full.json").display(),
        partial.display()
    ));
    partial
}

/// (stored results, rendered document) of a mode.
fn outputs(root: &Path, out: &Path, quick: bool) -> (PathBuf, PathBuf) {
    if quick {
        (out.join("cases-quick.json"), out.join("BENCHMARKS-quick.md"))
    } else {
        (out.join("cases-full.json"), root.join("BENCHMARKS.md"))
    }
}
