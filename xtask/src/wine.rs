//! Running cross-built Windows (`x86_64-pc-windows-gnu`) programs and test
//! binaries under Wine, as a test harness only.
//!
//! Debian 12's Wine 8.0 has no `bcryptprimitives.dll`, whose `ProcessPrng`
//! Rust's std imports, so every Rust program fails to start under it.
//! [`prepare`] builds a tiny stand-in (`xtask/wine/processprng.c`) with
//! mingw-w64 and installs it into a private WINEPREFIX under
//! `target/wine/`; it never goes near anything that ships.
//!
//! Use: `let wine = wine::prepare(&root)?;`, build the tests (`cargo test
//! --target x86_64-pc-windows-gnu --no-run`), `wine.start()?`, then run them
//! with `wine.apply(&mut cmd)` and `cmd.env(wine::RUNNER_ENV,
//! wine.runner())` on the cargo command. Dropping the [`WineEnv`] stops the
//! prefix's `wineserver`, so none lingers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Rust target the Windows tests are built for.
pub const TARGET: &str = "x86_64-pc-windows-gnu";
/// The cargo variable naming the runner of that target's binaries.
pub const RUNNER_ENV: &str = "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER";
/// The mingw-w64 C compiler (also the target's default linker).
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// `WINEDLLOVERRIDES`: our `bcryptprimitives` (native) before any builtin;
/// no Mono (`mscoree`) or Gecko (`mshtml`) install prompts; no desktop
/// menu entries written to the host's home.
const DLL_OVERRIDES: &str = "bcryptprimitives=n,b;mscoree=;mshtml=;winemenubuilder.exe=d";

/// A prepared Wine prefix with the `ProcessPrng` shim installed. Dropping
/// it stops the prefix's `wineserver`.
#[derive(Debug)]
pub struct WineEnv {
    prefix: PathBuf,
    runner: PathBuf,
}

impl WineEnv {
    /// Sets the environment for Wine (or for a cargo that runs Wine as its
    /// runner): our prefix, no debug chatter, the DLL overrides, and no
    /// display, so Wine never opens a window or waits on one.
    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in wine_vars(&self.prefix) {
            cmd.env(k, v);
        }
        cmd.env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY");
    }

    /// The runner for `CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER`: a script
    /// that sets the same environment as [`WineEnv::apply`] and execs
    /// `wine "$@"`, so it works even where the environment is not passed
    /// on. Cargo splits that variable on whitespace, so the path must have
    /// none ([`prepare`] checks).
    pub fn runner(&self) -> String {
        self.runner.display().to_string()
    }

    /// A `wine PROGRAM` command with the environment applied.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("wine");
        cmd.arg(program);
        self.apply(&mut cmd);
        cmd
    }

    /// Starts the prefix's `wineserver` and its background services, with
    /// no stdio of ours: started by the first test instead, they would
    /// hold that test's pipes open (nextest reports it as LEAK) and cost it
    /// ~0.6 s. Call it right before running the tests; the server runs
    /// until [`WineEnv::shutdown`] (also on drop).
    pub fn start(&self) -> Result<(), String> {
        let log = self.prefix.with_file_name("start.log");
        // A server left by an earlier run may be about to exit on its
        // timer, which a client connecting at that moment sees as
        // "recvmsg: Connection reset by peer": start a fresh one that
        // persists until [`WineEnv::shutdown`].
        self.shutdown();
        let mut server = Command::new("wineserver");
        server.arg("-p").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        self.apply(&mut server);
        let _ = server.status();
        let mut boot = Command::new("wineboot");
        self.apply(&mut boot);
        quiet(&mut boot, &log)
    }

    /// Stops this prefix's `wineserver` (and any Wine process left in it).
    pub fn shutdown(&self) {
        let mut cmd = Command::new("wineserver");
        cmd.arg("-k").stdout(Stdio::null()).stderr(Stdio::null());
        self.apply(&mut cmd);
        let _ = cmd.status();
    }
}

impl Drop for WineEnv {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether this machine has what [`prepare`] needs (mingw-w64 and Wine).
pub fn available() -> bool {
    [MINGW_GCC, "wine", "wineboot", "wineserver"].into_iter().all(on_path)
}

/// Builds the shim DLL into `root/target/wine/` (when `xtask/wine/
/// processprng.c` is newer), creates the prefix `root/target/wine/prefix`
/// once (`wineboot -i`, reporting Windows 10), copies the shim into its
/// `system32`, and writes the runner script `root/target/wine/runner.sh`.
pub fn prepare(root: &Path) -> Result<WineEnv, String> {
    let dir = root.join("target").join("wine");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let env = WineEnv { prefix: dir.join("prefix"), runner: dir.join("runner.sh") };
    if env.runner().chars().any(char::is_whitespace) {
        return Err(format!("{}: cargo cannot run a runner whose path has spaces", env.runner()));
    }
    for tool in [MINGW_GCC, "wine", "wineboot", "wineserver"] {
        if !on_path(tool) {
            return Err(format!("{tool} not found: apt-get install mingw-w64 wine wine64"));
        }
    }

    let log = dir.join("setup.log");
    let src = root.join("xtask").join("wine").join("processprng.c");
    let dll = dir.join("bcryptprimitives.dll");
    if needs_rebuild(&src, &dll)? {
        let tmp = dir.join("bcryptprimitives.dll.tmp");
        let mut cc = Command::new(MINGW_GCC);
        cc.args(["-shared", "-O2", "-s", "-Wall", "-o"]).arg(&tmp).arg(&src).arg("-ladvapi32");
        quiet(&mut cc, &log)?;
        fs::rename(&tmp, &dll).map_err(|e| format!("{}: {e}", dll.display()))?;
    }

    // The marker is written only once the prefix is complete, so an
    // interrupted first run starts over instead of using half a prefix.
    let ready = dir.join("prefix.ready");
    if !ready.exists() {
        if env.prefix.exists() {
            env.shutdown();
            fs::remove_dir_all(&env.prefix).map_err(|e| format!("{}: {e}", env.prefix.display()))?;
        }
        eprintln!("wine: creating the test prefix {}", env.prefix.display());
        let mut boot = Command::new("wineboot");
        boot.arg("-i");
        env.apply(&mut boot);
        quiet(&mut boot, &log)?;
        // Wine 8.0 makes Windows 7 prefixes; we (and Rust's std) target 10+.
        let mut ver = env.command("winecfg");
        ver.args(["/v", "win10"]);
        quiet(&mut ver, &log)?;
        // Let the server flush the registry and exit.
        let mut wait = Command::new("wineserver");
        wait.arg("-w");
        env.apply(&mut wait);
        quiet(&mut wait, &log)?;
        fs::write(&ready, "").map_err(|e| format!("{}: {e}", ready.display()))?;
    }

    // A Wine upgrade may rewrite system32 on the next start; copying an
    // identical file is cheap, so check every time.
    let installed = system32(&env.prefix).join("bcryptprimitives.dll");
    let shim = fs::read(&dll).map_err(|e| format!("{}: {e}", dll.display()))?;
    if fs::read(&installed).ok().as_deref() != Some(&shim[..]) {
        fs::write(&installed, &shim).map_err(|e| format!("{}: {e}", installed.display()))?;
    }

    let script = runner_script(&env.prefix);
    if fs::read_to_string(&env.runner).ok().as_deref() != Some(script.as_str()) {
        fs::write(&env.runner, script).map_err(|e| format!("{}: {e}", env.runner.display()))?;
    }
    make_executable(&env.runner)?;
    Ok(env)
}

/// The environment Wine runs in, for [`WineEnv::apply`] and the runner.
fn wine_vars(prefix: &Path) -> [(&'static str, String); 4] {
    [
        ("WINEPREFIX", prefix.display().to_string()),
        ("WINEARCH", "win64".into()),
        // `-all` also silences Debian's "wine32 is missing" hint.
        ("WINEDEBUG", "-all".into()),
        ("WINEDLLOVERRIDES", DLL_OVERRIDES.into()),
    ]
}

/// Where 64-bit DLLs live inside a prefix (`C:\windows\system32`).
fn system32(prefix: &Path) -> PathBuf {
    prefix.join("drive_c").join("windows").join("system32")
}

/// Whether `out` is missing or older than `src`.
fn needs_rebuild(src: &Path, out: &Path) -> Result<bool, String> {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified());
    let src_time = modified(src).map_err(|e| format!("{}: {e}", src.display()))?;
    Ok(match modified(out) {
        Ok(out_time) => src_time > out_time,
        Err(_) => true,
    })
}

/// The runner script: the environment of [`WineEnv::apply`], then `wine`.
fn runner_script(prefix: &Path) -> String {
    let mut s = String::from("#!/bin/sh\n# Generated by xtask/src/wine.rs: runs a Windows binary under Wine (tests only).\n");
    s.push_str("unset DISPLAY WAYLAND_DISPLAY\n");
    for (k, v) in wine_vars(prefix) {
        s.push_str(&format!("export {k}={}\n", sh_quote(&v)));
    }
    s.push_str("exec wine \"$@\"\n");
    s
}

/// Single-quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(|e| format!("{}: {e}", path.display()))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Runs `cmd` with its output going to `log` (not pipes: Wine's background
/// processes inherit them and would keep `output()` waiting), showing the
/// log only if it fails.
fn quiet(cmd: &mut Command, log: &Path) -> Result<(), String> {
    let file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    let status = cmd.stdin(Stdio::null()).stdout(file).stderr(err).status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}\n{}", fs::read_to_string(log).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_script_quotes_and_execs_wine() {
        let s = runner_script(Path::new("/w/it's/prefix"));
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("export WINEPREFIX='/w/it'\\''s/prefix'\n"));
        assert!(s.contains("export WINEDLLOVERRIDES='bcryptprimitives=n,b;mscoree=;mshtml=;winemenubuilder.exe=d'\n"));
        assert!(s.contains("unset DISPLAY"));
        assert!(s.ends_with("exec wine \"$@\"\n"));
    }

    #[test]
    fn system32_is_inside_drive_c() {
        assert_eq!(system32(Path::new("/p")), Path::new("/p/drive_c/windows/system32"));
    }
}
