//! The unified game DB: the local library merged with what peers advertise.
//!
//! One view answers "what can I play, download, update, and from whom",
//! including titles that exist only locally (the reference system's first
//! known limitation) and titles only peers have.

use crate::catalog::{Catalog, CatalogEntry};
use crate::game::{GameId, GameSummary, Hash, Manifest, Version};
use crate::scan::{LocalGame, LocalLibrary};
use lanspread_ports::{PeerId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Everything we know about one remote peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Where we reach it.
    pub addr: SocketAddr,
    /// Its advertised games (latest `ListGames` answer).
    pub games: BTreeMap<GameId, GameSummary>,
    /// The last manifest it sent per game (from `GetGame`).
    pub manifests: BTreeMap<GameId, Manifest>,
    /// Last time it answered anything.
    pub last_seen: Timestamp,
}

/// What the user can do with a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Availability {
    /// Installed and no newer version on the LAN.
    Installed,
    /// Installed, and peers have a newer version.
    UpdateAvailable,
    /// Downloaded (not installed), up to date.
    Downloaded,
    /// Not here; peers have it.
    Downloadable,
    /// Known from the catalog only: nobody has it.
    Unavailable,
}

/// One row of the unified view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameView {
    /// Id.
    pub id: GameId,
    /// Display name.
    pub name: String,
    /// Catalog metadata, if the id is in our catalog.
    pub catalog: Option<CatalogEntry>,
    /// Local downloaded version.
    pub local_version: Option<Version>,
    /// Installed locally.
    pub installed: bool,
    /// Latest version any peer advertises.
    pub latest_remote: Option<Version>,
    /// Peers holding `latest_remote`.
    pub peers_with_latest: Vec<PeerId>,
    /// How many hosts those peers are on (see [`Voter`]): identities cost
    /// nothing, so this, not the number of peers, says how widely a version
    /// is held.
    #[serde(default)]
    pub hosts_with_latest: usize,
    /// Size of the latest version (remote, else local).
    pub size: u64,
    /// Summary of the state.
    pub availability: Availability,
    /// Whether the local copy is offered to peers (downloaded, with a
    /// manifest the name rule accepts).
    #[serde(default)]
    pub shared: bool,
    /// What the scan found wrong with the local copy, for the user (e.g.
    /// "not shared: ... are the same path on a case-insensitive disk").
    #[serde(default)]
    pub problems: Vec<String>,
}

/// Who casts a vote on which manifest of a version wins: a host, not an
/// identity, since identities cost nothing. Peers reached at one IP address
/// are one host; an identity is one voter whatever addresses it has (its
/// record holds the one it is reached at). On loopback every identity
/// votes (tests and demos run many peers on one machine). This is a
/// heuristic: a host with several addresses still votes once per address
/// it shows under a different identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Voter {
    /// A host on the LAN.
    Host(std::net::IpAddr),
    /// A peer on this machine (loopback).
    Local(PeerId),
}

impl Voter {
    /// The voter of peer `id` with record `p`.
    pub fn of(id: &PeerId, p: &PeerRecord) -> Self {
        let ip = p.addr.ip().to_canonical();
        if ip.is_loopback() {
            Voter::Local(*id)
        } else {
            Voter::Host(ip)
        }
    }
}

/// Which peers to download a version from, with one pinned manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSources {
    /// The version.
    pub version: Version,
    /// The manifest digest the majority of holders advertise.
    pub digest: Hash,
    /// Holders advertising exactly that digest, ordered by id.
    pub peers: Vec<PeerId>,
    /// Holders of the same version advertising another manifest (not used).
    pub dissenters: Vec<PeerId>,
}

/// Local library + peers.
#[derive(Debug, Clone, Default)]
pub struct GameDb {
    catalog: Catalog,
    local: LocalLibrary,
    peers: BTreeMap<PeerId, PeerRecord>,
}

impl GameDb {
    /// An empty DB over `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        GameDb { catalog, local: LocalLibrary::default(), peers: BTreeMap::new() }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Replaces the catalog.
    pub fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
    }

    /// Replaces the whole local library (after a full scan).
    pub fn set_local(&mut self, local: LocalLibrary) {
        self.local = local;
    }

    /// Updates one local game (`None`: its root is gone).
    pub fn set_local_game(&mut self, id: &GameId, game: Option<LocalGame>) {
        match game {
            Some(g) => {
                self.local.games.insert(id.clone(), g);
            }
            None => {
                self.local.games.remove(id);
            }
        }
    }

    /// The local library.
    pub fn local(&self) -> &LocalLibrary {
        &self.local
    }

    /// One local game.
    pub fn local_game(&self, id: &GameId) -> Option<&LocalGame> {
        self.local.games.get(id)
    }

    /// Records that a peer exists (from discovery or an incoming connection).
    pub fn upsert_peer(&mut self, id: PeerId, addr: SocketAddr, now: Timestamp) -> bool {
        match self.peers.get_mut(&id) {
            Some(p) => {
                p.addr = addr;
                p.last_seen = p.last_seen.max(now);
                false
            }
            None => {
                self.peers.insert(id, PeerRecord { addr, games: BTreeMap::new(), manifests: BTreeMap::new(), last_seen: now });
                true
            }
        }
    }

    /// Marks a peer alive.
    pub fn touch_peer(&mut self, id: &PeerId, now: Timestamp) {
        if let Some(p) = self.peers.get_mut(id) {
            p.last_seen = p.last_seen.max(now);
        }
    }

    /// Replaces a peer's advertised games. Summaries for ids outside our
    /// catalog are kept: the view shows them, but we never serve them.
    /// Returns whether anything changed.
    pub fn set_peer_games(&mut self, id: &PeerId, games: Vec<GameSummary>, now: Timestamp) -> bool {
        let Some(p) = self.peers.get_mut(id) else { return false };
        p.last_seen = p.last_seen.max(now);
        let new: BTreeMap<GameId, GameSummary> = games.into_iter().map(|g| (g.id.clone(), g)).collect();
        // Drop cached manifests whose version/digest no longer matches.
        p.manifests.retain(|gid, m| new.get(gid).is_some_and(|s| s.manifest_digest == m.digest()));
        let changed = p.games != new;
        p.games = new;
        changed
    }

    /// Records a manifest a peer sent for a game (ignored if it does not
    /// match what the peer advertises).
    pub fn set_peer_manifest(&mut self, id: &PeerId, game: &GameId, manifest: Manifest) -> bool {
        let Some(p) = self.peers.get_mut(id) else { return false };
        let Some(summary) = p.games.get(game) else { return false };
        if summary.manifest_digest != manifest.digest() || summary.version != manifest.version {
            return false;
        }
        p.manifests.insert(game.clone(), manifest);
        true
    }

    /// Removes a peer and everything it advertised. Returns whether it existed.
    pub fn remove_peer(&mut self, id: &PeerId) -> bool {
        self.peers.remove(id).is_some()
    }

    /// Peers not seen since `deadline`.
    pub fn stale_peers(&self, deadline: Timestamp) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, p)| p.last_seen < deadline).map(|(id, _)| *id).collect()
    }

    /// A peer's record.
    pub fn peer(&self, id: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(id)
    }

    /// All peers.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerId, &PeerRecord)> {
        self.peers.iter()
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Latest version any peer advertises for `id`.
    pub fn latest_remote(&self, id: &GameId) -> Option<Version> {
        self.peers.values().filter_map(|p| p.games.get(id)).map(|s| s.version.clone()).max()
    }

    /// How many hosts hold the latest remote version of `id`.
    pub fn hosts_with_latest(&self, id: &GameId) -> usize {
        let holders = self.peers_with_latest(id);
        holders.iter().filter_map(|pid| Some(Voter::of(pid, self.peers.get(pid)?))).collect::<BTreeSet<_>>().len()
    }

    /// Peers holding the latest remote version of `id`, ordered by id.
    pub fn peers_with_latest(&self, id: &GameId) -> Vec<PeerId> {
        let Some(latest) = self.latest_remote(id) else { return vec![] };
        self.peers.iter().filter(|(_, p)| p.games.get(id).is_some_and(|s| s.version == latest)).map(|(pid, _)| *pid).collect()
    }

    /// Where to download the latest version of `id` from: the holders of
    /// that version that agree on one manifest: the digest most *hosts*
    /// advertise (see [`Voter`]; ties broken by the smaller digest,
    /// deterministically). Every identity advertising the winning digest
    /// serves.
    pub fn download_sources(&self, id: &GameId) -> Option<DownloadSources> {
        let latest = self.latest_remote(id)?;
        let mut by_digest: BTreeMap<Hash, (Vec<PeerId>, BTreeSet<Voter>)> = BTreeMap::new();
        for (pid, p) in &self.peers {
            if let Some(s) = p.games.get(id).filter(|s| s.version == latest) {
                let (peers, voters) = by_digest.entry(s.manifest_digest).or_default();
                peers.push(*pid);
                voters.insert(Voter::of(pid, p));
            }
        }
        let (digest, (peers, _)) = by_digest.iter().max_by(|a, b| a.1 .1.len().cmp(&b.1 .1.len()).then_with(|| b.0.cmp(a.0)))?;
        let (digest, peers) = (*digest, peers.clone());
        let dissenters = by_digest.into_iter().filter(|(d, _)| *d != digest).flat_map(|(_, (v, _))| v).collect();
        Some(DownloadSources { version: latest, digest, peers, dissenters })
    }

    /// A manifest for `id` with `digest`, from any peer that sent it.
    pub fn manifest_with_digest(&self, id: &GameId, digest: &Hash) -> Option<&Manifest> {
        self.peers.values().filter_map(|p| p.manifests.get(id)).find(|m| &m.digest() == digest)
    }

    /// The unified view, one row per title known locally, remotely or in the catalog.
    pub fn view(&self) -> Vec<GameView> {
        let mut ids: BTreeSet<GameId> = self.catalog.entries().map(|e| e.id.clone()).collect();
        ids.extend(self.local.games.keys().cloned());
        for p in self.peers.values() {
            ids.extend(p.games.keys().cloned());
        }
        ids.into_iter().map(|id| self.view_of(&id)).collect()
    }

    /// The view of one title.
    pub fn view_of(&self, id: &GameId) -> GameView {
        let local = self.local.games.get(id);
        let latest_remote = self.latest_remote(id);
        let peers_with_latest = self.peers_with_latest(id);
        let hosts_with_latest = self.hosts_with_latest(id);
        let catalog = self.catalog.get(id).cloned();
        let remote_summary = self.peers.values().filter_map(|p| p.games.get(id)).find(|s| Some(&s.version) == latest_remote.as_ref());
        let name =
            catalog.as_ref().map(|c| c.name.clone()).or_else(|| remote_summary.map(|s| s.name.clone())).unwrap_or_else(|| id.to_string());
        let local_version = local.and_then(|g| g.version.clone());
        let installed = local.is_some_and(|g| g.installed);
        let newer_remote = match (&latest_remote, &local_version) {
            (Some(r), Some(l)) => r > l,
            (Some(_), None) => true,
            _ => false,
        };
        let availability = if installed {
            if newer_remote {
                Availability::UpdateAvailable
            } else {
                Availability::Installed
            }
        } else if local_version.is_some() && !newer_remote {
            Availability::Downloaded
        } else if latest_remote.is_some() {
            Availability::Downloadable
        } else if local_version.is_some() {
            Availability::Downloaded
        } else {
            Availability::Unavailable
        };
        let size = remote_summary.map(|s| s.size).or_else(|| local.and_then(|g| g.manifest.as_ref()).map(|m| m.total_size())).unwrap_or(0);
        let shared = local.is_some_and(|g| g.version.is_some() && g.manifest.is_some());
        let problems = local.map(|g| g.problems.clone()).unwrap_or_default();
        GameView {
            id: id.clone(),
            name,
            catalog,
            local_version,
            installed,
            latest_remote,
            peers_with_latest,
            hosts_with_latest,
            size,
            availability,
            shared,
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gid(s: &str) -> GameId {
        GameId::new(s).unwrap()
    }
    fn summary(id: &str, v: &str, digest: u8) -> GameSummary {
        GameSummary {
            id: gid(id),
            name: id.to_uppercase(),
            version: Version::new(v).unwrap(),
            size: 100,
            file_count: 1,
            manifest_digest: [digest; 32],
        }
    }
    fn local(id: &str, v: Option<&str>, installed: bool) -> LocalGame {
        LocalGame {
            id: gid(id),
            version: v.map(|v| Version::new(v).unwrap()),
            installed,
            intent_pending: false,
            manifest: None,
            problems: vec![],
        }
    }
    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }
    fn catalog() -> Catalog {
        Catalog::from_toml("[[games]]\nid=\"both\"\nname=\"Both\"\n[[games]]\nid=\"localonly\"\nname=\"L\"\n[[games]]\nid=\"remoteonly\"\nname=\"R\"\n[[games]]\nid=\"nobody\"\nname=\"N\"\n").unwrap()
    }

    #[test]
    fn merges_local_only_remote_only_and_both() {
        let mut db = GameDb::new(catalog());
        let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
        let now = Timestamp::ZERO;
        db.upsert_peer(a, addr(), now);
        db.upsert_peer(b, addr(), now);
        db.set_peer_games(&a, vec![summary("both", "2", 1), summary("remoteonly", "1", 1)], now);
        db.set_peer_games(&b, vec![summary("both", "1", 1)], now);
        let mut lib = LocalLibrary::default();
        lib.games.insert(gid("both"), local("both", Some("1"), true));
        lib.games.insert(gid("localonly"), local("localonly", Some("3"), false));
        db.set_local(lib);
        let view: BTreeMap<String, GameView> = db.view().into_iter().map(|v| (v.id.to_string(), v)).collect();
        assert_eq!(view["both"].availability, Availability::UpdateAvailable);
        assert_eq!(view["both"].latest_remote.as_ref().unwrap().as_str(), "2");
        assert_eq!(view["both"].peers_with_latest, vec![a]);
        assert_eq!(view["localonly"].availability, Availability::Downloaded);
        assert_eq!(view["localonly"].local_version.as_ref().unwrap().as_str(), "3");
        assert_eq!(view["remoteonly"].availability, Availability::Downloadable);
        assert_eq!(view["nobody"].availability, Availability::Unavailable);
        assert_eq!(view.len(), 4);
    }

    #[test]
    fn latest_version_is_natural_max_and_pruning_removes_entries() {
        let mut db = GameDb::new(catalog());
        let peers: Vec<PeerId> = (1..=3).map(|i| PeerId([i; 32])).collect();
        for (i, v) in ["1.9", "1.10", "1.10"].iter().enumerate() {
            db.upsert_peer(peers[i], addr(), Timestamp::from_duration(Duration::from_secs(i as u64)));
            db.set_peer_games(&peers[i], vec![summary("both", v, 7)], Timestamp::from_duration(Duration::from_secs(i as u64)));
        }
        assert_eq!(db.latest_remote(&gid("both")).unwrap().as_str(), "1.10");
        assert_eq!(db.peers_with_latest(&gid("both")), vec![peers[1], peers[2]]);
        assert_eq!(db.stale_peers(Timestamp::from_duration(Duration::from_secs(1))), vec![peers[0]]);
        assert!(db.remove_peer(&peers[1]));
        assert!(db.remove_peer(&peers[2]));
        assert_eq!(db.latest_remote(&gid("both")).unwrap().as_str(), "1.9");
        assert!(db.remove_peer(&peers[0]));
        assert_eq!(db.view_of(&gid("both")).availability, Availability::Unavailable);
        assert_eq!(db.peer_count(), 0);
    }

    #[test]
    fn download_sources_pin_the_majority_manifest() {
        let mut db = GameDb::new(catalog());
        let now = Timestamp::ZERO;
        for (i, d) in [(1u8, 9u8), (2, 5), (3, 5), (4, 9), (5, 5)] {
            db.upsert_peer(PeerId([i; 32]), addr(), now);
            db.set_peer_games(&PeerId([i; 32]), vec![summary("both", "1", d)], now);
        }
        let s = db.download_sources(&gid("both")).unwrap();
        assert_eq!(s.digest, [5; 32]);
        assert_eq!(s.peers, vec![PeerId([2; 32]), PeerId([3; 32]), PeerId([5; 32])]);
        assert_eq!(s.dissenters, vec![PeerId([1; 32]), PeerId([4; 32])]);
        // A tie goes to the smaller digest, whatever the insertion order.
        db.remove_peer(&PeerId([5; 32]));
        assert_eq!(db.download_sources(&gid("both")).unwrap().digest, [5; 32]);
    }

    /// Identities cost nothing: ten of them on one host are one vote, and
    /// two hosts that agree outvote them.
    #[test]
    fn votes_count_per_host_not_per_identity() {
        let mut db = GameDb::new(catalog());
        let now = Timestamp::ZERO;
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 47800);
        for i in 10..20u8 {
            db.upsert_peer(PeerId([i; 32]), at("10.0.0.66"), now);
            db.set_peer_games(&PeerId([i; 32]), vec![summary("both", "1", 6)], now);
        }
        for (i, ip) in [(1u8, "10.0.0.1"), (2, "fe80::2")] {
            db.upsert_peer(PeerId([i; 32]), at(ip), now);
            db.set_peer_games(&PeerId([i; 32]), vec![summary("both", "1", 7)], now);
        }
        let s = db.download_sources(&gid("both")).unwrap();
        assert_eq!(s.digest, [7; 32], "two hosts outvote ten identities on one host");
        assert_eq!(s.peers, vec![PeerId([1; 32]), PeerId([2; 32])]);
        assert_eq!(s.dissenters.len(), 10);
        assert_eq!(db.view_of(&gid("both")).hosts_with_latest, 3, "ten identities on one host, and two other hosts");
        // The same address as IPv4 and as IPv4-mapped IPv6 is one host.
        db.upsert_peer(PeerId([3; 32]), at("::ffff:10.0.0.66"), now);
        db.set_peer_games(&PeerId([3; 32]), vec![summary("both", "1", 6)], now);
        assert_eq!(db.download_sources(&gid("both")).unwrap().digest, [7; 32]);
    }
}
