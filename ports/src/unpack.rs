//! The unpacker port: extract one archive into a directory.

use crate::fs::Fs;
use crate::path::RelPath;
use async_trait::async_trait;
use std::sync::Arc;

/// Progress of one unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpackProgress {
    /// Archive bytes consumed so far (or entries done, for formats that do not tell).
    pub done: u64,
    /// Total, if known.
    pub total: Option<u64>,
}

/// Unpack failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    /// No unpacker handles this archive type.
    #[error("unsupported archive: {0}")]
    Unsupported(String),
    /// An entry would land outside the target (zip-slip, absolute path,
    /// symlink pointing out, ...). Nothing is extracted.
    #[error("archive entry escapes the target: {0}")]
    Escape(String),
    /// The archive is malformed.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    /// A required external tool is missing.
    #[error("missing tool: {0}")]
    MissingTool(String),
    /// Filesystem failure while reading or writing.
    #[error("unpack I/O: {0}")]
    Io(String),
}

/// One regular file an unpack wrote, as it wrote it: the unpacker hashes
/// the bytes while writing them, so nobody has to read the tree back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedFile {
    /// Path relative to the target directory.
    pub path: RelPath,
    /// Length in bytes.
    pub size: u64,
    /// BLAKE3 hash of the whole content.
    pub hash: [u8; 32],
}

/// Callback receiving progress.
pub type ProgressFn<'a> = &'a (dyn Fn(UnpackProgress) + Send + Sync);

/// Extracts archives.
///
/// Contract: reads `archive` and writes beneath `target` through `fs` only.
/// `target` exists and is empty. Entries escaping `target` are refused with
/// [`UnpackError::Escape`]; on any error the caller discards `target`
/// (which it owns), so partial output is never mistaken for an install.
/// On success it returns every regular file it wrote, once each (a file an
/// archive lists twice appears with its final content), in any order.
#[async_trait]
pub trait Unpacker: Send + Sync + 'static {
    /// Whether this unpacker handles the file (by name).
    fn handles(&self, file_name: &str) -> bool;
    /// Extracts `archive` into `target`; returns the files written.
    async fn unpack(
        &self,
        fs: Arc<dyn Fs>,
        archive: &RelPath,
        target: &RelPath,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<UnpackedFile>, UnpackError>;
}
