//! Install, update and uninstall.
//!
//! **install** (no `local/`): intent `install/staging`; create
//! `.local.installing/` with its `.lanspread_owned` marker; unpack every
//! root-level archive the unpacker handles (sorted by name) into it; note
//! the mtime of every file the archives produced and write the record of
//! them (`.lanspread_files.json`, see [`crate::txn::keep`]) next to the
//! marker; make the whole staged tree durable with one [`FsOp::SyncTree`]
//! (the unpacker syncs nothing itself, so installing thousands of files
//! costs one sync, not one per file); rename it to `local/` (**the commit
//! point**); fsync the root; clear the intent.
//!
//! **update** (`local/` exists): refused unless `local/` carries the marker
//! or the caller adopts it ([`KeepOptions::adopt`]). First, with reads
//! only, `local/` is surveyed: the files the user created or changed are
//! told from the ones the old install produced. Then the same staging under
//! intent `update/staging`; then every file of the user's is moved to the
//! kept directory (see [`crate::txn::keep`]), so the old tree holds
//! nothing of the user's; rename `local/` → `.local.backup/` and
//! `.local.installing/` → `local/` (**the commit point**), fsync the root;
//! move the files the user created back into the new `local/` where the
//! new version has nothing at their path (carried; the rest stay kept);
//! delete the backup, clear the intent. A failure before the commit point
//! moves the user's files back, then runs recovery, which removes the
//! staging directory and, if needed, puts the backup back. A crash leaves
//! each user file in `local/` or in the kept directory.
//!
//! **uninstall**: the same ownership rule and survey; intent
//! `uninstall/removing`; the user's files are moved to the kept directory;
//! rename `local/` → `.local.backup/` (**the commit point**: from here the
//! game is not installed), fsync the root, delete the backup, clear the
//! intent. A crash can never leave a half-deleted `local/` that looks
//! installed.
//!
//! The `.lanspread_owned` marker stays inside `local/` after an install: it
//! proves the tree is ours when a later update or uninstall moves it to
//! `.local.backup/`, so recovery may delete that backup even if the intent
//! log was lost.

use crate::layout;
use crate::txn::error::TxnError;
use crate::txn::flow::{child, clear_intent, kind_name, write_intent, Decision, Flow, Planner, RootFacts, Step};
use crate::txn::intent::{Intent, IntentOp, Phase};
use crate::txn::keep::{self, encode_record, join, KeepOptions, Move, Produced, Record, Sorted, Survey};
use crate::txn::op::{FsOp, OpResult, OpValue};
use lanspread_ports::fs::{FileKind, FsErrorKind};
use lanspread_ports::path::RelPath;
use lanspread_ports::unpack::UnpackError;

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

/// The outcome of an install or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// Install or update.
    pub kind: InstallKind,
    /// Where the user's files that could not stay in `local/` were moved
    /// (relative to the game directory), if any were.
    pub kept: Option<RelPath>,
}

/// The outcome of an uninstall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallOutcome {
    /// Where the files the user created or changed were moved (relative to
    /// the game directory), if there were any.
    pub kept: Option<RelPath>,
}

/// Refuses an update or uninstall of a `local/` lanspread cannot prove is
/// its own, unless the caller adopts it.
fn require_owned(f: &RootFacts, keep: &KeepOptions) -> Result<(), TxnError> {
    if f.local_marked || keep.adopt {
        return Ok(());
    }
    Err(TxnError::NotOwned { root: f.root.clone() })
}

/// A broken promise between the flow and a planner.
fn internal(f: &RootFacts, what: &str) -> TxnError {
    TxnError::Unexpected { root: f.root.clone(), detail: format!("internal error: {what}") }
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

/// Where the install is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Observing, then surveying `local/`.
    Survey,
    /// Staging and unpacking.
    Unpack,
    /// Looking at what the archives produced.
    Check,
    /// Moving the user's files, swapping, cleaning up.
    Finish,
    /// The last plan ran.
    Done,
}

/// Plans an install or update.
pub struct InstallPlanner<F> {
    handles: F,
    keep: KeepOptions,
    kind: InstallKind,
    stage: Stage,
    archives: Vec<String>,
    survey: Option<Survey>,
    sorted: Sorted,
    /// What the archives produced (the new record).
    record: Record,
    /// The moves out of the old `local/` and back into the new one.
    out: Option<Move>,
    carry: Option<Move>,
    /// Whether any file stays in the kept directory for good.
    keeps_some: bool,
}

impl<F> std::fmt::Debug for InstallPlanner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallPlanner").field("kind", &self.kind).field("stage", &self.stage).finish_non_exhaustive()
    }
}

/// The install/update machine. `F` tells which root-level files are
/// archives (usually [`lanspread_ports::Unpacker::handles`]).
pub type Install<F> = Flow<InstallPlanner<F>>;

impl<F: Fn(&str) -> bool> Install<F> {
    /// Installs (or updates) the game in `root`.
    pub fn install(root: RelPath, handles: F, keep: KeepOptions) -> Self {
        let planner = InstallPlanner {
            handles,
            keep,
            kind: InstallKind::Installed,
            stage: Stage::Survey,
            archives: Vec::new(),
            survey: None,
            sorted: Sorted::default(),
            record: Record::new(),
            out: None,
            carry: None,
            keeps_some: false,
        };
        Flow::new(root, planner)
    }
}

impl<F: Fn(&str) -> bool> InstallPlanner<F> {
    /// Stage 1 of the plan: intent, staging directory, marker, archives.
    fn unpack_steps(&mut self, f: &RootFacts) -> Decision {
        let root = &f.root;
        let staging = f.path(layout::INSTALLING);
        let op = if self.kind == InstallKind::Updated { IntentOp::Update } else { IntentOp::Install };
        let mut steps = write_intent(root, &Intent::new(op, Phase::Staging));
        steps.push(Step::Op(FsOp::CreateDir(staging.clone())));
        steps.push(Step::Op(FsOp::WriteFile { path: child(&staging, layout::OWNED_MARKER), data: MARKER_CONTENT.to_vec() }));
        for name in &self.archives {
            steps.push(Step::Op(FsOp::Unpack { archive: child(root, name), target: staging.clone() }));
        }
        self.stage = Stage::Unpack;
        Decision::Execute(steps)
    }

    /// Takes what the archives produced (a later archive's file replaces an
    /// earlier one's); asks for their mtimes and for what the new tree has
    /// at the paths of the user's files.
    fn unpacked(&mut self, f: &RootFacts, values: Vec<(FsOp, OpValue)>) -> Result<Decision, TxnError> {
        for (op, value) in values {
            let (FsOp::Unpack { archive, .. }, OpValue::Unpacked(files)) = (&op, value) else { continue };
            for file in files {
                keep::check_produced_name(&file.path).map_err(|detail| TxnError::Unpack {
                    root: f.root.clone(),
                    archive: archive.file_name().to_owned(),
                    source: UnpackError::Escape(detail),
                })?;
                self.record.insert(file.path, Produced { size: file.size, hash: file.hash, mtime_ns: None });
            }
        }
        let staging = f.path(layout::INSTALLING);
        let paths = self.record.keys().chain(&self.sorted.user).map(|rel| join(&f.root, &staging, rel)).collect::<Result<_, _>>()?;
        self.stage = Stage::Check;
        Ok(Decision::Execute(vec![Step::Op(FsOp::MetadataMany(paths))]))
    }

    /// Notes the mtimes, decides which user files are carried into the new
    /// install (nothing there in the new tree) and which stay kept, and
    /// plans the rest.
    fn checked(&mut self, f: &RootFacts, values: Vec<(FsOp, OpValue)>) -> Result<Decision, TxnError> {
        let answers = match values.into_iter().next() {
            Some((_, OpValue::MetadataMany(list))) if list.len() == self.record.len() + self.sorted.user.len() => list,
            _ => return Err(internal(f, "no metadata of the staged files")),
        };
        let (produced, user) = answers.split_at(self.record.len());
        for ((rel, p), answer) in self.record.iter_mut().zip(produced) {
            match answer {
                Ok(m) if m.kind == FileKind::File => p.mtime_ns = keep::mtime(m.modified_ns),
                _ => {
                    let detail = format!("{rel} was unpacked but is not a file in {}", layout::INSTALLING);
                    return Err(TxnError::Unexpected { root: f.root.clone(), detail });
                }
            }
        }
        let mut carried = Vec::new();
        let mut clashing = Vec::new();
        for (rel, answer) in self.sorted.user.iter().zip(user) {
            match answer {
                Err(e) if e.kind == FsErrorKind::NotFound => carried.push(rel.clone()),
                Ok(_) | Err(_) => clashing.push(rel.clone()),
            }
        }
        self.stage = Stage::Finish;
        self.finish_steps(f, carried, clashing).map(Decision::Execute)
    }

    /// The record, the sync, the moves, the swap and the clean-up.
    fn finish_steps(&mut self, f: &RootFacts, carried: Vec<RelPath>, clashing: Vec<RelPath>) -> Result<Vec<Step>, TxnError> {
        let root = &f.root;
        let (staging, local, backup) = (f.path(layout::INSTALLING), f.path(layout::LOCAL), f.path(layout::BACKUP));
        let mut steps = vec![Step::Op(FsOp::WriteFile { path: child(&staging, layout::RECORD), data: encode_record(&self.record) })];
        // One call for the whole staged tree: the unpacker syncs nothing, and
        // one `syncfs` also reports write-back errors of files it closed.
        steps.push(Step::Op(FsOp::SyncTree(staging.clone())));
        self.keeps_some = !(self.sorted.changed.is_empty() && clashing.is_empty());
        if let Some(survey) = self.survey.as_ref().filter(|_| !self.sorted.is_empty()) {
            let kept = survey.kept_dir(self.keep.time);
            let mut files = self.sorted.changed.clone();
            files.extend(self.sorted.user.iter().cloned());
            let anchor = root.parent().unwrap_or_else(RelPath::root);
            let out = Move { from: local.clone(), to: kept.clone(), anchor, files };
            steps.extend(out.steps(root)?);
            self.out = Some(out);
            if !carried.is_empty() {
                self.carry = Some(Move { from: kept, to: local.clone(), anchor: local.clone(), files: carried });
            }
        }
        if self.kind == InstallKind::Updated {
            steps.push(Step::Op(FsOp::Rename { from: local.clone(), to: backup.clone() }));
        }
        steps.push(Step::Op(FsOp::Rename { from: staging, to: local }));
        steps.push(Step::Committed);
        steps.push(Step::Op(FsOp::SyncDir(root.clone())));
        if let Some(carry) = &self.carry {
            steps.extend(carry.steps(root)?);
        }
        if self.kind == InstallKind::Updated {
            steps.push(Step::Op(FsOp::RemoveDirAll(backup)));
        }
        steps.extend(self.tidy_kept(f));
        steps.extend(clear_intent(root));
        Ok(steps)
    }

    /// Removes the directories of the kept directory the carried files
    /// left empty, and the kept directory itself (and `.lanspread-kept/`,
    /// if this install created it) when nothing stays kept: a directory
    /// that still holds something stays.
    fn tidy_kept(&self, f: &RootFacts) -> Vec<Step> {
        match (&self.out, &self.survey) {
            (Some(out), Some(survey)) => remove_kept(&f.root, survey, out.remove_empty_dests(&f.root)),
            _ => Vec::new(),
        }
    }
}

/// `steps`, then the removal of `.lanspread-kept/` if it did not exist
/// before this operation (it stays if anything else is in it).
fn remove_kept(root: &RelPath, survey: &Survey, mut steps: Vec<Step>) -> Vec<Step> {
    if !survey.kept_base_exists() {
        steps.push(Step::Tidy(FsOp::RemoveDir(keep::kept_base(root))));
    }
    steps
}

/// Undoes the moves out of `local/` (a failure before the commit point).
fn undo_moves(out: &Move, survey: Option<&Survey>) -> Vec<Step> {
    let root = out.from.parent().unwrap_or_else(RelPath::root);
    let steps = out.undo(&root);
    match survey {
        Some(survey) => remove_kept(&root, survey, steps),
        None => steps,
    }
}

impl<F: Fn(&str) -> bool> Planner for InstallPlanner<F> {
    type Output = InstallOutcome;

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
        self.archives = f
            .entries
            .iter()
            .filter(|(name, kind)| {
                **kind == FileKind::File && name.as_str() != layout::VERSION_INI && !layout::is_control_name(name) && (self.handles)(name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if self.archives.is_empty() {
            return Err(TxnError::NothingToInstall { root: root.clone() });
        }
        if self.kind == InstallKind::Installed {
            return Ok(self.unpack_steps(f));
        }
        start_survey(&mut self.survey, f, &self.keep)
    }

    fn read(&mut self, f: &RootFacts, results: Vec<(FsOp, OpResult)>) -> Result<Decision, TxnError> {
        let survey = match feed_survey(&mut self.survey, f, results)? {
            Ok(survey) => survey,
            Err(more) => return Ok(more),
        };
        self.sorted = survey.sort();
        Ok(self.unpack_steps(f))
    }

    fn executed(&mut self, f: &RootFacts, values: Vec<(FsOp, OpValue)>) -> Result<Option<Decision>, TxnError> {
        match self.stage {
            Stage::Unpack => self.unpacked(f, values).map(Some),
            Stage::Check => self.checked(f, values).map(Some),
            Stage::Survey | Stage::Finish | Stage::Done => {
                self.stage = Stage::Done;
                Ok(None)
            }
        }
    }

    fn recover_on_failure(&self) -> bool {
        true
    }

    fn undo(&self) -> Vec<Step> {
        let Some(out) = &self.out else { return Vec::new() };
        let root = out.from.parent().unwrap_or_else(RelPath::root);
        // A failure between the two renames of the swap: the old tree must
        // be back in place before the files can go back into it.
        let mut steps = vec![Step::Tidy(FsOp::Rename { from: child(&root, layout::BACKUP), to: out.from.clone() })];
        steps.extend(undo_moves(out, self.survey.as_ref()));
        steps
    }

    fn output(&mut self) -> InstallOutcome {
        // After a failure past the commit point was rolled forward, carried
        // files may still be in the kept directory.
        let kept = self.out.as_ref().filter(|_| self.keeps_some || self.stage != Stage::Done).map(|m| m.to.clone());
        InstallOutcome { kind: self.kind, kept }
    }
}

/// Plans an uninstall.
#[derive(Debug)]
pub struct UninstallPlanner {
    keep: KeepOptions,
    survey: Option<Survey>,
    out: Option<Move>,
}

/// The uninstall machine.
pub type Uninstall = Flow<UninstallPlanner>;

impl Uninstall {
    /// Uninstalls the game in `root`.
    pub fn uninstall(root: RelPath, keep: KeepOptions) -> Self {
        Flow::new(root, UninstallPlanner { keep, survey: None, out: None })
    }
}

impl UninstallPlanner {
    fn steps(&mut self, f: &RootFacts, sorted: Sorted) -> Result<Vec<Step>, TxnError> {
        let root = &f.root;
        let (local, backup) = (f.path(layout::LOCAL), f.path(layout::BACKUP));
        let mut steps = write_intent(root, &Intent::new(IntentOp::Uninstall, Phase::Removing));
        if let Some(survey) = self.survey.as_ref().filter(|_| !sorted.is_empty()) {
            let mut files = sorted.changed;
            files.extend(sorted.user);
            let anchor = root.parent().unwrap_or_else(RelPath::root);
            let out = Move { from: local.clone(), to: survey.kept_dir(self.keep.time), anchor, files };
            steps.extend(out.steps(root)?);
            self.out = Some(out);
        }
        steps.push(Step::Op(FsOp::Rename { from: local, to: backup.clone() }));
        steps.push(Step::Committed);
        steps.push(Step::Op(FsOp::SyncDir(root.clone())));
        steps.push(Step::Op(FsOp::RemoveDirAll(backup)));
        steps.extend(clear_intent(root));
        Ok(steps)
    }
}

impl Planner for UninstallPlanner {
    type Output = UninstallOutcome;

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
        start_survey(&mut self.survey, f, &self.keep)
    }

    fn read(&mut self, f: &RootFacts, results: Vec<(FsOp, OpResult)>) -> Result<Decision, TxnError> {
        let survey = match feed_survey(&mut self.survey, f, results)? {
            Ok(survey) => survey,
            Err(more) => return Ok(more),
        };
        let sorted = survey.sort();
        self.steps(f, sorted).map(Decision::Execute)
    }

    fn recover_on_failure(&self) -> bool {
        true
    }

    fn undo(&self) -> Vec<Step> {
        self.out.as_ref().map(|out| undo_moves(out, self.survey.as_ref())).unwrap_or_default()
    }

    fn output(&mut self) -> UninstallOutcome {
        UninstallOutcome { kept: self.out.as_ref().map(|m| m.to.clone()) }
    }
}

/// Refuses an unowned `local/` (unless adopted), then starts the read-only
/// survey of who owns each of its files: the first stage of an update and
/// of an uninstall.
fn start_survey(slot: &mut Option<Survey>, f: &RootFacts, keep: &KeepOptions) -> Result<Decision, TxnError> {
    require_owned(f, keep)?;
    let survey = Survey::new(&f.root, f.local_marked);
    let reads = survey.start();
    *slot = Some(survey);
    Ok(Decision::Read(reads))
}

/// Feeds the survey's reads: `Ok(Ok(survey))` once it has seen the whole
/// tree, `Ok(Err(decision))` while it needs more reads.
fn feed_survey<'s>(
    slot: &'s mut Option<Survey>,
    f: &RootFacts,
    results: Vec<(FsOp, OpResult)>,
) -> Result<Result<&'s mut Survey, Decision>, TxnError> {
    let survey = slot.as_mut().ok_or_else(|| internal(f, "no survey"))?;
    let next = survey.feed(results)?;
    if next.is_empty() {
        Ok(Ok(survey))
    } else {
        Ok(Err(Decision::Read(next)))
    }
}
