//! The game directory as an IO resource: the filesystem port (replaced by
//! `SetGameDir`) and the scan index, a cache of what is on disk. Scans and
//! recovery run here; their results go to the peer machine.

use lanspread_core::catalog::Catalog;
use lanspread_core::game::GameId;
use lanspread_core::peer::{ErrorCode, Failure};
use lanspread_core::scan::{LocalGame, LocalLibrary, ScanIndex, Scanner};
use lanspread_core::txn;
use lanspread_ports::{Fs, OpenedDir};
use std::sync::{Arc, Mutex};

/// What keeps a game directory ours while we use it (its lock).
type Guard = Option<Box<dyn std::any::Any + Send + Sync>>;

/// See the module docs.
pub(crate) struct Local {
    fs: Mutex<(Arc<dyn Fs>, Guard)>,
    /// The scan index: one scan at a time, so two never race on it.
    pub scanner: tokio::sync::Mutex<Scanner>,
}

impl Local {
    pub fn new(dir: OpenedDir) -> Self {
        Local { fs: Mutex::new((dir.fs, dir.guard)), scanner: tokio::sync::Mutex::new(Scanner::default()) }
    }

    pub fn fs(&self) -> Arc<dyn Fs> {
        self.fs.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Switches to another game directory (its index is loaded by the next
    /// full scan); the old directory's guard (its lock) is released.
    pub async fn replace(&self, dir: OpenedDir) {
        let old = std::mem::replace(&mut *self.fs.lock().unwrap_or_else(|e| e.into_inner()), (dir.fs, dir.guard));
        *self.scanner.lock().await = Scanner::default();
        drop(old);
    }

    /// Lets go of the game directory's guard (its lock): the peer stopped.
    pub fn release(&self) {
        let guard = self.fs.lock().unwrap_or_else(|e| e.into_inner()).1.take();
        drop(guard);
    }

    /// Rescans one game and saves the index.
    pub async fn rescan(&self, id: &GameId) -> Result<Option<LocalGame>, Failure> {
        let fs = self.fs();
        let mut scanner = self.scanner.lock().await;
        let game =
            scanner.scan_game(fs.as_ref(), id).await.map_err(|e| Failure::new(ErrorCode::Internal, format!("scanning {id}: {e}")))?;
        if let Err(e) = scanner.index.save(fs.as_ref()).await {
            tracing::debug!("saving scan index: {e}");
        }
        Ok(game)
    }

    /// Scans every game root (loading the index first if needed).
    pub async fn full_scan(&self, catalog: &Catalog) -> Result<LocalLibrary, Failure> {
        let fs = self.fs();
        let mut scanner = self.scanner.lock().await;
        if scanner.index == ScanIndex::default() {
            scanner.index = ScanIndex::load(fs.as_ref()).await;
        }
        let lib = scanner
            .scan_all(fs.as_ref(), catalog)
            .await
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("scanning the game directory: {e}")))?;
        if let Err(e) = scanner.index.save(fs.as_ref()).await {
            tracing::debug!("saving scan index: {e}");
        }
        Ok(lib)
    }

    /// Finishes or undoes every interrupted transaction; returns what the
    /// user should hear about.
    pub async fn recover(&self, catalog: &Catalog) -> Vec<Failure> {
        let fs = self.fs();
        let mut problems = Vec::new();
        for (id, r) in txn::recover_all(fs.as_ref(), catalog).await {
            match r {
                Ok(report) => {
                    if report.changed() {
                        tracing::info!("recovered {id}: {}", report.actions.join("; "));
                    }
                    for p in &report.problems {
                        problems.push(Failure::new(ErrorCode::TransactionFailed, format!("recovery of {id} left something alone: {p}")));
                    }
                }
                Err(e) => problems.push(Failure::new(ErrorCode::TransactionFailed, format!("recovery of {id}: {e}"))),
            }
        }
        problems
    }
}
