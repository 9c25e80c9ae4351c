//! (f) Liar first: the only holder a downloader finds at first serves
//! corrupt bytes under a manifest it still advertises as good.
//!
//! h1 serves a generated game; once it has scanned it, some bytes in the
//! middle of the game's archive are overwritten and the file's mtime is put
//! back, so h1's scan index (keyed by size and mtime) keeps the old hashes:
//! a lying, or bit-rotten, holder. h3 runs `get --wait 30` by mDNS while h1
//! is the only holder: it must ban h1 and wait. Once h3's download has
//! stalled (and at least 3 s after `get` started) honest
//! seeders (same seed, same bytes) come up on h2 and h4; h3's `get` must
//! then finish, byte-identical to h2's tree, with none of h1's corrupt bytes.

use super::super::procs::Procs;
use super::super::tree;
use super::{Cx, Host, HOSTS};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GAME: &str = "lan-liar";
const MIB: u64 = 64;
const SEED: u64 = 66;
/// Bytes overwritten in the middle of h1's archive.
const CORRUPT: usize = 4096;
/// `get --wait`: how long h3 waits for a (new) holder.
const WAIT: u32 = 30;
/// The honest seeders start this long after h3's `get` at the earliest,
/// and not before h3's download from h1 alone has stalled.
const HONEST_AFTER: Duration = Duration::from_secs(3);
/// How long h3's data on disk must not grow to count as stalled.
const STILL: Duration = Duration::from_millis(1500);
/// Longest h3's `get` may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The game's large archive on `h`.
fn archive(h: &Host) -> PathBuf {
    h.root(GAME).join(format!("{GAME}.tar"))
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).map_err(|e| format!("{}: reading {len} bytes at {offset}: {e}", path.display()))?;
    Ok(buf)
}

/// Overwrites `CORRUPT` bytes in the middle of `path` with different bytes,
/// same size, and puts its mtime back. Returns (offset, original bytes).
fn corrupt(path: &Path) -> Result<(u64, Vec<u8>), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let before = std::fs::metadata(path).map_err(err)?;
    let mtime = before.modified().map_err(err)?;
    let offset = before.len() / 2;
    let original = read_at(path, offset, CORRUPT)?;
    let flipped: Vec<u8> = original.iter().map(|b| !b).collect();
    let f = std::fs::OpenOptions::new().write(true).open(path).map_err(err)?;
    f.write_all_at(&flipped, offset).map_err(err)?;
    f.sync_all().map_err(err)?;
    f.set_modified(mtime).map_err(err)?;
    drop(f);
    let after = std::fs::metadata(path).map_err(err)?;
    if after.len() != before.len() || after.modified().map_err(err)? != mtime {
        return Err(format!("{}: size or mtime changed by the corruption ({:?} -> {:?})", path.display(), before, after));
    }
    if read_at(path, offset, CORRUPT)? != flipped {
        return Err(format!("{}: the corruption did not stick", path.display()));
    }
    Ok((offset, original))
}

/// Everything process `name` wrote (stdout and stderr).
fn output(cx: &Cx, name: &str) -> String {
    let read = |ext: &str| {
        let text = std::fs::read_to_string(cx.dir.join("logs").join(format!("{name}.{ext}"))).unwrap_or_default();
        // Progress bars redraw with \r; keep each line's last state.
        text.lines().map(|l| l.rsplit('\r').next().unwrap_or(l).to_owned()).collect::<Vec<_>>().join("\n")
    };
    format!("{}\n{}", read("stdout"), read("stderr"))
}

/// Waits until `get` (process `g`) has begun the download from h1 alone
/// and its data on disk stopped growing for [`STILL`] (h1 is banned, the
/// download waits). Fails if `get` ends meanwhile. Returns the seconds
/// since `get` started.
fn stall(cx: &Cx, procs: &mut Procs, g: usize, name: &str, h: &Host) -> Result<f64, String> {
    let root = h.root(GAME);
    let (mut last, mut since) = (0, Instant::now());
    loop {
        if let Some(status) = procs.get(g).poll() {
            return Err(format!(
                "{name} ended ({status}) {:.1} s after it started, with only the liar h1 up: it should ban h1 and wait up to \
                 {WAIT} s for another holder; its output:\n{}",
                procs.get(g).secs(),
                output(cx, name).trim()
            ));
        }
        let have = tree::allocated(&root);
        if have != last {
            (last, since) = (have, Instant::now());
        } else if have > 0 && since.elapsed() >= STILL {
            return Ok(procs.get(g).secs());
        }
        if procs.get(g).secs() > f64::from(WAIT) / 2.0 {
            return Err(format!(
                "{name}: with only h1 up, {} MiB on disk after {:.0} s and still growing or not begun",
                have >> 20,
                procs.get(g).secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The scenario.
pub(super) fn liar(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    let honest: Vec<usize> = [2, 4].into_iter().filter(|i| *i <= HOSTS).collect();
    let (h1, h3) = (cx.host(1)?, cx.host(3)?);
    let hosts = honest.iter().map(|i| cx.host(*i)).collect::<Result<Vec<Host>, String>>()?;
    cx.gen(&h1, GAME, MIB, SEED)?;
    for h in &hosts {
        cx.gen(h, GAME, MIB, SEED)?;
    }
    cx.copy_catalog(&h1, &h3)?;

    // The liar: scanned first, corrupted after, mtime restored.
    let s1 = cx.serve(procs, h1, None)?;
    let bad = archive(&s1.host);
    let (offset, original) = corrupt(&bad)?;
    eprintln!(
        "  corrupted {CORRUPT} bytes of {} at offset {offset} after h1's scan; size and mtime unchanged",
        bad.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );

    // h3 fetches by mDNS while h1 is the only holder.
    let name = format!("h{}-get", h3.i);
    let mut args = cx.args("get", &h3, None, &["--wait", &WAIT.to_string()]);
    args.insert(1, GAME.to_owned());
    let g = procs.spawn(&name, &h3.ns(), &cx.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h3.config)])?;
    let t = Instant::now();
    let stalled = stall(cx, procs, g, &name, &h3)?;
    std::thread::sleep(HONEST_AFTER.saturating_sub(t.elapsed()));
    eprintln!(
        "  {name}: with only h1 up, stuck at {} of {MIB} MiB on disk {stalled:.1} s after it started",
        tree::allocated(&h3.root(GAME)) >> 20
    );

    // The honest seeders come up.
    let mut seeders = Vec::new();
    for h in hosts {
        let i = h.i;
        seeders.push(cx.serve(procs, h, None)?);
        eprintln!("  h{i}-serve up {:.1} s after h3's get started", t.elapsed().as_secs_f64());
    }

    let proc = procs.get(g);
    let status = proc.wait(TIMEOUT)?;
    let secs = proc.secs();
    let out = output(cx, &name);
    if !status.success() {
        return Err(format!("{name} failed ({status}) after {secs:.1} s; its output:\n{}", out.trim()));
    }
    eprintln!("  {name} exited 0 in {secs:.1} s");

    // It said it banned the liar and waited for another holder.
    let ban = out.lines().find(|l| l.contains(&format!("peer {} banned", s1.short()))).map(str::trim);
    let wait = out.lines().find(|l| l.contains(&format!("waiting up to {WAIT} s for another peer that holds {GAME}"))).map(str::trim);
    let (Some(ban), Some(wait)) = (ban, wait) else {
        return Err(format!(
            "{name} succeeded but its output does not say it banned h1 ({}) and waited for another holder \
             (ban line: {}, wait line: {}); its output:\n{}",
            s1.short(),
            ban.is_some(),
            wait.is_some(),
            out.trim()
        ));
    };
    eprintln!("  {name}: {ban}");
    eprintln!("  {name}: {wait}");

    // Byte-identical to the honest tree, installed, and not the liar's bytes.
    let want = &seeders[0].host;
    let (files, bytes) = tree::compare(&want.root(GAME), &h3.root(GAME))?;
    let local = tree::installed(&h3.root(GAME))?;
    let got = read_at(&archive(&h3), offset, CORRUPT)?;
    if got != original {
        return Err(format!("h3's {GAME}.tar at offset {offset} is not the original data"));
    }
    if read_at(&bad, offset, CORRUPT)? == got {
        return Err(format!("h1's {GAME}.tar is no longer corrupt at offset {offset}"));
    }
    if tree::compare(&s1.host.root(GAME), &h3.root(GAME)).is_ok() {
        return Err("h3's tree equals h1's corrupt tree".to_owned());
    }
    let names: Vec<String> = seeders.iter().map(|s| format!("h{}", s.host.i)).collect();
    Ok(format!(
        "h3 banned liar h1, waited, then fetched from {} once they came up: h3 == h{}: {files} files, {} MiB byte-identical \
         (not h1's corrupt bytes); local/ has {local} entries; `get` ran {secs:.1} s",
        names.join("+"),
        want.i,
        bytes >> 20
    ))
}
