//! Swarming under churn and lies, in simulation: a partial holder that
//! serves corrupt units is struck and banned like any other holder, and a
//! swarm whose downloaders join over a minute (one of them crashing half
//! way) still gives every remaining downloader a byte-identical copy,
//! fetched about once. Asserted on virtual time, events and the simulated
//! network's byte counters only. Every scenario replays exactly from its
//! seed.

use lanspread::{PeerCommand, PeerEvent};
use lanspread_core::game::GameId;
use lanspread_core::peer::TransferStats;
use lanspread_memfs::{CrashModel, MemFs};
use lanspread_ports::PeerId;
use lanspread_testkit::fakes::LyingFs;
use lanspread_testkit::game::{assert_same_download, catalog_of};
use lanspread_testkit::sim::{render, seed_or, Recorded};
use lanspread_testkit::swarm;
use lanspread_testkit::{ms, HostConfig, HostId, Sim, SimGame};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn ended(e: &PeerEvent, id: &GameId) -> bool {
    matches!(e, PeerEvent::DownloadFinished { id: i, .. } | PeerEvent::DownloadFailed { id: i, .. } if i == id)
}

/// The first `DownloadBegin` of `peer`: when it came and the bytes to fetch.
fn begin_of(sim: &Sim, peer: &str) -> (Duration, u64) {
    sim.events(peer)
        .into_iter()
        .find_map(|(t, e)| match e {
            PeerEvent::DownloadBegin { total, .. } => Some((t, total)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{peer} never began its download"))
}

/// Waits for the end of `peer`'s download; panics unless it committed.
async fn wait_finished(sim: &Sim, peer: &str, id: &GameId, timeout: Duration) -> (Duration, TransferStats) {
    let (at, e) = sim.wait_for(peer, timeout, |e| ended(e, id)).await;
    match e {
        PeerEvent::DownloadFinished { stats, .. } => (at, stats),
        other => panic!("seed {}: {peer} did not finish: {other:?}", sim.seed),
    }
}

/// Names the peers of `stats` (unknown ids by their id).
fn named_shares(stats: &TransferStats, names: &BTreeMap<PeerId, String>) -> BTreeMap<String, u64> {
    stats.peers.iter().map(|p| (names.get(&p.peer).cloned().unwrap_or_else(|| p.peer.to_string()), p.bytes)).collect()
}

// ---------------------------------------------------------------------------
// 1. A lying partial holder
// ---------------------------------------------------------------------------

const HONEST: [&str; 3] = ["d1", "d2", "d3"];

/// What one honest downloader of the lying-partial-holder scenario saw.
#[derive(Debug)]
struct Honest {
    /// Seconds from the command to the commit.
    secs: f64,
    /// Verified bytes per source.
    shares: BTreeMap<String, u64>,
    /// Its bans: seconds, peer, reason.
    bans: Vec<(f64, String, String)>,
}

/// What the lying-partial-holder scenario measured.
#[derive(Debug)]
struct LiarRun {
    honest: BTreeMap<&'static str, Honest>,
    /// How the liar's own download ended, and when.
    liar: (f64, String),
    log: Vec<String>,
}

impl LiarRun {
    fn last(&self) -> f64 {
        self.honest.values().map(|h| h.secs).fold(0.0, f64::max)
    }
}

/// One honest seeder (20 MB/s); a downloader, "liar" (40 MB/s), whose
/// filesystem (with `lie`) flips a byte of every read of the archive, so
/// each archive unit it serves from its running download is corrupt, while
/// what it fetches from others is verified and written as usual; and three
/// honest downloaders (20 MB/s). All four are told to download at the same
/// instant. The liar's fast link gets it units early, and the seeder's
/// `Elsewhere` deferrals send the others to it for them.
fn liar_scenario(seed: u64, lie: bool) -> LiarRun {
    let mut out = None;
    let out_ref = &mut out;
    let log = Sim::run_seed("a_lying_partial_holder_is_banned_and_the_swarm_still_finishes", seed, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", 32 * MIB);
        let cat = catalog_of(&[&game]);
        let id = gid("arena");
        let hs = sim.host("seed", HostConfig::symmetric(20.0 * MB, ms(1)));
        let sfs = MemFs::unrecorded();
        game.write(&sfs, &sim.rng);
        sim.spawn("seed", hs, sfs, Sim::config(cat.clone()));

        // The liar starts empty: nothing it scans is read through the lie,
        // which is on from the start.
        let hl = sim.host("liar", HostConfig::symmetric(40.0 * MB, ms(1)));
        let lfs = MemFs::unrecorded();
        let lying = LyingFs::new(lfs.clone(), ".simpack");
        lying.lie.store(lie, Ordering::SeqCst);
        sim.add_peer("liar", hl, lfs, Sim::config(cat.clone())).fs_override = Some(Arc::new(lying));
        sim.start("liar");
        for d in HONEST {
            let h = sim.host(d, HostConfig::symmetric(20.0 * MB, ms(1)));
            sim.spawn(d, h, MemFs::unrecorded(), Sim::config(cat.clone()));
        }
        let all: Vec<&str> = std::iter::once("liar").chain(HONEST).collect();
        for d in &all {
            swarm::wait_until_held(&sim, d, &id).await;
        }
        let start = sim.now();
        for d in &all {
            sim.send(d, PeerCommand::download(id.clone()));
        }
        let names: BTreeMap<PeerId, String> =
            ["seed", "liar", "d1", "d2", "d3"].iter().map(|n| (sim.peer(n).id, (*n).to_owned())).collect();
        let secs = |t: Duration| (t - start).as_secs_f64();

        let mut honest = BTreeMap::new();
        for d in HONEST {
            let (at, stats) = wait_finished(&sim, d, &id, Duration::from_secs(600)).await;
            assert_same_download(&sim.peer("seed").fs, &sim.peer(d).fs, "arena", d);
            let bans = sim
                .events(d)
                .into_iter()
                .filter_map(|(t, e)| match e {
                    PeerEvent::PeerBanned { peer, reason } => Some((secs(t), names[&peer].clone(), reason)),
                    _ => None,
                })
                .collect();
            honest.insert(d, Honest { secs: secs(at), shares: named_shares(&stats, &names), bans });
        }

        // The liar's own download verifies what it gets from others, so it
        // may well commit (and then serve the corrupt archive as a complete
        // holder: the ordinary lying seeder).
        let (at, e) = sim.wait_for("liar", Duration::from_secs(600), |e| ended(e, &id)).await;
        let liar = match &e {
            PeerEvent::DownloadFinished { stats, .. } => {
                assert_same_download(&sim.peer("seed").fs, &sim.peer("liar").fs, "arena", "liar");
                (secs(at), format!("committed an intact copy, from {:?}", named_shares(stats, &names)))
            }
            other => (secs(at), format!("{other:?}")),
        };
        *out_ref = Some(LiarRun { honest, liar, log: Vec::new() });
        sim
    });
    let mut run = out.expect("the scenario ran");
    run.log = render(&log);
    run
}

#[test]
fn a_lying_partial_holder_is_banned_and_the_swarm_still_finishes() {
    let seed = seed_or(41);
    let run = liar_scenario(seed, true);
    for (d, Honest { secs, shares, bans }) in &run.honest {
        eprintln!("{d}: finished after {secs:.3} s, from {shares:?}; bans {bans:?}");
        // Only the liar is banned: honest partial holders serve exactly
        // what they verified.
        for (_, peer, reason) in bans {
            assert_eq!(peer, "liar", "seed {seed}: {d} banned an honest peer: {reason}");
            assert!(reason.contains("corrupt"), "{reason}");
        }
        // Every archive unit the liar serves is corrupt; only its small
        // loose files (read honestly) can count for it.
        let from_liar = shares.get("liar").copied().unwrap_or(0);
        assert!(from_liar < MIB, "seed {seed}: {d} counted {from_liar} verified bytes from the liar");
    }
    let banned_by: Vec<&str> = run.honest.iter().filter(|(_, h)| !h.bans.is_empty()).map(|(d, _)| *d).collect();
    eprintln!("liar: its own download ended after {:.3} s: {}; banned by {banned_by:?}", run.liar.0, run.liar.1);
    assert!(!banned_by.is_empty(), "seed {seed}: no honest downloader banned the lying partial holder");

    // The same swarm with the liar honest. The lie costs the others about
    // half as long again (1.41x-1.61x over 30 runs of seed 41, which do
    // not replay exactly: see below): what the seeder sent the liar (about
    // 40 % of its sends) never reaches them through it, and the seeder
    // defers those units for a moment as if it would.
    let fair = liar_scenario(seed, false);
    assert!(fair.honest.values().all(|h| h.bans.is_empty()), "nobody is banned when nobody lies: {fair:?}");
    eprintln!("last honest finish: {:.3} s with the liar, {:.3} s without the lie", run.last(), fair.last());
    assert!(run.last() <= 1.8 * fair.last(), "seed {seed}: {:.3} s with the liar vs {:.3} s", run.last(), fair.last());
}

/// Downloaders started at one instant replay exactly from their seed. (They
/// did not while the swarm record woke its waiters through a
/// `tokio::sync::watch`, whose wake order comes from tokio's own random
/// source; it uses a `Notify` now, which wakes them in the order they came.)
#[test]
fn downloaders_started_together_replay_exactly() {
    let seed = seed_or(41);
    let a = liar_scenario(seed, false);
    for _ in 0..3 {
        let b = liar_scenario(seed, false);
        let first = a.log.iter().zip(&b.log).position(|(x, y)| x != y);
        assert!(
            first.is_none() && a.log.len() == b.log.len(),
            "seed {seed}: the runs part at event {first:?}:\n{:?}\n{:?}",
            first.map(|i| &a.log[i]),
            first.map(|i| &b.log[i])
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Downloaders joining over a minute, one crashing half way
// ---------------------------------------------------------------------------

const DOWNLOADERS: usize = 10;
const CHURN_SIZE: u64 = 64 * MIB;
const JOIN_WINDOW_MS: u64 = 60_000;
const SEEDER_RATE: f64 = 20.0 * MB;

/// What one finisher of the churn scenario measured.
#[derive(Debug, Clone, PartialEq)]
struct Finisher {
    /// Link rate, bytes/s.
    rate: f64,
    /// Seconds from the start to its join, and its download's duration.
    joined: f64,
    secs: f64,
    /// Bytes to fetch (the whole game: it started empty).
    total: u64,
    /// Verified first copies, per source.
    shares: BTreeMap<String, u64>,
    /// Everything the network carried to its host (every transmission:
    /// endgame duplicates, copies cancelled or lost in flight, and the
    /// protocol's own messages included).
    received: u64,
}

impl Finisher {
    /// Its download time against a lone download at its link (or the
    /// seeder's, if slower).
    fn slowdown(&self) -> f64 {
        self.secs / (self.total as f64 / self.rate.min(SEEDER_RATE))
    }

    fn received_ratio(&self) -> f64 {
        self.received as f64 / self.total as f64
    }
}

#[derive(Debug)]
struct ChurnRun {
    leaver: String,
    /// Its link rate and when it joined (seconds from the start).
    leaver_rate: f64,
    leaver_joined: f64,
    /// When it crashed (seconds from the start) and what it had verified.
    left_at: f64,
    left_done: u64,
    finishers: BTreeMap<String, Finisher>,
    /// Bytes the seeder put on the wire.
    seeder_sent: u64,
    log: Vec<Recorded>,
}

impl ChurnRun {
    fn worst_received(&self) -> (f64, &str) {
        self.finishers.iter().map(|(d, f)| (f.received_ratio(), d.as_str())).fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a })
    }

    fn worst_slowdown(&self) -> f64 {
        self.finishers.values().map(Finisher::slowdown).fold(0.0, f64::max)
    }

    /// Bytes of the finishers' copies that came from the leaver.
    fn served_by_leaver(&self) -> u64 {
        self.finishers.values().map(|f| f.shares.get(&self.leaver).copied().unwrap_or(0)).sum()
    }

    fn last_done(&self) -> f64 {
        self.finishers.values().map(|f| f.joined + f.secs).fold(0.0, f64::max)
    }

    fn print(&self, label: &str) {
        eprintln!(
            "{label}: {} (link {:.1} MB/s) joined at {:.3} s and crashed at {:.3} s with {:.1} MiB verified, having served {:.1} MiB of the finishers' copies; the seeder sent {:.2}x the game; the last finished at {:.3} s",
            self.leaver,
            self.leaver_rate / MB,
            self.leaver_joined,
            self.left_at,
            self.left_done as f64 / MIB as f64,
            self.served_by_leaver() as f64 / MIB as f64,
            self.seeder_sent as f64 / CHURN_SIZE as f64,
            self.last_done()
        );
        for (d, f) in &self.finishers {
            eprintln!(
                "  {d}: link {:.1} MB/s, joined at {:.3} s, took {:.3} s ({:.2}x a lone download); received {:.3}x the game; from {:?}",
                f.rate / MB,
                f.joined,
                f.secs,
                f.slowdown(),
                f.received_ratio(),
                f.shares
            );
        }
    }
}

/// One seeder (20 MB/s), ten empty downloaders on links drawn from the seed
/// (5-20 MB/s), each told to download a 64 MiB game at a time drawn from
/// the seed within a minute; one of those joining in the middle crashes
/// (and stays down) at its first progress report past half the game.
/// `endgame_copies` overrides the downloaders' scheduler setting (2 by
/// default).
fn churn_scenario(seed: u64, endgame_copies: Option<usize>) -> ChurnRun {
    let mut out = None;
    let out_ref = &mut out;
    let log = Sim::run_seed("downloaders_join_over_a_minute_and_one_leaves_half_way", seed, |mut sim| async move {
        let game = SimGame::new("arena", "1.0", CHURN_SIZE);
        let cat = catalog_of(&[&game]);
        let id = gid("arena");
        let hs = sim.host("seed", HostConfig::symmetric(SEEDER_RATE, ms(1)));
        let sfs = MemFs::unrecorded();
        game.write(&sfs, &sim.rng);
        sim.spawn("seed", hs, sfs, Sim::config(cat.clone()));
        let mut hosts: BTreeMap<String, (HostId, f64)> = BTreeMap::new();
        for i in 0..DOWNLOADERS {
            let name = format!("d{i:02}");
            let rate = sim.rng.range(5.0 * MB..20.0 * MB);
            let h = sim.host(&name, HostConfig::symmetric(rate, ms(sim.rng.range(1..4u64))));
            let mut cfg = Sim::config(cat.clone());
            if let Some(n) = endgame_copies {
                cfg.sched.endgame_copies = n;
            }
            sim.spawn(&name, h, MemFs::unrecorded(), cfg);
            hosts.insert(name, (h, rate));
        }
        for d in hosts.keys() {
            swarm::wait_until_held(&sim, d, &id).await;
        }
        let start = sim.now();
        let mut joins: Vec<(Duration, String)> = hosts.keys().map(|d| (ms(sim.rng.range(0..JOIN_WINDOW_MS)), d.clone())).collect();
        joins.sort();
        // One of the middle joiners leaves, so others download beside it.
        let (leaver_joined, leaver) = joins[sim.rng.range(3..DOWNLOADERS - 3)].clone();
        let leaver_rate = hosts[&leaver].1;
        let half = |e: &PeerEvent| matches!(e, PeerEvent::DownloadProgress { done, total, .. } if *done * 2 >= *total);

        // Join on time (to the millisecond) and crash the leaver within
        // 50 ms of its first progress report past half.
        let mut pending = joins.iter().peekable();
        let mut left = None;
        let mut leaver_checked = 0;
        while pending.peek().is_some() || left.is_none() {
            while let Some((_, d)) = pending.next_if(|(at, _)| sim.now() >= start + *at) {
                sim.send(d, PeerCommand::download(id.clone()));
            }
            if left.is_none() {
                let evs = sim.events(&leaver);
                if let Some((_, PeerEvent::DownloadProgress { done, .. })) = evs[leaver_checked..].iter().find(|(_, e)| half(e)) {
                    let done = *done;
                    sim.crash(&leaver, CrashModel::AllUpToK);
                    left = Some(((sim.now() - start).as_secs_f64(), done));
                } else {
                    assert!(!evs.iter().any(|(_, e)| ended(e, &id)), "seed {}: {leaver} ended before half way", sim.seed);
                }
                leaver_checked = evs.len();
            }
            assert!(sim.now() < start + Duration::from_secs(600), "seed {}: {leaver} never got half way", sim.seed);
            let step = pending.peek().map_or(ms(50), |(at, _)| (start + *at).saturating_sub(sim.now()).clamp(ms(1), ms(50)));
            sim.sleep(step).await;
        }
        let (left_at, left_done) = left.expect("left");

        let names: BTreeMap<PeerId, String> =
            std::iter::once("seed".to_owned()).chain(hosts.keys().cloned()).map(|n| (sim.peer(&n).id, n)).collect();
        let mut finishers = BTreeMap::new();
        for (at, d) in &joins {
            if *d == leaver {
                continue;
            }
            let (end, stats) = wait_finished(&sim, d, &id, Duration::from_secs(900)).await;
            let (began, total) = begin_of(&sim, d);
            let (host, rate) = hosts[d];
            assert_eq!(stats.reused, 0, "{d} started empty");
            assert_eq!(stats.bytes, total, "{d}");
            assert_same_download(&sim.peer("seed").fs, &sim.peer(d).fs, "arena", d);
            finishers.insert(
                d.clone(),
                Finisher {
                    rate,
                    joined: at.as_secs_f64(),
                    secs: (end - began).as_secs_f64(),
                    total,
                    shares: named_shares(&stats, &names),
                    received: sim.net.bytes_received(host),
                },
            );
        }
        let seeder_sent = sim.net.bytes_sent(hs);
        *out_ref = Some(ChurnRun {
            leaver,
            leaver_rate,
            leaver_joined: leaver_joined.as_secs_f64(),
            left_at,
            left_done,
            finishers,
            seeder_sent,
            log: Vec::new(),
        });
        sim
    });
    let mut run = out.expect("the scenario ran");
    run.log = log;
    run
}

#[test]
fn downloaders_join_over_a_minute_and_one_leaves_half_way() {
    const SEED: u64 = 17;
    let seed = seed_or(SEED);
    let run = churn_scenario(seed, None);
    run.print(&format!("seed {seed}"));
    assert_eq!(run.finishers.len(), DOWNLOADERS - 1, "every downloader but the leaver finished");
    if seed == SEED {
        // The default seed is one where the leaver served others before it
        // crashed (in several seeds it served nobody).
        assert!(run.served_by_leaver() >= 8 * MIB, "{:.1} MiB from the leaver", run.served_by_leaver() as f64 / MIB as f64);
    }
    for (d, f) in &run.finishers {
        // The events count each byte once, for the source whose copy was
        // verified first: the shares add up to the game exactly, whatever
        // was fetched twice.
        assert_eq!(f.shares.values().sum::<u64>(), f.total, "{d}: the verified shares add up to the game");
        // Nobody stalls on the leaver (e.g. waiting out a request timeout):
        // over seeds 1-20 the slowest finisher took 1.65x a lone download.
        assert!(f.slowdown() <= 2.0, "seed {seed}: {d} took {:.3} s, {:.2}x a lone download", f.secs, f.slowdown());
        // What the network carried to the host shows what the events do
        // not: endgame duplicates and copies lost or cancelled in flight.
        // With endgame duplicates (2 copies) it reached 1.126x the game
        // over seeds 1-20, so the 1.1 aimed at holds only without them
        // (below).
        assert!(f.received_ratio() <= 1.15, "seed {seed}: {d} received {:.3}x the game", f.received_ratio());
    }

    // Without endgame duplicates, what is fetched twice (units lost with
    // the leaver or cancelled in flight) stays under a tenth of the game
    // (1.058x at worst over seeds 1-20), and the last finishes about as
    // early.
    let lean = churn_scenario(seed, Some(1));
    lean.print(&format!("seed {seed}, no endgame duplicates"));
    assert_eq!(lean.finishers.len(), DOWNLOADERS - 1);
    let (worst, who) = lean.worst_received();
    assert!(worst <= 1.1, "seed {seed}: without endgame duplicates {who} received {worst:.3}x the game");
    eprintln!(
        "worst received/game: {:.3} with endgame duplicates, {worst:.3} without; last finish {:.3} s vs {:.3} s",
        run.worst_received().0,
        run.last_done(),
        lean.last_done()
    );

    // The seed replays exactly.
    let again = churn_scenario(seed, None);
    let (a, b) = (render(&run.log), render(&again.log));
    assert!(a.len() > 100, "{} events", a.len());
    assert_eq!(a, b, "seed {seed} must replay exactly");
    assert_eq!((run.leaver, run.left_done, run.finishers), (again.leaver, again.left_done, again.finishers));
}

/// The churn scenario over seeds `1..=LANSPREAD_SIM_SEEDS` (default 20),
/// with and without endgame duplicates: the worst bytes received per game
/// byte, the worst slowdown against a lone download, the seeder's share and
/// the last finish.
#[test]
#[ignore]
fn churn_sweep() {
    let n: u64 = std::env::var("LANSPREAD_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    for seed in 1..=n {
        for copies in [2, 1] {
            let run = churn_scenario(seed, Some(copies));
            let (worst, who) = run.worst_received();
            eprintln!(
                "seed {seed:>3} endgame_copies {copies}: received {worst:.3}x ({who}), slowdown {:.2}x, seeder {:.2}x, {} joined at {:.1} s, left at {:.1} s having served {:.1} MiB, last done {:.1} s",
                run.worst_slowdown(),
                run.seeder_sent as f64 / CHURN_SIZE as f64,
                run.leaver,
                run.leaver_joined,
                run.left_at,
                run.served_by_leaver() as f64 / MIB as f64,
                run.last_done()
            );
        }
    }
}
