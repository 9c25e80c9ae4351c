//! Socket-address conventions shared by the QUIC adapters.

use std::net::SocketAddr;

/// The address as the `Transport` port reports it: a dual-stack socket sees
/// IPv4 peers as IPv4-mapped IPv6 (`::ffff:a.b.c.d`); they are reported as
/// plain IPv4, so one peer has one spelling whichever socket met it. The
/// scope id of a link-local IPv6 address is kept (it names the interface).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// Whether `addr` can only be reached through one named interface (a
/// link-local IPv6 address), so a dial must carry its scope id.
pub fn needs_scope(addr: &SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unicast_link_local())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV6;

    #[test]
    fn mapped_ipv4_becomes_ipv4_and_scopes_stay() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(canonical(a("[::ffff:10.77.0.11]:47800")), a("10.77.0.11:47800"));
        assert_eq!(canonical(a("10.77.0.11:47800")), a("10.77.0.11:47800"));
        assert_eq!(canonical(a("[::1]:5")), a("[::1]:5"));
        let ll = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 5, 0, 4));
        assert_eq!(canonical(ll), ll);
        assert!(needs_scope(&ll));
        assert!(!needs_scope(&a("[::1]:5")) && !needs_scope(&a("10.0.0.1:5")));
    }
}
