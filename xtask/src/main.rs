//! Project automation: `cargo xtask <ci|arch|sim|bench|lan|fuzz|windows|dist>`.
#![forbid(unsafe_code)]

mod arch;
mod bench;
mod dist;
mod fuzz;
mod lan;
mod windows;
mod wine;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                 fmt --check, clippy -D warnings, all tests, arch (what CI runs)
  arch               check the dependency rule of the hexagonal workspace
  sim [--seeds N]    sweep N simulation seeds (default 200)
  bench [--quick]    run the benchmarks, write BENCHMARKS.md and target/bench/latest.json
  lan [test|up N|down]  namespaced-LAN end-to-end tests (needs root)
  fuzz [--secs N]    run every cargo-fuzz target for N seconds (default 60)
  dist               release archives (Linux tar.gz, Windows zip) with licences and SHA-256 files
  windows [build|test|e2e]  cross-build for x86_64-pc-windows-gnu; run its suites and the
                     Windows <-> Linux end-to-end test under Wine";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("arch") => arch::run(&root()),
        Some("sim") => sim(&args[1..]),
        Some("bench") => bench::run(&root(), &args[1..]),
        Some("lan") => lan::run(&root(), &args[1..]),
        Some("fuzz") => fuzz::run(&root(), &args[1..]),
        Some("windows") => windows::run(&root(), &args[1..]),
        Some("dist") => dist::run(&root()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command in the workspace root, failing with its name if it fails.
pub fn sh(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {cmd:?}");
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// The target directory (`CARGO_TARGET_DIR` or `ROOT/target`).
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// The `lanspread` binary to test: `--bin PATH` if given, else a fresh
/// release build.
pub fn lanspread_bin(root: &Path, bin: Option<PathBuf>) -> Result<PathBuf, String> {
    let bin = match bin {
        Some(b) => b.canonicalize().map_err(|e| format!("--bin {}: {e}", b.display()))?,
        None => {
            sh(cargo().args(["build", "--release", "-p", "lanspread-cli", "--bin", "lanspread"]))?;
            target_dir(root).join("release").join("lanspread")
        }
    };
    if !bin.is_file() {
        return Err(format!("lanspread binary {} not found", bin.display()));
    }
    Ok(bin)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn have_nextest() -> bool {
    cargo().args(["nextest", "--version"]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn ci() -> Result<(), String> {
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    sh(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    arch::run(&root())?;
    let mut summary = if have_nextest() {
        run_tests(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))?
    } else {
        run_tests(cargo().args(["test", "--workspace", "--no-fail-fast"]))?
    };
    // nextest runs no doc tests; the public API's examples run here.
    summary += run_doc_tests()?;
    // The embedding example: two peers in one process, a download and an install.
    sh(cargo().args(["run", "-q", "-p", "lanspread", "--example", "embed"]))?;
    let mut ran = vec!["fmt", "clippy", "arch", "tests", "doc tests", "example"];
    let on_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // The Windows build and its suites under Wine; on CI a missing tool
    // fails the run (`.ci/run` installs them) instead of skipping it.
    if on_ci || wine::available() {
        summary += windows::test(&root())?;
        ran.push("Windows build, its tests under Wine, Windows <-> Linux end to end");
    } else {
        eprintln!("ci: mingw-w64 or Wine is missing: the Windows build and its tests are skipped (apt-get install mingw-w64 wine wine64)");
    }
    if lan::is_root() || std::env::var("CI").is_ok_and(|v| v == "true") {
        lan::run(&root(), &["test".into()])?;
        ran.push("namespaced LAN");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        fuzz::run(&root(), &["--secs".into(), "30".into(), "--ci".into()])?;
        ran.push("fuzzing");
        dist::run(&root())?;
        ran.push("release archives");
    }
    println!("ci: {} passed", ran.join(", "));
    println!("{} passed, 0 failed", summary);
    Ok(())
}

/// Runs a test command, echoing its output, and returns how many tests
/// passed (from nextest's `Summary` line or cargo test's `test result` lines).
pub fn run_tests(cmd: &mut Command) -> Result<u64, String> {
    use std::io::{BufRead, BufReader};
    eprintln!("$ {cmd:?}");
    let mut child = cmd.current_dir(root()).stderr(std::process::Stdio::piped()).spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut passed = 0u64;
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
            passed += count_passed(&line);
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(passed)
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// Runs every doc test of the workspace, echoing the output; returns how
/// many passed.
fn run_doc_tests() -> Result<u64, String> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--doc"]).current_dir(root());
    eprintln!("$ {cmd:?}");
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{}{stdout}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("{cmd:?} failed with {}", out.status));
    }
    Ok(stdout.lines().map(count_doc_passed).sum())
}

/// `N passed` from a `test result: ok. N passed; ...` line.
fn count_doc_passed(line: &str) -> u64 {
    let Some(rest) = line.split("test result: ok. ").nth(1) else { return 0 };
    rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// `N passed` from a nextest summary (`... tests run: N passed, ...`).
fn count_passed(line: &str) -> u64 {
    let Some(rest) = line.split("tests run: ").nth(1) else { return 0 };
    rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn sim(args: &[String]) -> Result<(), String> {
    let mut seeds = "200".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seeds" => seeds = it.next().cloned().ok_or("--seeds needs a number")?,
            other => return Err(format!("unknown sim argument {other:?}")),
        }
    }
    seeds.parse::<u64>().map_err(|_| format!("--seeds {seeds:?} is not a number"))?;
    sh(cargo()
        .args(["test", "-p", "lanspread-testkit", "--release", "--test", "sim", "--", "--include-ignored", "seed_sweep"])
        .env("LANSPREAD_SIM_SEEDS", seeds))
}
