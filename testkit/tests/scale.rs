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

use lanspread::{PeerCommand, PeerEvent};
use lanspread_core::game::GameId;
use lanspread_core::units::UNIT_TARGET;
use lanspread_memfs::MemFs;
use lanspread_testkit::game::catalog_of;
use lanspread_testkit::net::{LinkFaults, NetParams};
use lanspread_testkit::{HostConfig, Sim, SimGame};
use std::time::Duration;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// What one run measured.
struct Run {
    /// Simulated seconds from the download commands to the last `DownloadFinished`.
    last: f64,
    /// Wall-clock seconds of the whole run (setup included).
    wall: f64,
}

/// One seeder and `n` downloaders of a `size`-byte game, every host on a
/// symmetric `rate` bytes/s link; every downloader is told to download at
/// the same virtual instant, once it sees the seeder.
fn swarm(name: &str, seed: u64, n: usize, rate: f64, size: u64, faults: Option<LinkFaults>) -> Run {
    let started = std::time::Instant::now();
    let mut last = 0.0;
    let last_ref = &mut last;
    Sim::run(name, seed, |mut sim| async move {
        if faults.is_some() {
            sim.set_net_params(NetParams { faults, ..NetParams::default() });
        }
        let game = SimGame::new("arena", "1.0", size);
        let cat = catalog_of(&[&game]);
        let id = GameId::new("arena").expect("valid id");
        let link = HostConfig::symmetric(rate, Duration::from_micros(250));
        let hs = sim.host("s", link);
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        sim.spawn("s", hs, fs, Sim::config(cat.clone()));
        let names: Vec<String> = (0..n).map(|i| format!("d{i:04}")).collect();
        for name in &names {
            let h = sim.host(name, link);
            sim.spawn(name, h, MemFs::unrecorded(), Sim::config(cat.clone()));
        }
        for name in &names {
            sim.wait_for(name, Duration::from_secs(60), |e| match e {
                PeerEvent::LibrarySnapshot { games, .. } => games.iter().any(|g| g.id == id && !g.peers_with_latest.is_empty()),
                _ => false,
            })
            .await;
        }
        let t0 = sim.now();
        for name in &names {
            sim.send(name, PeerCommand::download(id.clone()));
        }
        let mut end = t0;
        for name in &names {
            let (t, e) = sim
                .wait_for(
                    name,
                    Duration::from_secs(3600),
                    |e| matches!(e, PeerEvent::DownloadFinished { id: i, .. } | PeerEvent::DownloadFailed { id: i, .. } if *i == id),
                )
                .await;
            assert!(matches!(e, PeerEvent::DownloadFinished { .. }), "{name}: {e:?}");
            end = end.max(t);
        }
        *last_ref = (end - t0).as_secs_f64();
        sim
    });
    Run { last, wall: started.elapsed().as_secs_f64() }
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
        many.last,
        lone.last,
        many.last / lone.last,
        UNIT_TARGET / MIB,
        many.last / bound,
        many.wall,
        lone.wall,
    );
}

#[test]
fn small_swarm_finishes() {
    // `swarm` asserts that every downloader finishes.
    let run = swarm("small_swarm_finishes", 5, 4, 125.0 * MB, 4 * MIB, None);
    assert!(run.last > 0.0);
}

#[test]
fn small_swarm_finishes_over_faulty_links() {
    let faults = LinkFaults { loss: 0.02, ..LinkFaults::default() };
    let clean = swarm("small_swarm_finishes_over_faulty_links", 6, 4, 125.0 * MB, 4 * MIB, None);
    let faulty = swarm("small_swarm_finishes_over_faulty_links", 6, 4, 125.0 * MB, 4 * MIB, Some(faults));
    assert!(faulty.last > clean.last, "faults cost time: {:.3} s vs {:.3} s", faulty.last, clean.last);
}
