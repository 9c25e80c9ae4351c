//! The server's admission of data replies across all hosts: a few at a
//! time, a bounded queue, and `Busy` (with when to ask again) beyond it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Data replies sent at once across all hosts. Few at a time, so each
/// finishes soon: a downloader can pass a unit on only once it has it
/// whole, so a seeder that sends four units at full speed feeds a swarm
/// sooner than one that sends forty at a tenth of it (one downloader alone
/// still keeps four units in flight, enough to fill a LAN link).
const SEND_SLOTS: usize = 4;

/// Data replies that may wait for a slot (four downloaders' worth); a
/// request beyond them is answered `Busy` at once, with when to ask again,
/// instead of waiting in an unbounded queue until it times out and is
/// asked again, which is how an overloaded seeder collapses.
const SEND_QUEUE: usize = 16;

/// Replies a host may have sending beyond the slots: another host whose
/// readers stall holds its slots (until [`SLOT_HOLD`]), and must not starve
/// the rest. One, not more: every extra reply a seeder sends at once slows
/// the others, and a swarm spreads units faster when each finishes soon.
const HOST_GUARANTEE: usize = 1;

/// A reply gives its slot back after this long even if it still sends (a
/// reader that stalls or crawls then holds only its host's share, and the
/// write deadline ends it); the slots are for replies that finish soon.
pub(crate) const SLOT_HOLD: Duration = Duration::from_secs(1);

/// The global admission of data replies: [`SEND_SLOTS`] at once, at most
/// [`SEND_QUEUE`] waiting, in arrival order (so hosts take turns).
pub(crate) struct SendSlots {
    slots: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    /// Recent time one reply took, in microseconds (for the retry-after).
    service_us: AtomicUsize,
}

impl SendSlots {
    pub fn new() -> Self {
        SendSlots { slots: tokio::sync::Semaphore::new(SEND_SLOTS), waiting: AtomicUsize::new(0), service_us: AtomicUsize::new(10_000) }
    }

    /// A slot for a reply to a host with `host_sending` replies in flight,
    /// or how long to wait before asking again when the queue is full. A
    /// host with fewer than [`HOST_GUARANTEE`] in flight is admitted even
    /// beyond the slots.
    pub async fn admit<'a>(&'a self, host_sending: &'a AtomicUsize) -> Result<SendTurn<'a>, Duration> {
        let slot = match self.slots.try_acquire() {
            Ok(p) => Some(p),
            Err(_) if host_sending.load(Ordering::SeqCst) < HOST_GUARANTEE => None,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
                let admitted = if waiting < SEND_QUEUE { self.slots.acquire().await.ok() } else { None };
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Some(admitted.ok_or_else(|| self.retry_after(waiting))?)
            }
        };
        host_sending.fetch_add(1, Ordering::SeqCst);
        Ok(SendTurn { slot, host_sending })
    }

    /// About when a slot frees for a request behind `waiting` others.
    fn retry_after(&self, waiting: usize) -> Duration {
        let per_reply = Duration::from_micros(self.service_us.load(Ordering::Relaxed) as u64);
        let rounds = 1 + waiting / SEND_SLOTS;
        (per_reply * rounds as u32).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// Folds the time of one reply into the estimate.
    pub fn served(&self, took: Duration) {
        let us = took.as_micros().min(10_000_000) as usize;
        let old = self.service_us.load(Ordering::Relaxed);
        self.service_us.store((old * 7 + us) / 8, Ordering::Relaxed);
    }
}

/// One admitted data reply: its global slot (if it took one) and its
/// place in its host's count.
pub(crate) struct SendTurn<'a> {
    slot: Option<tokio::sync::SemaphorePermit<'a>>,
    host_sending: &'a AtomicUsize,
}

impl SendTurn<'_> {
    /// Gives the global slot back while the reply goes on ([`SLOT_HOLD`]).
    pub fn release_slot(&mut self) {
        self.slot = None;
    }
}

impl Drop for SendTurn<'_> {
    fn drop(&mut self) {
        self.host_sending.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_slots_and_the_queue_a_request_hears_busy_but_an_idle_host_is_let_in() {
        let slots = SendSlots::new();
        let greedy = AtomicUsize::new(0);
        let mut turns = Vec::new();
        for _ in 0..SEND_SLOTS {
            turns.push(slots.admit(&greedy).await.expect("a free slot"));
        }
        // The queue is full of waiters of the greedy host...
        slots.waiting.store(SEND_QUEUE, Ordering::SeqCst);
        let busy = slots.admit(&greedy).await.err().expect("busy");
        assert!(busy >= Duration::from_millis(5) && busy <= Duration::from_secs(1), "{busy:?}");
        // ...while a host with nothing in flight is still served.
        let idle = AtomicUsize::new(0);
        let turn = slots.admit(&idle).await.expect("an idle host is admitted");
        assert_eq!(idle.load(Ordering::SeqCst), 1);
        drop(turn);
        assert_eq!(idle.load(Ordering::SeqCst), 0);
        drop(turns);
        assert_eq!(greedy.load(Ordering::SeqCst), 0);
    }
}
