//! A flooding host over real QUIC (quinn, loopback): connections that never
//! say Hello and streams whose replies are never read do not stop an honest
//! peer's download.

use lanspread::{Builder, Catalog, DiscoveryKind, DownloadOptions, GameId, TransportKind};
use lanspread_core::protocol::{Hello, Request, Response, MAX_REQUEST_FRAME, PROTOCOL_VERSION};
use lanspread_core::wire;
use lanspread_ports::{Connection, RelPath, Transport};
use lanspread_tls::{Identity, TransportLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1 << 20;
const CATALOG: &str = "[[games]]\nid = \"arena\"\nname = \"Arena\"\n";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn peer(dir: &std::path::Path, static_peers: Vec<SocketAddr>) -> lanspread::Peer {
    Builder::new()
        .game_dir(dir)
        .dir_lock(false)
        .catalog(Catalog::from_toml(CATALOG).unwrap())
        .ephemeral_identity()
        .transport(TransportKind::Quinn)
        .listen(loopback())
        .discovery(DiscoveryKind::None)
        .static_peers(static_peers)
        .config(|c| c.auto_install = false)
        .spawn()
        .await
        .unwrap()
}

/// Holds `n` connections to `target` that never say Hello.
async fn idle_connections(flooder: &Arc<dyn Transport>, target: SocketAddr, n: usize) -> Vec<Box<dyn Connection>> {
    let mut held = Vec::new();
    for _ in 0..n {
        if let Ok(c) = flooder.connect(target, None).await {
            held.push(c);
        }
    }
    held
}

/// Says Hello, then asks for 1 MiB of `path` on `streams` streams and never
/// reads a reply.
async fn stalled_readers(
    flooder: &Arc<dyn Transport>,
    target: SocketAddr,
    path: &str,
    streams: usize,
) -> Vec<Box<dyn std::any::Any + Send>> {
    let conn = flooder.connect(target, None).await.expect("the flooder connects");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        peer_id: flooder.local_id(),
        capabilities: vec![],
        listen_port: 0,
        pake: None,
        party_proof: None,
    };
    assert!(matches!(wire::request(conn.as_ref(), &Request::Hello(hello)).await, Ok(Response::Hello(_))));
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    for k in 0..streams {
        let Ok((mut send, recv)) = conn.open_bi().await else { break };
        let req = Request::GetGameFileChunk {
            id: GameId::new("arena").unwrap(),
            path: RelPath::new(path).unwrap(),
            offset: ((k % 16) * MIB) as u64,
            len: MIB as u64,
        };
        let _ = wire::write_message(send.as_mut(), &req, MAX_REQUEST_FRAME).await;
        held.push(Box::new((send, recv)));
    }
    held.push(Box::new(conn));
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_download_completes_while_one_host_floods() {
    let (seed_dir, down_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = seed_dir.path().join("arena");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..16 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("arena.bin"), &data).unwrap();
    std::fs::write(root.join("version.ini"), "1.0\n").unwrap();
    let seeder = peer(seed_dir.path(), vec![]).await;
    seeder.library().wait_for(|s| s.games.iter().any(|g| g.shared)).await.unwrap();

    let flooder: Arc<dyn Transport> =
        lanspread_quinn::QuinnTransport::listen(loopback(), &Identity::generate().unwrap(), TransportLimits::default()).unwrap();
    // Fewer streams than the connection's stream credit (64, the Hello's
    // included), so the flooder itself does not wait for credit.
    let _stalled = stalled_readers(&flooder, seeder.addr(), "arena/arena.bin", 48).await;
    let _idle = idle_connections(&flooder, seeder.addr(), 100).await;

    // Peers on loopback share the flooder's host: the honest one gets in
    // once the Hello deadline closed the idle connections.
    let downloader = peer(down_dir.path(), vec![seeder.addr()]).await;
    let id = GameId::new("arena").unwrap();
    let holder = downloader.library().wait_for(|s| s.games.iter().any(|g| g.id == id && !g.peers_with_latest.is_empty())).await.is_ok();
    assert!(holder);
    let download = downloader.download(&id, DownloadOptions::default()).await.expect("starts");
    let report = tokio::time::timeout(Duration::from_secs(60), download).await.expect("completes in time").expect("succeeds");
    assert!(report.complete);
    assert_eq!(std::fs::read(down_dir.path().join("arena/arena.bin")).unwrap(), data);
    downloader.shutdown().await;
    seeder.shutdown().await;
    flooder.shutdown().await;
}
