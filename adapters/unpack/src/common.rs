//! What every unpacker shares: the blocking-thread context that bridges to
//! the `Fs` port, entry-name validation, bounded copying, progress.

use bytes::Bytes;
use lanspread_ports::{Fs, FsError, ProgressFn, RelPath, UnpackError, UnpackProgress};
use std::collections::BTreeSet;
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
    /// Directories known to exist beneath (and including) the target; all
    /// of them are synced at the end.
    dirs: BTreeSet<RelPath>,
}

impl Ctx {
    /// Runs a port future to completion (we are on a blocking thread).
    pub(crate) fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub(crate) fn report(&self, done: u64, total: Option<u64>) {
        self.progress.send_replace(UnpackProgress { done, total });
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

    /// Creates `dir` and its missing ancestors (once).
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

    /// Writes the content of `src` to the new file `dest`, in [`CHUNK`]
    /// pieces, refusing more (or fewer) than `expected` bytes; then syncs it.
    /// `on_chunk` is called after each piece with the bytes written so far.
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
        let h = self.block(self.fs.open_write(dest)).map_err(fs_err)?;
        // A repeated entry replaces the earlier content.
        self.block(h.set_len(0)).map_err(fs_err)?;
        let mut written = 0u64;
        loop {
            self.check_cancelled()?;
            let mut buf = vec![0u8; crate::CHUNK];
            let n = read_full(src, &mut buf).map_err(|e| read_err(e, dest))?;
            if n == 0 {
                break;
            }
            if written + n as u64 > expected {
                return Err(UnpackError::Corrupt(format!("{dest}: more data than the {expected} bytes declared")));
            }
            buf.truncate(n);
            self.block(h.write_at(written, Bytes::from(buf))).map_err(fs_err)?;
            written += n as u64;
            on_chunk(self, written);
        }
        if written != expected {
            return Err(UnpackError::Corrupt(format!("{dest}: {written} bytes instead of the {expected} declared")));
        }
        self.block(h.sync()).map_err(fs_err)?;
        Ok(())
    }

    /// Makes every directory that received entries durable.
    fn finish(&self) -> Result<(), UnpackError> {
        for d in self.dirs.iter().rev() {
            self.block(self.fs.sync_dir(d)).map_err(fs_err)?;
        }
        Ok(())
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
pub(crate) async fn run<F>(fs: Arc<dyn Fs>, target: RelPath, progress: ProgressFn<'_>, job: F) -> Result<(), UnpackError>
where
    F: FnOnce(&mut Ctx) -> Result<(), UnpackError> + Send + 'static,
{
    let (tx, mut rx) = watch::channel(UnpackProgress::default());
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    let rt = Handle::current();
    let mut task = tokio::task::spawn_blocking(move || {
        let mut dirs = BTreeSet::new();
        dirs.insert(target);
        let mut ctx = Ctx { rt, fs, progress: tx, cancelled, dirs };
        job(&mut ctx)?;
        ctx.finish()
    });
    let res = loop {
        tokio::select! {
            biased;
            res = &mut task => break res,
            changed = rx.changed() => match changed {
                Ok(()) => progress(*rx.borrow_and_update()),
                Err(_) => break (&mut task).await,
            },
        }
    };
    if rx.has_changed().unwrap_or(false) {
        progress(*rx.borrow_and_update());
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
