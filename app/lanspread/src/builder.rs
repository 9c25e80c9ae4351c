//! Assembling a peer from real adapters: the game directory (checked and
//! locked), the identity, a listening QUIC transport, discovery, the real
//! filesystem, the unpacker and the clock.
//!
//! This is the only module of the library that names adapter crates; which
//! of them exist depends on the Cargo features (`quinn`, `s2n`, `mdns`,
//! `capfs`). Choosing an adapter whose feature is off is an error
//! ([`BuildError::FeatureDisabled`]), never a silent substitute.
//!
//! ```no_run
//! # async fn run(catalog: lanspread_core::catalog::Catalog) -> Result<(), lanspread::BuildError> {
//! use lanspread::{Builder, DiscoveryKind, TransportKind};
//! let peer = Builder::new()
//!     .game_dir("/games")
//!     .catalog(catalog)
//!     .identity_dir("/home/me/.config/lanspread/identities/games")
//!     .transport(TransportKind::Quinn)
//!     .discovery(DiscoveryKind::Mdns)
//!     .lock_label("serve")
//!     .config(|c| c.auto_install = false)
//!     .spawn()
//!     .await?;
//! # peer.shutdown().await;
//! # Ok(())
//! # }
//! ```

#[cfg(any(feature = "quinn", feature = "s2n"))]
mod rebind;

use crate::runtime::{NoDiscovery, PeerConfig, Ports};
use lanspread_core::catalog::Catalog;
use lanspread_ports::{Clock, Discovery, DiscoveryError, Fs, FsError, FsProvider, Transport, TransportError, Unpacker};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which QUIC stack a peer listens with.
///
/// Deserializes from the lowercase names `"quinn"` and `"s2n"`.
///
/// ```
/// use lanspread::TransportKind;
/// assert_eq!(TransportKind::default(), TransportKind::Quinn);
/// assert_eq!(TransportKind::S2n.feature(), "s2n");
/// // Whether a kind is built in follows the Cargo features.
/// assert_eq!(TransportKind::Quinn.available(), cfg!(feature = "quinn"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// quinn (Cargo feature `quinn`).
    #[default]
    Quinn,
    /// s2n-quic (Cargo feature `s2n`).
    S2n,
}

impl TransportKind {
    /// The Cargo feature that provides this transport.
    pub fn feature(self) -> &'static str {
        match self {
            TransportKind::Quinn => "quinn",
            TransportKind::S2n => "s2n",
        }
    }

    /// Whether this build of the library has the transport.
    pub fn available(self) -> bool {
        match self {
            TransportKind::Quinn => cfg!(feature = "quinn"),
            TransportKind::S2n => cfg!(feature = "s2n"),
        }
    }
}

/// How a peer finds other peers (besides [`Builder::static_peers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryKind {
    /// mDNS (Cargo feature `mdns`). Where mDNS cannot start, the peer runs
    /// without discovery: see [`Assembled::mdns_unavailable`].
    Mdns,
    /// No discovery: peers come only from [`Builder::static_peers`].
    None,
}

impl Default for DiscoveryKind {
    /// [`DiscoveryKind::Mdns`] when the `mdns` feature is on, else
    /// [`DiscoveryKind::None`].
    fn default() -> Self {
        if cfg!(feature = "mdns") {
            DiscoveryKind::Mdns
        } else {
            DiscoveryKind::None
        }
    }
}

/// Why a peer could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither [`Builder::game_dir`] nor [`Builder::custom_fs`] was given.
    #[error("no game directory given")]
    MissingGameDir,
    /// The game directory does not exist.
    #[error("game directory {} does not exist", .path.display())]
    GameDirNotFound {
        /// The directory as given.
        path: PathBuf,
    },
    /// The game directory is not a directory.
    #[error("game directory {} is not a directory", .path.display())]
    NotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// The game directory could not be inspected or resolved.
    #[error("game directory {}: {source}", .path.display())]
    GameDir {
        /// The directory as given.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The real filesystem could not be opened beneath the game directory.
    #[error("game directory {}: {source}", .path.display())]
    OpenGameDir {
        /// The game directory.
        path: PathBuf,
        /// What the filesystem adapter said.
        #[source]
        source: FsError,
    },
    /// The lock file of the game directory could not be opened.
    #[error("{}: {source}", .path.display())]
    LockFile {
        /// The lock file (`<game dir>/.lanspread.lock`).
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the lock of the game directory.
    #[error("game directory {} is in use by another lanspread: {holder}", .path.display())]
    DirectoryInUse {
        /// The game directory.
        path: PathBuf,
        /// What the lock file says about its holder (`pid N (what)`), or
        /// `another process` when it says nothing.
        holder: String,
    },
    /// A QUIC transport needs an identity and none was given (see
    /// [`Builder::identity_dir`], [`Builder::ephemeral_identity`]).
    #[error("no identity given: a QUIC transport needs an identity directory or an identity")]
    MissingIdentity,
    /// The identity could not be loaded from, or created in, its directory.
    #[error("identity in {}: {source}", .dir.display())]
    Identity {
        /// The identity directory.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A fresh identity could not be generated.
    #[error("generating an identity: {0}")]
    GenerateIdentity(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The transport could not listen.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address it tried.
        addr: SocketAddr,
        /// What the transport said.
        #[source]
        source: Box<TransportError>,
    },
    /// The chosen adapter needs a Cargo feature this build lacks (the
    /// feature's name).
    #[error("lanspread was built without the `{0}` feature")]
    FeatureDisabled(&'static str),
}

/// Exclusive lock of a game directory (`<game dir>/.lanspread.lock`, which
/// names its holder), held until dropped.
pub struct DirLock {
    _file: fd_lock::RwLockWriteGuard<'static, std::fs::File>,
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirLock").finish_non_exhaustive()
    }
}

/// Checks that `path` is an existing directory and returns its canonical
/// path.
pub fn check_game_dir(path: &Path) -> Result<PathBuf, BuildError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => path.canonicalize().map_err(|source| BuildError::GameDir { path: path.to_path_buf(), source }),
        Ok(_) => Err(BuildError::NotADirectory { path: path.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BuildError::GameDirNotFound { path: path.to_path_buf() }),
        Err(source) => Err(BuildError::GameDir { path: path.to_path_buf(), source }),
    }
}

/// Takes the lock of the game directory `games`, writing `pid N (what)`
/// into the lock file; fails with [`BuildError::DirectoryInUse`] naming the
/// holder when another process (or another lock in this one) has it.
pub fn lock_games_dir(games: &Path, what: &str) -> Result<DirLock, BuildError> {
    let path = games.join(".lanspread.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| BuildError::LockFile { path: path.clone(), source })?;
    let lock: &'static mut fd_lock::RwLock<std::fs::File> = Box::leak(Box::new(fd_lock::RwLock::new(file)));
    match lock.try_write() {
        Ok(mut guard) => {
            use std::io::{Seek, Write};
            let _ = guard.set_len(0);
            let _ = guard.seek(std::io::SeekFrom::Start(0));
            let _ = write!(guard, "pid {} ({what})", std::process::id());
            let _ = guard.flush();
            Ok(DirLock { _file: guard })
        }
        Err(_) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = if holder.trim().is_empty() { "another process".to_owned() } else { holder.trim().to_owned() };
            Err(BuildError::DirectoryInUse { path: games.to_path_buf(), holder })
        }
    }
}

/// The real filesystem beneath the game directory `games` (feature
/// `capfs`). It takes no lock: see [`lock_games_dir`].
pub fn open_game_dir(games: &Path) -> Result<Arc<dyn Fs>, BuildError> {
    #[cfg(feature = "capfs")]
    {
        let fs = lanspread_capfs::CapFs::open(games).map_err(|source| BuildError::OpenGameDir { path: games.to_path_buf(), source })?;
        Ok(Arc::new(fs))
    }
    #[cfg(not(feature = "capfs"))]
    {
        let _ = games;
        Err(BuildError::FeatureDisabled("capfs"))
    }
}

/// Opens another real game directory at run time (`SetGameDir`): checks it,
/// takes its lock (refusing with [`FsErrorKind::InUse`] while another
/// process holds it) and keeps the lock as long as the peer uses it.
#[derive(Debug, Clone)]
pub struct LockingProvider {
    /// What the lock file says holds it.
    pub label: String,
}

impl FsProvider for LockingProvider {
    fn open(&self, dir: &str) -> Result<lanspread_ports::OpenedDir, FsError> {
        use lanspread_ports::FsErrorKind;
        let refuse = |e: BuildError| {
            let kind = match e {
                BuildError::DirectoryInUse { .. } => FsErrorKind::InUse,
                BuildError::GameDirNotFound { .. } => FsErrorKind::NotFound,
                BuildError::NotADirectory { .. } => FsErrorKind::NotADirectory,
                _ => FsErrorKind::Io,
            };
            FsError::new(kind, e.to_string())
        };
        let dir = check_game_dir(Path::new(dir)).map_err(refuse)?;
        let lock = lock_games_dir(&dir, &self.label).map_err(refuse)?;
        let fs = open_game_dir(&dir).map_err(refuse)?;
        Ok(lanspread_ports::OpenedDir { fs, guard: Some(Box::new(lock)) })
    }
}

/// The unpacker of real games: zip, tar (plain, gzip, zstd) and RAR through
/// an external tool.
pub fn standard_unpacker() -> Arc<dyn Unpacker> {
    Arc::new(lanspread_unpack::MultiUnpacker::standard())
}

/// The clock of a real peer (tokio time).
pub fn standard_clock() -> Arc<dyn Clock> {
    Arc::new(lanspread_clock::TokioClock::new())
}

/// Where the identity comes from (read only by the QUIC transports).
#[cfg_attr(not(any(feature = "quinn", feature = "s2n")), allow(dead_code))]
enum IdentitySource {
    None,
    Dir(PathBuf),
    /// One identity per game directory, in a directory of its own under
    /// this root (see [`identity_dir_for`]).
    PerGameDir(PathBuf),
    #[cfg(any(feature = "quinn", feature = "s2n"))]
    Given(lanspread_tls::Identity),
    Ephemeral,
}

/// Where the transport listens (read only by the QUIC transports).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(feature = "quinn", feature = "s2n")), allow(dead_code))]
enum Listen {
    /// Exactly this address.
    Exact(SocketAddr),
    /// `[::]:port` (dual stack), falling back to `0.0.0.0:port`.
    DualStack(u16),
}

enum TransportChoice {
    Kind(TransportKind),
    Custom(Arc<dyn Transport>),
}

enum DiscoveryChoice {
    Kind(DiscoveryKind),
    Custom(Arc<dyn Discovery>),
}

type ConfigFn = Box<dyn FnOnce(&mut PeerConfig) + Send>;

/// Assembles a peer from real adapters (or custom ports), in the style of
/// iroh's `Endpoint::builder()`: set what differs from the defaults, then
/// [`spawn`](Builder::spawn) the peer (or [`assemble`](Builder::assemble)
/// the ports first and [`start`](Assembled::start) them).
///
/// Defaults: quinn, mDNS (when their features are on), listening on
/// `[::]:0` (dual stack), an empty catalog, no static peers, no party key,
/// the game directory locked with the label `lanspread`.
///
/// A throwaway peer on loopback, its state, its events and its end:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use lanspread::{Builder, DiscoveryKind, EventsError, PeerEvent};
/// let games = tempfile::tempdir()?;
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let peer = Builder::new()
///         .game_dir(games.path())
///         .ephemeral_identity()
///         .listen("127.0.0.1:0".parse()?)
///         .discovery(DiscoveryKind::None)
///         .spawn()
///         .await?;
///     assert!(peer.addr().ip().is_loopback() && peer.addr().port() != 0);
///     // The game directory is locked while the peer runs.
///     let again = Builder::new().game_dir(games.path()).ephemeral_identity().discovery(DiscoveryKind::None).assemble();
///     assert!(matches!(again, Err(lanspread::BuildError::DirectoryInUse { .. })));
///
///     // The first subscriber gets every event since the start: the
///     // start-up scan ends with a snapshot of the (empty) library.
///     let mut events = peer.subscribe();
///     let first = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await?;
///     assert!(matches!(first, Ok(PeerEvent::LibrarySnapshot { .. })), "{first:?}");
///     let snapshot = peer.snapshot();
///     assert!(snapshot.games.is_empty() && snapshot.peers.is_empty() && snapshot.operations.is_empty());
///
///     peer.shutdown().await;
///     assert!(peer.is_stopped());
///     // The events end once the peer stopped (its last one says so).
///     let mut last = None;
///     let end = loop {
///         match tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await? {
///             Ok(event) => last = Some(event),
///             Err(e) => break e,
///         }
///     };
///     assert_eq!((last, end), (Some(PeerEvent::Stopped), EventsError::Closed));
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })
/// # }
/// ```
pub struct Builder {
    game_dir: Option<PathBuf>,
    dir_lock: bool,
    lock_label: String,
    catalog: Catalog,
    identity: IdentitySource,
    transport: TransportChoice,
    discovery: DiscoveryChoice,
    static_peers: Vec<SocketAddr>,
    party_key: Option<String>,
    listen: Listen,
    fs: Option<Arc<dyn Fs>>,
    fs_provider: Option<Option<Arc<dyn FsProvider>>>,
    unpacker: Option<Arc<dyn Unpacker>>,
    clock: Option<Arc<dyn Clock>>,
    config: Vec<ConfigFn>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("game_dir", &self.game_dir)
            .field("dir_lock", &self.dir_lock)
            .field("lock_label", &self.lock_label)
            .field("static_peers", &self.static_peers)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Builder {
            game_dir: None,
            dir_lock: true,
            lock_label: "lanspread".to_owned(),
            catalog: Catalog::default(),
            identity: IdentitySource::None,
            transport: TransportChoice::Kind(TransportKind::default()),
            discovery: DiscoveryChoice::Kind(DiscoveryKind::default()),
            static_peers: Vec::new(),
            party_key: None,
            listen: Listen::DualStack(0),
            fs: None,
            fs_provider: None,
            unpacker: None,
            clock: None,
            config: Vec::new(),
        }
    }

    /// The game directory: checked (it must exist and be a directory),
    /// locked (see [`lock_label`](Builder::lock_label)), and opened with the
    /// real filesystem (feature `capfs`) unless
    /// [`custom_fs`](Builder::custom_fs) is given; the real filesystem's
    /// provider also serves `SetGameDir`.
    pub fn game_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.game_dir = Some(path.into());
        self
    }

    /// Whether to lock the game directory (default: yes). A throwaway peer
    /// in a directory of its own may skip the lock.
    pub fn dir_lock(mut self, lock: bool) -> Self {
        self.dir_lock = lock;
        self
    }

    /// What the lock file says holds the directory (`pid N (label)`).
    pub fn lock_label(mut self, label: impl Into<String>) -> Self {
        self.lock_label = label.into();
        self
    }

    /// The games this peer may announce and serve.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// The directory of the TLS identity: loaded from it, or created in it
    /// on first use. A QUIC transport needs an identity.
    pub fn identity_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.identity = IdentitySource::Dir(dir.into());
        self
    }

    /// One TLS identity per game directory, each kept in a directory of
    /// its own under `root` (see [`identity_dir_for`]); a peer that moves
    /// to another game directory ([`Peer::set_game_dir`](crate::Peer::set_game_dir))
    /// takes that directory's identity, so two directories never share one.
    pub fn identities_under(mut self, root: impl Into<PathBuf>) -> Self {
        self.identity = IdentitySource::PerGameDir(root.into());
        self
    }

    /// This TLS identity.
    #[cfg(any(feature = "quinn", feature = "s2n"))]
    pub fn identity(mut self, identity: lanspread_tls::Identity) -> Self {
        self.identity = IdentitySource::Given(identity);
        self
    }

    /// A fresh TLS identity, generated by [`assemble`](Builder::assemble)
    /// and kept nowhere (demos, tests).
    pub fn ephemeral_identity(mut self) -> Self {
        self.identity = IdentitySource::Ephemeral;
        self
    }

    /// The QUIC stack to listen with (default: quinn).
    pub fn transport(mut self, kind: TransportKind) -> Self {
        self.transport = TransportChoice::Kind(kind);
        self
    }

    /// A transport of the caller's, already listening; no identity is
    /// needed then.
    pub fn custom_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = TransportChoice::Custom(transport);
        self
    }

    /// How to find peers (default: mDNS when the feature is on).
    pub fn discovery(mut self, kind: DiscoveryKind) -> Self {
        self.discovery = DiscoveryChoice::Kind(kind);
        self
    }

    /// A discovery of the caller's.
    pub fn custom_discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = DiscoveryChoice::Custom(discovery);
        self
    }

    /// Addresses to dial even without discovery (replaces earlier ones).
    pub fn static_peers(mut self, peers: Vec<SocketAddr>) -> Self {
        self.static_peers = peers;
        self
    }

    /// The LAN party key (`None`: no key).
    pub fn party_key(mut self, key: Option<String>) -> Self {
        self.party_key = key;
        self
    }

    /// Listens on exactly `addr` (no fallback).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Listen::Exact(addr);
        self
    }

    /// Listens on `[::]:port` (dual stack: one socket for IPv4 and IPv6),
    /// falling back to `0.0.0.0:port` where IPv6 is unavailable. The
    /// default, with port 0.
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen = Listen::DualStack(port);
        self
    }

    /// Caps what this peer sends to others, in bytes per second (`None`:
    /// no cap). Every requester draws from the one cap.
    pub fn max_upload(self, bytes_per_sec: Option<u64>) -> Self {
        self.config(move |c| c.max_upload = bytes_per_sec)
    }

    /// Caps what this peer's downloads ask for, in bytes per second
    /// (`None`: no cap).
    pub fn max_download(self, bytes_per_sec: Option<u64>) -> Self {
        self.config(move |c| c.max_download = bytes_per_sec)
    }

    /// Adjusts the runtime's settings after the builder filled in the
    /// catalog, static peers and party key (auto-install, scheduler
    /// tunables, timeouts...). Calls run in order.
    pub fn config(mut self, f: impl FnOnce(&mut PeerConfig) + Send + 'static) -> Self {
        self.config.push(Box::new(f));
        self
    }

    /// A filesystem of the caller's instead of the real one (simulations,
    /// tests). With a [`game_dir`](Builder::game_dir) too, that directory
    /// is still checked and locked.
    pub fn custom_fs(mut self, fs: Arc<dyn Fs>) -> Self {
        self.fs = Some(fs);
        self
    }

    /// What opens another game directory on `SetGameDir` (`None`: the
    /// command is refused). Default: the real filesystem's provider when
    /// the real filesystem is used, else none.
    pub fn fs_provider(mut self, provider: Option<Arc<dyn FsProvider>>) -> Self {
        self.fs_provider = Some(provider);
        self
    }

    /// An unpacker of the caller's instead of [`standard_unpacker`].
    pub fn custom_unpacker(mut self, unpacker: Arc<dyn Unpacker>) -> Self {
        self.unpacker = Some(unpacker);
        self
    }

    /// A clock of the caller's instead of [`standard_clock`].
    pub fn custom_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Refuses choices this build cannot honour or that lack a part, before
    /// anything is touched.
    fn check(&self) -> Result<(), BuildError> {
        if let TransportChoice::Kind(kind) = self.transport {
            if !kind.available() {
                return Err(BuildError::FeatureDisabled(kind.feature()));
            }
        }
        if matches!(self.discovery, DiscoveryChoice::Kind(DiscoveryKind::Mdns)) && !cfg!(feature = "mdns") {
            return Err(BuildError::FeatureDisabled("mdns"));
        }
        let per_dir_identity = matches!(self.identity, IdentitySource::PerGameDir(_));
        if self.game_dir.is_none() && (self.fs.is_none() || per_dir_identity) {
            return Err(BuildError::MissingGameDir);
        }
        if self.fs.is_none() && !cfg!(feature = "capfs") {
            return Err(BuildError::FeatureDisabled("capfs"));
        }
        if matches!(self.transport, TransportChoice::Kind(_)) && matches!(self.identity, IdentitySource::None) {
            return Err(BuildError::MissingIdentity);
        }
        Ok(())
    }

    /// Assembles the ports (see [`Builder::assemble`]) and starts the peer.
    pub async fn spawn(self) -> Result<crate::Peer, BuildError> {
        Ok(self.assemble()?.start())
    }

    /// Checks and locks the game directory, loads (or creates) the
    /// identity, listens, opens the filesystem and starts discovery, in
    /// that order; the first failure is returned and what was made so far
    /// is dropped (the lock released). Does not start the peer. Call it
    /// inside a tokio runtime (the transports spawn their drivers there).
    ///
    /// Each missing or wrong part is a typed [`BuildError`]:
    ///
    /// ```
    /// use lanspread::{BuildError, Builder, DiscoveryKind};
    /// let r = Builder::new().ephemeral_identity().discovery(DiscoveryKind::None).assemble();
    /// assert!(matches!(r, Err(BuildError::MissingGameDir)));
    ///
    /// let r = Builder::new().game_dir("/nonexistent/x").ephemeral_identity().discovery(DiscoveryKind::None).assemble();
    /// let Err(e @ BuildError::GameDirNotFound { .. }) = r else { panic!("{r:?}") };
    /// assert_eq!(e.to_string(), "game directory /nonexistent/x does not exist");
    ///
    /// // A QUIC transport needs an identity (checked before the directory).
    /// let r = Builder::new().game_dir("/nonexistent/x").discovery(DiscoveryKind::None).assemble();
    /// assert!(matches!(r, Err(BuildError::MissingIdentity)));
    /// ```
    pub fn assemble(self) -> Result<Assembled, BuildError> {
        self.check()?;
        let Builder {
            game_dir,
            dir_lock,
            lock_label,
            catalog,
            identity,
            transport,
            discovery,
            static_peers,
            party_key,
            listen,
            fs,
            fs_provider,
            unpacker,
            clock,
            config: adjust,
        } = self;
        let game_dir = game_dir.as_deref().map(check_game_dir).transpose()?;
        let lock = match &game_dir {
            Some(dir) if dir_lock => Some(lock_games_dir(dir, &lock_label)?),
            _ => None,
        };
        let (transport, rebind) = match transport {
            TransportChoice::Custom(t) => (t, None),
            TransportChoice::Kind(kind) => quic_transport(kind, identity, game_dir.as_deref(), listen, &discovery)?,
        };
        let (fs, fs_provider) = match (fs, &game_dir) {
            (Some(fs), _) => (fs, fs_provider.flatten()),
            (None, Some(dir)) => (open_game_dir(dir)?, fs_provider.unwrap_or_else(|| real_fs_provider(dir_lock.then_some(&lock_label)))),
            (None, None) => return Err(BuildError::MissingGameDir),
        };
        let mut mdns_unavailable = None;
        let discovery: Arc<dyn Discovery> = match discovery {
            DiscoveryChoice::Custom(d) => d,
            DiscoveryChoice::Kind(DiscoveryKind::None) => Arc::new(NoDiscovery),
            DiscoveryChoice::Kind(DiscoveryKind::Mdns) => match mdns(transport.as_ref())? {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("mDNS unavailable ({e}); only static peer addresses will be used");
                    mdns_unavailable = Some(e);
                    Arc::new(NoDiscovery)
                }
            },
        };
        let shown_dir = game_dir.as_ref().map(|d| d.display().to_string());
        let mut config = PeerConfig { game_dir: shown_dir, catalog, static_peers, party_key, ..PeerConfig::default() };
        for f in adjust {
            f(&mut config);
        }
        let ports = Ports {
            fs,
            fs_provider,
            transport,
            discovery,
            rebind,
            unpacker: unpacker.unwrap_or_else(standard_unpacker),
            clock: clock.unwrap_or_else(standard_clock),
        };
        Ok(Assembled { config, ports, lock, mdns_unavailable })
    }
}

/// A peer ready to [`start`](Assembled::start), which keeps the
/// [`lock`](Assembled::lock) for as long as the peer runs.
pub struct Assembled {
    /// The runtime's settings.
    pub config: PeerConfig,
    /// The adapters.
    pub ports: Ports,
    /// The lock of the game directory (`None` when there is no game
    /// directory or the lock was turned off).
    pub lock: Option<DirLock>,
    /// Why mDNS could not start, when [`DiscoveryKind::Mdns`] was chosen and
    /// the peer runs without discovery instead (also logged as a warning).
    pub mdns_unavailable: Option<DiscoveryError>,
}

impl Assembled {
    /// Starts the peer on these ports (inside a tokio runtime).
    pub fn start(self) -> crate::Peer {
        let guard = self.lock.map(|l| Box::new(l) as Box<dyn std::any::Any + Send + Sync>);
        crate::runtime::start(self.config, self.ports, guard)
    }
}

impl fmt::Debug for Assembled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assembled").field("lock", &self.lock).field("mdns_unavailable", &self.mdns_unavailable).finish_non_exhaustive()
    }
}

/// The real filesystem's provider, when the real filesystem is built in:
/// one that locks each directory it opens (with `lock_label`) unless locks
/// are off.
fn real_fs_provider(lock_label: Option<&String>) -> Option<Arc<dyn FsProvider>> {
    #[cfg(feature = "capfs")]
    {
        Some(match lock_label {
            Some(label) => Arc::new(LockingProvider { label: label.clone() }),
            None => Arc::new(lanspread_capfs::CapFsProvider),
        })
    }
    #[cfg(not(feature = "capfs"))]
    {
        let _ = lock_label;
        None
    }
}

/// mDNS discovery that skips our own records; the inner error says why mDNS
/// is unavailable on this machine.
#[cfg(feature = "mdns")]
fn mdns(transport: &dyn Transport) -> Result<Result<Arc<dyn Discovery>, DiscoveryError>, BuildError> {
    let cfg = lanspread_mdns::MdnsConfig { self_id: Some(transport.local_id()), ..Default::default() };
    Ok(lanspread_mdns::MdnsDiscovery::new(cfg).map(|d| d as Arc<dyn Discovery>))
}

#[cfg(not(feature = "mdns"))]
fn mdns(_transport: &dyn Transport) -> Result<Result<Arc<dyn Discovery>, DiscoveryError>, BuildError> {
    Err(BuildError::FeatureDisabled("mdns"))
}

#[cfg(any(feature = "quinn", feature = "s2n"))]
fn load_identity(source: IdentitySource) -> Result<lanspread_tls::Identity, BuildError> {
    match source {
        IdentitySource::None => Err(BuildError::MissingIdentity),
        IdentitySource::Dir(dir) => load_identity_dir(dir),
        IdentitySource::PerGameDir(_) => Err(BuildError::MissingGameDir),
        IdentitySource::Given(identity) => Ok(identity),
        IdentitySource::Ephemeral => lanspread_tls::Identity::generate().map_err(|e| BuildError::GenerateIdentity(Box::new(e))),
    }
}

#[cfg(any(feature = "quinn", feature = "s2n"))]
fn load_identity_dir(dir: PathBuf) -> Result<lanspread_tls::Identity, BuildError> {
    lanspread_tls::Identity::load_or_create(&dir).map_err(|e| BuildError::Identity { dir, source: Box::new(e) })
}

/// Where the identity of `game_dir` (canonical) lives under `root`: a
/// directory named by a hash of the path, so each game directory has its
/// own identity and none is kept inside a shared game directory.
pub fn identity_dir_for(root: &Path, game_dir: &Path) -> PathBuf {
    let key = blake3::hash(game_dir.as_os_str().as_encoded_bytes()).to_hex();
    root.join(&key.as_str()[..16])
}

/// A listening transport, and what switches its identity with the game
/// directory (when there is one identity per directory).
type ListeningTransport = (Arc<dyn Transport>, Option<Arc<dyn crate::runtime::Rebind>>);

/// Loads the identity and listens with `kind`; with one identity per game
/// directory, also what switches identities with the directory.
#[cfg(any(feature = "quinn", feature = "s2n"))]
fn quic_transport(
    kind: TransportKind,
    identity: IdentitySource,
    game_dir: Option<&Path>,
    listen: Listen,
    discovery: &DiscoveryChoice,
) -> Result<ListeningTransport, BuildError> {
    let identity = match (identity, game_dir) {
        (IdentitySource::PerGameDir(root), Some(dir)) => {
            let identity = load_identity_dir(identity_dir_for(&root, dir))?;
            let transport = listen_as(kind, &identity, listen)?;
            let rediscover = match discovery {
                DiscoveryChoice::Kind(kind) => Some(*kind),
                DiscoveryChoice::Custom(_) => None,
            };
            let rebind = rebind::QuicRebind::new(kind, root, rediscover, identity);
            return Ok((transport, Some(Arc::new(rebind))));
        }
        (other, _) => load_identity(other)?,
    };
    Ok((listen_as(kind, &identity, listen)?, None))
}

/// A transport of `kind` listening as `identity`.
#[cfg(any(feature = "quinn", feature = "s2n"))]
fn listen_as(kind: TransportKind, identity: &lanspread_tls::Identity, listen: Listen) -> Result<Arc<dyn Transport>, BuildError> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match listen {
        Listen::Exact(addr) => make_transport(kind, addr, identity),
        Listen::DualStack(port) => {
            // One socket for IPv4 and IPv6, so peers that mDNS shows at IPv6
            // link-local addresses can be dialed and can dial us; IPv4 only
            // where IPv6 is disabled in the kernel.
            let dual = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            make_transport(kind, dual, identity).or_else(|e| {
                let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
                tracing::info!("{e}; trying {v4} (IPv4 only)");
                make_transport(kind, v4, identity).map_err(|_| e)
            })
        }
    }
}

#[cfg(not(any(feature = "quinn", feature = "s2n")))]
fn quic_transport(
    kind: TransportKind,
    _identity: IdentitySource,
    _game_dir: Option<&Path>,
    _listen: Listen,
    _discovery: &DiscoveryChoice,
) -> Result<ListeningTransport, BuildError> {
    Err(BuildError::FeatureDisabled(kind.feature()))
}

/// A transport of `kind` listening on `addr`.
#[cfg(any(feature = "quinn", feature = "s2n"))]
fn make_transport(kind: TransportKind, addr: SocketAddr, identity: &lanspread_tls::Identity) -> Result<Arc<dyn Transport>, BuildError> {
    let limits = lanspread_tls::TransportLimits::default();
    let listening: Result<Arc<dyn Transport>, TransportError> = match kind {
        #[cfg(feature = "quinn")]
        TransportKind::Quinn => lanspread_quinn::QuinnTransport::listen(addr, identity, limits).map(|t| t as Arc<dyn Transport>),
        #[cfg(feature = "s2n")]
        TransportKind::S2n => lanspread_s2n::S2nTransport::listen(addr, identity, limits).map(|t| t as Arc<dyn Transport>),
        #[allow(unreachable_patterns)]
        other => return Err(BuildError::FeatureDisabled(other.feature())),
    };
    listening.map_err(|source| BuildError::Listen { addr, source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_game_dir_is_an_error() {
        let r = Builder::new().discovery(DiscoveryKind::None).ephemeral_identity().assemble();
        assert!(matches!(r, Err(BuildError::MissingGameDir)), "{r:?}");
    }

    #[test]
    fn a_missing_or_non_directory_game_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        match check_game_dir(&missing) {
            Err(e @ BuildError::GameDirNotFound { .. }) => {
                assert_eq!(e.to_string(), format!("game directory {} does not exist", missing.display()))
            }
            other => panic!("{other:?}"),
        }
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(check_game_dir(&file), Err(BuildError::NotADirectory { .. })));
        assert_eq!(check_game_dir(tmp.path()).unwrap(), tmp.path().canonicalize().unwrap());
    }

    #[tokio::test]
    async fn assemble_refuses_a_missing_game_dir_before_anything_else() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Builder::new().game_dir(tmp.path().join("nope")).discovery(DiscoveryKind::None).ephemeral_identity().assemble();
        assert!(matches!(r, Err(BuildError::GameDirNotFound { .. })), "{r:?}");
    }

    #[test]
    fn a_held_lock_names_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock_games_dir(tmp.path(), "serve").unwrap();
        match lock_games_dir(tmp.path(), "get") {
            Err(BuildError::DirectoryInUse { path, holder }) => {
                assert_eq!(path, tmp.path());
                assert_eq!(holder, format!("pid {} (serve)", std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        let again = lock_games_dir(tmp.path(), "get").unwrap();
        assert_eq!(std::fs::read_to_string(tmp.path().join(".lanspread.lock")).unwrap(), format!("pid {} (get)", std::process::id()));
        drop(again);
    }

    #[tokio::test]
    async fn a_quic_transport_needs_an_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Builder::new().game_dir(tmp.path()).discovery(DiscoveryKind::None).assemble();
        assert!(matches!(r, Err(BuildError::MissingIdentity)), "{r:?}");
        // Refused before the directory is locked.
        assert!(!tmp.path().join(".lanspread.lock").exists());
    }

    #[tokio::test]
    async fn a_transport_without_its_feature_is_a_typed_error() {
        let tmp = tempfile::tempdir().unwrap();
        for kind in [TransportKind::Quinn, TransportKind::S2n] {
            if kind.available() {
                continue;
            }
            let r = Builder::new().game_dir(tmp.path()).transport(kind).ephemeral_identity().assemble();
            match r {
                Err(e @ BuildError::FeatureDisabled(f)) => {
                    assert_eq!(f, kind.feature());
                    assert_eq!(e.to_string(), format!("lanspread was built without the `{f}` feature"));
                }
                other => panic!("{kind:?}: {other:?}"),
            }
        }
    }

    #[cfg(not(feature = "s2n"))]
    #[tokio::test]
    async fn s2n_without_its_feature_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Builder::new().game_dir(tmp.path()).transport(TransportKind::S2n).ephemeral_identity().assemble();
        assert!(matches!(r, Err(BuildError::FeatureDisabled("s2n"))), "{r:?}");
    }

    #[test]
    fn transport_kinds_deserialize_from_lowercase_names() {
        #[derive(serde::Deserialize)]
        struct T {
            t: TransportKind,
        }
        let parse = |s: &str| serde_json_like(s).map(|t: T| t.t);
        assert_eq!(parse("quinn"), Some(TransportKind::Quinn));
        assert_eq!(parse("s2n"), Some(TransportKind::S2n));
        assert_eq!(parse("Quinn"), None);
    }

    /// `{"t": "<s>"}` through serde's value deserializer.
    fn serde_json_like<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
        use serde::de::value::{Error, MapDeserializer};
        T::deserialize(MapDeserializer::<_, Error>::new(std::iter::once(("t", s)))).ok()
    }

    #[cfg(all(feature = "quinn", feature = "capfs"))]
    #[tokio::test]
    async fn assembles_a_locked_peer_on_real_adapters() {
        let games = tempfile::tempdir().unwrap();
        let ids = tempfile::tempdir().unwrap();
        let peer: SocketAddr = "127.0.0.1:47999".parse().unwrap();
        let build = || {
            Builder::new()
                .game_dir(games.path())
                .identity_dir(ids.path().join("id"))
                .transport(TransportKind::Quinn)
                .discovery(DiscoveryKind::None)
                .listen("127.0.0.1:0".parse().unwrap())
                .static_peers(vec![peer])
                .party_key(Some("words".into()))
                .lock_label("test")
                .config(|c| c.auto_install = false)
        };
        let a = build().assemble().unwrap();
        assert!(a.lock.is_some());
        assert!(a.mdns_unavailable.is_none());
        assert!(a.ports.fs_provider.is_some());
        assert_eq!(a.config.static_peers, vec![peer]);
        assert_eq!(a.config.party_key.as_deref(), Some("words"));
        assert!(!a.config.auto_install);
        assert!(a.ports.transport.local_addr().ip().is_loopback());
        let id = a.ports.transport.local_id();
        // The lock is held: a second peer on the directory is refused.
        let r = build().assemble();
        assert!(matches!(&r, Err(BuildError::DirectoryInUse { holder, .. }) if holder.ends_with("(test)")), "{r:?}");
        a.ports.transport.shutdown().await;
        drop(a);
        // The identity is kept in its directory.
        let b = build().assemble().unwrap();
        assert_eq!(b.ports.transport.local_id(), id);
        b.ports.transport.shutdown().await;
    }
}
