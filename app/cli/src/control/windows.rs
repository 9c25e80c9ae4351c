//! The control channel on Windows: a named pipe that only this user can
//! open, refusing remote clients.
//!
//! Pipe names are one namespace for every user of the machine, so a fixed
//! name could be created first by another user, who would then receive the
//! token of every command that connects to it. The pipe's name therefore
//! carries 128 random bits, drawn by each `serve` and written to a file in
//! this user's profile (`%APPDATA%`, which other users cannot read); a
//! command reads the name from there. The first instance is created with
//! `FILE_FLAG_FIRST_PIPE_INSTANCE`, so `serve` fails loudly rather than
//! share a name, and `PIPE_REJECT_REMOTE_CLIENTS` (interprocess sets both).

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::{Listener as _, Stream as _};
use interprocess::local_socket::{GenericNamespaced, ListenerOptions, ToNsName};
use interprocess::os::windows::local_socket::ListenerOptionsExt;
use interprocess::os::windows::security_descriptor::SecurityDescriptor;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The pipe's security descriptor, in the security descriptor string
/// format: a protected DACL (`P`: nothing inherited) with one entry that
/// allows everything (`GA`) to the pipe's owner (`OW`, the OWNER RIGHTS
/// SID), which is the user who runs `serve`. Everyone else, other users,
/// services and the network included, is denied by the DACL's silence.
pub const SDDL: &str = "D:P(A;;GA;;;OW)";

/// Where the name of one game directory's pipe is kept.
#[derive(Debug, Clone)]
pub struct Endpoint(PathBuf);

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match read_name(self) {
            Ok(name) => write!(f, r"\\.\pipe\{name}"),
            Err(_) => write!(f, "the pipe named in {}", self.0.display()),
        }
    }
}

/// The pipe of the directory whose key is `key`, named in `dir` (the config
/// directory's `control/`).
pub fn endpoint(dir: &Path, key: &str) -> Endpoint {
    Endpoint(dir.join(key).with_extension("pipe"))
}

/// What a bound endpoint leaves behind to clean up when it stops: the file
/// that names the pipe (the pipe itself goes with its last handle).
pub type Leftover = Option<PathBuf>;

/// The security descriptor of every instance of the pipe.
pub fn security_descriptor() -> io::Result<SecurityDescriptor> {
    let wide = widestring::U16CString::from_str(SDDL).map_err(io::Error::other)?;
    SecurityDescriptor::deserialize(&wide)
}

/// Creates a pipe with a fresh random name and records the name where this
/// user's commands find it.
pub fn bind(endpoint: &Endpoint) -> io::Result<(PipeListener, Leftover)> {
    let name = format!("lanspread-control-{:032x}", rand::random::<u128>());
    let listener = ListenerOptions::new()
        .name(name.as_str().to_ns_name::<GenericNamespaced>()?)
        .security_descriptor(security_descriptor()?)
        .create_tokio()?;
    if let Some(dir) = endpoint.0.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole, then renamed: a command never reads half a name.
    let tmp = endpoint.0.with_extension("pipe.tmp");
    std::fs::write(&tmp, &name)?;
    std::fs::rename(&tmp, &endpoint.0)?;
    Ok((PipeListener { inner: listener, name }, Some(endpoint.0.clone())))
}

fn read_name(endpoint: &Endpoint) -> io::Result<String> {
    let name = std::fs::read_to_string(&endpoint.0)?;
    let valid = name.len() <= 64 && name.starts_with("lanspread-control-") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(name)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a pipe name", endpoint.0.display())))
    }
}

/// Connects to a running peer's pipe.
pub async fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
    let name = read_name(endpoint)?;
    Stream::connect(name.as_str().to_ns_name::<GenericNamespaced>()?).await
}

/// A pipe server as an [`axum::serve::Listener`].
pub struct PipeListener {
    inner: Listener,
    name: String,
}

impl axum::serve::Listener for PipeListener {
    type Io = Stream;
    type Addr = String;

    async fn accept(&mut self) -> (Stream, String) {
        loop {
            match self.inner.accept().await {
                Ok(stream) => return (stream, self.name.clone()),
                // A client that went away mid-connect, or no instance could
                // be made (out of handles): wait and keep serving.
                Err(e) => {
                    tracing::warn!("control pipe {}: {e}", self.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<String> {
        Ok(self.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interprocess::os::windows::security_descriptor::AsSecurityDescriptorExt;

    /// `DACL_SECURITY_INFORMATION`: serialize only the DACL.
    const DACL: u32 = 4;

    #[test]
    fn the_pipe_admits_its_owner_alone() {
        let sd = security_descriptor().unwrap();
        let text = sd.serialize(DACL, |s| s.to_string_lossy()).unwrap();
        assert_eq!(text, SDDL, "a protected DACL with one entry: all rights to the owner");
    }

    #[tokio::test]
    async fn a_command_reaches_the_pipe_named_in_the_profile_and_nothing_else() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let ep = endpoint(dir.path(), "0123456789abcdef");
        let (mut listener, leftover) = bind(&ep).unwrap();
        assert_eq!(leftover.as_deref(), Some(ep.0.as_path()));
        let name = read_name(&ep).unwrap();
        assert_eq!(name.len(), "lanspread-control-".len() + 32);
        let server = tokio::spawn(async move {
            let (mut s, _) = axum::serve::Listener::accept(&mut listener).await;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let mut c = connect(&ep).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.await.unwrap();

        // A file that names something else is refused, not followed.
        std::fs::write(&ep.0, r"..\..\evil").unwrap();
        assert_eq!(connect(&ep).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
