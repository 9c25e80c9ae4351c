//! Start-up, the command loop, the long-lived tasks and shutdown.

use super::events::{PeerCommand, PeerEvent};
use super::state::Shared;
use super::{download, ops, peers, server};
use lanspread_core::game::GameId;
use lanspread_core::protocol::PROTOCOL_VERSION;
use lanspread_core::txn;
use lanspread_ports::{DiscoveryEvent, PeerAdvert, RelPath, WatchEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub(crate) async fn run(sh: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<PeerCommand>, done: tokio::sync::watch::Sender<bool>) {
    startup(&sh).await;
    let mut long = JoinSet::new();
    long.spawn(server::run(sh.clone()));
    long.spawn(discovery(sh.clone()));
    long.spawn(liveness(sh.clone()));
    long.spawn(monitor(sh.clone()));
    let mut work = JoinSet::new();
    while let Some(cmd) = commands.recv().await {
        if cmd == PeerCommand::Shutdown {
            break;
        }
        handle(&sh, cmd, &mut work).await;
        while work.try_join_next().is_some() {}
    }
    // Shutdown: signal every task, let operations stop at a safe point.
    let _ = sh.shutdown.send(true);
    let cancels: Vec<_> = sh.st().cancels.values().cloned().collect();
    for c in cancels {
        let _ = c.send(true);
    }
    while work.join_next().await.is_some() {}
    sh.ports.discovery.shutdown().await;
    sh.ports.transport.shutdown().await;
    long.abort_all();
    while long.join_next().await.is_some() {}
    sh.emit(PeerEvent::Stopped);
    let _ = done.send(true);
}

async fn startup(sh: &Arc<Shared>) {
    let fs = sh.fs();
    for (id, r) in txn::recover_all(fs.as_ref(), &sh.cfg.catalog).await {
        match r {
            Ok(report) => {
                if report.changed() {
                    tracing::info!("recovered {id}: {}", report.actions.join("; "));
                }
                for p in &report.problems {
                    sh.emit(PeerEvent::RuntimeFailure(format!("recovery of {id} left something alone: {p}")));
                }
            }
            Err(e) => sh.emit(PeerEvent::RuntimeFailure(format!("recovery of {id}: {e}"))),
        }
    }
    full_scan(sh).await;
    sh.emit_snapshot();
}

/// Scans every root except those with an active operation.
async fn full_scan(sh: &Arc<Shared>) {
    let fs = sh.fs();
    let result = {
        let mut scanner = sh.scanner.lock().await;
        if scanner.index == Default::default() {
            scanner.index = lanspread_core::scan::ScanIndex::load(fs.as_ref()).await;
        }
        let r = scanner.scan_all(fs.as_ref(), &sh.cfg.catalog).await;
        if r.is_ok() {
            if let Err(e) = scanner.index.save(fs.as_ref()).await {
                tracing::debug!("saving scan index: {e}");
            }
        }
        r
    };
    match result {
        Ok(mut lib) => {
            let changed = {
                let mut st = sh.st();
                // Hold the state of games with an active operation.
                for id in st.ops.keys() {
                    match st.db.local_game(id) {
                        Some(g) => {
                            lib.games.insert(id.clone(), g.clone());
                        }
                        None => {
                            lib.games.remove(id);
                        }
                    }
                }
                let changed: Vec<GameId> = {
                    let old = &st.db.local().games;
                    let ids: BTreeSet<&GameId> = old.keys().chain(lib.games.keys()).collect();
                    ids.into_iter().filter(|id| old.get(*id) != lib.games.get(*id)).cloned().collect()
                };
                st.db.set_local(lib);
                changed
            };
            sh.refresh_serve_view();
            if !changed.is_empty() {
                sh.emit(PeerEvent::LocalLibraryChanged(changed));
            }
        }
        Err(e) => sh.emit(PeerEvent::RuntimeFailure(format!("scanning the game directory: {e}"))),
    }
}

async fn handle(sh: &Arc<Shared>, cmd: PeerCommand, work: &mut JoinSet<()>) {
    match cmd {
        PeerCommand::ListGames => sh.emit_snapshot(),
        PeerCommand::GetPeerCount => {
            let n = sh.st().db.peer_count();
            sh.emit(PeerEvent::PeerCount(n));
        }
        PeerCommand::GetGame(id) | PeerCommand::FetchLatestFromPeers(id) => {
            let sh = sh.clone();
            work.spawn(async move {
                if let Err(reason) = download::resolve(&sh, &id).await {
                    sh.emit(PeerEvent::DownloadFailed { id, reason });
                }
            });
        }
        PeerCommand::DownloadGameFiles(id) => {
            work.spawn(download::download(sh.clone(), id));
        }
        PeerCommand::InstallGame { id, adopt } => {
            work.spawn(ops::install_with(sh.clone(), id, adopt));
        }
        PeerCommand::UninstallGame { id, adopt } => {
            work.spawn(ops::uninstall(sh.clone(), id, adopt));
        }
        PeerCommand::RemoveDownloadedGame(id) => {
            work.spawn(ops::remove(sh.clone(), id));
        }
        PeerCommand::CancelDownload(id) => {
            let c = sh.st().cancels.get(&id).cloned();
            if let Some(c) = c {
                let _ = c.send(true);
            }
        }
        PeerCommand::SetGameDir(dir) => {
            let busy = !sh.st().ops.is_empty();
            if busy {
                sh.emit(PeerEvent::RuntimeFailure("cannot change the game directory while operations run".into()));
                return;
            }
            let Some(provider) = sh.ports.fs_provider.clone() else {
                sh.emit(PeerEvent::RuntimeFailure("this runtime cannot change its game directory".into()));
                return;
            };
            match provider.open(&dir) {
                Ok(fs) => {
                    sh.set_fs(fs);
                    *sh.scanner.lock().await = Default::default();
                    startup(sh).await;
                }
                Err(e) => sh.emit(PeerEvent::RuntimeFailure(format!("game directory {dir}: {e}"))),
            }
        }
        PeerCommand::Shutdown => {}
    }
}

/// Advertise ourselves, track peers, dial static peers.
async fn discovery(sh: Arc<Shared>) {
    let me = PeerAdvert {
        id: sh.ports.transport.local_id(),
        addrs: vec![sh.ports.transport.local_addr()],
        protocol_version: u32::from(PROTOCOL_VERSION),
        meta: BTreeMap::new(),
    };
    if let Err(e) = sh.ports.discovery.advertise(me).await {
        sh.emit(PeerEvent::RuntimeFailure(format!("advertising on the LAN failed: {e}")));
    }
    for addr in sh.cfg.static_peers.clone() {
        let sh2 = sh.clone();
        sh.spawn(async move {
            let sh = sh2;
            let mut stop = sh.shutdown_signal();
            loop {
                match peers::dial_static(&sh, addr).await {
                    Ok(id) => tracing::debug!("static peer {addr} is {id}"),
                    Err(e) => tracing::debug!("static peer {addr}: {e}"),
                }
                // Keep trying while it is not (or no longer) known: the
                // peer that proved itself at `addr` must still be in the DB
                // (its preferred address may have become another one).
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.changed() => return,
                        _ = sh.ports.clock.sleep(sh.cfg.ping_interval) => {}
                    }
                    let known = {
                        let st = sh.st();
                        let learned = peers::normalize_addr(addr).and_then(|a| st.known_ids.get(&a));
                        learned.is_some_and(|id| st.db.peer(id).is_some())
                    };
                    if !known {
                        break;
                    }
                }
            }
        });
    }
    let mut stop = sh.shutdown_signal();
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.changed() => break,
            e = sh.ports.discovery.next_event() => match e { Some(e) => e, None => break },
        };
        match ev {
            DiscoveryEvent::Up(advert) => {
                if advert.protocol_version != u32::from(PROTOCOL_VERSION) {
                    tracing::info!("ignoring peer {} speaking protocol v{}", advert.id, advert.protocol_version);
                    continue;
                }
                peers::learn_peer_addrs(&sh, advert.id, &advert.addrs);
            }
            DiscoveryEvent::Down(id) => peers::forget_peer(&sh, &id),
        }
    }
}

/// Periodic pings; prune peers silent for too long.
async fn liveness(sh: Arc<Shared>) {
    let mut stop = sh.shutdown_signal();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = sh.ports.clock.sleep(sh.cfg.ping_interval) => {}
        }
        let ids: Vec<_> = sh.st().db.peers().map(|(id, _)| *id).collect();
        let mut probes = JoinSet::new();
        for id in ids {
            let sh = sh.clone();
            probes.spawn(async move { peers::ping(&sh, id).await });
        }
        while probes.join_next().await.is_some() {}
        let deadline = sh.ports.clock.now().as_duration().saturating_sub(sh.cfg.peer_timeout);
        let stale = sh.st().db.stale_peers(lanspread_ports::Timestamp::from_duration(deadline));
        for id in stale {
            tracing::info!("peer {id} is silent; pruning it");
            peers::forget_peer(&sh, &id);
        }
    }
}

/// Watches the game directory and each game root (non-recursively),
/// rescans only affected ids, holds games with an active operation, and
/// falls back to a full scan periodically.
async fn monitor(sh: Arc<Shared>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<WatchEvent>();
    let mut watched: BTreeSet<RelPath> = BTreeSet::new();
    let mut watchers = JoinSet::new();
    let mut stop = sh.shutdown_signal();
    let mut next_full = sh.ports.clock.now() + sh.cfg.fallback_scan;
    loop {
        // Keep one watcher on the game directory and on each root.
        let mut wanted = vec![RelPath::root()];
        wanted.extend(sh.st().db.local().games.keys().map(|id| id.root()));
        for dir in wanted {
            if watched.contains(&dir) {
                continue;
            }
            match sh.fs().watch(&dir).await {
                Ok(mut w) => {
                    watched.insert(dir.clone());
                    let tx = tx.clone();
                    watchers.spawn(async move {
                        while let Some(ev) = w.next().await {
                            if tx.send(ev).is_err() {
                                break;
                            }
                        }
                        dir
                    });
                }
                Err(e) => tracing::debug!("watching {dir}: {e}"),
            }
        }
        let now = sh.ports.clock.now();
        let until_full = next_full.saturating_since(now);
        let mut dirty: BTreeSet<GameId> = BTreeSet::new();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ended = watchers.join_next(), if !watchers.is_empty() => {
                if let Some(Ok(dir)) = ended { watched.remove(&dir); }
                continue;
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                collect(&sh, &ev, &mut dirty);
                // Coalesce a burst of events.
                sh.ports.clock.sleep(sh.cfg.watch_debounce).await;
                while let Ok(ev) = rx.try_recv() {
                    collect(&sh, &ev, &mut dirty);
                }
            }
            _ = sh.ports.clock.sleep(until_full) => {
                next_full = sh.ports.clock.now() + sh.cfg.fallback_scan;
                full_scan(&sh).await;
                sh.emit_snapshot();
                continue;
            }
        }
        let mut changed = Vec::new();
        for id in dirty {
            if sh.st().ops.contains_key(&id) {
                continue; // held: the operation's settle-refresh will rescan it
            }
            if sh.rescan_game(&id).await {
                changed.push(id);
            }
        }
        if !changed.is_empty() {
            sh.emit(PeerEvent::LocalLibraryChanged(changed));
            sh.emit_snapshot();
        }
    }
    watchers.abort_all();
}

fn collect(sh: &Shared, ev: &WatchEvent, dirty: &mut BTreeSet<GameId>) {
    let name = if ev.dir.is_root() { ev.name.as_deref() } else { ev.dir.components().next() };
    if let Some(entry) = name.and_then(|n| sh.cfg.catalog.get_str(n)) {
        dirty.insert(entry.id.clone());
    }
}
