//! A game shaped like a real one, on a stock machine: 16,000+ files (small
//! ones in a few hundred directories, a few large ones, a dangling symlink)
//! served by one `lanspread serve` and fetched by `lanspread get`, both
//! started with the soft and hard `RLIMIT_NOFILE` at 256 (macOS's default),
//! over real QUIC on loopback; then the game's zip of 5,000 files is
//! installed. The copy must be byte-identical and the install complete.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const GAME: &str = "bigtree";
const DATA_FILES: usize = 16_200;
const ZIPPED_FILES: usize = 5_000;
const NOFILE: u32 = 256;

/// Deterministic content: file `i` has a size drawn from a small spread
/// around 2 KiB, every 4,000th is 2.5 MiB (several chunks).
fn content(i: usize) -> Vec<u8> {
    let len = if i % 4_000 == 7 { 5 << 19 } else { 300 + (i * 7919) % 4_000 };
    let seed = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len).map(|k| (seed.rotate_left((k % 64) as u32) as u8) ^ (k as u8)).collect()
}

fn write_game(root: &Path) {
    for i in 0..DATA_FILES {
        let dir = root.join(format!("data/d{:03}", i % 300));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:05} {}.dat", ["ä", "x", "Y"][i % 3])), content(i)).unwrap();
    }
    std::os::unix::fs::symlink("does/not/exist", root.join("data/dangling")).unwrap();
    write_zip(&root.join("game.zip"));
    std::fs::write(root.join("version.ini"), "1.0\n").unwrap();
}

fn zipped_name(i: usize) -> String {
    format!("bin/m{:02}/asset{i:04}.txt", i % 50)
}

fn write_zip(path: &Path) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for i in 0..ZIPPED_FILES {
        zip.start_file(zipped_name(i), opts).unwrap();
        zip.write_all(&content(i)[..200]).unwrap();
    }
    zip.finish().unwrap();
}

/// Every regular file beneath `dir` with its content, by relative path.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.insert(e.path().strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The binary under a shell that lowers both limits first, as on a stock machine.
fn lanspread(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -Sn {NOFILE} && ulimit -Hn {NOFILE} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_lanspread"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("LANSPREAD_PARTY_KEY")
        .env("RUST_LOG", std::env::var("LANSPREAD_TEST_LOG").unwrap_or_else(|_| "warn".into()));
    cmd
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_game_of_16000_files_is_served_fetched_and_installed_with_256_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let (seeder, downloader) = (tmp.path().join("seeder"), tmp.path().join("downloader"));
    let catalog = format!("[[games]]\nid = \"{GAME}\"\nname = \"Big tree\"\n");
    for dir in [&seeder, &downloader] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("catalog.toml"), &catalog).unwrap();
    }
    write_game(&seeder.join(GAME));

    let addr = format!("127.0.0.1:{}", free_port());
    let serve_args = ["serve", "--games", seeder.to_str().unwrap(), "--listen", &addr, "--no-mdns"];
    let _server = Killed(lanspread(&tmp.path().join("home-s"), &serve_args).stdout(Stdio::null()).spawn().unwrap());

    let started = Instant::now();
    let get_args = ["get", GAME, "--games", downloader.to_str().unwrap(), "--peer", &addr, "--no-mdns", "--wait", "120"];
    let out = lanspread(&tmp.path().join("home-d"), &get_args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "get failed after {:?}: {stderr}", started.elapsed());
    assert!(!stderr.contains("Too many open files"), "{stderr}");

    let (want, got) = (tree(&seeder.join(GAME)), tree(&downloader.join(GAME)));
    let got_data: BTreeMap<_, _> = got.iter().filter(|(p, _)| !p.starts_with("local")).map(|(p, d)| (p.clone(), d.clone())).collect();
    assert_eq!(want.len(), DATA_FILES + 2, "the seeder's tree: data, zip and version.ini");
    assert_eq!(got_data.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "same files");
    assert!(got_data == want, "byte-identical");
    assert!(std::fs::symlink_metadata(downloader.join(GAME).join("data/dangling")).is_err(), "symlinks never travel");

    let mut installed = tree(&downloader.join(GAME).join("local"));
    installed.retain(|p, _| !p.to_string_lossy().starts_with(".lanspread"));
    assert_eq!(installed.len(), ZIPPED_FILES, "every file of the zip is installed");
    for i in (0..ZIPPED_FILES).step_by(997) {
        assert_eq!(installed[Path::new(&zipped_name(i))], content(i)[..200], "{}", zipped_name(i));
    }
    eprintln!("16,200 files fetched and 5,000 installed in {:?}", started.elapsed());
}
