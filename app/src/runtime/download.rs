//! The download pipeline: resolve the latest manifest, then pull verified
//! chunks from every peer holding that version, driven by the sans-IO
//! scheduler of `lanspread_core::sched`, inside the sentinel transaction.

use super::events::{OperationKind, PeerEvent, PeerShare, TransferStats};
use super::peers;
use super::state::Shared;
use bytes::Bytes;
use lanspread_core::game::{EntryKind, GameId, Manifest};
use lanspread_core::protocol::{Request, Response};
use lanspread_core::scan::{self, chunk_hash};
use lanspread_core::sched::{Action, ChunkFailure, Scheduler};
use lanspread_core::txn;
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{FileHandle, FsErrorKind, PeerId, RelPath};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinSet;

/// Asks the holders of the latest version for its manifest (pinned to the
/// majority digest) and emits `GotGameFiles`.
pub(crate) async fn resolve(sh: &Arc<Shared>, id: &GameId) -> Result<(Manifest, Vec<PeerId>), String> {
    let sources = sh.st().db.download_sources(id).ok_or_else(|| format!("no peer on the LAN has {id}"))?;
    if !sh.cfg.catalog.contains(id) {
        return Err(format!("{id} is not in the catalog"));
    }
    let cached = sh.st().db.manifest_with_digest(id, &sources.digest).cloned();
    let manifest = match cached {
        Some(m) => m,
        None => {
            let mut last_err = String::from("no holder answered");
            let mut found = None;
            for peer in &sources.peers {
                match peers::request(sh, *peer, &Request::GetGame { id: id.clone() }).await {
                    Ok(Response::Game(details)) => {
                        let m = details.manifest;
                        if m.digest() != sources.digest || m.version != sources.version {
                            last_err = format!("peer {peer} sent a manifest that differs from the one it advertises");
                            continue;
                        }
                        if let Err(e) = m.validate(u64::MAX) {
                            last_err = format!("peer {peer} sent an invalid manifest: {e}");
                            continue;
                        }
                        sh.st().db.set_peer_manifest(peer, id, m.clone());
                        found = Some(m);
                        break;
                    }
                    Ok(other) => last_err = format!("peer {peer} answered {other:?}"),
                    Err(e) => last_err = format!("peer {peer}: {e}"),
                }
            }
            found.ok_or(last_err)?
        }
    };
    let peers = sources.peers.clone();
    sh.st().resolved.insert(id.clone(), (manifest.clone(), peers.clone()));
    sh.emit(PeerEvent::GotGameFiles {
        id: id.clone(),
        version: manifest.version.clone(),
        files: manifest.files.len(),
        bytes: manifest.total_size(),
        peers: peers.clone(),
    });
    Ok((manifest, peers))
}

/// How often a running download looks for peers that joined or left.
const MEMBERSHIP_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

struct PlanChunk {
    file: usize,
    offset: u64,
    len: u64,
    hash: [u8; 32],
}

enum FetchError {
    Peer(ChunkFailure),
    Local(String),
}

/// Runs a whole download (resolving first if needed), then installs if
/// configured. Emits the lifecycle events.
pub(crate) async fn download(sh: Arc<Shared>, id: GameId) {
    if let Err(kind) = sh.begin_operation(&id, OperationKind::Downloading) {
        sh.emit(PeerEvent::DownloadFailed { id, reason: format!("another operation ({kind:?}) is running on this game") });
        return;
    }
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    sh.st().cancels.insert(id.clone(), cancel_tx);
    let result = run_download(&sh, &id, cancel_rx).await;
    sh.st().cancels.remove(&id);
    match result {
        Ok((manifest, stats)) => {
            sh.st().resolved.remove(&id);
            let version = manifest.version.clone();
            sh.finish_operation(&id, PeerEvent::DownloadFinished { id: id.clone(), version, stats }).await;
            if sh.cfg.auto_install && !sh.is_shutting_down() {
                super::ops::install(sh.clone(), id).await;
            }
        }
        Err(reason) => {
            sh.finish_operation(&id, PeerEvent::DownloadFailed { id: id.clone(), reason }).await;
        }
    }
}

async fn run_download(
    sh: &Arc<Shared>,
    id: &GameId,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<(Manifest, TransferStats), String> {
    let resolved = sh.st().resolved.get(id).cloned();
    let (manifest, sources) = match resolved {
        Some(r) => r,
        None => resolve(sh, id).await?,
    };
    let fs = sh.fs();
    let total = manifest.total_size();
    if let Ok(Some(free)) = fs.free_space().await {
        if free < total {
            return Err(format!("not enough disk space: {id} needs {total} bytes, {free} are free"));
        }
    }
    let root = id.root();
    let clock = sh.ports.clock.clone();
    let t0 = clock.now();
    // A root that does not exist yet holds nothing stale to prune.
    let fresh = matches!(fs.metadata(&root).await, Err(e) if e.kind == FsErrorKind::NotFound);
    txn::begin_download(fs.as_ref(), &root, &manifest).await.map_err(|e| e.to_string())?;
    let t1 = clock.now();
    let pruned = if fresh { Ok(0) } else { txn::prune_stale(fs.as_ref(), &root, &manifest).await };
    match pruned {
        Ok(0) => {}
        Ok(n) => tracing::info!("{id}: removed {n} entries the new version does not have"),
        Err(e) => {
            let _ = txn::abort_download(fs.as_ref(), &root).await;
            return Err(e.to_string());
        }
    }
    // Data already in place (an interrupted attempt, or the old version's
    // unchanged chunks at the same offsets) is verified and not fetched.
    let reusable = if fresh {
        Vec::new()
    } else {
        let index = sh.scanner.lock().await.index.clone();
        let known = |path: &RelPath, size: u64, mtime: Option<u128>| index.known_chunks(id, path, size, mtime).map(<[_]>::to_vec);
        scan::reusable_chunks(fs.as_ref(), &root, &manifest, &known).await
    };
    let t2 = clock.now();
    let result = transfer(sh, id, &manifest, &sources, &reusable, &mut cancel).await;
    match result {
        Ok((sentinel, stats)) => {
            let t3 = clock.now();
            txn::commit_download(fs.as_ref(), &root, &manifest, &sentinel).await.map_err(|e| e.to_string())?;
            let t4 = clock.now();
            remember_verified(sh, id, &manifest).await;
            let t5 = clock.now();
            tracing::debug!(
                "{id}: begin {:?}, prune and reuse check {:?}, transfer {:?}, commit {:?}, index {:?}",
                t1.saturating_since(t0),
                t2.saturating_since(t1),
                t3.saturating_since(t2),
                t4.saturating_since(t3),
                t5.saturating_since(t4)
            );
            Ok((manifest, stats))
        }
        Err(e) => {
            if let Err(e2) = txn::abort_download(fs.as_ref(), &root).await {
                sh.emit(PeerEvent::RuntimeFailure(format!("cleaning up the download of {id}: {e2}")));
            }
            Err(e)
        }
    }
}

async fn transfer(
    sh: &Arc<Shared>,
    id: &GameId,
    manifest: &Manifest,
    sources: &[PeerId],
    reusable: &[Vec<bool>],
    cancel: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(Vec<u8>, TransferStats), String> {
    let clock = sh.ports.clock.clone();
    let started = clock.now();
    let mut plan = Vec::new();
    // Plan indices of the chunks already in place, and their bytes.
    let mut in_place = Vec::new();
    let mut reused = 0u64;
    for (i, f) in manifest.files.iter().enumerate() {
        if f.kind != EntryKind::File {
            continue;
        }
        for c in 0..f.chunks.len() {
            let (offset, len) = f.chunk_range(c as u64).ok_or("inconsistent manifest")?;
            if reusable.get(i).and_then(|r| r.get(c)) == Some(&true) {
                in_place.push(plan.len());
                reused += len;
            }
            plan.push(PlanChunk { file: i, offset, len, hash: f.chunks[c] });
        }
    }
    let sentinel_file = manifest.files.iter().position(|f| f.is_sentinel()).ok_or("manifest has no version.ini")?;
    let mut sentinel = vec![0u8; manifest.files[sentinel_file].size as usize];
    let mut sched = Scheduler::new(plan.iter().map(|c| c.len), sh.cfg.sched.clone());
    if !in_place.is_empty() {
        tracing::info!(
            "{id}: {} of {} chunks ({reused} bytes) are already in place and verified; fetching the rest",
            in_place.len(),
            plan.len()
        );
    }
    sched.mark_done_many(in_place.iter().copied());
    let banned = sh.st().banned.clone();
    let digest = manifest.digest();
    let mut usable: Vec<PeerId> = sources.iter().filter(|p| !banned.contains(p)).copied().collect();
    for p in &usable {
        sched.handle_peer_added(*p, clock.now());
    }
    if usable.is_empty() {
        return Err(format!("no usable peer holds {id}"));
    }
    sh.emit(PeerEvent::DownloadBegin {
        id: id.clone(),
        version: manifest.version.clone(),
        total: sched.total_bytes(),
        peers: usable.clone(),
    });

    let mut handles: BTreeMap<usize, Writer> = BTreeMap::new();
    let mut tasks: JoinSet<(PeerId, usize, Result<Option<Bytes>, FetchError>)> = JoinSet::new();
    let mut running: BTreeMap<(PeerId, usize), tokio::task::AbortHandle> = BTreeMap::new();
    let mut next_progress = clock.now() + sh.cfg.progress_interval;
    let mut next_membership = clock.now() + MEMBERSHIP_CHECK;
    // Chunks still missing per file: a complete file is synced at once, in
    // the background, so the commit finds little left to flush.
    let mut missing: BTreeMap<usize, usize> = BTreeMap::new();
    for c in &plan {
        *missing.entry(c.file).or_default() += 1;
    }
    let mut syncs = JoinSet::new();
    let mut arrived = vec![false; plan.len()];
    for &i in &in_place {
        arrived[i] = true;
        if let Some(n) = missing.get_mut(&plan[i].file) {
            *n -= 1;
        }
    }
    let mut stop = sh.shutdown_signal();
    let outcome: Result<(), String> = loop {
        let now = clock.now();
        let mut end = None;
        while let Some(action) = sched.poll_action(now) {
            match action {
                Action::Request { peer, chunk } => {
                    let c = &plan[chunk];
                    let f = &manifest.files[c.file];
                    let handle = if c.file == sentinel_file {
                        None
                    } else if let Some(h) = handles.get(&c.file) {
                        Some(h.clone())
                    } else {
                        let path = id.root().join(f.path.as_str()).map_err(|e| e.to_string())?;
                        let h: Writer = Arc::new(OpenFile { path, handle: OnceCell::new() });
                        handles.insert(c.file, h.clone());
                        Some(h)
                    };
                    let req = Request::GetGameFileChunk { id: id.clone(), path: f.path.clone(), offset: c.offset, len: c.len };
                    let (offset, len, hash) = (c.offset, c.len, c.hash);
                    let sh2 = sh.clone();
                    let abort = tasks.spawn(async move {
                        let r = fetch(&sh2, peer, req, offset, len, hash, handle).await;
                        (peer, chunk, r)
                    });
                    running.insert((peer, chunk), abort);
                }
                Action::Cancel { peer, chunk } => {
                    if let Some(a) = running.remove(&(peer, chunk)) {
                        a.abort();
                    }
                }
                Action::PeerBackedOff { peer, until } => {
                    // Requests keep failing or timing out: the connection may
                    // be dead without knowing it (a peer that lost power sends
                    // no close). Dial afresh after the backoff.
                    tracing::debug!("backing off {peer} for {:?}", until - now);
                    peers::drop_connection(sh, &peer);
                }
                Action::PeerBanned { peer, reason } => {
                    sh.st().banned.insert(peer);
                    peers::forget_peer(sh, &peer);
                    sh.emit(PeerEvent::PeerBanned { peer, reason });
                }
                Action::Complete => end = Some(Ok(())),
                Action::Failed(why) => end = Some(Err(format!("download of {id} failed: {why}"))),
            }
        }
        if let Some(e) = end {
            break e;
        }
        let wake = [sched.poll_timeout(), Some(next_progress), Some(next_membership)].into_iter().flatten().min().unwrap_or(next_progress);
        let sleep_for = wake.saturating_since(clock.now());
        tokio::select! {
            biased;
            _ = stop.changed() => break Err("the peer is shutting down".into()),
            _ = cancel.changed() => break Err("cancelled".into()),
            joined = tasks.join_next(), if !tasks.is_empty() => {
                let Some(Ok((peer, chunk, result))) = joined else { continue };
                running.remove(&(peer, chunk));
                let now = clock.now();
                match result {
                    Ok(data) => {
                        if let Some(d) = data {
                            let off = plan[chunk].offset as usize;
                            sentinel[off..off + d.len()].copy_from_slice(&d);
                        }
                        sched.handle_chunk_done(&peer, chunk, now);
                        let file = plan[chunk].file;
                        // Endgame copies of one chunk may both arrive: count it once.
                        let first = !std::mem::replace(&mut arrived[chunk], true);
                        if let Some(n) = missing.get_mut(&file).filter(|_| first) {
                            *n -= 1;
                            if *n == 0 {
                                if let Some(h) = handles.get(&file).cloned() {
                                    syncs.spawn(async move {
                                        if let Some(h) = h.handle.get() {
                                            let _ = h.lock().await.sync().await;
                                        }
                                    });
                                }
                            }
                        }
                    }
                    Err(FetchError::Peer(f)) => {
                        if matches!(f, ChunkFailure::Transport(_)) && sh.st().db.peer(&peer).is_none() {
                            sched.handle_peer_removed(&peer, now);
                        } else {
                            sched.handle_chunk_failed(&peer, chunk, f, now);
                        }
                    }
                    Err(FetchError::Local(e)) => break Err(e),
                }
            }
            _ = clock.sleep(sleep_for) => sched.handle_timeout(clock.now()),
        }
        let now = clock.now();
        if now >= next_membership {
            // Peers pruned by liveness leave the download; peers that joined
            // the LAN with the same manifest join it.
            next_membership = now + MEMBERSHIP_CHECK;
            let (gone, joined) = {
                let st = sh.st();
                let gone: Vec<PeerId> = usable.iter().filter(|p| st.db.peer(p).is_none()).copied().collect();
                let joined: Vec<PeerId> = st
                    .db
                    .download_sources(id)
                    .filter(|s| s.digest == digest)
                    .map(|s| s.peers.into_iter().filter(|p| !usable.contains(p) && !st.banned.contains(p)).collect())
                    .unwrap_or_default();
                (gone, joined)
            };
            for p in gone {
                sched.handle_peer_removed(&p, now);
                usable.retain(|u| *u != p);
            }
            for p in joined {
                sched.handle_peer_added(p, now);
                usable.push(p);
            }
        }
        if now >= next_progress {
            next_progress = now + sh.cfg.progress_interval;
            sh.emit(progress(id, &sched));
        }
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    while syncs.join_next().await.is_some() {}
    outcome?;
    sh.emit(progress(id, &sched));
    let secs = clock.now().saturating_since(started).as_secs_f64();
    Ok((sentinel, TransferStats { bytes: sched.total_bytes() - reused, reused, secs, peers: shares(&sched) }))
}

/// A file of the download, opened (and created) by the first chunk that
/// arrives for it, off the scheduling loop. Its writes take turns:
/// concurrent `pwrite`s to one inode only spin on the kernel's inode lock
/// (7 % of the downloader's CPU in the loopback profile), while chunks of
/// different files still write in parallel.
struct OpenFile {
    path: RelPath,
    handle: OnceCell<Mutex<Box<dyn FileHandle>>>,
}

type Writer = Arc<OpenFile>;

fn progress(id: &GameId, sched: &Scheduler) -> PeerEvent {
    PeerEvent::DownloadProgress {
        id: id.clone(),
        done: sched.done_bytes(),
        total: sched.total_bytes(),
        rate: sched.total_rate(),
        peers: shares(sched),
    }
}

fn shares(sched: &Scheduler) -> Vec<PeerShare> {
    sched.peer_stats().into_iter().map(|(peer, s)| PeerShare { peer, bytes: s.bytes, rate: s.rate }).collect()
}

async fn fetch(
    sh: &Arc<Shared>,
    peer: PeerId,
    req: Request,
    offset: u64,
    len: u64,
    hash: [u8; 32],
    handle: Option<Writer>,
) -> Result<Option<Bytes>, FetchError> {
    let conn = peers::connection(sh, peer).await.map_err(|e| FetchError::Peer(ChunkFailure::Transport(e)))?;
    let data = match wire::request_data(conn.as_ref(), &req, len).await {
        Ok(d) => d,
        Err(WireError::Length { expected, got }) => {
            return Err(FetchError::Peer(ChunkFailure::Corrupt(format!("announced {got} bytes instead of {expected}"))))
        }
        Err(e @ WireError::Transport(_)) => {
            peers::drop_connection(sh, &peer);
            return Err(FetchError::Peer(ChunkFailure::Transport(e.to_string())));
        }
        Err(e) => return Err(FetchError::Peer(ChunkFailure::Transport(e.to_string()))),
    };
    if chunk_hash(&data) != hash {
        return Err(FetchError::Peer(ChunkFailure::Corrupt(format!("hash mismatch at offset {offset}"))));
    }
    match handle {
        None => Ok(Some(data)),
        Some(h) => {
            let fs = sh.fs();
            let file = h
                .handle
                .get_or_try_init(|| async { fs.open_write(&h.path).await.map(Mutex::new) })
                .await
                .map_err(|e| FetchError::Local(format!("opening {}: {e}", h.path)))?;
            file.lock()
                .await
                .write_at(offset, data)
                .await
                .map_err(|e| FetchError::Local(format!("writing the download to disk failed: {e}")))?;
            Ok(None)
        }
    }
}

/// Every chunk was verified against the manifest: tell the scan index, so
/// the settle-rescan (and later serving) does not hash the game again.
async fn remember_verified(sh: &Arc<Shared>, id: &GameId, manifest: &Manifest) {
    let fs = sh.fs();
    let files: Vec<_> = manifest
        .files
        .iter()
        .filter(|f| f.kind == EntryKind::File)
        .filter_map(|f| Some((f, id.root().join(f.path.as_str()).ok()?)))
        .collect();
    let paths: Vec<RelPath> = files.iter().map(|(_, p)| p.clone()).collect();
    let observed: Vec<_> = files
        .iter()
        .zip(fs.metadata_many(&paths).await)
        .filter_map(|((f, _), m)| m.ok().map(|m| (f.path.clone(), m.len, m.modified_ns)))
        .collect();
    sh.scanner.lock().await.index.remember_verified(id, manifest, &observed);
}
