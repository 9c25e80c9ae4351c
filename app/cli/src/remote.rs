//! The commands' side of local control: when a running `serve` holds the
//! game directory, `get`, `games`, `install`, `uninstall`, `remove` and
//! `status` send their command to it over its control socket (see
//! `control.rs`) and show the same progress and output as when they run a
//! peer of their own.

use crate::output::{self, say};
use crate::setup::{self, LocalOp};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use lanspread::{GameId, GameView, PeerShare, TransferStats};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// How often a `get` asks the running peer whether a holder appeared.
const HOLDER_POLL: Duration = Duration::from_millis(100);

/// A running `serve`'s control channel.
pub struct Remote {
    endpoint: crate::control::Endpoint,
    token: String,
}

/// One event of the stream: its name and JSON data.
struct Event {
    name: String,
    data: Value,
}

type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

#[derive(Deserialize)]
struct Library {
    games: Vec<GameView>,
}

#[derive(Deserialize)]
struct ApiError {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl Remote {
    /// The running `serve` that holds `games`, if one answers.
    pub async fn find(games: &Path) -> Option<Remote> {
        let games = lanspread::builder::check_game_dir(games).ok()?;
        let endpoint = crate::control::endpoint(&games);
        crate::control::connect(&endpoint).await.ok()?;
        let token = crate::ui::saved_token().ok()?.to_hex();
        let remote = Remote { endpoint, token };
        // A socket whose peer moved on to another directory is not this one's.
        let (_, settings) = remote.call(Method::GET, "/api/v1/settings", None).await.ok()?;
        (settings["game_dir"].as_str() == Some(&games.display().to_string())).then_some(remote)
    }

    /// One request; the answer's status and body.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, hyper::body::Incoming), String> {
        let fail = |e: &dyn std::fmt::Display| format!("the running lanspread ({}): {e}", self.endpoint);
        let stream = crate::control::connect(&self.endpoint).await.map_err(|e| fail(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| fail(&e))?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, crate::control::HOST)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .map_err(|e| fail(&e))?;
        let answer = sender.send_request(request).await.map_err(|e| fail(&e))?;
        Ok((answer.status(), answer.into_body()))
    }

    /// A JSON answer (or the API's error message).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), String> {
        let (status, body) = self.send(method, path, body).await?;
        let bytes = body.collect().await.map_err(|e| format!("the running lanspread: {e}"))?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiError>(&bytes).map(|e| e.error.message);
            return Err(message.unwrap_or_else(|_| format!("the running lanspread answered {status}")));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| format!("the running lanspread: {e}"))?;
        Ok((status, value))
    }

    async fn library(&self) -> Result<Vec<GameView>, String> {
        let (_, value) = self.call(Method::GET, "/api/v1/library", None).await?;
        serde_json::from_value::<Library>(value).map(|l| l.games).map_err(|e| format!("the running lanspread: {e}"))
    }

    /// Starts `action` on `id`.
    async fn act(&self, id: &GameId, action: &str, body: Value) -> Result<(), String> {
        self.call(Method::POST, &format!("/api/v1/games/{id}/{action}"), Some(body)).await.map(|_| ())
    }

    /// The event stream, from now on.
    async fn events(&self) -> Result<Events, String> {
        let (status, body) = self.send(Method::GET, "/api/v1/events", None).await?;
        if !status.is_success() {
            return Err(format!("the running lanspread refused its event stream: {status}"));
        }
        let events = body.into_data_stream().eventsource().filter_map(|e| async move {
            let e = e.ok()?;
            Some(Event { name: e.event, data: serde_json::from_str(&e.data).unwrap_or(Value::Null) })
        });
        Ok(Box::pin(events))
    }
}

/// `games` and `status`: the running peer's library.
pub async fn games(remote: &Remote, json: bool) -> Result<(), String> {
    output::print_games(&remote.library().await?, json);
    Ok(())
}

/// The next event about `id` (or about no game in particular).
async fn next_about(events: &mut Events, id: &GameId) -> Result<Event, String> {
    loop {
        let e = events.next().await.ok_or("the running lanspread closed its event stream")?;
        if e.name == "runtime-stopped" {
            return Err("the running lanspread stopped".into());
        }
        match e.data.get("id").and_then(Value::as_str) {
            Some(of) if of != id.as_str() => continue,
            _ => return Ok(e),
        }
    }
}

fn failure(what: &str, id: &GameId, e: &Event) -> String {
    let message = e.data.get("message").and_then(Value::as_str).unwrap_or("failed");
    format!("{what} of {id} failed: {message}")
}

/// Waits up to `wait` seconds until the running peer knows a holder of
/// `id` (it may have started a moment ago), as a local `get` does.
async fn wait_for_holder(remote: &Remote, id: &GameId, wait: f64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(wait.max(0.0));
    loop {
        let games = remote.library().await?;
        if games.iter().any(|g| &g.id == id && !g.peers_with_latest.is_empty()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no peer on the LAN offers {id} (the running lanspread waited {wait:.0} s)"));
        }
        tokio::time::sleep(HOLDER_POLL).await;
    }
}

/// `get` through the running peer: the same bar, lines and summary.
pub async fn get(remote: &Remote, id: &GameId, install: bool, adopt: bool, wait: f64, json: bool) -> Result<(), String> {
    let started = Instant::now();
    wait_for_holder(remote, id, wait).await?;
    // Subscribed before the action starts, so no event is missed.
    let mut events = remote.events().await?;
    let (action, body) = if adopt { ("adopt", json!({})) } else { ("get", json!({ "install": install })) };
    remote.act(id, action, body).await.map_err(|e| format!("download of {id} failed: {e}"))?;
    let bar = setup::progress_bar(id, json);
    let mut summary = json!({ "game": id.as_str() });
    let installing = install || adopt;
    loop {
        let e = next_about(&mut events, id).await.inspect_err(|_| bar.abandon())?;
        match e.name.as_str() {
            "game-download-begin" => {
                bar.set_length(e.data["total"].as_u64().unwrap_or(0));
                bar.set_message(format!("from {} peer(s)", e.data["peers"].as_array().map_or(0, Vec::len)));
            }
            "game-download-progress" => show_progress(&bar, &e.data["progress"]),
            "game-download-waiting" => {
                setup::notice(&bar, format!("{}; waiting for another peer that holds {id}", e.data["reason"].as_str().unwrap_or("")))
            }
            "peer-banned" => setup::notice(
                &bar,
                format!("peer {} banned: {}", e.data["peer"].as_str().unwrap_or("?"), e.data["reason"].as_str().unwrap_or("")),
            ),
            "game-download-finished" => {
                bar.finish_and_clear();
                let stats: TransferStats = serde_json::from_value(e.data.clone()).map_err(|e| format!("the running lanspread: {e}"))?;
                if !json {
                    output::print_transfer(id, &stats);
                }
                summary["version"] = e.data["version"].clone();
                summary["download"] = serde_json::to_value(&stats).unwrap_or_default();
                if !installing {
                    break;
                }
            }
            "game-download-failed" => {
                bar.abandon();
                return Err(failure("download", id, &e));
            }
            "game-install-begin" if !json => {
                say!("{} {id}...", if e.data["update"].as_bool() == Some(true) { "updating" } else { "installing" })
            }
            "game-files-kept" => {
                if !json {
                    say!(
                        "{id}: your files that could not stay in local/ were moved to {} in the game directory",
                        e.data["kept"].as_str().unwrap_or("?")
                    );
                }
                summary["kept"] = e.data["kept"].clone();
            }
            "game-install-finished" => {
                if !json {
                    say!("installed {id}");
                }
                summary["installed"] = json!(true);
                break;
            }
            "game-install-failed" => return Err(failure("install", id, &e)),
            _ => {}
        }
    }
    summary["secs"] = json!(started.elapsed().as_secs_f64());
    if json {
        say!("{summary}");
    }
    Ok(())
}

fn show_progress(bar: &indicatif::ProgressBar, progress: &Value) {
    let done = progress["done"].as_u64().unwrap_or(0);
    bar.set_length(progress["total"].as_u64().unwrap_or(0));
    bar.set_position(done);
    let peers: Vec<PeerShare> = serde_json::from_value(progress["peers"].clone()).unwrap_or_default();
    bar.set_message(output::shares(&peers, done));
}

/// `install`, `uninstall` and `remove` through the running peer.
pub async fn local_op(remote: &Remote, op: LocalOp, id: &GameId) -> Result<(), String> {
    let mut events = remote.events().await?;
    let (action, body, family) = match op {
        LocalOp::Install { adopt: true } => ("adopt", json!({}), "install"),
        LocalOp::Install { adopt: false } => ("install", json!({}), "install"),
        LocalOp::Uninstall { adopt } => ("uninstall", json!({ "adopt": adopt }), "uninstall"),
        LocalOp::Remove => ("remove", json!({}), "remove"),
    };
    remote.act(id, action, body).await?;
    let mut update = false;
    loop {
        let e = next_about(&mut events, id).await?;
        let name = e.name.as_str();
        if name == "game-install-begin" {
            update = e.data["update"].as_bool() == Some(true);
        } else if name == "game-files-kept" {
            say!(
                "{id}: your files that could not stay in local/ were moved to {} in the game directory",
                e.data["kept"].as_str().unwrap_or("?")
            );
        } else if name == format!("game-{family}-finished") {
            say!("{}", finished_line(id, family, update));
            return Ok(());
        } else if name == format!("game-{family}-failed") || name == "game-download-failed" {
            return Err(failure(family, id, &e));
        }
    }
}

/// The line a local install, uninstall or remove prints.
fn finished_line(id: &GameId, family: &str, update: bool) -> String {
    match family {
        "install" if update => format!("{id}: Updated done"),
        "install" => format!("{id}: Installed done"),
        "uninstall" => format!("{id}: uninstalled"),
        _ => format!("{id}: downloaded files removed"),
    }
}
