//! Unit tests of the batch calls that need to look inside [`CapFs`].

use super::*;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn piece(path: &str, offset: u64, data: &[u8]) -> WritePiece {
    WritePiece { path: p(path), offset, data: Bytes::copy_from_slice(data) }
}

/// `syncfs` calls made so far (always 0 off Linux).
fn syncfs_calls(fs: &CapFs) -> u64 {
    #[cfg(target_os = "linux")]
    return fs.inner.tree_sync.syncfs.as_ref().map_or(0, |s| s.calls.load(Ordering::Relaxed));
    #[cfg(not(target_os = "linux"))]
    return 0;
}

/// A tree of small files written in one batch, with a link inside that
/// points out of the root.
async fn small_tree(fs: &CapFs, outside: &Path) {
    fs.create_dir_all(&p("t/a/b")).await.unwrap();
    let pieces = (0..300).map(|i| piece(&format!("t/{}/f{i}", ["a", "a/b"][i % 2]), 0, format!("file {i}").as_bytes())).collect();
    fs.write_pieces(pieces).await.unwrap();
    std::os::unix::fs::symlink(outside, fs.root_path().join("t/a/out")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tree_is_one_syncfs_per_call_and_refuses_what_it_cannot_reach() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("root")).unwrap();
    let fs = CapFs::open(&tmp.path().join("root")).unwrap();
    small_tree(&fs, tmp.path()).await;
    let before = syncfs_calls(&fs);
    fs.sync_tree(&p("t")).await.unwrap();
    fs.sync_tree(&RelPath::root()).await.unwrap();
    let expected = if cfg!(target_os = "linux") { 2 } else { 0 };
    assert_eq!(syncfs_calls(&fs) - before, expected, "one syncfs per tree, whatever its size");
    assert_eq!(std::fs::read(tmp.path().join("root/t/a/b/f1")).unwrap(), b"file 1");

    assert_eq!(fs.sync_tree(&p("missing")).await.unwrap_err().kind, FsErrorKind::NotFound);
    assert_eq!(fs.sync_tree(&p("t/a/f0")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
    assert_eq!(fs.sync_tree(&p("t/a/out")).await.unwrap_err().kind, FsErrorKind::Symlink);
    assert_eq!(syncfs_calls(&fs) - before, expected, "a refused call syncs nothing");
}

/// The walk used off Linux and for a tree on another filesystem: every
/// file and directory synced, links not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tree_walk_syncs_every_entry_without_following_links() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("root")).unwrap();
    let fs = CapFs::open(&tmp.path().join("root")).unwrap();
    small_tree(&fs, tmp.path()).await;
    let before = syncfs_calls(&fs);
    fs.run(|i| i.sync_tree_walk(&p("t"))).await.unwrap();
    assert_eq!(syncfs_calls(&fs), before);
    assert_eq!(fs.run(|i| i.sync_tree_walk(&p("t/a/out"))).await.unwrap_err().kind, FsErrorKind::Symlink);
    assert_eq!(fs.run(|i| i.sync_tree_walk(&p("nope"))).await.unwrap_err().kind, FsErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_share_one_open_per_run_of_a_file_and_read_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = CapFs::open(tmp.path()).unwrap();
    fs.create_dir(&p("d")).await.unwrap();
    // Out of order, with a gap, interleaved with another file.
    let batch = vec![piece("d/a", 4, b"EFGH"), piece("d/a", 0, b"ABCD"), piece("d/b", 2, b"bb"), piece("d/a", 10, b"K")];
    fs.write_pieces(batch).await.unwrap();
    assert_eq!(std::fs::read(tmp.path().join("d/a")).unwrap(), b"ABCDEFGH\0\0K");
    assert_eq!(std::fs::read(tmp.path().join("d/b")).unwrap(), b"\0\0bb");
    let reads = [
        ReadPiece { path: p("d/a"), offset: 2, len: 4 },
        ReadPiece { path: p("d/b"), offset: 0, len: 4 },
        ReadPiece { path: p("d/a"), offset: 11, len: 0 },
    ];
    let got = fs.read_pieces(&reads).await.unwrap();
    assert_eq!(got.iter().map(|b| &b[..]).collect::<Vec<_>>(), [&b"CDEF"[..], b"\0\0bb", b""]);
    let past = fs.read_pieces(&[ReadPiece { path: p("d/b"), offset: 1, len: 4 }]).await.unwrap_err();
    assert_eq!(past.kind, FsErrorKind::Io, "{past}");
    let huge = fs.read_pieces(&[ReadPiece { path: p("d/b"), offset: u64::MAX, len: usize::MAX }]).await.unwrap_err();
    assert_eq!(huge.kind, FsErrorKind::Io, "no allocation, no overflow: {huge}");
    // A failing piece stops the batch; the ones before it were written.
    let e = fs.write_pieces(vec![piece("d/c", 0, b"c"), piece("nodir/x", 0, b"x"), piece("d/e", 0, b"e")]).await.unwrap_err();
    assert_eq!(e.kind, FsErrorKind::NotFound);
    assert!(tmp.path().join("d/c").exists() && !tmp.path().join("d/e").exists());
    fs.write_pieces(Vec::new()).await.unwrap();
    assert!(fs.read_pieces(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_dir_all_on_one_thread_keeps_the_default_rules() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("root")).unwrap();
    std::fs::write(tmp.path().join("secret"), b"keep").unwrap();
    let fs = CapFs::open(&tmp.path().join("root")).unwrap();
    small_tree(&fs, tmp.path()).await;
    // A special file inside is unlinked like a file (if mkfifo is there).
    let _ = std::process::Command::new("mkfifo").arg(tmp.path().join("root/t/a/b/pipe")).status();
    std::os::unix::fs::symlink(tmp.path().join("root/t"), tmp.path().join("root/link")).unwrap();
    assert_eq!(fs.remove_dir_all(&p("link")).await.unwrap_err().kind, FsErrorKind::Symlink);
    assert_eq!(fs.remove_dir_all(&p("link/a")).await.unwrap_err().kind, FsErrorKind::Symlink);
    assert_eq!(fs.remove_dir_all(&p("t/a/f0")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
    assert_eq!(fs.remove_dir_all(&p("missing")).await.unwrap_err().kind, FsErrorKind::NotFound);
    fs.remove_dir_all(&p("t")).await.unwrap();
    assert!(!tmp.path().join("root/t").exists());
    // The link inside was removed as a link; what it pointed to is intact.
    assert_eq!(std::fs::read(tmp.path().join("secret")).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(tmp.path().join("root/link")).is_ok());
}
