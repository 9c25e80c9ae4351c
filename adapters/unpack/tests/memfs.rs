//! The unpackers do all their IO through the `Fs` port: they work on the
//! in-memory filesystem too.

use async_trait::async_trait;
use lanspread_memfs::MemFs;
use lanspread_ports::{DirEntry, FileHandle, Fs, FsResult, Metadata, RelPath, UnpackError, Unpacker, Watcher, WritePiece};
use lanspread_unpack::{TarUnpacker, ZipUnpacker, BATCH_BYTES, BATCH_PIECES, CHUNK};
use std::io::{Cursor, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn sample_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    w.start_file("Game/a.txt", opts).unwrap();
    w.write_all(b"alpha").unwrap();
    w.start_file("Game/big.bin", opts).unwrap();
    w.write_all(&vec![42u8; 3 << 20]).unwrap();
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_and_tar_on_memfs() {
    let mem = MemFs::new();
    mem.write_file("dl/game.zip", sample_zip());
    mem.mkdir_p("games/g1");
    let fs: Arc<dyn Fs> = Arc::new(mem.clone());
    let produced = ZipUnpacker::new().unpack(fs.clone(), &p("dl/game.zip"), &p("games/g1"), &|_| {}).await.unwrap();
    assert_eq!(mem.read("games/g1/Game/a.txt").unwrap(), b"alpha");
    assert_eq!(mem.read("games/g1/Game/big.bin").unwrap(), vec![42u8; 3 << 20]);
    // The produced files, relative to the target, hashed while written (the big one over several pieces).
    assert_eq!(listed(produced), [("Game/a.txt".into(), 5, hash(b"alpha")), ("Game/big.bin".into(), 3 << 20, hash(&vec![42u8; 3 << 20]))]);

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, "x/y.txt", &b"tar!"[..]).unwrap();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&b.into_inner().unwrap()).unwrap();
        e.finish().unwrap()
    };
    mem.write_file("dl/g.tgz", gz);
    mem.mkdir_p("games/g2");
    let produced = TarUnpacker::new().unpack(fs, &p("dl/g.tgz"), &p("games/g2"), &|_| {}).await.unwrap();
    assert_eq!(mem.read("games/g2/x/y.txt").unwrap(), b"tar!");
    assert_eq!(listed(produced), [("x/y.txt".into(), 4, hash(b"tar!"))]);
}

fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// (path, size, hash) of produced files, sorted by path.
fn listed(files: Vec<lanspread_ports::unpack::UnpackedFile>) -> Vec<(String, u64, [u8; 32])> {
    let mut v: Vec<_> = files.into_iter().map(|f| (f.path.as_str().to_owned(), f.size, f.hash)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn declared_size_beyond_capacity_is_refused_on_memfs() {
    let mem = MemFs::new();
    mem.write_file("dl/game.zip", sample_zip());
    mem.mkdir_p("games/g1");
    mem.set_capacity(Some(mem.used_bytes() + 1_000_000));
    let fs: Arc<dyn Fs> = Arc::new(mem.clone());
    let r = ZipUnpacker::new().unpack(fs, &p("dl/game.zip"), &p("games/g1"), &|_| {}).await;
    assert!(matches!(r, Err(UnpackError::Io(ref m)) if m.contains("free")), "{r:?}");
    assert!(mem.tree_at("games/g1").is_empty(), "{:?}", mem.tree_at("games/g1"));
}

/// Delegates to a MemFs and counts the batch writes.
struct Counting {
    mem: MemFs,
    write_batches: AtomicUsize,
}

#[async_trait]
impl Fs for Counting {
    async fn read_dir(&self, d: &RelPath) -> FsResult<Vec<DirEntry>> {
        self.mem.read_dir(d).await
    }
    async fn metadata(&self, p: &RelPath) -> FsResult<Metadata> {
        self.mem.metadata(p).await
    }
    async fn open_read(&self, p: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        self.mem.open_read(p).await
    }
    async fn open_write(&self, p: &RelPath) -> FsResult<Box<dyn FileHandle>> {
        self.mem.open_write(p).await
    }
    async fn create_dir(&self, p: &RelPath) -> FsResult<()> {
        self.mem.create_dir(p).await
    }
    async fn rename(&self, a: &RelPath, b: &RelPath) -> FsResult<()> {
        self.mem.rename(a, b).await
    }
    async fn remove_file(&self, p: &RelPath) -> FsResult<()> {
        self.mem.remove_file(p).await
    }
    async fn remove_dir(&self, p: &RelPath) -> FsResult<()> {
        self.mem.remove_dir(p).await
    }
    async fn sync_dir(&self, d: &RelPath) -> FsResult<()> {
        self.mem.sync_dir(d).await
    }
    async fn watch(&self, d: &RelPath) -> FsResult<Box<dyn Watcher>> {
        self.mem.watch(d).await
    }
    async fn free_space(&self) -> FsResult<Option<u64>> {
        self.mem.free_space().await
    }
    async fn write_pieces(&self, pieces: Vec<WritePiece>) -> FsResult<()> {
        assert!(pieces.len() <= BATCH_PIECES, "{} pieces in one batch", pieces.len());
        let bytes: usize = pieces.iter().map(|p| p.data.len()).sum();
        assert!(bytes < BATCH_BYTES + CHUNK, "{bytes} bytes in one batch");
        self.write_batches.fetch_add(1, Ordering::Relaxed);
        self.mem.write_pieces(pieces).await
    }
}

const MANY: usize = 2_100;

/// The content of small file `i` (sizes vary, some are empty).
fn small(i: usize) -> Vec<u8> {
    format!("{i:05}").repeat(i % 7).into_bytes()
}

fn small_name(i: usize) -> String {
    format!("Game/d{}/s{}/f{i}.dat", i % 13, i % 5)
}

/// Unpacks `archive` into `games/g` on a MemFs that counts: returns the
/// filesystem and the number of batch writes.
async fn unpack_counted(u: &dyn Unpacker, name: &str, archive: Vec<u8>) -> (MemFs, usize) {
    let mem = MemFs::new();
    mem.write_file(&format!("dl/{name}"), archive);
    mem.mkdir_p("games/g");
    mem.write_file("games/g/.lanspread_owned", "an ownership marker, longer than what the archive puts here");
    mem.checkpoint();
    mem.reset_max_open_handles();
    let fs = Arc::new(Counting { mem: mem.clone(), write_batches: AtomicUsize::new(0) });
    u.unpack(fs.clone(), &p(&format!("dl/{name}")), &p("games/g"), &|_| {}).await.unwrap();
    assert_eq!(mem.open_handles(), 0, "every handle was closed");
    assert!(mem.max_open_handles() <= 2, "{name}: {} files were open at once", mem.max_open_handles());
    assert!(mem.op_log().iter().all(|op| !op.starts_with("sync")), "{name}: the unpacker syncs nothing: {:?}", mem.op_log());
    (mem, fs.write_batches.load(Ordering::Relaxed))
}

fn check_many(mem: &MemFs) {
    for i in 0..MANY {
        assert_eq!(mem.read(&format!("games/g/{}", small_name(i))).unwrap(), small(i), "{}", small_name(i));
    }
    assert_eq!(mem.read("games/g/.lanspread_owned").unwrap(), b"mine", "a file that was there is replaced, not patched");
    assert_eq!(mem.read("games/g/big.bin").unwrap(), big_content());
}

/// Large enough to be written as many pieces, across batches.
fn big_content() -> Vec<u8> {
    (0..(9 << 20) + 123).map(|i: usize| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_small_files_are_written_in_few_batches_with_few_files_open() {
    let zip = {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file(".lanspread_owned", opts).unwrap();
        w.write_all(b"mine").unwrap();
        for i in 0..MANY {
            w.start_file(small_name(i), opts).unwrap();
            w.write_all(&small(i)).unwrap();
        }
        w.start_file("big.bin", opts).unwrap();
        w.write_all(&big_content()).unwrap();
        w.finish().unwrap().into_inner()
    };
    let (mem, batches) = unpack_counted(&ZipUnpacker::new(), "game.zip", zip).await;
    check_many(&mem);
    // 2,100 small files in batches of 512, 9 MiB in batches of 8 MiB.
    assert!(batches <= 8, "{batches} batch writes");

    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("Game/d0/s0/f0.dat", b"an earlier, longer copy of this entry");
        add(".lanspread_owned", b"mine");
        for i in 0..MANY {
            add(&small_name(i), &small(i));
        }
        add("big.bin", &big_content());
        b.into_inner().unwrap()
    };
    let (mem, batches) = unpack_counted(&TarUnpacker::new(), "game.tar", tar).await;
    check_many(&mem);
    assert!(batches <= 9, "{batches} batch writes");
}

/// An entry listed twice is written twice; the list holds it once, with
/// the content it ends with.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_repeated_entry_is_listed_once_with_its_final_content() {
    let mut b = tar::Builder::new(Vec::new());
    for data in [&b"first version"[..], &b"v2"[..]] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "same.txt", data).unwrap();
    }
    let mem = MemFs::new();
    mem.write_file("dl/r.tar", b.into_inner().unwrap());
    mem.mkdir_p("t");
    let fs: Arc<dyn Fs> = Arc::new(mem.clone());
    let produced = TarUnpacker::new().unpack(fs, &p("dl/r.tar"), &p("t"), &|_| {}).await.unwrap();
    assert_eq!(mem.read("t/same.txt").unwrap(), b"v2");
    assert_eq!(listed(produced), [("same.txt".into(), 2, hash(b"v2"))]);
}
