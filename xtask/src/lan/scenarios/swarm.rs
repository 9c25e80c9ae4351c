//! (swarm) One seeder and three downloaders started together, every host's
//! uplink capped: the setting where downloaders that serve each other the
//! parts they already verified ("swarming") beat a lone seeder's uplink.
//!
//! h1 serves a generated game; h2, h3 and h4 start `lanspread get` at the
//! same moment (found by mDNS, as users find them). Every host's `eth0`
//! egress is capped at [`RATE`] Mbit/s with `tc tbf`. Each downloader's
//! copy must hash (SHA-256, file by file) to the seeder's. Each
//! downloader's time and where its bytes came from are printed; nothing
//! is asserted about time: without swarming the three share h1's uplink
//! (about 3× the time of one alone), with it the last should finish near
//! the time of one alone. `cargo xtask bench --only 8` measures that.
//!
//! The game is [`MIB_CI`] MiB under `CI=true` (to keep CI quick) and
//! [`MIB`] MiB otherwise; `XTASK_LAN_SWARM_MIB=N` sets it.

use super::super::net;
use super::super::procs::Procs;
use super::{finish_get, Cx, Host, Summary, HOSTS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GAME: &str = "lan-swarm";
const SEED: u64 = 88;
/// Every host's uplink, Mbit/s.
const RATE: u32 = 100;
/// Game size, MiB.
const MIB: u64 = 100;
/// Game size under `CI=true`, MiB.
const MIB_CI: u64 = 48;

/// Game size: `XTASK_LAN_SWARM_MIB`, else [`MIB_CI`] under CI, else [`MIB`].
fn mib() -> Result<u64, String> {
    match std::env::var("XTASK_LAN_SWARM_MIB") {
        Ok(v) => v.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("XTASK_LAN_SWARM_MIB={v:?} is not a positive number")),
        Err(_) => Ok(if super::super::is_ci() { MIB_CI } else { MIB }),
    }
}

/// SHA-256 (hex) of every file of the game root, by relative path (`sha256sum`).
fn hashes(root: &Path) -> Result<BTreeMap<PathBuf, String>, String> {
    // The files as the benchmarks list them: no `local/`, no top-level
    // dot-files (a peer's bookkeeping), no symbolic links.
    let list: Vec<PathBuf> = crate::bench::gen::listing(root, &["local"])?.into_keys().collect();
    let mut out = BTreeMap::new();
    for batch in list.chunks(256) {
        let mut cmd = Command::new("sha256sum");
        cmd.arg("-b").arg("--").args(batch).current_dir(root);
        let text = super::super::output(&mut cmd)?;
        for (line, path) in text.lines().zip(batch) {
            // `HASH *PATH`: the order is the order of the arguments.
            let hash = line.split_whitespace().next().unwrap_or_default();
            if hash.len() != 64 || !line.ends_with(&*path.to_string_lossy()) {
                return Err(format!("sha256sum: unexpected line {line:?} for {}", path.display()));
            }
            out.insert(path.clone(), hash.to_owned());
        }
    }
    if out.len() != list.len() {
        return Err(format!("sha256sum hashed {} of {} files under {}", out.len(), list.len(), root.display()));
    }
    Ok(out)
}

/// Checks `got`'s files against `want`'s hashes; returns (files, bytes).
fn same_hashes(want: &BTreeMap<PathBuf, String>, want_root: &Path, got: &Host) -> Result<(usize, u64), String> {
    let root = got.root(GAME);
    let have = hashes(&root)?;
    let mut problems = Vec::new();
    for (p, h) in want {
        match have.get(p) {
            None => problems.push(format!("missing {}", p.display())),
            Some(g) if g != h => problems.push(format!("{}: SHA-256 {} instead of {}", p.display(), &g[..12], &h[..12])),
            Some(_) => {}
        }
    }
    problems.extend(have.keys().filter(|p| !want.contains_key(*p)).map(|p| format!("unexpected {}", p.display())));
    if !problems.is_empty() {
        return Err(format!("h{}'s {GAME} is not a copy of {}: {}", got.i, want_root.display(), problems.join("; ")));
    }
    let bytes = want.keys().map(|p| std::fs::metadata(want_root.join(p)).map(|m| m.len()).unwrap_or(0)).sum();
    Ok((want.len(), bytes))
}

/// Host of each peer that joined `serve` (`peer SHORT joined from ADDR`).
fn joined(serve_stdout: &str) -> Vec<(String, usize)> {
    serve_stdout
        .lines()
        .filter_map(|l| {
            let rest = l.split("peer ").nth(1)?;
            let (short, addr) = rest.split_once(" joined from ")?;
            let ip = addr.trim().rsplit_once(':').map_or(addr, |(ip, _)| ip).trim_matches(['[', ']']);
            let host = (1..=HOSTS).find(|i| net::host_ip(*i) == ip)?;
            Some((short.trim().to_owned(), host))
        })
        .collect()
}

/// `h1 67%, h3 33%`: who delivered a download's bytes.
fn sources(s: &Summary, seeder: &str, hosts: &[(String, usize)]) -> String {
    s.shares
        .iter()
        .map(|(peer, b)| {
            let name = if peer == seeder {
                "h1 (seeder)".to_owned()
            } else {
                hosts
                    .iter()
                    .find(|(short, _)| peer.starts_with(short.as_str()))
                    .map_or_else(|| format!("peer {}", &peer[..8.min(peer.len())]), |(_, h)| format!("h{h} (downloader)"))
            };
            format!("{name} {:.0}%", *b as f64 * 100.0 / s.bytes.max(1) as f64)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scenario.
pub(super) fn swarm(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    let mib = mib()?;
    let h1 = cx.host(1)?;
    let downloaders = (2..=HOSTS).map(|i| cx.host(i)).collect::<Result<Vec<Host>, String>>()?;
    cx.gen(&h1, GAME, mib, SEED)?;
    for h in &downloaders {
        cx.copy_catalog(&h1, h)?;
    }
    for i in 1..=HOSTS {
        net::shape(i, Some(RATE))?;
    }
    let want = hashes(&h1.root(GAME))?;
    let s1 = cx.serve(procs, h1, None)?;
    let one = (mib << 20) as f64 * 8.0 / (f64::from(RATE) * 1e6);
    eprintln!(
        "  every uplink capped at {RATE} Mbit/s; {mib} MiB take {one:.1} s through one uplink: one downloader alone needs about that, \
         three sharing h1's uplink about {:.1} s",
        3.0 * one
    );

    // Started together; each polled, so each exit time is its own.
    let t = Instant::now();
    let gets =
        downloaders.iter().map(|h| cx.get(procs, h, "get", GAME, None, &["--no-install"])).collect::<Result<Vec<usize>, String>>()?;
    let timeout = Duration::from_secs(60) + Duration::from_secs_f64(6.0 * one);
    while gets.iter().any(|g| procs.get(*g).poll().is_none()) {
        if t.elapsed() > timeout {
            return Err(format!("the three downloads did not all end within {:.0} s", timeout.as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = t.elapsed().as_secs_f64();
    let mut sums = Vec::new();
    for g in &gets {
        sums.push(finish_get(procs, *g, Duration::from_secs(1))?);
    }

    let hosts = joined(&procs.get(s1.proc).stdout());
    let mut lines = Vec::new();
    let mut from_peers = 0u64;
    let mut total = 0u64;
    for (h, s) in downloaders.iter().zip(&sums) {
        let (n, bytes) = same_hashes(&want, &s1.host.root(GAME), h)?;
        let not_seeder: u64 = s.shares.iter().filter(|(p, _)| *p != s1.id).map(|(_, b)| *b).sum();
        (from_peers, total) = (from_peers + not_seeder, total + s.bytes);
        eprintln!(
            "  h{}: `get` ran {:.1} s (download {:.1} s); {n} files, {} MiB, SHA-256 identical to h1's; bytes from {}",
            h.i,
            s.wall,
            s.secs,
            bytes >> 20,
            sources(s, &s1.id, &hosts)
        );
        lines.push(format!("h{} {:.1} s", h.i, s.wall));
    }
    let share = from_peers as f64 * 100.0 / total.max(1) as f64;
    eprintln!(
        "  all three done {all:.1} s after they started = {:.2}× one uplink's time; {share:.0}% of the bytes came from other downloaders",
        all / one
    );
    Ok(format!(
        "3 downloaders of {mib} MiB at {RATE} Mbit/s uplinks, all SHA-256 identical to the seeder's: {}; last done at {all:.1} s \
         ({:.2}× one uplink's time); {share:.0}% of the bytes from other downloaders",
        lines.join(", "),
        all / one
    ))
}
