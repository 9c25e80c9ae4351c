//! Integrity and trust in simulation: lying peers, disagreeing manifests,
//! the LAN party key (strangers, wrong keys, relays), key changes, and
//! hostile requests.

use bytes::Bytes;
use lanspread::{PeerCommand, PeerEvent};
use lanspread_core::game::GameId;
use lanspread_core::protocol::{self, Hello, Request, Response, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, PROTOCOL_VERSION};
use lanspread_core::wire;
use lanspread_memfs::MemFs;
use lanspread_ports::{Connection, RelPath, Transport};
use lanspread_testkit::fakes::LyingFs;
use lanspread_testkit::game::catalog_of;
use lanspread_testkit::sim::SimPeer;
use lanspread_testkit::{ms, HostConfig, Sim, SimGame, SimRng};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

/// Adds (without starting) a peer named `name` on its own 20 MB/s host,
/// holding `game`.
fn add_holder<'a>(sim: &'a mut Sim, name: &str, game: &SimGame, config: lanspread::PeerConfig) -> &'a mut SimPeer {
    let h = sim.host(name, HostConfig::symmetric(20.0 * MB, ms(1)));
    let fs = MemFs::unrecorded();
    game.write(&fs, &sim.rng);
    sim.add_peer(name, h, fs, config)
}

/// Starts a peer named `name` on its own 20 MB/s host, holding `game`.
fn spawn_holder(sim: &mut Sim, name: &str, game: &SimGame, config: lanspread::PeerConfig) {
    add_holder(sim, name, game, config);
    sim.start(name);
}

fn holders(sim: &Sim, peer: &str, id: &str) -> usize {
    let id = gid(id);
    sim.events(peer)
        .into_iter()
        .rev()
        .find_map(|(_, e)| match e {
            PeerEvent::LibrarySnapshot { games, .. } => Some(games.iter().find(|g| g.id == id).map_or(0, |g| g.peers_with_latest.len())),
            _ => None,
        })
        .unwrap_or(0)
}

fn downloaded(fs: &MemFs, id: &str) -> BTreeMap<String, lanspread_memfs::Node> {
    fs.tree_at(id).into_iter().filter(|(p, _)| !p.starts_with("local") && !p.starts_with('.')).collect()
}

async fn wait_installed(sim: &Sim, peer: &str, id: &str) {
    let id = gid(id);
    let (_, e) = sim
        .wait_for(
            peer,
            Duration::from_secs(300),
            |e| matches!(e, PeerEvent::InstallFinished { id: i } | PeerEvent::DownloadFailed { id: i, .. } if *i == id),
        )
        .await;
    assert!(matches!(e, PeerEvent::InstallFinished { .. }), "{peer}: {e:?}");
}

#[test]
fn lying_peer_is_banned_and_the_download_completes_from_honest_ones() {
    Sim::run("lying_peer_is_banned_and_the_download_completes_from_honest_ones", 21, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 24 * MIB);
        let cat = catalog_of(&[&game]);
        let mut liar = None;
        for s in ["liar", "s1", "s2"] {
            let p = add_holder(&mut sim, s, &game, Sim::config(cat.clone()));
            if s == "liar" {
                let lying = LyingFs::new(p.fs.clone(), ".simpack");
                liar = Some(lying.lie.clone());
                p.fs_override = Some(Arc::new(lying));
            }
            sim.start(s);
        }
        // The liar scanned honestly; from now on it serves flipped bytes.
        sim.wait_for("liar", Duration::from_secs(5), |e| matches!(e, PeerEvent::LibrarySnapshot { .. })).await;
        liar.unwrap().store(true, Ordering::SeqCst);
        let hd = sim.host("d", HostConfig::symmetric(100.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        sim.wait_until("3 holders", Duration::from_secs(10), |s| holders(s, "d", "arena") == 3).await;
        sim.send("d", PeerCommand::download(gid("arena")));
        wait_installed(&sim, "d", "arena").await;
        let liar_id = sim.peer("liar").id;
        let banned = sim.events("d").into_iter().find_map(|(_, e)| match e {
            PeerEvent::PeerBanned { peer, reason } => Some((peer, reason)),
            _ => None,
        });
        let (peer, reason) = banned.expect("the liar is banned");
        assert_eq!(peer, liar_id);
        assert!(reason.contains("corrupt"), "{reason}");
        assert_eq!(downloaded(&sim.peer("s1").fs, "arena"), downloaded(&sim.peer("d").fs, "arena"));
        sim
    });
}

/// The first holder found lies and is banned; the honest holders appear
/// seconds later. The download waits for them instead of failing, takes
/// them in, and completes: which holder is found first decides nothing.
#[test]
fn a_download_waits_for_honest_holders_found_after_a_liar() {
    Sim::run("a_download_waits_for_honest_holders_found_after_a_liar", 23, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 8 * MIB);
        let cat = catalog_of(&[&game]);
        let p = add_holder(&mut sim, "liar", &game, Sim::config(cat.clone()));
        let lying = LyingFs::new(p.fs.clone(), ".simpack");
        let lie = lying.lie.clone();
        p.fs_override = Some(Arc::new(lying));
        sim.start("liar");
        sim.wait_for("liar", Duration::from_secs(5), |e| matches!(e, PeerEvent::LibrarySnapshot { .. })).await;
        lie.store(true, Ordering::SeqCst);
        let hd = sim.host("d", HostConfig::symmetric(100.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat.clone()));
        sim.wait_until("the liar is found", Duration::from_secs(10), |s| holders(s, "d", "arena") == 1).await;
        sim.send("d", PeerCommand::download(gid("arena")));
        sim.wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::PeerBanned { .. })).await;
        sim.sleep(Duration::from_secs(3)).await;
        for s in ["s1", "s2"] {
            spawn_holder(&mut sim, s, &game, Sim::config(cat.clone()));
        }
        wait_installed(&sim, "d", "arena").await;
        assert_eq!(downloaded(&sim.peer("s1").fs, "arena"), downloaded(&sim.peer("d").fs, "arena"));
        sim
    });
}

/// A holder can advertise any version; a download commits only if the
/// `version.ini` it verified names the version claimed.
#[test]
fn a_claimed_version_that_the_data_does_not_have_is_not_committed() {
    Sim::run("a_claimed_version_that_the_data_does_not_have_is_not_committed", 24, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 4 * MIB);
        let cat = catalog_of(&[&game]);
        let p = add_holder(&mut sim, "claimer", &game, Sim::config(cat.clone()));
        // It advertises 9.9 (same length as "1.0\n"), but serves 1.0's bytes.
        p.fs_override = Some(Arc::new(LyingFs::new(p.fs.clone(), ".none").claiming_version("9.9\n")));
        sim.start("claimer");
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        let dfs = MemFs::unrecorded();
        sim.spawn("d", hd, dfs.clone(), Sim::config(cat));
        sim.wait_until("d sees the claim", Duration::from_secs(10), |s| holders(s, "d", "arena") == 1).await;
        sim.send("d", PeerCommand::download(gid("arena")));
        let (_, e) = sim
            .wait_for("d", Duration::from_secs(30), |e| matches!(e, PeerEvent::DownloadFailed { .. } | PeerEvent::DownloadFinished { .. }))
            .await;
        assert!(matches!(&e, PeerEvent::DownloadFailed { error, .. } if error.code == lanspread::ErrorCode::VersionMismatch), "{e:?}");
        assert!(!dfs.exists("arena/version.ini"), "nothing was committed");
        sim
    });
}

#[test]
fn peers_with_another_manifest_of_the_same_version_are_not_mixed() {
    Sim::run("peers_with_another_manifest_of_the_same_version_are_not_mixed", 22, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 8 * MIB);
        let cat = catalog_of(&[&game]);
        for s in ["a1", "a2", "odd"] {
            let h = sim.host(s, HostConfig::symmetric(20.0 * MB, ms(1)));
            let fs = MemFs::unrecorded();
            // Same id and version, different bytes for the odd one out.
            let rng = if s == "odd" { SimRng::new(999) } else { sim.rng.clone() };
            game.write(&fs, &rng);
            sim.spawn(s, h, fs, Sim::config(cat.clone()));
        }
        let hd = sim.host("d", HostConfig::symmetric(100.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        sim.wait_until("3 holders", Duration::from_secs(10), |s| holders(s, "d", "arena") == 3).await;
        sim.send("d", PeerCommand::download(gid("arena")));
        wait_installed(&sim, "d", "arena").await;
        assert_eq!(downloaded(&sim.peer("a1").fs, "arena"), downloaded(&sim.peer("d").fs, "arena"));
        let odd = sim.peer("odd").id;
        let begin = sim.events("d").into_iter().find_map(|(_, e)| match e {
            PeerEvent::DownloadBegin { peers, .. } => Some(peers),
            _ => None,
        });
        assert!(!begin.unwrap().contains(&odd), "the minority manifest's holder is not a source");
        sim
    });
}

#[test]
fn party_key_keeps_strangers_and_wrong_keys_out() {
    Sim::run("party_key_keeps_strangers_and_wrong_keys_out", 23, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 4 * MIB);
        let cat = catalog_of(&[&game]);
        let keyed = |key: Option<&str>| {
            let mut c = Sim::config(cat.clone());
            c.party_key = key.map(str::to_owned);
            c
        };
        spawn_holder(&mut sim, "host", &game, keyed(Some("correct horse battery staple")));
        for (name, key) in [("friend", Some("correct horse battery staple")), ("stranger", None), ("wrongkey", Some("tr0ub4dor"))] {
            let h = sim.host(name, HostConfig::symmetric(20.0 * MB, ms(1)));
            sim.spawn(name, h, MemFs::unrecorded(), keyed(key));
        }
        sim.sleep(Duration::from_secs(30)).await;
        assert_eq!(holders(&sim, "friend", "arena"), 1, "a peer with the key sees the game");
        assert_eq!(holders(&sim, "stranger", "arena"), 0, "a stranger sees nothing");
        assert_eq!(holders(&sim, "wrongkey", "arena"), 0, "a wrong key sees nothing");
        assert_eq!(sim.peer_count("host"), Some(1), "the host only accepts its friend");
        sim.send("friend", PeerCommand::download(gid("arena")));
        wait_installed(&sim, "friend", "arena").await;
        sim.send("stranger", PeerCommand::download(gid("arena")));
        let (_, e) = sim.wait_for("stranger", Duration::from_secs(10), |e| matches!(e, PeerEvent::DownloadFailed { .. })).await;
        assert!(matches!(&e, PeerEvent::DownloadFailed { error, .. } if error.code == lanspread::ErrorCode::NoHolder), "{e:?}");
        sim
    });
}

/// Each party-key exchange tests one guess of the words online (nothing a
/// captured exchange shows allows an offline guess), so a host may start
/// only so many per minute; other hosts are not affected.
#[test]
fn party_key_guesses_are_rate_limited_per_host() {
    Sim::run("party_key_guesses_are_rate_limited_per_host", 29, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", MIB);
        let mut cfg = Sim::config(catalog_of(&[&game]));
        cfg.party_key = Some("correct horse battery staple".into());
        spawn_holder(&mut sim, "host", &game, cfg.clone());
        sim.sleep(ms(300)).await;
        let hm = sim.host("mallory", HostConfig::symmetric(20.0 * MB, ms(1)));
        let me = sim.rng.fork("mallory").peer_id();
        let t = sim.net.transport(hm, 47800, me);
        // One guess per connection: a Hello carrying an exchange message.
        let mut answers = Vec::new();
        for guess in 0..25u8 {
            let conn = t.connect(sim.addr("host"), None).await.unwrap();
            let hello = Hello {
                version: PROTOCOL_VERSION,
                peer_id: me,
                capabilities: vec![],
                listen_port: 0,
                pake: Some(vec![guess; 33]),
                party_proof: None,
            };
            answers.push(wire::request(conn.as_ref(), &Request::Hello(hello)).await);
        }
        // A refused host is told why, and its connection is closed (which
        // may reach it before the answer does).
        let limited = |r: &Result<Response, wire::WireError>| match r {
            Err(wire::WireError::Remote(e)) => e.message.contains("too many"),
            Err(wire::WireError::Transport(lanspread_ports::TransportError::ConnectionLost(_))) => true,
            _ => false,
        };
        assert!(answers[..20].iter().all(|r| !limited(r)), "the first 20 exchanges are answered");
        assert!(answers[20..].iter().all(limited), "then the host refuses more: {:?}", &answers[20..]);
        // A friend on another host still joins.
        let hf = sim.host("friend", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("friend", hf, MemFs::unrecorded(), cfg);
        sim.wait_until("the friend sees the game", Duration::from_secs(20), |s| holders(s, "friend", "arena") == 1).await;
        // A minute later, mallory may try again.
        sim.sleep(Duration::from_secs(61)).await;
        let conn = t.connect(sim.addr("host"), None).await.unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            peer_id: me,
            capabilities: vec![],
            listen_port: 0,
            pake: Some(vec![1; 33]),
            party_proof: None,
        };
        assert!(!limited(&wire::request(conn.as_ref(), &Request::Hello(hello)).await));
        sim
    });
}

/// Forwards one request stream, rewriting the identity in Hello messages
/// to the relay's own (so identity checks alone cannot spot the relay),
/// then pumps the rest.
async fn relay_stream(
    relay_id: lanspread_ports::PeerId,
    (mut dsend, mut drecv): lanspread_ports::transport::BiStream,
    (mut usend, mut urecv): lanspread_ports::transport::BiStream,
) {
    let Ok((mut req, rest)) = wire::read_message::<Request>(drecv.as_mut(), MAX_REQUEST_FRAME).await else { return };
    if let Request::Hello(h) = &mut req {
        h.peer_id = relay_id;
    }
    if wire::write_message(usend.as_mut(), &req, MAX_REQUEST_FRAME).await.is_err() {
        return;
    }
    if !rest.is_empty() {
        let _ = usend.write(rest).await;
    }
    tokio::spawn(pump(drecv, usend));
    let Ok((mut resp, rest)) = wire::read_message::<Response>(urecv.as_mut(), MAX_RESPONSE_FRAME).await else { return };
    if let Response::Hello(h) = &mut resp {
        h.peer_id = relay_id;
    }
    if wire::write_message(dsend.as_mut(), &resp, MAX_RESPONSE_FRAME).await.is_err() {
        return;
    }
    if !rest.is_empty() {
        let _ = dsend.write(rest).await;
    }
    pump(urecv, dsend).await;
}

/// Pumps bytes from one stream half to the other until the end.
async fn pump(mut from: Box<dyn lanspread_ports::RecvStream>, mut to: Box<dyn lanspread_ports::SendStream>) {
    while let Ok(Some(d)) = from.read(64 * 1024).await {
        if to.write(d).await.is_err() {
            return;
        }
    }
    let _ = to.finish().await;
}

/// B reaches A only through a relay that terminates TLS on both sides and
/// forwards every stream. Returns how many holders B sees and how many
/// streams the relay forwarded.
fn relay_scenario(name: &str, key: Option<&str>) -> (usize, usize) {
    let mut out = (0, 0);
    let out_ref = &mut out;
    let key = key.map(str::to_owned);
    Sim::run(name, 24, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 4 * MIB);
        let cat = catalog_of(&[&game]);
        let mut cfg = Sim::config(cat.clone());
        cfg.party_key = key;
        let ha = sim.host("a", HostConfig::symmetric(20.0 * MB, ms(1)));
        let hb = sim.host("b", HostConfig::symmetric(20.0 * MB, ms(1)));
        let hr = sim.host("relay", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.net.partition(&[ha], &[hb]);
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        sim.spawn("a", ha, fs, cfg.clone());
        // The relay terminates TLS on both sides and forwards every stream.
        let relay_id = sim.rng.fork("relay").peer_id();
        let relay = sim.net.transport(hr, 47800, relay_id);
        let a_addr = sim.addr("a");
        let relayed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = relayed.clone();
        tokio::spawn(async move {
            while let Some(down) = relay.accept().await {
                let Ok(up) = relay.connect(a_addr, None).await else { continue };
                let count = count.clone();
                tokio::spawn(async move {
                    let (down, up): (Arc<dyn Connection>, Arc<dyn Connection>) = (Arc::from(down), Arc::from(up));
                    while let Ok(Some(d)) = down.accept_bi().await {
                        let Ok(u) = up.open_bi().await else { break };
                        count.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(relay_stream(relay_id, d, u));
                    }
                });
            }
        });
        let mut bcfg = cfg;
        bcfg.static_peers = vec![std::net::SocketAddr::new(sim.net.host_addr(hr), 47800)];
        let p = sim.add_peer("b", hb, MemFs::unrecorded(), bcfg);
        p.discovery = false;
        sim.start("b");
        sim.sleep(Duration::from_secs(20)).await;
        *out_ref = (holders(&sim, "b", "arena"), relayed.load(Ordering::SeqCst));
        sim
    });
    out
}

#[test]
fn a_relay_cannot_reuse_a_party_proof() {
    // Control: without a party key the relay works (it is a faithful relay).
    let (seen, relayed) = relay_scenario("a_relay_cannot_reuse_a_party_proof", None);
    assert!(relayed >= 1 && seen == 1, "control: the relay must work without a key ({seen}, {relayed})");
    // With the key, the proof is bound to each TLS session: refused.
    let (seen, relayed) = relay_scenario("a_relay_cannot_reuse_a_party_proof", Some("secret words"));
    assert!(relayed >= 1, "the relay forwarded the handshake");
    assert_eq!(seen, 0, "the relayed proof must not be accepted");
}

#[test]
fn a_pinned_peer_that_changes_its_key_is_refused() {
    Sim::run("a_pinned_peer_that_changes_its_key_is_refused", 25, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 2 * MIB);
        let cat = catalog_of(&[&game]);
        let p = add_holder(&mut sim, "a", &game, Sim::config(cat.clone()));
        p.discovery = false;
        sim.start("a");
        let hb = sim.host("b", HostConfig::symmetric(20.0 * MB, ms(1)));
        let mut cfg = Sim::config(cat);
        cfg.static_peers = vec![sim.addr("a")];
        let p = sim.add_peer("b", hb, MemFs::unrecorded(), cfg);
        p.discovery = false;
        sim.start("b");
        sim.wait_until("b sees a", Duration::from_secs(10), |s| holders(s, "b", "arena") == 1).await;
        // a is reinstalled with a new key at the same address.
        sim.crash("a", lanspread_memfs::CrashModel::AllUpToK);
        sim.rekey("a");
        sim.restart("a");
        let (_, e) = sim
            .wait_for("b", Duration::from_secs(120), |e| matches!(e, PeerEvent::RuntimeFailure(m) if m.message.contains("changed its key")))
            .await;
        eprintln!("{e:?}");
        sim.sleep(Duration::from_secs(10)).await;
        assert_eq!(holders(&sim, "b", "arena"), 0, "the re-keyed peer is not trusted");
        sim
    });
}

/// A request stream with hand-made bytes: a valid frame whose path bytes
/// are replaced by `hostile` (same length).
fn hostile_request(hostile: &str) -> Bytes {
    let filler = "x".repeat(hostile.len());
    let req = Request::GetGameFileChunk { id: gid("arena"), path: RelPath::new(filler.clone()).unwrap(), offset: 0, len: 10 };
    let mut bytes = protocol::encode_stream_start(&req, MAX_REQUEST_FRAME).unwrap().to_vec();
    let pos = bytes.windows(filler.len()).position(|w| w == filler.as_bytes()).unwrap();
    bytes[pos..pos + filler.len()].copy_from_slice(hostile.as_bytes());
    Bytes::from(bytes)
}

#[test]
fn hostile_requests_get_errors_and_touch_nothing() {
    Sim::run("hostile_requests_get_errors_and_touch_nothing", 26, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", MIB);
        let cat = catalog_of(&[&game]);
        let ha = sim.host("a", HostConfig::symmetric(20.0 * MB, ms(1)));
        let fs = MemFs::unrecorded();
        game.write(&fs, &sim.rng);
        fs.write_file("arena/local/secret.cfg", b"installed, not served");
        fs.write_file("secret.txt", b"outside every root");
        fs.symlink("arena/escape", "/etc/passwd");
        sim.spawn("a", ha, fs.clone(), Sim::config(cat));
        sim.sleep(ms(500)).await;
        let before = fs.tree();
        let hm = sim.host("mallory", HostConfig::symmetric(20.0 * MB, ms(1)));
        let me = sim.rng.fork("mallory").peer_id();
        let t = sim.net.transport(hm, 47800, me);
        let conn = t.connect(sim.addr("a"), Some(sim.peer("a").id)).await.unwrap();
        // Before Hello: refused.
        let r = wire::request(conn.as_ref(), &Request::ListGames).await;
        assert!(matches!(r, Err(wire::WireError::Remote(ref e)) if e.code == protocol::ErrorCode::Unauthorized), "{r:?}");
        let hello = Hello { version: PROTOCOL_VERSION, peer_id: me, capabilities: vec![], listen_port: 0, pake: None, party_proof: None };
        assert!(matches!(wire::request(conn.as_ref(), &Request::Hello(hello)).await, Ok(Response::Hello(_))));
        for hostile in [
            "../secret.txt",
            "/etc/passwd",
            "C:\\x\\y",
            "\\\\srv\\share",
            "a\0b",
            "CON",
            "dir/..",
            "local/secret.cfg",
            "escape",
            ".lanspread.json",
            "version.ini.",
        ] {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write(hostile_request(hostile)).await.unwrap();
            send.finish().await.unwrap();
            let (resp, _rest): (Response, Bytes) = wire::read_message(recv.as_mut(), MAX_RESPONSE_FRAME).await.unwrap();
            assert!(matches!(resp, Response::Error(_)), "{hostile:?} got {resp:?}");
        }
        // Out-of-range and oversized requests on a real file.
        let path = RelPath::new("arena.simpack").unwrap();
        for (offset, len) in [(u64::MAX - 1, 10), (0, u64::MAX), (10 * MIB, 1), (0, 64 * MIB)] {
            let r = wire::request(conn.as_ref(), &Request::GetGameFileChunk { id: gid("arena"), path: path.clone(), offset, len }).await;
            assert!(matches!(r, Err(wire::WireError::Remote(ref e)) if e.code == protocol::ErrorCode::BadRange), "{offset}+{len}: {r:?}");
        }
        // A frame that claims to be huge is refused without reading it.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut huge = protocol::header().to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        send.write(Bytes::from(huge)).await.unwrap();
        let (resp, _): (Response, Bytes) = wire::read_message(recv.as_mut(), MAX_RESPONSE_FRAME).await.unwrap();
        assert!(matches!(resp, Response::Error(_)));
        assert_eq!(fs.tree(), before, "nothing was touched");
        sim
    });
}

#[test]
fn a_stream_flood_does_not_starve_honest_peers() {
    Sim::run("a_stream_flood_does_not_starve_honest_peers", 27, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 4 * MIB);
        let cat = catalog_of(&[&game]);
        spawn_holder(&mut sim, "a", &game, Sim::config(cat.clone()));
        sim.sleep(ms(300)).await;
        // Mallory says Hello, then opens every stream it can and sends only
        // a stream header on each, forever.
        let hm = sim.host("mallory", HostConfig::symmetric(20.0 * MB, ms(1)));
        let me = sim.rng.fork("mallory").peer_id();
        let t = sim.net.transport(hm, 47800, me);
        let conn: Arc<dyn Connection> = Arc::from(t.connect(sim.addr("a"), None).await.unwrap());
        let hello = Hello { version: PROTOCOL_VERSION, peer_id: me, capabilities: vec![], listen_port: 0, pake: None, party_proof: None };
        assert!(matches!(wire::request(conn.as_ref(), &Request::Hello(hello)).await, Ok(Response::Hello(_))));
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c2, o2) = (conn.clone(), opened.clone());
        tokio::spawn(async move {
            let mut held = vec![];
            for _ in 0..500 {
                let Ok((mut s, r)) = c2.open_bi().await else { break };
                let _ = s.write(Bytes::copy_from_slice(&protocol::header())).await;
                o2.fetch_add(1, Ordering::SeqCst);
                held.push((s, r));
            }
            std::future::pending::<()>().await;
        });
        // An honest peer still downloads.
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        sim.wait_until("d sees a", Duration::from_secs(30), |s| holders(s, "d", "arena") == 1).await;
        sim.send("d", PeerCommand::download(gid("arena")));
        wait_installed(&sim, "d", "arena").await;
        assert!(opened.load(Ordering::SeqCst) >= 64, "the flood opened its streams");
        sim
    });
}

/// What one flooding host does to a seeder in [`flood_scenario`].
#[derive(Clone, Copy, PartialEq)]
enum Flood {
    None,
    /// Hundreds of connections that never say Hello, and an authenticated
    /// connection whose every stream asks for a large chunk and never reads.
    IdleAndStalled,
}

/// An honest download of a 32 MiB game from one seeder, with or without a
/// flooding host; returns the download's time (begin to finish).
fn flood_scenario(name: &str, flood: Flood) -> f64 {
    let mut result = 0.0;
    let out = &mut result;
    Sim::run(name, 41, |mut sim| async move {
        // QUIC-like flow control: a reader that does not read stops its
        // writer after a stream window, here 256 KiB.
        let params = lanspread_testkit::net::NetParams { stream_window: 256 * 1024, ..Default::default() };
        sim.net = lanspread_testkit::SimNet::with_params(sim.rng.fork("net"), params);
        let game = SimGame::new("arena", "1.0", 32 * MIB);
        let cat = catalog_of(&[&game]);
        spawn_holder(&mut sim, "a", &game, Sim::config(cat.clone()));
        sim.wait_for("a", Duration::from_secs(5), |e| matches!(e, PeerEvent::LibrarySnapshot { .. })).await;
        // What the flood holds, to check afterwards what the seeder did to it.
        type Streams = Vec<(Box<dyn lanspread_ports::SendStream>, Box<dyn lanspread_ports::RecvStream>)>;
        let stalled: Arc<std::sync::Mutex<Streams>> = Arc::default();
        let idle: Arc<std::sync::Mutex<Vec<Box<dyn Connection>>>> = Arc::default();
        if flood == Flood::IdleAndStalled {
            let hm = sim.host("mallory", HostConfig::symmetric(100.0 * MB, ms(1)));
            let me = sim.rng.fork("mallory").peer_id();
            let t = sim.net.transport(hm, 47800, me);
            let target = sim.addr("a");
            // Stalled readers: say Hello, then ask for 1 MiB chunks on every
            // stream and never read an answer; ask again whenever the
            // server frees a stream.
            let conn: Arc<dyn Connection> = Arc::from(t.connect(target, None).await.unwrap());
            let hello =
                Hello { version: PROTOCOL_VERSION, peer_id: me, capabilities: vec![], listen_port: 0, pake: None, party_proof: None };
            assert!(matches!(wire::request(conn.as_ref(), &Request::Hello(hello)).await, Ok(Response::Hello(_))));
            let held = stalled.clone();
            tokio::spawn(async move {
                for k in 0u64.. {
                    let Ok((mut send, recv)) = conn.open_bi().await else { break };
                    let req = Request::GetGameFileChunk {
                        id: gid("arena"),
                        path: RelPath::new("arena.simpack").unwrap(),
                        offset: (k % 32) * MIB,
                        len: MIB,
                    };
                    let _ = wire::write_message(send.as_mut(), &req, MAX_REQUEST_FRAME).await;
                    let _ = send.finish().await;
                    held.lock().unwrap().push((send, recv));
                }
            });
            // Idle connections: hundreds, none says Hello.
            let held = idle.clone();
            tokio::spawn(async move {
                for _ in 0..300 {
                    if let Ok(c) = t.connect(target, None).await {
                        held.lock().unwrap().push(c);
                    }
                }
            });
            sim.sleep(ms(500)).await;
        }
        let hd = sim.host("d", HostConfig::symmetric(20.0 * MB, ms(1)));
        sim.spawn("d", hd, MemFs::unrecorded(), Sim::config(cat));
        sim.wait_until("d sees a", Duration::from_secs(30), |s| holders(s, "d", "arena") == 1).await;
        sim.send("d", PeerCommand::download(gid("arena")));
        let (begin, _) = sim.wait_for("d", Duration::from_secs(5), |e| matches!(e, PeerEvent::DownloadBegin { .. })).await;
        let (end, e) = sim
            .wait_for("d", Duration::from_secs(120), |e| matches!(e, PeerEvent::DownloadFinished { .. } | PeerEvent::DownloadFailed { .. }))
            .await;
        assert!(matches!(e, PeerEvent::DownloadFinished { .. }), "{e:?}");
        *out = (end - begin).as_secs_f64();
        if flood == Flood::IdleAndStalled {
            sim.sleep(Duration::from_secs(25)).await;
            // Every idle connection was closed (per-host cap, Hello deadline).
            let idle = std::mem::take(&mut *idle.lock().unwrap());
            let mut open = 0;
            for c in &idle {
                open += usize::from(c.open_bi().await.is_ok());
            }
            assert!(idle.len() >= 32 && open == 0, "{open} of {} idle connections are still open", idle.len());
            // The first stalled reply was reset once its writer stalled past
            // the write deadline (the server holds nothing for it any more).
            let (_, mut first) = stalled.lock().unwrap().remove(0);
            let reply = async {
                let (_, rest): (Response, Bytes) = wire::read_message(first.as_mut(), MAX_RESPONSE_FRAME).await?;
                wire::read_exact(first.as_mut(), rest, MIB).await
            };
            let got = reply.await;
            assert!(matches!(got, Err(wire::WireError::Transport(lanspread_ports::TransportError::StreamReset(_)))), "{got:?}");
        }
        sim
    });
    result
}

/// One host floods a seeder with hundreds of connections that never
/// authenticate and with requests it never reads: the Hello deadline, the
/// per-host caps on connections and on replies in flight, and the write
/// deadline keep an honest download within 1.2x of its time alone.
#[test]
fn a_flooding_host_slows_an_honest_download_by_at_most_a_fifth() {
    let alone = flood_scenario("flood_baseline", Flood::None);
    let flooded = flood_scenario("flood", Flood::IdleAndStalled);
    eprintln!("honest download of 32 MiB: {alone:.2} s alone, {flooded:.2} s while one host floods");
    assert!(flooded <= alone * 1.2, "{flooded:.2} s with the flood vs {alone:.2} s without");
}
