//! Unpacker adapters: [`ZipUnpacker`], [`TarUnpacker`] (plain, gzip, zstd),
//! [`RarUnpacker`] (through an external `unrar` or `unar`) and
//! [`MultiUnpacker`], which dispatches by file name.
//!
//! Every unpacker reads the archive and writes the output through the
//! [`Fs`](lanspread_ports::Fs) port it is given, never through ambient paths
//! (the RAR unpacker alone stages data in a private temporary directory,
//! because the external tool needs real files). The archive crates are
//! synchronous: they run on `spawn_blocking` threads and reach the port with
//! `Handle::block_on`.
//!
//! Safety rules, common to all formats:
//! - every entry name must pass [`RelPath::new`] (strict, portable) after
//!   dropping leading `./` prefixes; `..`, absolute names, drive letters,
//!   backslashes... are refused with [`UnpackError::Escape`];
//! - symbolic and hard links are refused with [`UnpackError::Escape`];
//!   device nodes, FIFOs and sparse entries with [`UnpackError::Unsupported`];
//! - the whole entry list is validated before the first byte is written;
//! - the declared uncompressed total must fit in `Fs::free_space` (when the
//!   port knows it), and no entry may produce more bytes than it declares.
//!
//! Every unpack returns the files it wrote with their size and BLAKE3 hash,
//! computed from the bytes as they are written (the install records them to
//! tell, on a later update or uninstall, the game's files from the user's).
//!
//! Writes are batched: extracted files are queued (a large file as several
//! pieces at increasing offsets) and written with one
//! [`Fs::write_pieces`](lanspread_ports::Fs::write_pieces) call per
//! [`BATCH_BYTES`] or [`BATCH_PIECES`], so a tree of thousands of small files
//! costs a few hundred port calls and memory stays bounded. Nothing is
//! synced: the caller makes the whole target durable at once (the install
//! transaction syncs its staging tree with one `Fs::sync_tree` before it
//! renames it into place). An unpack holds at most two files open: the
//! archive, and the output file being written.
#![forbid(unsafe_code)]

mod common;
mod multi;
mod rar_unpacker;
mod reader;
mod tar_unpacker;
mod zip_unpacker;

pub use multi::MultiUnpacker;
pub use rar_unpacker::RarUnpacker;
pub use tar_unpacker::{TarCompression, TarUnpacker};
pub use zip_unpacker::ZipUnpacker;

/// Size of one write through the port (and of the read-ahead buffer once
/// reading is sequential).
pub const CHUNK: usize = 1 << 20;

/// A batch of writes is handed to the port once it holds this many bytes...
pub const BATCH_BYTES: usize = 8 << 20;

/// ... or this many pieces (each small file is one piece).
pub const BATCH_PIECES: usize = 512;

/// Whether `name` ends with `suffix`, ignoring ASCII case.
pub(crate) fn ends_with_ci(name: &str, suffix: &str) -> bool {
    name.len() >= suffix.len() && name.as_bytes()[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}
