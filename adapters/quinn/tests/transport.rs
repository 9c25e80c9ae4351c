//! Port-contract tests of the quinn adapter on loopback.

#[path = "../../tls/tests-common/transport_suite.rs"]
mod transport_suite;

#[cfg(target_os = "linux")]
#[path = "../../tls/tests-common/netns.rs"]
mod netns;

use lanspread_ports::Transport;
use lanspread_quinn::QuinnTransport;
use lanspread_tls::{Identity, TransportLimits};
use std::net::SocketAddr;
use std::sync::Arc;

fn endpoint() -> Arc<dyn Transport> {
    endpoint_with(TransportLimits::default())
}

fn endpoint_with(limits: TransportLimits) -> Arc<dyn Transport> {
    endpoint_at("127.0.0.1:0".parse().expect("addr"), limits)
}

fn endpoint_at(addr: SocketAddr, limits: TransportLimits) -> Arc<dyn Transport> {
    let id = Identity::generate().expect("identity");
    QuinnTransport::listen(addr, &id, limits).expect("listen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_8mib_both_directions() {
    transport_suite::echo_both_directions(endpoint(), endpoint(), "quinn->quinn").await;
}

/// An endpoint on plain datagrams (what a UDP stack without ECN, such as
/// Wine's, gets) talks to one on quinn-udp, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_datagrams_interoperate_with_quinn_udp() {
    let id = Identity::generate().expect("identity");
    let plain = QuinnTransport::listen_plain("127.0.0.1:0".parse().expect("addr"), &id, TransportLimits::default()).expect("listen");
    transport_suite::echo_both_directions(plain, endpoint(), "plain->quinn").await;
    let id = Identity::generate().expect("identity");
    let plain = QuinnTransport::listen_plain("127.0.0.1:0".parse().expect("addr"), &id, TransportLimits::default()).expect("listen");
    transport_suite::small_reads_and_concurrent_streams(endpoint(), plain).await;
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

/// A dual-stack endpoint dials a peer's IPv6 link-local address with the
/// scope id of the interface (what mDNS hands out), over a veth pair in a
/// private network namespace (Linux).
#[cfg(target_os = "linux")]
#[test]
fn dials_link_local_with_scope_id() {
    if !netns::inside_private_netns("dials_link_local_with_scope_id", netns::VETH_PAIR) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (a, b) = (dual_stack(), dual_stack());
        let target =
            SocketAddr::V6(std::net::SocketAddrV6::new("fe80::b".parse().unwrap(), b.local_addr().port(), 0, netns::ifindex("v0")));
        transport_suite::dial_and_echo(&a, &b, target).await;
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// Manual benchmark: `cargo test -p lanspread-quinn --release -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_one_way_256mib() {
    transport_suite::one_way_throughput(endpoint(), endpoint(), 256 << 20, "quinn->quinn").await;
}
