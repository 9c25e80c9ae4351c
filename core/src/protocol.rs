//! The wire protocol.
//!
//! Every request uses its own bidirectional stream:
//!
//! ```text
//! client → server:  HEADER  FRAME(Request)                      FIN
//! server → client:  HEADER  FRAME(Response)  [raw bytes...]     FIN
//! ```
//!
//! `HEADER` is the 4-byte magic `LNSP` followed by the protocol version as a
//! big-endian `u16`; it is version independent, so a peer speaking another
//! version gets a clear [`ProtocolError::VersionMismatch`] instead of a
//! decoding error or a hang. `FRAME` is a big-endian `u32` length followed by
//! that many bytes of postcard. Lengths are checked against a hard maximum
//! *before* anything is allocated. File content (`Response::Data`) follows
//! its frame unframed, exactly `len` bytes.
//!
//! Version 2 added [`Request::GetUnit`]: downloads ask for numbered units
//! that may span many small files ([`crate::units`]). The header makes a
//! peer of version 1 fail with a clear [`ProtocolError::VersionMismatch`] on
//! both sides; nothing of one version is ever decoded as the other.
//!
//! Version 4 added swarming: [`Request::Have`] asks a peer which units of a
//! version it holds verified (a peer still downloading serves exactly
//! those), answered with [`HaveNews`]: everything, or the units verified
//! since the asker's last answer, and a few other members of that swarm.
//! A server too busy to take a data request answers [`Response::Busy`]
//! with a retry-after instead of queueing it without bound, and one that
//! just sent a unit to another member of the swarm answers
//! [`Response::Elsewhere`] (the swarm passes it on).

use crate::game::{GameId, GameSummary, Hash, Manifest};
use crate::units::UnitIdx;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use lanspread_ports::path::RelPath;
use lanspread_ports::PeerId;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The protocol version spoken by this build (4: swarming, `Request::Have`
/// and `Response::Busy`).
pub const PROTOCOL_VERSION: u16 = 4;
/// Stream header magic.
pub const MAGIC: [u8; 4] = *b"LNSP";
/// Length of the stream header.
pub const HEADER_LEN: usize = 6;
/// Largest request frame accepted by a server.
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;
/// Largest response frame accepted by a client (manifests of big games).
pub const MAX_RESPONSE_FRAME: usize = 64 * 1024 * 1024;
/// Largest range one `GetGameFileChunk` may ask for.
pub const MAX_CHUNK_REQUEST: u64 = 16 * 1024 * 1024;
/// Most capabilities a Hello may list.
pub const MAX_CAPABILITIES: usize = 32;

/// Capability: chunk hashes in manifests (BLAKE3, [`crate::CHUNK_SIZE`]).
pub const CAP_VERIFIED_CHUNKS: &str = "verified-chunks/blake3-1m";
/// Capability: the LAN party key, as a SPAKE2 exchange bound to the TLS
/// session with key confirmation.
pub const CAP_PARTY_KEY: &str = "party-key/spake2-ed25519";
/// Most units one [`HaveNews`] lists (the asker asks again for the rest).
pub const MAX_HAVE_UNITS: usize = 8192;
/// Most swarm members one [`HaveNews`] names.
pub const MAX_HAVE_MEMBERS: usize = 16;

/// Largest SPAKE2 message a Hello may carry (an Ed25519 element and a side
/// byte are 33 bytes).
pub const MAX_PAKE_MESSAGE: usize = 64;

/// Errors of encoding, decoding or protocol flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The stream did not start with the lanspread magic.
    #[error("not a lanspread stream (bad magic)")]
    BadMagic,
    /// The other side speaks another protocol version.
    #[error("peer speaks lanspread protocol v{theirs}, this build speaks v{ours}; update one side")]
    VersionMismatch {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// A frame longer than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Limit.
        max: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a header or frame.
    #[error("stream ended early")]
    Truncated,
    /// Encoding failed (should not happen).
    #[error("encode failed: {0}")]
    Encode(String),
}

/// Introduction exchanged first on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version of the sender.
    pub version: u16,
    /// Identity of the sender (must equal the TLS-proven identity).
    pub peer_id: PeerId,
    /// Features the sender supports.
    pub capabilities: Vec<String>,
    /// Port the sender's server listens on (for peers learned by connection).
    pub listen_port: u16,
    /// The sender's SPAKE2 message of the party-key exchange (a server
    /// answers a client's with its own), when a key is set.
    pub pake: Option<Vec<u8>>,
    /// The server's key confirmation (a MAC under the exchanged key); the
    /// client confirms with `Request::Confirm`.
    pub party_proof: Option<[u8; 32]>,
}

/// Requests a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Introduction; answered with `Response::Hello`.
    Hello(Hello),
    /// Summaries of every downloaded catalog game.
    ListGames,
    /// Summary and manifest of one game.
    GetGame {
        /// The game.
        id: GameId,
    },
    /// A whole file of at most [`MAX_CHUNK_REQUEST`] bytes; answered with
    /// `Response::Data` and raw bytes (larger files are asked for in chunks).
    GetGameFileData {
        /// The game.
        id: GameId,
        /// File path within the game root (validated on decode).
        path: RelPath,
    },
    /// A byte range of a file; answered with `Response::Data` and raw bytes.
    GetGameFileChunk {
        /// The game.
        id: GameId,
        /// File path within the game root.
        path: RelPath,
        /// Start.
        offset: u64,
        /// Length (at most [`MAX_CHUNK_REQUEST`]).
        len: u64,
    },
    /// One unit of the game's unit layout ([`crate::units::UnitLayout`] of
    /// the manifest with `digest`): answered with `Response::Data` and the
    /// unit's pieces back to back. A server whose manifest has another
    /// digest answers `UnknownGame`, so the numbering cannot be misread.
    GetUnit {
        /// The game.
        id: GameId,
        /// [`Manifest::digest`] of the manifest the unit belongs to.
        digest: Hash,
        /// The unit.
        unit: UnitIdx,
    },
    /// Which units of the version with `digest` the server holds verified:
    /// the asker is downloading it. Answered with `Response::Have`, at once
    /// when there is news since `since` (the count of logged units the
    /// asker already knows), else when news comes or after a short wait
    /// (a long poll, so units are announced as they are verified without
    /// anybody polling fast). `UnknownGame` when the server holds none of it.
    Have {
        /// The game.
        id: GameId,
        /// [`Manifest::digest`] of the version.
        digest: Hash,
        /// Units of the server's log the asker already knows.
        since: u32,
    },
    /// Liveness probe.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// The client's key confirmation of the party-key exchange begun in
    /// `Hello`; answered with `Response::Confirmed`.
    Confirm {
        /// MAC under the exchanged key.
        proof: [u8; 32],
    },
}

/// Manifest and summary of one game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameDetails {
    /// Summary.
    pub summary: GameSummary,
    /// Manifest.
    pub manifest: Manifest,
}

/// Error codes a server may answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Protocol version mismatch.
    VersionMismatch,
    /// Not a catalog game, or not downloaded here.
    UnknownGame,
    /// The path is not in the game's manifest.
    NotInManifest,
    /// Range outside the file or too large.
    BadRange,
    /// Malformed or disallowed request.
    BadRequest,
    /// The peer must say Hello (and prove the party key) first.
    Unauthorized,
    /// Too many requests in flight.
    Busy,
    /// The server failed to read its own data.
    Internal,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ErrorResponse {
    /// Code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Responses a server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Hello`.
    Hello(Hello),
    /// Answer to `ListGames`.
    Games(Vec<GameSummary>),
    /// Answer to `GetGame`.
    Game(Box<GameDetails>),
    /// `len` raw bytes follow this frame.
    Data {
        /// Exact byte count that follows.
        len: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The request's nonce.
        nonce: u64,
        /// Revision of the served library: peers re-list when it changes.
        library_rev: u64,
    },
    /// Failure.
    Error(ErrorResponse),
    /// Answer to `Confirm`: the connection is admitted to the party.
    Confirmed,
    /// Answer to `Have`.
    Have(HaveNews),
    /// The server is sending as much as it fairly can: ask again (here or
    /// elsewhere) after `retry_after_ms`. Not a failure of the data.
    Busy {
        /// Milliseconds to wait before asking this server again.
        retry_after_ms: u32,
    },
    /// This unit went to another member of the swarm moments ago: fetch it
    /// from them once they announce it, or from here after
    /// `retry_after_ms`. A seeder sends each unit about once, and the
    /// swarm passes it on.
    Elsewhere {
        /// Milliseconds before this server sends the unit after all.
        retry_after_ms: u32,
    },
}

/// What a server holds of one version (the answer to `Request::Have`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaveNews {
    /// Which log the units belong to: a new download attempt starts a new
    /// log, and an asker that sees another epoch forgets what it knew.
    pub epoch: u64,
    /// The units held.
    pub held: Held,
    /// Other peers that asked about this version recently (exchange of
    /// swarm members, so downloaders find each other without a tracker).
    pub members: Vec<PeerId>,
}

/// The units a server holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Held {
    /// Every unit: the version is committed here.
    All,
    /// Units of the server's log from position `from` on, in the order
    /// they were verified (the asker's next `since` is `from + units.len()`).
    Log {
        /// Position of the first listed unit in the log.
        from: u32,
        /// Newly verified units, at most [`MAX_HAVE_UNITS`].
        units: Vec<UnitIdx>,
    },
}

impl HaveNews {
    /// Checks the limits a peer-supplied answer must keep: at most
    /// [`MAX_HAVE_UNITS`] units, all below `unit_count`, and at most
    /// [`MAX_HAVE_MEMBERS`] members.
    pub fn check(&self, unit_count: usize) -> Result<(), ProtocolError> {
        if self.members.len() > MAX_HAVE_MEMBERS {
            return Err(ProtocolError::Malformed(format!("{} swarm members in one answer", self.members.len())));
        }
        if let Held::Log { units, .. } = &self.held {
            if units.len() > MAX_HAVE_UNITS {
                return Err(ProtocolError::Malformed(format!("{} units in one answer", units.len())));
            }
            if let Some(bad) = units.iter().find(|u| u.index() >= unit_count) {
                return Err(ProtocolError::Malformed(format!("{bad} is past the {unit_count} units of the manifest")));
            }
        }
        Ok(())
    }
}

impl Response {
    /// Shorthand for an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(ErrorResponse { code, message: message.into() })
    }
}

/// The stream header for our version.
pub fn header() -> [u8; HEADER_LEN] {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

/// Checks a received stream header.
pub fn check_header(h: &[u8]) -> Result<(), ProtocolError> {
    if h.len() < HEADER_LEN {
        return Err(ProtocolError::Truncated);
    }
    if h[..4] != MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    let theirs = u16::from_be_bytes([h[4], h[5]]);
    if theirs != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch { ours: PROTOCOL_VERSION, theirs });
    }
    Ok(())
}

/// Encodes one message as a frame (length prefix + postcard).
pub fn encode_frame<T: Serialize>(msg: &T, max: usize) -> Result<Bytes, ProtocolError> {
    let payload = postcard::to_stdvec(msg).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    if payload.len() > max {
        return Err(ProtocolError::FrameTooLarge { len: payload.len() as u64, max });
    }
    let mut out = BytesMut::with_capacity(4 + payload.len());
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(&payload);
    Ok(out.freeze())
}

/// Header followed by one frame: what starts every stream.
pub fn encode_stream_start<T: Serialize>(msg: &T, max: usize) -> Result<Bytes, ProtocolError> {
    let frame = encode_frame(msg, max)?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + frame.len());
    out.extend_from_slice(&header());
    out.extend_from_slice(&frame);
    Ok(out.freeze())
}

/// Decodes a postcard payload (no length prefix).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtocolError> {
    let _ = lanspread_ports::path::take_refused_path();
    postcard::from_bytes(payload).map_err(|e| match lanspread_ports::path::take_refused_path() {
        // postcard drops a path's own message: name the path from the side channel.
        Some(refused) => ProtocolError::Malformed(format!("a peer sent a path that is refused here: {refused}")),
        None => ProtocolError::Malformed(e.to_string()),
    })
}

/// Sans-IO decoder for the start of a stream: push received bytes, get the
/// decoded message once header and frame are complete. Never buffers more
/// than `HEADER_LEN + 4 + max` bytes; bytes after the frame (raw file
/// content) are returned to the caller untouched.
#[derive(Debug)]
pub struct StreamStartDecoder {
    buf: BytesMut,
    max: usize,
    header_ok: bool,
}

/// Outcome of [`StreamStartDecoder::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// More bytes needed.
    NeedMore,
    /// The message, and any bytes that followed it.
    Message(T, Bytes),
}

impl StreamStartDecoder {
    /// A decoder accepting frames up to `max` bytes.
    pub fn new(max: usize) -> Self {
        StreamStartDecoder { buf: BytesMut::new(), max, header_ok: false }
    }

    /// Feeds bytes; returns the message once complete.
    pub fn push<T: DeserializeOwned>(&mut self, data: &[u8]) -> Result<Decoded<T>, ProtocolError> {
        // Only accept as many bytes as can still belong to header + frame.
        self.buf.extend_from_slice(data);
        if !self.header_ok {
            if self.buf.len() < HEADER_LEN {
                // Reject a wrong magic as early as possible.
                let n = self.buf.len().min(4);
                if self.buf[..n] != MAGIC[..n] {
                    return Err(ProtocolError::BadMagic);
                }
                return Ok(Decoded::NeedMore);
            }
            check_header(&self.buf[..HEADER_LEN])?;
            self.buf.advance(HEADER_LEN);
            self.header_ok = true;
        }
        if self.buf.len() < 4 {
            return Ok(Decoded::NeedMore);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Err(ProtocolError::FrameTooLarge { len: len as u64, max: self.max });
        }
        if self.buf.len() < 4 + len {
            return Ok(Decoded::NeedMore);
        }
        self.buf.advance(4);
        let payload = self.buf.split_to(len);
        let msg = decode_payload(&payload)?;
        let rest = std::mem::take(&mut self.buf).freeze();
        Ok(Decoded::Message(msg, rest))
    }

    /// How many more bytes at most this decoder can still need, used to bound reads.
    pub fn max_needed(&self) -> usize {
        let base = if self.header_ok { 4 + self.max } else { HEADER_LEN + 4 + self.max };
        base.saturating_sub(self.buf.len()).max(1)
    }

    /// Called when the stream ended before a message was complete.
    pub fn finish(&self) -> ProtocolError {
        ProtocolError::Truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::{EntryKind, FileEntry, Version};
    use proptest::prelude::*;

    fn sample_manifest() -> Manifest {
        Manifest {
            version: Version::new("1.0").unwrap(),
            files: vec![FileEntry {
                path: RelPath::new("version.ini").unwrap(),
                kind: EntryKind::File,
                size: 3,
                chunks: vec![[7; 32]],
                hash: [1; 32],
            }],
        }
    }

    fn sample_summary() -> GameSummary {
        GameSummary {
            id: GameId::new("g").unwrap(),
            name: "G".into(),
            version: Version::new("2").unwrap(),
            size: 10,
            file_count: 1,
            manifest_digest: [5; 32],
        }
    }

    fn all_requests() -> Vec<Request> {
        let id = GameId::new("game").unwrap();
        let path = RelPath::new("data/a.pak").unwrap();
        vec![
            Request::Hello(Hello {
                version: PROTOCOL_VERSION,
                peer_id: PeerId([3; 32]),
                capabilities: vec![CAP_VERIFIED_CHUNKS.into()],
                listen_port: 4242,
                pake: Some(vec![7; 33]),
                party_proof: Some([9; 32]),
            }),
            Request::ListGames,
            Request::GetGame { id: id.clone() },
            Request::GetGameFileData { id: id.clone(), path: path.clone() },
            Request::GetGameFileChunk { id: id.clone(), path, offset: 1 << 40, len: 1 << 20 },
            Request::GetUnit { id, digest: [4; 32], unit: UnitIdx(u32::MAX) },
            Request::Have { id: GameId::new("game").unwrap(), digest: [6; 32], since: u32::MAX },
            Request::Ping { nonce: u64::MAX },
            Request::Confirm { proof: [5; 32] },
        ]
    }

    fn decode_all<T: DeserializeOwned>(bytes: &[u8], max: usize, step: usize) -> Result<(T, Bytes), ProtocolError> {
        let mut d = StreamStartDecoder::new(max);
        let mut consumed = 0;
        for piece in bytes.chunks(step.max(1)) {
            consumed += piece.len();
            if let Decoded::Message(m, rest) = d.push::<T>(piece)? {
                let mut all = rest.to_vec();
                all.extend_from_slice(&bytes[consumed..]);
                return Ok((m, Bytes::from(all)));
            }
        }
        Err(d.finish())
    }

    #[test]
    fn every_request_and_response_round_trips() {
        for r in all_requests() {
            let bytes = encode_stream_start(&r, MAX_REQUEST_FRAME).unwrap();
            assert_eq!(decode_all::<Request>(&bytes, MAX_REQUEST_FRAME, 3).unwrap().0, r);
        }
        let summary = sample_summary();
        let responses = vec![
            Response::Games(vec![summary.clone()]),
            Response::Game(Box::new(GameDetails { summary, manifest: sample_manifest() })),
            Response::Data { len: 12 },
            Response::Pong { nonce: 1, library_rev: 7 },
            Response::Confirmed,
            Response::Busy { retry_after_ms: 250 },
            Response::Elsewhere { retry_after_ms: 40 },
            Response::Have(HaveNews { epoch: 9, held: Held::All, members: vec![PeerId([1; 32])] }),
            Response::Have(HaveNews { epoch: 1, held: Held::Log { from: 3, units: vec![UnitIdx(7), UnitIdx(0)] }, members: vec![] }),
            Response::error(ErrorCode::NotInManifest, "nope"),
        ];
        for r in responses {
            let mut bytes = encode_stream_start(&r, MAX_RESPONSE_FRAME).unwrap().to_vec();
            bytes.extend_from_slice(b"raw tail");
            let (m, rest) = decode_all::<Response>(&bytes, MAX_RESPONSE_FRAME, 7).unwrap();
            assert_eq!(m, r);
            assert_eq!(&rest[..], b"raw tail");
        }
    }

    #[test]
    fn other_version_gets_a_clear_error() {
        let mut bytes = encode_stream_start(&Request::ListGames, MAX_REQUEST_FRAME).unwrap().to_vec();
        bytes[5] = bytes[5].wrapping_add(1);
        let err = decode_all::<Request>(&bytes, MAX_REQUEST_FRAME, 64).unwrap_err();
        assert!(matches!(err, ProtocolError::VersionMismatch { .. }));
        assert!(err.to_string().contains("protocol v"));
        assert_eq!(decode_all::<Request>(b"HTTP/1.1 200", 100, 1).unwrap_err(), ProtocolError::BadMagic);
    }

    #[test]
    fn huge_length_prefix_is_rejected_before_allocating() {
        let mut bytes = header().to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = decode_all::<Request>(&bytes, MAX_REQUEST_FRAME, 64).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }));
    }

    #[test]
    fn hostile_paths_fail_to_decode() {
        let good = Request::GetGameFileData { id: GameId::new("g").unwrap(), path: RelPath::new("aa/bb").unwrap() };
        let mut bytes = encode_stream_start(&good, MAX_REQUEST_FRAME).unwrap().to_vec();
        let n = bytes.len();
        bytes[n - 5..].copy_from_slice(b"../..");
        assert!(matches!(decode_all::<Request>(&bytes, MAX_REQUEST_FRAME, 64), Err(ProtocolError::Malformed(_))));
    }

    /// A manifest from an older or hostile peer that names a file some
    /// platform cannot hold fails to decode, before anything is planned or
    /// written, and the error names the file.
    #[test]
    fn a_manifest_naming_a_file_windows_refuses_fails_to_decode_and_names_it() {
        let summary = sample_summary();
        let mut manifest = sample_manifest();
        manifest.files[0].path = RelPath::new("data/whatX.txt").unwrap();
        let answer = Response::Game(Box::new(GameDetails { summary, manifest }));
        let mut bytes = encode_stream_start(&answer, MAX_RESPONSE_FRAME).unwrap().to_vec();
        let at = bytes.windows(5).position(|w| w == b"whatX").unwrap() + 4;
        for bad in [b'?', b'<', b'|', b'*', b'"'] {
            bytes[at] = bad;
            let err = decode_all::<Response>(&bytes, MAX_RESPONSE_FRAME, 64).unwrap_err();
            assert!(matches!(&err, ProtocolError::Malformed(m) if m.contains("data/what")), "{err:?}");
        }
    }

    #[test]
    fn have_news_beyond_its_limits_is_refused() {
        let log = |units: Vec<UnitIdx>| HaveNews { epoch: 1, held: Held::Log { from: 0, units }, members: vec![] };
        assert!(log(vec![UnitIdx(0), UnitIdx(9)]).check(10).is_ok());
        assert!(log(vec![UnitIdx(10)]).check(10).is_err(), "a unit past the manifest");
        assert!(log(vec![UnitIdx(0); MAX_HAVE_UNITS + 1]).check(10).is_err(), "too many units");
        let crowd = HaveNews { epoch: 1, held: Held::All, members: vec![PeerId([0; 32]); MAX_HAVE_MEMBERS + 1] };
        assert!(crowd.check(10).is_err(), "too many members");
    }

    proptest! {
        #[test]
        fn have_news_round_trips(epoch in any::<u64>(), from in any::<u32>(), units in proptest::collection::vec(any::<u32>(), 0..64)) {
            let news = HaveNews { epoch, held: Held::Log { from, units: units.into_iter().map(UnitIdx).collect() }, members: vec![PeerId([2; 32])] };
            let r = Response::Have(news);
            let bytes = encode_stream_start(&r, MAX_RESPONSE_FRAME).unwrap();
            prop_assert_eq!(decode_all::<Response>(&bytes, MAX_RESPONSE_FRAME, 5).unwrap().0, r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), step in 1usize..64) {
            let mut bytes = header().to_vec();
            bytes.extend_from_slice(&data);
            let _ = decode_all::<Request>(&bytes, MAX_REQUEST_FRAME, step);
            let _ = decode_all::<Response>(&bytes, MAX_RESPONSE_FRAME, step);
            let _ = decode_all::<Request>(&data, MAX_REQUEST_FRAME, step);
        }

        #[test]
        fn framed_garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = header().to_vec();
            bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&payload);
            let _ = decode_all::<Request>(&bytes, MAX_REQUEST_FRAME, 13);
            let _ = decode_all::<Response>(&bytes, MAX_RESPONSE_FRAME, 13);
        }

        #[test]
        fn chunk_requests_round_trip(offset in any::<u64>(), len in any::<u64>(), nonce in any::<u64>(), step in 1usize..32) {
            for r in [
                Request::GetGameFileChunk { id: GameId::new("x").unwrap(), path: RelPath::new("f").unwrap(), offset, len },
                Request::Ping { nonce },
            ] {
                let bytes = encode_stream_start(&r, MAX_REQUEST_FRAME).unwrap();
                prop_assert_eq!(decode_all::<Request>(&bytes, MAX_REQUEST_FRAME, step).unwrap().0, r);
            }
        }
    }
}
