//! What the router tests share: simulated LANs with real peers, requests
//! that pass the guard, and a reader of the event stream.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use lanspread::{Catalog, CatalogEntry, GameId, Peer, PeerConfig, Snapshot};
use lanspread_memfs::MemFs;
use lanspread_testkit::{ms, HostConfig, Sim, SimGame};
use lanspread_web::{router, Token, UiConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The `Host` the test UI answers to.
pub const HOST: &str = "127.0.0.1:7878";
/// The size of the test game's archive.
pub const GAME_BYTES: u64 = 4 << 20;

/// The test UI's token.
pub fn token() -> Token {
    Token::from_hex(&"5a".repeat(32)).expect("64 hex digits")
}

/// The UI of `peer` on [`HOST`].
pub fn ui(peer: &Peer) -> Router {
    router(peer.clone(), UiConfig::new(token(), HOST.parse().expect("an address")))
}

pub fn arena() -> GameId {
    GameId::new("arena").expect("valid id")
}

/// The test game.
pub fn game() -> SimGame {
    SimGame::new("arena", "1.0", GAME_BYTES)
}

/// A catalog with the test game, described.
pub fn catalog() -> Catalog {
    let entry = CatalogEntry { description: Some("A fast shooter.".into()), genre: Some("Shooter".into()), ..game().entry() };
    Catalog::from_entries([entry])
}

/// Bytes per second each host sends and receives: the test game takes two
/// seconds (of virtual time) to download, long enough to act on it.
pub const BANDWIDTH: f64 = 2e6;

/// A seeder `s` holding the game (when `seeded`) and a downloader `d` with
/// `d_fs`; returns `d`'s handle once it sees the holder.
pub async fn lan(sim: &mut Sim, seeded: bool, d_fs: MemFs) -> Peer {
    lan_with(sim, seeded, d_fs, Sim::config(catalog())).await
}

/// [`lan`] with `d` configured by `d_config` (its game directory said to
/// be /srv/games unless the config names one).
pub async fn lan_with(sim: &mut Sim, seeded: bool, d_fs: MemFs, mut d_config: PeerConfig) -> Peer {
    d_config.game_dir.get_or_insert_with(|| "/srv/games".into());
    if seeded {
        let fs = MemFs::unrecorded();
        game().write(&fs, &sim.rng);
        let hs = sim.host("s", HostConfig::symmetric(BANDWIDTH, ms(1)));
        sim.spawn("s", hs, fs, Sim::config(catalog()));
    }
    let hd = sim.host("d", HostConfig::symmetric(BANDWIDTH, ms(1)));
    sim.spawn("d", hd, d_fs, d_config);
    let d = sim.peer("d").handle().expect("d runs");
    if seeded {
        wait_snapshot(&d, |s| s.games.iter().any(|g| g.id == arena() && g.hosts_with_latest > 0)).await;
    }
    d
}

/// Waits (virtual time, 60 s at most) until `peer`'s state meets `cond`.
pub async fn wait_snapshot(peer: &Peer, cond: impl FnMut(&Arc<Snapshot>) -> bool) {
    let mut library = peer.library();
    tokio::time::timeout(Duration::from_secs(60), library.wait_for(cond)).await.expect("reached in time").expect("the peer runs");
}

/// A request that passes the guard.
pub fn request(method: Method, path: &str, body: Option<&str>) -> Request<Body> {
    let mut b =
        Request::builder().method(method).uri(path).header("host", HOST).header("authorization", format!("Bearer {}", token().to_hex()));
    if let Some(body) = body {
        b = b.header("content-type", "application/json").header("content-length", body.len());
    }
    b.body(body.map_or_else(Body::empty, |s| Body::from(s.to_owned()))).expect("a request")
}

pub fn get(path: &str) -> Request<Body> {
    request(Method::GET, path, None)
}

pub fn post(path: &str, body: &str) -> Request<Body> {
    request(Method::POST, path, Some(body))
}

/// An answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.json())).to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req` through `ui` (no network).
pub async fn send(ui: &Router, req: Request<Body>) -> Answer {
    let response = ui.clone().oneshot(req).await.expect("the router answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a body").to_bytes().to_vec();
    Answer { status: parts.status, headers: parts.headers, body }
}

/// Polls `GET /api/v1/games/arena` (virtual time, 60 s at most) until
/// `cond` holds for it; returns it.
pub async fn wait_game(ui: &Router, cond: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let game = send(ui, get("/api/v1/games/arena")).await.json();
        if cond(&game) {
            return game;
        }
        tokio::time::sleep(ms(100)).await;
    }
    panic!("the game never reached the state: {}", send(ui, get("/api/v1/games/arena")).await.json());
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: u64,
    pub name: String,
    pub data: Value,
}

/// Reads an event stream's body event by event.
pub struct Events {
    body: Body,
    buf: String,
}

impl Events {
    /// Opens `GET /api/v1/events` (with `Last-Event-ID: last`, if given).
    pub async fn open(ui: &Router, last: Option<&str>) -> Events {
        let mut req = get("/api/v1/events");
        if let Some(id) = last {
            req.headers_mut().insert("last-event-id", id.parse().expect("a header value"));
        }
        let response = ui.clone().oneshot(req).await.expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK);
        let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(ct, "text/event-stream");
        Events { body: response.into_body(), buf: String::new() }
    }

    /// The next event within `within` (virtual time), skipping keep-alive
    /// comments; `None` if none came or the stream ended.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.read()).await.ok().flatten()
    }

    /// The next event (60 s of virtual time at most).
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(Duration::from_secs(60)).await.expect("an event in time")
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str) -> SseEvent {
        loop {
            let e = self.next().await;
            if e.name == name {
                return e;
            }
        }
    }

    async fn read(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(e) = parse(&block) {
                    return Some(e);
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).expect("UTF-8"));
            }
        }
    }
}

/// One SSE block; `None` for a comment-only block (keep-alive).
fn parse(block: &str) -> Option<SseEvent> {
    let (mut id, mut name, mut data) = (None, None, String::new());
    for line in block.lines() {
        match line.split_once(':') {
            Some(("id", v)) => id = Some(v.trim().parse().expect("a numeric id")),
            Some(("event", v)) => name = Some(v.trim().to_owned()),
            Some(("data", v)) => data.push_str(v.strip_prefix(' ').unwrap_or(v)),
            _ => {}
        }
    }
    let data = serde_json::from_str(&data).ok()?;
    Some(SseEvent { id: id?, name: name?, data })
}
