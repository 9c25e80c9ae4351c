//! The local game monitor: watches the game directory and each game root
//! (non-recursively) and tells the driver which games changed; the peer
//! machine decides which of them to rescan (games an operation holds are
//! left to that operation).

use super::ctx::{Ctx, Input};
use lanspread_core::game::GameId;
use lanspread_ports::{RelPath, WatchEvent};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub(crate) async fn run(ctx: Arc<Ctx>, mut roots: watch::Receiver<Vec<GameId>>, mut game_dir: watch::Receiver<u64>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<WatchEvent>();
    let mut watched: BTreeSet<RelPath> = BTreeSet::new();
    let mut watchers = JoinSet::new();
    let mut stop = ctx.shutdown_signal();
    loop {
        let mut wanted = vec![RelPath::root()];
        wanted.extend(roots.borrow_and_update().iter().map(GameId::root));
        for dir in wanted {
            if watched.contains(&dir) {
                continue;
            }
            match ctx.local.fs().watch(&dir).await {
                Ok(mut w) => {
                    watched.insert(dir.clone());
                    let tx = tx.clone();
                    watchers.spawn(async move {
                        while let Some(ev) = w.next().await {
                            if tx.send(ev).is_err() {
                                break;
                            }
                        }
                        dir
                    });
                }
                Err(e) => tracing::debug!("watching {dir}: {e}"),
            }
        }
        let mut dirty = BTreeSet::new();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            changed = roots.changed() => {
                if changed.is_err() { break }
                continue;
            }
            changed = game_dir.changed() => {
                if changed.is_err() { break }
                // Another game directory: its watches replace the old ones.
                watchers.abort_all();
                watched.clear();
                continue;
            }
            ended = watchers.join_next(), if !watchers.is_empty() => {
                if let Some(Ok(dir)) = ended { watched.remove(&dir); }
                continue;
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                collect(&ctx, &ev, &mut dirty);
                // Coalesce a burst of events.
                ctx.ports.clock.sleep(ctx.cfg.watch_debounce).await;
                while let Ok(ev) = rx.try_recv() {
                    collect(&ctx, &ev, &mut dirty);
                }
            }
        }
        if !dirty.is_empty() {
            ctx.tell(Input::Dirty(dirty));
        }
    }
    watchers.abort_all();
}

/// The catalog game an event is about, if any.
fn collect(ctx: &Ctx, ev: &WatchEvent, dirty: &mut BTreeSet<GameId>) {
    let name = if ev.dir.is_root() { ev.name.as_deref() } else { ev.dir.components().next() };
    if let Some(entry) = name.and_then(|n| ctx.cfg.catalog.get_str(n)) {
        dirty.insert(entry.id.clone());
    }
}
