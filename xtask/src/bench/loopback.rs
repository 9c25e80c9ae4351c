//! Case 1 (one seeder → one downloader over loopback), case 5 (peak RSS and
//! CPU per GB during case 1) and case 6 (a `perf` profile of case 1).
//!
//! Baselines as in `shared/bench/rsync.sh` and `cp-local.sh` (adapted): an
//! rsync daemon on 127.0.0.1 pulled with `rsync -a rsync://…` and a local
//! `cp -a`, each into a fresh empty folder. Ours: a long-running `lanspread
//! serve` per transport and a timed `lanspread get --no-install --json`.
//! Tools take turns within each round, so load from other users of the
//! machine spreads over all of them.

use super::gen::{self, Game};
use super::measure::{self, Daemon, Finished};
use super::report::{f3, Row, Section, Target};
use super::tools::Tools;
use super::{log, Opts};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RSYNC_PORT: u16 = 18730;
const TRANSPORTS: [(&str, u16); 2] = [("quinn", 47931), ("s2n", 47932)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Cp,
    CpFsync,
    Rsync,
    Ours(usize),
}

impl Tool {
    fn name(self) -> String {
        match self {
            Tool::Cp => "cp -a".into(),
            Tool::CpFsync => "cp -a + fsync".into(),
            Tool::Rsync => "rsync daemon".into(),
            Tool::Ours(t) => format!("lanspread {}", TRANSPORTS[t].0),
        }
    }
    fn slug(self) -> String {
        match self {
            Tool::Cp => "cp".into(),
            Tool::CpFsync => "cpfsync".into(),
            Tool::Rsync => "rsync".into(),
            Tool::Ours(t) => TRANSPORTS[t].0.into(),
        }
    }
}

/// One timed run.
#[derive(Debug, Clone, Default)]
struct Sample {
    wall: f64,
    /// `download.secs` of `get --json` (ours only).
    dl: f64,
    /// `secs` of `get --json`: from the start of the command's work to the end of the download.
    secs: f64,
    /// Peak RSS of the timed process, KiB.
    rss: u64,
    /// CPU of the timed process (and its children).
    cpu: f64,
    /// Peak RSS of the serving side during the run (seeder), KiB.
    peer_rss: u64,
    /// CPU of the serving side during the run (seeder, or rsync daemon and its children).
    peer_cpu: f64,
    /// Where the wall time of `get` went (ours only).
    phases: Option<measure::Phases>,
    /// UDP datagrams dropped on full receive buffers during the run (host namespace).
    udp_drops: u64,
}

struct Seeder {
    daemon: Daemon,
    startup: f64,
}

/// Runs cases 1, 5 and 6.
pub fn run(opts: &Opts, tools: &Tools) -> Result<Section, String> {
    let scale = if opts.quick { 0.25 } else { 1.0 };
    let game = gen::mixed_game(&opts.data(), "game1", scale)?;
    let work = opts.work().join("loopback");
    let logs = work.join("logs");
    measure::fresh_dir(&work)?;
    log(&format!("bench 1: game {} = {} files, {} bytes", game.id, game.files, game.bytes));

    // Seeders, one per transport, each on its own hard-linked copy (a game directory is locked per process).
    let mut seeders: Vec<Option<Seeder>> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for (name, port) in TRANSPORTS.iter() {
        let dir = work.join(format!("seed-{name}"));
        gen::link_copy(&game, &dir)?;
        match start_seeder(opts, &dir, name, *port, &logs, &work) {
            Ok(s) => {
                log(&format!("bench 1: seeder {name} ready after {:.1} s (scan + hash of the game)", s.startup));
                seeders.push(Some(s));
            }
            Err(e) => {
                log(&format!("bench 1: seeder {name} failed: {e}"));
                problems.push(format!("lanspread {name}: {e}"));
                seeders.push(None);
            }
        }
    }
    let rsyncd = match &tools.rsync {
        Some(rsync) => match start_rsyncd(rsync, &game, &work, &logs, RSYNC_PORT) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("rsync daemon: {e}"));
                None
            }
        },
        None => None,
    };

    let mut list = vec![Tool::Cp, Tool::CpFsync];
    if rsyncd.is_some() {
        list.push(Tool::Rsync);
    }
    for (t, s) in seeders.iter().enumerate() {
        if s.is_some() {
            list.push(Tool::Ours(t));
        }
    }
    // Full mode measures both a cold source (page cache dropped before every
    // run, when permitted) and a warm one; quick mode only the default.
    let modes: Vec<bool> = if opts.cold && !opts.quick { vec![true, false] } else { vec![opts.cold] };
    let mut by_mode: Vec<(bool, Samples)> = Vec::new();
    for &cold in &modes {
        if !cold {
            gen::read_all(&game.root())?;
        }
        let mut samples: Samples = list.iter().map(|t| (*t, Vec::new())).collect();
        let rounds = opts.warmup + opts.runs;
        for round in 0..rounds {
            let counted = round >= opts.warmup;
            let last = round + 1 == rounds && cold == *modes.last().unwrap_or(&cold);
            // Rotate the order: whatever a run leaves behind (freed memory the VM
            // must fault back in, writeback) does not always hit the same tool.
            let n = samples.len();
            for i in 0..n {
                let (tool, got) = &mut samples[(i + round) % n];
                if problems.iter().any(|p| p.starts_with(&format!("{}:", tool.name()))) {
                    continue;
                }
                let peer_pid = match tool {
                    Tool::Ours(t) => seeders[*t].as_ref().map(|s| s.daemon.pid()),
                    Tool::Rsync => rsyncd.as_ref().map(Daemon::pid),
                    _ => None,
                };
                let keep = last && *tool == Tool::Ours(0);
                match run_one(opts, cold, *tool, &game, &work, &logs, peer_pid, round == 0, keep) {
                    Ok(s) => {
                        log(&format!(
                            "bench 1 ({}): {} {} {}: wall {:.3} s{}, cpu {:.2} s, peak RSS {:.0} MiB{}",
                            cache_name(cold),
                            tool.name(),
                            if counted { "run" } else { "warm-up" },
                            round + 1,
                            s.wall,
                            if matches!(tool, Tool::Ours(_)) {
                                format!(" (download.secs {:.3}, get secs {:.3})", s.dl, s.secs)
                            } else {
                                String::new()
                            },
                            s.cpu,
                            s.rss as f64 / 1024.0,
                            if peer_pid.is_some() {
                                format!("; serving side cpu {:.2} s, peak RSS {:.0} MiB", s.peer_cpu, s.peer_rss as f64 / 1024.0)
                            } else {
                                String::new()
                            }
                        ));
                        if counted {
                            got.push(s);
                        }
                    }
                    Err(e) => {
                        log(&format!("bench 1: {} failed: {e}", tool.name()));
                        problems.push(format!("{}: {e}", tool.name()));
                    }
                }
            }
        }
        by_mode.push((cold, samples));
    }

    // Case 6: one profiled run per transport (not counted).
    let mut profile = String::new();
    if opts.wants(6) {
        profile = match &tools.perf {
            Some(perf) => {
                let mut p = String::new();
                for (t, s) in seeders.iter().enumerate() {
                    if let Some(s) = s {
                        match profile_run(opts, perf, t, s.daemon.pid(), &game, &work, &logs) {
                            Ok(text) => p.push_str(&text),
                            Err(e) => p.push_str(&format!("Profiling {} failed: {e}\n\n", TRANSPORTS[t].0)),
                        }
                    }
                }
                p
            }
            None => "`perf` is not installed (Debian package linux-perf): no profile.\n\n".into(),
        };
    }
    // Post-download rescan: what the downloader spends re-hashing what it just verified.
    let rescan = post_download_rescan(opts, &work, &logs).ok();

    for s in seeders.iter_mut().flatten() {
        s.daemon.stop();
    }
    drop(rsyncd);
    Ok(section(opts, &game, &by_mode, &seeders, &problems, &profile, rescan))
}

fn lanspread(opts: &Opts, cfg: &Path) -> Command {
    let mut c = Command::new(&opts.bin);
    c.env("LANSPREAD_CONFIG_DIR", cfg);
    if std::env::var_os("RUST_LOG").is_none() {
        c.env("RUST_LOG", "warn");
    }
    c
}

fn start_seeder(opts: &Opts, dir: &Path, transport: &str, port: u16, logs: &Path, work: &Path) -> Result<Seeder, String> {
    let t = std::time::Instant::now();
    let mut cmd = lanspread(opts, &work.join(format!("cfg-seed-{transport}")));
    cmd.arg("serve").arg("--games").arg(dir).args(["--listen", &format!("127.0.0.1:{port}"), "--transport", transport, "--no-mdns"]);
    let mut daemon = Daemon::spawn(&format!("seed-{transport}"), &mut cmd, logs)?;
    daemon.wait_line("serving", Duration::from_secs(900))?;
    Ok(Seeder { daemon, startup: t.elapsed().as_secs_f64() })
}

/// An rsync daemon on 127.0.0.1:`port` serving `game.dir` read-only as module `bench`.
pub fn start_rsyncd(rsync: &Path, game: &Game, work: &Path, logs: &Path, port: u16) -> Result<Daemon, String> {
    let conf_dir = work.join("rsyncd");
    measure::fresh_dir(&conf_dir)?;
    let ids = if crate::lan::is_root() { "  uid = root\n  gid = root\n" } else { "" };
    let conf = format!(
        "use chroot = no\nlog file = {}\npid file = {}\n[bench]\n  path = {}\n  read only = yes\n{ids}",
        conf_dir.join("rsyncd.log").display(),
        conf_dir.join("rsyncd.pid").display(),
        game.dir.display()
    );
    let conf_path = conf_dir.join("rsyncd.conf");
    std::fs::write(&conf_path, conf).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let mut cmd = Command::new(rsync);
    cmd.arg("--daemon")
        .arg("--no-detach")
        .arg(format!("--config={}", conf_path.display()))
        .args(["--address=127.0.0.1", &format!("--port={port}")]);
    let mut d = Daemon::spawn("rsyncd", &mut cmd, logs)?;
    d.wait_tcp_port(port, None, Duration::from_secs(30))?;
    Ok(d)
}

fn get_cmd(opts: &Opts, t: usize, dst: &Path, work: &Path, id: &str) -> Command {
    let (name, port) = TRANSPORTS[t];
    let mut cmd = lanspread(opts, &work.join(format!("cfg-get-{name}")));
    cmd.args(["get", id, "--games"]).arg(dst).args([
        "--no-install",
        "--json",
        "--wait",
        "60",
        "--transport",
        name,
        "--peer",
        &format!("127.0.0.1:{port}"),
        "--no-mdns",
        "--listen",
        "127.0.0.1:0",
    ]);
    cmd
}

/// Parses `get --json`: (download.secs, secs).
pub fn parse_get_json(stdout: &str) -> Result<(f64, f64), String> {
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or_else(|| format!("no JSON summary in {stdout:?}"))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("get --json: {e}"))?;
    let dl = v["download"]["secs"].as_f64().ok_or("get --json: no download.secs")?;
    let secs = v["secs"].as_f64().ok_or("get --json: no secs")?;
    Ok((dl, secs))
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    opts: &Opts,
    cold: bool,
    tool: Tool,
    game: &Game,
    work: &Path,
    logs: &Path,
    peer: Option<u32>,
    verify_bytes: bool,
    keep: bool,
) -> Result<Sample, String> {
    let dst = work.join(format!("dst-{}", tool.slug()));
    measure::fresh_dir(&dst)?;
    let mut cmd = match tool {
        Tool::Cp => {
            let mut c = Command::new("cp");
            c.arg("-a").arg(game.root()).arg(&dst);
            c
        }
        Tool::CpFsync => {
            // Like the download's commit: every file and directory fsynced.
            let mut c = Command::new("sh");
            c.args(["-c", "cp -a \"$1\" \"$2\"/ && find \"$2\" -exec sync {} +", "sh"]).arg(game.root()).arg(&dst);
            c
        }
        Tool::Rsync => {
            let mut c = Command::new("rsync");
            c.args(["-a", &format!("rsync://127.0.0.1:{RSYNC_PORT}/bench/{}", game.id)]).arg(format!("{}/", dst.display()));
            c
        }
        Tool::Ours(t) => {
            std::fs::copy(game.dir.join("catalog.toml"), dst.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;
            get_cmd(opts, t, &dst, work, &game.id)
        }
    };
    measure::settle(cold);
    if let Some(p) = peer {
        measure::reset_peak_rss(p);
    }
    let cpu0 = peer.map(measure::cpu_total).unwrap_or(0.0);
    let drops0 = measure::udp_rcvbuf_errors();
    let f: Finished = measure::run_measured(&tool.slug(), &mut cmd, logs, Duration::from_secs(900))?;
    let mut s = Sample {
        wall: f.wall,
        rss: f.peak_rss_kib,
        cpu: f.cpu,
        udp_drops: measure::udp_rcvbuf_errors().saturating_sub(drops0),
        ..Sample::default()
    };
    if let Some(p) = peer {
        // The rsync daemon reaps its per-connection child asynchronously.
        std::thread::sleep(Duration::from_millis(200));
        s.peer_cpu = measure::cpu_total(p) - cpu0;
        s.peer_rss = measure::peak_rss_kib(p).unwrap_or(0);
    }
    if let Tool::Ours(_) = tool {
        (s.dl, s.secs) = parse_get_json(&f.stdout)?;
        s.phases = f.phases();
    }
    gen::compare(&game.root(), &dst.join(&game.id), verify_bytes)?;
    if !keep {
        // Keep the disk footprint small; the very last quinn download is re-scanned later.
        let _ = std::fs::remove_dir_all(&dst);
    }
    Ok(s)
}

/// Times `lanspread status` on the last download with its scan index removed:
/// the re-hash every download pays after its commit today.
fn post_download_rescan(opts: &Opts, work: &Path, logs: &Path) -> Result<f64, String> {
    let dst = work.join(format!("dst-{}", TRANSPORTS[0].0));
    let _ = std::fs::remove_file(dst.join(".lanspread-index.bin"));
    let _ = Command::new("sync").status();
    let mut cmd = lanspread(opts, &work.join("cfg-status"));
    cmd.args(["status", "--json", "--games"]).arg(&dst);
    let f = measure::run_measured("status-after-download", &mut cmd, logs, Duration::from_secs(600))?;
    Ok(f.wall)
}

/// Every `perf report` entry: (percent, dso, symbol).
fn perf_entries(perf: &Path, data: &Path) -> Result<Vec<(f64, String, String)>, String> {
    let out = measure::output(Command::new(perf).arg("report").arg("-i").arg(data).args([
        "--no-children",
        "-F",
        "overhead,dso,sym",
        "--stdio",
        "-q",
        "-g",
        "none",
    ]))?;
    let mut rows = Vec::new();
    for l in out.lines() {
        let mut it = l.split_whitespace();
        let Some(pct) = it.next().and_then(|p| p.strip_suffix('%')).and_then(|p| p.parse::<f64>().ok()) else { continue };
        let dso = it.next().unwrap_or("").to_owned();
        let rest: Vec<&str> = it.collect();
        // "[.] symbol" (user) or "[k] symbol" (kernel)
        let sym = if rest.first().is_some_and(|x| x.starts_with('[')) { rest[1..].join(" ") } else { rest.join(" ") };
        rows.push((pct, dso, sym));
    }
    Ok(rows)
}

/// Coarse cost categories for a symbol (first match wins).
fn category(sym: &str) -> &'static str {
    let s = sym.to_ascii_lowercase();
    let any = |keys: &[&str]| keys.iter().any(|k| s.contains(k));
    if any(&["blake3"]) {
        "hashing (BLAKE3)"
    } else if any(&["aes", "gcm", "ghash", "chacha", "poly1305", "ring_core", "aws_lc", "sha256", "sha512"]) {
        "packet crypto (AES-GCM)"
    } else if any(&[
        "memmove",
        "memcpy",
        "memset",
        "copy_to_iter",
        "copy_from_iter",
        "copy_folio",
        "copy_page",
        "clear_page",
        "copy_user",
        "rep_mov",
        "rep_stos",
    ]) {
        "memory copies and zeroing"
    } else if any(&[
        "finish_task_switch",
        "schedule",
        "spin_unlock",
        "spin_lock",
        "futex",
        "wake",
        "__switch_to",
        "pick_next",
        "enqueue",
        "dequeue",
        "update_curr",
        "epoll",
        "eventfd",
        "idle",
        "park",
        "condvar",
        "rwsem",
    ]) {
        "scheduling, wake-ups, locks"
    } else if any(&[
        "page_fault",
        "folio",
        "alloc_pages",
        "memcg",
        "lru",
        "slab",
        "malloc",
        "free",
        "mmap",
        "munmap",
        "zap_",
        "kmem",
        "rmqueue",
        "charge",
        "__alloc",
        "realloc",
    ]) {
        "page faults and allocation"
    } else if any(&[
        "ext4",
        "iowrite",
        "blk_",
        "jbd2",
        "bio",
        "filemap",
        "xas_",
        "vfs_",
        "fsync",
        "writeback",
        "find_get_block",
        "mpage",
        "recently_deleted",
        "dentry",
        "inode",
        "path_",
        "link_path",
        "lookup",
    ]) {
        "filesystem and block I/O"
    } else if any(&[
        "udp", "ip_", "ipv", "skb", "net_", "netif", "__dev", "dev_", "sock", "veth", "loopback", "gso", "gro", "csum", "inet", "sendmsg",
        "recvmsg", "nf_", "fib", "neigh",
    ]) {
        "network stack (UDP/IP, syscalls)"
    } else if any(&["quinn", "s2n_quic", "s2n_codec"]) {
        "QUIC stack (quinn / s2n-quic)"
    } else if any(&["tokio", "mio"]) {
        "async runtime (tokio)"
    } else {
        "other"
    }
}

/// Markdown: the top entries and the share of each category.
fn perf_tables(rows: &[(f64, String, String)], top: usize) -> String {
    let mut md = String::from("| % samples | where | symbol |\n|---:|---|---|\n");
    for (p, dso, sym) in rows.iter().take(top) {
        md.push_str(&format!("| {p:.1} | {dso} | `{}` |\n", sym.replace('|', "\\|")));
    }
    let mut cats: Vec<(&str, f64)> = Vec::new();
    for (p, _, sym) in rows {
        let c = category(sym);
        match cats.iter_mut().find(|(n, _)| *n == c) {
            Some(e) => e.1 += p,
            None => cats.push((c, *p)),
        }
    }
    cats.sort_by(|a, b| b.1.total_cmp(&a.1));
    md.push_str("\nBy category (all symbols):\n\n| category | % samples |\n|---|---:|\n");
    for (c, p) in cats {
        md.push_str(&format!("| {c} | {p:.1} |\n"));
    }
    md
}

fn profile_run(opts: &Opts, perf: &Path, t: usize, seeder_pid: u32, game: &Game, work: &Path, logs: &Path) -> Result<String, String> {
    let name = TRANSPORTS[t].0;
    // Kept after the run (target/bench/profile) for `perf report -i`.
    let keep = opts.out.join("profile");
    std::fs::create_dir_all(&keep).map_err(|e| format!("{}: {e}", keep.display()))?;
    let seed_data = keep.join(format!("perf-seed-{name}.data"));
    let get_data = keep.join(format!("perf-get-{name}.data"));
    let _ = std::fs::remove_file(&seed_data);
    let _ = std::fs::remove_file(&get_data);
    let dst = work.join(format!("dst-profile-{name}"));
    measure::fresh_dir(&dst)?;
    std::fs::copy(game.dir.join("catalog.toml"), dst.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;
    // Profiled with a warm source: the CPU costs, not the disk.
    gen::read_all(&game.root())?;
    measure::settle(false);
    let mut rec = Command::new(perf);
    rec.args(["record", "-F", "999", "-p", &seeder_pid.to_string(), "-o"]).arg(&seed_data);
    let mut seed_perf = Daemon::spawn(&format!("perf-seed-{name}"), &mut rec, logs)?;
    std::thread::sleep(Duration::from_millis(500));
    let mut cmd = Command::new(perf);
    cmd.args(["record", "-F", "999", "-o"]).arg(&get_data).arg("--").arg(&opts.bin);
    let inner = get_cmd(opts, t, &dst, work, &game.id);
    cmd.args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let f = measure::run_measured(&format!("perf-get-{name}"), &mut cmd, logs, Duration::from_secs(900));
    seed_perf.interrupt(Duration::from_secs(30));
    let f = f?;
    let (dl, secs) = parse_get_json(&f.stdout)?;
    let mut md = format!(
        "### Profile, {name} (`perf record -F 999`, one uncounted run: wall {:.2} s, download.secs {dl:.2}, get secs {secs:.2})\n\n",
        f.wall
    );
    for (who, data) in [("downloader (`get`)", &get_data), ("seeder (`serve`)", &seed_data)] {
        md.push_str(&format!("Top self costs of the {who}:\n\n"));
        match perf_entries(perf, data) {
            Ok(rows) if !rows.is_empty() => md.push_str(&perf_tables(&rows, 12)),
            Ok(_) => md.push_str("no samples\n"),
            Err(e) => md.push_str(&format!("perf report failed: {}\n", e.lines().next().unwrap_or(""))),
        }
        md.push('\n');
    }
    let _ = std::fs::remove_dir_all(&dst);
    Ok(md)
}

fn col<F: Fn(&Sample) -> f64>(v: &[Sample], f: F) -> Vec<f64> {
    v.iter().map(f).collect()
}

fn verdict(ratio: f64, at_most: f64) -> &'static str {
    if !ratio.is_finite() {
        "not measured"
    } else if ratio <= at_most {
        "met"
    } else {
        "missed"
    }
}

fn cache_name(cold: bool) -> &'static str {
    if cold {
        "cold cache"
    } else {
        "warm cache"
    }
}

type Samples = Vec<(Tool, Vec<Sample>)>;

fn section(
    opts: &Opts,
    game: &Game,
    by_mode: &[(bool, Samples)],
    seeders: &[Option<Seeder>],
    problems: &[String],
    profile: &str,
    rescan: Option<f64>,
) -> Section {
    let gb = game.bytes as f64 / 1e9;
    let size = format!("{:.2} GB, {} files", gb, game.files);
    let mut sec = Section::default();
    let both = by_mode.len() > 1;
    for (cold, samples) in by_mode {
        let cold = *cold;
        let tag = if both { format!(" ({})", cache_name(cold)) } else { String::new() };
        let get = |t: Tool| samples.iter().find(|(x, _)| *x == t).map(|(_, v)| v.as_slice()).filter(|v| !v.is_empty());
        let wall = |t: Tool| get(t).map_or(f64::NAN, |v| measure::median(&col(v, |s| s.wall)));
        let (cp, cpf, rs) = (wall(Tool::Cp), wall(Tool::CpFsync), wall(Tool::Rsync));
        if get(Tool::Rsync).is_none() {
            sec.rows.push(Row::failed(
                &format!("1 loopback{tag}: rsync daemon baseline"),
                problems.iter().find(|p| p.starts_with("rsync")).map_or("rsync is not installed", |s| s),
            ));
        }
        for (t, (name, _)) in TRANSPORTS.iter().enumerate() {
            let Some(v) = get(Tool::Ours(t)) else {
                let why = problems
                    .iter()
                    .find(|p| p.starts_with(&format!("{}:", Tool::Ours(t).name())))
                    .cloned()
                    .unwrap_or_else(|| "no successful run".into());
                sec.rows.push(Row::failed(&format!("1 loopback {name}{tag}"), &why));
                continue;
            };
            let w = measure::median(&col(v, |s| s.wall));
            let dl = measure::median(&col(v, |s| s.dl));
            let note = format!(
                "{size}; {}; get wall, median of {}; download.secs {dl:.3}; {:.0} MB/s",
                cache_name(cold),
                v.len(),
                game.bytes as f64 / w / 1e6
            );
            sec.rows.push(
                Row::cmp(&format!("1 loopback {name}{tag}: get vs rsync"), w, "rsync daemon (rsync://127.0.0.1)", rs, note.clone())
                    .target(Target::AtMost(0.85)),
            );
            sec.rows.push(
                Row::cmp(&format!("1 loopback {name}{tag}: get vs cp -a"), w, "cp -a (local, no network)", cp, note)
                    .target(Target::AtMost(1.25)),
            );
            sec.rows.push(Row::cmp(
                &format!("1 loopback {name}{tag}: transfer only (download.secs) vs rsync"),
                dl,
                "rsync daemon",
                rs,
                "time inside the download loop, excluding start-up, peer wait and the commit".into(),
            ));
            sec.rows.push(Row::cmp(
                &format!("1 loopback {name}{tag}: get vs cp -a + fsync"),
                w,
                "cp -a, then fsync every file",
                cpf,
                "a download fsyncs every file at commit; this is the durable floor".into(),
            ));
            let r = |b: f64| if b.is_finite() { format!("{:.2}×", w / b) } else { "n/a".into() };
            let ph: Vec<measure::Phases> = v.iter().filter_map(|s| s.phases).collect();
            let pm = |f: fn(&measure::Phases) -> f64| measure::median(&ph.iter().map(f).collect::<Vec<_>>());
            let where_ = if ph.is_empty() {
                String::new()
            } else {
                format!(
                    " Of the wall time, {:.2} s pass before the first byte is written, {:.2} s in the transfer, {:.2} s in the commit after the last write{}.",
                    pm(|p| p.before),
                    pm(|p| p.transfer),
                    pm(|p| p.commit),
                    if pm(|p| p.rescan) > 0.05 { format!(" and {:.2} s re-reading the download", pm(|p| p.rescan)) } else { String::new() }
                )
            };
            sec.reading.push(format!(
                "Case 1, {name}, {}: `get` took {w:.2} s wall = {} rsync (target ≤ 0.85: {}) and {} `cp -a` (target ≤ 1.25: {}); the download loop alone (download.secs) took {dl:.2} s = {} rsync, {} `cp -a`.{where_}",
                cache_name(cold),
                r(rs),
                verdict(w / rs, 0.85),
                r(cp),
                verdict(w / cp, 1.25),
                if rs.is_finite() { format!("{:.2}×", dl / rs) } else { "n/a".into() },
                if cp.is_finite() { format!("{:.2}×", dl / cp) } else { "n/a".into() },
            ));
        }
    }
    // Case 5: memory (max over all runs) and CPU (from the last mode: warm when both ran).
    let (last_cold, last) = by_mode.last().map(|(c, v)| (*c, v.as_slice())).unwrap_or((opts.cold, &[]));
    let get = |t: Tool| last.iter().find(|(x, _)| *x == t).map(|(_, v)| v.as_slice()).filter(|v| !v.is_empty());
    let all =
        |t: Tool| by_mode.iter().flat_map(|(_, v)| v.iter().filter(move |(x, _)| *x == t).flat_map(|(_, s)| s.iter())).collect::<Vec<_>>();
    let mut mem_reading = Vec::new();
    let rsync_cpu = get(Tool::Rsync).map_or(f64::NAN, |v| measure::median(&col(v, |s| s.cpu + s.peer_cpu)) / gb);
    for (t, (name, _)) in TRANSPORTS.iter().enumerate() {
        let Some(v) = get(Tool::Ours(t)) else { continue };
        let runs = all(Tool::Ours(t));
        let d_rss = runs.iter().map(|s| s.rss).max().unwrap_or(0) as f64 / 1024.0;
        let s_rss = runs.iter().map(|s| s.peer_rss).max().unwrap_or(0) as f64 / 1024.0;
        sec.rows.push(
            Row::cmp(
                &format!("5 memory {name}: downloader peak RSS (MiB)"),
                d_rss,
                "target 100 MiB",
                100.0,
                format!("unit MiB, not s; max over {} runs of VmHWM; game {size}", runs.len()),
            )
            .target(Target::AtMost(1.0)),
        );
        sec.rows.push(
            Row::cmp(
                &format!("5 memory {name}: seeder peak RSS (MiB)"),
                s_rss,
                "target 100 MiB",
                100.0,
                "unit MiB, not s; VmHWM reset (clear_refs) before each run, so the start-up scan is excluded".into(),
            )
            .target(Target::AtMost(1.0)),
        );
        let (dc, sc) = (measure::median(&col(v, |s| s.cpu)) / gb, measure::median(&col(v, |s| s.peer_cpu)) / gb);
        sec.rows.push(Row::cmp(
            &format!("5 CPU {name}: CPU s per GB, both ends"),
            dc + sc,
            "rsync client + daemon",
            rsync_cpu,
            format!(
                "unit CPU s/GB, {}; downloader {dc:.2} + seeder {sc:.2}; cp -a {:.2}",
                cache_name(last_cold),
                get(Tool::Cp).map_or(f64::NAN, |v| measure::median(&col(v, |s| s.cpu)) / gb)
            ),
        ));
        mem_reading.push(format!("{name}: downloader {d_rss:.0} MiB, seeder {s_rss:.0} MiB, {:.2} CPU s/GB", dc + sc));
    }
    if !mem_reading.is_empty() {
        sec.reading.push(format!(
            "Case 5 (during case 1): peak RSS {} (target < 100 MiB each); rsync uses {rsync_cpu:.2} CPU s/GB for both ends.",
            mem_reading.join("; ")
        ));
    }

    // Details.
    let mut d = format!(
        "## Case 1 and 5: one seeder → one downloader over loopback\n\nGame: the mixed game (make-game.py layout, scale {}) = {} bytes in {} files. \
         Each tool copies it into a fresh empty folder. {}. Counted runs: {} per tool after {} warm-up; the tools take turns within a round, \
         in an order rotated every round. Ours: `lanspread serve --listen 127.0.0.1:PORT --transport T --no-mdns` (running throughout) and the timed \
         `lanspread get ID --no-install --json --peer 127.0.0.1:PORT --no-mdns`. CPU is user+system time from /proc/PID/stat \
         (the timed process and its children; for the serving side the delta over the run); peak RSS is VmHWM.\n\n",
        if opts.quick { 0.25 } else { 1.0 },
        game.bytes,
        game.files,
        if both {
            "Two cache modes: **cold** (page cache dropped before every timed run) and **warm** (source read once before, never dropped)"
        } else if opts.cold {
            "The page cache is dropped before every timed run (cold source)"
        } else {
            "The page cache is warm (not dropped)"
        },
        opts.runs,
        opts.warmup
    );
    d.push_str("| cache | tool | wall median (min–max) | MB/s | download.secs | get secs | CPU s timed process | CPU s serving side | peak RSS timed / serving (MiB) |\n|---|---|---|---:|---:|---:|---:|---:|---|\n");
    for (cold, samples) in by_mode {
        for (tool, v) in samples {
            if v.is_empty() {
                d.push_str(&format!("| {} | {} | not measured | | | | | | |\n", cache_name(*cold), tool.name()));
                continue;
            }
            let w = col(v, |s| s.wall);
            let (lo, hi) = measure::span(&w);
            let m = measure::median(&w);
            let ours = matches!(tool, Tool::Ours(_));
            let peer = matches!(tool, Tool::Ours(_) | Tool::Rsync);
            d.push_str(&format!(
                "| {} | {} | {m:.3} ({lo:.3}–{hi:.3}) | {:.0} | {} | {} | {:.2} | {} | {:.0} / {} |\n",
                cache_name(*cold),
                tool.name(),
                game.bytes as f64 / m / 1e6,
                if ours { f3(Some(measure::median(&col(v, |s| s.dl)))) } else { "-".into() },
                if ours { f3(Some(measure::median(&col(v, |s| s.secs)))) } else { "-".into() },
                measure::median(&col(v, |s| s.cpu)),
                if peer { format!("{:.2}", measure::median(&col(v, |s| s.peer_cpu))) } else { "-".into() },
                v.iter().map(|s| s.rss).max().unwrap_or(0) as f64 / 1024.0,
                if ours { format!("{:.0}", v.iter().map(|s| s.peer_rss).max().unwrap_or(0) as f64 / 1024.0) } else { "-".into() },
            ));
        }
    }
    d.push_str(
        "\nWhere the `get` wall time goes (medians; from /proc/PID/io of the `get` process sampled every 10 ms: *before* = until the first \
         data is written: start-up, discovery, manifest, file creation; *transfer* = first to last data write; *commit* = from the last \
         write until the files are read again, or until exit when nothing is read back (the remaining fsyncs and the commit); \
         *re-scan* = a re-read of the download after the commit (a re-hash); *after* = the rest until exit). UDP drops: datagrams \
         dropped on full socket receive buffers in the host namespace during the run.\n\n\
         | cache | tool | wall | before | transfer | commit | re-scan | after | UDP drops |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (cold, samples) in by_mode {
        for (tool, v) in samples {
            let ph: Vec<measure::Phases> = v.iter().filter_map(|s| s.phases).collect();
            if !matches!(tool, Tool::Ours(_)) || ph.is_empty() {
                continue;
            }
            let m = |f: fn(&measure::Phases) -> f64| measure::median(&ph.iter().map(f).collect::<Vec<_>>());
            d.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |\n",
                cache_name(*cold),
                tool.name(),
                measure::median(&col(v, |s| s.wall)),
                m(|p| p.before),
                m(|p| p.transfer),
                m(|p| p.commit),
                m(|p| p.rescan),
                m(|p| p.after),
                measure::median(&col(v, |s| s.udp_drops as f64))
            ));
        }
    }
    for (t, s) in seeders.iter().enumerate() {
        if let Some(s) = s {
            d.push_str(&format!("\nSeeder {} start-up (scan and hash of the game until `serving`): {:.2} s.", TRANSPORTS[t].0, s.startup));
        }
    }
    if let Some(r) = rescan {
        d.push_str(&format!(
            "\nA full re-hash of the downloaded game (`lanspread status` without a scan index, warm cache) takes {r:.2} s: what a downloader must not pay again after a verified download."
        ));
    }
    for p in problems {
        d.push_str(&format!("\n\nProblem: {}", p.lines().next().unwrap_or(p)));
    }
    d.push_str("\n\n");
    if !profile.is_empty() {
        d.push_str("## Case 6: profile of case 1\n\n");
        d.push_str(profile);
    }
    sec.details = d;
    sec
}

impl Daemon {
    /// SIGINT (perf writes its data on SIGINT), then wait up to `grace`.
    pub fn interrupt(&mut self, grace: Duration) {
        let _ = Command::new("kill").args(["-INT", &self.pid().to_string()]).output();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline && self.alive() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
