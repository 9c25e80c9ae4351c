//! (d) Issue 11, item 7: a game of 16,000 files (mostly small, a few
//! larger), served and fetched with `RLIMIT_NOFILE` at 256, soft and hard,
//! on both sides; the download must be byte-identical. The game also ships
//! a zip of the same files: `lanspread install` (same limit) unpacks
//! it into `local/`, which must equal the source tree.
//!
//! To check the harness itself: `XTASK_LAN_NOFILE=N` (0 leaves the limit
//! alone) and `XTASK_LAN_MANY_FILES=N` change the limit and the file count.

use super::super::net;
use super::super::procs::Procs;
use super::super::tree;
use super::{finish_get, Cx, Host};
use crate::bench::gen;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GAME: &str = "lan-many";

/// `XTASK_LAN_<name>` as a number, or `default`.
fn knob(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(format!("XTASK_LAN_{name}")) {
        Ok(v) => v.parse().map_err(|_| format!("XTASK_LAN_{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Mostly small files (log-normal around 4 KiB), three of 1–4 MiB, a few empty ones.
fn shape(files: usize) -> gen::Shape {
    gen::Shape {
        files,
        median: 4096.0,
        sigma: 1.0,
        cap: 1 << 20,
        tail: 3,
        tail_range: (1 << 20, 4 << 20),
        dirs: (files / 40).clamp(8, 300),
        symlinks: 0,
        empty: 4,
    }
}

/// A script that runs `lanspread` with both `RLIMIT_NOFILE` limits at `n`
/// (the program itself then cannot raise its soft limit above 256 either).
fn limited_bin(cx: &Cx, n: u64) -> Result<PathBuf, String> {
    if n == 0 {
        return Ok(cx.bin.clone());
    }
    use std::os::unix::fs::PermissionsExt;
    let script = cx.dir.join(format!("lanspread-nofile-{n}"));
    std::fs::create_dir_all(&cx.dir).map_err(|e| format!("{}: {e}", cx.dir.display()))?;
    // dash and bash: `ulimit -n` without -H/-S sets both limits.
    let text = format!("#!/bin/sh\nulimit -n {n} || exit 126\nexec '{}' \"$@\"\n", cx.bin.display());
    std::fs::write(&script, text).map_err(|e| format!("{}: {e}", script.display()))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("{}: {e}", script.display()))?;
    Ok(script)
}

/// Checks `/proc/PID/limits`: soft and hard `Max open files` are `n`.
fn check_limit(pid: u32, n: u64) -> Result<(), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).map_err(|e| format!("/proc/{pid}/limits: {e}"))?;
    let line = text.lines().find(|l| l.starts_with("Max open files")).ok_or("no `Max open files` in /proc/PID/limits")?;
    let v: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (v.get(3).copied().unwrap_or("?"), v.get(4).copied().unwrap_or("?"));
    if n > 0 && (soft != n.to_string() || hard != n.to_string()) {
        return Err(format!("pid {pid}: open-file limits are {soft} (soft) / {hard} (hard), expected {n} / {n}"));
    }
    Ok(())
}

/// Generates the tree into `src`, and on `h` the game: the tree (hard
/// links), `GAME.zip` of the tree, `version.ini`, the catalog. Returns the
/// zip's entry count.
fn make_game(h: &Host, src: &Path, files: usize) -> Result<usize, String> {
    gen::shaped_tree(src, &shape(files), "lanspread-lan-many")?;
    let root = h.root(GAME);
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut cp = Command::new("cp");
    cp.arg("-al").arg(src.join(".")).arg(&root);
    super::super::output(&mut cp)?;
    let list = gen::regular_files(src, &[])?;
    crate::bench::zip::write_stored(src, &list, &root.join(format!("{GAME}.zip")))?;
    std::fs::write(root.join("version.ini"), "[version]\nversion=1.0\n").map_err(|e| format!("version.ini: {e}"))?;
    std::fs::write(h.games.join("catalog.toml"), gen::catalog_entry(GAME)).map_err(|e| format!("catalog.toml: {e}"))?;
    Ok(list.len())
}

/// `lanspread install GAME` on `h`; fails unless it exits 0 within `timeout`.
fn install(cx: &Cx, procs: &mut Procs, h: &Host, timeout: Duration) -> Result<f64, String> {
    let args = cx.args("install", h, None, &[]);
    let mut args = args;
    args.insert(1, GAME.to_owned());
    let p = procs.spawn(&format!("h{}-install", h.i), &h.ns(), &cx.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h.config)])?;
    let proc = procs.get(p);
    let status = proc.wait(timeout)?;
    if !status.success() {
        return Err(format!("{} failed ({status})", proc.name));
    }
    Ok(proc.secs())
}

/// The scenario.
pub(super) fn many(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    let nofile = knob("NOFILE", 256)?;
    let files = knob("MANY_FILES", 16_000)? as usize;
    let lcx = Cx { bin: limited_bin(cx, nofile)?, dir: cx.dir.clone() };
    let (h1, h2) = (lcx.host(1)?, lcx.host(2)?);
    let (t, src) = (Instant::now(), cx.dir.join("src"));
    let entries = make_game(&h1, &src, files)?;
    eprintln!(
        "  generated {GAME}: {files} files + a zip of {entries} in {:.1} s; RLIMIT_NOFILE {nofile} (soft and hard)",
        t.elapsed().as_secs_f64()
    );
    lcx.copy_catalog(&h1, &h2)?;
    let s1 = lcx.serve(procs, h1, None)?;
    check_limit(procs.get(s1.proc).pid(), nofile)?;
    let peer = format!("{}:47800", net::host_ip(s1.host.i));
    let g = lcx.get(procs, &h2, "get", GAME, None, &["--no-install", "--no-mdns", "--peer", &peer])?;
    let sum = finish_get(procs, g, Duration::from_secs(120))?;
    let (n, bytes) = tree::compare(&s1.host.root(GAME), &h2.root(GAME))?;
    eprintln!("  h2 downloaded {n} files, {} MiB, byte-identical, in {:.1} s (`get` ran {:.1} s)", bytes >> 20, sum.secs, sum.wall);
    let secs = install(&lcx, procs, &h2, Duration::from_secs(120))?;
    let (m, _) = tree::compare(&src, &h2.root(GAME).join("local"))?;
    eprintln!("  h2 installed the zip: local/ holds the {m} source files, byte-identical ({secs:.1} s)");
    Ok(format!("{n} files downloaded and {m} unpacked from the zip, byte-identical, with RLIMIT_NOFILE {nofile} on both sides"))
}
