//! The work of install, update, uninstall and removal: one transaction
//! each, then the settle-scan; the peer machine publishes the result in
//! the order a UI can trust.

use super::ctx::{Ctx, Input};
use crate::progress::Progress;
use lanspread_core::game::GameId;
use lanspread_core::peer::{InstallReport, OpToken, Outcome, PeerEvent, RemoveError, UninstallReport};
use lanspread_core::txn;
use lanspread_ports::UnpackProgress;
use std::sync::Arc;
use tokio::sync::watch;

/// The options of an install or uninstall: the clock names the kept directory.
fn keep(ctx: &Ctx, adopt: bool) -> txn::KeepOptions {
    txn::KeepOptions { adopt, time: ctx.ports.clock.unix_seconds() }
}

/// Installs (or updates) a downloaded game.
pub(crate) async fn install(ctx: Arc<Ctx>, token: OpToken, id: GameId, adopt: bool, update: bool, progress: watch::Sender<Progress>) {
    let events = ctx.clone();
    let pid = id.clone();
    let on_progress = move |p: UnpackProgress| {
        progress.send_replace(Progress::of_install(p.done, p.total));
        events.emit(PeerEvent::InstallProgress { id: pid.clone(), done: p.done, total: p.total });
    };
    let result = txn::install(ctx.local.fs(), ctx.ports.unpacker.as_ref(), &id.root(), keep(&ctx, adopt), &on_progress).await;
    let outcome = Outcome::Installed(result.map(|o| InstallReport { update, kept: o.kept }).map_err(Into::into));
    settle(&ctx, token, &id, outcome).await;
}

/// Uninstalls a game (removes `local/` through the staging directory,
/// keeping the user's files).
pub(crate) async fn uninstall(ctx: Arc<Ctx>, token: OpToken, id: GameId, adopt: bool) {
    let result = txn::uninstall(ctx.local.fs().as_ref(), &id.root(), keep(&ctx, adopt)).await;
    let outcome = Outcome::Uninstalled(result.map(|o| UninstallReport { kept: o.kept }).map_err(Into::into));
    settle(&ctx, token, &id, outcome).await;
}

/// Deletes the downloaded files of a game that is not installed.
pub(crate) async fn remove(ctx: Arc<Ctx>, token: OpToken, id: GameId) {
    let result = txn::remove_downloaded(ctx.local.fs().as_ref(), &ctx.cfg.catalog, &id).await;
    if result.is_ok() {
        ctx.local.scanner.lock().await.index.forget(&id);
    }
    settle(&ctx, token, &id, Outcome::Removed(result.map_err(RemoveError::from))).await;
}

/// Rescans the game and hands the result to the driver.
pub(crate) async fn settle(ctx: &Ctx, token: OpToken, id: &GameId, outcome: Outcome) {
    let settled = ctx.local.rescan(id).await;
    ctx.tell(Input::Finished { token, settled, outcome });
}
