//! Connections to other peers, an IO resource: dialing (happy eyeballs
//! over every address the peer machine knows for a peer), the Hello
//! handshake with the optional party-key proof, and requests with the
//! control timeout. Which peers exist and where they are is decided by the
//! peer machine; the pool only keeps the addresses it was told and the
//! connections it made, and closes the ones nothing uses (see
//! [`IDLE_KEPT`]), so a peer on a LAN of hundreds holds a bounded set.

use super::ctx::Input;
use super::party::{PartyKey, Role};
use super::PeerConfig;
use futures::stream::{FuturesUnordered, StreamExt};
use lanspread_core::peer::DialOutcome;
use lanspread_core::protocol::{Hello, Request, Response, CAP_PARTY_KEY, CAP_VERIFIED_CHUNKS, PROTOCOL_VERSION};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{Clock, Connection, PeerId, Timestamp, Transport, TransportError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a dial waits for the attempt in flight before it also tries
/// the next address. A LAN handshake takes a few milliseconds; RFC 8305's
/// 250 ms is meant for the Internet. An attempt that fails outright starts
/// the next one at once.
pub(crate) const DIAL_STAGGER: Duration = Duration::from_millis(50);

/// Unused connections kept open: beyond this many, the ones unused longest
/// are closed. A connection in use (a request, a chunk or a long poll in
/// flight) is never closed; one closed is dialed again when needed.
const IDLE_KEPT: usize = 32;

/// An unused connection is closed after this long, however few there are
/// (each one holds a slot on its server).
const IDLE_CLOSE: Duration = Duration::from_secs(60);

/// How often the pool looks for connections to close.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A connection and when it was last handed out.
struct Held {
    conn: Arc<dyn Connection>,
    used: Timestamp,
}

impl Held {
    /// Nobody but the pool holds the connection: nothing is in flight on it.
    fn unused(&self) -> bool {
        Arc::strong_count(&self.conn) == 1
    }
}

/// The connection to one peer, dialed at most once at a time.
type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;

/// See the module docs.
pub(crate) struct Pool {
    /// Replaced when the peer takes another identity (see [`Pool::rebind`]).
    transport: Mutex<Arc<dyn Transport>>,
    clock: Arc<dyn Clock>,
    party_key: Option<PartyKey>,
    request_timeout: Duration,
    conns: Mutex<BTreeMap<PeerId, Slot>>,
    last_sweep: Mutex<Timestamp>,
    /// Where each peer can be reached, best first (from the peer machine).
    addrs: Mutex<BTreeMap<PeerId, Vec<SocketAddr>>>,
    inbox: mpsc::UnboundedSender<Input>,
}

impl Pool {
    pub fn new(cfg: &PeerConfig, transport: Arc<dyn Transport>, clock: Arc<dyn Clock>, inbox: mpsc::UnboundedSender<Input>) -> Self {
        Pool {
            transport: Mutex::new(transport),
            clock,
            party_key: cfg.party_key.as_deref().map(PartyKey::new),
            request_timeout: cfg.request_timeout,
            conns: Mutex::default(),
            last_sweep: Mutex::new(Timestamp::ZERO),
            addrs: Mutex::default(),
            inbox,
        }
    }

    /// The transport in use now.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.transport.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hands over the transport (for the identity to change), keeping a
    /// [`Detached`] one in its place, and drops every connection: they were
    /// made, and authenticated, as the old identity. An endpoint's socket
    /// is released only once nothing holds the endpoint.
    pub fn detach(&self) -> Arc<dyn Transport> {
        let mut transport = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        let detached = Arc::new(Detached { id: transport.local_id(), addr: transport.local_addr() });
        let old = std::mem::replace(&mut *transport, detached);
        drop(transport);
        self.drop_all();
        old
    }

    /// Uses `transport` from now on.
    pub fn attach(&self, transport: Arc<dyn Transport>) {
        *self.transport.lock().unwrap_or_else(|e| e.into_inner()) = transport;
        self.drop_all();
    }

    /// Closes every connection.
    pub fn drop_all(&self) {
        let peers: Vec<PeerId> = self.conns.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for peer in peers {
            self.drop_connection(&peer);
        }
    }

    /// The party key, if this peer is in a LAN party.
    pub fn party_key(&self) -> Option<&PartyKey> {
        self.party_key.as_ref()
    }

    /// Our Hello, carrying our half of a party-key exchange (`pake`) and, on
    /// the server side, the key confirmation.
    pub fn our_hello(&self, pake: Option<Vec<u8>>, party_proof: Option<[u8; 32]>) -> Hello {
        let mut capabilities = vec![CAP_VERIFIED_CHUNKS.to_owned()];
        if self.party_key.is_some() {
            capabilities.push(CAP_PARTY_KEY.to_owned());
        }
        let transport = self.transport();
        Hello {
            version: PROTOCOL_VERSION,
            peer_id: transport.local_id(),
            capabilities,
            listen_port: transport.local_addr().port(),
            pake,
            party_proof,
        }
    }

    async fn with_timeout<T>(&self, f: impl std::future::Future<Output = Result<T, WireError>>) -> Result<T, String> {
        let d = self.request_timeout;
        tokio::select! {
            biased;
            r = f => r.map_err(|e| e.to_string()),
            _ = self.clock.sleep(d) => Err(format!("timed out after {d:?}")),
        }
    }

    /// Client side of the handshake: Hello, and with a party key the
    /// exchange (see `party.rs`): check the server's confirmation, then
    /// confirm ours.
    async fn hello(&self, conn: &dyn Connection) -> Result<Hello, String> {
        let me = self.transport().local_id();
        let them = conn.peer_id();
        let exchange = match &self.party_key {
            Some(key) => Some(key.start(conn).ok_or("no TLS exporter for the party key")?),
            None => None,
        };
        let req = Request::Hello(self.our_hello(exchange.as_ref().map(|x| x.message.clone()), None));
        let resp = self.with_timeout(wire::request(conn, &req)).await?;
        let Response::Hello(h) = resp else { return Err("peer did not answer Hello".into()) };
        if h.peer_id != them {
            return Err(format!("peer claims id {} but proved {}", h.peer_id, them));
        }
        if h.version != PROTOCOL_VERSION {
            return Err(format!("peer speaks protocol v{}, we speak v{PROTOCOL_VERSION}", h.version));
        }
        if let Some(exchange) = exchange {
            let unknown = || "peer does not know the party key".to_owned();
            let key = h.pake.as_deref().and_then(|theirs| exchange.finish(theirs)).ok_or_else(unknown)?;
            match &h.party_proof {
                Some(p) if key.verify(Role::Server, p, &me, &them) => {}
                _ => return Err(unknown()),
            }
            let confirm = Request::Confirm { proof: key.proof(Role::Client, &me, &them) };
            match self.with_timeout(wire::request(conn, &confirm)).await? {
                Response::Confirmed => {}
                other => return Err(format!("peer refused our party-key confirmation: {other:?}")),
            }
        }
        Ok(h)
    }

    fn slot(&self, peer: PeerId) -> Slot {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).entry(peer).or_default().clone()
    }

    /// Where `peer` can be reached, best first; empty forgets it.
    pub fn set_addrs(&self, peer: PeerId, addrs: Vec<SocketAddr>) {
        let mut book = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if addrs.is_empty() {
            book.remove(&peer);
        } else {
            book.insert(peer, addrs);
        }
    }

    /// The connection to `peer`, dialing (and saying Hello) if needed.
    pub async fn connection(&self, peer: PeerId) -> Result<Arc<dyn Connection>, String> {
        let slot = self.slot(peer);
        let mut guard = slot.lock().await;
        let now = self.clock.now();
        if let Some(held) = guard.as_mut() {
            held.used = now;
            let conn = held.conn.clone();
            drop(guard);
            self.sweep(now, false);
            return Ok(conn);
        }
        let addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned();
        let addrs = addrs.ok_or_else(|| format!("peer {peer} is unknown"))?;
        let (addr, conn) = self.dial(&addrs, Some(peer)).await.map_err(|e| e.to_string())?;
        // The address that worked is tried first next time.
        let _ = self.inbox.send(Input::Connected { peer, addr });
        *guard = Some(Held { conn: conn.clone(), used: self.clock.now() });
        drop(guard);
        self.grew();
        Ok(conn)
    }

    /// A new connection is what makes the set grow: trim it now.
    fn grew(&self) {
        self.sweep(self.clock.now(), true);
    }

    /// Closes unused connections beyond [`IDLE_KEPT`] (unused longest
    /// first) and those unused for [`IDLE_CLOSE`]; unless `grew`, at most
    /// once per [`SWEEP_EVERY`]. A slot being dialed or used is skipped.
    fn sweep(&self, now: Timestamp, grew: bool) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if !grew && now < *last + SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut open = 0usize;
        let mut unused: Vec<(Timestamp, &Slot)> = Vec::new();
        for slot in conns.values() {
            let Ok(guard) = slot.try_lock() else { continue };
            let Some(held) = guard.as_ref() else { continue };
            open += 1;
            if held.unused() {
                unused.push((held.used, slot));
            }
        }
        unused.sort_by_key(|(used, _)| *used);
        let excess = open.saturating_sub(IDLE_KEPT);
        for (i, (used, slot)) in unused.into_iter().enumerate() {
            if i >= excess && now.saturating_since(used) < IDLE_CLOSE {
                break;
            }
            // A connection in use is held by its user too, so it is never
            // unused here; a caller waiting for the slot finds it empty and
            // dials again.
            if let Ok(mut guard) = slot.try_lock() {
                if let Some(held) = guard.take_if(|h| h.unused()) {
                    held.conn.close(0, "unused");
                }
            }
        }
    }

    /// Dials `addrs` (in order) happy-eyeballs style and says Hello on the
    /// first connection to complete its handshake; the attempts still in
    /// flight are dropped (which closes them). Bounded by the request timeout.
    async fn dial(&self, addrs: &[SocketAddr], expected: Option<PeerId>) -> Result<(SocketAddr, Arc<dyn Connection>), DialError> {
        let t = self.request_timeout;
        let transport = self.transport();
        let (addr, conn) = tokio::select! {
            biased;
            r = race(&transport, self.clock.as_ref(), addrs, expected) => r?,
            _ = self.clock.sleep(t) => return Err(DialError::Failed(format!("connect to {} timed out", show_addrs(addrs)))),
        };
        if let Err(e) = self.hello(conn.as_ref()).await {
            conn.close(1, "handshake failed");
            return Err(DialError::Failed(e));
        }
        Ok((addr, conn))
    }

    /// Dials a static address (`--peer`), pinned to the identity it proved
    /// before if any, and keeps the connection.
    pub async fn dial_static(&self, addr: SocketAddr, pinned: Option<PeerId>) -> DialOutcome {
        match self.dial(&[addr], pinned).await {
            Ok((_, conn)) => {
                let id = conn.peer_id();
                *self.slot(id).lock().await = Some(Held { conn, used: self.clock.now() });
                self.grew();
                DialOutcome::Connected(id)
            }
            Err(DialError::KeyChanged(e)) => {
                let was = pinned.map(|p| p.to_hex()).unwrap_or_default();
                DialOutcome::KeyChanged(format!("peer at {addr} changed its key (was {was}): refusing it — {e}"))
            }
            Err(DialError::Failed(e)) => DialOutcome::Failed(e),
        }
    }

    /// A request to a peer with the control timeout; a failure drops the
    /// connection (the next request dials afresh).
    pub async fn request(&self, peer: PeerId, req: &Request) -> Result<Response, String> {
        let conn = self.connection(peer).await?;
        let r = self.with_timeout(wire::request(conn.as_ref(), req)).await;
        if r.is_err() {
            self.drop_connection(&peer);
        }
        r
    }

    /// Forgets the connection to `peer` (it failed, left, or backs off).
    pub fn drop_connection(&self, peer: &PeerId) {
        let slot = self.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(peer);
        if let Some(slot) = slot {
            if let Ok(mut g) = slot.try_lock() {
                if let Some(held) = g.take() {
                    held.conn.close(0, "dropped");
                }
            }
        }
    }
}

/// The transport between two identities: it keeps the old one's id and
/// address for whoever asks, accepts nothing and dials nowhere.
struct Detached {
    id: PeerId,
    addr: SocketAddr,
}

#[async_trait::async_trait]
impl Transport for Detached {
    fn local_id(&self) -> PeerId {
        self.id
    }
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    async fn accept(&self) -> Option<Box<dyn Connection>> {
        None
    }
    async fn connect(&self, _addr: SocketAddr, _expected: Option<PeerId>) -> Result<Box<dyn Connection>, TransportError> {
        Err(TransportError::Closed)
    }
    async fn shutdown(&self) {}
}

/// Why a dial failed.
#[derive(Debug)]
pub(crate) enum DialError {
    /// An address answered with another identity than the pinned one.
    KeyChanged(String),
    /// Unreachable, refused, timed out, or the handshake failed.
    Failed(String),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::KeyChanged(e) | DialError::Failed(e) => f.write_str(e),
        }
    }
}

/// `a, b, c` for messages.
fn show_addrs(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// The QUIC handshake race of [`dial`]: starts the first attempt, then the
/// next one every [`DIAL_STAGGER`] or as soon as one fails; the first
/// success wins. Fails with every attempt's error once all have failed.
async fn race(
    transport: &Arc<dyn Transport>,
    clock: &dyn Clock,
    addrs: &[SocketAddr],
    expected: Option<PeerId>,
) -> Result<(SocketAddr, Arc<dyn Connection>), DialError> {
    if addrs.is_empty() {
        return Err(DialError::Failed("no usable address".into()));
    }
    let attempt = |addr: SocketAddr| {
        let transport = transport.clone();
        async move { (addr, transport.connect(addr, expected).await) }
    };
    let mut next = addrs.iter().copied();
    let mut running = FuturesUnordered::new();
    let mut errors = Vec::new();
    loop {
        if running.is_empty() {
            match next.next() {
                Some(a) => running.push(attempt(a)),
                None => return Err(failure(&errors)),
            }
        }
        let more = next.len() > 0;
        tokio::select! {
            biased;
            done = running.next() => match done {
                Some((addr, Ok(conn))) => return Ok((addr, Arc::from(conn))),
                Some((addr, Err(e))) => {
                    tracing::debug!("dialing {addr}: {e}");
                    errors.push(e);
                    if let Some(a) = next.next() {
                        running.push(attempt(a));
                    }
                }
                None => {}
            },
            _ = clock.sleep(DIAL_STAGGER), if more => {
                if let Some(a) = next.next() {
                    running.push(attempt(a));
                }
            }
        }
    }
}

/// The error of a race whose every attempt failed: a key change if any
/// address presented another identity than the pinned one.
fn failure(errors: &[TransportError]) -> DialError {
    let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    if errors.iter().any(|e| matches!(e, TransportError::IdentityMismatch { .. })) {
        DialError::KeyChanged(text)
    } else {
        DialError::Failed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use lanspread_ports::BiStream;
    use lanspread_testkit::clock::SimClock;
    use std::net::SocketAddrV6;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v6(ip: &str, port: u16, scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(ip.parse().unwrap(), port, 0, scope))
    }

    /// How the fake transport answers a dial to one address.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Handshake completes after this long.
        Ok(Duration),
        /// Fails after this long.
        Fail(Duration),
        /// Never answers.
        Silent,
    }

    /// A transport whose dials answer as scripted, recording when each
    /// dial started and which ones were abandoned (dropped in flight).
    struct Scripted {
        clock: SimClock,
        answers: Vec<(SocketAddr, Answer)>,
        started: Mutex<Vec<(SocketAddr, Duration)>>,
        dropped: Arc<Mutex<Vec<SocketAddr>>>,
    }

    struct DropFlag(SocketAddr, Arc<Mutex<Vec<SocketAddr>>>, bool);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            if !self.2 {
                self.1.lock().unwrap().push(self.0);
            }
        }
    }

    struct FakeConn(SocketAddr);

    #[async_trait]
    impl Connection for FakeConn {
        fn peer_id(&self) -> PeerId {
            PeerId([7; 32])
        }
        fn remote_addr(&self) -> SocketAddr {
            self.0
        }
        async fn open_bi(&self) -> Result<BiStream, TransportError> {
            Err(TransportError::Closed)
        }
        async fn accept_bi(&self) -> Result<Option<BiStream>, TransportError> {
            Ok(None)
        }
        fn export_keying_material(&self, _label: &[u8]) -> Result<[u8; 32], TransportError> {
            Err(TransportError::Closed)
        }
        fn close(&self, _code: u32, _reason: &str) {}
    }

    #[async_trait]
    impl Transport for Scripted {
        fn local_id(&self) -> PeerId {
            PeerId([1; 32])
        }
        fn local_addr(&self) -> SocketAddr {
            a("[::]:1")
        }
        async fn accept(&self) -> Option<Box<dyn Connection>> {
            None
        }
        async fn connect(&self, addr: SocketAddr, _expected: Option<PeerId>) -> Result<Box<dyn Connection>, TransportError> {
            self.started.lock().unwrap().push((addr, self.clock.elapsed()));
            let mut flag = DropFlag(addr, self.dropped.clone(), false);
            let answer = self.answers.iter().find(|(x, _)| *x == addr).map_or(Answer::Silent, |(_, ans)| *ans);
            let result = match answer {
                Answer::Ok(d) => {
                    tokio::time::sleep(d).await;
                    Ok(Box::new(FakeConn(addr)) as Box<dyn Connection>)
                }
                Answer::Fail(d) => {
                    tokio::time::sleep(d).await;
                    Err(TransportError::Connect { addr, reason: "refused".into() })
                }
                Answer::Silent => std::future::pending().await,
            };
            flag.2 = true;
            result
        }
        async fn shutdown(&self) {}
    }

    /// What one race did: the winner, when each dial started, and the
    /// dials abandoned in flight.
    struct RaceLog {
        won: Result<SocketAddr, String>,
        started: Vec<(SocketAddr, Duration)>,
        dropped: Vec<SocketAddr>,
    }

    /// Runs `race` over `answers` (dialed in their order) on virtual time.
    fn run_race(answers: &[(SocketAddr, Answer)]) -> RaceLog {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let clock = SimClock::new();
            let fake = Arc::new(Scripted { clock, answers: answers.to_vec(), started: Mutex::default(), dropped: Arc::default() });
            let transport: Arc<dyn Transport> = fake.clone();
            let addrs: Vec<SocketAddr> = answers.iter().map(|(x, _)| *x).collect();
            let won = race(&transport, &clock, &addrs, None).await.map_err(|e| e.to_string()).map(|(x, conn)| {
                assert_eq!(conn.remote_addr(), x);
                x
            });
            let started = fake.started.lock().unwrap().clone();
            let dropped = fake.dropped.lock().unwrap().clone();
            RaceLog { won, started, dropped }
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn race_staggers_past_a_silent_address_and_drops_it() {
        let (ll, v4) = (v6("fe80::1", 47800, 2), a("10.77.0.11:47800"));
        let RaceLog { won, started, dropped } = run_race(&[(ll, Answer::Silent), (v4, Answer::Ok(ms(3)))]);
        assert_eq!(won, Ok(v4));
        assert_eq!(started, vec![(ll, ms(0)), (v4, DIAL_STAGGER)]);
        assert_eq!(dropped, vec![ll]);
    }

    #[test]
    fn race_moves_on_at_once_when_an_attempt_fails() {
        let (ll, v4) = (v6("fe80::1", 47800, 2), a("10.77.0.11:47800"));
        let RaceLog { won, started, .. } = run_race(&[(ll, Answer::Fail(ms(1))), (v4, Answer::Ok(ms(3)))]);
        assert_eq!(won, Ok(v4));
        assert_eq!(started, vec![(ll, ms(0)), (v4, ms(1))]);
    }

    #[test]
    fn race_takes_the_first_handshake_not_the_first_address() {
        let (slow, fast, silent) = (v6("fe80::1", 47800, 2), a("10.77.0.11:47800"), a("10.77.0.12:47800"));
        let RaceLog { won, started, dropped } =
            run_race(&[(slow, Answer::Ok(ms(200))), (fast, Answer::Ok(ms(60))), (silent, Answer::Silent)]);
        assert_eq!(won, Ok(fast));
        assert_eq!(started, vec![(slow, ms(0)), (fast, ms(50)), (silent, ms(100))]);
        // Both losers were still in flight and are abandoned.
        assert_eq!(dropped.len(), 2);
        assert!(dropped.contains(&slow) && dropped.contains(&silent), "{dropped:?}");

        // A first address that answers within the stagger is the only dial.
        let RaceLog { won, started, dropped } = run_race(&[(slow, Answer::Ok(ms(20))), (fast, Answer::Ok(ms(10)))]);
        assert_eq!(won, Ok(slow));
        assert_eq!(started.len(), 1);
        assert!(dropped.is_empty());
    }

    #[test]
    fn race_reports_every_failure() {
        let (x, y) = (a("10.0.0.1:1"), a("10.0.0.2:1"));
        let RaceLog { won, .. } = run_race(&[(x, Answer::Fail(ms(1))), (y, Answer::Fail(ms(70)))]);
        let err = won.unwrap_err();
        assert!(err.contains("10.0.0.1:1") && err.contains("10.0.0.2:1"), "{err}");
    }
}
