//! The handle an app holds: [`Peer`], the [`Operation`]s it starts, and
//! the [`Events`] it fans out.

use crate::command::PeerCommand;
use crate::progress::Progress;
use crate::runtime::ctx::{Ctx, Input};
use crate::runtime::driver::{Driver, Waiter};
use lanspread_core::game::GameId;
use lanspread_core::peer::{
    DownloadError, DownloadOptions, DownloadReport, InstallError, InstallReport, OpToken, Outcome, PeerEvent, RemoveError, ResolveError,
    Resolved, SetGameDirError, Snapshot, UninstallError, UninstallReport,
};
use lanspread_ports::PeerId;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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
    id: PeerId,
    addr: SocketAddr,
    events: broadcast::Sender<PeerEvent>,
    /// Subscribed before the peer started: handed to the first subscriber.
    first_events: std::sync::Mutex<Option<broadcast::Receiver<PeerEvent>>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    done: watch::Receiver<bool>,
    main: tokio::task::AbortHandle,
    ctx: Arc<Ctx>,
    /// Held while the peer runs (the game directory's lock, if any).
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Why the next event could not be read.
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
pub struct Events(broadcast::Receiver<PeerEvent>);

impl Events {
    /// The next event. A subscriber that falls behind the bounded channel
    /// gets [`EventsError::Lagged`] once, then the newest events.
    pub async fn recv(&mut self) -> Result<PeerEvent, EventsError> {
        self.0.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => EventsError::Lagged { missed },
            broadcast::error::RecvError::Closed => EventsError::Closed,
        })
    }
}

/// A long operation in flight: watch its [`progress`](Operation::progress),
/// and `.await` it (or call [`wait`](Operation::wait)) for its typed result.
pub struct Operation<T, E> {
    progress: watch::Receiver<Progress>,
    result: oneshot::Receiver<Outcome>,
    extract: fn(Outcome) -> Option<Result<T, E>>,
    stopped: E,
}

impl<T, E> Operation<T, E> {
    /// The progress stream (`changed().await`, then `borrow()`).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits for the result.
    pub async fn wait(self) -> Result<T, E> {
        match self.result.await {
            Ok(outcome) => (self.extract)(outcome).unwrap_or(Err(self.stopped)),
            Err(_) => Err(self.stopped),
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
        guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        let inner = Inner {
            inbox,
            id: ctx.ports.transport.local_id(),
            addr: ctx.ports.transport.local_addr(),
            events: ctx.events.clone(),
            first_events: std::sync::Mutex::new(Some(first_events)),
            snapshot,
            done,
            main,
            ctx,
            _guard: guard,
        };
        Peer { inner: Arc::new(inner) }
    }

    /// Our identity (the fingerprint of our TLS certificate).
    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// Where our server listens.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
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
        Events(first.unwrap_or_else(|| self.inner.events.subscribe()))
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
    async fn operation<T, E: Send + 'static>(
        &self,
        begin: impl FnOnce(&mut Driver) -> Result<OpToken, E> + Send + 'static,
        extract: fn(Outcome) -> Option<Result<T, E>>,
        stopped: fn() -> E,
    ) -> Result<Operation<T, E>, E> {
        let (result_tx, result) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let started = self
            .call(move |d| {
                let token = begin(d)?;
                d.waiters.insert(token, Waiter { result: result_tx, progress: progress_tx });
                Ok(())
            })
            .await;
        match started {
            Some(Ok(())) => Ok(Operation { progress, result, extract, stopped: stopped() }),
            Some(Err(e)) => Err(e),
            None => Err(stopped()),
        }
    }

    /// The manifest of `id`'s latest version and its holders (a cached
    /// manifest is used if the holders still advertise it).
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
