//! The command line: arguments, and the entry point that dispatches them.

use crate::ui::UiArgs;
use crate::{demo, limits, setup};
use clap::{Parser, Subcommand, ValueEnum};
use lanspread::TransportKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Share a game library across the LAN, peer to peer.
#[derive(Parser, Debug)]
// `about` is spelled out: it was the description of the former
// `lanspread-app` package, and the help must not change with the split.
#[command(name = "lanspread", version, about = "The lanspread peer runtime (assembled from ports) and the lanspread program")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which QUIC stack to use (the command line's face of [`TransportKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// s2n-quic.
    S2n,
    /// quinn.
    Quinn,
}

impl From<TransportArg> for TransportKind {
    fn from(arg: TransportArg) -> Self {
        match arg {
            TransportArg::S2n => TransportKind::S2n,
            TransportArg::Quinn => TransportKind::Quinn,
        }
    }
}

/// Options shared by the commands that join the LAN.
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Game directory.
    #[arg(long, value_name = "DIR")]
    pub games: PathBuf,
    /// Catalog file (default: DIR/catalog.toml).
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// Address to listen on (default [::]:0 for clients, [::]:47800 for serve; both IPv4 and IPv6).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// QUIC implementation.
    #[arg(long, value_enum)]
    pub transport: Option<TransportArg>,
    /// A peer to dial directly (repeatable), for networks where multicast is blocked.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    /// Disable mDNS discovery (use only --peer).
    #[arg(long)]
    pub no_mdns: bool,
    /// LAN party key: only peers that know it may connect.
    #[arg(long, value_name = "WORDS", env = "LANSPREAD_PARTY_KEY")]
    pub party_key: Option<String>,
    /// Most this process sends to other peers per second, e.g. 10MB or 500KiB.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_upload: Option<u64>,
    /// Most this process downloads per second, e.g. 10MB or 500KiB.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_download: Option<u64>,
}

/// A rate in bytes per second, written as a size (`10MB`, `1.5GiB`, `500k`).
fn parse_rate(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s.parse().map_err(|e| format!("{s:?} is not a rate such as 10MB or 500KiB: {e}"))?;
    match size.as_u64() {
        0 => Err("a rate cap must be above zero".into()),
        n => Ok(n),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a peer until stopped (Ctrl-C).
    Serve {
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        ui: UiArgs,
    },
    /// What the LAN offers, merged with the local library.
    Games {
        #[command(flatten)]
        net: NetArgs,
        /// Seconds to listen for peers.
        #[arg(long, default_value_t = 3.0)]
        wait: f64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Download a game from every peer holding its latest version, then install it.
    Get {
        /// Game id.
        game: String,
        #[command(flatten)]
        net: NetArgs,
        /// Only download.
        #[arg(long)]
        no_install: bool,
        /// Install over a local/ lanspread did not make, keeping its files as yours.
        #[arg(long)]
        adopt: bool,
        /// Seconds to wait for a peer holding the game, and, once the download runs, for a new one when every holder left or was banned.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Install (or update) a downloaded game.
    Install(AdoptArgs),
    /// Uninstall a game (keeps the downloaded files, and your files in it).
    Uninstall(AdoptArgs),
    /// Delete the downloaded files of a game that is not installed.
    Remove(LocalArgs),
    /// The local library.
    Status {
        /// Game directory.
        #[arg(long, value_name = "DIR")]
        games: PathBuf,
        /// Catalog file (default: DIR/catalog.toml).
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Generate a sample game root (version.ini, a tar archive, a readme) and add it to DIR/catalog.toml.
    #[command(hide = true)]
    GenGame {
        /// Game directory.
        #[arg(long, value_name = "DIR")]
        games: PathBuf,
        /// Game id.
        #[arg(long)]
        id: String,
        /// Size of the archive in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        /// Version written to version.ini.
        #[arg(long, default_value = "1.0")]
        version: String,
        /// Seed of the content (same seed, same bytes).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A throwaway LAN of several peers in this process, sharing a generated game.
    Demo {
        /// Number of seeding peers.
        #[arg(long, default_value_t = 3)]
        seeders: usize,
        /// Size of the generated game in MiB.
        #[arg(long, default_value_t = 192)]
        size_mib: u64,
        /// QUIC implementation of the seeders (the downloader uses the other one when `mixed`).
        #[arg(long, value_enum, default_value_t = TransportArg::Quinn)]
        transport: TransportArg,
        /// Keep the demo directory instead of deleting it.
        #[arg(long)]
        keep: bool,
        /// With --ui, the demo LAN keeps running behind the web UI until Ctrl-C (nothing is downloaded until you click Get).
        #[command(flatten)]
        ui: UiArgs,
    },
}

#[derive(clap::Args, Debug)]
struct LocalArgs {
    /// Game id.
    game: String,
    /// Game directory.
    #[arg(long, value_name = "DIR")]
    games: PathBuf,
    /// Catalog file (default: DIR/catalog.toml).
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct AdoptArgs {
    #[command(flatten)]
    local: LocalArgs,
    /// Take over a local/ lanspread did not make; its files are kept as yours.
    #[arg(long)]
    adopt: bool,
}

/// Entry point of the program.
pub fn main() -> ExitCode {
    // Before anything opens a file; logged once tracing is up.
    let nofile = limits::raise_nofile();
    let cli = Cli::parse();
    // A seeder runs for hours and serves many peers at once: its allocator
    // is tuned before any thread starts (see `alloc.rs`).
    if matches!(cli.command, Command::Serve { .. }) {
        crate::alloc::tune();
    }
    setup::init_tracing();
    limits::log(&nofile);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lanspread: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve { net, ui } => setup::serve(net, ui).await,
            Command::Games { net, wait, json } => setup::games(net, wait, json).await,
            Command::Get { game, net, no_install, adopt, wait, json } => setup::get(game, net, !no_install, adopt, wait, json).await,
            Command::Install(AdoptArgs { local: a, adopt }) => {
                setup::local_op(setup::LocalOp::Install { adopt }, &a.game, &a.games, a.catalog.as_deref()).await
            }
            Command::Uninstall(AdoptArgs { local: a, adopt }) => {
                setup::local_op(setup::LocalOp::Uninstall { adopt }, &a.game, &a.games, a.catalog.as_deref()).await
            }
            Command::Remove(a) => setup::local_op(setup::LocalOp::Remove, &a.game, &a.games, a.catalog.as_deref()).await,
            Command::Status { games, catalog, json } => setup::status(&games, catalog.as_deref(), json).await,
            Command::GenGame { games, id, size_mib, version, seed } => demo::gen_game(&games, &id, size_mib, &version, seed),
            Command::Demo { seeders, size_mib, transport, keep, ui } => demo::run(seeders, size_mib, transport.into(), keep, ui).await,
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanspread: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_are_sizes_per_second() {
        assert_eq!(parse_rate("10MB"), Ok(10_000_000));
        assert_eq!(parse_rate("500KiB"), Ok(512_000));
        assert_eq!(parse_rate("1.5GB"), Ok(1_500_000_000));
        assert!(parse_rate("0").is_err(), "a zero cap would stop every transfer");
        assert!(parse_rate("fast").is_err());
    }
}
