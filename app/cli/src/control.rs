//! Local control of a running `serve`: the HTTP API of `lanspread-web` on
//! a channel only this user can reach (a Unix socket in the config
//! directory, a named pipe on Windows), always on, so the other commands
//! can drive the peer that holds a game directory instead of being refused
//! (see `remote.rs` for their side). The channel is still behind the token.

use crate::ui::RunningUi;
use lanspread::Peer;
use lanspread_web::{Token, UiConfig};
use std::net::SocketAddr;
use std::path::Path;

#[cfg(unix)]
#[path = "control/unix.rs"]
mod channel;
#[cfg(windows)]
#[path = "control/windows.rs"]
mod channel;

pub use channel::{connect, Endpoint};

/// The `Host` the control channel answers to.
pub const HOST: &str = "localhost";

/// Where the control channel of the peer serving `games` (canonical) is:
/// named like its identity, so one directory has one channel.
pub fn endpoint(games: &Path) -> Endpoint {
    let key = lanspread::identity_dir_for(Path::new(""), games);
    channel::endpoint(&crate::setup::config_dir().join("control"), &key.to_string_lossy())
}

/// The control socket of a running peer, beside whichever directory the
/// peer holds.
pub struct Control {
    peer: Peer,
    token: Token,
    dirs: tokio::sync::watch::Receiver<Option<String>>,
    current: Option<RunningUi>,
}

impl Control {
    /// Opens the control socket of the directory `peer` holds now (so a
    /// command started after this returns reaches the peer).
    pub async fn start(peer: &Peer, token: Token) -> Control {
        let mut control = Control { peer: peer.clone(), token, dirs: peer.game_dir_watch(), current: None };
        control.open().await;
        control
    }

    async fn open(&mut self) {
        let dir = self.dirs.borrow_and_update().clone();
        self.current = match dir {
            Some(dir) => listen(&self.peer, Path::new(&dir), self.token.clone())
                .await
                .map_err(|e| eprintln!("lanspread: {e}; other lanspread commands cannot reach this one"))
                .ok(),
            None => None,
        };
    }

    /// Serves until `until` completes, moving the socket when the peer
    /// moves to another directory; then closes it.
    pub async fn serve_until(mut self, until: impl std::future::Future<Output = ()>) {
        tokio::pin!(until);
        loop {
            let moved = tokio::select! {
                () = &mut until => false,
                changed = self.dirs.changed() => changed.is_ok(),
            };
            if let Some(current) = self.current.take() {
                current.stop().await;
            }
            if !moved {
                return;
            }
            self.open().await;
        }
    }
}

/// Listens on the control channel of `games` (whose lock the peer holds)
/// and serves `peer`'s API there with `token`.
async fn listen(peer: &Peer, games: &Path, token: Token) -> Result<RunningUi, String> {
    let endpoint = endpoint(games);
    let (listener, leftover) = channel::bind(&endpoint).map_err(|e| format!("control channel {endpoint}: {e}"))?;
    // No TCP address: the Host allowed is `localhost`, the token the same.
    let mut cfg = UiConfig::new(token, SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.extra_hosts = vec![HOST.to_owned()];
    let router = lanspread_web::router(peer.clone(), cfg);
    Ok(RunningUi::spawn(listener, router, leftover))
}
