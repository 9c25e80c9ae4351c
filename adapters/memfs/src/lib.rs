//! A deterministic in-memory filesystem implementing the
//! [`lanspread_ports::Fs`] port, with a crash model and fault injection.
//!
//! * **Deterministic**: ordered maps only, no clock. `modified_ns` comes
//!   from a logical counter that advances on every mutation.
//! * **Cheap to clone**: clones share one filesystem (an `Arc` inside).
//! * **Never follows symlinks** (the port contract): [`MemFs::symlink`]
//!   plants a link; opening through it fails with
//!   [`FsErrorKind::Symlink`], metadata reports [`FileKind::Symlink`].
//! * **Crash model**: every mutating port operation (file creation,
//!   `write_at`, `set_len`, `sync`, `create_dir`, `rename`, `remove_file`,
//!   `remove_dir`, `sync_dir`, `sync_tree`) is recorded; batch calls are
//!   recorded as their single operations (`write_pieces` as one creation
//!   and one `write_at` per piece), except `sync_tree`, which is one
//!   operation, as atomic as one `syncfs`. [`MemFs::crash_state`] builds
//!   the filesystem that survives a crash right after the first `k`
//!   recorded operations under one of three [`CrashModel`]s. Durability is
//!   tracked per inode: a directory entry points to an inode, a rename moves
//!   the entry, `FileHandle::sync` records an inode's durable content and
//!   `sync_dir` a directory's durable entries. A rename between two
//!   directories is atomic: syncing either directory makes both halves
//!   durable.
//! * **Memory**: file content lives in copy-on-write chunks of 1 MiB
//!   shared between the live file, its durable copy, the baseline crash
//!   states replay from and the survivors of a crash: a synced file whose
//!   content did not change since costs no second copy, a write copies only
//!   the shared chunks it changes, and a file grown by `set_len` holds no
//!   bytes until written. A `read_at` within one chunk (a manifest chunk
//!   is one) lends the chunk instead of copying it.
//! * **Faults**: [`MemFs::fail_nth_op`] makes one future mutating operation
//!   fail (I/O error, disk full...); [`MemFs::set_capacity`] bounds the
//!   bytes stored, so writes beyond it fail with [`FsErrorKind::NoSpace`].
//! * **Open files**: [`MemFs::open_handles`] and [`MemFs::max_open_handles`]
//!   count live [`FileHandle`]s, so tests can prove that a component keeps
//!   a bounded number of files open (a real process has an `RLIMIT_NOFILE`).
//! * **Test helpers** ([`MemFs::write_file`], [`MemFs::mkdir_p`],
//!   [`MemFs::symlink`], [`MemFs::remove_all`]) change the filesystem
//!   durably at once and are not subject to faults; [`MemFs::tree`] takes a
//!   comparable snapshot; [`MemFs::scoped`] gives a view rooted at a
//!   subdirectory, so tests can keep a sentinel tree *outside* the root a
//!   component is given and check it was not touched.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod data;
mod state;

use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::StreamExt;
use lanspread_ports::fs::{DirEntry, FileHandle, FileKind, Fs, FsError, FsErrorKind, FsResult, Metadata, WatchEvent, Watcher};
use lanspread_ports::path::RelPath;
use state::{show, Body, Comps, Ino, Op, State};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use state::CrashModel;

/// One node of a [`MemFs::tree`] snapshot.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// A regular file and its content.
    File(Vec<u8>),
    /// A directory (its entries are listed as their own paths).
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::File(d) => match std::str::from_utf8(d) {
                Ok(s) if s.len() <= 64 => write!(f, "File({s:?})"),
                _ => write!(f, "File({} bytes)", d.len()),
            },
            Node::Dir => f.write_str("Dir"),
            Node::Symlink(t) => write!(f, "Symlink({t:?})"),
        }
    }
}

struct WatchReg {
    dir: Ino,
    path: RelPath,
    tx: mpsc::UnboundedSender<WatchEvent>,
}

struct World {
    state: State,
    base: State,
    log: Vec<Op>,
    recording: bool,
    capacity: Option<u64>,
    fail: Option<(u64, FsErrorKind)>,
    watchers: Vec<WatchReg>,
}

impl World {
    fn new(state: State, recording: bool, capacity: Option<u64>) -> Self {
        World { base: state.clone(), state, log: Vec::new(), recording, capacity, fail: None, watchers: Vec::new() }
    }
}

/// Live file handles, shared by every clone and view of one filesystem.
/// Atomics rather than a field of [`World`], so a handle's `Drop` never
/// takes the world lock.
#[derive(Default)]
struct HandleCount {
    open: AtomicUsize,
    max: AtomicUsize,
}

impl HandleCount {
    fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The in-memory filesystem (see the crate docs). Clones share state.
#[derive(Clone)]
pub struct MemFs {
    world: Arc<Mutex<World>>,
    handles: Arc<HandleCount>,
    /// Components of the view's root (empty for the real root).
    prefix: Comps,
}

impl Default for MemFs {
    fn default() -> Self {
        MemFs::new()
    }
}

impl fmt::Debug for MemFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemFs").field("root", &show(&self.prefix)).field("tree", &self.tree()).finish()
    }
}

fn split(path: &str) -> Comps {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| {
            assert!(c != "." && c != "..", "MemFs helper path {path:?} has a dot component");
            c.to_owned()
        })
        .collect()
}

impl MemFs {
    /// An empty filesystem that records operations.
    pub fn new() -> Self {
        MemFs { world: Arc::new(Mutex::new(World::new(State::new(), true, None))), handles: Arc::default(), prefix: Vec::new() }
    }

    /// An empty filesystem that does not record operations (for long
    /// simulations: the log would hold every byte written). Durability is
    /// still tracked, so [`MemFs::crash`] works; [`MemFs::crash_state`]
    /// does not.
    pub fn unrecorded() -> Self {
        let fs = MemFs::new();
        fs.set_recording(false);
        fs
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn full(&self, path: &RelPath) -> Comps {
        let mut c = self.prefix.clone();
        c.extend(path.components().map(str::to_owned));
        c
    }

    fn full_str(&self, path: &str) -> Comps {
        let mut c = self.prefix.clone();
        c.extend(split(path));
        c
    }

    /// A view of the same filesystem rooted at `dir` (created if missing).
    /// Paths given to the view resolve beneath `dir`; everything else stays
    /// reachable through `self`, so a test can check that a component given
    /// the view never touched what lies outside it.
    pub fn scoped(&self, dir: &str) -> MemFs {
        self.mkdir_p(dir);
        MemFs { world: self.world.clone(), handles: self.handles.clone(), prefix: self.full_str(dir) }
    }

    /// Turns operation recording on or off (see [`MemFs::unrecorded`]).
    pub fn set_recording(&self, on: bool) {
        let mut w = self.lock();
        if !on {
            w.log.clear();
            w.base = w.state.clone();
        }
        w.recording = on;
    }

    // ---- test helpers (durable at once, never faulted) ----

    fn setup(&self, op: Op) -> FsResult<()> {
        let mut w = self.lock();
        let eff = w.state.apply(&op, None)?;
        if w.recording {
            w.log.push(op);
        }
        emit(&mut w, &eff);
        Ok(())
    }

    /// Writes a whole file (creating missing parents), durably. Panics if
    /// the path is blocked by a directory or a symlink.
    pub fn write_file(&self, path: &str, data: impl AsRef<[u8]>) {
        let p = self.full_str(path);
        self.setup(Op::SetupFile(p, data.as_ref().to_vec().into())).unwrap_or_else(|e| panic!("MemFs::write_file({path}): {e}"));
    }

    /// Creates a directory and its missing parents, durably.
    pub fn mkdir_p(&self, path: &str) {
        let p = self.full_str(path);
        self.setup(Op::SetupDir(p)).unwrap_or_else(|e| panic!("MemFs::mkdir_p({path}): {e}"));
    }

    /// Plants a symbolic link at `path` pointing to `target` (never
    /// followed; the target need not exist), durably.
    pub fn symlink(&self, path: &str, target: &str) {
        let p = self.full_str(path);
        self.setup(Op::SetupSymlink(p, target.to_owned())).unwrap_or_else(|e| panic!("MemFs::symlink({path}): {e}"));
    }

    /// Removes whatever is at `path` (a whole tree), durably. No-op if absent.
    pub fn remove_all(&self, path: &str) {
        let p = self.full_str(path);
        self.setup(Op::SetupRemove(p)).unwrap_or_else(|e| panic!("MemFs::remove_all({path}): {e}"));
    }

    /// The content of a regular file (`None` if absent or not a regular file).
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let w = self.lock();
        let ino = w.state.lookup(&self.full_str(path)).ok()??;
        match &w.state.inode(ino).body {
            Body::File(d) => Some(d.to_vec()),
            _ => None,
        }
    }

    /// The kind of the entry at `path`, without following symlinks.
    pub fn kind(&self, path: &str) -> Option<FileKind> {
        let w = self.lock();
        let ino = w.state.lookup(&self.full_str(path)).ok()??;
        Some(w.state.inode(ino).body.kind())
    }

    /// Whether something exists at `path` (a symlink counts).
    pub fn exists(&self, path: &str) -> bool {
        self.kind(path).is_some()
    }

    /// A snapshot of the whole tree beneath the view's root: every path
    /// (relative, `/`-separated, the root itself excluded) and its node.
    pub fn tree(&self) -> BTreeMap<String, Node> {
        self.tree_at("")
    }

    /// Like [`MemFs::tree`], beneath `dir` (paths relative to `dir`; empty
    /// if `dir` is not a directory).
    pub fn tree_at(&self, dir: &str) -> BTreeMap<String, Node> {
        let w = self.lock();
        let mut out = BTreeMap::new();
        let Ok(start) = w.state.lookup_dir(&self.full_str(dir)) else { return out };
        let mut stack = vec![(start, String::new())];
        while let Some((ino, prefix)) = stack.pop() {
            for (name, child) in w.state.entries(ino).into_iter().flatten() {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                let node = match &w.state.inode(*child).body {
                    Body::File(d) => Node::File(d.to_vec()),
                    Body::Dir(_) => {
                        stack.push((*child, path.clone()));
                        Node::Dir
                    }
                    Body::Symlink(t) => Node::Symlink(t.clone()),
                };
                out.insert(path, node);
            }
        }
        out
    }

    // ---- crash model ----

    /// Number of operations recorded since creation or the last
    /// [`MemFs::checkpoint`] (helper calls are recorded too).
    pub fn op_count(&self) -> usize {
        self.lock().log.len()
    }

    /// Human-readable descriptions of the recorded operations, for
    /// diagnosing a failing crash test.
    pub fn op_log(&self) -> Vec<String> {
        self.lock().log.iter().map(ToString::to_string).collect()
    }

    /// Makes everything durable and forgets the recorded operations: crash
    /// states are computed from here on.
    pub fn checkpoint(&self) {
        let mut w = self.lock();
        w.state.make_all_durable();
        w.base = w.state.clone();
        w.log.clear();
    }

    /// The filesystem that survives a crash right after the first `k`
    /// recorded operations (`k` in `0..=op_count()`), under `model`. The
    /// result is a new, independent filesystem with everything durable, an
    /// empty log, the same capacity, and the same view root as `self`.
    ///
    /// Panics if `k > op_count()`, or if recording is off and
    /// `k < op_count()`.
    pub fn crash_state(&self, k: usize, model: CrashModel) -> MemFs {
        let w = self.lock();
        assert!(k <= w.log.len(), "crash point {k} is beyond the {} recorded operations", w.log.len());
        let survivor = if k == w.log.len() {
            w.state.survivor(model)
        } else {
            assert!(w.recording, "crash_state({k}) needs recording");
            let mut s = w.base.clone();
            for (i, op) in w.log[..k].iter().enumerate() {
                if let Err(e) = s.apply(op, None) {
                    panic!("MemFs replay diverged at op {i} ({op}): {e}");
                }
            }
            s.survivor(model)
        };
        let world = Arc::new(Mutex::new(World::new(survivor, w.recording, w.capacity)));
        MemFs { world, handles: Arc::default(), prefix: self.prefix.clone() }
    }

    /// The filesystem that survives a crash now (see [`MemFs::crash_state`]).
    pub fn crash(&self, model: CrashModel) -> MemFs {
        let k = self.op_count();
        self.crash_state(k, model)
    }

    // ---- faults ----

    /// Makes the `n`-th mutating port operation from now fail with `kind`,
    /// without effect (`n = 0`: the next one). Replaces any earlier fault.
    pub fn fail_nth_op(&self, n: u64, kind: FsErrorKind) {
        self.lock().fail = Some((n, kind));
    }

    /// Cancels a pending [`MemFs::fail_nth_op`]. Returns whether one was pending.
    pub fn clear_fault(&self) -> bool {
        self.lock().fail.take().is_some()
    }

    /// Bounds the bytes of file content stored (`None`: unbounded and
    /// [`Fs::free_space`] reports unknown).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Bytes of file content currently stored in linked files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().state.used_bytes()
    }

    // ---- open files ----

    /// File handles currently alive (opened through the port and not yet
    /// dropped), across every clone and view of this filesystem.
    pub fn open_handles(&self) -> usize {
        self.handles.open.load(Ordering::Relaxed)
    }

    /// The most file handles that were alive at once (see
    /// [`MemFs::reset_max_open_handles`]).
    pub fn max_open_handles(&self) -> usize {
        self.handles.max.load(Ordering::Relaxed)
    }

    /// Restarts the high-water mark of [`MemFs::max_open_handles`] from
    /// the handles alive now, so a test measures only what follows.
    pub fn reset_max_open_handles(&self) {
        self.handles.max.store(self.open_handles(), Ordering::Relaxed);
    }

    // ---- port plumbing ----

    fn mutate(&self, op: Op) -> FsResult<state::Effect> {
        let mut w = self.lock();
        if let Some((n, kind)) = w.fail {
            if n == 0 {
                w.fail = None;
                return Err(FsError::new(kind, format!("injected {kind:?} failure on {op}")));
            }
            w.fail = Some((n - 1, kind));
        }
        let cap = w.capacity;
        let eff = w.state.apply(&op, cap)?;
        if w.recording {
            w.log.push(op);
        }
        emit(&mut w, &eff);
        Ok(eff)
    }

    fn handle(&self, ino: Ino, path: &RelPath, writable: bool) -> Box<dyn FileHandle> {
        self.handles.opened();
        Box::new(MemHandle { fs: self.clone(), ino, path: path.to_string(), writable })
    }

    /// Resolves `path` and returns its inode (or NotFound), without
    /// following a final symlink.
    fn existing(&self, w: &World, path: &RelPath) -> FsResult<Ino> {
        w.state.lookup(&self.full(path))?.ok_or_else(|| FsError::not_found(path))
    }
}

fn emit(w: &mut World, eff: &state::Effect) {
    if w.watchers.is_empty() {
        return;
    }
    for (dir, name) in &eff.touched {
        for reg in w.watchers.iter().filter(|r| r.dir == *dir) {
            let _ = reg.tx.unbounded_send(WatchEvent { dir: reg.path.clone(), name: Some(name.clone()) });
        }
    }
    // A watch ends when its directory leaves the namespace or its receiver is gone.
    w.watchers.retain(|r| !r.tx.is_closed() && !eff.gone_dirs.contains(&r.dir));
}

fn meta_of(state: &State, ino: Ino) -> (FileKind, u64, Option<u128>) {
    let node = state.inode(ino);
    let len = match &node.body {
        Body::File(d) => d.len() as u64,
        _ => 0,
    };
    (node.body.kind(), len, Some(u128::from(node.mtime)))
}

#[async_trait]
impl Fs for MemFs {
    async fn read_dir(&self, dir: &RelPath) -> FsResult<Vec<DirEntry>> {
        let w = self.lock();
        let ino = w.state.lookup_dir(&self.full(dir))?;
        let entries = w.state.entries(ino).cloned().unwrap_or_default();
        Ok(entries
            .into_iter()
            .map(|(name, child)| {
                let (kind, len, modified_ns) = meta_of(&w.state, child);
                DirEntry { name, kind, len, modified_ns }
            })
            .collect())
    }

    async fn metadata(&self, path: &RelPath) -> FsResult<Metadata> {
        let w = self.lock();
        let ino = self.existing(&w, path)?;
        let (kind, len, modified_ns) = meta_of(&w.state, ino);
        Ok(Metadata { kind, len, modified_ns })
    }

    async fn open_read(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        let ino = {
            let w = self.lock();
            let ino = self.existing(&w, path)?;
            check_file(&w.state, ino, path)?;
            ino
        };
        Ok(self.handle(ino, path, false))
    }

    async fn open_write(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        let existing = {
            let w = self.lock();
            match w.state.lookup(&self.full(path))? {
                Some(ino) => {
                    check_file(&w.state, ino, path)?;
                    Some(ino)
                }
                None => None,
            }
        };
        let ino = match existing {
            Some(ino) => ino,
            None => self.mutate(Op::CreateFile(self.full(path)))?.ino.expect("create yields an inode"),
        };
        Ok(self.handle(ino, path, true))
    }

    async fn create_dir(&self, path: &RelPath) -> FsResult<()> {
        self.mutate(Op::CreateDir(self.full(path))).map(drop)
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> FsResult<()> {
        self.mutate(Op::Rename(self.full(from), self.full(to))).map(drop)
    }

    async fn remove_file(&self, path: &RelPath) -> FsResult<()> {
        self.mutate(Op::RemoveFile(self.full(path))).map(drop)
    }

    async fn remove_dir(&self, path: &RelPath) -> FsResult<()> {
        self.mutate(Op::RemoveDir(self.full(path))).map(drop)
    }

    async fn sync_dir(&self, dir: &RelPath) -> FsResult<()> {
        self.mutate(Op::SyncDir(self.full(dir))).map(drop)
    }

    /// One recorded operation (not the default walk): the real adapter
    /// answers with one `syncfs`, which makes the whole tree durable at
    /// once, so a crash is either before all of it or after all of it.
    async fn sync_tree(&self, dir: &RelPath) -> FsResult<()> {
        self.mutate(Op::SyncTree(self.full(dir))).map(drop)
    }

    async fn watch(&self, dir: &RelPath) -> FsResult<Box<dyn Watcher>> {
        let mut w = self.lock();
        let ino = w.state.lookup_dir(&self.full(dir))?;
        let (tx, rx) = mpsc::unbounded();
        w.watchers.push(WatchReg { dir: ino, path: dir.clone(), tx });
        Ok(Box::new(MemWatcher { rx }))
    }

    async fn free_space(&self) -> FsResult<Option<u64>> {
        let w = self.lock();
        Ok(w.capacity.map(|c| c.saturating_sub(w.state.used_bytes())))
    }
}

fn check_file(state: &State, ino: Ino, path: &RelPath) -> FsResult<()> {
    match state.inode(ino).body {
        Body::File(_) => Ok(()),
        Body::Dir(_) => Err(FsError::new(FsErrorKind::IsADirectory, format!("{path}: is a directory"))),
        Body::Symlink(_) => Err(FsError::new(FsErrorKind::Symlink, format!("{path}: is a symlink (never followed)"))),
    }
}

/// An open file of a [`MemFs`]. It refers to the inode, so it keeps
/// working after the file is renamed or unlinked.
struct MemHandle {
    fs: MemFs,
    ino: Ino,
    path: String,
    writable: bool,
}

impl MemHandle {
    fn check_writable(&self) -> FsResult<()> {
        if self.writable {
            Ok(())
        } else {
            Err(FsError::new(FsErrorKind::PermissionDenied, format!("{}: opened read-only", self.path)))
        }
    }

    fn with_error_path<T>(&self, r: FsResult<T>) -> FsResult<T> {
        r.map_err(|e| {
            let message = e.message.replace(&format!("inode #{}", self.ino), &self.path);
            FsError::new(e.kind, message)
        })
    }
}

impl Drop for MemHandle {
    fn drop(&mut self) {
        self.fs.handles.closed();
    }
}

#[async_trait]
impl FileHandle for MemHandle {
    async fn read_at(&self, offset: u64, len: usize) -> FsResult<Bytes> {
        let w = self.fs.lock();
        match &w.state.inode(self.ino).body {
            Body::File(d) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                Ok(d.read(start, start.saturating_add(len)))
            }
            _ => Err(FsError::new(FsErrorKind::IsADirectory, format!("{}: not a regular file", self.path))),
        }
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> FsResult<()> {
        self.check_writable()?;
        let r = self.fs.mutate(Op::WriteAt { ino: self.ino, offset, data }).map(drop);
        self.with_error_path(r)
    }

    async fn set_len(&self, len: u64) -> FsResult<()> {
        self.check_writable()?;
        let r = self.fs.mutate(Op::SetLen { ino: self.ino, len }).map(drop);
        self.with_error_path(r)
    }

    async fn len(&self) -> FsResult<u64> {
        let w = self.fs.lock();
        Ok(meta_of(&w.state, self.ino).1)
    }

    async fn sync(&self) -> FsResult<()> {
        let r = self.fs.mutate(Op::SyncFile { ino: self.ino }).map(drop);
        self.with_error_path(r)
    }
}

struct MemWatcher {
    rx: mpsc::UnboundedReceiver<WatchEvent>,
}

#[async_trait]
impl Watcher for MemWatcher {
    async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.next().await
    }
}

#[cfg(test)]
mod tests;
