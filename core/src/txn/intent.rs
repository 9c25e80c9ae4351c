//! The intent log `.lanspread.json`: which transaction runs in a game root
//! and how far it got.
//!
//! It is written atomically (`.lanspread.json.tmp`, fsync, rename, fsync of
//! the root) before the transaction changes anything, rewritten when the
//! transaction crosses a phase that changes how recovery must treat the
//! root, and removed (then the root fsynced) as the very last step. What it
//! proves to recovery:
//!
//! | op | phase | proves |
//! |---|---|---|
//! | `download` | `parking` | data files are untouched; a `.version.ini.discarded` is the old sentinel, which may be restored |
//! | `download` | `writing` | the old sentinel is parked (durably); data files may be changed; a present `version.ini` can only be the newly committed one |
//! | `install`, `update` | `staging` | `.local.installing/` was created by us (the op refused to start if it existed); for `update`, `.local.backup/` is the previous `local/` |
//! | `uninstall` | `removing` | `.local.backup/` is the previous `local/` |
//! | `remove` | `removing` | the whole root may be deleted (a regular `version.ini` was found before starting) |

use serde::{Deserialize, Serialize};
use std::fmt;

/// Format number written in every intent.
pub const INTENT_FORMAT: u32 = 1;
/// Largest intent log we read.
pub const MAX_INTENT_LEN: u64 = 64 * 1024;

/// The operation an intent belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentOp {
    /// A download (sentinel transaction).
    Download,
    /// A first install.
    Install,
    /// An update of an installed game.
    Update,
    /// An uninstall.
    Uninstall,
    /// Removal of the downloaded files (the whole root).
    Remove,
}

impl fmt::Display for IntentOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IntentOp::Download => "download",
            IntentOp::Install => "install",
            IntentOp::Update => "update",
            IntentOp::Uninstall => "uninstall",
            IntentOp::Remove => "removal of downloaded files",
        })
    }
}

/// How far the operation got (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Download: parking the old sentinel; data untouched.
    Parking,
    /// Download: the old sentinel is parked; data is being written.
    Writing,
    /// Install/update: staging the new tree.
    Staging,
    /// Uninstall/remove: deleting.
    Removing,
}

/// The content of `.lanspread.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Always [`INTENT_FORMAT`].
    pub format: u32,
    /// The operation.
    pub op: IntentOp,
    /// Its phase.
    pub phase: Phase,
    /// For a download: the version being downloaded (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Intent {
    /// An intent of the current format.
    pub fn new(op: IntentOp, phase: Phase) -> Self {
        Intent { format: INTENT_FORMAT, op, phase, version: None }
    }

    /// Serialises (JSON, one line and a newline).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses; `Err` explains why a torn, empty or foreign log is unusable.
    pub fn decode(bytes: &[u8]) -> Result<Intent, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("empty".into());
        }
        let intent: Intent = serde_json::from_slice(bytes).map_err(|e| format!("not a valid intent: {e}"))?;
        if intent.format != INTENT_FORMAT {
            return Err(format!("unknown format {}", intent.format));
        }
        let ok = matches!(
            (intent.op, intent.phase),
            (IntentOp::Download, Phase::Parking | Phase::Writing)
                | (IntentOp::Install | IntentOp::Update, Phase::Staging)
                | (IntentOp::Uninstall | IntentOp::Remove, Phase::Removing)
        );
        if !ok {
            return Err(format!("phase {:?} does not belong to {}", intent.phase, intent.op));
        }
        Ok(intent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let mut i = Intent::new(IntentOp::Download, Phase::Writing);
        i.version = Some("1.2".into());
        let bytes = i.encode();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), "{\"format\":1,\"op\":\"download\",\"phase\":\"writing\",\"version\":\"1.2\"}\n");
        assert_eq!(Intent::decode(&bytes).unwrap(), i);
        let u = Intent::new(IntentOp::Uninstall, Phase::Removing);
        assert_eq!(Intent::decode(&u.encode()).unwrap(), u);
        // Torn at every length: never accepted.
        for n in 0..bytes.len() - 1 {
            assert!(Intent::decode(&bytes[..n]).is_err(), "{n}");
        }
        assert_eq!(Intent::decode(b"").unwrap_err(), "empty");
        assert_eq!(Intent::decode(b"\0\0\0").unwrap_err().split(':').next().unwrap(), "not a valid intent");
        assert!(Intent::decode(b"{\"format\":2,\"op\":\"install\",\"phase\":\"staging\"}").unwrap_err().contains("format"));
        assert!(Intent::decode(b"{\"format\":1,\"op\":\"install\",\"phase\":\"writing\"}").unwrap_err().contains("does not belong"));
        assert!(Intent::decode(b"{\"format\":1,\"op\":\"install\",\"phase\":\"staging\",\"x\":1}").is_err());
    }
}
