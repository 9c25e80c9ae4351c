//! The clock port: monotonic time and sleeping.

use async_trait::async_trait;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A monotonic instant, measured from the clock's own (arbitrary) epoch.
///
/// Sans-IO machines in `core` take a `Timestamp` as `now`; only a [`Clock`]
/// produces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// The clock's epoch.
    pub const ZERO: Timestamp = Timestamp(Duration::ZERO);

    /// A timestamp `d` after the epoch.
    pub const fn from_duration(d: Duration) -> Self {
        Timestamp(d)
    }

    /// Time since the epoch.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_since(rhs)
    }
}

/// Monotonic time and timers.
///
/// Contract: `now` never goes backwards; `sleep(d)` returns no earlier than
/// `now() + d` as observed by the same clock. A simulated clock advances only
/// when every task is waiting, which makes runs deterministic.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
    /// Waits for `d`.
    async fn sleep(&self, d: Duration);
    /// Seconds since the Unix epoch, for human-facing records only (intent
    /// logs, lock files). Never used for ordering or timeouts.
    fn unix_seconds(&self) -> u64;
}
