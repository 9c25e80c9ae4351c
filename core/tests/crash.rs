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
//!   nothing.
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

fn do_install(fs: &MemFs) -> txn::InstallKind {
    let arc: Arc<dyn Fs> = Arc::new(fs.clone());
    run(txn::install(arc, &FakeUnpacker, &p(ROOT), no_progress())).unwrap()
}

fn install_classify(old_local: Option<Tree>) -> Classify {
    Box::new(move |_, tree| {
        let game = installable();
        if downloaded(tree, &[&game])?.is_none() {
            return Err("the download disappeared".into());
        }
        let local = local_of(tree);
        if local.as_ref() == Some(&new_local()) {
            return Ok("new");
        }
        if local == old_local {
            return Ok(if old_local.is_some() { "old" } else { "clean" });
        }
        Err(format!("local/ is neither old nor new: {local:#?}"))
    })
}

#[test]
fn crash_install() {
    explore(Scenario {
        name: "install",
        setup: Box::new(|fs| installable().write_downloaded(fs, ROOT)),
        run: Box::new(|fs| {
            assert_eq!(do_install(fs), txn::InstallKind::Installed);
            assert_staging_synced_once(fs);
        }),
        classify: install_classify(None),
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

fn old_local_tree(marker: bool) -> Tree {
    let mut t = expected_local(OLD_LOCAL);
    if !marker {
        t.remove(layout::OWNED_MARKER);
    }
    t
}

#[test]
fn crash_update() {
    explore(Scenario {
        name: "update",
        setup: Box::new(|fs| {
            installable().write_downloaded(fs, ROOT);
            installed_tree(fs, OLD_LOCAL, true);
        }),
        run: Box::new(|fs| {
            assert_eq!(do_install(fs), txn::InstallKind::Updated);
            assert_staging_synced_once(fs);
        }),
        classify: install_classify(Some(old_local_tree(true))),
        allowed: &["old", "new"],
        via_catalog: false,
    });
}

#[test]
fn crash_update_of_an_install_without_marker() {
    explore(Scenario {
        name: "update (old install has no marker)",
        setup: Box::new(|fs| {
            installable().write_downloaded(fs, ROOT);
            installed_tree(fs, OLD_LOCAL, false);
        }),
        run: Box::new(|fs| assert_eq!(do_install(fs), txn::InstallKind::Updated)),
        classify: install_classify(Some(old_local_tree(false))),
        allowed: &["old", "new"],
        via_catalog: false,
    });
}

#[test]
fn crash_uninstall() {
    explore(Scenario {
        name: "uninstall",
        setup: Box::new(|fs| {
            installable().write_downloaded(fs, ROOT);
            installed_tree(fs, OLD_LOCAL, true);
        }),
        run: Box::new(|fs| run(txn::uninstall(fs, &p(ROOT))).unwrap()),
        classify: Box::new(|_, tree| {
            let game = installable();
            if downloaded(tree, &[&game])?.is_none() {
                return Err("the download disappeared".into());
            }
            match local_of(tree) {
                None => Ok("clean"),
                Some(t) if t == old_local_tree(true) => Ok("old"),
                Some(t) => Err(format!("local/ is half deleted: {t:#?}")),
            }
        }),
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
