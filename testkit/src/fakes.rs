//! Fakes for hostile and degraded peers.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use lanspread_memfs::MemFs;
use lanspread_ports::fs::{DirEntry, FileHandle, Fs, FsResult, Metadata, Watcher};
use lanspread_ports::RelPath;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A filesystem that, once `lie` is switched on, returns corrupted bytes
/// from files whose name ends with `suffix` — a peer serving wrong data
/// under a correct manifest. With a version claim, whole-file reads of
/// `version.ini` (what the scan parses the version from) return the claim
/// while the bytes served stay the real ones — a peer advertising a version
/// its data does not have.
#[derive(Clone)]
pub struct LyingFs {
    inner: MemFs,
    suffix: String,
    /// Switch.
    pub lie: Arc<AtomicBool>,
    version_claim: Option<Bytes>,
}

impl LyingFs {
    /// Wraps `inner`.
    pub fn new(inner: MemFs, suffix: &str) -> Self {
        LyingFs { inner, suffix: suffix.to_owned(), lie: Arc::new(AtomicBool::new(false)), version_claim: None }
    }

    /// Makes `version.ini` read as `claim` when read whole.
    pub fn claiming_version(mut self, claim: &str) -> Self {
        self.version_claim = Some(Bytes::copy_from_slice(claim.as_bytes()));
        self
    }
}

struct LyingFile {
    inner: Box<dyn FileHandle>,
    lie: Arc<AtomicBool>,
}

#[async_trait]
impl FileHandle for LyingFile {
    async fn read_at(&self, offset: u64, len: usize) -> FsResult<Bytes> {
        let data = self.inner.read_at(offset, len).await?;
        if !self.lie.load(Ordering::SeqCst) || data.is_empty() {
            return Ok(data);
        }
        let mut bad = BytesMut::from(&data[..]);
        let i = bad.len() / 2;
        bad[i] ^= 0xff;
        Ok(bad.freeze())
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> FsResult<()> {
        self.inner.write_at(offset, data).await
    }
    async fn set_len(&self, len: u64) -> FsResult<()> {
        self.inner.set_len(len).await
    }
    async fn len(&self) -> FsResult<u64> {
        self.inner.len().await
    }
    async fn sync(&self) -> FsResult<()> {
        self.inner.sync().await
    }
}

#[async_trait]
impl Fs for LyingFs {
    async fn read_file(&self, path: &RelPath, max_len: u64) -> FsResult<Vec<u8>> {
        match &self.version_claim {
            Some(claim) if path.as_str().ends_with("version.ini") => Ok(claim.to_vec()),
            _ => self.inner.read_file(path, max_len).await,
        }
    }
    async fn read_dir(&self, dir: &RelPath) -> FsResult<Vec<DirEntry>> {
        self.inner.read_dir(dir).await
    }
    async fn metadata(&self, path: &RelPath) -> FsResult<Metadata> {
        self.inner.metadata(path).await
    }
    async fn open_read(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        let inner = self.inner.open_read(path).await?;
        if path.as_str().ends_with(&self.suffix) {
            Ok(Box::new(LyingFile { inner, lie: self.lie.clone() }))
        } else {
            Ok(inner)
        }
    }
    async fn open_write(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        self.inner.open_write(path).await
    }
    async fn create_dir(&self, path: &RelPath) -> FsResult<()> {
        self.inner.create_dir(path).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> FsResult<()> {
        self.inner.rename(from, to).await
    }
    async fn remove_file(&self, path: &RelPath) -> FsResult<()> {
        self.inner.remove_file(path).await
    }
    async fn remove_dir(&self, path: &RelPath) -> FsResult<()> {
        self.inner.remove_dir(path).await
    }
    async fn sync_dir(&self, dir: &RelPath) -> FsResult<()> {
        self.inner.sync_dir(dir).await
    }
    async fn watch(&self, dir: &RelPath) -> FsResult<Box<dyn Watcher>> {
        self.inner.watch(dir).await
    }
    async fn free_space(&self) -> FsResult<Option<u64>> {
        self.inner.free_space().await
    }
}

/// Discovery that finds nobody (peers known only through static addresses).
pub use lanspread::NoDiscovery;
