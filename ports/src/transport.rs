//! The transport port: authenticated, multiplexed connections between peers.
//!
//! Contract:
//! - An endpoint is listening from the moment the adapter constructs it
//!   ("listen"); [`Transport::accept`] yields incoming connections.
//! - Every connection is mutually authenticated: [`Connection::peer_id`] is
//!   the identity the remote proved (the SHA-256 of its certificate for the
//!   QUIC adapters). `connect` with `expected = Some(id)` fails with
//!   [`TransportError::IdentityMismatch`] if the remote proves another id.
//! - Streams are reliable, ordered byte streams. `read` returns `Ok(None)`
//!   at the clean end of the stream; a reset or a lost connection is an error.
//! - Bounded: adapters enforce a limit on concurrent incoming streams per
//!   connection, flow-control windows, and an idle timeout.
//! - Addresses: an endpoint bound to `[::]` takes IPv4 and IPv6 (dual
//!   stack) where the OS allows it. [`Connection::remote_addr`] reports an
//!   IPv4 peer as IPv4 (never as IPv4-mapped IPv6) and keeps the scope id
//!   of an IPv6 link-local address. `connect` to a link-local address needs
//!   its scope id (the interface index); an adapter that cannot reach such
//!   addresses fails at once with [`TransportError::Connect`], so a caller
//!   that tries several addresses of a peer moves on without waiting.

use crate::types::PeerId;
use async_trait::async_trait;
use bytes::Bytes;
use std::net::SocketAddr;

/// The exporter label every transport must support in
/// [`Connection::export_keying_material`] (the QUIC adapters can only
/// compute exporter values for labels known at handshake time).
pub const SESSION_EXPORTER_LABEL: &[u8] = b"EXPORTER-lanspread/1";

/// Transport failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Could not reach or handshake with the remote.
    #[error("connect to {addr} failed: {reason}")]
    Connect {
        /// Where we tried.
        addr: SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// The remote proved a different identity than expected.
    #[error("peer at {addr} presented identity {got}, expected {expected}")]
    IdentityMismatch {
        /// Where.
        addr: SocketAddr,
        /// Pinned identity.
        expected: PeerId,
        /// Identity actually presented.
        got: PeerId,
    },
    /// The connection ended (closed, reset, timed out).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The stream was reset or stopped by the remote.
    #[error("stream reset: {0}")]
    StreamReset(String),
    /// Local endpoint is shut down.
    #[error("transport closed")]
    Closed,
    /// Anything else.
    #[error("transport error: {0}")]
    Other(String),
}

/// Sending half of a bidirectional stream.
#[async_trait]
pub trait SendStream: Send + Sync {
    /// Sends all of `data` (buffers are moved, not copied, where possible).
    async fn write(&mut self, data: Bytes) -> Result<(), TransportError>;
    /// Ends the stream cleanly; the remote reads `None` after the last byte.
    async fn finish(&mut self) -> Result<(), TransportError>;
    /// Abandons the stream with an error code.
    fn reset(&mut self, code: u32);
}

/// Receiving half of a bidirectional stream.
#[async_trait]
pub trait RecvStream: Send + Sync {
    /// The next chunk of at most `max` bytes, or `None` at the clean end.
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, TransportError>;
    /// Tells the remote we will read no more.
    fn stop(&mut self, code: u32);
}

/// A bidirectional stream pair.
pub type BiStream = (Box<dyn SendStream>, Box<dyn RecvStream>);

/// One authenticated connection.
#[async_trait]
pub trait Connection: Send + Sync {
    /// The identity the remote proved.
    fn peer_id(&self) -> PeerId;
    /// The remote's address.
    fn remote_addr(&self) -> SocketAddr;
    /// Opens a new bidirectional stream.
    async fn open_bi(&self) -> Result<BiStream, TransportError>;
    /// Waits for the remote to open a stream; `Ok(None)` once the
    /// connection has been closed cleanly.
    async fn accept_bi(&self) -> Result<Option<BiStream>, TransportError>;
    /// 32 bytes of keying material bound to this TLS session (RFC 5705/8446
    /// exporter with `label`), identical on both ends. Used to bind
    /// application-level proofs to the session so they cannot be relayed.
    fn export_keying_material(&self, label: &[u8]) -> Result<[u8; 32], TransportError>;
    /// Closes the connection with an application code and reason.
    fn close(&self, code: u32, reason: &str);
}

/// A listening QUIC (or simulated) endpoint that can also dial out.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Our identity.
    fn local_id(&self) -> PeerId;
    /// The bound address.
    fn local_addr(&self) -> SocketAddr;
    /// The next incoming, authenticated connection; `None` after shutdown.
    async fn accept(&self) -> Option<Box<dyn Connection>>;
    /// Dials `addr`; if `expected` is given, the remote must prove that id.
    async fn connect(&self, addr: SocketAddr, expected: Option<PeerId>) -> Result<Box<dyn Connection>, TransportError>;
    /// Stops accepting and closes every connection.
    async fn shutdown(&self);
}
