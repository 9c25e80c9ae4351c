//! Exhaustive crash tests of every transaction.
//!
//! For each transaction, the operations it performs on a MemFs are
//! recorded; for every crash point `k` and each of the three crash models
//! the surviving filesystem is rebuilt, recovery is run twice, and:
//! - I1: a present, parseable `version.ini` means every file of that
//!   version is complete;
//! - I2: nothing outside the game root changed;
//! - I3: recovery deleted only what the intent or a marker proves is ours,
//!   and changed no content;
//! - I4: the root is exactly old-complete, new-complete or clean (no
//!   intent, temp or staging leftovers), and the second recovery changed
//!   nothing;
//! - I5 (updates and uninstalls): every file the user created or changed
//!   is in `local/` or in the kept directory `games/.lanspread-kept/g-*`,
//!   with its content: an install without the marker is refused, and once
//!   adopted its files are the user's and are never deleted.
//!
//! Recovery itself is crashed too: for every state where recovery had work
//! to do, at every point of that work, under every model.

mod common;

use common::*;
use lanspread_core::layout;
use lanspread_core::txn::{self, RecoveryReport};
use lanspread_core::GameId;
use lanspread_memfs::{CrashModel, MemFs, Node};
use lanspread_ports::fs::Fs;
use std::collections::BTreeMap;
use std::sync::Arc;

type Tree = BTreeMap<String, Node>;
/// Classifies a root tree as "old", "new" or "clean", or explains the violation.
type Classify = Box<dyn Fn(&MemFs, &Tree) -> Result<&'static str, String>>;

const ROOT: &str = "games/g";

struct Scenario {
    name: &'static str,
    setup: Box<dyn Fn(&MemFs)>,
    run: Box<dyn Fn(&MemFs)>,
    /// Classifies the root tree (relative to the root; empty if the root is
    /// gone) as "old", "new" or "clean", or explains the violation.
    classify: Classify,
    allowed: &'static [&'static str],
    /// Recovery through the catalog (`recover_all` on the game directory)
    /// instead of `recover_root`.
    via_catalog: bool,
}

#[derive(Default)]
struct Count {
    states: usize,
    recovery_states: usize,
    outcomes: BTreeMap<&'static str, usize>,
}

fn recover(sc: &Scenario, fs: &MemFs) -> RecoveryReport {
    if sc.via_catalog {
        let games = fs.scoped("games");
        let all = run(txn::recover_all(&games, &catalog(&["g", "other", "absent"])));
        let mut mine = RecoveryReport::default();
        for (id, r) in all {
            let r = r.unwrap_or_else(|e| panic!("{}: recovery of {id} failed: {e}", sc.name));
            if id == GameId::new("g").unwrap() {
                mine = r;
            } else {
                assert!(!r.changed(), "{}: recovery touched {id}: {r:?}", sc.name);
            }
        }
        mine
    } else {
        run(txn::recover_root(fs, &p(ROOT))).unwrap_or_else(|e| panic!("{}: recovery failed: {e}", sc.name))
    }
}

/// Checks one crash state; then, unless `nested`, crashes its recovery at
/// every point and checks those states too.
fn check_state(sc: &Scenario, c: &MemFs, outside: &Tree, nested: bool, label: &str, count: &mut Count) {
    if nested {
        count.recovery_states += 1;
    } else {
        count.states += 1;
    }
    let before = c.tree_at(ROOT);
    c.checkpoint();
    let r1 = recover(sc, c);
    let recovery_ops = c.op_count();
    let after = c.tree_at(ROOT);
    let fail = |what: String| -> ! {
        panic!("{} {label}: {what}\n  before recovery: {before:#?}\n  report: {r1:?}\n  after recovery: {after:#?}", sc.name)
    };
    if let Err(e) = check_recovery_deletions(&before, &after) {
        fail(format!("I3: {e}"));
    }
    let r2 = recover(sc, c);
    if r2.changed() || c.tree_at(ROOT) != after {
        fail(format!("I4: the second recovery changed something: {r2:?}"));
    }
    match (sc.classify)(c, &after) {
        Ok(state) if sc.allowed.contains(&state) => *count.outcomes.entry(state).or_default() += 1,
        Ok(state) => fail(format!("I4: ended {state}, allowed {:?}", sc.allowed)),
        Err(e) => fail(e),
    }
    for name in LEFTOVERS {
        if after.contains_key(*name) {
            fail(format!("I4: {name} left over"));
        }
    }
    if outside_of(&c.tree(), "g") != *outside {
        fail("I2: something outside the game root changed".into());
    }
    if nested || recovery_ops == 0 {
        return;
    }
    // Crash the recovery itself at every point.
    for k in 1..recovery_ops {
        for model in CrashModel::ALL {
            let c2 = c.crash_state(k, model);
            check_state(sc, &c2, outside, true, &format!("{label} / recovery crash k={k} {model:?}"), count);
        }
    }
}

fn explore(sc: Scenario) {
    let fs = MemFs::new();
    plant_outside(&fs);
    (sc.setup)(&fs);
    fs.checkpoint();
    let outside = outside_of(&fs.tree(), "g");
    (sc.run)(&fs);
    let n = fs.op_count();
    assert!(n > 5, "{}: only {n} operations recorded", sc.name);
    let mut count = Count::default();
    for k in 0..=n {
        for model in CrashModel::ALL {
            let c = fs.crash_state(k, model);
            let label =
                format!("crash after op {k}/{n} ({}) {model:?}", if k == 0 { "start".to_owned() } else { fs.op_log()[k - 1].clone() });
            check_state(&sc, &c, &outside, false, &label, &mut count);
        }
    }
    // The uncrashed end state is the new one.
    let end = (sc.classify)(&fs, &fs.tree_at(ROOT)).unwrap();
    assert!(end == "new" || (end == "clean" && !sc.allowed.contains(&"new")), "{}: ended {end}", sc.name);
    assert!(!fs.exists(&format!("{ROOT}/{}", layout::INTENT)), "{}: the intent was not cleared", sc.name);
    println!(
        "{}: {n} operations; {} crash states + {} recovery-crash states checked (3 models, recovery run twice); outcomes {:?}",
        sc.name, count.states, count.recovery_states, count.outcomes
    );
    assert!(count.outcomes.len() >= 2, "{}: every crash ended the same way: {:?}", sc.name, count.outcomes);
}

// ---------------------------------------------------------------- classification helpers

fn version_of(tree: &Tree) -> Option<Vec<u8>> {
    match tree.get(layout::VERSION_INI) {
        Some(Node::File(d)) => Some(d.clone()),
        _ => None,
    }
}

/// I1 and the download state: which version is downloaded, if any.
fn downloaded<'g>(tree: &Tree, games: &[&'g Game]) -> Result<Option<&'g Game>, String> {
    let Some(v) = version_of(tree) else { return Ok(None) };
    let Some(g) = games.iter().find(|g| g.sentinel() == v) else {
        return Err(format!("I1: version.ini holds {:?}, which is no known version", String::from_utf8_lossy(&v)));
    };
    g.complete_in(tree).map_err(|e| format!("I1: version.ini says {} but {e}", g.version))?;
    Ok(Some(g))
}

fn old_game() -> Game {
    Game::new(
        "1.0",
        &[("a.fake", Some("x=1\n")), ("data", None), ("data/big.bin", Some("0123456789")), ("old_only.txt", Some("gone in 2.0"))],
    )
}

fn new_game() -> Game {
    Game::new(
        "2.0",
        &[
            ("a.fake", Some("x=2\n")),
            ("data", None),
            ("data/big.bin", Some("abc")),
            ("data/new", None),
            ("data/new/n.txt", Some("new file")),
            ("empty.txt", Some("")),
        ],
    )
}

fn installed_tree(fs: &MemFs, files: &[(&str, &str)], marker: bool) {
    for (path, content) in files {
        fs.write_file(&format!("{ROOT}/local/{path}"), content);
    }
    if marker {
        fs.write_file(&format!("{ROOT}/local/{}", layout::OWNED_MARKER), lanspread_core::txn::install::MARKER_CONTENT);
    }
}

fn local_of(tree: &Tree) -> Option<Tree> {
    match tree.get(layout::LOCAL) {
        Some(Node::Dir) => Some(subtree(tree, layout::LOCAL)),
        None => None,
        Some(other) => Some(BTreeMap::from([("<not a dir>".into(), other.clone())])),
    }
}

// ---------------------------------------------------------------- download

fn download(fs: &MemFs, new: &Game) {
    let m = new.manifest();
    run(async {
        txn::begin_download(fs, &p(ROOT), &m).await.unwrap();
        new.write_data(fs, &p(ROOT), 4).await;
        txn::commit_download(fs, &p(ROOT), &m, &new.sentinel()).await.unwrap();
    });
}

#[test]
fn crash_fresh_download() {
    explore(Scenario {
        name: "fresh download",
        setup: Box::new(|_| {}),
        run: Box::new(|fs| download(fs, &new_game())),
        classify: Box::new(|_, tree| {
            let new = new_game();
            Ok(match downloaded(tree, &[&new])? {
                Some(_) => "new",
                None => "clean",
            })
        }),
        allowed: &["new", "clean"],
        via_catalog: false,
    });
}

const OLD_LOCAL: &[(&str, &str)] = &[("bin/game.exe", "OLD EXE"), ("save/slot1", "progress")];

#[test]
fn crash_download_over_an_old_version_while_installed() {
    explore(Scenario {
        name: "download over old version",
        setup: Box::new(|fs| {
            old_game().write_downloaded(fs, ROOT);
            installed_tree(fs, OLD_LOCAL, true);
        }),
        run: Box::new(|fs| download(fs, &new_game())),
        classify: Box::new(|_, tree| {
            let (old, new) = (old_game(), new_game());
            let mut want_local = BTreeMap::new();
            for (p, c) in OLD_LOCAL {
                want_local.insert(p.to_string(), Node::File(c.as_bytes().to_vec()));
            }
            let local = local_of(tree).unwrap_or_default();
            for (p, n) in &want_local {
                if local.get(p) != Some(n) {
                    return Err(format!("the install was touched by a download: local/{p} is {:?}", local.get(p)));
                }
            }
            Ok(match downloaded(tree, &[&old, &new])? {
                Some(g) if g.version == "1.0" => "old",
                Some(_) => "new",
                None => "clean",
            })
        }),
        allowed: &["old", "new", "clean"],
        via_catalog: false,
    });
}

#[test]
fn crash_aborted_download() {
    // The runtime fails mid-download (a peer vanished for good) and aborts.
    explore(Scenario {
        name: "aborted download over old version",
        setup: Box::new(|fs| old_game().write_downloaded(fs, ROOT)),
        run: Box::new(|fs| {
            let new = new_game();
            let m = new.manifest();
            run(async {
                txn::begin_download(fs, &p(ROOT), &m).await.unwrap();
                let half = Game { entries: new.entries.iter().take(3).map(|(k, v)| (k.clone(), v.clone())).collect(), ..new.clone() };
                half.write_data(fs, &p(ROOT), 2).await;
                txn::abort_download(fs, &p(ROOT)).await.unwrap();
            });
        }),
        classify: Box::new(|_, tree| {
            let (old, new) = (old_game(), new_game());
            Ok(match downloaded(tree, &[&old, &new])? {
                Some(g) if g.version == "1.0" => "old",
                Some(_) => return Err("an aborted download committed".into()),
                None => "clean",
            })
        }),
        allowed: &["old", "clean"],
        via_catalog: false,
    });
}

// ---------------------------------------------------------------- install / update / uninstall

const ARCHIVE_A: &[(&str, &str)] = &[("bin/game.exe", "EXE v2"), ("data/level1.pak", "L1"), ("data/empty/", "")];
const ARCHIVE_B: &[(&str, &str)] = &[("data/level2.pak", "L2"), ("config.ini", "cfg=1")];

fn installable() -> Game {
    Game::new(
        "2.0",
        &[
            ("a.fake", Some(archive_text(ARCHIVE_A).as_str())),
            ("b.fake", Some(archive_text(ARCHIVE_B).as_str())),
            ("readme.txt", Some("not an archive")),
        ],
    )
}

fn new_local() -> Tree {
    let mut files: Vec<(&str, &str)> = ARCHIVE_A.to_vec();
    files.extend_from_slice(ARCHIVE_B);
    expected_local(&files)
}

fn do_install(fs: &MemFs, adopt: bool) -> txn::InstallOutcome {
    let arc: Arc<dyn Fs> = Arc::new(fs.clone());
    run(txn::install(arc, &FakeUnpacker, &p(ROOT), keep(adopt), no_progress())).unwrap()
}

/// Version 1 as lanspread installed it: archives with the same names as
/// version 2's.
const V1_A: &[(&str, &str)] = &[("bin/game.exe", "EXE v1"), ("data/level1.pak", "L1 v1"), ("data/old.pak", "OLD")];
const V1_B: &[(&str, &str)] = &[("config.ini", "cfg=0")];

/// What the player made of version 1: files they created (one where
/// version 2 has a file of its own)...
const USER_CREATED: &[(&str, &str)] = &[("save/slot1", "progress"), ("bin/notes.txt", "my notes"), ("data/level2.pak", "my level")];
/// ... and produced files they changed (one of the same size: only the
/// hash tells).
const USER_CHANGED: &[(&str, &str)] = &[("config.ini", "cfg=9"), ("data/old.pak", "MODDED!")];
/// Produced files version 2 leaves as they were, apart from `level1.pak`,
/// rewritten with the same bytes (a new mtime, the same hash: still ours).
const V1_UNCHANGED: &[(&str, &str)] = &[("bin/game.exe", "EXE v1"), ("data/level1.pak", "L1 v1")];

fn user_files() -> Vec<(&'static str, &'static str)> {
    USER_CREATED.iter().chain(USER_CHANGED).copied().collect()
}

/// Version 1 installed by lanspread and played, version 2 downloaded.
fn played_v1_then_downloaded_v2(fs: &MemFs) {
    let v1 = Game::new("1.0", &[("a.fake", Some(archive_text(V1_A).as_str())), ("b.fake", Some(archive_text(V1_B).as_str()))]);
    v1.write_downloaded(fs, ROOT);
    assert_eq!(do_install(fs, false).kind, txn::InstallKind::Installed);
    for (path, content) in user_files().into_iter().chain([("data/level1.pak", "L1 v1")]) {
        fs.write_file(&format!("{ROOT}/local/{path}"), content);
    }
    installable().write_downloaded(fs, ROOT);
}

/// A hand-made `local/` (no marker, no record) and version 2 downloaded.
fn hand_installed_then_downloaded_v2(fs: &MemFs) {
    installable().write_downloaded(fs, ROOT);
    installed_tree(fs, OLD_LOCAL, false);
}

/// `local/` without the user's files (those at their own path with their
/// own content), and without the record (checked on the way).
fn lanspread_part(local: &Tree, user: &[(&str, &str)]) -> Result<Tree, String> {
    let changed: Vec<&str> = user.iter().map(|(p, _)| *p).collect();
    let mut t = strip_record(local, &changed)?;
    for (path, content) in user {
        if t.get(*path) == Some(&Node::File(content.as_bytes().to_vec())) {
            t.remove(*path);
        }
    }
    Ok(t)
}

/// The same files and nothing else, and at least `want`'s directories (a
/// directory the user made may stay, empty, when its files moved out).
fn same_files(have: &Tree, want: &Tree) -> bool {
    let files = |t: &Tree| t.iter().filter(|(_, n)| **n != Node::Dir).map(|(p, n)| (p.clone(), n.clone())).collect::<Tree>();
    files(have) == files(want) && want.iter().all(|(p, n)| *n != Node::Dir || have.get(p) == Some(&Node::Dir))
}

/// Old or new, with every user file in `local/` or in the kept directory.
fn keeping_classify(old_produced: Tree, user: Vec<(&'static str, &'static str)>, uninstall: bool) -> Classify {
    Box::new(move |fs, tree| {
        if downloaded(tree, &[&installable()])?.is_none() {
            return Err("the download disappeared".into());
        }
        check_user_files(&fs.tree(), &user)?;
        let Some(local) = local_of(tree) else {
            return if uninstall { Ok("clean") } else { Err("local/ is gone".into()) };
        };
        let ours = lanspread_part(&local, &user)?;
        if same_files(&ours, &old_produced) {
            Ok("old")
        } else if !uninstall && same_files(&ours, &new_local()) {
            Ok("new")
        } else {
            Err(format!("local/ is neither old nor new: {ours:#?}"))
        }
    })
}

fn v1_produced_unchanged() -> Tree {
    expected_local(V1_UNCHANGED)
}

#[test]
fn crash_install() {
    explore(Scenario {
        name: "install",
        setup: Box::new(|fs| installable().write_downloaded(fs, ROOT)),
        run: Box::new(|fs| {
            assert_eq!(do_install(fs, false), txn::InstallOutcome { kind: txn::InstallKind::Installed, kept: None });
            assert_staging_synced_once(fs);
        }),
        classify: Box::new(|_, tree| {
            if downloaded(tree, &[&installable()])?.is_none() {
                return Err("the download disappeared".into());
            }
            match local_of(tree) {
                None => Ok("clean"),
                Some(local) if strip_record(&local, &[])? == new_local() => Ok("new"),
                Some(local) => Err(format!("local/ is half installed: {local:#?}")),
            }
        }),
        allowed: &["new", "clean"],
        via_catalog: false,
    });
}

/// The staged tree is made durable by one `sync_tree`, before the rename
/// that commits it, and no staged file is synced on its own (so the crash
/// states just before and just after that one operation are both explored).
fn assert_staging_synced_once(fs: &MemFs) {
    let log = fs.op_log();
    let staging = format!("{ROOT}/{}", layout::INSTALLING);
    let at = |entry: &str| log.iter().position(|op| op == entry).unwrap_or_else(|| panic!("{entry:?} never happened: {log:#?}"));
    let sync = at(&format!("sync_tree {staging}"));
    assert_eq!(log.iter().filter(|op| op.starts_with("sync_tree")).count(), 1, "{log:#?}");
    assert!(sync < at(&format!("rename {staging} -> {ROOT}/{}", layout::LOCAL)), "{log:#?}");
    let unpacked = log.iter().position(|op| op.starts_with(&format!("create {staging}/"))).expect("files were unpacked");
    assert!(log[unpacked..sync].iter().all(|op| !op.starts_with("sync")), "per-file syncs while unpacking: {log:#?}");
}

const KEPT: &str = "games/.lanspread-kept/g-1000";

/// The files of the kept directory, relative to it.
fn kept_now(fs: &MemFs) -> BTreeMap<String, Vec<u8>> {
    kept_files(&fs.tree(), "g").into_iter().map(|(_, rel, d)| (rel, d)).collect()
}

fn contents(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    files.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())).collect()
}

#[test]
fn crash_update() {
    explore(Scenario {
        name: "update (saves carried, changed files kept)",
        setup: Box::new(played_v1_then_downloaded_v2),
        run: Box::new(|fs| {
            let out = do_install(fs, false);
            assert_eq!(out, txn::InstallOutcome { kind: txn::InstallKind::Updated, kept: Some(p(KEPT)) });
            assert_staging_synced_once(fs);
            // Kept: the changed produced files and the save that clashes with v2's file; nothing of ours.
            assert_eq!(kept_now(fs), contents(&[("config.ini", "cfg=9"), ("data/level2.pak", "my level"), ("data/old.pak", "MODDED!")]));
            // Carried: what the user created where v2 has nothing.
            assert_eq!(fs.read(&format!("{ROOT}/local/save/slot1")).unwrap(), b"progress");
            assert_eq!(fs.read(&format!("{ROOT}/local/bin/notes.txt")).unwrap(), b"my notes");
            for emptied in ["save", "bin"] {
                assert!(!fs.exists(&format!("{KEPT}/{emptied}")), "the carried files' directories are tidied away");
            }
        }),
        classify: keeping_classify(v1_produced_unchanged(), user_files(), false),
        allowed: &["old", "new"],
        via_catalog: false,
    });
}

#[test]
fn crash_update_of_an_adopted_install() {
    // A hand-made local/: without --adopt nothing happens; with it, every
    // file is the user's: the save is carried, the exe v2 replaces is kept.
    explore(Scenario {
        name: "update (adopted: no marker, no record)",
        setup: Box::new(hand_installed_then_downloaded_v2),
        run: Box::new(|fs| {
            let arc: Arc<dyn Fs> = Arc::new(fs.clone());
            let refused = run(txn::install(arc, &FakeUnpacker, &p(ROOT), keep(false), no_progress())).unwrap_err();
            assert!(matches!(refused, txn::TxnError::NotOwned { .. }), "{refused}");
            assert_eq!(fs.op_count(), 0, "the refusal changed something: {:?}", fs.op_log());
            assert_eq!(do_install(fs, true).kept, Some(p(KEPT)));
            assert_eq!(kept_now(fs), contents(&[("bin/game.exe", "OLD EXE")]));
            assert_eq!(fs.read(&format!("{ROOT}/local/save/slot1")).unwrap(), b"progress");
        }),
        classify: keeping_classify(Tree::new(), OLD_LOCAL.to_vec(), false),
        allowed: &["old", "new"],
        via_catalog: false,
    });
}

#[test]
fn crash_uninstall() {
    explore(Scenario {
        name: "uninstall (the user's files kept)",
        setup: Box::new(played_v1_then_downloaded_v2),
        run: Box::new(|fs| {
            let out = run(txn::uninstall(fs, &p(ROOT), keep(false))).unwrap();
            assert_eq!(out.kept, Some(p(KEPT)));
            assert_eq!(kept_now(fs), contents(&user_files()), "everything the user created or changed, nothing of ours");
        }),
        classify: keeping_classify(v1_produced_unchanged(), user_files(), true),
        allowed: &["old", "clean"],
        via_catalog: false,
    });
}

#[test]
fn crash_uninstall_of_an_adopted_install() {
    explore(Scenario {
        name: "uninstall (adopted)",
        setup: Box::new(hand_installed_then_downloaded_v2),
        run: Box::new(|fs| {
            let refused = run(txn::uninstall(fs, &p(ROOT), keep(false))).unwrap_err();
            assert!(matches!(refused, txn::TxnError::NotOwned { .. }), "{refused}");
            assert_eq!(fs.op_count(), 0, "the refusal changed something: {:?}", fs.op_log());
            assert_eq!(run(txn::uninstall(fs, &p(ROOT), keep(true))).unwrap().kept, Some(p(KEPT)));
            assert_eq!(kept_now(fs), contents(OLD_LOCAL));
        }),
        classify: keeping_classify(Tree::new(), OLD_LOCAL.to_vec(), true),
        allowed: &["old", "clean"],
        via_catalog: false,
    });
}

// ---------------------------------------------------------------- remove

#[test]
fn crash_remove_downloaded() {
    explore(Scenario {
        name: "remove downloaded files",
        setup: Box::new(|fs| installable().write_downloaded(fs, ROOT)),
        run: Box::new(|fs| {
            let games = fs.scoped("games");
            run(txn::remove_downloaded(&games, &catalog(&["g", "other"]), &GameId::new("g").unwrap())).unwrap();
        }),
        classify: Box::new(|fs, tree| {
            // Gone, or (crash between removing the intent and the root
            // directory) an empty directory: not downloaded, nothing left.
            if !fs.exists(ROOT) || tree.is_empty() {
                return Ok("clean");
            }
            let game = installable();
            if downloaded(tree, &[&game])?.is_some() && tree.len() == game.entries.len() + 1 {
                return Ok("old");
            }
            Err("the root is partly removed".into())
        }),
        allowed: &["old", "clean"],
        via_catalog: true,
    });
}
