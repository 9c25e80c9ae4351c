//! State shared by the runtime's tasks.

use super::events::{OperationKind, PeerEvent};
use super::{PeerConfig, Ports};
use lanspread_core::db::GameDb;
use lanspread_core::game::{GameId, Manifest};
use lanspread_core::scan::{LocalGame, Scanner};
use lanspread_core::serve::{ServeView, ServedGame};
use lanspread_ports::{Connection, Fs, PeerId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// Mutable state, behind a std mutex that is never held across an await.
pub(crate) struct State {
    pub db: GameDb,
    pub ops: BTreeMap<GameId, OperationKind>,
    pub serve: Arc<ServeView>,
    /// Manifests resolved by `GetGame`, ready for `DownloadGameFiles`.
    pub resolved: BTreeMap<GameId, (Manifest, Vec<PeerId>)>,
    /// Cancel switches of running downloads.
    pub cancels: BTreeMap<GameId, watch::Sender<bool>>,
    /// Library revision each peer last reported.
    pub peer_revs: BTreeMap<PeerId, u64>,
    /// Identities already seen per address (key changes are refused).
    pub known_ids: BTreeMap<std::net::SocketAddr, PeerId>,
}

/// The connection to one peer, dialed at most once at a time.
pub(crate) type ConnSlot = Arc<tokio::sync::Mutex<Option<Arc<dyn Connection>>>>;

/// Everything the tasks share.
pub(crate) struct Shared {
    pub cfg: PeerConfig,
    pub ports: Ports,
    fs: Mutex<Arc<dyn Fs>>,
    pub state: Mutex<State>,
    pub scanner: tokio::sync::Mutex<Scanner>,
    /// Connection per peer (one dial at a time per peer).
    pub conns: Mutex<BTreeMap<PeerId, ConnSlot>>,
    events: mpsc::UnboundedSender<PeerEvent>,
    pub shutdown: watch::Sender<bool>,
    /// Every detached task, so a hard stop (`kill`) can abort them all.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Open-file budget of transfers (server and downloads).
    pub files: super::budget::FileBudget,
}

impl Shared {
    pub fn new(cfg: PeerConfig, ports: Ports, events: mpsc::UnboundedSender<PeerEvent>) -> Arc<Self> {
        let db = GameDb::new(cfg.catalog.clone());
        let serve = Arc::new(ServeView { catalog: cfg.catalog.clone(), ..ServeView::default() });
        Arc::new(Shared {
            fs: Mutex::new(ports.fs.clone()),
            cfg,
            ports,
            state: Mutex::new(State {
                db,
                ops: BTreeMap::new(),
                serve,
                resolved: BTreeMap::new(),
                cancels: BTreeMap::new(),
                peer_revs: BTreeMap::new(),
                known_ids: BTreeMap::new(),
            }),
            scanner: tokio::sync::Mutex::new(Scanner::default()),
            conns: Mutex::new(BTreeMap::new()),
            events,
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            files: Default::default(),
        })
    }

    /// Spawns a detached task that `abort_all` can stop.
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let h = tokio::spawn(f).abort_handle();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= 256 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(h);
    }

    /// Aborts every detached task (a crash, not a shutdown).
    pub fn abort_all(&self) {
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }

    pub fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fs(&self) -> Arc<dyn Fs> {
        self.fs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_fs(&self, fs: Arc<dyn Fs>) {
        *self.fs.lock().unwrap_or_else(|e| e.into_inner()) = fs;
    }

    pub fn emit(&self, e: PeerEvent) {
        let _ = self.events.send(e);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that resolves when shutdown starts.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Emits the unified view with the active operations.
    pub fn emit_snapshot(&self) {
        let (games, operations) = {
            let st = self.st();
            (st.db.view(), st.ops.clone())
        };
        self.emit(PeerEvent::LibrarySnapshot { games, operations });
    }

    /// Rebuilds what the server may serve from the local library: downloaded
    /// catalog games without an active download or removal.
    pub fn refresh_serve_view(&self) {
        let mut st = self.st();
        let catalog = st.db.catalog().clone();
        let mut games = BTreeMap::new();
        for (id, g) in &st.db.local().games {
            let busy = matches!(st.ops.get(id), Some(OperationKind::Downloading | OperationKind::Removing));
            if busy || !catalog.contains(id) {
                continue;
            }
            if let (Some(summary), Some(m)) = (g.summary(&catalog), g.manifest.as_ref()) {
                // An unchanged game keeps its entry (and its unit layout).
                let entry = match st.serve.games.get(id) {
                    Some(old) if old.summary == summary => old.clone(),
                    _ => Arc::new(ServedGame::new(summary, m.clone())),
                };
                games.insert(id.clone(), entry);
            }
        }
        let changed = st.serve.games.len() != games.len()
            || st.serve.games.iter().zip(games.iter()).any(|((a, sa), (b, sb))| a != b || sa.summary != sb.summary);
        let revision = st.serve.revision + u64::from(changed);
        st.serve = Arc::new(ServeView { catalog, games, revision });
    }

    /// Rescans one game now (even if an operation is active: callers use
    /// this for the settle-refresh of the operation that is ending) and
    /// updates the DB and the serve view. Returns whether it changed.
    pub async fn rescan_game(&self, id: &GameId) -> bool {
        let fs = self.fs();
        let result = {
            let mut scanner = self.scanner.lock().await;
            let r = scanner.scan_game(fs.as_ref(), id).await;
            if r.is_ok() {
                if let Err(e) = scanner.index.save(fs.as_ref()).await {
                    tracing::debug!("saving scan index: {e}");
                }
            }
            r
        };
        match result {
            Ok(game) => self.apply_local(id, game),
            Err(e) => {
                self.emit(PeerEvent::RuntimeFailure(format!("scanning {id}: {e}")));
                false
            }
        }
    }

    fn apply_local(&self, id: &GameId, game: Option<LocalGame>) -> bool {
        let changed = {
            let mut st = self.st();
            let changed = st.db.local_game(id) != game.as_ref();
            st.db.set_local_game(id, game);
            changed
        };
        self.refresh_serve_view();
        changed
    }

    /// Ends an operation in the order a UI can trust: settle the game's
    /// local state while the operation is still marked active, then clear
    /// the operation and publish the snapshot, then the lifecycle event.
    pub async fn finish_operation(&self, id: &GameId, lifecycle: PeerEvent) {
        self.rescan_game(id).await;
        {
            let mut st = self.st();
            st.ops.remove(id);
        }
        self.refresh_serve_view();
        self.emit_snapshot();
        self.emit(lifecycle);
    }

    /// Marks an operation active; refuses if another one runs on the game.
    pub fn begin_operation(&self, id: &GameId, kind: OperationKind) -> Result<(), OperationKind> {
        {
            let mut st = self.st();
            if let Some(k) = st.ops.get(id) {
                return Err(*k);
            }
            st.ops.insert(id.clone(), kind);
        }
        self.refresh_serve_view();
        self.emit_snapshot();
        Ok(())
    }
}
