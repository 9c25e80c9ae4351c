//! Two discovery instances on one host see each other, come and go.
//!
//! mDNS multicasts on every selected interface, and this machine's only
//! network besides loopback must not receive test traffic. So the test
//! re-runs itself inside a private network namespace (`unshare -n`, which
//! needs root or user namespaces) where loopback is the only interface, and
//! restricts both instances to it. Where no namespace can be made, the test
//! reports that it was skipped and passes.

use lanspread_mdns::{MdnsConfig, MdnsDiscovery};
use lanspread_ports::{Discovery, DiscoveryEvent, PeerAdvert, PeerId};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const INSIDE: &str = "LANSPREAD_MDNS_TEST_IN_NETNS";

/// Runs `name` (this very test) again in a private network namespace.
/// Returns `true` when the caller is already inside and must do the work.
fn inside_private_netns(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status();
        assert!(matches!(up, Ok(s) if s.success()), "cannot bring loopback up: {up:?}");
        // Loopback has no MULTICAST flag by default.
        let mc = Command::new("ip").args(["link", "set", "lo", "multicast", "on"]).status();
        assert!(matches!(mc, Ok(s) if s.success()), "cannot enable multicast on loopback: {mc:?}");
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED {name}: cannot run `unshare`: {e}");
            return false;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("unshare failed") {
        eprintln!("SKIPPED {name}: no private network namespace here: {}", stderr.trim());
        return false;
    }
    assert!(out.status.success(), "{name} failed in its network namespace:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{name} did not run in its network namespace:\n{stdout}\n{stderr}");
    false
}

fn advert(b: u8, port: u16) -> PeerAdvert {
    PeerAdvert {
        id: PeerId([b; 32]),
        addrs: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        protocol_version: 7,
        meta: BTreeMap::from([("name".to_owned(), format!("peer {b}"))]),
    }
}

fn instance() -> Arc<MdnsDiscovery> {
    MdnsDiscovery::new(MdnsConfig { interfaces: vec!["lo".into()], ..MdnsConfig::default() }).unwrap()
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
    if !inside_private_netns("two_instances_see_each_other_on_loopback") {
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
