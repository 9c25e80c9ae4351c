//! The peer runtime, generic over the ports: no adapter is named here.
//!
//! [`start`] spawns the [driver](driver) (which owns the peer machine) and
//! returns a [`crate::Peer`]. The driver runs three long-lived tasks (the
//! server, discovery, the local game monitor); liveness is a timer of the
//! machine. Tasks reach peer state only by messages to the driver.

mod admission;
mod budget;
pub(crate) mod ctx;
mod download;
pub(crate) mod driver;
mod have;
mod local;
mod monitor;
mod ops;
mod party;
mod pool;
mod rate;
mod server;
mod swarm;

use lanspread_core::catalog::Catalog;
use lanspread_core::peer::SetGameDirError;
use lanspread_core::peer::Snapshot;
use lanspread_core::sched::SchedulerConfig;
use lanspread_core::serve::ServeView;
use lanspread_ports::{Clock, Discovery, Fs, FsProvider, PeerId, Transport, Unpacker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

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
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The game directory's path as apps show it ([`crate::Peer::game_dir`]);
    /// set by the builder, `None` with a filesystem of the app's.
    pub game_dir: Option<String>,
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
    /// Chunk scheduler tunables (`sched.holder_wait`: how long a download
    /// waits for a usable holder).
    pub sched: SchedulerConfig,
    /// Install automatically after a download started by
    /// `PeerCommand::DownloadGameFiles`.
    pub auto_install: bool,
    /// Shared secret of a LAN party (off when `None`).
    pub party_key: Option<String>,
    /// Concurrent request streams served per connection.
    pub max_streams_per_conn: usize,
    /// Timeout of one control request (hello, list, manifest, ping).
    pub request_timeout: Duration,
    /// A connection to our server that has not said Hello (with the right
    /// party proof) after this long is closed.
    pub hello_timeout: Duration,
    /// A reply whose reader lets one write stall for this long is reset
    /// (so a reader that never reads holds no file and no buffer).
    pub write_timeout: Duration,
    /// Events buffered per subscriber; one that falls further behind is
    /// told it lagged.
    pub event_capacity: usize,
    /// Most bytes per second this peer sends to others (`None`: no cap).
    pub max_upload: Option<u64>,
    /// Most bytes per second this peer's downloads ask for (`None`: no cap).
    pub max_download: Option<u64>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            game_dir: None,
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
            hello_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(20),
            event_capacity: 1024,
            max_upload: None,
            max_download: None,
        }
    }
}

/// The network side of a peer: what changes with its identity.
#[derive(Clone)]
pub struct Network {
    /// QUIC (or simulated) endpoint, already listening.
    pub transport: Arc<dyn Transport>,
    /// Peer discovery, advertising (and skipping) the transport's identity.
    pub discovery: Arc<dyn Discovery>,
}

/// Why a [`Rebind`] failed, and the network to go on with.
pub struct RebindFailed {
    /// Why.
    pub error: SetGameDirError,
    /// The old identity, listening again (`None` if even that failed: the
    /// peer then stops).
    pub restored: Option<Network>,
}

/// Gives a peer the identity of another game directory, so that two
/// directories served one after the other (or by two processes) never
/// share an identity.
#[async_trait::async_trait]
pub trait Rebind: Send + Sync {
    /// The id of `dir`'s identity (loaded, or created on first use).
    fn id_for(&self, dir: &str) -> Result<PeerId, SetGameDirError>;
    /// Stops `old` and listens again at its address as `dir`'s identity,
    /// with discovery for that identity.
    async fn rebind(&self, dir: &str, old: Network) -> Result<Network, RebindFailed>;
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
    /// Switches identities with the game directory (optional; without it
    /// the identity stays when the directory changes).
    pub rebind: Option<Arc<dyn Rebind>>,
    /// Archive extraction.
    pub unpacker: Arc<dyn Unpacker>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// The ports that stay for the peer's life; the [`Network`] is kept apart,
/// since it changes with the identity (and an old endpoint is released
/// only when nothing holds it).
pub(crate) struct StablePorts {
    pub fs: Arc<dyn Fs>,
    pub fs_provider: Option<Arc<dyn FsProvider>>,
    pub rebind: Option<Arc<dyn Rebind>>,
    pub unpacker: Arc<dyn Unpacker>,
    pub clock: Arc<dyn Clock>,
}

impl Ports {
    /// Splits into what stays and what changes with the identity.
    pub(crate) fn split(self) -> (StablePorts, Network) {
        let Ports { fs, fs_provider, transport, discovery, rebind, unpacker, clock } = self;
        (StablePorts { fs, fs_provider, rebind, unpacker, clock }, Network { transport, discovery })
    }
}

/// Starts a peer on `ports`; `guard` (the game directory's lock) is held
/// while the peer uses that directory (until it stops or switches
/// directories).
pub(crate) fn start(config: PeerConfig, ports: Ports, guard: Option<Box<dyn std::any::Any + Send + Sync>>) -> crate::Peer {
    let (inbox_tx, inbox) = mpsc::unbounded_channel();
    let (events, first_events) = broadcast::channel(config.event_capacity.max(16));
    let ctx = ctx::Ctx::new(config, ports, guard, events, inbox_tx.clone());
    let (snapshot, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let published = driver::Published {
        snapshot,
        serve: watch::channel(Arc::new(ServeView::default())).0,
        roots: watch::channel(Vec::new()).0,
        game_dir: watch::channel(0).0,
    };
    let (done_tx, done) = watch::channel(false);
    let driver = driver::Driver::new(ctx.clone(), inbox, published);
    let main = tokio::spawn(driver.run(done_tx)).abort_handle();
    crate::Peer::from_parts(ctx, first_events, inbox_tx, snapshot_rx, done, main)
}
