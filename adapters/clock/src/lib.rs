//! The clock adapter: real monotonic time on tokio.
//!
//! [`TokioClock`] measures [`Timestamp`]s from the `tokio::time::Instant` at
//! which it was built, so a paused tokio runtime (`start_paused`) drives it
//! deterministically too.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use lanspread_ports::{Clock, Timestamp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A [`Clock`] on `tokio::time`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: Instant,
}

impl TokioClock {
    /// A clock whose epoch is now. Build it inside the runtime whose
    /// (possibly paused) time should drive it.
    pub fn new() -> Self {
        TokioClock { epoch: Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_duration(Instant::now().saturating_duration_since(self.epoch))
    }

    async fn sleep(&self, d: Duration) {
        // `Timestamp` has nanosecond resolution while tokio's timer rounds
        // up to the millisecond, so `now() + d` is always reached.
        tokio::time::sleep(d).await;
    }

    fn unix_seconds(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn now_is_monotonic_and_sleep_waits() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let a = clock.now();
        clock.sleep(Duration::from_millis(20)).await;
        let b = clock.now();
        assert!(b >= a + Duration::from_millis(20), "{a:?} -> {b:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_is_deterministic() {
        let clock = TokioClock::new();
        assert_eq!(clock.now(), Timestamp::ZERO);
        clock.sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), Timestamp::from_duration(Duration::from_secs(3600)));
    }

    #[test]
    fn unix_seconds_is_plausible() {
        // After 2020-01-01.
        assert!(TokioClock::new().unix_seconds() > 1_577_836_800);
    }
}
