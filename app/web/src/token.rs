//! The secret that opens the UI: 32 random bytes, written once to a file
//! only its owner may read, compared in constant time.

use rand::RngCore;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// The UI's access token. Its [`Debug`](std::fmt::Debug) hides it, so it
/// never lands in a log by accident; [`Token::to_hex`] spells it out.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading, creating or protecting the file failed.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file holds something else than 64 hex digits.
    #[error("token file {path} does not hold a token (64 hex digits); delete it to make a new one")]
    Invalid {
        /// The file.
        path: PathBuf,
    },
}

impl Token {
    /// A new random token from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Token(bytes)
    }

    /// The token spelled by 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(Token(bytes))
    }

    /// The token as 64 hex digits (what the URL and the file carry).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `candidate` (hex, as a request carries it) is this token.
    /// The bytes are compared in constant time, so the answer's timing
    /// tells nothing about how much of a guess was right.
    pub fn matches(&self, candidate: &str) -> bool {
        Token::from_hex(candidate.trim()).is_some_and(|c| bool::from(self.0.ct_eq(&c.0)))
    }

    /// The token in `path`, or a new one written there (mode 0600 on Unix,
    /// its directory created if needed). An existing file that others may
    /// read is restricted to its owner.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let io_err = |source| TokenError::Io { path: path.to_owned(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                restrict(path).map_err(io_err)?;
                Token::from_hex(text.trim()).ok_or_else(|| TokenError::Invalid { path: path.to_owned() })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Token::create(path),
            Err(e) => Err(io_err(e)),
        }
    }

    fn create(path: &Path) -> Result<Self, TokenError> {
        let io_err = |source| TokenError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let token = Token::generate();
        let mut file = match create_private(path) {
            Ok(f) => f,
            // Another process made it in the meantime: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Token::load_or_create(path),
            Err(e) => return Err(io_err(e)),
        };
        file.write_all(format!("{}\n", token.to_hex()).as_bytes()).and_then(|()| file.sync_all()).map_err(io_err)?;
        Ok(token)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Creates `path`, failing if it exists (so no symlink or other file is
/// written through), readable by its owner only.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Takes group and other permissions away from an existing token file.
#[cfg(unix)]
fn restrict(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only() {
        let t = Token::generate();
        let hex = t.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(t.matches(&hex));
        assert!(t.matches(&hex.to_uppercase()), "hex digits are case-insensitive");
        assert!(!t.matches(&Token::generate().to_hex()));
        assert!(!t.matches(&hex[..62]), "a prefix is not the token");
        assert!(!t.matches(""));
        assert!(!t.matches(&format!("{}zz", &hex[..62])));
        assert_ne!(t, Token::generate(), "tokens are random");
        assert_eq!(format!("{t:?}"), "Token(..)", "Debug hides the secret");
    }

    #[test]
    fn the_file_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/lanspread/ui-token");
        let made = Token::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), made.to_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(Token::load_or_create(&path).unwrap(), made, "the same token on the next start");
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_token_file_is_restricted_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ui-token");
        let token = Token::generate();
        std::fs::write(&path, token.to_hex()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Token::load_or_create(&path).unwrap(), token);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_file_without_a_token_is_an_error_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ui-token");
        std::fs::write(&path, "not a token").unwrap();
        assert!(matches!(Token::load_or_create(&path), Err(TokenError::Invalid { .. })));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a token");
    }
}
