//! Optional caps on this peer's upload and download rates
//! (`--max-upload`, `--max-download`): a GCRA limiter from the governor
//! crate, reading time from the `Clock` port, so simulations run the caps on
//! virtual time. Every data reply of the server takes its bytes from the
//! upload cap before it writes them (replies to all requesters draw from
//! the one cap in turn), and every unit request of a download takes its
//! bytes from the download cap before it is sent.

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use lanspread_ports::Clock;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The limiter counts KiB, so a 32-bit cell count covers any LAN rate.
const CELL: u64 = 1024;

/// The largest burst, in cells: one send piece (1 MiB) passes at once.
const BURST_CELLS: u32 = 1024;

/// The `Clock` port as governor's clock.
#[derive(Clone)]
struct PortClock(Arc<dyn Clock>);

impl GovernorClock for PortClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.now().as_duration()
    }
}

/// One cap, in bytes per second.
pub(crate) struct RateCap {
    limiter: RateLimiter<NotKeyed, InMemoryState, PortClock, NoOpMiddleware<Duration>>,
    clock: Arc<dyn Clock>,
}

impl RateCap {
    /// A cap of `bytes_per_sec` (at least 1 KiB/s).
    pub fn new(bytes_per_sec: u64, clock: Arc<dyn Clock>) -> Self {
        let cells = u32::try_from((bytes_per_sec / CELL).max(1)).unwrap_or(u32::MAX);
        let per_sec = NonZeroU32::new(cells).expect("at least one cell");
        let burst = NonZeroU32::new(BURST_CELLS).expect("a burst of one piece");
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        RateCap { limiter: RateLimiter::direct_with_clock(quota, PortClock(clock.clone())), clock }
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, bytes: u64) {
        let mut left = bytes.div_ceil(CELL);
        while left > 0 {
            let n = left.min(u64::from(BURST_CELLS)) as u32;
            let Some(cells) = NonZeroU32::new(n) else { return };
            match self.limiter.check_n(cells) {
                Ok(Ok(())) => left -= u64::from(n),
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(self.clock.now().as_duration());
                    self.clock.sleep(wait.max(Duration::from_micros(100))).await;
                }
                // Never: `n` is at most the burst.
                Err(_) => return,
            }
        }
    }
}

/// The caps of one peer (`None`: unlimited).
#[derive(Default)]
pub(crate) struct RateCaps {
    pub upload: Option<RateCap>,
    pub download: Option<RateCap>,
}

impl RateCaps {
    pub fn new(upload: Option<u64>, download: Option<u64>, clock: &Arc<dyn Clock>) -> Self {
        RateCaps { upload: upload.map(|r| RateCap::new(r, clock.clone())), download: download.map(|r| RateCap::new(r, clock.clone())) }
    }

    /// Waits until `bytes` may be sent.
    pub async fn upload(&self, bytes: u64) {
        if let Some(cap) = &self.upload {
            cap.take(bytes).await;
        }
    }

    /// Waits until `bytes` may be asked for.
    pub async fn download(&self, bytes: u64) {
        if let Some(cap) = &self.download {
            cap.take(bytes).await;
        }
    }
}
