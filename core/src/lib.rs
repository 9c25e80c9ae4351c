//! The pure domain of lanspread.
//!
//! Nothing here performs IO or reads the clock on its own: files are reached
//! through [`lanspread_ports::Fs`], archives through
//! [`lanspread_ports::Unpacker`], and every state machine takes `now` as an
//! argument. The scheduler ([`sched`]) and the transaction machines
//! ([`txn`]) are sans-IO in the style of quinn-proto: inputs come in through
//! `handle_*` methods, outputs are drained with `poll_*`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod catalog;
pub mod db;
pub mod game;
pub mod layout;
pub mod names;
pub mod peer;
pub mod protocol;
pub mod scan;
pub mod sched;
pub mod serve;
pub mod txn;
pub mod units;
pub mod wire;

pub use catalog::{Catalog, CatalogEntry, CatalogError};
pub use game::{FileEntry, GameId, GameIdError, GameSummary, Manifest, Version, CHUNK_SIZE};
