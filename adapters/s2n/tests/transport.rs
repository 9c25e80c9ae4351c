//! Port-contract tests of the s2n adapter on loopback.

#[path = "../../tls/tests-common/transport_suite.rs"]
mod transport_suite;

use lanspread_ports::Transport;
use lanspread_s2n::S2nTransport;
use lanspread_tls::{Identity, TransportLimits};
use std::sync::Arc;

fn endpoint() -> Arc<dyn Transport> {
    endpoint_with(TransportLimits::default())
}

fn endpoint_with(limits: TransportLimits) -> Arc<dyn Transport> {
    let id = Identity::generate().expect("identity");
    let addr = "127.0.0.1:0".parse().expect("addr");
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

/// Manual benchmark: `cargo test -p lanspread-s2n --release -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_one_way_256mib() {
    transport_suite::one_way_throughput(endpoint(), endpoint(), 256 << 20, "s2n->s2n").await;
}
