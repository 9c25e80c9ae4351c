//! The control channel on Unix: a socket file in a directory only this user
//! may enter (0700), the socket itself 0600, whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the control socket of one game directory is.
#[derive(Debug, Clone)]
pub struct Endpoint(PathBuf);

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.display().fmt(f)
    }
}

/// The socket of the directory whose key is `key`, in `dir` (the config
/// directory's `control/`).
pub fn endpoint(dir: &Path, key: &str) -> Endpoint {
    Endpoint(dir.join(key).with_extension("sock"))
}

/// What a bound endpoint leaves behind to clean up when it stops.
pub type Leftover = Option<PathBuf>;

/// Listens on `endpoint`. The caller holds the game directory's lock, so a
/// socket file already there is a dead peer's and is replaced.
pub fn bind(endpoint: &Endpoint) -> std::io::Result<(tokio::net::UnixListener, Leftover)> {
    let path = &endpoint.0;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, Some(path.clone())))
}

/// Connects to a running peer's socket.
pub async fn connect(endpoint: &Endpoint) -> std::io::Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(&endpoint.0).await
}
