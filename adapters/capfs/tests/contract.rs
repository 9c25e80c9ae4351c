//! The `Fs` port contract, on a real temporary directory.

use bytes::Bytes;
use lanspread_capfs::CapFs;
use lanspread_ports::{FileKind, Fs, FsErrorKind, RelPath};
use std::sync::Arc;
use std::time::Duration;

/// Plants a symbolic link `link` to `target` where the platform lets any
/// user make one (Unix); `false` where it does not (Windows needs a
/// privilege for it, so the tests of links run on Unix).
fn plant_symlink(target: impl AsRef<std::path::Path>, link: impl AsRef<std::path::Path>) -> bool {
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, link).unwrap();
    #[cfg(unix)]
    return true;
    #[cfg(not(unix))]
    {
        let _ = (target, link);
        false
    }
}

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn setup() -> (tempfile::TempDir, PathBufs, Arc<dyn Fs>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    let fs: Arc<dyn Fs> = Arc::new(CapFs::open(&root).unwrap());
    (tmp, PathBufs { root, outside }, fs)
}

struct PathBufs {
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

#[tokio::test]
async fn open_missing_root_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let e = CapFs::open(&tmp.path().join("nope")).unwrap_err();
    assert_eq!(e.kind, FsErrorKind::NotFound);
    std::fs::write(tmp.path().join("file"), b"x").unwrap();
    let e = CapFs::open(&tmp.path().join("file")).unwrap_err();
    assert_eq!(e.kind, FsErrorKind::NotADirectory);
    // Through the provider.
    use lanspread_ports::FsProvider;
    let opened = lanspread_capfs::CapFsProvider.open(tmp.path().to_str().unwrap()).unwrap();
    assert!(opened.guard.is_none(), "the plain provider takes no lock");
    assert_eq!(opened.fs.read_file(&p("file"), 10).await.unwrap(), b"x");
}

#[tokio::test]
async fn write_read_and_no_truncation() {
    let (_t, dirs, fs) = setup();
    fs.create_dir(&p("a")).await.unwrap();
    let h = fs.open_write(&p("a/f.bin")).await.unwrap();
    h.write_at(0, Bytes::from_static(b"hello world")).await.unwrap();
    h.write_at(20, Bytes::from_static(b"tail")).await.unwrap();
    assert_eq!(h.len().await.unwrap(), 24);
    h.sync().await.unwrap();
    drop(h);

    // Reopening for writing never truncates.
    let h = fs.open_write(&p("a/f.bin")).await.unwrap();
    assert_eq!(h.len().await.unwrap(), 24);
    h.write_at(6, Bytes::from_static(b"WORLD")).await.unwrap();
    drop(h);

    let r = fs.open_read(&p("a/f.bin")).await.unwrap();
    assert_eq!(&r.read_at(0, 11).await.unwrap()[..], b"hello WORLD");
    assert_eq!(&r.read_at(11, 9).await.unwrap()[..], &[0u8; 9]);
    // Short read only at end of file, and nothing past it.
    assert_eq!(&r.read_at(20, 100).await.unwrap()[..], b"tail");
    assert!(r.read_at(1000, 10).await.unwrap().is_empty());
    assert_eq!(std::fs::read(dirs.root.join("a/f.bin")).unwrap().len(), 24);

    assert_eq!(fs.read_file(&p("a/f.bin"), 100).await.unwrap().len(), 24);
    assert_eq!(fs.read_file(&p("a/f.bin"), 10).await.unwrap_err().kind, FsErrorKind::Io);
}

#[tokio::test]
async fn set_len_truncates_and_extends() {
    let (_t, _d, fs) = setup();
    let h = fs.open_write(&p("f")).await.unwrap();
    h.write_at(0, Bytes::from_static(b"0123456789")).await.unwrap();
    h.set_len(4).await.unwrap();
    assert_eq!(h.len().await.unwrap(), 4);
    h.set_len(8).await.unwrap();
    assert_eq!(&h.read_at(0, 8).await.unwrap()[..], b"0123\0\0\0\0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_positional_writes() {
    let (_t, _d, fs) = setup();
    let h: Arc<dyn lanspread_ports::FileHandle> = Arc::from(fs.open_write(&p("big")).await.unwrap());
    let chunk = 64 * 1024;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.write_at(i as u64 * chunk as u64, Bytes::from(vec![i; chunk])).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let data = fs.read_file(&p("big"), u64::MAX).await.unwrap();
    assert_eq!(data.len(), 16 * chunk);
    for (i, c) in data.chunks(chunk).enumerate() {
        assert!(c.iter().all(|&b| b == i as u8));
    }
}

#[tokio::test]
async fn open_write_needs_parent_and_open_read_needs_file() {
    let (_t, _d, fs) = setup();
    assert_eq!(fs.open_write(&p("no/f")).await.err().unwrap().kind, FsErrorKind::NotFound);
    assert_eq!(fs.open_read(&p("missing")).await.err().unwrap().kind, FsErrorKind::NotFound);
    fs.create_dir(&p("d")).await.unwrap();
    assert_eq!(fs.open_read(&p("d")).await.err().unwrap().kind, FsErrorKind::IsADirectory);
    assert_eq!(fs.open_write(&p("d")).await.err().unwrap().kind, FsErrorKind::IsADirectory);
    fs.write_atomic(&p("file"), &p("file.tmp"), b"x").await.unwrap();
    assert_eq!(fs.open_write(&p("file/sub")).await.err().unwrap().kind, FsErrorKind::NotADirectory);
}

#[tokio::test]
async fn create_dir_and_metadata() {
    let (_t, _d, fs) = setup();
    fs.create_dir(&p("d")).await.unwrap();
    assert_eq!(fs.create_dir(&p("d")).await.unwrap_err().kind, FsErrorKind::AlreadyExists);
    assert_eq!(fs.create_dir(&p("x/y")).await.unwrap_err().kind, FsErrorKind::NotFound);
    fs.create_dir_all(&p("x/y/z")).await.unwrap();
    assert_eq!(fs.metadata(&p("x/y/z")).await.unwrap().kind, FileKind::Dir);
    assert_eq!(fs.metadata(&RelPath::root()).await.unwrap().kind, FileKind::Dir);
    fs.write_atomic(&p("x/f"), &p("x/f.tmp"), b"abc").await.unwrap();
    let m = fs.metadata(&p("x/f")).await.unwrap();
    assert_eq!((m.kind, m.len), (FileKind::File, 3));
    assert!(m.modified_ns.is_some());
    assert_eq!(fs.metadata(&p("nope")).await.unwrap_err().kind, FsErrorKind::NotFound);
}

#[tokio::test]
async fn read_dir_lists_kinds() {
    let (_t, dirs, fs) = setup();
    fs.create_dir(&p("d")).await.unwrap();
    fs.write_atomic(&p("f"), &p("f.tmp"), b"123").await.unwrap();
    let linked = plant_symlink("f", dirs.root.join("l"));
    let mut v = fs.read_dir(&RelPath::root()).await.unwrap();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    let got: Vec<_> = v.iter().map(|e| (e.name.as_str(), e.kind, e.len)).collect();
    let mut want = vec![("d", FileKind::Dir, 0), ("f", FileKind::File, 3)];
    if linked {
        want.push(("l", FileKind::Symlink, 0));
    }
    assert_eq!(got, want);
    assert!(v.iter().all(|e| e.modified_ns.is_some()));
    let m = fs.metadata(&p("f")).await.unwrap();
    assert_eq!(v[1].modified_ns, m.modified_ns);
    assert!(fs.read_dir(&p("d")).await.unwrap().is_empty());
    assert_eq!(fs.read_dir(&p("f")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
}

#[tokio::test]
async fn rename_is_atomic_over_files_and_refuses_non_empty_dirs() {
    let (_t, _d, fs) = setup();
    fs.write_atomic(&p("a"), &p("a.tmp"), b"new").await.unwrap();
    fs.write_atomic(&p("b"), &p("b.tmp"), b"old").await.unwrap();
    fs.rename(&p("a"), &p("b")).await.unwrap();
    assert_eq!(fs.read_file(&p("b"), 10).await.unwrap(), b"new");
    assert_eq!(fs.metadata(&p("a")).await.unwrap_err().kind, FsErrorKind::NotFound);

    fs.create_dir_all(&p("d1/sub")).await.unwrap();
    fs.create_dir_all(&p("d2/sub")).await.unwrap();
    assert_eq!(fs.rename(&p("d1"), &p("d2")).await.unwrap_err().kind, FsErrorKind::AlreadyExists);
    fs.create_dir(&p("empty")).await.unwrap();
    if cfg!(windows) {
        // Windows never renames a directory over another, even an empty one.
        assert_eq!(fs.rename(&p("d1"), &p("empty")).await.unwrap_err().kind, FsErrorKind::AlreadyExists);
        fs.remove_dir(&p("empty")).await.unwrap();
    }
    fs.rename(&p("d1"), &p("empty")).await.unwrap();
    assert_eq!(fs.metadata(&p("empty/sub")).await.unwrap().kind, FileKind::Dir);
    // Across directories.
    fs.rename(&p("b"), &p("d2/sub/b")).await.unwrap();
    assert_eq!(fs.read_file(&p("d2/sub/b"), 10).await.unwrap(), b"new");
    assert_eq!(fs.rename(&p("missing"), &p("x")).await.unwrap_err().kind, FsErrorKind::NotFound);
    fs.sync_dir(&p("d2/sub")).await.unwrap();
    fs.sync_dir(&RelPath::root()).await.unwrap();
}

#[tokio::test]
async fn remove_file_dir_and_tree() {
    let (_t, dirs, fs) = setup();
    fs.create_dir_all(&p("t/a/b")).await.unwrap();
    fs.write_atomic(&p("t/a/b/f"), &p("t/a/b/f.tmp"), b"1").await.unwrap();
    fs.write_atomic(&p("t/g"), &p("t/g.tmp"), b"2").await.unwrap();
    plant_symlink(&dirs.outside, dirs.root.join("t/a/out"));
    assert_eq!(fs.remove_dir(&p("t")).await.unwrap_err().kind, FsErrorKind::NotEmpty);
    assert_eq!(fs.remove_dir(&p("t/g")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
    assert_eq!(fs.remove_file(&p("t/a")).await.unwrap_err().kind, FsErrorKind::IsADirectory);
    fs.remove_file(&p("t/g")).await.unwrap();
    assert_eq!(fs.remove_file(&p("t/g")).await.unwrap_err().kind, FsErrorKind::NotFound);
    fs.remove_dir_all(&p("t")).await.unwrap();
    assert_eq!(fs.metadata(&p("t")).await.unwrap_err().kind, FsErrorKind::NotFound);
    // The link inside was removed as a link: its target is untouched.
    assert_eq!(std::fs::read(dirs.outside.join("secret")).unwrap(), b"secret");
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_are_never_followed() {
    let (_t, dirs, fs) = setup();
    let root = &dirs.root;
    std::os::unix::fs::symlink(dirs.outside.join("secret"), root.join("file_out")).unwrap();
    std::os::unix::fs::symlink(&dirs.outside, root.join("dir_out")).unwrap();
    std::fs::create_dir(root.join("inner")).unwrap();
    std::fs::write(root.join("inner/data"), b"inside").unwrap();
    std::os::unix::fs::symlink("inner", root.join("dir_in")).unwrap();
    std::os::unix::fs::symlink("inner/data", root.join("file_in")).unwrap();

    // metadata does not follow.
    for l in ["file_out", "dir_out", "dir_in", "file_in"] {
        assert_eq!(fs.metadata(&p(l)).await.unwrap().kind, FileKind::Symlink, "{l}");
    }
    // Opening a link fails, even one pointing inside.
    for l in ["file_out", "file_in"] {
        assert_eq!(fs.open_read(&p(l)).await.err().unwrap().kind, FsErrorKind::Symlink, "{l}");
        assert_eq!(fs.open_write(&p(l)).await.err().unwrap().kind, FsErrorKind::Symlink, "{l}");
    }
    // Going through a linked directory fails, for every operation.
    for l in ["dir_out", "dir_in"] {
        let sub = p(&format!("{l}/secret"));
        assert_eq!(fs.open_read(&sub).await.err().unwrap().kind, FsErrorKind::Symlink);
        assert_eq!(fs.open_write(&p(&format!("{l}/new"))).await.err().unwrap().kind, FsErrorKind::Symlink);
        assert_eq!(fs.metadata(&sub).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.read_dir(&p(l)).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.create_dir(&p(&format!("{l}/d"))).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.create_dir_all(&p(&format!("{l}/d/e"))).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.remove_file(&sub).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.remove_dir_all(&p(l)).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.remove_dir(&p(l)).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert_eq!(fs.sync_dir(&p(l)).await.unwrap_err().kind, FsErrorKind::Symlink);
        assert!(fs.watch(&p(l)).await.is_err());
    }
    // Nothing outside changed or appeared.
    assert_eq!(std::fs::read(dirs.outside.join("secret")).unwrap(), b"secret");
    assert_eq!(std::fs::read_dir(&dirs.outside).unwrap().count(), 1);
    // remove_file removes the link only.
    fs.remove_file(&p("file_out")).await.unwrap();
    fs.remove_file(&p("dir_out")).await.unwrap();
    assert!(std::fs::symlink_metadata(root.join("dir_out")).is_err());
    assert_eq!(std::fs::read(dirs.outside.join("secret")).unwrap(), b"secret");
    // A renamed link stays a link.
    fs.rename(&p("file_in"), &p("moved")).await.unwrap();
    assert_eq!(fs.metadata(&p("moved")).await.unwrap().kind, FileKind::Symlink);
}

#[cfg(unix)]
#[tokio::test]
async fn fifo_is_not_opened_as_a_file() {
    let (_t, dirs, fs) = setup();
    let status = std::process::Command::new("mkfifo").arg(dirs.root.join("pipe")).status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("mkfifo unavailable; skipping");
        return;
    }
    assert_eq!(fs.metadata(&p("pipe")).await.unwrap().kind, FileKind::Other);
    let r = tokio::time::timeout(Duration::from_secs(5), fs.open_read(&p("pipe"))).await.expect("open must not block");
    assert_eq!(r.err().unwrap().kind, FsErrorKind::Io);
}

#[tokio::test]
async fn free_space_is_known() {
    let (_t, _d, fs) = setup();
    let free = fs.free_space().await.unwrap();
    assert!(free.is_some_and(|f| f > 0), "{free:?}");
}

#[tokio::test]
async fn watch_sees_created_and_removed_files() {
    let (_t, dirs, fs) = setup();
    fs.create_dir(&p("w")).await.unwrap();
    let mut w = fs.watch(&p("w")).await.unwrap();
    fs.write_atomic(&p("w/new"), &p("w/new.tmp"), b"x").await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|n: &Option<String>| n.as_deref() == Some("new")) {
        let ev = tokio::time::timeout_at(deadline, w.next()).await.expect("no watch event").unwrap();
        assert_eq!(ev.dir, p("w"));
        seen.push(ev.name);
    }
    // An external change is seen too.
    std::fs::remove_file(dirs.root.join("w/new")).unwrap();
    loop {
        let ev = tokio::time::timeout_at(deadline, w.next()).await.expect("no removal event").unwrap();
        if ev.name.as_deref() == Some("new") {
            break;
        }
    }
    // Changes elsewhere are not reported by this non-recursive watch.
    fs.create_dir(&p("w/sub")).await.unwrap();
    fs.write_atomic(&p("w/sub/deep"), &p("w/sub/deep.tmp"), b"x").await.unwrap();
    fs.write_atomic(&p("other"), &p("other.tmp"), b"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), w.next()).await {
        let name = ev.name.as_deref();
        assert!(!matches!(name, Some("deep" | "deep.tmp" | "other" | "other.tmp")), "{ev:?}");
    }
}

#[tokio::test]
async fn watch_overflow_reports_a_rescan() {
    let (_t, dirs, fs) = setup();
    let mut w = fs.watch(&RelPath::root()).await.unwrap();
    for i in 0..1500 {
        std::fs::write(dirs.root.join(format!("f{i}")), b"x").unwrap();
    }
    // Events queue up unread until the queue is full; the next read then
    // says "something changed, rescan" (no name).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("no watch event").unwrap();
    assert_eq!(ev, lanspread_ports::WatchEvent { dir: RelPath::root(), name: None });
}

/// `data` copied into memory that starts at a page boundary.
fn aligned(data: &[u8]) -> Bytes {
    use bytes::{Buf, BytesMut};
    let mut b = BytesMut::with_capacity(data.len() + 4096);
    let pad = b.as_ptr().align_offset(4096);
    b.resize(pad, 0);
    b.advance(pad);
    b.extend_from_slice(data);
    assert!(b.as_ptr().addr().is_multiple_of(4096));
    b.freeze()
}

/// Large aligned writes bypass the page cache where the filesystem allows
/// it (and fall back where it does not, as on tmpfs); either way every byte
/// reads back, mixed with unaligned and small writes, and a sync covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aligned_chunk_writes_read_back_on_every_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let mut roots = vec![tmp.path().to_path_buf()];
    let shm = std::path::Path::new("/dev/shm");
    let shm_tmp = shm.is_dir().then(|| tempfile::tempdir_in(shm).ok()).flatten();
    if let Some(t) = &shm_tmp {
        roots.push(t.path().to_path_buf());
    }
    for root in roots {
        let fs = CapFs::open(&root).unwrap();
        fs.create_dir(&p("g")).await.unwrap();
        const MIB: usize = 1 << 20;
        let size = 3 * MIB + 12_345;
        let want: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4099) as u8).collect();
        let f = fs.open_write(&p("g/big.bin")).await.unwrap();
        // Out of order, as a download writes: whole chunks, then the tail,
        // then a small unaligned rewrite of bytes already written.
        // Chunks 2 and 0 from page-aligned memory (as the wire layer
        // receives them), chunk 1 from wherever the allocator put it.
        for chunk in [2usize, 0, 1] {
            let range = chunk * MIB..(chunk + 1) * MIB;
            let data = if chunk == 1 { Bytes::copy_from_slice(&want[range.clone()]) } else { aligned(&want[range.clone()]) };
            f.write_at(range.start as u64, data).await.unwrap();
        }
        f.write_at((3 * MIB) as u64, Bytes::copy_from_slice(&want[3 * MIB..])).await.unwrap();
        f.write_at(100, Bytes::copy_from_slice(&want[100..5000])).await.unwrap();
        f.sync().await.unwrap();
        assert_eq!(f.len().await.unwrap(), size as u64, "{}", root.display());
        drop(f);
        let got = fs.read_file(&p("g/big.bin"), size as u64).await.unwrap();
        assert!(got == want, "content differs on {}", root.display());
        assert_eq!(std::fs::read(root.join("g/big.bin")).unwrap(), want, "seen from outside on {}", root.display());
    }
}

/// Windows: a file another program holds open without sharing it (an
/// antivirus scanning a fresh file, a running game) makes a rename or a
/// removal fail with a sharing violation. It is retried with bounded
/// backoff: a file let go of soon is renamed, one held for good fails with
/// [`FsErrorKind::HeldOpen`] and a message that names it.
#[cfg(windows)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_open_by_another_program_is_waited_for_then_named() {
    use std::os::windows::fs::OpenOptionsExt;
    let (_t, dirs, fs) = setup();
    fs.write_atomic(&p("game.exe"), &p("game.exe.tmp"), b"exe").await.unwrap();
    let hold = || std::fs::OpenOptions::new().read(true).share_mode(0).open(dirs.root.join("game.exe")).unwrap();

    // Let go of after 300 ms: the rename waits and succeeds.
    let held = hold();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    fs.rename(&p("game.exe"), &p("moved.exe")).await.unwrap();
    release.join().unwrap();
    assert_eq!(fs.read_file(&p("moved.exe"), 10).await.unwrap(), b"exe");

    // Held for good: a bounded wait, then an error naming the file.
    fs.rename(&p("moved.exe"), &p("game.exe")).await.unwrap();
    let held = hold();
    let started = std::time::Instant::now();
    let err = fs.remove_file(&p("game.exe")).await.unwrap_err();
    assert_eq!(err.kind, FsErrorKind::HeldOpen, "{err:?}");
    assert!(err.message.contains("game.exe"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(held);
    fs.remove_file(&p("game.exe")).await.unwrap();
}

/// Windows: a path longer than Windows programs can open (260 characters
/// in all) is refused up front with an error that says so and names it,
/// before anything is created; a shorter deep tree works.
#[cfg(windows)]
#[tokio::test]
async fn paths_past_260_characters_are_refused_up_front() {
    let (_t, dirs, fs) = setup();
    let deep = (0..12).map(|i| format!("directory-number-{i:02}-of-a-deep-game-tree")).collect::<Vec<_>>().join("/");
    assert!(dirs.root.join(&deep).display().to_string().len() > 300);
    let err = fs.create_dir_all(&p(&deep)).await.unwrap_err();
    assert_eq!(err.kind, FsErrorKind::InvalidPath, "{err:?}");
    assert!(err.message.contains("Windows allows") && err.message.contains("directory-number-11"), "{err:?}");
    let err = fs.write_atomic(&p(&format!("{deep}/data.pak")), &p(&format!("{deep}/data.pak.tmp")), b"deep").await.unwrap_err();
    assert_eq!(err.kind, FsErrorKind::InvalidPath, "{err:?}");
    assert!(fs.read_dir(&RelPath::root()).await.unwrap().is_empty(), "nothing was created");

    let short = "a/b/c/d/e/f/g/h/i/j/k/l";
    fs.create_dir_all(&p(short)).await.unwrap();
    fs.write_atomic(&p(&format!("{short}/x")), &p(&format!("{short}/x.tmp")), b"ok").await.unwrap();
    assert_eq!(fs.read_file(&p(&format!("{short}/x")), 10).await.unwrap(), b"ok");
}
