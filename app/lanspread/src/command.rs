//! The reference-shaped interface: [`PeerCommand`]s in, [`PeerEvent`]s
//! out, for apps written against the reference system. It is a thin layer
//! over the same peer machine the typed [`crate::Peer`] methods use.
//!
//! [`PeerEvent`]: lanspread_core::peer::PeerEvent

use crate::runtime::driver::Driver;
use lanspread_core::game::GameId;
use lanspread_core::peer::DownloadOptions;
use lanspread_ports::RelPath;

/// What the UI asks for; outcomes arrive as events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerCommand {
    /// Emit a `LibrarySnapshot`.
    ListGames,
    /// Ask the peers holding the latest version for its manifest (a cached
    /// one is used if still advertised); answers `GotGameFiles`.
    GetGame(GameId),
    /// Same, but always asks the holders again (for an update).
    FetchLatestFromPeers(GameId),
    /// Download the latest version from all peers holding it, then install
    /// if the peer is configured to (`auto_install`). `files` selects some
    /// files only: `version.ini` is then not committed and the game stays
    /// "partial" until a full download.
    DownloadGameFiles {
        /// Game.
        id: GameId,
        /// Files to fetch (`None`: all).
        files: Option<Vec<RelPath>>,
    },
    /// Install (or update) from the downloaded archives. An update of a
    /// `local/` lanspread did not install is refused unless `adopt`.
    InstallGame {
        /// Game.
        id: GameId,
        /// Take over a `local/` without lanspread's marker (its files are
        /// kept as the user's).
        adopt: bool,
    },
    /// Remove `local/`, keeping the files the user created or changed. A
    /// `local/` lanspread did not install is refused unless `adopt`.
    UninstallGame {
        /// Game.
        id: GameId,
        /// Take over a `local/` without lanspread's marker.
        adopt: bool,
    },
    /// Delete the downloaded files of a game that is not installed.
    RemoveDownloadedGame(GameId),
    /// Stop a running download (the game ends "not downloaded").
    CancelDownload(GameId),
    /// Switch to another game directory (refused while operations run).
    SetGameDir(String),
    /// Emit `PeerCount`.
    GetPeerCount,
    /// Stop the runtime.
    Shutdown,
}

impl PeerCommand {
    /// `DownloadGameFiles` of every file of `id`.
    ///
    /// ```
    /// use lanspread::{GameId, PeerCommand};
    /// let id = GameId::new("openarena")?;
    /// let cmd = PeerCommand::download(id.clone());
    /// assert_eq!(cmd, PeerCommand::DownloadGameFiles { id, files: None });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn download(id: GameId) -> Self {
        PeerCommand::DownloadGameFiles { id, files: None }
    }
}

/// Applies a command on the driver. Refusals and failures are reported as
/// events by the peer machine itself.
pub(crate) fn apply(d: &mut Driver, cmd: PeerCommand) {
    let m = &mut d.machine;
    match cmd {
        PeerCommand::ListGames => m.list_games(),
        PeerCommand::GetPeerCount => m.peer_count(),
        PeerCommand::GetGame(id) => drop(m.resolve(&id, false)),
        PeerCommand::FetchLatestFromPeers(id) => drop(m.resolve(&id, true)),
        PeerCommand::DownloadGameFiles { id, files } => {
            let install = d.ctx.cfg.auto_install;
            let files = files.map(|f| f.into_iter().collect());
            drop(m.download(&id, DownloadOptions { files, install, fresh: false }));
        }
        PeerCommand::InstallGame { id, adopt } => drop(m.install(&id, adopt)),
        PeerCommand::UninstallGame { id, adopt } => drop(m.uninstall(&id, adopt)),
        PeerCommand::RemoveDownloadedGame(id) => drop(m.remove(&id)),
        PeerCommand::CancelDownload(id) => drop(m.cancel(&id)),
        PeerCommand::Shutdown => d.begin_shutdown(),
        // Sent as its own driver command (it awaits recovery and a scan).
        PeerCommand::SetGameDir(_) => {}
    }
}
