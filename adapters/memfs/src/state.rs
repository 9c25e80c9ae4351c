//! The filesystem state machine behind [`crate::MemFs`]: inodes, the
//! volatile namespace, and what an fsync made durable.
//!
//! Every mutation is an [`Op`]; [`State::apply`] is the only way to change
//! a state, so replaying a log of ops on a copy of the baseline reproduces
//! the live state exactly (inode numbers included). Durability is tracked
//! per inode: `durable_data` holds the content a file had at its last
//! `sync`, `durable_dirs` the entries a directory had at its last
//! `sync_dir`. File content is [`Data`], whose clones share their bytes, so
//! a durable copy of content that did not change since costs no bytes.

use crate::data::Data;
use bytes::Bytes;
use lanspread_ports::fs::{FileKind, FsError, FsErrorKind, FsResult};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Inode number.
pub(crate) type Ino = u64;
/// The root directory's inode.
pub(crate) const ROOT: Ino = 1;
/// Largest file the in-memory filesystem accepts (keeps hostile offsets
/// from allocating the machine away).
const MAX_FILE_LEN: u64 = 1 << 36;

/// A path as its components (view prefix included).
pub(crate) type Comps = Vec<String>;

pub(crate) fn show(c: &[String]) -> String {
    if c.is_empty() {
        ".".to_owned()
    } else {
        c.join("/")
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    File(Data),
    Dir(BTreeMap<String, Ino>),
    Symlink(String),
}

impl Body {
    pub(crate) fn kind(&self) -> FileKind {
        match self {
            Body::File(_) => FileKind::File,
            Body::Dir(_) => FileKind::Dir,
            Body::Symlink(_) => FileKind::Symlink,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub(crate) body: Body,
    pub(crate) mtime: u64,
    /// Where the inode is linked in the volatile namespace (`None` once unlinked).
    pub(crate) parent: Option<(Ino, String)>,
}

/// A rename between two different directories whose other half is not yet
/// durable. A rename is atomic: making one side durable makes both durable.
#[derive(Clone, Debug)]
struct PendingRename {
    src_dir: Ino,
    src_name: String,
    dst_dir: Ino,
    dst_name: String,
    ino: Ino,
}

/// One recorded mutation.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    CreateFile(Comps),
    WriteAt {
        ino: Ino,
        offset: u64,
        data: Bytes,
    },
    SetLen {
        ino: Ino,
        len: u64,
    },
    SyncFile {
        ino: Ino,
    },
    CreateDir(Comps),
    Rename(Comps, Comps),
    RemoveFile(Comps),
    RemoveDir(Comps),
    SyncDir(Comps),
    /// `Fs::sync_tree`: everything beneath a directory made durable at once
    /// (one op, so crash tests get one crash point before and one after).
    SyncTree(Comps),
    /// Test helpers: applied and made durable at once.
    SetupFile(Comps, Data),
    SetupDir(Comps),
    SetupSymlink(Comps, String),
    SetupRemove(Comps),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateFile(p) => write!(f, "create {}", show(p)),
            Op::WriteAt { ino, offset, data } => write!(f, "write_at #{ino} @{offset} +{}", data.len()),
            Op::SetLen { ino, len } => write!(f, "set_len #{ino} {len}"),
            Op::SyncFile { ino } => write!(f, "sync #{ino}"),
            Op::CreateDir(p) => write!(f, "create_dir {}", show(p)),
            Op::Rename(a, b) => write!(f, "rename {} -> {}", show(a), show(b)),
            Op::RemoveFile(p) => write!(f, "remove_file {}", show(p)),
            Op::RemoveDir(p) => write!(f, "remove_dir {}", show(p)),
            Op::SyncDir(p) => write!(f, "sync_dir {}", show(p)),
            Op::SyncTree(p) => write!(f, "sync_tree {}", show(p)),
            Op::SetupFile(p, d) => write!(f, "setup file {} ({} bytes)", show(p), d.len()),
            Op::SetupDir(p) => write!(f, "setup dir {}", show(p)),
            Op::SetupSymlink(p, t) => write!(f, "setup symlink {} -> {t}", show(p)),
            Op::SetupRemove(p) => write!(f, "setup remove {}", show(p)),
        }
    }
}

/// What an applied op did, for watchers and handles.
#[derive(Debug, Default)]
pub(crate) struct Effect {
    /// Inode created or opened by the op.
    pub(crate) ino: Option<Ino>,
    /// Directory entries that changed: (directory inode, entry name).
    pub(crate) touched: Vec<(Ino, String)>,
    /// Directories that left the namespace.
    pub(crate) gone_dirs: Vec<Ino>,
}

/// Which parts of a state survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrashModel {
    /// Only what an fsync made durable: file content at its last
    /// `FileHandle::sync`, directory entries at the last `sync_dir` of
    /// their directory.
    SyncedOnly,
    /// Every operation up to the crash point survives.
    AllUpToK,
    /// Every namespace operation (create, rename, remove, mkdir) up to the
    /// crash point survives, but file data survives only as far as it was
    /// synced: a file shows its last synced content, or is empty if it was
    /// never synced (ext4's empty-file hazard).
    MetadataOnly,
}

impl CrashModel {
    /// The three models.
    pub const ALL: [CrashModel; 3] = [CrashModel::SyncedOnly, CrashModel::AllUpToK, CrashModel::MetadataOnly];
}

#[derive(Clone, Debug)]
pub(crate) struct State {
    pub(crate) inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    pub(crate) clock: u64,
    durable_data: BTreeMap<Ino, Data>,
    durable_dirs: BTreeMap<Ino, BTreeMap<String, Ino>>,
    pending_renames: Vec<PendingRename>,
}

fn err(kind: FsErrorKind, path: &[String], what: &str) -> FsError {
    FsError::new(kind, format!("{}: {what}", show(path)))
}

impl State {
    /// An empty filesystem: a root directory, durable.
    pub(crate) fn new() -> Self {
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT, Inode { body: Body::Dir(BTreeMap::new()), mtime: 0, parent: None });
        let mut durable_dirs = BTreeMap::new();
        durable_dirs.insert(ROOT, BTreeMap::new());
        State { inodes, next_ino: ROOT + 1, clock: 0, durable_data: BTreeMap::new(), durable_dirs, pending_renames: Vec::new() }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(crate) fn inode(&self, ino: Ino) -> &Inode {
        self.inodes.get(&ino).expect("inode numbers are never reused or dropped")
    }

    fn inode_mut(&mut self, ino: Ino) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("inode numbers are never reused or dropped")
    }

    pub(crate) fn entries(&self, ino: Ino) -> Option<&BTreeMap<String, Ino>> {
        match &self.inode(ino).body {
            Body::Dir(e) => Some(e),
            _ => None,
        }
    }

    fn entries_mut(&mut self, ino: Ino) -> &mut BTreeMap<String, Ino> {
        match &mut self.inode_mut(ino).body {
            Body::Dir(e) => e,
            _ => panic!("inode {ino} is not a directory"),
        }
    }

    /// Resolves a directory, never following symlinks.
    pub(crate) fn lookup_dir(&self, comps: &[String]) -> FsResult<Ino> {
        let mut cur = ROOT;
        for (i, c) in comps.iter().enumerate() {
            let next = self.entries(cur).and_then(|e| e.get(c)).copied();
            let Some(next) = next else { return Err(err(FsErrorKind::NotFound, &comps[..=i], "not found")) };
            match self.inode(next).body {
                Body::Dir(_) => cur = next,
                Body::Symlink(_) => return Err(err(FsErrorKind::Symlink, &comps[..=i], "is a symlink (never followed)")),
                Body::File(_) => return Err(err(FsErrorKind::NotADirectory, &comps[..=i], "not a directory")),
            }
        }
        Ok(cur)
    }

    /// Resolves the parent directory of a non-root path.
    pub(crate) fn parent_of<'a>(&self, comps: &'a [String]) -> FsResult<(Ino, &'a str)> {
        let Some((name, parent)) = comps.split_last() else {
            return Err(err(FsErrorKind::InvalidPath, comps, "the root has no parent"));
        };
        Ok((self.lookup_dir(parent)?, name.as_str()))
    }

    /// Resolves a path without following a symlink at its end.
    pub(crate) fn lookup(&self, comps: &[String]) -> FsResult<Option<Ino>> {
        if comps.is_empty() {
            return Ok(Some(ROOT));
        }
        let (dir, name) = self.parent_of(comps)?;
        Ok(self.entries(dir).and_then(|e| e.get(name)).copied())
    }

    pub(crate) fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter(|i| i.parent.is_some())
            .map(|i| match &i.body {
                Body::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    fn alloc(&mut self, body: Body, parent: Ino, name: &str) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        let mtime = self.tick();
        self.inodes.insert(ino, Inode { body, mtime, parent: Some((parent, name.to_owned())) });
        self.entries_mut(parent).insert(name.to_owned(), ino);
        self.inode_mut(parent).mtime = mtime;
        ino
    }

    fn unlink(&mut self, dir: Ino, name: &str, eff: &mut Effect) {
        if let Some(ino) = self.entries_mut(dir).remove(name) {
            let node = self.inode_mut(ino);
            node.parent = None;
            if matches!(node.body, Body::Dir(_)) {
                eff.gone_dirs.push(ino);
            }
        }
        let t = self.tick();
        self.inode_mut(dir).mtime = t;
        eff.touched.push((dir, name.to_owned()));
    }

    fn resize(&mut self, ino: Ino, new_len: u64, cap: Option<u64>, path: &str) -> FsResult<()> {
        let old_len = match &self.inode(ino).body {
            Body::File(d) => d.len() as u64,
            _ => return Err(FsError::new(FsErrorKind::IsADirectory, format!("{path}: not a regular file"))),
        };
        if new_len > MAX_FILE_LEN {
            return Err(FsError::new(FsErrorKind::NoSpace, format!("{path}: {new_len} bytes is more than the in-memory filesystem holds")));
        }
        if new_len > old_len {
            if let Some(cap) = cap {
                let after = self.used_bytes() + (new_len - old_len);
                if after > cap {
                    return Err(FsError::new(FsErrorKind::NoSpace, format!("{path}: no space left on device ({after} > {cap} bytes)")));
                }
            }
        }
        if let Body::File(d) = &mut self.inode_mut(ino).body {
            d.resize(new_len as usize);
        }
        Ok(())
    }

    fn touch_file(&mut self, ino: Ino, eff: &mut Effect) {
        let t = self.tick();
        let node = self.inode_mut(ino);
        node.mtime = t;
        if let Some((dir, name)) = node.parent.clone() {
            eff.touched.push((dir, name));
        }
    }

    /// Applies one op. `cap` is the capacity to enforce (`None` in replay:
    /// an op that succeeded live succeeds again).
    pub(crate) fn apply(&mut self, op: &Op, cap: Option<u64>) -> FsResult<Effect> {
        let mut eff = Effect::default();
        match op {
            Op::CreateFile(p) => {
                let (dir, name) = self.parent_of(p)?;
                if self.entries(dir).is_some_and(|e| e.contains_key(name)) {
                    return Err(err(FsErrorKind::AlreadyExists, p, "already exists"));
                }
                eff.ino = Some(self.alloc(Body::File(Data::default()), dir, name));
                eff.touched.push((dir, name.to_owned()));
            }
            Op::WriteAt { ino, offset, data } => {
                let path = format!("inode #{ino}");
                let end = offset
                    .checked_add(data.len() as u64)
                    .ok_or_else(|| FsError::new(FsErrorKind::InvalidPath, format!("{path}: offset overflows")))?;
                let cur = match &self.inode(*ino).body {
                    Body::File(d) => d.len() as u64,
                    _ => return Err(FsError::new(FsErrorKind::IsADirectory, format!("{path}: not a regular file"))),
                };
                if end > cur {
                    self.resize(*ino, end, cap, &path)?;
                }
                if let Body::File(d) = &mut self.inode_mut(*ino).body {
                    d.write(*offset as usize, data);
                }
                self.touch_file(*ino, &mut eff);
            }
            Op::SetLen { ino, len } => {
                self.resize(*ino, *len, cap, &format!("inode #{ino}"))?;
                self.touch_file(*ino, &mut eff);
            }
            Op::SyncFile { ino } => {
                if let Body::File(d) = &self.inode(*ino).body {
                    let d = d.clone();
                    self.durable_data.insert(*ino, d);
                }
            }
            Op::CreateDir(p) => {
                let (dir, name) = self.parent_of(p)?;
                if self.entries(dir).is_some_and(|e| e.contains_key(name)) {
                    return Err(err(FsErrorKind::AlreadyExists, p, "already exists"));
                }
                eff.ino = Some(self.alloc(Body::Dir(BTreeMap::new()), dir, name));
                eff.touched.push((dir, name.to_owned()));
            }
            Op::Rename(from, to) => self.rename(from, to, &mut eff)?,
            Op::RemoveFile(p) => {
                let (dir, name) = self.parent_of(p)?;
                let ino = self.entries(dir).and_then(|e| e.get(name)).copied().ok_or_else(|| err(FsErrorKind::NotFound, p, "not found"))?;
                if matches!(self.inode(ino).body, Body::Dir(_)) {
                    return Err(err(FsErrorKind::IsADirectory, p, "is a directory"));
                }
                self.unlink(dir, name, &mut eff);
            }
            Op::RemoveDir(p) => {
                let (dir, name) = self.parent_of(p)?;
                let ino = self.entries(dir).and_then(|e| e.get(name)).copied().ok_or_else(|| err(FsErrorKind::NotFound, p, "not found"))?;
                match &self.inode(ino).body {
                    Body::Dir(e) if e.is_empty() => {}
                    Body::Dir(_) => return Err(err(FsErrorKind::NotEmpty, p, "directory not empty")),
                    Body::Symlink(_) => return Err(err(FsErrorKind::Symlink, p, "is a symlink, not a directory")),
                    Body::File(_) => return Err(err(FsErrorKind::NotADirectory, p, "not a directory")),
                }
                self.unlink(dir, name, &mut eff);
            }
            Op::SyncDir(p) => {
                let dir = self.lookup_dir(p)?;
                self.sync_dir(dir);
            }
            Op::SyncTree(p) => {
                let dir = self.lookup_dir(p)?;
                self.sync_tree(dir);
            }
            Op::SetupFile(p, data) => {
                let parent = self.setup_mkdir(&p[..p.len().saturating_sub(1)])?;
                let name = p.last().ok_or_else(|| err(FsErrorKind::InvalidPath, p, "the root is not a file"))?;
                let ino = match self.entries(parent).and_then(|e| e.get(name)).copied() {
                    Some(ino) if matches!(self.inode(ino).body, Body::File(_)) => ino,
                    Some(_) => return Err(err(FsErrorKind::AlreadyExists, p, "exists and is not a regular file")),
                    None => self.alloc(Body::File(Data::default()), parent, name),
                };
                let t = self.tick();
                let node = self.inode_mut(ino);
                node.body = Body::File(data.clone());
                node.mtime = t;
                self.durable_data.insert(ino, data.clone());
                self.sync_dir(parent);
                eff.ino = Some(ino);
                eff.touched.push((parent, name.clone()));
            }
            Op::SetupDir(p) => {
                let ino = self.setup_mkdir(p)?;
                eff.ino = Some(ino);
            }
            Op::SetupSymlink(p, target) => {
                let parent = self.setup_mkdir(&p[..p.len().saturating_sub(1)])?;
                let name = p.last().ok_or_else(|| err(FsErrorKind::InvalidPath, p, "the root cannot be a symlink"))?;
                if self.entries(parent).is_some_and(|e| e.contains_key(name)) {
                    return Err(err(FsErrorKind::AlreadyExists, p, "already exists"));
                }
                eff.ino = Some(self.alloc(Body::Symlink(target.clone()), parent, name));
                self.sync_dir(parent);
                eff.touched.push((parent, name.clone()));
            }
            Op::SetupRemove(p) => {
                let (dir, name) = self.parent_of(p)?;
                if self.entries(dir).is_some_and(|e| e.contains_key(name)) {
                    self.unlink(dir, name, &mut eff);
                    self.sync_dir(dir);
                }
            }
        }
        Ok(eff)
    }

    /// `mkdir -p`, durable at once (setup only).
    fn setup_mkdir(&mut self, comps: &[String]) -> FsResult<Ino> {
        let mut cur = ROOT;
        for (i, c) in comps.iter().enumerate() {
            cur = match self.entries(cur).and_then(|e| e.get(c)).copied() {
                Some(ino) => match self.inode(ino).body {
                    Body::Dir(_) => ino,
                    _ => return Err(err(FsErrorKind::NotADirectory, &comps[..=i], "exists and is not a directory")),
                },
                None => {
                    let parent = cur;
                    let ino = self.alloc(Body::Dir(BTreeMap::new()), parent, c);
                    self.sync_dir(parent);
                    self.sync_dir(ino);
                    ino
                }
            };
        }
        Ok(cur)
    }

    fn sync_dir(&mut self, dir: Ino) {
        let entries = self.entries(dir).cloned().unwrap_or_default();
        self.durable_dirs.insert(dir, entries);
        let pending = std::mem::take(&mut self.pending_renames);
        for r in pending {
            if r.src_dir == dir {
                self.durable_dirs.entry(r.dst_dir).or_default().insert(r.dst_name, r.ino);
            } else if r.dst_dir == dir {
                let src = self.durable_dirs.entry(r.src_dir).or_default();
                if src.get(&r.src_name) == Some(&r.ino) {
                    src.remove(&r.src_name);
                }
            } else {
                self.pending_renames.push(r);
            }
        }
    }

    /// Makes the data (and so the length) of every file beneath `dir` and
    /// the entries of every directory beneath it, `dir` included, durable.
    /// Symlinks are not followed: a link is an entry of its directory.
    fn sync_tree(&mut self, dir: Ino) {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let children: Vec<Ino> = self.entries(d).map(|e| e.values().copied().collect()).unwrap_or_default();
            for ino in children {
                match &self.inode(ino).body {
                    Body::File(data) => {
                        let data = data.clone();
                        self.durable_data.insert(ino, data);
                    }
                    Body::Dir(_) => stack.push(ino),
                    Body::Symlink(_) => {}
                }
            }
            self.sync_dir(d);
        }
    }

    fn rename(&mut self, from: &[String], to: &[String], eff: &mut Effect) -> FsResult<()> {
        let (fdir, fname) = self.parent_of(from)?;
        let ino = self.entries(fdir).and_then(|e| e.get(fname)).copied().ok_or_else(|| err(FsErrorKind::NotFound, from, "not found"))?;
        let (tdir, tname) = self.parent_of(to)?;
        if fdir == tdir && fname == tname {
            return Ok(());
        }
        let src_is_dir = matches!(self.inode(ino).body, Body::Dir(_));
        if src_is_dir {
            // Refuse to move a directory beneath itself.
            let mut cur = Some(tdir);
            while let Some(c) = cur {
                if c == ino {
                    return Err(err(FsErrorKind::InvalidPath, to, "cannot move a directory beneath itself"));
                }
                cur = self.inode(c).parent.as_ref().map(|(p, _)| *p);
            }
        }
        if let Some(existing) = self.entries(tdir).and_then(|e| e.get(tname)).copied() {
            match &self.inode(existing).body {
                Body::Dir(e) if src_is_dir && e.is_empty() => {}
                Body::Dir(_) => return Err(err(FsErrorKind::AlreadyExists, to, "a directory is in the way")),
                _ if src_is_dir => return Err(err(FsErrorKind::NotADirectory, to, "exists and is not a directory")),
                _ => {}
            }
            self.unlink(tdir, tname, eff);
        }
        self.entries_mut(fdir).remove(fname);
        self.entries_mut(tdir).insert(tname.to_owned(), ino);
        self.inode_mut(ino).parent = Some((tdir, tname.to_owned()));
        let t = self.tick();
        self.inode_mut(fdir).mtime = t;
        self.inode_mut(tdir).mtime = t;
        if fdir != tdir {
            self.pending_renames.push(PendingRename {
                src_dir: fdir,
                src_name: fname.to_owned(),
                dst_dir: tdir,
                dst_name: tname.to_owned(),
                ino,
            });
        }
        eff.touched.push((fdir, fname.to_owned()));
        eff.touched.push((tdir, tname.to_owned()));
        Ok(())
    }

    /// The state that survives a crash now, under `model`, as a new,
    /// fully durable state.
    pub(crate) fn survivor(&self, model: CrashModel) -> State {
        let mut out = State::new();
        out.clock = self.clock;
        out.inode_mut(ROOT).mtime = self.inode(ROOT).mtime;
        let mut visited = BTreeSet::new();
        visited.insert(ROOT);
        let mut stack = vec![(ROOT, ROOT)];
        while let Some((old_dir, new_dir)) = stack.pop() {
            let entries: BTreeMap<String, Ino> = match model {
                CrashModel::SyncedOnly => self.durable_dirs.get(&old_dir).cloned().unwrap_or_default(),
                _ => self.entries(old_dir).cloned().unwrap_or_default(),
            };
            for (name, ino) in entries {
                let node = self.inode(ino);
                let body = match &node.body {
                    Body::Dir(_) => {
                        if !visited.insert(ino) {
                            continue;
                        }
                        Body::Dir(BTreeMap::new())
                    }
                    Body::Symlink(t) => Body::Symlink(t.clone()),
                    Body::File(d) => Body::File(match model {
                        CrashModel::AllUpToK => d.clone(),
                        _ => self.durable_data.get(&ino).cloned().unwrap_or_default(),
                    }),
                };
                let is_dir = matches!(body, Body::Dir(_));
                let new_ino = out.next_ino;
                out.next_ino += 1;
                out.inodes.insert(new_ino, Inode { body, mtime: node.mtime, parent: Some((new_dir, name.clone())) });
                out.entries_mut(new_dir).insert(name, new_ino);
                if is_dir {
                    stack.push((ino, new_ino));
                }
            }
        }
        out.make_all_durable();
        out
    }

    /// Marks everything durable (after setup or a crash).
    pub(crate) fn make_all_durable(&mut self) {
        self.durable_data.clear();
        self.durable_dirs.clear();
        self.pending_renames.clear();
        for (ino, node) in &self.inodes {
            match &node.body {
                Body::File(d) => {
                    self.durable_data.insert(*ino, d.clone());
                }
                Body::Dir(e) => {
                    self.durable_dirs.insert(*ino, e.clone());
                }
                Body::Symlink(_) => {}
            }
        }
    }
}
