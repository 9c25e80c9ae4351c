//! The discovery port: advertise ourselves, learn who else is on the LAN.

use crate::types::PeerId;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// What a peer announces (and what we learn of others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAdvert {
    /// The peer's identity.
    pub id: PeerId,
    /// Every address it can be reached at, all of which a caller may dial
    /// (IPv4 and IPv6, in no particular order). In an advert we receive, an
    /// IPv6 link-local address carries as scope id the index of the
    /// interface it was learned on (it cannot be dialed without one). In an
    /// advert we send, an unspecified address (`0.0.0.0`, `[::]`) stands for
    /// every address of this host, on its port.
    pub addrs: Vec<SocketAddr>,
    /// Its wire-protocol version.
    pub protocol_version: u32,
    /// Free-form extra properties (kept small: they travel in TXT records).
    pub meta: BTreeMap<String, String>,
}

/// A change in the set of discovered peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer appeared or changed its advert.
    Up(PeerAdvert),
    /// A peer announced it is leaving (or its records expired).
    Down(PeerId),
}

/// Discovery failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("discovery: {0}")]
pub struct DiscoveryError(pub String);

/// Peer discovery.
///
/// Contract: `next_event` never reports ourselves. Events about one peer are
/// delivered in order; the same `Up` may be repeated (callers deduplicate).
/// Blocking work (sockets, multicast) must not run on async worker threads.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Starts (or updates) advertising `me`.
    async fn advertise(&self, me: PeerAdvert) -> Result<(), DiscoveryError>;
    /// The next event; `None` after shutdown. Single consumer.
    async fn next_event(&self) -> Option<DiscoveryEvent>;
    /// Withdraws our advert and stops.
    async fn shutdown(&self);
}
