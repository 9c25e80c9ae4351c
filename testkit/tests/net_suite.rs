//! The adapters' shared `Transport` contract suite, run on the simulated
//! network (paused time, current-thread runtime).

#[path = "../../adapters/tls/tests-common/transport_suite.rs"]
mod transport_suite;

use lanspread_ports::Transport;
use lanspread_testkit::net::{HostConfig, NetParams, SimNet};
use lanspread_testkit::rng::SimRng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime").block_on(f)
}

/// Two hosts on a gigabit LAN, one transport each, exporter labels as the
/// QUIC adapters register them.
fn two(seed: u64) -> (Arc<dyn Transport>, Arc<dyn Transport>) {
    let rng = SimRng::new(seed);
    let net = SimNet::with_params(
        rng.fork("net"),
        NetParams { exporter_labels: Some(lanspread_tls::TransportLimits::default().exporter_labels), ..NetParams::default() },
    );
    let cfg = HostConfig::symmetric(125e6, Duration::from_micros(200));
    let a = net.add_host("a", cfg);
    let b = net.add_host("b", cfg);
    (net.transport(a, 5000, rng.peer_id()), net.transport(b, 5000, rng.peer_id()))
}

#[test]
fn echo_both_directions() {
    run(async {
        let (a, b) = two(1);
        transport_suite::echo_both_directions(a, b, "simnet").await;
    });
}

#[test]
fn small_reads_and_concurrent_streams() {
    run(async {
        let (a, b) = two(2);
        transport_suite::small_reads_and_concurrent_streams(a, b).await;
    });
}

#[test]
fn identity_mismatch() {
    run(async {
        let (a, b) = two(3);
        transport_suite::identity_mismatch(a, b).await;
    });
}

#[test]
fn exporter_matches() {
    run(async {
        let (a, b) = two(4);
        transport_suite::exporter_matches(a, b).await;
    });
}

#[test]
fn accept_none_after_shutdown() {
    run(async {
        let (a, b) = two(5);
        transport_suite::accept_none_after_shutdown(a, b).await;
    });
}

#[test]
fn one_way_throughput() {
    run(async {
        let (a, b) = two(6);
        transport_suite::one_way_throughput(a, b, 64 << 20, "simnet").await;
    });
}
