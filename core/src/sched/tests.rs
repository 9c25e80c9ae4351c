//! Scheduler tests on a small discrete-event model: each peer uploads at a
//! fixed rate, shared equally among its outstanding requests (processor
//! sharing), after a fixed latency.

use super::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn pid(i: u8) -> PeerId {
    PeerId([i; 32])
}

#[derive(Clone)]
struct ModelPeer {
    rate: f64, // bytes/s
    corrupt: bool,
    dies_at: Option<f64>,
}

struct Outcome {
    secs: f64,
    complete: bool,
    failed: Option<String>,
    bytes_by_peer: BTreeMap<PeerId, u64>,
    banned: Vec<PeerId>,
}

/// Runs a download of `chunks` over the model peers. `latency` is added once
/// per request.
fn simulate(chunks: &[u64], peers: &[ModelPeer], latency: f64, config: SchedulerConfig) -> Outcome {
    let mut s = Scheduler::new(chunks.iter().copied(), config);
    let ts = |t: f64| Timestamp::from_duration(Duration::from_secs_f64(t));
    let mut now = 0.0f64;
    for (i, _) in peers.iter().enumerate() {
        s.handle_peer_added(pid(i as u8), ts(0.0));
    }
    // Outstanding requests per peer: (chunk, remaining bytes, ready_at).
    let mut out: Vec<Vec<(ChunkIdx, f64, f64)>> = vec![vec![]; peers.len()];
    let mut alive = vec![true; peers.len()];
    let mut banned = vec![];
    let mut failed = None;
    let mut complete = false;
    for _step in 0..1_000_000 {
        // Drain actions.
        while let Some(a) = s.poll_action(ts(now)) {
            match a {
                Action::Request { peer, chunk } => out[peer.0[0] as usize].push((chunk, chunks[chunk] as f64, now + latency)),
                Action::Cancel { peer, chunk } => out[peer.0[0] as usize].retain(|r| r.0 != chunk),
                Action::PeerBanned { peer, .. } => {
                    banned.push(peer);
                    out[peer.0[0] as usize].clear();
                }
                Action::PeerBackedOff { .. } | Action::WaitingForHolders { .. } => {}
                Action::Complete => complete = true,
                Action::Failed(why) => failed = Some(why),
            }
        }
        if complete || failed.is_some() {
            break;
        }
        // Next event: a transfer finishing, a latency expiring, a death, or a timeout.
        let mut next = f64::INFINITY;
        for (i, reqs) in out.iter().enumerate() {
            let active: Vec<_> = reqs.iter().filter(|r| r.2 <= now).collect();
            for r in reqs.iter().filter(|r| r.2 > now) {
                next = next.min(r.2);
            }
            if !active.is_empty() {
                let share = peers[i].rate / active.len() as f64;
                for r in active {
                    next = next.min(now + r.1 / share);
                }
            }
            if let Some(d) = peers[i].dies_at.filter(|_| alive[i]) {
                next = next.min(d);
            }
        }
        if let Some(t) = s.poll_timeout() {
            next = next.min(t.as_duration().as_secs_f64());
        }
        assert!(next.is_finite(), "model stalled at t={now}");
        let dt = (next - now).max(0.0);
        // Advance transfers.
        for (i, reqs) in out.iter_mut().enumerate() {
            let n = reqs.iter().filter(|r| r.2 <= now).count();
            if n > 0 {
                let share = peers[i].rate / n as f64;
                for r in reqs.iter_mut().filter(|r| r.2 <= now) {
                    r.1 -= share * dt;
                }
            }
        }
        now = next;
        for i in 0..peers.len() {
            if alive[i] && peers[i].dies_at.is_some_and(|d| d <= now) {
                alive[i] = false;
                out[i].clear();
                s.handle_peer_removed(&pid(i as u8), ts(now));
            }
            let (done, rest): (Vec<_>, Vec<_>) = out[i].drain(..).partition(|r| r.2 <= now && r.1 <= 1e-6);
            out[i] = rest;
            for (chunk, _, _) in done {
                if peers[i].corrupt {
                    s.handle_chunk_failed(&pid(i as u8), chunk, ChunkFailure::Corrupt("hash mismatch".into()), ts(now));
                } else {
                    s.handle_chunk_done(&pid(i as u8), chunk, ts(now));
                }
            }
        }
        s.handle_timeout(ts(now));
    }
    let bytes_by_peer = s.peer_stats().into_iter().map(|(p, st)| (p, st.bytes)).collect();
    Outcome { secs: now, complete, failed, bytes_by_peer, banned }
}

fn game(total_mib: u64) -> Vec<u64> {
    (0..total_mib).map(|_| MIB).collect()
}

fn peers(rates: &[f64]) -> Vec<ModelPeer> {
    rates.iter().map(|r| ModelPeer { rate: *r, corrupt: false, dies_at: None }).collect()
}

/// Time a blind round-robin plan needs: peer i gets chunks i, i+n, ...
fn round_robin_secs(chunks: &[u64], rates: &[f64]) -> f64 {
    let n = rates.len();
    (0..n).map(|i| chunks.iter().skip(i).step_by(n).sum::<u64>() as f64 / rates[i]).fold(0.0, f64::max)
}

#[test]
fn equal_peers_reach_the_ideal() {
    let chunks = game(400);
    let rates = [20.0 * MIB as f64; 5];
    let o = simulate(&chunks, &peers(&rates), 0.001, SchedulerConfig::default());
    assert!(o.complete);
    let ideal = 400.0 / 100.0 + 0.001;
    let eff = o.secs / ideal;
    assert!(eff <= 1.10, "took {:.3}s vs ideal {ideal:.3}s ({eff:.3}x)", o.secs);
}

#[test]
fn one_slow_peer_does_not_drag_the_download() {
    let chunks = game(400);
    let mut rates = [20.0 * MIB as f64; 5];
    rates[2] = 2.0 * MIB as f64;
    let o = simulate(&chunks, &peers(&rates), 0.001, SchedulerConfig::default());
    assert!(o.complete);
    let ideal = 400.0 * MIB as f64 / rates.iter().sum::<f64>();
    let rr = round_robin_secs(&chunks, &rates);
    assert!(o.secs / ideal <= 1.15, "took {:.3}s vs ideal {ideal:.3}s", o.secs);
    assert!(rr / ideal > 4.0, "round robin {rr:.3}s should be far worse than ideal {ideal:.3}s");
    let slow_share = o.bytes_by_peer[&pid(2)] as f64 / (400 * MIB) as f64;
    assert!(slow_share < 0.1, "slow peer delivered {slow_share:.2} of the game");
}

#[test]
fn a_peer_that_dies_is_replaced() {
    let chunks = game(100);
    let mut ps = peers(&[10.0 * MIB as f64; 3]);
    ps[1].dies_at = Some(2.0);
    let o = simulate(&chunks, &ps, 0.001, SchedulerConfig::default());
    assert!(o.complete, "{:?}", o.failed);
    // Every byte counted once, the dead peer's share included.
    assert_eq!(o.bytes_by_peer.values().sum::<u64>(), 100 * MIB);
    assert!(o.bytes_by_peer[&pid(1)] < 100 * MIB / 3);
}

#[test]
fn all_peers_vanishing_fails_cleanly() {
    let chunks = game(100);
    let mut ps = peers(&[10.0 * MIB as f64; 2]);
    ps[0].dies_at = Some(1.0);
    ps[1].dies_at = Some(1.5);
    let o = simulate(&chunks, &ps, 0.001, SchedulerConfig::default());
    assert!(!o.complete);
    assert!(o.failed.unwrap().contains("no peer"));
}

#[test]
fn corrupt_peer_is_banned_and_download_completes() {
    let chunks = game(60);
    let mut ps = peers(&[10.0 * MIB as f64; 3]);
    ps[0].corrupt = true;
    let o = simulate(&chunks, &ps, 0.001, SchedulerConfig::default());
    assert!(o.complete, "{:?}", o.failed);
    assert_eq!(o.banned, vec![pid(0)]);
    assert_eq!(o.bytes_by_peer[&pid(0)], 0);
}

#[test]
fn only_corrupt_peers_fail_with_a_reason() {
    let chunks = game(10);
    let mut ps = peers(&[10.0 * MIB as f64; 2]);
    ps[0].corrupt = true;
    ps[1].corrupt = true;
    let o = simulate(&chunks, &ps, 0.001, SchedulerConfig::default());
    assert!(!o.complete);
    assert!(o.failed.unwrap().contains("banned"));
}

#[test]
fn silent_peer_times_out_and_work_moves() {
    let chunks = game(20);
    let mut ps = peers(&[10.0 * MIB as f64, 1e-3]);
    ps[1].rate = 1e-3; // effectively never delivers
    let cfg = SchedulerConfig { initial_timeout: Duration::from_secs(2), ..SchedulerConfig::default() };
    let o = simulate(&chunks, &ps, 0.001, cfg);
    assert!(o.complete, "{:?}", o.failed);
    assert_eq!(o.bytes_by_peer[&pid(0)], 20 * MIB);
}

#[test]
fn already_done_chunks_are_skipped() {
    let mut s = Scheduler::new([MIB, MIB, 5], SchedulerConfig::default());
    s.mark_done(0);
    s.mark_done(2);
    s.handle_peer_added(pid(1), Timestamp::ZERO);
    assert_eq!(s.poll_action(Timestamp::ZERO), Some(Action::Request { peer: pid(1), chunk: 1 }));
    assert_eq!(s.poll_action(Timestamp::ZERO), None);
    s.handle_chunk_done(&pid(1), 1, Timestamp::ZERO + Duration::from_millis(10));
    assert_eq!(s.poll_action(Timestamp::ZERO), Some(Action::Complete));
    assert_eq!(s.done_bytes(), 2 * MIB + 5);
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_duration(Duration::from_secs(secs))
}

/// Answers every request of `peer` with corrupt data until it is banned.
fn ban_by_lies(s: &mut Scheduler, peer: PeerId, now: Timestamp) -> Vec<Action> {
    let mut seen = Vec::new();
    while let Some(a) = s.poll_action(now) {
        if let Action::Request { chunk, .. } = a {
            s.handle_chunk_failed(&peer, chunk, ChunkFailure::Corrupt("lie".into()), now);
        }
        seen.push(a);
    }
    seen
}

#[test]
fn a_download_waits_for_holders_that_come_later() {
    let mut s = Scheduler::new(game(4), SchedulerConfig::default());
    s.handle_peer_added(pid(0), at(0));
    let seen = ban_by_lies(&mut s, pid(0), at(0));
    assert!(seen.iter().any(|a| matches!(a, Action::PeerBanned { .. })));
    let wait = seen.iter().find_map(|a| match a {
        Action::WaitingForHolders { until, why } => Some((*until, why.clone())),
        _ => None,
    });
    assert_eq!(wait.as_ref().map(|w| w.0), Some(at(30)), "{seen:?}");
    assert!(wait.unwrap().1.contains("1 banned"));
    assert!(!seen.iter().any(|a| matches!(a, Action::Failed(_))), "{seen:?}");
    // Ten seconds later an honest holder appears and finishes the download;
    // the liar stays banned for this download.
    s.handle_timeout(at(10));
    assert_eq!(s.poll_action(at(10)), None);
    s.handle_peer_added(pid(0), at(10));
    s.handle_peer_added(pid(1), at(10));
    let mut asked = Vec::new();
    while let Some(a) = s.poll_action(at(10)) {
        asked.push(a);
    }
    for a in &asked {
        let Action::Request { peer, chunk } = a else { panic!("{a:?}") };
        assert_eq!(*peer, pid(1));
        s.handle_chunk_done(peer, *chunk, at(11));
    }
    assert_eq!(s.poll_action(at(11)), Some(Action::Complete));
    assert_eq!(s.poll_timeout(), None, "no wait deadline is left");
}

#[test]
fn a_download_fails_when_nobody_comes_within_the_window() {
    let mut s = Scheduler::new(game(2), SchedulerConfig { holder_wait: Duration::from_secs(5), ..SchedulerConfig::default() });
    s.handle_peer_added(pid(0), at(0));
    s.handle_peer_removed(&pid(0), at(1));
    assert!(matches!(s.poll_action(at(1)), Some(Action::WaitingForHolders { .. })));
    assert_eq!(s.poll_timeout(), Some(at(6)));
    s.handle_timeout(at(5));
    assert_eq!(s.poll_action(at(5)), None);
    s.handle_timeout(at(6));
    match s.poll_action(at(6)) {
        Some(Action::Failed(why)) => assert!(why.contains("none came within 5s"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A peer whose requests keep failing at the transport (a flapping link)
/// does not use up the attempts of chunks a healthy peer can serve.
#[test]
fn transport_failures_of_one_peer_do_not_fail_chunks_others_can_serve() {
    let config = SchedulerConfig { max_chunk_attempts: 2, failures_before_backoff: 1000, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(game(8), config.clone());
    s.handle_peer_added(pid(0), at(0));
    s.handle_peer_added(pid(1), at(0));
    let mut failures = 0;
    for round in 0..10_000 {
        let now = at(round / 100);
        let mut actions = Vec::new();
        while let Some(a) = s.poll_action(now) {
            actions.push(a);
        }
        let mut done = false;
        for a in actions {
            match a {
                Action::Request { peer, chunk } if peer == pid(0) => {
                    failures += 1;
                    s.handle_chunk_failed(&peer, chunk, ChunkFailure::Transport("connection reset".into()), now);
                }
                Action::Request { peer, chunk } => s.handle_chunk_done(&peer, chunk, now),
                Action::Failed(why) => panic!("failed after {failures} transport failures of one peer: {why}"),
                Action::Complete => done = true,
                _ => {}
            }
        }
        if done {
            assert!(failures > config.max_chunk_attempts as usize, "peer 0 failed only {failures} times");
            return;
        }
    }
    panic!("never completed");
}

/// Without another peer, transport failures do count: a download whose
/// only holder keeps failing ends instead of retrying forever.
#[test]
fn transport_failures_of_the_only_peer_fail_the_chunk() {
    let config = SchedulerConfig { max_chunk_attempts: 3, failures_before_backoff: 1000, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(game(1), config);
    s.handle_peer_added(pid(0), at(0));
    for _ in 0..100 {
        match s.poll_action(at(0)) {
            Some(Action::Request { peer, chunk }) => s.handle_chunk_failed(&peer, chunk, ChunkFailure::Transport("reset".into()), at(0)),
            Some(Action::Failed(why)) => {
                assert!(why.contains("failed 3 times"), "{why}");
                return;
            }
            Some(_) => {}
            None => break,
        }
    }
    panic!("the chunk never failed");
}

#[test]
fn empty_download_completes_immediately() {
    let mut s = Scheduler::new(std::iter::empty(), SchedulerConfig::default());
    assert_eq!(s.poll_action(Timestamp::ZERO), Some(Action::Complete));
}

proptest! {
    /// Random interleavings of inputs keep the books straight: a chunk is
    /// never done twice, never requested from a banned or removed peer, at
    /// most `max_in_flight` requests per peer, a new request only below
    /// `max_in_flight_bytes`, and the end is reported once.
    #[test]
    fn random_inputs_keep_invariants(ops in proptest::collection::vec((0u8..4, 0u8..6, any::<u16>()), 1..400), n_chunks in 1usize..40) {
        // Chunks of 1000-3000 bytes against a 4000-byte window and at most
        // 3 requests: both limits bind in turn.
        let cfg = SchedulerConfig { max_in_flight: 3, max_in_flight_bytes: 4000, ..SchedulerConfig::default() };
        let (max_in_flight, max_bytes) = (cfg.max_in_flight, cfg.max_in_flight_bytes);
        let len_of = |c: ChunkIdx| (c as u64 % 3 + 1) * 1000;
        let mut s = Scheduler::new((0..n_chunks).map(len_of), cfg);
        let mut outstanding: BTreeSet<(u8, ChunkIdx)> = BTreeSet::new();
        let mut gone: BTreeSet<u8> = BTreeSet::new();
        let mut ends = 0;
        let mut done: BTreeSet<ChunkIdx> = BTreeSet::new();
        let mut t = 0u64;
        for (peer, op, arg) in ops {
            t += u64::from(arg % 500);
            let now = Timestamp::from_duration(Duration::from_millis(t));
            let p = pid(peer);
            match op {
                0 => { if !gone.contains(&peer) { s.handle_peer_added(p, now); } }
                1 => { s.handle_peer_removed(&p, now); gone.insert(peer); outstanding.retain(|(q, _)| *q != peer); }
                2 => if let Some(&(q, c)) = outstanding.iter().nth(arg as usize % outstanding.len().max(1)) {
                    outstanding.remove(&(q, c));
                    if arg % 5 == 0 {
                        s.handle_chunk_failed(&pid(q), c, ChunkFailure::Corrupt("x".into()), now);
                    } else if arg % 3 == 0 {
                        s.handle_chunk_failed(&pid(q), c, ChunkFailure::Transport("x".into()), now);
                    } else {
                        s.handle_chunk_done(&pid(q), c, now);
                        done.insert(c);
                    }
                },
                _ => s.handle_timeout(now),
            }
            while let Some(a) = s.poll_action(now) {
                match a {
                    Action::Request { peer, chunk } => {
                        prop_assert!(!gone.contains(&peer.0[0]));
                        prop_assert!(!done.contains(&chunk) || s.is_complete());
                        let before: u64 = outstanding.iter().filter(|(q, _)| *q == peer.0[0]).map(|(_, c)| len_of(*c)).sum();
                        prop_assert!(before < max_bytes, "a peer with {} bytes outstanding got another request", before);
                        prop_assert!(outstanding.insert((peer.0[0], chunk)));
                        prop_assert!(outstanding.iter().filter(|(q, _)| *q == peer.0[0]).count() <= max_in_flight);
                    }
                    Action::Cancel { peer, chunk } => { outstanding.remove(&(peer.0[0], chunk)); }
                    Action::PeerBanned { peer, .. } => { gone.insert(peer.0[0]); outstanding.retain(|(q, _)| *q != peer.0[0]); }
                    Action::PeerBackedOff { .. } | Action::WaitingForHolders { .. } => {}
                    Action::Complete | Action::Failed(_) => ends += 1,
                }
            }
            prop_assert!(ends <= 1);
            prop_assert!(s.done_bytes() <= s.total_bytes());
        }
        if s.is_complete() { prop_assert_eq!(s.done_bytes(), s.total_bytes()); }
    }
}

fn requests(s: &mut Scheduler, now: Timestamp) -> Vec<(PeerId, ChunkIdx)> {
    std::iter::from_fn(|| s.poll_action(now))
        .filter_map(|a| match a {
            Action::Request { peer, chunk } => Some((peer, chunk)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_partial_source_is_asked_only_for_what_it_holds_and_the_rarest_first() {
    let cfg = SchedulerConfig { max_in_flight: 1, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(game(6), cfg);
    s.handle_partial_added(pid(1), at(0));
    assert_eq!(requests(&mut s, at(0)), vec![], "it holds nothing yet");
    s.handle_partial_added(pid(2), at(0));
    s.handle_have(&pid(1), [2, 3]);
    s.handle_have(&pid(2), [3, 4]);
    // Chunk 3 has two sources, 2 and 4 one each: each peer takes its rarest.
    assert_eq!(requests(&mut s, at(0)), vec![(pid(1), 2), (pid(2), 4)]);
    // A complete holder takes the rarest queued chunk: 0 (nobody else has it).
    s.handle_peer_added(pid(0), at(0));
    assert_eq!(requests(&mut s, at(0)), vec![(pid(0), 0)]);
}

#[test]
fn downloaders_with_other_salts_start_at_other_chunks_and_then_go_in_order() {
    let firsts: Vec<Vec<ChunkIdx>> = [0u64, 5, 13]
        .iter()
        .map(|salt| {
            let cfg = SchedulerConfig { max_in_flight: 3, tie_salt: *salt, ..SchedulerConfig::default() };
            let mut s = Scheduler::new(game(8), cfg);
            s.handle_peer_added(pid(0), at(0));
            requests(&mut s, at(0)).into_iter().map(|(_, c)| c).collect()
        })
        .collect();
    assert_eq!(firsts, vec![vec![0, 1, 2], vec![5, 6, 7], vec![5, 6, 7]]);
}

#[test]
fn a_busy_answer_is_no_failure_and_the_peer_is_asked_again_after_its_wait() {
    let cfg = SchedulerConfig { max_in_flight: 1, max_chunk_attempts: 1, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(game(2), cfg);
    s.handle_peer_added(pid(0), at(0));
    for _ in 0..5 {
        let now = s.poll_timeout().unwrap_or(at(0)).min(at(1000));
        s.handle_timeout(now);
        let asked = requests(&mut s, now);
        assert_eq!(asked, vec![(pid(0), 0)]);
        s.handle_chunk_failed(&pid(0), 0, ChunkFailure::Busy(Duration::from_millis(300)), now);
        assert_eq!(requests(&mut s, now), vec![], "not asked again before the wait");
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_millis(300)));
    }
    let stats = &s.peer_stats()[&pid(0)];
    assert_eq!((stats.failures, stats.strikes), (0, 0));
}

#[test]
fn partial_sources_that_miss_a_chunk_make_the_download_wait() {
    let mut s = Scheduler::new(game(3), SchedulerConfig::default());
    s.handle_peer_added(pid(0), at(0));
    s.handle_partial_added(pid(1), at(0));
    s.handle_have(&pid(1), [0, 1]);
    s.handle_peer_removed(&pid(0), at(1));
    let seen: Vec<Action> = std::iter::from_fn(|| s.poll_action(at(1))).collect();
    assert!(seen.iter().any(|a| matches!(a, Action::WaitingForHolders { .. })), "chunk 2 has no source: {seen:?}");
    s.handle_have(&pid(1), [2]);
    s.handle_timeout(at(40));
    assert!(!std::iter::from_fn(|| s.poll_action(at(40))).any(|a| matches!(a, Action::Failed(_))), "covered again before the window ended");
}

#[derive(Debug, Clone)]
enum SwarmStep {
    Partial(u8),
    Have(u8, ChunkIdx),
    Reset(u8),
    Leave(u8),
    Deliver(usize),
    Fail(usize, bool),
}

fn swarm_step() -> impl Strategy<Value = SwarmStep> {
    prop_oneof![
        (1u8..5).prop_map(SwarmStep::Partial),
        (1u8..5, 0usize..12).prop_map(|(p, c)| SwarmStep::Have(p, c)),
        (1u8..5).prop_map(SwarmStep::Reset),
        (1u8..5).prop_map(SwarmStep::Leave),
        any::<usize>().prop_map(SwarmStep::Deliver),
        (any::<usize>(), any::<bool>()).prop_map(|(i, busy)| SwarmStep::Fail(i, busy)),
    ]
}

proptest! {
    /// Whatever partial sources announce, reset or leave, a chunk is only
    /// ever asked of a peer that holds it, and with a complete holder that
    /// stays the download completes.
    #[test]
    fn chunks_are_asked_only_of_peers_that_hold_them(steps in proptest::collection::vec(swarm_step(), 0..200), salt in any::<u64>()) {
        let cfg = SchedulerConfig { tie_salt: salt, ..SchedulerConfig::default() };
        let mut s = Scheduler::new(game(12), cfg);
        s.handle_peer_added(pid(0), at(0));
        let mut held: BTreeMap<PeerId, BTreeSet<ChunkIdx>> = BTreeMap::new();
        let mut outstanding: Vec<(PeerId, ChunkIdx)> = Vec::new();
        let drain = |s: &mut Scheduler, outstanding: &mut Vec<(PeerId, ChunkIdx)>, held: &BTreeMap<PeerId, BTreeSet<ChunkIdx>>, now: Timestamp| -> Result<bool, TestCaseError> {
            let mut complete = false;
            while let Some(a) = s.poll_action(now) {
                match a {
                    Action::Request { peer, chunk } => {
                        prop_assert!(peer == pid(0) || held.get(&peer).is_some_and(|h| h.contains(&chunk)), "{chunk} asked of {peer:?}");
                        outstanding.push((peer, chunk));
                    }
                    Action::Cancel { peer, chunk } => outstanding.retain(|o| *o != (peer, chunk)),
                    Action::Complete => complete = true,
                    Action::Failed(why) => prop_assert!(false, "failed: {why}"),
                    _ => {}
                }
            }
            Ok(complete)
        };
        for step in steps {
            match step {
                SwarmStep::Partial(p) => { s.handle_partial_added(pid(p), at(1)); held.entry(pid(p)).or_default(); }
                SwarmStep::Have(p, c) => if let Some(h) = held.get_mut(&pid(p)) { h.insert(c); s.handle_have(&pid(p), [c]); },
                SwarmStep::Reset(p) => if let Some(h) = held.get_mut(&pid(p)) { h.clear(); s.handle_partial_reset(&pid(p), at(1)); },
                SwarmStep::Leave(p) => { held.remove(&pid(p)); s.handle_peer_removed(&pid(p), at(1)); outstanding.retain(|o| o.0 != pid(p)); }
                SwarmStep::Deliver(i) if !outstanding.is_empty() => { let (p, c) = outstanding.remove(i % outstanding.len()); s.handle_chunk_done(&p, c, at(1)); }
                SwarmStep::Fail(i, busy) if !outstanding.is_empty() => {
                    let (p, c) = outstanding.remove(i % outstanding.len());
                    let f = if busy { ChunkFailure::Busy(Duration::ZERO) } else { ChunkFailure::Transport("reset".into()) };
                    s.handle_chunk_failed(&p, c, f, at(1));
                }
                _ => {}
            }
            drain(&mut s, &mut outstanding, &held, at(1))?;
        }
        // Then time passes (backoffs end) and every request is answered.
        let mut complete = s.is_complete();
        for k in 2..1000 {
            if complete { break; }
            let now = at(k * 60);
            s.handle_timeout(now);
            complete |= drain(&mut s, &mut outstanding, &held, now)?;
            while let Some((p, c)) = outstanding.pop() {
                s.handle_chunk_done(&p, c, now);
            }
            complete |= drain(&mut s, &mut outstanding, &held, now)?;
        }
        prop_assert!(complete);
    }
}
