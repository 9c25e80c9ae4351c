//! `cargo xtask fuzz`: run every cargo-fuzz target for a while.

use crate::sh;
use std::path::Path;
use std::process::Command;

/// Runs the fuzz targets in `fuzz/`.
pub fn run_targets(root: &Path, secs: u64) -> Result<(), String> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    targets.sort();
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !have {
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    // libFuzzer is chatty: its output goes to a log per target, and only a
    // summary line (or the log's tail on failure) is printed.
    let logs = root.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let mut failed = Vec::new();
    for t in &targets {
        let log_path = logs.join(format!("{t}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let status = Command::new("cargo")
            .args(["fuzz", "run", t, "--", &format!("-max_total_time={secs}"), "-rss_limit_mb=2048"])
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(root.join("fuzz"))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .map_err(|e| format!("cargo fuzz run {t}: {e}"))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if status.success() {
            let done = text.lines().rev().find(|l| l.starts_with("Done ")).unwrap_or("done");
            eprintln!("fuzz {t}: {done}, no crash (log: {})", log_path.display());
        } else {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("fuzz {t}: FAILED ({status}); last lines of {}:", log_path.display());
            for l in tail.into_iter().rev() {
                eprintln!("  {l}");
            }
            failed.push(t.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets failed: {}", failed.join(", ")))
    }
}

/// `cargo xtask fuzz [--secs N] [--ci]`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let mut secs = 60;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|s| s.parse().ok()).ok_or("--secs needs a number")?,
            "--ci" => {}
            other => return Err(format!("unknown fuzz argument {other:?}")),
        }
    }
    if !root.join("fuzz/fuzz_targets").is_dir() {
        eprintln!("fuzz: no fuzz targets yet (fuzz/fuzz_targets is missing)");
        return Ok(());
    }
    run_targets(root, secs)
}
