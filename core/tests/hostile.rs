//! Hostile and broken layouts: symlinks where our directories should be,
//! foreign or unmarked staging directories, a `version.ini` directory, torn
//! intent logs, faults mid-operation. Nothing outside the root is touched,
//! nothing unproven is deleted, and the user gets a clear error.

mod common;

use common::*;
use lanspread_core::txn::{self, InstallOutcome, Intent, IntentOp, Phase, RecoveryReport, TxnError};
use lanspread_core::GameId;
use lanspread_memfs::{MemFs, Node};
use lanspread_ports::fs::{Fs, FsErrorKind};
use std::collections::BTreeMap;
use std::sync::Arc;

const ROOT: &str = "games/g";

fn game() -> Game {
    Game::new("1.0", &[("a.fake", Some("bin/x=1\n")), ("readme.txt", Some("hello"))])
}

fn setup() -> MemFs {
    let fs = MemFs::new();
    plant_outside(&fs);
    game().write_downloaded(&fs, ROOT);
    fs
}

fn intent(op: IntentOp, phase: Phase) -> Vec<u8> {
    Intent::new(op, phase).encode()
}

fn recover(fs: &MemFs) -> RecoveryReport {
    run(txn::recover_root(fs, &p(ROOT))).unwrap()
}

/// Runs recovery twice; checks the second changes nothing and nothing
/// outside the root changed. Returns the first report.
fn recover_twice(fs: &MemFs, outside: &BTreeMap<String, Node>) -> RecoveryReport {
    let r1 = recover(fs);
    let tree = fs.tree();
    let r2 = recover(fs);
    assert!(!r2.changed(), "second recovery changed something: {r2:?}");
    assert_eq!(fs.tree(), tree);
    assert_eq!(outside_of(&fs.tree(), "g"), *outside, "I2: outside changed");
    r1
}

fn do_install(fs: &MemFs) -> Result<InstallOutcome, TxnError> {
    install_with(fs, false)
}

fn install_with(fs: &MemFs, adopt: bool) -> Result<InstallOutcome, TxnError> {
    let arc: Arc<dyn Fs> = Arc::new(fs.clone());
    run(txn::install(arc, &FakeUnpacker, &p(ROOT), keep(adopt), no_progress()))
}

fn uninstall(fs: &MemFs, adopt: bool) -> Result<txn::UninstallOutcome, TxnError> {
    run(txn::uninstall(fs, &p(ROOT), keep(adopt)))
}

fn remove(fs: &MemFs) -> Result<(), TxnError> {
    run(txn::remove_downloaded(&fs.scoped("games"), &catalog(&["g", "other"]), &GameId::new("g").unwrap()))
}

#[test]
fn symlinked_backup_pointing_outside_is_never_followed_or_deleted() {
    for intent_bytes in [None, Some(intent(IntentOp::Update, Phase::Staging)), Some(intent(IntentOp::Uninstall, Phase::Removing))] {
        let fs = setup();
        fs.symlink(&format!("{ROOT}/.local.backup"), "../../outside");
        if let Some(i) = &intent_bytes {
            fs.write_file(&format!("{ROOT}/.lanspread.json"), i);
        }
        let outside = outside_of(&fs.tree(), "g");
        let r = recover_twice(&fs, &outside);
        assert_eq!(fs.kind(&format!("{ROOT}/.local.backup")), Some(lanspread_ports::FileKind::Symlink), "the link stays");
        assert!(r.problems.iter().any(|p| p.contains(".local.backup is a symlink")), "{r:?}");
        assert!(!fs.exists(&format!("{ROOT}/.lanspread.json")));
        // Every operation refuses to touch it, with a clear message.
        let e = do_install(&fs).unwrap_err();
        assert_eq!(e.to_string(), "game root games/g: .local.backup is a symlink, refusing to touch it");
        fs.mkdir_p(&format!("{ROOT}/local"));
        let e = uninstall(&fs, false).unwrap_err();
        assert!(matches!(e, TxnError::Symlink { .. }), "{e}");
        fs.remove_all(&format!("{ROOT}/local"));
        let e = remove(&fs).unwrap_err();
        assert!(matches!(e, TxnError::Symlink { .. }), "{e}");
        assert_eq!(outside_of(&fs.tree(), "g"), outside);
    }
}

#[test]
fn foreign_staging_directory_without_marker_is_left_alone() {
    let fs = setup();
    fs.write_file(&format!("{ROOT}/.local.installing/user-notes.txt"), "mine");
    fs.write_file(&format!("{ROOT}/.local.installing/.lanspread_owned/not-a-file"), "a directory named like the marker");
    let outside = outside_of(&fs.tree(), "g");
    let before = fs.tree_at(ROOT);
    let r = recover_twice(&fs, &outside);
    assert_eq!(fs.tree_at(ROOT), before, "nothing deleted");
    assert!(r.problems.iter().any(|p| p.contains(".local.installing has no .lanspread_owned marker")), "{r:?}");
    let e = do_install(&fs).unwrap_err();
    assert!(e.to_string().contains("leftover .local.installing"), "{e}");
    assert!(e.to_string().contains("run recovery"), "{e}");
    assert_eq!(fs.tree_at(ROOT), before);
}

#[test]
fn foreign_backup_directory_survives_recovery_and_blocks_operations() {
    let fs = setup();
    fs.write_file(&format!("{ROOT}/local/game.exe"), "installed");
    fs.write_file(&format!("{ROOT}/.local.backup/precious"), "user's own backup");
    let outside = outside_of(&fs.tree(), "g");
    let before = fs.tree_at(ROOT);
    let r = recover_twice(&fs, &outside);
    assert_eq!(fs.tree_at(ROOT), before);
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert!(do_install(&fs).unwrap_err().to_string().contains("leftover .local.backup"));
    assert!(uninstall(&fs, false).unwrap_err().to_string().contains("leftover .local.backup"));
    assert_eq!(fs.tree_at(ROOT), before);
}

#[test]
fn marked_staging_directories_are_ours_even_without_intent() {
    let fs = setup();
    fs.write_file(&format!("{ROOT}/.local.installing/.lanspread_owned"), "");
    fs.write_file(&format!("{ROOT}/.local.installing/half/unpacked"), "x");
    // A symlink planted inside our staging directory is removed as a link, never followed.
    fs.symlink(&format!("{ROOT}/.local.installing/escape"), "../../../outside");
    fs.write_file(&format!("{ROOT}/.local.backup/.lanspread_owned"), "");
    fs.write_file(&format!("{ROOT}/.local.backup/game.exe"), "previous install");
    let outside = outside_of(&fs.tree(), "g");
    let r = recover_twice(&fs, &outside);
    assert!(!fs.exists(&format!("{ROOT}/.local.installing")));
    assert_eq!(fs.read(&format!("{ROOT}/local/game.exe")).unwrap(), b"previous install", "the backup is restored, not deleted: {r:?}");
    assert!(!fs.exists(&format!("{ROOT}/.local.backup")));
}

#[test]
fn version_ini_directory_is_not_a_download() {
    let fs = MemFs::new();
    plant_outside(&fs);
    fs.write_file(&format!("{ROOT}/version.ini/inner"), "not a sentinel");
    fs.write_file(&format!("{ROOT}/a.fake"), "x=1\n");
    let outside = outside_of(&fs.tree(), "g");
    let before = fs.tree_at(ROOT);
    let r = recover_twice(&fs, &outside);
    assert!(r.problems.iter().any(|p| p.contains("version.ini is a directory")), "{r:?}");
    let e = do_install(&fs).unwrap_err();
    assert_eq!(e.to_string(), "game root games/g: the game is not downloaded (version.ini is a directory, not a file)");
    let e = remove(&fs).unwrap_err();
    assert!(matches!(e, TxnError::NotDownloaded { .. }), "{e}");
    assert!(e.to_string().contains("refusing to delete the game root"), "{e}");
    let m = game().manifest();
    let e = run(txn::begin_download(&fs, &p(ROOT), &m)).unwrap_err();
    assert!(e.to_string().contains("version.ini is a directory, not a file; refusing to replace it"), "{e}");
    assert_eq!(fs.tree_at(ROOT), before, "nothing was touched");
    assert_eq!(outside_of(&fs.tree(), "g"), outside);
}

#[test]
fn torn_empty_or_garbage_intent_is_treated_as_no_intent() {
    let full = intent(IntentOp::Update, Phase::Staging);
    for bad in [full[..full.len() / 2].to_vec(), Vec::new(), b"\x00\xff garbage".to_vec(), b"{\"format\":9}".to_vec()] {
        let fs = setup();
        fs.write_file(&format!("{ROOT}/local/game.exe"), "installed");
        // Without a valid intent, an unmarked backup is not provably ours.
        fs.write_file(&format!("{ROOT}/.local.backup/old.exe"), "unmarked");
        fs.write_file(&format!("{ROOT}/.lanspread.json"), &bad);
        let outside = outside_of(&fs.tree(), "g");
        // Operations refuse until recovery ran.
        let e = do_install(&fs).unwrap_err();
        assert!(e.to_string().contains("intent log is unreadable"), "{e}");
        let r = recover_twice(&fs, &outside);
        assert!(r.problems.iter().any(|p| p.contains(".lanspread.json is unreadable")), "{r:?}");
        assert_eq!(r.intent, None);
        assert!(!fs.exists(&format!("{ROOT}/.lanspread.json")), "the unreadable log is removed");
        assert_eq!(fs.read(&format!("{ROOT}/.local.backup/old.exe")).unwrap(), b"unmarked", "unproven: kept");
        assert_eq!(fs.read(&format!("{ROOT}/local/game.exe")).unwrap(), b"installed");
    }
}

#[test]
fn intent_that_is_a_directory_or_symlink_is_left_alone_and_blocks() {
    for planted in ["dir", "link"] {
        let fs = setup();
        let path = format!("{ROOT}/.lanspread.json");
        if planted == "dir" {
            fs.write_file(&format!("{path}/x"), "x");
        } else {
            fs.symlink(&path, "../../outside/precious.txt");
        }
        let outside = outside_of(&fs.tree(), "g");
        let r = recover_twice(&fs, &outside);
        assert!(r.problems.iter().any(|p| p.contains(".lanspread.json is a")), "{r:?}");
        assert!(fs.exists(&path));
        let e = do_install(&fs).unwrap_err();
        assert!(e.to_string().contains("not a file; refusing to start"), "{e}");
    }
}

#[test]
fn symlink_in_place_of_local_or_root() {
    let fs = setup();
    fs.symlink(&format!("{ROOT}/local"), "../../outside");
    let outside = outside_of(&fs.tree(), "g");
    let r = recover_twice(&fs, &outside);
    assert!(r.problems.iter().any(|p| p.contains("local is a symlink")), "{r:?}");
    assert_eq!(do_install(&fs).unwrap_err().to_string(), "game root games/g: local is a symlink, refusing to touch it");
    assert!(matches!(uninstall(&fs, false).unwrap_err(), TxnError::Symlink { .. }));
    assert!(matches!(remove(&fs).unwrap_err(), TxnError::Symlink { .. }));

    let fs = MemFs::new();
    plant_outside(&fs);
    fs.symlink("games/g", "../outside");
    let outside = outside_of(&fs.tree(), "g");
    let e = run(txn::recover_root(&fs, &p(ROOT))).unwrap_err();
    assert_eq!(e.to_string(), "game root games/g: the game root itself is a symlink, refusing to touch it");
    let all = run(txn::recover_all(&fs.scoped("games"), &catalog(&["g", "other"])));
    assert_eq!(all.len(), 2);
    assert!(all[0].1.is_err() && all[1].1.is_ok(), "{all:?}");
    assert!(matches!(remove(&fs).unwrap_err(), TxnError::Symlink { .. }));
    let m = game().manifest();
    assert!(matches!(run(txn::begin_download(&fs, &p(ROOT), &m)).unwrap_err(), TxnError::Symlink { .. }));
    assert_eq!(outside_of(&fs.tree(), "g"), outside);
}

#[test]
fn download_refuses_to_write_through_a_symlinked_directory() {
    let fs = MemFs::new();
    plant_outside(&fs);
    fs.mkdir_p(ROOT);
    fs.symlink(&format!("{ROOT}/data"), "../../outside/dir");
    let outside = outside_of(&fs.tree(), "g");
    let g = Game::new("1.0", &[("data", None), ("data/deep.bin", Some("overwrite me"))]);
    let e = run(txn::begin_download(&fs, &p(ROOT), &g.manifest())).unwrap_err();
    assert_eq!(e.to_string(), "game root games/g: data is a symlink, refusing to touch it");
    assert_eq!(outside_of(&fs.tree(), "g"), outside);
    assert!(!fs.exists(&format!("{ROOT}/.lanspread.json")));
}

#[test]
fn remove_downloaded_is_refused_unless_proven_and_idle() {
    let fs = setup();
    let cat = catalog(&["g", "other"]);
    let games = fs.scoped("games");
    let e = run(txn::remove_downloaded(&games, &cat, &GameId::new("stranger").unwrap())).unwrap_err();
    assert_eq!(e.to_string(), "game stranger: not in the catalog, refusing to touch its directory");
    fs.mkdir_p(&format!("{ROOT}/local"));
    assert!(matches!(remove(&fs).unwrap_err(), TxnError::Installed { .. }));
    fs.remove_all(&format!("{ROOT}/local"));
    fs.write_file(&format!("{ROOT}/.lanspread.json"), intent(IntentOp::Download, Phase::Writing));
    assert!(matches!(remove(&fs).unwrap_err(), TxnError::Pending { .. }));
    fs.remove_all(&format!("{ROOT}/.lanspread.json"));
    fs.remove_all(&format!("{ROOT}/version.ini"));
    assert!(matches!(remove(&fs).unwrap_err(), TxnError::NotDownloaded { .. }));
    assert!(fs.exists(ROOT));
    fs.write_file(&format!("{ROOT}/version.ini"), "1.0\n");
    let outside = outside_of(&fs.tree(), "g");
    remove(&fs).unwrap();
    assert!(!fs.exists(ROOT));
    assert_eq!(outside_of(&fs.tree(), "g"), outside);
}

#[test]
fn failing_unpack_discards_the_staging_and_keeps_the_previous_install() {
    for archive in ["bin/x=new\n!corrupt\n", "../escape=x\n"] {
        let fs = setup();
        fs.write_file(&format!("{ROOT}/a.fake"), archive);
        fs.write_file(&format!("{ROOT}/local/.lanspread_owned"), "");
        fs.write_file(&format!("{ROOT}/local/bin/x"), "old");
        let before = fs.tree_at(ROOT);
        let e = do_install(&fs).unwrap_err();
        assert!(matches!(e, TxnError::Unpack { .. }), "{e}");
        assert!(e.to_string().starts_with("game root games/g: unpacking a.fake failed: "), "{e}");
        assert_eq!(fs.tree_at(ROOT), before, "rolled back exactly");
    }
}

#[test]
fn nothing_to_install() {
    let fs = MemFs::new();
    Game::new("1.0", &[("readme.txt", Some("no archive here"))]).write_downloaded(&fs, ROOT);
    let e = do_install(&fs).unwrap_err();
    assert!(matches!(e, TxnError::NothingToInstall { .. }));
    assert_eq!(e.to_string(), "game root games/g: nothing to install: no archive the unpacker handles");
}

#[test]
fn disk_full_mid_download_and_mid_install() {
    // Known free space too small: refused before anything changes, previous version intact.
    let fs = setup();
    let big = Game::new("2.0", &[("a.fake", Some("bin/x=2\n")), ("huge.bin", Some(&"x".repeat(500)))]);
    fs.set_capacity(Some(fs.used_bytes() + 100));
    let before = fs.tree_at(ROOT);
    let e = run(txn::begin_download(&fs, &p(ROOT), &big.manifest())).unwrap_err();
    assert!(matches!(e, TxnError::NoSpace { .. }), "{e}");
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(fs.tree_at(ROOT), before);

    // Writes failing mid-way (the device fills up behind our back): clear
    // error, the download is abandoned and resumable, no sentinel.
    let fs = setup();
    let m = big.manifest();
    run(txn::begin_download(&fs, &p(ROOT), &m)).unwrap();
    fs.set_capacity(Some(fs.used_bytes()));
    let h = run(fs.open_write(&p(&format!("{ROOT}/huge.bin")))).unwrap();
    let err = run(h.write_at(600, bytes::Bytes::from_static(b"past the end"))).unwrap_err();
    assert_eq!(err.kind, FsErrorKind::NoSpace);
    run(txn::abort_download(&fs, &p(ROOT))).unwrap();
    assert!(!fs.exists(&format!("{ROOT}/version.ini")), "not downloaded");
    assert!(fs.exists(&format!("{ROOT}/huge.bin")), "data kept for a resume");
    assert_eq!(recover(&fs), RecoveryReport { root_exists: true, ..Default::default() });

    // Install hitting a full disk while unpacking: the previous install stays.
    let fs = setup();
    fs.write_file(&format!("{ROOT}/a.fake"), format!("bin/x={}\n", "y".repeat(200)));
    fs.write_file(&format!("{ROOT}/local/bin/x"), "old");
    fs.write_file(&format!("{ROOT}/local/.lanspread_owned"), "");
    let before = fs.tree_at(ROOT);
    fs.set_capacity(Some(fs.used_bytes() + 50));
    let e = do_install(&fs).unwrap_err();
    assert!(e.to_string().contains("no space left"), "{e}");
    assert_eq!(fs.tree_at(ROOT), before);
}

/// Version "old" installed by lanspread, then played: a save created, a
/// produced file changed; the archive now holds the new version.
fn played_install(fs: &MemFs) {
    fs.write_file(&format!("{ROOT}/a.fake"), "bin/x=old\ncfg=0\n");
    assert!(do_install(fs).unwrap().kept.is_none());
    for (path, content) in PLAYED {
        fs.write_file(&format!("{ROOT}/local/{path}"), content);
    }
    fs.write_file(&format!("{ROOT}/a.fake"), "bin/x=1\n");
}

const PLAYED: &[(&str, &str)] = &[("save/s", "mine"), ("cfg", "cfg=mod")];

#[test]
fn io_error_at_every_step_of_an_update_keeps_old_or_new() {
    let mut n = 0;
    let mut outcomes = BTreeMap::new();
    loop {
        let fs = setup();
        played_install(&fs);
        fs.fail_nth_op(n, FsErrorKind::Io);
        let r = do_install(&fs);
        let injected = !fs.clear_fault();
        let local = fs.tree_at(&format!("{ROOT}/local"));
        let state = match local.get("bin/x") {
            Some(Node::File(d)) if d == b"old" => "old",
            Some(Node::File(d)) if d == b"1" => "new",
            other => panic!("fault at op {n}: bin/x is {other:?} in {local:?}"),
        };
        check_user_files(&fs.tree(), PLAYED).unwrap_or_else(|e| panic!("fault at op {n}: {e}"));
        let kept = kept_files(&fs.tree(), "g");
        match &r {
            Ok(out) => {
                assert_eq!(state, "new", "fault at op {n}");
                assert!(kept.iter().any(|(_, rel, _)| rel == "cfg"), "the changed file is kept: {kept:?}");
                assert_eq!(out.kept, Some(p("games/.lanspread-kept/g-1000")), "fault at op {n}");
            }
            Err(e) => {
                assert_eq!(state, "old", "fault at op {n}: {e}");
                assert!(e.to_string().contains("injected Io failure"), "{e}");
                assert!(kept.is_empty(), "fault at op {n}: the moves were undone: {kept:?}");
                assert!(!fs.exists("games/.lanspread-kept"), "fault at op {n}: the kept directory was removed");
                for (path, content) in PLAYED {
                    assert_eq!(fs.read(&format!("{ROOT}/local/{path}")).as_deref(), Some(content.as_bytes()), "fault at op {n}");
                }
            }
        }
        for name in LEFTOVERS {
            assert!(!fs.exists(&format!("{ROOT}/{name}")), "fault at op {n}: {name} left over");
        }
        assert!(!recover(&fs).changed());
        *outcomes.entry(state).or_insert(0) += 1;
        if !injected {
            break;
        }
        n += 1;
    }
    assert!(n > 20 && outcomes.len() == 2, "{n} {outcomes:?}");
}

// ---------------------------------------------------------------- the user's files

/// A game installed by hand (or saves kept in a folder lanspread did not
/// make): no marker.
fn hand_made(fs: &MemFs) {
    fs.write_file(&format!("{ROOT}/local/bin/x"), "hand-installed");
    fs.write_file(&format!("{ROOT}/local/saves/slot1"), "progress");
    fs.mkdir_p(&format!("{ROOT}/local/empty"));
}

#[test]
fn an_update_or_uninstall_of_an_unmarked_local_is_refused_and_changes_nothing() {
    let fs = setup();
    hand_made(&fs);
    let before = fs.tree();
    fs.checkpoint();
    for e in [do_install(&fs).unwrap_err(), uninstall(&fs, false).unwrap_err()] {
        assert!(matches!(e, TxnError::NotOwned { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "game root games/g: local/ was not installed by lanspread; nothing was changed. \
             To let lanspread take it over and keep your files, run again with --adopt"
        );
    }
    assert_eq!(fs.op_count(), 0, "{:?}", fs.op_log());
    assert_eq!(fs.tree(), before);
    assert!(!recover(&fs).changed());
}

#[test]
fn adopt_then_update_keeps_every_user_file_and_a_later_update_knows_them() {
    let fs = setup();
    hand_made(&fs);
    let out = install_with(&fs, true).unwrap();
    assert_eq!(out.kind, txn::InstallKind::Updated);
    // bin/x clashes with the archive's: the new version wins, the user's is kept.
    assert_eq!(out.kept, Some(p("games/.lanspread-kept/g-1000")));
    assert_eq!(fs.read(&format!("{ROOT}/local/bin/x")).unwrap(), b"1");
    assert_eq!(fs.read("games/.lanspread-kept/g-1000/bin/x").unwrap(), b"hand-installed");
    assert_eq!(fs.read(&format!("{ROOT}/local/saves/slot1")).unwrap(), b"progress", "carried");
    assert!(fs.exists(&format!("{ROOT}/local/.lanspread_owned")) && fs.exists(&format!("{ROOT}/local/.lanspread_files.json")));
    // Now lanspread's: the next update needs no adopt, deletes only what it
    // produced, and carries the save again.
    fs.write_file(&format!("{ROOT}/a.fake"), "bin/x=2\n");
    let out = do_install(&fs).unwrap();
    assert_eq!(out.kept, None, "nothing to keep: the save is carried");
    assert_eq!(fs.read(&format!("{ROOT}/local/bin/x")).unwrap(), b"2");
    assert_eq!(fs.read(&format!("{ROOT}/local/saves/slot1")).unwrap(), b"progress");
    assert_eq!(kept_files(&fs.tree(), "g").len(), 1, "only the first update's kept file");
    assert!(!fs.exists("games/.lanspread-kept/g-1000-2"), "an emptied kept directory is removed");
}

#[test]
fn update_carries_a_save_and_keeps_the_users_copy_of_a_changed_file() {
    let fs = setup();
    played_install(&fs);
    let out = do_install(&fs).unwrap();
    assert_eq!(out, InstallOutcome { kind: txn::InstallKind::Updated, kept: Some(p("games/.lanspread-kept/g-1000")) });
    assert_eq!(fs.read(&format!("{ROOT}/local/save/s")).unwrap(), b"mine", "the save is carried");
    assert_eq!(fs.read("games/.lanspread-kept/g-1000/cfg").unwrap(), b"cfg=mod", "the user's copy is kept");
    assert!(!fs.exists(&format!("{ROOT}/local/cfg")), "the new version has no cfg");
    assert_eq!(kept_files(&fs.tree(), "g").len(), 1, "nothing of lanspread's is kept");
}

#[test]
fn uninstall_keeps_saves_and_changed_files_in_the_kept_directory() {
    let fs = setup();
    played_install(&fs);
    // A second uninstall in the same second must not mix with the first's files.
    fs.write_file("games/.lanspread-kept/g-1000/save/s", "an older save");
    let outside = outside_of(&fs.tree(), "g");
    let out = uninstall(&fs, false).unwrap();
    assert_eq!(out.kept, Some(p("games/.lanspread-kept/g-1000-2")));
    assert!(!fs.exists(&format!("{ROOT}/local")));
    assert_eq!(fs.read("games/.lanspread-kept/g-1000-2/save/s").unwrap(), b"mine");
    assert_eq!(fs.read("games/.lanspread-kept/g-1000-2/cfg").unwrap(), b"cfg=mod");
    assert_eq!(fs.read("games/.lanspread-kept/g-1000/save/s").unwrap(), b"an older save");
    assert_eq!(kept_files(&fs.tree(), "g").len(), 3, "bin/x (unchanged) is not kept");
    assert_eq!(outside_of(&fs.tree(), "g"), outside);
    // Nothing of the user's: nothing kept, no kept directory.
    let fs = setup();
    do_install(&fs).unwrap();
    assert_eq!(uninstall(&fs, false).unwrap().kept, None);
    assert!(!fs.exists("games/.lanspread-kept"));
}

#[test]
fn a_users_symlink_in_an_adopted_local_is_moved_as_a_link_never_followed() {
    let fs = setup();
    hand_made(&fs);
    fs.symlink(&format!("{ROOT}/local/saves/escape"), "../../../../outside");
    let outside = outside_of(&fs.tree(), "g");
    let out = uninstall(&fs, true).unwrap();
    let kept = out.kept.unwrap();
    assert_eq!(fs.kind(&format!("{kept}/saves/escape")), Some(lanspread_ports::FileKind::Symlink));
    assert_eq!(fs.read(&format!("{kept}/saves/slot1")).unwrap(), b"progress");
    assert_eq!(outside_of(&fs.tree(), "g"), outside);
}

#[test]
fn an_archive_that_would_overwrite_the_marker_or_the_record_is_refused() {
    for name in [".lanspread_owned", ".LANSPREAD_FILES.json"] {
        let fs = setup();
        fs.write_file(&format!("{ROOT}/a.fake"), format!("bin/x=1\n{name}=forged\n"));
        let before = fs.tree();
        let e = do_install(&fs).unwrap_err();
        assert!(matches!(e, TxnError::Unpack { .. }), "{e}");
        assert!(e.to_string().contains("would overwrite lanspread's own"), "{e}");
        assert_eq!(fs.tree(), before, "rolled back");
    }
}

/// A commit that fails at any of its steps (the tree sync, the sentinel's
/// write, sync or rename, the final syncs and the intent's removal) leaves
/// nothing stuck: the driver aborts it, the intent is resolved, the data
/// stays, and the next attempt begins and commits normally.
#[test]
fn a_commit_that_fails_at_any_step_is_aborted_and_the_next_attempt_commits() {
    let v2 = Game::new("2.0", &[("a.fake", Some("bin/x=2\n")), ("data", None), ("data/new.pak", Some("new data"))]);
    let m = v2.manifest();
    let mut failures = 0;
    for n in 0.. {
        let fs = setup();
        run(txn::begin_download(&fs, &p(ROOT), &m)).unwrap();
        run(v2.write_data(&fs, &p(ROOT), 3));
        fs.fail_nth_op(n, FsErrorKind::Io);
        let committed = run(txn::commit_download(&fs, &p(ROOT), &m, &v2.sentinel()));
        if fs.clear_fault() {
            committed.unwrap();
            break; // the commit needed fewer than n operations
        }
        let Err(e) = committed else { continue };
        failures += 1;
        assert!(e.to_string().contains("injected Io failure"), "fault at op {n}: {e}");
        run(txn::abort_download(&fs, &p(ROOT))).unwrap();
        for name in [".lanspread.json", ".version.ini.tmp", ".version.ini.discarded", "version.ini"] {
            assert!(!fs.exists(&format!("{ROOT}/{name}")), "fault at op {n}: {name} left after the abort");
        }
        assert_eq!(fs.read(&format!("{ROOT}/data/new.pak")).as_deref(), Some(&b"new data"[..]), "fault at op {n}: data kept");
        run(txn::begin_download(&fs, &p(ROOT), &m)).unwrap_or_else(|e| panic!("fault at op {n}: the next attempt is refused: {e}"));
        run(txn::commit_download(&fs, &p(ROOT), &m, &v2.sentinel())).unwrap();
        v2.complete_in(&fs.tree_at(ROOT)).unwrap();
        assert_eq!(fs.read(&format!("{ROOT}/version.ini")), Some(v2.sentinel()));
    }
    assert!(failures >= 5, "every step of the commit was hit: {failures}");
}
