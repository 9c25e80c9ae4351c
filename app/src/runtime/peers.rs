//! Connections to other peers: dialing, the Hello handshake (with the
//! optional party-key proof), and refreshing what a peer advertises.

use super::events::PeerEvent;
use super::state::Shared;
use lanspread_core::protocol::{Hello, Request, Response, CAP_PARTY_KEY, CAP_VERIFIED_CHUNKS, PROTOCOL_VERSION};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{Connection, PeerId};
use std::net::SocketAddr;
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
    let addr = sh.st().db.peer(&peer).map(|p| p.addr).ok_or_else(|| format!("peer {peer} is unknown"))?;
    let conn = dial(sh, addr, Some(peer)).await?;
    *guard = Some(conn.clone());
    Ok(conn)
}

async fn dial(sh: &Arc<Shared>, addr: SocketAddr, expected: Option<PeerId>) -> Result<Arc<dyn Connection>, String> {
    let t = sh.cfg.request_timeout;
    let conn: Arc<dyn Connection> = tokio::select! {
        biased;
        r = sh.ports.transport.connect(addr, expected) => Arc::from(r.map_err(|e| e.to_string())?),
        _ = sh.ports.clock.sleep(t) => return Err(format!("connect to {addr} timed out")),
    };
    if let Err(e) = hello(sh, conn.as_ref()).await {
        conn.close(1, "handshake failed");
        return Err(e);
    }
    Ok(conn)
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

/// Records a peer; emits join events if it is new. Refuses a known address
/// that now proves another identity.
pub(crate) fn learn_peer(sh: &Arc<Shared>, id: PeerId, addr: SocketAddr) -> bool {
    if id == sh.ports.transport.local_id() {
        return false;
    }
    let now = sh.ports.clock.now();
    let (new, count, banned) = {
        let mut st = sh.st();
        let banned = st.banned.contains(&id);
        let new = !banned && st.db.upsert_peer(id, addr, now);
        st.known_ids.insert(addr, id);
        (new, st.db.peer_count(), banned)
    };
    if banned {
        return false;
    }
    if new {
        sh.emit(PeerEvent::PeerJoined { peer: id, addr });
        sh.emit(PeerEvent::PeerCount(count));
        let sh2 = sh.clone();
        sh.spawn(async move { refresh_peer(&sh2, id).await });
    }
    new
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
    let pinned = sh.st().known_ids.get(&addr).copied();
    let conn = dial(sh, addr, pinned).await.map_err(|e| {
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
