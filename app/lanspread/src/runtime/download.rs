//! The download pipeline's driver: inside the sentinel transaction, pull
//! verified units from every holder of the pinned version. The chunk plan
//! belongs to the sans-IO [`Transfer`]; this task spawns the fetches it
//! asks for, writes what they verified, and feeds back results, timers and
//! the holder news the peer machine sends. While it runs it is a partial
//! holder: the units it verified and wrote are served to the swarm
//! ([`super::swarm`]), and other downloaders' units are fetched from them
//! ([`super::have`]).

use super::budget::WRITER_DESCRIPTORS;
use super::ctx::Ctx;
use super::have::{HaveLinks, HaveUpdate};
use super::ops::settle;
use super::swarm::Swarm;
use crate::progress::Progress;
use bytes::Bytes;
use lanspread_core::game::{EntryKind, GameId, Hash, Manifest};
use lanspread_core::peer::{DownloadError, DownloadReport, OpToken, Outcome, PeerEvent, PeerShare, TransferStats};
use lanspread_core::protocol::Request;
use lanspread_core::scan;
use lanspread_core::sched::{ChunkFailure, SchedulerConfig, Transfer, TransferAction};
use lanspread_core::serve::UnitSource;
use lanspread_core::txn::{self, TxnError};
use lanspread_core::units::{FileIdx, UnitIdx, UnitLayout};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{FsError, FsErrorKind, PeerId, RelPath, WritePiece};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinSet;

/// Holders of the download's version that joined or left the LAN.
#[derive(Debug, Clone, Default)]
pub(crate) struct HolderNews {
    pub joined: Vec<PeerId>,
    pub left: Vec<PeerId>,
}

/// What the peer machine started.
pub(crate) struct DownloadJob {
    pub token: OpToken,
    pub id: GameId,
    pub manifest: Arc<Manifest>,
    pub holders: Vec<PeerId>,
    pub files: Option<BTreeSet<RelPath>>,
}

/// The inputs of a running download besides its job.
pub(crate) struct Signals {
    pub news: mpsc::UnboundedReceiver<HolderNews>,
    pub cancel: watch::Receiver<bool>,
    pub progress: watch::Sender<Progress>,
}

/// Runs one download to its end and reports it to the driver.
pub(crate) async fn run(ctx: Arc<Ctx>, job: DownloadJob, mut signals: Signals) {
    let result = attempt(&ctx, &job, &mut signals).await;
    if let Ok(report) = &result {
        if report.complete {
            remember_verified(&ctx, &job.id, &job.manifest).await;
        }
    }
    settle(&ctx, job.token, &job.id, Outcome::Downloaded(result)).await;
}

enum FetchError {
    Peer(ChunkFailure),
    Local(FsError),
}

/// Which chunks need no fetch: verified data already in place (an
/// interrupted attempt, or the old version's unchanged chunks at the same
/// offsets), and every chunk of a file outside the selection.
async fn in_place(ctx: &Ctx, job: &DownloadJob, fresh: bool) -> Vec<Vec<bool>> {
    let (id, manifest) = (&job.id, job.manifest.as_ref());
    let fs = ctx.local.fs();
    let mut in_place = if fresh {
        Vec::new()
    } else {
        let index = ctx.local.scanner.lock().await.index.clone();
        let known = |path: &RelPath, size: u64, mtime: Option<u128>| index.known_chunks(id, path, size, mtime).map(<[_]>::to_vec);
        scan::reusable_chunks(fs.as_ref(), &id.root(), manifest, &known).await
    };
    if let Some(files) = &job.files {
        if in_place.is_empty() {
            in_place = manifest.files.iter().map(|f| vec![false; f.chunks.len()]).collect();
        }
        for (f, chunks) in manifest.files.iter().zip(in_place.iter_mut()) {
            if !files.contains(&f.path) {
                chunks.iter_mut().for_each(|c| *c = true);
            }
        }
    }
    in_place
}

/// Whether a selection leaves some file out.
fn is_partial(job: &DownloadJob) -> bool {
    job.files.as_ref().is_some_and(|sel| job.manifest.files.iter().any(|f| f.kind == EntryKind::File && !sel.contains(&f.path)))
}

async fn attempt(ctx: &Arc<Ctx>, job: &DownloadJob, signals: &mut Signals) -> Result<DownloadReport, DownloadError> {
    let (id, manifest) = (&job.id, job.manifest.as_ref());
    let fs = ctx.local.fs();
    let total = manifest.total_size();
    if let Ok(Some(free)) = fs.free_space().await {
        if free < total {
            return Err(DownloadError::NoSpace { id: id.clone(), needed: total, free });
        }
    }
    let root = id.root();
    // A root that does not exist yet holds nothing stale to prune.
    let fresh = matches!(fs.metadata(&root).await, Err(e) if e.kind == FsErrorKind::NotFound);
    txn::begin_download(fs.as_ref(), &root, manifest).await?;
    let digest = manifest.digest();
    let result = async {
        if !fresh {
            let pruned = txn::prune_stale(fs.as_ref(), &root, manifest).await?;
            if pruned > 0 {
                tracing::info!("{id}: removed {pruned} entries the new version does not have");
            }
        }
        let in_place = in_place(ctx, job, fresh).await;
        let (sentinel, stats) = transfer(ctx, job, &in_place, signals).await?;
        if is_partial(job) {
            // Never commit version.ini before every file is in place: the
            // game stays "partial" and a later full download completes it.
            txn::abort_download(fs.as_ref(), &root).await?;
            return Ok(DownloadReport { version: manifest.version.clone(), stats, complete: false });
        }
        if !manifest.sentinel_names_version(&sentinel) {
            let found = String::from_utf8_lossy(&sentinel).trim().chars().take(64).collect();
            return Err(DownloadError::VersionMismatch { id: id.clone(), claimed: manifest.version.clone(), found });
        }
        txn::commit_download(fs.as_ref(), &root, manifest, &sentinel).await?;
        Ok(DownloadReport { version: manifest.version.clone(), stats, complete: true })
    }
    .await;
    ctx.swarms.end_download(&digest, matches!(&result, Ok(r) if r.complete));
    if result.is_err() {
        // A failed transfer or commit resolves its intent (the data stays
        // for a resume), so the next attempt is not refused as pending.
        if let Err(e) = txn::abort_download(fs.as_ref(), &root).await {
            ctx.emit(PeerEvent::RuntimeFailure(lanspread_core::peer::HasCode::failure(&DownloadError::Transaction(e))));
        }
    }
    result
}

/// The running fetches of one transfer.
struct Fetches {
    tasks: JoinSet<(PeerId, UnitIdx, Result<Option<Sentinel>, FetchError>)>,
    running: BTreeMap<(PeerId, UnitIdx), tokio::task::AbortHandle>,
    turns: Turns,
}

async fn transfer(
    ctx: &Arc<Ctx>,
    job: &DownloadJob,
    in_place: &[Vec<bool>],
    signals: &mut Signals,
) -> Result<(Vec<u8>, TransferStats), DownloadError> {
    let id = &job.id;
    let clock = ctx.ports.clock.clone();
    let started = clock.now();
    let mut plan = Transfer::new(&job.manifest, in_place, sched_config(ctx, job));
    let shared = Arc::new(Shared::new(ctx, job, plan.layout().clone())?);
    let swarm = join_swarm(ctx, job, &shared, &plan);
    let mut swarm_news = swarm.as_ref().map(|s| s.subscribe());
    let mut members_seen = 0;
    let mut links = HaveLinks::new(ctx, id, shared.digest, plan.unit_count());
    let mut sentinel = vec![0u8; job.manifest.files[shared.sentinel.index()].size as usize];
    // Bans live in this download's plan only: a peer that lied about this
    // version may still serve other games, or this one in a later attempt.
    let mut holders: BTreeSet<PeerId> = job.holders.iter().copied().collect();
    for p in &holders {
        plan.handle_peer_added(*p, clock.now());
    }
    links.poll_holders(&holders);
    ctx.emit(PeerEvent::DownloadBegin {
        id: id.clone(),
        version: job.manifest.version.clone(),
        total: plan.total_bytes(),
        peers: holders.iter().copied().collect(),
    });
    let mut fetches = Fetches { tasks: JoinSet::new(), running: BTreeMap::new(), turns: Turns::default() };
    let mut next_progress = clock.now() + ctx.cfg.progress_interval;
    let mut stop = ctx.shutdown_signal();
    let outcome: Result<(), DownloadError> = loop {
        if let Some(end) = apply_actions(ctx, &shared, &mut plan, &mut fetches, signals) {
            break end;
        }
        let wake = plan.poll_timeout().map_or(next_progress, |t| t.min(next_progress));
        let sleep_for = wake.saturating_since(clock.now());
        tokio::select! {
            biased;
            _ = stop.changed() => break Err(DownloadError::ShuttingDown),
            _ = signals.cancel.changed() => break Err(DownloadError::Cancelled),
            news = signals.news.recv() => {
                let news = news.unwrap_or_default();
                let now = clock.now();
                for p in news.left {
                    holders.remove(&p);
                    plan.handle_peer_removed(&p, now);
                }
                for p in news.joined {
                    if holders.insert(p) {
                        plan.handle_peer_added(p, now);
                    }
                }
            }
            joined = fetches.tasks.join_next(), if !fetches.tasks.is_empty() => {
                let Some(Ok((peer, unit, result))) = joined else { continue };
                fetches.running.remove(&(peer, unit));
                let now = clock.now();
                match result {
                    Ok(got) => {
                        match got {
                            Some((offset, data)) => sentinel[offset as usize..offset as usize + data.len()].copy_from_slice(&data),
                            None => if let Some(s) = &swarm { s.add_units([unit]) },
                        }
                        plan.handle_unit_done(&peer, unit, now);
                    }
                    // A peer that left the LAN (or a partial source that
                    // failed) leaves the plan; others fail the unit.
                    Err(FetchError::Peer(ChunkFailure::Transport(_))) if !holders.contains(&peer) => {
                        plan.handle_peer_removed(&peer, now);
                        links.forget(&peer);
                    }
                    Err(FetchError::Peer(f)) => plan.handle_unit_failed(&peer, unit, f, now),
                    Err(FetchError::Local(e)) => break Err(DownloadError::Write(e)),
                }
            }
            Some(update) = links.rx.recv() => apply_have(update, &holders, &mut plan, &mut links, clock.now()),
            () = async { swarm_news.as_mut().expect("guarded").changed().await }, if swarm_news.is_some() => {
                // Peers that asked us about this version download it too.
                let members = swarm.as_ref().map(|s| s.members_since(members_seen)).unwrap_or_default();
                members_seen += members.len();
                links.consider_askers(members);
            }
            _ = clock.sleep(sleep_for) => plan.handle_timeout(clock.now()),
        }
        if clock.now() >= next_progress {
            next_progress = clock.now() + ctx.cfg.progress_interval;
            report_progress(ctx, id, &plan, signals);
        }
    };
    fetches.tasks.abort_all();
    while fetches.tasks.join_next().await.is_some() {}
    outcome?;
    report_progress(ctx, id, &plan, signals);
    let secs = clock.now().saturating_since(started).as_secs_f64();
    let skipped = skipped_bytes(job);
    let reused = plan.reused_bytes().saturating_sub(skipped);
    let bytes = plan.total_bytes().saturating_sub(plan.reused_bytes());
    Ok((sentinel, TransferStats { bytes, reused, secs, peers: shares(&plan) }))
}

/// The scheduler's tunables for this download: downloaders of one version
/// start at different units (drawn from our identity), so the first units
/// they take from a seeder differ and they can trade them at once.
fn sched_config(ctx: &Ctx, job: &DownloadJob) -> SchedulerConfig {
    let me = ctx.transport().local_id();
    let digest = job.manifest.digest();
    let salt = blake3::keyed_hash(&digest, &me.0);
    let mut cfg = ctx.cfg.sched.clone();
    cfg.tie_salt = u64::from_le_bytes(salt.as_bytes()[..8].try_into().expect("8 bytes"));
    cfg
}

/// Takes part in the version's swarm: from now on the units this download
/// verified and wrote are served (those in place from the start too). A
/// download of a selection holds files outside it that are not there, so
/// it only takes, never serves.
fn join_swarm(ctx: &Ctx, job: &DownloadJob, shared: &Shared, plan: &Transfer) -> Option<Arc<Swarm>> {
    if job.files.is_some() {
        return None;
    }
    let epoch = ctx.ports.clock.now().as_duration().as_nanos() as u64;
    let source = UnitSource::new(&job.id, &job.manifest);
    let swarm = ctx.swarms.start_download(&job.id, shared.digest, source, epoch);
    swarm.add_units(plan.layout().units().filter(|u| plan.is_unit_done(*u) && !shared.holds_sentinel(*u)));
    Some(swarm)
}

/// Feeds what a poll learned to the plan. Complete holders the machine
/// told of stay complete holders whatever a poll says.
fn apply_have(update: HaveUpdate, holders: &BTreeSet<PeerId>, plan: &mut Transfer, links: &mut HaveLinks, now: lanspread_ports::Timestamp) {
    match update {
        HaveUpdate::Units { peer, reset, units, members } => {
            if !holders.contains(&peer) {
                plan.handle_partial_added(peer, now);
                if reset {
                    plan.handle_partial_reset(&peer, now);
                }
                plan.handle_have(&peer, &units);
            }
            links.consider(members);
        }
        HaveUpdate::Complete { peer, members } => {
            plan.handle_peer_added(peer, now);
            links.consider(members);
        }
        HaveUpdate::Gone(peer) => {
            links.forget(&peer);
            drop_partial(peer, holders, plan, now);
        }
        HaveUpdate::NotHeld(peer) => {
            links.not_held(&peer);
            drop_partial(peer, holders, plan, now);
        }
    }
}

/// A polled peer holds nothing usable any more; one the machine knows as a
/// complete holder stays in the plan.
fn drop_partial(peer: PeerId, holders: &BTreeSet<PeerId>, plan: &mut Transfer, now: lanspread_ports::Timestamp) {
    if !holders.contains(&peer) {
        plan.handle_peer_removed(&peer, now);
    }
}

/// Bytes of the files a selection leaves out (counted "in place" by the
/// plan, but neither fetched nor reused).
fn skipped_bytes(job: &DownloadJob) -> u64 {
    let Some(sel) = &job.files else { return 0 };
    job.manifest.files.iter().filter(|f| !sel.contains(&f.path)).map(|f| f.size).sum()
}

/// Carries out what the plan asks for; returns the end of the transfer if
/// it came.
fn apply_actions(
    ctx: &Ctx,
    shared: &Arc<Shared>,
    plan: &mut Transfer,
    fetches: &mut Fetches,
    signals: &Signals,
) -> Option<Result<(), DownloadError>> {
    let now = ctx.ports.clock.now();
    let id = &shared.id;
    let mut end = None;
    while let Some(action) = plan.poll_action(now) {
        match action {
            TransferAction::Request { peer, unit } => {
                let turn = fetches.turns.of(shared, unit);
                let shared = shared.clone();
                let abort = fetches.tasks.spawn(async move { (peer, unit, fetch_unit(&shared, peer, unit, turn).await) });
                fetches.running.insert((peer, unit), abort);
            }
            TransferAction::Cancel { peer, unit } => {
                if let Some(a) = fetches.running.remove(&(peer, unit)) {
                    a.abort();
                }
            }
            TransferAction::FileComplete(file) => fetches.turns.finished(file),
            TransferAction::PeerBackedOff { peer, until } => {
                // Requests keep failing or timing out: the connection may
                // be dead without knowing it (a peer that lost power sends
                // no close). Dial afresh after the backoff.
                tracing::debug!("backing off {peer} for {:?}", until - now);
                ctx.pool.drop_connection(&peer);
            }
            TransferAction::PeerBanned { peer, reason } => ctx.emit(PeerEvent::PeerBanned { peer, reason }),
            TransferAction::WaitingForHolders { why, until } => {
                signals.progress.send_modify(|p| p.waiting = Some(why.clone()));
                ctx.emit(PeerEvent::DownloadWaiting { id: id.clone(), reason: why, deadline: until });
            }
            TransferAction::Complete => end = Some(Ok(())),
            TransferAction::Failed(why) => end = Some(Err(DownloadError::Transfer { id: id.clone(), reason: why })),
        }
    }
    end
}

fn report_progress(ctx: &Ctx, id: &GameId, plan: &Transfer, signals: &Signals) {
    let (done, total, rate, peers) = (plan.done_bytes(), plan.total_bytes(), plan.total_rate(), shares(plan));
    signals.progress.send_replace(Progress::of_download(done, total, rate, peers.clone()));
    ctx.emit(PeerEvent::DownloadProgress { id: id.clone(), done, total, rate, peers });
}

fn shares(plan: &Transfer) -> Vec<PeerShare> {
    plan.peer_stats().into_iter().map(|(peer, s)| PeerShare { peer, bytes: s.bytes, rate: s.rate }).collect()
}

/// What the fetch tasks of one download share.
struct Shared {
    ctx: Arc<Ctx>,
    id: GameId,
    digest: Hash,
    manifest: Arc<Manifest>,
    layout: Arc<UnitLayout>,
    /// Each manifest entry's path beneath the game directory.
    paths: Vec<RelPath>,
    /// The `version.ini` entry: kept in memory, written by the commit.
    sentinel: FileIdx,
}

impl Shared {
    fn new(ctx: &Arc<Ctx>, job: &DownloadJob, layout: Arc<UnitLayout>) -> Result<Self, DownloadError> {
        let root = job.id.root();
        let bad = |detail: String| DownloadError::Transaction(TxnError::BadManifest { root: root.clone(), detail });
        let paths = job.manifest.paths_under(&root).map_err(|e| bad(e.to_string()))?;
        let sentinel = job.manifest.files.iter().position(|f| f.is_sentinel()).ok_or_else(|| bad("no version.ini".into()))?;
        Ok(Shared {
            ctx: ctx.clone(),
            id: job.id.clone(),
            digest: job.manifest.digest(),
            manifest: job.manifest.clone(),
            layout,
            paths,
            sentinel: FileIdx(sentinel as u32),
        })
    }
}

impl Shared {
    /// Whether `unit` holds a piece of `version.ini` (never served before
    /// the commit writes it).
    fn holds_sentinel(&self, unit: UnitIdx) -> bool {
        self.layout.pieces(unit).iter().any(|p| p.file == self.sentinel)
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
    fn of(&mut self, job: &Shared, unit: UnitIdx) -> Option<Arc<Mutex<()>>> {
        match job.layout.pieces(unit) {
            [p] if job.manifest.files[p.file.index()].chunks.len() > 1 => Some(self.0.entry(p.file).or_default().clone()),
            _ => None,
        }
    }

    fn finished(&mut self, file: FileIdx) {
        self.0.remove(&file);
    }
}

/// Fetches one unit from `peer`, verifies every piece against its own
/// chunk hash, and writes it. Returns the bytes of `version.ini` if the
/// unit holds them (they are written by the commit, last).
async fn fetch_unit(job: &Shared, peer: PeerId, unit: UnitIdx, turn: Option<Arc<Mutex<()>>>) -> Result<Option<Sentinel>, FetchError> {
    let req = Request::GetUnit { id: job.id.clone(), digest: job.digest, unit };
    let data = request_unit(&job.ctx, peer, &req, job.layout.len(unit)).await?;
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
    write(&job.ctx, writes, turn).await.map_err(FetchError::Local)?;
    Ok(sentinel)
}

async fn request_unit(ctx: &Ctx, peer: PeerId, req: &Request, len: u64) -> Result<Bytes, FetchError> {
    ctx.rates.download(len).await;
    let conn = ctx.pool.connection(peer).await.map_err(|e| FetchError::Peer(ChunkFailure::Transport(e)))?;
    match wire::request_data(conn.as_ref(), req, len).await {
        Ok(d) => Ok(d),
        Err(WireError::Length { expected, got }) => {
            Err(FetchError::Peer(ChunkFailure::Corrupt(format!("announced {got} bytes instead of {expected}"))))
        }
        Err(WireError::Busy(wait)) => Err(FetchError::Peer(ChunkFailure::Busy(wait))),
        Err(WireError::Elsewhere(wait)) => Err(FetchError::Peer(ChunkFailure::Elsewhere(wait))),
        Err(e @ WireError::Transport(_)) => {
            ctx.pool.drop_connection(&peer);
            Err(FetchError::Peer(ChunkFailure::Transport(e.to_string())))
        }
        Err(e) => Err(FetchError::Peer(ChunkFailure::Transport(e.to_string()))),
    }
}

/// Writes verified pieces under the download's share of the open-file
/// budget; no file stays open afterwards. A chunk of a large file goes
/// through a file handle (which may write it with direct IO), a batch of
/// small files through one call of the `Fs` port.
async fn write(ctx: &Ctx, mut writes: Vec<WritePiece>, turn: Option<Arc<Mutex<()>>>) -> Result<(), FsError> {
    let fs = ctx.local.fs();
    match writes.len() {
        0 => Ok(()),
        1 => {
            let p = writes.remove(0);
            let _turn = match &turn {
                Some(t) => Some(t.lock().await),
                None => None,
            };
            let _permit = ctx.files.download(WRITER_DESCRIPTORS).await;
            fs.open_write(&p.path).await?.write_at(p.offset, p.data).await
        }
        _ => {
            let _permit = ctx.files.download(1).await;
            fs.write_pieces(writes).await
        }
    }
}

/// Every chunk was verified against the manifest: tell the scan index, so
/// the settle-rescan (and later serving) does not hash the game again.
async fn remember_verified(ctx: &Ctx, id: &GameId, manifest: &Manifest) {
    let fs = ctx.local.fs();
    let Ok(paths) = manifest.paths_under(&id.root()) else { return };
    let files: Vec<(usize, RelPath)> =
        manifest.files.iter().zip(paths).enumerate().filter(|(_, (f, _))| f.kind == EntryKind::File).map(|(i, (_, p))| (i, p)).collect();
    let just_paths: Vec<RelPath> = files.iter().map(|(_, p)| p.clone()).collect();
    let observed: Vec<_> = files
        .iter()
        .zip(fs.metadata_many(&just_paths).await)
        .filter_map(|((i, _), m)| m.ok().map(|m| (manifest.files[*i].path.clone(), m.len, m.modified_ns)))
        .collect();
    ctx.local.scanner.lock().await.index.remember_verified(id, manifest, &observed);
}
