//! What a LAN of many peers costs each peer when nothing is downloading:
//! library news travels in discovery adverts, liveness probes a bounded
//! number of peers per tick, and unused connections are closed, so no peer
//! holds a connection to every other (the full mesh of earlier versions).

use lanspread::{PeerCommand, PeerEvent};
use lanspread_core::game::GameId;
use lanspread_memfs::MemFs;
use lanspread_testkit::game::catalog_of;
use lanspread_testkit::{HostConfig, Sim, SimGame};
use std::time::Duration;

/// Peers on the LAN, the seeder included.
const PEERS: usize = 80;

/// Unused connections a peer keeps (the pool's `IDLE_KEPT`).
const IDLE_KEPT: usize = 32;

/// Waits until every peer in `names` lists `holders` holders of `id`'s latest version.
async fn wait_for_holders(sim: &mut Sim, names: &[String], id: &GameId, holders: usize) {
    for name in names {
        sim.wait_for(name, Duration::from_secs(60), |e| match e {
            PeerEvent::LibrarySnapshot { games, .. } => games.iter().any(|g| g.id == *id && g.peers_with_latest.len() == holders),
            _ => false,
        })
        .await;
    }
}

#[test]
fn a_lan_of_eighty_holds_a_bounded_set_of_connections_and_still_hears_library_news() {
    Sim::run("mesh", 11, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 2 << 20);
        let cat = catalog_of(&[&game]);
        let id = GameId::new("arena").expect("valid id");
        let link = HostConfig::symmetric(125e6, Duration::from_micros(250));
        let seeder = sim.host("s", link);
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        sim.spawn("s", seeder, fs, Sim::config(cat.clone()));
        let names: Vec<String> = (1..PEERS).map(|i| format!("p{i:02}")).collect();
        let mut hosts = vec![seeder];
        for name in &names {
            let h = sim.host(name, link);
            hosts.push(h);
            sim.spawn(name, h, MemFs::unrecorded(), Sim::config(cat.clone()));
        }
        wait_for_holders(&mut sim, &names, &id, 1).await;

        // A minute of an idle LAN: every peer probed several times over.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let dialed: Vec<usize> = hosts.iter().map(|h| sim.net.connections_dialed_by(*h)).collect();
        let most = dialed.iter().copied().max().unwrap_or(0);
        println!("mesh: {PEERS} peers; connections dialed per peer after a minute: most {most}, total {}", dialed.iter().sum::<usize>());
        assert!(most <= IDLE_KEPT, "a peer keeps at most {IDLE_KEPT} unused connections: {dialed:?}");
        for name in &names {
            assert_eq!(sim.peer_count(name), Some(PEERS - 1), "{name} lost a peer to liveness");
        }

        // One peer downloads the game: every other hears of its new copy
        // from its advert, not from a ping.
        sim.send("p01", PeerCommand::download(id.clone()));
        sim.wait_for("p01", Duration::from_secs(60), |e| matches!(e, PeerEvent::DownloadFinished { .. })).await;
        let others: Vec<String> = names.iter().filter(|n| *n != "p01").cloned().collect();
        let t0 = sim.now();
        wait_for_holders(&mut sim, &others, &id, 2).await;
        let took = sim.now() - t0;
        println!("mesh: the new copy was known LAN-wide after {took:?} (simulated)");
        assert!(took < Duration::from_secs(5), "library news waited for a ping: {took:?}");
        sim
    });
}
