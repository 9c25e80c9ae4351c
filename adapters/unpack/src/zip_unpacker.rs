//! `.zip` archives (stored, deflate and zstd entries).

use crate::common::{entry_path, fs_err, read_err, run, Ctx};
use crate::reader::FsReader;
use async_trait::async_trait;
use lanspread_ports::unpack::UnpackedFile;
use lanspread_ports::{Fs, ProgressFn, RelPath, UnpackError, Unpacker};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Extracts `.zip` archives.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZipUnpacker;

impl ZipUnpacker {
    /// A zip unpacker.
    pub fn new() -> Self {
        ZipUnpacker
    }
}

#[async_trait]
impl Unpacker for ZipUnpacker {
    fn handles(&self, file_name: &str) -> bool {
        crate::ends_with_ci(file_name, ".zip")
    }

    async fn unpack(
        &self,
        fs: Arc<dyn Fs>,
        archive: &RelPath,
        target: &RelPath,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<UnpackedFile>, UnpackError> {
        let (archive, t) = (archive.clone(), target.clone());
        run(fs, target.clone(), progress, move |ctx| unzip(ctx, &archive, &t)).await
    }
}

struct Planned {
    index: usize,
    dest: RelPath,
    dir: bool,
    size: u64,
    compressed: u64,
}

fn zip_err(e: ZipError, archive: &RelPath) -> UnpackError {
    match e {
        ZipError::Io(e) => read_err(e, archive),
        ZipError::UnsupportedArchive(m) => UnpackError::Unsupported(format!("{archive}: {m}")),
        other => UnpackError::Corrupt(format!("{archive}: {other}")),
    }
}

fn unzip(ctx: &mut Ctx, archive: &RelPath, target: &RelPath) -> Result<(), UnpackError> {
    let file = ctx.block(ctx.fs.open_read(archive)).map_err(fs_err)?;
    let len = ctx.block(file.len()).map_err(fs_err)?;
    let reader = FsReader::new(ctx.rt.clone(), file, len);
    let pos = reader.position();
    let mut zip = ZipArchive::new(reader).map_err(|e| zip_err(e, archive))?;

    // Pass 1: validate every entry before writing anything.
    let mut plan = Vec::with_capacity(zip.len());
    let (mut total, mut total_compressed) = (0u64, 0u64);
    for index in 0..zip.len() {
        ctx.check_cancelled()?;
        let f = zip.by_index_raw(index).map_err(|e| zip_err(e, archive))?;
        let name = f.name().to_owned();
        let fmt = f.unix_mode().map_or(0, |m| m & S_IFMT);
        if f.is_symlink() || fmt == S_IFLNK {
            return Err(UnpackError::Escape(format!("{name:?}: symbolic link entries are refused")));
        }
        if !matches!(fmt, 0 | S_IFREG | S_IFDIR) {
            return Err(UnpackError::Unsupported(format!("{name:?}: special file (mode {fmt:o})")));
        }
        if f.encrypted() {
            return Err(UnpackError::Unsupported(format!("{name:?}: encrypted entries are not supported")));
        }
        let dir = f.is_dir();
        if !dir && !matches!(f.compression(), CompressionMethod::Stored | CompressionMethod::Deflated | CompressionMethod::Zstd) {
            return Err(UnpackError::Unsupported(format!("{name:?}: compression method {:?}", f.compression())));
        }
        let dest = match entry_path(target, &name)? {
            Some(d) => d,
            None if dir => continue,
            None => return Err(UnpackError::Escape(format!("{name:?}: a file entry names the target itself"))),
        };
        let (size, compressed) = if dir { (0, 0) } else { (f.size(), f.compressed_size()) };
        total = total.checked_add(size).ok_or_else(|| UnpackError::Corrupt(format!("{archive}: total size overflows")))?;
        total_compressed = total_compressed.saturating_add(compressed);
        plan.push(Planned { index, dest, dir, size, compressed });
    }
    ctx.check_space(total)?;

    // Pass 2: extract.
    let mut done = 0u64;
    ctx.report(0, Some(total_compressed));
    for p in plan {
        if p.dir {
            ctx.ensure_dir(&p.dest)?;
            continue;
        }
        let mut f = zip.by_index(p.index).map_err(|e| zip_err(e, archive))?;
        let start = f.data_start();
        let pos = pos.clone();
        let mut on_chunk = |ctx: &Ctx, _: u64| {
            let inside = pos.load(Ordering::Relaxed).saturating_sub(start).min(p.compressed);
            ctx.report(done + inside, Some(total_compressed));
        };
        ctx.write_file(&p.dest, &mut f, p.size, &mut on_chunk)?;
        done += p.compressed;
        ctx.report(done, Some(total_compressed));
    }
    Ok(())
}
