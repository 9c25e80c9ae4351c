//! Many-peer scenarios in simulation, asserted on (deterministic) virtual time.

use lanspread::{OperationKind, PeerCommand, PeerEvent};
use lanspread_core::game::GameId;
use lanspread_memfs::{CrashModel, MemFs, Node};
use lanspread_testkit::game::{assert_same_download, catalog_of};
use lanspread_testkit::sim::{render, Recorded};
use lanspread_testkit::{ms, HostConfig, Sim, SimGame};
use std::collections::BTreeMap;
use std::time::Duration;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

/// Waits until `peer` sees at least `holders` peers holding `id`.
async fn wait_holders(sim: &Sim, peer: &str, id: &str, holders: usize) {
    let id = gid(id);
    sim.wait_for(peer, Duration::from_secs(30), |e| match e {
        PeerEvent::LibrarySnapshot { games, .. } => games.iter().any(|g| g.id == id && g.peers_with_latest.len() >= holders),
        _ => false,
    })
    .await;
}

fn finished(e: &PeerEvent, id: &GameId) -> bool {
    matches!(e, PeerEvent::DownloadFinished { id: i, .. } if i == id)
}

fn failed(e: &PeerEvent, id: &GameId) -> bool {
    matches!(e, PeerEvent::DownloadFailed { id: i, .. } if i == id)
}

fn installed(e: &PeerEvent, id: &GameId) -> bool {
    matches!(e, PeerEvent::InstallFinished { id: i } if i == id)
}

fn event_time(sim: &Sim, peer: &str, pred: impl Fn(&PeerEvent) -> bool) -> Option<Duration> {
    sim.events(peer).into_iter().find(|(_, e)| pred(e)).map(|(t, _)| t)
}

/// Seeders with `rates` (bytes/s up), one downloader at `down` bytes/s;
/// returns the download time (DownloadBegin → DownloadFinished) and the
/// per-peer shares.
fn swarm(name: &str, seed: u64, rates: &[f64], down: f64, size: u64) -> (f64, Vec<u64>) {
    let mut out = (0.0, vec![]);
    let out_ref = &mut out;
    Sim::run(name, seed, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", size);
        let cat = catalog_of(&[&game]);
        let mut seeders = vec![];
        for (i, r) in rates.iter().enumerate() {
            let h = sim.host(&format!("s{i}"), HostConfig { up_bytes_per_sec: *r, down_bytes_per_sec: *r, latency: ms(1) });
            let fs = MemFs::unrecorded();
            game.write(&fs, &sim.rng);
            sim.spawn(&format!("s{i}"), h, fs, Sim::config(cat.clone()));
            seeders.push(format!("s{i}"));
        }
        let hd = sim.host("d", HostConfig { up_bytes_per_sec: down, down_bytes_per_sec: down, latency: ms(1) });
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat.clone()));
        wait_holders(&sim, "d", "arena", rates.len()).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_for("d", Duration::from_secs(3600), |e| installed(e, &id) || failed(e, &id)).await;
        let begin = event_time(&sim, "d", |e| matches!(e, PeerEvent::DownloadBegin { .. })).expect("began");
        let (end, ev) = sim.wait_for("d", ms(1), |e| finished(e, &id)).await;
        let PeerEvent::DownloadFinished { stats, .. } = ev else { unreachable!() };
        assert_same_download(&sim.peer("s0").fs, &sim.peer("d").fs, "arena", "the downloader");
        let shares = seeders.iter().map(|s| stats.peers.iter().find(|p| p.peer == sim.peer(s).id).map_or(0, |p| p.bytes)).collect();
        *out_ref = ((end - begin).as_secs_f64(), shares);
        sim
    });
    out
}

fn total_bytes(size: u64) -> f64 {
    // The archive (+ its small header), the loose extra files and version.ini.
    (size + 70_000 + 300 + 4 + 64) as f64
}

#[test]
fn one_seeder_one_downloader_byte_identical_and_installed() {
    Sim::run("one_seeder_one_downloader_byte_identical_and_installed", 1, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 24 * MIB + 12345);
        let cat = catalog_of(&[&game]);
        let hs = sim.host("s", HostConfig::symmetric(40.0 * MB, ms(2)));
        let hd = sim.host("d", HostConfig::symmetric(40.0 * MB, ms(2)));
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        sim.spawn("s", hs, fs, Sim::config(cat.clone()));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        wait_holders(&sim, "d", "arena", 1).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::GetGame(id.clone()));
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::GotGameFiles { .. })).await;
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_for("d", Duration::from_secs(60), |e| installed(e, &id)).await;
        assert_same_download(&sim.peer("s").fs, &sim.peer("d").fs, "arena", "the downloader");
        let dfs = &sim.peer("d").fs;
        assert_eq!(dfs.read("arena/local/game.exe").map(|v| v.len()), Some(4096));
        assert!(dfs.exists("arena/local/assets/sounds/intro.ogg"));
        assert!(!dfs.exists("arena/.lanspread.json"), "intent cleared");
        assert!(!dfs.exists("arena/.local.installing"));
        sim
    });
}

#[test]
fn five_equal_seeders_reach_the_ideal() {
    let size = 200 * MIB;
    let rates = [10.0 * MB; 5];
    let (secs, shares) = swarm("five_equal_seeders_reach_the_ideal", 2, &rates, 100.0 * MB, size);
    let ideal = total_bytes(size) / rates.iter().sum::<f64>() + 0.004;
    eprintln!("5 equal seeders: {secs:.3} s, ideal {ideal:.3} s ({:.3}x); shares {shares:?}", secs / ideal);
    assert!(secs <= 1.10 * ideal, "{secs:.3} s vs ideal {ideal:.3} s");
    assert!(shares.iter().all(|s| *s > 0));
}

#[test]
fn one_slow_seeder_does_not_drag_the_download() {
    let size = 200 * MIB;
    let rates = [10.0 * MB, 10.0 * MB, 10.0 * MB, 10.0 * MB, 1.0 * MB];
    let (secs, shares) = swarm("one_slow_seeder_does_not_drag_the_download", 3, &rates, 100.0 * MB, size);
    let ideal = total_bytes(size) / rates.iter().sum::<f64>() + 0.004;
    // A blind round-robin gives each peer a fifth of the game.
    let round_robin = rates.iter().map(|r| total_bytes(size) / 5.0 / r).fold(0.0, f64::max);
    eprintln!(
        "5 seeders, one at 1/10: {secs:.3} s, ideal {ideal:.3} s ({:.3}x); blind round-robin would need {round_robin:.3} s ({:.1}x); shares {shares:?}",
        secs / ideal,
        round_robin / ideal
    );
    assert!(secs <= 1.15 * ideal, "{secs:.3} s vs ideal {ideal:.3} s");
    assert!(round_robin / ideal > 7.0);
}

#[test]
fn seeder_crash_mid_download_still_completes() {
    Sim::run("seeder_crash_mid_download_still_completes", 4, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 64 * MIB);
        let cat = catalog_of(&[&game]);
        for s in ["s1", "s2", "s3"] {
            let h = sim.host(s, HostConfig::symmetric(10.0 * MB, ms(1)));
            let fs = MemFs::unrecorded();
            game.write(&fs, &sim.rng);
            sim.spawn(s, h, fs, Sim::config(cat.clone()));
        }
        let hd = sim.host("d", HostConfig::symmetric(100.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        wait_holders(&sim, "d", "arena", 3).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::DownloadProgress { done, .. } if *done > 16 * MIB)).await;
        sim.crash("s2", CrashModel::AllUpToK);
        sim.wait_for("d", Duration::from_secs(120), |e| installed(e, &id) || failed(e, &id)).await;
        assert!(event_time(&sim, "d", |e| installed(e, &id)).is_some(), "download did not complete: {:?}", sim.events("d").last());
        assert_same_download(&sim.peer("s1").fs, &sim.peer("d").fs, "arena", "the downloader");
        sim
    });
}

#[test]
fn all_seeders_vanishing_fails_cleanly_and_keeps_the_old_install() {
    Sim::run("all_seeders_vanishing_fails_cleanly_and_keeps_the_old_install", 5, |mut sim| async move {
        let old = SimGame::new("arena", "1.0", 4 * MIB);
        let new = SimGame::new("arena", "2.0", 48 * MIB);
        let cat = catalog_of(&[&new]);
        for s in ["s1", "s2"] {
            let h = sim.host(s, HostConfig::symmetric(10.0 * MB, ms(1)));
            let fs = MemFs::unrecorded();
            new.write(&fs, &sim.rng);
            sim.spawn(s, h, fs, Sim::config(cat.clone()));
        }
        // The downloader has version 1.0 installed, and a neighbour directory.
        let dfs = MemFs::unrecorded();
        old.write(&dfs, &sim.rng);
        dfs.write_file("arena/local/game.exe", b"old exe");
        dfs.write_file("other/keep.txt", b"not ours");
        let outside_before = dfs.tree_at("other");
        let local_before = dfs.tree_at("arena/local");
        let hd = sim.host("d", HostConfig::symmetric(100.0 * MB, ms(1)));
        sim.spawn("d", hd, dfs, Sim::config(cat));
        wait_holders(&sim, "d", "arena", 2).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::FetchLatestFromPeers(id.clone()));
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::GotGameFiles { .. })).await;
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::DownloadProgress { done, .. } if *done > 4 * MIB)).await;
        sim.crash("s1", CrashModel::AllUpToK);
        sim.crash("s2", CrashModel::AllUpToK);
        let (_, ev) = sim.wait_for("d", Duration::from_secs(120), |e| failed(e, &id)).await;
        eprintln!("failure reported: {ev:?}");
        let dfs = &sim.peer("d").fs;
        assert_eq!(dfs.tree_at("other"), outside_before, "nothing outside the root is touched");
        assert_eq!(dfs.tree_at("arena/local"), local_before, "the old install is intact");
        assert!(!dfs.exists("arena/.version.ini.tmp") && !dfs.exists("arena/.version.ini.discarded"));
        sim
    });
}

#[test]
fn an_install_over_a_hand_made_local_is_refused_then_adopted_keeping_the_users_files() {
    Sim::run("an_install_over_a_hand_made_local_is_refused_then_adopted_keeping_the_users_files", 8, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", MIB);
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        // Installed by hand: no marker; the exe clashes with the archive's, the save does not.
        fs.write_file("arena/local/game.exe", b"hand-installed exe");
        fs.write_file("arena/local/saves/slot1", b"progress");
        let h = sim.host("d", HostConfig::symmetric(10.0 * MB, ms(1)));
        sim.spawn("d", h, fs.clone(), Sim::config(catalog_of(&[&game])));
        let id = gid("arena");
        let ended = |e: &PeerEvent| matches!(e, PeerEvent::InstallFailed { id: i, .. } | PeerEvent::InstallFinished { id: i } if *i == gid("arena"));
        sim.send("d", PeerCommand::InstallGame { id: id.clone(), adopt: false });
        let (_, e) = sim.wait_for("d", Duration::from_secs(30), ended).await;
        let PeerEvent::InstallFailed { error, .. } = e else { panic!("an install over a hand-made local/ went ahead: {e:?}") };
        assert_eq!(error.code, lanspread::ErrorCode::NotOwned, "{error:?}");
        assert!(error.message.contains("not installed by lanspread") && error.message.contains("--adopt"), "{error:?}");
        assert_eq!(fs.read("arena/local/game.exe").as_deref(), Some(&b"hand-installed exe"[..]), "nothing was changed");
        assert!(!fs.exists(".lanspread-kept") && !fs.exists("arena/local/.lanspread_owned"));

        sim.send("d", PeerCommand::InstallGame { id: id.clone(), adopt: true });
        sim.wait_for("d", Duration::from_secs(30), |e| installed(e, &id)).await;
        let kept = sim
            .events("d")
            .into_iter()
            .find_map(|(_, e)| match e {
                PeerEvent::UserFilesKept { id: i, kept } if i == id => Some(kept),
                _ => None,
            })
            .expect("the kept directory is reported");
        assert!(kept.as_str().starts_with(".lanspread-kept/arena-"), "{kept}");
        assert_eq!(fs.read(&format!("{kept}/game.exe")).as_deref(), Some(&b"hand-installed exe"[..]), "the user's exe is kept");
        assert_eq!(fs.read("arena/local/game.exe").map(|v| v.len()), Some(4096), "the archive's exe is installed");
        assert_eq!(fs.read("arena/local/saves/slot1").as_deref(), Some(&b"progress"[..]), "the save is carried");
        assert!(fs.exists("arena/local/.lanspread_owned"), "now lanspread's");
        // Uninstalling it now needs no adopt and keeps the save.
        sim.send("d", PeerCommand::UninstallGame { id: id.clone(), adopt: false });
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::UninstallFinished(i) if *i == id)).await;
        assert!(!fs.exists("arena/local"));
        let kept_saves: Vec<String> = fs
            .tree_at(".lanspread-kept")
            .into_iter()
            .filter(|(p, n)| p.ends_with("saves/slot1") && *n == Node::File(b"progress".to_vec()))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(kept_saves.len(), 1, "the save is kept by the uninstall: {kept_saves:?}");
        sim
    });
}

#[test]
fn update_keeps_the_old_version_playable_until_commit() {
    Sim::run("update_keeps_the_old_version_playable_until_commit", 6, |mut sim| async move {
        let mut a = SimGame::new("arena", "1.0", 2 * MIB);
        a.extra_files.push(("data/obsolete.bin".into(), 1000));
        let b = SimGame::new("arena", "2.0", 32 * MIB);
        let cat = catalog_of(&[&b]);
        let hs = sim.host("s", HostConfig::symmetric(20.0 * MB, ms(1)));
        let sfs = MemFs::unrecorded();
        b.write(&sfs, &sim.rng);
        sim.spawn("s", hs, sfs, Sim::config(cat.clone()));
        // The downloader installs A first, through the runtime.
        let dfs = MemFs::unrecorded();
        a.write(&dfs, &sim.rng);
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, dfs.clone(), Sim::config(cat));
        let id = gid("arena");
        sim.send("d", PeerCommand::InstallGame { id: id.clone(), adopt: false });
        sim.wait_for("d", Duration::from_secs(30), |e| installed(e, &id)).await;
        let a_exe = dfs.read("arena/local/game.exe").expect("A installed");
        wait_holders(&sim, "d", "arena", 1).await;
        sim.send("d", PeerCommand::FetchLatestFromPeers(id.clone()));
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::GotGameFiles { .. })).await;
        sim.send("d", PeerCommand::download(id.clone()));
        // Until B is committed, A stays playable.
        let mut samples = 0;
        while event_time(&sim, "d", |e| finished(e, &id)).is_none() {
            assert!(event_time(&sim, "d", |e| failed(e, &id)).is_none(), "download failed: {:?}", sim.events("d").last());
            assert!(sim.now() < Duration::from_secs(120), "download did not finish");
            assert_eq!(dfs.read("arena/local/game.exe").as_ref(), Some(&a_exe), "A must stay installed during the download");
            samples += 1;
            sim.sleep(ms(50)).await;
        }
        assert!(samples > 10, "the download was too short to observe ({samples} samples)");
        sim.wait_until("B installed", Duration::from_secs(30), |s| s.events("d").iter().filter(|(_, e)| installed(e, &id)).count() >= 2)
            .await;
        let b_exe = dfs.read("arena/local/game.exe").expect("B installed");
        assert_ne!(a_exe, b_exe, "B replaced A");
        assert_eq!(dfs.read("arena/version.ini").as_deref(), Some(&b"2.0\n"[..]));
        assert!(!dfs.exists("arena/.local.backup"));
        // Files of A that B does not have are gone: B is exactly B.
        assert!(!dfs.exists("arena/data/obsolete.bin"));
        assert_same_download(&sim.peer("s").fs, &dfs, "arena", "the downloader");
        sim
    });
}

/// The stats of the last `DownloadFinished` of `id` on `peer`.
fn last_transfer(sim: &Sim, peer: &str, id: &GameId) -> lanspread::TransferStats {
    sim.events(peer)
        .into_iter()
        .rev()
        .find_map(|(_, e)| match e {
            PeerEvent::DownloadFinished { id: i, stats, .. } if i == *id => Some(stats),
            _ => None,
        })
        .expect("a finished download")
}

#[test]
fn an_interrupted_download_resumes_with_the_data_already_there() {
    Sim::run("an_interrupted_download_resumes_with_the_data_already_there", 21, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 24 * MIB);
        let cat = catalog_of(&[&game]);
        let hs = sim.host("s", HostConfig::symmetric(20.0 * MB, ms(1)));
        let sfs = MemFs::unrecorded();
        game.write(&sfs, &sim.rng);
        sim.spawn("s", hs, sfs, Sim::config(cat.clone()));
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::new(), Sim::config(cat));
        wait_holders(&sim, "d", "arena", 1).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::download(id.clone()));
        let half = |e: &PeerEvent| matches!(e, PeerEvent::DownloadProgress { done, total, .. } if *done * 2 >= *total);
        sim.wait_for("d", Duration::from_secs(60), half).await;
        // The process dies; what it wrote is still there (no power loss).
        sim.crash("d", CrashModel::AllUpToK);
        sim.sleep(ms(100)).await;
        let before = sim.events("d").len();
        sim.restart("d");
        sim.wait_until("the seeder seen again", Duration::from_secs(30), |s| {
            s.events("d")[before..].iter().any(|(_, e)| {
                matches!(e, PeerEvent::LibrarySnapshot { games, .. } if games.iter().any(|g| g.id == id && !g.peers_with_latest.is_empty()))
            })
        })
        .await;
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_until("the resumed download", Duration::from_secs(60), |s| {
            s.events("d")[before..].iter().any(|(_, e)| finished(e, &id) || failed(e, &id))
        })
        .await;
        let stats = last_transfer(&sim, "d", &id);
        let size = game.archive_bytes;
        assert!(stats.reused >= size / 3, "at least a third was kept and verified: {stats:?}");
        assert!(stats.bytes + stats.reused > size, "everything is accounted for: {stats:?}");
        let fetched: u64 = stats.peers.iter().map(|p| p.bytes).sum();
        assert!(fetched <= stats.bytes + 2 * MIB, "only the missing part was fetched: {fetched} vs {stats:?}");
        assert_same_download(&sim.peer("s").fs, &sim.peer("d").fs, "arena", "the downloader");
        sim
    });
}

#[test]
fn an_update_fetches_only_the_chunks_that_changed() {
    Sim::run("an_update_fetches_only_the_chunks_that_changed", 22, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 8 * MIB);
        let cat = catalog_of(&[&game]);
        // The downloader has 1.0; the seeder has 2.0, which changes one file.
        let dfs = MemFs::unrecorded();
        game.write(&dfs, &sim.rng);
        let sfs = MemFs::unrecorded();
        game.write(&sfs, &sim.rng);
        sfs.write_file("arena/data/maps/arena.map", sim.rng.fork("new map").bytes(70_000));
        sfs.write_file("arena/version.ini", b"2.0\n");
        let hs = sim.host("s", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("s", hs, sfs, Sim::config(cat.clone()));
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, dfs, Sim::config(cat));
        wait_holders(&sim, "d", "arena", 1).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::FetchLatestFromPeers(id.clone()));
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::GotGameFiles { .. })).await;
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_for("d", Duration::from_secs(60), |e| finished(e, &id)).await;
        let stats = last_transfer(&sim, "d", &id);
        // Units may span small files: what is fetched is the new map and
        // version.ini plus the small files that share their units.
        assert!((70_000 + 4..2 * MIB).contains(&stats.bytes), "the units of the new map and version.ini: {stats:?}");
        assert!(stats.reused >= 8 * MIB, "the unchanged archive was reused: {stats:?}");
        assert_eq!(sim.peer("d").fs.read("arena/version.ini").as_deref(), Some(&b"2.0\n"[..]));
        assert_same_download(&sim.peer("s").fs, &sim.peer("d").fs, "arena", "the downloader");
        sim
    });
}

/// No snapshot may show an operation as finished while the local state is
/// stale: the snapshot right before each lifecycle "finished" event has the
/// operation cleared *and* the new local state.
fn check_event_order(events: &[(Duration, PeerEvent)]) {
    let mut last_snapshot: Option<&PeerEvent> = None;
    let mut checked = 0;
    for (_, e) in events {
        match e {
            PeerEvent::LibrarySnapshot { .. } => last_snapshot = Some(e),
            PeerEvent::DownloadFinished { id, .. } | PeerEvent::InstallFinished { id, .. } if last_snapshot.is_some() => {
                let Some(PeerEvent::LibrarySnapshot { games, operations }) = last_snapshot else { unreachable!() };
                assert!(!operations.contains_key(id), "snapshot before {e:?} still shows the operation");
                let g = games.iter().find(|g| &g.id == id).expect("game in snapshot");
                match e {
                    PeerEvent::DownloadFinished { version, .. } => {
                        assert_eq!(g.local_version.as_ref(), Some(version), "stale local version in the snapshot before {e:?}")
                    }
                    _ => assert!(g.installed, "snapshot before {e:?} does not show the game installed"),
                }
                checked += 1;
            }
            _ => {}
        }
    }
    assert!(checked >= 2, "checked {checked} lifecycle events");
}

#[test]
fn snapshots_never_show_a_finished_operation_with_stale_state() {
    Sim::run("snapshots_never_show_a_finished_operation_with_stale_state", 7, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 8 * MIB);
        let cat = catalog_of(&[&game]);
        let hs = sim.host("s", HostConfig::symmetric(20.0 * MB, ms(1)));
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        sim.spawn("s", hs, fs, Sim::config(cat.clone()));
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        wait_holders(&sim, "d", "arena", 1).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_for("d", Duration::from_secs(60), |e| installed(e, &id)).await;
        // Operations are visible while they run.
        assert!(sim.events("d").iter().any(
            |(_, e)| matches!(e, PeerEvent::LibrarySnapshot { operations, .. } if operations.get(&id) == Some(&OperationKind::Downloading))
        ));
        check_event_order(&sim.events("d"));
        sim
    });
}

/// The downloader crashes at a random point of a download or install, under
/// a random crash model, restarts, recovers, and downloads again.
fn crash_restart_scenario(seed: u64) -> Vec<Recorded> {
    Sim::run_seed("downloader_crash_and_restart", seed, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 6 * MIB);
        let cat = catalog_of(&[&game]);
        for s in ["s1", "s2"] {
            let h = sim.host(s, HostConfig::symmetric(20.0 * MB, ms(1)));
            let fs = MemFs::unrecorded();
            game.write(&fs, &sim.rng);
            sim.spawn(s, h, fs, Sim::config(cat.clone()));
        }
        let hd = sim.host("d", HostConfig::symmetric(50.0 * MB, ms(1)));
        let dfs = MemFs::new();
        dfs.write_file("other/keep.txt", b"not ours");
        sim.spawn("d", hd, dfs, Sim::config(cat));
        wait_holders(&sim, "d", "arena", 2).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::download(id.clone()));
        // Crash somewhere between the start and shortly after the install.
        let at = ms(sim.rng.range(0..700u64));
        sim.sleep(at).await;
        let model = [CrashModel::SyncedOnly, CrashModel::AllUpToK, CrashModel::MetadataOnly][sim.rng.range(0..3usize)];
        sim.crash("d", model);
        sim.sleep(ms(100)).await;
        sim.restart("d");
        // Recovery leaves a clean state: no intent, no staging, and either a
        // complete download or none.
        sim.sleep(ms(200)).await;
        let fs = sim.peer("d").fs.clone();
        assert_eq!(fs.read("other/keep.txt").as_deref(), Some(&b"not ours"[..]));
        assert!(
            !fs.exists("arena/.local.installing") && !fs.exists("arena/.version.ini.tmp"),
            "seed {}: staging left: {:?}",
            sim.seed,
            fs.tree_at("arena").keys().collect::<Vec<_>>()
        );
        if fs.exists("arena/version.ini") {
            assert_same_download(&sim.peer("s1").fs, &fs, "arena", "the downloader");
        }
        wait_holders(&sim, "d", "arena", 2).await;
        let before = sim.events("d").len();
        sim.send("d", PeerCommand::download(id.clone()));
        sim.wait_until("download after restart", Duration::from_secs(120), |s| {
            s.events("d")[before..].iter().any(|(_, e)| installed(e, &id) || failed(e, &id))
        })
        .await;
        assert!(
            sim.events("d")[before..].iter().any(|(_, e)| installed(e, &id)),
            "seed {}: {:?}",
            sim.seed,
            sim.events("d")[before..].iter().rev().take(5).collect::<Vec<_>>()
        );
        assert_same_download(&sim.peer("s1").fs, &sim.peer("d").fs, "arena", "the downloader");
        sim
    })
}

#[test]
fn downloader_crash_and_restart_recovers() {
    for seed in [11, 12, 13, 14, 15, 16, 17, 18] {
        crash_restart_scenario(lanspread_testkit::sim::seed_or(seed));
    }
}

#[test]
fn same_seed_same_trace() {
    let a = render(&crash_restart_scenario(99));
    let b = render(&crash_restart_scenario(99));
    assert!(a.len() > 20);
    assert_eq!(a, b, "the same seed must replay exactly");
}

#[test]
fn thirty_peers_several_games_joins_and_leaves() {
    Sim::run("thirty_peers_several_games_joins_and_leaves", 8, |mut sim| async move {
        let games: Vec<SimGame> = (0..3).map(|i| SimGame::new(&format!("game{i}"), "1.0", 6 * MIB)).collect();
        let cat = catalog_of(&games.iter().collect::<Vec<_>>());
        let mut names = vec![];
        // 9 seeders (3 per game), 21 downloaders, 4 of which join late.
        for i in 0..30 {
            let name = format!("p{i:02}");
            let rate = sim.rng.range(5.0 * MB..40.0 * MB);
            let h = sim.host(&name, HostConfig::symmetric(rate, ms(sim.rng.range(1..5u64))));
            let fs = MemFs::unrecorded();
            if i < 9 {
                games[i % 3].write(&fs, &sim.rng);
            }
            sim.add_peer(&name, h, fs, Sim::config(cat.clone()));
            if i < 26 {
                sim.start(&name);
            }
            names.push(name);
        }
        sim.sleep(Duration::from_secs(2)).await;
        // Each downloader wants one or two games.
        let mut wants: BTreeMap<String, Vec<GameId>> = BTreeMap::new();
        for (i, name) in names.iter().enumerate().skip(9).take(16) {
            let mut w = vec![gid(&format!("game{}", i % 3))];
            if i % 2 == 0 {
                w.push(gid(&format!("game{}", (i + 1) % 3)));
            }
            for id in &w {
                sim.send(name, PeerCommand::download(id.clone()));
            }
            wants.insert(name.clone(), w);
        }
        // An idle peer leaves cleanly, late peers join, one of them crashes.
        sim.sleep(Duration::from_secs(1)).await;
        sim.stop("p25").await;
        for name in ["p26", "p27", "p29"] {
            sim.start(name);
        }
        sim.sleep(Duration::from_secs(1)).await;
        sim.crash("p29", CrashModel::AllUpToK);
        for name in ["p26", "p27"] {
            sim.wait_for(name, Duration::from_secs(30), |e| matches!(e, PeerEvent::PeerCount(n) if *n >= 20)).await;
            sim.send(name, PeerCommand::download(gid("game1")));
            wants.insert(name.to_owned(), vec![gid("game1")]);
        }
        for (name, ids) in &wants {
            for id in ids {
                sim.wait_for(name, Duration::from_secs(300), |e| installed(e, id)).await;
            }
        }
        // Peer counts converge: 27 peers run, each sees the 26 others.
        sim.sleep(Duration::from_secs(45)).await;
        let running: Vec<&String> = names.iter().filter(|n| sim.peer(n).is_running()).collect();
        assert_eq!(running.len(), 27);
        for n in &running {
            assert_eq!(sim.peer_count(n), Some(26), "peer count of {n}");
        }
        for (name, ids) in &wants {
            for id in ids {
                let seeder = format!("p{:02}", games.iter().position(|g| g.id == id.as_str()).unwrap());
                assert_same_download(&sim.peer(&seeder).fs, &sim.peer(name).fs, id.as_str(), "the downloader");
            }
        }
        sim
    });
}

/// A random swarm per seed: 2-5 seeders of random speed, random seeder
/// crashes, one downloader that must finish byte-identical. `cargo xtask
/// sim --seeds N` sweeps N seeds; the test suite sweeps a few.
fn random_swarm(seed: u64) {
    Sim::run_seed("seed_sweep", seed, |mut sim| async move {
        let size = sim.rng.range(MIB..8 * MIB);
        let game = SimGame::new("arena", "1.0", size);
        let cat = catalog_of(&[&game]);
        let n = sim.rng.range(2..=5usize);
        for i in 0..n {
            let rate = sim.rng.range(1.0 * MB..30.0 * MB);
            let h = sim.host(&format!("s{i}"), HostConfig::symmetric(rate, ms(sim.rng.range(0..10u64))));
            let fs = MemFs::unrecorded();
            game.write(&fs, &sim.rng);
            sim.spawn(&format!("s{i}"), h, fs, Sim::config(cat.clone()));
        }
        let hd = sim.host("d", HostConfig::symmetric(sim.rng.range(10.0 * MB..100.0 * MB), ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        wait_holders(&sim, "d", "arena", n).await;
        let id = gid("arena");
        sim.send("d", PeerCommand::download(id.clone()));
        // Up to n-1 seeders crash at random times.
        let crashes = sim.rng.range(0..n);
        for i in 0..crashes {
            sim.sleep(ms(sim.rng.range(0..400u64))).await;
            sim.crash(&format!("s{i}"), CrashModel::AllUpToK);
        }
        sim.wait_for("d", Duration::from_secs(600), |e| installed(e, &id) || failed(e, &id)).await;
        assert!(event_time(&sim, "d", |e| installed(e, &id)).is_some(), "seed {}: {:?}", sim.seed, sim.events("d").last());
        assert_same_download(&sim.peer(&format!("s{}", n - 1)).fs, &sim.peer("d").fs, "arena", "the downloader");
        sim
    });
}

#[test]
fn seed_sweep() {
    let n: u64 = std::env::var("LANSPREAD_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    if let Ok(seed) = std::env::var("LANSPREAD_SIM_SEED") {
        random_swarm(seed.parse().expect("LANSPREAD_SIM_SEED is a number"));
        return;
    }
    for seed in 1000..1000 + n {
        random_swarm(seed);
    }
}
