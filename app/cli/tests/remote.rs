//! While `lanspread serve` holds a game directory, the other commands on
//! it (`get`, `games`, `status`, `install`, `uninstall`, `remove`) are sent
//! to it over its control socket instead of being refused, and print what
//! they print when they run a peer of their own. Real processes, real QUIC
//! on loopback, no mDNS.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const GAME: &str = "arena";

fn lanspread(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lanspread"));
    cmd.env("LANSPREAD_CONFIG_DIR", config);
    cmd
}

/// A running `serve` and the address it listens on.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(config: &Path, games: &Path, peers: &[&str]) -> Serve {
        let mut cmd = lanspread(config);
        cmd.args(["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--games"]).arg(games);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // "serving N game(s) from DIR on ADDR as ID"
        let first = lines.next().expect("serve prints a line").unwrap();
        let addr = first.split(" on ").nth(1).and_then(|rest| rest.split(' ').next()).expect("its address").to_owned();
        std::thread::spawn(move || lines.for_each(drop));
        Serve { child, addr }
    }

    /// Stops it as Ctrl-C would.
    fn stop(mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("lanspread runs");
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `status --json` shows the game installed.
fn installed(config: &Path, games: &Path) -> bool {
    let out = run(lanspread(config).args(["status", "--json", "--games"]).arg(games));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    rows.as_array().unwrap().iter().any(|g| g["id"] == GAME && g["installed"] == true)
}

#[test]
fn commands_on_a_directory_that_serve_holds_go_to_the_running_peer() {
    let (seeder_cfg, player_cfg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (seeds, games) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(lanspread(seeder_cfg.path()).args(["gen-game", "--id", GAME, "--size-mib", "8", "--games"]).arg(seeds.path()));
    std::fs::copy(seeds.path().join("catalog.toml"), games.path().join("catalog.toml")).unwrap();
    let seeder = Serve::start(seeder_cfg.path(), seeds.path(), &[]);
    let player = Serve::start(player_cfg.path(), games.path(), &[&seeder.addr]);

    let got = run(lanspread(player_cfg.path()).args(["get", GAME, "--json", "--games"]).arg(games.path()));
    let summary: serde_json::Value = serde_json::from_str(stdout(&got).lines().last().unwrap()).expect("a JSON summary");
    assert_eq!(summary["game"], GAME);
    assert_eq!(summary["installed"], true, "{summary}");
    let fetched = summary["download"]["bytes"].as_u64().unwrap();
    assert!(fetched >= 8 << 20, "the 8 MiB game came from the seeder: {summary}");
    assert!(installed(player_cfg.path(), games.path()), "status, through the running peer, shows it installed");

    let table = stdout(&run(lanspread(player_cfg.path()).args(["games", "--games"]).arg(games.path())));
    assert!(table.lines().any(|l| l.starts_with(GAME) && l.ends_with("installed")), "{table}");

    let out = stdout(&run(lanspread(player_cfg.path()).args(["uninstall", GAME, "--games"]).arg(games.path())));
    assert!(out.contains(&format!("{GAME}: uninstalled")), "{out}");
    let out = stdout(&run(lanspread(player_cfg.path()).args(["remove", GAME, "--games"]).arg(games.path())));
    assert!(out.contains(&format!("{GAME}: downloaded files removed")), "{out}");
    assert!(!games.path().join(GAME).join("version.ini").exists(), "removed by the running peer");

    // A refusal of the running peer is the command's error.
    let refused = lanspread(player_cfg.path()).args(["install", GAME, "--games"]).arg(games.path()).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains(GAME), "{}", String::from_utf8_lossy(&refused.stderr));

    // Moved to another directory (here through its API), the running peer
    // takes its control socket along: commands there reach it, and the
    // old directory is free for commands of their own.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(seeds.path().join("catalog.toml"), other.path().join("catalog.toml")).unwrap();
    let before = sockets(player_cfg.path());
    let moved =
        api(player_cfg.path(), &before[0], "PUT", "/api/v1/settings/game-dir", &format!(r#"{{"path": "{}"}}"#, other.path().display()));
    assert!(moved.contains(&other.path().display().to_string()), "{moved}");
    wait_until(|| sockets(player_cfg.path()).len() == 1 && sockets(player_cfg.path()) != before);
    let refused = lanspread(player_cfg.path()).args(["install", GAME, "--games"]).arg(other.path()).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && !said.contains("in use"), "the running peer answered, not the lock: {said}");
    run(lanspread(player_cfg.path()).args(["status", "--games"]).arg(games.path()));

    player.stop();
    seeder.stop();
    // With no peer running there, the command runs on its own again.
    assert!(!installed(player_cfg.path(), games.path()));
}

/// The control sockets in a config directory.
fn sockets(config: &Path) -> Vec<std::path::PathBuf> {
    let dir = config.join("control");
    let mut found: Vec<_> = std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == "sock"));
    found
}

fn wait_until(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "not reached in 10 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// One JSON request to a control socket, with the config's token; the
/// answer's body.
fn api(config: &Path, socket: &Path, method: &str, path: &str, body: &str) -> String {
    use http_body_util::{BodyExt, Full};
    let token = std::fs::read_to_string(config.join("ui-token")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {}", token.trim()))
            .header("content-type", "application/json")
            .body(Full::new(hyper::body::Bytes::from(body.to_owned())))
            .unwrap();
        let answer = sender.send_request(request).await.unwrap();
        String::from_utf8_lossy(&answer.into_body().collect().await.unwrap().to_bytes()).into_owned()
    })
}
