//! Random sequences of transactions, crashes (any point, any model) and
//! injected errors (I/O error or disk full on any operation), checked
//! against a simple model of a game root: which version is downloaded and
//! which version is installed.
//!
//! After every step the filesystem must be exactly one of the states the
//! model allows (I1-I4), nothing outside the root may change, and a startup
//! recovery must find nothing to do unless a crash just happened (then a
//! second recovery must find nothing to do). The player also saves into
//! the installed game now and then: every save stays in `local/` or in
//! the kept directory, whatever happens (I5).

mod common;

use common::*;
use lanspread_core::layout;
use lanspread_core::txn::{self, TxnError};
use lanspread_core::GameId;
use lanspread_memfs::{CrashModel, MemFs, Node};
use lanspread_ports::fs::{Fs, FsErrorKind};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const ROOT: &str = "games/g";

/// Version `v` of the game: an archive whose content depends on `v`, files
/// whose sizes change between versions, a directory in version 2 only.
fn version(v: u8) -> Game {
    let big = "z".repeat(usize::from(v) * 7);
    let mut entries: Vec<(String, Option<String>)> = vec![
        ("a.fake".into(), Some(format!("bin/x={v}\ndata/v{v}=payload {v}\n"))),
        ("data.bin".into(), Some(big)),
        ("notes.txt".into(), Some(format!("release notes {v}"))),
    ];
    if v == 2 {
        entries.push(("extra".into(), None));
        entries.push(("extra/e.bin".into(), Some(format!("extra {v}"))));
    }
    let refs: Vec<(&str, Option<&str>)> = entries.iter().map(|(p, c)| (p.as_str(), c.as_deref())).collect();
    Game::new(&v.to_string(), &refs)
}

fn installed_tree(v: u8) -> BTreeMap<String, Node> {
    let x = v.to_string();
    let payload = format!("payload {v}");
    let path = format!("data/v{v}");
    expected_local(&[("bin/x", x.as_str()), (path.as_str(), payload.as_str())])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Model {
    downloaded: Option<u8>,
    installed: Option<u8>,
}

#[derive(Debug, Clone)]
enum Fault {
    None,
    Crash { at: usize, model: CrashModel },
    Error { at: u64, kind: FsErrorKind },
}

#[derive(Debug, Clone)]
enum Action {
    Download(u8),
    Install,
    Uninstall,
    Remove,
    /// The player saves into `local/` (if installed).
    Play,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        2 => Just(Fault::None),
        3 => (any::<usize>(), prop::sample::select(CrashModel::ALL.to_vec())).prop_map(|(at, model)| Fault::Crash { at, model }),
        2 => (0u64..60, prop::sample::select(vec![FsErrorKind::Io, FsErrorKind::NoSpace])).prop_map(|(at, kind)| Fault::Error { at, kind }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (1u8..=3).prop_map(Action::Download),
        3 => Just(Action::Install),
        1 => Just(Action::Uninstall),
        1 => Just(Action::Remove),
        2 => Just(Action::Play),
    ]
}

/// What the filesystem holds, in the model's terms, or why it is no model state.
fn observe(fs: &MemFs, saves: &[(&str, &str)]) -> Result<Model, String> {
    let tree = fs.tree_at(ROOT);
    for name in LEFTOVERS {
        if tree.contains_key(*name) {
            return Err(format!("{name} left over"));
        }
    }
    let downloaded = match tree.get(layout::VERSION_INI) {
        None => None,
        Some(Node::File(d)) => {
            let v = (1..=3).find(|v| version(*v).sentinel() == *d).ok_or_else(|| format!("unknown version.ini {d:?}"))?;
            version(v).complete_in(&tree).map_err(|e| format!("I1: {e}"))?;
            Some(v)
        }
        Some(other) => return Err(format!("version.ini is {other:?}")),
    };
    let installed = match tree.get(layout::LOCAL) {
        None => None,
        Some(Node::Dir) => {
            let mut local = strip_record(&subtree(&tree, layout::LOCAL), &[])?;
            for (path, content) in saves {
                if local.get(*path) == Some(&Node::File(content.as_bytes().to_vec())) {
                    local.remove(*path);
                }
            }
            local.remove("save");
            Some((1..=3).find(|v| installed_tree(*v) == local).ok_or_else(|| format!("local/ is no complete install: {local:?}"))?)
        }
        Some(other) => return Err(format!("local is {other:?}")),
    };
    Ok(Model { downloaded, installed })
}

/// Runs one action the way the runtime does (a failed download is aborted).
fn perform(fs: &MemFs, action: &Action) -> Result<(), TxnError> {
    let root = p(ROOT);
    match action {
        Action::Download(v) => {
            let g = version(*v);
            let m = g.manifest();
            run(async {
                let r = async {
                    txn::begin_download(fs, &root, &m).await?;
                    write_data_checked(fs, &g).await?;
                    txn::commit_download(fs, &root, &m, &g.sentinel()).await
                }
                .await;
                if r.is_err() {
                    txn::abort_download(fs, &root).await.expect("abort after a failed download");
                }
                r
            })
        }
        Action::Install => {
            let arc: Arc<dyn Fs> = Arc::new(fs.clone());
            run(txn::install(arc, &FakeUnpacker, &root, keep(false), no_progress())).map(drop)
        }
        Action::Uninstall => run(txn::uninstall(fs, &root, keep(false))).map(drop),
        Action::Remove => run(txn::remove_downloaded(&fs.scoped("games"), &catalog(&["g", "other"]), &GameId::new("g").unwrap())),
        Action::Play => Ok(()),
    }
}

/// The runtime's chunk writes, reporting a write error as a transaction error.
async fn write_data_checked(fs: &dyn Fs, g: &Game) -> Result<(), TxnError> {
    for (path, content) in &g.entries {
        let Some(c) = content else { continue };
        let rel = p(&format!("{ROOT}/{path}"));
        let fail = |source| TxnError::Fs { root: p(ROOT), step: format!("write {rel}"), source };
        let h = fs.open_write(&rel).await.map_err(fail)?;
        for (i, piece) in c.as_bytes().chunks(5).enumerate() {
            h.write_at(i as u64 * 5, bytes::Bytes::copy_from_slice(piece)).await.map_err(fail)?;
        }
    }
    Ok(())
}

/// The states an action may end in, given the state before and whether it
/// succeeded (`None`: crashed).
fn allowed(before: Model, action: &Action, result: Option<bool>) -> Vec<Model> {
    let done = match action {
        Action::Download(v) => Model { downloaded: Some(*v), ..before },
        Action::Install => Model { installed: before.downloaded, ..before },
        Action::Uninstall => Model { installed: None, ..before },
        Action::Remove => Model { downloaded: None, ..before },
        Action::Play => before,
    };
    let can_succeed = match action {
        Action::Download(_) => true,
        Action::Install => before.downloaded.is_some(),
        Action::Uninstall => before.installed.is_some(),
        Action::Remove => before.downloaded.is_some() && before.installed.is_none(),
        Action::Play => true,
    };
    let not_downloaded = Model { downloaded: None, ..before };
    match (action, result) {
        (_, Some(true)) => vec![done],
        (_, Some(false)) if !can_succeed => vec![before],
        // A failed or crashed download ends not downloaded, or with the old
        // version if no data had been touched yet.
        (Action::Download(_), Some(false)) => vec![before, not_downloaded],
        (Action::Download(_), None) => vec![before, not_downloaded, done],
        (_, Some(false)) => vec![before],
        (_, None) if can_succeed => vec![before, done],
        (_, None) => vec![before],
    }
}

fn check_sequence(steps: &[(Action, Fault)]) -> Result<(), TestCaseError> {
    let mut fs = MemFs::new();
    plant_outside(&fs);
    fs.mkdir_p(ROOT);
    let outside = outside_of(&fs.tree(), "g");
    let mut model = Model { downloaded: None, installed: None };
    let mut saves: Vec<(String, String)> = Vec::new();
    for (i, (action, fault)) in steps.iter().enumerate() {
        if let (Action::Play, Some(_)) = (action, model.installed) {
            let save = (format!("save/slot{i}"), format!("progress at step {i}"));
            fs.write_file(&format!("{ROOT}/local/{}", save.0), &save.1);
            saves.push(save);
        }
        let saves_ref: Vec<(&str, &str)> = saves.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        fs.checkpoint();
        let ctx = format!("step {i}: {action:?} with {fault:?} from {model:?}");
        let result = match fault {
            Fault::None => Some(perform(&fs, action)),
            Fault::Error { at, kind } => {
                fs.fail_nth_op(*at, *kind);
                let r = perform(&fs, action);
                fs.clear_fault();
                Some(r)
            }
            Fault::Crash { at, model: crash_model } => {
                let _ = perform(&fs, action);
                let k = at % (fs.op_count() + 1);
                fs = fs.crash_state(k, *crash_model);
                let r1 = run(txn::recover_root(&fs, &p(ROOT))).map_err(|e| TestCaseError::fail(format!("{ctx}: recovery: {e}")))?;
                let _ = r1;
                None
            }
        };
        if let Some(Err(e)) = &result {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("game root games/g:") || msg.starts_with("game root g:"), "{ctx}: unclear error {msg}");
        }
        let r = run(txn::recover_root(&fs, &p(ROOT))).map_err(|e| TestCaseError::fail(format!("{ctx}: recovery: {e}")))?;
        prop_assert!(!r.changed(), "{ctx}: recovery had work left after {result:?}: {r:?}");
        prop_assert_eq!(outside_of(&fs.tree(), "g"), outside.clone(), "{}: I2", ctx);
        check_user_files(&fs.tree(), &saves_ref).map_err(|e| TestCaseError::fail(format!("{ctx}: I5: {e} (result {result:?})")))?;
        let now = observe(&fs, &saves_ref).map_err(|e| TestCaseError::fail(format!("{ctx}: {e} (result {result:?})")))?;
        let ok = allowed(model, action, result.as_ref().map(Result::is_ok));
        prop_assert!(ok.contains(&now), "{}: ended in {:?}, allowed {:?} (result {:?})", ctx, now, ok, result);
        model = now;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_transactions_crashes_and_faults_match_the_model(steps in prop::collection::vec((action(), fault()), 1..14)) {
        check_sequence(&steps)?;
    }
}

#[test]
fn a_known_tricky_sequence() {
    // Update download while installed, crash during commit, then install
    // (the save is carried), save again, uninstall mid-crash (the saves
    // are moving to the kept directory), remove.
    let steps = vec![
        (Action::Download(1), Fault::None),
        (Action::Install, Fault::None),
        (Action::Play, Fault::None),
        (Action::Download(2), Fault::Crash { at: 30, model: CrashModel::MetadataOnly }),
        (Action::Download(2), Fault::Error { at: 12, kind: FsErrorKind::NoSpace }),
        (Action::Download(2), Fault::None),
        (Action::Install, Fault::Crash { at: 25, model: CrashModel::SyncedOnly }),
        (Action::Install, Fault::None),
        (Action::Play, Fault::None),
        (Action::Uninstall, Fault::Crash { at: 12, model: CrashModel::AllUpToK }),
        (Action::Uninstall, Fault::None),
        (Action::Remove, Fault::Error { at: 7, kind: FsErrorKind::Io }),
    ];
    check_sequence(&steps).unwrap();
}
