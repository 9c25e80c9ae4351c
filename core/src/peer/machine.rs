//! The peer machine: the one owner of what a peer knows across peers and
//! operations, sans-IO in the style of quinn-proto's `Endpoint` and
//! str0m's `Rtc`.
//!
//! Inputs come in through `handle_*` methods and commands, each with `now`;
//! outputs ([`Output`]) are drained with [`PeerMachine::poll_output`], and
//! [`PeerMachine::poll_timeout`] says when to call
//! [`PeerMachine::handle_timeout`]. The runtime's async driver owns the
//! machine, performs the IO its outputs ask for (requests to peers, dials,
//! scans, transactions) and feeds the results back. One download's chunk
//! plan stays in its own [`crate::sched::Transfer`]; the machine tells each
//! running download which holders joined or left.

use super::addr::{dial_order, normalize_addr};
use super::error::{DownloadError, Failure, HasCode, InstallError, RemoveError, ResolveError, UninstallError};
use super::events::{OperationKind, PeerEvent, TransferStats};
use super::hint::LibraryHint;
use crate::catalog::Catalog;
use crate::db::{GameDb, GameView};
use crate::game::{GameId, Hash, Manifest, Version};
use crate::protocol::{Response, PROTOCOL_VERSION};
use crate::scan::{LocalGame, LocalLibrary};
use crate::serve::{ServeView, ServedGame};
use lanspread_ports::{PeerAdvert, PeerId, RelPath, Timestamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Peers discovery vouches for that are probed per liveness tick, besides
/// the peers we work with: what liveness costs a peer stays bounded however
/// many peers the LAN holds (each is probed every `peers / 16` ticks).
pub(super) const PROBES_PER_TICK: usize = 16;

/// Library lists prompted by an advert's news are spread over this much
/// time per advertised peer (at most [`LIST_SPREAD_MAX`]), so that one
/// peer's new game does not make the whole LAN ask it in the same instant.
const LIST_SPREAD_PER_PEER: Duration = Duration::from_millis(10);

/// See [`LIST_SPREAD_PER_PEER`].
pub(super) const LIST_SPREAD_MAX: Duration = Duration::from_secs(5);

/// Settings of the machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Our identity (adverts and hellos carrying it are ignored).
    pub local_id: PeerId,
    /// Games this peer may announce and serve.
    pub catalog: Catalog,
    /// Addresses dialed even without discovery.
    pub static_peers: Vec<SocketAddr>,
    /// Liveness ping period (also the retry period of static peers).
    pub ping_interval: Duration,
    /// A peer silent for this long is pruned.
    pub peer_timeout: Duration,
    /// Period of the fallback full scan of the game directory.
    pub fallback_scan: Duration,
}

/// Names one operation from its start to its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpToken(pub u64);

/// A request the driver sends to a peer on the machine's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The peer's game list.
    ListGames,
    /// Liveness probe.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// The manifest of a game.
    Manifest(GameId),
}

/// The manifest of a game's latest version and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Game.
    pub id: GameId,
    /// The pinned manifest (the majority digest among holders).
    pub manifest: Arc<Manifest>,
    /// Holders advertising exactly that manifest.
    pub holders: Vec<PeerId>,
}

/// How to download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Only these files (paths inside the game root); `None`: all. A partial
    /// selection never commits `version.ini`: the game stays "partial".
    pub files: Option<BTreeSet<RelPath>>,
    /// Install (or update) once the download committed.
    pub install: bool,
    /// Ask the holders for the manifest again, ignoring cached ones.
    pub fresh: bool,
}

/// Work the driver performs for an operation; it reports back with
/// [`PeerMachine::handle_finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Run the download transaction and transfer.
    Download {
        /// Pinned manifest.
        manifest: Arc<Manifest>,
        /// Holders at the start (later changes come as [`Output::Holders`]).
        holders: Vec<PeerId>,
        /// File selection (`None`: all).
        files: Option<BTreeSet<RelPath>>,
    },
    /// Install or update from the downloaded archives.
    Install {
        /// Take over a `local/` lanspread did not make.
        adopt: bool,
        /// Whether an installed game is updated.
        update: bool,
    },
    /// Uninstall.
    Uninstall {
        /// Take over a `local/` lanspread did not make.
        adopt: bool,
    },
    /// Remove the downloaded files.
    Remove,
}

/// What a finished download delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadReport {
    /// Version.
    pub version: Version,
    /// Transfer totals.
    pub stats: TransferStats,
    /// Whether every file is in place and the version committed (`false`
    /// after a partial file selection).
    pub complete: bool,
}

/// What a finished install or update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// An installed game was updated.
    pub update: bool,
    /// Where the user's files that could not stay in `local/` went.
    pub kept: Option<RelPath>,
}

/// What a finished uninstall did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstallReport {
    /// Where the files the user created or changed went.
    pub kept: Option<RelPath>,
}

/// The typed result of an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Of a manifest resolution.
    Resolved(Result<Resolved, ResolveError>),
    /// Of a download.
    Downloaded(Result<DownloadReport, DownloadError>),
    /// Of an install or update.
    Installed(Result<InstallReport, InstallError>),
    /// Of an uninstall.
    Uninstalled(Result<UninstallReport, UninstallError>),
    /// Of a removal of downloaded files.
    Removed(Result<(), RemoveError>),
}

/// How dialing a static address went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialOutcome {
    /// Connected to this identity.
    Connected(PeerId),
    /// The address answered with another key than the one seen before.
    KeyChanged(String),
    /// It failed (unreachable, timed out, refused).
    Failed(String),
}

/// A peer as the snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    /// Identity.
    pub id: PeerId,
    /// Address it is reached at.
    pub addr: SocketAddr,
    /// Games it advertises.
    pub games: usize,
    /// Last time it answered (on the peer's clock; not serialized).
    #[serde(skip)]
    pub last_seen: Timestamp,
}

/// The state a UI shows, published after every change.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// One row per title.
    pub games: Vec<GameView>,
    /// Operations running now.
    pub operations: BTreeMap<GameId, OperationKind>,
    /// Known peers.
    pub peers: Vec<PeerInfo>,
    /// Games whose last download was a partial file selection (not
    /// downloaded, not installable, never advertised).
    pub partial: BTreeSet<GameId>,
}

/// What the machine asks the driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Publish an event.
    Event(PeerEvent),
    /// Publish the state (and the `LibrarySnapshot` event).
    Snapshot(Arc<Snapshot>),
    /// What the server may serve from now on.
    Serve(Arc<ServeView>),
    /// The game roots to watch changed.
    WatchRoots(Vec<GameId>),
    /// Dial a static address; answer with [`PeerMachine::handle_dialed`].
    Dial {
        /// The address.
        addr: SocketAddr,
        /// The identity it proved before (a different key is refused).
        pinned: Option<PeerId>,
    },
    /// Where a peer can be reached, best first (for the connection pool).
    PeerAddrs {
        /// Peer.
        peer: PeerId,
        /// Addresses in dial order.
        addrs: Vec<SocketAddr>,
    },
    /// Send a request; answer with [`PeerMachine::handle_answer`].
    Ask {
        /// Peer.
        peer: PeerId,
        /// Request.
        query: Query,
    },
    /// Close the connection to a peer (it failed, left or was pruned).
    Disconnect(PeerId),
    /// Scan these games; answer with [`PeerMachine::handle_games_scanned`].
    Scan(Vec<GameId>),
    /// Scan the whole game directory; answer with
    /// [`PeerMachine::handle_full_scan`].
    FullScan,
    /// Start an operation's work.
    Start {
        /// Operation.
        token: OpToken,
        /// Game.
        id: GameId,
        /// What to do.
        work: Work,
    },
    /// Holders of a running download's version joined or left.
    Holders {
        /// The download.
        token: OpToken,
        /// New holders.
        joined: Vec<PeerId>,
        /// Holders that left the LAN.
        left: Vec<PeerId>,
    },
    /// Stop a running operation at a safe point.
    Cancel(OpToken),
    /// An operation ended; its caller may now see the result (the state
    /// was settled and published first).
    Settled {
        /// Operation.
        token: OpToken,
        /// Result.
        outcome: Outcome,
    },
}

/// How we learned where a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// It proved its identity there (a handshake).
    Proven,
    /// Discovery says so (anyone can say anything), with what its advert
    /// says of its library.
    Advertised(Option<LibraryHint>),
}

/// One active operation.
#[derive(Debug, Clone)]
struct Op {
    kind: OperationKind,
    token: OpToken,
    /// Set for a download: its version's digest and current holders.
    download: Option<RunningDownload>,
    /// Install once a download committed.
    then_install: bool,
}

#[derive(Debug, Clone)]
struct RunningDownload {
    digest: Hash,
    holders: BTreeSet<PeerId>,
}

/// Who waits for a manifest.
#[derive(Debug, Clone)]
enum Waiter {
    /// A plain resolve: reported with `Settled(Outcome::Resolved)`.
    Report(OpToken),
    /// A download that starts once the manifest is in.
    Download(OpToken, DownloadOptions),
}

#[derive(Debug, Clone)]
struct Resolving {
    version: Version,
    digest: Hash,
    holders: Vec<PeerId>,
    untried: VecDeque<PeerId>,
    asking: Option<PeerId>,
    last_error: String,
    waiters: Vec<Waiter>,
}

#[derive(Debug, Clone, Copy)]
enum StaticState {
    Idle { next_try: Timestamp },
    Dialing,
}

/// The peer machine (see the module docs).
#[derive(Debug)]
pub struct PeerMachine {
    cfg: MachineConfig,
    db: GameDb,
    ops: BTreeMap<GameId, Op>,
    serve: Arc<ServeView>,
    /// Manifests resolved and kept for a following download.
    pinned: BTreeMap<GameId, Resolved>,
    resolving: BTreeMap<GameId, Resolving>,
    partial: BTreeSet<GameId>,
    /// Library revision each peer last reported.
    peer_revs: BTreeMap<PeerId, u64>,
    /// Identity seen at each address.
    known_ids: BTreeMap<SocketAddr, PeerId>,
    /// Peers with an established connection.
    connected: BTreeSet<PeerId>,
    /// Peers that proved their identity to us (a handshake or an answer):
    /// discovery's news about them is only a hint until liveness confirms.
    proven: BTreeSet<PeerId>,
    /// Proven peers discovery says left, and advertised peers a probe
    /// failed: pinged every tick and forgotten if that fails too.
    doubted: BTreeSet<PeerId>,
    /// Peers discovery vouches for (an advert and no goodbye since): they
    /// are probed in rotation, not pinged every tick, and never pruned for
    /// silence alone.
    advertised: BTreeSet<PeerId>,
    /// The last peer the rotation of probes reached.
    probed_last: Option<PeerId>,
    /// Library lists prompted by adverts, and when each is due.
    lists_due: BTreeMap<PeerId, Timestamp>,
    /// Outstanding pings: nonce, and the tick they were sent at.
    pings: BTreeMap<PeerId, (u64, Timestamp)>,
    /// When the last liveness tick ran.
    last_tick: Timestamp,
    /// Outstanding game-list requests.
    listing: BTreeSet<PeerId>,
    statics: BTreeMap<SocketAddr, StaticState>,
    watched: Vec<GameId>,
    next_tick: Timestamp,
    next_full_scan: Timestamp,
    next_token: u64,
    next_nonce: u64,
    shutting_down: bool,
    out: VecDeque<Output>,
}

impl PeerMachine {
    /// A machine that knows nothing yet; call [`PeerMachine::handle_full_scan`]
    /// with the first scan, then drive it.
    pub fn new(cfg: MachineConfig, now: Timestamp) -> Self {
        let serve = Arc::new(ServeView { catalog: cfg.catalog.clone(), ..ServeView::default() });
        let statics = cfg.static_peers.iter().map(|a| (*a, StaticState::Idle { next_try: now })).collect();
        PeerMachine {
            db: GameDb::new(cfg.catalog.clone()),
            ops: BTreeMap::new(),
            serve,
            pinned: BTreeMap::new(),
            resolving: BTreeMap::new(),
            partial: BTreeSet::new(),
            peer_revs: BTreeMap::new(),
            known_ids: BTreeMap::new(),
            connected: BTreeSet::new(),
            proven: BTreeSet::new(),
            doubted: BTreeSet::new(),
            advertised: BTreeSet::new(),
            probed_last: None,
            lists_due: BTreeMap::new(),
            pings: BTreeMap::new(),
            last_tick: now,
            listing: BTreeSet::new(),
            statics,
            watched: Vec::new(),
            next_tick: now,
            next_full_scan: now + cfg.fallback_scan,
            next_token: 0,
            next_nonce: 0,
            shutting_down: false,
            out: VecDeque::new(),
            cfg,
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`PeerMachine::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Timestamp {
        let next_list = self.lists_due.values().min().copied().unwrap_or(self.next_tick);
        self.next_tick.min(self.next_full_scan).min(next_list)
    }

    /// The unified game DB (read-only).
    pub fn db(&self) -> &GameDb {
        &self.db
    }

    /// The operation running on `id`, if any.
    pub fn operation(&self, id: &GameId) -> Option<OperationKind> {
        self.ops.get(id).map(|op| op.kind)
    }

    /// Whether any operation runs.
    pub fn is_busy(&self) -> bool {
        !self.ops.is_empty()
    }

    /// The current state, as a UI shows it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            games: self.db.view(),
            operations: self.ops.iter().map(|(id, op)| (id.clone(), op.kind)).collect(),
            peers: self
                .db
                .peers()
                .map(|(id, p)| PeerInfo { id: *id, addr: p.addr, games: p.games.len(), last_seen: p.last_seen })
                .collect(),
            partial: self.partial.clone(),
        }
    }

    // ----- timers -----

    /// Liveness (prune silent peers, ping the watched ones, probe a few
    /// advertised ones), static peers, due library lists and the fallback
    /// scan.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if now >= self.next_tick {
            self.next_tick = now + self.cfg.ping_interval;
            self.last_tick = now;
            self.prune_silent(now);
            self.ping_watched();
            self.probe_advertised();
            self.dial_statics(now);
        }
        self.list_due(now);
        if now >= self.next_full_scan {
            self.next_full_scan = now + self.cfg.fallback_scan;
            self.out.push_back(Output::FullScan);
        }
    }

    /// Forgets peers silent for the peer timeout. A peer discovery vouches
    /// for is not asked every tick, so its silence counts only once a ping
    /// to it went unanswered that long.
    fn prune_silent(&mut self, now: Timestamp) {
        let deadline = Timestamp::from_duration(now.as_duration().saturating_sub(self.cfg.peer_timeout));
        for id in self.db.stale_peers(deadline) {
            let unanswered = self.pings.get(&id).is_some_and(|(_, sent)| *sent <= deadline);
            if !self.advertised.contains(&id) || unanswered {
                self.forget_peer(&id);
            }
        }
    }

    /// Whether `peer` is pinged every tick: discovery does not vouch for
    /// it, it is in doubt, or an operation counts on it.
    fn is_watched(&self, peer: &PeerId) -> bool {
        !self.advertised.contains(peer)
            || self.doubted.contains(peer)
            || self.ops.values().any(|op| op.download.as_ref().is_some_and(|d| d.holders.contains(peer)))
            || self.resolving.values().any(|r| r.holders.contains(peer))
    }

    fn ping_watched(&mut self) {
        let ids: Vec<PeerId> =
            self.db.peers().map(|(id, _)| *id).filter(|id| !self.pings.contains_key(id) && self.is_watched(id)).collect();
        for peer in ids {
            self.ping(peer);
        }
    }

    /// Pings the next [`PROBES_PER_TICK`] advertised peers in rotation.
    fn probe_advertised(&mut self) {
        use std::ops::Bound::{Excluded, Unbounded};
        let rotation: Vec<PeerId> = match self.probed_last {
            Some(last) => self
                .advertised
                .range((Excluded(last), Unbounded))
                .chain(self.advertised.range(..=last))
                .take(PROBES_PER_TICK)
                .copied()
                .collect(),
            None => self.advertised.iter().take(PROBES_PER_TICK).copied().collect(),
        };
        for peer in &rotation {
            if !self.pings.contains_key(peer) && !self.is_watched(peer) {
                self.ping(*peer);
            }
        }
        if let Some(last) = rotation.last() {
            self.probed_last = Some(*last);
        }
    }

    fn ping(&mut self, peer: PeerId) {
        self.next_nonce += 1;
        let nonce = self.next_nonce;
        self.pings.insert(peer, (nonce, self.last_tick));
        self.out.push_back(Output::Ask { peer, query: Query::Ping { nonce } });
    }

    /// Dials every static address whose peer is not (or no longer) known.
    fn dial_statics(&mut self, now: Timestamp) {
        let due: Vec<SocketAddr> =
            self.statics.iter().filter(|(_, s)| matches!(s, StaticState::Idle { next_try } if *next_try <= now)).map(|(a, _)| *a).collect();
        for addr in due {
            let pinned = normalize_addr(addr).and_then(|a| self.known_ids.get(&a).copied());
            if pinned.is_some_and(|id| self.db.peer(&id).is_some()) {
                continue;
            }
            self.statics.insert(addr, StaticState::Dialing);
            self.out.push_back(Output::Dial { addr, pinned });
        }
    }

    // ----- discovery and peers -----

    /// A peer advertised itself (discovery). Anyone on the LAN can send an
    /// advert under any id, so for a peer that proved itself the advert's
    /// addresses are only extra candidates: the address it proved itself at
    /// stays first, and a dial to any of them must prove the identity again.
    pub fn handle_discovered(&mut self, advert: &PeerAdvert, now: Timestamp) {
        if advert.protocol_version != u32::from(PROTOCOL_VERSION) || advert.id == self.cfg.local_id {
            return;
        }
        let hint = LibraryHint::read(&advert.meta);
        let new = self.learn_peer(advert.id, &advert.addrs, Claim::Advertised(hint), now);
        if self.db.peer(&advert.id).is_none() {
            return;
        }
        self.advertised.insert(advert.id);
        if let (Some(h), false) = (hint, new) {
            self.library_news(advert.id, h, now);
        }
    }

    /// An advert of a known peer names a library revision: a new one is
    /// listed, a little later (see [`LIST_SPREAD_PER_PEER`]).
    fn library_news(&mut self, peer: PeerId, hint: LibraryHint, now: Timestamp) {
        if self.peer_revs.get(&peer) == Some(&hint.rev) || !self.worth_listing(&peer, Some(hint)) {
            return;
        }
        self.peer_revs.insert(peer, hint.rev);
        let window = (LIST_SPREAD_PER_PEER * self.advertised.len() as u32).min(LIST_SPREAD_MAX);
        let due = now + spread(&self.cfg.local_id, &peer, hint.rev, window);
        self.lists_due.insert(peer, due);
    }

    /// Whether `peer`'s game list may hold anything: an advert saying it
    /// serves nothing is believed only while we know no games of it.
    fn worth_listing(&self, peer: &PeerId, hint: Option<LibraryHint>) -> bool {
        hint.is_none_or(|h| h.games > 0) || self.db.peer(peer).is_some_and(|p| !p.games.is_empty())
    }

    fn list_due(&mut self, now: Timestamp) {
        let due: Vec<PeerId> = self.lists_due.iter().filter(|(_, at)| **at <= now).map(|(p, _)| *p).collect();
        for peer in due {
            self.lists_due.remove(&peer);
            self.list(peer);
        }
    }

    /// Discovery says a peer left. A goodbye can be forged: a peer that
    /// proved itself is pinged first and forgotten only if that fails.
    pub fn handle_vanished(&mut self, id: &PeerId) {
        self.advertised.remove(id);
        self.lists_due.remove(id);
        if !self.proven.contains(id) || self.db.peer(id).is_none() {
            self.forget_peer(id);
            return;
        }
        self.doubted.insert(*id);
        if !self.pings.contains_key(id) {
            self.ping(*id);
        }
    }

    /// A peer said Hello to our server from `addr` (at its listen port).
    pub fn handle_hello(&mut self, peer: PeerId, addr: SocketAddr, now: Timestamp) {
        self.learn_peer(peer, &[addr], Claim::Proven, now);
    }

    /// A peer pinged our server: it is alive.
    pub fn handle_seen(&mut self, peer: &PeerId, now: Timestamp) {
        self.db.touch_peer(peer, now);
    }

    /// The connection pool reached `peer` at `addr`.
    pub fn handle_connected(&mut self, peer: PeerId, addr: SocketAddr, now: Timestamp) {
        self.known_ids.insert(addr, peer);
        self.proven.insert(peer);
        // Only a peer still known: one forgotten while we dialed stays gone.
        if self.db.peer(&peer).is_some_and(|p| p.addr != addr) {
            self.db.upsert_peer(peer, addr, now);
        }
        if self.db.peer(&peer).is_some() {
            self.connected.insert(peer);
        }
    }

    /// A static address was dialed.
    pub fn handle_dialed(&mut self, addr: SocketAddr, outcome: DialOutcome, now: Timestamp) {
        self.statics.insert(addr, StaticState::Idle { next_try: now + self.cfg.ping_interval });
        match outcome {
            DialOutcome::Connected(id) => {
                self.learn_peer(id, &[addr], Claim::Proven, now);
                self.handle_connected(id, addr, now);
            }
            DialOutcome::KeyChanged(msg) => self.emit(PeerEvent::RuntimeFailure(Failure::new(super::ErrorCode::Internal, msg))),
            DialOutcome::Failed(_) => {}
        }
    }

    /// Records a peer and every address it can be reached at. A new peer's
    /// library is listed at once (unless its advert says it serves
    /// nothing); so is a known peer's when it shows new addresses while we
    /// have no connection to it (mDNS resolves addresses one by one, and
    /// the first ones may have been unreachable).
    fn learn_peer(&mut self, id: PeerId, addrs: &[SocketAddr], claim: Claim, now: Timestamp) -> bool {
        if id == self.cfg.local_id {
            return false;
        }
        let order = dial_order(addrs, None);
        let Some(&first) = order.first() else { return false };
        let mut grew = false;
        for a in &order {
            grew |= self.known_ids.insert(*a, id) != Some(id);
        }
        if claim == Claim::Proven {
            self.proven.insert(id);
        }
        let known = self.db.peer(&id).map(|p| p.addr);
        let primary = match (known, claim) {
            // An advert never moves a proven peer away from where it proved itself.
            (Some(a), Claim::Advertised(_)) if self.proven.contains(&id) => a,
            (Some(a), _) if order.contains(&a) => a,
            _ => first,
        };
        let new = self.db.upsert_peer(id, primary, now);
        if grew || new {
            self.out.push_back(Output::PeerAddrs { peer: id, addrs: self.candidates(&id) });
        }
        if new {
            self.emit(PeerEvent::PeerJoined { peer: id, addr: primary });
            self.emit(PeerEvent::PeerCount(self.db.peer_count()));
        }
        let hint = match claim {
            Claim::Advertised(hint) => hint,
            Claim::Proven => None,
        };
        if (new || (grew && !self.connected.contains(&id))) && self.worth_listing(&id, hint) {
            if let Some(h) = hint {
                self.peer_revs.insert(id, h.rev);
            }
            self.list(id);
        }
        new
    }

    /// Every address `peer` is known at, the preferred one first.
    fn candidates(&self, peer: &PeerId) -> Vec<SocketAddr> {
        let preferred = self.db.peer(peer).map(|p| p.addr);
        let mut all: Vec<SocketAddr> = preferred.into_iter().collect();
        all.extend(self.known_ids.iter().filter(|(_, id)| *id == peer).map(|(a, _)| *a));
        dial_order(&all, preferred)
    }

    fn list(&mut self, peer: PeerId) {
        if self.listing.insert(peer) {
            self.out.push_back(Output::Ask { peer, query: Query::ListGames });
        }
    }

    /// Removes a peer (left, pruned).
    fn forget_peer(&mut self, id: &PeerId) {
        self.proven.remove(id);
        self.doubted.remove(id);
        self.advertised.remove(id);
        self.lists_due.remove(id);
        self.peer_revs.remove(id);
        self.pings.remove(id);
        self.listing.remove(id);
        self.connected.remove(id);
        let removed = self.db.remove_peer(id);
        self.out.push_back(Output::Disconnect(*id));
        if removed {
            self.emit(PeerEvent::PeerLeft(*id));
            self.emit(PeerEvent::PeerCount(self.db.peer_count()));
            self.update_downloads();
            self.publish();
        }
    }

    /// A peer answered (or failed) a request the machine asked for.
    pub fn handle_answer(&mut self, peer: PeerId, query: Query, answer: Result<Response, String>, now: Timestamp) {
        let answer = match answer {
            Ok(Response::Error(e)) => Err(format!("{:?}: {}", e.code, e.message)),
            other => other,
        };
        if answer.is_ok() {
            self.db.touch_peer(&peer, now);
            self.proven.insert(peer);
            self.doubted.remove(&peer);
        } else {
            self.connected.remove(&peer);
            self.out.push_back(Output::Disconnect(peer));
            if matches!(query, Query::Ping { .. }) && self.doubted.contains(&peer) {
                // Discovery said it left (or a probe failed before) and it
                // does not answer: it left.
                self.pings.remove(&peer);
                self.forget_peer(&peer);
                return;
            }
            if matches!(query, Query::Ping { .. }) && self.advertised.contains(&peer) {
                // Silence is no proof for a peer discovery vouches for:
                // ask again next tick before forgetting it.
                self.doubted.insert(peer);
            }
        }
        match query {
            Query::Ping { nonce } => {
                if self.pings.get(&peer).is_some_and(|(n, _)| *n == nonce) {
                    self.pings.remove(&peer);
                }
                if let Ok(Response::Pong { nonce: n, library_rev }) = answer {
                    if n == nonce && self.peer_revs.insert(peer, library_rev) != Some(library_rev) {
                        self.list(peer);
                    }
                }
            }
            Query::ListGames => {
                self.listing.remove(&peer);
                if let Ok(Response::Games(games)) = answer {
                    if self.db.set_peer_games(&peer, games, now) {
                        self.update_downloads();
                        self.publish();
                    }
                }
            }
            Query::Manifest(id) => self.manifest_answer(peer, id, answer),
        }
    }

    /// Tells every running download which holders of its version joined
    /// the LAN and which left it.
    fn update_downloads(&mut self) {
        let mut news = Vec::new();
        for (id, op) in self.ops.iter_mut() {
            let Some(dl) = op.download.as_mut() else { continue };
            let current: BTreeSet<PeerId> =
                self.db.download_sources(id).filter(|s| s.digest == dl.digest).map(|s| s.peers.into_iter().collect()).unwrap_or_default();
            let left: Vec<PeerId> = dl.holders.iter().filter(|p| self.db.peer(p).is_none()).copied().collect();
            let joined: Vec<PeerId> = current.difference(&dl.holders).copied().collect();
            for p in &left {
                dl.holders.remove(p);
            }
            dl.holders.extend(joined.iter().copied());
            if !joined.is_empty() || !left.is_empty() {
                news.push(Output::Holders { token: op.token, joined, left });
            }
        }
        self.out.extend(news);
    }

    // ----- the local library -----

    /// A full scan of the game directory (at start-up, after a change of
    /// game directory, or the fallback scan). Games with an active
    /// operation keep their state: the operation's settle-scan updates them.
    pub fn handle_full_scan(&mut self, mut lib: LocalLibrary) {
        for id in self.ops.keys() {
            match self.db.local_game(id) {
                Some(g) => lib.games.insert(id.clone(), g.clone()),
                None => lib.games.remove(id),
            };
        }
        let old = &self.db.local().games;
        let ids: BTreeSet<&GameId> = old.keys().chain(lib.games.keys()).collect();
        let changed: Vec<GameId> = ids.into_iter().filter(|id| old.get(*id) != lib.games.get(*id)).cloned().collect();
        self.db.set_local(lib);
        if !changed.is_empty() {
            self.emit(PeerEvent::LocalLibraryChanged(changed));
        }
        self.publish();
    }

    /// The watcher saw changes in these games' roots: rescan the ones no
    /// operation holds.
    pub fn handle_local_dirty(&mut self, ids: BTreeSet<GameId>) {
        let free: Vec<GameId> = ids.into_iter().filter(|id| self.cfg.catalog.contains(id) && !self.ops.contains_key(id)).collect();
        if !free.is_empty() {
            self.out.push_back(Output::Scan(free));
        }
    }

    /// Results of an [`Output::Scan`]. A game an operation took in the
    /// meantime is left to that operation's settle-scan.
    pub fn handle_games_scanned(&mut self, results: Vec<(GameId, Result<Option<LocalGame>, Failure>)>) {
        let mut changed = Vec::new();
        for (id, result) in results {
            if self.ops.contains_key(&id) {
                continue;
            }
            match result {
                Ok(game) => {
                    if self.db.local_game(&id) != game.as_ref() {
                        self.db.set_local_game(&id, game);
                        changed.push(id);
                    }
                }
                Err(f) => self.emit(PeerEvent::RuntimeFailure(f)),
            }
        }
        if !changed.is_empty() {
            self.emit(PeerEvent::LocalLibraryChanged(changed));
            self.publish();
        }
    }

    /// Something outside any operation failed (e.g. a scan): tell the user.
    pub fn handle_failure(&mut self, failure: Failure) {
        self.emit(PeerEvent::RuntimeFailure(failure));
    }

    // ----- commands -----

    fn token(&mut self) -> OpToken {
        self.next_token += 1;
        OpToken(self.next_token)
    }

    /// Publishes the current state (`ListGames`).
    pub fn list_games(&mut self) {
        let snap = Arc::new(self.snapshot());
        self.out.push_back(Output::Snapshot(snap));
    }

    /// Reports the number of known peers (`GetPeerCount`).
    pub fn peer_count(&mut self) {
        self.emit(PeerEvent::PeerCount(self.db.peer_count()));
    }

    /// Fetches the manifest of `id`'s latest version (`fresh`: ask the
    /// holders even if a matching manifest is cached). The result comes as
    /// `Settled(Outcome::Resolved)` and a `GotGameFiles` event.
    pub fn resolve(&mut self, id: &GameId, fresh: bool) -> Result<OpToken, ResolveError> {
        let token = self.token();
        match self.start_resolve(id, fresh, Waiter::Report(token)) {
            Ok(()) => Ok(token),
            Err(e) => {
                self.emit(PeerEvent::DownloadFailed { id: id.clone(), error: e.failure() });
                Err(e)
            }
        }
    }

    fn start_resolve(&mut self, id: &GameId, fresh: bool, waiter: Waiter) -> Result<(), ResolveError> {
        if self.shutting_down {
            return Err(ResolveError::ShuttingDown);
        }
        if !self.cfg.catalog.contains(id) {
            return Err(ResolveError::NotInCatalog(id.clone()));
        }
        let sources = self.db.download_sources(id).ok_or_else(|| ResolveError::NoHolder(id.clone()))?;
        if let Some(r) = self.resolving.get_mut(id) {
            r.waiters.push(waiter);
            return Ok(());
        }
        let cached = if fresh { None } else { self.db.manifest_with_digest(id, &sources.digest).cloned() };
        if let Some(manifest) = cached {
            let resolved = Resolved { id: id.clone(), manifest: Arc::new(manifest), holders: sources.peers };
            self.resolved(id, Ok(resolved), vec![waiter]);
            return Ok(());
        }
        if !self.ops.contains_key(id) {
            let token = match &waiter {
                Waiter::Report(t) | Waiter::Download(t, _) => *t,
            };
            self.ops.insert(id.clone(), Op { kind: OperationKind::Resolving, token, download: None, then_install: false });
            self.publish();
        }
        let untried = sources.peers.iter().copied().collect();
        let r = Resolving {
            version: sources.version,
            digest: sources.digest,
            holders: sources.peers,
            untried,
            asking: None,
            last_error: "no holder answered".into(),
            waiters: vec![waiter],
        };
        self.resolving.insert(id.clone(), r);
        self.ask_next_holder(id);
        Ok(())
    }

    /// Asks the next untried holder for the manifest, or gives up.
    fn ask_next_holder(&mut self, id: &GameId) {
        let Some(r) = self.resolving.get_mut(id) else { return };
        match r.untried.pop_front() {
            Some(peer) => {
                r.asking = Some(peer);
                self.out.push_back(Output::Ask { peer, query: Query::Manifest(id.clone()) });
            }
            None => {
                let last = r.last_error.clone();
                let waiters = std::mem::take(&mut r.waiters);
                self.resolving.remove(id);
                self.resolved(id, Err(ResolveError::NoAnswer { id: id.clone(), last }), waiters);
            }
        }
    }

    fn manifest_answer(&mut self, peer: PeerId, id: GameId, answer: Result<Response, String>) {
        let Some(r) = self.resolving.get_mut(&id) else { return };
        if r.asking != Some(peer) {
            return;
        }
        r.asking = None;
        let checked = match answer {
            Ok(Response::Game(details)) => {
                let m = details.manifest;
                if m.digest() != r.digest || m.version != r.version {
                    Err(format!("peer {peer} sent a manifest that differs from the one it advertises"))
                } else if let Err(e) = m.validate(u64::MAX) {
                    Err(format!("peer {peer} sent an invalid manifest: {e}"))
                } else {
                    Ok(m)
                }
            }
            Ok(other) => Err(format!("peer {peer} answered {other:?}")),
            Err(e) => Err(format!("peer {peer}: {e}")),
        };
        match checked {
            Ok(m) => {
                self.db.set_peer_manifest(&peer, &id, m.clone());
                let r = self.resolving.remove(&id).expect("checked above");
                let resolved = Resolved { id: id.clone(), manifest: Arc::new(m), holders: r.holders };
                self.resolved(&id, Ok(resolved), r.waiters);
            }
            Err(e) => {
                r.last_error = e;
                self.ask_next_holder(&id);
            }
        }
    }

    /// A resolution ended: report it and start the downloads that waited.
    fn resolved(&mut self, id: &GameId, result: Result<Resolved, ResolveError>, waiters: Vec<Waiter>) {
        // A Resolving mark ends here; a download waiting on it takes the
        // game over below.
        if self.ops.get(id).is_some_and(|op| op.kind == OperationKind::Resolving) {
            self.ops.remove(id);
        }
        match &result {
            Ok(r) => {
                self.pinned.insert(id.clone(), r.clone());
                self.emit(PeerEvent::GotGameFiles {
                    id: id.clone(),
                    version: r.manifest.version.clone(),
                    files: r.manifest.files.len(),
                    bytes: r.manifest.total_size(),
                    peers: r.holders.clone(),
                });
            }
            Err(e) if waiters.iter().all(|w| matches!(w, Waiter::Report(_))) => {
                self.emit(PeerEvent::DownloadFailed { id: id.clone(), error: e.failure() });
            }
            Err(_) => {}
        }
        for waiter in waiters {
            match waiter {
                Waiter::Report(token) => self.out.push_back(Output::Settled { token, outcome: Outcome::Resolved(result.clone()) }),
                Waiter::Download(token, opts) => match &result {
                    Ok(r) => {
                        if let Err(e) = self.start_download(token, r.clone(), opts) {
                            self.fail_download(token, id, e);
                        }
                    }
                    Err(e) => self.fail_download(token, id, DownloadError::Resolve(e.clone())),
                },
            }
        }
        self.publish();
    }

    fn fail_download(&mut self, token: OpToken, id: &GameId, e: DownloadError) {
        self.emit(PeerEvent::DownloadFailed { id: id.clone(), error: e.failure() });
        self.out.push_back(Output::Settled { token, outcome: Outcome::Downloaded(Err(e)) });
    }

    /// Downloads the latest version of `id` from every holder (resolving
    /// its manifest first unless one is pinned).
    pub fn download(&mut self, id: &GameId, opts: DownloadOptions) -> Result<OpToken, DownloadError> {
        let token = self.token();
        let result = self.begin_download(token, id, opts);
        if let Err(e) = &result {
            self.emit(PeerEvent::DownloadFailed { id: id.clone(), error: e.failure() });
        }
        result.map(|()| token)
    }

    fn begin_download(&mut self, token: OpToken, id: &GameId, opts: DownloadOptions) -> Result<(), DownloadError> {
        if let Some(op) = self.ops.get(id) {
            // A plain resolve in flight is joined, not refused.
            let joinable = op.kind == OperationKind::Resolving
                && self.resolving.get(id).is_some_and(|r| r.waiters.iter().all(|w| matches!(w, Waiter::Report(_))));
            if !joinable {
                return Err(DownloadError::Busy { id: id.clone(), running: op.kind });
            }
        }
        if !self.cfg.catalog.contains(id) {
            return Err(ResolveError::NotInCatalog(id.clone()).into());
        }
        let joining = self.ops.contains_key(id);
        let pinned = if opts.fresh || joining { None } else { self.pinned.get(id).cloned() };
        // A pinned manifest still counts only if holders still advertise it.
        let still_latest = pinned.filter(|p| self.db.download_sources(id).is_some_and(|s| s.digest == p.manifest.digest()));
        match still_latest {
            Some(r) => self.start_download(token, r, opts),
            None => {
                let fresh = opts.fresh;
                self.start_resolve(id, fresh, Waiter::Download(token, opts))?;
                if let Some(op) = self.ops.get_mut(id) {
                    op.token = token;
                }
                Ok(())
            }
        }
    }

    fn start_download(&mut self, token: OpToken, r: Resolved, opts: DownloadOptions) -> Result<(), DownloadError> {
        let id = r.id.clone();
        if self.shutting_down {
            return Err(DownloadError::ShuttingDown);
        }
        if let Some(op) = self.ops.get(&id) {
            return Err(DownloadError::Busy { id, running: op.kind });
        }
        if let Some(files) = &opts.files {
            if let Some(missing) = files.iter().find(|p| r.manifest.file(p).is_none()) {
                return Err(DownloadError::UnknownFile { id, path: missing.to_string() });
            }
        }
        let digest = r.manifest.digest();
        let current: Vec<PeerId> = self.db.download_sources(&id).filter(|s| s.digest == digest).map(|s| s.peers).unwrap_or_default();
        let holders = if current.is_empty() { r.holders.clone() } else { current };
        let download = RunningDownload { digest, holders: holders.iter().copied().collect() };
        let op = Op { kind: OperationKind::Downloading, token, download: Some(download), then_install: opts.install };
        self.ops.insert(id.clone(), op);
        self.publish();
        let work = Work::Download { manifest: r.manifest, holders, files: opts.files };
        self.out.push_back(Output::Start { token, id, work });
        Ok(())
    }

    /// Installs (or updates) a downloaded game.
    pub fn install(&mut self, id: &GameId, adopt: bool) -> Result<OpToken, InstallError> {
        let token = self.token();
        let result = self.begin_install(token, id, adopt);
        if let Err(e) = &result {
            self.emit(PeerEvent::InstallFailed { id: id.clone(), error: e.failure() });
        }
        result.map(|()| token)
    }

    fn begin_install(&mut self, token: OpToken, id: &GameId, adopt: bool) -> Result<(), InstallError> {
        if !self.cfg.catalog.contains(id) {
            return Err(InstallError::NotInCatalog(id.clone()));
        }
        if let Some(op) = self.ops.get(id) {
            return Err(InstallError::Busy { id: id.clone(), running: op.kind });
        }
        let local = self.db.local_game(id);
        if !local.is_some_and(|g| g.downloaded()) {
            return Err(InstallError::NotDownloaded(id.clone()));
        }
        let update = local.is_some_and(|g| g.installed);
        let kind = if update { OperationKind::Updating } else { OperationKind::Installing };
        self.begin(token, id, kind);
        self.emit(PeerEvent::InstallBegin { id: id.clone(), update });
        self.out.push_back(Output::Start { token, id: id.clone(), work: Work::Install { adopt, update } });
        Ok(())
    }

    /// Uninstalls a game, keeping the user's files.
    pub fn uninstall(&mut self, id: &GameId, adopt: bool) -> Result<OpToken, UninstallError> {
        let token = self.token();
        let result = self.begin_uninstall(token, id, adopt);
        if let Err(e) = &result {
            self.emit(PeerEvent::UninstallFailed { id: id.clone(), error: e.failure() });
        }
        result.map(|()| token)
    }

    fn begin_uninstall(&mut self, token: OpToken, id: &GameId, adopt: bool) -> Result<(), UninstallError> {
        if !self.cfg.catalog.contains(id) {
            return Err(UninstallError::NotInCatalog(id.clone()));
        }
        if let Some(op) = self.ops.get(id) {
            return Err(UninstallError::Busy { id: id.clone(), running: op.kind });
        }
        if !self.db.local_game(id).is_some_and(|g| g.installed) {
            return Err(UninstallError::NotInstalled(id.clone()));
        }
        self.begin(token, id, OperationKind::Uninstalling);
        self.emit(PeerEvent::UninstallBegin(id.clone()));
        self.out.push_back(Output::Start { token, id: id.clone(), work: Work::Uninstall { adopt } });
        Ok(())
    }

    /// Removes the downloaded files of a game that is not installed.
    pub fn remove(&mut self, id: &GameId) -> Result<OpToken, RemoveError> {
        let token = self.token();
        let result = self.begin_remove(token, id);
        if let Err(e) = &result {
            self.emit(PeerEvent::RemoveFailed { id: id.clone(), error: e.failure() });
        }
        result.map(|()| token)
    }

    fn begin_remove(&mut self, token: OpToken, id: &GameId) -> Result<(), RemoveError> {
        if !self.cfg.catalog.contains(id) {
            return Err(RemoveError::NotInCatalog(id.clone()));
        }
        if let Some(op) = self.ops.get(id) {
            return Err(RemoveError::Busy { id: id.clone(), running: op.kind });
        }
        self.begin(token, id, OperationKind::Removing);
        self.emit(PeerEvent::RemoveBegin(id.clone()));
        self.out.push_back(Output::Start { token, id: id.clone(), work: Work::Remove });
        Ok(())
    }

    fn begin(&mut self, token: OpToken, id: &GameId, kind: OperationKind) {
        self.ops.insert(id.clone(), Op { kind, token, download: None, then_install: false });
        self.publish();
    }

    /// Cancels the download of `id` (running or waiting for its manifest);
    /// returns whether there was one.
    pub fn cancel(&mut self, id: &GameId) -> bool {
        let Some(op) = self.ops.get(id) else { return false };
        match op.kind {
            OperationKind::Downloading => {
                self.out.push_back(Output::Cancel(op.token));
                true
            }
            OperationKind::Resolving => {
                let token = op.token;
                let Some(r) = self.resolving.get_mut(id) else { return false };
                let before = r.waiters.len();
                r.waiters.retain(|w| !matches!(w, Waiter::Download(t, _) if *t == token));
                if r.waiters.len() == before {
                    return false;
                }
                if r.waiters.is_empty() {
                    self.resolving.remove(id);
                }
                self.ops.remove(id);
                self.publish();
                self.fail_download(token, id, DownloadError::Cancelled);
                true
            }
            _ => false,
        }
    }

    /// The peer stops: nothing new starts, waiting downloads fail, running
    /// operations are cancelled (they stop at a safe point and still
    /// report through [`PeerMachine::handle_finished`]).
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        for (id, r) in std::mem::take(&mut self.resolving) {
            self.resolved(&id, Err(ResolveError::ShuttingDown), r.waiters);
        }
        let downloads: Vec<OpToken> = self.ops.values().filter(|op| op.kind == OperationKind::Downloading).map(|op| op.token).collect();
        self.out.extend(downloads.into_iter().map(Output::Cancel));
    }

    /// We are another identity now (the new game directory's): every peer
    /// knew us as the old one, so all are forgotten and found again, and
    /// static addresses are dialed at once.
    pub fn handle_identity_changed(&mut self, id: PeerId, now: Timestamp) {
        self.cfg.local_id = id;
        let peers: Vec<PeerId> = self.db.peers().map(|(p, _)| *p).collect();
        for peer in &peers {
            self.forget_peer(peer);
        }
        self.known_ids.clear();
        for state in self.statics.values_mut() {
            *state = StaticState::Idle { next_try: now };
        }
        self.next_tick = now;
    }

    /// Whether the game directory may be replaced now (no operation runs).
    pub fn may_change_game_dir(&self) -> bool {
        self.ops.is_empty()
    }

    /// An operation's work ended. `settled` is the game's local state
    /// scanned after the work (or why scanning failed). The machine applies
    /// it while the operation is still marked, then clears the operation,
    /// publishes the state, and only then reports the lifecycle event and
    /// the result, so a UI never sees a finished operation with stale state.
    pub fn handle_finished(&mut self, token: OpToken, settled: Result<Option<LocalGame>, Failure>, outcome: Outcome) {
        let Some(id) = self.ops.iter().find(|(_, op)| op.token == token).map(|(id, _)| id.clone()) else {
            self.out.push_back(Output::Settled { token, outcome });
            return;
        };
        match settled {
            Ok(game) => self.db.set_local_game(&id, game),
            Err(f) => self.emit(PeerEvent::RuntimeFailure(f)),
        }
        let op = self.ops.remove(&id).expect("found above");
        self.note_partial(&id, &outcome);
        self.publish();
        self.lifecycle(&id, &outcome);
        let install_next = op.then_install && matches!(&outcome, Outcome::Downloaded(Ok(r)) if r.complete);
        self.out.push_back(Output::Settled { token, outcome });
        if install_next && !self.shutting_down {
            // Refusals are reported as InstallFailed by `install` itself.
            let _ = self.install(&id, false);
        }
    }

    fn note_partial(&mut self, id: &GameId, outcome: &Outcome) {
        match outcome {
            Outcome::Downloaded(Ok(r)) if !r.complete => {
                self.partial.insert(id.clone());
            }
            Outcome::Downloaded(Ok(_)) | Outcome::Removed(Ok(())) => {
                self.partial.remove(id);
                self.pinned.remove(id);
            }
            _ => {}
        }
    }

    /// The events that end an operation.
    fn lifecycle(&mut self, id: &GameId, outcome: &Outcome) {
        let id = id.clone();
        let events = match outcome {
            Outcome::Resolved(_) => vec![],
            Outcome::Downloaded(Ok(r)) => {
                vec![PeerEvent::DownloadFinished { id, version: r.version.clone(), stats: r.stats.clone() }]
            }
            Outcome::Downloaded(Err(e)) => vec![PeerEvent::DownloadFailed { id, error: e.failure() }],
            Outcome::Installed(Ok(r)) => kept(&id, &r.kept).into_iter().chain([PeerEvent::InstallFinished { id }]).collect(),
            Outcome::Installed(Err(e)) => vec![PeerEvent::InstallFailed { id, error: e.failure() }],
            Outcome::Uninstalled(Ok(r)) => kept(&id, &r.kept).into_iter().chain([PeerEvent::UninstallFinished(id)]).collect(),
            Outcome::Uninstalled(Err(e)) => vec![PeerEvent::UninstallFailed { id, error: e.failure() }],
            Outcome::Removed(Ok(())) => vec![PeerEvent::RemoveFinished(id)],
            Outcome::Removed(Err(e)) => vec![PeerEvent::RemoveFailed { id, error: e.failure() }],
        };
        for e in events {
            self.emit(e);
        }
    }

    // ----- publishing -----

    fn emit(&mut self, e: PeerEvent) {
        self.out.push_back(Output::Event(e));
    }

    /// Publishes the serve view (if it changed), the roots to watch (if they
    /// changed) and a snapshot.
    fn publish(&mut self) {
        self.refresh_serve_view();
        let roots: Vec<GameId> = self.db.local().games.keys().cloned().collect();
        if roots != self.watched {
            self.watched = roots.clone();
            self.out.push_back(Output::WatchRoots(roots));
        }
        self.list_games();
    }

    /// Rebuilds what the server may serve: downloaded catalog games without
    /// an active download or removal.
    fn refresh_serve_view(&mut self) {
        let catalog = self.db.catalog().clone();
        let mut games = BTreeMap::new();
        for (id, g) in &self.db.local().games {
            let busy = matches!(self.ops.get(id).map(|op| op.kind), Some(OperationKind::Downloading | OperationKind::Removing));
            if busy || !catalog.contains(id) {
                continue;
            }
            if let (Some(summary), Some(m)) = (g.summary(&catalog), g.manifest.as_ref()) {
                // An unchanged game keeps its entry (and its unit layout).
                let entry = match self.serve.games.get(id) {
                    Some(old) if old.summary == summary => old.clone(),
                    _ => Arc::new(ServedGame::new(summary, m.clone())),
                };
                games.insert(id.clone(), entry);
            }
        }
        let changed = self.serve.games.len() != games.len()
            || self.serve.games.iter().zip(games.iter()).any(|((a, sa), (b, sb))| a != b || sa.summary != sb.summary);
        if changed || self.serve.revision == 0 {
            let revision = self.serve.revision + 1;
            self.serve = Arc::new(ServeView { catalog, games, revision });
            self.out.push_back(Output::Serve(self.serve.clone()));
        }
    }
}

fn kept(id: &GameId, kept: &Option<RelPath>) -> Option<PeerEvent> {
    kept.clone().map(|kept| PeerEvent::UserFilesKept { id: id.clone(), kept })
}

/// A delay in `0..window` that differs per (us, them, revision), so that
/// peers learning the same news ask at different instants, and a replay
/// asks at the same ones.
fn spread(us: &PeerId, them: &PeerId, rev: u64, window: Duration) -> Duration {
    let mut h = blake3::Hasher::new();
    h.update(&us.0).update(&them.0).update(&rev.to_le_bytes());
    let draw = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(draw.checked_rem(nanos).unwrap_or(0))
}
