//! What the peer reports: events, operation kinds, transfer figures.

use super::error::Failure;
use crate::db::GameView;
use crate::game::{GameId, Version};
use lanspread_ports::{PeerId, RelPath, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Kind of an active operation on a game.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OperationKind {
    /// Fetching the manifest.
    Resolving,
    /// Downloading files.
    Downloading,
    /// Installing (first install).
    Installing,
    /// Updating an installed game.
    Updating,
    /// Uninstalling.
    Uninstalling,
    /// Removing downloaded files.
    Removing,
}

/// One peer's contribution to a transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerShare {
    /// The peer.
    pub peer: PeerId,
    /// Verified bytes it delivered.
    pub bytes: u64,
    /// Its current rate, bytes per second.
    pub rate: f64,
}

/// Totals of a finished download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferStats {
    /// Bytes fetched from peers (the game's size minus `reused`).
    pub bytes: u64,
    /// Bytes already in place and verified (an interrupted attempt, or
    /// chunks the old version shares with the new), not fetched.
    #[serde(default)]
    pub reused: u64,
    /// Duration in seconds.
    pub secs: f64,
    /// Per-peer shares.
    pub peers: Vec<PeerShare>,
}

/// What the runtime reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// The unified view plus the active operations: the state a UI shows.
    LibrarySnapshot {
        /// One row per title.
        games: Vec<GameView>,
        /// Operations running now.
        operations: BTreeMap<GameId, OperationKind>,
    },
    /// Local games changed on disk (separate from operation snapshots).
    LocalLibraryChanged(Vec<GameId>),
    /// The manifest of the latest version was fetched.
    GotGameFiles {
        /// Game.
        id: GameId,
        /// Version.
        version: Version,
        /// Files in the manifest.
        files: usize,
        /// Total bytes.
        bytes: u64,
        /// Peers that will serve it.
        peers: Vec<PeerId>,
    },
    /// A download started.
    DownloadBegin {
        /// Game.
        id: GameId,
        /// Version.
        version: Version,
        /// Bytes to fetch.
        total: u64,
        /// Sources.
        peers: Vec<PeerId>,
    },
    /// Download progress.
    DownloadProgress {
        /// Game.
        id: GameId,
        /// Verified bytes.
        done: u64,
        /// Total bytes.
        total: u64,
        /// Current aggregate rate, bytes per second.
        rate: f64,
        /// Per-peer figures.
        peers: Vec<PeerShare>,
    },
    /// A download committed.
    DownloadFinished {
        /// Game.
        id: GameId,
        /// Version.
        version: Version,
        /// Totals.
        stats: TransferStats,
    },
    /// No usable holder is left (every one left or was banned): the
    /// download waits for a new one until `deadline`, then fails.
    DownloadWaiting {
        /// Game.
        id: GameId,
        /// Why no holder is usable.
        reason: String,
        /// When the download fails if no holder came.
        deadline: Timestamp,
    },
    /// A download failed or was cancelled.
    DownloadFailed {
        /// Game.
        id: GameId,
        /// Stable code and message.
        error: Failure,
    },
    /// A peer sent corrupt data too often.
    PeerBanned {
        /// Peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Install/update started.
    InstallBegin {
        /// Game.
        id: GameId,
        /// Update of an installed game.
        update: bool,
    },
    /// Install progress (archive bytes).
    InstallProgress {
        /// Game.
        id: GameId,
        /// Done.
        done: u64,
        /// Total if known.
        total: Option<u64>,
    },
    /// Install finished.
    InstallFinished {
        /// Game.
        id: GameId,
    },
    /// Install failed (a previous install is restored).
    InstallFailed {
        /// Game.
        id: GameId,
        /// Stable code and message.
        error: Failure,
    },
    /// An install, update or uninstall moved the user's files it could not
    /// leave in `local/` to `kept` (relative to the game directory); sent
    /// just before the operation's finishing event.
    UserFilesKept {
        /// Game.
        id: GameId,
        /// `.lanspread-kept/<id>-<time>`.
        kept: RelPath,
    },
    /// Uninstall started.
    UninstallBegin(GameId),
    /// Uninstall finished.
    UninstallFinished(GameId),
    /// Uninstall failed.
    UninstallFailed {
        /// Game.
        id: GameId,
        /// Stable code and message.
        error: Failure,
    },
    /// Removal of downloaded files started.
    RemoveBegin(GameId),
    /// Removal finished.
    RemoveFinished(GameId),
    /// Removal failed or refused.
    RemoveFailed {
        /// Game.
        id: GameId,
        /// Stable code and message.
        error: Failure,
    },
    /// Something in the runtime failed (not tied to one command).
    RuntimeFailure(Failure),
    /// A peer appeared.
    PeerJoined {
        /// Peer.
        peer: PeerId,
        /// Address.
        addr: SocketAddr,
    },
    /// A peer left or was pruned.
    PeerLeft(PeerId),
    /// Number of known peers.
    PeerCount(usize),
    /// The runtime stopped.
    Stopped,
}

impl PeerEvent {
    /// The game an event is about, if any.
    pub fn game(&self) -> Option<&GameId> {
        use PeerEvent::*;
        match self {
            GotGameFiles { id, .. }
            | DownloadBegin { id, .. }
            | DownloadProgress { id, .. }
            | DownloadFinished { id, .. }
            | DownloadFailed { id, .. }
            | DownloadWaiting { id, .. }
            | InstallBegin { id, .. }
            | InstallProgress { id, .. }
            | InstallFinished { id }
            | InstallFailed { id, .. }
            | UserFilesKept { id, .. }
            | UninstallFailed { id, .. }
            | RemoveFailed { id, .. } => Some(id),
            UninstallBegin(id) | UninstallFinished(id) | RemoveBegin(id) | RemoveFinished(id) => Some(id),
            _ => None,
        }
    }
}
