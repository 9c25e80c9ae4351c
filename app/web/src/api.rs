//! The routes of `/api/v1` (API.md, "Routes").

use crate::error::ApiError;
use crate::events;
use crate::guard::BODY_LIMIT;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use lanspread::bridge::{self, GameJson, PeerJson, StatusJson};
use lanspread::{Availability, DownloadOptions, GameId, HasCode, Operation, Peer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One route, as `GET /api/v1` lists it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: &'static str,
    /// Path (`{id}`: a game id).
    pub path: &'static str,
    /// What it does.
    pub about: &'static str,
}

const fn doc(method: &'static str, path: &'static str, about: &'static str) -> RouteDoc {
    RouteDoc { method, path, about }
}

/// Every route of the API.
pub const ROUTES: &[RouteDoc] = &[
    doc("GET", "/api/v1", "this list"),
    doc("GET", "/api/v1/games", "the library: every game with its state"),
    doc("GET", "/api/v1/games/{id}", "one game"),
    doc("GET", "/api/v1/library", "the library in the lanspread library's own types (what `lanspread games --json` prints)"),
    doc("GET", "/api/v1/peers", "the peers on the LAN"),
    doc("GET", "/api/v1/status", "this peer at a glance"),
    doc("GET", "/api/v1/settings", "the settings"),
    doc("PUT", "/api/v1/settings/game-dir", "switch to another game directory: {\"path\": \"/srv/games\"}"),
    doc("POST", "/api/v1/games/{id}/get", "download, then install unless {\"install\": false}"),
    doc("POST", "/api/v1/games/{id}/install", "install (or update) the downloaded game"),
    doc("POST", "/api/v1/games/{id}/update", "download the newest version and update the install"),
    doc(
        "POST",
        "/api/v1/games/{id}/uninstall",
        "uninstall, keeping the user's files ({\"adopt\": true}: over a local/ lanspread did not make)",
    ),
    doc("POST", "/api/v1/games/{id}/remove", "delete the downloaded files of a game that is not installed"),
    doc("POST", "/api/v1/games/{id}/adopt", "take over a hand-made install, keeping its files as the user's"),
    doc("POST", "/api/v1/games/{id}/cancel", "cancel the running download"),
    doc("GET", "/api/v1/events", "Server-Sent Events: the library and what happens to it"),
];

/// The routes of `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1", get(index))
        .route("/api/v1/games", get(games))
        .route("/api/v1/games/{id}", get(game))
        .route("/api/v1/games/{id}/{action}", post(action))
        .route("/api/v1/library", get(library))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/status", get(status))
        .route("/api/v1/settings", get(settings))
        .route("/api/v1/settings/game-dir", put(set_game_dir))
        .route("/api/v1/events", get(events::stream))
}

#[derive(Serialize)]
struct Index {
    version: u32,
    routes: &'static [RouteDoc],
}

async fn index() -> Json<Index> {
    Json(Index { version: 1, routes: ROUTES })
}

#[derive(Serialize)]
struct Games {
    games: Vec<GameJson>,
}

async fn games(State(s): State<AppState>) -> Json<Games> {
    Json(Games { games: s.games() })
}

async fn game(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<GameJson>, ApiError> {
    let id = game_id(&id)?;
    s.games().into_iter().find(|g| g.id == id).map(Json).ok_or_else(|| unknown_game(&id))
}

#[derive(Serialize)]
struct Library {
    games: Vec<lanspread::GameView>,
}

/// The rows as the library has them, for clients (the CLI) that print
/// them as a local peer would.
async fn library(State(s): State<AppState>) -> Json<Library> {
    Json(Library { games: s.peer.snapshot().games.clone() })
}

#[derive(Serialize)]
struct Peers {
    peers: Vec<PeerJson>,
}

async fn peers(State(s): State<AppState>) -> Json<Peers> {
    Json(Peers { peers: bridge::peers_json(&s.peer.snapshot()) })
}

async fn status(State(s): State<AppState>) -> Json<StatusJson> {
    let game_dir = s.peer.game_dir();
    Json(bridge::status_json(s.peer.id(), s.peer.addr(), &s.peer.snapshot(), game_dir.as_deref()))
}

#[derive(Serialize)]
struct Settings {
    game_dir: Option<String>,
}

async fn settings(State(s): State<AppState>) -> Json<Settings> {
    Json(Settings { game_dir: s.peer.game_dir() })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GameDirBody {
    #[serde(default)]
    path: String,
}

/// `PUT /api/v1/settings/game-dir`: refused (409) while operations run.
async fn set_game_dir(State(s): State<AppState>, JsonBody(body): JsonBody<GameDirBody>) -> Result<Json<Settings>, ApiError> {
    let path = body.path.trim();
    if path.is_empty() || !std::path::Path::new(path).is_absolute() {
        return Err(ApiError::bad_request("path must be an absolute directory"));
    }
    s.peer.set_game_dir(path).await.map_err(|e| ApiError::typed(&e))?;
    Ok(Json(Settings { game_dir: s.peer.game_dir() }))
}

/// What an action route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Get,
    Install,
    Update,
    Uninstall,
    Remove,
    Adopt,
    Cancel,
}

impl Action {
    const ALL: [Action; 7] =
        [Action::Get, Action::Install, Action::Update, Action::Uninstall, Action::Remove, Action::Adopt, Action::Cancel];

    fn name(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Install => "install",
            Action::Update => "update",
            Action::Uninstall => "uninstall",
            Action::Remove => "remove",
            Action::Adopt => "adopt",
            Action::Cancel => "cancel",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The body of an action: `{}`; for `get`, `{"install": false}`; for
/// `uninstall`, `{"adopt": true}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    install: Option<bool>,
    adopt: Option<bool>,
}

/// The answer of an action that started.
#[derive(Debug, Serialize)]
struct Accepted {
    id: GameId,
    action: &'static str,
}

/// `POST /api/v1/games/{id}/{action}`: starts the action and answers 202
/// at once; how it ends is told on the event stream.
async fn action(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    JsonBody(body): JsonBody<ActionBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let action = Action::parse(&action).ok_or_else(|| ApiError::not_found(format!("no action {action:?}")))?;
    let id = game_id(&id)?;
    if body.install.is_some() && action != Action::Get {
        return Err(ApiError::bad_request("only get takes \"install\""));
    }
    if body.adopt.is_some() && action != Action::Uninstall {
        return Err(ApiError::bad_request("only uninstall takes \"adopt\" (install over a hand-made local/ with adopt)"));
    }
    let options = Options { install: body.install.unwrap_or(true), adopt: body.adopt.unwrap_or(false) };
    start(&s, &id, action, options).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { id, action: action.name() })))
}

/// What an action's body asked for.
struct Options {
    install: bool,
    adopt: bool,
}

async fn start(s: &AppState, id: &GameId, action: Action, options: Options) -> Result<(), ApiError> {
    let peer = &s.peer;
    match action {
        Action::Get => follow(peer.download(id, DownloadOptions { install: options.install, ..DownloadOptions::default() }).await),
        Action::Install => follow(peer.install(id, false).await),
        Action::Update => follow(peer.update(id, false).await),
        Action::Uninstall => follow(peer.uninstall(id, options.adopt).await),
        Action::Remove => follow(peer.remove(id).await),
        Action::Adopt => adopt(peer, id).await,
        Action::Cancel => cancel(s, id).await,
    }
}

/// Lets a started operation run to its end. Its events (begin, progress,
/// finished or failed) are what tells the clients; the handle is only
/// awaited so the operation's result is taken.
fn follow<T, E>(started: Result<Operation<T, E>, E>) -> Result<(), ApiError>
where
    T: Send + 'static,
    E: HasCode + Send + 'static,
{
    let op = started.map_err(|e| ApiError::typed(&e))?;
    tokio::spawn(async move {
        let _ = op.await;
    });
    Ok(())
}

/// `adopt` is the CLI's `get --adopt`: install over a `local/` lanspread
/// did not make, keeping its files as the user's. A game whose newest
/// version is here is installed at once; otherwise the newest version is
/// downloaded first (nothing is installed if that fails; the event stream
/// says why).
async fn adopt(peer: &Peer, id: &GameId) -> Result<(), ApiError> {
    let snapshot = peer.snapshot();
    let current = snapshot
        .games
        .iter()
        .any(|g| &g.id == id && g.local_version.is_some() && matches!(g.availability, Availability::Installed | Availability::Downloaded));
    if current {
        return follow(peer.install(id, true).await);
    }
    let download = peer.download(id, DownloadOptions { install: false, ..DownloadOptions::default() }).await;
    let download = download.map_err(|e| ApiError::typed(&e))?;
    let (peer, id) = (peer.clone(), id.clone());
    tokio::spawn(async move {
        if download.await.is_ok() {
            // A refusal here is told on the event stream by the runtime.
            if let Ok(install) = peer.install(&id, true).await {
                let _ = install.await;
            }
        }
    });
    Ok(())
}

/// `cancel`: 409 `not_running` when no download of `id` runs.
async fn cancel(s: &AppState, id: &GameId) -> Result<(), ApiError> {
    if !s.peer.snapshot().games.iter().any(|g| &g.id == id) {
        return Err(unknown_game(id));
    }
    if s.peer.cancel(id).await {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::CONFLICT, "not_running", format!("no download of {id} runs")))
    }
}

/// A game id from a path; one that is not even valid is unknown.
fn game_id(s: &str) -> Result<GameId, ApiError> {
    GameId::new(s).map_err(|_| ApiError::not_found(format!("no game {s:?}")))
}

fn unknown_game(id: &GameId) -> ApiError {
    ApiError::not_found(format!("no game {id}"))
}

/// A JSON body of at most [`BODY_LIMIT`] bytes; an empty body is `T`'s
/// default (so `curl -X POST` without `-d` works too). Every failure has
/// the API's error shape.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(BODY_LIMIT)
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_route_is_listed_and_parses_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.name()), Some(a));
            let path = format!("/api/v1/games/{{id}}/{}", a.name());
            assert!(ROUTES.iter().any(|r| r.method == "POST" && r.path == path), "{path} is listed");
        }
        assert_eq!(Action::parse("format"), None);
    }
}
