//! The filesystem port: operations relative to one root handle.
//!
//! Contract, common to every adapter:
//! - Every path is a [`RelPath`] resolved beneath the root. Adapters never
//!   follow a symbolic link: operating *through* a symlink fails with
//!   [`FsErrorKind::Symlink`]; [`Fs::metadata`] reports a symlink as
//!   [`FileKind::Symlink`] without following it; removing a symlink removes
//!   the link only.
//! - [`Fs::rename`] is atomic: after a crash either the old or the new name
//!   exists. A rename over an existing *file* replaces it atomically; a
//!   rename over an existing directory fails with `AlreadyExists` unless the
//!   target is an empty directory (on Unix; Windows refuses that too, so
//!   portable callers never rely on it).
//! - Data written with [`FileHandle::write_at`] is durable only after
//!   [`FileHandle::sync`]; a created, removed or renamed entry is durable
//!   only after [`Fs::sync_dir`] of its parent directory.
//! - Errors carry a kind that callers can match; the message is for humans.

use crate::path::RelPath;
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;

/// What went wrong, in a form callers can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsErrorKind {
    /// The path does not exist.
    NotFound,
    /// The path already exists.
    AlreadyExists,
    /// A directory was expected.
    NotADirectory,
    /// A file was expected.
    IsADirectory,
    /// The directory is not empty.
    NotEmpty,
    /// The path (or a component of it) is a symbolic link, which is never followed.
    Symlink,
    /// No space left on the device.
    NoSpace,
    /// The operation is not permitted.
    PermissionDenied,
    /// The path is not a valid relative path or leaves the root.
    InvalidPath,
    /// A game directory is in use by another process (its lock is held).
    InUse,
    /// Another program (a running game, an antivirus, the indexer) held a
    /// file open through every retry of a rename or a removal: Windows'
    /// sharing violation. The message names the file.
    HeldOpen,
    /// Any other I/O failure.
    Io,
}

/// A filesystem error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FsError {
    /// The kind.
    pub kind: FsErrorKind,
    /// Human-readable detail (includes the path).
    pub message: String,
}

impl FsError {
    /// Builds an error.
    pub fn new(kind: FsErrorKind, message: impl Into<String>) -> Self {
        FsError { kind, message: message.into() }
    }
    /// `NotFound` for `path`.
    pub fn not_found(path: &RelPath) -> Self {
        FsError::new(FsErrorKind::NotFound, format!("{path}: not found"))
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Result of a filesystem operation.
pub type FsResult<T> = Result<T, FsError>;

/// Kind of a directory entry, as seen without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A device, socket, FIFO...
    Other,
}

/// Metadata of a path, read without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Kind.
    pub kind: FileKind,
    /// Length in bytes (0 for directories on some adapters).
    pub len: u64,
    /// Modification time in nanoseconds since the Unix epoch, if known. Used
    /// only to detect change, never to order events.
    pub modified_ns: Option<u128>,
}

/// One entry of [`Fs::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (one component, not validated: hostile names may be
    /// present on disk; callers validate with [`RelPath::component`]).
    pub name: String,
    /// Kind, without following symlinks.
    pub kind: FileKind,
    /// Length in bytes (0 for directories and links).
    pub len: u64,
    /// Modification time in nanoseconds since the Unix epoch, if known.
    pub modified_ns: Option<u128>,
}

/// One write of [`Fs::write_pieces`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePiece {
    /// The file (created if missing, never truncated).
    pub path: RelPath,
    /// Where the data goes.
    pub offset: u64,
    /// The data.
    pub data: Bytes,
}

/// One read of [`Fs::read_pieces`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPiece {
    /// The file.
    pub path: RelPath,
    /// Start.
    pub offset: u64,
    /// Exact length wanted.
    pub len: usize,
}

/// Something changed in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The watched directory.
    pub dir: RelPath,
    /// The changed entry's name, when the adapter knows it.
    pub name: Option<String>,
}

/// A live, non-recursive watch. Dropping it stops watching.
#[async_trait]
pub trait Watcher: Send {
    /// The next change; `None` once the watch has ended.
    async fn next(&mut self) -> Option<WatchEvent>;
}

/// An open file. Positional reads and writes do not share a cursor, so
/// several tasks may write different regions of one file concurrently.
#[async_trait]
#[allow(clippy::len_without_is_empty)]
pub trait FileHandle: Send + Sync {
    /// Reads up to `len` bytes at `offset`; fewer only at end of file.
    async fn read_at(&self, offset: u64, len: usize) -> FsResult<Bytes>;
    /// Writes all of `data` at `offset`, extending the file if needed.
    async fn write_at(&self, offset: u64, data: Bytes) -> FsResult<()>;
    /// Truncates or extends (with zeros) to `len`.
    async fn set_len(&self, len: u64) -> FsResult<()>;
    /// Current length.
    async fn len(&self) -> FsResult<u64>;
    /// Makes written data and the length durable.
    async fn sync(&self) -> FsResult<()>;
}

/// Filesystem operations beneath one root.
#[async_trait]
pub trait Fs: Send + Sync + 'static {
    /// Lists a directory (not recursive; order unspecified), with each
    /// entry's metadata read without following symlinks.
    async fn read_dir(&self, dir: &RelPath) -> FsResult<Vec<DirEntry>>;
    /// Metadata without following symlinks.
    async fn metadata(&self, path: &RelPath) -> FsResult<Metadata>;
    /// Opens an existing regular file for reading. Fails with `Symlink` if
    /// the path is a symlink.
    async fn open_read(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>>;
    /// Opens a regular file for reading and writing, creating it if missing
    /// and **never truncating** it. The parent must exist.
    async fn open_write(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>>;
    /// Creates one directory; the parent must exist; `AlreadyExists` if present.
    async fn create_dir(&self, path: &RelPath) -> FsResult<()>;
    /// Atomically renames `from` to `to` (see the module contract).
    async fn rename(&self, from: &RelPath, to: &RelPath) -> FsResult<()>;
    /// Removes a file or a symlink.
    async fn remove_file(&self, path: &RelPath) -> FsResult<()>;
    /// Removes an empty directory.
    async fn remove_dir(&self, path: &RelPath) -> FsResult<()>;
    /// Makes the entries of a directory (creations, removals, renames) durable.
    async fn sync_dir(&self, dir: &RelPath) -> FsResult<()>;
    /// Watches one directory, not recursively.
    async fn watch(&self, dir: &RelPath) -> FsResult<Box<dyn Watcher>>;
    /// Free bytes available to us on the device, if known.
    async fn free_space(&self) -> FsResult<Option<u64>>;

    /// Reads a whole regular file, refusing files longer than `max_len`.
    async fn read_file(&self, path: &RelPath, max_len: u64) -> FsResult<Vec<u8>> {
        let h = self.open_read(path).await?;
        let len = h.len().await?;
        if len > max_len {
            return Err(FsError::new(FsErrorKind::Io, format!("{path}: {len} bytes exceeds the limit of {max_len}")));
        }
        let data = h.read_at(0, len as usize).await?;
        Ok(data.to_vec())
    }

    /// Metadata of each path, in order, as [`Fs::metadata`] would answer.
    /// Adapters where each call has a fixed cost (a thread hand-off) answer
    /// the whole list at once.
    async fn metadata_many(&self, paths: &[RelPath]) -> Vec<FsResult<Metadata>> {
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            out.push(self.metadata(p).await);
        }
        out
    }

    /// Makes a regular file's data durable: opens it for writing (creating
    /// it if missing, never truncating) and syncs it.
    async fn sync_file(&self, path: &RelPath) -> FsResult<()> {
        self.open_write(path).await?.sync().await
    }

    /// [`Fs::sync_file`] of each path, in order, stopping at the first
    /// failure.
    async fn sync_files(&self, paths: &[RelPath]) -> FsResult<()> {
        for p in paths {
            self.sync_file(p).await?;
        }
        Ok(())
    }

    /// [`Fs::sync_dir`] of each directory, in order, stopping at the first
    /// failure.
    async fn sync_dirs(&self, dirs: &[RelPath]) -> FsResult<()> {
        for d in dirs {
            self.sync_dir(d).await?;
        }
        Ok(())
    }

    /// Makes everything beneath `dir` durable: the data and length of every
    /// regular file and the entries of every directory, `dir` included.
    ///
    /// Unlike an `fsync` through a descriptor opened after the fact, this
    /// reports a write-back error that happened while no descriptor of the
    /// file was open (a download closes its files as soon as they are
    /// written). Adapters may make more durable than asked: the real
    /// filesystem on Linux answers with one `syncfs(2)` of the whole device,
    /// which reports every write-back error since the previous call (Linux
    /// 5.8 and later). The default walks the tree and syncs each entry.
    async fn sync_tree(&self, dir: &RelPath) -> FsResult<()> {
        let mut stack = vec![dir.clone()];
        let mut dirs = Vec::new();
        while let Some(d) = stack.pop() {
            for e in self.read_dir(&d).await? {
                let p = d.join_local(&e.name).map_err(|err| FsError::new(FsErrorKind::InvalidPath, format!("{d}/{}: {err}", e.name)))?;
                match e.kind {
                    FileKind::Dir => stack.push(p),
                    FileKind::File => self.sync_file(&p).await?,
                    FileKind::Symlink | FileKind::Other => {}
                }
            }
            dirs.push(d);
        }
        // Children before parents, so a parent's entries name durable children.
        dirs.reverse();
        self.sync_dirs(&dirs).await
    }

    /// Writes each piece at its offset, in order, creating missing files
    /// (the parent must exist) and never truncating. Nothing is synced and no
    /// file stays open afterwards: a batch of small files costs one call, and
    /// an adapter whose every call costs a thread hand-off performs the whole
    /// batch at once, holding one file open at a time. Stops at the first
    /// failure.
    async fn write_pieces(&self, pieces: Vec<WritePiece>) -> FsResult<()> {
        for piece in pieces {
            self.open_write(&piece.path).await?.write_at(piece.offset, piece.data).await?;
        }
        Ok(())
    }

    /// Reads each range, in order, as [`FileHandle::read_at`] would (each
    /// result exactly `len` bytes, or an error): the batch counterpart of
    /// [`Fs::write_pieces`], holding one file open at a time.
    async fn read_pieces(&self, pieces: &[ReadPiece]) -> FsResult<Vec<Bytes>> {
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let data = self.open_read(&piece.path).await?.read_at(piece.offset, piece.len).await?;
            if data.len() != piece.len {
                return Err(FsError::new(
                    FsErrorKind::Io,
                    format!("{}: {} bytes at {} are past the end", piece.path, piece.len, piece.offset),
                ));
            }
            out.push(data);
        }
        Ok(out)
    }

    /// Creates `dir` and its missing ancestors (refusing symlinks on the way).
    async fn create_dir_all(&self, dir: &RelPath) -> FsResult<()> {
        let mut cur = RelPath::root();
        for c in dir.components() {
            cur = cur.join(c).map_err(|e| FsError::new(FsErrorKind::InvalidPath, e.to_string()))?;
            match self.metadata(&cur).await {
                Ok(m) if m.kind == FileKind::Dir => continue,
                Ok(m) if m.kind == FileKind::Symlink => return Err(FsError::new(FsErrorKind::Symlink, format!("{cur}: is a symlink"))),
                Ok(_) => return Err(FsError::new(FsErrorKind::NotADirectory, format!("{cur}: not a directory"))),
                Err(e) if e.kind == FsErrorKind::NotFound => match self.create_dir(&cur).await {
                    Ok(()) => {}
                    Err(e) if e.kind == FsErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes a directory tree without following symlinks (a symlink inside
    /// is removed as a link). Removing a symlink at `dir` itself fails with
    /// `Symlink`: callers decide explicitly what to do with planted links.
    async fn remove_dir_all(&self, dir: &RelPath) -> FsResult<()> {
        let m = self.metadata(dir).await?;
        match m.kind {
            FileKind::Dir => {}
            FileKind::Symlink => return Err(FsError::new(FsErrorKind::Symlink, format!("{dir}: is a symlink"))),
            _ => return Err(FsError::new(FsErrorKind::NotADirectory, format!("{dir}: not a directory"))),
        }
        // Iterative post-order walk, so hostile depth cannot overflow the stack.
        let mut stack = vec![(dir.clone(), false)];
        while let Some((d, visited)) = stack.pop() {
            if visited {
                self.remove_dir(&d).await?;
                continue;
            }
            stack.push((d.clone(), true));
            for e in self.read_dir(&d).await? {
                let p = d.join_local(&e.name).map_err(|err| FsError::new(FsErrorKind::InvalidPath, format!("{d}/{}: {err}", e.name)))?;
                match e.kind {
                    FileKind::Dir => stack.push((p, false)),
                    _ => self.remove_file(&p).await?,
                }
            }
        }
        Ok(())
    }

    /// Writes `data` to `path` atomically and durably: `tmp` is written,
    /// synced, renamed over `path`, and the parent directory is synced.
    async fn write_atomic(&self, path: &RelPath, tmp: &RelPath, data: &[u8]) -> FsResult<()> {
        let h = self.open_write(tmp).await?;
        h.set_len(0).await?;
        h.write_at(0, Bytes::copy_from_slice(data)).await?;
        h.sync().await?;
        drop(h);
        self.rename(tmp, path).await?;
        self.sync_dir(&path.parent().unwrap_or_else(RelPath::root)).await
    }
}

/// A game directory opened by an [`FsProvider`]: its filesystem, and what
/// must stay alive while the peer uses it (e.g. the directory's lock).
pub struct OpenedDir {
    /// The filesystem beneath the directory.
    pub fs: std::sync::Arc<dyn Fs>,
    /// Dropped when the peer leaves the directory.
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Opens a filesystem port rooted at a game directory (used when the user
/// changes the game directory at run time).
pub trait FsProvider: Send + Sync + 'static {
    /// Opens `dir` (a platform path chosen by the user) as the root of a new
    /// [`Fs`]; [`FsErrorKind::InUse`] if another process holds it.
    fn open(&self, dir: &str) -> FsResult<OpenedDir>;
}
