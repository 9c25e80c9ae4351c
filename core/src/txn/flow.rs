//! The building blocks every transaction machine is made of.
//!
//! A transaction runs in up to four stages, each a small sans-IO
//! sub-machine with one operation in flight at a time:
//!
//! 1. **observe** ([`Observer`]): metadata of the root, its listing, the
//!    intent log, the ownership markers of `local/` and the staging
//!    directories → [`RootFacts`];
//! 2. **stat** or **read** (optional, repeatable): metadata of extra paths
//!    (the manifest), or any reads the planner asks for, failures included
//!    (walking `local/`, its record, hashes);
//! 3. **execute** ([`Exec`]): a plan of [`Step`]s decided by a pure
//!    function of what was seen (a [`Planner`]); a planner may look at the
//!    values the plan read or produced (what an archive unpacked) and
//!    decide a further stage;
//! 4. **recover** (on failure, once anything was changed): the planner's
//!    undo steps if it has any (putting moved user files back), then the
//!    recovery machine rolls the root back, or forward if the failure came
//!    after the commit point.

use crate::layout;
use crate::txn::error::TxnError;
use crate::txn::intent::{Intent, MAX_INTENT_LEN};
use crate::txn::op::{FsOp, Machine, OpError, OpResult, OpValue};
use crate::txn::recover::{RecoverPlanner, RecoveryMode};
use lanspread_ports::fs::{FileKind, FsErrorKind, Metadata};
use lanspread_ports::path::RelPath;
use std::collections::{BTreeMap, VecDeque};

/// `root/name` for a name that is one valid component (our constants).
pub(crate) fn child(root: &RelPath, name: &str) -> RelPath {
    root.join_local(name).expect("control names are single components")
}

/// `root/rel` for a validated relative path.
pub(crate) fn under(root: &RelPath, rel: &RelPath) -> Result<RelPath, TxnError> {
    let mut p = root.clone();
    for c in rel.components() {
        p = p.join_local(c).map_err(|e| TxnError::BadManifest { root: root.clone(), detail: format!("{rel}: {e}") })?;
    }
    Ok(p)
}

/// Maps a failed operation to a user-facing error.
pub(crate) fn op_error(root: &RelPath, op: &FsOp, e: OpError) -> TxnError {
    match e {
        OpError::Fs(source) => TxnError::Fs { root: root.clone(), step: op.to_string(), source },
        OpError::Unpack(source) => {
            let archive = match op {
                FsOp::Unpack { archive, .. } => archive.file_name().to_owned(),
                other => other.to_string(),
            };
            TxnError::Unpack { root: root.clone(), archive, source }
        }
    }
}

/// What the intent log looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentState {
    /// No `.lanspread.json`.
    Absent,
    /// A valid intent.
    Valid(Intent),
    /// A regular file that does not parse (torn, empty, foreign).
    Unreadable(String),
    /// Something other than a regular file (directory, symlink...).
    NotAFile(FileKind),
}

/// Observed facts about one game root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFacts {
    /// The root.
    pub root: RelPath,
    /// Its kind (`None`: missing).
    pub root_kind: Option<FileKind>,
    /// The root's entries and their kinds (symlinks not followed).
    pub entries: BTreeMap<String, FileKind>,
    /// The intent log.
    pub intent: IntentState,
    /// `.local.installing/` is a directory holding a regular `.lanspread_owned`.
    pub installing_marked: bool,
    /// `.local.backup/` is a directory holding a regular `.lanspread_owned`.
    pub backup_marked: bool,
    /// `local/` is a directory holding a regular `.lanspread_owned`: it was
    /// installed by lanspread.
    pub local_marked: bool,
}

impl RootFacts {
    /// Facts of a root with nothing observed yet.
    pub fn new(root: RelPath) -> Self {
        RootFacts {
            root,
            root_kind: None,
            entries: BTreeMap::new(),
            intent: IntentState::Absent,
            installing_marked: false,
            backup_marked: false,
            local_marked: false,
        }
    }

    /// Kind of a root-level entry.
    pub fn kind(&self, name: &str) -> Option<FileKind> {
        self.entries.get(name).copied()
    }

    /// The valid intent, if any.
    pub fn valid_intent(&self) -> Option<&Intent> {
        match &self.intent {
            IntentState::Valid(i) => Some(i),
            _ => None,
        }
    }

    pub(crate) fn path(&self, name: &str) -> RelPath {
        child(&self.root, name)
    }

    /// Refuses anything but an existing real directory as the root.
    pub(crate) fn require_root_dir(&self) -> Result<(), TxnError> {
        match self.root_kind {
            Some(FileKind::Dir) => Ok(()),
            None => Err(TxnError::NoRoot { root: self.root.clone() }),
            Some(FileKind::Symlink) => Err(TxnError::Symlink { root: self.root.clone(), what: "the game root itself".into() }),
            Some(_) => Err(TxnError::Unexpected { root: self.root.clone(), detail: "the game root is not a directory".into() }),
        }
    }

    /// Refuses to start while an intent log is present.
    pub(crate) fn require_no_intent(&self) -> Result<(), TxnError> {
        let root = self.root.clone();
        match &self.intent {
            IntentState::Absent => Ok(()),
            IntentState::Valid(i) => Err(TxnError::Pending { root, op: i.op.to_string() }),
            IntentState::Unreadable(why) => Err(TxnError::Pending { root, op: format!("operation (the intent log is unreadable: {why})") }),
            IntentState::NotAFile(k) => Err(TxnError::Unexpected {
                root,
                detail: format!(".lanspread.json is a {}, not a file; refusing to start (remove it by hand)", kind_name(k)),
            }),
        }
    }

    /// Refuses to start while a staging directory is present.
    pub(crate) fn require_absent(&self, name: &str) -> Result<(), TxnError> {
        match self.kind(name) {
            None => Ok(()),
            Some(FileKind::Symlink) => Err(TxnError::Symlink { root: self.root.clone(), what: name.into() }),
            Some(k) => Err(TxnError::Unexpected {
                root: self.root.clone(),
                detail: format!(
                    "a leftover {name} ({}) is in the way; run recovery (it is removed only if it carries the {} marker)",
                    kind_name(&k),
                    layout::OWNED_MARKER
                ),
            }),
        }
    }
}

/// "directory", "symlink"... for messages.
pub(crate) fn kind_name(k: &FileKind) -> &'static str {
    match k {
        FileKind::File => "regular file",
        FileKind::Dir => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Other => "special file",
    }
}

/// Observes a root (stage 1).
#[derive(Debug)]
pub struct Observer {
    facts: RootFacts,
    queue: VecDeque<FsOp>,
    in_flight: Option<FsOp>,
    error: Option<TxnError>,
}

impl Observer {
    /// Starts observing `root`.
    pub fn new(root: RelPath) -> Self {
        let mut queue = VecDeque::new();
        queue.push_back(FsOp::Metadata(root.clone()));
        Observer { facts: RootFacts::new(root), queue, in_flight: None, error: None }
    }

    /// The next read.
    pub fn poll_op(&mut self) -> Option<FsOp> {
        if self.in_flight.is_some() || self.error.is_some() {
            return None;
        }
        let op = self.queue.pop_front()?;
        self.in_flight = Some(op.clone());
        Some(op)
    }

    /// Whether the facts are complete (or an error stopped observation).
    pub fn finished(&self) -> bool {
        self.in_flight.is_none() && (self.queue.is_empty() || self.error.is_some())
    }

    /// The facts, once finished.
    pub fn into_result(self) -> Result<RootFacts, TxnError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.facts),
        }
    }

    /// Feeds a result.
    pub fn handle_result(&mut self, result: OpResult) {
        let Some(op) = self.in_flight.take() else { return };
        let root = self.facts.root.clone();
        let fail = |e: OpError| op_error(&root, &op, e);
        match (&op, result) {
            (FsOp::Metadata(p), r) if *p == self.facts.root => match r {
                Ok(OpValue::Metadata(m)) => {
                    self.facts.root_kind = Some(m.kind);
                    if m.kind == FileKind::Dir {
                        self.queue.push_back(FsOp::ReadDir(root.clone()));
                    }
                }
                Err(OpError::Fs(e)) if e.kind == FsErrorKind::NotFound => self.facts.root_kind = None,
                Err(OpError::Fs(e)) if e.kind == FsErrorKind::Symlink => self.facts.root_kind = Some(FileKind::Symlink),
                Err(e) => self.error = Some(fail(e)),
                Ok(_) => self.error = Some(fail(unexpected_value())),
            },
            (FsOp::ReadDir(_), r) => match r {
                Ok(OpValue::Entries(list)) => {
                    self.facts.entries = list.into_iter().map(|e| (e.name, e.kind)).collect();
                    if self.facts.kind(layout::INTENT) == Some(FileKind::File) {
                        self.queue.push_back(FsOp::ReadFile { path: self.facts.path(layout::INTENT), max_len: MAX_INTENT_LEN });
                    }
                    for dir in [layout::INSTALLING, layout::BACKUP, layout::LOCAL] {
                        if self.facts.kind(dir) == Some(FileKind::Dir) {
                            self.queue.push_back(FsOp::Metadata(child(&self.facts.path(dir), layout::OWNED_MARKER)));
                        }
                    }
                    if let Some(k) = self.facts.kind(layout::INTENT) {
                        if k != FileKind::File {
                            self.facts.intent = IntentState::NotAFile(k);
                        }
                    }
                }
                Err(e) => self.error = Some(fail(e)),
                Ok(_) => self.error = Some(fail(unexpected_value())),
            },
            (FsOp::ReadFile { .. }, r) => match r {
                Ok(OpValue::Data(bytes)) => {
                    self.facts.intent = match Intent::decode(&bytes) {
                        Ok(i) => IntentState::Valid(i),
                        Err(why) => IntentState::Unreadable(why),
                    };
                }
                Err(OpError::Fs(e)) if e.kind == FsErrorKind::NotFound => self.facts.intent = IntentState::Absent,
                Err(OpError::Fs(e)) if e.kind == FsErrorKind::Symlink => self.facts.intent = IntentState::NotAFile(FileKind::Symlink),
                Err(OpError::Fs(e)) if e.kind == FsErrorKind::IsADirectory => self.facts.intent = IntentState::NotAFile(FileKind::Dir),
                Err(e) => self.error = Some(fail(e)),
                Ok(_) => self.error = Some(fail(unexpected_value())),
            },
            (FsOp::Metadata(p), r) => {
                let marked = matches!(r, Ok(OpValue::Metadata(Metadata { kind: FileKind::File, .. })));
                match r {
                    Ok(_) => {}
                    Err(OpError::Fs(e)) if matches!(e.kind, FsErrorKind::NotFound | FsErrorKind::Symlink | FsErrorKind::NotADirectory) => {}
                    Err(e) => {
                        self.error = Some(fail(e));
                        return;
                    }
                }
                match p.parent().as_ref().map(RelPath::file_name) {
                    Some(layout::INSTALLING) => self.facts.installing_marked = marked,
                    Some(layout::LOCAL) => self.facts.local_marked = marked,
                    _ => self.facts.backup_marked = marked,
                }
            }
            (_, _) => self.error = Some(fail(unexpected_value())),
        }
    }
}

fn unexpected_value() -> OpError {
    OpError::Fs(lanspread_ports::fs::FsError::new(FsErrorKind::Io, "the driver answered with the wrong kind of value"))
}

/// What `metadata` said about one extra path (stage 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Nothing there.
    Missing,
    /// Something there.
    Present(Metadata),
    /// An ancestor is in the way: a symlink ([`FsErrorKind::Symlink`]) or a
    /// file ([`FsErrorKind::NotADirectory`]).
    Blocked(FsErrorKind),
}

/// What stage 2 found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// One per path asked, in order.
    pub paths: Vec<Stat>,
    /// Free bytes on the device (`None`: unknown or not asked).
    pub free_space: Option<u64>,
}

/// Stats a list of paths, and optionally asks for the free space (stage 2).
#[derive(Debug)]
pub struct StatMany {
    root: RelPath,
    paths: Vec<RelPath>,
    stats: Stats,
    want_space: bool,
    in_flight: bool,
    error: Option<TxnError>,
}

impl StatMany {
    /// Stats `paths` in order, then asks for the free space if `want_space`.
    pub fn new(root: RelPath, paths: Vec<RelPath>, want_space: bool) -> Self {
        StatMany {
            root,
            stats: Stats { paths: Vec::with_capacity(paths.len()), free_space: None },
            paths,
            want_space,
            in_flight: false,
            error: None,
        }
    }

    fn poll_op(&mut self) -> Option<FsOp> {
        if self.in_flight || self.error.is_some() {
            return None;
        }
        let op = if self.stats.paths.len() < self.paths.len() {
            FsOp::MetadataMany(self.paths[self.stats.paths.len()..].to_vec())
        } else if self.want_space {
            FsOp::FreeSpace
        } else {
            return None;
        };
        self.in_flight = true;
        Some(op)
    }

    fn finished(&self) -> bool {
        !self.in_flight && ((self.stats.paths.len() == self.paths.len() && !self.want_space) || self.error.is_some())
    }

    fn handle_result(&mut self, result: OpResult) {
        if !self.in_flight {
            return;
        }
        self.in_flight = false;
        if self.stats.paths.len() == self.paths.len() {
            // The free-space answer.
            self.want_space = false;
            match result {
                Ok(OpValue::FreeSpace(free)) => self.stats.free_space = free,
                Err(e) => self.error = Some(op_error(&self.root, &FsOp::FreeSpace, e)),
                Ok(_) => self.error = Some(op_error(&self.root, &FsOp::FreeSpace, unexpected_value())),
            }
            return;
        }
        let first = self.stats.paths.len();
        let answers = match result {
            Ok(OpValue::MetadataMany(list)) if list.len() == self.paths.len() - first => list,
            Err(e) => {
                self.error = Some(op_error(&self.root, &FsOp::MetadataMany(self.paths[first..].to_vec()), e));
                return;
            }
            Ok(_) => {
                self.error = Some(op_error(&self.root, &FsOp::MetadataMany(self.paths[first..].to_vec()), unexpected_value()));
                return;
            }
        };
        for (i, answer) in answers.into_iter().enumerate() {
            let stat = match answer {
                Ok(m) => Stat::Present(m),
                Err(e) if e.kind == FsErrorKind::NotFound => Stat::Missing,
                Err(e) if matches!(e.kind, FsErrorKind::Symlink | FsErrorKind::NotADirectory) => Stat::Blocked(e.kind),
                Err(e) => {
                    self.error = Some(op_error(&self.root, &FsOp::Metadata(self.paths[first + i].clone()), OpError::Fs(e)));
                    return;
                }
            };
            self.stats.paths.push(stat);
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Perform an operation.
    Op(FsOp),
    /// The transaction's commit point: from here on a failure is rolled
    /// forward, not back. Performs nothing.
    Committed,
    /// Perform an operation whose failure changes nothing that matters
    /// (removing a directory that should be empty): it is ignored.
    Tidy(FsOp),
}

/// The steps that write an intent atomically: temp file, fsync, rename,
/// fsync of the root.
pub(crate) fn write_intent(root: &RelPath, intent: &Intent) -> Vec<Step> {
    let tmp = child(root, layout::INTENT_TMP);
    vec![
        Step::Op(FsOp::WriteFile { path: tmp.clone(), data: intent.encode() }),
        Step::Op(FsOp::SyncFile(tmp.clone())),
        Step::Op(FsOp::Rename { from: tmp, to: child(root, layout::INTENT) }),
        Step::Op(FsOp::SyncDir(root.clone())),
    ]
}

/// The steps that clear the intent (the transaction's last).
pub(crate) fn clear_intent(root: &RelPath) -> Vec<Step> {
    vec![Step::Op(FsOp::RemoveFile(child(root, layout::INTENT))), Step::Op(FsOp::SyncDir(root.clone()))]
}

/// Executes a plan (stage 3).
#[derive(Debug)]
pub struct Exec {
    root: RelPath,
    queue: VecDeque<Step>,
    /// The operation in flight, and whether its failure is ignored.
    in_flight: Option<(FsOp, bool)>,
    committed: bool,
    error: Option<TxnError>,
    /// What the operations answered, other than [`OpValue::Unit`].
    values: Vec<(FsOp, OpValue)>,
}

impl Exec {
    /// Runs `steps` in order, stopping at the first failure.
    pub fn new(root: RelPath, steps: Vec<Step>) -> Self {
        Exec { root, queue: steps.into(), in_flight: None, committed: false, error: None, values: Vec::new() }
    }

    /// Whether the commit point was passed.
    pub fn committed(&self) -> bool {
        self.committed
    }

    fn poll_op(&mut self) -> Option<FsOp> {
        if self.in_flight.is_some() || self.error.is_some() {
            return None;
        }
        loop {
            let (op, tidy) = match self.queue.pop_front()? {
                Step::Committed => {
                    self.committed = true;
                    continue;
                }
                Step::Op(op) => (op, false),
                Step::Tidy(op) => (op, true),
            };
            self.in_flight = Some((op.clone(), tidy));
            return Some(op);
        }
    }

    fn finished(&self) -> bool {
        self.in_flight.is_none() && (self.queue.is_empty() || self.error.is_some())
    }

    fn handle_result(&mut self, result: OpResult) {
        let Some((op, tidy)) = self.in_flight.take() else { return };
        match result {
            Ok(OpValue::Unit) => {}
            Ok(value) => self.values.push((op, value)),
            Err(_) if tidy => {}
            Err(e) => self.error = Some(op_error(&self.root, &op, e)),
        }
    }
}

/// Performs reads and hands every result, failures included, to the
/// planner (stage 2 of planners that walk a tree).
#[derive(Debug)]
pub struct Reads {
    queue: VecDeque<FsOp>,
    in_flight: Option<FsOp>,
    results: Vec<(FsOp, OpResult)>,
}

impl Reads {
    fn new(ops: Vec<FsOp>) -> Self {
        Reads { queue: ops.into(), in_flight: None, results: Vec::new() }
    }

    fn poll_op(&mut self) -> Option<FsOp> {
        if self.in_flight.is_some() {
            return None;
        }
        let op = self.queue.pop_front()?;
        self.in_flight = Some(op.clone());
        Some(op)
    }

    fn finished(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    fn handle_result(&mut self, result: OpResult) {
        if let Some(op) = self.in_flight.take() {
            self.results.push((op, result));
        }
    }
}

/// What a planner decides after a stage.
#[derive(Debug)]
pub enum Decision {
    /// Stat these paths (and ask for the free space if `free_space`), then
    /// call [`Planner::stated`].
    Stat {
        /// The paths.
        paths: Vec<RelPath>,
        /// Whether to ask for the free space too.
        free_space: bool,
    },
    /// Perform these reads (none may change anything), then call
    /// [`Planner::read`] with every result, failures included.
    Read(Vec<FsOp>),
    /// Execute this plan; then call [`Planner::executed`], which either
    /// decides a further stage or ends the transaction with
    /// [`Planner::output`].
    Execute(Vec<Step>),
}

/// The pure, transaction-specific part of a machine: from facts to a plan.
pub trait Planner {
    /// Output on success.
    type Output;
    /// Decides after observing the root.
    fn observed(&mut self, facts: &RootFacts) -> Result<Decision, TxnError>;
    /// Decides after a [`Decision::Stat`].
    fn stated(&mut self, facts: &RootFacts, stats: &Stats) -> Result<Decision, TxnError> {
        let _ = stats;
        Err(TxnError::Unexpected { root: facts.root.clone(), detail: "internal error: unexpected stat stage".into() })
    }
    /// Decides after a [`Decision::Read`], from every read's result.
    fn read(&mut self, facts: &RootFacts, results: Vec<(FsOp, OpResult)>) -> Result<Decision, TxnError> {
        let _ = results;
        Err(TxnError::Unexpected { root: facts.root.clone(), detail: "internal error: unexpected read stage".into() })
    }
    /// Called after a plan ran without failure, with the values its
    /// operations answered (other than [`OpValue::Unit`]), in order:
    /// `None` ends the transaction, `Some` decides a further stage.
    fn executed(&mut self, facts: &RootFacts, values: Vec<(FsOp, OpValue)>) -> Result<Option<Decision>, TxnError> {
        let _ = (facts, values);
        Ok(None)
    }
    /// Whether a failure before the commit point is cleaned up by running
    /// recovery (after the commit point it always is, and rolls forward).
    fn recover_on_failure(&self) -> bool;
    /// Steps that undo what recovery cannot know about, run on a failure
    /// before the commit point and before recovery (failures ignored: use
    /// [`Step::Tidy`]). By default none.
    fn undo(&self) -> Vec<Step> {
        Vec::new()
    }
    /// The output (called once, after the plan ran).
    fn output(&mut self) -> Self::Output;
}

enum Stage {
    Observe(Observer),
    Stat(RootFacts, StatMany),
    Read(RootFacts, Reads),
    Exec(RootFacts, Exec),
    Undo { exec: Exec, error: TxnError },
    Recover { machine: Box<Flow<RecoverPlanner>>, error: TxnError, committed: bool },
    Done,
}

/// A whole transaction machine: observe → (stat | read)* → execute →
/// (more stages decided after it) → (undo → recover), with the decisions
/// taken by a [`Planner`].
pub struct Flow<P: Planner> {
    root: RelPath,
    planner: P,
    stage: Stage,
    outcome: Option<Result<P::Output, TxnError>>,
    /// A plan started executing: a failure from now on needs cleaning up.
    mutated: bool,
    /// The commit point was passed.
    committed: bool,
}

impl<P: Planner> std::fmt::Debug for Flow<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").field("root", &self.root).finish_non_exhaustive()
    }
}

impl<P: Planner> Flow<P> {
    /// A machine for `root`, starting with observation.
    pub fn new(root: RelPath, planner: P) -> Self {
        Flow { stage: Stage::Observe(Observer::new(root.clone())), root, planner, outcome: None, mutated: false, committed: false }
    }

    /// A machine that is already finished with `outcome` (e.g. refused
    /// before touching anything).
    pub fn finished(root: RelPath, planner: P, outcome: Result<P::Output, TxnError>) -> Self {
        Flow { root, planner, stage: Stage::Done, outcome: Some(outcome), mutated: false, committed: false }
    }

    /// The planner (to inspect decisions in tests).
    pub fn planner(&self) -> &P {
        &self.planner
    }

    fn decide(&mut self, facts: RootFacts, d: Result<Decision, TxnError>) {
        match d {
            Err(e) => self.fail(e),
            Ok(Decision::Stat { paths, free_space }) => {
                self.stage = Stage::Stat(facts, StatMany::new(self.root.clone(), paths, free_space))
            }
            Ok(Decision::Read(ops)) if ops.iter().any(FsOp::is_mutating) => self
                .fail(TxnError::Unexpected { root: self.root.clone(), detail: "internal error: a read stage asked for a change".into() }),
            Ok(Decision::Read(ops)) => self.stage = Stage::Read(facts, Reads::new(ops)),
            Ok(Decision::Execute(steps)) => {
                self.mutated = true;
                self.stage = Stage::Exec(facts, Exec::new(self.root.clone(), steps));
            }
        }
    }

    /// Ends with `error`, after cleaning up if anything was changed: the
    /// planner's undo steps (before the commit point), then recovery.
    fn fail(&mut self, error: TxnError) {
        let clean_up = self.committed || (self.mutated && self.planner.recover_on_failure());
        let undo = if clean_up && !self.committed { self.planner.undo() } else { Vec::new() };
        if !clean_up {
            self.finish(Err(error));
        } else if undo.is_empty() {
            self.start_recovery(error);
        } else {
            self.stage = Stage::Undo { exec: Exec::new(self.root.clone(), undo), error };
        }
    }

    fn start_recovery(&mut self, error: TxnError) {
        let machine = Box::new(Flow::new(self.root.clone(), RecoverPlanner::new(RecoveryMode::Normal)));
        self.stage = Stage::Recover { machine, error, committed: self.committed };
    }

    fn finish(&mut self, outcome: Result<P::Output, TxnError>) {
        self.stage = Stage::Done;
        self.outcome = Some(outcome);
    }

    /// Moves past finished stages.
    fn advance(&mut self) {
        loop {
            match std::mem::replace(&mut self.stage, Stage::Done) {
                Stage::Observe(o) if o.finished() => match o.into_result() {
                    Ok(facts) => {
                        let d = self.planner.observed(&facts);
                        self.decide(facts, d);
                    }
                    Err(e) => self.finish(Err(e)),
                },
                Stage::Stat(facts, s) if s.finished() => match s.error {
                    Some(e) => self.fail(e),
                    None => {
                        let d = self.planner.stated(&facts, &s.stats);
                        self.decide(facts, d);
                    }
                },
                Stage::Read(facts, r) if r.finished() => {
                    let d = self.planner.read(&facts, r.results);
                    self.decide(facts, d);
                }
                Stage::Exec(facts, x) if x.finished() => {
                    self.committed |= x.committed;
                    match x.error {
                        Some(error) => self.fail(error),
                        None => match self.planner.executed(&facts, x.values) {
                            Ok(None) => {
                                let out = self.planner.output();
                                self.finish(Ok(out));
                            }
                            Ok(Some(d)) => self.decide(facts, Ok(d)),
                            Err(e) => self.fail(e),
                        },
                    }
                }
                Stage::Undo { exec, error } if exec.finished() => self.start_recovery(error),
                Stage::Recover { mut machine, error, committed } => match machine.outcome.take() {
                    Some(Ok(_)) if committed => {
                        let out = self.planner.output();
                        self.finish(Ok(out));
                    }
                    Some(Ok(_)) => self.finish(Err(error)),
                    Some(Err(cleanup)) => self.finish(Err(TxnError::CleanupFailed { error: Box::new(error), cleanup: Box::new(cleanup) })),
                    None => {
                        self.stage = Stage::Recover { machine, error, committed };
                        return;
                    }
                },
                other => {
                    self.stage = other;
                    return;
                }
            }
        }
    }
}

impl<P: Planner> Machine for Flow<P> {
    type Output = P::Output;

    fn poll_op(&mut self) -> Option<FsOp> {
        loop {
            self.advance();
            let op = match &mut self.stage {
                Stage::Observe(o) => o.poll_op(),
                Stage::Stat(_, s) => s.poll_op(),
                Stage::Read(_, r) => r.poll_op(),
                Stage::Exec(_, x) | Stage::Undo { exec: x, .. } => x.poll_op(),
                Stage::Recover { machine, .. } => machine.poll_op(),
                Stage::Done => return None,
            };
            if op.is_some() {
                return op;
            }
            // No operation: the stage either waits for a result (the caller
            // broke the contract) or has just finished and must be left.
            let finished = match &self.stage {
                Stage::Observe(o) => o.finished(),
                Stage::Stat(_, s) => s.finished(),
                Stage::Read(_, r) => r.finished(),
                Stage::Exec(_, x) | Stage::Undo { exec: x, .. } => x.finished(),
                Stage::Recover { machine, .. } => machine.outcome.is_some(),
                Stage::Done => true,
            };
            if !finished {
                return None;
            }
        }
    }

    fn handle_result(&mut self, result: OpResult) {
        match &mut self.stage {
            Stage::Observe(o) => o.handle_result(result),
            Stage::Stat(_, s) => s.handle_result(result),
            Stage::Read(_, r) => r.handle_result(result),
            Stage::Exec(_, x) | Stage::Undo { exec: x, .. } => x.handle_result(result),
            Stage::Recover { machine, .. } => machine.handle_result(result),
            Stage::Done => {}
        }
        self.advance();
    }

    fn take_outcome(&mut self) -> Option<Result<P::Output, TxnError>> {
        self.advance();
        self.outcome.take()
    }
}
