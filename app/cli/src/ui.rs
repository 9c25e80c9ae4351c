//! `--ui ADDR`: the web UI and HTTP control API (crate `lanspread-web`)
//! beside a running peer.

use crate::output::say;
use lanspread::Peer;
use lanspread_web::{Token, UiConfig};
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// Where and how to serve the web UI.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UiArgs {
    /// Serve the web UI and HTTP API here (e.g. 127.0.0.1:7878); prints the URL to open.
    #[arg(long, value_name = "ADDR")]
    pub ui: Option<SocketAddr>,
    /// Allow --ui on an address other hosts can reach (the page and its token then cross the LAN as plain HTTP).
    #[arg(long, requires = "ui")]
    pub ui_public: bool,
}

/// A running UI (or control socket); [`RunningUi::stop`] ends it.
pub struct RunningUi {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// A file of the control channel to remove once stopped.
    socket: Option<std::path::PathBuf>,
}

impl RunningUi {
    /// Serves `router` on `listener` until stopped.
    pub fn spawn<L>(listener: L, router: axum::Router, socket: Option<std::path::PathBuf>) -> Self
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(lanspread_web::serve(listener, router, async move {
            let _ = stopped.await;
        }));
        RunningUi { stop, task, socket }
    }

    /// Ends open event streams and waits for the server to stop.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(e)) => eprintln!("lanspread: web UI: {e}"),
            Err(e) => eprintln!("lanspread: web UI: {e}"),
            Ok(Ok(())) => {}
        }
        if let Some(socket) = self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// Refuses a UI address that other hosts can reach unless `--ui-public`
/// says so, and one that names no host a browser could use.
fn check_addr(addr: SocketAddr, public: bool) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !public {
        return Err(format!("--ui {addr} is reachable from other hosts: add --ui-public to allow it, or use 127.0.0.1"));
    }
    if addr.ip().is_unspecified() {
        return Err(format!("--ui {addr}: with --ui-public, give the address other hosts reach this machine at"));
    }
    eprintln!("lanspread: warning: the web UI on {addr} is plain HTTP: the page and its token cross the LAN unencrypted");
    Ok(())
}

/// Starts the UI of `peer` when `--ui` was given, with `token`, and prints
/// the one line with the URL to open.
pub async fn start(peer: &Peer, args: &UiArgs, token: Token) -> Result<Option<RunningUi>, String> {
    let Some(addr) = args.ui else { return Ok(None) };
    check_addr(addr, args.ui_public)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("web UI on {addr}: {e}"))?;
    let listen = listener.local_addr().map_err(|e| format!("web UI on {addr}: {e}"))?;
    let cfg = UiConfig::new(token, listen);
    say!("web UI: open {}", cfg.url());
    let router = lanspread_web::router(peer.clone(), cfg);
    Ok(Some(RunningUi::spawn(listener, router, None)))
}

/// The token of this user's UIs, kept (0600) in the config directory so a
/// bookmarked URL keeps working.
pub fn saved_token() -> Result<Token, String> {
    let path = crate::setup::config_dir().join("ui-token");
    Token::load_or_create(&path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_allowed_without_ui_public() {
        assert!(check_addr("127.0.0.1:7878".parse().unwrap(), false).is_ok());
        assert!(check_addr("[::1]:7878".parse().unwrap(), false).is_ok());
        let refused = check_addr("10.0.0.2:7878".parse().unwrap(), false).unwrap_err();
        assert!(refused.contains("--ui-public"), "{refused}");
        assert!(check_addr("10.0.0.2:7878".parse().unwrap(), true).is_ok());
        assert!(check_addr("0.0.0.0:7878".parse().unwrap(), true).unwrap_err().contains("give the address"));
    }
}
