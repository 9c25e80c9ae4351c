//! The simulated network: [`Transport`] and [`Discovery`] in one process.
//!
//! A [`SimNet`] holds hosts (each with an address `10.0.0.N`, an uplink, a
//! downlink and a one-way access latency), the transports listening on them,
//! the live connections and the discovery adverts. Everything runs on tokio's
//! timers and is deterministic on a current-thread runtime with paused time:
//! no real sockets, no threads, no OS randomness, ordered maps only.
//!
//! # Model
//!
//! - **Latency.** The one-way latency between hosts A and B is
//!   `A.latency + B.latency` (each host's latency is its access link's). A
//!   connect costs one round trip (`2 ×` that) before it succeeds.
//! - **Bandwidth.** Each host has an uplink and a downlink, each a FIFO of
//!   reservations in virtual time shared by all of its streams. Writes are
//!   split into segments of at most [`NetParams::segment_size`] bytes. A
//!   segment of `n` bytes from A to B occupies each link for `n` / *that
//!   link's* rate (a fluid model, so a receiver's downlink is shared by
//!   several slower senders at once):
//!   `up_start = max(now, A.up_free)`, `A.up_free = up_start + n / A.up`;
//!   then, once the upload is (nearly) done — never booked ahead of time, so
//!   a slow sender's future bookings cannot block a fast sender —
//!   `down_start = max(up_end - n / B.down, B.down_free)`,
//!   `B.down_free = down_start + n / B.down`;
//!   `end = max(A.up_free, B.down_free)` — at least `n / min(A.up, B.down)`
//!   after the start. The segment becomes readable at B at
//!   `end + latency(A, B)`. The writer is held back until
//!   `end − send_ahead` ([`NetParams::send_ahead`], a small send buffer:
//!   waking up a little early keeps a busy link's reservations back to back
//!   although tokio's timer has millisecond granularity). So: k senders
//!   into one downlink get `min(Σ up, down)` together; one uplink feeding
//!   k receivers is shared FIFO among them.
//! - **Flow control.** At most [`NetParams::stream_window`] unread bytes per
//!   stream direction (the writer waits), and at most
//!   [`NetParams::max_concurrent_streams`] streams per connection opened by
//!   one side and not yet done at the other (unaccepted, or accepted and not
//!   both finished/reset and read-to-end/stopped/dropped): `open_bi` waits,
//!   like QUIC's stream credit.
//! - **Streams.** Ordered and reliable. A stream becomes acceptable one
//!   one-way latency after `open_bi`. `finish` reaches the reader after the
//!   last byte. `reset` / `stop` act at once: the other end's next read /
//!   write fails with [`TransportError::StreamReset`]. Dropping a send half
//!   that was neither finished nor reset **resets** it (code 0) — the app must
//!   call `finish`; dropping a receive half that was not read to the end
//!   stops it (code 0).
//! - **Connections.** Mutually authenticated: each end's `peer_id()` is the
//!   other transport's id, `remote_addr()` the other transport's address.
//!   `close` (or dropping the last handle of a side, connection and stream
//!   halves included) ends it at once for both ends: `accept_bi` returns
//!   `Ok(None)`, every stream operation fails with `ConnectionLost`. A *lost*
//!   connection (crash, partition, [`SimNet::drop_connections`]) fails
//!   everything, `accept_bi` included, with `ConnectionLost`. Data in flight
//!   is lost with the connection.
//! - **Connect failures.** No listener at the address, the target host
//!   crashed or partitioned from us: `Connect` error after
//!   [`NetParams::connect_timeout`]. A listener with another id than the
//!   expected one: `IdentityMismatch` after one round trip.
//! - **Discovery.** An advert is visible to every other live discovery on a
//!   host that is up and not cut off from the advertiser; visibility changes
//!   become `Up` / `Down` events [`NetParams::discovery_delay`] + one-way
//!   latency later (events already known when a discovery is created arrive
//!   at once). A partition withdraws adverts across the cut (`Down` on both
//!   sides) and `heal` announces them again (`Up`). Events for one receiver
//!   are delivered in order.
//! - **Faults.** [`SimNet::crash`], [`SimNet::restart`],
//!   [`SimNet::partition`] / [`SimNet::heal`], [`SimNet::drop_connections`],
//!   [`SimNet::set_bandwidth`], [`SimNet::set_latency`].
//! - **Link faults** (opt-in, [`NetParams::faults`]): jitter, reordering and
//!   loss with retransmission, drawn per packet from the seed; see
//!   [`LinkFaults`]. Off by default.
//!
//! Byte accounting ([`SimNet::bytes_sent`], [`SimNet::bytes_received`])
//! counts payload when a segment is put on the wire (reserved), once per
//! transmission.
//!
//! # Cost
//!
//! Registering a connection, opening a stream and sending a segment cost
//! O(log n) in the number of connections; a crash, a dropped host or a
//! transport shutdown touches only the connections of that host or
//! transport; an advert (or its withdrawal) updates each discovery's view
//! for that advert's id alone.

use crate::rng::SimRng;
use async_trait::async_trait;
use bytes::Bytes;
use lanspread_ports::{
    BiStream, Connection, Discovery, DiscoveryError, DiscoveryEvent, PeerAdvert, PeerId, RecvStream, SendStream, Transport, TransportError,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First port handed out for `transport(host, 0, id)`.
const FIRST_EPHEMERAL_PORT: u16 = 49152;
/// Longest single transmission time (keeps `Instant` arithmetic finite).
const MAX_TX_TIME: Duration = Duration::from_secs(1 << 30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits for `notified` (enabled before the caller checked its condition)
/// or until `deadline`.
async fn wait(notified: Pin<&mut Notified<'_>>, deadline: Option<Instant>) {
    match deadline {
        Some(d) => {
            tokio::select! {
                biased;
                _ = notified => {}
                _ = tokio::time::sleep_until(d) => {}
            }
        }
        None => notified.await,
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A host in the simulated network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(u32);

impl HostId {
    /// Position in the order of [`SimNet::add_host`] calls (0-based).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host{}", self.0)
    }
}

/// Link properties of a host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostConfig {
    /// Uplink capacity (bytes per second, > 0; `f64::INFINITY` allowed).
    pub up_bytes_per_sec: f64,
    /// Downlink capacity (bytes per second, > 0; `f64::INFINITY` allowed).
    pub down_bytes_per_sec: f64,
    /// One-way latency of the host's access link.
    pub latency: Duration,
}

impl HostConfig {
    /// Same capacity up and down.
    pub fn symmetric(bytes_per_sec: f64, latency: Duration) -> HostConfig {
        HostConfig { up_bytes_per_sec: bytes_per_sec, down_bytes_per_sec: bytes_per_sec, latency }
    }
}

impl Default for HostConfig {
    /// Gigabit Ethernet: 125 MB/s each way, 250 µs one-way.
    fn default() -> Self {
        HostConfig::symmetric(125_000_000.0, Duration::from_micros(250))
    }
}

/// Network-wide tuning.
#[derive(Clone, Debug, PartialEq)]
pub struct NetParams {
    /// How long a connect to an unreachable address takes to fail.
    pub connect_timeout: Duration,
    /// Streams one side may have open towards the other (QUIC stream credit).
    pub max_concurrent_streams: usize,
    /// Unread bytes allowed per stream direction before the writer waits.
    pub stream_window: usize,
    /// Largest segment a write is split into.
    pub segment_size: usize,
    /// How far ahead of the end of its transmission a writer is released.
    pub send_ahead: Duration,
    /// Base delay of discovery events (plus the one-way latency).
    pub discovery_delay: Duration,
    /// Labels `export_keying_material` accepts (`None`: any). The QUIC
    /// adapters accept only `TransportLimits::exporter_labels`; set this to
    /// the same list to catch an unregistered label in simulation.
    pub exporter_labels: Option<Vec<Vec<u8>>>,
    /// Random jitter, reordering and loss on every link, drawn from the
    /// seed (see [`LinkFaults`]). `None` (the default): links are exact,
    /// and nothing is drawn, so existing scenarios replay unchanged.
    pub faults: Option<LinkFaults>,
}

/// Random link impairments, opt-in through [`NetParams::faults`] (like
/// turmoil's message latency distribution and fail rate).
///
/// Every *packet* the network carries — a stream segment, the opening of a
/// stream, a FIN, each of the two flights of a connection handshake — has
/// its own fate, drawn from the network's seeded random stream (a fork of
/// it labelled `"link-faults"`, so drawing does not shift connection
/// secrets), in the order the simulation sends packets: one seed replays
/// the same faults. A fate adds to the packet's one-way latency:
///
/// - **jitter**: a uniform draw in `0..=jitter`;
/// - **reordering**: with probability `reorder`, `reorder_delay` more (the
///   packet is overtaken by packets sent after it);
/// - **loss**: with probability `loss`, the packet is lost and sent again
///   after `retransmit_delay` (a lost retransmission is lost again with the
///   same probability, at most 16 times). A lost segment occupies the
///   sender's uplink and the receiver's downlink once per transmission, and
///   [`SimNet::bytes_sent`] / [`SimNet::bytes_received`] count every
///   transmission.
///
/// Streams stay reliable and ordered, as QUIC's are: a late segment holds
/// back the rest of its stream (head-of-line blocking), but not other
/// streams, so jitter and reordering reorder data *across* streams and
/// connections only. Discovery is not affected.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkFaults {
    /// Largest extra delay of a packet (uniform in `0..=jitter`).
    pub jitter: Duration,
    /// Probability that a packet is held back by `reorder_delay` (0..=1).
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
    /// Probability that a transmission is lost (`0.0..1.0`).
    pub loss: f64,
    /// How long after a lost transmission it is sent again (a QUIC
    /// probe timeout: about an RTT plus the peer's ACK delay).
    pub retransmit_delay: Duration,
}

impl Default for LinkFaults {
    /// A mildly bad LAN: up to 1 ms jitter, 1% reordered by 2 ms, 0.5%
    /// lost and resent after 30 ms.
    fn default() -> Self {
        LinkFaults {
            jitter: Duration::from_millis(1),
            reorder: 0.01,
            reorder_delay: Duration::from_millis(2),
            loss: 0.005,
            retransmit_delay: Duration::from_millis(30),
        }
    }
}

/// Most transmissions of one packet under [`LinkFaults::loss`].
const MAX_TRANSMISSIONS: usize = 16;

/// What befalls one packet: extra one-way delay and how many times it is
/// transmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fate {
    extra: Duration,
    transmissions: usize,
}

impl Fate {
    const CLEAN: Fate = Fate { extra: Duration::ZERO, transmissions: 1 };
}

impl Default for NetParams {
    fn default() -> Self {
        NetParams {
            connect_timeout: Duration::from_secs(1),
            max_concurrent_streams: 64,
            stream_window: 16 * 1024 * 1024,
            segment_size: 64 * 1024,
            send_ahead: Duration::from_millis(5),
            discovery_delay: Duration::from_millis(50),
            exporter_labels: None,
            faults: None,
        }
    }
}

fn check_rate(what: &str, r: f64) {
    assert!(r > 0.0, "SimNet: {what} must be > 0 bytes/s (got {r})");
}

// ---------------------------------------------------------------------------
// Net state
// ---------------------------------------------------------------------------

struct Host {
    name: String,
    addr: IpAddr,
    cfg: HostConfig,
    up: bool,
    up_free: Option<Instant>,
    down_free: Option<Instant>,
    sent: u64,
    received: u64,
}

struct ConnEntry {
    hosts: [HostId; 2],
    transports: [u64; 2],
    conn: Weak<Conn>,
}

/// The live connections, indexed by host and by transport so that a crash,
/// a dropped host or a transport shutdown touches only its own connections.
///
/// A connection leaves the table when it ends ([`Conn::end`]); as a backstop
/// for entries whose connection is gone otherwise, the table is swept for
/// ended connections whenever it has doubled since the last sweep, so
/// registering a connection costs O(log n) amortised.
struct ConnTable {
    entries: BTreeMap<u64, ConnEntry>,
    by_host: BTreeMap<HostId, BTreeSet<u64>>,
    by_transport: BTreeMap<u64, BTreeSet<u64>>,
    /// The size at which the next sweep runs.
    sweep_at: usize,
}

/// The smallest table size that triggers a sweep.
const MIN_SWEEP: usize = 64;

impl ConnTable {
    fn new() -> ConnTable {
        ConnTable { entries: BTreeMap::new(), by_host: BTreeMap::new(), by_transport: BTreeMap::new(), sweep_at: MIN_SWEEP }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn dialed_by(&self, host: HostId) -> usize {
        let ids = self.by_host.get(&host).into_iter().flatten();
        ids.filter(|id| self.entries.get(id).is_some_and(|e| e.hosts[0] == host)).count()
    }

    fn insert(&mut self, id: u64, e: ConnEntry) {
        if self.entries.len() >= self.sweep_at {
            self.sweep();
            self.sweep_at = (2 * self.entries.len()).max(MIN_SWEEP);
        }
        for h in e.hosts {
            self.by_host.entry(h).or_default().insert(id);
        }
        for t in e.transports {
            self.by_transport.entry(t).or_default().insert(id);
        }
        self.entries.insert(id, e);
    }

    fn remove(&mut self, id: u64) -> Option<ConnEntry> {
        let e = self.entries.remove(&id)?;
        for h in e.hosts {
            if let Some(set) = self.by_host.get_mut(&h) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_host.remove(&h);
                }
            }
        }
        for t in e.transports {
            if let Some(set) = self.by_transport.get_mut(&t) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_transport.remove(&t);
                }
            }
        }
        Some(e)
    }

    /// Removes the connections `ids` (ascending) and returns those still alive.
    fn take(&mut self, ids: Vec<u64>) -> Vec<Arc<Conn>> {
        ids.into_iter().filter_map(|id| self.remove(id).and_then(|e| e.conn.upgrade())).collect()
    }

    /// Removes and returns the live connections of a host.
    fn take_host(&mut self, h: HostId) -> Vec<Arc<Conn>> {
        let ids = self.by_host.get(&h).map(|s| s.iter().copied().collect()).unwrap_or_default();
        self.take(ids)
    }

    /// Removes and returns the live connections of a transport.
    fn take_transport(&mut self, t: u64) -> Vec<Arc<Conn>> {
        let ids = self.by_transport.get(&t).map(|s| s.iter().copied().collect()).unwrap_or_default();
        self.take(ids)
    }

    /// Drops the entries of connections that ended or are gone.
    fn sweep(&mut self) {
        let dead: Vec<u64> =
            self.entries.iter().filter(|(_, e)| e.conn.upgrade().is_none_or(|c| c.is_closed())).map(|(id, _)| *id).collect();
        for id in dead {
            self.remove(id);
        }
    }
}

struct DiscEntry {
    shared: Arc<DiscShared>,
    advert: Option<PeerAdvert>,
}

type Cut = (BTreeSet<HostId>, BTreeSet<HostId>);

struct NetState {
    hosts: Vec<Host>,
    by_ip: BTreeMap<IpAddr, HostId>,
    /// Live (listening) transports by id.
    transports: BTreeMap<u64, Arc<TransportShared>>,
    listeners: BTreeMap<SocketAddr, u64>,
    conns: ConnTable,
    discs: BTreeMap<u64, DiscEntry>,
    /// The discoveries advertising each id (several while an old advert of
    /// a restarted peer lingers).
    adverts: BTreeMap<PeerId, BTreeSet<u64>>,
    cuts: Vec<Cut>,
    next_id: u64,
    next_port: u16,
}

impl NetState {
    /// A network with no host, transport or connection yet.
    fn empty() -> Self {
        NetState {
            hosts: Vec::new(),
            by_ip: BTreeMap::new(),
            transports: BTreeMap::new(),
            listeners: BTreeMap::new(),
            conns: ConnTable::new(),
            discs: BTreeMap::new(),
            adverts: BTreeMap::new(),
            cuts: Vec::new(),
            next_id: 0,
            next_port: FIRST_EPHEMERAL_PORT,
        }
    }
}

struct NetInner {
    params: NetParams,
    rng: SimRng,
    /// Draws the [`LinkFaults`] (used only when they are on).
    fault_rng: SimRng,
    state: Mutex<NetState>,
}

impl NetInner {
    /// Draws the fate of one packet (see [`LinkFaults`]); without faults,
    /// [`Fate::CLEAN`] and nothing is drawn.
    fn fate(&self) -> Fate {
        let Some(f) = &self.params.faults else { return Fate::CLEAN };
        let rng = &self.fault_rng;
        let mut fate = Fate::CLEAN;
        if !f.jitter.is_zero() {
            fate.extra += rng.range(Duration::ZERO..=f.jitter);
        }
        if rng.chance(f.reorder) {
            fate.extra += f.reorder_delay;
        }
        while fate.transmissions < MAX_TRANSMISSIONS && rng.chance(f.loss) {
            fate.transmissions += 1;
            fate.extra += f.retransmit_delay;
        }
        fate
    }
}

impl NetState {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn host(&self, h: HostId) -> &Host {
        self.hosts.get(h.index()).unwrap_or_else(|| panic!("SimNet: unknown {h}"))
    }

    fn host_mut(&mut self, h: HostId) -> &mut Host {
        self.hosts.get_mut(h.index()).unwrap_or_else(|| panic!("SimNet: unknown {h}"))
    }

    fn is_cut(&self, a: HostId, b: HostId) -> bool {
        self.cuts.iter().any(|(x, y)| (x.contains(&a) && y.contains(&b)) || (x.contains(&b) && y.contains(&a)))
    }

    fn latency(&self, a: HostId, b: HostId) -> Duration {
        self.host(a).cfg.latency + self.host(b).cfg.latency
    }

    fn free_port(&mut self, ip: IpAddr) -> u16 {
        loop {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { FIRST_EPHEMERAL_PORT } else { p + 1 };
            if !self.listeners.contains_key(&SocketAddr::new(ip, p)) {
                return p;
            }
        }
    }

    /// Removes a discovery (and its advert from the index).
    fn remove_disc(&mut self, id: u64) -> Option<DiscEntry> {
        let d = self.discs.remove(&id)?;
        if let Some(a) = &d.advert {
            self.unindex_advert(a.id, id);
        }
        Some(d)
    }

    fn unindex_advert(&mut self, pid: PeerId, disc: u64) {
        if let Some(set) = self.adverts.get_mut(&pid) {
            set.remove(&disc);
            if set.is_empty() {
                self.adverts.remove(&pid);
            }
        }
    }

    /// Sets a discovery's advert; returns the id it advertised before.
    fn set_advert(&mut self, disc: u64, advert: PeerAdvert) -> Option<Option<PeerId>> {
        let pid = advert.id;
        let entry = self.discs.get_mut(&disc)?;
        let old = entry.advert.replace(advert).map(|a| a.id);
        if let Some(o) = old {
            self.unindex_advert(o, disc);
        }
        self.adverts.entry(pid).or_default().insert(disc);
        Some(old)
    }

    /// Brings every discovery's view in line with who is visible to whom,
    /// queueing `Up` / `Down` events. `immediate`: a discovery just created,
    /// which learns the current state without delay.
    fn resync(&self, params: &NetParams, immediate: Option<u64>) {
        for (rid, r) in &self.discs {
            self.sync_view(params, *rid, r, None, immediate == Some(*rid));
        }
    }

    /// Like [`NetState::resync`] after a change that can only affect
    /// adverts of the ids `only` (one discovery advertised or left): each
    /// view is brought in line for those ids alone, O(log n) per discovery.
    /// Views are in line after every change, so the events are exactly
    /// those of a full resync.
    fn resync_ids(&self, params: &NetParams, only: &BTreeSet<PeerId>) {
        for (rid, r) in &self.discs {
            self.sync_view(params, *rid, r, Some(only), false);
        }
    }

    /// Brings the view of discovery `rid` in line, for the advert ids
    /// `only` (`None`: all). `immediate`: events are due at once.
    fn sync_view(&self, params: &NetParams, rid: u64, r: &DiscEntry, only: Option<&BTreeSet<PeerId>>, immediate: bool) {
        let now = Instant::now();
        let rhost = r.shared.host;
        let own = r.advert.as_ref().map(|a| a.id);
        let mut desired: BTreeMap<PeerId, (HostId, &PeerAdvert)> = BTreeMap::new();
        let mut want = |pid: &PeerId, sids: &BTreeSet<u64>| {
            if Some(*pid) == own {
                return;
            }
            // With two live adverts of one id, the newest wins.
            for sid in sids.iter().rev() {
                let Some(s) = self.discs.get(sid) else { continue };
                let (Some(adv), shost) = (s.advert.as_ref(), s.shared.host) else { continue };
                if *sid == rid || self.is_cut(rhost, shost) {
                    continue;
                }
                desired.insert(*pid, (shost, adv));
                break;
            }
        };
        match only {
            None => {
                for (pid, sids) in &self.adverts {
                    want(pid, sids);
                }
            }
            Some(ids) => {
                for pid in ids {
                    if let Some(sids) = self.adverts.get(pid) {
                        want(pid, sids);
                    }
                }
            }
        }
        let delay = |other: HostId| if immediate { Duration::ZERO } else { params.discovery_delay + self.latency(rhost, other) };
        let mut ds = lock(&r.shared.state);
        let mut changed = false;
        let gone: Vec<(PeerId, HostId)> = match only {
            None => ds.seen.iter().filter(|(id, _)| !desired.contains_key(id)).map(|(id, (h, _))| (*id, *h)).collect(),
            Some(ids) => {
                ids.iter().filter(|id| !desired.contains_key(id)).filter_map(|id| ds.seen.get(id).map(|(h, _)| (*id, *h))).collect()
            }
        };
        for (id, h) in gone {
            ds.seen.remove(&id);
            ds.push(now + delay(h), DiscoveryEvent::Down(id));
            changed = true;
        }
        for (id, (h, adv)) in desired {
            if ds.seen.get(&id).map(|(_, a)| a) != Some(adv) {
                ds.seen.insert(id, (h, adv.clone()));
                ds.push(now + delay(h), DiscoveryEvent::Up(adv.clone()));
                changed = true;
            }
        }
        drop(ds);
        if changed {
            r.shared.notify.notify_waiters();
        }
    }
}

// ---------------------------------------------------------------------------
// SimNet
// ---------------------------------------------------------------------------

/// The simulated network. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<NetInner>,
}

impl fmt::Debug for SimNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("SimNet")
            .field("hosts", &st.hosts.len())
            .field("transports", &st.transports.len())
            .field("connections", &st.conns.len())
            .field("discoveries", &st.discs.len())
            .finish_non_exhaustive()
    }
}

impl SimNet {
    /// An empty network with default [`NetParams`]. `rng` provides the
    /// per-connection secrets.
    pub fn new(rng: SimRng) -> SimNet {
        SimNet::with_params(rng, NetParams::default())
    }

    /// An empty network with explicit tuning.
    pub fn with_params(rng: SimRng, params: NetParams) -> SimNet {
        assert!(params.segment_size > 0, "SimNet: segment_size must be > 0");
        assert!(params.max_concurrent_streams > 0, "SimNet: max_concurrent_streams must be > 0");
        if let Some(f) = &params.faults {
            assert!((0.0..1.0).contains(&f.loss), "SimNet: LinkFaults::loss must be in 0..1 (got {})", f.loss);
            assert!((0.0..=1.0).contains(&f.reorder), "SimNet: LinkFaults::reorder must be in 0..=1 (got {})", f.reorder);
        }
        SimNet { inner: Arc::new(NetInner { fault_rng: rng.fork("link-faults"), params, rng, state: Mutex::new(NetState::empty()) }) }
    }

    fn state(&self) -> MutexGuard<'_, NetState> {
        lock(&self.inner.state)
    }

    /// The network's tuning.
    pub fn params(&self) -> &NetParams {
        &self.inner.params
    }

    /// Adds a host (up) with address `10.0.0.N`, N = 1, 2, ... in order.
    pub fn add_host(&self, name: &str, cfg: HostConfig) -> HostId {
        check_rate("up_bytes_per_sec", cfg.up_bytes_per_sec);
        check_rate("down_bytes_per_sec", cfg.down_bytes_per_sec);
        let mut st = self.state();
        let n = u32::try_from(st.hosts.len()).expect("too many hosts");
        let id = HostId(n);
        let k = n + 1;
        let addr = IpAddr::V4(Ipv4Addr::new(10, (k >> 16) as u8, (k >> 8) as u8, k as u8));
        st.hosts.push(Host { name: name.to_owned(), addr, cfg, up: true, up_free: None, down_free: None, sent: 0, received: 0 });
        st.by_ip.insert(addr, id);
        id
    }

    /// The host's IP address.
    pub fn host_addr(&self, host: HostId) -> IpAddr {
        self.state().host(host).addr
    }

    /// The name given to [`SimNet::add_host`].
    pub fn host_name(&self, host: HostId) -> String {
        self.state().host(host).name.clone()
    }

    /// The host owning `ip`, if any.
    pub fn host_of(&self, ip: IpAddr) -> Option<HostId> {
        self.state().by_ip.get(&ip).copied()
    }

    /// Every host, in creation order.
    pub fn hosts(&self) -> Vec<HostId> {
        (0..self.state().hosts.len() as u32).map(HostId).collect()
    }

    /// The host's current link properties.
    pub fn host_config(&self, host: HostId) -> HostConfig {
        self.state().host(host).cfg
    }

    /// Whether the host is up (not crashed).
    pub fn is_up(&self, host: HostId) -> bool {
        self.state().host(host).up
    }

    /// Payload bytes the host has put on the wire.
    pub fn bytes_sent(&self, host: HostId) -> u64 {
        self.state().host(host).sent
    }

    /// Payload bytes put on the wire towards the host.
    pub fn bytes_received(&self, host: HostId) -> u64 {
        self.state().host(host).received
    }

    /// Live connections (both ends count once).
    pub fn connection_count(&self) -> usize {
        let mut st = self.state();
        st.conns.sweep();
        st.conns.len()
    }

    /// Live connections `host` dialed (its outgoing ones).
    pub fn connections_dialed_by(&self, host: HostId) -> usize {
        let mut st = self.state();
        st.conns.sweep();
        st.conns.dialed_by(host)
    }

    /// A transport listening on `host:port` with identity `id` (`port` 0:
    /// an unused port from 49152 up). On a crashed host the transport is
    /// born shut down (`accept` → `None`, `connect` → `Closed`).
    ///
    /// Panics if a live transport already listens on that address.
    pub fn transport(&self, host: HostId, port: u16, id: PeerId) -> Arc<SimTransport> {
        let mut st = self.state();
        let (ip, up) = {
            let h = st.host(host);
            (h.addr, h.up)
        };
        let port = if port == 0 { st.free_port(ip) } else { port };
        let addr = SocketAddr::new(ip, port);
        let tid = st.id();
        let shared = Arc::new(TransportShared {
            id: tid,
            host,
            local_id: id,
            addr,
            state: Mutex::new(TransportState { incoming: VecDeque::new(), closed: !up }),
            notify: Notify::new(),
        });
        if up {
            assert!(!st.listeners.contains_key(&addr), "SimNet: {addr} is already in use by a live transport");
            st.listeners.insert(addr, tid);
            st.transports.insert(tid, Arc::clone(&shared));
        }
        drop(st);
        tracing::trace!(%addr, id = %id, "simnet: transport listening");
        Arc::new(SimTransport { net: self.clone(), shared })
    }

    /// A discovery endpoint on `host`. Adverts already visible are queued to
    /// it at once. On a crashed host it is born shut down.
    pub fn discovery(&self, host: HostId) -> Arc<SimDiscovery> {
        let mut st = self.state();
        let up = st.host(host).up;
        let id = st.id();
        let shared = Arc::new(DiscShared {
            id,
            host,
            state: Mutex::new(DiscState { queue: VecDeque::new(), seen: BTreeMap::new(), dead: !up }),
            notify: Notify::new(),
        });
        if up {
            let entry = DiscEntry { shared: Arc::clone(&shared), advert: None };
            // Without an advert yet, the newcomer changes no other view.
            st.sync_view(&self.inner.params, id, &entry, None, true);
            st.discs.insert(id, entry);
        }
        drop(st);
        Arc::new(SimDiscovery { net: self.clone(), shared })
    }

    /// Crashes `host`: all its connections are lost (both ends see
    /// `ConnectionLost`), its transports stop (`accept` → `None`), its
    /// discoveries end (`next_event` → `None`) and their adverts are
    /// withdrawn (`Down` to the others). No-op if already down.
    pub fn crash(&self, host: HostId) {
        let (transports, conns, discs) = {
            let mut st = self.state();
            let h = st.host_mut(host);
            if !h.up {
                return;
            }
            h.up = false;
            tracing::debug!(host = %h.name, "simnet: crash");
            let tids: Vec<u64> = st.transports.iter().filter(|(_, t)| t.host == host).map(|(id, _)| *id).collect();
            let mut transports = Vec::new();
            for tid in tids {
                if let Some(t) = st.transports.remove(&tid) {
                    st.listeners.remove(&t.addr);
                    transports.push(t);
                }
            }
            let conns = st.conns.take_host(host);
            let dids: Vec<u64> = st.discs.iter().filter(|(_, d)| d.shared.host == host).map(|(id, _)| *id).collect();
            let discs: Vec<Arc<DiscShared>> = dids.into_iter().filter_map(|id| st.remove_disc(id).map(|d| d.shared)).collect();
            st.resync(&self.inner.params, None);
            (transports, conns, discs)
        };
        let name = self.host_name(host);
        for t in transports {
            t.kill();
        }
        for c in conns {
            c.lose(format!("host {name} crashed"));
        }
        for d in discs {
            d.kill();
        }
    }

    /// Lets a crashed host come back: new transports and discoveries can be
    /// created on it (objects from before the crash stay dead).
    pub fn restart(&self, host: HostId) {
        let mut st = self.state();
        let h = st.host_mut(host);
        if !h.up {
            tracing::debug!(host = %h.name, "simnet: restart");
        }
        h.up = true;
    }

    /// Cuts the network between `a` and `b` (adding to existing cuts):
    /// connections across the cut are lost, connects across it fail, and
    /// adverts across it are withdrawn (`Down` both ways).
    pub fn partition(&self, a: &[HostId], b: &[HostId]) {
        let conns = {
            let mut st = self.state();
            let cut: Cut = (a.iter().copied().collect(), b.iter().copied().collect());
            tracing::debug!(a = ?cut.0, b = ?cut.1, "simnet: partition");
            st.cuts.push(cut);
            let conns = {
                let cuts = &st.cuts;
                let crossing = |x: HostId, y: HostId| {
                    cuts.iter().any(|(p, q)| (p.contains(&x) && q.contains(&y)) || (p.contains(&y) && q.contains(&x)))
                };
                let ids: Vec<u64> = st.conns.entries.iter().filter(|(_, e)| crossing(e.hosts[0], e.hosts[1])).map(|(id, _)| *id).collect();
                ids
            };
            let conns = st.conns.take(conns);
            st.resync(&self.inner.params, None);
            conns
        };
        for c in conns {
            c.lose("network partition".to_owned());
        }
    }

    /// Cuts `host` off from every other host.
    pub fn isolate(&self, host: HostId) {
        let others: Vec<HostId> = self.hosts().into_iter().filter(|h| *h != host).collect();
        self.partition(&[host], &others);
    }

    /// Removes every cut; adverts across former cuts are announced again.
    pub fn heal(&self) {
        let mut st = self.state();
        tracing::debug!("simnet: heal");
        st.cuts.clear();
        st.resync(&self.inner.params, None);
    }

    /// Loses every connection of `host` (both ends see `ConnectionLost`);
    /// the host stays up.
    pub fn drop_connections(&self, host: HostId) {
        let conns = self.state().conns.take_host(host);
        for c in conns {
            c.lose("connection dropped".to_owned());
        }
    }

    /// Changes the host's link capacities (applies to segments reserved from
    /// now on).
    pub fn set_bandwidth(&self, host: HostId, up_bytes_per_sec: f64, down_bytes_per_sec: f64) {
        check_rate("up_bytes_per_sec", up_bytes_per_sec);
        check_rate("down_bytes_per_sec", down_bytes_per_sec);
        let mut st = self.state();
        let h = st.host_mut(host);
        h.cfg.up_bytes_per_sec = up_bytes_per_sec;
        h.cfg.down_bytes_per_sec = down_bytes_per_sec;
    }

    /// Changes the host's one-way access latency (per-stream order is kept).
    pub fn set_latency(&self, host: HostId, latency: Duration) {
        self.state().host_mut(host).cfg.latency = latency;
    }

    /// One-way latency between two hosts (the sum of their latencies).
    pub fn latency(&self, a: HostId, b: HostId) -> Duration {
        self.state().latency(a, b)
    }

    /// The live listener at `addr` reachable from `from`, and the RTT.
    fn resolve(&self, from: HostId, addr: SocketAddr) -> Option<(Arc<TransportShared>, Duration)> {
        let st = self.state();
        if !st.host(from).up {
            return None;
        }
        let t = st.listeners.get(&addr).and_then(|id| st.transports.get(id))?;
        if !st.host(t.host).up || st.is_cut(from, t.host) {
            return None;
        }
        Some((Arc::clone(t), st.latency(from, t.host) * 2))
    }

    fn register_conn(&self, client: &TransportShared, server: &TransportShared) -> Arc<Conn> {
        let mut st = self.state();
        let id = st.id();
        let conn = Arc::new(Conn {
            id,
            net: Arc::downgrade(&self.inner),
            hosts: [client.host, server.host],
            transports: [client.id, server.id],
            ids: [client.local_id, server.local_id],
            addrs: [client.addr, server.addr],
            secret: self.inner.rng.bytes32(),
            params: self.inner.params.clone(),
            state: Mutex::new(ConnState {
                closed: None,
                streams: BTreeMap::new(),
                next_stream: 0,
                accept_queue: [VecDeque::new(), VecDeque::new()],
                incoming_open: [0, 0],
            }),
            notify: Notify::new(),
            closed_notify: Notify::new(),
        });
        st.conns
            .insert(id, ConnEntry { hosts: [client.host, server.host], transports: [client.id, server.id], conn: Arc::downgrade(&conn) });
        conn
    }

    /// Stops a transport: no more listening; with `close_conns`, its
    /// connections are closed (cleanly, code 0).
    fn stop_transport(&self, t: &Arc<TransportShared>, close_conns: bool) {
        let conns = {
            let mut st = self.state();
            if st.transports.remove(&t.id).is_some() {
                st.listeners.remove(&t.addr);
            }
            if close_conns {
                st.conns.take_transport(t.id)
            } else {
                Vec::new()
            }
        };
        t.kill();
        for c in conns {
            let side = usize::from(c.transports[0] != t.id);
            c.close_app(side, 0, "shutdown");
        }
    }

    fn withdraw(&self, d: &Arc<DiscShared>) {
        {
            let mut st = self.state();
            if let Some(gone) = st.remove_disc(d.id) {
                if let Some(a) = gone.advert {
                    st.resync_ids(&self.inner.params, &BTreeSet::from([a.id]));
                }
            }
        }
        d.kill();
    }
}

// ---------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------

struct TransportState {
    incoming: VecDeque<SimConnection>,
    closed: bool,
}

struct TransportShared {
    id: u64,
    host: HostId,
    local_id: PeerId,
    addr: SocketAddr,
    state: Mutex<TransportState>,
    notify: Notify,
}

impl TransportShared {
    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    fn kill(&self) {
        let pending = {
            let mut st = lock(&self.state);
            st.closed = true;
            std::mem::take(&mut st.incoming)
        };
        // Dropped outside the lock: each closes its connection.
        drop(pending);
        self.notify.notify_waiters();
    }

    fn push_incoming(&self, c: SimConnection) -> Result<(), SimConnection> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(c);
        }
        st.incoming.push_back(c);
        drop(st);
        self.notify.notify_waiters();
        Ok(())
    }
}

/// A simulated endpoint: listens on one address and dials out.
pub struct SimTransport {
    net: SimNet,
    shared: Arc<TransportShared>,
}

impl fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTransport")
            .field("local_id", &self.shared.local_id)
            .field("local_addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl SimTransport {
    /// The host the transport lives on.
    pub fn host(&self) -> HostId {
        self.shared.host
    }
}

impl Drop for SimTransport {
    fn drop(&mut self) {
        // Stop listening; established connections live on (as with quinn).
        self.net.stop_transport(&self.shared, false);
    }
}

#[async_trait]
impl Transport for SimTransport {
    fn local_id(&self) -> PeerId {
        self.shared.local_id
    }

    fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    async fn accept(&self) -> Option<Box<dyn Connection>> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.shared.state);
                if let Some(c) = st.incoming.pop_front() {
                    return Some(Box::new(c));
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    async fn connect(&self, addr: SocketAddr, expected: Option<PeerId>) -> Result<Box<dyn Connection>, TransportError> {
        if self.shared.is_closed() {
            return Err(TransportError::Closed);
        }
        let timeout = self.net.inner.params.connect_timeout;
        let started = Instant::now();
        let timed_out = |why: &str| TransportError::Connect { addr, reason: format!("timed out ({why})") };
        let Some((target, rtt)) = self.net.resolve(self.shared.host, addr) else {
            tokio::time::sleep_until(started + timeout).await;
            return Err(timed_out("no reachable listener"));
        };
        // Two flights (each way once), each with its own fate.
        let (a, b) = (self.net.inner.fate(), self.net.inner.fate());
        tokio::time::sleep(rtt + a.extra + b.extra).await;
        if self.shared.is_closed() {
            return Err(TransportError::Closed);
        }
        match self.net.resolve(self.shared.host, addr) {
            Some((t, _)) if t.id == target.id => {}
            _ => {
                tokio::time::sleep_until(started + timeout).await;
                return Err(timed_out("listener went away during the handshake"));
            }
        }
        if let Some(expected) = expected {
            if expected != target.local_id {
                return Err(TransportError::IdentityMismatch { addr, expected, got: target.local_id });
            }
        }
        let conn = self.net.register_conn(&self.shared, &target);
        let client = SimConnection::new(Arc::clone(&conn), 0);
        let server = SimConnection::new(conn, 1);
        if let Err(server) = target.push_incoming(server) {
            drop(server);
            return Err(TransportError::Connect { addr, reason: "listener shut down during the handshake".into() });
        }
        tracing::trace!(from = %self.shared.addr, to = %addr, "simnet: connected");
        Ok(Box::new(client))
    }

    async fn shutdown(&self) {
        self.net.stop_transport(&self.shared, true);
    }
}

// ---------------------------------------------------------------------------
// Connections and streams
// ---------------------------------------------------------------------------

enum Closed {
    App { by: usize, code: u32, reason: String },
    Lost(String),
}

impl Closed {
    fn error(&self, side: usize) -> TransportError {
        match self {
            Closed::App { by, .. } if *by == side => TransportError::ConnectionLost("closed locally".into()),
            Closed::App { code, reason, .. } => TransportError::ConnectionLost(format!("closed by peer: code {code}: {reason}")),
            Closed::Lost(r) => TransportError::ConnectionLost(r.clone()),
        }
    }
}

#[derive(Default)]
struct Pipe {
    segs: VecDeque<(Instant, Bytes)>,
    buffered: usize,
    last_ready: Option<Instant>,
    /// When the writer's FIN reaches the reader.
    fin: Option<Instant>,
    reset: Option<u32>,
    stopped: Option<u32>,
    eof_read: bool,
}

impl Pipe {
    fn clear(&mut self) {
        self.segs.clear();
        self.buffered = 0;
    }
}

struct StreamState {
    opener: usize,
    /// `pipes[s]` carries what side `s` writes.
    pipes: [Pipe; 2],
    /// The acceptor's halves that are done: `[send, recv]`.
    acceptor_done: [bool; 2],
    /// Counts against the opener's stream credit.
    slot_held: bool,
    /// Stream halves alive (2 per side once handed out).
    handles: u8,
    pending_accept: bool,
}

struct ConnState {
    closed: Option<Closed>,
    streams: BTreeMap<u64, StreamState>,
    next_stream: u64,
    /// Streams side `s` has yet to accept, with the instant they arrive.
    accept_queue: [VecDeque<(Instant, u64)>; 2],
    /// Streams opened towards side `s` that still hold a credit slot.
    incoming_open: [usize; 2],
}

impl ConnState {
    fn check(&self, side: usize) -> Result<(), TransportError> {
        match &self.closed {
            Some(c) => Err(c.error(side)),
            None => Ok(()),
        }
    }

    fn stream(&mut self, id: u64) -> Result<&mut StreamState, TransportError> {
        self.streams.get_mut(&id).ok_or_else(|| TransportError::Other("unknown stream".into()))
    }

    /// Marks one of the acceptor's halves done; true if a credit slot was
    /// released.
    fn half_done(&mut self, id: u64, side: usize, send_half: bool) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        if s.opener == side {
            return false;
        }
        s.acceptor_done[usize::from(!send_half)] = true;
        if s.slot_held && s.acceptor_done == [true, true] {
            s.slot_held = false;
            self.incoming_open[side] = self.incoming_open[side].saturating_sub(1);
            return true;
        }
        false
    }

    fn drop_handle(&mut self, id: u64) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.handles = s.handles.saturating_sub(1);
        if s.handles == 0 && !s.pending_accept {
            self.streams.remove(&id);
        }
    }
}

struct Conn {
    id: u64,
    net: Weak<NetInner>,
    hosts: [HostId; 2],
    transports: [u64; 2],
    ids: [PeerId; 2],
    addrs: [SocketAddr; 2],
    secret: [u8; 32],
    params: NetParams,
    state: Mutex<ConnState>,
    /// Any change of `state`.
    notify: Notify,
    /// The connection ended.
    closed_notify: Notify,
}

impl Conn {
    fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    fn end(&self, how: Closed) {
        {
            let mut st = lock(&self.state);
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(how);
            for s in st.streams.values_mut() {
                s.pipes[0].clear();
                s.pipes[1].clear();
            }
        }
        // An ended connection leaves the network's table (not under the
        // connection's lock: the table's sweep takes the locks the other way).
        if let Some(net) = self.net.upgrade() {
            lock(&net.state).conns.remove(self.id);
        }
        self.notify.notify_waiters();
        self.closed_notify.notify_waiters();
    }

    fn lose(&self, reason: String) {
        tracing::trace!(conn = self.id, %reason, "simnet: connection lost");
        self.end(Closed::Lost(reason));
    }

    fn close_app(&self, by: usize, code: u32, reason: &str) {
        self.end(Closed::App { by, code, reason: reason.to_owned() });
    }

    fn check(&self, side: usize) -> Result<(), TransportError> {
        lock(&self.state).check(side)
    }

    fn net(&self) -> Result<Arc<NetInner>, TransportError> {
        self.net.upgrade().ok_or_else(|| TransportError::ConnectionLost("network gone".into()))
    }

    /// The fate of one packet on this connection.
    fn fate(&self) -> Result<Fate, TransportError> {
        Ok(self.net()?.fate())
    }

    /// One-way latency from `side` to the other side.
    fn latency(&self) -> Result<Duration, TransportError> {
        let net = self.net()?;
        let st = lock(&net.state);
        Ok(st.latency(self.hosts[0], self.hosts[1]))
    }

    /// Books the sender's uplink for `n` bytes sent by `side`; returns when
    /// the last bit leaves.
    fn reserve_up(&self, side: usize, n: usize) -> Result<Instant, TransportError> {
        let net = self.net()?;
        let mut st = lock(&net.state);
        let from = self.hosts[side];
        let now = Instant::now();
        let h = st.host_mut(from);
        let up_start = h.up_free.map_or(now, |f| f.max(now));
        let up_end = up_start + tx_time(n, h.cfg.up_bytes_per_sec);
        h.up_free = Some(up_end);
        h.sent += n as u64;
        Ok(up_end)
    }

    /// Books the receiver's downlink for a segment whose upload ends at
    /// `up_end`. Called at (about) `up_end`, never ahead of time: a slow
    /// sender's future bookings must not block fast senders' segments that
    /// arrive earlier. Returns the end of the transmission and the one-way
    /// latency.
    fn reserve_down(&self, side: usize, n: usize, up_end: Instant) -> Result<(Instant, Duration), TransportError> {
        let net = self.net()?;
        let mut st = lock(&net.state);
        let (from, to) = (self.hosts[side], self.hosts[1 - side]);
        let lat = st.latency(from, to);
        let h = st.host_mut(to);
        let rx = tx_time(n, h.cfg.down_bytes_per_sec);
        // The downlink can take bits while they are still being uploaded.
        let earliest = up_end.checked_sub(rx).unwrap_or(up_end);
        let down_start = h.down_free.map_or(earliest, |f| f.max(earliest));
        let down_end = down_start + rx;
        h.down_free = Some(down_end);
        h.received += n as u64;
        Ok((up_end.max(down_end), lat))
    }
}

fn tx_time(n: usize, rate: f64) -> Duration {
    Duration::try_from_secs_f64(n as f64 / rate).unwrap_or(MAX_TX_TIME).min(MAX_TX_TIME)
}

/// Holds one side of a connection open; the last holder's drop closes it.
struct SideGuard {
    conn: Arc<Conn>,
    side: usize,
}

impl Drop for SideGuard {
    fn drop(&mut self) {
        self.conn.close_app(self.side, 0, "");
    }
}

struct SimConnection {
    guard: Arc<SideGuard>,
}

impl SimConnection {
    fn new(conn: Arc<Conn>, side: usize) -> SimConnection {
        SimConnection { guard: Arc::new(SideGuard { conn, side }) }
    }

    fn halves(&self, stream: u64) -> BiStream {
        (
            Box::new(SimSend { guard: Arc::clone(&self.guard), stream, state: SendState::Open }),
            Box::new(SimRecv { guard: Arc::clone(&self.guard), stream, state: RecvState::Open }),
        )
    }
}

#[async_trait]
impl Connection for SimConnection {
    fn peer_id(&self) -> PeerId {
        self.guard.conn.ids[1 - self.guard.side]
    }

    fn remote_addr(&self) -> SocketAddr {
        self.guard.conn.addrs[1 - self.guard.side]
    }

    async fn open_bi(&self) -> Result<BiStream, TransportError> {
        let conn = &self.guard.conn;
        let side = self.guard.side;
        let peer = 1 - side;
        loop {
            let lat = conn.latency()?;
            let notified = conn.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&conn.state);
                st.check(side)?;
                if st.incoming_open[peer] < conn.params.max_concurrent_streams {
                    let lat = lat + conn.fate()?.extra;
                    let id = st.next_stream;
                    st.next_stream += 1;
                    st.streams.insert(
                        id,
                        StreamState {
                            opener: side,
                            pipes: [Pipe::default(), Pipe::default()],
                            acceptor_done: [false, false],
                            slot_held: true,
                            handles: 2,
                            pending_accept: true,
                        },
                    );
                    st.incoming_open[peer] += 1;
                    let q = &mut st.accept_queue[peer];
                    let at = q.back().map_or(Instant::now() + lat, |(b, _)| (*b).max(Instant::now() + lat));
                    q.push_back((at, id));
                    drop(st);
                    conn.notify.notify_waiters();
                    return Ok(self.halves(id));
                }
            }
            notified.await;
        }
    }

    async fn accept_bi(&self) -> Result<Option<BiStream>, TransportError> {
        let conn = &self.guard.conn;
        let side = self.guard.side;
        loop {
            let notified = conn.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut st = lock(&conn.state);
                match &st.closed {
                    Some(Closed::App { .. }) => return Ok(None),
                    Some(c @ Closed::Lost(_)) => return Err(c.error(side)),
                    None => {}
                }
                match st.accept_queue[side].front().copied() {
                    Some((at, id)) if at <= Instant::now() => {
                        st.accept_queue[side].pop_front();
                        let s = st.stream(id)?;
                        s.pending_accept = false;
                        s.handles += 2;
                        return Ok(Some(self.halves(id)));
                    }
                    Some((at, _)) => Some(at),
                    None => None,
                }
            };
            wait(notified, deadline).await;
        }
    }

    fn export_keying_material(&self, label: &[u8]) -> Result<[u8; 32], TransportError> {
        if let Some(labels) = &self.guard.conn.params.exporter_labels {
            if !labels.iter().any(|l| l == label) {
                return Err(TransportError::Other("exporter label not registered in NetParams::exporter_labels".into()));
            }
        }
        let mut h = blake3::Hasher::new_keyed(&self.guard.conn.secret);
        h.update(label);
        Ok(*h.finalize().as_bytes())
    }

    fn close(&self, code: u32, reason: &str) {
        self.guard.conn.close_app(self.guard.side, code, reason);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SendState {
    Open,
    Finished,
    Reset,
}

struct SimSend {
    guard: Arc<SideGuard>,
    stream: u64,
    state: SendState,
}

impl SimSend {
    fn not_open() -> TransportError {
        TransportError::Other("stream already finished or reset".into())
    }

    /// Waits until `until` unless the connection ends first.
    async fn hold_until(&self, until: Instant) -> Result<(), TransportError> {
        let conn = &self.guard.conn;
        let notified = conn.closed_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        conn.check(self.guard.side)?;
        if until > Instant::now() {
            wait(notified, Some(until)).await;
        }
        conn.check(self.guard.side)
    }

    /// Waits for room in the stream window; errors if the stream or the
    /// connection is gone.
    async fn wait_room(&self, n: usize) -> Result<(), TransportError> {
        let conn = &self.guard.conn;
        let side = self.guard.side;
        loop {
            let notified = conn.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&conn.state);
                st.check(side)?;
                let pipe = &st.stream(self.stream)?.pipes[side];
                if let Some(code) = pipe.stopped {
                    return Err(TransportError::StreamReset(format!("stopped by peer: {code}")));
                }
                if pipe.buffered == 0 || pipe.buffered + n <= conn.params.stream_window {
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

#[async_trait]
impl SendStream for SimSend {
    async fn write(&mut self, data: Bytes) -> Result<(), TransportError> {
        if self.state != SendState::Open {
            return Err(SimSend::not_open());
        }
        if data.is_empty() {
            return Ok(());
        }
        let conn = Arc::clone(&self.guard.conn);
        let side = self.guard.side;
        let mut rest = data;
        while !rest.is_empty() {
            let n = rest.len().min(conn.params.segment_size);
            self.wait_room(n).await?;
            let seg = rest.split_to(n);
            let fate = conn.fate()?;
            let wire = n * fate.transmissions;
            let up_end = conn.reserve_up(side, wire)?;
            self.hold_until(up_end.checked_sub(conn.params.send_ahead).unwrap_or(up_end)).await?;
            let (end, lat) = conn.reserve_down(side, wire, up_end)?;
            let lat = lat + fate.extra;
            {
                let mut st = lock(&conn.state);
                st.check(side)?;
                let pipe = &mut st.stream(self.stream)?.pipes[side];
                if let Some(code) = pipe.stopped {
                    return Err(TransportError::StreamReset(format!("stopped by peer: {code}")));
                }
                let ready = pipe.last_ready.map_or(end + lat, |l| l.max(end + lat));
                pipe.last_ready = Some(ready);
                pipe.buffered += n;
                pipe.segs.push_back((ready, seg));
            }
            conn.notify.notify_waiters();
            let release = end.checked_sub(conn.params.send_ahead).unwrap_or(end);
            self.hold_until(release).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), TransportError> {
        if self.state != SendState::Open {
            return Err(SimSend::not_open());
        }
        let conn = &self.guard.conn;
        let side = self.guard.side;
        let lat = conn.latency()? + conn.fate()?.extra;
        {
            let mut st = lock(&conn.state);
            st.check(side)?;
            let pipe = &mut st.stream(self.stream)?.pipes[side];
            let at = Instant::now() + lat;
            pipe.fin = Some(pipe.last_ready.map_or(at, |l| l.max(at)));
            self.state = SendState::Finished;
            st.half_done(self.stream, side, true);
        }
        conn.notify.notify_waiters();
        Ok(())
    }

    fn reset(&mut self, code: u32) {
        if self.state != SendState::Open {
            return;
        }
        self.state = SendState::Reset;
        let conn = &self.guard.conn;
        let side = self.guard.side;
        {
            let mut st = lock(&conn.state);
            if let Ok(s) = st.stream(self.stream) {
                let pipe = &mut s.pipes[side];
                pipe.reset = Some(code);
                pipe.clear();
            }
            st.half_done(self.stream, side, true);
        }
        conn.notify.notify_waiters();
    }
}

impl Drop for SimSend {
    fn drop(&mut self) {
        // Strict: an unfinished stream is abandoned, never silently finished.
        self.reset(0);
        let conn = &self.guard.conn;
        {
            let mut st = lock(&conn.state);
            st.half_done(self.stream, self.guard.side, true);
            st.drop_handle(self.stream);
        }
        conn.notify.notify_waiters();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RecvState {
    Open,
    Ended,
    Stopped,
}

struct SimRecv {
    guard: Arc<SideGuard>,
    stream: u64,
    state: RecvState,
}

#[async_trait]
impl RecvStream for SimRecv {
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, TransportError> {
        match self.state {
            RecvState::Stopped => return Err(TransportError::Other("stream already stopped".into())),
            RecvState::Ended => return Ok(None),
            RecvState::Open => {}
        }
        if max == 0 {
            return Ok(Some(Bytes::new()));
        }
        let conn = Arc::clone(&self.guard.conn);
        let side = self.guard.side;
        loop {
            let notified = conn.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut st = lock(&conn.state);
                st.check(side)?;
                let now = Instant::now();
                let pipe = &mut st.stream(self.stream)?.pipes[1 - side];
                if let Some(code) = pipe.reset {
                    return Err(TransportError::StreamReset(format!("reset by peer: {code}")));
                }
                match pipe.segs.front_mut() {
                    Some((at, seg)) if *at <= now => {
                        let chunk = if seg.len() > max {
                            seg.split_to(max)
                        } else {
                            let whole = std::mem::take(seg);
                            pipe.segs.pop_front();
                            whole
                        };
                        pipe.buffered -= chunk.len();
                        drop(st);
                        conn.notify.notify_waiters();
                        return Ok(Some(chunk));
                    }
                    Some((at, _)) => Some(*at),
                    None => match pipe.fin {
                        Some(at) if at <= now => {
                            pipe.eof_read = true;
                            self.state = RecvState::Ended;
                            let released = st.half_done(self.stream, side, false);
                            drop(st);
                            if released {
                                conn.notify.notify_waiters();
                            }
                            return Ok(None);
                        }
                        fin => fin,
                    },
                }
            };
            wait(notified, deadline).await;
        }
    }

    fn stop(&mut self, code: u32) {
        if self.state != RecvState::Open {
            return;
        }
        self.state = RecvState::Stopped;
        let conn = &self.guard.conn;
        let side = self.guard.side;
        {
            let mut st = lock(&conn.state);
            if let Ok(s) = st.stream(self.stream) {
                let pipe = &mut s.pipes[1 - side];
                // A stream already finished and fully delivered needs no stop.
                if pipe.fin.is_none() || !pipe.segs.is_empty() {
                    pipe.stopped = Some(code);
                }
                pipe.clear();
            }
            st.half_done(self.stream, side, false);
        }
        conn.notify.notify_waiters();
    }
}

impl Drop for SimRecv {
    fn drop(&mut self) {
        self.stop(0);
        let conn = &self.guard.conn;
        {
            let mut st = lock(&conn.state);
            st.half_done(self.stream, self.guard.side, false);
            st.drop_handle(self.stream);
        }
        conn.notify.notify_waiters();
    }
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

struct DiscState {
    /// Events with the instant they become visible (non-decreasing).
    queue: VecDeque<(Instant, DiscoveryEvent)>,
    /// What this receiver currently believes is up, and where.
    seen: BTreeMap<PeerId, (HostId, PeerAdvert)>,
    dead: bool,
}

impl DiscState {
    fn push(&mut self, at: Instant, ev: DiscoveryEvent) {
        let at = self.queue.back().map_or(at, |(b, _)| (*b).max(at));
        self.queue.push_back((at, ev));
    }
}

struct DiscShared {
    id: u64,
    host: HostId,
    state: Mutex<DiscState>,
    notify: Notify,
}

impl DiscShared {
    fn kill(&self) {
        {
            let mut st = lock(&self.state);
            st.dead = true;
            st.queue.clear();
            st.seen.clear();
        }
        self.notify.notify_waiters();
    }
}

/// Simulated peer discovery on one host (see the module docs).
pub struct SimDiscovery {
    net: SimNet,
    shared: Arc<DiscShared>,
}

impl fmt::Debug for SimDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDiscovery").field("host", &self.shared.host).finish_non_exhaustive()
    }
}

impl SimDiscovery {
    /// The host the discovery runs on.
    pub fn host(&self) -> HostId {
        self.shared.host
    }
}

impl Drop for SimDiscovery {
    fn drop(&mut self) {
        self.net.withdraw(&self.shared);
    }
}

#[async_trait]
impl Discovery for SimDiscovery {
    async fn advertise(&self, me: PeerAdvert) -> Result<(), DiscoveryError> {
        let mut st = self.net.state();
        let pid = me.id;
        let Some(old) = st.set_advert(self.shared.id, me) else {
            return Err(DiscoveryError("simnet: discovery is shut down".into()));
        };
        // Only views of the old and the new id can change (the advertiser's
        // own view included: it hides its own id).
        let ids: BTreeSet<PeerId> = old.into_iter().chain([pid]).collect();
        st.resync_ids(&self.net.inner.params, &ids);
        Ok(())
    }

    async fn next_event(&self) -> Option<DiscoveryEvent> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut st = lock(&self.shared.state);
                if st.dead {
                    return None;
                }
                match st.queue.front() {
                    Some((at, _)) if *at <= Instant::now() => {
                        return st.queue.pop_front().map(|(_, ev)| ev);
                    }
                    Some((at, _)) => Some(*at),
                    None => None,
                }
            };
            wait(notified, deadline).await;
        }
    }

    async fn shutdown(&self) {
        self.net.withdraw(&self.shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime").block_on(f)
    }

    fn advert(id: PeerId) -> PeerAdvert {
        PeerAdvert { id, addrs: vec![], protocol_version: 1, meta: BTreeMap::new() }
    }

    /// What a receiver should see, computed from scratch the way the first
    /// version of `resync` did (every subject, the newest advert of an id).
    fn expected_view(st: &NetState, rid: u64) -> BTreeMap<PeerId, PeerAdvert> {
        let r = &st.discs[&rid];
        let own = r.advert.as_ref().map(|a| a.id);
        let mut want = BTreeMap::new();
        for (sid, s) in &st.discs {
            let Some(adv) = &s.advert else { continue };
            if *sid == rid || Some(adv.id) == own || st.is_cut(r.shared.host, s.shared.host) {
                continue;
            }
            want.insert(adv.id, adv.clone());
        }
        want
    }

    #[test]
    fn incremental_discovery_views_match_a_full_recompute() {
        run(async {
            let rng = SimRng::new(5);
            let net = SimNet::new(rng.fork("net"));
            let hosts: Vec<HostId> = (0..6).map(|i| net.add_host(&format!("h{i}"), HostConfig::default())).collect();
            // A small pool of ids, so that two discoveries often advertise one id.
            let ids: Vec<PeerId> = (0..4).map(|_| rng.peer_id()).collect();
            let mut discs: Vec<Arc<SimDiscovery>> = Vec::new();
            for step in 0..400 {
                match rng.range(0..10u32) {
                    0..=2 => discs.push(net.discovery(hosts[rng.range(0..hosts.len())])),
                    3..=6 if !discs.is_empty() => {
                        let d = &discs[rng.range(0..discs.len())];
                        let mut a = advert(ids[rng.range(0..ids.len())]);
                        a.protocol_version = rng.range(1..3u32);
                        let _ = d.advertise(a).await;
                    }
                    7 if !discs.is_empty() => {
                        let d = discs.swap_remove(rng.range(0..discs.len()));
                        d.shutdown().await;
                    }
                    8 => {
                        let k = rng.range(1..hosts.len());
                        net.partition(&hosts[..k], &hosts[k..]);
                    }
                    9 => net.heal(),
                    _ => {}
                }
                let st = net.state();
                for (rid, r) in &st.discs {
                    let seen: BTreeMap<PeerId, PeerAdvert> =
                        lock(&r.shared.state).seen.iter().map(|(id, (_, a))| (*id, a.clone())).collect();
                    assert_eq!(seen, expected_view(&st, *rid), "step {step}, discovery {rid}");
                }
                let indexed: usize = st.adverts.values().map(BTreeSet::len).sum();
                assert_eq!(indexed, st.discs.values().filter(|d| d.advert.is_some()).count(), "step {step}: advert index");
            }
        });
    }

    #[test]
    fn ended_connections_leave_the_table() {
        run(async {
            let rng = SimRng::new(6);
            let net = SimNet::new(rng.fork("net"));
            let a = net.add_host("a", HostConfig::default());
            let b = net.add_host("b", HostConfig::default());
            let ta = net.transport(a, 1, rng.peer_id());
            let tb = net.transport(b, 1, rng.peer_id());
            let addr = tb.local_addr();
            let mut kept = Vec::new();
            for i in 0..300 {
                let (c, s) = tokio::join!(ta.connect(addr, None), tb.accept());
                let (c, s) = (c.expect("connect"), s.expect("accept"));
                if i % 3 == 0 {
                    kept.push((c, s));
                } else if i % 3 == 1 {
                    c.close(0, "done");
                } else {
                    drop((c, s));
                }
            }
            assert_eq!(net.state().conns.len(), kept.len(), "only live connections are in the table");
            assert_eq!(net.connection_count(), kept.len());
            net.drop_connections(a);
            assert_eq!(net.state().conns.len(), 0);
            let st = net.state();
            assert!(st.conns.by_host.is_empty() && st.conns.by_transport.is_empty());
        });
    }

    /// Sends `streams` streams of `len` bytes at once from a to b; returns
    /// the time to receive everything, the bytes put on the wire, and
    /// whether every stream arrived intact.
    fn transfer(params: NetParams, seed: u64, streams: usize, len: usize) -> (Duration, u64, bool) {
        run(async move {
            let rng = SimRng::new(seed);
            let net = SimNet::with_params(rng.fork("net"), params);
            let cfg = HostConfig::symmetric(100e6, Duration::from_millis(1));
            let a = net.add_host("a", cfg);
            let b = net.add_host("b", cfg);
            let ta = net.transport(a, 1, rng.peer_id());
            let tb = net.transport(b, 1, rng.peer_id());
            let start = Instant::now();
            let (c, s) = tokio::join!(ta.connect(tb.local_addr(), None), tb.accept());
            let (c, s) = (c.expect("connect"), s.expect("accept"));
            let data = |k: usize| Bytes::from((0..len).map(|i| (i * 7 + k) as u8).collect::<Vec<u8>>());
            let send = async {
                let sends = (0..streams).map(|k| {
                    let c = &c;
                    async move {
                        let (mut tx, _rx) = c.open_bi().await.expect("open");
                        let d = data(k);
                        for off in (0..len).step_by(100_000) {
                            tx.write(d.slice(off..(off + 100_000).min(len))).await.expect("write");
                        }
                        tx.finish().await.expect("finish");
                    }
                });
                futures::future::join_all(sends).await;
            };
            let recv = async {
                let mut ok = true;
                for _ in 0..streams {
                    let (_tx, mut rx) = s.accept_bi().await.expect("accept_bi").expect("a stream");
                    let mut got = Vec::new();
                    while let Some(d) = rx.read(1 << 20).await.expect("read") {
                        got.extend_from_slice(&d);
                    }
                    ok &= (0..streams).any(|k| got == data(k));
                }
                ok
            };
            let ((), ok) = tokio::join!(send, recv);
            (start.elapsed(), net.bytes_sent(a), ok)
        })
    }

    #[test]
    fn link_faults_delay_but_never_corrupt_and_replay_from_the_seed() {
        let (streams, len) = (4, 2_000_000);
        let clean = transfer(NetParams::default(), 1, streams, len);
        assert!(clean.2);
        assert_eq!(clean.1, (streams * len) as u64);
        let bad = LinkFaults {
            jitter: Duration::from_millis(3),
            reorder: 0.2,
            reorder_delay: Duration::from_millis(5),
            loss: 0.1,
            retransmit_delay: Duration::from_millis(20),
        };
        let params = NetParams { faults: Some(bad), ..NetParams::default() };
        let faulty = transfer(params.clone(), 1, streams, len);
        assert!(faulty.2, "streams stay reliable and ordered");
        assert!(faulty.0 > clean.0, "faults slow the transfer: {:?} vs {:?}", faulty.0, clean.0);
        assert!(faulty.1 > clean.1, "lost segments are sent again");
        assert_eq!(transfer(params.clone(), 1, streams, len), faulty, "one seed, one outcome");
        assert_ne!(transfer(params, 2, streams, len).0, faulty.0, "another seed, other faults");
        // Off by default: nothing is drawn, so timings are exact.
        assert_eq!(transfer(NetParams::default(), 2, streams, len), clean);
    }

    #[test]
    fn fates_follow_the_parameters() {
        let rng = SimRng::new(3);
        let inner = |faults| NetInner {
            params: NetParams { faults, ..NetParams::default() },
            rng: rng.clone(),
            fault_rng: rng.fork("link-faults"),
            state: Mutex::new(NetState::empty()),
        };
        let none = inner(None);
        assert!((0..100).all(|_| none.fate() == Fate::CLEAN));
        let f = LinkFaults::default();
        let some = inner(Some(f.clone()));
        let fates: Vec<Fate> = (0..20_000).map(|_| some.fate()).collect();
        let lost = fates.iter().filter(|x| x.transmissions > 1).count() as f64 / fates.len() as f64;
        assert!((0.002..0.01).contains(&lost), "loss rate {lost}");
        let max = f.jitter + f.reorder_delay + f.retransmit_delay * 3;
        assert!(fates.iter().all(|x| x.extra <= max || x.transmissions > 3));
        assert!(fates.iter().any(|x| x.extra > Duration::ZERO && x.extra < f.jitter));
    }
}
