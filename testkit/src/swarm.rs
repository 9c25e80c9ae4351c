//! The swarm scenario behind the swarming tests and figures: one seeder
//! and N downloaders of one game on equal links, every downloader told to
//! download at the same virtual instant once it sees the seeder's copy.

use crate::game::catalog_of;
use crate::net::{LinkFaults, NetParams};
use crate::{HostConfig, Sim, SimGame};
use lanspread::{PeerCommand, PeerEvent};
use lanspread_core::game::GameId;
use lanspread_memfs::MemFs;
use std::collections::BTreeMap;
use std::time::Duration;

/// The seeder's name in a swarm run (and in [`Finish::from`]).
pub const SEEDER: &str = "seed";

/// A swarm to run.
#[derive(Debug, Clone)]
pub struct SwarmSetup {
    /// Downloaders.
    pub downloaders: usize,
    /// Every host's link rate, both ways, bytes/s.
    pub rate: f64,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Size of the game, bytes.
    pub size: u64,
    /// Seeded jitter, reordering and loss on the links, if any.
    pub faults: Option<LinkFaults>,
}

/// One downloader's result.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Simulated seconds from its command to its commit.
    pub secs: f64,
    /// Bytes each peer sent it, by name.
    pub from: BTreeMap<String, u64>,
}

/// What a swarm run measured.
#[derive(Debug)]
pub struct SwarmRun {
    /// Per downloader, by name.
    pub finishes: BTreeMap<String, Finish>,
    /// Wall-clock seconds of the whole run (setup included).
    pub wall: f64,
}

impl SwarmRun {
    /// Simulated seconds until the last downloader committed.
    pub fn last(&self) -> f64 {
        self.finishes.values().map(|f| f.secs).fold(0.0, f64::max)
    }

    /// Bytes the downloaders got from each other rather than the seeder.
    pub fn traded(&self) -> u64 {
        self.finishes.values().flat_map(|f| f.from.iter()).filter(|(p, _)| p.as_str() != SEEDER).map(|(_, b)| b).sum()
    }

    /// Bytes the seeder sent the downloaders (first copies of units).
    pub fn seeded(&self) -> u64 {
        self.finishes.values().map(|f| f.from.get(SEEDER).copied().unwrap_or(0)).sum()
    }
}

/// Waits until `name` lists at least one holder of `id`'s latest version.
pub async fn wait_until_held(sim: &Sim, name: &str, id: &GameId) {
    sim.wait_for(name, Duration::from_secs(60), |e| match e {
        PeerEvent::LibrarySnapshot { games, .. } => games.iter().any(|g| g.id == *id && !g.peers_with_latest.is_empty()),
        _ => false,
    })
    .await;
}

/// Runs `setup` as simulation `name` from `seed`; panics (with the seed to
/// replay) if a downloader fails.
pub fn run(name: &str, seed: u64, setup: &SwarmSetup) -> SwarmRun {
    let started = std::time::Instant::now();
    let mut finishes = BTreeMap::new();
    let out = &mut finishes;
    Sim::run(name, seed, |mut sim| async move {
        if setup.faults.is_some() {
            sim.set_net_params(NetParams { faults: setup.faults.clone(), ..NetParams::default() });
        }
        let game = SimGame::new("arena", "1.0", setup.size);
        let cat = catalog_of(&[&game]);
        let link = HostConfig::symmetric(setup.rate, setup.latency);
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        let seeder = sim.host(SEEDER, link);
        sim.spawn(SEEDER, seeder, fs, Sim::config(cat.clone()));
        let names: Vec<String> = (0..setup.downloaders).map(|i| format!("d{i:03}")).collect();
        for d in &names {
            let h = sim.host(d, link);
            sim.spawn(d, h, MemFs::unrecorded(), Sim::config(cat.clone()));
        }
        let id = GameId::new("arena").expect("valid id");
        for d in &names {
            wait_until_held(&sim, d, &id).await;
        }
        let start = sim.now();
        for d in &names {
            sim.send(d, PeerCommand::download(id.clone()));
        }
        let ids: BTreeMap<_, _> = std::iter::once(SEEDER.to_owned()).chain(names.iter().cloned()).map(|n| (sim.peer(&n).id, n)).collect();
        for d in &names {
            let (at, ev) = sim
                .wait_for(d, Duration::from_secs(3600), |e| {
                    matches!(e, PeerEvent::DownloadFinished { .. } | PeerEvent::DownloadFailed { .. })
                })
                .await;
            let PeerEvent::DownloadFinished { stats, .. } = ev else { panic!("{d}: {ev:?}") };
            let from = stats.peers.iter().map(|p| (ids.get(&p.peer).cloned().unwrap_or_else(|| p.peer.to_string()), p.bytes)).collect();
            out.insert(d.clone(), Finish { secs: (at - start).as_secs_f64(), from });
        }
        sim
    });
    SwarmRun { finishes, wall: started.elapsed().as_secs_f64() }
}
