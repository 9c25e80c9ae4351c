//! Unpackers on a real directory (through `CapFs`).

use async_trait::async_trait;
use lanspread_capfs::CapFs;
use lanspread_ports::unpack::UnpackedFile;
use lanspread_ports::{DirEntry, FileHandle, Fs, FsResult, Metadata, RelPath, UnpackError, UnpackProgress, Unpacker, Watcher};
use lanspread_unpack::{MultiUnpacker, RarUnpacker, TarCompression, TarUnpacker, ZipUnpacker};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// A game root `<tmp>/root` with an empty target `dl`, plus a sibling
/// `<tmp>/outside` that must never be touched.
struct Env {
    tmp: tempfile::TempDir,
    fs: Arc<dyn Fs>,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("root")).unwrap();
        std::fs::create_dir(tmp.path().join("root/dl")).unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        let fs = Arc::new(CapFs::open(&tmp.path().join("root")).unwrap());
        Env { tmp, fs }
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    fn put(&self, name: &str, data: &[u8]) -> RelPath {
        std::fs::write(self.root().join(name), data).unwrap();
        p(name)
    }
    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root().join("dl").join(rel)).unwrap()
    }
    /// Nothing was written: the target is empty and nothing appeared
    /// anywhere else.
    fn assert_untouched(&self, archive: &str) {
        assert_eq!(std::fs::read_dir(self.root().join("dl")).unwrap().count(), 0, "target not empty");
        let mut root: Vec<_> = std::fs::read_dir(self.root()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        root.sort();
        let mut want = vec![archive.to_owned(), "dl".to_owned()];
        want.sort();
        assert_eq!(root, want);
        assert_eq!(std::fs::read_dir(self.tmp.path().join("outside")).unwrap().count(), 0);
        let mut top: Vec<_> = std::fs::read_dir(self.tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        top.sort();
        assert_eq!(top, vec!["outside", "root"]);
    }
}

async fn unpack(u: &dyn Unpacker, env: &Env, archive: &RelPath) -> (Result<Vec<UnpackedFile>, UnpackError>, Vec<UnpackProgress>) {
    let seen = Mutex::new(Vec::new());
    let cb = |pr: UnpackProgress| seen.lock().unwrap().push(pr);
    let r = u.unpack(env.fs.clone(), archive, &p("dl"), &cb).await;
    (r, seen.into_inner().unwrap())
}

fn big(n: usize) -> Vec<u8> {
    // Compressible but not trivially.
    (0..n).map(|i| ((i * 7919) % 251) as u8 ^ (i >> 12) as u8).collect()
}

fn zip_bytes(build: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    build(&mut w);
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_extracts_files_and_dirs() {
    let env = Env::new();
    let large = big(3 * 1024 * 1024 + 17);
    let data = zip_bytes(|w| {
        let deflate = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        let zstd = SimpleFileOptions::default().compression_method(CompressionMethod::Zstd);
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        w.add_directory("Game/", stored).unwrap();
        w.add_directory("Game/empty/", stored).unwrap();
        w.start_file("Game/bin/game.exe", deflate).unwrap();
        w.write_all(&large).unwrap();
        w.start_file("Game/data/level1.pak", zstd).unwrap();
        w.write_all(b"level one").unwrap();
        w.start_file("./readme.txt", stored).unwrap();
        w.write_all(b"hi").unwrap();
        w.start_file("Game/zero", stored).unwrap();
    });
    let archive = env.put("game.zip", &data);
    let (r, progress) = unpack(&ZipUnpacker::new(), &env, &archive).await;
    let mut produced: Vec<_> = r.unwrap().into_iter().map(|f| (f.path.as_str().to_owned(), f.size, f.hash)).collect();
    produced.sort();
    let h = |d: &[u8]| *blake3::hash(d).as_bytes();
    let want = [
        ("Game/bin/game.exe", large.len() as u64, h(&large)),
        ("Game/data/level1.pak", 9, h(b"level one")),
        ("Game/zero", 0, h(b"")),
        ("readme.txt", 2, h(b"hi")),
    ];
    assert_eq!(produced, want.map(|(p, n, h)| (p.to_owned(), n, h)), "every file, hashed as written");
    assert_eq!(env.read("Game/bin/game.exe"), large);
    assert_eq!(env.read("Game/data/level1.pak"), b"level one");
    assert_eq!(env.read("readme.txt"), b"hi");
    assert!(env.read("Game/zero").is_empty());
    assert!(env.root().join("dl/Game/empty").is_dir());
    let last = progress.last().unwrap();
    assert_eq!(Some(last.done), last.total);
    assert!(progress.windows(2).all(|w| w[0].done <= w[1].done), "{progress:?}");
}

#[tokio::test]
async fn zip_refuses_escapes_before_writing_anything() {
    type Zw = zip::ZipWriter<Cursor<Vec<u8>>>;
    type Hostile = Box<dyn Fn(&mut Zw)>;
    let cases: Vec<(&str, Hostile)> = vec![
        ("dotdot", Box::new(|w| add(w, "../evil", b"x"))),
        ("nested-dotdot", Box::new(|w| add(w, "a/../../evil", b"x"))),
        ("absolute", Box::new(|w| add(w, "/tmp/evil", b"x"))),
        ("drive", Box::new(|w| add(w, "C:/evil", b"x"))),
        ("backslash", Box::new(|w| add(w, "..\\evil", b"x"))),
        ("symlink", Box::new(|w| w.add_symlink("link", "../outside", SimpleFileOptions::default()).unwrap())),
        ("symlink-inside", Box::new(|w| w.add_symlink("link", "ok.txt", SimpleFileOptions::default()).unwrap())),
    ];
    fn add(w: &mut Zw, name: &str, data: &[u8]) {
        w.start_file(name, SimpleFileOptions::default()).unwrap();
        w.write_all(data).unwrap();
    }
    for (what, hostile) in cases {
        let env = Env::new();
        // Benign entries first: validation must still happen before any write.
        let data = zip_bytes(|w| {
            add(w, "ok.txt", b"fine");
            w.add_directory("okdir/", SimpleFileOptions::default()).unwrap();
            hostile(w);
            add(w, "after.txt", b"fine");
        });
        let archive = env.put("evil.zip", &data);
        let (r, _) = unpack(&ZipUnpacker::new(), &env, &archive).await;
        assert!(matches!(r, Err(UnpackError::Escape(_))), "{what}: {r:?}");
        env.assert_untouched("evil.zip");
    }
}

#[tokio::test]
async fn zip_corrupt_and_unsupported() {
    let env = Env::new();
    let archive = env.put("bad.zip", b"this is not a zip archive at all");
    let (r, _) = unpack(&ZipUnpacker::new(), &env, &archive).await;
    assert!(matches!(r, Err(UnpackError::Corrupt(_))), "{r:?}");

    // Flip bytes inside the compressed data: the CRC (or inflate) catches it.
    let env = Env::new();
    let mut data = zip_bytes(|w| {
        w.start_file("f", SimpleFileOptions::default().compression_method(CompressionMethod::Stored)).unwrap();
        w.write_all(&[7u8; 4096]).unwrap();
    });
    data[100] ^= 0xff;
    let archive = env.put("crc.zip", &data);
    let (r, _) = unpack(&ZipUnpacker::new(), &env, &archive).await;
    assert!(matches!(r, Err(UnpackError::Corrupt(_))), "{r:?}");

    let (r, _) = unpack(&ZipUnpacker::new(), &env, &p("missing.zip")).await;
    assert!(matches!(r, Err(UnpackError::Io(_))), "{r:?}");
}

/// Delegates to a real Fs but claims little free space.
struct TinyDisk(Arc<dyn Fs>);

#[async_trait]
impl Fs for TinyDisk {
    async fn read_dir(&self, d: &RelPath) -> FsResult<Vec<DirEntry>> {
        self.0.read_dir(d).await
    }
    async fn metadata(&self, p: &RelPath) -> FsResult<Metadata> {
        self.0.metadata(p).await
    }
    async fn open_read(&self, p: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        self.0.open_read(p).await
    }
    async fn open_write(&self, p: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        self.0.open_write(p).await
    }
    async fn create_dir(&self, p: &RelPath) -> FsResult<()> {
        self.0.create_dir(p).await
    }
    async fn rename(&self, a: &RelPath, b: &RelPath) -> FsResult<()> {
        self.0.rename(a, b).await
    }
    async fn remove_file(&self, p: &RelPath) -> FsResult<()> {
        self.0.remove_file(p).await
    }
    async fn remove_dir(&self, p: &RelPath) -> FsResult<()> {
        self.0.remove_dir(p).await
    }
    async fn sync_dir(&self, d: &RelPath) -> FsResult<()> {
        self.0.sync_dir(d).await
    }
    async fn watch(&self, d: &RelPath) -> FsResult<Box<dyn Watcher>> {
        self.0.watch(d).await
    }
    async fn free_space(&self) -> FsResult<Option<u64>> {
        Ok(Some(1000))
    }
}

#[tokio::test]
async fn declared_size_beyond_free_space_is_refused() {
    let env = Env::new();
    let data = zip_bytes(|w| {
        w.start_file("zeros", SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)).unwrap();
        w.write_all(&vec![0u8; 1 << 20]).unwrap();
    });
    assert!(data.len() < 10_000);
    let archive = env.put("bomb.zip", &data);
    let tiny: Arc<dyn Fs> = Arc::new(TinyDisk(env.fs.clone()));
    let r = ZipUnpacker::new().unpack(tiny.clone(), &archive, &p("dl"), &|_| {}).await;
    assert!(matches!(r, Err(UnpackError::Io(ref m)) if m.contains("free")), "{r:?}");
    env.assert_untouched("bomb.zip");

    let tar = tar_bytes(|b| append(b, "zeros", &vec![0u8; 1 << 20]));
    let archive = env.put("bomb.tar", &tar);
    let r = TarUnpacker::new().unpack(tiny, &archive, &p("dl"), &|_| {}).await;
    assert!(matches!(r, Err(UnpackError::Io(ref m)) if m.contains("free")), "{r:?}");
}

fn tar_bytes(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

/// Appends an entry whose raw name bypasses the tar crate's own checks.
fn append_raw(b: &mut tar::Builder<Vec<u8>>, name: &str, ty: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_old();
    let raw = &mut h.as_old_mut().name;
    raw[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(ty);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn compress(tar: Vec<u8>, c: TarCompression) -> Vec<u8> {
    match c {
        TarCompression::None => tar,
        TarCompression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        TarCompression::Zstd => zstd::encode_all(&tar[..], 3).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_extracts_plain_gzip_and_zstd() {
    let large = big(2 * 1024 * 1024 + 5);
    let long_name = format!("deep/{}/file.txt", "n".repeat(150));
    for (name, c) in [
        ("g.tar", TarCompression::None),
        ("g.tar.gz", TarCompression::Gzip),
        ("g.tgz", TarCompression::Gzip),
        ("g.tar.zst", TarCompression::Zstd),
    ] {
        assert_eq!(TarCompression::from_name(name), Some(c));
        let env = Env::new();
        let tar = tar_bytes(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, "./", &[][..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, "./Game/", &[][..]).unwrap();
            append(b, "./Game/game.bin", &large);
            append(b, "Game/cfg/a.ini", b"[a]\n");
            append(b, &long_name, b"long");
            append(b, "empty", b"");
        });
        let archive = env.put(name, &compress(tar, c));
        let (r, progress) = unpack(&TarUnpacker::new(), &env, &archive).await;
        r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(env.read("Game/game.bin"), large, "{name}");
        assert_eq!(env.read("Game/cfg/a.ini"), b"[a]\n");
        assert_eq!(env.read(&long_name), b"long");
        assert!(env.read("empty").is_empty());
        let last = progress.last().unwrap();
        assert_eq!(Some(last.done), last.total, "{name}: {progress:?}");
    }
}

#[tokio::test]
async fn tar_refuses_escapes_and_links() {
    let cases: &[(&str, tar::EntryType, Option<&str>)] = &[
        ("../evil", tar::EntryType::Regular, None),
        ("a/../../evil", tar::EntryType::Regular, None),
        ("/tmp/evil", tar::EntryType::Regular, None),
        ("a\\..\\evil", tar::EntryType::Regular, None),
        ("link", tar::EntryType::Symlink, Some("../outside")),
        ("hard", tar::EntryType::Link, Some("ok.txt")),
    ];
    for &(name, ty, link) in cases {
        for c in [TarCompression::None, TarCompression::Gzip] {
            let env = Env::new();
            let tar = tar_bytes(|b| {
                append(b, "ok.txt", b"fine");
                append_raw(b, name, ty, link, if link.is_some() { b"" } else { b"evil" });
                append(b, "after.txt", b"fine");
            });
            let file = if c == TarCompression::None { "evil.tar" } else { "evil.tgz" };
            let archive = env.put(file, &compress(tar, c));
            let (r, _) = unpack(&TarUnpacker::new(), &env, &archive).await;
            assert!(matches!(r, Err(UnpackError::Escape(_))), "{name}: {r:?}");
            env.assert_untouched(file);
        }
    }
    // A FIFO entry is refused too.
    let env = Env::new();
    let tar = tar_bytes(|b| append_raw(b, "fifo", tar::EntryType::Fifo, None, b""));
    let archive = env.put("f.tar", &tar);
    let (r, _) = unpack(&TarUnpacker::new(), &env, &archive).await;
    assert!(matches!(r, Err(UnpackError::Unsupported(_))), "{r:?}");
    env.assert_untouched("f.tar");
}

#[tokio::test]
async fn tar_truncated_is_corrupt() {
    let env = Env::new();
    let tar = tar_bytes(|b| append(b, "f", &big(100_000)));
    let gz = compress(tar, TarCompression::Gzip);
    let archive = env.put("t.tar.gz", &gz[..gz.len() / 2]);
    let (r, _) = unpack(&TarUnpacker::new(), &env, &archive).await;
    assert!(matches!(r, Err(UnpackError::Corrupt(_))), "{r:?}");
    env.assert_untouched("t.tar.gz");
}

#[tokio::test]
async fn multi_dispatches_by_name() {
    let m = MultiUnpacker::standard();
    for n in ["a.zip", "A.ZIP", "a.tar", "a.tar.gz", "a.TGZ", "a.tar.zst", "a.tzst", "a.rar", "a.part1.rar"] {
        assert!(m.handles(n), "{n}");
    }
    for n in ["a.7z", "a.gz", "a.exe", "zip", "a.tar.xz"] {
        assert!(!m.handles(n), "{n}");
    }
    let env = Env::new();
    let data = zip_bytes(|w| {
        w.start_file("x", SimpleFileOptions::default()).unwrap();
        w.write_all(b"via multi").unwrap();
    });
    let archive = env.put("m.zip", &data);
    let (r, _) = unpack(&m, &env, &archive).await;
    r.unwrap();
    assert_eq!(env.read("x"), b"via multi");
    let archive = env.put("m.7z", b"whatever");
    let (r, _) = unpack(&m, &env, &archive).await;
    assert!(matches!(r, Err(UnpackError::Unsupported(_))), "{r:?}");
}

#[cfg(unix)]
fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(unix)]
/// A RAR 4 archive of stored (uncompressed) files, made by hand (no RAR
/// writer is available): marker, main header, one file header per file
/// followed by its data, end-of-archive block.
fn rar4_stored(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut c = flate2::Crc::new();
        c.update(data);
        c.sum()
    }
    /// `body` runs from HEAD_TYPE to the end of the header.
    fn block(out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(&((crc(body) & 0xffff) as u16).to_le_bytes());
        out.extend_from_slice(body);
    }
    let mut out = b"Rar!\x1a\x07\x00".to_vec();
    let mut main = vec![0x73];
    main.extend(0u16.to_le_bytes());
    main.extend(13u16.to_le_bytes());
    main.extend([0u8; 6]);
    block(&mut out, &main);
    for (name, data) in files {
        let mut h = vec![0x74];
        h.extend(0x8000u16.to_le_bytes());
        h.extend(((32 + name.len()) as u16).to_le_bytes());
        h.extend((data.len() as u32).to_le_bytes()); // packed size
        h.extend((data.len() as u32).to_le_bytes()); // unpacked size
        h.push(2); // host OS: Windows (names use `\\`, as unar expects)
        h.extend(crc(data).to_le_bytes());
        h.extend(0x5a21_0000u32.to_le_bytes()); // DOS time: 2025-01-01
        h.push(20); // version needed: 2.0
        h.push(0x30); // method: store
        h.extend((name.len() as u16).to_le_bytes());
        h.extend(0x20u32.to_le_bytes()); // attributes: archive
        h.extend(name.replace('/', "\\").as_bytes());
        block(&mut out, &h);
        out.extend_from_slice(data);
    }
    block(&mut out, &[0x7b, 0x00, 0x40, 0x07, 0x00]);
    out
}

/// Parses `unar -q -D -o OUT ARCHIVE` into $out and $arc.
const UNAR_ARGS: &str =
    r#"while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2;; -k) shift 2;; -*) shift;; *) arc="$1"; shift;; esac; done"#;

/// The RAR unpacker with fake tools (real RAR archives cannot be made here):
/// staging, volume siblings, validation and copying are what is tested.
/// Drives stand-in tools (shell scripts): Unix only.
#[cfg(unix)]
#[tokio::test]
async fn rar_through_external_tools() {
    let tools = tempfile::tempdir().unwrap();
    let mk = |name: &str, tool: &str, body: &str| {
        let d = tools.path().join(name);
        std::fs::create_dir(&d).unwrap();
        script(&d, tool, body);
        d
    };
    let none = tools.path().join("none");
    std::fs::create_dir(&none).unwrap();
    let good_unar = mk(
        "good_unar",
        "unar",
        &format!(
            r#"{UNAR_ARGS}
mkdir -p "$out/dir" && cp "$arc" "$out/dir/copy.bin" && printf hello > "$out/top.txt" && ls "$(dirname "$arc")" > "$out/volumes.txt""#
        ),
    );
    // unrar x -o- -p- -y -idq ARCHIVE OUT/
    let good_unrar =
        mk("good_unrar", "unrar", r#"[ "$1" = x ] || exit 9; eval arc=\${$(($#-1))}; eval out=\${$#}; cp "$arc" "${out}copy.bin""#);
    let symlink = mk(
        "symlink",
        "unar",
        &format!(
            r#"{UNAR_ARGS}
printf ok > "$out/ok.txt"; ln -s /etc "$out/link""#
        ),
    );
    let dotdot_name = mk(
        "badname",
        "unar",
        &format!(
            r#"{UNAR_ARGS}
printf x > "$out/CON""#
        ),
    );
    let failing = mk("failing", "unar", "echo 'bad archive header' >&2; exit 3");
    let failing_unrar = mk("failing_unrar", "unrar", "exit 3");
    let where_unar = mk("where", "unar", &format!("{UNAR_ARGS}\nprintf ok > \"$out/f\"; ls -d \"$(dirname \"$out\")\" > \"$out/where\""));
    // (Every script is written before the first one runs: a script still
    // open for writing in a forked child cannot be executed.)

    let run = |search: &PathBuf| RarUnpacker::new().with_search_path(search.as_os_str().to_owned());

    // No tool.
    let env = Env::new();
    let archive = env.put("g.rar", b"Rar!fake");
    let (r, _) = unpack(&run(&none), &env, &archive).await;
    assert!(matches!(r, Err(UnpackError::MissingTool(ref m)) if m.contains("unrar")), "{r:?}");

    // unar, multi-volume.
    let env = Env::new();
    let archive = env.put("g.part1.rar", b"Rar!volume1");
    env.put("g.part2.rar", b"Rar!volume2");
    env.put("unrelated.rar", b"no");
    let (r, progress) = unpack(&run(&good_unar), &env, &archive).await;
    let produced = r.unwrap();
    assert!(
        produced.iter().any(|f| f.path.as_str() == "top.txt" && f.size == 5 && f.hash == *blake3::hash(b"hello").as_bytes()),
        "{produced:?}"
    );
    assert_eq!(env.read("dir/copy.bin"), b"Rar!volume1");
    assert_eq!(env.read("top.txt"), b"hello");
    assert_eq!(String::from_utf8(env.read("volumes.txt")).unwrap(), "g.part1.rar\ng.part2.rar\n");
    assert_eq!(progress.last().map(|p| (Some(p.done), p.total)), progress.last().map(|p| (p.total, p.total)));

    // unrar's argument layout.
    let env = Env::new();
    let archive = env.put("g.rar", b"Rar!single");
    let (r, _) = unpack(&run(&good_unrar), &env, &archive).await;
    r.unwrap();
    assert_eq!(env.read("copy.bin"), b"Rar!single");

    // unar is preferred when both exist.
    let env = Env::new();
    let archive = env.put("g.rar", b"Rar!both");
    let both = std::env::join_paths([&failing_unrar, &good_unar]).unwrap();
    let (r, _) = unpack(&RarUnpacker::new().with_search_path(both), &env, &archive).await;
    r.unwrap();
    assert_eq!(env.read("dir/copy.bin"), b"Rar!both");

    // Links and non-portable names in the output are refused; nothing is copied.
    for (tools, want_escape) in [(&symlink, true), (&dotdot_name, true), (&failing, false)] {
        let env = Env::new();
        let archive = env.put("g.rar", b"Rar!x");
        let (r, _) = unpack(&run(tools), &env, &archive).await;
        if want_escape {
            assert!(matches!(r, Err(UnpackError::Escape(_))), "{tools:?}: {r:?}");
        } else {
            assert!(matches!(r, Err(UnpackError::Corrupt(ref m)) if m.contains("bad archive header")), "{r:?}");
        }
        env.assert_untouched("g.rar");
    }

    // A real tool, where one is installed (CI installs unar).
    let real = RarUnpacker::new();
    let has_tool = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("unar").is_file() || d.join("unrar").is_file()));
    if has_tool {
        let env = Env::new();
        let large = big(1_500_000);
        let archive = env.put("real.rar", &rar4_stored(&[("Game/readme.txt", b"real rar"), ("Game/data/x.bin", &large)]));
        let (r, progress) = unpack(&real, &env, &archive).await;
        r.unwrap();
        assert_eq!(env.read("Game/readme.txt"), b"real rar");
        assert_eq!(env.read("Game/data/x.bin"), large);
        let mut top: Vec<_> = std::fs::read_dir(env.root().join("dl")).unwrap().map(|e| e.unwrap().file_name()).collect();
        top.sort();
        assert_eq!(top, vec!["Game"]);
        let last = progress.last().unwrap();
        assert_eq!(Some(last.done), last.total);
        // A damaged archive fails cleanly.
        let env = Env::new();
        let mut bad = rar4_stored(&[("f", b"data")]);
        bad.truncate(bad.len() - 10); // end block and part of the data
        let archive = env.put("bad.rar", &bad);
        let (r, _) = unpack(&real, &env, &archive).await;
        assert!(matches!(r, Err(UnpackError::Corrupt(_))), "{r:?}");
        env.assert_untouched("bad.rar");
    } else {
        eprintln!("SKIPPED real RAR extraction: neither unar nor unrar is installed");
    }

    // Staging happens in the chosen directory, which is cleaned up.
    let staging = tempfile::tempdir().unwrap();
    let env = Env::new();
    let archive = env.put("g.rar", b"Rar!");
    let (r, _) = unpack(&run(&where_unar).with_temp_dir(staging.path()), &env, &archive).await;
    r.unwrap();
    let where_ = String::from_utf8(env.read("where")).unwrap();
    assert!(where_.starts_with(staging.path().to_str().unwrap()), "{where_}");
    assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0, "staging not cleaned up");
}
