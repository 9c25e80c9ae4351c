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

#[test]
fn reusable_chunks_finds_exactly_the_data_that_reads_back_right() {
    use lanspread_core::scan::reusable_chunks;
    // The manifest of a complete game...
    let fs = library();
    let mut scanner = Scanner::new(ScanIndex::default());
    let id = GameId::new("dl").unwrap();
    let game = block_on(scanner.scan_game(&fs, &id)).unwrap().unwrap();
    let manifest = game.manifest.unwrap();
    let zip = manifest.files.iter().position(|f| f.path.as_str() == "game.zip").unwrap();
    let level = manifest.files.iter().position(|f| f.path.as_str() == "data/levels/l1.pak").unwrap();
    assert_eq!(manifest.files[zip].chunks.len(), 3);
    // ...against a partial copy: game.zip's middle chunk is wrong and its
    // last one is missing (the file is short); the level is missing.
    let part = MemFs::new();
    let mut zip_data = vec![1u8; (2 << 20) + 5];
    zip_data[(1 << 20) + 7] = 9;
    part.write_file("dl/game.zip", zip_data);
    part.write_file("dl/version.ini", "1.2\n");
    let none = |_: &RelPath, _: u64, _: Option<u128>| None;
    let found = block_on(reusable_chunks(&part, &RelPath::new("dl").unwrap(), &manifest, &none));
    assert_eq!(found.len(), manifest.files.len());
    assert_eq!(found[zip], [true, false, false]);
    assert!(found[level].is_empty(), "a missing file has nothing to reuse");
    let sentinel = manifest.files.iter().position(|f| f.is_sentinel()).unwrap();
    assert!(found[sentinel].is_empty(), "the sentinel is always fetched");
    // The index answers without reading, but only for the recorded size and
    // mtime, and its hashes still have to match the manifest's.
    let zip_path = manifest.files[zip].path.clone();
    let wrong = manifest.files[zip].chunks.iter().map(|_| [7u8; 32]).collect::<Vec<_>>();
    let lying = |p: &RelPath, _: u64, _: Option<u128>| (*p == zip_path).then(|| wrong.clone());
    let found = block_on(reusable_chunks(&part, &RelPath::new("dl").unwrap(), &manifest, &lying));
    assert_eq!(found[zip], [false, false, false], "recorded hashes that differ from the manifest are not trusted");
    // The scan index knows a file only at its recorded size and mtime.
    use lanspread_ports::Fs;
    let m = block_on(fs.metadata(&RelPath::new("dl/game.zip").unwrap())).unwrap();
    let known = scanner.index.known_chunks(&id, &zip_path, m.len, m.modified_ns).expect("indexed by the scan");
    assert_eq!(known, &manifest.files[zip].chunks[..]);
    assert!(scanner.index.known_chunks(&id, &zip_path, m.len + 1, m.modified_ns).is_none());
    assert!(scanner.index.known_chunks(&id, &zip_path, m.len, m.modified_ns.map(|t| t + 1)).is_none());
    // The complete original: everything but the sentinel is reusable.
    let all = block_on(reusable_chunks(&fs, &RelPath::new("dl").unwrap(), &manifest, &none));
    assert_eq!(all[zip], [true, true, true]);
    assert_eq!(all[level], [true]);
}

/// A tree whose names are one on a case-insensitive or normalizing disk
/// (here `Maps/A.pak` beside `maps/a.pak`, and a root-level `LOCAL/`) is
/// never advertised: peers on Windows or macOS could not hold it.
#[test]
fn ambiguous_names_are_not_advertised() {
    let catalog = Catalog::from_toml("[[games]]\nid = \"clash\"\nname = \"c\"\n[[games]]\nid = \"ctl\"\nname = \"c\"\n").unwrap();
    let fs = MemFs::new();
    fs.write_file("clash/version.ini", "1\n");
    fs.write_file("clash/Maps/A.pak", b"one");
    fs.write_file("clash/maps/a.pak", b"two");
    fs.write_file("ctl/version.ini", "1\n");
    fs.write_file("ctl/LOCAL/x.dll", b"planted");
    let lib = block_on(Scanner::default().scan_all(&fs, &catalog)).unwrap();
    for id in ["clash", "ctl"] {
        let g = &lib.games[&GameId::new(id).unwrap()];
        assert!(g.manifest.is_none(), "{id} must not be served");
        assert!(g.summary(&catalog).is_none());
        assert!(g.problems.iter().any(|p| p.contains("case-insensitive")), "{id}: {:?}", g.problems);
    }
}

/// A game holding a name that some platform cannot hold (a character
/// Windows refuses, a reserved device name, an invisible code point) is not
/// shared at all, and its problems name the first such file; a name fixed
/// later makes it shared again.
#[test]
fn a_name_some_platform_cannot_hold_keeps_the_game_unshared_and_is_named() {
    let catalog = Catalog::from_toml("[[games]]\nid = \"odd\"\nname = \"o\"\n").unwrap();
    let odd = GameId::new("odd").unwrap();
    for bad in ["data/what?.txt", "data/COM0.log", "data/loc\u{200C}al.pak", "data/a<b>"] {
        let fs = MemFs::new();
        fs.write_file("odd/version.ini", "1\n");
        fs.write_file("odd/data/fine [v1] été 日本.pak", b"ok");
        fs.write_file(&format!("odd/{bad}"), b"x");
        let mut scanner = Scanner::default();
        let lib = block_on(scanner.scan_all(&fs, &catalog)).unwrap();
        let g = &lib.games[&odd];
        assert!(g.manifest.is_none() && g.summary(&catalog).is_none(), "{bad}: must not be served");
        let named = format!("{bad:?}");
        assert!(g.problems.iter().any(|p| p.starts_with("not shared") && p.contains(&named)), "{bad}: {:?}", g.problems);

        // Renamed to a name every platform holds: shared on the next scan.
        fs.remove_all(&format!("odd/{bad}"));
        fs.write_file("odd/data/renamed.txt", b"x");
        let lib = block_on(scanner.scan_all(&fs, &catalog)).unwrap();
        let g = &lib.games[&odd];
        assert!(g.manifest.is_some(), "{bad}: {:?}", g.problems);
    }
}
