//! Event fan-out: any number of subscribers, a bounded buffer each, and a
//! subscriber that falls behind is told so instead of growing memory.

use lanspread::{Builder, DiscoveryKind, EventsError, PeerCommand, PeerEvent};
use std::time::Duration;

async fn peer(capacity: usize) -> (lanspread::Peer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let peer = Builder::new()
        .game_dir(dir.path())
        .dir_lock(false)
        .ephemeral_identity()
        .listen("127.0.0.1:0".parse().unwrap())
        .discovery(DiscoveryKind::None)
        .config(move |c| c.event_capacity = capacity)
        .spawn()
        .await
        .unwrap();
    (peer, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_told_and_catches_up_from_the_snapshot() {
    let (peer, _dir) = peer(16).await;
    let mut slow = peer.subscribe();
    let mut fast = peer.subscribe();
    // The fast subscriber reads every event as it comes: it sees each of
    // the 64 snapshots.
    for _ in 0..64 {
        peer.send(PeerCommand::ListGames);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), fast.recv()).await.expect("events keep coming") {
                Ok(PeerEvent::LibrarySnapshot { .. }) => break,
                Ok(_) => {}
                Err(e) => panic!("the fast subscriber lagged: {e}"),
            }
        }
    }
    // The slow one read nothing: it is told how much it missed, once.
    let missed = match slow.recv().await {
        Err(EventsError::Lagged { missed }) => missed,
        other => panic!("expected a lag, got {other:?}"),
    };
    assert!(missed >= 64 - 16, "missed {missed}");
    // Then it reads the newest events, and the snapshot has the state.
    assert!(matches!(slow.recv().await, Ok(PeerEvent::LibrarySnapshot { .. })));
    assert!(peer.snapshot().operations.is_empty());
    peer.shutdown().await;
    // After the stop, both subscriptions end.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.recv()).await.expect("recv ends") {
            Err(EventsError::Closed) => break,
            Ok(_) | Err(EventsError::Lagged { .. }) => {}
        }
    }
}
