//! The end-to-end scenarios of issue 5, point 8, over a LAN of namespaces.

use super::net;
use super::procs::Procs;
use super::tree;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod liar;
mod many;
#[path = "mdns_v6.rs"]
mod mdns_v6;
mod safety;
mod swarm;

/// Hosts of the test LAN: two seeders and two downloaders.
const HOSTS: usize = 4;
/// Lines of each log printed when a scenario fails.
const TAIL: usize = 25;

/// Tears the LAN down when dropped, so it goes away even on failure or panic.
struct LanGuard {
    keep: bool,
}

impl LanGuard {
    fn up(n: usize, keep: bool) -> Result<LanGuard, String> {
        // Built before `up`, so a half-built LAN is torn down too.
        let guard = LanGuard { keep };
        net::up(n)?;
        net::check_reachable(n)?;
        Ok(guard)
    }
}

impl Drop for LanGuard {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("lan: --keep: the LAN stays up; remove it with `cargo xtask lan down`");
            return;
        }
        if let Err(e) = net::down(false) {
            eprintln!("lan: teardown: {e}");
        }
    }
}

struct Scenario {
    key: &'static str,
    name: &'static str,
    run: fn(&Cx, &mut Procs) -> Result<String, String>,
}

const SCENARIOS: [Scenario; 8] = [
    Scenario { key: "a", name: "mdns: two seeders + one downloader, real mDNS, byte-identical, installed", run: mdns },
    Scenario { key: "b", name: "kill: a seeder is SIGKILLed mid-download, the other one finishes it", run: kill },
    Scenario {
        key: "c",
        name: "mixed: s2n-quic seeder + quinn seeder; quinn and s2n-quic downloaders, by mDNS and pinned cross-stack",
        run: mixed,
    },
    Scenario { key: "d", name: "many: 16,000 files and a zip of them, RLIMIT_NOFILE 256 on both sides, verified", run: many::many },
    Scenario { key: "e", name: "safety: no hand-made local/ replaced without --adopt; case-colliding games unshared", run: safety::safety },
    Scenario { key: "f", name: "liar first: the only holder serves corrupt bytes; banned, then honest seeders finish it", run: liar::liar },
    Scenario { key: "v6", name: "mdns-v6: a seeder reachable only at its IPv6 link-local address joins by mDNS", run: mdns_v6::mdns_v6 },
    Scenario {
        key: "swarm",
        name: "swarm: 1 seeder + 3 downloaders started together, 100 Mbit/s uplinks, SHA-256 identical",
        run: swarm::swarm,
    },
];

/// Runs every scenario (or those in `only`) on a fresh LAN.
pub fn run_all(bin: &Path, work: &Path, keep: bool, only: Option<&[String]>) -> Result<(), String> {
    let started = Instant::now();
    if let Some(only) = only {
        if let Some(bad) = only.iter().find(|k| !SCENARIOS.iter().any(|s| s.key == k.as_str())) {
            let keys: Vec<&str> = SCENARIOS.iter().map(|s| s.key).collect();
            return Err(format!("--only: no scenario {bad:?} ({})", keys.join(", ")));
        }
    }
    eprintln!("lan: removing leftovers of an earlier run, if any");
    net::down(true)?;
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    }
    let _lan = LanGuard::up(HOSTS, keep)?;
    eprintln!("lan: {HOSTS} hosts up ({}..{}), binary {}", net::host_ip(1), net::host_ip(HOSTS), bin.display());
    let mut results = Vec::new();
    for s in SCENARIOS.iter().filter(|s| only.is_none_or(|o| o.iter().any(|k| k == s.key))) {
        eprintln!("\n=== lan scenario ({}) {}", s.key, s.name);
        let t = Instant::now();
        let dir = work.join(s.key);
        let result = Procs::new(&dir.join("logs")).and_then(|mut procs| {
            let cx = Cx { bin: bin.to_path_buf(), dir: dir.clone() };
            let r = (s.run)(&cx, &mut procs);
            if let Err(e) = &r {
                eprintln!(
                    "FAILED ({}) {e}\n  logs of every process (all in {}):\n{}",
                    s.key,
                    dir.join("logs").display(),
                    procs.tails(TAIL)
                );
            }
            r
            // `procs` drops here: every process of the scenario is killed.
        });
        for i in 1..=HOSTS {
            let _ = net::shape(i, None);
        }
        if result.is_ok() && !keep {
            // The game data is large; a passing scenario keeps only its logs.
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_name() != "logs" {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        match &result {
            Ok(detail) => eprintln!("--- ({}) PASS in {secs:.1} s: {detail}", s.key),
            Err(_) => eprintln!("--- ({}) FAIL in {secs:.1} s", s.key),
        }
        results.push((s, result.is_ok(), secs));
    }
    eprintln!("\nlan test summary ({:.1} s total):", started.elapsed().as_secs_f64());
    for (s, ok, secs) in &results {
        eprintln!("  {} ({}) {:>6.1} s  {}", if *ok { "PASS" } else { "FAIL" }, s.key, secs, s.name);
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0.key).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("lan test: scenario(s) {} failed (logs under {})", failed.join(", "), work.display()))
    }
}

/// One scenario's context.
struct Cx {
    bin: PathBuf,
    dir: PathBuf,
}

/// A host's directories in a scenario.
struct Host {
    i: usize,
    games: PathBuf,
    config: PathBuf,
}

impl Host {
    fn ns(&self) -> String {
        net::host_ns(self.i)
    }

    fn root(&self, game: &str) -> PathBuf {
        self.games.join(game)
    }
}

/// A seeder that is serving.
struct Seeder {
    proc: usize,
    host: Host,
    /// Its peer id (64 hex digits).
    id: String,
}

impl Seeder {
    fn short(&self) -> &str {
        &self.id[..8]
    }
}

impl Cx {
    fn host(&self, i: usize) -> Result<Host, String> {
        self.host_with(i, "games")
    }

    /// Host `i` with another game directory (same config directory).
    fn host_with(&self, i: usize, games: &str) -> Result<Host, String> {
        let base = self.dir.join(format!("h{i}"));
        let (games, config) = (base.join(games), base.join("config"));
        for d in [&games, &config] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(Host { i, games, config })
    }

    /// Generates game `id` on `h` (same seed, same bytes).
    fn gen(&self, h: &Host, id: &str, mib: u64, seed: u64) -> Result<(), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("gen-game").arg("--games").arg(&h.games).args(["--id", id, "--size-mib", &mib.to_string(), "--seed", &seed.to_string()]);
        cmd.env("LANSPREAD_CONFIG_DIR", &h.config);
        super::output(&mut cmd).map(drop)
    }

    /// Gives `to` the catalog of `from` (the downloader must know the game).
    fn copy_catalog(&self, from: &Host, to: &Host) -> Result<(), String> {
        let (src, dst) = (from.games.join("catalog.toml"), to.games.join("catalog.toml"));
        std::fs::copy(&src, &dst).map(drop).map_err(|e| format!("copying {} to {}: {e}", src.display(), dst.display()))
    }

    fn args(&self, cmd: &str, h: &Host, transport: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut a = vec![cmd.to_owned(), "--games".to_owned(), h.games.to_string_lossy().into_owned()];
        if let Some(t) = transport {
            a.extend(["--transport".to_owned(), t.to_owned()]);
        }
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    }

    /// Starts `lanspread serve` on `h` and waits until it serves.
    fn serve(&self, procs: &mut Procs, h: Host, transport: Option<&str>) -> Result<Seeder, String> {
        let name = format!("h{}-serve", h.i);
        let args = self.args("serve", &h, transport, &[]);
        let proc = procs.spawn(&name, &h.ns(), &self.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h.config)])?;
        let line = procs.get(proc).wait_line("serving ", Duration::from_secs(20))?;
        let id = line.rsplit(" as ").next().map(str::trim).unwrap_or_default().to_owned();
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{name}: cannot read the peer id from {line:?}"));
        }
        if !line.starts_with("serving 1 game") {
            return Err(format!("{name}: expected to serve 1 game: {line:?}"));
        }
        eprintln!("  {name}: {line}");
        Ok(Seeder { proc, host: h, id })
    }

    /// Starts `lanspread get GAME --json [extra…]` on `h`, as `hI-LABEL`.
    fn get(&self, procs: &mut Procs, h: &Host, label: &str, game: &str, transport: Option<&str>, extra: &[&str]) -> Result<usize, String> {
        let mut args = self.args("get", h, transport, &["--wait", "20", "--json"]);
        args.insert(1, game.to_owned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        procs.spawn(&format!("h{}-{label}", h.i), &h.ns(), &self.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h.config)])
    }

    /// `lanspread games --wait SECS --json` on `h`: the peers (hex ids)
    /// holding the latest version of `game`.
    fn holders(&self, procs: &mut Procs, h: &Host, game: &str, wait: u32) -> Result<Vec<String>, String> {
        let args = self.args("games", h, None, &["--wait", &wait.to_string(), "--json"]);
        let p = procs.spawn(&format!("h{}-games", h.i), &h.ns(), &self.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h.config)])?;
        let proc = procs.get(p);
        let status = proc.wait(Duration::from_secs(u64::from(wait) + 20))?;
        if !status.success() {
            return Err(format!("{} failed ({status})", proc.name));
        }
        let out = proc.stdout();
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{}: not JSON ({e}): {out}", proc.name))?;
        let row = v.as_array().and_then(|rows| rows.iter().find(|r| r["id"].as_str() == Some(game)));
        let row = row.ok_or_else(|| format!("{}: {game} is not listed", proc.name))?;
        Ok(row["peers_with_latest"].as_array().map(|ps| ps.iter().filter_map(peer_hex).collect()).unwrap_or_default())
    }
}

/// Waits until every seeder has seen every other one join (by mDNS).
fn await_mutual_discovery(procs: &mut Procs, seeders: &[&Seeder], timeout: Duration) -> Result<(), String> {
    let t = Instant::now();
    for a in seeders {
        for b in seeders.iter().filter(|b| b.id != a.id) {
            let left = timeout.saturating_sub(t.elapsed());
            procs.get(a.proc).wait_line(&format!("peer {} joined", b.short()), left).map_err(|e| format!("discovery: {e}"))?;
        }
    }
    eprintln!("  seeders discovered each other in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// A finished `get`: its JSON summary.
struct Summary {
    /// Wall time of the `get` process.
    wall: f64,
    secs: f64,
    installed: bool,
    /// (peer id hex, verified bytes delivered).
    shares: Vec<(String, u64)>,
    bytes: u64,
}

impl Summary {
    fn share(&self, s: &Seeder) -> Option<u64> {
        self.shares.iter().find(|(p, _)| *p == s.id).map(|(_, b)| *b)
    }

    fn describe(&self, seeders: &[&Seeder]) -> String {
        let name = |p: &str| {
            seeders.iter().find(|s| s.id == p).map(|s| format!("h{}", s.host.i)).unwrap_or_else(|| p[..8.min(p.len())].to_owned())
        };
        let rate = if self.secs > 0.0 { self.bytes as f64 / self.secs / 1e6 } else { 0.0 };
        let shares = self
            .shares
            .iter()
            .map(|(p, b)| format!("{} {:.0}%", name(p), *b as f64 * 100.0 / self.bytes.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{} MiB in {:.1} s ({rate:.0} MB/s; {shares}; `get` ran {:.1} s)", self.bytes >> 20, self.secs, self.wall)
    }
}

fn peer_hex(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.to_lowercase()),
        serde_json::Value::Array(a) if a.len() == 32 => {
            a.iter().map(|b| b.as_u64().filter(|b| *b < 256).map(|b| format!("{b:02x}"))).collect::<Option<String>>()
        }
        _ => None,
    }
}

/// Waits for the `get` process `p` to succeed and reads its summary.
fn finish_get(procs: &mut Procs, p: usize, timeout: Duration) -> Result<Summary, String> {
    let proc = procs.get(p);
    let status = proc.wait(timeout)?;
    if !status.success() {
        return Err(format!("{} failed ({status})", proc.name));
    }
    let out = proc.stdout();
    let line =
        out.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or_else(|| format!("{}: no JSON summary on stdout", proc.name))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{}: summary {line:?}: {e}", proc.name))?;
    let d = &v["download"];
    let shares = d["peers"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| Some((peer_hex(&p["peer"])?, p["bytes"].as_u64()?))).collect())
        .unwrap_or_default();
    Ok(Summary {
        wall: proc.secs(),
        secs: d["secs"].as_f64().or_else(|| v["secs"].as_f64()).unwrap_or(0.0),
        installed: v["installed"].as_bool().unwrap_or(false),
        shares,
        bytes: d["bytes"].as_u64().unwrap_or(0),
    })
}

/// The downloaded root on `got` equals the seeder's and is installed.
fn verify(want: &Host, got: &Host, game: &str, s: &Summary) -> Result<String, String> {
    if !s.installed {
        return Err(format!("h{}: the summary does not say the game was installed", got.i));
    }
    let (files, bytes) = tree::compare(&want.root(game), &got.root(game))?;
    let local = tree::installed(&got.root(game))?;
    Ok(format!("h{} == h{}: {files} files, {} MiB byte-identical; local/ has {local} entries", got.i, want.i, bytes >> 20))
}

fn require_all_contributed(s: &Summary, seeders: &[&Seeder], who: &str) -> Result<(), String> {
    for seeder in seeders {
        match s.share(seeder) {
            Some(b) if b > 0 => {}
            got => {
                return Err(format!(
                    "{who}: seeder h{} ({}) delivered {} bytes; expected both seeders to take part ({})",
                    seeder.host.i,
                    seeder.short(),
                    got.map(|b| b.to_string()).unwrap_or_else(|| "no".into()),
                    s.describe(seeders)
                ))
            }
        }
    }
    Ok(())
}

/// (a) Two seeders and a downloader find each other by real mDNS (no
/// `--peer`); the download is byte-identical and installed; seeders stop
/// cleanly on SIGTERM.
fn mdns(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    const GAME: &str = "lan-mdns";
    let (h1, h2, h3) = (cx.host(1)?, cx.host(2)?, cx.host(3)?);
    for h in [&h1, &h2] {
        cx.gen(h, GAME, 64, 11)?;
    }
    cx.copy_catalog(&h1, &h3)?;
    let s1 = cx.serve(procs, h1, None)?;
    let s2 = cx.serve(procs, h2, None)?;
    let seeders = [&s1, &s2];
    await_mutual_discovery(procs, &seeders, Duration::from_secs(15))?;
    // The downloader's host sees both seeders holding the game, by mDNS alone.
    let t = Instant::now();
    let holders = cx.holders(procs, &h3, GAME, 3)?;
    for s in seeders {
        if !holders.contains(&s.id) {
            return Err(format!(
                "h3 `games` does not list seeder h{} ({}) as a holder of {GAME}; holders: {holders:?}",
                s.host.i,
                s.short()
            ));
        }
    }
    eprintln!("  h3 `games --wait 3` sees {GAME} on h1 and h2 (ran {:.1} s)", t.elapsed().as_secs_f64());
    let g = cx.get(procs, &h3, "get", GAME, None, &[])?;
    let sum = finish_get(procs, g, Duration::from_secs(60))?;
    eprintln!("  h3 downloaded {}", sum.describe(&seeders));
    let detail = verify(&s1.host, &h3, GAME, &sum)?;
    let used = seeders.iter().filter(|s| sum.share(s).is_some_and(|b| b > 0)).count();
    if used < 2 {
        eprintln!("  NOTE: only {used} of the 2 seeders delivered data (the download uses the holders known when it starts)");
    }
    let mut stops = Vec::new();
    for s in seeders {
        let p = procs.get(s.proc);
        let t = Instant::now();
        let status = p.terminate(Duration::from_secs(10))?;
        if !status.success() {
            return Err(format!("{} exited with {status} on SIGTERM (expected a clean exit 0)", p.name));
        }
        stops.push(format!("{:.1} s", t.elapsed().as_secs_f64()));
    }
    Ok(format!("{detail}; {}; seeders exited 0 on SIGTERM ({})", sum.describe(&seeders), stops.join(", ")))
}

/// (b) A seeder serving the download is SIGKILLed at about 20%; the
/// download still completes (from the other one).
fn kill(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    const GAME: &str = "lan-kill";
    const MIB: u64 = 256;
    const RATE: u32 = 200;
    let (h1, h2, h3) = (cx.host(1)?, cx.host(2)?, cx.host(3)?);
    for h in [&h1, &h2] {
        cx.gen(h, GAME, MIB, 22)?;
        net::shape(h.i, Some(RATE))?;
    }
    cx.copy_catalog(&h1, &h3)?;
    let s1 = cx.serve(procs, h1, None)?;
    let s2 = cx.serve(procs, h2, None)?;
    let seeders = [&s1, &s2];
    await_mutual_discovery(procs, &seeders, Duration::from_secs(15))?;
    let tx0 = [net::tx_bytes(1)?, net::tx_bytes(2)?];
    let g = cx.get(procs, &h3, "get", GAME, None, &[])?;
    // Wait until a fifth of the data is on h3's disk.
    let root = h3.root(GAME);
    let threshold = (MIB << 20) / 5;
    let t = Instant::now();
    let at = loop {
        let have = tree::allocated(&root);
        if have >= threshold {
            break have;
        }
        if let Some(s) = procs.get(g).poll() {
            return Err(format!("the download ended ({s}) before a seeder could be killed mid-way ({} MiB on disk)", have >> 20));
        }
        if t.elapsed() > Duration::from_secs(40) {
            return Err(format!("the download did not reach {} MiB within 40 s ({} MiB on disk)", threshold >> 20, have >> 20));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Kill the seeder that has sent the most so far: one that is serving.
    let sent = [net::tx_bytes(1)?.saturating_sub(tx0[0]), net::tx_bytes(2)?.saturating_sub(tx0[1])];
    let (victim, survivor) = if sent[0] >= sent[1] { (&s1, &s2) } else { (&s2, &s1) };
    procs.get(victim.proc).kill();
    let pct = at as f64 * 100.0 / (MIB << 20) as f64;
    eprintln!(
        "  SIGKILLed h{}-serve with {} MiB ({pct:.0}%) on h3's disk, {:.1} s after get started (sent so far: h1 {} MiB, h2 {} MiB)",
        victim.host.i,
        at >> 20,
        t.elapsed().as_secs_f64(),
        sent[0] >> 20,
        sent[1] >> 20
    );
    if sent[0].min(sent[1]) < 1 << 20 {
        eprintln!("  NOTE: h{} had sent almost nothing: it is not a source of this download", survivor.host.i);
    }
    let sum = finish_get(procs, g, Duration::from_secs(120))?;
    eprintln!("  h3 downloaded {}", sum.describe(&seeders));
    let detail = verify(&survivor.host, &h3, GAME, &sum)?;
    // Proof that it was mid-download: both took part.
    require_all_contributed(&sum, &seeders, "h3")?;
    Ok(format!("killed h{} at {pct:.0}%; {detail}; {}", victim.host.i, sum.describe(&seeders)))
}

/// (c) One seeder on s2n-quic, one on quinn. A quinn and an s2n-quic
/// downloader each get the game by mDNS; then each stack downloads from the
/// other stack's seeder alone (`--no-mdns --peer`), so both directions of
/// interop carry data every run.
fn mixed(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    const GAME: &str = "lan-mixed";
    let (h1, h2) = (cx.host(1)?, cx.host(2)?);
    for h in [&h1, &h2] {
        cx.gen(h, GAME, 48, 33)?;
    }
    let s1 = cx.serve(procs, h1, Some("s2n"))?;
    let s2 = cx.serve(procs, h2, Some("quinn"))?;
    let seeders = [&s1, &s2];
    await_mutual_discovery(procs, &seeders, Duration::from_secs(15))?;
    let mut details = Vec::new();
    // (host, stack, game directory, pinned seeder)
    let runs: [(usize, &str, &str, Option<&Seeder>); 4] =
        [(3, "quinn", "games", None), (4, "s2n", "games", None), (3, "quinn", "pinned", Some(&s1)), (4, "s2n", "pinned", Some(&s2))];
    for (i, stack, dir, pinned) in runs {
        let h = cx.host_with(i, dir)?;
        cx.copy_catalog(&s1.host, &h)?;
        let peer = pinned.map(|s| format!("{}:47800", net::host_ip(s.host.i)));
        let extra: Vec<&str> = match &peer {
            Some(p) => vec!["--no-mdns", "--peer", p],
            None => vec![],
        };
        let label = format!("get-{stack}-{}", if pinned.is_some() { "pinned" } else { "mdns" });
        let how = match pinned {
            Some(s) => format!("from h{} only", s.host.i),
            None => "by mDNS".to_owned(),
        };
        let g = cx.get(procs, &h, &label, GAME, Some(stack), &extra)?;
        let sum = finish_get(procs, g, Duration::from_secs(60))?;
        eprintln!("  h{i} ({stack}, {how}) downloaded {}", sum.describe(&seeders));
        verify(&s1.host, &h, GAME, &sum)?;
        if let Some(s) = pinned {
            if sum.share(s).is_none_or(|b| b == 0) {
                return Err(format!("h{i} ({stack}) was pinned to h{} but did not download from it: {}", s.host.i, sum.describe(&seeders)));
            }
        }
        details.push(format!("{stack} {how} ok"));
    }
    Ok(format!("{}; all byte-identical and installed", details.join(", ")))
}
