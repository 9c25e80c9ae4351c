//! The Windows program against the Linux one, over loopback, both ways,
//! with the real binaries (the Windows one under Wine):
//!
//! 1. a Linux `serve` seeds a game of a few thousand files with odd but
//!    legal names (accents, CJK, spaces, brackets) and a zip of such names;
//!    `lanspread.exe get` downloads, verifies and installs it byte-identical;
//! 2. a game holding a name the rule refuses is not shared: `status` names
//!    the file, and the Windows `get` fails and writes nothing;
//! 3. the reverse: `lanspread.exe serve` seeds, a Linux `get` fetches it;
//! 4. commands on the directory a Windows `serve` holds go to it through
//!    its named pipe (an `uninstall` and an `install`, which a second
//!    process could not run while `serve` holds the directory's lock).
//!
//! No mDNS (`--no-mdns`, `--peer`): only loopback is addressed.

use crate::bench::{gen, zip};
use crate::lan::procs::Procs;
use crate::lan::tree;
use crate::wine::WineEnv;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The shared game and the one that is never shared.
const ODD: &str = "odd";
const REFUSED: &str = "refused";
/// Files in the odd-named game (besides its zip and `version.ini`).
const ODD_FILES: usize = 2000;
/// The name that keeps [`REFUSED`] from being shared.
const REFUSED_NAME: &str = "data/what?.txt";
/// How long one command may take (Wine's first start included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);

/// Directory names a player's game may hold on every platform.
const ODD_DIRS: [&str; 6] = ["Données été", "日本語 データ", "maps [v2] (final)", "Ça & co; 100%", "Ωmega {β}", "спрайты"];

/// The two programs and where this run keeps its files.
struct Setup<'a> {
    linux: PathBuf,
    windows: PathBuf,
    wine: &'a WineEnv,
    dir: PathBuf,
}

impl Setup<'_> {
    /// `lanspread ARGS` on Linux with the config directory `cfg`.
    fn linux(&self, cfg: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.linux);
        cmd.args(args).env("LANSPREAD_CONFIG_DIR", self.dir.join(cfg));
        cmd
    }

    /// `wine lanspread.exe ARGS` with the config directory `cfg`.
    fn windows(&self, cfg: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("wine");
        cmd.arg(&self.windows).args(args);
        self.wine.apply(&mut cmd);
        cmd.env("LANSPREAD_CONFIG_DIR", win_path(&self.dir.join(cfg)));
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `path` as Wine's programs see it: on drive Z:, with backslashes.
fn win_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// Runs the scenario; returns a summary line.
pub fn run(root: &Path, wine: &WineEnv) -> Result<String, String> {
    let linux = crate::lanspread_bin(root, None)?;
    let windows = super::program(root);
    if !windows.is_file() {
        return Err(format!("{} not found: build it with `cargo xtask windows build`", windows.display()));
    }
    let dir = crate::target_dir(root).join("windows-e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let setup = Setup { linux, windows, wine, dir };
    let mut procs = Procs::new(&setup.path("logs"))?;
    let result = scenario(&setup, &mut procs);
    if result.is_err() {
        eprintln!("{}", procs.tails(20));
    }
    procs.kill_all();
    result
}

fn scenario(s: &Setup<'_>, procs: &mut Procs) -> Result<String, String> {
    let seed = s.path("seed");
    let files = odd_game(&seed.join(ODD), &s.path("zip-src"))?;
    write(&seed.join(REFUSED).join("version.ini"), b"[version]\nversion=1.0\n")?;
    write(&seed.join(REFUSED).join(REFUSED_NAME), b"a name Windows refuses")?;
    write(&seed.join("catalog.toml"), format!("{}{}", gen::catalog_entry(ODD), gen::catalog_entry(REFUSED)).as_bytes())?;
    let win_games = s.path("win");
    std::fs::create_dir_all(&win_games).map_err(|e| format!("{}: {e}", win_games.display()))?;
    std::fs::copy(seed.join("catalog.toml"), win_games.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;

    // 1 and 2: Linux seeds, Windows gets.
    let serve = procs.spawn_command(
        "linux-serve",
        s.linux("cfg-linux", &["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--games", &path_str(&seed)]),
    )?;
    let addr = serve_addr(procs, serve)?;
    let status = output(&mut s.linux("cfg-linux", &["status", "--games", &path_str(&seed)]))?;
    if !status.lines().any(|l| l.contains("not shared") && l.contains(REFUSED_NAME)) {
        return Err(format!("status does not name {REFUSED_NAME} as what keeps {REFUSED} from being shared:\n{status}"));
    }
    let win = win_path(&win_games);
    let get = ["get", ODD, "--no-mdns", "--listen", "127.0.0.1:0", "--peer", &addr, "--wait", "30", "--json", "--games", &win];
    finish(procs, "windows-get", s.windows("cfg-win", &get))?;
    let (n, bytes) = tree::compare(&seed.join(ODD), &win_games.join(ODD))?;
    installed_as_zipped(&win_games.join(ODD), &s.path("zip-src"), &files)?;
    let refused = ["get", REFUSED, "--no-mdns", "--listen", "127.0.0.1:0", "--peer", &addr, "--wait", "3", "--games", &win];
    if finish(procs, "windows-get-refused", s.windows("cfg-win", &refused)).is_ok() {
        return Err(format!("the Windows get of {REFUSED} succeeded"));
    }
    if win_games.join(REFUSED).exists() {
        return Err(format!("the refused get wrote {}", win_games.join(REFUSED).display()));
    }
    procs.get(serve).kill();

    // 3 and 4: Windows seeds (what it just got), Linux gets; the Windows
    // commands go through the pipe.
    let wserve =
        procs.spawn_command("windows-serve", s.windows("cfg-win", &["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--games", &win]))?;
    let waddr = serve_addr(procs, wserve)?;
    let back = s.path("linux-back");
    std::fs::create_dir_all(&back).map_err(|e| format!("{}: {e}", back.display()))?;
    std::fs::copy(seed.join("catalog.toml"), back.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;
    let get_back = ["get", ODD, "--no-mdns", "--listen", "127.0.0.1:0", "--peer", &waddr, "--wait", "30", "--games", &path_str(&back)];
    finish(procs, "linux-get", s.linux("cfg-back", &get_back))?;
    tree::compare(&seed.join(ODD), &back.join(ODD))?;
    installed_as_zipped(&back.join(ODD), &s.path("zip-src"), &files)?;

    finish(procs, "windows-uninstall", s.windows("cfg-win", &["uninstall", ODD, "--games", &win]))?;
    if win_games.join(ODD).join("local").exists() {
        return Err("the uninstall sent through the pipe left local/".into());
    }
    finish(procs, "windows-install", s.windows("cfg-win", &["install", ODD, "--games", &win]))?;
    installed_as_zipped(&win_games.join(ODD), &s.path("zip-src"), &files)?;
    Ok(format!(
        "windows: {n} files ({:.1} MB) with odd names byte-identical both ways (Linux serve -> Wine get, Wine serve -> Linux get), \
         {REFUSED} not shared and named, uninstall and install through the named pipe",
        bytes as f64 / 1e6
    ))
}

/// Writes the odd-named game into `root` and the files of its zip into
/// `zip_src`; returns the zip's entries.
fn odd_game(root: &Path, zip_src: &Path) -> Result<Vec<PathBuf>, String> {
    let mut rng = gen::Rng::new("windows-e2e");
    write(&root.join("version.ini"), b"[version]\nversion=1.0\n")?;
    for i in 0..ODD_FILES {
        let dir = ODD_DIRS[i % ODD_DIRS.len()];
        let mut data = vec![0u8; rng.range(1, 12_000) as usize];
        rng.fill(&mut data);
        write(&root.join(dir).join(format!("niveau {i:04} – ü (copy) [{}].pak", i % 7)), &data)?;
    }
    let mut big = vec![0u8; 6 << 20];
    rng.fill(&mut big);
    write(&root.join("日本語 データ").join("archive grande.bin"), &big)?;
    let entries: Vec<PathBuf> = ["Ça démarre.exe", "données/carte été.map", "日本/ステージ 1.dat", "saves [empty]/README 😀.txt"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for (i, e) in entries.iter().enumerate() {
        write(&zip_src.join(e), format!("zip entry {i}: {}", e.display()).as_bytes())?;
    }
    zip::write_stored(zip_src, &entries, &root.join("Jeu complet.zip"))?;
    Ok(entries)
}

/// Checks that `root/local` holds the zip's files, byte for byte.
fn installed_as_zipped(root: &Path, zip_src: &Path, entries: &[PathBuf]) -> Result<(), String> {
    for e in entries {
        let (want, got) = (zip_src.join(e), root.join("local").join(e));
        if std::fs::read(&want).ok() != std::fs::read(&got).ok() {
            return Err(format!("{} is not the zip's {}", got.display(), e.display()));
        }
    }
    Ok(())
}

/// The address a `serve` prints in its first line ("serving … on ADDR as
/// ID").
fn serve_addr(procs: &mut Procs, serve: usize) -> Result<String, String> {
    let line = procs.get(serve).wait_line(" on ", COMMAND_TIMEOUT)?;
    line.split(" on ").nth(1).and_then(|rest| rest.split(' ').next()).map(str::to_owned).ok_or_else(|| format!("no address in {line:?}"))
}

/// Runs `cmd` to its end; an error (with its output) unless it succeeded.
fn finish(procs: &mut Procs, name: &str, cmd: Command) -> Result<(), String> {
    let i = procs.spawn_command(name, cmd)?;
    let status = procs.get(i).wait(COMMAND_TIMEOUT)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status}): {}", procs.get(i).stdout()))
    }
}

/// The stdout of `cmd`, which must succeed.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?} failed: {text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}
