//! Namespaces, veth pairs, the bridge and rate caps (all through `ip` and `tc`).

use super::output;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Namespace holding the bridge.
pub const BR_NS: &str = "lsp-br";
/// The bridge (inside [`BR_NS`]).
pub const BRIDGE: &str = "br0";
/// Prefix of the host namespaces.
const HOST_PREFIX: &str = "lsp-h";
/// Largest LAN (addresses 10.77.0.11 ..= 10.77.0.74).
pub const MAX_HOSTS: usize = 64;

/// Namespace of host `i` (1-based).
pub fn host_ns(i: usize) -> String {
    format!("{HOST_PREFIX}{i}")
}

/// Address of host `i`.
pub fn host_ip(i: usize) -> String {
    format!("10.77.0.{}", 10 + i)
}

/// The bridge-side end of host `i`'s veth pair (inside [`BR_NS`]).
fn bridge_port(i: usize) -> String {
    format!("lsp-v{i}")
}

/// Whether this process runs as root (uid 0), from /proc/self/status.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> Result<String, String> {
    output(Command::new("ip").args(args))
}

fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Result<String, String> {
    output(Command::new("ip").args(["netns", "exec", ns, prog]).args(args))
}

/// Checks that namespaces can be created here; the error is the reason.
pub fn preflight() -> Result<(), String> {
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(format!("`ip -V` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => return Err(format!("the `ip` program (iproute2) is not available: {e}")),
    }
    if !is_root() {
        return Err("not running as root (uid 0); network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN".into());
    }
    let probe = "lsp-probe";
    let _ = ip(&["netns", "del", probe]);
    ip(&["netns", "add", probe])?;
    let link = ip(&["-n", probe, "link", "set", "lo", "up"]);
    ip(&["netns", "del", probe])?;
    link.map(drop)
}

/// The `lsp-*` namespaces that exist now.
fn ours() -> Result<Vec<String>, String> {
    let list = ip(&["netns", "list"])?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            *n == BR_NS
                || *n == "lsp-probe"
                || n.strip_prefix(HOST_PREFIX).is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect())
}

/// Deletes every `lsp-*` namespace, killing what still runs in them (a
/// crashed earlier run). Idempotent.
pub fn down(verbose: bool) -> Result<(), String> {
    let mut names = ours()?;
    // Hosts first, the bridge last.
    names.sort_by_key(|n| n == BR_NS);
    let mut errors = Vec::new();
    for ns in &names {
        if let Ok(pids) = ip(&["netns", "pids", ns]) {
            for pid in pids.split_whitespace().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) {
                if verbose {
                    eprintln!("lan down: killing leftover process {pid} in {ns}");
                }
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
        }
        if let Err(e) = ip(&["netns", "del", ns]) {
            errors.push(e);
        }
    }
    if verbose {
        if names.is_empty() {
            eprintln!("lan down: nothing to remove");
        } else {
            eprintln!("lan down: removed {}", names.join(" "));
        }
    }
    let left = ours()?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("lan down: could not remove {}: {}", left.join(" "), errors.join("; ")))
    }
}

/// Creates the bridge namespace and hosts 1..=n.
pub fn up(n: usize) -> Result<(), String> {
    if n == 0 || n > MAX_HOSTS {
        return Err(format!("a LAN has 1..={MAX_HOSTS} hosts, not {n}"));
    }
    ip(&["netns", "add", BR_NS])?;
    ip(&["-n", BR_NS, "link", "set", "lo", "up"])?;
    // No multicast snooping: with no IGMP querier on this LAN, snooping
    // could stop forwarding multicast once memberships time out.
    ip(&["-n", BR_NS, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0"])?;
    ip(&["-n", BR_NS, "link", "set", BRIDGE, "up"])?;
    for i in 1..=n {
        let (ns, port, addr) = (host_ns(i), bridge_port(i), format!("{}/24", host_ip(i)));
        ip(&["netns", "add", &ns])?;
        // Created inside the bridge namespace: the host's own namespace never sees it.
        ip(&["-n", BR_NS, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        ip(&["-n", BR_NS, "link", "set", &port, "master", BRIDGE])?;
        ip(&["-n", BR_NS, "link", "set", &port, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "multicast", "on"])?;
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        // mDNS sends to 224.0.0.251: give multicast a route out of eth0.
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
    }
    Ok(())
}

/// Caps host `i`'s egress at `mbit` Mbit/s (token bucket), or removes the cap.
pub fn shape(i: usize, mbit: Option<u32>) -> Result<(), String> {
    let ns = host_ns(i);
    match mbit {
        Some(r) => {
            // The bucket must hold at least one timer tick of traffic; 10 ms is safe for any HZ.
            let burst = (u64::from(r) * 1_000_000 / 8 / 100).max(64 * 1024);
            let (rate, burst) = (format!("{r}mbit"), burst.to_string());
            in_ns(&ns, "tc", &["qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", &burst, "latency", "50ms"])
                .map(drop)
        }
        None => {
            let _ = in_ns(&ns, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            Ok(())
        }
    }
}

/// Checks that every host reaches every other one over the bridge: a TCP
/// connect to a closed port answered with "connection refused" proves the
/// host is there (no `ping` on this machine).
pub fn check_reachable(n: usize) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let me = me.to_string_lossy().into_owned();
    for i in 1..=n {
        let target = format!("{}:9", host_ip(if i == n { 1 } else { i + 1 }));
        in_ns(&host_ns(i), &me, &["lan", "probe-tcp", &target]).map_err(|e| format!("{} cannot reach {target}: {e}", host_ns(i)))?;
    }
    Ok(())
}

/// `lan probe-tcp ADDR` (run inside a namespace): succeeds when ADDR answers.
pub fn probe_tcp(addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    let ip = addr.ip().to_string();
    if !(ip.starts_with("10.77.0.") || addr.ip().is_loopback()) {
        return Err(format!("refusing to probe {addr}: only 10.77.0.x and loopback"));
    }
    match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("{addr}: {e}")),
    }
}

/// Bytes host `i` has sent on its `eth0` so far.
pub fn tx_bytes(i: usize) -> Result<u64, String> {
    let out = ip(&["-n", &host_ns(i), "-s", "-j", "link", "show", "dev", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("ip -j link: {e}"))?;
    v[0]["stats64"]["tx"]["bytes"].as_u64().ok_or_else(|| format!("ip -j link: no tx byte count in {out}"))
}
