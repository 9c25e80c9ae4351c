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
