//! The download pipeline: resolve the latest manifest, then pull verified
//! chunks from every peer holding that version, driven by the sans-IO
//! scheduler of `lanspread_core::sched`, inside the sentinel transaction.

use super::budget::WRITER_DESCRIPTORS;
use super::events::{OperationKind, PeerEvent, PeerShare, TransferStats};
use super::peers;
use super::state::Shared;
use bytes::Bytes;
use lanspread_core::game::{EntryKind, GameId, Hash, Manifest};
use lanspread_core::protocol::{Request, Response};
use lanspread_core::scan;
use lanspread_core::sched::{ChunkFailure, Transfer, TransferAction};
use lanspread_core::txn;
use lanspread_core::units::{FileIdx, UnitIdx, UnitLayout};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{FsError, FsErrorKind, PeerId, RelPath, Timestamp, WritePiece};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Mutex;
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
    let t3 = clock.now();
    let committed = match result {
        Ok((sentinel, stats)) => {
            let commit = txn::commit_download(fs.as_ref(), &root, &manifest, &sentinel).await;
            commit.map(|()| stats).map_err(|e| format!("committing the download of {id} failed: {e}"))
        }
        Err(e) => Err(e),
    };
    match committed {
        Ok(stats) => {
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
        // A failed transfer or commit resolves its intent (the data stays for
        // a resume), so the next attempt is not refused as pending.
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
    let mut plan = Transfer::new(manifest, reusable, sh.cfg.sched.clone());
    let job = Arc::new(Job::new(sh.clone(), id, manifest, plan.layout().clone())?);
    let mut sentinel = vec![0u8; manifest.files[job.sentinel.index()].size as usize];
    if plan.reused_bytes() > 0 {
        tracing::info!("{id}: {} bytes are already in place and verified; fetching the rest", plan.reused_bytes());
    }
    // Bans live in this download's plan only: a peer that lied about this
    // version may still serve other games, or this one in a later attempt.
    let mut usable: Vec<PeerId> = sources.to_vec();
    for p in &usable {
        plan.handle_peer_added(*p, clock.now());
    }
    if usable.is_empty() {
        return Err(format!("no usable peer holds {id}"));
    }
    sh.emit(PeerEvent::DownloadBegin {
        id: id.clone(),
        version: manifest.version.clone(),
        total: plan.total_bytes(),
        peers: usable.clone(),
    });

    let mut tasks: JoinSet<(PeerId, UnitIdx, Result<Option<Sentinel>, FetchError>)> = JoinSet::new();
    let mut running: BTreeMap<(PeerId, UnitIdx), tokio::task::AbortHandle> = BTreeMap::new();
    let mut turns = Turns::default();
    let mut next_progress = clock.now() + sh.cfg.progress_interval;
    let mut next_membership = clock.now() + MEMBERSHIP_CHECK;
    let mut stop = sh.shutdown_signal();
    let outcome: Result<(), String> = loop {
        let now = clock.now();
        let mut end = None;
        while let Some(action) = plan.poll_action(now) {
            match action {
                TransferAction::Request { peer, unit } => {
                    let turn = turns.of(&job, unit);
                    let job = job.clone();
                    let abort = tasks.spawn(async move { (peer, unit, fetch_unit(&job, peer, unit, turn).await) });
                    running.insert((peer, unit), abort);
                }
                TransferAction::Cancel { peer, unit } => {
                    if let Some(a) = running.remove(&(peer, unit)) {
                        a.abort();
                    }
                }
                TransferAction::FileComplete(file) => turns.finished(file),
                TransferAction::PeerBackedOff { peer, until } => {
                    // Requests keep failing or timing out: the connection may
                    // be dead without knowing it (a peer that lost power sends
                    // no close). Dial afresh after the backoff.
                    tracing::debug!("backing off {peer} for {:?}", until - now);
                    peers::drop_connection(sh, &peer);
                }
                TransferAction::PeerBanned { peer, reason } => sh.emit(PeerEvent::PeerBanned { peer, reason }),
                TransferAction::WaitingForHolders { why, until } => {
                    sh.emit(PeerEvent::DownloadWaiting { id: id.clone(), reason: why, deadline: until });
                }
                TransferAction::Complete => end = Some(Ok(())),
                TransferAction::Failed(why) => end = Some(Err(format!("download of {id} failed: {why}"))),
            }
        }
        if let Some(e) = end {
            break e;
        }
        let wake = [plan.poll_timeout(), Some(next_progress), Some(next_membership)].into_iter().flatten().min().unwrap_or(next_progress);
        let sleep_for = wake.saturating_since(clock.now());
        tokio::select! {
            biased;
            _ = stop.changed() => break Err("the peer is shutting down".into()),
            _ = cancel.changed() => break Err("cancelled".into()),
            joined = tasks.join_next(), if !tasks.is_empty() => {
                let Some(Ok((peer, unit, result))) = joined else { continue };
                running.remove(&(peer, unit));
                let now = clock.now();
                match result {
                    Ok(got) => {
                        if let Some((offset, data)) = got {
                            sentinel[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                        }
                        plan.handle_unit_done(&peer, unit, now);
                    }
                    Err(FetchError::Peer(f)) => {
                        if matches!(f, ChunkFailure::Transport(_)) && sh.st().db.peer(&peer).is_none() {
                            plan.handle_peer_removed(&peer, now);
                        } else {
                            plan.handle_unit_failed(&peer, unit, f, now);
                        }
                    }
                    Err(FetchError::Local(e)) => break Err(e),
                }
            }
            _ = clock.sleep(sleep_for) => plan.handle_timeout(clock.now()),
        }
        let now = clock.now();
        if now >= next_membership {
            next_membership = now + MEMBERSHIP_CHECK;
            update_membership(sh, id, &job.digest, &mut plan, &mut usable, now);
        }
        if now >= next_progress {
            next_progress = now + sh.cfg.progress_interval;
            sh.emit(progress(id, &plan));
        }
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    outcome?;
    sh.emit(progress(id, &plan));
    let secs = clock.now().saturating_since(started).as_secs_f64();
    let reused = plan.reused_bytes();
    Ok((sentinel, TransferStats { bytes: plan.total_bytes() - reused, reused, secs, peers: shares(&plan) }))
}

/// Peers pruned by liveness leave the download; peers that joined the LAN
/// with the same manifest join it.
fn update_membership(sh: &Shared, id: &GameId, digest: &Hash, plan: &mut Transfer, usable: &mut Vec<PeerId>, now: Timestamp) {
    let (gone, joined) = {
        let st = sh.st();
        let gone: Vec<PeerId> = usable.iter().filter(|p| st.db.peer(p).is_none()).copied().collect();
        let joined: Vec<PeerId> = st
            .db
            .download_sources(id)
            .filter(|s| s.digest == *digest)
            .map(|s| s.peers.into_iter().filter(|p| !usable.contains(p)).collect())
            .unwrap_or_default();
        (gone, joined)
    };
    for p in gone {
        plan.handle_peer_removed(&p, now);
        usable.retain(|u| *u != p);
    }
    for p in joined {
        plan.handle_peer_added(p, now);
        usable.push(p);
    }
}

/// What the fetch tasks of one download share.
struct Job {
    sh: Arc<Shared>,
    id: GameId,
    digest: Hash,
    manifest: Manifest,
    layout: Arc<UnitLayout>,
    /// Each manifest entry's path beneath the game directory.
    paths: Vec<RelPath>,
    /// The `version.ini` entry: kept in memory, written by the commit.
    sentinel: FileIdx,
}

impl Job {
    fn new(sh: Arc<Shared>, id: &GameId, manifest: &Manifest, layout: Arc<UnitLayout>) -> Result<Self, String> {
        let paths = manifest.paths_under(&id.root()).map_err(|e| e.to_string())?;
        let sentinel = manifest.files.iter().position(|f| f.is_sentinel()).ok_or("manifest has no version.ini")?;
        Ok(Job {
            sh,
            id: id.clone(),
            digest: manifest.digest(),
            manifest: manifest.clone(),
            layout,
            paths,
            sentinel: FileIdx(sentinel as u32),
        })
    }
}

/// Bytes of `version.ini` that arrived in a unit, at their offset.
type Sentinel = (u64, Bytes);

/// Writes to one file take turns: concurrent `pwrite`s to one inode only
/// spin on the kernel's inode lock (7 % of the downloader's CPU in the
/// loopback profile), while different files still write in parallel. Only
/// files of several pieces need a turn; the lock goes when the file is
/// complete.
#[derive(Default)]
struct Turns(BTreeMap<FileIdx, Arc<Mutex<()>>>);

impl Turns {
    fn of(&mut self, job: &Job, unit: UnitIdx) -> Option<Arc<Mutex<()>>> {
        match job.layout.pieces(unit) {
            [p] if job.manifest.files[p.file.index()].chunks.len() > 1 => Some(self.0.entry(p.file).or_default().clone()),
            _ => None,
        }
    }

    fn finished(&mut self, file: FileIdx) {
        self.0.remove(&file);
    }
}

fn progress(id: &GameId, plan: &Transfer) -> PeerEvent {
    PeerEvent::DownloadProgress {
        id: id.clone(),
        done: plan.done_bytes(),
        total: plan.total_bytes(),
        rate: plan.total_rate(),
        peers: shares(plan),
    }
}

fn shares(plan: &Transfer) -> Vec<PeerShare> {
    plan.peer_stats().into_iter().map(|(peer, s)| PeerShare { peer, bytes: s.bytes, rate: s.rate }).collect()
}

/// Fetches one unit from `peer`, verifies every piece against its own
/// chunk hash, and writes it. Returns the bytes of `version.ini` if the
/// unit holds them (they are written by the commit, last).
async fn fetch_unit(job: &Job, peer: PeerId, unit: UnitIdx, turn: Option<Arc<Mutex<()>>>) -> Result<Option<Sentinel>, FetchError> {
    let req = Request::GetUnit { id: job.id.clone(), digest: job.digest, unit };
    let data = request_unit(&job.sh, peer, &req, job.layout.len(unit)).await?;
    let pieces = job.layout.verify(&job.manifest, unit, &data).map_err(|e| FetchError::Peer(ChunkFailure::Corrupt(e.to_string())))?;
    let mut sentinel = None;
    let mut writes = Vec::with_capacity(pieces.len());
    for (p, bytes) in pieces {
        if p.file == job.sentinel {
            sentinel = Some((p.offset, bytes));
        } else {
            writes.push(WritePiece { path: job.paths[p.file.index()].clone(), offset: p.offset, data: bytes });
        }
    }
    write(&job.sh, writes, turn).await.map_err(|e| FetchError::Local(format!("writing the download to disk failed: {e}")))?;
    Ok(sentinel)
}

async fn request_unit(sh: &Arc<Shared>, peer: PeerId, req: &Request, len: u64) -> Result<Bytes, FetchError> {
    let conn = peers::connection(sh, peer).await.map_err(|e| FetchError::Peer(ChunkFailure::Transport(e)))?;
    match wire::request_data(conn.as_ref(), req, len).await {
        Ok(d) => Ok(d),
        Err(WireError::Length { expected, got }) => {
            Err(FetchError::Peer(ChunkFailure::Corrupt(format!("announced {got} bytes instead of {expected}"))))
        }
        Err(e @ WireError::Transport(_)) => {
            peers::drop_connection(sh, &peer);
            Err(FetchError::Peer(ChunkFailure::Transport(e.to_string())))
        }
        Err(e) => Err(FetchError::Peer(ChunkFailure::Transport(e.to_string()))),
    }
}

/// Writes verified pieces under the download's share of the open-file
/// budget; no file stays open afterwards. A chunk of a large file goes
/// through a file handle (which may write it with direct IO), a batch of
/// small files through one call of the `Fs` port.
async fn write(sh: &Shared, mut writes: Vec<WritePiece>, turn: Option<Arc<Mutex<()>>>) -> Result<(), FsError> {
    let fs = sh.fs();
    match writes.len() {
        0 => Ok(()),
        1 => {
            let p = writes.remove(0);
            let _turn = match &turn {
                Some(t) => Some(t.lock().await),
                None => None,
            };
            let _permit = sh.files.download(WRITER_DESCRIPTORS).await;
            fs.open_write(&p.path).await?.write_at(p.offset, p.data).await
        }
        _ => {
            let _permit = sh.files.download(1).await;
            fs.write_pieces(writes).await
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
