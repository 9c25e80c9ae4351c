//! The vocabulary between a transaction machine and its driver: the
//! filesystem operations a machine asks for ([`FsOp`]), their results
//! ([`OpResult`]), and the [`Machine`] interface.

use crate::txn::error::TxnError;
use lanspread_ports::fs::{DirEntry, FsError, Metadata};
use lanspread_ports::path::RelPath;
use lanspread_ports::unpack::{UnpackError, UnpackedFile};
use std::fmt;

/// One filesystem operation requested by a machine. Each maps to one or a
/// few calls of the [`lanspread_ports::Fs`] port (see [`crate::txn::driver`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    /// Metadata without following symlinks. Answer: [`OpValue::Metadata`].
    Metadata(RelPath),
    /// [`FsOp::Metadata`] of many paths in one request (an adapter may
    /// answer them in one go). Answer: [`OpValue::MetadataMany`], one
    /// result per path, in order.
    MetadataMany(Vec<RelPath>),
    /// Lists a directory. Answer: [`OpValue::Entries`].
    ReadDir(RelPath),
    /// Reads a whole regular file of at most `max_len` bytes. Answer: [`OpValue::Data`].
    ReadFile {
        /// The file.
        path: RelPath,
        /// Refuse longer files.
        max_len: u64,
    },
    /// Free bytes on the device, if known. Answer: [`OpValue::FreeSpace`].
    FreeSpace,
    /// BLAKE3 hash of a whole regular file, read in pieces (never held in
    /// memory at once). Answer: [`OpValue::Hash`].
    HashFile(RelPath),
    /// Creates one directory (the parent exists).
    CreateDir(RelPath),
    /// Creates a directory and its missing ancestors.
    CreateDirAll(RelPath),
    /// Opens a file for writing (creating it, never truncating on open) and
    /// sets its length to `len`.
    Preallocate {
        /// The file.
        path: RelPath,
        /// Its length afterwards.
        len: u64,
    },
    /// Creates or replaces a small file: open for writing, truncate, write
    /// `data`. Not synced.
    WriteFile {
        /// The file.
        path: RelPath,
        /// Its whole content.
        data: Vec<u8>,
    },
    /// Makes a file's data durable (opened for writing, never truncated).
    SyncFile(RelPath),
    /// [`FsOp::SyncFile`] of each file, in order, in one request (an
    /// adapter may perform them in one go). Stops at the first failure.
    SyncFiles(Vec<RelPath>),
    /// Makes a directory's entries durable.
    SyncDir(RelPath),
    /// [`FsOp::SyncDir`] of each directory, in order, in one request.
    /// Stops at the first failure.
    SyncDirs(Vec<RelPath>),
    /// Makes everything beneath a directory durable ([`lanspread_ports::Fs::sync_tree`]):
    /// one call instead of one sync per file, and it reports write-back
    /// errors of files that are no longer open.
    SyncTree(RelPath),
    /// Atomic rename.
    Rename {
        /// Old name.
        from: RelPath,
        /// New name.
        to: RelPath,
    },
    /// Removes a file or a symlink.
    RemoveFile(RelPath),
    /// Removes an empty directory.
    RemoveDir(RelPath),
    /// Removes a directory tree, never following symlinks (fails on a
    /// symlink at `path` itself).
    RemoveDirAll(RelPath),
    /// Unpacks `archive` into `target` through the unpacker port. Answer:
    /// [`OpValue::Unpacked`].
    Unpack {
        /// The archive.
        archive: RelPath,
        /// The target directory.
        target: RelPath,
    },
}

impl FsOp {
    /// Whether the operation changes the filesystem.
    pub fn is_mutating(&self) -> bool {
        !matches!(
            self,
            FsOp::Metadata(_) | FsOp::MetadataMany(_) | FsOp::ReadDir(_) | FsOp::ReadFile { .. } | FsOp::FreeSpace | FsOp::HashFile(_)
        )
    }
}

impl fmt::Display for FsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsOp::Metadata(p) => write!(f, "metadata {p}"),
            FsOp::MetadataMany(ps) => write!(f, "metadata of {} paths", ps.len()),
            FsOp::ReadDir(p) => write!(f, "read_dir {p}"),
            FsOp::ReadFile { path, .. } => write!(f, "read {path}"),
            FsOp::FreeSpace => f.write_str("free_space"),
            FsOp::HashFile(p) => write!(f, "hash {p}"),
            FsOp::CreateDir(p) => write!(f, "create_dir {p}"),
            FsOp::CreateDirAll(p) => write!(f, "create_dir_all {p}"),
            FsOp::Preallocate { path, len } => write!(f, "preallocate {path} ({len} bytes)"),
            FsOp::WriteFile { path, data } => write!(f, "write {path} ({} bytes)", data.len()),
            FsOp::SyncFile(p) => write!(f, "sync {p}"),
            FsOp::SyncFiles(ps) => write!(f, "sync {}", join(ps)),
            FsOp::SyncDir(p) => write!(f, "sync_dir {p}"),
            FsOp::SyncDirs(ps) => write!(f, "sync_dir {}", join(ps)),
            FsOp::SyncTree(p) => write!(f, "sync_tree {p}"),
            FsOp::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            FsOp::RemoveFile(p) => write!(f, "remove_file {p}"),
            FsOp::RemoveDir(p) => write!(f, "remove_dir {p}"),
            FsOp::RemoveDirAll(p) => write!(f, "remove_dir_all {p}"),
            FsOp::Unpack { archive, target } => write!(f, "unpack {archive} into {target}"),
        }
    }
}

/// `a, b, c` for a batch.
fn join(paths: &[RelPath]) -> String {
    paths.iter().map(RelPath::as_str).collect::<Vec<_>>().join(", ")
}

/// The value of a successful [`FsOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpValue {
    /// For operations without a value.
    Unit,
    /// Answer to [`FsOp::Metadata`].
    Metadata(Metadata),
    /// Answer to [`FsOp::MetadataMany`].
    MetadataMany(Vec<Result<Metadata, FsError>>),
    /// Answer to [`FsOp::ReadDir`].
    Entries(Vec<DirEntry>),
    /// Answer to [`FsOp::ReadFile`].
    Data(Vec<u8>),
    /// Answer to [`FsOp::FreeSpace`].
    FreeSpace(Option<u64>),
    /// Answer to [`FsOp::HashFile`].
    Hash([u8; 32]),
    /// Answer to [`FsOp::Unpack`]: the files the archive produced, relative
    /// to the target.
    Unpacked(Vec<UnpackedFile>),
}

/// Why an [`FsOp`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The filesystem port failed.
    Fs(FsError),
    /// The unpacker port failed.
    Unpack(UnpackError),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Fs(e) => e.fmt(f),
            OpError::Unpack(e) => e.fmt(f),
        }
    }
}

impl From<FsError> for OpError {
    fn from(e: FsError) -> Self {
        OpError::Fs(e)
    }
}

/// Result of one [`FsOp`], fed back with [`Machine::handle_result`].
pub type OpResult = Result<OpValue, OpError>;

/// A sans-IO transaction machine.
///
/// The caller contract, in the style of quinn-proto:
/// 1. call [`Machine::poll_op`]; if it returns an operation, perform it
///    and feed its result to [`Machine::handle_result`]; repeat;
/// 2. once `poll_op` returns `None`, [`Machine::take_outcome`] returns the
///    result of the whole transaction.
///
/// A machine has at most one operation in flight; it never performs IO,
/// never reads a clock and never blocks, so it can be driven by hand in a
/// test (see [`crate::txn::driver`] for the async driver).
pub trait Machine {
    /// What the transaction yields on success.
    type Output;
    /// The next operation to perform, or `None` if the machine is finished
    /// (or, if the caller broke the contract, still waiting for a result).
    fn poll_op(&mut self) -> Option<FsOp>;
    /// The result of the operation last returned by [`Machine::poll_op`].
    fn handle_result(&mut self, result: OpResult);
    /// The outcome, once finished (`None` before; taken once).
    fn take_outcome(&mut self) -> Option<Result<Self::Output, TxnError>>;
}
