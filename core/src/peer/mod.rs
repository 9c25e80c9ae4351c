//! The peer: everything one peer knows across peers and operations, owned
//! by one sans-IO machine ([`PeerMachine`]), with the events it reports
//! and the typed errors of its operations.

pub mod addr;
pub mod error;
pub mod events;
pub mod hint;
mod machine;
#[cfg(test)]
mod tests;

pub use error::{
    DownloadError, ErrorCode, Failure, HasCode, InstallError, RemoveError, ResolveError, SetGameDirError, UninstallError, UpdateError,
};
pub use events::{OperationKind, PeerEvent, PeerShare, TransferStats};
pub use hint::LibraryHint;
pub use machine::{
    DialOutcome, DownloadOptions, DownloadReport, InstallReport, MachineConfig, OpToken, Outcome, Output, PeerInfo, PeerMachine, Query,
    Resolved, Snapshot, UninstallReport, Work,
};
