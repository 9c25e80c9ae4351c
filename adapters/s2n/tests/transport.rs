//! Port-contract tests of the s2n adapter on loopback.

#[path = "../../tls/tests-common/transport_suite.rs"]
mod transport_suite;

#[path = "../../tls/tests-common/netns.rs"]
mod netns;

use lanspread_ports::Transport;
use lanspread_s2n::S2nTransport;
use lanspread_tls::{Identity, TransportLimits};
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;

fn endpoint() -> Arc<dyn Transport> {
    endpoint_with(TransportLimits::default())
}

fn endpoint_with(limits: TransportLimits) -> Arc<dyn Transport> {
    endpoint_at("127.0.0.1:0".parse().expect("addr"), limits)
}

fn endpoint_at(addr: SocketAddr, limits: TransportLimits) -> Arc<dyn Transport> {
    let id = Identity::generate().expect("identity");
    S2nTransport::listen(addr, &id, limits).expect("listen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_8mib_both_directions() {
    transport_suite::echo_both_directions(endpoint(), endpoint(), "s2n->s2n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_reads_and_concurrent_streams() {
    transport_suite::small_reads_and_concurrent_streams(endpoint(), endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_mismatch() {
    transport_suite::identity_mismatch(endpoint(), endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_matches() {
    transport_suite::exporter_matches(endpoint(), endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_none_after_shutdown() {
    transport_suite::accept_none_after_shutdown(endpoint(), endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_drop_and_stop() {
    transport_suite::reset_drop_and_stop(endpoint(), endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_idle_connection() {
    let limits = transport_suite::short_idle_limits;
    transport_suite::keep_alive_holds_idle_connection(endpoint_with(limits()), endpoint_with(limits())).await;
}

fn dual_stack() -> Arc<dyn Transport> {
    endpoint_at(transport_suite::dual_stack_any(), TransportLimits::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_accepts_v4_and_v6() {
    transport_suite::dual_stack_accepts_v4_and_v6(dual_stack(), dual_stack()).await;
}

/// s2n-quic's addresses carry no scope id: a dual-stack endpoint refuses a
/// dial to an IPv6 link-local address at once (so an address race moves on
/// without waiting), in a private network namespace with a veth pair.
#[test]
fn refuses_link_local_at_once() {
    if !netns::inside_private_netns("refuses_link_local_at_once", netns::VETH_PAIR) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (a, b) = (dual_stack(), dual_stack());
        let target = SocketAddr::V6(SocketAddrV6::new("fe80::b".parse().unwrap(), b.local_addr().port(), 0, netns::ifindex("v0")));
        let started = std::time::Instant::now();
        let r = a.connect(target, Some(b.local_id())).await;
        assert!(matches!(r, Err(lanspread_ports::TransportError::Connect { .. })), "{:?}", r.map(|c| c.remote_addr()));
        // Refused by the endpoint itself, not after a handshake timeout (seconds).
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        // The same endpoints still talk over IPv4 on that link.
        let v4: SocketAddr = format!("10.99.0.2:{}", b.local_addr().port()).parse().unwrap();
        transport_suite::dial_and_echo(&a, &b, v4).await;
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// Manual benchmark: `cargo test -p lanspread-s2n --release -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_one_way_256mib() {
    transport_suite::one_way_throughput(endpoint(), endpoint(), 256 << 20, "s2n->s2n").await;
}

/// An endpoint bound to a link-local address (its socket tied to that
/// interface) does reach link-local peers on the link.
#[test]
fn bound_to_link_local_reaches_link_local() {
    if !netns::inside_private_netns("bound_to_link_local_reaches_link_local", netns::VETH_PAIR) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let on = |ip: &str, dev: &str| SocketAddr::V6(SocketAddrV6::new(ip.parse().unwrap(), 0, 0, netns::ifindex(dev)));
        let a = endpoint_at(on("fe80::a", "v0"), TransportLimits::default());
        let b = endpoint_at(on("fe80::b", "v1"), TransportLimits::default());
        let mut target = on("fe80::b", "v0");
        target.set_port(b.local_addr().port());
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), transport_suite::dial_and_echo(&a, &b, target)).await;
        assert!(r.is_ok(), "timed out");
        a.shutdown().await;
        b.shutdown().await;
    });
}
