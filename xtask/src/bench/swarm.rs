//! Case 8: swarming. One seeder and three downloaders on the namespaced LAN
//! of case 2 ([`super::lanbench`]), every host's uplink (`eth0` egress)
//! capped at [`RATE`] Mbit/s with `tc tbf`, so a downloader's uplink is as
//! narrow as the seeder's:
//!
//! - (a) one downloader alone from the seeder;
//! - (b) three downloaders started together; the figure is the last of the
//!   three to finish, reported relative to (a).
//!
//! Without swarming the three share the seeder's uplink and (b) takes about
//! 3 × (a); when downloaders serve each other the parts they have already
//! verified, their uplinks join in and (b) can approach (a) (target ≤
//! [`TARGET`]).
//!
//! Tools, each timed durably (a `sync` after the last downloader finished
//! is inside every figure):
//!
//! - lanspread: `serve` on h1 (running throughout), `get --no-install` on
//!   each downloader, told every other host of the run with `--peer` (mDNS
//!   stays on); timed from spawning the `get` processes until the last one
//!   printed its result (a finished `get` keeps serving while others fetch
//!   from it, then exits), then `sync`;
//! - qBittorrent-nox from Debian (installed with apt-get when missing):
//!   one instance per host, its own profile directory, its Web UI on its
//!   namespace address with authentication bypassed for the LAN's subnet;
//!   DHT, PeX, LSD, UPnP and queueing off, TCP only (uTP collapses behind
//!   `tbf`: `shared/bench/BASELINES.md`); a `.torrent` made with
//!   `mktorrent`, no tracker: each downloader is told the seeder and the
//!   other downloaders through `/api/v2/torrents/addPeers`. Timed from the
//!   Web API call adding the torrent on the downloaders until the last one
//!   reports progress 1 (polled through the Web API), then `sync`.
//!
//! Then a memory round (lanspread only): [`CROWD`] downloaders, several
//! per host, fetch the game together from the same seeder, whose peak RSS
//! is read before and after (target under [`MEMORY_BUDGET_MIB`]).

use super::gen::{self, Game};
use super::lanbench::{self, host_ip, host_ns};
use super::measure::{self, Daemon, Finished};
use super::report::{Row, Section, Target};
use super::tools::Tools;
use super::{log, Opts};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The seeder's host.
const SEEDER: usize = 1;
/// The downloaders' hosts; (a) uses the first.
const DOWNLOADERS: [usize; 3] = [2, 3, 4];
/// Every host's uplink, Mbit/s.
const RATE: u32 = 100;
/// Target of lanspread's (b) / (a).
const TARGET: f64 = 1.6;
/// lanspread's QUIC port on every host.
const PORT: u16 = 47800;
/// qBittorrent's Web UI port on every host.
const QBT_WEB: u16 = 8080;
/// qBittorrent's BitTorrent port on every host.
const QBT_PORT: u16 = 6881;
/// qBittorrent's status refresh (its default, 1500 ms, would blur the times).
const QBT_REFRESH_MS: u32 = 100;
/// Pause between two polls of the qBittorrent downloaders.
const POLL: Duration = Duration::from_millis(20);
/// Longest run, and longest wait for a daemon.
const TIMEOUT: Duration = Duration::from_secs(600);
/// Downloaders of the memory round.
const CROWD: usize = 16;
/// The budget for a seeder serving [`CROWD`] downloaders, MiB.
const MEMORY_BUDGET_MIB: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Lanspread,
    Qbt,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Lanspread => "lanspread",
            Tool::Qbt => "qBittorrent",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Tool::Lanspread => "lanspread",
            Tool::Qbt => "qbt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// (a) one downloader.
    Alone,
    /// (b) three downloaders started together.
    Three,
}

impl Setup {
    fn hosts(self) -> &'static [usize] {
        match self {
            Setup::Alone => &DOWNLOADERS[..1],
            Setup::Three => &DOWNLOADERS,
        }
    }
    /// Where its lanspread downloaders listen: one per host.
    fn endpoints(self) -> Vec<Endpoint> {
        self.hosts().iter().map(|&host| Endpoint { host, port: PORT }).collect()
    }
    fn name(self) -> &'static str {
        match self {
            Setup::Alone => "alone",
            Setup::Three => "last of 3",
        }
    }
}

/// A lanspread downloader's host and QUIC port (several share a host in
/// the memory round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Endpoint {
    host: usize,
    port: u16,
}

impl Endpoint {
    fn addr(self) -> String {
        format!("{}:{}", host_ip(self.host), self.port)
    }
    fn name(self) -> String {
        if self.port == PORT {
            format!("h{}", self.host)
        } else {
            format!("h{}-{}", self.host, self.port)
        }
    }
}

/// The hosts qBittorrent downloader `k` is told about: the seeder and the other downloaders of the run.
fn peers(k: usize, hosts: &[usize]) -> Vec<usize> {
    std::iter::once(SEEDER).chain(hosts.iter().copied().filter(|h| *h != k)).collect()
}

/// One timed run.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Per downloader (host order): seconds from the start until it finished.
    done: Vec<f64>,
    /// The `sync` after the last one finished.
    sync: f64,
    /// Bytes the downloaders received from each other (lanspread: from
    /// `get --json`; qBittorrent: what the downloaders uploaded, from the
    /// Web API).
    from_peers: u64,
    /// Bytes the downloaders received in all, counted the same way
    /// (qBittorrent: what the seeder and the downloaders uploaded).
    delivered: u64,
    /// Bytes the seeder's `eth0` sent during the run (headers included).
    seeder_tx: u64,
}

impl Sample {
    /// When the last downloader finished.
    fn last(&self) -> f64 {
        self.done.iter().copied().fold(0.0, f64::max)
    }
    /// The figure: the last one, then `sync`.
    fn durable(&self) -> f64 {
        self.last() + self.sync
    }
}

/// What every run of the case shares.
struct Cx<'a> {
    opts: &'a Opts,
    game: Game,
    work: PathBuf,
    logs: PathBuf,
}

impl Cx<'_> {
    /// Downloader `k`'s game directory for `tool`.
    fn dst(&self, tool: Tool, k: usize) -> PathBuf {
        self.dst_of(tool, Endpoint { host: k, port: PORT })
    }

    /// The game directory of the downloader at `at`.
    fn dst_of(&self, tool: Tool, at: Endpoint) -> PathBuf {
        self.work.join(format!("dst-{}-{}", tool.slug(), at.name()))
    }

    /// Checks every downloader's copy of the run (bytes too when `content`).
    fn verify(&self, tool: Tool, at: &[Endpoint], content: bool) -> Result<(), String> {
        for e in at {
            gen::compare(&self.game.root(), &self.dst_of(tool, *e).join(&self.game.id), content)
                .map_err(|err| format!("{} on {}: {err}", tool.name(), e.name()))?;
        }
        Ok(())
    }
}

/// Bytes host `k` has sent on its `eth0` so far.
fn tx_bytes(k: usize) -> Result<u64, String> {
    let out = measure::output(Command::new("ip").args(["-n", &host_ns(k), "-s", "-j", "link", "show", "dev", "eth0"]))?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("ip -j link: {e}"))?;
    v[0]["stats64"]["tx"]["bytes"].as_u64().ok_or_else(|| format!("ip -j link: no tx byte count in {out}"))
}

/// `RUST_LOG=warn` unless the caller set one.
fn quiet(cmd: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
}

// ---- lanspread ---------------------------------------------------------------

/// `lanspread serve` on the seeder; returns it and its peer id (hex).
fn start_lanspread(cx: &Cx<'_>) -> Result<(Daemon, String), String> {
    let dir = cx.work.join("seed-lanspread");
    gen::link_copy(&cx.game, &dir)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host_ns(SEEDER)]).arg(&cx.opts.bin).arg("serve").arg("--games").arg(&dir);
    cmd.args(["--listen", &format!("[::]:{PORT}")]).env("LANSPREAD_CONFIG_DIR", cx.work.join("cfg-seed"));
    quiet(&mut cmd);
    let mut d = Daemon::spawn(&format!("h{SEEDER}-lanspread-serve"), &mut cmd, &cx.logs)?;
    let line = d.wait_line("serving", TIMEOUT)?;
    let id = line.rsplit(' ').next().unwrap_or_default().to_ascii_lowercase();
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("cannot read the seeder's peer id from {line:?}"));
    }
    Ok((d, id))
}

/// (bytes received, of which from `seeder`) from the summary of `get --json`.
fn received(stdout: &str, seeder: &str) -> Result<(u64, u64), String> {
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or("get --json printed no summary")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("get --json: {e}"))?;
    let peers = v["download"]["peers"].as_array().ok_or("get --json: no download.peers")?;
    let (mut total, mut from_seeder) = (0, 0);
    for p in peers {
        let bytes = p["bytes"].as_u64().unwrap_or(0);
        total += bytes;
        if p["peer"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(seeder)) {
            from_seeder += bytes;
        }
    }
    Ok((total, from_seeder))
}

/// One run of lanspread: the `get`s of `setup` started together.
fn lanspread_run(cx: &Cx<'_>, seeder: &str, at: &[Endpoint], content: bool) -> Result<Sample, String> {
    let mut cmds = Vec::new();
    for &e in at {
        let dst = cx.dst_of(Tool::Lanspread, e);
        measure::fresh_dir(&dst)?;
        std::fs::copy(cx.game.dir.join("catalog.toml"), dst.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host_ns(e.host)]).arg(&cx.opts.bin).args(["get", &cx.game.id, "--games"]).arg(&dst);
        cmd.args(["--no-install", "--json", "--wait", "60", "--listen", &format!("[::]:{}", e.port)]);
        cmd.args(["--peer", &format!("{}:{PORT}", host_ip(SEEDER))]);
        for other in at.iter().filter(|o| **o != e) {
            cmd.args(["--peer", &other.addr()]);
        }
        cmd.env("LANSPREAD_CONFIG_DIR", cx.work.join(format!("cfg-get-{}", e.name())));
        quiet(&mut cmd);
        cmds.push((e, cmd));
    }
    measure::settle(cx.opts.cold);
    let tx0 = tx_bytes(SEEDER)?;
    let t0 = Instant::now();
    // One thread per `get`, each timing its process from its spawn.
    let ended: Vec<Result<(f64, Finished), String>> = std::thread::scope(|s| {
        let running: Vec<_> = cmds
            .iter_mut()
            .map(|(e, cmd)| {
                let (name, logs) = (format!("{}-get", e.name()), &cx.logs);
                s.spawn(move || {
                    let start = t0.elapsed().as_secs_f64();
                    // Finished when it printed its result: a `get` then keeps
                    // serving while the others still fetch from it.
                    measure::run_measured(&name, cmd, logs, TIMEOUT).map(|f| (start + f.first_output.unwrap_or(f.wall), f))
                })
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a timing thread panicked".into()))).collect()
    });
    let sync = measure::run_measured("sync", &mut Command::new("sync"), &cx.logs, TIMEOUT)?.wall;
    let seeder_tx = tx_bytes(SEEDER)?.saturating_sub(tx0);
    let mut s = Sample { sync, seeder_tx, ..Sample::default() };
    for (e, r) in at.iter().zip(ended) {
        let (done, f) = r.map_err(|err| format!("{}: {err}", e.name()))?;
        let (total, from_seeder) = received(&f.stdout, seeder).map_err(|err| format!("{}: {err}", e.name()))?;
        s.done.push(done);
        s.from_peers += total.saturating_sub(from_seeder);
        s.delivered += total;
    }
    cx.verify(Tool::Lanspread, at, content)?;
    for &e in at {
        let _ = std::fs::remove_dir_all(cx.dst_of(Tool::Lanspread, e));
    }
    Ok(s)
}

// ---- qBittorrent -------------------------------------------------------------

/// The qBittorrent instances (one per host) and the torrent they share.
struct Qbt {
    /// Stopped (SIGTERM) when dropped.
    _daemons: Vec<Daemon>,
    torrent: PathBuf,
    hash: String,
    /// Pieces and piece size of the torrent.
    pieces: String,
}

/// Calls qBittorrent's Web API on host `k` (curl inside its namespace).
fn qbt_api(k: usize, args: &[&str], path: &str) -> Result<String, String> {
    let url = format!("http://{}:{QBT_WEB}/api/v2/{path}", host_ip(k));
    measure::output(Command::new("ip").args(["netns", "exec", &host_ns(k), "curl", "-sS", "-f", "--max-time", "30"]).args(args).arg(url))
}

/// `qBittorrent.conf` of host `k`: the Web UI on its namespace address,
/// authentication bypassed for the LAN's subnet.
fn qbt_conf(k: usize) -> String {
    let subnet = host_ip(k).rsplit_once('.').map_or_else(String::new, |(net, _)| format!("{net}.0/24"));
    format!(
        "[LegalNotice]\nAccepted=true\n\n[Preferences]\nWebUI\\Address={}\nWebUI\\Port={QBT_WEB}\nWebUI\\LocalHostAuth=false\n\
         WebUI\\AuthSubnetWhitelistEnabled=true\nWebUI\\AuthSubnetWhitelist={subnet}\nWebUI\\CSRFProtection=false\n\
         WebUI\\HostHeaderValidation=false\nGeneral\\Locale=en\n",
        host_ip(k)
    )
}

/// The preferences set through the Web API once an instance answers.
fn qbt_prefs() -> String {
    serde_json::json!({
        "listen_port": QBT_PORT, "random_port": false, "upnp": false, "dht": false, "pex": false, "lsd": false,
        "queueing_enabled": false, "max_ratio_enabled": false, "temp_path_enabled": false, "add_trackers_enabled": false,
        "bittorrent_protocol": 1, "refresh_interval": QBT_REFRESH_MS,
    })
    .to_string()
}

/// (progress, state) of the torrent on host `k` (`hash` None: the first
/// torrent there); None when it has none.
fn qbt_state(k: usize, hash: Option<&str>) -> Result<Option<(f64, String)>, String> {
    let path = hash.map_or_else(|| "torrents/info".to_owned(), |h| format!("torrents/info?hashes={h}"));
    let out = qbt_api(k, &[], &path)?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("h{k} torrents/info: {e}: {out}"))?;
    Ok(v.get(0).map(|t| (t["progress"].as_f64().unwrap_or(0.0), t["state"].as_str().unwrap_or_default().to_owned())))
}

/// Payload bytes host `k` has uploaded for the torrent since it was added.
fn qbt_uploaded(k: usize, hash: &str) -> Result<u64, String> {
    let out = qbt_api(k, &[], &format!("torrents/info?hashes={hash}"))?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("h{k} torrents/info: {e}: {out}"))?;
    v[0]["uploaded"].as_u64().ok_or_else(|| format!("h{k} torrents/info: no uploaded count in {out}"))
}

/// Complete and seeding.
fn qbt_complete(st: &(f64, String)) -> bool {
    st.0 >= 1.0 && ["uploading", "stalledUP", "queuedUP", "forcedUP", "pausedUP"].contains(&st.1.as_str())
}

/// Waits until the torrent on host `k` is complete; fails on an error state.
fn qbt_wait_complete(k: usize, hash: Option<&str>, timeout: Duration) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let st = qbt_state(k, hash)?;
        match &st {
            Some(s) if qbt_complete(s) => return Ok(()),
            Some((_, s)) if s == "error" || s == "missingFiles" => return Err(format!("qBittorrent on h{k}: torrent state {s}")),
            _ => {}
        }
        if t.elapsed() > timeout {
            return Err(format!("qBittorrent on h{k}: not complete after {} s ({st:?})", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Adds the torrent on host `k`, saving into `dir`, started.
fn qbt_add(k: usize, torrent: &Path, dir: &Path) -> Result<(), String> {
    let (t, d) = (format!("torrents=@{}", torrent.display()), format!("savepath={}", dir.display()));
    let out = qbt_api(k, &["-F", &t, "-F", &d, "-F", "paused=false"], "torrents/add")?;
    if out.trim() != "Ok." {
        return Err(format!("qBittorrent on h{k}: torrents/add answered {out:?}"));
    }
    Ok(())
}

/// Removes the torrent and its files from host `k` (if it has it).
fn qbt_delete(k: usize, hash: &str) -> Result<(), String> {
    if qbt_state(k, Some(hash))?.is_none() {
        return Ok(());
    }
    qbt_api(k, &["--data", &format!("hashes={hash}&deleteFiles=true")], "torrents/delete")?;
    let t = Instant::now();
    while qbt_state(k, Some(hash))?.is_some() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!("qBittorrent on h{k}: the torrent is still there 30 s after torrents/delete"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Makes the torrent, starts an instance on every host and lets the seeder
/// check its copy (none of it timed).
fn start_qbt(cx: &Cx<'_>, tools: &Tools) -> Result<Qbt, String> {
    let (Some(qbt), Some(mktorrent), Some(_)) = (&tools.qbittorrent, &tools.mktorrent, &tools.curl) else {
        return Err("qbittorrent-nox, mktorrent or curl is not installed".into());
    };
    let torrent = cx.work.join("swarm.torrent");
    // No announce URL: no tracker; 256 KiB pieces (mktorrent's default, stated).
    measure::run(Command::new(mktorrent).args(["-l", "18", "-o"]).arg(&torrent).arg(cx.game.root()))?;
    let piece_kib = 256;
    let pieces = cx.game.bytes.div_ceil(piece_kib << 10);
    let mut daemons = Vec::new();
    for k in std::iter::once(SEEDER).chain(DOWNLOADERS) {
        let dir = cx.work.join(format!("qbt-h{k}"));
        let conf = dir.join("qBittorrent").join("config");
        measure::fresh_dir(&conf)?;
        std::fs::write(conf.join("qBittorrent.conf"), qbt_conf(k)).map_err(|e| format!("qBittorrent.conf: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host_ns(k)]).arg(qbt);
        cmd.arg(format!("--profile={}", dir.display())).arg(format!("--webui-port={QBT_WEB}")).arg(format!("--torrenting-port={QBT_PORT}"));
        daemons.push(Daemon::spawn(&format!("h{k}-qbittorrent"), &mut cmd, &cx.logs)?);
        let t = Instant::now();
        while qbt_api(k, &[], "app/version").is_err() {
            if t.elapsed() > Duration::from_secs(30) || !daemons.last_mut().is_some_and(Daemon::alive) {
                return Err(format!("qBittorrent on h{k}: its Web UI did not answer at {}:{QBT_WEB}", host_ip(k)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        qbt_api(k, &["--data-urlencode", &format!("json={}", qbt_prefs())], "app/setPreferences")?;
    }
    // The seeder's own copy (not hard-linked: BitTorrent clients may touch the files).
    let seed = cx.work.join("seed-qbt");
    measure::fresh_dir(&seed)?;
    measure::run(Command::new("cp").arg("-a").arg(cx.game.root()).arg(&seed))?;
    qbt_add(SEEDER, &torrent, &seed)?;
    let t = Instant::now();
    qbt_wait_complete(SEEDER, None, TIMEOUT)?;
    let info = qbt_api(SEEDER, &[], "torrents/info")?;
    let v: serde_json::Value = serde_json::from_str(&info).map_err(|e| format!("torrents/info: {e}"))?;
    let hash = v[0]["hash"].as_str().ok_or_else(|| format!("no torrent hash in {info}"))?.to_owned();
    log(&format!("bench 8: qBittorrent seeder checked its copy in {:.1} s (not timed); torrent {hash}", t.elapsed().as_secs_f64()));
    Ok(Qbt { _daemons: daemons, torrent, hash, pieces: format!("{pieces} pieces × {piece_kib} KiB") })
}

/// One run of qBittorrent: the torrent added on the downloaders of `setup` together.
fn qbt_run(cx: &Cx<'_>, q: &Qbt, setup: Setup, content: bool) -> Result<Sample, String> {
    let hosts = setup.hosts();
    for &k in &DOWNLOADERS {
        qbt_delete(k, &q.hash)?;
    }
    for &k in hosts {
        measure::fresh_dir(&cx.dst(Tool::Qbt, k))?;
    }
    let up0 = qbt_uploaded(SEEDER, &q.hash)?;
    measure::settle(cx.opts.cold);
    let tx0 = tx_bytes(SEEDER)?;
    let t0 = Instant::now();
    for &k in hosts {
        qbt_add(k, &q.torrent, &cx.dst(Tool::Qbt, k))?;
    }
    for &k in hosts {
        while qbt_state(k, Some(&q.hash))?.is_none() {
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!("qBittorrent on h{k}: the torrent did not appear after torrents/add"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let list = peers(k, hosts).iter().map(|p| format!("{}:{QBT_PORT}", host_ip(*p))).collect::<Vec<_>>().join("|");
        let args = ["--data-urlencode", &format!("hashes={}", q.hash), "--data-urlencode", &format!("peers={list}")];
        qbt_api(k, &args, "torrents/addPeers")?;
    }
    let mut done: Vec<Option<f64>> = vec![None; hosts.len()];
    while done.iter().any(Option::is_none) {
        for (i, &k) in hosts.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            match qbt_state(k, Some(&q.hash))? {
                Some(st) if qbt_complete(&st) => done[i] = Some(t0.elapsed().as_secs_f64()),
                Some((_, s)) if s == "error" || s == "missingFiles" => return Err(format!("qBittorrent on h{k}: torrent state {s}")),
                _ => {}
            }
        }
        if t0.elapsed() > TIMEOUT {
            return Err(format!("qBittorrent: not every downloader finished within {} s", TIMEOUT.as_secs()));
        }
        std::thread::sleep(POLL);
    }
    let sync = measure::run_measured("sync", &mut Command::new("sync"), &cx.logs, TIMEOUT)?.wall;
    let seeder_tx = tx_bytes(SEEDER)?.saturating_sub(tx0);
    // The seeder never downloads: what the downloaders uploaded, they uploaded to each other.
    let mut from_peers = 0;
    for &k in hosts {
        from_peers += qbt_uploaded(k, &q.hash)?;
    }
    let delivered = from_peers + qbt_uploaded(SEEDER, &q.hash)?.saturating_sub(up0);
    cx.verify(Tool::Qbt, &setup.endpoints(), content)?;
    for &k in hosts {
        qbt_delete(k, &q.hash)?;
        let _ = std::fs::remove_dir_all(cx.dst(Tool::Qbt, k));
    }
    Ok(Sample { done: done.into_iter().flatten().collect(), sync, from_peers, delivered, seeder_tx })
}

// ---- the case ----------------------------------------------------------------

/// The counted samples of one (tool, setup), or why there are none.
struct Runs {
    tool: Tool,
    setup: Setup,
    samples: Vec<Sample>,
    problem: Option<String>,
}

/// Runs case 8.
pub fn run(opts: &Opts, tools: &Tools) -> Result<Section, String> {
    if !tools.iproute2 {
        return Err("iproute2 (ip, tc, ss) is not installed".into());
    }
    lanbench::preflight().map_err(|e| format!("cannot create network namespaces: {e}"))?;
    let scale = if opts.quick { 0.0125 } else { 0.05 };
    let game = gen::mixed_game(&opts.data(), "swarm", scale)?;
    let work = opts.work().join("swarm");
    measure::fresh_dir(&work)?;
    let cx = Cx { opts, game, logs: work.join("logs"), work };
    lanbench::down()?;
    let lan = lanbench::Lan;
    lanbench::up(DOWNLOADERS[DOWNLOADERS.len() - 1])?;
    for k in std::iter::once(SEEDER).chain(DOWNLOADERS) {
        lanbench::shape(k, Some(RATE))?;
    }
    let one = cx.game.bytes as f64 * 8.0 / (f64::from(RATE) * 1e6);
    log(&format!(
        "bench 8: LAN up ({}..{}), every uplink {RATE} Mbit/s; game {} = {} bytes in {} files; one uplink carries it in {one:.2} s",
        host_ns(SEEDER),
        host_ns(DOWNLOADERS[2]),
        cx.game.id,
        cx.game.bytes,
        cx.game.files
    ));
    let seeder = start_lanspread(&cx);
    let qbt = start_qbt(&cx, tools);
    if let Err(e) = &qbt {
        log(&format!("bench 8: qBittorrent: {e}"));
    }
    let mut all: Vec<Runs> = [Tool::Lanspread, Tool::Qbt]
        .into_iter()
        .flat_map(|tool| [Setup::Alone, Setup::Three].map(|setup| (tool, setup)))
        .map(|(tool, setup)| {
            let problem = match tool {
                Tool::Lanspread => seeder.as_ref().err().cloned(),
                Tool::Qbt => qbt.as_ref().err().cloned(),
            };
            Runs { tool, setup, samples: Vec::new(), problem }
        })
        .collect();
    for round in 0..opts.warmup + opts.runs {
        let counted = round >= opts.warmup;
        for i in 0..all.len() {
            let n = all.len();
            let r = &mut all[(i + round) % n];
            if r.problem.is_some() {
                continue;
            }
            let got = match (r.tool, &seeder, &qbt) {
                (Tool::Lanspread, Ok((_, id)), _) => lanspread_run(&cx, id, &r.setup.endpoints(), round == 0),
                (Tool::Qbt, _, Ok(q)) => qbt_run(&cx, q, r.setup, round == 0),
                _ => Err("not started".into()),
            };
            match got {
                Ok(s) => {
                    log(&format!(
                        "bench 8: {} {} {} {}: finished at {} s, durable {:.3} s = {:.2}× one uplink; seeder sent {:.0} MB, {:.0} MB from other downloaders",
                        r.tool.name(),
                        r.setup.name(),
                        if counted { "run" } else { "warm-up" },
                        round + 1,
                        s.done.iter().map(|d| format!("{d:.2}")).collect::<Vec<_>>().join(" / "),
                        s.durable(),
                        s.durable() / one,
                        s.seeder_tx as f64 / 1e6,
                        s.from_peers as f64 / 1e6
                    ));
                    if counted {
                        r.samples.push(s);
                    }
                }
                Err(e) => {
                    log(&format!("bench 8: {} {} failed: {e}", r.tool.name(), r.setup.name()));
                    r.problem = Some(e);
                }
            }
        }
    }
    let pieces = qbt.as_ref().ok().map(|q| q.pieces.clone());
    drop(qbt);
    let memory = match &seeder {
        Ok((daemon, id)) => memory_round(&cx, daemon.pid(), id),
        Err(e) => Err(e.clone()),
    };
    match &memory {
        Ok(m) => log(&format!(
            "bench 8: the seeder's peak RSS: {:.1} MiB over the runs of 1 and 3, {:.1} MiB once {CROWD} downloaders fetched together \
             (the last finished at {:.1} s)",
            m.before_mib, m.crowd_mib, m.crowd_last
        )),
        Err(e) => log(&format!("bench 8: memory round failed: {e}")),
    }
    drop(seeder);
    for k in std::iter::once(SEEDER).chain(DOWNLOADERS) {
        let _ = lanbench::shape(k, None);
    }
    drop(lan);
    let mut sec = section(&cx, &all, one, scale, pieces.as_deref());
    memory_rows(&mut sec, &memory);
    Ok(sec)
}

/// The seeder's memory, MiB of peak RSS (`VmHWM`, the whole life of the
/// `serve` process).
struct Memory {
    /// After the timed runs (serving one or three downloaders at a time).
    before_mib: f64,
    /// After [`CROWD`] downloaders fetched the game together.
    crowd_mib: f64,
    /// When the last of the crowd finished, s.
    crowd_last: f64,
}

/// [`CROWD`] downloaders spread over the downloader hosts (several per host,
/// each on its own port) fetch the game together from the seeder that
/// served the timed runs; its peak RSS before and after. Not timed against
/// anything: the figure is memory.
fn memory_round(cx: &Cx<'_>, pid: u32, seeder: &str) -> Result<Memory, String> {
    let peak = || measure::peak_rss_kib(pid).map(|kib| kib as f64 / 1024.0).ok_or("cannot read the seeder's VmHWM");
    let crowd: Vec<Endpoint> = (0..CROWD)
        .map(|i| Endpoint { host: DOWNLOADERS[i % DOWNLOADERS.len()], port: PORT + 1 + (i / DOWNLOADERS.len()) as u16 })
        .collect();
    let before_mib = peak()?;
    measure::settle(cx.opts.cold);
    let run = lanspread_run(cx, seeder, &crowd, false)?;
    Ok(Memory { before_mib, crowd_mib: peak()?, crowd_last: run.last() })
}

/// The memory row and reading.
fn memory_rows(sec: &mut Section, memory: &Result<Memory, String>) {
    let case = format!("8 swarm: seeder peak RSS (MiB) after serving {CROWD} downloaders together vs after the runs of 1 and 3");
    let m = match memory {
        Ok(m) => m,
        Err(e) => {
            sec.rows.push(Row::failed(&case, e));
            return;
        }
    };
    let met = if m.crowd_mib < MEMORY_BUDGET_MIB { "met" } else { "missed" };
    sec.rows.push(Row::cmp(
        &case,
        m.crowd_mib,
        "the same seeder's peak RSS after the runs of 1 and 3",
        m.before_mib,
        format!(
            "VmHWM of `lanspread serve` over its whole life; target < {MEMORY_BUDGET_MIB:.0} MiB: {met}; the {CROWD} finished by {:.1} s",
            m.crowd_last
        ),
    ));
    sec.details.push_str(&format!(
        "Memory: after the counted runs, {CROWD} `lanspread get`s spread over {d1}..{d3} (several per host, each on its own port, each told \
         about the seeder and the others) fetch the game together from the same `lanspread serve`, on the same capped links. The figure is \
         the seeder's `VmHWM` (peak resident set over the life of the process) read from `/proc` after that round ({:.1} MiB), beside the \
         same reading taken before it ({:.1} MiB). Target: under {MEMORY_BUDGET_MIB:.0} MiB.\n\n",
        m.crowd_mib,
        m.before_mib,
        d1 = host_ns(DOWNLOADERS[0]),
        d3 = host_ns(DOWNLOADERS[DOWNLOADERS.len() - 1]),
    ));
    sec.reading.push(format!(
        "Case 8, memory: the seeder's peak RSS was {:.1} MiB after serving {CROWD} downloaders at once ({:.1} MiB after the runs of 1 and 3; \
         target < {MEMORY_BUDGET_MIB:.0} MiB: {met}).",
        m.crowd_mib, m.before_mib
    ));
}

/// Median of `f` over the samples.
fn med(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    measure::median(&v.iter().map(f).collect::<Vec<_>>())
}

/// `8.123 (8.010–8.456)` of the durable figures.
fn spread(v: &[Sample]) -> String {
    let d: Vec<f64> = v.iter().map(Sample::durable).collect();
    let (lo, hi) = measure::span(&d);
    format!("{:.3} ({lo:.3}–{hi:.3})", measure::median(&d))
}

/// The rows, the reading and the details.
fn section(cx: &Cx<'_>, all: &[Runs], one: f64, scale: f64, pieces: Option<&str>) -> Section {
    let get = |tool: Tool, setup: Setup| all.iter().find(|r| r.tool == tool && r.setup == setup);
    let figure = |tool, setup| get(tool, setup).map_or(f64::NAN, |r| med(&r.samples, Sample::durable));
    let mb = cx.game.bytes as f64 / 1e6;
    let wanted = DOWNLOADERS.len() as f64 * cx.game.bytes as f64;
    let mut sec = Section::default();
    let mut table = String::new();
    let mut swarmed = None;
    for tool in [Tool::Lanspread, Tool::Qbt] {
        let (alone, three) = (figure(tool, Setup::Alone), figure(tool, Setup::Three));
        let problems: Vec<String> = [Setup::Alone, Setup::Three]
            .into_iter()
            .filter_map(|s| {
                get(tool, s).and_then(|r| r.problem.as_ref().map(|p| format!("{}: {}", s.name(), p.lines().next().unwrap_or(""))))
            })
            .collect();
        let case = format!("8 swarm 1+3, {RATE} Mbit uplinks: {} last of 3 vs alone", tool.name());
        let a = get(tool, Setup::Alone).map(|r| r.samples.as_slice()).unwrap_or_default();
        let Some(b) = get(tool, Setup::Three).map(|r| r.samples.as_slice()).filter(|b| !b.is_empty() && !a.is_empty()) else {
            sec.rows.push(Row::failed(&case, &problems.join("; ")));
            table.push_str(&format!("| {} | not measured: {} | | | | | | | |\n", tool.name(), problems.join("; ").replace('|', "\\|")));
            continue;
        };
        let ratio = three / alone;
        // Each run's finishing times in order: first, second, last.
        let order = (0..DOWNLOADERS.len())
            .map(|i| {
                let nth = |s: &Sample| {
                    let mut d = s.done.clone();
                    d.sort_by(f64::total_cmp);
                    d.get(i).copied().unwrap_or(f64::NAN)
                };
                format!("{:.2}", med(b, nth))
            })
            .collect::<Vec<_>>()
            .join(" / ");
        let share = format!("{:.0}%", med(b, |s| s.from_peers as f64 / s.delivered.max(1) as f64) * 100.0);
        if tool == Tool::Lanspread {
            swarmed = b.iter().map(|s| s.from_peers).max();
        }
        let seeder_mb = med(b, |s| s.seeder_tx as f64) / 1e6;
        let sync = med(b, |s| s.sync);
        let mut row = Row::cmp(
            &case,
            three,
            &format!("{}, one downloader alone", tool.name()),
            alone,
            format!(
                "{mb:.0} MB game; durable (a final sync inside); the 3 finished at {order} s; the seeder sent {:.2}× the game; \
                 {share} of the bytes came from other downloaders",
                seeder_mb / mb
            ),
        );
        if tool == Tool::Lanspread {
            row = row.target(Target::AtMost(TARGET));
        }
        sec.rows.push(row);
        let target = if tool == Tool::Lanspread {
            format!(" (target ≤ {TARGET:.1}: {})", if ratio <= TARGET { "met" } else { "missed" })
        } else {
            String::new()
        };
        sec.reading.push(format!(
            "Case 8, {}: one downloader alone {alone:.2} s ({:.2}× one uplink's time); the last of 3 started together {three:.2} s = \
             {ratio:.2}× alone{target}; the seeder sent {:.2}× the game per run of 3, and {share} of the downloaders' bytes came from each other.",
            tool.name(),
            alone / one,
            seeder_mb / mb,
        ));
        table.push_str(&format!(
            "| {} | {} | {} | {ratio:.2} | {order} | {sync:.3} | {share} | {seeder_mb:.0} ({:.2}×) | {} |\n",
            tool.name(),
            spread(a),
            spread(b),
            seeder_mb / mb,
            includes(tool, pieces).replace('|', "\\|")
        ));
    }
    let cross =
        [("alone", Setup::Alone, "qBittorrent-nox, one downloader alone"), ("last of 3", Setup::Three, "qBittorrent-nox, last of 3")];
    for (what, setup, baseline) in cross {
        let (ours, theirs) = (figure(Tool::Lanspread, setup), figure(Tool::Qbt, setup));
        if ours.is_finite() && theirs.is_finite() {
            let case = format!("8 swarm 1+3, {RATE} Mbit uplinks: lanspread {what} vs qBittorrent {what}");
            sec.rows.push(Row::cmp(&case, ours, baseline, theirs, "both durable".into()));
        }
    }
    let code = code(cx.opts);
    let swarm_line = match swarmed {
        Some(0) => format!(
            "**Swarming observed: no.** In every counted run of 3, lanspread's downloaders received every byte from the seeder and \
             none from each other: these lanspread figures are those of a binary without swarming, i.e. measured before swarming \
             landed ({code})."
        ),
        Some(b) => format!(
            "**Swarming observed: yes.** In the runs of 3, lanspread's downloaders received up to {:.0} MB ({:.0}%) from each other, the rest \
             from the seeder ({code}).",
            b as f64 / 1e6,
            b as f64 / wanted * 100.0
        ),
        None => format!("**Swarming observed:** unknown: lanspread's runs of 3 were not measured ({code})."),
    };
    sec.details = format!(
        "## Swarming (case 8): one seeder, three downloaders, every uplink capped\n\n\
         Hosts {s} (seeder) and {d1}..{d3} (downloaders) on one bridge (the LAN of case 2); every host's eth0 egress capped with \
         `tc qdisc replace dev eth0 root tbf rate {RATE}mbit burst 256kb latency 50ms`, so each downloader's uplink is as narrow as the seeder's. \
         Game: make-game.py layout at scale {scale} = {} bytes in {} files. (a) one downloader ({d1}) alone; (b) {d1}, {d2} and {d3} started \
         together, the figure being the last of the three to finish. One uplink carries the game in {one:.2} s (bytes × 8 / {RATE} Mbit/s): the \
         floor of (a), and of (b) when the downloaders serve each other; without that, (b) needs about 3 × (a). Every figure is durable: the \
         `sync` after the last downloader finished is inside it. Page cache dropped before every run. {} counted run(s) per figure after {} \
         warm-up; the four (tool, setup) pairs take turns in an order rotated every round; every copy is compared with the source (bytes in the \
         first round). Bytes from other downloaders, as a share of the bytes the downloaders received: lanspread's from the per-peer counts \
         of `get --json`; qBittorrent's from the payload its instances uploaded during the run (`uploaded` of `/api/v2/torrents/info`: the \
         downloaders' against the downloaders' and the seeder's; the seeder never downloads). The seeder's bytes sent are those its eth0 sent \
         (headers included). Target for lanspread: (b) ≤ {TARGET:.1} × (a).\n\n{swarm_line}\n\n\
         | tool | (a) alone: durable median (min–max) | (b) last of 3: durable median (min–max) | (b) / (a) | (b) the 3 finished, first / \
         second / last (medians, s) | sync after (b) | (b) bytes from other downloaders | (b) seeder sent per run, MB (× game) | what each \
         figure includes |\n|---|---|---|---:|---|---:|---:|---|---|\n{table}\n",
        cx.game.bytes,
        cx.game.files,
        cx.opts.runs,
        cx.opts.warmup,
        s = host_ns(SEEDER),
        d1 = host_ns(DOWNLOADERS[0]),
        d2 = host_ns(DOWNLOADERS[1]),
        d3 = host_ns(DOWNLOADERS[2]),
    );
    for r in all.iter().filter(|r| r.problem.is_some()) {
        let p = r.problem.as_deref().unwrap_or_default();
        sec.details.push_str(&format!("Problem: {} {}: {}\n\n", r.tool.name(), r.setup.name(), p.lines().next().unwrap_or("")));
    }
    sec
}

/// Which lanspread was measured: `binary built from commit X` (or given with `--bin`).
fn code(opts: &Opts) -> String {
    let git = |args: &[&str]| {
        Command::new("git").arg("-C").arg(&opts.root).args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    if opts.bin_given {
        format!("binary {} given with --bin; workspace at commit {commit}", opts.bin.display())
    } else {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_ok_and(|s| !s.is_empty());
        format!("binary built from commit {commit}{}", if dirty { " plus uncommitted changes" } else { "" })
    }
}

/// What a figure of `tool` includes (the table's last column).
fn includes(tool: Tool, pieces: Option<&str>) -> String {
    match tool {
        Tool::Lanspread => format!(
            "from spawning `lanspread get ID --no-install --json --listen [::]:{PORT} --peer …` (the seeder and the run's other downloaders; mDNS on) \
             on each downloader until the last one printed its result: start-up, finding peers, manifest, transfer, per-chunk verification and the commit's fsyncs; \
             then `sync`. `lanspread serve` runs on the seeder throughout (its scan is not timed); a `get` whose download is committed keeps \
             serving while others fetch from it (until nobody asked for 2 s), then exits"
        ),
        Tool::Qbt => format!(
            "from the Web API call adding the .torrent (mktorrent, {}, no tracker) on each downloader, whose peers (the seeder and the run's other \
             downloaders) are given through `/api/v2/torrents/addPeers` as soon as the torrent is listed, until the last reports progress 1 \
             (polled through the Web API every ~{} ms, status refreshed every {QBT_REFRESH_MS} ms); then `sync`. Instances started and the seeder's \
             hash check done before the clock; DHT, PeX, LSD, UPnP and queueing off; TCP only; a finished downloader keeps seeding",
            pieces.unwrap_or("256 KiB pieces"),
            POLL.as_millis()
        ),
    }
}
