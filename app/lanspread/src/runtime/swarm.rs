//! Swarming, the server's side: what this peer holds of the versions it is
//! downloading, and who else asked about each version.
//!
//! A running download adds each unit once it is verified *and written*
//! ([`Swarm::add_units`]); the server serves exactly those units and
//! answers `Have` long polls from them. The units of `version.ini` are never
//! added: it is written by the commit, last, so a partial holder can never
//! make a game look downloaded. This is a record of IO facts (what lies
//! verified on disk), shared by the download task and the server like the
//! connection pool; the peer's state stays in the peer machine.

use lanspread_core::game::{GameId, Hash};
use lanspread_core::protocol::{HaveNews, Held, MAX_HAVE_MEMBERS, MAX_HAVE_UNITS};
use lanspread_core::serve::{ServeView, UnitSource};
use lanspread_core::units::UnitIdx;
use lanspread_ports::{PeerId, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Most members remembered per version (a LAN party of several hundred).
const MAX_MEMBERS: usize = 1024;

/// Most versions with a swarm record at once; a peer asking about versions
/// we neither serve nor download creates none.
const MAX_SWARMS: usize = 256;

/// Every swarm this peer takes part in, by manifest digest.
#[derive(Default)]
pub(crate) struct Swarms(Mutex<BTreeMap<Hash, Arc<Swarm>>>);

impl Swarms {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Hash, Arc<Swarm>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The swarm of a version, if this peer downloads it or (with
    /// `served`) serves it complete.
    pub fn find(&self, id: &GameId, digest: &Hash, served: bool) -> Option<Arc<Swarm>> {
        let mut all = self.lock();
        if let Some(s) = all.get(digest).filter(|s| s.id == *id) {
            return Some(s.clone());
        }
        if !served || all.len() >= MAX_SWARMS {
            return None;
        }
        Some(all.entry(*digest).or_insert_with(|| Arc::new(Swarm::new(id.clone()))).clone())
    }

    /// A download of this version starts: from now on it holds what it
    /// adds. `epoch` tells askers that an earlier attempt's units are void.
    pub fn start_download(&self, id: &GameId, digest: Hash, source: UnitSource, epoch: u64) -> Arc<Swarm> {
        let swarm = self.lock().entry(digest).or_insert_with(|| Arc::new(Swarm::new(id.clone()))).clone();
        let count = source.layout.count();
        swarm.update(|st| st.hold = Some(Hold { epoch, source, log: Vec::new(), held: vec![false; count] }));
        swarm
    }

    /// The download ended. Without a commit its units are void at once
    /// (they may be deleted); after one they stay served until the
    /// committed game is served in their place ([`Swarms::prune`]).
    pub fn end_download(&self, digest: &Hash, committed: bool) {
        let swarm = self.lock().get(digest).cloned();
        if let Some(swarm) = swarm.filter(|_| !committed) {
            swarm.update(|st| st.hold = None);
        }
    }

    /// After the served library changed: a committed download's record
    /// gives way to the served game, and a swarm neither served nor
    /// downloaded is forgotten.
    pub fn prune(&self, view: &ServeView, downloading: impl Fn(&GameId) -> bool) {
        self.lock().retain(|digest, swarm| {
            let served = view.serves(&swarm.id, digest);
            if served || !downloading(&swarm.id) {
                swarm.update(|st| st.hold = None);
            }
            served || swarm.holds_any()
        });
    }
}

/// One version's swarm.
pub(crate) struct Swarm {
    id: GameId,
    state: Mutex<SwarmState>,
    /// Bumped whenever units or members are added; long polls wait on
    /// `changed`. (A `Notify` wakes its waiters in the order they came; a
    /// `watch` wakes them in an order drawn from tokio's own random source,
    /// which no simulation seed controls.)
    generation: AtomicU64,
    changed: Notify,
}

#[derive(Default)]
struct SwarmState {
    /// What this peer's running download holds.
    hold: Option<Hold>,
    /// Peers that asked about this version, in the order they first did.
    members: Vec<PeerId>,
    known: BTreeSet<PeerId>,
    /// Where the next sample of members starts, so askers hear of
    /// different members.
    cursor: usize,
    /// The member each unit was last given to.
    given: BTreeMap<UnitIdx, Given>,
}

/// A unit on its way to a member, or sent.
#[derive(Clone, Copy)]
struct Given {
    to: PeerId,
    /// When the send started.
    at: Timestamp,
    /// When it ended (`None` while it runs).
    done: Option<Timestamp>,
}

/// A send that never reported its end (its task was aborted) stops
/// deferring the unit after this long.
const STALE_SEND: Duration = Duration::from_secs(10);

impl Given {
    /// How long a request of another downloader waits: while the send runs,
    /// about as long as it ran so far; after it, until the receiver had
    /// about as long again to pass the unit on.
    fn defers(&self, now: Timestamp) -> Option<Duration> {
        let (min, max) = (Duration::from_millis(20), Duration::from_secs(1));
        let running = now.saturating_since(self.at);
        match self.done {
            None if running < STALE_SEND => Some(running.clamp(min, max)),
            None => None,
            Some(done) => {
                let window = (done.saturating_since(self.at) * 3 / 2).clamp(min, max * 3);
                window.checked_sub(now.saturating_since(done)).filter(|w| !w.is_zero())
            }
        }
    }
}

/// A unit given to one downloader ([`Swarm::claim`]): its send ends with
/// [`Claim::sent`], or [`Claim::withdraw`] when it never started.
pub(crate) struct Claim {
    swarm: Arc<Swarm>,
    unit: UnitIdx,
    to: PeerId,
}

impl Claim {
    /// The unit went out.
    pub fn sent(self, now: Timestamp) {
        let mut st = self.swarm.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = st.given.get_mut(&self.unit).filter(|g| g.to == self.to) {
            g.done = Some(now);
        }
    }

    /// The unit was not sent after all (the server was busy).
    pub fn withdraw(self) {
        let mut st = self.swarm.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.given.get(&self.unit).is_some_and(|g| g.to == self.to && g.done.is_none()) {
            st.given.remove(&self.unit);
        }
    }
}

struct Hold {
    epoch: u64,
    source: UnitSource,
    /// Units in the order they were verified.
    log: Vec<UnitIdx>,
    held: Vec<bool>,
}

impl Swarm {
    fn new(id: GameId) -> Self {
        Swarm { id, state: Mutex::default(), generation: AtomicU64::new(0), changed: Notify::new() }
    }

    fn update<T>(&self, f: impl FnOnce(&mut SwarmState) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        out
    }

    fn read<T>(&self, f: impl FnOnce(&SwarmState) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether a running (or just committed) download holds units here.
    pub fn holds_any(&self) -> bool {
        self.read(|st| st.hold.is_some())
    }

    /// Wakes when units or members are added.
    pub fn subscribe(self: &Arc<Self>) -> SwarmChanges {
        SwarmChanges { swarm: self.clone(), seen: self.generation.load(Ordering::SeqCst) }
    }

    /// Units verified and written by the running download.
    pub fn add_units(&self, units: impl IntoIterator<Item = UnitIdx>) {
        self.update(|st| {
            let Some(hold) = st.hold.as_mut() else { return };
            for u in units {
                if let Some(slot) = hold.held.get_mut(u.index()).filter(|h| !**h) {
                    *slot = true;
                    hold.log.push(u);
                }
            }
        });
    }

    /// Where to read `unit` from, if the running download holds it.
    pub fn unit_source(&self, unit: UnitIdx) -> Option<UnitSource> {
        self.read(|st| st.hold.as_ref().filter(|h| h.held.get(unit.index()) == Some(&true)).map(|h| h.source.clone()))
    }

    /// Records a peer that asked about this version; returns whether it is new.
    pub fn note_member(&self, peer: PeerId) -> bool {
        let new = self.read(|st| !st.known.contains(&peer) && st.members.len() < MAX_MEMBERS);
        if new {
            self.update(|st| {
                st.known.insert(peer);
                st.members.push(peer);
            });
        }
        new
    }

    /// Sends `unit` to `asker` about once per swarm: while it is on its way
    /// to another downloader, or went to one a moment ago, returns how long
    /// until this server sends it anyway (that downloader passes it on
    /// meanwhile); else gives it to `asker`. Every downloader asks `Have` of
    /// the holders it fetches from, so it hears of the one that got it.
    pub fn claim(self: &Arc<Self>, unit: UnitIdx, asker: PeerId, now: Timestamp) -> Result<Claim, Duration> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wait) = st.given.get(&unit).filter(|g| g.to != asker).and_then(|g| g.defers(now)) {
            return Err(wait);
        }
        st.given.insert(unit, Given { to: asker, at: now, done: None });
        Ok(Claim { swarm: self.clone(), unit, to: asker })
    }

    /// Members from position `from` on (for the download of this peer,
    /// which polls those that asked us).
    pub fn members_since(&self, from: usize) -> Vec<PeerId> {
        self.read(|st| st.members.get(from..).map(<[PeerId]>::to_vec).unwrap_or_default())
    }

    /// The answer to a `Have` from `asker` that knows `since` units of our
    /// log: `None` while there is nothing new to say (the server waits).
    /// A served version holds everything.
    pub fn news_for(&self, asker: &PeerId, since: u32, served: bool) -> Option<HaveNews> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (epoch, held) = match (&st.hold, served) {
            (_, true) => (0, Held::All),
            (Some(hold), false) => {
                let from = (since as usize).min(hold.log.len());
                let units: Vec<UnitIdx> = hold.log[from..].iter().take(MAX_HAVE_UNITS).copied().collect();
                if units.is_empty() && since as usize == hold.log.len() {
                    return None;
                }
                (hold.epoch, Held::Log { from: from as u32, units })
            }
            (None, false) => return None,
        };
        let members = sample(&mut st, asker);
        Some(HaveNews { epoch, held, members })
    }

    /// The answer to a `Have` with nothing new: an empty log from `since`.
    pub fn quiet_news(&self, asker: &PeerId, since: u32) -> Option<HaveNews> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let hold = st.hold.as_ref()?;
        let (epoch, from) = (hold.epoch, since.min(hold.log.len() as u32));
        let members = sample(&mut st, asker);
        Some(HaveNews { epoch, held: Held::Log { from, units: Vec::new() }, members })
    }
}

/// Changes of one swarm, as seen by one waiter.
pub(crate) struct SwarmChanges {
    swarm: Arc<Swarm>,
    seen: u64,
}

impl SwarmChanges {
    /// Returns once units or members were added since the last return (at
    /// once if they were added since [`Swarm::subscribe`]). Cancel safe.
    pub async fn changed(&mut self) {
        loop {
            let notified = self.swarm.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.swarm.generation.load(Ordering::SeqCst);
            if now != self.seen {
                self.seen = now;
                return;
            }
            notified.await;
        }
    }
}

/// Up to [`MAX_HAVE_MEMBERS`] members other than `asker`, from a point that
/// moves on with every answer, so the swarm's members hear of different
/// others and the graph of who polls whom spreads.
fn sample(st: &mut SwarmState, asker: &PeerId) -> Vec<PeerId> {
    let n = st.members.len();
    if n == 0 {
        return Vec::new();
    }
    let start = st.cursor % n;
    st.cursor = st.cursor.wrapping_add(MAX_HAVE_MEMBERS);
    (0..n).map(|i| st.members[(start + i) % n]).filter(|m| m != asker).take(MAX_HAVE_MEMBERS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanspread_core::game::{EntryKind, FileEntry, Manifest, Version};
    use lanspread_ports::RelPath;

    fn source(units: usize) -> (GameId, UnitSource) {
        let files = (0..units)
            .map(|i| FileEntry {
                path: RelPath::new(format!("f{i}")).unwrap(),
                kind: EntryKind::File,
                size: 1 << 20,
                chunks: vec![[i as u8; 32]],
                hash: [0; 32],
            })
            .collect();
        let id = GameId::new("g").unwrap();
        let m = Manifest { version: Version::new("1").unwrap(), files };
        (id.clone(), UnitSource::new(&id, &m))
    }

    #[test]
    fn a_download_serves_what_it_added_and_nothing_after_a_failed_end() {
        let swarms = Swarms::default();
        let (id, src) = source(4);
        let s = swarms.start_download(&id, [1; 32], src, 7);
        assert!(s.unit_source(UnitIdx(2)).is_none());
        s.add_units([UnitIdx(2), UnitIdx(2), UnitIdx(0)]);
        assert!(s.unit_source(UnitIdx(2)).is_some());
        let asker = PeerId([9; 32]);
        let news = s.news_for(&asker, 0, false).unwrap();
        assert_eq!((news.epoch, news.held), (7, Held::Log { from: 0, units: vec![UnitIdx(2), UnitIdx(0)] }));
        assert_eq!(s.news_for(&asker, 2, false), None, "nothing new: the server waits");
        swarms.end_download(&[1; 32], false);
        assert!(s.unit_source(UnitIdx(2)).is_none(), "units of a failed download may be deleted");
    }

    #[test]
    fn a_unit_goes_to_one_downloader_and_the_others_wait_for_it_to_pass_it_on() {
        let swarms = Swarms::default();
        let id = GameId::new("g").unwrap();
        let s = swarms.find(&id, &[3; 32], true).unwrap();
        let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
        let t = |ms: u64| Timestamp::from_duration(Duration::from_millis(ms));
        let claim = s.claim(UnitIdx(0), a, t(0)).ok().unwrap();
        assert_eq!(s.claim(UnitIdx(0), b, t(300)).err(), Some(Duration::from_millis(300)), "on its way to a");
        claim.sent(t(400));
        // a took 400 ms; it gets 600 ms to pass it on.
        assert_eq!(s.claim(UnitIdx(0), b, t(500)).err(), Some(Duration::from_millis(500)));
        assert!(s.claim(UnitIdx(1), b, t(500)).is_ok(), "another unit");
        s.claim(UnitIdx(0), a, t(600)).ok().unwrap().withdraw();
        assert!(s.claim(UnitIdx(0), b, t(600)).is_ok(), "a withdrawn claim defers nothing");
        let _ = s.claim(UnitIdx(2), a, t(0)).ok().unwrap();
        assert!(s.claim(UnitIdx(2), b, t(10_001)).is_ok(), "a send that never ended stops deferring");
    }

    #[test]
    fn only_versions_served_or_downloaded_get_a_swarm_and_members_are_sampled() {
        let swarms = Swarms::default();
        let id = GameId::new("g").unwrap();
        assert!(swarms.find(&id, &[2; 32], false).is_none());
        let s = swarms.find(&id, &[2; 32], true).unwrap();
        for i in 0..40 {
            assert!(s.note_member(PeerId([i; 32])));
        }
        assert!(!s.note_member(PeerId([3; 32])));
        let a = s.news_for(&PeerId([0; 32]), 0, true).unwrap();
        let b = s.news_for(&PeerId([0; 32]), 0, true).unwrap();
        assert_eq!(a.held, Held::All);
        assert_eq!(a.members.len(), MAX_HAVE_MEMBERS);
        assert!(!a.members.contains(&PeerId([0; 32])), "never the asker itself");
        assert_ne!(a.members, b.members, "the next asker hears of others");
    }
}
