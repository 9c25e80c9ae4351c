//! Port traits of lanspread and the plain data types they exchange.
//!
//! Every trait here is `async_trait`, object safe and meant to be used as
//! `Arc<dyn Trait>`. The domain crate (`lanspread-core`) and the runtime
//! (in the library `lanspread`) only ever talk to the outside world through
//! these traits; adapters under `adapters/` implement them.
//!
//! This crate depends on no runtime and no IO crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod discovery;
pub mod fs;
pub mod path;
pub mod transport;
pub mod types;
pub mod unpack;

pub use clock::{Clock, Timestamp};
pub use discovery::{Discovery, DiscoveryError, DiscoveryEvent, PeerAdvert};
pub use fs::{
    DirEntry, FileHandle, FileKind, Fs, FsError, FsErrorKind, FsProvider, FsResult, Metadata, OpenedDir, ReadPiece, WatchEvent, Watcher,
    WritePiece,
};
pub use path::{PathError, RelPath};
pub use transport::{BiStream, Connection, RecvStream, SendStream, Transport, TransportError};
pub use types::PeerId;
pub use unpack::{ProgressFn, UnpackError, UnpackProgress, Unpacker};
