//! Interop of the two QUIC transport adapters: s2n-quic dials quinn and
//! quinn dials s2n-quic (same ALPN, rustls on both sides, same exporter).
// s2n-quic builds on Unix only.
#![cfg(unix)]

#[path = "../../../adapters/tls/tests-common/transport_suite.rs"]
mod transport_suite;

use lanspread_ports::Transport;
use lanspread_quinn::QuinnTransport;
use lanspread_s2n::S2nTransport;
use lanspread_tls::{Identity, TransportLimits};
use std::net::SocketAddr;
use std::sync::Arc;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn s2n() -> Arc<dyn Transport> {
    s2n_with(TransportLimits::default())
}

fn quinn() -> Arc<dyn Transport> {
    quinn_with(TransportLimits::default())
}

fn s2n_with(limits: TransportLimits) -> Arc<dyn Transport> {
    let id = Identity::generate().expect("identity");
    S2nTransport::listen(loopback(), &id, limits).expect("s2n listen")
}

fn quinn_with(limits: TransportLimits) -> Arc<dyn Transport> {
    let id = Identity::generate().expect("identity");
    QuinnTransport::listen(loopback(), &id, limits).expect("quinn listen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2n_to_quinn_echo_8mib() {
    transport_suite::echo_both_directions(s2n(), quinn(), "s2n->quinn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_to_s2n_echo_8mib() {
    transport_suite::echo_both_directions(quinn(), s2n(), "quinn->s2n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2n_to_quinn_small_reads_and_concurrent_streams() {
    transport_suite::small_reads_and_concurrent_streams(s2n(), quinn()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_to_s2n_small_reads_and_concurrent_streams() {
    transport_suite::small_reads_and_concurrent_streams(quinn(), s2n()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2n_to_quinn_identity_mismatch() {
    transport_suite::identity_mismatch(s2n(), quinn()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_to_s2n_identity_mismatch() {
    transport_suite::identity_mismatch(quinn(), s2n()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2n_to_quinn_exporter_matches() {
    transport_suite::exporter_matches(s2n(), quinn()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_to_s2n_exporter_matches() {
    transport_suite::exporter_matches(quinn(), s2n()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_across_stacks() {
    transport_suite::accept_none_after_shutdown(s2n(), quinn()).await;
    transport_suite::accept_none_after_shutdown(quinn(), s2n()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2n_to_quinn_reset_drop_and_stop() {
    transport_suite::reset_drop_and_stop(s2n(), quinn()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_to_s2n_reset_drop_and_stop() {
    transport_suite::reset_drop_and_stop(quinn(), s2n()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_across_stacks() {
    let limits = transport_suite::short_idle_limits;
    let (a, b) = (s2n_with(limits()), quinn_with(limits()));
    let (c, d) = (quinn_with(limits()), s2n_with(limits()));
    tokio::join!(transport_suite::keep_alive_holds_idle_connection(a, b), transport_suite::keep_alive_holds_idle_connection(c, d));
}

/// Manual benchmark:
/// `cargo test -p lanspread --test transport_interop -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_one_way_256mib() {
    transport_suite::one_way_throughput(s2n(), quinn(), 256 << 20, "s2n->quinn").await;
    transport_suite::one_way_throughput(quinn(), s2n(), 256 << 20, "quinn->s2n").await;
}
