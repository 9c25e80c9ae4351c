use super::*;
use futures::executor::block_on;
use lanspread_ports::fs::{ReadPiece, WritePiece};

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn file(s: &str) -> Node {
    Node::File(s.as_bytes().to_vec())
}

async fn write(fs: &MemFs, path: &str, data: &str, sync: bool) {
    let h = fs.open_write(&p(path)).await.unwrap();
    h.set_len(0).await.unwrap();
    h.write_at(0, Bytes::copy_from_slice(data.as_bytes())).await.unwrap();
    if sync {
        h.sync().await.unwrap();
    }
}

#[test]
fn basic_operations() {
    block_on(async {
        let fs = MemFs::new();
        fs.create_dir(&p("a")).await.unwrap();
        assert_eq!(fs.create_dir(&p("a")).await.unwrap_err().kind, FsErrorKind::AlreadyExists);
        assert_eq!(fs.create_dir(&p("x/y")).await.unwrap_err().kind, FsErrorKind::NotFound);
        write(&fs, "a/f", "hello", false).await;
        assert_eq!(fs.read("a/f").unwrap(), b"hello");
        let h = fs.open_read(&p("a/f")).await.unwrap();
        assert_eq!(&h.read_at(1, 3).await.unwrap()[..], b"ell");
        assert_eq!(&h.read_at(3, 100).await.unwrap()[..], b"lo");
        assert_eq!(h.read_at(100, 1).await.unwrap().len(), 0);
        assert_eq!(h.write_at(0, Bytes::from_static(b"x")).await.unwrap_err().kind, FsErrorKind::PermissionDenied);
        let m = fs.metadata(&p("a/f")).await.unwrap();
        assert_eq!((m.kind, m.len), (FileKind::File, 5));
        assert_eq!(fs.metadata(&p("a")).await.unwrap().kind, FileKind::Dir);
        assert_eq!(fs.metadata(&p("nope")).await.unwrap_err().kind, FsErrorKind::NotFound);
        let list = fs.read_dir(&p("a")).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].kind, list[0].len), ("f", FileKind::File, 5));
        assert_eq!(fs.read_dir(&p("a/f")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
        assert_eq!(fs.remove_dir(&p("a")).await.unwrap_err().kind, FsErrorKind::NotEmpty);
        assert_eq!(fs.remove_file(&p("a")).await.unwrap_err().kind, FsErrorKind::IsADirectory);
        fs.remove_file(&p("a/f")).await.unwrap();
        fs.remove_dir(&p("a")).await.unwrap();
        assert!(fs.tree().is_empty());
    });
}

#[test]
fn open_write_never_truncates_and_set_len_extends_with_zeros() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("f", "abcdef");
        let h = fs.open_write(&p("f")).await.unwrap();
        h.write_at(8, Bytes::from_static(b"Z")).await.unwrap();
        assert_eq!(fs.read("f").unwrap(), b"abcdef\0\0Z");
        h.set_len(3).await.unwrap();
        assert_eq!(fs.read("f").unwrap(), b"abc");
        h.set_len(5).await.unwrap();
        assert_eq!(fs.read("f").unwrap(), b"abc\0\0");
        assert_eq!(h.len().await.unwrap(), 5);
        assert_eq!(h.write_at(u64::MAX, Bytes::from_static(b"x")).await.unwrap_err().kind, FsErrorKind::InvalidPath);
        assert_eq!(h.set_len(u64::MAX / 2).await.unwrap_err().kind, FsErrorKind::NoSpace);
    });
}

#[test]
fn symlinks_are_never_followed() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("outside/secret", "s");
        fs.mkdir_p("root");
        fs.symlink("root/link", "../outside");
        fs.symlink("root/flink", "../outside/secret");
        for path in ["root/link", "root/flink"] {
            assert_eq!(fs.open_read(&p(path)).await.err().unwrap().kind, FsErrorKind::Symlink);
            assert_eq!(fs.open_write(&p(path)).await.err().unwrap().kind, FsErrorKind::Symlink);
            assert_eq!(fs.metadata(&p(path)).await.unwrap().kind, FileKind::Symlink);
        }
        assert_eq!(fs.open_read(&p("root/link/secret")).await.err().unwrap().kind, FsErrorKind::Symlink);
        assert_eq!(fs.open_write(&p("root/link/new")).await.err().unwrap().kind, FsErrorKind::Symlink);
        assert_eq!(fs.read_dir(&p("root/link")).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.create_dir(&p("root/link/d")).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.remove_dir(&p("root/link")).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.remove_dir_all(&p("root/link")).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.create_dir_all(&p("root/link/x")).await.unwrap_err().kind, FsErrorKind::Symlink);
        // remove_dir_all of a tree containing a link removes the link only.
        fs.remove_dir_all(&p("root")).await.unwrap();
        assert_eq!(fs.tree(), BTreeMap::from([("outside".into(), Node::Dir), ("outside/secret".into(), file("s"))]));
    });
}

#[test]
fn rename_semantics() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("a", "A");
        fs.write_file("b", "B");
        fs.write_file("d/x", "X");
        fs.mkdir_p("empty");
        fs.rename(&p("a"), &p("b")).await.unwrap();
        assert_eq!(fs.read("b").unwrap(), b"A");
        assert!(!fs.exists("a"));
        assert_eq!(fs.rename(&p("b"), &p("d")).await.unwrap_err().kind, FsErrorKind::AlreadyExists);
        assert_eq!(fs.rename(&p("empty"), &p("d")).await.unwrap_err().kind, FsErrorKind::AlreadyExists);
        assert_eq!(fs.rename(&p("d"), &p("b")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
        assert_eq!(fs.rename(&p("d"), &p("d/sub")).await.unwrap_err().kind, FsErrorKind::InvalidPath);
        fs.rename(&p("d"), &p("empty")).await.unwrap();
        assert_eq!(fs.read("empty/x").unwrap(), b"X");
        assert_eq!(fs.rename(&p("nope"), &p("x")).await.unwrap_err().kind, FsErrorKind::NotFound);
        fs.rename(&p("b"), &p("b")).await.unwrap();
        // A handle follows its inode across renames and unlinks.
        let h = fs.open_write(&p("b")).await.unwrap();
        fs.rename(&p("b"), &p("c")).await.unwrap();
        h.write_at(1, Bytes::from_static(b"!")).await.unwrap();
        assert_eq!(fs.read("c").unwrap(), b"A!");
        fs.remove_file(&p("c")).await.unwrap();
        assert_eq!(&h.read_at(0, 9).await.unwrap()[..], b"A!");
    });
}

#[test]
fn crash_models_differ_exactly_on_what_was_synced() {
    block_on(async {
        let fs = MemFs::new();
        fs.mkdir_p("d");
        fs.checkpoint();
        write(&fs, "d/unsynced", "u", false).await;
        write(&fs, "d/synced", "s", true).await;
        let n = fs.op_count();
        let all = fs.crash_state(n, CrashModel::AllUpToK).tree();
        assert_eq!(all.get("d/unsynced"), Some(&file("u")));
        assert_eq!(all.get("d/synced"), Some(&file("s")));
        let meta = fs.crash_state(n, CrashModel::MetadataOnly).tree();
        assert_eq!(meta.get("d/unsynced"), Some(&file("")));
        assert_eq!(meta.get("d/synced"), Some(&file("s")));
        let synced = fs.crash_state(n, CrashModel::SyncedOnly).tree();
        assert_eq!(synced, BTreeMap::from([("d".into(), Node::Dir)]), "no sync_dir yet");
        fs.sync_dir(&p("d")).await.unwrap();
        let synced = fs.crash(CrashModel::SyncedOnly).tree();
        assert_eq!(synced.get("d/unsynced"), Some(&file("")));
        assert_eq!(synced.get("d/synced"), Some(&file("s")));
        // Before anything: the checkpoint.
        assert_eq!(fs.crash_state(0, CrashModel::AllUpToK).tree(), BTreeMap::from([("d".into(), Node::Dir)]));
    });
}

#[test]
fn unsynced_removal_and_rename_come_back_under_synced_only() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("a", "A");
        fs.write_file("x/b", "B");
        fs.checkpoint();
        fs.remove_file(&p("a")).await.unwrap();
        fs.rename(&p("x/b"), &p("c")).await.unwrap();
        let t = fs.crash(CrashModel::SyncedOnly).tree();
        assert_eq!(t.get("a"), Some(&file("A")));
        assert_eq!(t.get("x/b"), Some(&file("B")));
        assert!(!t.contains_key("c"));
        // Syncing either side of a cross-directory rename makes it whole.
        fs.sync_dir(&RelPath::root()).await.unwrap();
        let t = fs.crash(CrashModel::SyncedOnly).tree();
        assert!(!t.contains_key("a"));
        assert!(!t.contains_key("x/b"), "{t:?}");
        assert_eq!(t.get("c"), Some(&file("B")));
    });
}

#[test]
fn atomic_write_survives_every_crash_point_old_or_new() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("dir/f", "old content");
        fs.checkpoint();
        fs.write_atomic(&p("dir/f"), &p("dir/f.tmp"), b"new content").await.unwrap();
        let n = fs.op_count();
        assert!(n >= 5, "{:?}", fs.op_log());
        for k in 0..=n {
            for model in CrashModel::ALL {
                let t = fs.crash_state(k, model).tree();
                let f = t.get("dir/f").unwrap_or_else(|| panic!("k={k} {model:?}: {t:?}"));
                assert!(*f == file("old content") || *f == file("new content"), "k={k} {model:?}: {f:?}");
                if k == n {
                    assert_eq!(*f, file("new content"));
                }
            }
        }
    });
}

#[test]
fn replay_reproduces_the_live_state_at_every_point() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("g/keep", "k");
        fs.checkpoint();
        let mut trees = vec![fs.tree()];
        fs.create_dir(&p("g/d")).await.unwrap();
        trees.push(fs.tree());
        let h = fs.open_write(&p("g/d/f")).await.unwrap();
        trees.push(fs.tree());
        h.set_len(4).await.unwrap();
        trees.push(fs.tree());
        h.write_at(1, Bytes::from_static(b"ab")).await.unwrap();
        trees.push(fs.tree());
        h.sync().await.unwrap();
        trees.push(fs.tree());
        fs.rename(&p("g/d"), &p("g/e")).await.unwrap();
        trees.push(fs.tree());
        fs.sync_dir(&p("g")).await.unwrap();
        trees.push(fs.tree());
        fs.remove_file(&p("g/keep")).await.unwrap();
        trees.push(fs.tree());
        assert_eq!(fs.op_count() + 1, trees.len());
        for (k, t) in trees.iter().enumerate() {
            assert_eq!(&fs.crash_state(k, CrashModel::AllUpToK).tree(), t, "k={k}");
        }
    });
}

#[test]
fn crash_of_a_scoped_view_keeps_the_view() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("outside/x", "x");
        let games = fs.scoped("games");
        games.write_file("g/version.ini", "1");
        assert_eq!(fs.read("games/g/version.ini").unwrap(), b"1");
        assert_eq!(games.tree().len(), 2);
        games.checkpoint();
        write(&games, "g/new", "n", true).await;
        let c = games.crash(CrashModel::MetadataOnly);
        assert_eq!(c.read("g/new").unwrap(), b"n");
        assert!(c.read("outside/x").is_none(), "a view cannot see outside");
        assert!(c.read("g/version.ini").is_some());
    });
}

#[test]
fn faults_fail_one_op_without_effect() {
    block_on(async {
        let fs = MemFs::new();
        fs.checkpoint();
        fs.fail_nth_op(1, FsErrorKind::Io);
        fs.create_dir(&p("a")).await.unwrap();
        let e = fs.create_dir(&p("b")).await.unwrap_err();
        assert_eq!(e.kind, FsErrorKind::Io);
        assert!(e.message.contains("b"), "{e}");
        assert!(!fs.exists("b"));
        fs.create_dir(&p("b")).await.unwrap();
        assert_eq!(fs.op_count(), 2);
        fs.fail_nth_op(0, FsErrorKind::NoSpace);
        assert!(fs.clear_fault());
        assert!(!fs.clear_fault());
    });
}

#[test]
fn capacity_gives_no_space_and_free_space() {
    block_on(async {
        let fs = MemFs::new();
        assert_eq!(fs.free_space().await.unwrap(), None);
        fs.write_file("a", "12345");
        fs.set_capacity(Some(10));
        assert_eq!(fs.free_space().await.unwrap(), Some(5));
        let h = fs.open_write(&p("b")).await.unwrap();
        h.write_at(0, Bytes::from_static(b"123")).await.unwrap();
        let e = h.write_at(3, Bytes::from_static(b"456")).await.unwrap_err();
        assert_eq!(e.kind, FsErrorKind::NoSpace);
        assert!(e.message.starts_with("b:"), "{e}");
        assert_eq!(h.set_len(100).await.unwrap_err().kind, FsErrorKind::NoSpace);
        h.set_len(5).await.unwrap();
        assert_eq!(fs.free_space().await.unwrap(), Some(0));
        fs.remove_file(&p("a")).await.unwrap();
        assert_eq!(fs.free_space().await.unwrap(), Some(5));
    });
}

#[test]
fn watch_reports_direct_children_and_ends_with_the_directory() {
    block_on(async {
        let fs = MemFs::new();
        fs.mkdir_p("g/sub");
        let mut w = fs.watch(&p("g")).await.unwrap();
        write(&fs, "g/f", "x", false).await; // create, set_len, write_at
        fs.create_dir(&p("g/sub/deep")).await.unwrap(); // not a direct child: no event
        fs.rename(&p("g/f"), &p("g/h")).await.unwrap();
        let mut names = Vec::new();
        for _ in 0..5 {
            let e = w.next().await.unwrap();
            assert_eq!(e.dir, p("g"));
            names.push(e.name.unwrap());
        }
        assert_eq!(names, ["f", "f", "f", "f", "h"]);
        fs.remove_dir_all(&p("g")).await.unwrap();
        let mut rest = Vec::new();
        while let Some(e) = w.next().await {
            rest.push(e.name.unwrap());
        }
        assert_eq!(rest, ["h", "sub"]);
    });
}

#[test]
fn modified_time_is_a_logical_clock() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("f", "a");
        let m1 = fs.metadata(&p("f")).await.unwrap().modified_ns.unwrap();
        let h = fs.open_write(&p("f")).await.unwrap();
        h.write_at(0, Bytes::from_static(b"b")).await.unwrap();
        let m2 = fs.metadata(&p("f")).await.unwrap().modified_ns.unwrap();
        assert!(m2 > m1);
        h.sync().await.unwrap();
        assert_eq!(fs.metadata(&p("f")).await.unwrap().modified_ns.unwrap(), m2, "sync does not modify");
    });
}

#[test]
fn sync_tree_is_one_operation_that_makes_the_whole_tree_durable() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("keep/old", "old");
        fs.mkdir_p("t");
        fs.checkpoint();
        fs.create_dir(&p("t/d")).await.unwrap();
        fs.create_dir(&p("t/d/e")).await.unwrap();
        write(&fs, "t/a", "A", false).await;
        write(&fs, "t/d/e/b", "BB", false).await;
        fs.rename(&p("keep/old"), &p("t/moved")).await.unwrap();
        fs.write_file("outside", "o");
        let before = fs.op_count();
        fs.sync_tree(&p("t")).await.unwrap();
        assert_eq!(fs.op_count(), before + 1, "{:?}", fs.op_log());
        assert_eq!(fs.op_log().last().unwrap(), "sync_tree t");
        let want = |t: &BTreeMap<String, Node>| {
            assert_eq!(t.get("t/a"), Some(&file("A")));
            assert_eq!(t.get("t/d/e/b"), Some(&file("BB")));
            assert_eq!(t.get("t/moved"), Some(&file("old")));
            assert!(!t.contains_key("keep/old"), "the rename is durable on both sides: {t:?}");
        };
        for model in CrashModel::ALL {
            want(&fs.crash_state(before + 1, model).tree());
        }
        // Just before it: nothing of the tree under SyncedOnly, empty files
        // under MetadataOnly, everything under AllUpToK.
        let synced = fs.crash_state(before, CrashModel::SyncedOnly).tree();
        assert_eq!(synced.get("t"), Some(&Node::Dir));
        assert!(!synced.contains_key("t/a") && !synced.contains_key("t/d"), "{synced:?}");
        assert_eq!(synced.get("keep/old"), Some(&file("old")));
        let meta = fs.crash_state(before, CrashModel::MetadataOnly).tree();
        assert_eq!(meta.get("t/a"), Some(&file("")));
        assert_eq!(meta.get("t/d/e/b"), Some(&file("")));
        assert_eq!(fs.crash_state(before, CrashModel::AllUpToK).tree().get("t/d/e/b"), Some(&file("BB")));
        // Errors: a missing directory, a file, a symlink.
        assert_eq!(fs.sync_tree(&p("nope")).await.unwrap_err().kind, FsErrorKind::NotFound);
        assert_eq!(fs.sync_tree(&p("t/a")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
        fs.symlink("link", "t");
        assert_eq!(fs.sync_tree(&p("link")).await.unwrap_err().kind, FsErrorKind::Symlink);
        // A fault reaches it and leaves nothing durable.
        write(&fs, "t/late", "L", false).await;
        fs.fail_nth_op(0, FsErrorKind::Io);
        assert_eq!(fs.sync_tree(&p("t")).await.unwrap_err().kind, FsErrorKind::Io);
        assert_eq!(fs.crash(CrashModel::MetadataOnly).read("t/late").unwrap(), b"");
    });
}

#[test]
fn open_handles_are_counted_until_dropped() {
    block_on(async {
        let fs = MemFs::new();
        fs.write_file("a", "A");
        let view = fs.scoped("v");
        assert_eq!((fs.open_handles(), fs.max_open_handles()), (0, 0));
        let r = fs.open_read(&p("a")).await.unwrap();
        let w = view.open_write(&p("b")).await.unwrap();
        assert_eq!((fs.open_handles(), fs.max_open_handles()), (2, 2), "views share the count");
        drop(r);
        assert_eq!((fs.open_handles(), fs.max_open_handles()), (1, 2));
        fs.reset_max_open_handles();
        assert_eq!(fs.max_open_handles(), 1);
        drop(w);
        assert_eq!(view.open_handles(), 0);
        // Failed opens hold nothing; batches hold one file at a time.
        assert!(fs.open_read(&p("missing")).await.is_err());
        let pieces = (0..10).map(|i| WritePiece { path: p(&format!("f{i}")), offset: 0, data: Bytes::from_static(b"x") }).collect();
        fs.write_pieces(pieces).await.unwrap();
        let reads: Vec<ReadPiece> = (0..10).map(|i| ReadPiece { path: p(&format!("f{i}")), offset: 0, len: 1 }).collect();
        assert_eq!(fs.read_pieces(&reads).await.unwrap().len(), 10);
        assert_eq!((fs.open_handles(), fs.max_open_handles()), (0, 1));
    });
}

#[test]
fn faults_reach_every_write_of_a_batch() {
    block_on(async {
        let fs = MemFs::new();
        fs.mkdir_p("d");
        fs.checkpoint();
        let piece = |path: &str, offset: u64, data: &'static [u8]| WritePiece { path: p(path), offset, data: Bytes::from_static(data) };
        let batch = vec![piece("d/a", 0, b"aa"), piece("d/a", 2, b"AA"), piece("d/b", 0, b"bb")];
        // create d/a, write, write, create d/b (fails), ...
        fs.fail_nth_op(3, FsErrorKind::NoSpace);
        assert_eq!(fs.write_pieces(batch.clone()).await.unwrap_err().kind, FsErrorKind::NoSpace);
        assert_eq!(fs.read("d/a").unwrap(), b"aaAA", "pieces before the failure were written");
        assert!(!fs.exists("d/b"));
        assert_eq!(fs.open_handles(), 0);
        // Each write is its own recorded operation; nothing is synced.
        fs.checkpoint();
        fs.write_pieces(vec![piece("d/a", 1, b"x"), piece("d/c", 3, b"c")]).await.unwrap();
        assert_eq!(fs.op_log(), ["write_at #3 @1 +1", "create d/c", "write_at #4 @3 +1"]);
        assert_eq!(fs.read("d/a").unwrap(), b"axAA", "never truncated");
        assert_eq!(fs.read("d/c").unwrap(), b"\0\0\0c");
        assert_eq!(fs.crash(CrashModel::MetadataOnly).read("d/c").unwrap(), b"");
        // Reads are exact.
        let exact = fs.read_pieces(&[ReadPiece { path: p("d/a"), offset: 1, len: 3 }]).await.unwrap();
        assert_eq!(&exact[0][..], b"xAA");
        assert!(fs.read_pieces(&[ReadPiece { path: p("d/a"), offset: 2, len: 3 }]).await.is_err(), "past the end");
    });
}
