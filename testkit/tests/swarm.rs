//! Swarming in simulation: downloaders of one version serve each other the
//! units they verified, so a seeder's uplink is not split N ways.
//! Asserted on (deterministic) virtual time only.

use lanspread::{PeerCommand, PeerEvent};
use lanspread_core::game::GameId;
use lanspread_memfs::MemFs;
use lanspread_testkit::game::catalog_of;
use lanspread_testkit::swarm::{self, SwarmRun, SwarmSetup};
use lanspread_testkit::{ms, HostConfig, Sim, SimGame};
use std::time::Duration;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

/// One seeder and `n` downloaders on equal links of `rate` bytes/s (1 ms
/// one way), the downloaders all told to download at the same instant.
fn run_swarm(name: &str, seed: u64, n: usize, rate: f64, size: u64) -> SwarmRun {
    swarm::run(name, seed, &SwarmSetup { downloaders: n, rate, latency: ms(1), size, faults: None })
}

#[test]
fn downloaders_trade_units_so_four_take_half_the_time_of_a_split_uplink() {
    let (rate, size) = (20.0 * MB, 16 * MIB);
    let lone = run_swarm("swarm_lone", 3, 1, rate, size).last();
    let four = run_swarm("swarm_four", 3, 4, rate, size);
    let ratio = four.last() / lone;
    println!("lone {lone:.3} s, last of 4 {:.3} s, ratio {ratio:.2}, traded {} bytes", four.last(), four.traded());
    for (d, f) in &four.finishes {
        println!("  {d}: {:.3} s from {:?}", f.secs, f.from);
    }
    let seeded = four.seeded();
    assert!(four.traded() > 2 * size, "the downloaders served each other: {four:?}");
    assert!(seeded < 2 * size, "the seeder sends each unit about once, not once per downloader: {seeded}");
    // Without swarming the seeder's uplink is split four ways (about 4x).
    assert!(ratio <= 2.0, "{ratio:.2}");
}

/// The figures of BENCHMARKS.md: `cargo xtask sim --swarm` (or this test
/// with `--ignored`) prints, for each N in `LANSPREAD_SWARM_N` (default
/// 1,4,16,64) and each link rate in `LANSPREAD_SWARM_MBPS` (MB/s, default
/// 125,20), the time of the last of N downloaders against a lone one and
/// against the broadcast lower bound.
#[test]
#[ignore]
fn swarm_table() {
    let list = |var: &str, default: &str| -> Vec<f64> {
        std::env::var(var).unwrap_or_else(|_| default.into()).split(',').map(|s| s.trim().parse().expect(var)).collect()
    };
    let size = 16 * MIB;
    for mbps in list("LANSPREAD_SWARM_MBPS", "125,20") {
        let rate = mbps * MB;
        let lone = run_swarm("swarm_table_lone", 1, 1, rate, size).last();
        for n in list("LANSPREAD_SWARM_N", "1,4,16,64") {
            let run = run_swarm("swarm_table", 1, n as usize, rate, size);
            let bound = size as f64 / rate;
            println!(
                "N={n:>4} link={mbps:>5} MB/s  last={:.3} s  lone={lone:.3} s  ratio={:.2}  bound={bound:.3} s  last/bound={:.2}  wall={:.1} s",
                run.last(),
                run.last() / lone,
                run.last() / bound,
                run.wall
            );
            if std::env::var("LANSPREAD_SWARM_DETAIL").is_ok() {
                let mut secs: Vec<f64> = run.finishes.values().map(|f| f.secs).collect();
                secs.sort_by(f64::total_cmp);
                let seeded = run.seeded();
                println!(
                    "   first {:.3} median {:.3}; the seeder sent {:.2}x the game",
                    secs[0],
                    secs[secs.len() / 2],
                    seeded as f64 / size as f64
                );
            }
        }
    }
}

/// Seconds one downloader takes from one seeder when `cap` adjusts their
/// configs (both on 20 MB/s links).
fn capped_download(name: &str, size: u64, cap: impl Fn(&str, &mut lanspread::PeerConfig)) -> f64 {
    let mut secs = 0.0;
    let out = &mut secs;
    Sim::run(name, 5, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", size);
        let cat = catalog_of(&[&game]);
        let link = HostConfig::symmetric(20.0 * MB, ms(1));
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        for (name, fs) in [("seed", fs), ("d", MemFs::unrecorded())] {
            let h = sim.host(name, link);
            let mut config = Sim::config(cat.clone());
            cap(name, &mut config);
            sim.spawn(name, h, fs, config);
        }
        let id = gid("arena");
        swarm::wait_until_held(&sim, "d", &id).await;
        let start = sim.now();
        sim.send("d", PeerCommand::download(id.clone()));
        let (at, ev) = sim.wait_for("d", Duration::from_secs(600), |e| matches!(e, PeerEvent::DownloadFinished { .. })).await;
        assert!(matches!(ev, PeerEvent::DownloadFinished { .. }));
        *out = (at - start).as_secs_f64();
        sim
    });
    secs
}

#[test]
fn upload_and_download_caps_hold_on_virtual_time() {
    let size = 8 * MIB;
    let free = capped_download("caps_free", size, |_, _| {});
    let up = capped_download("caps_upload", size, |name, c| c.max_upload = (name == "seed").then_some(2_000_000));
    let down = capped_download("caps_download", size, |name, c| c.max_download = (name == "d").then_some(4_000_000));
    println!("free {free:.2} s, seeder capped at 2 MB/s {up:.2} s, downloader capped at 4 MB/s {down:.2} s");
    let at = |rate: f64| size as f64 / rate;
    assert!(free < at(20.0 * MB) * 1.2, "{free}");
    // A burst of one piece passes at once; the rest keeps to the cap.
    assert!(up > at(2e6) * 0.85 && up < at(2e6) * 1.15, "{up}");
    assert!(down > at(4e6) * 0.85 && down < at(4e6) * 1.15, "{down}");
}
