//! The machines driven by hand: no executor, no filesystem. A test answers
//! each operation itself and checks the exact sequence asked for.

use super::*;
use crate::game::{EntryKind, FileEntry, Version};
use lanspread_ports::fs::{DirEntry, FileKind, FsError, FsErrorKind, Metadata};

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn meta(kind: FileKind, len: u64) -> OpResult {
    Ok(OpValue::Metadata(Metadata { kind, len, modified_ns: None }))
}

fn entries(list: &[(&str, FileKind)]) -> OpResult {
    Ok(OpValue::Entries(list.iter().map(|(n, k)| DirEntry { name: n.to_string(), kind: *k, len: 0, modified_ns: None }).collect()))
}

fn not_found() -> OpResult {
    Err(OpError::Fs(FsError::new(FsErrorKind::NotFound, "not found")))
}

/// Drives `m`, answering with `answer`; returns the operations asked (as
/// text) and the outcome.
fn drive<M: Machine>(m: &mut M, mut answer: impl FnMut(&FsOp) -> OpResult) -> (Vec<String>, Result<M::Output, TxnError>) {
    let mut ops = Vec::new();
    while let Some(op) = m.poll_op() {
        assert_eq!(m.poll_op(), None, "one operation in flight at a time");
        let r = match &op {
            // A batch is answered (and listed) path by path.
            FsOp::MetadataMany(paths) => Ok(OpValue::MetadataMany(
                paths
                    .iter()
                    .map(|p| {
                        let single = FsOp::Metadata(p.clone());
                        ops.push(single.to_string());
                        match answer(&single) {
                            Ok(OpValue::Metadata(m)) => Ok(m),
                            Err(OpError::Fs(e)) => Err(e),
                            other => panic!("a metadata answer must be metadata or an Fs error, not {other:?}"),
                        }
                    })
                    .collect(),
            )),
            _ => {
                ops.push(op.to_string());
                answer(&op)
            }
        };
        m.handle_result(r);
    }
    let outcome = m.take_outcome().expect("finished");
    assert!(m.take_outcome().is_none(), "the outcome is taken once");
    (ops, outcome)
}

/// A root `g` holding a downloaded game lanspread installed (its `local/`
/// holds only the marker) and nothing else.
fn installed_root(op: &FsOp) -> OpResult {
    match op {
        FsOp::Metadata(path) if path.as_str() == "g" => meta(FileKind::Dir, 0),
        FsOp::Metadata(path) if path.as_str() == "g/local/.lanspread_owned" => meta(FileKind::File, 0),
        FsOp::ReadDir(path) if path.as_str() == "g" => entries(&[("local", FileKind::Dir), ("version.ini", FileKind::File)]),
        FsOp::ReadDir(path) if path.as_str() == "g/local" => entries(&[(".lanspread_owned", FileKind::File)]),
        FsOp::Metadata(_) | FsOp::ReadFile { .. } | FsOp::ReadDir(_) => not_found(),
        _ => Ok(OpValue::Unit),
    }
}

const KEEP: KeepOptions = KeepOptions { adopt: false, time: 7 };

#[test]
fn uninstall_asks_for_exactly_this_sequence() {
    let (ops, out) = drive(&mut Uninstall::uninstall(p("g"), KEEP), installed_root);
    assert_eq!(out.unwrap().kept, None, "nothing of the user's");
    assert_eq!(
        ops,
        [
            "metadata g",
            "read_dir g",
            "metadata g/local/.lanspread_owned",
            "read_dir g/local",
            "read_dir .lanspread-kept",
            "write g/.lanspread.json.tmp (49 bytes)",
            "sync g/.lanspread.json.tmp",
            "rename g/.lanspread.json.tmp -> g/.lanspread.json",
            "sync_dir g",
            "rename g/local -> g/.local.backup",
            "sync_dir g",
            "remove_dir_all g/.local.backup",
            "remove_file g/.lanspread.json",
            "sync_dir g",
        ]
    );
}

#[test]
fn a_failure_before_the_commit_point_runs_recovery_and_reports_the_failure() {
    let mut renamed_intent = false;
    let (ops, out) = drive(&mut Uninstall::uninstall(p("g"), KEEP), |op| match op {
        FsOp::Rename { to, .. } if to.as_str() == "g/.local.backup" => {
            Err(OpError::Fs(FsError::new(FsErrorKind::PermissionDenied, "denied")))
        }
        FsOp::Rename { to, .. } if to.as_str() == "g/.lanspread.json" => {
            renamed_intent = true;
            Ok(OpValue::Unit)
        }
        // Recovery observes the intent written above.
        FsOp::ReadDir(path) if path.as_str() == "g" && renamed_intent => {
            entries(&[("local", FileKind::Dir), ("version.ini", FileKind::File), (".lanspread.json", FileKind::File)])
        }
        FsOp::ReadFile { .. } => Ok(OpValue::Data(Intent::new(IntentOp::Uninstall, Phase::Removing).encode())),
        other => installed_root(other),
    });
    let err = out.unwrap_err();
    assert_eq!(err.to_string(), "game root g: rename g/local -> g/.local.backup failed: denied");
    let after = ops.iter().position(|o| o == "rename g/local -> g/.local.backup").unwrap();
    assert_eq!(
        ops[after + 1..],
        [
            "metadata g",
            "read_dir g",
            "read g/.lanspread.json",
            "metadata g/local/.lanspread_owned",
            "remove_file g/.lanspread.json",
            "sync_dir g"
        ],
        "recovery keeps local/ and clears the intent"
    );
}

#[test]
fn refusals_happen_before_any_change() {
    // Nothing to install: only reads.
    let (ops, out) = drive(&mut Install::install(p("g"), |n: &str| n.ends_with(".zip"), KEEP), installed_root);
    assert!(matches!(out, Err(TxnError::NothingToInstall { .. })));
    assert_eq!(ops, ["metadata g", "read_dir g", "metadata g/local/.lanspread_owned"]);
    // A local/ lanspread did not install: an update or uninstall is refused
    // after the observation, unless adopted.
    let unmarked = |op: &FsOp| match op {
        FsOp::Metadata(path) if path.as_str() == "g/local/.lanspread_owned" => not_found(),
        FsOp::ReadDir(path) if path.as_str() == "g" => {
            entries(&[("local", FileKind::Dir), ("version.ini", FileKind::File), ("a.zip", FileKind::File)])
        }
        other => installed_root(other),
    };
    let (ops, out) = drive(&mut Install::install(p("g"), |n: &str| n.ends_with(".zip"), KEEP), unmarked);
    assert!(matches!(out, Err(TxnError::NotOwned { .. })), "{out:?}");
    assert_eq!(ops, ["metadata g", "read_dir g", "metadata g/local/.lanspread_owned"]);
    let (ops, out) = drive(&mut Uninstall::uninstall(p("g"), KEEP), unmarked);
    let e = out.unwrap_err();
    assert_eq!(
        e.to_string(),
        "game root g: local/ was not installed by lanspread; nothing was changed. \
         To let lanspread take it over and keep your files, run again with --adopt"
    );
    assert_eq!(ops.len(), 3, "{ops:?}");
    let (ops, out) = drive(&mut Uninstall::uninstall(p("g"), KeepOptions { adopt: true, ..KEEP }), unmarked);
    out.unwrap();
    assert!(ops.contains(&"rename g/local -> g/.local.backup".to_owned()), "adopted: {ops:?}");
    // Commit without a download in progress.
    let m = Manifest {
        version: Version::new("1").unwrap(),
        files: vec![FileEntry { path: p("version.ini"), kind: EntryKind::File, size: 2, chunks: vec![[0; 32]], hash: [0; 32] }],
    };
    let (ops, out) = drive(&mut CommitDownload::commit(p("g"), &m, b"1\n"), installed_root);
    assert!(matches!(out, Err(TxnError::NoDownload { .. })));
    assert!(ops.iter().all(|o| o.starts_with("metadata") || o.starts_with("read")), "{ops:?}");
}

#[test]
fn begin_download_parks_before_writing_and_sizes_without_truncating() {
    let m = Manifest {
        version: Version::new("2").unwrap(),
        files: vec![
            FileEntry { path: p("d"), kind: EntryKind::Dir, size: 0, chunks: vec![], hash: [0; 32] },
            FileEntry { path: p("d/same.bin"), kind: EntryKind::File, size: 5, chunks: vec![[0; 32]], hash: [0; 32] },
            FileEntry { path: p("d/short.bin"), kind: EntryKind::File, size: 9, chunks: vec![[0; 32]], hash: [0; 32] },
            FileEntry { path: p("version.ini"), kind: EntryKind::File, size: 2, chunks: vec![[0; 32]], hash: [0; 32] },
        ],
    };
    let (ops, out) = drive(&mut BeginDownload::begin(p("g"), &m), |op| match op {
        FsOp::Metadata(path) => match path.as_str() {
            "g" | "g/d" => meta(FileKind::Dir, 0),
            "g/d/same.bin" => meta(FileKind::File, 5),
            "g/d/short.bin" => meta(FileKind::File, 3),
            _ => not_found(),
        },
        FsOp::ReadDir(_) => entries(&[("version.ini", FileKind::File), ("d", FileKind::Dir)]),
        FsOp::FreeSpace => Ok(OpValue::FreeSpace(Some(1000))),
        _ => Ok(OpValue::Unit),
    });
    out.unwrap();
    let mutations: Vec<&str> =
        ops.iter().map(String::as_str).filter(|o| !o.starts_with("metadata") && !o.starts_with("read") && *o != "free_space").collect();
    assert_eq!(
        mutations,
        [
            "write g/.lanspread.json.tmp (61 bytes)",
            "sync g/.lanspread.json.tmp",
            "rename g/.lanspread.json.tmp -> g/.lanspread.json",
            "sync_dir g",
            "rename g/version.ini -> g/.version.ini.discarded",
            "write g/.lanspread.json.tmp (61 bytes)",
            "sync g/.lanspread.json.tmp",
            "rename g/.lanspread.json.tmp -> g/.lanspread.json",
            "sync_dir g",
            "preallocate g/d/short.bin (9 bytes)",
        ]
    );
}

#[test]
fn driver_answers_must_match_the_question() {
    // A driver answering a read with the wrong kind of value gets a clear error, not a panic.
    let (_, out) = drive(&mut Recover::recover(p("g"), RecoveryMode::Normal), |_| Ok(OpValue::Unit));
    assert!(out.unwrap_err().to_string().contains("wrong kind of value"));
}

#[test]
fn the_async_api_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    struct NoUnpacker;
    #[async_trait::async_trait]
    impl lanspread_ports::Unpacker for NoUnpacker {
        fn handles(&self, _: &str) -> bool {
            false
        }
        async fn unpack(
            &self,
            _: std::sync::Arc<dyn Fs>,
            _: &RelPath,
            _: &RelPath,
            _: ProgressFn<'_>,
        ) -> Result<Vec<lanspread_ports::unpack::UnpackedFile>, lanspread_ports::UnpackError> {
            Ok(Vec::new())
        }
    }
    let mem = lanspread_memfs::MemFs::new();
    let fs: &dyn Fs = &mem;
    let arc: std::sync::Arc<dyn Fs> = std::sync::Arc::new(mem.clone());
    let m = Manifest { version: Version::new("1").unwrap(), files: vec![] };
    let catalog = Catalog::default();
    let id = GameId::new("g").unwrap();
    let root = p("g");
    let progress: ProgressFn<'_> = &|_| {};
    assert_send(&begin_download(fs, &root, &m));
    assert_send(&commit_download(fs, &root, &m, b"1"));
    assert_send(&abort_download(fs, &root));
    assert_send(&install(arc, &NoUnpacker, &root, KEEP, progress));
    assert_send(&uninstall(fs, &root, KEEP));
    assert_send(&remove_downloaded(fs, &catalog, &id));
    assert_send(&recover_root(fs, &root));
    assert_send(&recover_all(fs, &catalog));
}
