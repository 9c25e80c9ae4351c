//! Install, update and uninstall.
//!
//! **install** (no `local/`): intent `install/staging`; create
//! `.local.installing/` with its `.lanspread_owned` marker; unpack every
//! root-level archive the unpacker handles (sorted by name) into it; make
//! the whole staged tree durable with one [`FsOp::SyncTree`] (the unpacker
//! syncs nothing itself, so installing thousands of files costs one sync,
//! not one per file); rename it to `local/` (**the commit point**); fsync
//! the root; clear the intent.
//!
//! **update** (`local/` exists): the same staging under intent
//! `update/staging`, then rename `local/` → `.local.backup/` and
//! `.local.installing/` → `local/` (**the commit point**), fsync the root,
//! delete the backup, clear the intent. Any failure before the commit point
//! runs recovery, which removes the staging directory and, if needed, puts
//! the backup back.
//!
//! **uninstall**: intent `uninstall/removing`; rename `local/` →
//! `.local.backup/` (**the commit point**: from here the game is not
//! installed), fsync the root, delete the backup, clear the intent. A crash
//! can never leave a half-deleted `local/` that looks installed.
//!
//! The `.lanspread_owned` marker stays inside `local/` after an install: it
//! proves the tree is ours when a later update or uninstall moves it to
//! `.local.backup/`, so recovery may delete that backup even if the intent
//! log was lost.

use crate::layout;
use crate::txn::error::TxnError;
use crate::txn::flow::{child, clear_intent, kind_name, write_intent, Decision, Flow, Planner, RootFacts, Step};
use crate::txn::intent::{Intent, IntentOp, Phase};
use crate::txn::op::FsOp;
use lanspread_ports::fs::FileKind;
use lanspread_ports::path::RelPath;

/// Content of the ownership marker.
pub const MARKER_CONTENT: &[u8] = b"created by lanspread; this directory may be deleted by lanspread\n";

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallKind {
    /// First install: there was no `local/`.
    Installed,
    /// Update: the previous `local/` was replaced.
    Updated,
}

/// Plans an install or update.
pub struct InstallPlanner<F> {
    handles: F,
    kind: InstallKind,
}

impl<F> std::fmt::Debug for InstallPlanner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallPlanner").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// The install/update machine. `F` tells which root-level files are
/// archives (usually [`lanspread_ports::Unpacker::handles`]).
pub type Install<F> = Flow<InstallPlanner<F>>;

impl<F: Fn(&str) -> bool> Install<F> {
    /// Installs (or updates) the game in `root`.
    pub fn install(root: RelPath, handles: F) -> Self {
        Flow::new(root, InstallPlanner { handles, kind: InstallKind::Installed })
    }
}

/// Refuses anything but a regular `version.ini`.
fn require_downloaded(f: &RootFacts) -> Result<(), TxnError> {
    let detail = match f.kind(layout::VERSION_INI) {
        Some(FileKind::File) => return Ok(()),
        None => "there is no version.ini".to_owned(),
        Some(k) => format!("version.ini is a {}, not a file", kind_name(&k)),
    };
    Err(TxnError::NotDownloaded { root: f.root.clone(), detail })
}

impl<F: Fn(&str) -> bool> Planner for InstallPlanner<F> {
    type Output = InstallKind;

    fn observed(&mut self, f: &RootFacts) -> Result<Decision, TxnError> {
        let root = &f.root;
        f.require_root_dir()?;
        f.require_no_intent()?;
        require_downloaded(f)?;
        f.require_absent(layout::INSTALLING)?;
        f.require_absent(layout::BACKUP)?;
        self.kind = match f.kind(layout::LOCAL) {
            None => InstallKind::Installed,
            Some(FileKind::Dir) => InstallKind::Updated,
            Some(FileKind::Symlink) => return Err(TxnError::Symlink { root: root.clone(), what: layout::LOCAL.into() }),
            Some(k) => {
                return Err(TxnError::Unexpected {
                    root: root.clone(),
                    detail: format!("local is a {}, not a directory; refusing to replace it", kind_name(&k)),
                })
            }
        };
        let archives: Vec<&String> = f
            .entries
            .iter()
            .filter(|(name, kind)| {
                **kind == FileKind::File && name.as_str() != layout::VERSION_INI && !layout::is_control_name(name) && (self.handles)(name)
            })
            .map(|(name, _)| name)
            .collect();
        if archives.is_empty() {
            return Err(TxnError::NothingToInstall { root: root.clone() });
        }
        let staging = f.path(layout::INSTALLING);
        let local = f.path(layout::LOCAL);
        let op = if self.kind == InstallKind::Updated { IntentOp::Update } else { IntentOp::Install };
        let mut steps = write_intent(root, &Intent::new(op, Phase::Staging));
        steps.push(Step::Op(FsOp::CreateDir(staging.clone())));
        steps.push(Step::Op(FsOp::WriteFile { path: child(&staging, layout::OWNED_MARKER), data: MARKER_CONTENT.to_vec() }));
        for name in archives {
            steps.push(Step::Op(FsOp::Unpack { archive: child(root, name), target: staging.clone() }));
        }
        // One call for the whole staged tree: the unpacker syncs nothing, and
        // one `syncfs` also reports write-back errors of files it closed.
        steps.push(Step::Op(FsOp::SyncTree(staging.clone())));
        if self.kind == InstallKind::Updated {
            steps.push(Step::Op(FsOp::Rename { from: local.clone(), to: f.path(layout::BACKUP) }));
        }
        steps.push(Step::Op(FsOp::Rename { from: staging, to: local }));
        steps.push(Step::Committed);
        steps.push(Step::Op(FsOp::SyncDir(root.clone())));
        if self.kind == InstallKind::Updated {
            steps.push(Step::Op(FsOp::RemoveDirAll(f.path(layout::BACKUP))));
        }
        steps.extend(clear_intent(root));
        Ok(Decision::Execute(steps))
    }

    fn recover_on_failure(&self) -> bool {
        true
    }

    fn output(&mut self) -> InstallKind {
        self.kind
    }
}

/// Plans an uninstall.
#[derive(Debug, Default)]
pub struct UninstallPlanner;

/// The uninstall machine.
pub type Uninstall = Flow<UninstallPlanner>;

impl Uninstall {
    /// Uninstalls the game in `root`.
    pub fn uninstall(root: RelPath) -> Self {
        Flow::new(root, UninstallPlanner)
    }
}

impl Planner for UninstallPlanner {
    type Output = ();

    fn observed(&mut self, f: &RootFacts) -> Result<Decision, TxnError> {
        let root = &f.root;
        f.require_root_dir()?;
        f.require_no_intent()?;
        match f.kind(layout::LOCAL) {
            Some(FileKind::Dir) => {}
            None => return Err(TxnError::NotInstalled { root: root.clone() }),
            Some(FileKind::Symlink) => return Err(TxnError::Symlink { root: root.clone(), what: layout::LOCAL.into() }),
            Some(k) => {
                return Err(TxnError::Unexpected {
                    root: root.clone(),
                    detail: format!("local is a {}, not a directory; refusing to delete it", kind_name(&k)),
                })
            }
        }
        f.require_absent(layout::INSTALLING)?;
        f.require_absent(layout::BACKUP)?;
        let backup = f.path(layout::BACKUP);
        let mut steps = write_intent(root, &Intent::new(IntentOp::Uninstall, Phase::Removing));
        steps.push(Step::Op(FsOp::Rename { from: f.path(layout::LOCAL), to: backup.clone() }));
        steps.push(Step::Committed);
        steps.push(Step::Op(FsOp::SyncDir(root.clone())));
        steps.push(Step::Op(FsOp::RemoveDirAll(backup)));
        steps.extend(clear_intent(root));
        Ok(Decision::Execute(steps))
    }

    fn recover_on_failure(&self) -> bool {
        true
    }

    fn output(&mut self) {}
}
