//! The open-file budget of one peer.
//!
//! Stock machines allow 1024 open descriptors (Linux) or 256 (macOS), and a
//! real game has thousands of files, so neither end may hold a descriptor
//! per file. Every file the runtime opens for a transfer is opened under a
//! permit of this budget: the server's sends share one pool across all
//! connections (this is also the global cap on concurrent file sends that
//! keeps a flood of requests from exhausting descriptors), downloads share
//! another. Both pools together stay well below 256, leaving room for
//! sockets, watches, the identity lock and the scan.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors the server may hold open for sends, across all connections.
pub(crate) const SERVE_FILES: usize = 48;
/// Descriptors downloads may hold open for writing, across all downloads.
pub(crate) const DOWNLOAD_FILES: usize = 64;
/// Descriptors one chunk write of a large file may use: the real filesystem
/// opens a second, `O_DIRECT` descriptor of the same inode for aligned
/// chunk writes. Files are opened per write and closed after it (an open
/// costs microseconds next to a 1 MiB write), so nothing is held between
/// writes and no cache of handles can pin the pool.
pub(crate) const WRITER_DESCRIPTORS: u32 = 2;

// Both pools fit a stock limit of 256 with room to spare: half of it stays
// free for sockets, watches, the lock and the scan.
const _: () = assert!(SERVE_FILES + DOWNLOAD_FILES <= 128);
const _: () = assert!(WRITER_DESCRIPTORS as usize <= DOWNLOAD_FILES);

/// The two pools (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct FileBudget {
    serve: Arc<Semaphore>,
    download: Arc<Semaphore>,
}

impl Default for FileBudget {
    fn default() -> Self {
        FileBudget { serve: Arc::new(Semaphore::new(SERVE_FILES)), download: Arc::new(Semaphore::new(DOWNLOAD_FILES)) }
    }
}

impl FileBudget {
    /// Waits for a descriptor to serve one request.
    pub async fn serve(&self) -> OwnedSemaphorePermit {
        self.serve.clone().acquire_owned().await.expect("the budget is never closed")
    }

    /// Waits for `n` descriptors of the download pool.
    pub async fn download(&self, n: u32) -> OwnedSemaphorePermit {
        self.download.clone().acquire_many_owned(n).await.expect("the budget is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_come_back_when_dropped() {
        let b = FileBudget::default();
        let all = b.download(DOWNLOAD_FILES as u32).await;
        assert!(b.download.try_acquire().is_err());
        drop(all);
        let _one = b.download(1).await;
        let _serve = b.serve().await;
    }
}
