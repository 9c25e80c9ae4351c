//! The peer runtime, generic over the ports: no adapter is named here.
//!
//! [`start_peer`] boots four long-lived tasks (server, discovery, liveness,
//! local game monitor) and a command loop, and returns a
//! [`PeerRuntimeHandle`]. The UI drives it with [`PeerCommand`]s and
//! observes [`PeerEvent`]s.

mod budget;
mod download;
mod events;
mod ops;
mod peers;
mod server;
mod state;
mod tasks;

pub use events::{OperationKind, PeerCommand, PeerEvent, PeerShare, TransferStats};

use lanspread_core::catalog::Catalog;
use lanspread_core::sched::SchedulerConfig;
use lanspread_ports::{Clock, Discovery, Fs, FsProvider, PeerId, Transport, Unpacker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Discovery that finds nobody: peers come only from static addresses
/// (`--peer`), e.g. where multicast is blocked.
pub struct NoDiscovery;

#[async_trait::async_trait]
impl Discovery for NoDiscovery {
    async fn advertise(&self, _me: lanspread_ports::PeerAdvert) -> Result<(), lanspread_ports::DiscoveryError> {
        Ok(())
    }
    async fn next_event(&self) -> Option<lanspread_ports::DiscoveryEvent> {
        std::future::pending().await
    }
    async fn shutdown(&self) {}
}

/// Runtime settings.
#[derive(Clone)]
pub struct PeerConfig {
    /// Games this peer may announce and serve.
    pub catalog: Catalog,
    /// Addresses to dial even without discovery (`--peer`).
    pub static_peers: Vec<SocketAddr>,
    /// Liveness ping period.
    pub ping_interval: Duration,
    /// A peer silent for this long is pruned.
    pub peer_timeout: Duration,
    /// Fallback full library scan period.
    pub fallback_scan: Duration,
    /// Delay to coalesce bursts of filesystem events.
    pub watch_debounce: Duration,
    /// Period of download progress events.
    pub progress_interval: Duration,
    /// Chunk scheduler tunables.
    pub sched: SchedulerConfig,
    /// Install automatically after a download.
    pub auto_install: bool,
    /// Shared secret of a LAN party (off when `None`).
    pub party_key: Option<String>,
    /// Concurrent request streams served per connection.
    pub max_streams_per_conn: usize,
    /// Timeout of one control request (hello, list, manifest, ping).
    pub request_timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            catalog: Catalog::default(),
            static_peers: vec![],
            ping_interval: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(20),
            fallback_scan: Duration::from_secs(300),
            watch_debounce: Duration::from_millis(250),
            progress_interval: Duration::from_millis(500),
            sched: SchedulerConfig::default(),
            auto_install: true,
            party_key: None,
            max_streams_per_conn: 64,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The adapters a runtime runs on.
#[derive(Clone)]
pub struct Ports {
    /// The game directory.
    pub fs: Arc<dyn Fs>,
    /// Opens another game directory on `SetGameDir` (optional).
    pub fs_provider: Option<Arc<dyn FsProvider>>,
    /// QUIC (or simulated) endpoint, already listening.
    pub transport: Arc<dyn Transport>,
    /// Peer discovery.
    pub discovery: Arc<dyn Discovery>,
    /// Archive extraction.
    pub unpacker: Arc<dyn Unpacker>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Control handle of a running peer.
pub struct PeerRuntimeHandle {
    commands: mpsc::UnboundedSender<PeerCommand>,
    done: tokio::sync::watch::Receiver<bool>,
    /// Our identity.
    pub id: PeerId,
    /// Where our server listens.
    pub addr: SocketAddr,
    main: tokio::task::AbortHandle,
    shared: Arc<state::Shared>,
}

impl PeerRuntimeHandle {
    /// Sends a command (ignored after shutdown).
    pub fn send(&self, cmd: PeerCommand) {
        let _ = self.commands.send(cmd);
    }

    /// A clone of the command sender.
    pub fn sender(&self) -> mpsc::UnboundedSender<PeerCommand> {
        self.commands.clone()
    }

    /// Stops every task at once, without cleanup: what a crash or a power
    /// cut does to the process (used by simulations and tests).
    pub fn kill(self) {
        self.main.abort();
        self.shared.abort_all();
    }

    /// Stops the peer at a safe point and waits until every task ended.
    pub async fn shutdown(mut self) {
        let _ = self.commands.send(PeerCommand::Shutdown);
        while !*self.done.borrow() {
            if self.done.changed().await.is_err() {
                break;
            }
        }
    }
}

/// Starts a peer. Events arrive on `events`.
pub fn start_peer(config: PeerConfig, ports: Ports, events: mpsc::UnboundedSender<PeerEvent>) -> PeerRuntimeHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let id = ports.transport.local_id();
    let addr = ports.transport.local_addr();
    let shared = state::Shared::new(config, ports, events);
    let main = tokio::spawn(tasks::run(shared.clone(), rx, done_tx)).abort_handle();
    PeerRuntimeHandle { commands: tx, done: done_rx, id, addr, main, shared }
}
