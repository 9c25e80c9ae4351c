//! `SetGameDir` through the runtime: the new directory's lock is taken (or
//! the switch refused while another process holds it), the old one's is
//! released, and the watches move with the directory.

use lanspread::builder::lock_games_dir;
use lanspread::{BuildError, Builder, Catalog, DiscoveryKind, ErrorCode, GameId, HasCode, Peer, SetGameDirError};
use std::path::Path;
use std::time::Duration;

fn write_game(dir: &Path, id: &str) {
    let root = dir.join(id);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("data.bin"), vec![7u8; 4096]).unwrap();
    std::fs::write(root.join("version.ini"), "1.0\n").unwrap();
}

/// Waits until the snapshot shows `id` downloaded locally (or not).
async fn seen_locally(peer: &Peer, id: &GameId, within: Duration) -> bool {
    let mut library = peer.library();
    let seen = |s: &std::sync::Arc<lanspread::Snapshot>| s.games.iter().any(|g| &g.id == id && g.local_version.is_some());
    let found = tokio::time::timeout(within, library.wait_for(seen)).await.is_ok_and(|r| r.is_ok());
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_game_dir_takes_the_new_directorys_lock_and_moves_the_watches() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let catalog = Catalog::from_toml("[[games]]\nid = \"arena\"\nname = \"Arena\"\n[[games]]\nid = \"quest\"\nname = \"Quest\"\n").unwrap();
    let peer = Builder::new()
        .game_dir(first.path())
        .catalog(catalog)
        .ephemeral_identity()
        .listen("127.0.0.1:0".parse().unwrap())
        .discovery(DiscoveryKind::None)
        // Only the watches can show a change within the test's time.
        .config(|c| {
            c.fallback_scan = Duration::from_secs(3600);
            c.watch_debounce = Duration::from_millis(50);
        })
        .spawn()
        .await
        .unwrap();
    let second_dir = second.path().to_str().unwrap();

    // Another process holds the second directory: the switch is refused.
    let other = lock_games_dir(second.path(), "another lanspread").unwrap();
    let refused = peer.set_game_dir(second_dir).await.unwrap_err();
    assert!(matches!(refused, SetGameDirError::InUse { .. }), "{refused:?}");
    assert_eq!(refused.code(), ErrorCode::Busy);
    assert!(refused.to_string().contains("another lanspread"), "the holder is named: {refused}");
    drop(other);

    peer.set_game_dir(second_dir).await.expect("switches once the directory is free");
    let shown = std::fs::canonicalize(second.path()).unwrap().display().to_string();
    assert_eq!(peer.game_dir(), Some(shown), "the peer tells its new directory");
    // The second directory is ours now, the first one free.
    assert!(matches!(lock_games_dir(second.path(), "test"), Err(BuildError::DirectoryInUse { .. })));
    drop(lock_games_dir(first.path(), "test").expect("the old directory's lock was released"));

    // The watches moved: a game that appears in the new directory is seen
    // at once (the fallback scan is an hour away), one in the old is not.
    write_game(second.path(), "arena");
    assert!(seen_locally(&peer, &GameId::new("arena").unwrap(), Duration::from_secs(10)).await, "the new directory is watched");
    write_game(first.path(), "quest");
    assert!(!seen_locally(&peer, &GameId::new("quest").unwrap(), Duration::from_secs(2)).await, "the old directory is not");
    peer.shutdown().await;
    drop(lock_games_dir(second.path(), "test").expect("released at shutdown"));
}

/// Waits until `peer` sees `id` held by `holder` (or, with `None`, by nobody).
async fn held_by(peer: &Peer, id: &GameId, holder: Option<lanspread::PeerId>, within: Duration) -> bool {
    let mut library = peer.library();
    let seen = |s: &std::sync::Arc<lanspread::Snapshot>| {
        let holders = s.games.iter().find(|g| &g.id == id).map(|g| g.peers_with_latest.clone()).unwrap_or_default();
        holders == holder.into_iter().collect::<Vec<_>>()
    };
    tokio::time::timeout(within, library.wait_for(seen)).await.is_ok_and(|r| r.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_game_dir_takes_the_new_directorys_identity_and_peers_see_it() {
    let (ids, first, second, theirs) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_game(first.path(), "arena");
    write_game(second.path(), "quest");
    let catalog = Catalog::from_toml("[[games]]\nid = \"arena\"\nname = \"Arena\"\n[[games]]\nid = \"quest\"\nname = \"Quest\"\n").unwrap();
    let fast = |c: &mut lanspread::PeerConfig| {
        c.ping_interval = Duration::from_millis(200);
        c.peer_timeout = Duration::from_secs(2);
    };
    let other = Builder::new()
        .game_dir(theirs.path())
        .catalog(catalog.clone())
        .ephemeral_identity()
        .listen("127.0.0.1:0".parse().unwrap())
        .discovery(DiscoveryKind::None)
        .config(fast)
        .spawn()
        .await
        .unwrap();
    let peer = Builder::new()
        .game_dir(first.path())
        .catalog(catalog)
        .identities_under(ids.path())
        .listen("127.0.0.1:0".parse().unwrap())
        .discovery(DiscoveryKind::None)
        .static_peers(vec![other.addr()])
        .config(fast)
        .spawn()
        .await
        .unwrap();
    let (arena, quest) = (GameId::new("arena").unwrap(), GameId::new("quest").unwrap());
    let (first_id, addr) = (peer.id(), peer.addr());
    assert!(held_by(&other, &arena, Some(first_id), Duration::from_secs(10)).await, "the first directory is served");

    peer.set_game_dir(second.path().to_str().unwrap()).await.expect("switches");
    let second_id = peer.id();
    assert_ne!(second_id, first_id, "the second directory has an identity of its own");
    assert_eq!(peer.addr(), addr, "the peer listens where it did");
    assert!(held_by(&other, &quest, Some(second_id), Duration::from_secs(10)).await, "peers see the new identity's games");
    assert!(held_by(&other, &arena, None, Duration::from_secs(10)).await, "and the old identity leaves");

    // Each directory keeps its identity: going back takes the first one again.
    peer.set_game_dir(first.path().to_str().unwrap()).await.expect("switches back");
    assert_eq!(peer.id(), first_id);
    assert!(held_by(&other, &arena, Some(first_id), Duration::from_secs(10)).await);
    peer.shutdown().await;
    other.shutdown().await;
}
