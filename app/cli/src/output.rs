//! Human and JSON output.

use lanspread::{PeerShare, TransferStats};
use lanspread_core::db::{Availability, GameView};
use lanspread_core::game::GameId;

/// Prints a line; a closed stdout (`lanspread status | head`) ends the
/// program quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}
pub(crate) use say;

/// `1.5 GiB`-style sizes.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn print_games(games: &[GameView], json: bool) {
    if json {
        say!("{}", serde_json::to_string_pretty(games).unwrap_or_default());
        return;
    }
    if games.is_empty() {
        say!("no games (empty catalog and no peers)");
        return;
    }
    say!("{:<20} {:<28} {:<12} {:<12} {:>10} {:>5}  STATE", "ID", "NAME", "LOCAL", "LATEST", "SIZE", "HOSTS");
    for g in games {
        let state = match g.availability {
            Availability::Installed => "installed",
            Availability::UpdateAvailable => "update available",
            Availability::Downloaded => "downloaded",
            Availability::Downloadable => "downloadable",
            Availability::Unavailable => "unavailable",
        };
        say!(
            "{:<20} {:<28} {:<12} {:<12} {:>10} {:>5}  {state}",
            g.id.as_str(),
            g.name.chars().take(28).collect::<String>(),
            g.local_version.as_ref().map(|v| v.as_str()).unwrap_or("-"),
            g.latest_remote.as_ref().map(|v| v.as_str()).unwrap_or("-"),
            size(g.size),
            g.hosts_with_latest,
        );
        for problem in &g.problems {
            say!("{:<20} ! {problem}", "");
        }
    }
}

/// `a1b2c3d4 41% · 9f8e7d6c 59%`.
pub fn shares(peers: &[PeerShare], done: u64) -> String {
    peers
        .iter()
        .map(|p| format!("{} {:.0}%", p.peer, if done == 0 { 0.0 } else { p.bytes as f64 * 100.0 / done as f64 }))
        .collect::<Vec<_>>()
        .join(" · ")
}

pub fn print_transfer(id: &GameId, stats: &TransferStats) {
    let rate = if stats.secs > 0.0 { stats.bytes as f64 / stats.secs } else { 0.0 };
    say!("downloaded {id}: {} in {:.2} s ({}/s)", size(stats.bytes), stats.secs, size(rate as u64));
    if stats.reused > 0 {
        say!("  {} were already in place and verified", size(stats.reused));
    }
    for p in &stats.peers {
        let share = if stats.bytes == 0 { 0.0 } else { p.bytes as f64 * 100.0 / stats.bytes as f64 };
        say!("  peer {}: {:>10} ({share:5.1}%)", p.peer, size(p.bytes));
    }
}
