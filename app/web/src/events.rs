//! The event hub and the event stream (`GET /api/v1/events`).
//!
//! One task reads the peer's events, turns them into UI events
//! ([`lanspread::bridge`]), numbers them, keeps the last [`RING`] for
//! clients that reconnect, and fans them out. Progress is thinned to
//! [`PROGRESS_PERIOD`] per game: a page needs to look alive, not every
//! figure.

use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures::{Stream, StreamExt};
use lanspread::bridge::{self, names, ProgressBook, UiEvent};
use lanspread::{EventsError, GameId, Peer, PeerEvent};
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Events kept for clients that reconnect with `Last-Event-ID`.
pub const RING: usize = 512;
/// Events a slow client may fall behind before it is resynchronized.
pub const LIVE: usize = 256;
/// At most one progress event per game per period (4 a second).
pub const PROGRESS_PERIOD: Duration = Duration::from_millis(250);
/// A comment this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A UI event with its place in the stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Numbered {
    pub id: u64,
    pub event: UiEvent,
}

/// The hub: cheap to clone, every clone is the same hub.
#[derive(Clone)]
pub(crate) struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    peer: Peer,
    state: Mutex<HubState>,
    live: broadcast::Sender<Arc<Numbered>>,
}

struct HubState {
    /// The id of the last event published.
    last: u64,
    ring: VecDeque<Arc<Numbered>>,
    book: ProgressBook,
    /// The peer's events ended: no live events will come.
    stopped: bool,
}

/// What a client attaching to the hub gets: events to send first, then
/// the live events (none once the peer stopped).
pub(crate) struct Attached {
    pub first: Vec<Arc<Numbered>>,
    pub live: Option<broadcast::Receiver<Arc<Numbered>>>,
}

impl Hub {
    /// Subscribes to `peer` and starts the hub's task on the current
    /// tokio runtime.
    pub(crate) fn start(peer: Peer) -> Self {
        let events = peer.subscribe();
        // Ids start at a random point, so a browser reconnecting after a
        // restart of the program does not find its old id in the new ring
        // (and gets the full state, as it must). 2^40 keeps ids exact in
        // JavaScript numbers.
        let last = rand::thread_rng().gen_range(1..1u64 << 40);
        let state = HubState { last, ring: VecDeque::with_capacity(RING), book: ProgressBook::default(), stopped: false };
        let shared = Shared { peer, state: Mutex::new(state), live: broadcast::channel(LIVE).0 };
        let hub = Hub { shared: Arc::new(shared) };
        tokio::spawn(hub.clone().run(events));
        hub
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        // The state stays consistent at every point a panic could occur,
        // so a poisoned lock is still usable.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self, mut events: lanspread::Events) {
        let mut throttle = Throttle::new(PROGRESS_PERIOD);
        loop {
            let due = throttle.next_due();
            tokio::select! {
                biased;
                () = sleep_until(due) => {
                    for e in throttle.take_due(Instant::now()) {
                        self.publish(e);
                    }
                }
                e = events.recv() => match e {
                    Ok(e) => self.accept(&e, &mut throttle),
                    // Events were lost: the full state replaces them.
                    Err(EventsError::Lagged { .. }) => {
                        let full = self.full_state(&self.state());
                        self.publish(full);
                    }
                    Err(EventsError::Closed) => break,
                },
            }
        }
        self.close();
    }

    fn accept(&self, e: &PeerEvent, throttle: &mut Throttle) {
        let ui = {
            let mut st = self.state();
            st.book.observe(e);
            bridge::ui_event_with(e, |id| st.book.get(id))
        };
        let Some(ui) = ui else { return };
        match e.game() {
            Some(id) if bridge::is_progress(ui.name) => {
                if let Some(ui) = throttle.offer(id, ui, Instant::now()) {
                    self.publish(ui);
                }
            }
            Some(id) => {
                // The operation moved on: its held-back progress is stale.
                throttle.forget(id);
                self.publish(ui);
            }
            None => self.publish(ui),
        }
    }

    /// Numbers `event`, keeps it in the ring and sends it to every client
    /// (under the lock, so a client attaching never misses or doubles one).
    fn publish(&self, event: UiEvent) {
        let mut st = self.state();
        st.last += 1;
        let numbered = Arc::new(Numbered { id: st.last, event });
        if st.ring.len() == RING {
            st.ring.pop_front();
        }
        st.ring.push_back(numbered.clone());
        let _ = self.shared.live.send(numbered);
    }

    /// The peer stopped: the last event says so (a killed peer sends no
    /// `Stopped`), and clients' streams end after it.
    fn close(&self) {
        let said = self.state().ring.back().is_some_and(|n| n.event.name == names::RUNTIME_STOPPED);
        if !said {
            self.publish(UiEvent::new(names::RUNTIME_STOPPED, serde_json::json!({})));
        }
        self.state().stopped = true;
    }

    /// `games-list-updated` with the peer's current library (with the
    /// state locked, so no event is published while it is made).
    fn full_state(&self, st: &HubState) -> UiEvent {
        let snapshot = self.shared.peer.library().borrow().clone();
        UiEvent::games_list(bridge::games_json(&snapshot, |id| st.book.get(id)))
    }

    /// The full state numbered with the id of the last event, so the ids a
    /// client sees keep increasing and a reconnect from it replays what
    /// came after.
    fn full_state_now(&self) -> Arc<Numbered> {
        let st = self.state();
        Arc::new(Numbered { id: st.last, event: self.full_state(&st) })
    }

    /// The progress of each running operation, as the events told it.
    pub(crate) fn progress(&self) -> ProgressBook {
        self.state().book.clone()
    }

    /// A client attaches after `last_seen` (its `Last-Event-ID`, if any):
    /// it gets what it missed if the ring still holds all of it, else the
    /// full state; then the live events.
    pub(crate) fn attach(&self, last_seen: Option<u64>) -> Attached {
        let st = self.state();
        let first = match last_seen.and_then(|after| missed(&st, after)) {
            Some(missed) => missed,
            None => vec![Arc::new(Numbered { id: st.last, event: self.full_state(&st) })],
        };
        let live = (!st.stopped).then(|| self.shared.live.subscribe());
        Attached { first, live }
    }
}

/// The events after `after`, if the ring holds every one of them.
fn missed(st: &HubState, after: u64) -> Option<Vec<Arc<Numbered>>> {
    let oldest = st.ring.front().map_or(st.last + 1, |n| n.id);
    if after > st.last || after + 1 < oldest {
        return None;
    }
    Some(st.ring.iter().filter(|n| n.id > after).cloned().collect())
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Holds back progress events so each game sends at most one per period;
/// the latest one held back goes out when the period is over.
pub(crate) struct Throttle {
    period: Duration,
    games: BTreeMap<GameId, Slot>,
}

struct Slot {
    sent: Instant,
    held: Option<UiEvent>,
}

impl Throttle {
    pub(crate) fn new(period: Duration) -> Self {
        Throttle { period, games: BTreeMap::new() }
    }

    /// `e` if it may go now, else `None` (it replaces the one held back).
    pub(crate) fn offer(&mut self, id: &GameId, e: UiEvent, now: Instant) -> Option<UiEvent> {
        match self.games.get_mut(id) {
            Some(slot) if now < slot.sent + self.period => {
                slot.held = Some(e);
                None
            }
            _ => {
                self.games.insert(id.clone(), Slot { sent: now, held: None });
                Some(e)
            }
        }
    }

    /// When the next held-back event is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.games.values().filter(|s| s.held.is_some()).map(|s| s.sent + self.period).min()
    }

    /// The held-back events that are due, in game order; games quiet
    /// for a period are forgotten.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<UiEvent> {
        let period = self.period;
        let mut due = Vec::new();
        for slot in self.games.values_mut().filter(|s| now >= s.sent + period) {
            if let Some(e) = slot.held.take() {
                slot.sent = now;
                due.push(e);
            }
        }
        self.games.retain(|_, s| s.held.is_some() || now < s.sent + period);
        due
    }

    /// Drops what is held back for `id` (its operation moved on).
    pub(crate) fn forget(&mut self, id: &GameId) {
        if let Some(slot) = self.games.get_mut(id) {
            slot.held = None;
        }
    }
}

/// Ends event streams when the server shuts down (set by [`crate::serve`]).
#[derive(Clone)]
pub(crate) struct Stopping(pub watch::Receiver<bool>);

impl Stopping {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// `GET /api/v1/events`.
pub(crate) async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    stopping: Option<Extension<Stopping>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last_seen = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let Attached { first, live } = s.hub.attach(last_seen);
    let live = futures::stream::iter(live.map(|rx| live_events(s.hub.clone(), rx))).flatten();
    let events = futures::stream::iter(first).chain(live);
    let stop = async move {
        match stopping {
            Some(Extension(s)) => s.wait().await,
            None => std::future::pending().await,
        }
    };
    let events = until_stopped(events).take_until(stop).map(|n| Ok(sse_event(&n)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The live events of one client. A client that fell behind gets the full
/// state instead of what it missed, and none of the old events left over
/// from before it (their ids are not above the full state's).
fn live_events(hub: Hub, rx: broadcast::Receiver<Arc<Numbered>>) -> impl Stream<Item = Arc<Numbered>> {
    let mut floor = 0;
    BroadcastStream::new(rx).filter_map(move |item| {
        let next = match item {
            Ok(n) if n.id <= floor => None,
            Ok(n) => Some(n),
            Err(BroadcastStreamRecvError::Lagged(_)) => {
                let full = hub.full_state_now();
                floor = full.id;
                Some(full)
            }
        };
        std::future::ready(next)
    })
}

/// Ends the stream after `runtime-stopped`: nothing comes after it.
fn until_stopped(events: impl Stream<Item = Arc<Numbered>>) -> impl Stream<Item = Arc<Numbered>> {
    events.scan(false, |ended, n| {
        if *ended {
            return std::future::ready(None);
        }
        *ended = n.event.name == names::RUNTIME_STOPPED;
        std::future::ready(Some(n))
    })
}

fn sse_event(n: &Numbered) -> Event {
    Event::default().id(n.id.to_string()).event(n.event.name).data(n.event.data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(done: u64) -> UiEvent {
        UiEvent::new(names::DOWNLOAD_PROGRESS, serde_json::json!({"done": done}))
    }

    fn numbered(ids: std::ops::RangeInclusive<u64>) -> HubState {
        let ring = ids.clone().map(|id| Arc::new(Numbered { id, event: progress(id) })).collect();
        HubState { last: *ids.end(), ring, book: ProgressBook::default(), stopped: false }
    }

    #[test]
    fn the_ring_replays_only_what_it_holds_whole() {
        let st = numbered(100..=110);
        let ids = |v: Option<Vec<Arc<Numbered>>>| v.map(|v| v.iter().map(|n| n.id).collect::<Vec<_>>());
        assert_eq!(ids(missed(&st, 107)), Some(vec![108, 109, 110]));
        assert_eq!(ids(missed(&st, 110)), Some(vec![]), "nothing missed");
        assert_eq!(ids(missed(&st, 99)), Some((100..=110).collect()), "the oldest kept is the next one");
        assert_eq!(ids(missed(&st, 98)), None, "event 99 is gone");
        assert_eq!(ids(missed(&st, 111)), None, "an id from the future (another run)");
        let empty = HubState { last: 5, ring: VecDeque::new(), book: ProgressBook::default(), stopped: false };
        assert_eq!(ids(missed(&empty, 5)), Some(vec![]));
        assert_eq!(ids(missed(&empty, 4)), None);
    }

    #[test]
    fn progress_is_thinned_to_one_per_period_per_game_keeping_the_latest() {
        let (a, b) = (GameId::new("a").unwrap(), GameId::new("b").unwrap());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = Throttle::new(Duration::from_millis(250));
        assert_eq!(t.offer(&a, progress(1), at(0)), Some(progress(1)));
        assert_eq!(t.offer(&b, progress(10), at(10)), Some(progress(10)), "games are thinned apart");
        assert_eq!(t.offer(&a, progress(2), at(100)), None);
        assert_eq!(t.offer(&a, progress(3), at(200)), None);
        assert_eq!(t.next_due(), Some(at(250)));
        assert_eq!(t.take_due(at(249)), vec![]);
        assert_eq!(t.take_due(at(250)), vec![progress(3)], "the latest held back, not the intermediate");
        assert_eq!(t.next_due(), None);
        assert_eq!(t.offer(&a, progress(4), at(300)), None, "the period restarts when a held event goes");
        t.forget(&a);
        assert_eq!(t.next_due(), None, "a forgotten event is not sent");
        assert_eq!(t.offer(&a, progress(5), at(500)), Some(progress(5)));
    }
}
