//! The handle an app holds: [`Peer`], the [`Operation`]s it starts, and
//! the [`Events`] it fans out.

use crate::command::PeerCommand;
use crate::progress::Progress;
use crate::runtime::ctx::{Ctx, Input};
use crate::runtime::driver::{Driver, Waiter};
use lanspread_core::game::GameId;
use lanspread_core::peer::{
    DownloadError, DownloadOptions, DownloadReport, InstallError, InstallReport, OpToken, Outcome, PeerEvent, RemoveError, ResolveError,
    Resolved, SetGameDirError, Snapshot, UninstallError, UninstallReport, UpdateError,
};
use lanspread_ports::PeerId;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// A request to the driver.
pub(crate) enum Command {
    /// Runs against the driver's machine, on the driver's task.
    Run(Box<dyn FnOnce(&mut Driver) + Send>),
    /// Switch game directories (the driver awaits recovery and a scan).
    SetGameDir { dir: String, reply: Option<oneshot::Sender<Result<(), SetGameDirError>>> },
}

/// A running peer: cheap to clone; every clone drives the same peer.
///
/// Start one with [`crate::Builder`]. The peer stops when
/// [`Peer::shutdown`] is called (dropping the handles does not stop it).
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

struct Inner {
    inbox: mpsc::UnboundedSender<Input>,
    events: broadcast::Sender<PeerEvent>,
    /// Subscribed before the peer started: handed to the first subscriber.
    first_events: std::sync::Mutex<Option<broadcast::Receiver<PeerEvent>>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    done: watch::Receiver<bool>,
    main: tokio::task::AbortHandle,
    ctx: Arc<Ctx>,
}

/// What an update did: the download, then the install.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateReport {
    /// The download of the new version.
    pub download: DownloadReport,
    /// The update (or first install) of `local/`.
    pub install: InstallReport,
}

/// Why the next event could not be read.
///
/// ```
/// use lanspread::EventsError;
/// let lagged = EventsError::Lagged { missed: 3 };
/// assert_eq!(lagged.to_string(), "fell behind: 3 events were dropped; re-read the snapshot");
/// assert_eq!(EventsError::Closed.to_string(), "the peer stopped");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// This subscriber fell behind and `missed` events were dropped for
    /// it; re-read [`Peer::snapshot`] to catch up, then go on reading.
    #[error("fell behind: {missed} events were dropped; re-read the snapshot")]
    Lagged {
        /// Events this subscriber missed.
        missed: u64,
    },
    /// The peer stopped.
    #[error("the peer stopped")]
    Closed,
}

/// A subscription to a peer's events (see [`Peer::subscribe`]).
pub struct Events {
    rx: broadcast::Receiver<PeerEvent>,
    /// Whether the peer stopped: the channel itself stays open while any
    /// [`Peer`] handle lives, so the end is told by this watch.
    done: watch::Receiver<bool>,
}

impl Events {
    /// The next event. A subscriber that falls behind the bounded channel
    /// gets [`EventsError::Lagged`] once, then the newest events. Once the
    /// peer stopped and every event it sent was read, [`EventsError::Closed`]
    /// (even while [`Peer`] handles live on).
    pub async fn recv(&mut self) -> Result<PeerEvent, EventsError> {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            // Events sent before the peer stopped are read first.
            match self.rx.try_recv() {
                Ok(event) => return Ok(event),
                Err(TryRecvError::Lagged(missed)) => return Err(EventsError::Lagged { missed }),
                Err(TryRecvError::Closed) => return Err(EventsError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            if *self.done.borrow_and_update() {
                return Err(EventsError::Closed);
            }
            tokio::select! {
                r = self.rx.recv() => {
                    return r.map_err(|e| match e {
                        RecvError::Lagged(missed) => EventsError::Lagged { missed },
                        RecvError::Closed => EventsError::Closed,
                    });
                }
                changed = self.done.changed() => {
                    if changed.is_err() {
                        // The driver is gone without saying so (killed):
                        // drain what is left, then closed.
                        return self.rx.try_recv().map_err(|e| match e {
                            TryRecvError::Lagged(missed) => EventsError::Lagged { missed },
                            _ => EventsError::Closed,
                        });
                    }
                }
            }
        }
    }
}

/// A long operation in flight: watch its [`progress`](Operation::progress),
/// and `.await` it (or call [`wait`](Operation::wait)) for its typed result.
pub struct Operation<T, E> {
    progress: watch::Receiver<Progress>,
    result: oneshot::Receiver<Result<T, E>>,
    /// The error if the peer stops before the result comes.
    stopped: E,
}

impl<T, E> Operation<T, E> {
    /// The progress stream (`changed().await`, then `borrow()`).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits for the result.
    pub async fn wait(self) -> Result<T, E> {
        self.result.await.unwrap_or(Err(self.stopped))
    }

    /// Waits for the result while copying the progress to `to`.
    async fn follow(self, to: &watch::Sender<Progress>) -> Result<T, E> {
        let mut progress = self.progress.clone();
        let result = self.wait();
        tokio::pin!(result);
        loop {
            tokio::select! {
                biased;
                r = &mut result => return r,
                changed = progress.changed() => {
                    if changed.is_err() {
                        return result.await;
                    }
                    to.send_replace(progress.borrow_and_update().clone());
                }
            }
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> IntoFuture for Operation<T, E> {
    type Output = Result<T, E>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

impl Peer {
    /// Starts a builder (the same as [`crate::Builder::new`]).
    pub fn builder() -> crate::Builder {
        crate::Builder::new()
    }

    pub(crate) fn from_parts(
        ctx: Arc<Ctx>,
        first_events: broadcast::Receiver<PeerEvent>,
        inbox: mpsc::UnboundedSender<Input>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        done: watch::Receiver<bool>,
        main: tokio::task::AbortHandle,
    ) -> Self {
        let inner =
            Inner { inbox, events: ctx.events.clone(), first_events: std::sync::Mutex::new(Some(first_events)), snapshot, done, main, ctx };
        Peer { inner: Arc::new(inner) }
    }

    /// Our identity (the fingerprint of our TLS certificate). It changes
    /// when [`set_game_dir`](Peer::set_game_dir) moves to a directory with
    /// an identity of its own (see `Builder::identities_under`).
    pub fn id(&self) -> PeerId {
        self.inner.ctx.transport().local_id()
    }

    /// Where our server listens.
    pub fn addr(&self) -> SocketAddr {
        self.inner.ctx.transport().local_addr()
    }

    /// The game directory's path (`None` when the app gave its own
    /// filesystem); [`set_game_dir`](Peer::set_game_dir) changes it.
    pub fn game_dir(&self) -> Option<String> {
        self.inner.ctx.game_dir.borrow().clone()
    }

    /// Keeps serving while other peers fetch from this one: returns once
    /// no file data was sent for `idle`, or after `most`. A short-lived
    /// peer (a `get` that downloaded with a swarm) calls it before it shuts
    /// down, so the downloaders still fetching its units do not lose them.
    pub async fn serve_while_asked(&self, idle: Duration, most: Duration) {
        let clock = &self.inner.ctx.ports.clock;
        let deadline = clock.now() + most;
        loop {
            let now = clock.now();
            let last = Duration::from_millis(self.inner.ctx.last_upload_ms.load(std::sync::atomic::Ordering::Relaxed));
            let quiet_since = now.as_duration().saturating_sub(last);
            if quiet_since >= idle || now >= deadline {
                return;
            }
            clock.sleep((idle - quiet_since).min(deadline.saturating_since(now))).await;
        }
    }

    /// The game directory's path, watched: changes when
    /// [`set_game_dir`](Peer::set_game_dir) succeeds.
    pub fn game_dir_watch(&self) -> watch::Receiver<Option<String>> {
        self.inner.ctx.game_dir.subscribe()
    }

    /// The current library, peers and operations.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.borrow().clone()
    }

    /// A watch of the state: `changed().await` wakes on every new snapshot.
    pub fn library(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.snapshot.clone()
    }

    /// A subscription to the peer's events. The first subscription gets
    /// every event since the peer started (so start-up news such as
    /// recovery problems is not lost); later ones get the events from
    /// their subscription on.
    pub fn subscribe(&self) -> Events {
        let first = self.inner.first_events.lock().unwrap_or_else(|e| e.into_inner()).take();
        Events { rx: first.unwrap_or_else(|| self.inner.events.subscribe()), done: self.inner.done.clone() }
    }

    /// Whether the peer has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.inner.done.borrow()
    }

    /// Runs `f` on the driver and returns its answer (`None`: stopped).
    async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Driver) -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |d: &mut Driver| {
            let _ = tx.send(f(d));
        });
        self.inner.inbox.send(Input::Command(Command::Run(run))).ok()?;
        rx.await.ok()
    }

    /// Starts an operation with `begin` and registers for its result.
    async fn operation<T: Send + 'static, E: Send + 'static>(
        &self,
        begin: impl FnOnce(&mut Driver) -> Result<OpToken, E> + Send + 'static,
        extract: fn(Outcome) -> Option<Result<T, E>>,
        stopped: fn() -> E,
    ) -> Result<Operation<T, E>, E> {
        let (result_tx, result) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let deliver = Box::new(move |outcome: Outcome| {
            let _ = result_tx.send(extract(outcome).unwrap_or_else(|| Err(stopped())));
        });
        let started = self
            .call(move |d| {
                let token = begin(d)?;
                d.waiters.insert(token, Waiter { deliver, progress: progress_tx });
                Ok(())
            })
            .await;
        match started {
            Some(Ok(())) => Ok(Operation { progress, result, stopped: stopped() }),
            Some(Err(e)) => Err(e),
            None => Err(stopped()),
        }
    }

    /// The manifest of `id`'s latest version and its holders (a cached
    /// manifest is used if the holders still advertise it).
    ///
    /// A game of the catalog that no peer on the LAN has cannot be resolved:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanspread::{Builder, Catalog, DiscoveryKind, ErrorCode, GameId, HasCode, ResolveError};
    /// let games = tempfile::tempdir()?;
    /// let catalog = Catalog::from_toml("[[games]]\nid = \"quake\"\nname = \"Quake\"\n")?;
    /// tokio::runtime::Runtime::new()?.block_on(async {
    ///     let peer = Builder::new()
    ///         .game_dir(games.path())
    ///         .catalog(catalog)
    ///         .ephemeral_identity()
    ///         .listen("127.0.0.1:0".parse()?)
    ///         .discovery(DiscoveryKind::None)
    ///         .spawn()
    ///         .await?;
    ///     let quake = GameId::new("quake")?;
    ///     let err = peer.resolve(&quake).await.unwrap_err();
    ///     assert_eq!(err, ResolveError::NoHolder(quake.clone()));
    ///     assert_eq!(err.code(), ErrorCode::NoHolder);
    ///     assert_eq!(err.to_string(), "no peer on the LAN has quake");
    ///     peer.shutdown().await;
    ///     // After shutdown, every operation is refused.
    ///     assert_eq!(peer.resolve(&quake).await, Err(ResolveError::ShuttingDown));
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })
    /// # }
    /// ```
    pub async fn resolve(&self, id: &GameId) -> Result<Resolved, ResolveError> {
        self.resolve_with(id, false).await
    }

    /// Like [`Peer::resolve`], but asks the holders again even if a
    /// manifest is cached (the reference's `FetchLatestFromPeers`).
    pub async fn fetch_latest(&self, id: &GameId) -> Result<Resolved, ResolveError> {
        self.resolve_with(id, true).await
    }

    async fn resolve_with(&self, id: &GameId, fresh: bool) -> Result<Resolved, ResolveError> {
        let id = id.clone();
        let op = self
            .operation(
                move |d| d.machine.resolve(&id, fresh),
                |o| match o {
                    Outcome::Resolved(r) => Some(r),
                    _ => None,
                },
                || ResolveError::ShuttingDown,
            )
            .await?;
        op.wait().await
    }

    /// Downloads `id` from every holder of its latest version. The returned
    /// operation reports progress (rate, ETA, each peer's share) and
    /// resolves when the download is committed (or, for a file selection,
    /// when the selected files are in place).
    ///
    /// A download that cannot start is refused at once with a typed error
    /// whose [`code`](crate::HasCode::code) is stable:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanspread::{Builder, DiscoveryKind, DownloadError, DownloadOptions, ErrorCode, GameId, HasCode, ResolveError};
    /// let games = tempfile::tempdir()?;
    /// tokio::runtime::Runtime::new()?.block_on(async {
    ///     // The default catalog is empty: no game may be downloaded.
    ///     let peer = Builder::new()
    ///         .game_dir(games.path())
    ///         .ephemeral_identity()
    ///         .listen("127.0.0.1:0".parse()?)
    ///         .discovery(DiscoveryKind::None)
    ///         .spawn()
    ///         .await?;
    ///     let doom = GameId::new("doom")?;
    ///     let Err(err) = peer.download(&doom, DownloadOptions::default()).await else {
    ///         panic!("a game outside the catalog was downloaded");
    ///     };
    ///     assert_eq!(err, DownloadError::Resolve(ResolveError::NotInCatalog(doom)));
    ///     assert_eq!(err.code(), ErrorCode::NotInCatalog);
    ///     assert_eq!(err.code().as_str(), "not_in_catalog");
    ///     assert_eq!(err.failure().message, "doom is not in the catalog");
    ///     // Nothing runs on the game.
    ///     assert!(peer.snapshot().operations.is_empty());
    ///     peer.shutdown().await;
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })
    /// # }
    /// ```
    pub async fn download(&self, id: &GameId, opts: DownloadOptions) -> Result<Operation<DownloadReport, DownloadError>, DownloadError> {
        let id = id.clone();
        self.operation(
            move |d| d.machine.download(&id, opts),
            |o| match o {
                Outcome::Downloaded(r) => Some(r),
                _ => None,
            },
            || DownloadError::ShuttingDown,
        )
        .await
    }

    /// Installs (or updates) a downloaded game; `adopt` takes over a
    /// `local/` lanspread did not install, keeping its files as the user's.
    pub async fn install(&self, id: &GameId, adopt: bool) -> Result<Operation<InstallReport, InstallError>, InstallError> {
        let id = id.clone();
        self.operation(
            move |d| d.machine.install(&id, adopt),
            |o| match o {
                Outcome::Installed(r) => Some(r),
                _ => None,
            },
            || InstallError::ShuttingDown,
        )
        .await
    }

    /// Updates a game to the latest version on the LAN, as the reference's
    /// "update": asks the holders for the newest manifest (ignoring cached
    /// ones), downloads what changed (chunks already in place are reused),
    /// then updates `local/` (or installs it, if it was not installed). The
    /// operation's progress is the download's, then the install's.
    pub async fn update(&self, id: &GameId, adopt: bool) -> Result<Operation<UpdateReport, UpdateError>, UpdateError> {
        let download = self.download(id, DownloadOptions { fresh: true, ..DownloadOptions::default() }).await?;
        let (result_tx, result) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (peer, id) = (self.clone(), id.clone());
        tokio::spawn(async move {
            let outcome = async {
                let download = download.follow(&progress_tx).await?;
                let install = peer.install(&id, adopt).await?.follow(&progress_tx).await?;
                Ok(UpdateReport { download, install })
            }
            .await;
            let _ = result_tx.send(outcome);
        });
        Ok(Operation { progress, result, stopped: UpdateError::Download(DownloadError::ShuttingDown) })
    }

    /// Uninstalls a game, keeping the files the user made in it.
    pub async fn uninstall(&self, id: &GameId, adopt: bool) -> Result<Operation<UninstallReport, UninstallError>, UninstallError> {
        let id = id.clone();
        self.operation(
            move |d| d.machine.uninstall(&id, adopt),
            |o| match o {
                Outcome::Uninstalled(r) => Some(r),
                _ => None,
            },
            || UninstallError::ShuttingDown,
        )
        .await
    }

    /// Deletes the downloaded files of a game that is not installed.
    pub async fn remove(&self, id: &GameId) -> Result<Operation<(), RemoveError>, RemoveError> {
        let id = id.clone();
        self.operation(
            move |d| d.machine.remove(&id),
            |o| match o {
                Outcome::Removed(r) => Some(r),
                _ => None,
            },
            || RemoveError::ShuttingDown,
        )
        .await
    }

    /// Cancels the download of `id`; returns whether one was running.
    pub async fn cancel(&self, id: &GameId) -> bool {
        let id = id.clone();
        self.call(move |d| d.machine.cancel(&id)).await.unwrap_or(false)
    }

    /// Switches to another game directory (refused while operations run).
    pub async fn set_game_dir(&self, dir: &str) -> Result<(), SetGameDirError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::SetGameDir { dir: dir.to_owned(), reply: Some(reply) };
        if self.inner.inbox.send(Input::Command(cmd)).is_err() {
            return Err(SetGameDirError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(SetGameDirError::ShuttingDown))
    }

    /// The reference-shaped interface: sends a [`PeerCommand`] whose
    /// outcome arrives as events (ignored after shutdown).
    pub fn send(&self, cmd: PeerCommand) {
        let input = match cmd {
            PeerCommand::SetGameDir(dir) => Input::Command(Command::SetGameDir { dir, reply: None }),
            cmd => Input::Command(Command::Run(Box::new(move |d| crate::command::apply(d, cmd)))),
        };
        let _ = self.inner.inbox.send(input);
    }

    /// Stops the peer at a safe point (downloads stop, transactions finish)
    /// and waits until every task ended.
    pub async fn shutdown(&self) {
        self.send(PeerCommand::Shutdown);
        let mut done = self.inner.done.clone();
        while !*done.borrow() {
            if done.changed().await.is_err() {
                break;
            }
        }
    }

    /// Stops every task at once, without cleanup: what a crash or a power
    /// cut does to the process (for simulations and tests).
    pub fn kill(&self) {
        self.inner.main.abort();
        self.inner.ctx.tasks.abort_all();
    }
}
