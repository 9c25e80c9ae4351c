//! Local control of a running `serve`: the HTTP API of `lanspread-web` on
//! a Unix socket in the config directory, always on, so the other commands
//! can drive the peer that holds a game directory instead of being refused
//! (see `remote.rs` for their side).

use crate::ui::RunningUi;
use lanspread::Peer;
use lanspread_web::{Token, UiConfig};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The `Host` the control socket answers to.
pub const HOST: &str = "localhost";

/// Where the control socket of the peer serving `games` (canonical) is:
/// named like its identity, so one directory has one socket.
pub fn socket_path(games: &Path) -> PathBuf {
    let key = lanspread::identity_dir_for(Path::new(""), games);
    crate::setup::config_dir().join("control").join(key).with_extension("sock")
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

/// Listens on the control socket of `games` (whose lock the peer holds)
/// and serves `peer`'s API there with `token`.
async fn listen(peer: &Peer, games: &Path, token: Token) -> Result<RunningUi, String> {
    let path = socket_path(games);
    let fail = |e: std::io::Error| format!("control socket {}: {e}", path.display());
    let dir = path.parent().ok_or_else(|| format!("control socket {}: no directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(fail)?;
    // Only this user may reach the socket, whatever the umask.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    // We hold the directory's lock: a socket left here is a dead peer's.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(fail)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    // No TCP address: the Host allowed is `localhost`, the token the same.
    let mut cfg = UiConfig::new(token, SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.extra_hosts = vec![HOST.to_owned()];
    let router = lanspread_web::router(peer.clone(), cfg);
    Ok(RunningUi::spawn(listener, router, Some(path)))
}
