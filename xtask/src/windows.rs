//! `cargo xtask windows <build|test|e2e>`: the Windows build
//! (`x86_64-pc-windows-gnu`, linked by mingw-w64), its test suites run
//! under Wine (see `wine.rs`), and the Windows program against the Linux one
//! (`windows/e2e.rs`).
//!
//! What runs under Wine is what can: the name rule and the pure core, the
//! filesystem contract on the real (Windows) capfs, the unpackers, the
//! library's tests and simulations (quinn only: s2n-quic is Unix's), the
//! web API's tests, and the program's own (its named-pipe control channel
//! among them). Tests that need Linux (namespaces, `tc`, `syncfs`,
//! `RLIMIT_NOFILE`, symlinks made without privileges) are `cfg`-gated to
//! Unix where they live.

mod e2e;

use crate::{cargo, sh, wine};
use std::path::Path;

/// The crates whose tests run under Wine.
pub const SUITES: &[&str] = &[
    "lanspread-ports",
    "lanspread-core",
    "lanspread-capfs",
    "lanspread-unpack",
    "lanspread-quinn",
    "lanspread",
    "lanspread-testkit",
    "lanspread-web",
    "lanspread-cli",
];

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("build") => build(),
        Some("test") | None => test(root).map(|passed| println!("windows: {passed} tests passed under Wine")),
        Some("e2e") => {
            build()?;
            let env = wine::prepare(root)?;
            env.start()?;
            e2e::run(root, &env).map(|summary| println!("{summary}"))
        }
        Some(other) => Err(format!("windows: unknown command {other:?} (build, test or e2e)")),
    }
}

/// Builds the Windows program, and with it the library (with the default
/// features: quinn, mdns, capfs) and the web UI. Release, as `cargo xtask
/// dist` builds it, so CI builds the Windows program once.
pub fn build() -> Result<(), String> {
    sh(cargo().args(["build", "--release", "-p", "lanspread-cli", "--bin", "lanspread", "--target", wine::TARGET]))
}

/// The program [`build`] makes.
pub fn program(root: &Path) -> std::path::PathBuf {
    crate::target_dir(root).join(wine::TARGET).join("release").join("lanspread.exe")
}

/// Cross-builds [`SUITES`] and the program, runs the suites under Wine,
/// then the end-to-end scenario against the Linux program; returns how
/// many tests passed (the scenario counts as one).
pub fn test(root: &Path) -> Result<u64, String> {
    let env = wine::prepare(root)?;
    build()?;
    env.start()?;
    // nextest lists the tests of what it built, which already runs them.
    let under_wine = |mut cmd: std::process::Command| {
        env.apply(&mut cmd);
        cmd.env(wine::RUNNER_ENV, env.runner());
        cmd
    };
    sh(&mut under_wine(suite_command(Stage::Build)))?;
    let passed = crate::run_tests(&mut under_wine(suite_command(Stage::Run)))?;
    println!("{}", e2e::run(root, &env)?);
    Ok(passed + 1)
}

/// What a [`suite_command`] does with the suites.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Compile them only.
    Build,
    /// Run them.
    Run,
}

/// `cargo nextest run` (or `cargo test`) of the suites for Windows.
fn suite_command(stage: Stage) -> std::process::Command {
    let mut cmd = cargo();
    let nextest = crate::have_nextest();
    let runner = if nextest { ["nextest", "run"] } else { ["test", "--no-fail-fast"] };
    // Release, like the program: the suites share its compiled crates.
    cmd.args(runner).args(["--release", "--target", wine::TARGET]);
    match stage {
        Stage::Build => {
            cmd.arg("--no-run");
        }
        // Wine now and then fails to start a process (exit 1, no output):
        // a test that fails that way is run again.
        Stage::Run if nextest => {
            cmd.args(["--no-fail-fast", "--retries", "2"]);
        }
        Stage::Run => {}
    }
    for krate in SUITES {
        cmd.args(["-p", krate]);
    }
    cmd
}
