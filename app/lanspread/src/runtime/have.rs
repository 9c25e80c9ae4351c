//! Swarming, the downloader's side: which other peers hold which units of
//! the version being downloaded.
//!
//! Each polled peer gets one task that long-polls it with `Have` and turns
//! the answers into [`HaveUpdate`]s for the download's loop, which feeds
//! them to its plan. Peers to poll come from three places: a few complete
//! holders (for the members they name), the members other peers name, and
//! the peers that asked *us* about this version (our own swarm record).
//! At most [`MAX_POLLED`] are polled at once, so a swarm of hundreds costs
//! each peer a bounded number of streams, not one per peer on the LAN.

use super::ctx::Ctx;
use lanspread_core::game::{GameId, Hash};
use lanspread_core::protocol::{ErrorCode, Held, Request, Response};
use lanspread_core::units::UnitIdx;
use lanspread_ports::{PeerId, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

/// Peers polled at once per download.
const MAX_POLLED: usize = 24;

/// Complete holders polled for members at the start.
const HOLDERS_POLLED: usize = 4;

/// How often a complete holder is asked again (it has nothing new but
/// members).
const COMPLETE_REPOLL: Duration = Duration::from_secs(1);

/// A peer that failed is not polled again this soon, even when others name
/// it (a lying peer naming unreachable members costs one failed poll per
/// member per this long, not a busy loop).
const RETRY_FAILED: Duration = Duration::from_secs(10);

/// A peer that holds nothing of the version yet (its download may be about
/// to start) is asked again after this long when named again.
const RETRY_NOT_HELD: Duration = Duration::from_millis(500);

/// What one poll learned.
pub(crate) enum HaveUpdate {
    /// `peer` holds `units` (besides what it said before; with `reset`,
    /// instead of it: its download started over).
    Units { peer: PeerId, reset: bool, units: Vec<UnitIdx>, members: Vec<PeerId> },
    /// `peer` holds the whole version.
    Complete { peer: PeerId, members: Vec<PeerId> },
    /// `peer` cannot be reached or answered nonsense.
    Gone(PeerId),
    /// `peer` holds nothing of it (yet).
    NotHeld(PeerId),
}

/// The polls of one download.
pub(crate) struct HaveLinks {
    ctx: Arc<Ctx>,
    id: GameId,
    digest: Hash,
    units: usize,
    me: PeerId,
    polled: BTreeMap<PeerId, AbortHandle>,
    /// Peers that failed or held nothing, and when they may be polled again.
    gone: BTreeMap<PeerId, Timestamp>,
    tasks: JoinSet<()>,
    tx: mpsc::UnboundedSender<HaveUpdate>,
    pub rx: mpsc::UnboundedReceiver<HaveUpdate>,
}

impl HaveLinks {
    pub fn new(ctx: &Arc<Ctx>, id: &GameId, digest: Hash, units: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = ctx.transport().local_id();
        let (polled, gone) = (BTreeMap::new(), BTreeMap::new());
        HaveLinks { ctx: ctx.clone(), id: id.clone(), digest, units, me, polled, gone, tasks: JoinSet::new(), tx, rx }
    }

    /// Starts with a few complete holders: they name the other members.
    pub fn poll_holders<'a>(&mut self, holders: impl IntoIterator<Item = &'a PeerId>) {
        self.consider(holders.into_iter().take(HOLDERS_POLLED).copied());
    }

    /// Polls the peers among `peers` not polled yet, while there is room.
    pub fn consider(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        let now = self.ctx.ports.clock.now();
        self.gone.retain(|_, until| *until > now);
        for peer in peers {
            if self.polled.len() >= MAX_POLLED {
                return;
            }
            if peer == self.me || self.polled.contains_key(&peer) || self.gone.contains_key(&peer) {
                continue;
            }
            let poll = Poll { ctx: self.ctx.clone(), id: self.id.clone(), digest: self.digest, units: self.units, peer };
            let abort = self.tasks.spawn(poll.run(self.tx.clone()));
            self.polled.insert(peer, abort);
        }
    }

    /// Peers that asked us about this version: they download it, so they
    /// are polled even if an earlier poll found nothing there.
    pub fn consider_askers(&mut self, peers: Vec<PeerId>) {
        for p in &peers {
            self.gone.remove(p);
        }
        self.consider(peers);
    }

    /// Stops polling `peer` (it left or failed); it may be polled afresh
    /// when somebody names it again, after a while.
    pub fn forget(&mut self, peer: &PeerId) {
        self.stop(peer, RETRY_FAILED);
    }

    /// Stops polling `peer`, which holds nothing of the version yet.
    pub fn not_held(&mut self, peer: &PeerId) {
        self.stop(peer, RETRY_NOT_HELD);
    }

    fn stop(&mut self, peer: &PeerId, retry_after: Duration) {
        if let Some(a) = self.polled.remove(peer) {
            a.abort();
        }
        self.gone.insert(*peer, self.ctx.ports.clock.now() + retry_after);
    }
}

impl Drop for HaveLinks {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// One peer's long poll.
struct Poll {
    ctx: Arc<Ctx>,
    id: GameId,
    digest: Hash,
    units: usize,
    peer: PeerId,
}

impl Poll {
    async fn run(self, tx: mpsc::UnboundedSender<HaveUpdate>) {
        let peer = self.peer;
        let mut since = 0u32;
        let mut epoch = None;
        loop {
            let req = Request::Have { id: self.id.clone(), digest: self.digest, since };
            let news = match self.ctx.pool.request(peer, &req).await {
                Ok(Response::Have(news)) if news.check(self.units).is_ok() => news,
                Ok(Response::Error(e)) if e.code == ErrorCode::UnknownGame => {
                    let _ = tx.send(HaveUpdate::NotHeld(peer));
                    return;
                }
                _ => {
                    let _ = tx.send(HaveUpdate::Gone(peer));
                    return;
                }
            };
            let update = match news.held {
                Held::All => HaveUpdate::Complete { peer, members: news.members },
                // Another attempt of its download: what it said before is
                // void, and this answer counted from our old position.
                Held::Log { .. } if epoch.is_some_and(|e| e != news.epoch) => {
                    (since, epoch) = (0, Some(news.epoch));
                    HaveUpdate::Units { peer, reset: true, units: Vec::new(), members: news.members }
                }
                Held::Log { from, units } => {
                    epoch = Some(news.epoch);
                    since = from.saturating_add(units.len() as u32);
                    HaveUpdate::Units { peer, reset: false, units, members: news.members }
                }
            };
            let complete = matches!(update, HaveUpdate::Complete { .. });
            if tx.send(update).is_err() {
                return;
            }
            if complete {
                self.ctx.ports.clock.sleep(COMPLETE_REPOLL).await;
            }
        }
    }
}
