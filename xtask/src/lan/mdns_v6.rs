//! Scenario (v6) of issue 11, item 8: a peer that mDNS shows only at its
//! IPv6 link-local address is dialed there (with the scope id of the
//! interface its advert arrived on) and serves a running download.
//!
//! Seeder h1 listens on its `eth0` link-local address alone, so the only
//! address mDNS can give for it is `fe80::…`; seeder h2 listens dual-stack
//! (the default) and is advertised with IPv4 and IPv6 link-local addresses.
//! The downloader h3 finds both by mDNS; h1 delivering data proves the
//! link-local dial works end to end.

use super::super::output;
use super::{await_mutual_discovery, finish_get, net, require_all_contributed, verify, Cx, Host, Procs, Seeder};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::Command;
use std::time::{Duration, Instant};

/// The QUIC port of `lanspread serve`.
const PORT: u16 = 47800;

/// (v6) One seeder reachable only over IPv6 link-local, one dual-stack
/// seeder, one downloader, all by mDNS; both seeders must contribute.
pub(super) fn mdns_v6(cx: &Cx, procs: &mut Procs) -> Result<String, String> {
    const GAME: &str = "lan-v6";
    const MIB: u64 = 96;
    // Capped, so the download lasts long enough for both seeders to join.
    const RATE: u32 = 200;
    let (h1, h2, h3) = (cx.host(1)?, cx.host(2)?, cx.host(3)?);
    for h in [&h1, &h2] {
        cx.gen(h, GAME, MIB, 66)?;
        net::shape(h.i, Some(RATE))?;
    }
    cx.copy_catalog(&h1, &h3)?;
    let ll = link_local(h1.i, Duration::from_secs(10))?;
    eprintln!("  h1 listens on {ll} only (its eth0 link-local address)");
    let s1 = serve_at(cx, procs, h1, ll)?;
    let s2 = cx.serve(procs, h2, None)?;
    let seeders = [&s1, &s2];
    await_mutual_discovery(procs, &seeders, Duration::from_secs(15))?;
    let t = Instant::now();
    let g = cx.get(procs, &h3, "get", GAME, None, &[])?;
    let sum = finish_get(procs, g, Duration::from_secs(90))?;
    eprintln!("  h3 downloaded {} ({:.1} s)", sum.describe(&seeders), t.elapsed().as_secs_f64());
    let detail = verify(&s1.host, &h3, GAME, &sum)?;
    // h1 has no other address: its share went over IPv6 link-local.
    require_all_contributed(&sum, &seeders, "h3")?;
    Ok(format!("h1 served over {ll}; {detail}; {}", sum.describe(&seeders)))
}

/// Starts `lanspread serve --listen ADDR` on `h` and waits until it serves
/// (like [`Cx::serve`], which listens on the default address).
fn serve_at(cx: &Cx, procs: &mut Procs, h: Host, addr: SocketAddr) -> Result<Seeder, String> {
    let name = format!("h{}-serve", h.i);
    let listen = addr.to_string();
    let args = cx.args("serve", &h, None, &["--listen", &listen]);
    let proc = procs.spawn(&name, &h.ns(), &cx.bin, &args, &[("LANSPREAD_CONFIG_DIR", &h.config)])?;
    let line = procs.get(proc).wait_line("serving ", Duration::from_secs(20))?;
    let id = line.rsplit(" as ").next().map(str::trim).unwrap_or_default().to_owned();
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{name}: cannot read the peer id from {line:?}"));
    }
    eprintln!("  {name}: {line}");
    Ok(Seeder { proc, host: h, id })
}

/// Host `i`'s `eth0` link-local address with its scope id, on [`PORT`],
/// once duplicate address detection has finished (a tentative address
/// cannot be bound).
fn link_local(i: usize, timeout: Duration) -> Result<SocketAddr, String> {
    let t = Instant::now();
    loop {
        let out = output(Command::new("ip").args(["-n", &net::host_ns(i), "-j", "-6", "addr", "show", "dev", "eth0", "scope", "link"]))?;
        if let Some(addr) = parse_link_local(&out)? {
            return Ok(addr);
        }
        if t.elapsed() > timeout {
            return Err(format!("{}: eth0 has no usable IPv6 link-local address (is IPv6 disabled?): {out}", net::host_ns(i)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first settled link-local address in `ip -j -6 addr show dev X`
/// output, as a socket address scoped to that interface.
fn parse_link_local(json: &str) -> Result<Option<SocketAddr>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("ip -j addr: {e}: {json}"))?;
    let Some(link) = v.as_array().and_then(|l| l.first()) else { return Ok(None) };
    let index = link["ifindex"].as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("ip -j addr: no ifindex: {json}"))?;
    let settled = link["addr_info"].as_array().into_iter().flatten().find(|a| {
        a["family"] == "inet6"
            && a["scope"] == "link"
            && !a["tentative"].as_bool().unwrap_or(false)
            && !a["dadfailed"].as_bool().unwrap_or(false)
    });
    let ip = settled.and_then(|a| a["local"].as_str()).and_then(|s| s.parse::<Ipv6Addr>().ok());
    Ok(ip.map(|ip| SocketAddr::V6(SocketAddrV6::new(ip, PORT, 0, index))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_settled_link_local_address() {
        let json = r#"[{"ifindex":2,"ifname":"eth0","addr_info":[
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link","tentative":true},
            {"family":"inet6","local":"fe80::64bc:2","prefixlen":64,"scope":"link"}]}]"#;
        assert_eq!(parse_link_local(json).unwrap(), Some("[fe80::64bc:2%2]:47800".parse().unwrap()));
        let tentative = r#"[{"ifindex":2,"addr_info":[{"family":"inet6","local":"fe80::1","scope":"link","tentative":true}]}]"#;
        assert_eq!(parse_link_local(tentative).unwrap(), None);
        assert_eq!(parse_link_local("[]").unwrap(), None);
    }
}
