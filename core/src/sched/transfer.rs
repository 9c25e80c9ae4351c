//! The plan of one download: which units are wanted, which are done, which
//! files are complete. Wraps the [`Scheduler`] (who fetches what from whom)
//! so the async driver keeps no state of its own about the plan: it spawns
//! requests, aborts them, writes verified bytes and closes the files this
//! machine says are complete.

use super::{Action, ChunkFailure, PeerStats, Scheduler, SchedulerConfig};
use crate::game::Manifest;
use crate::units::{FileIdx, UnitIdx, UnitLayout};
use lanspread_ports::{PeerId, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A decision for the driver of a [`Transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferAction {
    /// Ask `peer` for `unit`.
    Request {
        /// The peer.
        peer: PeerId,
        /// The unit.
        unit: UnitIdx,
    },
    /// Abandon the request of `unit` at `peer` (another copy won, or the
    /// peer was banned).
    Cancel {
        /// The peer.
        peer: PeerId,
        /// The unit.
        unit: UnitIdx,
    },
    /// Every piece of this file is written: the driver may close it.
    FileComplete(FileIdx),
    /// `peer` is backed off until `until` after repeated failures.
    PeerBackedOff {
        /// The peer.
        peer: PeerId,
        /// Until when.
        until: Timestamp,
    },
    /// `peer` sent corrupt data too often and is no longer used.
    PeerBanned {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// No usable peer is left: the download waits for a new holder until
    /// `until`, then fails.
    WaitingForHolders {
        /// Why no peer is usable.
        why: String,
        /// When the download fails if nobody came.
        until: Timestamp,
    },
    /// Every unit is done.
    Complete,
    /// The download cannot complete.
    Failed(String),
}

/// The sans-IO plan of one download (see the module docs).
#[derive(Debug)]
pub struct Transfer {
    layout: Arc<UnitLayout>,
    sched: Scheduler,
    unit_done: Vec<bool>,
    /// Pieces not yet written, per manifest entry.
    pieces_left: Vec<u32>,
    reused_bytes: u64,
    actions: VecDeque<TransferAction>,
}

impl Transfer {
    /// Plans the download of `manifest`. `in_place[file][chunk]` says which
    /// chunks are already on disk and verified (an interrupted attempt, or
    /// an old version's identical data); a unit whose every piece is in
    /// place is not fetched.
    pub fn new(manifest: &Manifest, in_place: &[Vec<bool>], config: SchedulerConfig) -> Self {
        let layout = Arc::new(UnitLayout::of(manifest));
        let mut pieces_left = vec![0u32; manifest.files.len()];
        for u in layout.units() {
            for p in layout.pieces(u) {
                pieces_left[p.file.index()] += 1;
            }
        }
        let sched = Scheduler::new(layout.units().map(|u| layout.len(u)), config);
        let mut t =
            Transfer { unit_done: vec![false; layout.count()], layout, sched, pieces_left, reused_bytes: 0, actions: VecDeque::new() };
        let reusable: Vec<UnitIdx> = t.layout.units().filter(|u| t.all_in_place(*u, in_place)).collect();
        for &u in &reusable {
            t.reused_bytes += t.layout.len(u);
            t.unit_finished(u, false);
        }
        t.sched.mark_done_many(reusable.iter().map(|u| u.index()));
        t
    }

    fn all_in_place(&self, unit: UnitIdx, in_place: &[Vec<bool>]) -> bool {
        let found = |file: FileIdx, chunk: u32| in_place.get(file.index()).and_then(|c| c.get(chunk as usize)).copied();
        self.layout.pieces(unit).iter().all(|p| found(p.file, p.chunk) == Some(true))
    }

    /// Counts the pieces of a unit that arrived first as written.
    fn unit_finished(&mut self, unit: UnitIdx, announce: bool) {
        if std::mem::replace(&mut self.unit_done[unit.index()], true) {
            return; // an endgame copy that arrived second
        }
        for p in self.layout.pieces(unit) {
            let left = &mut self.pieces_left[p.file.index()];
            *left -= 1;
            if *left == 0 && announce {
                self.actions.push_back(TransferAction::FileComplete(p.file));
            }
        }
    }

    // ---- getters -------------------------------------------------------

    /// The unit layout of the manifest (shared with the tasks that verify
    /// what arrives).
    pub fn layout(&self) -> &Arc<UnitLayout> {
        &self.layout
    }

    /// Units in total.
    pub fn unit_count(&self) -> usize {
        self.layout.count()
    }

    /// Units already in place at the start.
    pub fn reused_bytes(&self) -> u64 {
        self.reused_bytes
    }

    /// Verified bytes so far (reused ones included).
    pub fn done_bytes(&self) -> u64 {
        self.sched.done_bytes()
    }

    /// Total bytes.
    pub fn total_bytes(&self) -> u64 {
        self.sched.total_bytes()
    }

    /// Per-peer statistics (including peers that left or were banned).
    pub fn peer_stats(&self) -> BTreeMap<PeerId, PeerStats> {
        self.sched.peer_stats()
    }

    /// Sum of the current per-peer rate estimates.
    pub fn total_rate(&self) -> f64 {
        self.sched.total_rate()
    }

    /// Whether `unit` is verified and written (or was in place at the start).
    pub fn is_unit_done(&self, unit: UnitIdx) -> bool {
        self.unit_done.get(unit.index()).copied().unwrap_or(false)
    }

    /// Whether every piece of `file` is written.
    pub fn is_file_complete(&self, file: FileIdx) -> bool {
        self.pieces_left.get(file.index()) == Some(&0)
    }

    // ---- inputs --------------------------------------------------------

    /// A peer holding the pinned manifest is available.
    pub fn handle_peer_added(&mut self, peer: PeerId, now: Timestamp) {
        self.sched.handle_peer_added(peer, now);
    }

    /// A peer downloading the pinned version too (a partial source) is
    /// available; it is asked only for units it said it holds.
    pub fn handle_partial_added(&mut self, peer: PeerId, now: Timestamp) {
        self.sched.handle_partial_added(peer, now);
    }

    /// A partial source holds `units` (verified on its side): each is
    /// checked again when it arrives, like any other.
    pub fn handle_have(&mut self, peer: &PeerId, units: &[UnitIdx]) {
        let count = self.layout.count();
        self.sched.handle_have(peer, units.iter().map(|u| u.index()).filter(|u| *u < count));
    }

    /// A partial source started its download over: it holds nothing yet.
    pub fn handle_partial_reset(&mut self, peer: &PeerId, now: Timestamp) {
        self.sched.handle_partial_reset(peer, now);
    }

    /// A peer is gone; its requests go back to the queue.
    pub fn handle_peer_removed(&mut self, peer: &PeerId, now: Timestamp) {
        self.sched.handle_peer_removed(peer, now);
    }

    /// A unit arrived, was verified and written.
    pub fn handle_unit_done(&mut self, peer: &PeerId, unit: UnitIdx, now: Timestamp) {
        if unit.index() >= self.unit_done.len() {
            return;
        }
        self.unit_finished(unit, true);
        self.sched.handle_chunk_done(peer, unit.index(), now);
    }

    /// A request failed.
    pub fn handle_unit_failed(&mut self, peer: &PeerId, unit: UnitIdx, failure: ChunkFailure, now: Timestamp) {
        self.sched.handle_chunk_failed(peer, unit.index(), failure, now);
    }

    /// Expires overdue requests and backoffs.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.sched.handle_timeout(now);
    }

    // ---- outputs -------------------------------------------------------

    /// The next decision, or `None` until the next input or timeout.
    pub fn poll_action(&mut self, now: Timestamp) -> Option<TransferAction> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        let unit = |c: usize| UnitIdx(c as u32);
        Some(match self.sched.poll_action(now)? {
            Action::Request { peer, chunk } => TransferAction::Request { peer, unit: unit(chunk) },
            Action::Cancel { peer, chunk } => TransferAction::Cancel { peer, unit: unit(chunk) },
            Action::PeerBackedOff { peer, until } => TransferAction::PeerBackedOff { peer, until },
            Action::PeerBanned { peer, reason } => TransferAction::PeerBanned { peer, reason },
            Action::WaitingForHolders { why, until } => TransferAction::WaitingForHolders { why, until },
            Action::Complete => TransferAction::Complete,
            Action::Failed(why) => TransferAction::Failed(why),
        })
    }

    /// When [`Transfer::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.sched.poll_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::{EntryKind, FileEntry, Version, CHUNK_SIZE};
    use lanspread_ports::RelPath;
    use proptest::prelude::*;

    fn manifest(sizes: &[u64]) -> Manifest {
        let files = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| FileEntry {
                path: RelPath::new(format!("f{i:04}")).unwrap(),
                kind: EntryKind::File,
                size,
                chunks: vec![[i as u8; 32]; FileEntry::chunk_count_for(size) as usize],
                hash: [0; 32],
            })
            .collect();
        Manifest { version: Version::new("1").unwrap(), files }
    }

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_duration(std::time::Duration::from_millis(ms))
    }

    fn drain(tr: &mut Transfer, now: Timestamp) -> Vec<TransferAction> {
        std::iter::from_fn(|| tr.poll_action(now)).collect()
    }

    #[test]
    fn files_complete_once_when_their_last_piece_arrives() {
        let m = manifest(&[10, 20, CHUNK_SIZE + 5]);
        let mut tr = Transfer::new(&m, &[], SchedulerConfig::default());
        let peer = PeerId([1; 32]);
        tr.handle_peer_added(peer, t(0));
        let requests: Vec<UnitIdx> = drain(&mut tr, t(0))
            .into_iter()
            .filter_map(|a| match a {
                TransferAction::Request { unit, .. } => Some(unit),
                _ => None,
            })
            .collect();
        // f0, f1 and the first chunk of f2 do not fit one unit: [f0 f1] [f2.0] [f2.1].
        assert_eq!(requests, vec![UnitIdx(0), UnitIdx(1), UnitIdx(2)]);
        tr.handle_unit_done(&peer, UnitIdx(0), t(1));
        assert_eq!(drain(&mut tr, t(1)), vec![TransferAction::FileComplete(FileIdx(0)), TransferAction::FileComplete(FileIdx(1))]);
        tr.handle_unit_done(&peer, UnitIdx(2), t(2));
        tr.handle_unit_done(&peer, UnitIdx(2), t(2));
        assert_eq!(drain(&mut tr, t(2)), vec![]);
        tr.handle_unit_done(&peer, UnitIdx(1), t(3));
        assert_eq!(drain(&mut tr, t(3)), vec![TransferAction::FileComplete(FileIdx(2)), TransferAction::Complete]);
        assert!(tr.is_file_complete(FileIdx(2)));
    }

    #[test]
    fn units_in_place_are_not_fetched() {
        let m = manifest(&[CHUNK_SIZE + 10, 7]);
        let in_place = vec![vec![true, false], vec![true]];
        let mut tr = Transfer::new(&m, &in_place, SchedulerConfig::default());
        assert_eq!(tr.reused_bytes(), CHUNK_SIZE);
        tr.handle_peer_added(PeerId([1; 32]), t(0));
        let asked: Vec<_> = drain(&mut tr, t(0));
        // Unit 1 holds chunk 1 of f0 and f1 (in place, but its unit is not).
        assert_eq!(asked, vec![TransferAction::Request { peer: PeerId([1; 32]), unit: UnitIdx(1) }]);
    }

    proptest! {
        /// Whatever order units arrive in, duplicates included, every file
        /// is announced complete exactly once and the transfer completes.
        #[test]
        fn every_file_completes_exactly_once(sizes in proptest::collection::vec(1u64..3 * CHUNK_SIZE, 1..12), order in proptest::collection::vec(any::<prop::sample::Index>(), 0..64)) {
            let m = manifest(&sizes);
            let mut tr = Transfer::new(&m, &[], SchedulerConfig { max_in_flight: 1000, max_in_flight_bytes: u64::MAX, ..SchedulerConfig::default() });
            let peer = PeerId([1; 32]);
            tr.handle_peer_added(peer, t(0));
            let mut completed = Vec::new();
            let mut out: Vec<UnitIdx> = Vec::new();
            let collect = |tr: &mut Transfer, completed: &mut Vec<FileIdx>, out: &mut Vec<UnitIdx>| {
                for a in drain(tr, t(1)) {
                    match a {
                        TransferAction::FileComplete(f) => completed.push(f),
                        TransferAction::Request { unit, .. } => out.push(unit),
                        _ => {}
                    }
                }
            };
            collect(&mut tr, &mut completed, &mut out);
            let n = out.len();
            for idx in order {
                let u = out[idx.index(n)];
                tr.handle_unit_done(&peer, u, t(1));
                collect(&mut tr, &mut completed, &mut out);
            }
            for u in 0..n {
                tr.handle_unit_done(&peer, UnitIdx(u as u32), t(1));
                collect(&mut tr, &mut completed, &mut out);
            }
            completed.sort();
            let all: Vec<FileIdx> = (0..sizes.len() as u32).map(FileIdx).collect();
            prop_assert_eq!(completed, all);
        }
    }
}
