//! Startup recovery: bring a game root to exactly one of *old version
//! complete*, *new version complete* or *clean*, using only what the intent
//! log and the ownership markers prove.
//!
//! The decision is a pure function ([`plan_recovery`]) of the observed
//! [`RootFacts`]; the [`Recover`] machine observes, plans and executes.
//!
//! Rules (a directory is deleted only with proof: the intent names it, or
//! it holds a regular `.lanspread_owned`):
//!
//! * **download/parking**: data was not touched yet; a parked
//!   `.version.ini.discarded` is renamed back to `version.ini` (old complete).
//! * **download/writing**: a present `version.ini` is the committed new one
//!   (new complete; it is removed instead when the runtime aborts the
//!   download); otherwise the temp and parked sentinels are swept (not
//!   downloaded; data kept for a later resume).
//! * **install**: `.local.installing/` is removed; a present `local/` is the
//!   finished install.
//! * **update**: `.local.installing/` is removed; then, if `local/` is
//!   missing, `.local.backup/` is renamed back (old complete), else the
//!   backup is removed (new complete).
//! * **uninstall**: `.local.backup/` (the old `local/`) is removed.
//! * **remove**: the whole root is deleted, `version.ini` first.
//! * **no intent, or an unreadable one** (treated as none): a marked
//!   `.local.installing/` is removed; a marked `.local.backup/` is removed if
//!   `local/` exists, else renamed back to `local/`; stray temp files
//!   (`.version.ini.tmp`, `.lanspread.json.tmp`) and a `.version.ini.discarded`
//!   are removed (a parked sentinel without intent cannot be trusted); an
//!   unreadable intent log is removed last.
//! * Anything else (foreign or unmarked directories, symlinks where our
//!   directories should be, a `version.ini` directory...) is left alone and
//!   reported in [`RecoveryReport::problems`].
//! * The kept directory (`<game dir>/.lanspread-kept/`) is never touched.
//!   A `.local.backup/` it deletes holds nothing of the user's: an update
//!   or uninstall moves the user's files out of `local/`, durably, before
//!   renaming it (see [`crate::txn::keep`]).
//!
//! The intent is removed only after every other change was made durable, so
//! a crash during recovery leaves the intent in place and recovery simply
//! runs again; a second run changes nothing.

use crate::layout;
use crate::txn::error::TxnError;
use crate::txn::flow::{child, clear_intent, kind_name, Decision, Flow, IntentState, Planner, RootFacts, Step};
use crate::txn::intent::{IntentOp, Phase};
use crate::txn::op::FsOp;
use lanspread_ports::fs::FileKind;
use lanspread_ports::path::RelPath;

/// What recovery found and did in one root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether the root exists (a missing root needs nothing).
    pub root_exists: bool,
    /// The operation a valid intent log recorded.
    pub intent: Option<IntentOp>,
    /// What was changed, in order.
    pub actions: Vec<String>,
    /// What was left alone because nothing proves it is ours, or it is not
    /// what it should be.
    pub problems: Vec<String>,
}

impl RecoveryReport {
    /// Whether recovery changed anything.
    pub fn changed(&self) -> bool {
        !self.actions.is_empty()
    }
}

/// Why recovery runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// At startup, or to clean up after a failed transaction.
    Normal,
    /// The runtime abandons a download: like `Normal`, but a committed
    /// `version.ini` under a download intent is removed too, and an intent of
    /// another operation is refused.
    AbortDownload,
}

/// The recovery planner.
#[derive(Debug)]
pub struct RecoverPlanner {
    mode: RecoveryMode,
    report: RecoveryReport,
}

impl RecoverPlanner {
    /// A planner for `mode`.
    pub fn new(mode: RecoveryMode) -> Self {
        RecoverPlanner { mode, report: RecoveryReport::default() }
    }
}

impl Planner for RecoverPlanner {
    type Output = RecoveryReport;

    fn observed(&mut self, facts: &RootFacts) -> Result<Decision, TxnError> {
        let (steps, report) = plan_recovery(facts, self.mode)?;
        self.report = report;
        Ok(Decision::Execute(steps))
    }

    fn recover_on_failure(&self) -> bool {
        false
    }

    fn output(&mut self) -> RecoveryReport {
        std::mem::take(&mut self.report)
    }
}

/// The recovery machine of one root.
pub type Recover = Flow<RecoverPlanner>;

impl Recover {
    /// Recovery of `root` in `mode`.
    pub fn recover(root: RelPath, mode: RecoveryMode) -> Self {
        Flow::new(root, RecoverPlanner::new(mode))
    }
}

/// Decides what recovery does with a root, from observed facts alone.
pub fn plan_recovery(f: &RootFacts, mode: RecoveryMode) -> Result<(Vec<Step>, RecoveryReport), TxnError> {
    let root = &f.root;
    let mut rep = RecoveryReport::default();
    match f.root_kind {
        None => return Ok((Vec::new(), rep)),
        Some(_) => f.require_root_dir()?,
    }
    rep.root_exists = true;
    let intent = f.valid_intent().cloned();
    if mode == RecoveryMode::AbortDownload {
        if let Some(i) = &intent {
            if i.op != IntentOp::Download {
                return Err(TxnError::Pending { root: root.clone(), op: i.op.to_string() });
            }
        }
    }
    rep.intent = intent.as_ref().map(|i| i.op);
    let mut remove_intent_file = false;
    match &f.intent {
        IntentState::Unreadable(why) => {
            rep.problems.push(format!("{} is unreadable ({why}); treated as no intent", layout::INTENT));
            remove_intent_file = true;
        }
        IntentState::NotAFile(k) => rep.problems.push(format!("{} is a {}, not a file; left alone", layout::INTENT, kind_name(k))),
        IntentState::Valid(_) => remove_intent_file = true,
        IntentState::Absent => {}
    }
    if let Some(i) = &intent {
        if i.op == IntentOp::Remove {
            return Ok((plan_remove(f, &mut rep), rep));
        }
    }

    let op = intent.as_ref().map(|i| i.op);
    let phase = intent.as_ref().map(|i| i.phase);
    let k = |name: &str| f.kind(name);
    let mut steps = Vec::new();
    let act = |steps: &mut Vec<Step>, rep: &mut RecoveryReport, op: FsOp, what: String| {
        steps.push(Step::Op(op));
        rep.actions.push(what);
    };

    // ---- the sentinel ----
    let discarded = f.path(layout::VERSION_DISCARDED);
    let version = f.path(layout::VERSION_INI);
    match (op, phase) {
        (Some(IntentOp::Download), Some(Phase::Parking)) => {
            if k(layout::VERSION_INI).is_none() && k(layout::VERSION_DISCARDED) == Some(FileKind::File) {
                act(
                    &mut steps,
                    &mut rep,
                    FsOp::Rename { from: discarded, to: version },
                    "download interrupted before any data was written: restored the previous version.ini".into(),
                );
            } else if k(layout::VERSION_DISCARDED) == Some(FileKind::File) {
                act(&mut steps, &mut rep, FsOp::RemoveFile(discarded), format!("removed a stale {}", layout::VERSION_DISCARDED));
            }
        }
        (Some(IntentOp::Download), _) => {
            if k(layout::VERSION_INI) == Some(FileKind::File) {
                if mode == RecoveryMode::AbortDownload {
                    act(&mut steps, &mut rep, FsOp::RemoveFile(version), "download aborted: removed the committed version.ini".into());
                } else {
                    rep.actions.push("download had committed its version.ini: finished it".into());
                }
            } else {
                rep.actions.push("download interrupted: the game is left not downloaded (data kept)".into());
            }
            if k(layout::VERSION_DISCARDED) == Some(FileKind::File) {
                act(&mut steps, &mut rep, FsOp::RemoveFile(discarded), format!("removed the parked {}", layout::VERSION_DISCARDED));
            }
        }
        _ => {
            if k(layout::VERSION_DISCARDED) == Some(FileKind::File) {
                act(
                    &mut steps,
                    &mut rep,
                    FsOp::RemoveFile(discarded),
                    format!("removed {} left without a download intent", layout::VERSION_DISCARDED),
                );
            }
        }
    }
    for name in [layout::VERSION_TMP, layout::INTENT_TMP] {
        if k(name) == Some(FileKind::File) {
            act(&mut steps, &mut rep, FsOp::RemoveFile(f.path(name)), format!("removed the temporary {name}"));
        }
    }
    for name in [layout::VERSION_DISCARDED, layout::VERSION_TMP, layout::INTENT_TMP] {
        if let Some(kind) = k(name).filter(|k| *k != FileKind::File) {
            rep.problems.push(format!("{name} is a {}, not a file; left alone", kind_name(&kind)));
        }
    }
    if let Some(kind) = k(layout::VERSION_INI).filter(|k| *k != FileKind::File) {
        rep.problems.push(format!("version.ini is a {}: the game is not downloaded; left alone", kind_name(&kind)));
    }

    // ---- staging ----
    let staging_op = matches!(op, Some(IntentOp::Install | IntentOp::Update));
    match k(layout::INSTALLING) {
        None => {}
        Some(FileKind::Dir) if f.installing_marked || staging_op => act(
            &mut steps,
            &mut rep,
            FsOp::RemoveDirAll(f.path(layout::INSTALLING)),
            format!("removed the unfinished staging directory {}", layout::INSTALLING),
        ),
        Some(FileKind::Dir) => rep.problems.push(format!(
            "{} has no {} marker and no intent names it: not ours, left alone",
            layout::INSTALLING,
            layout::OWNED_MARKER
        )),
        Some(kind) => rep.problems.push(format!("{} is a {}, not our directory; left alone", layout::INSTALLING, kind_name(&kind))),
    }
    let local = k(layout::LOCAL);
    if let Some(kind) = local.filter(|k| *k != FileKind::Dir) {
        rep.problems.push(format!("local is a {}, not a directory: the game is not installed; left alone", kind_name(&kind)));
    }
    let backup = f.path(layout::BACKUP);
    let backup_proven = match op {
        Some(IntentOp::Update | IntentOp::Uninstall) => true,
        _ => f.backup_marked,
    };
    match k(layout::BACKUP) {
        None => {}
        Some(FileKind::Dir) if backup_proven => match (op, local) {
            (Some(IntentOp::Uninstall), _) => act(
                &mut steps,
                &mut rep,
                FsOp::RemoveDirAll(backup),
                "uninstall interrupted: finished removing the previous install".into(),
            ),
            (_, None) => act(
                &mut steps,
                &mut rep,
                FsOp::Rename { from: backup, to: f.path(layout::LOCAL) },
                format!("restored the previous install from {}", layout::BACKUP),
            ),
            (_, Some(FileKind::Dir)) => act(
                &mut steps,
                &mut rep,
                FsOp::RemoveDirAll(backup),
                format!("the new install is in place: removed the previous install in {}", layout::BACKUP),
            ),
            (_, Some(_)) => rep.problems.push(format!("{} is kept: local is not a directory", layout::BACKUP)),
        },
        Some(FileKind::Dir) => rep.problems.push(format!(
            "{} has no {} marker and no intent names it: not ours, left alone",
            layout::BACKUP,
            layout::OWNED_MARKER
        )),
        Some(kind) => rep.problems.push(format!("{} is a {}, not our directory; left alone", layout::BACKUP, kind_name(&kind))),
    }
    match op {
        Some(IntentOp::Install) if local == Some(FileKind::Dir) => rep.actions.push("install had finished: kept local/".into()),
        Some(IntentOp::Uninstall) if local == Some(FileKind::Dir) && k(layout::BACKUP).is_none() => {
            rep.actions.push("uninstall interrupted before it started: the game stays installed".into())
        }
        _ => {}
    }

    // ---- the intent goes last, after everything else is durable ----
    if !steps.is_empty() {
        steps.push(Step::Op(FsOp::SyncDir(root.clone())));
    }
    if remove_intent_file {
        steps.extend(clear_intent(root));
        rep.actions.push(match op {
            Some(op) => format!("cleared the {op} intent"),
            None => format!("removed the unreadable {}", layout::INTENT),
        });
    }
    Ok((steps, rep))
}

/// Finishes the removal of a whole root: the sentinel first (so a partial
/// root never looks downloaded), the intent last, then the root itself.
fn plan_remove(f: &RootFacts, rep: &mut RecoveryReport) -> Vec<Step> {
    let root = &f.root;
    let mut steps = Vec::new();
    if f.kind(layout::VERSION_INI) == Some(FileKind::File) {
        steps.push(Step::Op(FsOp::RemoveFile(f.path(layout::VERSION_INI))));
        steps.push(Step::Op(FsOp::SyncDir(root.clone())));
    }
    for (name, kind) in &f.entries {
        if name == layout::INTENT || (name == layout::VERSION_INI && *kind == FileKind::File) {
            continue;
        }
        let p = child(root, name);
        steps.push(Step::Op(if *kind == FileKind::Dir { FsOp::RemoveDirAll(p) } else { FsOp::RemoveFile(p) }));
    }
    steps.push(Step::Op(FsOp::RemoveFile(f.path(layout::INTENT))));
    steps.push(Step::Op(FsOp::RemoveDir(root.clone())));
    steps.push(Step::Op(FsOp::SyncDir(root.parent().unwrap_or_else(RelPath::root))));
    rep.actions.push("removal of the downloaded files interrupted: finished deleting the game root".into());
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::intent::Intent;
    use std::collections::BTreeMap;

    fn facts(entries: &[(&str, FileKind)], intent: Option<Intent>) -> RootFacts {
        let mut f = RootFacts::new(RelPath::new("g").unwrap());
        f.root_kind = Some(FileKind::Dir);
        f.entries = entries.iter().map(|(n, k)| (n.to_string(), *k)).collect::<BTreeMap<_, _>>();
        if let Some(i) = intent {
            f.entries.insert(layout::INTENT.into(), FileKind::File);
            f.intent = IntentState::Valid(i);
        }
        f
    }

    fn ops(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Op(op) => op.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    use FileKind::{Dir, File, Symlink};

    #[test]
    fn update_rolls_back_before_the_swap_and_forward_after() {
        let upd = || Some(Intent::new(IntentOp::Update, Phase::Staging));
        let (s, r) = plan_recovery(&facts(&[(".local.backup", Dir), (".local.installing", Dir)], upd()), RecoveryMode::Normal).unwrap();
        assert_eq!(
            ops(&s),
            [
                "remove_dir_all g/.local.installing",
                "rename g/.local.backup -> g/local",
                "sync_dir g",
                "remove_file g/.lanspread.json",
                "sync_dir g"
            ]
        );
        assert_eq!(r.intent, Some(IntentOp::Update));
        let (s, _) = plan_recovery(&facts(&[(".local.backup", Dir), ("local", Dir)], upd()), RecoveryMode::Normal).unwrap();
        assert_eq!(ops(&s)[0], "remove_dir_all g/.local.backup");
    }

    #[test]
    fn without_proof_nothing_is_deleted() {
        let f = facts(&[(".local.backup", Dir), (".local.installing", Dir), ("local", Dir)], None);
        let (s, r) = plan_recovery(&f, RecoveryMode::Normal).unwrap();
        assert!(s.is_empty(), "{s:?}");
        assert_eq!(r.problems.len(), 2, "{r:?}");
        let mut f =
            facts(&[(".local.backup", Symlink), (".local.installing", Symlink)], Some(Intent::new(IntentOp::Update, Phase::Staging)));
        f.backup_marked = true;
        let (s, r) = plan_recovery(&f, RecoveryMode::Normal).unwrap();
        assert_eq!(ops(&s), ["remove_file g/.lanspread.json", "sync_dir g"]);
        assert!(r.problems.iter().all(|p| p.contains("symlink")), "{r:?}");
    }

    #[test]
    fn markers_prove_ownership_without_intent() {
        let mut f = facts(&[(".local.backup", Dir), (".local.installing", Dir)], None);
        f.backup_marked = true;
        f.installing_marked = true;
        let (s, _) = plan_recovery(&f, RecoveryMode::Normal).unwrap();
        assert_eq!(ops(&s), ["remove_dir_all g/.local.installing", "rename g/.local.backup -> g/local", "sync_dir g"]);
    }

    #[test]
    fn download_phases() {
        let parking = Some(Intent::new(IntentOp::Download, Phase::Parking));
        let (s, _) = plan_recovery(&facts(&[(".version.ini.discarded", File)], parking), RecoveryMode::Normal).unwrap();
        assert_eq!(ops(&s)[0], "rename g/.version.ini.discarded -> g/version.ini");
        let writing = || Some(Intent::new(IntentOp::Download, Phase::Writing));
        let f = facts(&[(".version.ini.discarded", File), (".version.ini.tmp", File), ("version.ini", File)], writing());
        let (s, _) = plan_recovery(&f, RecoveryMode::Normal).unwrap();
        assert_eq!(
            ops(&s),
            [
                "remove_file g/.version.ini.discarded",
                "remove_file g/.version.ini.tmp",
                "sync_dir g",
                "remove_file g/.lanspread.json",
                "sync_dir g"
            ]
        );
        let (s, _) = plan_recovery(&f, RecoveryMode::AbortDownload).unwrap();
        assert_eq!(ops(&s)[0], "remove_file g/version.ini");
        let f = facts(&[], Some(Intent::new(IntentOp::Install, Phase::Staging)));
        assert!(matches!(plan_recovery(&f, RecoveryMode::AbortDownload), Err(TxnError::Pending { .. })));
    }

    #[test]
    fn clean_root_needs_nothing() {
        let (s, r) = plan_recovery(&facts(&[("version.ini", File), ("local", Dir), ("a.zip", File)], None), RecoveryMode::Normal).unwrap();
        assert!(s.is_empty());
        assert!(!r.changed() && r.problems.is_empty());
        let mut missing = RootFacts::new(RelPath::new("g").unwrap());
        missing.root_kind = None;
        let (s, r) = plan_recovery(&missing, RecoveryMode::Normal).unwrap();
        assert!(s.is_empty() && !r.root_exists);
    }
}
