//! The `Fs` contract, written once and run against every filesystem adapter
//! (`MemFs` and `CapFs` in `tests/fs_contract.rs`).

use bytes::Bytes;
use lanspread_ports::fs::{FileKind, Fs, FsErrorKind, ReadPiece, WritePiece};
use lanspread_ports::RelPath;
use std::sync::Arc;
use std::time::Duration;

fn p(s: &str) -> RelPath {
    RelPath::new(s).expect("test path")
}

/// Plants a symbolic link at `path` pointing to `target` in the
/// filesystem under test.
pub type PlantSymlink<'a> = &'a dyn Fn(&str, &str);

/// Runs every check. `symlink(path, target)` plants a symbolic link in the
/// filesystem under test (adapters have no port operation for that: peer
/// data never creates links); `None` where the platform does not let a test
/// make one (Windows, without a privilege), which skips the checks of links.
pub async fn fs_contract(fs: Arc<dyn Fs>, symlink: Option<PlantSymlink<'_>>) {
    // Positional writes, no truncation on open_write.
    fs.create_dir(&p("g")).await.unwrap();
    let f = fs.open_write(&p("g/a.bin")).await.unwrap();
    f.write_at(0, Bytes::from_static(b"hello world")).await.unwrap();
    f.write_at(6, Bytes::from_static(b"WORLD")).await.unwrap();
    f.sync().await.unwrap();
    drop(f);
    let f = fs.open_write(&p("g/a.bin")).await.unwrap();
    assert_eq!(f.len().await.unwrap(), 11, "open_write must not truncate");
    f.write_at(20, Bytes::from_static(b"!")).await.unwrap();
    assert_eq!(f.len().await.unwrap(), 21, "a write past the end extends");
    f.set_len(5).await.unwrap();
    drop(f);
    let r = fs.open_read(&p("g/a.bin")).await.unwrap();
    assert_eq!(&r.read_at(0, 100).await.unwrap()[..], b"hello", "short read only at the end");
    assert_eq!(&r.read_at(1, 3).await.unwrap()[..], b"ell");
    assert!(r.read_at(10, 4).await.unwrap().is_empty());
    // Windows keeps an open file's name (and so its directory) until the
    // last handle closes: a reader left open would stop the removals below.
    drop(r);
    assert_eq!(fs.read_file(&p("g/a.bin"), 100).await.unwrap(), b"hello");
    assert!(fs.read_file(&p("g/a.bin"), 2).await.is_err(), "read_file honours its limit");

    // Errors carry their kind.
    assert_eq!(fs.open_read(&p("g/missing")).await.err().unwrap().kind, FsErrorKind::NotFound);
    assert_eq!(fs.open_write(&p("nodir/x")).await.err().unwrap().kind, FsErrorKind::NotFound);
    assert_eq!(fs.create_dir(&p("g")).await.err().unwrap().kind, FsErrorKind::AlreadyExists);
    assert!(fs.open_read(&p("g")).await.is_err(), "a directory is not a file");

    // Directories, listing, metadata.
    fs.create_dir_all(&p("g/d1/d2")).await.unwrap();
    fs.create_dir_all(&p("g/d1/d2")).await.unwrap();
    let mut names: Vec<(String, FileKind, u64)> = fs
        .read_dir(&p("g"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind, if e.kind == FileKind::File { e.len } else { 0 }))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(names, vec![("a.bin".into(), FileKind::File, 5), ("d1".into(), FileKind::Dir, 0)]);
    assert_eq!(fs.metadata(&p("g/a.bin")).await.unwrap().kind, FileKind::File);
    assert_eq!(fs.metadata(&p("g/d1")).await.unwrap().kind, FileKind::Dir);
    // A batch answers like one call per path, in order.
    let batch = [p("g/a.bin"), p("g/nope"), p("g/d1"), p("g/a.bin/under-a-file")];
    let many = fs.metadata_many(&batch).await;
    assert_eq!(many.len(), batch.len());
    for (path, got) in batch.iter().zip(&many) {
        let single = fs.metadata(path).await;
        assert_eq!(got.as_ref().map_err(|e| e.kind), single.as_ref().map_err(|e| e.kind), "{path}");
    }
    assert!(fs.metadata_many(&[]).await.is_empty());
    // sync_file opens without truncating.
    fs.sync_file(&p("g/a.bin")).await.unwrap();
    assert_eq!(fs.metadata(&p("g/a.bin")).await.unwrap().len, 5, "sync_file must not truncate");
    fs.sync_files(&[p("g/a.bin"), p("g/a.bin")]).await.unwrap();
    fs.sync_dirs(&[p("g"), p("g/d1"), p("g/d1/d2")]).await.unwrap();
    assert_eq!(fs.sync_dirs(&[p("g"), p("g/nodir")]).await.unwrap_err().kind, FsErrorKind::NotFound, "a batch reports its failure");
    assert_eq!(fs.metadata(&p("g/a.bin")).await.unwrap().len, 5);

    pieces(&*fs).await;

    // Rename: atomic over a file, refused over a non-empty directory.
    fs.write_atomic(&p("g/b.txt"), &p("g/b.tmp"), b"new").await.unwrap();
    fs.write_atomic(&p("g/b.txt"), &p("g/b.tmp"), b"newer").await.unwrap();
    assert_eq!(fs.read_file(&p("g/b.txt"), 100).await.unwrap(), b"newer");
    assert_eq!(fs.metadata(&p("g/b.tmp")).await.err().unwrap().kind, FsErrorKind::NotFound);
    fs.create_dir(&p("g/full")).await.unwrap();
    fs.write_atomic(&p("g/full/x"), &p("g/full/x.tmp"), b"x").await.unwrap();
    assert!(fs.rename(&p("g/d1"), &p("g/full")).await.is_err(), "rename over a non-empty directory");
    fs.rename(&p("g/d1"), &p("g/moved")).await.unwrap();
    assert_eq!(fs.metadata(&p("g/moved/d2")).await.unwrap().kind, FileKind::Dir);

    // Removal.
    assert_eq!(fs.remove_dir(&p("g/full")).await.err().unwrap().kind, FsErrorKind::NotEmpty);
    fs.remove_dir_all(&p("g/full")).await.unwrap();
    fs.remove_file(&p("g/b.txt")).await.unwrap();
    assert_eq!(fs.metadata(&p("g/full")).await.err().unwrap().kind, FsErrorKind::NotFound);

    fs.create_dir(&p("inside")).await.unwrap();
    fs.write_atomic(&p("inside/t"), &p("inside/t.tmp"), b"target").await.unwrap();
    if let Some(symlink) = symlink {
        links(&*fs, symlink).await;
    }
    // remove_dir_all removes links inside as links.
    fs.sync_tree(&p("g")).await.unwrap();
    fs.remove_dir_all(&p("g")).await.unwrap();
    assert_eq!(fs.read_file(&p("inside/t"), 100).await.unwrap(), b"target");

    // A non-recursive watch sees a new entry.
    let mut w = fs.watch(&p("inside")).await.unwrap();
    fs.write_atomic(&p("inside/new"), &p("inside/new.tmp"), b"n").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("a watch event").expect("watch alive");
    assert_eq!(ev.dir, p("inside"));
    assert!(fs.free_space().await.is_ok());
}

/// Symlinks (planted in `g/` by `symlink`, pointing out of it and at
/// `inside/`) are reported, never followed, removed as links.
async fn links(fs: &dyn Fs, symlink: PlantSymlink<'_>) {
    symlink("g/link-out", "/etc");
    symlink("g/link-in", "../inside");
    symlink("g/file-link", "../inside/t");
    for l in ["g/link-out", "g/link-in", "g/file-link"] {
        assert_eq!(fs.metadata(&p(l)).await.unwrap().kind, FileKind::Symlink, "{l}");
    }
    assert!(fs.read_dir(&p("g/link-out")).await.is_err(), "no listing through a link");
    assert!(fs.read_dir(&p("g/link-in")).await.is_err(), "no listing through a link, even inside");
    assert!(fs.open_read(&p("g/file-link")).await.is_err(), "no reading through a link");
    assert!(fs.open_write(&p("g/file-link")).await.is_err(), "no writing through a link");
    assert!(fs.open_write(&p("g/link-in/new")).await.is_err(), "no creating beneath a link");
    assert!(fs.sync_file(&p("g/file-link")).await.is_err(), "no syncing through a link");
    let through = fs.metadata_many(&[p("g/link-in/t"), p("g/link-out/passwd")]).await;
    assert!(through.iter().all(|r| r.is_err()), "no metadata through a link: {through:?}");
    assert!(fs.remove_dir_all(&p("g/link-in")).await.is_err(), "remove_dir_all refuses a link");
    pieces_refuse_links(fs).await;
    fs.remove_file(&p("g/link-in")).await.unwrap();
    assert_eq!(fs.read_file(&p("inside/t"), 100).await.unwrap(), b"target", "removing a link keeps its target");
}

fn wp(path: &str, offset: u64, data: &'static [u8]) -> WritePiece {
    WritePiece { path: p(path), offset, data: Bytes::from_static(data) }
}

fn rp(path: &str, offset: u64, len: usize) -> ReadPiece {
    ReadPiece { path: p(path), offset, len }
}

/// `write_pieces`, `read_pieces` and `sync_tree` on plain paths.
async fn pieces(fs: &dyn Fs) {
    // Pieces create files at any offset, out of order, and never truncate.
    fs.create_dir_all(&p("g/pc/sub")).await.unwrap();
    fs.write_atomic(&p("g/pc/old"), &p("g/pc/old.tmp"), b"0123456789").await.unwrap();
    let batch = vec![wp("g/pc/new", 4, b"EF"), wp("g/pc/old", 2, b"ab"), wp("g/pc/new", 0, b"ABCD"), wp("g/pc/sub/s", 3, b"s")];
    fs.write_pieces(batch).await.unwrap();
    assert_eq!(fs.read_file(&p("g/pc/new"), 100).await.unwrap(), b"ABCDEF");
    assert_eq!(fs.read_file(&p("g/pc/old"), 100).await.unwrap(), b"01ab456789", "a piece never truncates");
    assert_eq!(fs.read_file(&p("g/pc/sub/s"), 100).await.unwrap(), b"\0\0\0s", "a gap reads as zeros");
    fs.write_pieces(Vec::new()).await.unwrap();
    // A piece needs its parent; the batch stops at the failure, after the
    // pieces before it were written.
    let e = fs.write_pieces(vec![wp("g/pc/first", 0, b"1"), wp("g/pc/nodir/x", 0, b"x"), wp("g/pc/never", 0, b"n")]).await.unwrap_err();
    assert_eq!(e.kind, FsErrorKind::NotFound);
    assert_eq!(fs.read_file(&p("g/pc/first"), 10).await.unwrap(), b"1");
    assert_eq!(fs.metadata(&p("g/pc/never")).await.unwrap_err().kind, FsErrorKind::NotFound);
    assert!(fs.write_pieces(vec![wp("g/pc/sub", 0, b"x")]).await.is_err(), "a directory is not a file");

    // Reads are exact, in order, or an error.
    let got = fs.read_pieces(&[rp("g/pc/old", 2, 3), rp("g/pc/new", 0, 6), rp("g/pc/old", 9, 1), rp("g/pc/new", 6, 0)]).await.unwrap();
    let got: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
    assert_eq!(got, [&b"ab4"[..], b"ABCDEF", b"9", b""]);
    assert!(fs.read_pieces(&[]).await.unwrap().is_empty());
    for past in [rp("g/pc/new", 4, 3), rp("g/pc/new", 7, 1), rp("g/pc/new", u64::MAX, 2)] {
        assert!(fs.read_pieces(&[rp("g/pc/old", 0, 1), past.clone()]).await.is_err(), "{past:?} is past the end");
    }
    assert_eq!(fs.read_pieces(&[rp("g/pc/missing", 0, 1)]).await.unwrap_err().kind, FsErrorKind::NotFound);
    assert!(fs.read_pieces(&[rp("g/pc/sub", 0, 1)]).await.is_err(), "a directory is not a file");

    // create_dir_all (batched by some adapters) stops at a file.
    assert_eq!(fs.create_dir_all(&p("g/pc/old")).await.unwrap_err().kind, FsErrorKind::NotADirectory);
    assert_eq!(fs.create_dir_all(&p("g/pc/old/x/y")).await.unwrap_err().kind, FsErrorKind::NotADirectory);

    // sync_tree: a whole tree, or a clear error.
    fs.sync_tree(&p("g/pc")).await.unwrap();
    fs.sync_tree(&p("g/pc/sub")).await.unwrap();
    assert_eq!(fs.read_file(&p("g/pc/old"), 100).await.unwrap(), b"01ab456789", "sync_tree changes no content");
    assert_eq!(fs.sync_tree(&p("g/pc/missing")).await.unwrap_err().kind, FsErrorKind::NotFound);
    assert_eq!(fs.sync_tree(&p("g/nodir/pc")).await.unwrap_err().kind, FsErrorKind::NotFound);
    assert!(fs.sync_tree(&p("g/pc/old")).await.is_err(), "a file is not a tree");
    fs.remove_dir_all(&p("g/pc")).await.unwrap();
}

/// The batch calls never go through a link (the links of the main contract
/// are in place: `g/link-out` -> `/etc`, `g/link-in` -> `../inside`,
/// `g/file-link` -> `../inside/t`).
async fn pieces_refuse_links(fs: &dyn Fs) {
    for path in ["g/file-link", "g/link-in/t", "g/link-in/new"] {
        let e = fs.write_pieces(vec![wp(path, 0, b"EVIL")]).await.unwrap_err();
        assert_eq!(e.kind, FsErrorKind::Symlink, "write_pieces through {path}: {e}");
    }
    for path in ["g/file-link", "g/link-in/t", "g/link-out/passwd"] {
        let e = fs.read_pieces(&[rp(path, 0, 1)]).await.unwrap_err();
        assert_eq!(e.kind, FsErrorKind::Symlink, "read_pieces through {path}: {e}");
    }
    for path in ["g/link-in", "g/link-out", "g/link-in/sub"] {
        let e = fs.sync_tree(&p(path)).await.unwrap_err();
        assert_eq!(e.kind, FsErrorKind::Symlink, "sync_tree through {path}: {e}");
    }
    for path in ["g/link-in", "g/link-in/x/y", "g/link-out/x"] {
        let e = fs.create_dir_all(&p(path)).await.unwrap_err();
        assert_eq!(e.kind, FsErrorKind::Symlink, "create_dir_all through {path}: {e}");
    }
    assert_eq!(fs.read_file(&p("inside/t"), 100).await.unwrap(), b"target", "nothing was written through a link");
    assert_eq!(fs.metadata(&p("inside/x")).await.unwrap_err().kind, FsErrorKind::NotFound);
    assert_eq!(fs.metadata(&p("inside/new")).await.unwrap_err().kind, FsErrorKind::NotFound);
    // A tree holding links is synced without following them.
    fs.sync_tree(&p("g")).await.unwrap();
}
