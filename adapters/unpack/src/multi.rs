//! Dispatch by file name.

use crate::{RarUnpacker, TarUnpacker, ZipUnpacker};
use async_trait::async_trait;
use lanspread_ports::unpack::UnpackedFile;
use lanspread_ports::{Fs, ProgressFn, RelPath, UnpackError, Unpacker};
use std::sync::Arc;

/// Hands each archive to the first unpacker that [`handles`](Unpacker::handles) it.
#[derive(Clone)]
pub struct MultiUnpacker {
    unpackers: Vec<Arc<dyn Unpacker>>,
}

impl MultiUnpacker {
    /// Dispatches among `unpackers`, in order.
    pub fn new(unpackers: Vec<Arc<dyn Unpacker>>) -> Self {
        MultiUnpacker { unpackers }
    }

    /// Zip, tar (plain, gzip, zstd) and RAR (tools looked up on `$PATH`).
    pub fn standard() -> Self {
        MultiUnpacker::new(vec![Arc::new(ZipUnpacker::new()), Arc::new(TarUnpacker::new()), Arc::new(RarUnpacker::new())])
    }

    fn pick(&self, file_name: &str) -> Option<&Arc<dyn Unpacker>> {
        self.unpackers.iter().find(|u| u.handles(file_name))
    }
}

impl Default for MultiUnpacker {
    fn default() -> Self {
        MultiUnpacker::standard()
    }
}

impl std::fmt::Debug for MultiUnpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiUnpacker").field("unpackers", &self.unpackers.len()).finish()
    }
}

#[async_trait]
impl Unpacker for MultiUnpacker {
    fn handles(&self, file_name: &str) -> bool {
        self.pick(file_name).is_some()
    }

    async fn unpack(
        &self,
        fs: Arc<dyn Fs>,
        archive: &RelPath,
        target: &RelPath,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<UnpackedFile>, UnpackError> {
        match self.pick(archive.file_name()) {
            Some(u) => u.unpack(fs, archive, target, progress).await,
            None => Err(UnpackError::Unsupported(format!("{archive}: no unpacker handles this file type"))),
        }
    }
}
