//! The peer machine's rules, without a runtime: inputs in, outputs checked.

use super::machine::{LIST_SPREAD_MAX, PROBES_PER_TICK};
use super::*;
use crate::catalog::Catalog;
use crate::game::{EntryKind, FileEntry, GameId, GameSummary, Manifest, Version};
use crate::protocol::{GameDetails, Response};
use crate::scan::{LocalGame, LocalLibrary};
use lanspread_ports::{PeerAdvert, PeerId, RelPath, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn secs(n: u64) -> Timestamp {
    Timestamp::from_duration(Duration::from_secs(n))
}

fn peer(n: u8) -> PeerId {
    PeerId([n; 32])
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 47800))
}

fn manifest(version: &str) -> Manifest {
    let file = |path: &str, size: u64| FileEntry {
        path: RelPath::new(path).unwrap(),
        kind: EntryKind::File,
        size,
        chunks: vec![[size as u8; 32]],
        hash: [0; 32],
    };
    Manifest { version: Version::new(version).unwrap(), files: vec![file("game.tar", 1000), file("version.ini", 3)] }
}

fn summary(id: &str, m: &Manifest) -> GameSummary {
    GameSummary {
        id: gid(id),
        name: id.into(),
        version: m.version.clone(),
        size: m.total_size(),
        file_count: m.files.len() as u64,
        manifest_digest: m.digest(),
    }
}

fn local(id: &str, version: Option<&str>, installed: bool) -> LocalGame {
    LocalGame {
        id: gid(id),
        version: version.map(|v| Version::new(v).unwrap()),
        installed,
        intent_pending: false,
        manifest: version.map(manifest),
        problems: vec![],
    }
}

fn machine() -> PeerMachine {
    let catalog = Catalog::from_toml("[[games]]\nid=\"arena\"\nname=\"Arena\"\n[[games]]\nid=\"quest\"\nname=\"Quest\"\n").unwrap();
    let cfg = MachineConfig {
        local_id: peer(0),
        catalog,
        static_peers: vec![],
        ping_interval: Duration::from_secs(5),
        peer_timeout: Duration::from_secs(20),
        fallback_scan: Duration::from_secs(300),
    };
    let mut m = PeerMachine::new(cfg, secs(0));
    m.handle_full_scan(LocalLibrary::default());
    drain(&mut m);
    m
}

fn drain(m: &mut PeerMachine) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn advert(n: u8) -> PeerAdvert {
    PeerAdvert {
        id: peer(n),
        addrs: vec![addr(n)],
        protocol_version: u32::from(crate::protocol::PROTOCOL_VERSION),
        meta: Default::default(),
    }
}

/// A peer `n` that joined and listed `games`.
fn join(m: &mut PeerMachine, n: u8, games: &[(&str, &Manifest)], now: Timestamp) {
    m.handle_discovered(&advert(n), now);
    let games = games.iter().map(|(id, man)| summary(id, man)).collect();
    m.handle_answer(peer(n), Query::ListGames, Ok(Response::Games(games)), now);
}

fn asks(out: &[Output]) -> Vec<(PeerId, Query)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ask { peer, query } => Some((*peer, query.clone())),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<PeerEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn manifest_reply(m: &Manifest, id: &str) -> Result<Response, String> {
    Ok(Response::Game(Box::new(GameDetails { summary: summary(id, m), manifest: m.clone() })))
}

/// Starts a download of `arena` v1 held by peers 1 and 2; returns its token.
fn running_download(m: &mut PeerMachine, v1: &Manifest) -> OpToken {
    join(m, 1, &[("arena", v1)], secs(1));
    join(m, 2, &[("arena", v1)], secs(1));
    drain(m);
    let token = m.download(&gid("arena"), DownloadOptions::default()).unwrap();
    let out = drain(m);
    let (holder, _) = asks(&out)[0];
    m.handle_answer(holder, Query::Manifest(gid("arena")), manifest_reply(v1, "arena"), secs(2));
    token
}

#[test]
fn a_new_peer_is_listed_at_once_and_joins_the_snapshot() {
    let mut m = machine();
    m.handle_discovered(&advert(1), secs(1));
    let out = drain(&mut m);
    assert_eq!(asks(&out), vec![(peer(1), Query::ListGames)]);
    assert!(events(&out).contains(&PeerEvent::PeerJoined { peer: peer(1), addr: addr(1) }));
    assert!(out.contains(&Output::PeerAddrs { peer: peer(1), addrs: vec![addr(1)] }));
    // Our own advert (a loop through mDNS) is ignored.
    m.handle_discovered(&advert(0), secs(1));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.snapshot().peers.len(), 1);
}

#[test]
fn a_peer_is_relisted_only_when_its_library_revision_changes() {
    let mut m = machine();
    join(&mut m, 1, &[], secs(1));
    drain(&mut m);
    let ping = |m: &mut PeerMachine, now: Timestamp, rev: u64| {
        m.handle_timeout(now);
        let out = drain(m);
        let Some((_, Query::Ping { nonce })) = asks(&out).into_iter().find(|(p, _)| *p == peer(1)) else { panic!("no ping: {out:?}") };
        m.handle_answer(peer(1), Query::Ping { nonce }, Ok(Response::Pong { nonce, library_rev: rev }), now);
        asks(&drain(m))
    };
    assert_eq!(ping(&mut m, secs(5), 7), vec![(peer(1), Query::ListGames)], "first revision seen");
    m.handle_answer(peer(1), Query::ListGames, Ok(Response::Games(vec![])), secs(5));
    assert_eq!(ping(&mut m, secs(10), 7), vec![], "same revision: no re-list");
    assert_eq!(ping(&mut m, secs(15), 8), vec![(peer(1), Query::ListGames)]);
}

#[test]
fn a_silent_peer_is_pruned_and_leaves_running_downloads() {
    let mut m = machine();
    let v1 = manifest("1");
    let token = running_download(&mut m, &v1);
    drain(&mut m);
    // Peer 2 keeps answering; peer 1 falls silent.
    for t in [5, 10, 15, 20, 25] {
        m.handle_timeout(secs(t));
        m.handle_seen(&peer(2), secs(t));
    }
    let out = drain(&mut m);
    assert!(out.contains(&Output::Holders { token, joined: vec![], left: vec![peer(1)] }), "{out:?}");
    assert!(events(&out).contains(&PeerEvent::PeerLeft(peer(1))));
    assert!(out.contains(&Output::Disconnect(peer(1))));
}

#[test]
fn holders_that_appear_join_the_running_download() {
    let mut m = machine();
    let v1 = manifest("1");
    let token = running_download(&mut m, &v1);
    drain(&mut m);
    join(&mut m, 3, &[("arena", &v1)], secs(3));
    let out = drain(&mut m);
    assert!(out.contains(&Output::Holders { token, joined: vec![peer(3)], left: vec![] }), "{out:?}");
    // A peer with another manifest of the same version is not a holder.
    let mut other = manifest("1");
    other.files[0].size = 999;
    join(&mut m, 4, &[("arena", &other)], secs(3));
    assert!(!drain(&mut m).iter().any(|o| matches!(o, Output::Holders { .. })));
}

#[test]
fn resolving_is_reported_and_holders_are_asked_one_at_a_time() {
    let mut m = machine();
    let v1 = manifest("1");
    join(&mut m, 1, &[("arena", &v1)], secs(1));
    join(&mut m, 2, &[("arena", &v1)], secs(1));
    drain(&mut m);
    let token = m.resolve(&gid("arena"), false).unwrap();
    let out = drain(&mut m);
    assert_eq!(m.operation(&gid("arena")), Some(OperationKind::Resolving));
    assert!(out.iter().any(|o| matches!(o, Output::Snapshot(s) if s.operations.get(&gid("arena")) == Some(&OperationKind::Resolving))));
    assert_eq!(asks(&out), vec![(peer(1), Query::Manifest(gid("arena")))]);
    // The first holder lies about the manifest: the next one is asked.
    m.handle_answer(peer(1), Query::Manifest(gid("arena")), manifest_reply(&manifest("2"), "arena"), secs(2));
    assert_eq!(asks(&drain(&mut m)), vec![(peer(2), Query::Manifest(gid("arena")))]);
    m.handle_answer(peer(2), Query::Manifest(gid("arena")), manifest_reply(&v1, "arena"), secs(2));
    let out = drain(&mut m);
    assert_eq!(m.operation(&gid("arena")), None);
    let settled = out.iter().find_map(|o| match o {
        Output::Settled { token: t, outcome: Outcome::Resolved(Ok(r)) } if *t == token => Some(r.clone()),
        _ => None,
    });
    assert_eq!(settled.map(|r| (r.manifest.digest(), r.holders)), Some((v1.digest(), vec![peer(1), peer(2)])));
    assert!(events(&out).iter().any(|e| matches!(e, PeerEvent::GotGameFiles { files: 2, .. })));

    // A second resolve uses the cached manifest; a fresh one asks again.
    m.resolve(&gid("arena"), false).unwrap();
    assert!(asks(&drain(&mut m)).is_empty());
    m.resolve(&gid("arena"), true).unwrap();
    assert_eq!(asks(&drain(&mut m)), vec![(peer(1), Query::Manifest(gid("arena")))]);
}

#[test]
fn a_resolve_fails_with_a_typed_error_when_no_holder_answers() {
    let mut m = machine();
    assert_eq!(m.resolve(&gid("arena"), false), Err(ResolveError::NoHolder(gid("arena"))));
    let out = drain(&mut m);
    assert!(matches!(&events(&out)[..], [PeerEvent::DownloadFailed { error, .. }] if error.code == ErrorCode::NoHolder));
    assert_eq!(m.resolve(&gid("nothere"), false), Err(ResolveError::NotInCatalog(gid("nothere"))));
    drain(&mut m);

    let v1 = manifest("1");
    join(&mut m, 1, &[("arena", &v1)], secs(1));
    drain(&mut m);
    let token = m.download(&gid("arena"), DownloadOptions::default()).unwrap();
    drain(&mut m);
    m.handle_answer(peer(1), Query::Manifest(gid("arena")), Err("timed out".into()), secs(2));
    let out = drain(&mut m);
    assert!(out.contains(&Output::Disconnect(peer(1))));
    let failed = out.iter().find_map(|o| match o {
        Output::Settled { token: t, outcome: Outcome::Downloaded(Err(e)) } if *t == token => Some(e.clone()),
        _ => None,
    });
    assert!(matches!(failed, Some(DownloadError::Resolve(ResolveError::NoAnswer { .. }))), "{failed:?}");
    assert_eq!(m.operation(&gid("arena")), None);
}

#[test]
fn a_download_starts_after_its_manifest_and_refuses_a_second_one() {
    let mut m = machine();
    let v1 = manifest("1");
    let token = running_download(&mut m, &v1);
    let out = drain(&mut m);
    let start = out.iter().find_map(|o| match o {
        Output::Start { token: t, work: Work::Download { holders, .. }, .. } if *t == token => Some(holders.clone()),
        _ => None,
    });
    assert_eq!(start, Some(vec![peer(1), peer(2)]));
    assert_eq!(m.operation(&gid("arena")), Some(OperationKind::Downloading));
    let busy = m.download(&gid("arena"), DownloadOptions::default());
    assert_eq!(busy, Err(DownloadError::Busy { id: gid("arena"), running: OperationKind::Downloading }));
    assert_eq!(m.install(&gid("arena"), false), Err(InstallError::Busy { id: gid("arena"), running: OperationKind::Downloading }));
    // Cancel asks the driver to stop it.
    drain(&mut m);
    assert!(m.cancel(&gid("arena")));
    assert_eq!(drain(&mut m), vec![Output::Cancel(token)]);
}

#[test]
fn a_file_outside_the_manifest_is_refused() {
    let mut m = machine();
    let v1 = manifest("1");
    join(&mut m, 1, &[("arena", &v1)], secs(1));
    m.resolve(&gid("arena"), false).unwrap();
    m.handle_answer(peer(1), Query::Manifest(gid("arena")), manifest_reply(&v1, "arena"), secs(2));
    drain(&mut m);
    let files = Some(BTreeSet::from([RelPath::new("nope.txt").unwrap()]));
    let got = m.download(&gid("arena"), DownloadOptions { files, ..Default::default() });
    assert!(matches!(got, Err(DownloadError::UnknownFile { .. })), "{got:?}");
    assert_eq!(m.operation(&gid("arena")), None);
}

/// The rule a UI relies on: when an operation ends, the snapshot that shows
/// it gone already shows the settled local state, and the lifecycle event
/// and the caller's result come after it.
#[test]
fn an_operation_settles_state_before_it_clears_and_reports() {
    let mut m = machine();
    let v1 = manifest("1");
    let token = running_download(&mut m, &v1);
    drain(&mut m);
    let stats = TransferStats { bytes: 1003, reused: 0, secs: 1.0, peers: vec![] };
    let report = DownloadReport { version: v1.version.clone(), stats, complete: true };
    m.handle_finished(token, Ok(Some(local("arena", Some("1"), false))), Outcome::Downloaded(Ok(report)));
    let out = drain(&mut m);
    let snap = out.iter().position(|o| matches!(o, Output::Snapshot(s) if s.operations.is_empty())).expect("a snapshot");
    let Output::Snapshot(s) = &out[snap] else { unreachable!() };
    let row = s.games.iter().find(|g| g.id == gid("arena")).unwrap();
    assert_eq!(row.local_version, Some(v1.version.clone()), "the snapshot already shows the download");
    let finished = out.iter().position(|o| matches!(o, Output::Event(PeerEvent::DownloadFinished { .. }))).expect("lifecycle");
    let settled = out.iter().position(|o| matches!(o, Output::Settled { token: t, .. } if *t == token)).expect("result");
    assert!(snap < finished && finished < settled, "{out:?}");
    // The serve view offers it now.
    assert!(out.iter().any(|o| matches!(o, Output::Serve(v) if v.games.contains_key(&gid("arena")))));
}

#[test]
fn a_download_asked_to_install_chains_the_install() {
    let mut m = machine();
    let v1 = manifest("1");
    join(&mut m, 1, &[("arena", &v1)], secs(1));
    drain(&mut m);
    let token = m.download(&gid("arena"), DownloadOptions { install: true, ..Default::default() }).unwrap();
    m.handle_answer(peer(1), Query::Manifest(gid("arena")), manifest_reply(&v1, "arena"), secs(2));
    drain(&mut m);
    let report = DownloadReport {
        version: v1.version.clone(),
        stats: TransferStats { bytes: 1, reused: 0, secs: 1.0, peers: vec![] },
        complete: true,
    };
    m.handle_finished(token, Ok(Some(local("arena", Some("1"), false))), Outcome::Downloaded(Ok(report)));
    let out = drain(&mut m);
    assert!(out.iter().any(|o| matches!(o, Output::Start { work: Work::Install { adopt: false, update: false }, .. })), "{out:?}");
    assert_eq!(m.operation(&gid("arena")), Some(OperationKind::Installing));
}

#[test]
fn a_partial_download_is_marked_partial_and_never_installed() {
    let mut m = machine();
    let v1 = manifest("1");
    join(&mut m, 1, &[("arena", &v1)], secs(1));
    drain(&mut m);
    let files = Some(BTreeSet::from([RelPath::new("game.tar").unwrap()]));
    let token = m.download(&gid("arena"), DownloadOptions { files, install: true, fresh: false }).unwrap();
    m.handle_answer(peer(1), Query::Manifest(gid("arena")), manifest_reply(&v1, "arena"), secs(2));
    drain(&mut m);
    let report = DownloadReport {
        version: v1.version.clone(),
        stats: TransferStats { bytes: 1000, reused: 0, secs: 1.0, peers: vec![] },
        complete: false,
    };
    m.handle_finished(token, Ok(Some(local("arena", None, false))), Outcome::Downloaded(Ok(report)));
    let out = drain(&mut m);
    assert!(!out.iter().any(|o| matches!(o, Output::Start { .. })));
    assert!(m.snapshot().partial.contains(&gid("arena")));
    assert!(!out.iter().any(|o| matches!(o, Output::Serve(v) if v.games.contains_key(&gid("arena")))));
}

#[test]
fn install_uninstall_and_remove_check_the_local_state() {
    let mut m = machine();
    let id = gid("arena");
    assert_eq!(m.install(&id, false), Err(InstallError::NotDownloaded(id.clone())));
    assert_eq!(m.uninstall(&id, false), Err(UninstallError::NotInstalled(id.clone())));
    let out = drain(&mut m);
    let codes: Vec<ErrorCode> = events(&out)
        .iter()
        .filter_map(|e| match e {
            PeerEvent::InstallFailed { error, .. } | PeerEvent::UninstallFailed { error, .. } => Some(error.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![ErrorCode::NotDownloaded, ErrorCode::NotInstalled]);

    m.handle_full_scan(LocalLibrary { games: [(id.clone(), local("arena", Some("1"), true))].into() });
    drain(&mut m);
    let token = m.install(&id, true).unwrap();
    let out = drain(&mut m);
    assert!(out.contains(&Output::Start { token, id: id.clone(), work: Work::Install { adopt: true, update: true } }));
    assert!(events(&out).contains(&PeerEvent::InstallBegin { id: id.clone(), update: true }));
    assert_eq!(m.operation(&id), Some(OperationKind::Updating));
    let kept = Some(RelPath::new(".lanspread-kept/arena-1").unwrap());
    m.handle_finished(token, Ok(Some(local("arena", Some("1"), true))), Outcome::Installed(Ok(InstallReport { update: true, kept })));
    let ev = events(&drain(&mut m));
    let kept_at = ev.iter().position(|e| matches!(e, PeerEvent::UserFilesKept { .. })).unwrap();
    let done_at = ev.iter().position(|e| matches!(e, PeerEvent::InstallFinished { .. })).unwrap();
    assert!(kept_at < done_at);

    let token = m.remove(&id).unwrap();
    assert!(m.snapshot().operations.contains_key(&id));
    let not_owned = crate::txn::TxnError::Installed { root: id.root() };
    m.handle_finished(token, Ok(Some(local("arena", Some("1"), true))), Outcome::Removed(Err(RemoveError::Transaction(not_owned))));
    let ev = events(&drain(&mut m));
    assert!(ev.iter().any(|e| matches!(e, PeerEvent::RemoveFailed { error, .. } if error.code == ErrorCode::TransactionFailed)));
}

#[test]
fn scans_hold_games_an_operation_owns() {
    let mut m = machine();
    let id = gid("arena");
    m.handle_full_scan(LocalLibrary { games: [(id.clone(), local("arena", Some("1"), false))].into() });
    let out = drain(&mut m);
    assert!(out.contains(&Output::WatchRoots(vec![id.clone()])));
    let token = m.remove(&id).unwrap();
    drain(&mut m);
    // The watcher sees the removal half done: the game is held.
    m.handle_local_dirty(BTreeSet::from([id.clone(), gid("quest"), gid("stranger")]));
    assert_eq!(drain(&mut m), vec![Output::Scan(vec![gid("quest")])]);
    m.handle_full_scan(LocalLibrary::default());
    assert!(m.db().local_game(&id).is_some(), "a full scan holds it too");
    m.handle_games_scanned(vec![(id.clone(), Ok(None))]);
    assert!(m.db().local_game(&id).is_some(), "so does a late rescan");
    m.handle_finished(token, Ok(None), Outcome::Removed(Ok(())));
    assert!(m.db().local_game(&id).is_none());
}

#[test]
fn static_peers_are_dialed_until_known_and_a_changed_key_is_reported() {
    let catalog = Catalog::default();
    let cfg = MachineConfig {
        local_id: peer(0),
        catalog,
        static_peers: vec![addr(9)],
        ping_interval: Duration::from_secs(5),
        peer_timeout: Duration::from_secs(20),
        fallback_scan: Duration::from_secs(300),
    };
    let mut m = PeerMachine::new(cfg, secs(0));
    m.handle_timeout(secs(0));
    assert_eq!(drain(&mut m), vec![Output::Dial { addr: addr(9), pinned: None }]);
    m.handle_timeout(secs(1));
    assert!(drain(&mut m).is_empty(), "one dial at a time");
    m.handle_dialed(addr(9), DialOutcome::Connected(peer(9)), secs(1));
    let out = drain(&mut m);
    assert!(events(&out).contains(&PeerEvent::PeerJoined { peer: peer(9), addr: addr(9) }));
    m.handle_timeout(secs(6));
    assert!(!drain(&mut m).iter().any(|o| matches!(o, Output::Dial { .. })), "known: not dialed again");
    // Once pruned, it is dialed again, pinned to the key it proved.
    for t in [11, 16, 21, 26] {
        m.handle_timeout(secs(t));
    }
    let out = drain(&mut m);
    assert!(out.contains(&Output::Dial { addr: addr(9), pinned: Some(peer(9)) }), "{out:?}");
    m.handle_dialed(addr(9), DialOutcome::KeyChanged("changed its key".into()), secs(26));
    assert!(matches!(&events(&drain(&mut m))[..], [PeerEvent::RuntimeFailure(f)] if f.message.contains("key")));
}

#[test]
fn cancelling_a_download_that_waits_for_its_manifest_ends_it() {
    let mut m = machine();
    let v1 = manifest("1");
    join(&mut m, 1, &[("arena", &v1)], secs(1));
    drain(&mut m);
    let token = m.download(&gid("arena"), DownloadOptions::default()).unwrap();
    drain(&mut m);
    assert!(m.cancel(&gid("arena")));
    let out = drain(&mut m);
    assert!(out.contains(&Output::Settled { token, outcome: Outcome::Downloaded(Err(DownloadError::Cancelled)) }));
    assert_eq!(m.operation(&gid("arena")), None);
    // The late answer changes nothing.
    m.handle_answer(peer(1), Query::Manifest(gid("arena")), manifest_reply(&v1, "arena"), secs(2));
    assert!(!drain(&mut m).iter().any(|o| matches!(o, Output::Start { .. })));
}

#[test]
fn a_download_joins_a_resolve_in_flight() {
    let mut m = machine();
    let v1 = manifest("1");
    join(&mut m, 1, &[("arena", &v1)], secs(1));
    drain(&mut m);
    let resolve = m.resolve(&gid("arena"), false).unwrap();
    let download = m.download(&gid("arena"), DownloadOptions::default()).unwrap();
    assert_eq!(asks(&drain(&mut m)).len(), 1, "one manifest request for both");
    m.handle_answer(peer(1), Query::Manifest(gid("arena")), manifest_reply(&v1, "arena"), secs(2));
    let out = drain(&mut m);
    assert!(out.iter().any(|o| matches!(o, Output::Settled { token, outcome: Outcome::Resolved(Ok(_)) } if *token == resolve)));
    assert!(out.iter().any(|o| matches!(o, Output::Start { token, .. } if *token == download)));
}

#[test]
fn shutdown_fails_waiting_downloads_and_cancels_running_ones() {
    let mut m = machine();
    let v1 = manifest("1");
    let running = running_download(&mut m, &v1);
    join(&mut m, 3, &[("quest", &v1)], secs(3));
    drain(&mut m);
    let waiting = m.download(&gid("quest"), DownloadOptions::default()).unwrap();
    drain(&mut m);
    m.shutdown();
    let out = drain(&mut m);
    assert!(out.contains(&Output::Cancel(running)));
    assert!(out.contains(&Output::Settled {
        token: waiting,
        outcome: Outcome::Downloaded(Err(DownloadError::Resolve(ResolveError::ShuttingDown)))
    }));
    assert_eq!(m.install(&gid("arena"), false).map(|_| ()).map_err(|e| e.code()), Err(ErrorCode::Busy));
}

/// mDNS can be spoofed: a goodbye for a peer that proved itself is
/// checked with a ping before the peer is forgotten.
#[test]
fn a_forged_goodbye_does_not_remove_a_live_peer() {
    let mut m = machine();
    let v1 = manifest("1");
    let token = running_download(&mut m, &v1);
    drain(&mut m);
    m.handle_vanished(&peer(1));
    let out = drain(&mut m);
    assert!(!events(&out).contains(&PeerEvent::PeerLeft(peer(1))), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::Holders { .. })), "the download keeps it");
    let [(p, Query::Ping { nonce })] = asks(&out)[..] else { panic!("a liveness check: {out:?}") };
    assert_eq!(p, peer(1));
    m.handle_answer(peer(1), Query::Ping { nonce }, Ok(Response::Pong { nonce, library_rev: 1 }), secs(3));
    assert!(m.db().peer(&peer(1)).is_some(), "it answered: it stays");
    // A real goodbye: the ping fails, and the peer leaves at once.
    drain(&mut m);
    m.handle_vanished(&peer(1));
    let Some((_, Query::Ping { nonce })) = asks(&drain(&mut m)).pop() else { panic!("no ping") };
    m.handle_answer(peer(1), Query::Ping { nonce }, Err("connection closed".into()), secs(4));
    let out = drain(&mut m);
    assert!(events(&out).contains(&PeerEvent::PeerLeft(peer(1))));
    assert!(out.contains(&Output::Holders { token, joined: vec![], left: vec![peer(1)] }));
}

#[test]
fn a_goodbye_of_a_peer_that_never_proved_itself_removes_it_at_once() {
    let mut m = machine();
    m.handle_discovered(&advert(1), secs(1));
    drain(&mut m);
    m.handle_vanished(&peer(1));
    assert!(events(&drain(&mut m)).contains(&PeerEvent::PeerLeft(peer(1))));
}

/// A forged advert for a known id does not move the peer: the address it
/// proved itself at stays first; the new one is only a candidate that must
/// prove the identity again when dialed.
#[test]
fn a_forged_advert_does_not_replace_a_proven_peers_address() {
    let mut m = machine();
    join(&mut m, 1, &[], secs(1));
    drain(&mut m);
    let forged = SocketAddr::from(([10, 0, 0, 66], 47800));
    let spoofed = PeerAdvert { addrs: vec![forged], ..advert(1) };
    m.handle_discovered(&spoofed, secs(2));
    assert_eq!(m.db().peer(&peer(1)).map(|p| p.addr), Some(addr(1)));
    let out = drain(&mut m);
    let addrs = out.iter().find_map(|o| match o {
        Output::PeerAddrs { peer: p, addrs } if *p == peer(1) => Some(addrs.clone()),
        _ => None,
    });
    assert_eq!(addrs, Some(vec![addr(1), forged]));
    // A peer that never proved itself follows its adverts.
    m.handle_discovered(&advert(2), secs(2));
    m.handle_discovered(&PeerAdvert { addrs: vec![forged], ..advert(2) }, secs(2));
    assert_eq!(m.db().peer(&peer(2)).map(|p| p.addr), Some(forged));
}

/// Random inputs, commands and work results in any order keep the
/// machine's promises: one result per operation, at most one operation per
/// game, work only for marked operations, the published state current, and
/// nothing served while a download or removal runs on it.
mod random {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Step {
        Discover(u8),
        Vanish(u8),
        List(u8, u8),
        Tick(u8),
        Download(u8, bool),
        Resolve(u8, bool),
        Install(u8),
        Uninstall(u8),
        Remove(u8),
        Cancel(u8),
        AnswerManifest(bool),
        Finish(u8, bool),
        Dirty(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u8..4).prop_map(Step::Discover),
            (1u8..4).prop_map(Step::Vanish),
            (1u8..4, 0u8..8).prop_map(|(p, g)| Step::List(p, g)),
            (0u8..30).prop_map(Step::Tick),
            (0u8..2, any::<bool>()).prop_map(|(g, i)| Step::Download(g, i)),
            (0u8..2, any::<bool>()).prop_map(|(g, f)| Step::Resolve(g, f)),
            (0u8..2).prop_map(Step::Install),
            (0u8..2).prop_map(Step::Uninstall),
            (0u8..2).prop_map(Step::Remove),
            (0u8..2).prop_map(Step::Cancel),
            any::<bool>().prop_map(Step::AnswerManifest),
            (0u8..4, any::<bool>()).prop_map(|(k, ok)| Step::Finish(k, ok)),
            (0u8..2).prop_map(Step::Dirty),
        ]
    }

    const GAMES: [&str; 2] = ["arena", "quest"];

    /// What a peer advertises for bit pattern `g`: each game at version 1
    /// or 2.
    fn advertised(g: u8) -> Vec<GameSummary> {
        let mut out = Vec::new();
        for (i, id) in GAMES.iter().enumerate() {
            match (g >> (2 * i)) & 3 {
                1 => out.push(summary(id, &manifest("1"))),
                2 => out.push(summary(id, &manifest("2"))),
                _ => {}
            }
        }
        out
    }

    /// The harness: the machine plus what the driver would track.
    struct World {
        m: PeerMachine,
        now: Timestamp,
        running: BTreeMap<OpToken, (GameId, Work)>,
        settled: BTreeSet<OpToken>,
        asks: Vec<(PeerId, GameId)>,
        last_published: Option<Arc<Snapshot>>,
        served: Option<Arc<crate::serve::ServeView>>,
    }

    use std::sync::Arc;

    impl World {
        fn drain(&mut self) {
            while let Some(out) = self.m.poll_output() {
                match out {
                    Output::Start { token, id, work } => {
                        assert!(self.m.operation(&id).is_some(), "work starts only for a marked operation");
                        assert!(!self.running.values().any(|(g, _)| *g == id), "two operations on {id}");
                        self.running.insert(token, (id, work));
                    }
                    Output::Settled { token, .. } => {
                        assert!(self.settled.insert(token), "{token:?} settled twice");
                        self.running.remove(&token);
                    }
                    Output::Holders { token, .. } => {
                        assert!(matches!(self.running.get(&token), Some((_, Work::Download { .. }))), "holder news for {token:?}");
                    }
                    Output::Ask { peer, query: Query::Manifest(id) } => self.asks.push((peer, id)),
                    Output::Snapshot(s) => self.last_published = Some(s),
                    Output::Serve(v) => self.served = Some(v),
                    _ => {}
                }
            }
            let current = self.m.snapshot();
            if let Some(p) = &self.last_published {
                assert_eq!(p.operations, current.operations, "the published operations are current");
            }
            if let Some(v) = &self.served {
                for (id, kind) in &current.operations {
                    if matches!(kind, OperationKind::Downloading | OperationKind::Removing) {
                        assert!(!v.games.contains_key(id), "{id} is served during {kind:?}");
                    }
                }
            }
        }

        fn finish(&mut self, k: u8, ok: bool) {
            let Some((&token, (id, work))) = self.running.iter().nth(k as usize % self.running.len().max(1)) else { return };
            let (id, work) = (id.clone(), work.clone());
            let outcome = match (work, ok) {
                (Work::Download { manifest, .. }, true) => Outcome::Downloaded(Ok(DownloadReport {
                    version: manifest.version.clone(),
                    stats: TransferStats { bytes: 1, reused: 0, secs: 1.0, peers: vec![] },
                    complete: true,
                })),
                (Work::Download { .. }, false) => Outcome::Downloaded(Err(DownloadError::Cancelled)),
                (Work::Install { update, .. }, true) => Outcome::Installed(Ok(InstallReport { update, kept: None })),
                (Work::Install { .. }, false) => Outcome::Installed(Err(InstallError::NotDownloaded(id.clone()))),
                (Work::Uninstall { .. }, true) => Outcome::Uninstalled(Ok(UninstallReport { kept: None })),
                (Work::Uninstall { .. }, false) => Outcome::Uninstalled(Err(UninstallError::NotInstalled(id.clone()))),
                (Work::Remove, true) => Outcome::Removed(Ok(())),
                (Work::Remove, false) => Outcome::Removed(Err(RemoveError::NotInCatalog(id.clone()))),
            };
            let settled = match &outcome {
                Outcome::Downloaded(Ok(_)) => Some(local(id.as_str(), Some("1"), false)),
                Outcome::Installed(Ok(_)) => Some(local(id.as_str(), Some("1"), true)),
                Outcome::Uninstalled(Ok(_)) => Some(local(id.as_str(), Some("1"), false)),
                Outcome::Removed(Ok(())) => None,
                _ => self.m.db().local_game(&id).cloned(),
            };
            self.m.handle_finished(token, Ok(settled), outcome);
        }

        fn apply(&mut self, step: Step) {
            let gid_of = |g: u8| gid(GAMES[g as usize % 2]);
            match step {
                Step::Discover(p) => self.m.handle_discovered(&advert(p), self.now),
                Step::Vanish(p) => self.m.handle_vanished(&peer(p)),
                Step::List(p, g) => self.m.handle_answer(peer(p), Query::ListGames, Ok(Response::Games(advertised(g))), self.now),
                Step::Tick(s) => {
                    self.now = self.now + Duration::from_secs(u64::from(s));
                    if self.now >= self.m.poll_timeout() {
                        self.m.handle_timeout(self.now);
                    }
                }
                Step::Download(g, install) => drop(self.m.download(&gid_of(g), DownloadOptions { install, ..Default::default() })),
                Step::Resolve(g, fresh) => drop(self.m.resolve(&gid_of(g), fresh)),
                Step::Install(g) => drop(self.m.install(&gid_of(g), false)),
                Step::Uninstall(g) => drop(self.m.uninstall(&gid_of(g), false)),
                Step::Remove(g) => drop(self.m.remove(&gid_of(g))),
                Step::Cancel(g) => drop(self.m.cancel(&gid_of(g))),
                Step::AnswerManifest(ok) => {
                    if !self.asks.is_empty() {
                        let (p, id) = self.asks.remove(0);
                        let v = self.m.db().peer(&p).and_then(|r| r.games.get(&id)).map(|s| s.version.as_str().to_owned());
                        let answer = match (ok, v) {
                            (true, Some(v)) => manifest_reply(&manifest(&v), id.as_str()),
                            _ => Err("timed out".into()),
                        };
                        self.m.handle_answer(p, Query::Manifest(id), answer, self.now);
                    }
                }
                Step::Finish(k, ok) => self.finish(k, ok),
                Step::Dirty(g) => self.m.handle_local_dirty(BTreeSet::from([gid_of(g)])),
            }
            self.drain();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn random_inputs_keep_the_machines_promises(steps in proptest::collection::vec(step(), 1..120)) {
            let m = machine();
            let mut w = World {
                m,
                now: secs(0),
                running: BTreeMap::new(),
                settled: BTreeSet::new(),
                asks: Vec::new(),
                last_published: None,
                served: None,
            };
            for s in steps {
                w.apply(s);
            }
            // Every operation still running ends when its work reports.
            while !w.running.is_empty() {
                w.finish(0, false);
                w.drain();
            }
            // Nothing waits for a manifest forever once every holder answered.
            while !w.asks.is_empty() {
                w.apply(Step::AnswerManifest(false));
            }
            prop_assert!(w.m.snapshot().operations.is_empty(), "left over: {:?}", w.m.snapshot().operations);
        }
    }
}

#[test]
fn a_new_identity_forgets_every_peer_and_dials_static_addresses_again() {
    let cfg = MachineConfig {
        local_id: peer(0),
        catalog: Catalog::default(),
        static_peers: vec![addr(9)],
        ping_interval: Duration::from_secs(5),
        peer_timeout: Duration::from_secs(20),
        fallback_scan: Duration::from_secs(300),
    };
    let mut m = PeerMachine::new(cfg, secs(0));
    m.handle_full_scan(LocalLibrary::default());
    m.handle_dialed(addr(9), DialOutcome::Connected(peer(9)), secs(0));
    m.handle_discovered(&advert(1), secs(0));
    drain(&mut m);

    m.handle_identity_changed(peer(7), secs(3));
    let out = drain(&mut m);
    for p in [peer(1), peer(9)] {
        assert!(events(&out).contains(&PeerEvent::PeerLeft(p)), "{out:?}");
        assert!(out.contains(&Output::Disconnect(p)));
    }
    assert!(m.snapshot().peers.is_empty());
    m.handle_timeout(secs(3));
    assert!(drain(&mut m).iter().any(|o| matches!(o, Output::Dial { addr: a, .. } if *a == addr(9))), "static dialed at once");
    // Our new identity is us; the old one is a stranger now (another
    // process may serve the old directory with it).
    m.handle_discovered(&advert(7), secs(4));
    m.handle_discovered(&advert(0), secs(4));
    let ids: Vec<PeerId> = m.snapshot().peers.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![peer(0)]);
}

fn advert_with(n: u8, rev: u64, games: u32) -> PeerAdvert {
    let mut a = advert(n);
    LibraryHint { rev, games }.write(&mut a.meta);
    a
}

/// The peers pinged in `out`, with their nonces.
fn pinged(out: &[Output]) -> BTreeMap<PeerId, u64> {
    asks(out)
        .into_iter()
        .filter_map(|(p, q)| match q {
            Query::Ping { nonce } => Some((p, nonce)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_advert_saying_it_serves_nothing_is_not_listed() {
    let mut m = machine();
    m.handle_discovered(&advert_with(1, 1, 0), secs(1));
    let out = drain(&mut m);
    assert!(asks(&out).is_empty(), "{out:?}");
    assert!(events(&out).contains(&PeerEvent::PeerJoined { peer: peer(1), addr: addr(1) }));
    m.handle_discovered(&advert_with(2, 1, 3), secs(1));
    assert_eq!(asks(&drain(&mut m)), vec![(peer(2), Query::ListGames)]);
}

#[test]
fn a_new_library_revision_in_an_advert_is_listed_a_little_later() {
    let mut m = machine();
    m.handle_discovered(&advert_with(1, 1, 0), secs(1));
    drain(&mut m);
    // The same news again costs nothing.
    m.handle_discovered(&advert_with(1, 1, 0), secs(2));
    assert!(asks(&drain(&mut m)).is_empty());
    m.handle_timeout(secs(2));
    drain(&mut m);
    m.handle_discovered(&advert_with(1, 2, 1), secs(2));
    assert!(asks(&drain(&mut m)).is_empty(), "spread, not at once");
    // One advertised peer: the spread is 10 ms.
    let due = m.poll_timeout();
    assert!(due >= secs(2) && due <= secs(2) + Duration::from_millis(10), "{due:?}");
    m.handle_timeout(due);
    assert_eq!(asks(&drain(&mut m)), vec![(peer(1), Query::ListGames)]);
    // Saying it serves nothing while we know games of it is news too.
    m.handle_answer(peer(1), Query::ListGames, Ok(Response::Games(vec![summary("arena", &manifest("1"))])), due);
    m.handle_discovered(&advert_with(1, 3, 0), due);
    m.handle_timeout(due + LIST_SPREAD_MAX);
    assert!(asks(&drain(&mut m)).contains(&(peer(1), Query::ListGames)));
}

#[test]
fn advertised_peers_are_probed_in_rotation_and_holders_every_tick() {
    let mut m = machine();
    let v1 = manifest("1");
    running_download(&mut m, &v1);
    for n in 10..50 {
        m.handle_discovered(&advert_with(n, 1, 0), secs(2));
    }
    drain(&mut m);
    let mut probed = BTreeSet::new();
    for tick in 1..=3u64 {
        let now = secs(5 * tick);
        m.handle_timeout(now);
        let out = pinged(&drain(&mut m));
        assert!(out.contains_key(&peer(1)) && out.contains_key(&peer(2)), "holders every tick: {out:?}");
        let others = out.keys().filter(|p| p.0[0] >= 10).count();
        assert!(others <= PROBES_PER_TICK, "tick {tick}: {others} probes");
        for (p, nonce) in out {
            if p.0[0] >= 10 {
                probed.insert(p);
            }
            m.handle_answer(p, Query::Ping { nonce }, Ok(Response::Pong { nonce, library_rev: 1 }), now);
        }
        drain(&mut m);
    }
    assert_eq!(probed.len(), 40, "every advertised peer within three ticks");
    // Silence alone does not make an advertised peer leave.
    m.handle_timeout(secs(60));
    assert!(!events(&drain(&mut m)).iter().any(|e| matches!(e, PeerEvent::PeerLeft(_))));
}

#[test]
fn an_advertised_peer_leaves_after_two_failed_pings() {
    let mut m = machine();
    m.handle_discovered(&advert_with(1, 1, 0), secs(1));
    drain(&mut m);
    let fail = |m: &mut PeerMachine, now: Timestamp| {
        m.handle_timeout(now);
        let out = drain(m);
        let nonce = pinged(&out)[&peer(1)];
        m.handle_answer(peer(1), Query::Ping { nonce }, Err("timed out".into()), now);
        events(&drain(m))
    };
    assert!(!fail(&mut m, secs(5)).contains(&PeerEvent::PeerLeft(peer(1))), "one failure is doubt");
    assert!(fail(&mut m, secs(10)).contains(&PeerEvent::PeerLeft(peer(1))));
}
