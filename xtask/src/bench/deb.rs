//! The data of a real game from a Debian package: `apt-get download PKG`
//! (kept in `target/bench/deb/`, so a rerun does not download again),
//! `dpkg-deb -x` into a game root, and a `version.ini` beside the data.

use super::gen::{self, Game};
use super::{log, measure, Opts};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages tried in order (full mode): free game data with thousands of
/// files, 50–300 MB. wesnoth-1.16-data (Debian 12): about 16,000 files,
/// 190 MB, mostly small images and WML scripts, a few dangling symlinks.
pub const FULL: &[&str] = &["wesnoth-1.16-data", "wesnoth-1.18-data", "supertux-data", "flare-game"];
/// Small packages for `--quick` (the same path through the harness).
pub const QUICK: &[&str] = &["pingus-data", "teeworlds-data"];

/// The Debian game, or why it cannot be had here (the case is then skipped).
pub fn game(opts: &Opts) -> Result<Game, String> {
    for tool in ["apt-get", "apt-cache", "dpkg-deb"] {
        if super::tools::which(tool).is_none() {
            return Err(format!("`{tool}` is not available (not a Debian system?)"));
        }
    }
    let cache = opts.out.join("deb");
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let wanted: Vec<&str> = match &opts.deb {
        Some(p) => vec![p.as_str()],
        None if opts.quick => QUICK.to_vec(),
        None => FULL.to_vec(),
    };
    let (pkg, deb) = wanted
        .iter()
        .find_map(|p| cached(&cache, p).or_else(|| known(p).then(|| download(&cache, p)).and_then(Result::ok)).map(|d| (*p, d)))
        .ok_or_else(|| format!("none of {} could be downloaded with apt-get (see the log above)", wanted.join(", ")))?;
    unpack(opts, pkg, &deb)
}

/// A `.deb` of `pkg` downloaded earlier.
fn cached(cache: &Path, pkg: &str) -> Option<PathBuf> {
    let prefix = format!("{pkg}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)) && p.extension().is_some_and(|x| x == "deb"))
        .collect();
    found.sort();
    found.pop()
}

/// Whether apt knows `pkg`.
fn known(pkg: &str) -> bool {
    Command::new("apt-cache").args(["show", "--no-all-versions", pkg]).output().is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

fn download(cache: &Path, pkg: &str) -> Result<PathBuf, String> {
    log(&format!("bench: apt-get download {pkg} into {}", cache.display()));
    let r = measure::run(Command::new("apt-get").args(["download", "-q", pkg]).current_dir(cache).env("DEBIAN_FRONTEND", "noninteractive"));
    if let Err(e) = &r {
        log(&format!("bench: apt-get download {pkg} failed: {e}"));
    }
    r?;
    cached(cache, pkg).ok_or_else(|| format!("apt-get download {pkg} left no .deb in {}", cache.display()))
}

/// `dpkg-deb -x` into `data/deb-PKG/PKG/`, with `version.ini` and the catalog.
fn unpack(opts: &Opts, pkg: &str, deb: &Path) -> Result<Game, String> {
    let dir = opts.data().join(format!("deb-{pkg}"));
    let marker = opts.data().join(format!("deb-{pkg}.done"));
    if !marker.is_file() {
        log(&format!("bench: unpacking {} into {}", deb.display(), dir.display()));
        measure::fresh_dir(&dir.join(pkg))?;
        measure::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.join(pkg)))?;
        let version = measure::output(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"))?;
        // Without the epoch ("1:1.16.9-1" → "1.16.9-1").
        let version = version.trim().rsplit(':').next().unwrap_or_default().to_owned();
        gen::finish_game(&dir, pkg, &version, &marker)?;
    }
    let (files, bytes) = gen::tree_totals(&dir.join(pkg))?;
    Ok(Game { dir, id: pkg.to_owned(), bytes, files })
}
