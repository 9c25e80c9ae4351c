//! The sans-IO chunk scheduler of a multi-peer download.
//!
//! Shaped like quinn-proto's `Connection`: the driver feeds inputs through
//! `handle_*` methods (each taking `now`), drains decisions with
//! [`Scheduler::poll_action`] until it returns `None`, and wakes up at
//! [`Scheduler::poll_timeout`] to call [`Scheduler::handle_timeout`]. It never
//! reads a clock and performs no IO, so simulations are exact.
//!
//! Policy:
//! - **Pull, rate aware.** A peer gets its next chunk when it has room (less
//!   than `max_in_flight_bytes` and fewer than `max_in_flight` requests
//!   outstanding).
//! - **Complete and partial sources, rarest first.** A source is a peer
//!   holding the whole version or, while it downloads it too, the units it
//!   verified so far ([`Scheduler::handle_partial_added`],
//!   [`Scheduler::handle_have`]). A peer is given the queued chunk that the
//!   fewest partial sources hold among those it holds; ties go in file order
//!   from a point drawn from `tie_salt`, so downloaders that start together
//!   ask the seeder for different chunks and then trade them (the swarm
//!   diversifies), while each one still writes mostly sequentially.
//!   Throughput is measured per peer (EWMA of delivered bytes over the time
//!   between completions), and a peer is only given a fresh chunk if it is
//!   expected to finish it before the fastest idle-capable peer would finish
//!   everything still queued — so a slow peer does not hold the tail.
//! - **Endgame.** When nothing is queued, a peer with room duplicates the
//!   in-flight chunk expected to finish last, if it would finish it sooner;
//!   the first copy to arrive wins and the others are cancelled.
//! - **Failures.** A failed or timed-out chunk goes back to the front of the
//!   queue (another peer will take it). Consecutive failures back a peer off
//!   exponentially; hash mismatches are strikes, and `strike_limit` strikes
//!   ban the peer (for this download only). A chunk that failed
//!   `max_chunk_attempts` times fails the download.
//! - **Waiting for holders.** When no peer is left (every holder left or
//!   was banned), the download does not fail at once: it waits up to
//!   `holder_wait`, counted from that moment, for a new holder (discovery
//!   may find honest holders seconds after a lying one), and fails only
//!   when the window passes with nobody.

use lanspread_ports::{PeerId, Timestamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
pub use transfer::{Transfer, TransferAction};

/// Tunables.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Requests in flight per peer, at most.
    pub max_in_flight: usize,
    /// Bytes in flight per peer: a peer gets another request while it has
    /// less than this outstanding (and fewer than `max_in_flight`
    /// requests), so a run of small files keeps as many bytes in the pipe
    /// as a run of full chunks.
    pub max_in_flight_bytes: u64,
    /// Timeout of a request while the peer's rate is unknown.
    pub initial_timeout: Duration,
    /// Lower bound of the adaptive timeout.
    pub min_timeout: Duration,
    /// Attempts per chunk before the download fails.
    pub max_chunk_attempts: u32,
    /// Hash mismatches before a peer is banned.
    pub strike_limit: u32,
    /// Consecutive failures before a peer is backed off.
    pub failures_before_backoff: u32,
    /// First backoff; doubles with each further failure.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Copies of one chunk allowed in flight during endgame.
    pub endgame_copies: usize,
    /// How long a download with no usable peer left waits for a new one
    /// before it fails (zero: fail at once).
    pub holder_wait: Duration,
    /// Where in the file order this download starts among equally rare
    /// chunks (any value; the runtime draws it from its own identity, so
    /// downloaders of one version start at different places).
    pub tie_salt: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_in_flight: 32,
            max_in_flight_bytes: 4 << 20,
            initial_timeout: Duration::from_secs(30),
            min_timeout: Duration::from_secs(2),
            max_chunk_attempts: 8,
            strike_limit: 3,
            failures_before_backoff: 2,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            endgame_copies: 2,
            holder_wait: Duration::from_secs(30),
            tie_salt: 0,
        }
    }
}

/// Index of a request unit in the plan given to [`Scheduler::new`] (the
/// scheduler is generic over what a unit is; [`Transfer`] maps them to
/// [`crate::units::UnitIdx`]).
pub type ChunkIdx = usize;

/// Why a chunk failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkFailure {
    /// Connection or stream error, or an error response.
    Transport(String),
    /// Bytes did not match the manifest's hash (or had the wrong length).
    Corrupt(String),
    /// The peer is sending all it fairly can and asks to be asked again
    /// later: neither a failure of the peer nor of the chunk.
    Busy(Duration),
    /// The peer sent this chunk to another downloader moments ago and
    /// defers it for this long: another source will have it soon. The peer
    /// stays usable for other chunks.
    Elsewhere(Duration),
}

/// A decision for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask `peer` for `chunk`.
    Request {
        /// The peer.
        peer: PeerId,
        /// The chunk.
        chunk: ChunkIdx,
    },
    /// Abandon the request of `chunk` at `peer` (another copy won).
    Cancel {
        /// The peer.
        peer: PeerId,
        /// The chunk.
        chunk: ChunkIdx,
    },
    /// `peer` is backed off until `until` after repeated failures.
    PeerBackedOff {
        /// The peer.
        peer: PeerId,
        /// Until when.
        until: Timestamp,
    },
    /// `peer` sent corrupt data too often and is no longer used.
    PeerBanned {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// No usable peer is left: the download waits for a new holder until
    /// `until`, then fails.
    WaitingForHolders {
        /// Why no peer is usable.
        why: String,
        /// When the download fails if nobody came.
        until: Timestamp,
    },
    /// Every chunk is done.
    Complete,
    /// The download cannot complete.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Queued,
    InFlight,
    Done,
}

#[derive(Debug, Clone)]
struct Chunk {
    len: u64,
    state: ChunkState,
    attempts: u32,
    /// Peers this chunk is requested from, and since when.
    holders: BTreeMap<PeerId, Timestamp>,
    /// Partial sources holding it (complete ones hold every chunk alike,
    /// so they do not change which chunk is rarer).
    sources: u32,
}

/// The order of the queue: rarest first, then file order from the
/// download's own starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    sources: u32,
    order: usize,
    chunk: ChunkIdx,
}

/// Per-peer measurements, also reported to the UI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStats {
    /// Verified bytes delivered.
    pub bytes: u64,
    /// Current throughput estimate, bytes per second.
    pub rate: f64,
    /// Chunks that failed at this peer.
    pub failures: u32,
    /// Corrupt chunks received from this peer.
    pub strikes: u32,
    /// Banned.
    pub banned: bool,
}

#[derive(Debug, Clone)]
struct Peer {
    /// Which chunks it holds: `None` for a complete holder.
    has: Option<Vec<bool>>,
    in_flight: BTreeMap<ChunkIdx, (Timestamp, Timestamp)>, // chunk -> (sent, deadline)
    /// Start of the not-yet-accounted busy interval (while requests are out).
    busy_mark: Option<Timestamp>,
    /// Exponentially decayed delivered bytes and busy seconds.
    w_bytes: f64,
    w_secs: f64,
    consecutive_failures: u32,
    backoff_until: Option<Timestamp>,
    /// It answered busy: not asked again before then.
    busy_until: Option<Timestamp>,
    /// Chunks it deferred (sent to another downloader), until when.
    deferred: BTreeMap<ChunkIdx, Timestamp>,
    stats: PeerStats,
}

const RATE_DECAY: f64 = 0.85;

impl Peer {
    /// Adds the busy time since the last mark to the rate window.
    fn account(&mut self, now: Timestamp) {
        if let Some(mark) = self.busy_mark {
            self.w_secs += now.saturating_since(mark).as_secs_f64();
            self.busy_mark = if self.in_flight.is_empty() { None } else { Some(now) };
        }
    }

    /// Records delivered bytes and refreshes the rate estimate. Measuring
    /// bytes over *busy* time (not per-request latency) stays right when
    /// pipelined requests complete in bursts.
    fn delivered(&mut self, len: u64) {
        self.w_bytes = self.w_bytes * RATE_DECAY + len as f64;
        self.w_secs *= RATE_DECAY;
        if self.w_secs > 0.0 {
            self.stats.rate = self.w_bytes / self.w_secs;
        }
    }

    fn in_flight_bytes(&self, chunks: &[Chunk]) -> u64 {
        self.in_flight.keys().map(|c| chunks[*c].len).sum()
    }

    fn holds(&self, chunk: ChunkIdx) -> bool {
        !self.deferred.contains_key(&chunk) && self.has.as_ref().is_none_or(|has| has.get(chunk).copied().unwrap_or(false))
    }

    fn is_complete(&self) -> bool {
        self.has.is_none()
    }
}

/// The scheduler of one download.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    chunks: Vec<Chunk>,
    queue: BTreeSet<QueueKey>,
    queued_bytes: u64,
    /// Where this download starts in file order (see `tie_salt`).
    start: usize,
    done: usize,
    done_bytes: u64,
    total_bytes: u64,
    peers: BTreeMap<PeerId, Peer>,
    banned: BTreeSet<PeerId>,
    /// Stats of peers that left or were banned, for the final report.
    departed: BTreeMap<PeerId, PeerStats>,
    actions: VecDeque<Action>,
    finished: bool,
    /// Since when no usable peer is left (see `holder_wait`).
    starved_since: Option<Timestamp>,
}

impl Scheduler {
    /// A scheduler for chunks of the given lengths, all queued.
    pub fn new(chunk_lens: impl IntoIterator<Item = u64>, config: SchedulerConfig) -> Self {
        let chunks: Vec<Chunk> = chunk_lens
            .into_iter()
            .map(|len| Chunk { len, state: ChunkState::Queued, attempts: 0, holders: BTreeMap::new(), sources: 0 })
            .collect();
        let total_bytes = chunks.iter().map(|c| c.len).sum();
        let start = (config.tie_salt % chunks.len().max(1) as u64) as usize;
        let mut s = Scheduler {
            config,
            chunks,
            queue: BTreeSet::new(),
            queued_bytes: 0,
            start,
            done: 0,
            done_bytes: 0,
            total_bytes,
            peers: BTreeMap::new(),
            banned: BTreeSet::new(),
            departed: BTreeMap::new(),
            actions: VecDeque::new(),
            finished: false,
            starved_since: None,
        };
        for c in 0..s.chunks.len() {
            s.enqueue(c);
        }
        s.check_end();
        s
    }

    /// Marks a chunk as already done (e.g. verified data kept from an
    /// interrupted download). Call before the first request.
    pub fn mark_done(&mut self, chunk: ChunkIdx) {
        self.mark_done_many([chunk]);
    }

    /// [`Scheduler::mark_done`] for many chunks, in one pass over the queue.
    pub fn mark_done_many(&mut self, chunks: impl IntoIterator<Item = ChunkIdx>) {
        for chunk in chunks {
            if self.chunks.get(chunk).is_some_and(|c| c.state != ChunkState::Done) {
                self.dequeue(chunk);
                let c = &mut self.chunks[chunk];
                c.state = ChunkState::Done;
                self.done += 1;
                self.done_bytes += c.len;
            }
        }
        self.check_end();
    }

    // ---- getters -------------------------------------------------------

    /// Verified bytes so far.
    pub fn done_bytes(&self) -> u64 {
        self.done_bytes
    }

    /// Total bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Whether every chunk is done.
    pub fn is_complete(&self) -> bool {
        self.done == self.chunks.len()
    }

    /// Per-peer statistics (including peers that left or were banned).
    pub fn peer_stats(&self) -> BTreeMap<PeerId, PeerStats> {
        let mut all = self.departed.clone();
        all.extend(self.peers.iter().map(|(id, p)| (*id, p.stats.clone())));
        all
    }

    /// Sum of current per-peer rate estimates.
    pub fn total_rate(&self) -> f64 {
        self.peers.values().map(|p| p.stats.rate).sum()
    }

    // ---- inputs --------------------------------------------------------

    /// A peer holding the whole pinned version is available (a partial
    /// source that completed it becomes a complete one).
    pub fn handle_peer_added(&mut self, peer: PeerId, _now: Timestamp) {
        if self.banned.contains(&peer) {
            return;
        }
        if let Some(has) = self.peers.get_mut(&peer).and_then(|p| p.has.take()) {
            self.forget_sources(&has);
        }
        self.join(peer, None);
        self.starved_since = None;
    }

    /// A peer downloading the pinned version too is available; it holds
    /// nothing until [`Scheduler::handle_have`] says so. A known peer keeps
    /// what it is known to hold.
    pub fn handle_partial_added(&mut self, peer: PeerId, _now: Timestamp) {
        if !self.banned.contains(&peer) {
            let n = self.chunks.len();
            self.join(peer, Some(vec![false; n]));
        }
    }

    /// A partial source verified `chunks`: it may be asked for them.
    pub fn handle_have(&mut self, peer: &PeerId, chunks: impl IntoIterator<Item = ChunkIdx>) {
        let Some(has) = self.peers.get_mut(peer).and_then(|p| p.has.as_mut()) else { return };
        let mut gained = Vec::new();
        for c in chunks {
            if let Some(slot) = has.get_mut(c).filter(|h| !**h) {
                *slot = true;
                gained.push(c);
            }
        }
        for c in gained {
            self.add_source(c, 1);
        }
        if self.starved_since.is_some() && self.covered() {
            self.starved_since = None;
        }
    }

    /// A partial source started over (a new attempt of its download): it
    /// holds nothing any more until it says so again.
    pub fn handle_partial_reset(&mut self, peer: &PeerId, now: Timestamp) {
        let Some(has) = self.peers.get_mut(peer).and_then(|p| p.has.as_mut()) else { return };
        let old = std::mem::replace(has, vec![false; self.chunks.len()]);
        self.forget_sources(&old);
        self.check_peers_left(now);
    }

    fn join(&mut self, peer: PeerId, has: Option<Vec<bool>>) {
        let stats = self.departed.remove(&peer).unwrap_or_default();
        self.peers.entry(peer).or_insert_with(|| Peer {
            has,
            in_flight: BTreeMap::new(),
            busy_mark: None,
            w_bytes: 0.0,
            w_secs: 0.0,
            consecutive_failures: 0,
            backoff_until: None,
            busy_until: None,
            deferred: BTreeMap::new(),
            stats,
        });
    }

    /// A peer is gone (left, crashed, connection lost for good): its
    /// requests go back to the queue.
    pub fn handle_peer_removed(&mut self, peer: &PeerId, now: Timestamp) {
        if let Some(p) = self.peers.get_mut(peer) {
            let chunks: Vec<ChunkIdx> = p.in_flight.keys().copied().collect();
            p.in_flight.clear();
            p.backoff_until = None;
            for c in chunks {
                self.release(c, peer, false);
            }
            self.depart(peer);
            self.check_peers_left(now);
        }
    }

    /// Moves a peer's stats to the departed and forgets what it held.
    fn depart(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.remove(peer) {
            if let Some(has) = &p.has {
                self.forget_sources(has);
            }
            self.departed.insert(*peer, p.stats);
        }
    }

    fn forget_sources(&mut self, has: &[bool]) {
        for (c, held) in has.iter().enumerate() {
            if *held {
                self.add_source(c, -1);
            }
        }
    }

    /// A chunk arrived and was verified.
    pub fn handle_chunk_done(&mut self, peer: &PeerId, chunk: ChunkIdx, now: Timestamp) {
        let Some(c) = self.chunks.get_mut(chunk) else { return };
        let len = c.len;
        let was_done = c.state == ChunkState::Done;
        let holders: Vec<PeerId> = c.holders.keys().filter(|h| *h != peer).copied().collect();
        c.holders.clear();
        if !was_done {
            self.dequeue(chunk);
            let c = &mut self.chunks[chunk];
            c.state = ChunkState::Done;
            self.done += 1;
            self.done_bytes += len;
        }
        if let Some(p) = self.peers.get_mut(peer) {
            if p.in_flight.remove(&chunk).is_some() {
                p.account(now);
                p.delivered(len);
            }
            p.consecutive_failures = 0;
            if !was_done {
                p.stats.bytes += len;
            }
        }
        for h in holders {
            if let Some(p) = self.peers.get_mut(&h) {
                if p.in_flight.remove(&chunk).is_some() {
                    p.account(now);
                    self.actions.push_back(Action::Cancel { peer: h, chunk });
                }
            }
        }
        self.check_end();
    }

    /// A request failed.
    pub fn handle_chunk_failed(&mut self, peer: &PeerId, chunk: ChunkIdx, failure: ChunkFailure, now: Timestamp) {
        let had = self.peers.get_mut(peer).map(|p| p.in_flight.remove(&chunk).is_some()).unwrap_or(false);
        if !had {
            return; // cancelled or already reassigned
        }
        match failure {
            ChunkFailure::Busy(wait) | ChunkFailure::Elsewhere(wait) => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.account(now);
                    match failure {
                        ChunkFailure::Busy(_) => p.busy_until = Some(now + wait),
                        _ => _ = p.deferred.insert(chunk, now + wait),
                    }
                }
                self.release(chunk, peer, false);
                return;
            }
            ChunkFailure::Transport(_) | ChunkFailure::Corrupt(_) => {}
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.account(now);
            p.stats.failures += 1;
            p.consecutive_failures += 1;
            if let ChunkFailure::Corrupt(why) = &failure {
                p.stats.strikes += 1;
                if p.stats.strikes >= self.config.strike_limit {
                    let reason = format!("{} corrupt chunks (last: {why})", p.stats.strikes);
                    self.ban(peer, reason, now);
                }
            }
            // Corrupt data is dealt with by strikes; backoff is for peers
            // that fail to deliver (errors, timeouts).
            let transport = matches!(failure, ChunkFailure::Transport(_));
            if let Some(p) = self.peers.get_mut(peer).filter(|_| transport) {
                if p.consecutive_failures >= self.config.failures_before_backoff {
                    let exp = (p.consecutive_failures - self.config.failures_before_backoff).min(16);
                    let d = self.config.backoff_base.saturating_mul(1 << exp).min(self.config.backoff_max);
                    let until = now + d;
                    p.backoff_until = Some(until);
                    self.actions.push_back(Action::PeerBackedOff { peer: *peer, until });
                }
            }
        }
        // A transport failure says something about the peer, not the chunk:
        // it uses up one of the chunk's attempts only when no other peer
        // could serve it now (else a flapping peer could fail a download
        // that healthy peers are serving).
        let count_attempt = !matches!(failure, ChunkFailure::Transport(_)) || !self.another_peer_can_serve(peer, chunk, now);
        self.release(chunk, peer, count_attempt);
        self.check_end();
    }

    /// Whether a peer other than `peer` holds `chunk` and is not backed off.
    fn another_peer_can_serve(&self, peer: &PeerId, chunk: ChunkIdx, now: Timestamp) -> bool {
        self.peers.iter().any(|(id, p)| id != peer && p.holds(chunk) && p.backoff_until.is_none_or(|t| t <= now))
    }

    /// Expires overdue requests and backoffs.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if let Some(deadline) = self.starved_since.map(|t| t + self.config.holder_wait) {
            if deadline <= now && !self.finished {
                self.finished = true;
                self.actions.push_back(Action::Failed(format!(
                    "{}, and none came within {:?}",
                    self.why_starved(),
                    self.config.holder_wait
                )));
            }
        }
        let mut expired = Vec::new();
        for (id, p) in &mut self.peers {
            if p.backoff_until.is_some_and(|t| t <= now) {
                p.backoff_until = None;
            }
            if p.busy_until.is_some_and(|t| t <= now) {
                p.busy_until = None;
            }
            p.deferred.retain(|_, until| *until > now);
            for (c, (_, deadline)) in &p.in_flight {
                if *deadline <= now {
                    expired.push((*id, *c));
                }
            }
        }
        for (peer, chunk) in expired {
            self.actions.push_back(Action::Cancel { peer, chunk });
            self.handle_chunk_failed(&peer, chunk, ChunkFailure::Transport("timed out".into()), now);
        }
    }

    // ---- outputs -------------------------------------------------------

    /// The next decision, or `None` when there is nothing to do until the
    /// next input or [`Scheduler::poll_timeout`].
    pub fn poll_action(&mut self, now: Timestamp) -> Option<Action> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        if self.finished {
            return None;
        }
        self.assign(now)
    }

    /// When [`Scheduler::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let deadlines = self.peers.values().flat_map(|p| p.in_flight.values().map(|(_, d)| *d));
        let backoffs =
            self.peers.values().flat_map(|p| p.backoff_until.into_iter().chain(p.busy_until).chain(p.deferred.values().copied()));
        let starved = self.starved_since.filter(|_| !self.finished).map(|t| t + self.config.holder_wait);
        deadlines.chain(backoffs).chain(starved).min()
    }

    // ---- internals -----------------------------------------------------

    fn ban(&mut self, peer: &PeerId, reason: String, now: Timestamp) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.stats.banned = true;
            let chunks: Vec<ChunkIdx> = p.in_flight.keys().copied().collect();
            p.in_flight.clear();
            for c in chunks {
                self.actions.push_back(Action::Cancel { peer: *peer, chunk: c });
                self.release(c, peer, false);
            }
        }
        self.banned.insert(*peer);
        self.depart(peer);
        self.actions.push_back(Action::PeerBanned { peer: *peer, reason });
        self.check_peers_left(now);
    }

    fn release(&mut self, chunk: ChunkIdx, peer: &PeerId, count_attempt: bool) {
        let c = &mut self.chunks[chunk];
        c.holders.remove(peer);
        if count_attempt {
            c.attempts += 1;
        }
        if c.state == ChunkState::InFlight && c.holders.is_empty() {
            c.state = ChunkState::Queued;
            self.enqueue(chunk);
        }
        let c = &self.chunks[chunk];
        if c.attempts >= self.config.max_chunk_attempts && c.state != ChunkState::Done && !self.finished {
            self.finished = true;
            self.actions.push_back(Action::Failed(format!("chunk {chunk} failed {} times", c.attempts)));
        }
    }

    fn check_end(&mut self) {
        if !self.finished && self.is_complete() {
            self.finished = true;
            self.actions.push_back(Action::Complete);
        }
    }

    /// After a peer left, was banned or started over: when some chunk still
    /// needed has no source left, wait for a new holder (or fail at once if
    /// `holder_wait` is zero).
    fn check_peers_left(&mut self, now: Timestamp) {
        self.check_end();
        if self.finished || self.starved_since.is_some() || self.covered() {
            return;
        }
        let why = self.why_starved();
        if self.config.holder_wait.is_zero() {
            self.finished = true;
            self.actions.push_back(Action::Failed(why));
            return;
        }
        self.starved_since = Some(now);
        self.actions.push_back(Action::WaitingForHolders { why, until: now + self.config.holder_wait });
    }

    fn why_starved(&self) -> String {
        if self.banned.is_empty() {
            "no peer holding this version is left".to_owned()
        } else {
            format!("no usable peer left ({} banned for corrupt data)", self.banned.len())
        }
    }

    /// Whether every chunk still needed has a source: a complete holder,
    /// or partial ones that hold each of them.
    fn covered(&self) -> bool {
        self.peers.values().any(Peer::is_complete)
            || (!self.peers.is_empty() && self.chunks.iter().all(|c| c.state == ChunkState::Done || c.sources > 0))
    }

    fn usable(&self, p: &Peer, now: Timestamp) -> bool {
        p.backoff_until.is_none_or(|t| t <= now) && p.busy_until.is_none_or(|t| t <= now)
    }

    fn key(&self, chunk: ChunkIdx) -> QueueKey {
        let n = self.chunks.len();
        QueueKey { sources: self.chunks[chunk].sources, order: (chunk + n - self.start) % n, chunk }
    }

    fn enqueue(&mut self, chunk: ChunkIdx) {
        if self.queue.insert(self.key(chunk)) {
            self.queued_bytes += self.chunks[chunk].len;
        }
    }

    fn dequeue(&mut self, chunk: ChunkIdx) {
        if self.queue.remove(&self.key(chunk)) {
            self.queued_bytes -= self.chunks[chunk].len;
        }
    }

    /// One more (or one fewer) partial source holds `chunk`; a queued
    /// chunk moves to its new place in the queue.
    fn add_source(&mut self, chunk: ChunkIdx, delta: i32) {
        let queued = self.queue.remove(&self.key(chunk));
        let c = &mut self.chunks[chunk];
        c.sources = c.sources.saturating_add_signed(delta);
        if queued {
            self.queue.insert(self.key(chunk));
        }
    }

    /// The best current rate among usable peers that hold `chunk`.
    fn fastest_holder_rate(&self, chunk: ChunkIdx, now: Timestamp) -> f64 {
        self.peers.values().filter(|p| p.holds(chunk) && self.usable(p, now)).map(|p| p.stats.rate).fold(0.0, f64::max)
    }

    /// The first queued chunk (rarest first) that `peer` holds.
    fn next_for(&self, peer: &Peer) -> Option<ChunkIdx> {
        self.queue.iter().map(|k| k.chunk).find(|c| peer.holds(*c))
    }

    /// Seconds `p` needs to deliver `extra` more bytes after what it has in flight.
    fn eta(&self, p: &Peer, extra: u64) -> Option<f64> {
        if p.stats.rate <= 0.0 {
            return None;
        }
        Some((p.in_flight_bytes(&self.chunks) + extra) as f64 / p.stats.rate)
    }

    fn timeout_for(&self, p: &Peer, len: u64) -> Duration {
        match self.eta(p, len) {
            Some(secs) => Duration::from_secs_f64((secs * 4.0).min(3600.0)).max(self.config.min_timeout),
            None => self.config.initial_timeout,
        }
    }

    fn assign(&mut self, now: Timestamp) -> Option<Action> {
        // Candidates: usable peers with room, fastest first (unknown rates
        // first so they get measured), ties by id for determinism.
        let mut cands: Vec<(PeerId, f64)> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.in_flight.len() < self.config.max_in_flight
                    && p.in_flight_bytes(&self.chunks) < self.config.max_in_flight_bytes
                    && self.usable(p, now)
            })
            .map(|(id, p)| (*id, p.stats.rate))
            .collect();
        if cands.is_empty() {
            return None;
        }
        cands.sort_by(|a, b| {
            let ka = if a.1 == 0.0 { f64::INFINITY } else { a.1 };
            let kb = if b.1 == 0.0 { f64::INFINITY } else { b.1 };
            kb.total_cmp(&ka).then(a.0.cmp(&b.0))
        });
        let queued_bytes = self.queued_bytes;
        for (id, rate) in cands {
            if let Some(chunk) = self.next_for(&self.peers[&id]) {
                // Tail guard: leave the chunk to faster peers holding it if
                // this one would finish it after they finish the whole queue.
                let fastest_rate = self.fastest_holder_rate(chunk, now);
                if rate > 0.0 && fastest_rate > rate * 2.0 {
                    let p = &self.peers[&id];
                    let mine = self.eta(p, self.chunks[chunk].len).unwrap_or(f64::INFINITY);
                    let theirs = queued_bytes as f64 / fastest_rate;
                    if mine > theirs {
                        continue;
                    }
                }
                self.dequeue(chunk);
                return Some(self.send(id, chunk, now));
            }
            // Endgame only once nothing is queued: a partial source that
            // holds none of the queued chunks waits rather than duplicate.
            if let Some(chunk) = self.queue.is_empty().then(|| self.endgame_pick(&id, now)).flatten() {
                return Some(self.send(id, chunk, now));
            }
        }
        None
    }

    fn endgame_pick(&self, id: &PeerId, now: Timestamp) -> Option<ChunkIdx> {
        let me = &self.peers[id];
        let my_eta = |len: u64| self.eta(me, len);
        let mut best: Option<(f64, ChunkIdx)> = None;
        for (idx, c) in self.chunks.iter().enumerate() {
            if c.state != ChunkState::InFlight
                || c.holders.contains_key(id)
                || c.holders.len() >= self.config.endgame_copies
                || !me.holds(idx)
            {
                continue;
            }
            // Expected finish of the current copy, in seconds from now.
            let theirs = c
                .holders
                .keys()
                .filter_map(|h| self.peers.get(h))
                .filter_map(|hp| {
                    let (sent, _) = hp.in_flight.get(&idx)?;
                    let elapsed = now.saturating_since(*sent).as_secs_f64();
                    Some(self.eta(hp, 0).map_or(f64::INFINITY, |e| (e - elapsed).max(0.0)))
                })
                .fold(f64::INFINITY, f64::min);
            let mine = my_eta(c.len).unwrap_or(0.0);
            if mine < theirs && best.is_none_or(|(t, _)| theirs > t) {
                best = Some((theirs, idx));
            }
        }
        best.map(|(_, i)| i)
    }

    fn send(&mut self, peer: PeerId, chunk: ChunkIdx, now: Timestamp) -> Action {
        let len = self.chunks[chunk].len;
        let timeout = self.timeout_for(&self.peers[&peer], len);
        let c = &mut self.chunks[chunk];
        c.state = ChunkState::InFlight;
        c.holders.insert(peer, now);
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.in_flight.is_empty() {
                p.busy_mark = Some(now);
            }
            p.in_flight.insert(chunk, (now, now + timeout));
        }
        Action::Request { peer, chunk }
    }
}

mod transfer;

#[cfg(test)]
mod tests;
