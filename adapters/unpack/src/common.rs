//! What every unpacker shares: the blocking-thread context that bridges to
//! the `Fs` port, entry-name validation, bounded copying into batches of
//! writes, progress.

use bytes::Bytes;
use lanspread_ports::unpack::UnpackedFile;
use lanspread_ports::{Fs, FsError, ProgressFn, RelPath, UnpackError, UnpackProgress, WritePiece};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// State of one unpack, owned by its blocking thread.
pub(crate) struct Ctx {
    pub(crate) rt: Handle,
    pub(crate) fs: Arc<dyn Fs>,
    progress: watch::Sender<UnpackProgress>,
    cancelled: Arc<AtomicBool>,
    /// The target directory.
    target: RelPath,
    /// Directories known to exist beneath (and including) the target.
    dirs: BTreeSet<RelPath>,
    /// Names that were in the target before the unpack (the install's
    /// ownership marker): a file at or beneath one of them may exist.
    preexisting: BTreeSet<String>,
    /// Files written by this unpack, with their size and BLAKE3 hash (a
    /// repeated entry replaces the earlier content, and pieces never
    /// truncate).
    written: BTreeMap<RelPath, (u64, [u8; 32])>,
    /// Writes not yet handed to the port.
    batch: Batch,
    /// The last progress sent.
    reported: Cell<UnpackProgress>,
}

/// Progress is reported when it advanced by this many bytes.
const REPORT_STEP: u64 = 1 << 20;

/// Extracted data waiting for one [`Fs::write_pieces`] call.
#[derive(Default)]
struct Batch {
    pieces: Vec<WritePiece>,
    bytes: usize,
}

impl Batch {
    /// Whether the batch should be written now (bounds memory, and the
    /// number of files the port opens in one call).
    fn full(&self) -> bool {
        self.bytes >= crate::BATCH_BYTES || self.pieces.len() >= crate::BATCH_PIECES
    }
}

impl Ctx {
    /// A context for unpacking into `target`, which exists; what it holds
    /// already is remembered (see [`Ctx::may_exist`]).
    fn new(
        rt: Handle,
        fs: Arc<dyn Fs>,
        progress: watch::Sender<UnpackProgress>,
        cancelled: Arc<AtomicBool>,
        target: RelPath,
    ) -> Result<Ctx, UnpackError> {
        let preexisting = rt.block_on(fs.read_dir(&target)).map_err(fs_err)?.into_iter().map(|e| e.name).collect();
        let dirs = BTreeSet::from([target.clone()]);
        let (written, batch) = (BTreeMap::new(), Batch::default());
        let reported = Cell::new(UnpackProgress::default());
        Ok(Ctx { rt, fs, progress, cancelled, target, dirs, preexisting, written, batch, reported })
    }

    /// Runs a port future to completion (we are on a blocking thread).
    pub(crate) fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Reports progress, at most once per [`REPORT_STEP`] bytes (and always
    /// the start and the end): each report wakes the async side, and one per
    /// small file was most of an unpack's thread wake-ups.
    pub(crate) fn report(&self, done: u64, total: Option<u64>) {
        let last = self.reported.get();
        let due = total != last.total || done == 0 || Some(done) == total || done >= last.done.saturating_add(REPORT_STEP);
        if (due && done != last.done) || total != last.total {
            let now = UnpackProgress { done, total };
            self.reported.set(now);
            self.progress.send_replace(now);
        }
    }

    /// Fails once the caller has given up on this unpack.
    pub(crate) fn check_cancelled(&self) -> Result<(), UnpackError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(UnpackError::Io("unpack cancelled".into()));
        }
        Ok(())
    }

    /// Refuses an archive whose declared content cannot fit.
    pub(crate) fn check_space(&self, needed: u64) -> Result<(), UnpackError> {
        if let Some(free) = self.block(self.fs.free_space()).map_err(fs_err)? {
            if needed > free {
                return Err(UnpackError::Io(format!("archive expands to {needed} bytes but only {free} are free")));
            }
        }
        Ok(())
    }

    /// Creates `dir` and its missing ancestors, once: one port call for a
    /// new directory however deep (an adapter whose every call costs a
    /// thread hand-off creates the whole chain at once).
    pub(crate) fn ensure_dir(&mut self, dir: &RelPath) -> Result<(), UnpackError> {
        if self.dirs.contains(dir) {
            return Ok(());
        }
        self.block(self.fs.create_dir_all(dir)).map_err(fs_err)?;
        let mut d = Some(dir.clone());
        while let Some(cur) = d {
            if !self.dirs.insert(cur.clone()) {
                break;
            }
            d = cur.parent();
        }
        Ok(())
    }

    /// Queues the content of `src` as the new file `dest`, in pieces of at
    /// most [`CHUNK`] bytes, refusing more (or fewer) than `expected`
    /// bytes. Nothing is synced: the caller makes the whole target durable
    /// at once. `on_chunk` is called after each piece with the bytes queued
    /// so far.
    ///
    /// [`CHUNK`]: crate::CHUNK
    pub(crate) fn write_file(
        &mut self,
        dest: &RelPath,
        src: &mut dyn Read,
        expected: u64,
        on_chunk: &mut dyn FnMut(&Ctx, u64),
    ) -> Result<(), UnpackError> {
        self.check_cancelled()?;
        if let Some(parent) = dest.parent() {
            self.ensure_dir(&parent)?;
        }
        if self.may_exist(dest) {
            self.truncate(dest)?;
        }
        // Hashed as it is written: the install records what it produced
        // without reading the tree back.
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        loop {
            self.check_cancelled()?;
            // One byte more than what is left, to notice an entry that
            // produces more than it declares; never more than a chunk.
            let want = (expected - written).saturating_add(1).min(crate::CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let n = read_full(src, &mut buf).map_err(|e| read_err(e, dest))?;
            if n == 0 {
                break;
            }
            if written + n as u64 > expected {
                return Err(UnpackError::Corrupt(format!("{dest}: more data than the {expected} bytes declared")));
            }
            buf.truncate(n);
            hasher.update(&buf);
            self.push(WritePiece { path: dest.clone(), offset: written, data: Bytes::from(buf) })?;
            written += n as u64;
            on_chunk(self, written);
        }
        if written != expected {
            return Err(UnpackError::Corrupt(format!("{dest}: {written} bytes instead of the {expected} declared")));
        }
        if expected == 0 {
            // An empty piece creates the empty file.
            self.push(WritePiece { path: dest.clone(), offset: 0, data: Bytes::new() })?;
        }
        self.written.insert(dest.clone(), (written, *hasher.finalize().as_bytes()));
        Ok(())
    }

    /// Whether `dest` may already exist: written earlier by this unpack, or
    /// beneath a name the target held before.
    fn may_exist(&self, dest: &RelPath) -> bool {
        if self.written.contains_key(dest) {
            return true;
        }
        let inside = if self.target.is_root() {
            Some(dest.as_str())
        } else {
            dest.as_str().strip_prefix(self.target.as_str()).and_then(|r| r.strip_prefix('/'))
        };
        inside.and_then(|r| r.split('/').next()).is_some_and(|top| self.preexisting.contains(top))
    }

    /// Empties an existing `dest` before it is written again (pieces never
    /// truncate). Queued pieces go first, so none lands after the cut.
    fn truncate(&mut self, dest: &RelPath) -> Result<(), UnpackError> {
        self.flush()?;
        self.block(async { self.fs.open_write(dest).await?.set_len(0).await }).map_err(fs_err)
    }

    /// Queues one piece, writing the batch once it is full.
    fn push(&mut self, piece: WritePiece) -> Result<(), UnpackError> {
        self.batch.bytes += piece.data.len();
        self.batch.pieces.push(piece);
        if self.batch.full() {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the queued pieces with one [`Fs::write_pieces`] call.
    fn flush(&mut self) -> Result<(), UnpackError> {
        let batch = std::mem::take(&mut self.batch);
        if batch.pieces.is_empty() {
            return Ok(());
        }
        self.block(self.fs.write_pieces(batch.pieces)).map_err(fs_err)
    }

    /// Writes what is still queued and lists the files written, relative
    /// to the target. Nothing is synced: the caller makes the whole target
    /// durable at once (the install transaction with one `Fs::sync_tree` of
    /// its staging directory before the commit).
    fn finish(&mut self) -> Result<Vec<UnpackedFile>, UnpackError> {
        self.flush()?;
        let written = std::mem::take(&mut self.written);
        let inside = |p: &RelPath| p.strip_prefix(&self.target).filter(|r| !r.is_root());
        written
            .into_iter()
            .map(|(dest, (size, hash))| match inside(&dest) {
                Some(path) => Ok(UnpackedFile { path, size, hash }),
                None => Err(UnpackError::Escape(format!("{dest}: written outside the target"))),
            })
            .collect()
    }
}

/// Reads until `buf` is full or the end of `src`.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Sets the flag when the unpack future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `job` on a blocking thread with a fresh [`Ctx`] whose target
/// directory `target` already exists, forwarding progress to `progress`.
/// Dropping the returned future makes the job stop at its next check.
pub(crate) async fn run<F>(fs: Arc<dyn Fs>, target: RelPath, progress: ProgressFn<'_>, job: F) -> Result<Vec<UnpackedFile>, UnpackError>
where
    F: FnOnce(&mut Ctx) -> Result<(), UnpackError> + Send + 'static,
{
    let (tx, mut rx) = watch::channel(UnpackProgress::default());
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    let rt = Handle::current();
    let mut task = tokio::task::spawn_blocking(move || {
        let mut ctx = Ctx::new(rt, fs, tx, cancelled, target)?;
        job(&mut ctx)?;
        ctx.finish()
    });
    let mut delivered = None;
    let res = loop {
        tokio::select! {
            biased;
            res = &mut task => break res,
            changed = rx.changed() => match changed {
                Ok(()) => {
                    let now = *rx.borrow_and_update();
                    progress(now);
                    delivered = Some(now);
                }
                Err(_) => break (&mut task).await,
            },
        }
    };
    // The last report, even if the job ended before it was seen (once the
    // sender is gone, `has_changed` no longer tells).
    let last = *rx.borrow();
    if delivered != Some(last) && last != UnpackProgress::default() {
        progress(last);
    }
    res.map_err(|e| UnpackError::Io(format!("unpack task failed: {e}")))?
}

/// Validates the archive entry name `raw` and places it beneath `target`.
/// Leading `./` prefixes and one trailing `/` are dropped; `Ok(None)` means
/// the entry names the target itself (`./`).
pub(crate) fn entry_path(target: &RelPath, raw: &str) -> Result<Option<RelPath>, UnpackError> {
    let mut s = raw;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    if s.is_empty() && !raw.is_empty() || s == "." {
        return Ok(None);
    }
    let s = s.strip_suffix('/').unwrap_or(s);
    let rel = RelPath::new(s).map_err(|e| UnpackError::Escape(format!("{raw:?}: {e}")))?;
    if rel.is_root() {
        return Err(UnpackError::Escape(format!("{raw:?}: empty entry name")));
    }
    target.join(rel.as_str()).map(Some).map_err(|e| UnpackError::Escape(format!("{raw:?}: {e}")))
}

pub(crate) fn fs_err(e: FsError) -> UnpackError {
    UnpackError::Io(e.to_string())
}

/// An error while reading archive data: malformed data is `Corrupt`.
pub(crate) fn read_err(e: io::Error, what: &dyn std::fmt::Display) -> UnpackError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput => {
            UnpackError::Corrupt(format!("{what}: {e}"))
        }
        _ => UnpackError::Io(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let t = RelPath::new("dl/game").unwrap();
        let ok = |raw: &str| entry_path(&t, raw).unwrap().map(|p| p.as_str().to_owned());
        assert_eq!(ok("a/b.txt").as_deref(), Some("dl/game/a/b.txt"));
        assert_eq!(ok("./a/").as_deref(), Some("dl/game/a"));
        assert_eq!(ok("././a").as_deref(), Some("dl/game/a"));
        assert_eq!(ok("./"), None);
        assert_eq!(ok("."), None);
        for bad in
            ["", "/", "../evil", "a/../../b", "/etc/passwd", "C:/x", "c:x", "a\\b", "..\\evil", "a//b", "//x", "./../x", "CON", "a/./b"]
        {
            assert!(matches!(entry_path(&t, bad), Err(UnpackError::Escape(_))), "{bad:?}");
        }
    }
}
