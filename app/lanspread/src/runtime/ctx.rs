//! What the runtime's tasks share: the ports, the IO resources (connection
//! pool, game directory, open-file budget) and the way back to the driver.
//! Peer state is not here: it lives in the driver's [`PeerMachine`] and
//! tasks reach it only by sending an [`Input`].
//!
//! [`PeerMachine`]: lanspread_core::peer::PeerMachine

use super::budget::FileBudget;
use super::local::Local;
use super::pool::Pool;
use super::rate::RateCaps;
use super::swarm::Swarms;
use super::{Network, PeerConfig, Ports, StablePorts};
use crate::peer::Command;
use lanspread_core::game::GameId;
use lanspread_core::peer::{DialOutcome, Failure, OpToken, Outcome, PeerEvent, Query};
use lanspread_core::protocol::Response;
use lanspread_core::scan::{LocalGame, LocalLibrary};
use lanspread_ports::{Discovery, PeerAdvert, PeerId, Transport};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};

/// A message to the driver: news for the peer machine, or a command.
pub(crate) enum Input {
    /// From the embedding app.
    Command(Command),
    /// Discovery found a peer.
    Discovered(PeerAdvert),
    /// Discovery lost a peer.
    Vanished(PeerId),
    /// A peer said Hello to our server.
    Hello { peer: PeerId, addr: SocketAddr },
    /// A peer pinged our server.
    Seen(PeerId),
    /// The pool reached a peer at this address.
    Connected { peer: PeerId, addr: SocketAddr },
    /// A static address was dialed.
    Dialed { addr: SocketAddr, outcome: DialOutcome },
    /// A peer answered a query (or failed to).
    Answer { peer: PeerId, query: Query, result: Result<Response, String> },
    /// A full scan ended.
    FullScan(Result<LocalLibrary, Failure>),
    /// Rescans of single games ended.
    Scanned(Vec<(GameId, Result<Option<LocalGame>, Failure>)>),
    /// The watcher saw changes in these games' roots.
    Dirty(BTreeSet<GameId>),
    /// An operation's work ended (`settled`: the game's state afterwards).
    Finished { token: OpToken, settled: Result<Option<LocalGame>, Failure>, outcome: Outcome },
    /// Something failed outside any operation.
    Failure(Failure),
}

/// Every detached task, so a hard stop (`kill`) can abort them all.
#[derive(Default)]
pub(crate) struct TaskSet(Mutex<Vec<tokio::task::AbortHandle>>);

impl TaskSet {
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let h = tokio::spawn(f).abort_handle();
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= 256 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(h);
    }

    pub fn abort_all(&self) {
        for t in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

/// What the tasks share (see the module docs).
pub(crate) struct Ctx {
    pub cfg: PeerConfig,
    pub ports: StablePorts,
    pub local: Local,
    pub pool: Pool,
    /// Replaced with the transport when the identity changes.
    discovery: Mutex<Arc<dyn Discovery>>,
    pub files: FileBudget,
    /// What running downloads verified, served to the swarm.
    pub swarms: Swarms,
    /// The upload and download caps.
    pub rates: RateCaps,
    /// When the server last sent file data (in ms of the clock), so a
    /// short-lived peer can keep serving while others fetch from it.
    pub last_upload_ms: std::sync::atomic::AtomicU64,
    pub events: broadcast::Sender<PeerEvent>,
    inbox: mpsc::UnboundedSender<Input>,
    pub shutdown: watch::Sender<bool>,
    pub tasks: TaskSet,
    /// The game directory's path, as apps show it (changed by `SetGameDir`).
    pub game_dir: watch::Sender<Option<String>>,
}

impl Ctx {
    pub fn new(
        cfg: PeerConfig,
        ports: Ports,
        guard: Option<Box<dyn std::any::Any + Send + Sync>>,
        events: broadcast::Sender<PeerEvent>,
        inbox: mpsc::UnboundedSender<Input>,
    ) -> Arc<Self> {
        let (ports, net) = ports.split();
        let pool = Pool::new(&cfg, net.transport, ports.clock.clone(), inbox.clone());
        Arc::new(Ctx {
            local: Local::new(lanspread_ports::OpenedDir { fs: ports.fs.clone(), guard }),
            pool,
            discovery: Mutex::new(net.discovery),
            files: FileBudget::default(),
            swarms: Swarms::default(),
            rates: RateCaps::new(cfg.max_upload, cfg.max_download, &ports.clock),
            last_upload_ms: std::sync::atomic::AtomicU64::new(0),
            events,
            inbox,
            shutdown: watch::channel(false).0,
            tasks: TaskSet::default(),
            game_dir: watch::channel(cfg.game_dir.clone()).0,
            cfg,
            ports,
        })
    }

    /// The transport in use now.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.pool.transport()
    }

    /// The discovery in use now.
    pub fn discovery(&self) -> Arc<dyn Discovery> {
        self.discovery.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The network in use now.
    pub fn network(&self) -> Network {
        Network { transport: self.transport(), discovery: self.discovery() }
    }

    /// Hands over the network (for the identity to change): nothing here
    /// holds it any more, and every connection is dropped.
    pub fn detach_network(&self) -> Network {
        Network { transport: self.pool.detach(), discovery: self.discovery() }
    }

    /// Uses `net` from now on.
    pub fn attach_network(&self, net: Network) {
        *self.discovery.lock().unwrap_or_else(|e| e.into_inner()) = net.discovery;
        self.pool.attach(net.transport);
    }

    /// Tells the driver.
    pub fn tell(&self, input: Input) {
        let _ = self.inbox.send(input);
    }

    /// Publishes an event (subscribers that fall behind are told they lagged).
    pub fn emit(&self, e: PeerEvent) {
        let _ = self.events.send(e);
    }

    /// A receiver that changes when shutdown starts.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
