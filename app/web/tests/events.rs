//! The event stream: the full state on a fresh connect, replays on a
//! reconnect, resynchronization of slow clients, the life of a download,
//! and streams ending when the server shuts down.

mod common;

use axum::http::StatusCode;
use common::*;
use lanspread::{Builder, DiscoveryKind, PeerCommand};
use lanspread_memfs::MemFs;
use lanspread_testkit::{ms, Sim};
use lanspread_web::{serve, UiConfig, RING};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Makes the peer emit `n` `peer-count` events.
fn peer_counts(peer: &lanspread::Peer, n: usize) {
    for _ in 0..n {
        peer.send(PeerCommand::GetPeerCount);
    }
}

#[test]
fn a_fresh_stream_starts_with_the_full_library() {
    Sim::run("web_sse_fresh", 11, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let mut events = Events::open(&ui, None).await;
        let first = events.next().await;
        assert_eq!(first.name, "games-list-updated");
        let games = first.data["games"].as_array().expect("the library");
        assert_eq!(games.len(), 1);
        assert_eq!((&games[0]["id"], &games[0]["state"], &games[0]["holders"]), (&json!("arena"), &json!("remote"), &json!(1)));
        // Then live events, with higher ids.
        peer_counts(&d, 1);
        let next = events.next_named("peer-count").await;
        assert_eq!(next.data, json!({"count": 1}));
        assert!(next.id > first.id);
        sim
    });
}

#[test]
fn a_reconnect_with_a_recent_id_gets_only_what_it_missed() {
    Sim::run("web_sse_replay", 12, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let mut a = Events::open(&ui, None).await;
        let start = a.next().await;
        peer_counts(&d, 3);
        // What a client that stayed connected saw after `start`.
        let mut seen = Vec::new();
        while seen.iter().filter(|e: &&SseEvent| e.name == "peer-count").count() < 3 {
            seen.push(a.next().await);
        }
        let mut b = Events::open(&ui, Some(&start.id.to_string())).await;
        let mut replayed = Vec::new();
        for _ in 0..seen.len() {
            replayed.push(b.next().await);
        }
        assert_eq!(replayed, seen, "the missed events, in order, with their ids");
        assert_eq!(replayed[0].id, start.id + 1);
        assert!(replayed.windows(2).all(|w| w[1].id == w[0].id + 1), "none missing");
        sim
    });
}

#[test]
fn a_reconnect_with_an_unknown_or_too_old_id_gets_the_full_state_first() {
    Sim::run("web_sse_too_old", 13, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let start = Events::open(&ui, None).await.next().await.id;
        for unknown in ["not-a-number".to_owned(), (start + 1000).to_string()] {
            let first = Events::open(&ui, Some(&unknown)).await.next().await;
            assert_eq!(first.name, "games-list-updated", "Last-Event-ID {unknown}");
            assert!(first.id >= start, "ids keep increasing");
        }
        // More events than the ring holds: `start` falls out of it.
        peer_counts(&d, RING + 88);
        sim.sleep(ms(500)).await;
        let mut late = Events::open(&ui, Some(&start.to_string())).await;
        let first = late.next().await;
        assert_eq!(first.name, "games-list-updated");
        assert!(first.id >= start + RING as u64 + 88, "numbered after everything published: {} vs {start}", first.id);
        assert_eq!(first.data["games"][0]["id"], json!("arena"));
        // An id still in the ring replays what came after it.
        let mut recent = Events::open(&ui, Some(&(first.id - 10).to_string())).await;
        for i in 1..=10 {
            let e = recent.next().await;
            assert_eq!((e.id, e.name.as_str()), (first.id - 10 + i, "peer-count"));
        }
        sim
    });
}

#[test]
fn a_client_that_falls_behind_gets_the_full_state_instead_of_an_error() {
    Sim::run("web_sse_lagged", 14, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let mut slow = Events::open(&ui, None).await;
        let start = slow.next().await;
        // The client reads nothing while far more than its buffer happens.
        peer_counts(&d, lanspread_web::LIVE * 2);
        sim.sleep(ms(500)).await;
        let resync = slow.next().await;
        assert_eq!(resync.name, "games-list-updated");
        assert!(resync.id >= start.id + 2 * lanspread_web::LIVE as u64, "{} after {}", resync.id, start.id);
        // Nothing older than the resync follows it; new events do.
        peer_counts(&d, 1);
        let next = slow.next().await;
        assert_eq!(next.name, "peer-count");
        assert!(next.id > resync.id);
        sim
    });
}

#[test]
fn a_get_is_told_from_download_begin_to_install_finished() {
    Sim::run("web_sse_get", 15, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let mut events = Events::open(&ui, None).await;
        events.next().await;
        assert_eq!(send(&ui, post("/api/v1/games/arena/get", "{}")).await.status, StatusCode::ACCEPTED);
        let mut seen = Vec::new();
        while seen.last().is_none_or(|e: &SseEvent| e.name != "game-install-finished") {
            seen.push(events.next().await);
        }
        assert!(seen.windows(2).all(|w| w[1].id > w[0].id), "ids increase");
        let at = |name: &str| seen.iter().position(|e| e.name == name).unwrap_or_else(|| panic!("no {name} in {seen:#?}"));
        let order =
            ["game-download-begin", "game-download-progress", "game-download-finished", "game-install-begin", "game-install-finished"];
        let positions: Vec<usize> = order.iter().map(|n| at(n)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{order:?} in order: {positions:?}");
        let begin = &seen[positions[0]].data;
        assert_eq!(
            (&begin["id"], &begin["version"], &begin["peers"][0]),
            (&json!("arena"), &json!("1.0"), &json!(sim.peer("s").id.to_hex()))
        );
        let progress = &seen[positions[1]].data["progress"];
        assert!(progress["done"].as_u64().unwrap() <= progress["total"].as_u64().unwrap(), "{progress}");
        let finished = &seen[positions[2]].data;
        assert_eq!(finished["version"], json!("1.0"));
        assert!(finished["bytes"].as_u64().unwrap() + finished["reused"].as_u64().unwrap() > GAME_BYTES);
        // The library is published before each lifecycle event, so a page
        // never shows a finished step with a stale state.
        let list_before = |pos: usize| {
            seen[..pos].iter().rev().find(|e| e.name == "games-list-updated").unwrap_or_else(|| panic!("no library before {pos}"))
        };
        assert_eq!(list_before(positions[0]).data["games"][0]["state"], json!("downloading"));
        let settled = &list_before(positions[2]).data["games"][0];
        assert_eq!((&settled["state"], &settled["operation"]), (&json!("downloaded"), &json!(null)));
        assert_eq!(list_before(positions[3]).data["games"][0]["operation"], json!("installing"));
        let last_list = seen.iter().rev().find(|e| e.name == "games-list-updated").expect("the library after the install");
        assert_eq!(last_list.data["games"][0]["state"], json!("installed"));
        sim
    });
}

#[test]
fn download_progress_reaches_the_stream_at_most_four_times_a_second() {
    Sim::run("web_sse_throttle", 16, |mut sim| async move {
        // The runtime reports progress every 10 ms: 25 times too often.
        let config = lanspread::PeerConfig { progress_interval: ms(10), ..Sim::config(catalog()) };
        let d = lan_with(&mut sim, true, MemFs::unrecorded(), config).await;
        let ui = ui(&d);
        let mut events = Events::open(&ui, None).await;
        assert_eq!(send(&ui, post("/api/v1/games/arena/get", "{\"install\": false}")).await.status, StatusCode::ACCEPTED);
        let mut shown = Vec::new();
        let finished = loop {
            let e = events.next().await;
            match e.name.as_str() {
                "game-download-finished" => break e,
                "game-download-progress" => shown.push(e),
                _ => {}
            }
        };
        let raw = sim.events("d").iter().filter(|(_, e)| matches!(e, lanspread::PeerEvent::DownloadProgress { .. })).count();
        let secs = finished.data["secs"].as_f64().expect("seconds");
        assert!(raw >= 100, "the runtime reported {raw} times in {secs} s");
        let most = (secs * 4.0).ceil() as usize + 1;
        assert!(!shown.is_empty() && shown.len() <= most, "{} progress events shown in {secs} s (at most {most})", shown.len());
        let done: Vec<u64> = shown.iter().map(|e| e.data["progress"]["done"].as_u64().expect("bytes")).collect();
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "the latest figures, in order: {done:?}");
        sim
    });
}

/// The server on a real socket: a shutdown ends open event streams, so it
/// returns instead of waiting for them.
#[tokio::test]
async fn serve_ends_open_streams_on_shutdown() {
    let games = tempfile::tempdir().expect("a directory");
    let peer = Builder::new()
        .game_dir(games.path())
        .ephemeral_identity()
        .listen("127.0.0.1:0".parse().expect("an address"))
        .discovery(DiscoveryKind::None)
        .spawn()
        .await
        .expect("a peer");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address");
    let cfg = UiConfig::new(token(), addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, lanspread_web::router(peer.clone(), cfg), async move {
        let _ = stopped.await;
    }));

    let mut client = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let request = format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n", token().to_hex());
    client.write_all(request.as_bytes()).await.expect("sent");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("event: games-list-updated") {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await.expect("in time").expect("reads");
        assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));

    stop.send(()).expect("the server waits for it");
    let served = tokio::time::timeout(Duration::from_secs(10), server).await.expect("serve returns despite the open stream");
    served.expect("no panic").expect("no IO error");
    // The client sees its stream end.
    let eof = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "the stream was closed");
    peer.shutdown().await;
}
