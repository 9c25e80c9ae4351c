//! Which addresses of a peer to dial, and in which order.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV6};

/// The usable form of an advertised address, or `None` if no dial can
/// reach it: IPv4-mapped IPv6 becomes IPv4 (one address, one spelling);
/// the scope id is kept only where it means something (link-local IPv6,
/// where it names the interface) and a link-local address without one is
/// dropped (the kernel cannot route it); unspecified, multicast,
/// broadcast and port 0 are dropped.
pub fn normalize_addr(addr: SocketAddr) -> Option<SocketAddr> {
    if addr.port() == 0 {
        return None;
    }
    match addr {
        SocketAddr::V4(v4) => {
            let ip = v4.ip();
            (!ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast()).then_some(addr)
        }
        SocketAddr::V6(v6) => {
            let ip = *v6.ip();
            if let Some(v4) = ip.to_ipv4_mapped() {
                return normalize_addr(SocketAddr::from((v4, v6.port())));
            }
            if ip.is_unspecified() || ip.is_multicast() {
                return None;
            }
            if ip.is_unicast_link_local() {
                (v6.scope_id() != 0).then(|| SocketAddr::V6(SocketAddrV6::new(ip, v6.port(), 0, v6.scope_id())))
            } else {
                Some(SocketAddr::V6(SocketAddrV6::new(ip, v6.port(), 0, 0)))
            }
        }
    }
}

/// Which addresses to dial, in which order (RFC 8305 style): unusable ones
/// dropped (see [`normalize_addr`]), duplicates dropped, then the families
/// interleaved (so a family that is broken on this LAN costs one stagger
/// step, not a timeout), each in the given order; `preferred` (the address
/// that worked last) goes first. IPv4 leads, unlike RFC 8305's IPv6: on a
/// LAN the IPv6 addresses are mostly link-local ones, which s2n-quic peers
/// cannot answer on, while IPv4 is what every peer serves.
pub fn dial_order(addrs: &[SocketAddr], preferred: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut seen = BTreeSet::new();
    let usable: Vec<SocketAddr> = addrs.iter().filter_map(|a| normalize_addr(*a)).filter(|a| seen.insert(*a)).collect();
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = usable.into_iter().partition(SocketAddr::is_ipv4);
    let mut out = Vec::with_capacity(v4.len() + v6.len());
    for i in 0..v4.len().max(v6.len()) {
        out.extend(v4.get(i).copied());
        out.extend(v6.get(i).copied());
    }
    if let Some(pos) = preferred.and_then(normalize_addr).and_then(|p| out.iter().position(|a| *a == p)) {
        let first = out.remove(pos);
        out.insert(0, first);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v6(ip: &str, port: u16, scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(ip.parse().unwrap(), port, 0, scope))
    }

    #[test]
    fn normalize_keeps_link_local_scope_and_drops_what_cannot_be_dialed() {
        assert_eq!(normalize_addr(v6("fe80::1", 47800, 3)), Some(v6("fe80::1", 47800, 3)));
        // No interface: the kernel cannot route it.
        assert_eq!(normalize_addr(v6("fe80::1", 47800, 0)), None);
        // A scope id means nothing on a global address.
        assert_eq!(normalize_addr(v6("2001:db8::1", 47800, 3)), Some(v6("2001:db8::1", 47800, 0)));
        assert_eq!(normalize_addr(a("[::ffff:10.77.0.11]:47800")), Some(a("10.77.0.11:47800")));
        for bad in ["0.0.0.0:47800", "[::]:47800", "10.0.0.1:0", "224.0.0.251:5353", "[ff02::fb]:5353", "255.255.255.255:1"] {
            assert_eq!(normalize_addr(a(bad)), None, "{bad}");
        }
    }

    #[test]
    fn dial_order_interleaves_families_ipv4_first() {
        let ll = v6("fe80::64bc:1", 47800, 2);
        let got = dial_order(&[ll, a("[2001:db8::4]:47800"), a("[2001:db8::5]:47800"), a("10.77.0.11:47800")], None);
        assert_eq!(got, vec![a("10.77.0.11:47800"), ll, a("[2001:db8::4]:47800"), a("[2001:db8::5]:47800")]);
        let got = dial_order(&[a("10.77.0.11:47800"), a("192.168.1.4:47800"), ll], None);
        assert_eq!(got, vec![a("10.77.0.11:47800"), ll, a("192.168.1.4:47800")]);
        // Only one family: kept in the given order.
        let v4 = [a("10.0.0.2:1"), a("10.0.0.1:1")];
        assert_eq!(dial_order(&v4, None), v4.to_vec());
    }

    #[test]
    fn dial_order_dedups_and_puts_the_preferred_address_first() {
        let ll2 = v6("fe80::1", 47800, 2);
        let ll3 = v6("fe80::1", 47800, 3);
        let addrs = [a("10.77.0.11:47800"), a("[::ffff:10.77.0.11]:47800"), ll2, ll3, ll2, v6("fe80::9", 47800, 0)];
        // The same link-local address on two interfaces is two addresses.
        assert_eq!(dial_order(&addrs, None), vec![a("10.77.0.11:47800"), ll2, ll3]);
        assert_eq!(dial_order(&addrs, Some(ll3)), vec![ll3, a("10.77.0.11:47800"), ll2]);
        assert_eq!(dial_order(&addrs, Some(a("[::ffff:10.77.0.11]:47800")))[0], a("10.77.0.11:47800"));
        // A preferred address that is not advertised is not added.
        assert_eq!(dial_order(&addrs, Some(a("10.9.9.9:1"))).len(), 3);
        assert!(dial_order(&[a("0.0.0.0:1"), v6("fe80::1", 1, 0)], None).is_empty());
    }
}
