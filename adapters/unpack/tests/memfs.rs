//! The unpackers do all their IO through the `Fs` port: they work on the
//! in-memory filesystem too.

use lanspread_memfs::MemFs;
use lanspread_ports::{Fs, RelPath, UnpackError, Unpacker};
use lanspread_unpack::{TarUnpacker, ZipUnpacker};
use std::io::{Cursor, Write};
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
    ZipUnpacker::new().unpack(fs.clone(), &p("dl/game.zip"), &p("games/g1"), &|_| {}).await.unwrap();
    assert_eq!(mem.read("games/g1/Game/a.txt").unwrap(), b"alpha");
    assert_eq!(mem.read("games/g1/Game/big.bin").unwrap(), vec![42u8; 3 << 20]);

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
    TarUnpacker::new().unpack(fs, &p("dl/g.tgz"), &p("games/g2"), &|_| {}).await.unwrap();
    assert_eq!(mem.read("games/g2/x/y.txt").unwrap(), b"tar!");
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
