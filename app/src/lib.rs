//! lanspread: the peer runtime (generic over the ports) and the program.
#![forbid(unsafe_code)]

pub mod cli;
pub mod runtime;

pub use runtime::{start_peer, NoDiscovery, OperationKind, PeerCommand, PeerConfig, PeerEvent, PeerRuntimeHandle, Ports};
