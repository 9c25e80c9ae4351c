//! The one place that turns the library's state and events into the names
//! and JSON shapes a UI sees.
//!
//! The HTTP API (`lanspread-web`) and a desktop shell (Tauri) both use these
//! functions, so a page written against one works against the other: the
//! event names, the `state` of a game and the error codes are decided here
//! and nowhere else. The shapes are documented in `app/web/API.md`.
//!
//! ```
//! use lanspread::bridge::{self, names};
//! use lanspread::PeerEvent;
//! let e = bridge::ui_event(&PeerEvent::PeerCount(3)).expect("shown to the UI");
//! assert_eq!(e.name, names::PEER_COUNT);
//! assert_eq!(e.data, serde_json::json!({"count": 3}));
//! ```

use crate::progress::Progress;
use lanspread_core::db::{Availability, GameView};
use lanspread_core::game::{GameId, Version};
use lanspread_core::peer::{Failure, OperationKind, PeerEvent, PeerInfo, PeerShare, Snapshot, TransferStats};
use lanspread_ports::PeerId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The event names a UI subscribes to (the `event:` of the HTTP event
/// stream, the event name of a Tauri `emit`).
pub mod names {
    /// The whole library (`LibrarySnapshot`).
    pub const GAMES_LIST_UPDATED: &str = "games-list-updated";
    /// A download started.
    pub const DOWNLOAD_BEGIN: &str = "game-download-begin";
    /// A download's progress.
    pub const DOWNLOAD_PROGRESS: &str = "game-download-progress";
    /// A download waits for a usable holder.
    pub const DOWNLOAD_WAITING: &str = "game-download-waiting";
    /// A download committed.
    pub const DOWNLOAD_FINISHED: &str = "game-download-finished";
    /// A download failed, was refused or cancelled.
    pub const DOWNLOAD_FAILED: &str = "game-download-failed";
    /// An install or update started.
    pub const INSTALL_BEGIN: &str = "game-install-begin";
    /// An install's progress (archive bytes unpacked).
    pub const INSTALL_PROGRESS: &str = "game-install-progress";
    /// An install or update finished.
    pub const INSTALL_FINISHED: &str = "game-install-finished";
    /// An install or update failed or was refused.
    pub const INSTALL_FAILED: &str = "game-install-failed";
    /// The user's files were moved aside by an install, update or uninstall.
    pub const FILES_KEPT: &str = "game-files-kept";
    /// An uninstall started.
    pub const UNINSTALL_BEGIN: &str = "game-uninstall-begin";
    /// An uninstall finished.
    pub const UNINSTALL_FINISHED: &str = "game-uninstall-finished";
    /// An uninstall failed or was refused.
    pub const UNINSTALL_FAILED: &str = "game-uninstall-failed";
    /// A removal of downloaded files started.
    pub const REMOVE_BEGIN: &str = "game-remove-begin";
    /// A removal finished.
    pub const REMOVE_FINISHED: &str = "game-remove-finished";
    /// A removal failed or was refused.
    pub const REMOVE_FAILED: &str = "game-remove-failed";
    /// A peer appeared.
    pub const PEER_JOINED: &str = "peer-joined";
    /// A peer left or was pruned.
    pub const PEER_LEFT: &str = "peer-left";
    /// A peer sent corrupt data too often.
    pub const PEER_BANNED: &str = "peer-banned";
    /// The number of known peers.
    pub const PEER_COUNT: &str = "peer-count";
    /// Something in the runtime failed, outside any one action.
    pub const RUNTIME_FAILURE: &str = "runtime-failure";
    /// The runtime stopped: nothing more will come.
    pub const RUNTIME_STOPPED: &str = "runtime-stopped";
}

/// What a UI offers for a game: [`Availability`] combined with what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GameState {
    /// Known from the catalog only: nobody holds it.
    Unavailable,
    /// Not here, peers hold it.
    Remote,
    /// A download (or its manifest fetch) runs.
    Downloading,
    /// Here, not installed.
    Downloaded,
    /// Installed and up to date.
    Installed,
    /// Installed, peers hold a newer version.
    UpdateAvailable,
}

impl GameState {
    /// The state of `view` while `running` runs on it. Only a download
    /// changes the state: during an install, update, uninstall or removal
    /// the state stays the one before it (the operation is shown apart).
    pub fn of(view: &GameView, running: Option<OperationKind>) -> Self {
        if matches!(running, Some(OperationKind::Resolving | OperationKind::Downloading)) {
            return GameState::Downloading;
        }
        match view.availability {
            Availability::Installed => GameState::Installed,
            Availability::UpdateAvailable => GameState::UpdateAvailable,
            Availability::Downloaded => GameState::Downloaded,
            Availability::Downloadable => GameState::Remote,
            Availability::Unavailable => GameState::Unavailable,
        }
    }
}

/// The UI's name of an operation kind (`"downloading"`, ...).
pub fn operation_name(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Resolving => "resolving",
        OperationKind::Downloading => "downloading",
        OperationKind::Installing => "installing",
        OperationKind::Updating => "updating",
        OperationKind::Uninstalling => "uninstalling",
        OperationKind::Removing => "removing",
        // A kind added later: still shown as something that runs.
        _ => "running",
    }
}

/// Progress as a UI shows it (`Progress` of API.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressJson {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all, if known.
    pub total: Option<u64>,
    /// Bytes per second.
    pub rate: f64,
    /// Seconds left at the current rate, if known.
    pub eta_secs: Option<f64>,
    /// Why a download waits for holders, while it does.
    pub waiting: Option<String>,
    /// Each peer's share: `{"peer": hex id, "bytes", "rate"}`.
    pub peers: Vec<PeerShare>,
}

impl From<&Progress> for ProgressJson {
    fn from(p: &Progress) -> Self {
        ProgressJson {
            done: p.done,
            total: p.total,
            rate: p.rate,
            eta_secs: p.eta.map(|d| d.as_secs_f64()),
            waiting: p.waiting.clone(),
            peers: p.peers.clone(),
        }
    }
}

/// One game as a UI shows it (`Game` of API.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GameJson {
    /// Id.
    pub id: GameId,
    /// Display name.
    pub name: String,
    /// From the catalog.
    pub description: Option<String>,
    /// From the catalog.
    pub genre: Option<String>,
    /// What the UI offers.
    pub state: GameState,
    /// What runs on the game (see [`operation_name`]).
    pub operation: Option<&'static str>,
    /// Bytes of the latest version.
    pub size: u64,
    /// Local (downloaded) version.
    pub version: Option<Version>,
    /// Newest version peers hold.
    pub latest_version: Option<Version>,
    /// Hosts holding `latest_version` (hosts, not identities: identities
    /// cost nothing, see `GameView::hosts_with_latest`).
    pub holders: usize,
    /// Installed here.
    pub installed: bool,
    /// Our copy is offered to peers.
    pub shared: bool,
    /// What is wrong with the local copy, for the user.
    pub problems: Vec<String>,
    /// Progress of what runs, if known.
    pub progress: Option<ProgressJson>,
}

/// The UI's view of one game while `running` runs with `progress`.
pub fn game_json(view: &GameView, running: Option<OperationKind>, progress: Option<&Progress>) -> GameJson {
    let catalog = view.catalog.as_ref();
    GameJson {
        id: view.id.clone(),
        name: view.name.clone(),
        description: catalog.and_then(|c| c.description.clone()),
        genre: catalog.and_then(|c| c.genre.clone()),
        state: GameState::of(view, running),
        operation: running.map(operation_name),
        size: view.size,
        version: view.local_version.clone(),
        latest_version: view.latest_remote.clone(),
        holders: view.hosts_with_latest,
        installed: view.installed,
        shared: view.shared,
        problems: view.problems.clone(),
        progress: running.and(progress).map(ProgressJson::from),
    }
}

/// The whole library as a UI shows it; `progress` tells the progress of a
/// running operation (see [`ProgressBook`]).
pub fn games_json(snapshot: &Snapshot, progress: impl Fn(&GameId) -> Option<Progress>) -> Vec<GameJson> {
    rows(&snapshot.games, &snapshot.operations, progress)
}

fn rows(games: &[GameView], operations: &BTreeMap<GameId, OperationKind>, progress: impl Fn(&GameId) -> Option<Progress>) -> Vec<GameJson> {
    games
        .iter()
        .map(|g| {
            let running = operations.get(&g.id).copied();
            let p = running.and_then(|_| progress(&g.id));
            game_json(g, running, p.as_ref())
        })
        .collect()
}

/// A peer as a UI shows it (`Peer` of API.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerJson {
    /// Identity, 64 hex digits.
    pub id: PeerId,
    /// Where it is reached.
    pub addr: SocketAddr,
    /// Games it advertises.
    pub games: usize,
}

impl From<&PeerInfo> for PeerJson {
    fn from(p: &PeerInfo) -> Self {
        PeerJson { id: p.id, addr: p.addr, games: p.games }
    }
}

/// The known peers.
pub fn peers_json(snapshot: &Snapshot) -> Vec<PeerJson> {
    snapshot.peers.iter().map(PeerJson::from).collect()
}

/// An operation that runs (in [`StatusJson`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationJson {
    /// Game.
    pub id: GameId,
    /// What runs (see [`operation_name`]).
    pub operation: &'static str,
}

/// The peer at a glance (`Status` of API.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusJson {
    /// Our identity.
    pub peer_id: PeerId,
    /// Where our server listens.
    pub addr: SocketAddr,
    /// The game directory, if the app knows it.
    pub game_dir: Option<String>,
    /// Known peers.
    pub peers: usize,
    /// Games in the library.
    pub games: usize,
    /// What runs.
    pub operations: Vec<OperationJson>,
    /// This library's version.
    pub lanspread_version: &'static str,
}

/// The status of the peer `(id, addr)` in `snapshot`.
pub fn status_json(id: PeerId, addr: SocketAddr, snapshot: &Snapshot, game_dir: Option<&str>) -> StatusJson {
    let operations = snapshot.operations.iter().map(|(id, k)| OperationJson { id: id.clone(), operation: operation_name(*k) }).collect();
    StatusJson {
        peer_id: id,
        addr,
        game_dir: game_dir.map(str::to_owned),
        peers: snapshot.peers.len(),
        games: snapshot.games.len(),
        operations,
        lanspread_version: env!("CARGO_PKG_VERSION"),
    }
}

/// The progress of each running operation, as the events tell it, so a
/// full library sent to a UI carries the progress of what runs.
#[derive(Debug, Clone, Default)]
pub struct ProgressBook {
    running: BTreeMap<GameId, Progress>,
}

impl ProgressBook {
    /// Takes note of what `e` says about progress.
    pub fn observe(&mut self, e: &PeerEvent) {
        match e {
            PeerEvent::DownloadBegin { id, total, .. } => self.set(id, Progress::of_download(0, *total, 0.0, vec![])),
            PeerEvent::DownloadProgress { id, done, total, rate, peers } => {
                self.set(id, Progress::of_download(*done, *total, *rate, peers.clone()))
            }
            PeerEvent::DownloadWaiting { id, reason, .. } => {
                self.running.entry(id.clone()).or_default().waiting = Some(reason.clone());
            }
            PeerEvent::InstallBegin { id, .. } => self.set(id, Progress::of_install(0, None)),
            PeerEvent::InstallProgress { id, done, total } => self.set(id, Progress::of_install(*done, *total)),
            // What no longer runs has no progress.
            PeerEvent::LibrarySnapshot { operations, .. } => self.running.retain(|id, _| operations.contains_key(id)),
            _ => {}
        }
    }

    fn set(&mut self, id: &GameId, p: Progress) {
        self.running.insert(id.clone(), p);
    }

    /// The last progress told for `id`'s running operation.
    pub fn get(&self, id: &GameId) -> Option<Progress> {
        self.running.get(id).cloned()
    }
}

/// An event as a UI receives it: a name from [`names`] and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct UiEvent {
    /// The event's name.
    pub name: &'static str,
    /// Its data.
    pub data: serde_json::Value,
}

impl UiEvent {
    /// An event named `name` with `data`.
    pub fn new(name: &'static str, data: impl Serialize) -> Self {
        // These shapes have string keys and plain values: serializing them
        // cannot fail (a non-finite rate becomes null).
        UiEvent { name, data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null) }
    }

    /// `games-list-updated` with the whole library.
    pub fn games_list(games: Vec<GameJson>) -> Self {
        UiEvent::new(names::GAMES_LIST_UPDATED, GamesList { games })
    }
}

#[derive(Serialize)]
struct GamesList {
    games: Vec<GameJson>,
}

#[derive(Serialize)]
struct DownloadBegin<'a> {
    id: &'a GameId,
    version: &'a Version,
    total: u64,
    peers: &'a [PeerId],
}

#[derive(Serialize)]
struct ProgressOf<'a> {
    id: &'a GameId,
    progress: ProgressJson,
}

#[derive(Serialize)]
struct Waiting<'a> {
    id: &'a GameId,
    reason: &'a str,
}

#[derive(Serialize)]
struct DownloadFinished<'a> {
    id: &'a GameId,
    version: &'a Version,
    bytes: u64,
    reused: u64,
    secs: f64,
    /// Each peer's share of the whole download.
    peers: &'a [PeerShare],
}

#[derive(Serialize)]
struct Failed<'a> {
    id: &'a GameId,
    #[serde(flatten)]
    error: &'a Failure,
}

#[derive(Serialize)]
struct InstallBegin<'a> {
    id: &'a GameId,
    update: bool,
}

#[derive(Serialize)]
struct Id<'a> {
    id: &'a GameId,
}

#[derive(Serialize)]
struct Kept<'a> {
    id: &'a GameId,
    kept: &'a str,
}

#[derive(Serialize)]
struct Joined {
    peer: PeerJson,
}

#[derive(Serialize)]
struct Left {
    peer: PeerId,
}

#[derive(Serialize)]
struct Banned<'a> {
    peer: PeerId,
    reason: &'a str,
}

#[derive(Serialize)]
struct Count {
    count: usize,
}

#[derive(Serialize)]
struct Empty {}

/// The UI event of `e`, or `None` for events a UI has no use for (see
/// [`ui_event_with`]). A `games-list-updated` made here carries no progress.
pub fn ui_event(e: &PeerEvent) -> Option<UiEvent> {
    ui_event_with(e, |_| None)
}

/// The UI event of `e`; a `games-list-updated` carries the progress
/// `progress` tells for each running operation.
///
/// Two events are not shown, on purpose:
/// - `LocalLibraryChanged`: the peer publishes the new library right
///   after it, which reaches the UI as `games-list-updated`;
/// - `GotGameFiles`: the manifest fetch is a step of a download, whose
///   `game-download-begin` tells the same figures.
pub fn ui_event_with(e: &PeerEvent, progress: impl Fn(&GameId) -> Option<Progress>) -> Option<UiEvent> {
    use names::*;
    let event = match e {
        PeerEvent::LibrarySnapshot { games, operations } => UiEvent::games_list(rows(games, operations, progress)),
        PeerEvent::LocalLibraryChanged(_) | PeerEvent::GotGameFiles { .. } => return None,
        PeerEvent::DownloadBegin { id, version, total, peers } => {
            UiEvent::new(DOWNLOAD_BEGIN, DownloadBegin { id, version, total: *total, peers })
        }
        PeerEvent::DownloadProgress { id, done, total, rate, peers } => {
            let p = Progress::of_download(*done, *total, *rate, peers.clone());
            UiEvent::new(DOWNLOAD_PROGRESS, ProgressOf { id, progress: ProgressJson::from(&p) })
        }
        PeerEvent::DownloadWaiting { id, reason, .. } => UiEvent::new(DOWNLOAD_WAITING, Waiting { id, reason }),
        PeerEvent::DownloadFinished { id, version, stats } => UiEvent::new(DOWNLOAD_FINISHED, download_finished(id, version, stats)),
        PeerEvent::DownloadFailed { id, error } => UiEvent::new(DOWNLOAD_FAILED, Failed { id, error }),
        PeerEvent::InstallBegin { id, update } => UiEvent::new(INSTALL_BEGIN, InstallBegin { id, update: *update }),
        PeerEvent::InstallProgress { id, done, total } => {
            let p = Progress::of_install(*done, *total);
            UiEvent::new(INSTALL_PROGRESS, ProgressOf { id, progress: ProgressJson::from(&p) })
        }
        PeerEvent::InstallFinished { id } => UiEvent::new(INSTALL_FINISHED, Id { id }),
        PeerEvent::InstallFailed { id, error } => UiEvent::new(INSTALL_FAILED, Failed { id, error }),
        PeerEvent::UserFilesKept { id, kept } => UiEvent::new(FILES_KEPT, Kept { id, kept: kept.as_str() }),
        PeerEvent::UninstallBegin(id) => UiEvent::new(UNINSTALL_BEGIN, Id { id }),
        PeerEvent::UninstallFinished(id) => UiEvent::new(UNINSTALL_FINISHED, Id { id }),
        PeerEvent::UninstallFailed { id, error } => UiEvent::new(UNINSTALL_FAILED, Failed { id, error }),
        PeerEvent::RemoveBegin(id) => UiEvent::new(REMOVE_BEGIN, Id { id }),
        PeerEvent::RemoveFinished(id) => UiEvent::new(REMOVE_FINISHED, Id { id }),
        PeerEvent::RemoveFailed { id, error } => UiEvent::new(REMOVE_FAILED, Failed { id, error }),
        PeerEvent::PeerJoined { peer, addr } => UiEvent::new(PEER_JOINED, Joined { peer: PeerJson { id: *peer, addr: *addr, games: 0 } }),
        PeerEvent::PeerLeft(peer) => UiEvent::new(PEER_LEFT, Left { peer: *peer }),
        PeerEvent::PeerBanned { peer, reason } => UiEvent::new(PEER_BANNED, Banned { peer: *peer, reason }),
        PeerEvent::PeerCount(count) => UiEvent::new(PEER_COUNT, Count { count: *count }),
        PeerEvent::RuntimeFailure(failure) => UiEvent::new(RUNTIME_FAILURE, failure),
        PeerEvent::Stopped => UiEvent::new(RUNTIME_STOPPED, Empty {}),
        // An event added later is not shown until it is given a name here.
        _ => return None,
    };
    Some(event)
}

fn download_finished<'a>(id: &'a GameId, version: &'a Version, stats: &'a TransferStats) -> DownloadFinished<'a> {
    DownloadFinished { id, version, bytes: stats.bytes, reused: stats.reused, secs: stats.secs, peers: &stats.peers }
}

/// Whether `name` is an event that only tells progress (a UI may skip some
/// of them; later ones supersede earlier ones).
pub fn is_progress(name: &str) -> bool {
    name == names::DOWNLOAD_PROGRESS || name == names::INSTALL_PROGRESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanspread_core::catalog::CatalogEntry;
    use lanspread_core::peer::ErrorCode;
    use lanspread_ports::{RelPath, Timestamp};
    use serde_json::json;
    use std::time::Duration;

    fn gid(s: &str) -> GameId {
        GameId::new(s).unwrap()
    }

    fn ver(s: &str) -> Version {
        Version::new(s).unwrap()
    }

    fn view(availability: Availability) -> GameView {
        GameView {
            id: gid("arena"),
            name: "Arena".into(),
            catalog: None,
            local_version: None,
            installed: false,
            latest_remote: None,
            peers_with_latest: vec![],
            hosts_with_latest: 0,
            size: 0,
            availability,
            shared: false,
            problems: vec![],
        }
    }

    fn failure() -> Failure {
        Failure::new(ErrorCode::Busy, "busy")
    }

    /// One sample of every `PeerEvent` variant and the name it must have.
    fn every_variant() -> Vec<(PeerEvent, Option<&'static str>)> {
        let (id, peer) = (gid("arena"), PeerId([7; 32]));
        let addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let stats = TransferStats { bytes: 10, reused: 2, secs: 1.5, peers: vec![] };
        vec![
            (PeerEvent::LibrarySnapshot { games: vec![], operations: BTreeMap::new() }, Some("games-list-updated")),
            (PeerEvent::LocalLibraryChanged(vec![id.clone()]), None),
            (PeerEvent::GotGameFiles { id: id.clone(), version: ver("1"), files: 1, bytes: 1, peers: vec![] }, None),
            (PeerEvent::DownloadBegin { id: id.clone(), version: ver("1"), total: 9, peers: vec![peer] }, Some("game-download-begin")),
            (PeerEvent::DownloadProgress { id: id.clone(), done: 1, total: 9, rate: 1.0, peers: vec![] }, Some("game-download-progress")),
            (PeerEvent::DownloadWaiting { id: id.clone(), reason: "x".into(), deadline: Timestamp::ZERO }, Some("game-download-waiting")),
            (PeerEvent::DownloadFinished { id: id.clone(), version: ver("1"), stats }, Some("game-download-finished")),
            (PeerEvent::DownloadFailed { id: id.clone(), error: failure() }, Some("game-download-failed")),
            (PeerEvent::PeerBanned { peer, reason: "lied".into() }, Some("peer-banned")),
            (PeerEvent::InstallBegin { id: id.clone(), update: true }, Some("game-install-begin")),
            (PeerEvent::InstallProgress { id: id.clone(), done: 1, total: None }, Some("game-install-progress")),
            (PeerEvent::InstallFinished { id: id.clone() }, Some("game-install-finished")),
            (PeerEvent::InstallFailed { id: id.clone(), error: failure() }, Some("game-install-failed")),
            (PeerEvent::UserFilesKept { id: id.clone(), kept: RelPath::new(".lanspread-kept/arena-1").unwrap() }, Some("game-files-kept")),
            (PeerEvent::UninstallBegin(id.clone()), Some("game-uninstall-begin")),
            (PeerEvent::UninstallFinished(id.clone()), Some("game-uninstall-finished")),
            (PeerEvent::UninstallFailed { id: id.clone(), error: failure() }, Some("game-uninstall-failed")),
            (PeerEvent::RemoveBegin(id.clone()), Some("game-remove-begin")),
            (PeerEvent::RemoveFinished(id.clone()), Some("game-remove-finished")),
            (PeerEvent::RemoveFailed { id: id.clone(), error: failure() }, Some("game-remove-failed")),
            (PeerEvent::RuntimeFailure(failure()), Some("runtime-failure")),
            (PeerEvent::PeerJoined { peer, addr }, Some("peer-joined")),
            (PeerEvent::PeerLeft(peer), Some("peer-left")),
            (PeerEvent::PeerCount(2), Some("peer-count")),
            (PeerEvent::Stopped, Some("runtime-stopped")),
        ]
    }

    #[test]
    fn every_event_has_its_pinned_name() {
        for (event, name) in every_variant() {
            assert_eq!(ui_event(&event).map(|e| e.name), name, "{event:?}");
        }
    }

    #[test]
    fn the_samples_cover_every_variant() {
        // One sample per variant (a duplicate would hide a missing one);
        // 25 is the number of variants today: a new variant needs a sample
        // here and a name in `ui_event_with`.
        let samples = every_variant();
        let kinds: std::collections::BTreeSet<String> =
            samples.iter().map(|(e, _)| format!("{e:?}").split(['(', ' ', '{']).next().unwrap_or_default().to_owned()).collect();
        assert_eq!(kinds.len(), samples.len(), "one sample per variant");
        assert_eq!(samples.len(), 25);
    }

    #[test]
    fn failures_carry_the_snake_case_code_and_message() {
        let e = ui_event(&PeerEvent::InstallFailed {
            id: gid("arena"),
            error: Failure::new(ErrorCode::NotDownloaded, "arena is not downloaded"),
        })
        .unwrap();
        assert_eq!(e.data, json!({"id": "arena", "code": "not_downloaded", "message": "arena is not downloaded"}));
        let e = ui_event(&PeerEvent::RuntimeFailure(Failure::new(ErrorCode::WriteFailed, "disk"))).unwrap();
        assert_eq!(e.data, json!({"code": "write_failed", "message": "disk"}));
    }

    #[test]
    fn event_data_has_the_documented_shapes() {
        let (id, peer) = (gid("arena"), PeerId([1; 32]));
        let hex = peer.to_hex();
        let begin = PeerEvent::DownloadBegin { id: id.clone(), version: ver("1.2"), total: 100, peers: vec![peer] };
        assert_eq!(ui_event(&begin).unwrap().data, json!({"id": "arena", "version": "1.2", "total": 100, "peers": [hex]}));
        let share = PeerShare { peer, bytes: 50, rate: 25.0 };
        let progress = PeerEvent::DownloadProgress { id: id.clone(), done: 50, total: 150, rate: 25.0, peers: vec![share] };
        assert_eq!(
            ui_event(&progress).unwrap().data,
            json!({"id": "arena", "progress": {"done": 50, "total": 150, "rate": 25.0, "eta_secs": 4.0, "waiting": null,
                   "peers": [{"peer": hex, "bytes": 50, "rate": 25.0}]}})
        );
        let share = PeerShare { peer: PeerId([7; 32]), bytes: 10, rate: 4.0 };
        let stats = TransferStats { bytes: 10, reused: 2, secs: 1.5, peers: vec![share] };
        let done = PeerEvent::DownloadFinished { id: id.clone(), version: ver("1.2"), stats };
        let peers = json!([{"peer": PeerId([7; 32]).to_hex(), "bytes": 10, "rate": 4.0}]);
        assert_eq!(
            ui_event(&done).unwrap().data,
            json!({"id": "arena", "version": "1.2", "bytes": 10, "reused": 2, "secs": 1.5, "peers": peers})
        );
        let waiting = PeerEvent::DownloadWaiting { id: id.clone(), reason: "all banned".into(), deadline: Timestamp::ZERO };
        assert_eq!(ui_event(&waiting).unwrap().data, json!({"id": "arena", "reason": "all banned"}));
        let joined = PeerEvent::PeerJoined { peer, addr: "10.0.0.2:5000".parse().unwrap() };
        assert_eq!(ui_event(&joined).unwrap().data, json!({"peer": {"id": hex, "addr": "10.0.0.2:5000", "games": 0}}));
        assert_eq!(ui_event(&PeerEvent::PeerLeft(peer)).unwrap().data, json!({"peer": hex}));
        assert_eq!(ui_event(&PeerEvent::UninstallBegin(id.clone())).unwrap().data, json!({"id": "arena"}));
        assert_eq!(ui_event(&PeerEvent::InstallBegin { id, update: false }).unwrap().data, json!({"id": "arena", "update": false}));
    }

    #[test]
    fn the_state_follows_availability_when_nothing_runs() {
        let cases = [
            (Availability::Unavailable, "unavailable"),
            (Availability::Downloadable, "remote"),
            (Availability::Downloaded, "downloaded"),
            (Availability::Installed, "installed"),
            (Availability::UpdateAvailable, "update_available"),
        ];
        for (a, name) in cases {
            let state = GameState::of(&view(a), None);
            assert_eq!(serde_json::to_value(state).unwrap(), json!(name), "{a:?}");
        }
    }

    #[test]
    fn a_download_shows_as_downloading_other_operations_keep_the_state() {
        for running in [OperationKind::Resolving, OperationKind::Downloading] {
            assert_eq!(GameState::of(&view(Availability::Downloadable), Some(running)), GameState::Downloading);
            assert_eq!(GameState::of(&view(Availability::UpdateAvailable), Some(running)), GameState::Downloading);
        }
        let kept = [
            (OperationKind::Installing, Availability::Downloaded, GameState::Downloaded),
            (OperationKind::Updating, Availability::UpdateAvailable, GameState::UpdateAvailable),
            (OperationKind::Uninstalling, Availability::Installed, GameState::Installed),
            (OperationKind::Removing, Availability::Downloaded, GameState::Downloaded),
        ];
        for (running, a, state) in kept {
            assert_eq!(GameState::of(&view(a), Some(running)), state, "{running:?}");
        }
    }

    #[test]
    fn a_game_row_has_the_documented_shape() {
        let mut g = view(Availability::UpdateAvailable);
        g.catalog = Some(CatalogEntry {
            id: gid("arena"),
            name: "Arena".into(),
            description: Some("A fast shooter.".into()),
            genre: Some("Shooter".into()),
            release_year: None,
            publisher: None,
            max_players: None,
            size: None,
        });
        g.local_version = Some(ver("1.2"));
        g.latest_remote = Some(ver("1.3"));
        g.installed = true;
        g.shared = true;
        g.hosts_with_latest = 2;
        g.peers_with_latest = vec![PeerId([1; 32]), PeerId([2; 32]), PeerId([3; 32])];
        g.size = 123;
        let snapshot =
            Snapshot { games: vec![g], operations: BTreeMap::from([(gid("arena"), OperationKind::Updating)]), ..Snapshot::default() };
        let progress = Progress { done: 5, total: Some(10), eta: Some(Duration::from_secs(2)), ..Progress::default() };
        let rows = games_json(&snapshot, |_| Some(progress.clone()));
        assert_eq!(
            serde_json::to_value(&rows).unwrap(),
            json!([{
                "id": "arena", "name": "Arena", "description": "A fast shooter.", "genre": "Shooter",
                "state": "update_available", "operation": "updating", "size": 123, "version": "1.2",
                "latest_version": "1.3", "holders": 2, "installed": true, "shared": true, "problems": [],
                "progress": {"done": 5, "total": 10, "rate": 0.0, "eta_secs": 2.0, "waiting": null, "peers": []}
            }])
        );
        // Nothing runs: no progress, whatever the book says.
        let idle = Snapshot { operations: BTreeMap::new(), ..snapshot };
        let rows = games_json(&idle, |_| Some(progress.clone()));
        assert_eq!((rows[0].operation, rows[0].progress.is_none()), (None, true));
    }

    #[test]
    fn the_progress_book_follows_operations_and_forgets_finished_ones() {
        let id = gid("arena");
        let mut book = ProgressBook::default();
        book.observe(&PeerEvent::DownloadBegin { id: id.clone(), version: ver("1"), total: 100, peers: vec![] });
        assert_eq!(book.get(&id).map(|p| (p.done, p.total)), Some((0, Some(100))));
        book.observe(&PeerEvent::DownloadProgress { id: id.clone(), done: 40, total: 100, rate: 20.0, peers: vec![] });
        book.observe(&PeerEvent::DownloadWaiting { id: id.clone(), reason: "no holder".into(), deadline: Timestamp::ZERO });
        let p = book.get(&id).unwrap();
        assert_eq!((p.done, p.waiting.as_deref(), p.eta), (40, Some("no holder"), Some(Duration::from_secs(3))));
        let running = BTreeMap::from([(id.clone(), OperationKind::Downloading)]);
        book.observe(&PeerEvent::LibrarySnapshot { games: vec![], operations: running });
        assert!(book.get(&id).is_some(), "a running download keeps its progress");
        book.observe(&PeerEvent::LibrarySnapshot { games: vec![], operations: BTreeMap::new() });
        assert_eq!(book.get(&id), None);
        book.observe(&PeerEvent::InstallProgress { id: id.clone(), done: 7, total: Some(9) });
        assert_eq!(book.get(&id).map(|p| (p.done, p.total)), Some((7, Some(9))));
    }

    #[test]
    fn a_snapshot_event_carries_the_books_progress() {
        let operations = BTreeMap::from([(gid("arena"), OperationKind::Downloading)]);
        let e = PeerEvent::LibrarySnapshot { games: vec![view(Availability::Downloadable)], operations };
        let progress = Progress { done: 3, ..Progress::default() };
        let with = ui_event_with(&e, |_| Some(progress.clone())).unwrap();
        assert_eq!(with.data["games"][0]["progress"]["done"], json!(3));
        assert_eq!(with.data["games"][0]["state"], json!("downloading"));
        assert_eq!(ui_event(&e).unwrap().data["games"][0]["progress"], json!(null));
    }

    #[test]
    fn status_and_peers_have_the_documented_shapes() {
        let peer = PeerInfo { id: PeerId([2; 32]), addr: "10.0.0.2:5000".parse().unwrap(), games: 4, last_seen: Timestamp::ZERO };
        let snapshot = Snapshot {
            games: vec![view(Availability::Downloadable)],
            operations: BTreeMap::from([(gid("arena"), OperationKind::Downloading)]),
            peers: vec![peer],
            ..Snapshot::default()
        };
        let me = PeerId([1; 32]);
        let status = status_json(me, "0.0.0.0:5000".parse().unwrap(), &snapshot, Some("/srv/games"));
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            json!({"peer_id": me.to_hex(), "addr": "0.0.0.0:5000", "game_dir": "/srv/games", "peers": 1, "games": 1,
                   "operations": [{"id": "arena", "operation": "downloading"}], "lanspread_version": env!("CARGO_PKG_VERSION")})
        );
        assert_eq!(
            serde_json::to_value(peers_json(&snapshot)).unwrap(),
            json!([{"id": PeerId([2; 32]).to_hex(), "addr": "10.0.0.2:5000", "games": 4}])
        );
    }

    #[test]
    fn only_progress_events_are_progress() {
        let names: Vec<&str> = every_variant().iter().filter_map(|(e, _)| ui_event(e)).map(|e| e.name).filter(|n| is_progress(n)).collect();
        assert_eq!(names, vec![names::DOWNLOAD_PROGRESS, names::INSTALL_PROGRESS]);
    }
}
