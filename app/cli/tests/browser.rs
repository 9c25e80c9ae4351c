//! The web UI in a real browser: `lanspread demo --ui` runs three loopback
//! seeders and a downloader behind the UI; Debian's chromium, driven over
//! WebDriver by chromedriver, opens the printed URL, clicks Get, and waits
//! until the page shows the game installed with each peer's share.
//! Screenshots go to `target/ui/`.
//!
//! Without a browser the test is skipped with a printed reason, except
//! under `CI=true`, where a missing browser fails it (CI installs one).
//!
//! On loopback the download is over before a screenshot can catch it; the
//! README's screenshots come from a run in a network namespace whose
//! loopback is capped (`ip netns add ui; ip netns exec ui ip link set lo
//! up; ip netns exec ui tc qdisc add dev lo root tbf rate 400mbit burst
//! 256kb latency 50ms`, then `ip netns exec ui cargo test --offline -p
//! lanspread-cli --test browser`).
// Drives Debian's chromium and the Linux program.
#![cfg(unix)]

use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const GAME: &str = "demo-arena";

/// The first of `names` found on `PATH`.
fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// chromium and chromedriver, or why the test cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium =
        find_on_path(&["chromium", "chromium-browser", "google-chrome"]).ok_or("no chromium on PATH (apt-get install chromium)")?;
    let driver = find_on_path(&["chromedriver"]).ok_or("no chromedriver on PATH (apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui");
    std::fs::create_dir_all(&dir).expect("target/ui");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Ends a child process, politely first (so the demo removes its files).
async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Starts `lanspread demo --ui` and returns it with the URL it printed.
async fn start_demo(config: &Path) -> (Child, String) {
    // A bigger game (for the README's screenshot of a running download):
    // LANSPREAD_UI_DEMO_MIB=1536.
    let mib = std::env::var("LANSPREAD_UI_DEMO_MIB").unwrap_or_else(|_| "256".into());
    let mut demo = Command::new(env!("CARGO_BIN_EXE_lanspread"))
        .args(["demo", "--ui", "127.0.0.1:0", "--size-mib", &mib])
        .env("LANSPREAD_CONFIG_DIR", config)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("lanspread demo starts");
    let mut lines = BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("demo output") {
            println!("demo: {line}");
            if let Some(url) = line.strip_prefix("web UI: open ") {
                return url.to_owned();
            }
        }
        panic!("the demo ended without printing the UI's URL");
    })
    .await
    .expect("the demo prints the UI's URL");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (demo, url)
}

/// chromedriver on a free port, and a headless chromium session through it.
async fn start_browser(chromium: &Path, driver: &Path) -> (Child, Client) {
    let port = free_port();
    let chromedriver = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let mut caps = serde_json::Map::new();
    let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"];
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": chromium, "args": args }));
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    (chromedriver, client)
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshots().join(name);
    std::fs::write(&path, png).expect("saving the screenshot");
    println!("saved {}", path.display());
}

fn card(state: &str) -> String {
    format!(r#"article.game[data-game-id="{GAME}"][data-state="{state}"]"#)
}

/// Whether the card shows a download under way: bytes done and a bar per peer.
async fn download_under_way(client: &Client) -> bool {
    let download = format!(r#"article.game[data-game-id="{GAME}"] .download"#);
    let Ok(bar) = client.find(Locator::Css(&format!("{download} progress.overall"))).await else { return false };
    let done = bar.attr("value").await.ok().flatten().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let peers = client.find_all(Locator::Css(&format!("{download} .peer-share"))).await.map(|p| p.len()).unwrap_or(0);
    done > 0.0 && peers > 0
}

/// Waits until the card is installed; on the way, saves one screenshot
/// of the running download with its per-peer bars, if the poll catches it.
async fn wait_until_installed(client: &Client) -> bool {
    let mut caught = false;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if client.find(Locator::Css(&card("installed"))).await.is_ok() {
            return caught;
        }
        if !caught && download_under_way(client).await {
            screenshot(client, "download.png").await;
            caught = true;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("{GAME} was not shown installed within 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_gets_a_game_from_the_page_and_sees_each_peers_share() {
    let (chromium, driver) = match browser() {
        Ok(found) => found,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI needs a browser: {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let config = tempfile::tempdir().unwrap();
    let (demo, url) = start_demo(config.path()).await;
    let (chromedriver, client) = start_browser(&chromium, &driver).await;

    client.goto(&url).await.expect("the page opens");
    client.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css(&card("remote"))).await.expect("the game is offered");
    assert!(client.current_url().await.unwrap().query().is_none(), "the token left the address bar");
    screenshot(&client, "library.png").await;

    click_get(&client).await;
    let caught = wait_until_installed(&client).await;
    println!("running download caught on screen: {caught}");
    let shares = client
        .find_all(Locator::Css(&format!(r#"article.game[data-game-id="{GAME}"] .last-download .peer-share"#)))
        .await
        .expect("the last download's shares");
    assert!(shares.len() >= 2, "the page shows the game came from several peers, got {} share(s)", shares.len());
    let errors = client.find(Locator::Css("#errors")).await.unwrap().text().await.unwrap();
    assert!(errors.trim().is_empty(), "no error on the page: {errors}");
    screenshot(&client, "installed.png").await;

    client.close().await.expect("the session ends");
    stop(chromedriver).await;
    stop(demo).await;
}

/// Clicks the Get button of the offered game. The page redraws the library
/// when news comes (a peer joins, a snapshot), which can replace the button
/// between finding and clicking it; it is then found again.
async fn click_get(client: &fantoccini::Client) {
    let get = format!(r#"{} button[data-action="get"]"#, card("remote"));
    let mut last = None;
    for _ in 0..50 {
        match client.find(Locator::Css(&get)).await {
            Ok(button) => match button.click().await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no Get button could be clicked: {last:?}");
}
