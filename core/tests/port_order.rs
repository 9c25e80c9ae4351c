//! The order of calls at the `Fs` port, checked with a mockall mock that
//! delegates to a MemFs and records every call: data is fsynced before the
//! name that publishes it is renamed into place, the rename before the
//! fsync of its directory, the intent last; and recovery never calls a
//! removal on what it cannot prove is ours.

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use lanspread_core::txn;
use lanspread_memfs::MemFs;
use lanspread_ports::fs::{DirEntry, FileHandle, Fs, FsResult, Metadata, Watcher};
use lanspread_ports::path::RelPath;
use mockall::{mock, predicate::eq, Sequence};
use std::sync::{Arc, Mutex};

mock! {
    pub Port {}
    #[async_trait]
    impl Fs for Port {
        async fn read_dir(&self, dir: &RelPath) -> FsResult<Vec<DirEntry>>;
        async fn metadata(&self, path: &RelPath) -> FsResult<Metadata>;
        async fn open_read(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>>;
        async fn open_write(&self, path: &RelPath) -> FsResult<Box<dyn FileHandle>>;
        async fn create_dir(&self, path: &RelPath) -> FsResult<()>;
        async fn rename(&self, from: &RelPath, to: &RelPath) -> FsResult<()>;
        async fn remove_file(&self, path: &RelPath) -> FsResult<()>;
        async fn remove_dir(&self, path: &RelPath) -> FsResult<()>;
        async fn sync_dir(&self, dir: &RelPath) -> FsResult<()>;
        async fn watch(&self, dir: &RelPath) -> FsResult<Box<dyn Watcher>>;
        async fn free_space(&self) -> FsResult<Option<u64>>;
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// A handle that records syncs and writes, delegating to MemFs.
struct LoggedHandle {
    inner: Box<dyn FileHandle>,
    path: String,
    log: Log,
}

#[async_trait]
impl FileHandle for LoggedHandle {
    async fn read_at(&self, offset: u64, len: usize) -> FsResult<Bytes> {
        self.inner.read_at(offset, len).await
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> FsResult<()> {
        self.log.lock().unwrap().push(format!("write {}", self.path));
        self.inner.write_at(offset, data).await
    }
    async fn set_len(&self, len: u64) -> FsResult<()> {
        self.inner.set_len(len).await
    }
    async fn len(&self) -> FsResult<u64> {
        self.inner.len().await
    }
    async fn sync(&self) -> FsResult<()> {
        self.log.lock().unwrap().push(format!("sync {}", self.path));
        self.inner.sync().await
    }
}

/// A mock whose every method delegates to `mem` and logs. Methods listed in
/// `skip` get no catch-all expectation (the test sets its own).
fn delegating(mem: &MemFs, log: &Log, skip: &[&str]) -> MockPort {
    let mut m = MockPort::new();
    let (f, l) = (mem.clone(), log.clone());
    m.expect_read_dir().returning(move |d| run(f.read_dir(d)));
    let f = mem.clone();
    m.expect_metadata().returning(move |p| run(f.metadata(p)));
    let (f, l2) = (mem.clone(), log.clone());
    m.expect_open_read().returning(move |p| {
        let inner = run(f.open_read(p))?;
        Ok(Box::new(LoggedHandle { inner, path: p.to_string(), log: l2.clone() }) as Box<dyn FileHandle>)
    });
    let (f, l2) = (mem.clone(), log.clone());
    m.expect_open_write().returning(move |p| {
        let inner = run(f.open_write(p))?;
        Ok(Box::new(LoggedHandle { inner, path: p.to_string(), log: l2.clone() }) as Box<dyn FileHandle>)
    });
    let (f, l2) = (mem.clone(), log.clone());
    m.expect_create_dir().returning(move |p| {
        l2.lock().unwrap().push(format!("create_dir {p}"));
        run(f.create_dir(p))
    });
    if !skip.contains(&"rename") {
        let (f, l2) = (mem.clone(), log.clone());
        m.expect_rename().returning(move |a, b| {
            l2.lock().unwrap().push(format!("rename {a} -> {b}"));
            run(f.rename(a, b))
        });
    }
    if !skip.contains(&"remove_file") {
        let (f, l2) = (mem.clone(), log.clone());
        m.expect_remove_file().returning(move |p| {
            l2.lock().unwrap().push(format!("remove_file {p}"));
            run(f.remove_file(p))
        });
    }
    if !skip.contains(&"remove_dir") {
        let (f, l2) = (mem.clone(), log.clone());
        m.expect_remove_dir().returning(move |p| {
            l2.lock().unwrap().push(format!("remove_dir {p}"));
            run(f.remove_dir(p))
        });
    }
    let (f, l2) = (mem.clone(), l.clone());
    m.expect_sync_dir().returning(move |p| {
        l2.lock().unwrap().push(format!("sync_dir {p}"));
        run(f.sync_dir(p))
    });
    let f = mem.clone();
    m.expect_free_space().returning(move || run(f.free_space()));
    m
}

fn pos(log: &[String], entry: &str) -> usize {
    log.iter().position(|e| e == entry).unwrap_or_else(|| panic!("{entry:?} never happened in {log:#?}"))
}

fn positions(log: &[String], entry: &str) -> Vec<usize> {
    log.iter().enumerate().filter(|(_, e)| *e == entry).map(|(i, _)| i).collect()
}

#[test]
fn commit_syncs_data_then_temp_sentinel_then_renames_then_syncs_the_root() {
    let mem = MemFs::new();
    let old = Game::new("1", &[("a.bin", Some("old"))]);
    old.write_downloaded(&mem, "g");
    let new = Game::new("2", &[("a.bin", Some("new data")), ("d", None), ("d/b.bin", Some("bbb"))]);
    let m = new.manifest();
    run(async {
        txn::begin_download(&mem, &p("g"), &m).await.unwrap();
        new.write_data(&mem, &p("g"), 3).await;
    });

    let log: Log = Arc::default();
    let mut mock = delegating(&mem, &log, &["rename", "remove_file"]);
    let mut seq = Sequence::new();
    let (f, l) = (mem.clone(), log.clone());
    mock.expect_rename().with(eq(p("g/.version.ini.tmp")), eq(p("g/version.ini"))).times(1).in_sequence(&mut seq).returning(move |a, b| {
        l.lock().unwrap().push(format!("rename {a} -> {b}"));
        run(f.rename(a, b))
    });
    for path in ["g/.version.ini.discarded", "g/.lanspread.json"] {
        let (f, l) = (mem.clone(), log.clone());
        mock.expect_remove_file().with(eq(p(path))).times(1).in_sequence(&mut seq).returning(move |a| {
            l.lock().unwrap().push(format!("remove_file {a}"));
            run(f.remove_file(a))
        });
    }
    run(txn::commit_download(&mock, &p("g"), &m, &new.sentinel())).unwrap();
    mock.checkpoint();

    let log = log.lock().unwrap().clone();
    let write_tmp = pos(&log, "write g/.version.ini.tmp");
    let sync_tmp = pos(&log, "sync g/.version.ini.tmp");
    let rename = pos(&log, "rename g/.version.ini.tmp -> g/version.ini");
    for data in ["sync g/a.bin", "sync g/d/b.bin", "sync_dir g/d"] {
        assert!(pos(&log, data) < write_tmp, "{data} must precede the temp sentinel: {log:#?}");
    }
    assert!(positions(&log, "sync_dir g").iter().any(|i| *i < write_tmp), "the root is synced before the sentinel: {log:#?}");
    assert!(write_tmp < sync_tmp && sync_tmp < rename, "{log:#?}");
    let root_sync_after = positions(&log, "sync_dir g").into_iter().find(|i| *i > rename).expect("root synced after the rename");
    assert!(root_sync_after < pos(&log, "remove_file g/.lanspread.json"), "{log:#?}");
    assert_eq!(log.last().unwrap(), "sync_dir g", "the intent removal is made durable: {log:#?}");
    assert_eq!(mem.read("g/version.ini").unwrap(), new.sentinel());
}

#[test]
fn update_stages_syncs_swaps_then_deletes_the_backup_last() {
    let mem = MemFs::new();
    Game::new("2", &[("a.fake", Some("bin/x=new\ndata/y=yy\n"))]).write_downloaded(&mem, "g");
    mem.write_file("g/local/bin/x", "old");
    mem.write_file("g/local/.lanspread_owned", "");
    let log: Log = Arc::default();
    let mock: Arc<dyn Fs> = Arc::new(delegating(&mem, &log, &[]));
    let kind = run(txn::install(mock, &FakeUnpacker, &p("g"), keep(false), no_progress())).unwrap().kind;
    assert_eq!(kind, txn::InstallKind::Updated);
    let log = log.lock().unwrap().clone();
    let to_backup = pos(&log, "rename g/local -> g/.local.backup");
    let swap = pos(&log, "rename g/.local.installing -> g/local");
    for synced in [
        "sync g/.local.installing/bin/x",
        "sync g/.local.installing/data/y",
        "sync_dir g/.local.installing/data",
        "sync_dir g/.local.installing",
    ] {
        assert!(pos(&log, synced) < to_backup, "{synced} must be durable before the swap: {log:#?}");
    }
    assert!(to_backup < swap, "{log:#?}");
    let root_sync = positions(&log, "sync_dir g").into_iter().find(|i| *i > swap).expect("root synced after the swap");
    let backup_gone = pos(&log, "remove_dir g/.local.backup");
    assert!(root_sync < backup_gone, "the backup is deleted only after the swap is durable: {log:#?}");
    assert!(backup_gone < pos(&log, "remove_file g/.lanspread.json"), "{log:#?}");
    assert_eq!(mem.read("g/local/bin/x").unwrap(), b"new");
}

#[test]
fn recovery_never_removes_what_it_cannot_prove_is_ours() {
    let mem = MemFs::new();
    Game::new("1", &[("a.fake", Some("x=1\n"))]).write_downloaded(&mem, "g");
    mem.write_file("g/.local.installing/foreign.txt", "not ours");
    mem.write_file("g/.local.backup/foreign.txt", "not ours either");
    mem.symlink("g/local", "/elsewhere");
    let log: Log = Arc::default();
    let mut mock = delegating(&mem, &log, &["rename", "remove_file", "remove_dir"]);
    mock.expect_rename().never();
    mock.expect_remove_file().never();
    mock.expect_remove_dir().never();
    let report = run(txn::recover_root(&mock, &p("g"))).unwrap();
    mock.checkpoint();
    assert!(!report.changed());
    assert_eq!(report.problems.len(), 3, "{report:?}");
}
