//! Embedding lanspread in an app: two peers in one process, on loopback
//! with real QUIC. The first shares a generated game; the second finds it,
//! downloads it (showing progress) and installs it.
//!
//! ```sh
//! cargo run -p lanspread --example embed
//! ```

use lanspread::{Builder, Catalog, DiscoveryKind, DownloadOptions, GameId, GameView, Operation, Peer, Progress};
use std::error::Error;
use std::future::IntoFuture;
use std::path::Path;
use std::time::{Duration, Instant};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const GAME: &str = "tiny-arena";
const CATALOG: &str = r#"
[[games]]
id = "tiny-arena"
name = "Tiny Arena"
genre = "Arena"
"#;

/// Size of the generated game's data, MiB.
const SIZE_MIB: u64 = 24;

#[tokio::main]
async fn main() -> Result<()> {
    let (seeder_dir, leecher_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let files = generate_game(&seeder_dir.path().join(GAME), SIZE_MIB)?;
    let catalog = Catalog::from_toml(CATALOG)?;

    // The peer that has the game.
    let seeder = Builder::new()
        .game_dir(seeder_dir.path())
        .catalog(catalog.clone())
        .ephemeral_identity()
        .listen("127.0.0.1:0".parse()?)
        .discovery(DiscoveryKind::None)
        .spawn()
        .await?;
    wait_until(&seeder, "the seeder to share the game", |g| g.shared).await?;
    // The peer that wants it: it dials the seeder's address.
    let leecher = Builder::new()
        .game_dir(leecher_dir.path())
        .catalog(catalog)
        .ephemeral_identity()
        .listen("127.0.0.1:0".parse()?)
        .discovery(DiscoveryKind::None)
        .static_peers(vec![seeder.addr()])
        .config(|c| c.progress_interval = Duration::from_millis(10))
        .spawn()
        .await?;
    println!("seeder {} at {}, leecher {} at {}", seeder.id(), seeder.addr(), leecher.id(), leecher.addr());

    let result = fetch_and_install(&leecher, leecher_dir.path(), &files).await;
    leecher.shutdown().await;
    seeder.shutdown().await;
    if let Err(e) = result {
        eprintln!("embed example failed: {e}");
        std::process::exit(1);
    }
    Ok(())
}

/// Waits until the leecher sees a holder of the game, downloads and
/// installs it, and checks the installed files.
async fn fetch_and_install(leecher: &Peer, games: &Path, files: &[(String, u64)]) -> Result<()> {
    let id = GameId::new(GAME)?;
    let t = Instant::now();
    wait_until(leecher, "a holder of the game", |g| !g.peers_with_latest.is_empty()).await?;
    println!("found a holder of {GAME} after {:.2} s", t.elapsed().as_secs_f64());

    let download = leecher.download(&id, DownloadOptions::default()).await?;
    let report = with_progress("download", download).await?;
    println!(
        "downloaded {GAME} {}: {} fetched ({} reused) in {:.2} s from {} peer(s)",
        report.version,
        mib(report.stats.bytes),
        mib(report.stats.reused),
        report.stats.secs,
        report.stats.peers.len()
    );

    let install = leecher.install(&id, false).await?;
    let installed = with_progress("install", install).await?;
    let local = games.join(GAME).join("local");
    for (name, size) in files {
        let path = local.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| format!("installed file {} is missing: {e}", path.display()))?;
        if meta.len() != *size {
            return Err(format!("installed file {} has {} bytes, not {size}", path.display(), meta.len()).into());
        }
    }
    let view = leecher.snapshot().games.iter().find(|g| g.id == id).cloned().ok_or("the game left the library")?;
    println!(
        "installed {GAME} ({} files checked in {}; update: {}; availability: {:?})",
        files.len(),
        local.display(),
        installed.update,
        view.availability
    );
    println!("done in {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Waits (at most 30 s) until `peer`'s snapshot shows the game in a state
/// that `ok` accepts.
async fn wait_until(peer: &Peer, what: &str, ok: impl Fn(&GameView) -> bool) -> Result<()> {
    let mut library = peer.library();
    let found = library.wait_for(|s| s.games.iter().any(|g| g.id.as_str() == GAME && ok(g)));
    let outcome = match tokio::time::timeout(Duration::from_secs(30), found).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(format!("the peer stopped while waiting for {what}").into()),
        Err(_) => Err(format!("timed out after 30 s waiting for {what}").into()),
    };
    outcome
}

/// Awaits `op`, printing its progress at every tenth of the way (and at
/// the end).
async fn with_progress<T: Send + 'static, E: Send + 'static>(what: &str, op: Operation<T, E>) -> Result<T, E> {
    let mut progress = op.progress();
    let tenth = |p: &Progress| p.fraction().map(|f| (f * 10.0) as u8);
    let (mut last_line, mut last_tenth) = (String::new(), None);
    let result = op.into_future();
    tokio::pin!(result);
    loop {
        tokio::select! {
            r = &mut result => {
                let line = progress_line(what, &progress.borrow());
                if line != last_line {
                    println!("{line}");
                }
                return r;
            }
            Ok(()) = progress.changed() => {
                let p = progress.borrow_and_update().clone();
                if tenth(&p) != last_tenth || p.total.is_none() {
                    last_tenth = tenth(&p);
                    last_line = progress_line(what, &p);
                    println!("{last_line}");
                }
            }
        }
    }
}

/// One progress line: done/total, rate, ETA and each peer's share.
fn progress_line(what: &str, p: &Progress) -> String {
    let total = p.total.map_or_else(|| "?".to_owned(), mib);
    let pct = p.fraction().map_or_else(String::new, |f| format!(" ({:.0}%)", f * 100.0));
    let mut line = format!("  {what}: {} / {total}{pct}", mib(p.done));
    if p.rate > 0.0 {
        line += &format!(", {}/s", mib(p.rate as u64));
    }
    if let Some(eta) = p.eta {
        line += &format!(", ETA {:.2} s", eta.as_secs_f64());
    }
    for share in &p.peers {
        line += &format!(", peer {}: {} at {}/s", share.peer, mib(share.bytes), mib(share.rate as u64));
    }
    if let Some(why) = &p.waiting {
        line += &format!(" (waiting: {why})");
    }
    line
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Writes a game root at `root`: `version.ini` ("1.0"), a tar archive of
/// `size_mib` MiB of data files and a start script, and a readme. Returns
/// the files the archive installs (path in `local/`, size).
fn generate_game(root: &Path, size_mib: u64) -> std::io::Result<Vec<(String, u64)>> {
    std::fs::create_dir_all(root)?;
    let archive = std::fs::File::create(root.join(format!("{GAME}.tar")))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(archive));
    let mut files = Vec::new();
    let mut add = |tar: &mut tar::Builder<_>, name: String, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        files.push((name.clone(), data.len() as u64));
        tar.append_data(&mut h, name, data)
    };
    // Incompressible, deterministic data (xorshift), 4 MiB a file.
    let mut seed = 0x5eed_u64;
    let mut left = size_mib << 20;
    for i in 0.. {
        if left == 0 {
            break;
        }
        let n = left.min(4 << 20) as usize;
        let data: Vec<u8> = (0..n / 8)
            .flat_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()
            })
            .collect();
        add(&mut tar, format!("data/pack{i:02}.bin"), &data, 0o644)?;
        left -= n as u64;
    }
    add(&mut tar, "play.sh".to_owned(), b"#!/bin/sh\necho 'Welcome to the tiny arena'\n", 0o755)?;
    use std::io::Write;
    tar.into_inner()?.flush()?;
    std::fs::write(root.join("README.txt"), "Generated by the lanspread `embed` example.\n")?;
    std::fs::write(root.join("version.ini"), "1.0\n")?;
    Ok(files)
}
