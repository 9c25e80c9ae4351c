//! The real filesystem adapter: [`CapFs`] implements [`Fs`] with cap-std.
//!
//! One directory handle is opened with ambient authority, at the game
//! directory, in [`CapFs::open`]; every later operation resolves its
//! [`RelPath`] beneath that handle and nothing else. No symbolic link is ever
//! followed, in any component: each directory on the way is opened with
//! `O_NOFOLLOW` semantics (`open_dir_nofollow`), and the final component is
//! opened with [`FollowSymlinks::No`]. Operating through a link fails with
//! [`FsErrorKind::Symlink`].
//!
//! Every blocking call runs on `tokio::task::spawn_blocking`, and so does
//! every batch call as a whole (`metadata_many`, `sync_files`, `sync_dirs`,
//! `write_pieces`, `read_pieces`, `sync_tree`, `create_dir_all`,
//! `remove_dir_all`): a tree of thousands of small files costs one thread
//! hand-off per batch, not one per file, and a batch holds at most one file
//! open at a time. File handles
//! use positional IO, so concurrent writers to different regions of one file
//! never serialize on a shared cursor. [`Fs::watch`] uses `notify` on the real
//! path of the watched directory.
#![forbid(unsafe_code)]

mod platform;

use async_trait::async_trait;
use bytes::Bytes;
use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions};
use lanspread_ports::{
    DirEntry, FileHandle, FileKind, Fs, FsError, FsErrorKind, FsProvider, FsResult, Metadata, OpenedDir, ReadPiece, RelPath, WatchEvent,
    Watcher, WritePiece,
};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use tokio::sync::mpsc;

/// Capacity of a watch's event queue; on overflow the consumer receives one
/// event without a name ("rescan the directory").
const WATCH_QUEUE: usize = 1024;

/// The filesystem beneath one directory, on the real disk.
#[derive(Clone)]
pub struct CapFs {
    inner: Arc<Inner>,
}

struct Inner {
    root: Dir,
    root_path: PathBuf,
    /// Whether the kernel resolves a whole path beneath the root without
    /// following links in one `openat2` call (Linux ≥ 5.6 without a seccomp
    /// filter that hides it). Otherwise paths are walked one component at a
    /// time.
    beneath: bool,
    /// How [`Fs::sync_tree`] makes a tree durable.
    tree_sync: TreeSync,
}

impl std::fmt::Debug for CapFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapFs").field("root", &self.inner.root_path).finish()
    }
}

impl CapFs {
    /// Opens the directory `dir` (which must exist) as the root of a new
    /// filesystem. This is the only use of ambient authority: `dir` itself
    /// may be reached through symlinks, nothing beneath it will be.
    pub fn open(dir: &Path) -> FsResult<CapFs> {
        CapFs::open_resolving(dir, true)
    }

    fn open_resolving(dir: &Path, whole_paths: bool) -> FsResult<CapFs> {
        let shown = dir.display().to_string();
        let root = Dir::open_ambient_dir(dir, ambient_authority()).map_err(|e| io_err(e, &shown))?;
        // The canonical path makes notify's event paths comparable with ours.
        let root_path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let beneath = whole_paths && beneath::supported(&root);
        let tree_sync = TreeSync::open(&root);
        Ok(CapFs { inner: Arc::new(Inner { root, root_path, beneath, tree_sync }) })
    }

    /// [`CapFs::open`], but resolving every path one component at a time as
    /// on a kernel without `openat2`, so tests cover that fallback too.
    #[doc(hidden)]
    pub fn open_walking(dir: &Path) -> FsResult<CapFs> {
        CapFs::open_resolving(dir, false)
    }

    /// The real path of the root directory (as canonicalized at open time).
    pub fn root_path(&self) -> &Path {
        &self.inner.root_path
    }

    async fn run<T, F>(&self, f: F) -> FsResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> FsResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || f(&inner)).await
    }
}

/// Opens [`CapFs`] roots: the [`FsProvider`] of the real disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapFsProvider;

impl FsProvider for CapFsProvider {
    fn open(&self, dir: &str) -> FsResult<OpenedDir> {
        Ok(OpenedDir { fs: Arc::new(CapFs::open(Path::new(dir))?), guard: None })
    }
}

async fn blocking<T, F>(f: F) -> FsResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> FsResult<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(FsError::new(FsErrorKind::Io, format!("blocking filesystem task failed: {e}"))),
    }
}

/// A directory handle: the root (borrowed) or one opened beneath it.
enum DirRef<'a> {
    Root(&'a Dir),
    Sub(Dir),
}

impl Deref for DirRef<'_> {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        match self {
            DirRef::Root(d) => d,
            DirRef::Sub(d) => d,
        }
    }
}

fn is_symlink_in(dir: &Dir, name: &str) -> bool {
    dir.symlink_metadata(name).map(|m| m.file_type().is_symlink()).unwrap_or(false)
}

/// Turns an error on `name` in `dir` into `Symlink` if `name` is a link.
fn refine(dir: &Dir, name: &str, e: io::Error, path: &RelPath) -> FsError {
    if e.kind() != io::ErrorKind::NotFound && is_symlink_in(dir, name) {
        return FsError::new(FsErrorKind::Symlink, format!("{path}: is a symbolic link, which is never followed"));
    }
    io_err(e, &path.to_string())
}

impl Inner {
    /// Opens the directory `path`, refusing a symlink in any component.
    fn open_dir(&self, path: &RelPath) -> FsResult<DirRef<'_>> {
        if path.is_root() {
            return Ok(DirRef::Root(&self.root));
        }
        self.check_len(path)?;
        if self.beneath {
            return match beneath::open_dir(&self.root, path.as_str()) {
                Ok(dir) => Ok(DirRef::Sub(dir)),
                Err(e) if os_kind(&e) == Some(FsErrorKind::Symlink) => {
                    Err(FsError::new(FsErrorKind::Symlink, format!("{path}: a component is a symbolic link, which is never followed")))
                }
                // EAGAIN: a concurrent rename raced the lookup; walk instead.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.walk_dir(path),
                Err(e) => Err(io_err(e, &path.to_string())),
            };
        }
        self.walk_dir(path)
    }

    /// [`Inner::open_dir`] one component at a time, each opened without
    /// following links.
    fn walk_dir(&self, path: &RelPath) -> FsResult<DirRef<'_>> {
        let mut cur = DirRef::Root(&self.root);
        let mut walked = RelPath::root();
        for c in path.components() {
            walked = walked.join_local(c).map_err(|e| FsError::new(FsErrorKind::InvalidPath, format!("{path}: {e}")))?;
            let next = cur.open_dir_nofollow(c).map_err(|e| refine(&cur, c, e, &walked))?;
            cur = DirRef::Sub(next);
        }
        Ok(cur)
    }

    /// Refuses a path the platform cannot open (Windows' 260 characters).
    fn check_len(&self, path: &RelPath) -> FsResult<()> {
        platform::check_path_len(&self.root_path, path.as_str()).map_err(|e| FsError::new(FsErrorKind::InvalidPath, e))
    }

    /// Opens the parent directory of `path` and returns it with the last
    /// component. Fails with `InvalidPath` for the root.
    fn open_parent<'p>(&self, path: &'p RelPath) -> FsResult<(DirRef<'_>, &'p str)> {
        self.check_len(path)?;
        let parent = path.parent().ok_or_else(|| FsError::new(FsErrorKind::InvalidPath, "the root has no parent"))?;
        let dir = self.open_dir(&parent)?;
        Ok((dir, path.file_name()))
    }

    fn read_dir(&self, path: &RelPath) -> FsResult<Vec<DirEntry>> {
        let dir = self.open_dir(path)?;
        let shown = path.to_string();
        let mut out = Vec::new();
        for entry in dir.entries().map_err(|e| io_err(e, &shown))? {
            let entry = entry.map_err(|e| io_err(e, &shown))?;
            let m = match entry.metadata() {
                Ok(m) => convert_metadata(&m),
                // Removed between listing and stat: it is simply gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e, &shown)),
            };
            // Non-UTF-8 names cannot be represented; they are shown lossily
            // (and then fail to resolve), never silently hidden.
            let name = entry.file_name().to_string_lossy().into_owned();
            let len = if m.kind == FileKind::File { m.len } else { 0 };
            out.push(DirEntry { name, kind: m.kind, len, modified_ns: m.modified_ns });
        }
        Ok(out)
    }

    fn metadata(&self, path: &RelPath) -> FsResult<Metadata> {
        let m = if path.is_root() {
            self.root.dir_metadata().map_err(|e| io_err(e, "."))?
        } else {
            let (dir, name) = self.open_parent(path)?;
            dir.symlink_metadata(name).map_err(|e| io_err(e, &path.to_string()))?
        };
        Ok(convert_metadata(&m))
    }

    fn open_file(&self, path: &RelPath, write: bool) -> FsResult<File> {
        self.open_file_len(path, write).map(|(file, _)| file)
    }

    /// [`Inner::open_file`], with the file's length (read from the open
    /// handle anyway, to check its kind).
    fn open_file_len(&self, path: &RelPath, write: bool) -> FsResult<(File, u64)> {
        let (dir, name) = self.open_parent(path)?;
        open_in(&dir, name, path, write)
    }

    /// [`Inner::metadata`] of many paths, each parent directory opened once
    /// for a run of paths that share it (a manifest lists its files sorted,
    /// so a directory's files come together).
    fn metadata_many(&self, paths: &[RelPath]) -> Vec<FsResult<Metadata>> {
        let mut parents = ParentCache::default();
        paths
            .iter()
            .map(|path| {
                if path.is_root() {
                    return self.metadata(path);
                }
                let dir = parents.open(self, path)?;
                dir.symlink_metadata(path.file_name()).map(|m| convert_metadata(&m)).map_err(|e| io_err(e, &path.to_string()))
            })
            .collect()
    }
}

/// The parent directory of the previous path of a batch, kept open while
/// the next paths share it: a batch of a directory's files costs one
/// directory lookup, not one per file.
#[derive(Default)]
struct ParentCache<'a> {
    open: Option<(RelPath, DirRef<'a>)>,
}

impl<'a> ParentCache<'a> {
    fn open(&mut self, inner: &'a Inner, path: &RelPath) -> FsResult<&DirRef<'a>> {
        let parent = path.parent().ok_or_else(|| FsError::new(FsErrorKind::InvalidPath, "the root has no parent"))?;
        if self.open.as_ref().is_none_or(|(p, _)| *p != parent) {
            self.open = None;
            let dir = inner.open_dir(&parent)?;
            self.open = Some((parent, dir));
        }
        Ok(&self.open.as_ref().expect("opened above").1)
    }
}

/// Opens the regular file `name` in `dir` (`path` is its full path, for
/// errors), never following a link and never blocking on a special file.
fn open_in(dir: &Dir, name: &str, path: &RelPath, write: bool) -> FsResult<(File, u64)> {
    if write {
        if let Some(file) = create_new_in(dir, name) {
            return Ok((file, 0));
        }
    }
    if let Ok(m) = dir.symlink_metadata(name) {
        check_regular(kind_of(m.file_type()), path)?;
    }
    let mut opts = OpenOptions::new();
    opts.read(true).follow(FollowSymlinks::No);
    if write {
        opts.write(true).create(true).truncate(false);
    }
    nonblocking(&mut opts);
    let file = dir.open_with(name, &opts).map_err(|e| refine(dir, name, e, path))?;
    // Re-check on the open handle: the entry may have been swapped.
    let m = file.metadata().map_err(|e| io_err(e, &path.to_string()))?;
    check_regular(kind_of(m.file_type()), path)?;
    Ok((file, m.len()))
}

/// Creates `name` in `dir` if nothing is there (`O_CREAT | O_EXCL`, which
/// never follows a link: a dangling symlink makes it fail with `EEXIST`).
/// A file made here is new and regular, so the checks [`open_in`] makes on
/// an existing entry (two `statx` per file) are not needed: a download or an
/// install of 16,000 new files saves 32,000 system calls. `None`: something
/// is there (or the create failed), and the caller opens it the checked way.
fn create_new_in(dir: &Dir, name: &str) -> Option<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create_new(true).follow(FollowSymlinks::No);
    nonblocking(&mut opts);
    dir.open_with(name, &opts).ok()
}

impl Inner {
    /// [`Fs::write_pieces`] on this thread: consecutive pieces of one file
    /// share one open, and the previous file is closed before the next one
    /// is opened.
    fn write_pieces(&self, pieces: &[WritePiece]) -> FsResult<()> {
        let mut parents = ParentCache::default();
        let mut open: Option<(&RelPath, File)> = None;
        for piece in pieces {
            if open.as_ref().is_none_or(|(p, _)| *p != &piece.path) {
                // Close the previous file before opening the next.
                drop(open.take());
                let dir = parents.open(self, &piece.path)?;
                open = Some((&piece.path, open_in(dir, piece.path.file_name(), &piece.path, true)?.0));
            }
            let Some((_, file)) = &open else { unreachable!("opened above") };
            platform::write_all_at(file, &piece.data, piece.offset).map_err(|e| io_err(e, &piece.path.to_string()))?;
        }
        Ok(())
    }

    /// [`Fs::read_pieces`] on this thread, one file open at a time. A range
    /// past the end fails before anything is allocated for it.
    fn read_pieces(&self, pieces: &[ReadPiece]) -> FsResult<Vec<Bytes>> {
        let mut parents = ParentCache::default();
        let mut out = Vec::with_capacity(pieces.len());
        let mut open: Option<(&RelPath, File, u64)> = None;
        for piece in pieces {
            if open.as_ref().is_none_or(|(p, _, _)| *p != &piece.path) {
                // Close the previous file before opening the next.
                drop(open.take());
                let dir = parents.open(self, &piece.path)?;
                let (file, len) = open_in(dir, piece.path.file_name(), &piece.path, false)?;
                open = Some((&piece.path, file, len));
            }
            let Some((_, file, len)) = &open else { unreachable!("opened above") };
            out.push(read_exact_piece(file, *len, piece)?);
        }
        Ok(out)
    }

    /// [`Fs::sync_tree`]: one `syncfs` where it covers the tree (see
    /// [`TreeSync`]), else a walk that syncs each entry.
    fn sync_tree(&self, dir: &RelPath) -> FsResult<()> {
        // Refuses a missing directory, a file and a symlink on the way, as
        // every other call does, before anything is synced.
        let handle = self.open_dir(dir)?;
        if let Some(syncfs) = self.tree_sync.covering(&handle) {
            return syncfs.sync(dir);
        }
        drop(handle);
        self.sync_tree_walk(dir)
    }

    /// Syncs every regular file beneath `dir`, then every directory,
    /// children before parents (so a parent's entries name durable
    /// children). Symlinks and special files are not followed.
    fn sync_tree_walk(&self, dir: &RelPath) -> FsResult<()> {
        let mut stack = vec![dir.clone()];
        let mut dirs = Vec::new();
        while let Some(d) = stack.pop() {
            for e in self.read_dir(&d)? {
                let p = join_entry(&d, &e.name)?;
                match e.kind {
                    FileKind::Dir => stack.push(p),
                    FileKind::File => self.sync_file(&p)?,
                    FileKind::Symlink | FileKind::Other => {}
                }
            }
            dirs.push(d);
        }
        dirs.iter().rev().try_for_each(|d| self.sync_dir(d))
    }

    /// [`Fs::remove_dir_all`] on this thread, with the default's rules and
    /// errors (a symlink at `dir` is refused, links inside are removed as
    /// links, nothing is followed), but each directory is opened once and
    /// its files are unlinked through that handle, using the kind the
    /// listing reports (no `stat` per entry).
    fn remove_dir_all(&self, dir: &RelPath) -> FsResult<()> {
        match self.metadata(dir)?.kind {
            FileKind::Dir => {}
            FileKind::Symlink => return Err(FsError::new(FsErrorKind::Symlink, format!("{dir}: is a symlink"))),
            _ => return Err(FsError::new(FsErrorKind::NotADirectory, format!("{dir}: not a directory"))),
        }
        // Iterative post-order walk, so hostile depth cannot overflow the
        // stack; one directory handle open at a time.
        let mut stack = vec![(dir.clone(), false)];
        while let Some((d, visited)) = stack.pop() {
            if visited {
                self.remove_dir(&d)?;
                continue;
            }
            stack.push((d.clone(), true));
            stack.extend(self.remove_files_in(&d)?.into_iter().map(|sub| (sub, false)));
        }
        Ok(())
    }

    /// Unlinks every non-directory entry of `d` and returns its
    /// subdirectories.
    fn remove_files_in(&self, d: &RelPath) -> FsResult<Vec<RelPath>> {
        let shown = d.to_string();
        let handle = self.open_dir(d)?;
        let mut subdirs = Vec::new();
        for entry in handle.entries().map_err(|e| io_err(e, &shown))? {
            let entry = entry.map_err(|e| io_err(e, &shown))?;
            let name = entry.file_name();
            let p = join_entry(d, &name.to_string_lossy())?;
            if entry.file_type().map_err(|e| io_err(e, &p.to_string()))?.is_dir() {
                subdirs.push(p);
            } else {
                unless_held_open(|| handle.remove_file_or_symlink(&name), || p.to_string(), || None)?;
            }
        }
        Ok(subdirs)
    }

    fn create_dir(&self, path: &RelPath) -> FsResult<()> {
        let (dir, name) = self.open_parent(path)?;
        dir.create_dir(name).map_err(|e| io_err(e, &path.to_string()))
    }

    /// [`Fs::create_dir_all`] on this thread, with the default's rules and
    /// errors, trying the deepest directory first: when the parent exists
    /// (the usual case) it costs one `mkdirat`.
    fn create_dir_all(&self, dir: &RelPath) -> FsResult<()> {
        let mut missing = Vec::new();
        let mut cur = dir.clone();
        while !cur.is_root() {
            match self.create_dir_or_find(&cur) {
                Err(e) if e.kind == FsErrorKind::NotFound => {
                    let parent = cur.parent().unwrap_or_else(RelPath::root);
                    missing.push(std::mem::replace(&mut cur, parent));
                }
                r => {
                    r?;
                    break;
                }
            }
        }
        missing.iter().rev().try_for_each(|d| self.create_dir_or_find(d))
    }

    /// Creates one directory; an existing directory is fine, a symlink or
    /// anything else in its place is not (as [`Fs::create_dir_all`] says).
    fn create_dir_or_find(&self, dir: &RelPath) -> FsResult<()> {
        match self.create_dir(dir) {
            Err(e) if e.kind == FsErrorKind::AlreadyExists => match self.metadata(dir)?.kind {
                FileKind::Dir => Ok(()),
                FileKind::Symlink => Err(FsError::new(FsErrorKind::Symlink, format!("{dir}: is a symlink"))),
                _ => Err(FsError::new(FsErrorKind::NotADirectory, format!("{dir}: not a directory"))),
            },
            r => r,
        }
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> FsResult<()> {
        let (from_dir, from_name) = self.open_parent(from)?;
        let (to_dir, to_name) = self.open_parent(to)?;
        let what = || format!("rename {from} -> {to}");
        // Windows refuses to rename a directory over another one (Access
        // denied); say so as Unix does for a non-empty one, and at once.
        let over_a_dir = || match (self.metadata(from).map(|m| m.kind), self.metadata(to).map(|m| m.kind)) {
            (Ok(FileKind::Dir), Ok(FileKind::Dir)) => {
                Some(FsError::new(FsErrorKind::AlreadyExists, format!("{}: the target exists", what())))
            }
            _ => None,
        };
        unless_held_open(|| from_dir.rename(from_name, &to_dir, to_name), what, over_a_dir).map_err(|mut err| {
            // A rename over a non-empty directory: the target exists.
            if err.kind == FsErrorKind::NotEmpty {
                err.kind = FsErrorKind::AlreadyExists;
            }
            err
        })
    }

    fn remove_file(&self, path: &RelPath) -> FsResult<()> {
        let (dir, name) = self.open_parent(path)?;
        // Windows answers a removal of a directory with Access denied.
        let a_dir = || {
            let is_dir = dir.symlink_metadata(name).is_ok_and(|m| m.is_dir());
            is_dir.then(|| FsError::new(FsErrorKind::IsADirectory, format!("{path}: is a directory")))
        };
        unless_held_open(|| dir.remove_file_or_symlink(name), || path.to_string(), a_dir)
    }

    fn remove_dir(&self, path: &RelPath) -> FsResult<()> {
        let (dir, name) = self.open_parent(path)?;
        platform::retry_held_open(|| dir.remove_dir(name), platform::is_held_open, &platform::HELD_OPEN_BACKOFF, std::thread::sleep)
            .map_err(|r| match r {
                platform::Retry::HeldOpen(e) => held_open_err(e, &path.to_string()),
                platform::Retry::Failed(e) => refine(&dir, name, e, path),
            })
    }

    fn sync_file(&self, path: &RelPath) -> FsResult<()> {
        let file = self.open_file(path, true)?;
        file.sync_all().map_err(|e| io_err(e, &path.to_string()))
    }

    fn sync_dir(&self, path: &RelPath) -> FsResult<()> {
        let dir = self.open_dir(path)?;
        // Directory handles may be `O_PATH`, which cannot be synced: open
        // the directory itself for reading.
        let mut opts = OpenOptions::new();
        opts.read(true).maybe_dir(true).follow(FollowSymlinks::No);
        let file = dir.open_with(".", &opts).map_err(|e| io_err(e, &path.to_string()))?;
        platform::sync_dir_handle(&file).map_err(|e| io_err(e, &path.to_string()))
    }

    fn free_space(&self) -> FsResult<Option<u64>> {
        platform::free_space(&self.root, &self.root_path).map(Some).map_err(|e| io_err(e, "."))
    }
}

/// Runs a rename or a removal, waiting out another program that holds the
/// file open (see [`platform::retry_held_open`]); `what` names the file in
/// the error. Before each wait, `explain` may recognize the failure as one
/// that waiting cannot cure (Windows answers a few plain mistakes with the
/// same Access denied) and end it with its own error.
fn unless_held_open(op: impl FnMut() -> io::Result<()>, what: impl Fn() -> String, explain: impl Fn() -> Option<FsError>) -> FsResult<()> {
    let mut explained = None;
    let held_open = |e: &io::Error| {
        if !platform::is_held_open(e) {
            return false;
        }
        explained = explain();
        explained.is_none()
    };
    let r = platform::retry_held_open(op, held_open, &platform::HELD_OPEN_BACKOFF, std::thread::sleep);
    r.map_err(|r| match (explained.take(), r) {
        (Some(err), _) => err,
        (None, platform::Retry::HeldOpen(e)) => held_open_err(e, &what()),
        (None, platform::Retry::Failed(e)) => io_err(e, &what()),
    })
}

/// The error of an operation that met a file held open through every
/// retry: [`FsErrorKind::HeldOpen`] for a sharing violation; an access
/// denied, which may also be a real permission, keeps its kind.
fn held_open_err(e: io::Error, what: &str) -> FsError {
    let sharing = platform::is_sharing_violation(&e);
    let mut err = io_err(e, &format!("{what}: another program may hold it open (close the game, or wait for a virus scan to finish)"));
    if sharing {
        err.kind = FsErrorKind::HeldOpen;
    }
    err
}

/// One-call resolution of a whole relative path with `openat2`:
/// `RESOLVE_BENEATH` keeps it under the root and `RESOLVE_NO_SYMLINKS` makes
/// any link in any component fail with `ELOOP`, the same guarantee as the
/// component walk at a fraction of the system calls (one instead of one per
/// component, which dominated creating the files of a download).
#[cfg(target_os = "linux")]
mod beneath {
    use cap_std::fs::{Dir, File};
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    use std::io;

    fn resolve() -> ResolveFlags {
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
    }

    /// No `O_NOFOLLOW`: with `O_PATH` it would open a final link itself
    /// (then fail as "not a directory"); `RESOLVE_NO_SYMLINKS` already makes
    /// a link in any position, the last one included, fail with `ELOOP`.
    fn dir_flags() -> OFlags {
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
    }

    /// Whether `openat2` works here (it may be missing or filtered).
    pub(super) fn supported(root: &Dir) -> bool {
        openat2(root, ".", dir_flags(), Mode::empty(), resolve()).is_ok()
    }

    pub(super) fn open_dir(root: &Dir, path: &str) -> io::Result<Dir> {
        let fd = openat2(root, path, dir_flags(), Mode::empty(), resolve())?;
        Ok(Dir::from_std_file(std::fs::File::from(fd)))
    }

    /// A second, `O_DIRECT` descriptor for writing to the file `same` has
    /// open at `path`; `None` if it cannot be opened or the path now names
    /// another file.
    pub(super) fn open_direct(root: &Dir, path: &str, same: &File) -> Option<File> {
        let flags = OFlags::WRONLY | OFlags::DIRECT | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat2(root, path, flags, Mode::empty(), resolve()).ok()?;
        let (a, b) = (rustix::fs::fstat(&fd).ok()?, rustix::fs::fstat(same).ok()?);
        (a.st_dev == b.st_dev && a.st_ino == b.st_ino).then(|| File::from_std(std::fs::File::from(fd)))
    }
}

#[cfg(not(target_os = "linux"))]
mod beneath {
    use cap_std::fs::Dir;
    use std::io;

    pub(super) fn supported(_root: &Dir) -> bool {
        false
    }

    pub(super) fn open_dir(_root: &Dir, _path: &str) -> io::Result<Dir> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub(super) fn open_direct(_root: &Dir, _path: &str, _same: &cap_std::fs::File) -> Option<cap_std::fs::File> {
        None
    }
}

/// `dir/name` for a name read from the disk (the default walks of the port
/// fail the same way on a name that is not one real component).
fn join_entry(dir: &RelPath, name: &str) -> FsResult<RelPath> {
    dir.join_local(name).map_err(|err| FsError::new(FsErrorKind::InvalidPath, format!("{dir}/{name}: {err}")))
}

/// Reads exactly `piece.len` bytes at `piece.offset` of `file` (whose
/// length was `len` when opened); a range past the end is an error.
fn read_exact_piece(file: &File, len: u64, piece: &ReadPiece) -> FsResult<Bytes> {
    let shown = piece.path.to_string();
    let past_end = || FsError::new(FsErrorKind::Io, format!("{shown}: {} bytes at {} are past the end", piece.len, piece.offset));
    let end = piece.offset.checked_add(piece.len as u64).ok_or_else(past_end)?;
    if end > len {
        return Err(past_end());
    }
    let mut buf = Vec::with_capacity(piece.len);
    while buf.len() < piece.len {
        match platform::read_into_spare(file, &mut buf, piece.offset) {
            // Shrunk since it was opened.
            Ok(0) => return Err(past_end()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e, &shown)),
        }
    }
    Ok(Bytes::from(buf))
}

/// How [`Fs::sync_tree`] makes a tree durable.
///
/// On Linux: one `syncfs(2)` through a descriptor of the root directory
/// opened once, when the [`CapFs`] is opened, and kept. `syncfs` writes back
/// and flushes everything of the filesystem (data, lengths and directory
/// entries of every file, the tree's included), so it is more than asked
/// and costs one system call instead of one `fsync` per file.
///
/// Why it is *correct*, not only cheap: since Linux 5.8 each superblock
/// keeps an `errseq_t` of write-back errors, and `syncfs` reports every
/// error recorded since the previous `syncfs` through the *same open file*
/// (the file samples the sequence when it is opened). That is why the
/// descriptor is opened once and kept: a download or unpack closes each
/// file as soon as it is written, and an `fsync` through a descriptor
/// opened after a write-back error does not report it, but this descriptor
/// predates every write made through this `CapFs`. It is conservative: a
/// write-back error of an unrelated file on the same filesystem fails the
/// call too. Calls are serialized (one cursor), and an error is reported to
/// every call that was already waiting when another call consumed it; a
/// call that starts after an error was reported does not see it again.
/// Kernels before 5.8 report no write-back error through `syncfs`.
///
/// A tree on another filesystem than the root (a mount point beneath the
/// game directory) is not covered by the root's `syncfs`; it is synced by a
/// walk, as on other systems.
///
/// Elsewhere the walk is the tree sync: on macOS `F_FULLFSYNC` per file and
/// directory (std's `sync_all`); on Windows `FlushFileBuffers` per file,
/// each opened for writing (nothing else flushes its cached data), and no
/// directory flush (see `platform::sync_dir_handle`). `FlushFileBuffers`
/// fails when the file's cached data cannot be written, and that error
/// fails the call, so the transaction that asked does not commit.
struct TreeSync {
    /// `None` off Linux, or if the root could not be opened for reading:
    /// then every tree is walked.
    syncfs: Option<syncfs::Syncfs>,
}

impl TreeSync {
    fn open(root: &Dir) -> TreeSync {
        TreeSync { syncfs: syncfs::Syncfs::open(root).ok() }
    }

    /// The `syncfs` that covers the directory `dir`, if one does.
    fn covering(&self, dir: &Dir) -> Option<&syncfs::Syncfs> {
        self.syncfs.as_ref().filter(|s| s.same_filesystem(dir))
    }
}

#[cfg(not(target_os = "linux"))]
mod syncfs {
    use cap_std::fs::Dir;
    use lanspread_ports::{FsResult, RelPath};
    use std::io;

    /// No `syncfs` here: never opened, so every tree is walked.
    pub(super) struct Syncfs;

    impl Syncfs {
        pub(super) fn open(_root: &Dir) -> io::Result<Syncfs> {
            Err(io::ErrorKind::Unsupported.into())
        }

        pub(super) fn same_filesystem(&self, _dir: &Dir) -> bool {
            false
        }

        pub(super) fn sync(&self, _dir: &RelPath) -> FsResult<()> {
            Ok(())
        }
    }
}

#[cfg(target_os = "linux")]
mod syncfs {
    use super::io_err;
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt};
    use cap_std::fs::{Dir, File, OpenOptions};
    use lanspread_ports::{FsError, FsErrorKind, FsResult, RelPath};
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// The kept descriptor and the bookkeeping of errors it reported.
    pub(super) struct Syncfs {
        /// A readable descriptor of the root (the root handle itself may be
        /// `O_PATH`, which `syncfs` refuses); the lock serializes calls.
        fd: Mutex<File>,
        /// Device of the root, to tell whether a directory is on it.
        dev: u64,
        /// Write-back errors reported so far.
        errors: AtomicU64,
        /// `syncfs` calls made (tests check that a tree costs one).
        pub(super) calls: AtomicU64,
    }

    impl Syncfs {
        pub(super) fn open(root: &Dir) -> io::Result<Syncfs> {
            let mut opts = OpenOptions::new();
            opts.read(true).maybe_dir(true).follow(FollowSymlinks::No);
            let fd = root.open_with(".", &opts)?;
            let dev = rustix::fs::fstat(&fd)?.st_dev;
            Ok(Syncfs { fd: Mutex::new(fd), dev, errors: AtomicU64::new(0), calls: AtomicU64::new(0) })
        }

        pub(super) fn same_filesystem(&self, dir: &Dir) -> bool {
            rustix::fs::fstat(dir).is_ok_and(|st| st.st_dev == self.dev)
        }

        /// One `syncfs`; see [`super::TreeSync`] for what it reports.
        pub(super) fn sync(&self, dir: &RelPath) -> FsResult<()> {
            let seen = self.errors.load(Ordering::Acquire);
            let fd = self.fd.lock().unwrap_or_else(|e| e.into_inner());
            self.calls.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = rustix::fs::syncfs(&*fd) {
                self.errors.fetch_add(1, Ordering::AcqRel);
                return Err(io_err(e.into(), &format!("sync of {dir} (syncfs)")));
            }
            if self.errors.load(Ordering::Acquire) != seen {
                return Err(FsError::new(
                    FsErrorKind::Io,
                    format!("sync of {dir}: a write-back error on this filesystem was reported while this sync waited"),
                ));
            }
            Ok(())
        }
    }
}

fn convert_metadata(m: &cap_std::fs::Metadata) -> Metadata {
    let modified_ns = m.modified().ok().and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos());
    Metadata { kind: kind_of(m.file_type()), len: m.len(), modified_ns }
}

fn check_regular(kind: FileKind, path: &RelPath) -> FsResult<()> {
    match kind {
        FileKind::File => Ok(()),
        FileKind::Dir => Err(FsError::new(FsErrorKind::IsADirectory, format!("{path}: is a directory"))),
        FileKind::Symlink => Err(FsError::new(FsErrorKind::Symlink, format!("{path}: is a symbolic link, which is never followed"))),
        FileKind::Other => Err(FsError::new(FsErrorKind::Io, format!("{path}: not a regular file"))),
    }
}

/// Opens never block, even on a FIFO planted where a file was expected.
#[cfg(unix)]
fn nonblocking(opts: &mut OpenOptions) {
    use cap_std::fs::OpenOptionsExt;
    opts.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
}

#[cfg(not(unix))]
fn nonblocking(_opts: &mut OpenOptions) {}

fn kind_of(t: cap_std::fs::FileType) -> FileKind {
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// Maps an I/O error to the port's error kinds.
fn io_err(e: io::Error, what: &str) -> FsError {
    use io::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => FsErrorKind::NotFound,
        K::AlreadyExists => FsErrorKind::AlreadyExists,
        K::NotADirectory => FsErrorKind::NotADirectory,
        K::IsADirectory => FsErrorKind::IsADirectory,
        K::DirectoryNotEmpty => FsErrorKind::NotEmpty,
        K::StorageFull => FsErrorKind::NoSpace,
        K::PermissionDenied if e.to_string().contains("outside of the filesystem") => FsErrorKind::InvalidPath,
        K::PermissionDenied => FsErrorKind::PermissionDenied,
        _ => os_kind(&e).unwrap_or(FsErrorKind::Io),
    };
    FsError::new(kind, format!("{what}: {e}"))
}

#[cfg(unix)]
fn os_kind(e: &io::Error) -> Option<FsErrorKind> {
    use rustix::io::Errno;
    match Errno::from_io_error(e)? {
        Errno::LOOP => Some(FsErrorKind::Symlink),
        Errno::DQUOT | Errno::NOSPC => Some(FsErrorKind::NoSpace),
        Errno::PERM | Errno::ACCESS => Some(FsErrorKind::PermissionDenied),
        _ => None,
    }
}

#[cfg(not(unix))]
fn os_kind(_e: &io::Error) -> Option<FsErrorKind> {
    None
}

/// Reads of at most this many bytes allocate their buffer without asking
/// the file's size first.
const SMALL_READ: usize = 1 << 20;

/// An open file on the real disk.
struct CapFile {
    file: Arc<File>,
    path: RelPath,
    /// For handles opened for writing: large aligned writes bypass the page
    /// cache (see [`Direct`]).
    direct: Option<Arc<Direct>>,
}

/// Writes of whole aligned chunks through a second descriptor of the same
/// inode opened with `O_DIRECT`. A download writes every byte once and
/// fsyncs it before the commit, so the page cache only costs it: filling
/// fresh page-cache pages was half of the downloader's CPU in the loopback
/// profile. Unaligned writes (file tails, buffers not on a page boundary)
/// and filesystems that refuse `O_DIRECT` (tmpfs) use the ordinary
/// descriptor; `fsync` of either descriptor covers the inode.
struct Direct {
    inner: Arc<Inner>,
    /// Opened on the first eligible write; `None` inside: unavailable.
    fd: std::sync::OnceLock<Option<File>>,
    /// Set when the filesystem refused a direct write (EINVAL).
    refused: AtomicBool,
}

/// Alignment of direct writes (offset, length and buffer address).
const DIRECT_ALIGN: usize = 4096;
/// Direct writes are used for aligned writes between these sizes.
const DIRECT_MIN: usize = 64 * 1024;
const DIRECT_MAX: usize = 4 << 20;

impl Direct {
    /// Whether a write can go direct: a whole number of aligned blocks at
    /// an aligned offset, from aligned memory (the wire layer receives
    /// chunks into page-aligned buffers for this; anything else is simply
    /// written through the page cache, never copied to align it).
    fn eligible(&self, offset: u64, data: &[u8]) -> bool {
        let len = data.len();
        (DIRECT_MIN..=DIRECT_MAX).contains(&len)
            && data.as_ptr().addr().is_multiple_of(DIRECT_ALIGN)
            && len.is_multiple_of(DIRECT_ALIGN)
            && offset.is_multiple_of(DIRECT_ALIGN as u64)
            && !self.refused.load(Ordering::Relaxed)
    }

    /// Writes `data` at `offset` directly; `Ok(false)` if direct IO is not
    /// available here (the caller writes through the page cache instead).
    fn write(&self, file: &File, path: &RelPath, offset: u64, data: &[u8]) -> io::Result<bool> {
        let fd =
            self.fd.get_or_init(|| if self.inner.beneath { beneath::open_direct(&self.inner.root, path.as_str(), file) } else { None });
        let Some(fd) = fd else { return Ok(false) };
        match platform::write_all_at(fd, data, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                self.refused.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl CapFile {
    async fn run<T, F>(&self, f: F) -> FsResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&File) -> io::Result<T> + Send + 'static,
    {
        let file = self.file.clone();
        let shown = self.path.to_string();
        blocking(move || f(&file).map_err(|e| io_err(e, &shown))).await
    }
}

#[async_trait]
impl FileHandle for CapFile {
    async fn read_at(&self, offset: u64, len: usize) -> FsResult<Bytes> {
        self.run(move |f| {
            // Never allocate more than what the file can give: a large read
            // asks the size first; a small one (every chunk-sized read of a
            // download or scan) skips that system call.
            let want = if len <= SMALL_READ {
                len
            } else {
                let avail = f.metadata()?.len().saturating_sub(offset);
                usize::try_from(avail).map_or(len, |a| a.min(len))
            };
            let mut buf = Vec::with_capacity(want);
            while buf.len() < want {
                match platform::read_into_spare(f, &mut buf, offset) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> FsResult<()> {
        let direct = self.direct.clone().filter(|d| d.eligible(offset, &data));
        let path = self.path.clone();
        self.run(move |f| {
            if let Some(d) = direct {
                if d.write(f, &path, offset, &data)? {
                    return Ok(());
                }
            }
            platform::write_all_at(f, &data, offset)
        })
        .await
    }

    async fn set_len(&self, len: u64) -> FsResult<()> {
        self.run(move |f| f.set_len(len)).await
    }

    async fn len(&self) -> FsResult<u64> {
        self.run(|f| Ok(f.metadata()?.len())).await
    }

    async fn sync(&self) -> FsResult<()> {
        self.run(|f| f.sync_all()).await
    }
}

/// A live notify watch bridged into a tokio channel.
struct CapWatcher {
    dir: RelPath,
    rx: mpsc::Receiver<Option<String>>,
    overflowed: Arc<AtomicBool>,
    // Dropping the watcher stops the OS watch.
    _watcher: notify::RecommendedWatcher,
}

#[async_trait]
impl Watcher for CapWatcher {
    async fn next(&mut self) -> Option<WatchEvent> {
        if self.overflowed.swap(false, Ordering::AcqRel) {
            return Some(WatchEvent { dir: self.dir.clone(), name: None });
        }
        let name = self.rx.recv().await?;
        Some(WatchEvent { dir: self.dir.clone(), name })
    }
}

fn start_watch(inner: &Inner, dir: &RelPath) -> FsResult<CapWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    // Refuse a symlink anywhere on the way (notify itself would follow it).
    drop(inner.open_dir(dir)?);
    let real = dir.components().fold(inner.root_path.clone(), |p, c| p.join(c));
    let (tx, rx) = mpsc::channel(WATCH_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    let watched = real.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let names: Vec<Option<String>> = match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => return,
            Ok(ev) if ev.paths.is_empty() => vec![None],
            Ok(ev) => ev
                .paths
                .iter()
                .map(|p| match (p.parent(), p.file_name()) {
                    (Some(parent), Some(name)) if parent == watched => Some(name.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect(),
            Err(_) => vec![None],
        };
        for name in names {
            match tx.try_send(name) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => flag.store(true, Ordering::Release),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    };
    let shown = dir.to_string();
    let mut watcher = notify::recommended_watcher(handler).map_err(|e| notify_err(e, &shown))?;
    watcher.watch(&real, RecursiveMode::NonRecursive).map_err(|e| notify_err(e, &shown))?;
    Ok(CapWatcher { dir: dir.clone(), rx, overflowed, _watcher: watcher })
}

fn notify_err(e: notify::Error, what: &str) -> FsError {
    match e.kind {
        notify::ErrorKind::Io(io) => io_err(io, what),
        notify::ErrorKind::PathNotFound => FsError::new(FsErrorKind::NotFound, format!("{what}: not found")),
        other => FsError::new(FsErrorKind::Io, format!("{what}: watch failed: {other:?}")),
    }
}

#[async_trait]
impl Fs for CapFs {
    async fn read_dir(&self, dir: &RelPath) -> FsResult<Vec<DirEntry>> {
        let dir = dir.clone();
        self.run(move |i| i.read_dir(&dir)).await
    }

    async fn metadata(&self, path: &RelPath) -> FsResult<Metadata> {
        let path = path.clone();
        self.run(move |i| i.metadata(&path)).await
    }

    async fn metadata_many(&self, paths: &[RelPath]) -> Vec<FsResult<Metadata>> {
        let list = paths.to_vec();
        let n = list.len();
        match self.run(move |i| Ok(i.metadata_many(&list))).await {
            Ok(all) => all,
            Err(e) => vec![Err(e); n],
        }
    }

    async fn sync_file(&self, path: &RelPath) -> FsResult<()> {
        let p = path.clone();
        self.run(move |i| i.sync_file(&p)).await
    }

    async fn sync_files(&self, paths: &[RelPath]) -> FsResult<()> {
        let list = paths.to_vec();
        self.run(move |i| list.iter().try_for_each(|p| i.sync_file(p))).await
    }

    async fn sync_dirs(&self, dirs: &[RelPath]) -> FsResult<()> {
        let list = dirs.to_vec();
        self.run(move |i| list.iter().try_for_each(|d| i.sync_dir(d))).await
    }

    /// One `syncfs(2)` on Linux (see [`TreeSync`]); elsewhere one walk that
    /// fsyncs every file and directory. Either way on one blocking thread.
    async fn sync_tree(&self, dir: &RelPath) -> FsResult<()> {
        let dir = dir.clone();
        self.run(move |i| i.sync_tree(&dir)).await
    }

    async fn write_pieces(&self, pieces: Vec<WritePiece>) -> FsResult<()> {
        if pieces.is_empty() {
            return Ok(());
        }
        self.run(move |i| i.write_pieces(&pieces)).await
    }

    async fn read_pieces(&self, pieces: &[ReadPiece]) -> FsResult<Vec<Bytes>> {
        if pieces.is_empty() {
            return Ok(Vec::new());
        }
        let list = pieces.to_vec();
        self.run(move |i| i.read_pieces(&list)).await
    }

    async fn create_dir_all(&self, dir: &RelPath) -> FsResult<()> {
        let dir = dir.clone();
        self.run(move |i| i.create_dir_all(&dir)).await
    }

    async fn remove_dir_all(&self, dir: &RelPath) -> FsResult<()> {
        let dir = dir.clone();
        self.run(move |i| i.remove_dir_all(&dir)).await
    }

    async fn open_read(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        let p = path.clone();
        let file = self.run(move |i| i.open_file(&p, false)).await?;
        Ok(Box::new(CapFile { file: Arc::new(file), path: path.clone(), direct: None }))
    }

    async fn open_write(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        let p = path.clone();
        let file = self.run(move |i| i.open_file(&p, true)).await?;
        let direct = Direct { inner: self.inner.clone(), fd: std::sync::OnceLock::new(), refused: AtomicBool::new(false) };
        Ok(Box::new(CapFile { file: Arc::new(file), path: path.clone(), direct: Some(Arc::new(direct)) }))
    }

    async fn create_dir(&self, path: &RelPath) -> FsResult<()> {
        let path = path.clone();
        self.run(move |i| i.create_dir(&path)).await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> FsResult<()> {
        let (from, to) = (from.clone(), to.clone());
        self.run(move |i| i.rename(&from, &to)).await
    }

    async fn remove_file(&self, path: &RelPath) -> FsResult<()> {
        let path = path.clone();
        self.run(move |i| i.remove_file(&path)).await
    }

    async fn remove_dir(&self, path: &RelPath) -> FsResult<()> {
        let path = path.clone();
        self.run(move |i| i.remove_dir(&path)).await
    }

    async fn sync_dir(&self, dir: &RelPath) -> FsResult<()> {
        let dir = dir.clone();
        self.run(move |i| i.sync_dir(&dir)).await
    }

    async fn watch(&self, dir: &RelPath) -> FsResult<Box<dyn Watcher>> {
        let dir = dir.clone();
        let w = self.run(move |i| start_watch(i, &dir)).await?;
        Ok(Box::new(w))
    }

    async fn free_space(&self) -> FsResult<Option<u64>> {
        self.run(|i| i.free_space()).await
    }
}

// These look inside `syncfs` and plant symbolic links: Unix only.
#[cfg(all(test, unix))]
mod tests;
