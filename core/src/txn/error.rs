//! Transaction errors, phrased for the user.

use lanspread_ports::fs::FsError;
use lanspread_ports::path::RelPath;
use lanspread_ports::unpack::UnpackError;

/// Why a transaction failed or was refused. Every message names the game
/// root and says what was (not) done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// A filesystem operation failed.
    #[error("game root {root}: {step} failed: {source}")]
    Fs {
        /// The game root.
        root: RelPath,
        /// The operation that failed (e.g. `rename games/x/.local.installing -> games/x/local`).
        step: String,
        /// The port error.
        #[source]
        source: FsError,
    },
    /// Unpacking an archive failed (the staged install was discarded).
    #[error("game root {root}: unpacking {archive} failed: {source}")]
    Unpack {
        /// The game root.
        root: RelPath,
        /// The archive.
        archive: String,
        /// The unpacker error.
        #[source]
        source: UnpackError,
    },
    /// Something we would have to touch is a symlink.
    #[error("game root {root}: {what} is a symlink, refusing to touch it")]
    Symlink {
        /// The game root.
        root: RelPath,
        /// The path, relative to the root.
        what: String,
    },
    /// The root's layout is not what the operation needs and it cannot prove
    /// it may change it.
    #[error("game root {root}: {detail}")]
    Unexpected {
        /// The game root.
        root: RelPath,
        /// What is wrong and what was left alone.
        detail: String,
    },
    /// The game root does not exist (or is not a directory).
    #[error("game root {root}: does not exist")]
    NoRoot {
        /// The game root.
        root: RelPath,
    },
    /// An intent log is present: an operation is running or recovery is due.
    #[error("game root {root}: an unfinished {op} is recorded in .lanspread.json; run recovery first")]
    Pending {
        /// The game root.
        root: RelPath,
        /// The recorded operation (or "unreadable intent log").
        op: String,
    },
    /// The game is not downloaded (no regular root-level `version.ini`).
    #[error("game root {root}: the game is not downloaded ({detail})")]
    NotDownloaded {
        /// The game root.
        root: RelPath,
        /// Why.
        detail: String,
    },
    /// The game is not installed (`local/` is not a directory).
    #[error("game root {root}: the game is not installed")]
    NotInstalled {
        /// The game root.
        root: RelPath,
    },
    /// An update or uninstall of a `local/` without the `.lanspread_owned`
    /// marker: lanspread did not install it and may not delete it.
    #[error(
        "game root {root}: local/ was not installed by lanspread; nothing was changed. \
         To let lanspread take it over and keep your files, run again with --adopt"
    )]
    NotOwned {
        /// The game root.
        root: RelPath,
    },
    /// Removing downloaded files of an installed game is refused.
    #[error("game root {root}: the game is installed; uninstall it before removing its downloaded files")]
    Installed {
        /// The game root.
        root: RelPath,
    },
    /// No root-level archive the unpacker handles.
    #[error("game root {root}: nothing to install: no archive the unpacker handles")]
    NothingToInstall {
        /// The game root.
        root: RelPath,
    },
    /// The id is not in the catalog.
    #[error("game {id}: not in the catalog, refusing to touch its directory")]
    NotInCatalog {
        /// The id.
        id: String,
    },
    /// `commit_download` / `abort_download` without a download in progress.
    #[error("game root {root}: no download in progress (begin_download was not run or did not finish)")]
    NoDownload {
        /// The game root.
        root: RelPath,
    },
    /// A downloaded file does not have the size the manifest gives.
    #[error("game root {root}: {path} is {found}, the manifest expects {expected} bytes; not committing the download")]
    Incomplete {
        /// The game root.
        root: RelPath,
        /// The file, relative to the root.
        path: String,
        /// Size in the manifest.
        expected: u64,
        /// What was found ("N bytes", "missing", "a directory"...).
        found: String,
    },
    /// The device is known to be too small for the download; nothing was changed.
    #[error("game root {root}: not enough free space: the download needs {needed} more bytes, {free} are free; nothing was changed")]
    NoSpace {
        /// The game root.
        root: RelPath,
        /// Bytes the download still needs.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// The manifest is unusable.
    #[error("game root {root}: bad manifest: {detail}")]
    BadManifest {
        /// The game root.
        root: RelPath,
        /// Why.
        detail: String,
    },
    /// The transaction failed and putting the root back in order failed too;
    /// the intent log stays, so recovery retries at the next start.
    #[error("{error}; cleaning up also failed: {cleanup} (recovery will retry at the next start)")]
    CleanupFailed {
        /// The original failure.
        error: Box<TxnError>,
        /// The failure of the cleanup.
        cleanup: Box<TxnError>,
    },
}
