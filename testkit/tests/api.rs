//! The typed `Peer` API in simulation: the same builder and handle an app
//! uses, on virtual time.

use lanspread::{DownloadError, DownloadOptions, ErrorCode, HasCode, InstallError, OperationKind, RelPath};
use lanspread_core::game::GameId;
use lanspread_memfs::MemFs;
use lanspread_testkit::game::catalog_of;
use lanspread_testkit::{ms, HostConfig, Sim, SimGame};
use std::collections::BTreeSet;
use std::time::Duration;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

/// Waits until `peer` sees a holder of `id`'s latest version `version`.
async fn wait_for_version(sim: &Sim, peer: &str, id: &GameId, version: &str) {
    let handle = sim.peer(peer).handle().expect("running");
    let mut library = handle.library();
    let seen = |s: &std::sync::Arc<lanspread::Snapshot>| {
        s.games.iter().any(|g| &g.id == id && g.latest_remote.as_ref().is_some_and(|v| v.as_str() == version))
    };
    tokio::time::timeout(Duration::from_secs(30), library.wait_for(seen)).await.expect("holder seen").expect("peer runs");
}

#[test]
fn an_update_through_the_typed_api_reports_progress_and_settles_before_it_returns() {
    Sim::run("typed_update", 31, |mut sim| async move {
        let old = SimGame::new("arena", "1.0", 4 * MIB);
        let new = SimGame::new("arena", "2.0", 16 * MIB);
        let cat = catalog_of(&[&new]);
        let seeder_fs = MemFs::unrecorded();
        new.write(&seeder_fs, &sim.rng);
        let hs = sim.host("s", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("s", hs, seeder_fs, Sim::config(cat.clone()));
        let fs = MemFs::unrecorded();
        old.write(&fs, &sim.rng);
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, fs.clone(), Sim::config(cat));
        let id = gid("arena");
        let d = sim.peer("d").handle().unwrap();
        // A first install of the old version, awaited as an app would.
        let first = d.install(&id, false).await.expect("starts").await.expect("installs");
        assert!(!first.update);
        wait_for_version(&sim, "d", &id, "2.0").await;

        let update = d.update(&id, false).await.expect("the update starts");
        let mut progress = update.progress();
        let watcher = tokio::spawn(async move {
            let mut seen = Vec::new();
            while progress.changed().await.is_ok() {
                seen.push(progress.borrow_and_update().clone());
            }
            seen
        });
        let report = update.await.expect("the update succeeds");
        assert_eq!(report.download.version.as_str(), "2.0");
        assert!(report.download.complete);
        assert!(report.install.update, "local/ was updated, not installed afresh");
        // The state was settled before the result was handed out.
        let snap = d.snapshot();
        let row = snap.games.iter().find(|g| g.id == id).unwrap();
        assert_eq!(row.local_version.as_ref().map(|v| v.as_str()), Some("2.0"));
        assert!(row.installed && snap.operations.is_empty(), "{snap:?}");
        assert_eq!(fs.read("arena/version.ini").as_deref(), Some(&b"2.0\n"[..]));
        let seen = watcher.await.unwrap();
        let downloads: Vec<_> =
            seen.iter().filter(|p| p.total == Some(report.download.stats.bytes + report.download.stats.reused)).collect();
        assert!(!downloads.is_empty(), "download progress was reported: {seen:?}");
        assert!(downloads.iter().any(|p| !p.peers.is_empty() && p.rate > 0.0), "with rates and shares: {downloads:?}");
        sim
    });
}

#[test]
fn a_partial_selection_is_never_committed_and_a_full_download_completes_it() {
    Sim::run("partial_selection", 32, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 8 * MIB);
        let cat = catalog_of(&[&game]);
        let seeder_fs = MemFs::unrecorded();
        game.write(&seeder_fs, &sim.rng);
        let hs = sim.host("s", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("s", hs, seeder_fs.clone(), Sim::config(cat.clone()));
        let fs = MemFs::unrecorded();
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, fs.clone(), Sim::config(cat.clone()));
        let he = sim.host("e", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("e", he, MemFs::unrecorded(), Sim::config(cat));
        let id = gid("arena");
        wait_for_version(&sim, "d", &id, "1.0").await;
        let d = sim.peer("d").handle().unwrap();

        let files = BTreeSet::from([RelPath::new("data/maps/arena.map").unwrap()]);
        let op = d.download(&id, DownloadOptions { files: Some(files), ..DownloadOptions::default() }).await.expect("starts");
        let report = op.await.expect("the selected file arrives");
        assert!(!report.complete);
        // The selected file's unit may carry other small files (units pack
        // whole chunks), never the 8 MiB archive.
        assert!((70_000..MIB).contains(&report.stats.bytes), "only the selected file's unit was fetched: {:?}", report.stats);
        assert_eq!(fs.read("arena/data/maps/arena.map"), seeder_fs.read("arena/data/maps/arena.map"));
        assert!(!fs.exists("arena/version.ini"), "version.ini is never committed for a partial selection");
        let snap = d.snapshot();
        assert!(snap.partial.contains(&id), "{snap:?}");
        assert_eq!(snap.games.iter().find(|g| g.id == id).unwrap().local_version, None);
        let refused = d.install(&id, false).await.err().expect("a partial game is not installable");
        assert_eq!(refused, InstallError::NotDownloaded(id.clone()));
        // Nobody else sees d as a holder.
        sim.sleep(Duration::from_secs(12)).await;
        let e = sim.peer("e").handle().unwrap();
        let holders = e.snapshot().games.iter().find(|g| g.id == id).map(|g| g.peers_with_latest.clone()).unwrap_or_default();
        assert_eq!(holders, vec![sim.peer("s").id], "a partial game is never advertised");

        // A full download completes it.
        let full = d.download(&id, DownloadOptions::default()).await.expect("starts").await.expect("completes");
        assert!(full.complete);
        assert_eq!(fs.read("arena/version.ini").as_deref(), Some(&b"1.0\n"[..]));
        for file in ["arena/arena.simpack", "arena/data/maps/arena.map", "arena/data/readme.txt"] {
            assert_eq!(fs.read(file), seeder_fs.read(file), "{file}");
        }
        assert!(!d.snapshot().partial.contains(&id));
        sim
    });
}

#[test]
fn refusals_are_typed_and_busy_games_say_what_runs() {
    Sim::run("typed_refusals", 33, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 32 * MIB);
        let cat = catalog_of(&[&game]);
        let seeder_fs = MemFs::unrecorded();
        game.write(&seeder_fs, &sim.rng);
        let hs = sim.host("s", HostConfig::symmetric(10.0 * MB, ms(1)));
        sim.spawn("s", hs, seeder_fs, Sim::config(cat.clone()));
        let hd = sim.host("d", HostConfig::symmetric(10.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        let id = gid("arena");
        let d = sim.peer("d").handle().unwrap();
        let unknown = d.download(&gid("nothere"), DownloadOptions::default()).await.err().unwrap();
        assert_eq!(unknown.code(), ErrorCode::NotInCatalog);
        wait_for_version(&sim, "d", &id, "1.0").await;
        let running = d.download(&id, DownloadOptions::default()).await.expect("starts");
        let again = d.download(&id, DownloadOptions::default()).await.err().unwrap();
        assert!(matches!(again, DownloadError::Busy { running: OperationKind::Resolving | OperationKind::Downloading, .. }), "{again:?}");
        assert_eq!(again.code(), ErrorCode::Busy);
        sim.sleep(ms(500)).await;
        assert!(d.cancel(&id).await, "a running download can be cancelled");
        assert_eq!(running.await.err(), Some(DownloadError::Cancelled));
        assert!(d.snapshot().operations.is_empty());
        sim
    });
}
