//! Library scan over the in-memory filesystem.

use futures::executor::block_on;
use lanspread_core::catalog::Catalog;
use lanspread_core::game::{EntryKind, GameId};
use lanspread_core::scan::{ScanIndex, Scanner};
use lanspread_memfs::MemFs;
use lanspread_ports::RelPath;

fn catalog() -> Catalog {
    let mut t = String::new();
    for id in ["dl", "inst", "notdl", "inidir", "symroot", "empty"] {
        t.push_str(&format!("[[games]]\nid = \"{id}\"\nname = \"{id}\"\n"));
    }
    Catalog::from_toml(&t).unwrap()
}

fn library() -> MemFs {
    let fs = MemFs::new();
    // Downloaded, not installed, with nested data and every control file.
    fs.write_file("dl/version.ini", "1.2\n");
    fs.write_file("dl/game.zip", vec![1u8; 3 << 20]);
    fs.write_file("dl/data/levels/l1.pak", b"level");
    fs.mkdir_p("dl/emptydir");
    for control in [".lanspread.json", ".version.ini.tmp", ".version.ini.discarded", ".lanspread_owned", ".lanspread.download"] {
        fs.write_file(&format!("dl/{control}"), b"x");
    }
    fs.write_file("dl/.local.installing/.lanspread_owned", b"");
    fs.write_file("dl/.local.backup/old.exe", b"old");
    fs.symlink("dl/escape", "/etc/passwd");
    // Downloaded and installed.
    fs.write_file("inst/version.ini", "7");
    fs.write_file("inst/game.zip", b"zip");
    fs.write_file("inst/local/game.exe", b"exe");
    // Installed files but no sentinel: not downloaded.
    fs.write_file("notdl/game.zip", b"partial");
    fs.write_file("notdl/local/game.exe", b"exe");
    // version.ini is a directory.
    fs.mkdir_p("inidir/version.ini");
    fs.write_file("inidir/game.zip", b"zip");
    // A symlink in place of a root.
    fs.symlink("symroot", "/elsewhere");
    // Foreign directories and files at the top.
    fs.write_file("not-in-catalog/version.ini", "1");
    fs.write_file("catalog.toml", "");
    fs
}

#[test]
fn scan_classifies_every_layout() {
    let fs = library();
    let mut scanner = Scanner::default();
    let lib = block_on(scanner.scan_all(&fs, &catalog())).unwrap();
    let g = |s: &str| lib.games.get(&GameId::new(s).unwrap());

    let dl = g("dl").unwrap();
    assert_eq!(dl.version.as_ref().unwrap().as_str(), "1.2");
    assert!(!dl.installed);
    assert!(dl.intent_pending);
    let m = dl.manifest.as_ref().unwrap();
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["data", "data/levels", "data/levels/l1.pak", "emptydir", "game.zip", "version.ini"]);
    let zip = m.file(&RelPath::new("game.zip").unwrap()).unwrap();
    assert_eq!((zip.kind, zip.size, zip.chunks.len()), (EntryKind::File, 3 << 20, 3));
    assert!(dl.problems.iter().any(|p| p.contains("symlink")));
    assert!(m.validate(u64::MAX).is_ok());

    let inst = g("inst").unwrap();
    assert!(inst.installed && inst.downloaded());
    assert!(inst.manifest.as_ref().unwrap().files.iter().all(|f| !f.path.as_str().starts_with("local")));

    let notdl = g("notdl").unwrap();
    assert!(notdl.installed && !notdl.downloaded() && notdl.manifest.is_none());

    let inidir = g("inidir").unwrap();
    assert!(!inidir.downloaded());
    assert!(inidir.problems.iter().any(|p| p.contains("directory")));

    assert!(g("symroot").is_none(), "a symlink is not a game root");
    assert!(g("empty").is_none(), "no root, no entry");
    assert!(lib.games.keys().all(|k| k.as_str() != "not-in-catalog"));
    // Only downloaded games are announced.
    let ids: Vec<String> = lib.summaries(&catalog()).into_iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, vec!["dl", "inst"]);
}

#[test]
fn rescan_reuses_the_index_and_rehashes_only_changes() {
    let fs = library();
    let mut scanner = Scanner::default();
    let first = block_on(scanner.scan_all(&fs, &catalog())).unwrap();
    let hashed = scanner.stats.files_hashed;
    assert!(hashed >= 5);
    block_on(scanner.index.save(&fs)).unwrap();

    // A fresh scanner from the saved index hashes nothing for an unchanged library.
    let mut again = Scanner::new(block_on(ScanIndex::load(&fs)));
    let second = block_on(again.scan_all(&fs, &catalog())).unwrap();
    assert_eq!(first, second);
    assert_eq!(again.stats.files_hashed, 0);
    assert_eq!(again.stats.roots_rescanned, 0);

    // One changed file: only that root is rebuilt, only that file rehashed.
    fs.write_file("dl/data/levels/l1.pak", b"level two");
    let id = GameId::new("dl").unwrap();
    let g = block_on(again.scan_game(&fs, &id)).unwrap().unwrap();
    assert_eq!(again.stats.files_hashed, 1);
    assert_eq!(g.manifest.unwrap().file(&RelPath::new("data/levels/l1.pak").unwrap()).unwrap().size, 9);
}

#[test]
fn corrupt_index_is_ignored() {
    let fs = library();
    fs.write_file(".lanspread-index.bin", b"\x01garbage");
    let mut scanner = Scanner::new(block_on(ScanIndex::load(&fs)));
    assert!(block_on(scanner.scan_all(&fs, &catalog())).is_ok());
}
