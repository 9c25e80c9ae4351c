//! Case 2: three seeders with `tc tbf` egress caps on a LAN of network
//! namespaces, against the ideal (bytes / sum of caps) and nginx mirrors +
//! aria2c measured in the same run.
//!
//! `cargo xtask lan` (xtask/src/lan/net.rs) keeps its namespace helpers
//! private to that module and its `down` removes every `lsp-*` namespace,
//! so this case builds its own small LAN with the same scheme under another
//! prefix: bridge namespace `lsb-br`, hosts `lsb-h1..lsb-h4` at
//! 10.78.0.(10+I). Seeders are h1..h3, the downloader h4. The shaping
//! (`tbf rate R burst 256kb latency 50ms` on each seeder's eth0) and the
//! aria2c options are those of `shared/bench/lan-shape.sh` and
//! `lan-aria2.sh` (adapted), so the baseline matches BASELINES.md.
//! Everything is torn down on the way out, also after a failure.

use super::gen::{self, Game};
use super::loopback::parse_get_json;
use super::measure::{self, Daemon};
use super::report::{Row, Section, Target};
use super::tools::Tools;
use super::{log, Opts};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BR_NS: &str = "lsb-br";
const HOST_PREFIX: &str = "lsb-h";
const SEEDERS: usize = 3;
const DOWNLOADER: usize = 4;
const NGINX_PORT: u16 = 8080;
const TRANSPORTS: [(&str, u16); 2] = [("quinn", 47800), ("s2n", 47801)];
const ARIA_OPTS: [&str; 8] = ["-j", "8", "-s", "3", "-x", "2", "-k", "4M"];

pub(super) fn host_ns(i: usize) -> String {
    format!("{HOST_PREFIX}{i}")
}

pub(super) fn host_ip(i: usize) -> String {
    format!("10.78.0.{}", 10 + i)
}

fn ip(args: &[&str]) -> Result<String, String> {
    measure::output(Command::new("ip").args(args))
}

fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Result<String, String> {
    measure::output(Command::new("ip").args(["netns", "exec", ns, prog]).args(args))
}

/// The `lsb-*` namespaces that exist now.
fn ours() -> Result<Vec<String>, String> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            *n == BR_NS
                || *n == "lsb-probe"
                || n.strip_prefix(HOST_PREFIX).is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect())
}

/// Deletes every `lsb-*` namespace, killing what still runs in them.
pub(super) fn down() -> Result<(), String> {
    let mut names = ours()?;
    names.sort_by_key(|n| n == BR_NS);
    for ns in &names {
        if let Ok(pids) = ip(&["netns", "pids", ns]) {
            for pid in pids.split_whitespace().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
        }
        let _ = ip(&["netns", "del", ns]);
    }
    let left = ours()?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("could not remove namespaces {}", left.join(" ")))
    }
}

pub(super) fn preflight() -> Result<(), String> {
    if !crate::lan::is_root() {
        return Err("not running as root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN".into());
    }
    let _ = ip(&["netns", "del", "lsb-probe"]);
    ip(&["netns", "add", "lsb-probe"])?;
    let r = ip(&["-n", "lsb-probe", "link", "set", "lo", "up"]);
    ip(&["netns", "del", "lsb-probe"])?;
    r.map(drop)
}

pub(super) fn up(n: usize) -> Result<(), String> {
    ip(&["netns", "add", BR_NS])?;
    ip(&["-n", BR_NS, "link", "set", "lo", "up"])?;
    ip(&["-n", BR_NS, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", BR_NS, "link", "set", "br0", "up"])?;
    for i in 1..=n {
        let (ns, port, addr) = (host_ns(i), format!("lsb-v{i}"), format!("{}/24", host_ip(i)));
        ip(&["netns", "add", &ns])?;
        // Created inside the bridge namespace: the host's own namespace never sees it.
        ip(&["-n", BR_NS, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        ip(&["-n", BR_NS, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", BR_NS, "link", "set", &port, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    }
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let me = me.to_string_lossy().into_owned();
    for i in 1..n {
        let target = format!("{}:9", host_ip(n));
        in_ns(&host_ns(i), &me, &["bench", "probe-tcp", &target]).map_err(|e| format!("{} cannot reach {target}: {e}", host_ns(i)))?;
    }
    Ok(())
}

pub(super) fn shape(i: usize, mbit: Option<u32>) -> Result<(), String> {
    let ns = host_ns(i);
    match mbit {
        Some(r) => in_ns(
            &ns,
            "tc",
            &["qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &format!("{r}mbit"), "burst", "256kb", "latency", "50ms"],
        )
        .map(drop),
        None => {
            let _ = in_ns(&ns, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            Ok(())
        }
    }
}

/// `bench probe-tcp ADDR` (run inside a namespace): succeeds when ADDR answers,
/// also with "connection refused" (no `ping` on this machine).
pub fn probe_tcp(addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    if !(addr.ip().to_string().starts_with("10.78.0.") || addr.ip().is_loopback()) {
        return Err(format!("refusing to probe {addr}: only 10.78.0.x and loopback"));
    }
    let mut last = String::new();
    for _ in 0..20 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => last = format!("{addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

/// Tears the LAN down when dropped (after the processes in it are stopped).
pub(super) struct Lan;

impl Drop for Lan {
    fn drop(&mut self) {
        if let Err(e) = down() {
            log(&format!("bench: LAN teardown: {e}"));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// `get --peer` ×3 over transport `TRANSPORTS[t]`.
    Ours(usize),
    /// `get` over quinn with the seeders found through mDNS, as users find
    /// them (the quinn seeders advertise; the s2n ones do not, so only the
    /// three quinn seeders are found).
    OursMdns,
    Aria2,
}

impl Tool {
    fn name(self) -> String {
        match self {
            Tool::Ours(t) => format!("lanspread {}", TRANSPORTS[t].0),
            Tool::OursMdns => "lanspread quinn via mDNS".into(),
            Tool::Aria2 => "nginx + aria2c".into(),
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Tool::Ours(t) => TRANSPORTS[t].0,
            Tool::OursMdns => "quinn-mdns",
            Tool::Aria2 => "aria2",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Sample {
    wall: f64,
    dl: f64,
    /// (peer id in hex, MB delivered).
    shares_mb: Vec<(String, f64)>,
    /// Where the wall time of `get` went.
    phases: Option<measure::Phases>,
}

/// Runs case 2.
pub fn run(opts: &Opts, tools: &Tools) -> Result<Section, String> {
    if !tools.iproute2 {
        return Err("iproute2 (ip, tc, ss) is not installed".into());
    }
    preflight().map_err(|e| format!("cannot create network namespaces: {e}"))?;
    let scale = if opts.quick { 0.0625 } else { 0.25 };
    let game = gen::mixed_game(&opts.data(), "game25", scale)?;
    let work = opts.work().join("lan");
    let logs = work.join("logs");
    measure::fresh_dir(&work)?;
    down()?;
    let lan = Lan;
    up(DOWNLOADER)?;
    log(&format!("bench 2: LAN up ({BR_NS}, {}..{}), game {} = {} bytes", host_ns(1), host_ns(DOWNLOADER), game.id, game.bytes));
    let transports: Vec<usize> = if opts.quick { vec![0] } else { vec![0, 1] };
    let mut daemons: Vec<Daemon> = Vec::new();
    let result = (|| -> Result<Section, String> {
        let mut problems = Vec::new();
        let mut tools_ok: Vec<Tool> = Vec::new();
        // Seeder peer ids (hex) → host number, to attribute the shares.
        let mut ids: Vec<(String, usize)> = Vec::new();
        for &t in &transports {
            let (name, port) = TRANSPORTS[t];
            let mut ok = true;
            for k in 1..=SEEDERS {
                let dir = work.join(format!("seed-{name}-{k}"));
                gen::link_copy(&game, &dir)?;
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &host_ns(k)]).arg(&opts.bin).arg("serve").arg("--games").arg(&dir);
                cmd.args(["--listen", &format!("[::]:{port}"), "--transport", name]);
                if t != 0 {
                    cmd.arg("--no-mdns");
                }
                cmd.env("LANSPREAD_CONFIG_DIR", work.join(format!("cfg-seed-{name}-{k}")));
                let mut d = Daemon::spawn(&format!("h{k}-seed-{name}"), &mut cmd, &logs)?;
                match d.wait_line("serving", Duration::from_secs(600)) {
                    Ok(line) => ids.push((line.rsplit(' ').next().unwrap_or("").to_owned(), k)),
                    Err(e) => {
                        problems.push(format!("{}: {e}", Tool::Ours(t).name()));
                        ok = false;
                    }
                }
                daemons.push(d);
            }
            if ok {
                tools_ok.push(Tool::Ours(t));
                if t == 0 {
                    tools_ok.push(Tool::OursMdns);
                }
            }
        }
        let list = work.join("aria2.list");
        match (&tools.nginx, &tools.aria2c) {
            (Some(nginx), Some(_)) => match start_nginx(nginx, &game, &work, &logs, &mut daemons) {
                Ok(()) => {
                    write_aria_list(&game, &list)?;
                    tools_ok.push(Tool::Aria2);
                }
                Err(e) => problems.push(format!("nginx + aria2c: {e}")),
            },
            _ => problems.push("nginx + aria2c: nginx or aria2c is not installed".into()),
        }
        let mut sec = Section::default();
        let mut details = format!(
            "## Case 2: three rate-capped seeders on a namespaced LAN\n\nHosts {}..{} (seeders) and {} (downloader) on one bridge; each seeder's eth0 egress capped with \
             `tc qdisc replace dev eth0 root tbf rate R burst 256kb latency 50ms`. Game: make-game.py layout at scale {scale} = {} bytes in {} files. \
             Ideal = bytes × 8 / sum of caps. Ours: `lanspread serve` on every seeder (hard-linked copies), timed \
             `lanspread get --no-install --json --peer` ×3 on the downloader, and over quinn also with the seeders found through mDNS \
             (no `--peer`; the quinn seeders advertise their IPv4 and IPv6 link-local addresses). Baseline: nginx (sendfile) on every seeder and \
             `aria2c -i LIST {}` on the downloader, every file listed with all three mirrors. All hosts share the machine's cores. The phases of `get` (before the first byte is written / transfer / after the last write) are measured as in case 1. \
             {} counted run(s) per tool after {} warm-up.\n\n",
            host_ns(1),
            host_ns(SEEDERS),
            host_ns(DOWNLOADER),
            game.bytes,
            game.files,
            ARIA_OPTS.join(" "),
            opts.runs,
            opts.warmup
        );
        details.push_str(
            "| case | tool | wall median (min–max) | ×ideal | download.secs | before / transfer / commit (s) | bytes per seeder (MB, last run) |\n|---|---|---|---:|---:|---|---|\n",
        );
        for (case, caps) in [("A", [200u32, 200, 200]), ("B", [200, 200, 20])] {
            for (k, cap) in caps.iter().enumerate() {
                shape(k + 1, Some(*cap))?;
            }
            let sum: u32 = caps.iter().sum();
            let ideal = game.bytes as f64 * 8.0 / (f64::from(sum) * 1e6);
            let label = format!("{}/{}/{} Mbit", caps[0], caps[1], caps[2]);
            log(&format!("bench 2: case {case} ({label}): ideal {ideal:.3} s"));
            let mut samples: Vec<(Tool, Vec<Sample>)> = tools_ok.iter().map(|t| (*t, Vec::new())).collect();
            for round in 0..opts.warmup + opts.runs {
                for (tool, got) in samples.iter_mut() {
                    match run_one(opts, *tool, &game, &work, &logs, &list, round == 0) {
                        Ok(s) => {
                            log(&format!(
                                "bench 2: case {case} {} {} {}: wall {:.3} s = {:.2}× ideal",
                                tool.name(),
                                if round >= opts.warmup { "run" } else { "warm-up" },
                                round + 1,
                                s.wall,
                                s.wall / ideal
                            ));
                            if round >= opts.warmup {
                                got.push(s);
                            }
                        }
                        Err(e) => {
                            log(&format!("bench 2: case {case} {} failed: {e}", tool.name()));
                            problems.push(format!("case {case} {}: {}", tool.name(), e.lines().next().unwrap_or("")));
                        }
                    }
                }
            }
            let med = |t: Tool| {
                samples
                    .iter()
                    .find(|(x, _)| *x == t)
                    .map_or(f64::NAN, |(_, v)| measure::median(&v.iter().map(|s| s.wall).collect::<Vec<_>>()))
            };
            let aria = med(Tool::Aria2);
            for (tool, v) in &samples {
                let walls: Vec<f64> = v.iter().map(|s| s.wall).collect();
                if walls.is_empty() {
                    details.push_str(&format!("| {case} {label} | {} | not measured | | | |\n", tool.name()));
                    continue;
                }
                let m = measure::median(&walls);
                let (lo, hi) = measure::span(&walls);
                let ours = matches!(tool, Tool::Ours(_) | Tool::OursMdns);
                let dl = measure::median(&v.iter().map(|s| s.dl).collect::<Vec<_>>());
                let ph: Vec<measure::Phases> = v.iter().filter_map(|s| s.phases).collect();
                let pm = |f: fn(&measure::Phases) -> f64| measure::median(&ph.iter().map(f).collect::<Vec<_>>());
                details.push_str(&format!(
                    "| {case} {label} | {} | {m:.3} ({lo:.3}–{hi:.3}) | {:.2} | {} | {} | {} |\n",
                    tool.name(),
                    m / ideal,
                    if ours { format!("{dl:.3}") } else { "-".into() },
                    if ph.is_empty() {
                        "-".into()
                    } else {
                        format!("{:.2} / {:.2} / {:.2}", pm(|p| p.before), pm(|p| p.transfer), pm(|p| p.commit + p.rescan + p.after))
                    },
                    v.last().map(|s| show_shares(&s.shares_mb, &ids)).unwrap_or_default()
                ));
                if *tool == Tool::OursMdns {
                    let worst = hi / ideal;
                    sec.rows.push(
                        Row::cmp(
                            &format!("2{case} LAN {label} quinn, found through mDNS: get vs ideal"),
                            m,
                            "ideal (bytes / sum of caps)",
                            ideal,
                            format!("worst run {worst:.2}× ideal; seeders advertise IPv4 and IPv6 link-local; download.secs {dl:.3}"),
                        )
                        .target(Target::AtMost(1.10)),
                    );
                    sec.reading.push(format!(
                        "Case 2{case} ({label}), quinn through mDNS: {m:.2} s = {:.2}× ideal, worst run {worst:.2}× (target ≤ 1.10 in every run: {}).",
                        m / ideal,
                        if worst <= 1.10 { "met" } else { "missed" }
                    ));
                }
                if let Tool::Ours(t) = tool {
                    let name = TRANSPORTS[*t].0;
                    let note = format!(
                        "{:.0} MB game; efficiency ideal/actual {:.2}; download.secs {dl:.3} = {:.2}× ideal",
                        game.bytes as f64 / 1e6,
                        ideal / m,
                        dl / ideal
                    );
                    sec.rows.push(
                        Row::cmp(&format!("2{case} LAN {label} {name}: get vs ideal"), m, "ideal (bytes / sum of caps)", ideal, note)
                            .target(Target::AtMost(1.0 / 0.9)),
                    );
                    sec.rows.push(Row::cmp(
                        &format!("2{case} LAN {label} {name}: get vs nginx + aria2c"),
                        m,
                        "nginx ×3 + aria2c",
                        aria,
                        format!("aria2c = {:.2}× ideal", aria / ideal),
                    ));
                    sec.reading.push(format!(
                        "Case 2{case} ({label}), {name}: {m:.2} s = {:.2}× ideal (efficiency {:.2}, target ≥ 0.9: {}); transfer alone {dl:.2} s = {:.2}× ideal; nginx + aria2c {aria:.2} s = {:.2}× ideal.",
                        m / ideal,
                        ideal / m,
                        if ideal / m >= 0.9 { "met" } else { "missed" },
                        dl / ideal,
                        aria / ideal
                    ));
                }
            }
            if !tools_ok.iter().any(|t| matches!(t, Tool::Ours(_))) {
                sec.rows.push(Row::failed(&format!("2{case} LAN {label}"), "no lanspread seeder started"));
            }
        }
        for k in 1..=SEEDERS {
            shape(k, None)?;
        }
        for p in &problems {
            details.push_str(&format!("\nProblem: {p}\n"));
            if p.starts_with("nginx") {
                sec.rows.push(Row::failed("2 LAN: nginx + aria2c baseline", p));
            }
        }
        details.push('\n');
        sec.details = details;
        Ok(sec)
    })();
    for d in daemons.iter_mut().rev() {
        d.stop();
    }
    drop(daemons);
    drop(lan);
    result
}

fn start_nginx(nginx: &Path, game: &Game, work: &Path, logs: &Path, daemons: &mut Vec<Daemon>) -> Result<(), String> {
    for k in 1..=SEEDERS {
        let d = work.join(format!("nginx{k}"));
        measure::fresh_dir(&d.join("tmp"))?;
        let user = if crate::lan::is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "{user}worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  default_type application/octet-stream;\n  \
             client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n  fastcgi_temp_path {p}/tmp;\n  uwsgi_temp_path {p}/tmp;\n  scgi_temp_path {p}/tmp;\n  \
             server {{ listen {ip}:{NGINX_PORT}; root {root}; }}\n}}\n",
            p = d.display(),
            ip = host_ip(k),
            root = game.dir.display()
        );
        std::fs::write(d.join("nginx.conf"), conf).map_err(|e| format!("nginx.conf: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host_ns(k)]).arg(nginx).arg("-p").arg(&d).arg("-c").arg(d.join("nginx.conf"));
        let mut daemon = Daemon::spawn(&format!("h{k}-nginx"), &mut cmd, logs)?;
        daemon.wait_tcp_port(NGINX_PORT, Some(&host_ns(k)), Duration::from_secs(30))?;
        daemons.push(daemon);
    }
    Ok(())
}

fn write_aria_list(game: &Game, list: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(&game.id)];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(game.dir.join(&rel)).map_err(|e| format!("{}: {e}", rel.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let p = rel.join(e.file_name());
            if e.file_type().map_err(|e| e.to_string())?.is_dir() {
                stack.push(p);
            } else {
                files.push(p.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    let mut text = String::new();
    for f in files {
        let urls: Vec<String> = (1..=SEEDERS).map(|k| format!("http://{}:{NGINX_PORT}/{f}", host_ip(k))).collect();
        text.push_str(&format!("{}\n  out={f}\n", urls.join("\t")));
    }
    std::fs::write(list, text).map_err(|e| format!("{}: {e}", list.display()))
}

fn run_one(opts: &Opts, tool: Tool, game: &Game, work: &Path, logs: &Path, list: &Path, verify_bytes: bool) -> Result<Sample, String> {
    let dst = work.join(format!("dst-{}", tool.slug()));
    measure::fresh_dir(&dst)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host_ns(DOWNLOADER)]);
    match tool {
        Tool::Ours(t) => {
            let (name, port) = TRANSPORTS[t];
            std::fs::copy(game.dir.join("catalog.toml"), dst.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;
            cmd.arg(&opts.bin).args(["get", &game.id, "--games"]).arg(&dst);
            cmd.args([
                "--no-install",
                "--json",
                "--wait",
                "60",
                "--transport",
                name,
                "--no-mdns",
                "--listen",
                &format!("{}:0", host_ip(DOWNLOADER)),
            ]);
            for k in 1..=SEEDERS {
                cmd.args(["--peer", &format!("{}:{port}", host_ip(k))]);
            }
            cmd.env("LANSPREAD_CONFIG_DIR", work.join(format!("cfg-get-{name}")));
        }
        Tool::OursMdns => {
            std::fs::copy(game.dir.join("catalog.toml"), dst.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;
            cmd.arg(&opts.bin).args(["get", &game.id, "--games"]).arg(&dst);
            cmd.args(["--no-install", "--json", "--wait", "60", "--transport", "quinn"]);
            cmd.env("LANSPREAD_CONFIG_DIR", work.join("cfg-get-quinn-mdns"));
        }
        Tool::Aria2 => {
            cmd.args(["aria2c", "-q", "-i"]).arg(list).arg("-d").arg(&dst).args(ARIA_OPTS).args([
                "--file-allocation=none",
                "--auto-file-renaming=false",
                "--allow-overwrite=true",
                "--summary-interval=0",
                "--console-log-level=error",
            ]);
        }
    }
    measure::settle(opts.cold);
    let f = measure::run_measured(&format!("get-{}", tool.slug()), &mut cmd, logs, Duration::from_secs(900))?;
    let mut s = Sample { wall: f.wall, ..Sample::default() };
    if let Tool::Ours(_) | Tool::OursMdns = tool {
        (s.dl, _) = parse_get_json(&f.stdout)?;
        s.shares_mb = shares(&f.stdout);
        s.phases = f.phases();
    }
    gen::compare(&game.root(), &dst.join(&game.id), verify_bytes)?;
    let _ = std::fs::remove_dir_all(&dst);
    Ok(s)
}

/// (peer id in hex, MB delivered) for every peer, from `get --json`.
fn shares(stdout: &str) -> Vec<(String, f64)> {
    let Some(line) = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')) else { return vec![] };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { return vec![] };
    let Some(peers) = v["download"]["peers"].as_array() else { return vec![] };
    peers
        .iter()
        .map(|p| {
            // A hex string (or, from older builds, an array of bytes).
            let hex: String = match p["peer"].as_str() {
                Some(h) => h.to_ascii_lowercase(),
                None => p["peer"]
                    .as_array()
                    .map(|b| b.iter().filter_map(|x| x.as_u64()).map(|x| format!("{x:02x}")).collect())
                    .unwrap_or_default(),
            };
            (hex, p["bytes"].as_f64().unwrap_or(0.0) / 1e6)
        })
        .collect()
}

/// `h1 170 / h2 171 / h3 17` in host order.
fn show_shares(shares: &[(String, f64)], ids: &[(String, usize)]) -> String {
    let mut named: Vec<(usize, f64)> =
        shares.iter().map(|(hex, mb)| (ids.iter().find(|(id, _)| id == hex).map_or(0, |(_, k)| *k), *mb)).collect();
    named.sort_by_key(|(k, _)| *k);
    named.iter().map(|(k, mb)| if *k > 0 { format!("h{k} {mb:.0}") } else { format!("? {mb:.0}") }).collect::<Vec<_>>().join(" / ")
}
