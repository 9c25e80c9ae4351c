//! The HTTP API against real (simulated) peers: the guard's rules, the
//! shapes of the answers, and actions that run to their end.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use lanspread_memfs::MemFs;
use lanspread_testkit::Sim;
use lanspread_web::{CSP, ROUTES};
use serde_json::{json, Value};

/// A downloader alone on the LAN (enough for the guard's rules).
fn alone(name: &'static str, scenario: impl AsyncFnOnce(axum::Router) + 'static) {
    Sim::run(name, 1, |mut sim| async move {
        let d = lan(&mut sim, false, MemFs::unrecorded()).await;
        scenario(ui(&d)).await;
        sim
    });
}

fn plain(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).expect("a request")
}

#[test]
fn a_missing_or_wrong_token_is_401() {
    alone("web_token_401", async |ui| {
        let wrong = format!("Bearer {}", "00".repeat(32));
        let cookie = format!("lanspread_token={}", "00".repeat(32));
        for headers in [vec![("host", HOST)], vec![("host", HOST), ("authorization", &wrong)], vec![("host", HOST), ("cookie", &cookie)]] {
            for path in ["/api/v1", "/", "/app.js", "/api/v1/events", "/no/such/route"] {
                let a = send(&ui, plain(Method::GET, path, &headers)).await;
                assert_eq!((a.status, a.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{path} {headers:?}");
            }
        }
        let a = send(&ui, plain(Method::GET, &format!("/?token={}", "00".repeat(32)), &[("host", HOST)])).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "a wrong token in the query");
    });
}

#[test]
fn the_query_token_sets_the_cookie_and_redirects_to_the_page() {
    alone("web_login", async |ui| {
        let hex = token().to_hex();
        let a = send(&ui, plain(Method::GET, &format!("/?token={hex}"), &[("host", HOST)])).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER);
        assert_eq!(a.header("location"), Some("/"));
        let cookie = format!("lanspread_token={hex}; HttpOnly; SameSite=Strict; Path=/");
        assert_eq!(a.header("set-cookie"), Some(cookie.as_str()));
        // The browser comes back with the cookie and gets the page.
        let page = send(&ui, plain(Method::GET, "/", &[("host", HOST), ("cookie", &format!("lanspread_token={hex}"))])).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(String::from_utf8_lossy(&page.body).contains("<html"), "the page");
        for (path, ct) in [("/app.css", "text/css; charset=utf-8"), ("/app.js", "text/javascript; charset=utf-8")] {
            let a = send(&ui, plain(Method::GET, path, &[("host", HOST), ("cookie", &format!("lanspread_token={hex}"))])).await;
            assert_eq!((a.status, a.header("content-type")), (StatusCode::OK, Some(ct)), "{path}");
            assert!(!a.body.is_empty());
        }
    });
}

#[test]
fn a_bearer_token_opens_the_api_which_lists_its_routes() {
    alone("web_bearer", async |ui| {
        let a = send(&ui, get("/api/v1")).await;
        assert_eq!(a.status, StatusCode::OK);
        let index = a.json();
        assert_eq!(index["version"], json!(1));
        let routes = index["routes"].as_array().expect("a list");
        assert_eq!(routes.len(), ROUTES.len());
        for path in ["/api/v1/games", "/api/v1/games/{id}/get", "/api/v1/games/{id}/adopt", "/api/v1/events", "/api/v1/settings/game-dir"] {
            assert!(routes.iter().any(|r| r["path"] == json!(path) && r["about"].is_string() && r["method"].is_string()), "{path}");
        }
    });
}

#[test]
fn a_foreign_host_is_403_even_with_the_token() {
    alone("web_host", async |ui| {
        for host in ["evil.example:7878", "127.0.0.1:80", "attacker.test"] {
            let mut req = get("/api/v1/games");
            req.headers_mut().insert("host", host.parse().unwrap());
            let a = send(&ui, req).await;
            assert_eq!((a.status, a.code().as_str()), (StatusCode::FORBIDDEN, "forbidden_host"), "{host}");
        }
        for host in ["localhost:7878", "[::1]:7878"] {
            let mut req = get("/api/v1/status");
            req.headers_mut().insert("host", host.parse().unwrap());
            assert_eq!(send(&ui, req).await.status, StatusCode::OK, "{host}");
        }
    });
}

#[test]
fn a_cross_origin_state_change_is_403() {
    alone("web_origin", async |ui| {
        let mut req = post("/api/v1/games/arena/get", "{}");
        req.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
        let a = send(&ui, req).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::FORBIDDEN, "forbidden_origin"));
        let mut req = post("/api/v1/games/arena/get", "{}");
        req.headers_mut().insert("sec-fetch-site", "cross-site".parse().unwrap());
        let a = send(&ui, req).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::FORBIDDEN, "forbidden_origin"), "Sec-Fetch-Site: cross-site");
        // Our own origin passes the guard (and nobody holds the game yet).
        let mut req = post("/api/v1/games/arena/get", "{}");
        req.headers_mut().insert("origin", format!("http://{HOST}").parse().unwrap());
        req.headers_mut().insert("sec-fetch-site", "same-origin".parse().unwrap());
        let a = send(&ui, req).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "no_holder"));
    });
}

#[test]
fn a_state_change_that_is_not_json_is_415() {
    alone("web_415", async |ui| {
        for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x"), None] {
            let mut req = post("/api/v1/games/arena/install", "{}");
            match ct {
                Some(ct) => req.headers_mut().insert("content-type", ct.parse().unwrap()),
                None => req.headers_mut().remove("content-type"),
            };
            let a = send(&ui, req).await;
            assert_eq!((a.status, a.code().as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"), "{ct:?}");
        }
    });
}

#[test]
fn a_body_over_16_kib_is_413_with_or_without_a_length() {
    alone("web_413", async |ui| {
        let big = format!("{{\"path\": \"/{}\"}}", "a".repeat(17 * 1024));
        let a = send(&ui, request(Method::PUT, "/api/v1/settings/game-dir", Some(&big))).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"), "with Content-Length");
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..17).map(|_| Ok(vec![b' '; 1024])).collect();
        let mut req = request(Method::PUT, "/api/v1/settings/game-dir", Some("{}"));
        *req.body_mut() = Body::from_stream(futures::stream::iter(chunks));
        req.headers_mut().remove("content-length");
        let a = send(&ui, req).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"), "streamed");
    });
}

#[test]
fn every_answer_carries_the_security_headers() {
    alone("web_headers", async |ui| {
        let answers = [
            send(&ui, get("/api/v1/games")).await,
            send(&ui, get("/")).await,
            send(&ui, plain(Method::GET, "/api/v1", &[("host", HOST)])).await,
            send(&ui, get("/nothing/here")).await,
        ];
        for a in &answers {
            assert_eq!(a.header("content-security-policy"), Some(CSP), "{:?}", a.status);
            assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
            assert_eq!(a.header("cache-control"), Some("no-store"));
            assert_eq!(a.header("access-control-allow-origin"), None, "no CORS");
        }
        assert!(CSP.contains("default-src 'none'") && CSP.contains("frame-ancestors 'none'"));
    });
}

#[test]
fn unknown_routes_and_methods_have_the_error_shape() {
    alone("web_unknown_routes", async |ui| {
        let a = send(&ui, get("/api/v2/games")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
        let a = send(&ui, request(Method::DELETE, "/api/v1/games", None)).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
        let a = send(&ui, post("/api/v1/games/arena/format", "{}")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::NOT_FOUND, "not_found"), "no such action");
        let a = send(&ui, post("/api/v1/games/arena/install", "{\"install\": false}")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "only get takes install");
        let a = send(&ui, post("/api/v1/games/arena/get", "{\"instal\": false}")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "unknown fields are refused");
        let a = send(&ui, post("/api/v1/games/arena/get", "{nope")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
    });
}

#[test]
fn games_peers_status_and_settings_have_their_shapes() {
    Sim::run("web_shapes", 2, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let games = send(&ui, get("/api/v1/games")).await.json();
        let expected = json!({
            "id": "arena", "name": "Sim arena", "description": "A fast shooter.", "genre": "Shooter",
            "state": "remote", "operation": null, "version": null, "latest_version": "1.0", "holders": 1,
            "installed": false, "shared": false, "problems": [], "progress": null
        });
        let row = &games["games"][0];
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&row[k], v, "{k} in {row}");
        }
        assert!(row["size"].as_u64().unwrap() > GAME_BYTES, "the size of the latest version: {row}");
        assert_eq!(games["games"].as_array().unwrap().len(), 1);
        assert_eq!(&send(&ui, get("/api/v1/games/arena")).await.json(), row);

        let seeder = sim.peer("s").id.to_hex();
        let peers = send(&ui, get("/api/v1/peers")).await.json();
        assert_eq!(peers["peers"].as_array().unwrap().len(), 1);
        assert_eq!(peers["peers"][0]["id"], json!(seeder));
        assert_eq!(peers["peers"][0]["games"], json!(1));
        assert!(peers["peers"][0]["addr"].as_str().unwrap().contains(':'));

        let status = send(&ui, get("/api/v1/status")).await.json();
        assert_eq!(status["peer_id"], json!(d.id().to_hex()));
        assert_eq!(status["addr"], json!(d.addr().to_string()));
        assert_eq!(
            (&status["game_dir"], &status["peers"], &status["games"], &status["operations"]),
            (&json!("/srv/games"), &json!(1), &json!(1), &json!([]))
        );
        assert!(status["lanspread_version"].is_string());

        assert_eq!(send(&ui, get("/api/v1/settings")).await.json(), json!({"game_dir": "/srv/games"}));

        // The library's own rows, for the CLI.
        let library = send(&ui, get("/api/v1/library")).await.json();
        let rows: Vec<lanspread::GameView> = serde_json::from_value(library["games"].clone()).expect("GameView rows");
        assert_eq!(rows, d.snapshot().games);
        sim
    });
}

#[test]
fn get_on_a_held_game_is_accepted_and_the_game_ends_installed() {
    Sim::run("web_get", 3, |mut sim| async move {
        let fs = MemFs::unrecorded();
        let d = lan(&mut sim, true, fs.clone()).await;
        let ui = ui(&d);
        let a = send(&ui, post("/api/v1/games/arena/get", "{}")).await;
        assert_eq!((a.status, a.json()), (StatusCode::ACCEPTED, json!({"id": "arena", "action": "get"})));
        let running = wait_game(&ui, |g| g["state"] == json!("downloading")).await;
        assert!(running["operation"] == json!("downloading") || running["operation"] == json!("resolving"), "{running}");
        let done = wait_game(&ui, |g| g["state"] == json!("installed") && g["operation"].is_null()).await;
        assert_eq!((&done["version"], &done["installed"], &done["progress"]), (&json!("1.0"), &json!(true), &Value::Null));
        assert_eq!(fs.read("arena/version.ini").as_deref(), Some(&b"1.0\n"[..]));
        sim
    });
}

#[test]
fn get_without_install_stops_at_downloaded() {
    Sim::run("web_get_no_install", 4, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let a = send(&ui, post("/api/v1/games/arena/get", "{\"install\": false}")).await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
        let done = wait_game(&ui, |g| g["state"] == json!("downloaded") && g["operation"].is_null()).await;
        assert_eq!((&done["installed"], &done["shared"]), (&json!(false), &json!(true)));
        // Then install does the rest.
        assert_eq!(send(&ui, post("/api/v1/games/arena/install", "")).await.status, StatusCode::ACCEPTED, "an empty body is {{}}");
        wait_game(&ui, |g| g["state"] == json!("installed")).await;
        sim
    });
}

#[test]
fn an_unknown_game_is_404() {
    alone("web_404", async |ui| {
        for action in ["get", "install", "update", "uninstall", "remove", "adopt"] {
            let a = send(&ui, post(&format!("/api/v1/games/nothere/{action}"), "{}")).await;
            assert_eq!((a.status, a.code().as_str()), (StatusCode::NOT_FOUND, "not_in_catalog"), "{action}");
            assert!(a.json()["error"]["message"].as_str().unwrap().contains("nothere"));
        }
        let a = send(&ui, post("/api/v1/games/nothere/cancel", "{}")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
        let a = send(&ui, get("/api/v1/games/nothere")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
        let a = send(&ui, get("/api/v1/games/..")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::NOT_FOUND, "not_found"), "an id that is not even valid");
    });
}

/// The body of a game-directory change to `unix_path`, written as an
/// absolute path of the platform running the test (`C:\srv\other` on
/// Windows, where `/srv/other` is not absolute).
fn game_dir_body(unix_path: &str) -> String {
    let path = if cfg!(windows) { format!("C:{}", unix_path.replace('/', "\\")) } else { unix_path.to_owned() };
    json!({ "path": path }).to_string()
}

#[test]
fn a_second_action_while_one_runs_is_409() {
    Sim::run("web_409", 5, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        assert_eq!(send(&ui, post("/api/v1/games/arena/get", "{}")).await.status, StatusCode::ACCEPTED);
        for action in ["get", "install", "remove", "adopt"] {
            let a = send(&ui, post(&format!("/api/v1/games/arena/{action}"), "{}")).await;
            assert_eq!((a.status, a.code().as_str()), (StatusCode::CONFLICT, "busy"), "{action}");
        }
        // The game directory cannot change under a running operation.
        let a = send(&ui, request(Method::PUT, "/api/v1/settings/game-dir", Some(game_dir_body("/elsewhere").as_str()))).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::CONFLICT, "busy"));
        sim
    });
}

#[test]
fn install_of_a_game_that_is_not_downloaded_is_422_with_its_code() {
    Sim::run("web_422", 6, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let a = send(&ui, post("/api/v1/games/arena/install", "{}")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "not_downloaded"));
        assert_eq!(a.json()["error"]["message"], json!("arena is not downloaded"));
        let a = send(&ui, post("/api/v1/games/arena/uninstall", "{}")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "not_installed"));
        sim
    });
}

#[test]
fn cancel_is_409_when_nothing_runs_and_stops_a_running_download() {
    Sim::run("web_cancel", 7, |mut sim| async move {
        let d = lan(&mut sim, true, MemFs::unrecorded()).await;
        let ui = ui(&d);
        let a = send(&ui, post("/api/v1/games/arena/cancel", "{}")).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::CONFLICT, "not_running"));
        assert_eq!(send(&ui, post("/api/v1/games/arena/get", "{}")).await.status, StatusCode::ACCEPTED);
        wait_game(&ui, |g| g["operation"] == json!("downloading")).await;
        let a = send(&ui, post("/api/v1/games/arena/cancel", "{}")).await;
        assert_eq!((a.status, a.json()), (StatusCode::ACCEPTED, json!({"id": "arena", "action": "cancel"})));
        let game = wait_game(&ui, |g| g["operation"].is_null()).await;
        assert_eq!((&game["state"], &game["installed"]), (&json!("remote"), &json!(false)));
        sim
    });
}

#[test]
fn set_game_dir_refusals_are_typed() {
    alone("web_game_dir", async |ui| {
        // Simulated peers cannot open another directory.
        let a = send(&ui, request(Method::PUT, "/api/v1/settings/game-dir", Some(game_dir_body("/srv/other").as_str()))).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"));
        let a = send(&ui, request(Method::PUT, "/api/v1/settings/game-dir", Some("{\"path\": \"relative/dir\"}"))).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
        assert_eq!(send(&ui, get("/api/v1/settings")).await.json(), json!({"game_dir": "/srv/games"}), "unchanged");
    });
}

#[test]
fn adopt_takes_over_a_hand_made_install_and_keeps_the_users_files() {
    Sim::run("web_adopt", 8, |mut sim| async move {
        // A downloaded game whose local/ the user made by hand.
        let fs = MemFs::unrecorded();
        game().write(&fs, &sim.rng);
        fs.write_file("arena/local/saves/slot1.sav", b"my save");
        let d = lan(&mut sim, false, fs.clone()).await;
        wait_snapshot(&d, |s| s.games.iter().any(|g| g.installed)).await;
        let ui = ui(&d);
        let mut events = Events::open(&ui, None).await;
        // A plain install refuses to touch it...
        assert_eq!(send(&ui, post("/api/v1/games/arena/install", "{}")).await.status, StatusCode::ACCEPTED);
        let failed = events.next_named("game-install-failed").await;
        assert_eq!((&failed.data["id"], &failed.data["code"]), (&json!("arena"), &json!("not_owned")));
        // ...adopt takes it over, keeping the user's file.
        let a = send(&ui, post("/api/v1/games/arena/adopt", "{}")).await;
        assert_eq!((a.status, a.json()), (StatusCode::ACCEPTED, json!({"id": "arena", "action": "adopt"})));
        let finished = events.next_named("game-install-finished").await;
        assert_eq!(finished.data["id"], json!("arena"));
        assert_eq!(fs.read("arena/local/saves/slot1.sav").as_deref(), Some(&b"my save"[..]));
        assert!(fs.exists("arena/local/game.exe"), "the game is installed beside it");
        // Only uninstall takes "adopt" in its body.
        let refused = send(&ui, post("/api/v1/games/arena/remove", r#"{"adopt": true}"#)).await;
        assert_eq!((refused.status, &refused.json()["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("bad_request")));
        sim
    });
}
