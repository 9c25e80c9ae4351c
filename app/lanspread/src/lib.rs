//! lanspread as a library: the peer runtime (generic over the ports) and a
//! [`Builder`] that assembles a peer from real adapters.
//!
//! ```no_run
//! # async fn run() -> Result<(), lanspread::BuildError> {
//! let assembled = lanspread::Builder::new()
//!     .game_dir("/games")
//!     .identity_dir("/home/me/.config/lanspread/identities/games")
//!     .assemble()
//!     .await?;
//! let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
//! let handle = lanspread::start_peer(assembled.config, assembled.ports, tx);
//! // Keep `assembled.lock` alive while the peer runs.
//! # handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Which adapters can be chosen depends on the Cargo features: `quinn`,
//! `mdns` and `capfs` by default, `s2n` on request. Only [`builder`] names
//! adapter crates; [`runtime`] talks to the world through port traits.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
pub mod runtime;

pub use builder::{Assembled, BuildError, Builder, DirLock, DiscoveryKind, TransportKind};
pub use runtime::{start_peer, NoDiscovery, OperationKind, PeerCommand, PeerConfig, PeerEvent, PeerRuntimeHandle, Ports};
