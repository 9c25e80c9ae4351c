//! Starting a peer for a command: the config file, the per-directory
//! identity and the catalog live here; the peer is assembled with
//! [`lanspread::Builder`].

use crate::cli::NetArgs;
use crate::output;
use crate::output::say;
use crate::remote::Remote;
use crate::ui::UiArgs;
use indicatif::{ProgressBar, ProgressStyle};
use lanspread::builder;
use lanspread::{Builder, DiscoveryKind, DownloadOptions, Events, EventsError, Peer, PeerEvent, Progress, TransportKind};
use lanspread_core::catalog::Catalog;
use lanspread_core::game::GameId;
use lanspread_core::scan::Scanner;
use lanspread_core::txn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Default port of `serve`.
pub const DEFAULT_PORT: u16 = 47800;

pub fn init_tracing() {
    // The builder's warning that mDNS is unavailable is said by this program
    // in its own words (see `start_with`); RUST_LOG shows it too.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lanspread::builder=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Settings from `config.toml` in the config directory; flags override them.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    transport: Option<TransportKind>,
    listen: Option<SocketAddr>,
    #[serde(default)]
    peers: Vec<SocketAddr>,
    party_key: Option<String>,
    no_mdns: Option<bool>,
}

/// The configuration directory (`LANSPREAD_CONFIG_DIR` overrides the platform's).
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LANSPREAD_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    directories::ProjectDirs::from("", "", "lanspread").map(|d| d.config_dir().to_path_buf()).unwrap_or_else(|| PathBuf::from(".lanspread"))
}

fn load_file_config() -> Result<FileConfig, String> {
    let path = config_dir().join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| format!("config {}: {}", path.display(), e.message())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(format!("config {}: {e}", path.display())),
    }
}

/// Loads the catalog: `--catalog FILE`, else `DIR/catalog.toml`, else empty
/// (`required` turns a missing default catalog into an error).
pub fn load_catalog(games: &Path, catalog: Option<&Path>) -> Result<Catalog, String> {
    let (path, explicit) = match catalog {
        Some(p) => (p.to_path_buf(), true),
        None => (games.join("catalog.toml"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Catalog::from_toml(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Catalog::default()),
        Err(e) => Err(format!("catalog {}: {e}", path.display())),
    }
}

/// The game directory, checked and canonical (the key of its identity).
fn check_games_dir(games: &Path) -> Result<PathBuf, String> {
    builder::check_game_dir(games).map_err(|e| e.to_string())
}

/// Where the identities of game directories live: one per directory, kept
/// in the config directory (never inside the game directory, never
/// compiled in); see `lanspread::identity_dir_for`.
fn identities() -> PathBuf {
    config_dir().join("identities")
}

/// A running peer with its event stream.
pub struct Running {
    /// The peer (it holds the game directory's lock while it runs).
    pub peer: Peer,
    /// Its events since it started.
    pub events: Events,
    pub catalog: Catalog,
}

impl Running {
    /// Starts an assembled peer.
    pub fn start(assembled: builder::Assembled, catalog: Catalog) -> Running {
        let peer = assembled.start();
        let events = peer.subscribe();
        Running { peer, events, catalog }
    }
}

/// The next event, or `None` once the peer stopped. A lag is harmless
/// here: callers read state from the snapshot, events only for messages.
async fn next_event(events: &mut Events) -> Option<PeerEvent> {
    loop {
        match events.recv().await {
            Ok(e) => return Some(e),
            Err(EventsError::Lagged { .. }) => continue,
            Err(EventsError::Closed) => return None,
        }
    }
}

/// Waits for the peer's first snapshot (after its start-up scan), printing
/// the failures reported before it.
pub async fn first_snapshot(events: &mut Events) -> Result<Vec<lanspread::GameView>, String> {
    loop {
        match next_event(events).await {
            Some(PeerEvent::LibrarySnapshot { games, .. }) => return Ok(games),
            Some(PeerEvent::RuntimeFailure(e)) => eprintln!("lanspread: {e}"),
            Some(_) => {}
            None => return Err("the peer stopped unexpectedly".into()),
        }
    }
}

/// Starts a peer on real adapters.
pub async fn start(net: &NetArgs, default_port: u16, what: &str, auto_install: bool) -> Result<Running, String> {
    start_with(net, default_port, what, auto_install, None).await
}

/// [`start`], with how long a download waits for a new holder when none is
/// usable (`None`: the runtime's default).
pub async fn start_with(
    net: &NetArgs,
    default_port: u16,
    what: &str,
    auto_install: bool,
    holder_wait: Option<Duration>,
) -> Result<Running, String> {
    let file = load_file_config()?;
    let games = check_games_dir(&net.games)?;
    let catalog = load_catalog(&games, net.catalog.as_deref())?;
    let kind = net.transport.map(TransportKind::from).or(file.transport).unwrap_or_default();
    let no_mdns = net.no_mdns || file.no_mdns.unwrap_or(false);
    let mut static_peers = net.peers.clone();
    static_peers.extend(file.peers.iter().copied());
    let builder = Builder::new()
        .game_dir(&games)
        .lock_label(what)
        .catalog(catalog.clone())
        .identities_under(identities())
        .transport(kind)
        .discovery(if no_mdns { DiscoveryKind::None } else { DiscoveryKind::Mdns })
        .static_peers(static_peers)
        .party_key(net.party_key.clone().or(file.party_key))
        .max_upload(net.max_upload)
        .max_download(net.max_download)
        .config(move |c| {
            c.auto_install = auto_install;
            if let Some(wait) = holder_wait {
                c.sched.holder_wait = wait;
            }
        });
    let builder = match net.listen.or(file.listen) {
        Some(addr) => builder.listen(addr),
        None => builder.listen_port(default_port),
    };
    let assembled = builder.assemble().map_err(|e| e.to_string())?;
    if let Some(e) = &assembled.mdns_unavailable {
        eprintln!("lanspread: mDNS unavailable ({e}); only --peer addresses will be used");
    }
    Ok(Running::start(assembled, catalog))
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn serve(net: NetArgs, ui: UiArgs) -> Result<(), String> {
    let mut r = start(&net, DEFAULT_PORT, "serve", false).await?;
    let served = first_snapshot(&mut r.events).await?.iter().filter(|g| g.shared).count();
    // Local control is always on (beside whichever directory the peer
    // holds), so other commands drive this peer instead of being refused;
    // it is open before the line that says the peer serves.
    let token = crate::ui::saved_token()?;
    let control = crate::control::Control::start(&r.peer, token.clone()).await;
    say!("serving {served} game(s) from {} on {} as {}", net.games.display(), r.peer.addr(), r.peer.id().to_hex());
    let web = crate::ui::start(&r.peer, &ui, token).await?;
    let mut events = r.events;
    let printer = tokio::spawn(async move {
        while let Some(e) = next_event(&mut events).await {
            match e {
                PeerEvent::PeerJoined { peer, addr } => say!("peer {peer} joined from {addr}"),
                PeerEvent::PeerLeft(peer) => say!("peer {peer} left"),
                PeerEvent::RuntimeFailure(e) => eprintln!("lanspread: {e}"),
                PeerEvent::PeerBanned { peer, reason } => say!("peer {peer} banned: {reason}"),
                PeerEvent::LocalLibraryChanged(ids) => {
                    say!("library changed: {}", ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", "))
                }
                _ => {}
            }
        }
    });
    control.serve_until(wait_for_signal()).await;
    say!("stopping...");
    if let Some(web) = web {
        web.stop().await;
    }
    r.peer.shutdown().await;
    printer.abort();
    Ok(())
}

pub async fn games(net: NetArgs, wait: f64, json: bool) -> Result<(), String> {
    if let Some(remote) = Remote::find(&net.games).await {
        return crate::remote::games(&remote, json).await;
    }
    let mut r = start(&net, 0, "games", false).await?;
    first_snapshot(&mut r.events).await?;
    // Listen for peers for `wait` seconds, then show what is known.
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    let games = r.peer.snapshot().games.clone();
    r.peer.shutdown().await;
    output::print_games(&games, json);
    Ok(())
}

pub async fn get(game: String, net: NetArgs, install: bool, adopt: bool, wait: f64, json: bool) -> Result<(), String> {
    let id = GameId::new(game.clone()).map_err(|e| format!("{game:?}: {e}"))?;
    if let Some(remote) = Remote::find(&net.games).await {
        return crate::remote::get(&remote, &id, install, adopt, wait, json).await;
    }
    // --wait bounds both the wait for a first holder and, once the
    // download runs, the wait for a new one when none is usable.
    let holder_wait = Duration::from_secs_f64(wait.max(0.0));
    let r = start_with(&net, 0, "get", false, Some(holder_wait)).await?;
    if !r.catalog.contains(&id) {
        r.peer.shutdown().await;
        return Err(format!(
            "{id} is not in your catalog ({}); add an entry [[games]] id = \"{id}\" name = \"...\"",
            net.catalog.clone().unwrap_or_else(|| net.games.join("catalog.toml")).display()
        ));
    }
    let result = get_inner(&r, &id, install, adopt, wait, json).await;
    if result.is_ok() {
        // Other downloaders of the swarm may be fetching our units: stay
        // until nobody asked for 2 s (at most a minute).
        r.peer.serve_while_asked(Duration::from_secs(2), Duration::from_secs(60)).await;
    }
    r.peer.shutdown().await;
    result
}

/// Waits until some peer advertises `id`.
async fn wait_for_holder(peer: &Peer, id: &GameId, wait: f64) -> Result<(), String> {
    let mut library = peer.library();
    let has_holder = |s: &std::sync::Arc<lanspread::Snapshot>| s.games.iter().any(|g| &g.id == id && !g.peers_with_latest.is_empty());
    let found = tokio::time::timeout(Duration::from_secs_f64(wait.max(0.0)), library.wait_for(has_holder)).await;
    match found {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err("the peer stopped".into()),
        Err(_) => Err(format!("no peer on the LAN offers {id} (waited {wait:.0} s; is a `lanspread serve` running? try --peer ADDR)")),
    }
}

pub fn progress_bar(id: &GameId, json: bool) -> ProgressBar {
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{id}"));
    bar
}

/// A line about the download: above the progress bar on a terminal, on
/// stderr when the bar is hidden (a pipe, a log, `--json`), where
/// indicatif would drop it.
pub fn notice(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Shows a download's progress and the events worth a line (bans, waits)
/// until the download ends.
async fn show_download(bar: &ProgressBar, mut progress: watch::Receiver<Progress>, mut events: Events, id: &GameId, wait: f64) {
    loop {
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() { return }
                let p = progress.borrow_and_update().clone();
                bar.set_length(p.total.unwrap_or(0));
                bar.set_position(p.done);
                bar.set_message(output::shares(&p.peers, p.done));
            }
            e = next_event(&mut events) => match e {
                Some(PeerEvent::PeerBanned { peer, reason }) => notice(bar, format!("peer {peer} banned: {reason}")),
                Some(PeerEvent::DownloadWaiting { id: of, reason, .. }) if &of == id => {
                    notice(bar, format!("{reason}; waiting up to {wait:.0} s for another peer that holds {id}"));
                }
                Some(PeerEvent::DownloadBegin { id: of, peers, total, .. }) if &of == id => {
                    bar.set_length(total);
                    bar.set_message(format!("from {} peer(s)", peers.len()));
                }
                Some(_) => {}
                None => return,
            }
        }
    }
}

pub async fn get_inner(r: &Running, id: &GameId, install: bool, adopt: bool, wait: f64, json: bool) -> Result<(), String> {
    let started = Instant::now();
    wait_for_holder(&r.peer, id, wait).await?;
    let events = r.peer.subscribe();
    let download = r.peer.download(id, DownloadOptions::default()).await.map_err(|e| format!("download of {id} failed: {e}"))?;
    let bar = progress_bar(id, json);
    let progress = download.progress();
    let result = download.wait();
    tokio::pin!(result);
    let report = tokio::select! {
        report = &mut result => report,
        () = show_download(&bar, progress, events, id, wait) => result.await,
    };
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            bar.abandon();
            return Err(format!("download of {id} failed: {e}"));
        }
    };
    bar.finish_and_clear();
    if !json {
        output::print_transfer(id, &report.stats);
    }
    let mut summary = serde_json::json!({ "game": id.as_str(), "version": report.version.as_str() });
    summary["download"] = serde_json::to_value(&report.stats).unwrap_or_default();
    if install {
        let update = r.peer.snapshot().games.iter().any(|g| &g.id == id && g.installed);
        if !json {
            say!("{} {id}...", if update { "updating" } else { "installing" });
        }
        let op = r.peer.install(id, adopt).await.map_err(|e| format!("install of {id} failed: {e}"))?;
        let done = op.await.map_err(|e| format!("install of {id} failed: {e}"))?;
        if let Some(kept) = &done.kept {
            if !json {
                say!("{id}: your files that could not stay in local/ were moved to {kept} in the game directory");
            }
            summary["kept"] = serde_json::json!(kept.as_str());
        }
        if !json {
            say!("installed {id}");
        }
        summary["installed"] = serde_json::json!(true);
    }
    summary["secs"] = serde_json::json!(started.elapsed().as_secs_f64());
    if json {
        say!("{summary}");
    }
    Ok(())
}

/// Local-only operations; `adopt` takes over a `local/` lanspread did not
/// install.
pub enum LocalOp {
    Install { adopt: bool },
    Uninstall { adopt: bool },
    Remove,
}

/// Options of a local install or uninstall: the wall clock names the kept
/// directory.
fn keep_options(adopt: bool) -> txn::KeepOptions {
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    txn::KeepOptions { adopt, time }
}

/// Says where the user's files went.
fn say_kept(id: &GameId, games: &Path, kept: Option<&lanspread_ports::RelPath>) {
    if let Some(kept) = kept {
        say!("{id}: your files that could not stay in local/ were moved to {}", games.join(kept.as_str()).display());
    }
}

pub async fn local_op(op: LocalOp, game: &str, games: &Path, catalog: Option<&Path>) -> Result<(), String> {
    let id = GameId::new(game.to_owned()).map_err(|e| format!("{game:?}: {e}"))?;
    if let Some(remote) = Remote::find(games).await {
        return crate::remote::local_op(&remote, op, &id).await;
    }
    let games = check_games_dir(games)?;
    let catalog = load_catalog(&games, catalog)?;
    if !catalog.contains(&id) {
        return Err(format!("{id} is not in the catalog"));
    }
    let _lock = builder::lock_games_dir(&games, "local operation").map_err(|e| e.to_string())?;
    let fs = builder::open_game_dir(&games).map_err(|e| e.to_string())?;
    let root = id.root();
    txn::recover_root(fs.as_ref(), &root).await.map_err(|e| format!("recovery of {id}: {e}"))?;
    match op {
        LocalOp::Install { adopt } => {
            let unpacker = builder::standard_unpacker();
            let out = txn::install(fs.clone(), unpacker.as_ref(), &root, keep_options(adopt), &|_| {}).await.map_err(|e| e.to_string())?;
            say!("{id}: {:?} done", out.kind);
            say_kept(&id, &games, out.kept.as_ref());
        }
        LocalOp::Uninstall { adopt } => {
            let out = txn::uninstall(fs.as_ref(), &root, keep_options(adopt)).await.map_err(|e| e.to_string())?;
            say!("{id}: uninstalled");
            say_kept(&id, &games, out.kept.as_ref());
        }
        LocalOp::Remove => {
            txn::remove_downloaded(fs.as_ref(), &catalog, &id).await.map_err(|e| e.to_string())?;
            say!("{id}: downloaded files removed");
        }
    }
    Ok(())
}

pub async fn status(games: &Path, catalog: Option<&Path>, json: bool) -> Result<(), String> {
    if let Some(remote) = Remote::find(games).await {
        return crate::remote::games(&remote, json).await;
    }
    let games = check_games_dir(games)?;
    let catalog = load_catalog(&games, catalog)?;
    let fs = builder::open_game_dir(&games).map_err(|e| e.to_string())?;
    let mut scanner = Scanner::new(lanspread_core::scan::ScanIndex::load(fs.as_ref()).await);
    let lib = scanner.scan_all(fs.as_ref(), &catalog).await.map_err(|e| format!("scanning {}: {e}", games.display()))?;
    // Keep the scan cache, so the next status (or serve) only re-reads what changed.
    if let Err(e) = scanner.index.save(fs.as_ref()).await {
        tracing::debug!("saving scan index: {e}");
    }
    let mut db = lanspread_core::db::GameDb::new(catalog);
    db.set_local(lib);
    output::print_games(&db.view(), json);
    Ok(())
}
