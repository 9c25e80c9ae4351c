//! The download sentinel transaction.
//!
//! `version.ini` is the proof that a game is downloaded, so it must never
//! be present while the data does not match it:
//!
//! **begin** (stale temp files are swept first)
//! 1. if a regular `version.ini` exists: intent `download/parking`, rename
//!    `version.ini` → `.version.ini.discarded`;
//! 2. intent `download/writing` (its root fsync also makes the parking
//!    durable, before any data is touched);
//! 3. create the manifest's directories and its empty files; resize a
//!    present file whose size differs from the manifest, without
//!    truncating it first (a file that already has the right size is left
//!    alone, so its verified data can be reused).
//!
//! The runtime then writes chunks itself (`open_write` + `write_at`); a
//! missing file is created by the write of its first chunk, so creating
//! thousands of small files overlaps the transfer instead of preceding it.
//!
//! **commit** (after every chunk was written and verified)
//! 1. check every file has its manifest size;
//! 2. make the whole root durable in one `sync_tree` (on Linux one
//!    `syncfs`, which also reports write-back errors of files the download
//!    already closed);
//! 3. write `.version.ini.tmp`, fsync it, rename it to `version.ini`
//!    (**the commit point**), fsync the root;
//! 4. remove `.version.ini.discarded` and the intent, fsync the root.
//!
//! **abort**: recovery in [`RecoveryMode::AbortDownload`] — sweeps the temp
//! and parked sentinels (and a committed `version.ini`), leaving the game
//! not downloaded with its data kept for a later resume.

use crate::game::{EntryKind, Manifest, Version};
use crate::layout;
use crate::txn::error::TxnError;
use crate::txn::flow::{child, clear_intent, kind_name, under, write_intent, Decision, Flow, Planner, RootFacts, Stat, Stats, Step};
use crate::txn::intent::{Intent, IntentOp, Phase};
use crate::txn::op::FsOp;
use crate::txn::recover::{RecoverPlanner, RecoveryMode};
use lanspread_ports::fs::{FileKind, FsErrorKind};
use lanspread_ports::path::RelPath;

/// The non-sentinel entries of a manifest, with their full paths.
fn data_entries<'m>(root: &RelPath, m: &'m Manifest) -> Result<Vec<(RelPath, &'m crate::game::FileEntry)>, TxnError> {
    m.files.iter().filter(|f| !f.is_sentinel()).map(|f| Ok((under(root, &f.path)?, f))).collect()
}

fn validate(root: &RelPath, m: &Manifest) -> Result<(), TxnError> {
    m.validate(u64::MAX).map_err(|detail| TxnError::BadManifest { root: root.clone(), detail })
}

/// Refuses a control file that is not a regular file.
fn require_file_or_absent(f: &RootFacts, name: &str) -> Result<(), TxnError> {
    match f.kind(name) {
        None | Some(FileKind::File) => Ok(()),
        Some(FileKind::Symlink) => Err(TxnError::Symlink { root: f.root.clone(), what: name.into() }),
        Some(k) => Err(TxnError::Unexpected {
            root: f.root.clone(),
            detail: format!("{name} is a {}, not a file; refusing to replace it (remove it by hand)", kind_name(&k)),
        }),
    }
}

fn blocked(root: &RelPath, path: &RelPath, kind: FsErrorKind) -> TxnError {
    match kind {
        FsErrorKind::Symlink => TxnError::Symlink { root: root.clone(), what: format!("a parent directory of {path}") },
        _ => TxnError::Unexpected { root: root.clone(), detail: format!("a parent of {path} is not a directory; refusing to replace it") },
    }
}

/// Plans `begin_download`.
#[derive(Debug)]
pub struct BeginPlanner<'m> {
    manifest: &'m Manifest,
    root_missing: bool,
    prelude: Vec<Step>,
}

/// The `begin_download` machine.
pub type BeginDownload<'m> = Flow<BeginPlanner<'m>>;

impl<'m> BeginDownload<'m> {
    /// Starts a download of `manifest` into `root`.
    pub fn begin(root: RelPath, manifest: &'m Manifest) -> Self {
        Flow::new(root, BeginPlanner { manifest, root_missing: false, prelude: Vec::new() })
    }
}

impl Planner for BeginPlanner<'_> {
    type Output = ();

    fn observed(&mut self, f: &RootFacts) -> Result<Decision, TxnError> {
        let root = &f.root;
        validate(root, self.manifest)?;
        match f.root_kind {
            None => {
                self.root_missing = true;
                self.prelude.push(Step::Op(FsOp::CreateDirAll(root.clone())));
                self.prelude.push(Step::Op(FsOp::SyncDir(root.parent().unwrap_or_else(RelPath::root))));
            }
            Some(_) => f.require_root_dir()?,
        }
        f.require_no_intent()?;
        for name in [layout::VERSION_INI, layout::VERSION_DISCARDED, layout::VERSION_TMP, layout::INTENT_TMP] {
            require_file_or_absent(f, name)?;
        }
        // Stale temp or parked sentinels: never let a later recovery mistake them for ours.
        for name in [layout::VERSION_DISCARDED, layout::VERSION_TMP, layout::INTENT_TMP] {
            if f.kind(name).is_some() {
                self.prelude.push(Step::Op(FsOp::RemoveFile(f.path(name))));
            }
        }
        let mut intent = Intent::new(IntentOp::Download, Phase::Parking);
        intent.version = Some(self.manifest.version.to_string());
        if f.kind(layout::VERSION_INI).is_some() {
            self.prelude.extend(write_intent(root, &intent));
            self.prelude.push(Step::Op(FsOp::Rename { from: f.path(layout::VERSION_INI), to: f.path(layout::VERSION_DISCARDED) }));
        }
        intent.phase = Phase::Writing;
        self.prelude.extend(write_intent(root, &intent));
        let paths = if self.root_missing { Vec::new() } else { data_entries(root, self.manifest)?.into_iter().map(|(p, _)| p).collect() };
        Ok(Decision::Stat { paths, free_space: true })
    }

    fn stated(&mut self, f: &RootFacts, stats: &Stats) -> Result<Decision, TxnError> {
        let root = &f.root;
        let mut steps = std::mem::take(&mut self.prelude);
        let entries = data_entries(root, self.manifest)?;
        let missing = vec![Stat::Missing; entries.len()];
        let found = if self.root_missing { &missing } else { &stats.paths };
        let mut growth: u64 = 0;
        for ((path, entry), stat) in entries.into_iter().zip(found) {
            let wrong = |found: FileKind| TxnError::Unexpected {
                root: root.clone(),
                detail: format!(
                    "{} is a {} but the manifest lists a {}; refusing to replace it",
                    entry.path,
                    kind_name(&found),
                    if entry.kind == EntryKind::Dir { "directory" } else { "file" }
                ),
            };
            match (entry.kind, stat) {
                (_, Stat::Blocked(k)) => return Err(blocked(root, &entry.path, *k)),
                (_, Stat::Present(m)) if m.kind == FileKind::Symlink => {
                    return Err(TxnError::Symlink { root: root.clone(), what: entry.path.to_string() })
                }
                (EntryKind::Dir, Stat::Missing) => steps.push(Step::Op(FsOp::CreateDir(path))),
                (EntryKind::Dir, Stat::Present(m)) if m.kind == FileKind::Dir => {}
                (EntryKind::File, Stat::Missing) => {
                    growth = growth.saturating_add(entry.size);
                    // A file with data is created by its first chunk's
                    // write, overlapping the network; an empty one has no
                    // chunk, so it is created here.
                    if entry.size == 0 {
                        steps.push(Step::Op(FsOp::Preallocate { path, len: 0 }));
                    }
                }
                (EntryKind::File, Stat::Present(m)) if m.kind == FileKind::File => {
                    if m.len != entry.size {
                        growth = growth.saturating_add(entry.size.saturating_sub(m.len));
                        steps.push(Step::Op(FsOp::Preallocate { path, len: entry.size }));
                    }
                }
                (_, Stat::Present(m)) => return Err(wrong(m.kind)),
            }
        }
        // Refuse before touching anything when the device is known to be too small.
        if let Some(free) = stats.free_space {
            let sentinel = self.manifest.files.iter().find(|e| e.is_sentinel()).map_or(0, |e| e.size);
            let needed = growth.saturating_add(sentinel);
            if needed > free {
                return Err(TxnError::NoSpace { root: root.clone(), needed, free });
            }
        }
        Ok(Decision::Execute(steps))
    }

    fn recover_on_failure(&self) -> bool {
        true
    }

    fn output(&mut self) {}
}

/// Plans `commit_download`.
#[derive(Debug)]
pub struct CommitPlanner<'m> {
    manifest: &'m Manifest,
    sentinel: &'m [u8],
}

/// The `commit_download` machine.
pub type CommitDownload<'m> = Flow<CommitPlanner<'m>>;

impl<'m> CommitDownload<'m> {
    /// Commits the download of `manifest` in `root` with the `version.ini`
    /// content `sentinel`.
    pub fn commit(root: RelPath, manifest: &'m Manifest, sentinel: &'m [u8]) -> Self {
        Flow::new(root, CommitPlanner { manifest, sentinel })
    }
}

impl Planner for CommitPlanner<'_> {
    type Output = ();

    fn observed(&mut self, f: &RootFacts) -> Result<Decision, TxnError> {
        let root = &f.root;
        f.require_root_dir()?;
        match f.valid_intent() {
            Some(i) if i.op == IntentOp::Download && i.phase == Phase::Writing => {}
            _ => return Err(TxnError::NoDownload { root: root.clone() }),
        }
        validate(root, self.manifest)?;
        let bad = |detail: String| TxnError::BadManifest { root: root.clone(), detail };
        let Some(entry) = self.manifest.files.iter().find(|e| e.is_sentinel()) else {
            return Err(bad("no version.ini".into()));
        };
        if entry.size != self.sentinel.len() as u64 {
            return Err(bad(format!("version.ini is {} bytes, the manifest says {}", self.sentinel.len(), entry.size)));
        }
        if Version::from_ini(self.sentinel).is_none() {
            return Err(bad("version.ini holds no usable version".into()));
        }
        require_file_or_absent(f, layout::VERSION_TMP)?;
        require_file_or_absent(f, layout::VERSION_INI)?;
        Ok(Decision::Stat { paths: data_entries(root, self.manifest)?.into_iter().map(|(p, _)| p).collect(), free_space: false })
    }

    fn stated(&mut self, f: &RootFacts, stats: &Stats) -> Result<Decision, TxnError> {
        let root = &f.root;
        let entries = data_entries(root, self.manifest)?;
        for ((_, entry), stat) in entries.into_iter().zip(&stats.paths) {
            let found = match (entry.kind, stat) {
                (EntryKind::File, Stat::Present(m)) if m.kind == FileKind::File && m.len == entry.size => continue,
                (EntryKind::Dir, Stat::Present(m)) if m.kind == FileKind::Dir => continue,
                (_, Stat::Present(m)) if m.kind == FileKind::File => format!("{} bytes", m.len),
                (_, Stat::Present(m)) => format!("a {}", kind_name(&m.kind)),
                (_, Stat::Missing) => "missing".into(),
                (_, Stat::Blocked(k)) => return Err(blocked(root, &entry.path, *k)),
            };
            return Err(TxnError::Incomplete { root: root.clone(), path: entry.path.to_string(), expected: entry.size, found });
        }
        let tmp = child(root, layout::VERSION_TMP);
        // One sync of the whole root: the download closed its files without
        // syncing them, and this also reports their write-back errors.
        let mut steps = vec![Step::Op(FsOp::SyncTree(root.clone()))];
        steps.push(Step::Op(FsOp::WriteFile { path: tmp.clone(), data: self.sentinel.to_vec() }));
        steps.push(Step::Op(FsOp::SyncFile(tmp.clone())));
        steps.push(Step::Op(FsOp::Rename { from: tmp, to: child(root, layout::VERSION_INI) }));
        steps.push(Step::Committed);
        steps.push(Step::Op(FsOp::SyncDir(root.clone())));
        if f.kind(layout::VERSION_DISCARDED) == Some(FileKind::File) {
            steps.push(Step::Op(FsOp::RemoveFile(child(root, layout::VERSION_DISCARDED))));
        }
        steps.extend(clear_intent(root));
        Ok(Decision::Execute(steps))
    }

    fn recover_on_failure(&self) -> bool {
        false
    }

    fn output(&mut self) {}
}

/// The `abort_download` machine (recovery that abandons the download).
pub fn abort(root: RelPath) -> Flow<RecoverPlanner> {
    Flow::new(root, RecoverPlanner::new(RecoveryMode::AbortDownload))
}
