//! The thin async driver of the peer machine: it owns the
//! [`PeerMachine`], feeds it the tasks' news and the timer, and performs
//! the IO its outputs ask for (requests, dials, scans, operations).
//! Nothing else touches peer state.

use super::ctx::{Ctx, Input};
use super::download::{self, DownloadJob, HolderNews, Signals};
use super::{monitor, ops, server};
use crate::peer::Command;
use crate::progress::Progress;
use lanspread_core::game::GameId;
use lanspread_core::peer::{
    HasCode, LibraryHint, MachineConfig, OpToken, OperationKind, Outcome, Output, PeerEvent, PeerMachine, Query, SetGameDirError, Snapshot,
    Work,
};
use lanspread_core::protocol::{Request, PROTOCOL_VERSION};
use lanspread_core::serve::ServeView;
use lanspread_ports::{DiscoveryEvent, PeerAdvert};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Who waits for an operation's result, and its progress stream.
pub(crate) struct Waiter {
    /// Hands the outcome, converted to the operation's typed result, to
    /// its `Operation`.
    pub deliver: Box<dyn FnOnce(Outcome) + Send>,
    pub progress: watch::Sender<Progress>,
}

/// The channels into a running operation.
#[derive(Default)]
struct Running {
    news: Option<mpsc::UnboundedSender<HolderNews>>,
    cancel: Option<watch::Sender<bool>>,
}

/// What the driver publishes.
pub(crate) struct Published {
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    pub serve: watch::Sender<Arc<ServeView>>,
    pub roots: watch::Sender<Vec<GameId>>,
    /// Bumped when the game directory changes.
    pub game_dir: watch::Sender<u64>,
}

/// See the module docs.
pub(crate) struct Driver {
    pub ctx: Arc<Ctx>,
    pub machine: PeerMachine,
    pub waiters: BTreeMap<OpToken, Waiter>,
    inbox: mpsc::UnboundedReceiver<Input>,
    published: Published,
    running: BTreeMap<OpToken, Running>,
    /// The server and discovery tasks of the current identity.
    network_tasks: JoinSet<()>,
    stopping: bool,
}

impl Driver {
    pub fn new(ctx: Arc<Ctx>, inbox: mpsc::UnboundedReceiver<Input>, published: Published) -> Self {
        let cfg = MachineConfig {
            local_id: ctx.transport().local_id(),
            catalog: ctx.cfg.catalog.clone(),
            static_peers: ctx.cfg.static_peers.clone(),
            ping_interval: ctx.cfg.ping_interval,
            peer_timeout: ctx.cfg.peer_timeout,
            fallback_scan: ctx.cfg.fallback_scan,
        };
        let machine = PeerMachine::new(cfg, ctx.ports.clock.now());
        Driver {
            ctx,
            machine,
            waiters: BTreeMap::new(),
            inbox,
            published,
            running: BTreeMap::new(),
            network_tasks: JoinSet::new(),
            stopping: false,
        }
    }

    /// Runs the peer until it is shut down.
    pub async fn run(mut self, done: watch::Sender<bool>) {
        self.load_game_dir().await;
        let ctx = self.ctx.clone();
        self.start_network_tasks();
        let mut long = JoinSet::new();
        long.spawn(monitor::run(ctx.clone(), self.published.roots.subscribe(), self.published.game_dir.subscribe()));
        loop {
            self.flush();
            if self.stopping && self.running.is_empty() {
                break;
            }
            let sleep_for = self.machine.poll_timeout().saturating_since(ctx.ports.clock.now());
            tokio::select! {
                biased;
                input = self.inbox.recv() => match input {
                    Some(input) => self.handle(input).await,
                    None => break,
                },
                _ = ctx.ports.clock.sleep(sleep_for) => self.machine.handle_timeout(ctx.ports.clock.now()),
            }
        }
        let net = ctx.network();
        net.discovery.shutdown().await;
        net.transport.shutdown().await;
        long.abort_all();
        self.stop_network_tasks().await;
        while long.join_next().await.is_some() {}
        // The directory is free for another peer (in this process or not).
        ctx.local.release();
        ctx.emit(PeerEvent::Stopped);
        let _ = done.send(true);
    }

    /// Serves and advertises the current identity.
    fn start_network_tasks(&mut self) {
        let ctx = &self.ctx;
        self.network_tasks.spawn(server::run(ctx.clone(), self.published.serve.subscribe()));
        self.network_tasks.spawn(discovery(ctx.clone(), self.published.serve.subscribe()));
    }

    async fn stop_network_tasks(&mut self) {
        self.network_tasks.abort_all();
        while self.network_tasks.join_next().await.is_some() {}
    }

    /// Takes `dir`'s identity if it has its own (see [`super::Rebind`]):
    /// the server and discovery restart as it, and every peer is found
    /// again. On failure the old identity goes on.
    async fn take_identity_of(&mut self, dir: &str) -> Result<(), SetGameDirError> {
        let Some(rebind) = self.ctx.ports.rebind.clone() else { return Ok(()) };
        if rebind.id_for(dir)? == self.ctx.transport().local_id() {
            return Ok(());
        }
        self.stop_network_tasks().await;
        let old = self.ctx.detach_network();
        let (net, result) = match rebind.rebind(dir, old).await {
            Ok(net) => (Some(net), Ok(())),
            Err(failed) => (failed.restored, Err(failed.error)),
        };
        let Some(net) = net else {
            self.begin_shutdown();
            return result;
        };
        let id = net.transport.local_id();
        self.ctx.attach_network(net);
        self.machine.handle_identity_changed(id, self.ctx.ports.clock.now());
        self.start_network_tasks();
        result
    }

    /// Recovery, then a full scan of the game directory.
    async fn load_game_dir(&mut self) {
        for problem in self.ctx.local.recover(&self.ctx.cfg.catalog).await {
            self.machine.handle_failure(problem);
        }
        match self.ctx.local.full_scan(&self.ctx.cfg.catalog).await {
            Ok(lib) => self.machine.handle_full_scan(lib),
            Err(f) => self.machine.handle_failure(f),
        }
    }

    async fn handle(&mut self, input: Input) {
        let now = self.ctx.ports.clock.now();
        let m = &mut self.machine;
        match input {
            Input::Command(Command::Run(f)) => f(self),
            Input::Command(Command::SetGameDir { dir, reply }) => {
                let result = self.set_game_dir(&dir).await;
                if let Err(e) = &result {
                    self.machine.handle_failure(e.failure());
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Input::Discovered(advert) => m.handle_discovered(&advert, now),
            Input::Vanished(id) => m.handle_vanished(&id),
            Input::Hello { peer, addr } => m.handle_hello(peer, addr, now),
            Input::Seen(peer) => m.handle_seen(&peer, now),
            Input::Connected { peer, addr } => m.handle_connected(peer, addr, now),
            Input::Dialed { addr, outcome } => m.handle_dialed(addr, outcome, now),
            Input::Answer { peer, query, result } => m.handle_answer(peer, query, result, now),
            Input::FullScan(Ok(lib)) => m.handle_full_scan(lib),
            Input::FullScan(Err(f)) | Input::Failure(f) => m.handle_failure(f),
            Input::Scanned(results) => m.handle_games_scanned(results),
            Input::Dirty(ids) => m.handle_local_dirty(ids),
            Input::Finished { token, settled, outcome } => m.handle_finished(token, settled, outcome),
        }
    }

    /// Switches to another game directory (refused while operations run).
    async fn set_game_dir(&mut self, dir: &str) -> Result<(), SetGameDirError> {
        if !self.machine.may_change_game_dir() {
            return Err(SetGameDirError::Busy);
        }
        let provider = self.ctx.ports.fs_provider.clone().ok_or(SetGameDirError::Unsupported)?;
        let opened = provider.open(dir).map_err(|source| match source.kind {
            lanspread_ports::FsErrorKind::InUse => SetGameDirError::InUse { dir: dir.to_owned(), source },
            _ => SetGameDirError::Open { dir: dir.to_owned(), source },
        })?;
        // Dropping `opened` on failure releases the new directory's lock.
        self.take_identity_of(dir).await?;
        self.ctx.local.replace(opened).await;
        // Shown as the user would type it: canonical where the real
        // filesystem knows the path.
        let shown = std::fs::canonicalize(dir).map_or_else(|_| dir.to_owned(), |p| p.display().to_string());
        self.ctx.game_dir.send_replace(Some(shown));
        // The monitor drops the old directory's watches.
        self.published.game_dir.send_modify(|generation| *generation += 1);
        self.load_game_dir().await;
        Ok(())
    }

    /// Stops at a safe point: nothing new starts, running operations stop
    /// (downloads at once, transactions when done), then the loop ends.
    pub fn begin_shutdown(&mut self) {
        self.stopping = true;
        let _ = self.ctx.shutdown.send(true);
        self.machine.shutdown();
    }

    /// Carries out every output of the machine, in order.
    fn flush(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            self.execute(out);
        }
    }

    fn execute(&mut self, out: Output) {
        let ctx = &self.ctx;
        match out {
            Output::Event(e) => ctx.emit(e),
            Output::Snapshot(s) => {
                ctx.emit(PeerEvent::LibrarySnapshot { games: s.games.clone(), operations: s.operations.clone() });
                self.published.snapshot.send_replace(s);
            }
            Output::Serve(view) => {
                let machine = &self.machine;
                ctx.swarms.prune(&view, |id| machine.operation(id) == Some(OperationKind::Downloading));
                self.published.serve.send_replace(view);
            }
            Output::WatchRoots(roots) => {
                self.published.roots.send_replace(roots);
            }
            Output::PeerAddrs { peer, addrs } => ctx.pool.set_addrs(peer, addrs),
            Output::Disconnect(peer) => ctx.pool.drop_connection(&peer),
            Output::Dial { addr, pinned } => {
                let c = ctx.clone();
                ctx.tasks.spawn(async move {
                    let outcome = c.pool.dial_static(addr, pinned).await;
                    c.tell(Input::Dialed { addr, outcome });
                });
            }
            Output::Ask { peer, query } => {
                let c = ctx.clone();
                ctx.tasks.spawn(async move {
                    let result = c.pool.request(peer, &request_of(&query)).await;
                    c.tell(Input::Answer { peer, query, result });
                });
            }
            Output::Scan(ids) => {
                let c = ctx.clone();
                ctx.tasks.spawn(async move {
                    let mut results = Vec::with_capacity(ids.len());
                    for id in ids {
                        let r = c.local.rescan(&id).await;
                        results.push((id, r));
                    }
                    c.tell(Input::Scanned(results));
                });
            }
            Output::FullScan => {
                let c = ctx.clone();
                ctx.tasks.spawn(async move {
                    let r = c.local.full_scan(&c.cfg.catalog).await;
                    c.tell(Input::FullScan(r));
                });
            }
            Output::Start { token, id, work } => self.start(token, id, work),
            Output::Holders { token, joined, left } => {
                if let Some(tx) = self.running.get(&token).and_then(|r| r.news.as_ref()) {
                    let _ = tx.send(HolderNews { joined, left });
                }
            }
            Output::Cancel(token) => {
                if let Some(tx) = self.running.get(&token).and_then(|r| r.cancel.as_ref()) {
                    let _ = tx.send(true);
                }
            }
            Output::Settled { token, outcome } => {
                self.running.remove(&token);
                if let Some(w) = self.waiters.remove(&token) {
                    (w.deliver)(outcome);
                }
            }
        }
    }

    /// Spawns an operation's work.
    fn start(&mut self, token: OpToken, id: GameId, work: Work) {
        let ctx = self.ctx.clone();
        let progress = match self.waiters.get(&token) {
            Some(w) => w.progress.clone(),
            None => watch::channel(Progress::default()).0,
        };
        let mut running = Running::default();
        match work {
            Work::Download { manifest, holders, files } => {
                let (news_tx, news) = mpsc::unbounded_channel();
                let (cancel_tx, cancel) = watch::channel(false);
                running = Running { news: Some(news_tx), cancel: Some(cancel_tx) };
                let job = DownloadJob { token, id, manifest, holders, files };
                self.ctx.tasks.spawn(download::run(ctx, job, Signals { news, cancel, progress }));
            }
            Work::Install { adopt, update } => self.ctx.tasks.spawn(ops::install(ctx, token, id, adopt, update, progress)),
            Work::Uninstall { adopt } => self.ctx.tasks.spawn(ops::uninstall(ctx, token, id, adopt)),
            Work::Remove => self.ctx.tasks.spawn(ops::remove(ctx, token, id)),
        }
        self.running.insert(token, running);
    }
}

/// The wire request of a machine query.
fn request_of(query: &Query) -> Request {
    match query {
        Query::ListGames => Request::ListGames,
        Query::Ping { nonce } => Request::Ping { nonce: *nonce },
        Query::Manifest(id) => Request::GetGame { id: id.clone() },
    }
}

/// Advertises us, with a hint of our library renewed whenever what we
/// serve changes (so library news reaches the LAN by multicast), and
/// passes discovery's news to the driver.
async fn discovery(ctx: Arc<Ctx>, mut serve: server::ServeRx) {
    let discovery = ctx.discovery();
    let mut stop = ctx.shutdown_signal();
    let mut advertised = None;
    loop {
        let hint = library_hint(&serve.borrow_and_update());
        if advertised != Some(hint) {
            advertised = Some(hint);
            advertise(&ctx, hint).await;
        }
        let ev = tokio::select! {
            biased;
            _ = stop.changed() => break,
            changed = serve.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
            e = discovery.next_event() => match e { Some(e) => e, None => break },
        };
        match ev {
            DiscoveryEvent::Up(advert) => ctx.tell(Input::Discovered(advert)),
            DiscoveryEvent::Down(id) => ctx.tell(Input::Vanished(id)),
        }
    }
}

fn library_hint(view: &ServeView) -> LibraryHint {
    LibraryHint { rev: view.revision, games: u32::try_from(view.games.len()).unwrap_or(u32::MAX) }
}

async fn advertise(ctx: &Ctx, hint: LibraryHint) {
    let transport = ctx.transport();
    let mut me = PeerAdvert {
        id: transport.local_id(),
        addrs: vec![transport.local_addr()],
        protocol_version: u32::from(PROTOCOL_VERSION),
        meta: BTreeMap::new(),
    };
    hint.write(&mut me.meta);
    if let Err(e) = ctx.discovery().advertise(me).await {
        let failure =
            lanspread_core::peer::Failure::new(lanspread_core::peer::ErrorCode::Internal, format!("advertising on the LAN failed: {e}"));
        ctx.tell(Input::Failure(failure));
    }
}
