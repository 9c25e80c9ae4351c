//! Two discovery instances on one host see each other, come and go.
//!
//! mDNS multicasts on every selected interface, and this machine's only
//! network besides loopback must not receive test traffic. So each test
//! re-runs itself inside a private network namespace (`unshare -n`, which
//! needs root or user namespaces) and restricts its instances to loopback
//! or to a veth pair made there. Where no namespace can be made, a test
//! reports that it was skipped and passes.

use lanspread_mdns::{MdnsConfig, MdnsDiscovery};
use lanspread_ports::{Discovery, DiscoveryEvent, PeerAdvert, PeerId};
use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

#[path = "../../tls/tests-common/netns.rs"]
mod netns;

/// Loopback has no MULTICAST flag by default.
const LOOPBACK_MULTICAST: &[&str] = &["link set lo multicast on"];

fn advert(b: u8, port: u16) -> PeerAdvert {
    PeerAdvert {
        id: PeerId([b; 32]),
        addrs: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        protocol_version: 7,
        meta: BTreeMap::from([("name".to_owned(), format!("peer {b}"))]),
    }
}

fn instance() -> Arc<MdnsDiscovery> {
    instance_on("lo")
}

fn instance_on(interface: &str) -> Arc<MdnsDiscovery> {
    MdnsDiscovery::new(MdnsConfig { interfaces: vec![interface.into()], ..MdnsConfig::default() }).unwrap()
}

/// Waits for an event satisfying `want`; other events (repeats) are
/// skipped, but none may be about `me`.
async fn wait_for(d: &MdnsDiscovery, me: PeerId, what: &str, want: impl Fn(&DiscoveryEvent) -> bool) -> DiscoveryEvent {
    let fut = async {
        loop {
            let ev = d.next_event().await.expect("discovery ended");
            assert!(!matches!(&ev, DiscoveryEvent::Up(p) if p.id == me), "reported itself: {ev:?}");
            if want(&ev) {
                return ev;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[test]
fn two_instances_see_each_other_on_loopback() {
    if !netns::inside_private_netns("two_instances_see_each_other_on_loopback", LOOPBACK_MULTICAST) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (a, b) = (instance(), instance());
        let (me_a, me_b) = (advert(0xaa, 4001), advert(0xbb, 4002));
        a.advertise(me_a.clone()).await.unwrap();
        b.advertise(me_b.clone()).await.unwrap();

        let ev = wait_for(&a, me_a.id, "a to see b", |e| matches!(e, DiscoveryEvent::Up(p) if p.id == me_b.id)).await;
        assert_eq!(ev, DiscoveryEvent::Up(me_b.clone()));
        let ev = wait_for(&b, me_b.id, "b to see a", |e| matches!(e, DiscoveryEvent::Up(p) if p.id == me_a.id)).await;
        assert_eq!(ev, DiscoveryEvent::Up(me_a.clone()));

        // An updated advert is seen.
        let mut me_b2 = me_b.clone();
        me_b2.meta.insert("games".into(), "12".into());
        b.advertise(me_b2.clone()).await.unwrap();
        let ev = wait_for(&a, me_a.id, "a to see b's update", |e| matches!(e, DiscoveryEvent::Up(p) if p.meta.contains_key("games"))).await;
        assert_eq!(ev, DiscoveryEvent::Up(me_b2));

        // Leaving sends goodbyes: a sees b go down.
        b.shutdown().await;
        assert_eq!(b.next_event().await, None);
        let ev = wait_for(&a, me_a.id, "a to see b leave", |e| matches!(e, DiscoveryEvent::Down(_))).await;
        assert_eq!(ev, DiscoveryEvent::Down(me_b.id));
        a.shutdown().await;
    });
}

/// A peer listening dual-stack (`[::]`) is advertised with every address of
/// its interface; across a veth pair (`v0` <-> `v1`) the other side learns
/// its IPv4 address and its IPv6 link-local address, the latter with the
/// scope id of the interface the answer arrived on (`v1`), so it can be
/// dialed.
#[test]
fn dual_stack_advert_carries_scoped_link_local() {
    if !netns::inside_private_netns("dual_stack_advert_carries_scoped_link_local", netns::VETH_PAIR) {
        return;
    }
    let v1 = netns::ifindex("v1");
    // Both ends of the pair are in this namespace: IPv4 from v0's address
    // arriving on v1 has a local source, which Linux drops unless told.
    for (knob, value) in [("all/rp_filter", "0"), ("v1/rp_filter", "0"), ("v1/accept_local", "1")] {
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{knob}"), value).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (a, b) = (instance_on("v0"), instance_on("v1"));
        let mut me_a = advert(0xaa, 4001);
        me_a.addrs = vec!["[::]:4001".parse().unwrap()];
        let me_b = advert(0xbb, 4002);
        a.advertise(me_a.clone()).await.unwrap();
        b.advertise(me_b).await.unwrap();
        let want_ll = SocketAddr::V6(SocketAddrV6::new("fe80::a".parse().unwrap(), 4001, 0, v1));
        let want_v4: SocketAddr = "10.99.0.1:4001".parse().unwrap();
        // Addresses may arrive one by one: wait until both are known.
        let ev = wait_for(
            &b,
            PeerId([0xbb; 32]),
            "b to see a's IPv4 and link-local addresses",
            |e| matches!(e, DiscoveryEvent::Up(p) if p.id == me_a.id && p.addrs.contains(&want_ll) && p.addrs.contains(&want_v4)),
        )
        .await;
        let DiscoveryEvent::Up(p) = ev else { unreachable!() };
        for addr in &p.addrs {
            if let SocketAddr::V6(v6) = addr {
                assert!(!v6.ip().is_unicast_link_local() || v6.scope_id() == v1, "link-local address without v1's scope: {addr}");
            }
        }
        a.shutdown().await;
        b.shutdown().await;
    });
}
