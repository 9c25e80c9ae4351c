//! Trust over real QUIC (quinn and s2n-quic on loopback): the party key
//! keeps strangers out, a lying seeder is banned, a pinned peer's key change
//! is refused by the transport.
// s2n-quic builds on Unix only.
#![cfg(unix)]

use lanspread::{Builder, DiscoveryKind, Events, PeerCommand, PeerEvent};
use lanspread_core::catalog::Catalog;
use lanspread_core::game::GameId;
use lanspread_ports::{Transport, TransportError};
use lanspread_tls::{Identity, TransportLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const CATALOG: &str = "[[games]]\nid = \"arena\"\nname = \"Arena\"\n";

fn transport(s2n: bool) -> Arc<dyn Transport> {
    let id = Identity::generate().unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    if s2n {
        lanspread_s2n::S2nTransport::listen(addr, &id, TransportLimits::default()).unwrap()
    } else {
        lanspread_quinn::QuinnTransport::listen(addr, &id, TransportLimits::default()).unwrap()
    }
}

struct Peer {
    handle: lanspread::Peer,
    events: Events,
    _dir: tempfile::TempDir,
}

fn peer(s2n: bool, key: Option<&str>, seed_game: bool, static_peers: Vec<SocketAddr>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    if seed_game {
        let root = dir.path().join("arena");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("arena.bin"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(root.join("version.ini"), "1.0\n").unwrap();
    }
    // The game directory, unpacker and clock are the builder's real ones;
    // the transport is chosen here so both QUIC stacks meet.
    let handle = Builder::new()
        .game_dir(dir.path())
        .dir_lock(false)
        .catalog(Catalog::from_toml(CATALOG).unwrap())
        .custom_transport(transport(s2n))
        .discovery(DiscoveryKind::None)
        .static_peers(static_peers)
        .party_key(key.map(str::to_owned))
        .config(|c| c.auto_install = false)
        .assemble()
        .unwrap()
        .start();
    let events = handle.subscribe();
    Peer { handle, events, _dir: dir }
}

/// Collects events for `d` and returns whether `pred` matched one.
async fn saw(p: &mut Peer, d: Duration, pred: impl Fn(&PeerEvent) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, p.events.recv()).await {
            Ok(Ok(e)) if pred(&e) => return true,
            Ok(Ok(_) | Err(lanspread::EventsError::Lagged { .. })) => continue,
            _ => return false,
        }
    }
}

fn holds(e: &PeerEvent) -> bool {
    matches!(e, PeerEvent::LibrarySnapshot { games, .. } if games.iter().any(|g| g.id.as_str() == "arena" && !g.peers_with_latest.is_empty()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_key_over_real_quic() {
    for (host_s2n, guest_s2n) in [(false, true), (true, false)] {
        let host = peer(host_s2n, Some("lan party 2026"), true, vec![]);
        let mut friend = peer(guest_s2n, Some("lan party 2026"), false, vec![host.handle.addr()]);
        let mut stranger = peer(guest_s2n, None, false, vec![host.handle.addr()]);
        let mut wrong = peer(guest_s2n, Some("another party"), false, vec![host.handle.addr()]);
        assert!(saw(&mut friend, Duration::from_secs(10), holds).await, "the friend sees the game");
        friend.handle.send(PeerCommand::download(GameId::new("arena").unwrap()));
        assert!(
            saw(&mut friend, Duration::from_secs(20), |e| matches!(e, PeerEvent::DownloadFinished { .. })).await,
            "the friend downloads it"
        );
        assert!(!saw(&mut stranger, Duration::from_secs(2), holds).await, "a stranger sees nothing");
        assert!(!saw(&mut wrong, Duration::from_millis(500), holds).await, "a wrong key sees nothing");
        for p in [host, friend, stranger, wrong] {
            p.handle.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_identity_mismatch_is_refused_by_both_stacks() {
    for (a_s2n, b_s2n) in [(false, false), (true, true), (false, true), (true, false)] {
        let a = transport(a_s2n);
        let b = transport(b_s2n);
        let wrong = lanspread_ports::PeerId([9; 32]);
        let r = b.connect(a.local_addr(), Some(wrong)).await;
        assert!(matches!(r, Err(TransportError::IdentityMismatch { got, .. }) if got == a.local_id()), "{a_s2n} {b_s2n}: {:?}", r.err());
        let ok = b.connect(a.local_addr(), Some(a.local_id())).await.expect("the right id connects");
        assert_eq!(ok.peer_id(), a.local_id());
        a.shutdown().await;
        b.shutdown().await;
    }
}
