//! How the simulator and the swarm scale: one seeder and N downloaders of
//! one game, all starting together, on equal links.
//!
//! `swarm_scale` is ignored by default (it is a measurement, not a check):
//!
//! ```text
//! LANSPREAD_SCALE_N=200 LANSPREAD_SCALE_MBPS=125 LANSPREAD_SCALE_MIB=4 \
//!     cargo test --release -p lanspread-testkit --test scale -- --ignored --nocapture swarm_scale
//! ```
//!
//! It prints one line per run: N, the link rate, the simulated time of the
//! last downloader, the same for a lone downloader (a fresh simulation with
//! N = 1), their ratio, the broadcast lower bound, the wall time and the
//! peak RSS (`VmHWM`). `LANSPREAD_SCALE_FAULTS=1` turns on the default
//! [`LinkFaults`]. Nothing here asserts on wall-clock time; the small
//! swarms keep the harness covered in CI.
//!
//! N up to about 1000: peers no longer connect to every other peer (see
//! `mesh.rs`), but every downloader holds a connection to the one seeder,
//! which serves at most 1024 (`MAX_CONNECTIONS` in the runtime's server).

use lanspread_core::units::UNIT_TARGET;
use lanspread_testkit::net::LinkFaults;
use lanspread_testkit::swarm::{self, SwarmRun, SwarmSetup};
use std::time::Duration;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// One seeder and `n` downloaders of a `size`-byte game, every host on a
/// symmetric `rate` bytes/s link (250 µs one way).
fn swarm(name: &str, seed: u64, n: usize, rate: f64, size: u64, faults: Option<LinkFaults>) -> SwarmRun {
    swarm::run(name, seed, &SwarmSetup { downloaders: n, rate, latency: Duration::from_micros(250), size, faults })
}

/// Peak resident set size of this process in MiB (`VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (LANSPREAD_SCALE_N, _MBPS, _MIB, _FAULTS)"]
fn swarm_scale() {
    let n: usize = env_or("LANSPREAD_SCALE_N", 16);
    let mbps: f64 = env_or("LANSPREAD_SCALE_MBPS", 125.0);
    let mib: u64 = env_or("LANSPREAD_SCALE_MIB", 16);
    let faults = (env_or("LANSPREAD_SCALE_FAULTS", 0) != 0).then(LinkFaults::default);
    let (rate, size) = (mbps * MB, mib * MIB);
    let lone = swarm("swarm_scale_lone", 1, 1, rate, size, faults.clone());
    let many = swarm("swarm_scale", 1, n, rate, size, faults.clone());
    // The seeder uploads every byte at least once (size / rate); the last
    // unit it sends reaches one downloader, which must forward it once more
    // (one unit time, unit / rate, with the 1 MiB request unit).
    let bound = size as f64 / rate + UNIT_TARGET as f64 / rate;
    let rss = peak_rss_mib().map_or_else(|| "?".to_owned(), |m| format!("{m:.0} MiB"));
    println!(
        "swarm_scale: N={n} link={mbps} MB/s game={mib} MiB faults={} last={:.3} s lone={:.3} s ratio={:.2} \
         bound=size/rate+unit/rate (unit {} MiB)={bound:.3} s last/bound={:.2} wall={:.1} s (lone {:.1} s) peak_rss={rss}",
        if faults.is_some() { "on" } else { "off" },
        many.last(),
        lone.last(),
        many.last() / lone.last(),
        UNIT_TARGET / MIB,
        many.last() / bound,
        many.wall,
        lone.wall,
    );
}

#[test]
fn small_swarm_finishes() {
    // `swarm` asserts that every downloader finishes.
    let run = swarm("small_swarm_finishes", 5, 4, 125.0 * MB, 4 * MIB, None);
    assert!(run.last() > 0.0);
}

#[test]
fn small_swarm_finishes_over_faulty_links() {
    let faults = LinkFaults { loss: 0.02, ..LinkFaults::default() };
    let clean = swarm("small_swarm_finishes_over_faulty_links", 6, 4, 125.0 * MB, 4 * MIB, None);
    let faulty = swarm("small_swarm_finishes_over_faulty_links", 6, 4, 125.0 * MB, 4 * MIB, Some(faults));
    assert!(faulty.last() > clean.last(), "faults cost time: {:.3} s vs {:.3} s", faulty.last(), clean.last());
}
