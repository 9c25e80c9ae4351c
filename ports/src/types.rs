//! Plain identifiers shared by several ports.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A peer's identity: the SHA-256 fingerprint of its TLS certificate
/// (or, in simulation, 32 seeded random bytes).
///
/// Serialised as 64 hex digits in human-readable formats (JSON), as 32 raw
/// bytes otherwise (postcard).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub [u8; 32]);

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            PeerId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("a peer id is 64 hex digits"))
        } else {
            <[u8; 32]>::deserialize(d).map(PeerId)
        }
    }
}

impl PeerId {
    /// Lower-case hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(PeerId(out))
    }

    /// A short form (first 8 hex digits) for logs and progress lines.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}
