//! The async driver: performs a machine's [`FsOp`]s through the
//! [`Fs`] and [`Unpacker`] ports and feeds the results back.
//!
//! This is the only part of [`crate::txn`] that awaits anything; it holds
//! no logic of its own beyond mapping one operation to port calls.

use crate::txn::error::TxnError;
use crate::txn::op::{FsOp, Machine, OpError, OpResult, OpValue};
use bytes::Bytes;
use lanspread_ports::fs::Fs;
use lanspread_ports::path::RelPath;
use lanspread_ports::unpack::{ProgressFn, UnpackError, Unpacker};
use std::sync::Arc;

/// Executes operations for machines.
pub struct Driver<'a> {
    fs: &'a dyn Fs,
    unpack: Option<(Arc<dyn Fs>, &'a dyn Unpacker, ProgressFn<'a>)>,
}

impl std::fmt::Debug for Driver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("unpacker", &self.unpack.is_some()).finish_non_exhaustive()
    }
}

impl<'a> Driver<'a> {
    /// A driver over `fs`, without an unpacker ([`FsOp::Unpack`] fails).
    pub fn new(fs: &'a dyn Fs) -> Self {
        Driver { fs, unpack: None }
    }

    /// A driver that can also unpack (the unpacker port takes the
    /// filesystem as an `Arc`).
    pub fn with_unpacker(fs: &'a Arc<dyn Fs>, unpacker: &'a dyn Unpacker, progress: ProgressFn<'a>) -> Self {
        Driver { fs: fs.as_ref(), unpack: Some((fs.clone(), unpacker, progress)) }
    }

    /// Performs one operation.
    pub async fn execute(&self, op: &FsOp) -> OpResult {
        let fs = self.fs;
        match op {
            FsOp::Metadata(p) => Ok(OpValue::Metadata(fs.metadata(p).await?)),
            FsOp::MetadataMany(ps) => Ok(OpValue::MetadataMany(fs.metadata_many(ps).await)),
            FsOp::ReadDir(p) => Ok(OpValue::Entries(fs.read_dir(p).await?)),
            FsOp::ReadFile { path, max_len } => Ok(OpValue::Data(fs.read_file(path, *max_len).await?)),
            FsOp::FreeSpace => Ok(OpValue::FreeSpace(fs.free_space().await?)),
            FsOp::HashFile(p) => Ok(OpValue::Hash(hash_file(fs, p).await?)),
            FsOp::CreateDir(p) => unit(fs.create_dir(p).await),
            FsOp::CreateDirAll(p) => unit(fs.create_dir_all(p).await),
            FsOp::Preallocate { path, len } => {
                let h = fs.open_write(path).await?;
                unit(h.set_len(*len).await)
            }
            FsOp::WriteFile { path, data } => {
                let h = fs.open_write(path).await?;
                h.set_len(0).await?;
                if !data.is_empty() {
                    h.write_at(0, Bytes::copy_from_slice(data)).await?;
                }
                Ok(OpValue::Unit)
            }
            FsOp::SyncFile(p) => unit(fs.sync_file(p).await),
            FsOp::SyncFiles(ps) => unit(fs.sync_files(ps).await),
            FsOp::SyncDir(p) => unit(fs.sync_dir(p).await),
            FsOp::SyncDirs(ps) => unit(fs.sync_dirs(ps).await),
            FsOp::SyncTree(p) => unit(fs.sync_tree(p).await),
            FsOp::Rename { from, to } => unit(fs.rename(from, to).await),
            FsOp::RemoveFile(p) => unit(fs.remove_file(p).await),
            FsOp::RemoveDir(p) => unit(fs.remove_dir(p).await),
            FsOp::RemoveDirAll(p) => unit(fs.remove_dir_all(p).await),
            FsOp::Unpack { archive, target } => match &self.unpack {
                Some((arc, unpacker, progress)) => match unpacker.unpack(arc.clone(), archive, target, *progress).await {
                    Ok(files) => Ok(OpValue::Unpacked(files)),
                    Err(e) => Err(OpError::Unpack(e)),
                },
                None => Err(OpError::Unpack(UnpackError::Unsupported(format!("{}: no unpacker configured", file_name(archive))))),
            },
        }
    }

    /// Runs a machine to completion.
    pub async fn run<M: Machine + Send>(&self, machine: &mut M) -> Result<M::Output, TxnError> {
        while let Some(op) = machine.poll_op() {
            let result = self.execute(&op).await;
            machine.handle_result(result);
        }
        machine.take_outcome().unwrap_or_else(|| {
            Err(TxnError::Unexpected { root: RelPath::root(), detail: "internal error: the transaction stopped without an outcome".into() })
        })
    }
}

/// Hashes a file piece by piece, so a file of any size costs one buffer.
async fn hash_file(fs: &dyn Fs, path: &RelPath) -> lanspread_ports::fs::FsResult<[u8; 32]> {
    const PIECE: usize = 1 << 20;
    let h = fs.open_read(path).await?;
    let len = h.len().await?;
    let mut hasher = blake3::Hasher::new();
    let mut off = 0u64;
    while off < len {
        let data = h.read_at(off, PIECE).await?;
        if data.is_empty() {
            break;
        }
        hasher.update(&data);
        off += data.len() as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

fn unit(r: lanspread_ports::fs::FsResult<()>) -> OpResult {
    r.map(|()| OpValue::Unit).map_err(OpError::Fs)
}

fn file_name(p: &RelPath) -> &str {
    p.file_name()
}
