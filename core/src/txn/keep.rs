//! What in `local/` is lanspread's, what is the user's, and how the user's
//! files are kept.
//!
//! An install records every file its archives produced in
//! `local/.lanspread_files.json` ([`Record`]: path, size, BLAKE3 hash, and
//! the mtime seen right after unpacking). A later update or uninstall walks
//! `local/` ([`Survey`]) and sorts every entry that is not a directory:
//!
//! * **produced, unchanged**: listed, same size, and the same mtime (no
//!   re-hash) or else the same hash: lanspread's, deleted with the tree;
//! * **produced, changed**: listed but different: the user's copy is kept;
//! * **the user's**: not listed, or there is no record at all (an adopted
//!   directory, an install older than the record): kept, or carried into
//!   the new install by an update.
//!
//! Kept files are moved by rename (never copied, never deleted) to
//! `<game dir>/.lanspread-kept/<id>-<time>/<same relative path>`, before
//! the old tree is renamed away: from the moment the old `local/` becomes
//! something recovery may delete, it holds nothing of the user's.

use crate::layout;
use crate::names::caseless_key;
use crate::txn::error::TxnError;
use crate::txn::flow::{op_error, Step};
use crate::txn::op::{FsOp, OpError, OpResult, OpValue};
use lanspread_ports::fs::{FileKind, FsErrorKind};
use lanspread_ports::path::RelPath;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Format number written in every record.
pub const RECORD_FORMAT: u32 = 1;
/// Largest record we read (about 400,000 files).
pub const MAX_RECORD_LEN: u64 = 64 << 20;

/// How an update or uninstall treats a `local/` and the files in it that
/// lanspread did not produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepOptions {
    /// Take over a `local/` that lanspread did not install (no marker):
    /// without a record, every file in it counts as the user's.
    pub adopt: bool,
    /// Seconds since the Unix epoch; names the directory kept files go to.
    pub time: u64,
}

/// One file an install produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Length in bytes.
    pub size: u64,
    /// BLAKE3 hash of the content.
    pub hash: [u8; 32],
    /// Modification time seen right after unpacking, if the disk tells.
    pub mtime_ns: Option<u64>,
}

/// The files an install produced, by path relative to `local/`.
pub type Record = BTreeMap<RelPath, Produced>;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    format: u32,
    files: Vec<RecordLine>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordLine {
    path: RelPath,
    size: u64,
    blake3: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<u64>,
}

/// Serialises a record (JSON, one file per line).
pub fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = format!("{{\"format\":{RECORD_FORMAT},\"files\":[\n").into_bytes();
    for (i, (path, p)) in record.iter().enumerate() {
        let line = RecordLine { path: path.clone(), size: p.size, blake3: hex::encode(p.hash), mtime_ns: p.mtime_ns };
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(&serde_json::to_vec(&line).unwrap_or_default());
    }
    out.extend_from_slice(b"\n]}\n");
    out
}

/// Parses a record; `Err` says why it is unusable.
pub fn decode_record(bytes: &[u8]) -> Result<Record, String> {
    let file: RecordFile = serde_json::from_slice(bytes).map_err(|e| format!("not a valid record: {e}"))?;
    if file.format != RECORD_FORMAT {
        return Err(format!("unknown format {}", file.format));
    }
    let mut record = Record::new();
    for line in file.files {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&line.blake3, &mut hash).map_err(|e| format!("{}: bad hash: {e}", line.path))?;
        record.insert(line.path, Produced { size: line.size, hash, mtime_ns: line.mtime_ns });
    }
    Ok(record)
}

/// An mtime as the record stores it.
pub(crate) fn mtime(ns: Option<u128>) -> Option<u64> {
    ns.and_then(|n| u64::try_from(n).ok())
}

/// Refuses a produced path that would overwrite the marker or the record.
pub(crate) fn check_produced_name(path: &RelPath) -> Result<(), String> {
    let top = caseless_key(path.components().next().unwrap_or_default());
    match layout::LOCAL_CONTROL_NAMES.iter().find(|c| caseless_key(c) == top) {
        Some(c) => Err(format!("{path}: the archive would overwrite lanspread's own {c}")),
        None => Ok(()),
    }
}

/// `base/rel`, for a `rel` made of names read from the disk.
pub(crate) fn join(root: &RelPath, base: &RelPath, rel: &RelPath) -> Result<RelPath, TxnError> {
    let mut p = base.clone();
    for c in rel.components() {
        p = p.join_local(c).map_err(|e| TxnError::Unexpected { root: root.clone(), detail: format!("{base}/{rel}: {e}") })?;
    }
    Ok(p)
}

/// Where kept files of `root` go: `<game dir>/.lanspread-kept`.
pub(crate) fn kept_base(root: &RelPath) -> RelPath {
    crate::txn::flow::child(&root.parent().unwrap_or_else(RelPath::root), layout::KEPT)
}

/// An entry of `local/` that is not a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    kind: FileKind,
    len: u64,
    mtime_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SurveyStage {
    Walk,
    Record,
    Hash,
    Done,
}

/// `local/`'s files sorted by owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sorted {
    /// Files the user created (or, without a record, every file).
    pub user: Vec<RelPath>,
    /// Files the archives produced and the user changed.
    pub changed: Vec<RelPath>,
}

impl Sorted {
    /// Whether nothing belongs to the user.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty() && self.changed.is_empty()
    }
}

/// Walks `local/` with reads only, reads its record and hashes the files
/// whose mtime does not prove them unchanged; then [`Survey::sort`]s them.
#[derive(Debug)]
pub struct Survey {
    root: RelPath,
    local: RelPath,
    kept_base: RelPath,
    /// `local/` carries the marker: its marker and record are ours.
    owned: bool,
    found: BTreeMap<RelPath, Found>,
    /// Names in `.lanspread-kept/` (`None`: it does not exist).
    kept_names: Option<BTreeSet<String>>,
    record: Option<Record>,
    hashes: BTreeMap<RelPath, [u8; 32]>,
    stage: SurveyStage,
}

impl Survey {
    /// A survey of `root/local`, which carries the marker if `owned`.
    pub fn new(root: &RelPath, owned: bool) -> Self {
        Survey {
            root: root.clone(),
            local: crate::txn::flow::child(root, layout::LOCAL),
            kept_base: kept_base(root),
            owned,
            found: BTreeMap::new(),
            kept_names: None,
            record: None,
            hashes: BTreeMap::new(),
            stage: SurveyStage::Walk,
        }
    }

    /// The first reads.
    pub fn start(&self) -> Vec<FsOp> {
        vec![FsOp::ReadDir(self.local.clone()), FsOp::ReadDir(self.kept_base.clone())]
    }

    /// Takes the results of the last reads; returns the next ones (none:
    /// the survey is complete).
    pub fn feed(&mut self, results: Vec<(FsOp, OpResult)>) -> Result<Vec<FsOp>, TxnError> {
        let mut next = Vec::new();
        for (op, result) in results {
            self.take(&op, result, &mut next)?;
        }
        while next.is_empty() && self.stage != SurveyStage::Done {
            next = self.advance();
        }
        Ok(next)
    }

    fn take(&mut self, op: &FsOp, result: OpResult, next: &mut Vec<FsOp>) -> Result<(), TxnError> {
        let fail = |e: OpError| op_error(&self.root, op, e);
        match (op, result) {
            (FsOp::ReadDir(p), r) if *p == self.kept_base => match r {
                Ok(OpValue::Entries(list)) => self.kept_names = Some(list.into_iter().map(|e| e.name).collect()),
                Err(OpError::Fs(e)) if e.kind == FsErrorKind::NotFound => self.kept_names = None,
                Err(e) => return Err(fail(e)),
                Ok(_) => return Err(fail(wrong_value())),
            },
            (FsOp::ReadDir(dir), Ok(OpValue::Entries(list))) => {
                let rel = dir.strip_prefix(&self.local).ok_or_else(|| fail(wrong_value()))?;
                for e in list {
                    let path = rel.join_local(&e.name).map_err(|err| fail(bad_name(&e.name, err)))?;
                    if e.kind == FileKind::Dir {
                        next.push(FsOp::ReadDir(join(&self.root, &self.local, &path)?));
                    } else {
                        self.found.insert(path, Found { kind: e.kind, len: e.len, mtime_ns: mtime(e.modified_ns) });
                    }
                }
            }
            (FsOp::ReadFile { .. }, Ok(OpValue::Data(bytes))) => self.record = decode_record(&bytes).ok(),
            // A record we cannot read proves nothing: every file is the user's.
            (FsOp::ReadFile { .. }, Err(OpError::Fs(e))) if e.kind != FsErrorKind::Io => self.record = None,
            (FsOp::HashFile(p), Ok(OpValue::Hash(h))) => {
                let rel = p.strip_prefix(&self.local).ok_or_else(|| fail(wrong_value()))?;
                self.hashes.insert(rel, h);
            }
            (_, Err(e)) => return Err(fail(e)),
            (_, Ok(_)) => return Err(fail(wrong_value())),
        }
        Ok(())
    }

    /// Moves to the next stage; returns its reads.
    fn advance(&mut self) -> Vec<FsOp> {
        match self.stage {
            SurveyStage::Walk => {
                self.stage = SurveyStage::Record;
                let record = RelPath::component(layout::RECORD).expect("a valid name");
                if self.owned && self.found.get(&record).is_some_and(|f| f.kind == FileKind::File) {
                    return vec![FsOp::ReadFile { path: crate::txn::flow::child(&self.local, layout::RECORD), max_len: MAX_RECORD_LEN }];
                }
                Vec::new()
            }
            SurveyStage::Record => {
                self.stage = SurveyStage::Hash;
                self.to_hash().map(|rel| FsOp::HashFile(join(&self.root, &self.local, rel).expect("joined before"))).collect()
            }
            SurveyStage::Hash | SurveyStage::Done => {
                self.stage = SurveyStage::Done;
                Vec::new()
            }
        }
    }

    /// Produced files of the right size whose mtime does not prove them unchanged.
    fn to_hash(&self) -> impl Iterator<Item = &RelPath> {
        let record = self.record.as_ref();
        self.found.iter().filter_map(move |(rel, f)| {
            let p = record?.get(rel)?;
            let same_size = f.kind == FileKind::File && f.len == p.size;
            (same_size && !(f.mtime_ns.is_some() && f.mtime_ns == p.mtime_ns)).then_some(rel)
        })
    }

    /// Whether `rel` is the marker or the record of an owned `local/`.
    fn ours(&self, rel: &RelPath) -> bool {
        self.owned && rel.components().count() == 1 && layout::LOCAL_CONTROL_NAMES.contains(&rel.as_str())
    }

    /// Sorts what was found (after the survey is complete).
    pub fn sort(&self) -> Sorted {
        let mut sorted = Sorted::default();
        for (rel, f) in &self.found {
            if self.ours(rel) {
                continue;
            }
            match self.record.as_ref().and_then(|r| r.get(rel)) {
                Some(p) if self.unchanged(rel, f, p) => {}
                Some(_) => sorted.changed.push(rel.clone()),
                None => sorted.user.push(rel.clone()),
            }
        }
        sorted
    }

    fn unchanged(&self, rel: &RelPath, f: &Found, p: &Produced) -> bool {
        let same_mtime = f.mtime_ns.is_some() && f.mtime_ns == p.mtime_ns;
        f.kind == FileKind::File && f.len == p.size && (same_mtime || self.hashes.get(rel) == Some(&p.hash))
    }

    /// A kept directory for this operation that does not exist yet:
    /// `<id>-<time>`, or `<id>-<time>-<n>`.
    pub fn kept_dir(&self, time: u64) -> RelPath {
        let id = self.root.file_name();
        let taken = |name: &str| self.kept_names.as_ref().is_some_and(|names| names.contains(name));
        let name = std::iter::once(format!("{id}-{time}"))
            .chain((2u32..).map(|n| format!("{id}-{time}-{n}")))
            .find(|n| !taken(n))
            .expect("an unbounded sequence");
        crate::txn::flow::child(&self.kept_base, &name)
    }

    /// Whether `.lanspread-kept/` existed when surveyed.
    pub fn kept_base_exists(&self) -> bool {
        self.kept_names.is_some()
    }
}

fn wrong_value() -> OpError {
    OpError::Fs(lanspread_ports::fs::FsError::new(FsErrorKind::Io, "the driver answered with the wrong kind of value"))
}

fn bad_name(name: &str, e: lanspread_ports::path::PathError) -> OpError {
    OpError::Fs(lanspread_ports::fs::FsError::new(FsErrorKind::InvalidPath, format!("{name:?}: {e}")))
}

/// A set of files moved from beneath `from` to the same relative paths
/// beneath `to`.
#[derive(Debug, Clone)]
pub(crate) struct Move {
    pub(crate) from: RelPath,
    pub(crate) to: RelPath,
    /// An existing, durable directory at or above `to` (the chain of
    /// directories from it down to each destination is synced).
    pub(crate) anchor: RelPath,
    pub(crate) files: Vec<RelPath>,
}

impl Move {
    /// The steps, crash-safe in this order: create the destination
    /// directories and make the whole chain from the anchor durable, so a
    /// renamed entry is reachable after a crash; rename each file (atomic:
    /// after a crash it is at one place or the other); sync the source and
    /// destination directories, so the moves are durable before anything
    /// relies on them.
    pub(crate) fn steps(&self, root: &RelPath) -> Result<Vec<Step>, TxnError> {
        let (sources, dests) = self.parents(root)?;
        let mut steps: Vec<Step> = leaves(&dests).map(|d| Step::Op(FsOp::CreateDirAll(d.clone()))).collect();
        let chain: BTreeSet<RelPath> = dests.iter().flat_map(|d| self.chain(d)).collect();
        steps.push(Step::Op(FsOp::SyncDirs(chain.into_iter().collect())));
        for rel in &self.files {
            steps.push(Step::Op(FsOp::Rename { from: join(root, &self.from, rel)?, to: join(root, &self.to, rel)? }));
        }
        steps.push(Step::Op(FsOp::SyncDirs(sources.union(&dests).cloned().collect())));
        Ok(steps)
    }

    /// Steps that move the files back, each failure ignored (a file that
    /// was not moved yet is simply not found), then remove the destination
    /// directories if they are empty (deepest first, up to `to` itself).
    pub(crate) fn undo(&self, root: &RelPath) -> Vec<Step> {
        let mut steps = Vec::new();
        for rel in &self.files {
            if let (Ok(to), Ok(from)) = (join(root, &self.to, rel), join(root, &self.from, rel)) {
                steps.push(Step::Tidy(FsOp::Rename { from: to, to: from }));
            }
        }
        if let Ok((sources, dests)) = self.parents(root) {
            steps.push(Step::Tidy(FsOp::SyncDirs(sources.union(&dests).cloned().collect())));
        }
        steps.extend(self.remove_empty_dests(root));
        steps
    }

    /// Removes the destination directories beneath and including `to`,
    /// deepest first; one that is not empty stays (failures are ignored).
    pub(crate) fn remove_empty_dests(&self, root: &RelPath) -> Vec<Step> {
        let Ok((_, dests)) = self.parents(root) else { return Vec::new() };
        let all: BTreeSet<RelPath> = dests.iter().flat_map(|d| self.chain(d)).filter(|d| d.starts_with(&self.to)).collect();
        all.into_iter().rev().map(|d| Step::Tidy(FsOp::RemoveDir(d))).collect()
    }

    /// The parent directories of the sources and of the destinations.
    fn parents(&self, root: &RelPath) -> Result<(BTreeSet<RelPath>, BTreeSet<RelPath>), TxnError> {
        let parent = |base: &RelPath, rel: &RelPath| join(root, base, rel).map(|p| p.parent().unwrap_or_else(RelPath::root));
        let sources = self.files.iter().map(|r| parent(&self.from, r)).collect::<Result<_, _>>()?;
        let dests = self.files.iter().map(|r| parent(&self.to, r)).collect::<Result<_, _>>()?;
        Ok((sources, dests))
    }

    /// `dir` and its ancestors up to the anchor.
    fn chain(&self, dir: &RelPath) -> Vec<RelPath> {
        let mut out = Vec::new();
        let mut cur = Some(dir.clone());
        while let Some(d) = cur {
            if !d.starts_with(&self.anchor) {
                break;
            }
            cur = if d == self.anchor { None } else { d.parent() };
            out.push(d);
        }
        out
    }
}

/// The directories of `dirs` no other one lies beneath (creating them
/// creates the rest).
fn leaves(dirs: &BTreeSet<RelPath>) -> impl Iterator<Item = &RelPath> {
    dirs.iter().filter(move |d| !dirs.iter().any(|o| o != *d && o.starts_with(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn record_round_trip_and_rejections() {
        let mut r = Record::new();
        r.insert(p("bin/game.exe"), Produced { size: 7, hash: [1; 32], mtime_ns: Some(42) });
        r.insert(p("data/empty"), Produced { size: 0, hash: [2; 32], mtime_ns: None });
        let bytes = encode_record(&r);
        assert_eq!(decode_record(&bytes).unwrap(), r);
        assert_eq!(decode_record(&encode_record(&Record::new())).unwrap(), Record::new());
        for n in 0..bytes.len() - 2 {
            assert!(decode_record(&bytes[..n]).is_err(), "torn at {n}");
        }
        let text = String::from_utf8(bytes).unwrap();
        assert!(decode_record(text.replace("\"format\":1", "\"format\":2").as_bytes()).unwrap_err().contains("format"));
        assert!(decode_record(text.replace("bin/game.exe", "../x").as_bytes()).is_err());
    }

    #[test]
    fn produced_names_may_not_be_control_files() {
        assert!(check_produced_name(&p("bin/.lanspread_owned")).is_ok());
        for bad in [".lanspread_owned", ".LANSPREAD_FILES.JSON/x", ".Lanspread_Owned"] {
            assert!(check_produced_name(&p(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn moves_sync_the_chain_before_renaming_and_both_sides_after() {
        let m = Move { from: p("g/local"), to: p(".lanspread-kept/g-5"), anchor: RelPath::root(), files: vec![p("a/b.sav"), p("c.txt")] };
        let ops: Vec<String> = m
            .steps(&p("g"))
            .unwrap()
            .iter()
            .map(|s| match s {
                Step::Op(op) => op.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ops,
            [
                "create_dir_all .lanspread-kept/g-5/a",
                "sync_dir , .lanspread-kept, .lanspread-kept/g-5, .lanspread-kept/g-5/a",
                "rename g/local/a/b.sav -> .lanspread-kept/g-5/a/b.sav",
                "rename g/local/c.txt -> .lanspread-kept/g-5/c.txt",
                "sync_dir .lanspread-kept/g-5, .lanspread-kept/g-5/a, g/local, g/local/a",
            ]
        );
        let undo: Vec<String> = m.remove_empty_dests(&p("g")).iter().map(|s| format!("{s:?}")).collect();
        assert_eq!(undo.len(), 2, "{undo:?}");
        assert!(undo[0].contains("g-5/a") && undo[1].contains("g-5\""), "deepest first: {undo:?}");
    }
}
