//! Connections to other peers: dialing, the Hello handshake (with the
//! optional party-key proof), and refreshing what a peer advertises.

use super::events::PeerEvent;
use super::state::Shared;
use futures::stream::{FuturesUnordered, StreamExt};
use lanspread_core::protocol::{Hello, Request, Response, CAP_PARTY_KEY, CAP_VERIFIED_CHUNKS, PROTOCOL_VERSION};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{Clock, Connection, PeerId, Transport};
use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

/// Exporter label binding party proofs to one TLS session.
const PARTY_LABEL: &[u8] = lanspread_ports::transport::SESSION_EXPORTER_LABEL;

/// The party-key proof of `role` ("client" or "server") on a connection:
/// a BLAKE3 keyed MAC, under a key derived from the party words, over the
/// TLS exporter of this session and both certificate fingerprints. A relay
/// terminates two TLS sessions with different exporters, so a proof it
/// forwards does not verify on the other leg.
pub(crate) fn party_proof(key_words: &str, conn: &dyn Connection, client: &PeerId, server: &PeerId, role: &str) -> Option<[u8; 32]> {
    let exporter = conn.export_keying_material(PARTY_LABEL).ok()?;
    let key = blake3::derive_key("lanspread party key v1", key_words.trim().as_bytes());
    let mut mac = blake3::Hasher::new_keyed(&key);
    mac.update(role.as_bytes());
    mac.update(&exporter);
    mac.update(&client.0);
    mac.update(&server.0);
    Some(*mac.finalize().as_bytes())
}

/// Constant-time comparison of two proofs.
pub(crate) fn proof_matches(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn our_hello(sh: &Shared, conn: &dyn Connection, client: &PeerId, server: &PeerId, role: &str) -> Hello {
    let mut capabilities = vec![CAP_VERIFIED_CHUNKS.to_owned()];
    let party_proof = sh.cfg.party_key.as_deref().and_then(|k| {
        capabilities.push(CAP_PARTY_KEY.to_owned());
        party_proof(k, conn, client, server, role)
    });
    Hello {
        version: PROTOCOL_VERSION,
        peer_id: sh.ports.transport.local_id(),
        capabilities,
        listen_port: sh.ports.transport.local_addr().port(),
        party_proof,
    }
}

async fn with_timeout<T>(sh: &Shared, d: Duration, f: impl std::future::Future<Output = Result<T, WireError>>) -> Result<T, String> {
    tokio::select! {
        biased;
        r = f => r.map_err(|e| e.to_string()),
        _ = sh.ports.clock.sleep(d) => Err(format!("timed out after {d:?}")),
    }
}

/// Client side of the handshake.
async fn hello(sh: &Shared, conn: &dyn Connection) -> Result<Hello, String> {
    let me = sh.ports.transport.local_id();
    let them = conn.peer_id();
    let req = Request::Hello(our_hello(sh, conn, &me, &them, "client"));
    let resp = with_timeout(sh, sh.cfg.request_timeout, wire::request(conn, &req)).await?;
    let Response::Hello(h) = resp else { return Err("peer did not answer Hello".into()) };
    if h.peer_id != them {
        return Err(format!("peer claims id {} but proved {}", h.peer_id, them));
    }
    if h.version != PROTOCOL_VERSION {
        return Err(format!("peer speaks protocol v{}, we speak v{PROTOCOL_VERSION}", h.version));
    }
    if let Some(k) = sh.cfg.party_key.as_deref() {
        let want = party_proof(k, conn, &me, &them, "server").ok_or("no TLS exporter for the party proof")?;
        match h.party_proof {
            Some(p) if proof_matches(&p, &want) => {}
            _ => return Err("peer does not know the party key".into()),
        }
    }
    Ok(h)
}

fn slot(sh: &Shared, peer: PeerId) -> super::state::ConnSlot {
    sh.conns.lock().unwrap_or_else(|e| e.into_inner()).entry(peer).or_default().clone()
}

/// The connection to `peer`, dialing (and saying Hello) if needed.
pub(crate) async fn connection(sh: &Arc<Shared>, peer: PeerId) -> Result<Arc<dyn Connection>, String> {
    let slot = slot(sh, peer);
    let mut guard = slot.lock().await;
    if let Some(c) = guard.as_ref() {
        return Ok(c.clone());
    }
    let addrs = candidates(sh, &peer).ok_or_else(|| format!("peer {peer} is unknown"))?;
    let (addr, conn) = dial(sh, &addrs, Some(peer)).await?;
    remember_winner(sh, peer, addr);
    *guard = Some(conn.clone());
    Ok(conn)
}

/// Every address `peer` is known at, in dial order (`None`: unknown peer).
/// The DB holds one address per peer (the last one that worked or was
/// learned); the others are the addresses it proved or advertised, kept
/// in `known_ids`. A stale one costs at most a stagger step of the race.
fn candidates(sh: &Shared, peer: &PeerId) -> Option<Vec<SocketAddr>> {
    let st = sh.st();
    let preferred = st.db.peer(peer)?.addr;
    let mut all = vec![preferred];
    all.extend(st.known_ids.iter().filter(|(_, id)| *id == peer).map(|(a, _)| *a));
    Some(dial_order(&all, Some(preferred)))
}

/// Makes the address that won a dial the one tried first next time.
fn remember_winner(sh: &Shared, peer: PeerId, addr: SocketAddr) {
    let now = sh.ports.clock.now();
    let mut st = sh.st();
    // Only a peer still known: a peer forgotten while we dialed stays gone.
    if st.db.peer(&peer).is_some_and(|p| p.addr != addr) {
        st.db.upsert_peer(peer, addr, now);
    }
    st.known_ids.insert(addr, peer);
}

/// The usable form of an advertised address, or `None` if no dial can
/// reach it: IPv4-mapped IPv6 becomes IPv4 (one address, one spelling);
/// the scope id is kept only where it means something (link-local IPv6,
/// where it names the interface) and a link-local address without one is
/// dropped (the kernel cannot route it); unspecified, multicast,
/// broadcast and port 0 are dropped.
pub(crate) fn normalize_addr(addr: SocketAddr) -> Option<SocketAddr> {
    if addr.port() == 0 {
        return None;
    }
    match addr {
        SocketAddr::V4(v4) => {
            let ip = v4.ip();
            (!ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast()).then_some(addr)
        }
        SocketAddr::V6(v6) => {
            let ip = *v6.ip();
            if let Some(v4) = ip.to_ipv4_mapped() {
                return normalize_addr(SocketAddr::from((v4, v6.port())));
            }
            if ip.is_unspecified() || ip.is_multicast() {
                return None;
            }
            if ip.is_unicast_link_local() {
                (v6.scope_id() != 0).then(|| SocketAddr::V6(SocketAddrV6::new(ip, v6.port(), 0, v6.scope_id())))
            } else {
                Some(SocketAddr::V6(SocketAddrV6::new(ip, v6.port(), 0, 0)))
            }
        }
    }
}

/// Which addresses to dial, in which order (RFC 8305 style): unusable ones
/// dropped (see [`normalize_addr`]), duplicates dropped, then the families
/// interleaved (so a family that is broken on this LAN costs one stagger
/// step, not a timeout), each in the given order; `preferred` (the address
/// that worked last) goes first. IPv4 leads, unlike RFC 8305's IPv6: on a
/// LAN the IPv6 addresses are mostly link-local ones, which s2n-quic peers
/// cannot answer on, while IPv4 is what every peer serves.
pub(crate) fn dial_order(addrs: &[SocketAddr], preferred: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut seen = BTreeSet::new();
    let usable: Vec<SocketAddr> = addrs.iter().filter_map(|a| normalize_addr(*a)).filter(|a| seen.insert(*a)).collect();
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = usable.into_iter().partition(SocketAddr::is_ipv4);
    let mut out = Vec::with_capacity(v4.len() + v6.len());
    for i in 0..v4.len().max(v6.len()) {
        out.extend(v4.get(i).copied());
        out.extend(v6.get(i).copied());
    }
    if let Some(pos) = preferred.and_then(normalize_addr).and_then(|p| out.iter().position(|a| *a == p)) {
        let first = out.remove(pos);
        out.insert(0, first);
    }
    out
}

/// How long a dial waits for the attempt in flight before it also tries
/// the next address. A LAN handshake takes a few milliseconds; RFC 8305's
/// 250 ms is meant for the Internet. An attempt that fails outright starts
/// the next one at once.
pub(crate) const DIAL_STAGGER: Duration = Duration::from_millis(50);

/// Dials `addrs` (in order) happy-eyeballs style and says Hello on the
/// first connection to complete its handshake; the attempts still in
/// flight are dropped (which closes them). Bounded by the request timeout.
async fn dial(sh: &Arc<Shared>, addrs: &[SocketAddr], expected: Option<PeerId>) -> Result<(SocketAddr, Arc<dyn Connection>), String> {
    let t = sh.cfg.request_timeout;
    let (addr, conn) = tokio::select! {
        biased;
        r = race(&sh.ports.transport, sh.ports.clock.as_ref(), addrs, expected) => r?,
        _ = sh.ports.clock.sleep(t) => return Err(format!("connect to {} timed out", show_addrs(addrs))),
    };
    if let Err(e) = hello(sh, conn.as_ref()).await {
        conn.close(1, "handshake failed");
        return Err(e);
    }
    Ok((addr, conn))
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
) -> Result<(SocketAddr, Arc<dyn Connection>), String> {
    if addrs.is_empty() {
        return Err("no usable address".into());
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
                None => return Err(errors.join("; ")),
            }
        }
        let more = next.len() > 0;
        tokio::select! {
            biased;
            done = running.next() => match done {
                Some((addr, Ok(conn))) => return Ok((addr, Arc::from(conn))),
                Some((addr, Err(e))) => {
                    tracing::debug!("dialing {addr}: {e}");
                    errors.push(e.to_string());
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

/// Forgets the connection to `peer` (it failed).
pub(crate) fn drop_connection(sh: &Shared, peer: &PeerId) {
    let slot = sh.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(peer);
    if let Some(slot) = slot {
        if let Ok(mut g) = slot.try_lock() {
            if let Some(c) = g.take() {
                c.close(0, "dropped");
            }
        }
    }
}

/// Records a peer reached at `addr` (an incoming Hello, a static dial);
/// see [`learn_peer_addrs`].
pub(crate) fn learn_peer(sh: &Arc<Shared>, id: PeerId, addr: SocketAddr) -> bool {
    learn_peer_addrs(sh, id, &[addr])
}

/// Records a peer and every address it can be reached at; returns whether
/// it is new. A new peer's library is listed at once (a running download
/// picks it up on its next membership check, not on a liveness tick); so
/// is a known peer's when it shows addresses we did not know while we
/// have no connection to it (mDNS resolves addresses one by one, and the
/// first ones may have been unreachable). Refuses our own id and adverts
/// without a usable address. (Bans are per download, see `download.rs`.)
pub(crate) fn learn_peer_addrs(sh: &Arc<Shared>, id: PeerId, addrs: &[SocketAddr]) -> bool {
    if id == sh.ports.transport.local_id() {
        return false;
    }
    let order = dial_order(addrs, None);
    let Some(&first) = order.first() else {
        tracing::debug!("peer {id}: no usable address in {}", show_addrs(addrs));
        return false;
    };
    let now = sh.ports.clock.now();
    let (new, grew, count, primary) = {
        let mut st = sh.st();
        let mut grew = false;
        for a in &order {
            grew |= st.known_ids.insert(*a, id) != Some(id);
        }
        // Keep the address that worked if the peer still has it.
        let primary = st.db.peer(&id).map(|p| p.addr).filter(|a| order.contains(a)).unwrap_or(first);
        let new = st.db.upsert_peer(id, primary, now);
        (new, grew, st.db.peer_count(), primary)
    };
    if new {
        sh.emit(PeerEvent::PeerJoined { peer: id, addr: primary });
        sh.emit(PeerEvent::PeerCount(count));
    }
    if new || (grew && !is_connected(sh, &id)) {
        let sh2 = sh.clone();
        sh.spawn(async move { refresh_peer(&sh2, id).await });
    }
    new
}

/// Whether an established connection to `peer` is held (a dial in
/// progress does not count: it may be failing on old addresses).
fn is_connected(sh: &Shared, peer: &PeerId) -> bool {
    let slot = sh.conns.lock().unwrap_or_else(|e| e.into_inner()).get(peer).cloned();
    slot.is_some_and(|s| s.try_lock().is_ok_and(|g| g.is_some()))
}

/// Removes a peer (left, pruned or banned).
pub(crate) fn forget_peer(sh: &Shared, id: &PeerId) {
    let (removed, count) = {
        let mut st = sh.st();
        st.peer_revs.remove(id);
        (st.db.remove_peer(id), st.db.peer_count())
    };
    drop_connection(sh, id);
    if removed {
        sh.emit(PeerEvent::PeerLeft(*id));
        sh.emit(PeerEvent::PeerCount(count));
        sh.emit_snapshot();
    }
}

/// Dials a static address (`--peer`), learning the identity it proves.
pub(crate) async fn dial_static(sh: &Arc<Shared>, addr: SocketAddr) -> Result<PeerId, String> {
    let pinned = normalize_addr(addr).and_then(|a| sh.st().known_ids.get(&a).copied());
    let (_, conn) = dial(sh, &[addr], pinned).await.map_err(|e| {
        if e.contains("identity") || e.contains("presented") {
            let msg = format!("peer at {addr} changed its key (was {}): refusing it — {e}", pinned.map(|p| p.to_hex()).unwrap_or_default());
            sh.emit(PeerEvent::RuntimeFailure(msg.clone()));
            msg
        } else {
            e
        }
    })?;
    let id = conn.peer_id();
    *slot(sh, id).lock().await = Some(conn);
    learn_peer(sh, id, addr);
    Ok(id)
}

/// Fetches a peer's game list into the DB.
pub(crate) async fn refresh_peer(sh: &Arc<Shared>, peer: PeerId) {
    let result = async {
        let conn = connection(sh, peer).await?;
        with_timeout(sh, sh.cfg.request_timeout, wire::request(conn.as_ref(), &Request::ListGames)).await
    }
    .await;
    match result {
        Ok(Response::Games(games)) => {
            let now = sh.ports.clock.now();
            let changed = sh.st().db.set_peer_games(&peer, games, now);
            if changed {
                sh.emit_snapshot();
            }
        }
        Ok(other) => tracing::debug!("peer {peer} answered ListGames with {other:?}"),
        Err(e) => {
            tracing::debug!("listing games of {peer}: {e}");
            drop_connection(sh, &peer);
        }
    }
}

/// One liveness probe: Ping, and re-list if the peer's library changed.
pub(crate) async fn ping(sh: &Arc<Shared>, peer: PeerId) -> bool {
    let nonce = sh.ports.clock.now().as_duration().as_nanos() as u64;
    let result = async {
        let conn = connection(sh, peer).await?;
        with_timeout(sh, sh.cfg.request_timeout, wire::request(conn.as_ref(), &Request::Ping { nonce })).await
    }
    .await;
    match result {
        Ok(Response::Pong { nonce: n, library_rev }) if n == nonce => {
            let now = sh.ports.clock.now();
            let relist = {
                let mut st = sh.st();
                st.db.touch_peer(&peer, now);
                st.peer_revs.insert(peer, library_rev) != Some(library_rev)
            };
            if relist {
                refresh_peer(sh, peer).await;
            }
            true
        }
        _ => {
            drop_connection(sh, &peer);
            false
        }
    }
}

/// A request to a peer with the control timeout.
pub(crate) async fn request(sh: &Arc<Shared>, peer: PeerId, req: &Request) -> Result<Response, String> {
    let conn = connection(sh, peer).await?;
    let r = with_timeout(sh, sh.cfg.request_timeout, wire::request(conn.as_ref(), req)).await;
    if r.is_err() {
        drop_connection(sh, &peer);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use lanspread_ports::{BiStream, TransportError};
    use lanspread_testkit::clock::SimClock;
    use std::sync::Mutex;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v6(ip: &str, port: u16, scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(ip.parse().unwrap(), port, 0, scope))
    }

    #[test]
    fn normalize_keeps_link_local_scope_and_drops_what_cannot_be_dialed() {
        assert_eq!(normalize_addr(v6("fe80::1", 47800, 3)), Some(v6("fe80::1", 47800, 3)));
        // No interface: the kernel cannot route it.
        assert_eq!(normalize_addr(v6("fe80::1", 47800, 0)), None);
        // A scope id means nothing on a global address.
        assert_eq!(normalize_addr(v6("2001:db8::1", 47800, 3)), Some(v6("2001:db8::1", 47800, 0)));
        assert_eq!(normalize_addr(a("[::ffff:10.77.0.11]:47800")), Some(a("10.77.0.11:47800")));
        for bad in ["0.0.0.0:47800", "[::]:47800", "10.0.0.1:0", "224.0.0.251:5353", "[ff02::fb]:5353", "255.255.255.255:1"] {
            assert_eq!(normalize_addr(a(bad)), None, "{bad}");
        }
    }

    #[test]
    fn dial_order_interleaves_families_ipv4_first() {
        let ll = v6("fe80::64bc:1", 47800, 2);
        let got = dial_order(&[ll, a("[2001:db8::4]:47800"), a("[2001:db8::5]:47800"), a("10.77.0.11:47800")], None);
        assert_eq!(got, vec![a("10.77.0.11:47800"), ll, a("[2001:db8::4]:47800"), a("[2001:db8::5]:47800")]);
        let got = dial_order(&[a("10.77.0.11:47800"), a("192.168.1.4:47800"), ll], None);
        assert_eq!(got, vec![a("10.77.0.11:47800"), ll, a("192.168.1.4:47800")]);
        // Only one family: kept in the given order.
        let v4 = [a("10.0.0.2:1"), a("10.0.0.1:1")];
        assert_eq!(dial_order(&v4, None), v4.to_vec());
    }

    #[test]
    fn dial_order_dedups_and_puts_the_preferred_address_first() {
        let ll2 = v6("fe80::1", 47800, 2);
        let ll3 = v6("fe80::1", 47800, 3);
        let addrs = [a("10.77.0.11:47800"), a("[::ffff:10.77.0.11]:47800"), ll2, ll3, ll2, v6("fe80::9", 47800, 0)];
        // The same link-local address on two interfaces is two addresses.
        assert_eq!(dial_order(&addrs, None), vec![a("10.77.0.11:47800"), ll2, ll3]);
        assert_eq!(dial_order(&addrs, Some(ll3)), vec![ll3, a("10.77.0.11:47800"), ll2]);
        assert_eq!(dial_order(&addrs, Some(a("[::ffff:10.77.0.11]:47800")))[0], a("10.77.0.11:47800"));
        // A preferred address that is not advertised is not added.
        assert_eq!(dial_order(&addrs, Some(a("10.9.9.9:1"))).len(), 3);
        assert!(dial_order(&[a("0.0.0.0:1"), v6("fe80::1", 1, 0)], None).is_empty());
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
            let won = race(&transport, &clock, &addrs, None).await.map(|(x, conn)| {
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
