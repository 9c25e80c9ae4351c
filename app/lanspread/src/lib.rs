//! lanspread as a library: a peer that shares a game library across a LAN.
//!
//! A [`Builder`] assembles a peer from real adapters (or custom ports) and
//! spawns it; the [`Peer`] handle resolves, downloads, installs, updates,
//! uninstalls and removes games, each long operation as an [`Operation`]
//! with a progress stream and a typed result. The state is a watch of
//! [`Snapshot`]s; [`Events`] fan out to any number of subscribers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lanspread::{Builder, DownloadOptions, GameId};
//! let peer = Builder::new()
//!     .game_dir("/games")
//!     .identity_dir("/home/me/.config/lanspread/identity")
//!     .spawn()
//!     .await?;
//! let game = GameId::new("openarena")?;
//! let download = peer.download(&game, DownloadOptions::default()).await?;
//! let report = download.await?;
//! println!("{} bytes in {:.1} s", report.stats.bytes, report.stats.secs);
//! peer.install(&game, false).await?.await?;
//! peer.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Failures are typed per operation ([`DownloadError`], [`InstallError`],
//! ...); each carries a stable [`ErrorCode`] through [`HasCode`], which is
//! what events and bridges carry, so a UI decides by code, never by text:
//!
//! ```
//! use lanspread::{DownloadError, ErrorCode, GameId, HasCode, ResolveError};
//! let id = GameId::new("openarena")?;
//! let err = DownloadError::from(ResolveError::NoHolder(id));
//! assert_eq!(err.code(), ErrorCode::NoHolder);
//! assert_eq!(err.code().as_str(), "no_holder");
//! let failure = err.failure();
//! assert_eq!((failure.code, failure.message.as_str()), (ErrorCode::NoHolder, "no peer on the LAN has openarena"));
//! assert_eq!(DownloadError::Cancelled.code().to_string(), "cancelled");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A UI (the HTTP API of `lanspread-web`, a desktop shell) shows the state
//! and events through [`bridge`], which names them once for every UI.
//!
//! Apps written against the reference system's interface send
//! [`PeerCommand`]s with [`Peer::send`] and read [`PeerEvent`]s.
//!
//! Which adapters can be chosen depends on the Cargo features: `quinn`,
//! `mdns` and `capfs` by default, `s2n` on request. Only [`builder`] names
//! adapter crates; the runtime talks to the world through port traits, and
//! the peer's state is owned by one sans-IO [`lanspread_core::peer::PeerMachine`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
pub mod builder;
mod command;
mod peer;
mod progress;
mod runtime;

pub use builder::{identity_dir_for, Assembled, BuildError, Builder, DirLock, DiscoveryKind, TransportKind};
pub use command::PeerCommand;
pub use peer::{Events, EventsError, Operation, Peer, UpdateReport};
pub use progress::Progress;
pub use runtime::{Network, NoDiscovery, PeerConfig, Ports, Rebind, RebindFailed};

pub use lanspread_core::catalog::{Catalog, CatalogEntry};
pub use lanspread_core::db::{Availability, GameView};
pub use lanspread_core::game::{GameId, Version};
pub use lanspread_core::peer::{
    DownloadError, DownloadOptions, DownloadReport, ErrorCode, Failure, HasCode, InstallError, InstallReport, OperationKind, PeerEvent,
    PeerInfo, PeerShare, RemoveError, ResolveError, Resolved, SetGameDirError, Snapshot, TransferStats, UninstallError, UninstallReport,
    UpdateError,
};
pub use lanspread_ports::{PeerId, RelPath};
