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
    for t in targets {
        sh(Command::new("cargo")
            .args(["fuzz", "run", &t, "--", &format!("-max_total_time={secs}"), "-rss_limit_mb=2048"])
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(root.join("fuzz")))?;
    }
    Ok(())
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
