//! The simulated clock: [`Clock`] on tokio's (paused) virtual time.
//!
//! On a runtime built with `start_paused(true)`, tokio's clock stands still
//! while any task can run and jumps to the next timer when every task is
//! idle, so [`SimClock`] readings are a deterministic function of the seed.

use async_trait::async_trait;
use lanspread_ports::{Clock, Timestamp};
use std::time::Duration;
use tokio::time::Instant;

/// The default fake wall-clock base: 2023-11-14T22:13:20Z.
pub const DEFAULT_UNIX_BASE: u64 = 1_700_000_000;

/// A [`Clock`] on `tokio::time` with a fixed, fake wall-clock.
///
/// `now()` is the virtual time elapsed since the clock was built;
/// `unix_seconds()` is a fixed base plus the elapsed whole seconds (never
/// the host's real time, so intent logs and lock files replay identically).
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    epoch: Instant,
    unix_base: u64,
}

impl SimClock {
    /// A clock whose epoch is now. Build it inside the (paused) runtime that
    /// should drive it.
    pub fn new() -> SimClock {
        SimClock::with_unix_base(DEFAULT_UNIX_BASE)
    }

    /// Like [`SimClock::new`], with `unix_seconds()` starting at `base`.
    pub fn with_unix_base(base: u64) -> SimClock {
        SimClock { epoch: Instant::now(), unix_base: base }
    }

    /// A clock with an explicit epoch (to share one time origin between
    /// several clocks, e.g. one per simulated peer).
    pub fn starting_at(epoch: Instant, unix_base: u64) -> SimClock {
        SimClock { epoch, unix_base }
    }

    /// The tokio instant that is `Timestamp::ZERO` for this clock.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }

    /// The tokio instant of `t` on this clock (for `sleep_until`).
    pub fn instant_of(&self, t: Timestamp) -> Instant {
        self.epoch + t.as_duration()
    }
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::new()
    }
}

#[async_trait]
impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.elapsed())
    }

    async fn sleep(&self, d: Duration) {
        // tokio's timer rounds up to the millisecond, so `now() + d` is
        // always reached.
        tokio::time::sleep(d).await;
    }

    fn unix_seconds(&self) -> u64 {
        self.unix_base.saturating_add(self.elapsed().as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn paused() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
    }

    #[test]
    fn virtual_time_drives_the_clock() {
        paused().block_on(async {
            let clock: Arc<dyn Clock> = Arc::new(SimClock::new());
            assert_eq!(clock.now(), Timestamp::ZERO);
            assert_eq!(clock.unix_seconds(), DEFAULT_UNIX_BASE);
            clock.sleep(Duration::from_secs(3600)).await;
            assert_eq!(clock.now(), Timestamp::from_duration(Duration::from_secs(3600)));
            assert_eq!(clock.unix_seconds(), DEFAULT_UNIX_BASE + 3600);
            let a = clock.now();
            clock.sleep(Duration::from_micros(1500)).await;
            assert!(clock.now() - a >= Duration::from_micros(1500));
        });
    }

    #[test]
    fn shared_epoch_and_base() {
        paused().block_on(async {
            let c = SimClock::with_unix_base(42);
            tokio::time::sleep(Duration::from_millis(2500)).await;
            assert_eq!(c.unix_seconds(), 44);
            let d = SimClock::starting_at(c.epoch(), 0);
            assert_eq!(d.now(), c.now());
            assert_eq!(c.instant_of(c.now()), Instant::now());
        });
    }
}
