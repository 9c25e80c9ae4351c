//! Typed errors of the peer's operations, and the stable code each one
//! carries into events (so a UI or a bridge decides by code, never by
//! message text).

use super::events::OperationKind;
use crate::game::GameId;
use crate::txn::TxnError;
use lanspread_ports::fs::FsError;
use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. New codes may be added; the
/// string of an existing one never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The game is not in this peer's catalog.
    NotInCatalog,
    /// No peer on the LAN offers the game.
    NoHolder,
    /// Another operation runs on the game.
    Busy,
    /// The game is not downloaded.
    NotDownloaded,
    /// The game is not installed.
    NotInstalled,
    /// `local/` was not installed by lanspread (retry with adopt).
    NotOwned,
    /// Not enough free disk space.
    NoSpace,
    /// No holder answered with a usable manifest.
    ResolveFailed,
    /// The transfer failed (peers lied, left, or timed out).
    TransferFailed,
    /// The downloaded `version.ini` names another version than the one
    /// the holders claimed.
    VersionMismatch,
    /// Writing to the game directory failed.
    WriteFailed,
    /// A transaction on the game root failed or was refused.
    TransactionFailed,
    /// The operation was cancelled.
    Cancelled,
    /// The peer is shutting down.
    ShuttingDown,
    /// This runtime cannot do that (e.g. no filesystem provider).
    Unsupported,
    /// Something else (details in the message).
    Internal,
}

impl ErrorCode {
    /// The code as a stable `snake_case` string (e.g. `"not_owned"`).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            NotInCatalog => "not_in_catalog",
            NoHolder => "no_holder",
            Busy => "busy",
            NotDownloaded => "not_downloaded",
            NotInstalled => "not_installed",
            NotOwned => "not_owned",
            NoSpace => "no_space",
            ResolveFailed => "resolve_failed",
            TransferFailed => "transfer_failed",
            VersionMismatch => "version_mismatch",
            WriteFailed => "write_failed",
            TransactionFailed => "transaction_failed",
            Cancelled => "cancelled",
            ShuttingDown => "shutting_down",
            Unsupported => "unsupported",
            Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event says about a failure: a stable code and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error that has a stable code.
pub trait HasCode: std::fmt::Display {
    /// Its code.
    fn code(&self) -> ErrorCode;

    /// Code and message, as events carry them.
    fn failure(&self) -> Failure {
        Failure::new(self.code(), self.to_string())
    }
}

/// The code of a transaction error.
fn txn_code(e: &TxnError) -> ErrorCode {
    match e {
        TxnError::NotOwned { .. } => ErrorCode::NotOwned,
        TxnError::NotDownloaded { .. } => ErrorCode::NotDownloaded,
        TxnError::NotInstalled { .. } => ErrorCode::NotInstalled,
        TxnError::NotInCatalog { .. } => ErrorCode::NotInCatalog,
        TxnError::NoSpace { .. } => ErrorCode::NoSpace,
        _ => ErrorCode::TransactionFailed,
    }
}

/// Why the latest manifest of a game could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The game is not in the catalog.
    #[error("{0} is not in the catalog")]
    NotInCatalog(GameId),
    /// No known peer advertises the game.
    #[error("no peer on the LAN has {0}")]
    NoHolder(GameId),
    /// Every holder failed to send a manifest matching what it advertises.
    #[error("no holder of {id} sent its manifest: {last}")]
    NoAnswer {
        /// Game.
        id: GameId,
        /// The last holder's failure.
        last: String,
    },
    /// The peer stopped before the manifest came.
    #[error("the peer is shutting down")]
    ShuttingDown,
}

impl HasCode for ResolveError {
    fn code(&self) -> ErrorCode {
        match self {
            ResolveError::NotInCatalog(_) => ErrorCode::NotInCatalog,
            ResolveError::NoHolder(_) => ErrorCode::NoHolder,
            ResolveError::NoAnswer { .. } => ErrorCode::ResolveFailed,
            ResolveError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }
}

/// Why a download failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The manifest could not be fetched.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Another operation runs on the game.
    #[error("another operation ({running:?}) is running on {id}")]
    Busy {
        /// Game.
        id: GameId,
        /// What runs.
        running: OperationKind,
    },
    /// A selected file is not in the manifest.
    #[error("{id} has no file {path}")]
    UnknownFile {
        /// Game.
        id: GameId,
        /// The selected path.
        path: String,
    },
    /// The disk is too small.
    #[error("not enough disk space: {id} needs {needed} bytes, {free} are free")]
    NoSpace {
        /// Game.
        id: GameId,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A transaction step (begin, prune, commit) failed.
    #[error(transparent)]
    Transaction(#[from] TxnError),
    /// The transfer failed: holders lied, left or timed out.
    #[error("download of {id} failed: {reason}")]
    Transfer {
        /// Game.
        id: GameId,
        /// What the scheduler reported.
        reason: String,
    },
    /// Writing verified data failed.
    #[error("writing the download to disk failed: {0}")]
    Write(FsError),
    /// The holders claimed one version, but the `version.ini` they served
    /// names another: nothing was committed.
    #[error("the holders of {id} claim version {claimed}, but its version.ini says {found:?}; not committing it")]
    VersionMismatch {
        /// Game.
        id: GameId,
        /// The version the holders advertised.
        claimed: crate::game::Version,
        /// What the downloaded `version.ini` says (shortened).
        found: String,
    },
    /// Cancelled by the user.
    #[error("cancelled")]
    Cancelled,
    /// The peer is shutting down.
    #[error("the peer is shutting down")]
    ShuttingDown,
}

impl HasCode for DownloadError {
    fn code(&self) -> ErrorCode {
        match self {
            DownloadError::Resolve(e) => e.code(),
            DownloadError::Busy { .. } => ErrorCode::Busy,
            DownloadError::UnknownFile { .. } => ErrorCode::Internal,
            DownloadError::NoSpace { .. } => ErrorCode::NoSpace,
            DownloadError::Transaction(e) => txn_code(e),
            DownloadError::Transfer { .. } => ErrorCode::TransferFailed,
            DownloadError::Write(_) => ErrorCode::WriteFailed,
            DownloadError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            DownloadError::Cancelled => ErrorCode::Cancelled,
            DownloadError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }
}

/// Why an install or update failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The game is not in the catalog.
    #[error("{0} is not in the catalog")]
    NotInCatalog(GameId),
    /// Nothing downloaded to install.
    #[error("{0} is not downloaded")]
    NotDownloaded(GameId),
    /// Another operation runs on the game.
    #[error("another operation ({running:?}) is running on {id}")]
    Busy {
        /// Game.
        id: GameId,
        /// What runs.
        running: OperationKind,
    },
    /// The transaction failed or refused (a previous install is restored).
    #[error(transparent)]
    Transaction(#[from] TxnError),
    /// The peer is shutting down (or stopped).
    #[error("the peer is shutting down")]
    ShuttingDown,
}

impl HasCode for InstallError {
    fn code(&self) -> ErrorCode {
        match self {
            InstallError::ShuttingDown => ErrorCode::ShuttingDown,
            InstallError::NotInCatalog(_) => ErrorCode::NotInCatalog,
            InstallError::NotDownloaded(_) => ErrorCode::NotDownloaded,
            InstallError::Busy { .. } => ErrorCode::Busy,
            InstallError::Transaction(e) => txn_code(e),
        }
    }
}

/// Why an uninstall failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UninstallError {
    /// The game is not in the catalog.
    #[error("{0} is not in the catalog")]
    NotInCatalog(GameId),
    /// Not installed.
    #[error("{0} is not installed")]
    NotInstalled(GameId),
    /// Another operation runs on the game.
    #[error("another operation ({running:?}) is running on {id}")]
    Busy {
        /// Game.
        id: GameId,
        /// What runs.
        running: OperationKind,
    },
    /// The transaction failed or refused.
    #[error(transparent)]
    Transaction(#[from] TxnError),
    /// The peer is shutting down (or stopped).
    #[error("the peer is shutting down")]
    ShuttingDown,
}

impl HasCode for UninstallError {
    fn code(&self) -> ErrorCode {
        match self {
            UninstallError::ShuttingDown => ErrorCode::ShuttingDown,
            UninstallError::NotInCatalog(_) => ErrorCode::NotInCatalog,
            UninstallError::NotInstalled(_) => ErrorCode::NotInstalled,
            UninstallError::Busy { .. } => ErrorCode::Busy,
            UninstallError::Transaction(e) => txn_code(e),
        }
    }
}

/// Why removing downloaded files failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// The game is not in the catalog.
    #[error("{0} is not in the catalog")]
    NotInCatalog(GameId),
    /// Another operation runs on the game.
    #[error("another operation ({running:?}) is running on {id}")]
    Busy {
        /// Game.
        id: GameId,
        /// What runs.
        running: OperationKind,
    },
    /// The transaction failed or refused (e.g. the game is installed).
    #[error(transparent)]
    Transaction(#[from] TxnError),
    /// The peer is shutting down (or stopped).
    #[error("the peer is shutting down")]
    ShuttingDown,
}

impl HasCode for RemoveError {
    fn code(&self) -> ErrorCode {
        match self {
            RemoveError::ShuttingDown => ErrorCode::ShuttingDown,
            RemoveError::NotInCatalog(_) => ErrorCode::NotInCatalog,
            RemoveError::Busy { .. } => ErrorCode::Busy,
            RemoveError::Transaction(e) => txn_code(e),
        }
    }
}

/// Why the game directory could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetGameDirError {
    /// Operations run.
    #[error("cannot change the game directory while operations run")]
    Busy,
    /// This runtime has no way to open another directory.
    #[error("this runtime cannot change its game directory")]
    Unsupported,
    /// Another process uses the directory (holds its lock).
    #[error("game directory {dir} is in use: {source}")]
    InUse {
        /// The directory asked for.
        dir: String,
        /// The lock's holder, as the provider tells it.
        #[source]
        source: FsError,
    },
    /// The directory could not be opened.
    #[error("game directory {dir}: {source}")]
    Open {
        /// The directory asked for.
        dir: String,
        /// Why.
        #[source]
        source: FsError,
    },
    /// The directory's identity could not be loaded, or the peer could not
    /// listen again as that identity (it goes on as before, in the old
    /// directory).
    #[error("game directory {dir}: cannot take its identity: {reason}")]
    Identity {
        /// The directory asked for.
        dir: String,
        /// Why.
        reason: String,
    },
    /// The peer is shutting down (or stopped).
    #[error("the peer is shutting down")]
    ShuttingDown,
}

impl HasCode for SetGameDirError {
    fn code(&self) -> ErrorCode {
        match self {
            SetGameDirError::ShuttingDown => ErrorCode::ShuttingDown,
            SetGameDirError::Busy => ErrorCode::Busy,
            SetGameDirError::Unsupported => ErrorCode::Unsupported,
            SetGameDirError::InUse { .. } => ErrorCode::Busy,
            SetGameDirError::Open { .. } | SetGameDirError::Identity { .. } => ErrorCode::Internal,
        }
    }
}

/// Why an update (fetch the latest manifest, download, update `local/`)
/// failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The download of the new version failed or was refused.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The new version is downloaded, but updating `local/` failed (the
    /// previous install is restored).
    #[error(transparent)]
    Install(#[from] InstallError),
}

impl HasCode for UpdateError {
    fn code(&self) -> ErrorCode {
        match self {
            UpdateError::Download(e) => e.code(),
            UpdateError::Install(e) => e.code(),
        }
    }
}
