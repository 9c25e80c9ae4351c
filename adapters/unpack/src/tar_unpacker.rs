//! `.tar`, `.tar.gz`/`.tgz` and `.tar.zst`/`.tzst` archives.
//!
//! A tar stream has no index, so the archive is read twice: a first pass
//! validates every entry (and sums the sizes), the second extracts. Progress
//! counts archive bytes over both passes (`total` = twice the length).

use crate::common::{entry_path, fs_err, read_err, run, Ctx};
use crate::ends_with_ci;
use crate::reader::FsReader;
use async_trait::async_trait;
use lanspread_ports::unpack::UnpackedFile;
use lanspread_ports::{Fs, ProgressFn, RelPath, UnpackError, Unpacker};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tar::EntryType;

/// How a tar stream is compressed, chosen by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    /// `.tar`
    None,
    /// `.tar.gz`, `.tgz`
    Gzip,
    /// `.tar.zst`, `.tar.zstd`, `.tzst`
    Zstd,
}

impl TarCompression {
    /// The compression of the archive named `file_name`, if it is a tar archive.
    pub fn from_name(file_name: &str) -> Option<Self> {
        if ends_with_ci(file_name, ".tar") {
            Some(TarCompression::None)
        } else if ends_with_ci(file_name, ".tar.gz") || ends_with_ci(file_name, ".tgz") {
            Some(TarCompression::Gzip)
        } else if ends_with_ci(file_name, ".tar.zst") || ends_with_ci(file_name, ".tar.zstd") || ends_with_ci(file_name, ".tzst") {
            Some(TarCompression::Zstd)
        } else {
            None
        }
    }
}

/// Extracts tar archives, plain or compressed with gzip or zstd.
#[derive(Debug, Clone, Copy, Default)]
pub struct TarUnpacker;

impl TarUnpacker {
    /// A tar unpacker.
    pub fn new() -> Self {
        TarUnpacker
    }
}

#[async_trait]
impl Unpacker for TarUnpacker {
    fn handles(&self, file_name: &str) -> bool {
        TarCompression::from_name(file_name).is_some()
    }

    async fn unpack(
        &self,
        fs: Arc<dyn Fs>,
        archive: &RelPath,
        target: &RelPath,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<UnpackedFile>, UnpackError> {
        let compression = TarCompression::from_name(archive.file_name())
            .ok_or_else(|| UnpackError::Unsupported(format!("{archive}: not a tar archive")))?;
        let (archive, t) = (archive.clone(), target.clone());
        run(fs, target.clone(), progress, move |ctx| untar(ctx, &archive, &t, compression)).await
    }
}

/// One validated entry.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Dir(RelPath),
    File(RelPath, u64),
    Skip,
}

/// A decompressing stream over the archive.
struct Opened {
    stream: Box<dyn Read>,
    /// Position in the underlying (compressed) archive.
    pos: Arc<AtomicU64>,
    /// Length of the archive.
    len: u64,
}

fn open(ctx: &Ctx, archive: &RelPath, compression: TarCompression) -> Result<Opened, UnpackError> {
    let file = ctx.block(ctx.fs.open_read(archive)).map_err(fs_err)?;
    let len = ctx.block(file.len()).map_err(fs_err)?;
    let reader = FsReader::new(ctx.rt.clone(), file, len);
    let pos = reader.position();
    let stream: Box<dyn Read> = match compression {
        TarCompression::None => Box::new(reader),
        TarCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        TarCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader).map_err(|e| read_err(e, archive))?),
    };
    Ok(Opened { stream, pos, len })
}

fn classify<R: Read>(entry: &tar::Entry<'_, R>, target: &RelPath) -> Result<Item, UnpackError> {
    let raw = entry.path_bytes();
    let name = std::str::from_utf8(&raw)
        .map_err(|_| UnpackError::Escape(format!("{:?}: entry name is not UTF-8", String::from_utf8_lossy(&raw))))?;
    let ty = entry.header().entry_type();
    match ty {
        EntryType::Regular | EntryType::Continuous => match entry_path(target, name)? {
            Some(dest) => Ok(Item::File(dest, entry.size())),
            None => Err(UnpackError::Escape(format!("{name:?}: a file entry names the target itself"))),
        },
        EntryType::Directory => Ok(entry_path(target, name)?.map_or(Item::Skip, Item::Dir)),
        EntryType::Symlink | EntryType::Link => Err(UnpackError::Escape(format!("{name:?}: link entries are refused"))),
        // Metadata records (normally consumed by the tar crate itself).
        EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => Ok(Item::Skip),
        other => Err(UnpackError::Unsupported(format!("{name:?}: entry type {other:?}"))),
    }
}

fn untar(ctx: &mut Ctx, archive: &RelPath, target: &RelPath, compression: TarCompression) -> Result<(), UnpackError> {
    // Pass 1: validate every entry before writing anything.
    let Opened { stream, pos, len } = open(ctx, archive, compression)?;
    let total = Some(len.saturating_mul(2));
    let mut items = Vec::new();
    let mut size = 0u64;
    let mut ar = tar::Archive::new(stream);
    for entry in ar.entries().map_err(|e| read_err(e, archive))? {
        ctx.check_cancelled()?;
        let entry = entry.map_err(|e| read_err(e, archive))?;
        let item = classify(&entry, target)?;
        if let Item::File(_, n) = item {
            size = size.checked_add(n).ok_or_else(|| UnpackError::Corrupt(format!("{archive}: total size overflows")))?;
        }
        items.push(item);
        ctx.report(pos.load(Ordering::Relaxed), total);
    }
    drop(ar);
    // The end-of-archive padding need not have been read.
    ctx.report(len, total);
    ctx.check_space(size)?;

    // Pass 2: extract, checking that the archive still lists the same entries.
    let Opened { stream, pos, .. } = open(ctx, archive, compression)?;
    let mut ar = tar::Archive::new(stream);
    let mut expected = items.into_iter();
    for entry in ar.entries().map_err(|e| read_err(e, archive))? {
        let mut entry = entry.map_err(|e| read_err(e, archive))?;
        let item = classify(&entry, target)?;
        if expected.next().as_ref() != Some(&item) {
            return Err(UnpackError::Corrupt(format!("{archive}: the archive changed while it was unpacked")));
        }
        match item {
            Item::Dir(d) => ctx.ensure_dir(&d)?,
            Item::File(dest, n) => {
                let pos = pos.clone();
                let mut on_chunk = |ctx: &Ctx, _: u64| ctx.report(len + pos.load(Ordering::Relaxed), total);
                ctx.write_file(&dest, &mut entry, n, &mut on_chunk)?;
            }
            Item::Skip => {}
        }
        ctx.report(len + pos.load(Ordering::Relaxed), total);
    }
    if expected.next().is_some() {
        return Err(UnpackError::Corrupt(format!("{archive}: the archive changed while it was unpacked")));
    }
    ctx.report(len.saturating_mul(2), total);
    Ok(())
}
