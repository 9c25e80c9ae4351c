//! Install, update, uninstall and removal of downloaded files, each run as
//! an operation with the snapshot-before-lifecycle ordering.

use super::events::{OperationKind, PeerEvent};
use super::state::Shared;
use lanspread_core::game::GameId;
use lanspread_core::txn;
use lanspread_ports::{RelPath, UnpackProgress};
use std::sync::Arc;

/// Installs (or updates) a downloaded game (the install after a download).
pub(crate) async fn install(sh: Arc<Shared>, id: GameId) {
    install_with(sh, id, false).await;
}

/// The options of an install or uninstall: the clock names the kept directory.
fn keep(sh: &Shared, adopt: bool) -> txn::KeepOptions {
    txn::KeepOptions { adopt, time: sh.ports.clock.unix_seconds() }
}

/// Tells where the user's files went, before the operation's end.
fn report_kept(sh: &Shared, id: &GameId, kept: Option<RelPath>) {
    if let Some(kept) = kept {
        sh.emit(PeerEvent::UserFilesKept { id: id.clone(), kept });
    }
}

/// Installs (or updates) a downloaded game; `adopt` takes over a `local/`
/// lanspread did not install.
pub(crate) async fn install_with(sh: Arc<Shared>, id: GameId, adopt: bool) {
    let (downloaded, installed) = {
        let st = sh.st();
        let g = st.db.local_game(&id);
        (g.is_some_and(|g| g.downloaded()), g.is_some_and(|g| g.installed))
    };
    if !downloaded {
        sh.emit(PeerEvent::InstallFailed { id, reason: "the game is not downloaded".into() });
        return;
    }
    let kind = if installed { OperationKind::Updating } else { OperationKind::Installing };
    if let Err(k) = sh.begin_operation(&id, kind) {
        sh.emit(PeerEvent::InstallFailed { id, reason: format!("another operation ({k:?}) is running on this game") });
        return;
    }
    sh.emit(PeerEvent::InstallBegin { id: id.clone(), update: installed });
    let events = sh.clone();
    let pid = id.clone();
    let progress = move |p: UnpackProgress| events.emit(PeerEvent::InstallProgress { id: pid.clone(), done: p.done, total: p.total });
    let result = txn::install(sh.fs(), sh.ports.unpacker.as_ref(), &id.root(), keep(&sh, adopt), &progress).await;
    let event = match result {
        Ok(outcome) => {
            report_kept(&sh, &id, outcome.kept);
            PeerEvent::InstallFinished { id: id.clone() }
        }
        Err(e) => PeerEvent::InstallFailed { id: id.clone(), reason: e.to_string() },
    };
    sh.finish_operation(&id, event).await;
}

/// Uninstalls a game (removes `local/` through the staging directory,
/// keeping the user's files); `adopt` takes over a `local/` lanspread did
/// not install.
pub(crate) async fn uninstall(sh: Arc<Shared>, id: GameId, adopt: bool) {
    let installed = sh.st().db.local_game(&id).is_some_and(|g| g.installed);
    if !installed {
        sh.emit(PeerEvent::UninstallFailed { id, reason: "the game is not installed".into() });
        return;
    }
    if let Err(k) = sh.begin_operation(&id, OperationKind::Uninstalling) {
        sh.emit(PeerEvent::UninstallFailed { id, reason: format!("another operation ({k:?}) is running on this game") });
        return;
    }
    sh.emit(PeerEvent::UninstallBegin(id.clone()));
    let event = match txn::uninstall(sh.fs().as_ref(), &id.root(), keep(&sh, adopt)).await {
        Ok(outcome) => {
            report_kept(&sh, &id, outcome.kept);
            PeerEvent::UninstallFinished(id.clone())
        }
        Err(e) => PeerEvent::UninstallFailed { id: id.clone(), reason: e.to_string() },
    };
    sh.finish_operation(&id, event).await;
}

/// Deletes the downloaded files of a game that is not installed.
pub(crate) async fn remove(sh: Arc<Shared>, id: GameId) {
    if let Err(k) = sh.begin_operation(&id, OperationKind::Removing) {
        sh.emit(PeerEvent::RemoveFailed { id, reason: format!("another operation ({k:?}) is running on this game") });
        return;
    }
    sh.emit(PeerEvent::RemoveBegin(id.clone()));
    let event = match txn::remove_downloaded(sh.fs().as_ref(), &sh.cfg.catalog, &id).await {
        Ok(()) => {
            sh.scanner.lock().await.index.forget(&id);
            PeerEvent::RemoveFinished(id.clone())
        }
        Err(e) => PeerEvent::RemoveFailed { id: id.clone(), reason: e.to_string() },
    };
    sh.finish_operation(&id, event).await;
}
