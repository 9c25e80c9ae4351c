//! Crash-safe transactions on a game root: the download sentinel, install,
//! update, uninstall, removal of downloaded files, and startup recovery.
//!
//! # Shape
//!
//! Every transaction is a **sans-IO machine** ([`Machine`]): it is created
//! from its inputs, asks for one filesystem operation at a time with
//! [`Machine::poll_op`], is fed each result with [`Machine::handle_result`]
//! and ends with [`Machine::take_outcome`]. A machine first observes the
//! root ([`RootFacts`]), then a pure [`Planner`] turns the facts into a plan
//! of [`Step`]s, which the machine executes; on failure it runs recovery.
//! Machines never await, read a clock or touch a filesystem, so tests drive
//! them by hand. The async functions below run them through the
//! [`driver::Driver`] over the [`Fs`] and [`Unpacker`] ports.
//!
//! # Durability rules
//!
//! * Every transaction except the download's data writes is announced by an
//!   intent log (`.lanspread.json`, see [`intent`]) written atomically
//!   before the first change and removed as the last step, after an fsync of
//!   the root made every other change durable.
//! * Data is fsynced before the name that publishes it is renamed into
//!   place, and the directory holding that name is fsynced after.
//! * A directory is deleted only when the intent names it or it holds a
//!   regular `.lanspread_owned` marker; symlinks are never followed and
//!   never deleted in place of our directories.
//! * A file in `local/` is deleted only when the install's record
//!   (`.lanspread_files.json`) proves the archives produced it as it is;
//!   everything else is the user's and is only ever moved, by rename, to
//!   `<game dir>/.lanspread-kept/<id>-<time>/` (see [`keep`]). An update or
//!   uninstall of a `local/` without the marker is refused unless the
//!   caller adopts it.
//!
//! Recovery ([`recover_root`], [`recover_all`]) brings every root to exactly
//! one of *old version complete*, *new version complete* or *clean*, and a
//! second run changes nothing. See [`recover`] for the rules.
//!
//! # Caller contract
//!
//! At most one transaction runs on a root at a time (the runtime's
//! per-game operation lock), and recovery runs on every root at startup
//! before anything else touches it: a root with an intent log refuses new
//! transactions until recovered.

pub mod download;
pub mod driver;
pub mod error;
pub mod flow;
pub mod install;
pub mod intent;
pub mod keep;
pub mod op;
pub mod recover;
pub mod remove;

pub use download::{BeginDownload, CommitDownload};
pub use error::TxnError;
pub use flow::{Decision, Flow, IntentState, Planner, RootFacts, Stat, Stats, Step};
pub use install::{Install, InstallKind, InstallOutcome, Uninstall, UninstallOutcome};
pub use intent::{Intent, IntentOp, Phase};
pub use keep::KeepOptions;
pub use op::{FsOp, Machine, OpError, OpResult, OpValue};
pub use recover::{plan_recovery, Recover, RecoveryMode, RecoveryReport};
pub use remove::RemoveDownloaded;

use crate::catalog::Catalog;
use crate::game::{GameId, Manifest};
use driver::Driver;
use lanspread_ports::fs::Fs;
use lanspread_ports::path::RelPath;
use lanspread_ports::unpack::{ProgressFn, Unpacker};
use std::sync::Arc;

/// Starts a download of `manifest` into `root` (created if missing): parks
/// an existing `version.ini` as `.version.ini.discarded`, records the
/// intent, creates the manifest's directories and pre-creates every
/// non-sentinel file at its size without truncating existing data (a file
/// that already has the right size is left as is, so verified data can be
/// reused). The runtime then writes chunks through `fs.open_write(root/path)`
/// and `write_at`, and ends with [`commit_download`] or [`abort_download`].
///
/// Refused if an intent log is present (run [`recover_root`] first), if the
/// manifest is invalid, or if `version.ini`, a manifest path or one of its
/// parents is something we must not replace (a directory where a file is
/// expected, a symlink...). On failure the root is rolled back: to the old
/// `version.ini` if no data was touched yet, otherwise to "not downloaded".
pub async fn begin_download(fs: &dyn Fs, root: &RelPath, manifest: &Manifest) -> Result<(), TxnError> {
    Driver::new(fs).run(&mut BeginDownload::begin(root.clone(), manifest)).await
}

/// Commits a download begun with [`begin_download`]: checks every file has
/// its manifest size, fsyncs every data file and directory, then writes
/// `sentinel` to `.version.ini.tmp`, fsyncs it, renames it to `version.ini`
/// and fsyncs the root; finally removes `.version.ini.discarded` and the
/// intent. `sentinel` must be the manifest's `version.ini` (same size, a
/// usable version).
///
/// A failure before the rename leaves the download in progress (retry the
/// commit, or call [`abort_download`]); a failure after it is finished by
/// recovery and reported as success if that works.
pub async fn commit_download(fs: &dyn Fs, root: &RelPath, manifest: &Manifest, sentinel: &[u8]) -> Result<(), TxnError> {
    Driver::new(fs).run(&mut CommitDownload::commit(root.clone(), manifest, sentinel)).await
}

/// Abandons a download (failure or cancel): sweeps `.version.ini.tmp` and
/// `.version.ini.discarded` without restoring the previous sentinel (unless
/// no data was touched yet), removes a `version.ini` committed by it, and
/// clears the intent, leaving the game "not downloaded" with its data files
/// kept. Refused if the root's intent belongs to another operation.
pub async fn abort_download(fs: &dyn Fs, root: &RelPath) -> Result<(), TxnError> {
    Driver::new(fs).run(&mut download::abort(root.clone())).await.map(drop)
}

/// Removes what a previous version left in `root` that `manifest` does not
/// list (files, links and whole directories), so the committed version is
/// exactly the manifest and peers see the same manifest digest. `local/`,
/// lanspread's control files and anything listed in the manifest are kept.
/// Called after [`begin_download`], while `version.ini` is parked, so a crash
/// here leaves a root that is "not downloaded" either way. Returns how many
/// entries were removed.
pub async fn prune_stale(fs: &dyn Fs, root: &RelPath, manifest: &Manifest) -> Result<usize, TxnError> {
    use lanspread_ports::fs::FileKind;
    let fs_err = |step: String| move |source| TxnError::Fs { root: root.clone(), step, source };
    let bad = |e: lanspread_ports::path::PathError| TxnError::Unexpected { root: root.clone(), detail: e.to_string() };
    let listed: std::collections::BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let mut removed = 0;
    let mut stack = vec![(RelPath::root(), root.clone())];
    while let Some((dir, abs)) = stack.pop() {
        for e in fs.read_dir(&abs).await.map_err(fs_err(format!("listing {abs}")))? {
            if dir.is_root() && (e.name == crate::layout::LOCAL || crate::layout::is_control_name(&e.name)) {
                continue;
            }
            let rel = dir.join_local(&e.name).map_err(bad)?;
            let path = abs.join_local(&e.name).map_err(bad)?;
            let keep = listed.contains(rel.as_str());
            match e.kind {
                FileKind::Dir if keep => stack.push((rel, path)),
                FileKind::Dir => {
                    fs.remove_dir_all(&path).await.map_err(fs_err(format!("removing stale {path}")))?;
                    removed += 1;
                }
                _ if keep && e.kind == FileKind::File => {}
                _ => {
                    fs.remove_file(&path).await.map_err(fs_err(format!("removing stale {path}")))?;
                    removed += 1;
                }
            }
        }
    }
    if removed > 0 {
        fs.sync_dir(root).await.map_err(fs_err(format!("syncing {root}")))?;
    }
    Ok(removed)
}

/// Installs the downloaded game in `root`, or updates it if `local/`
/// exists: every root-level archive the unpacker handles (sorted by name)
/// is unpacked into `.local.installing/` (marked `.lanspread_owned`, with
/// the record of every file the archives produced), the staged tree is
/// fsynced and swapped in as `local/`; an update keeps the old `local/` as
/// `.local.backup/` until the new one is in place. Any failure before the
/// swap restores the previous state. The marker and the record stay inside
/// `local/` (they prove ownership to a later update or uninstall).
///
/// An update keeps the user's files: the ones the user created are carried
/// into the new install, unless the new version has something at their
/// path; those, and the files the archives produced and the user changed,
/// are moved to `<game dir>/.lanspread-kept/<id>-<keep.time>/`, which the
/// outcome reports.
///
/// `progress` is handed to the unpacker, which reports per archive.
///
/// Refused if the game is not downloaded (no regular `version.ini`), an
/// intent log or a leftover staging directory is present, `local/` is not
/// a directory, `local/` has no marker and `keep.adopt` is not set
/// ([`TxnError::NotOwned`]), or there is no archive
/// ([`TxnError::NothingToInstall`]).
pub async fn install(
    fs: Arc<dyn Fs>,
    unpacker: &dyn Unpacker,
    root: &RelPath,
    keep: KeepOptions,
    progress: ProgressFn<'_>,
) -> Result<InstallOutcome, TxnError> {
    let driver = Driver::with_unpacker(&fs, unpacker, progress);
    driver.run(&mut Install::install(root.clone(), |name: &str| unpacker.handles(name), keep)).await
}

/// Uninstalls the game in `root`: the files the user created or changed
/// are moved to `<game dir>/.lanspread-kept/<id>-<keep.time>/` (reported
/// in the outcome), then `local/` is renamed to `.local.backup/` (from
/// then on the game is not installed, even after a crash) and deleted.
/// Refused like an update when `local/` has no marker and `keep.adopt` is
/// not set.
pub async fn uninstall(fs: &dyn Fs, root: &RelPath, keep: KeepOptions) -> Result<UninstallOutcome, TxnError> {
    Driver::new(fs).run(&mut Uninstall::uninstall(root.clone(), keep)).await
}

/// Removes the downloaded files of `id`: the whole game root
/// `<game dir>/<id>`, where `fs` is rooted at the game directory. Refused
/// if `id` is not in `catalog`, if the game is installed, if an intent log
/// or staging directory is present, or unless a regular root-level
/// `version.ini` proves it is a game root. `version.ini` goes first, so an
/// interrupted removal never looks downloaded; recovery finishes it.
pub async fn remove_downloaded(fs: &dyn Fs, catalog: &Catalog, id: &GameId) -> Result<(), TxnError> {
    Driver::new(fs).run(&mut RemoveDownloaded::remove(catalog, id)).await
}

/// Recovers one game root (see [`recover`] for the rules). Idempotent:
/// a second run reports no actions. A missing root needs nothing.
pub async fn recover_root(fs: &dyn Fs, root: &RelPath) -> Result<RecoveryReport, TxnError> {
    Driver::new(fs).run(&mut Recover::recover(root.clone(), RecoveryMode::Normal)).await
}

/// Recovers the root of every catalog game present in the game directory
/// (`fs` is rooted at it), in id order. Roots that do not exist are skipped.
pub async fn recover_all(fs: &dyn Fs, catalog: &Catalog) -> Vec<(GameId, Result<RecoveryReport, TxnError>)> {
    let mut out = Vec::new();
    for entry in catalog.entries() {
        let result = recover_root(fs, &entry.id.root()).await;
        if matches!(&result, Ok(r) if !r.root_exists) {
            continue;
        }
        out.push((entry.id.clone(), result));
    }
    out
}

#[cfg(test)]
mod tests;
