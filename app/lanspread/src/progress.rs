//! How far a long operation is: what its handle's progress stream shows.

use lanspread_core::peer::PeerShare;
use serde::Serialize;
use std::time::Duration;

/// Progress of a download (bytes verified) or an install (archive bytes
/// unpacked).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all, if known.
    pub total: Option<u64>,
    /// Current rate, bytes per second (downloads).
    pub rate: f64,
    /// Time left at the current rate, if it can be told.
    pub eta: Option<Duration>,
    /// Each peer's share of a download: verified bytes and rate.
    pub peers: Vec<PeerShare>,
    /// Set while a download waits for a usable holder: why.
    pub waiting: Option<String>,
}

impl Progress {
    pub(crate) fn of_download(done: u64, total: u64, rate: f64, peers: Vec<PeerShare>) -> Self {
        let left = total.saturating_sub(done) as f64;
        let eta = (rate > 0.0).then(|| Duration::from_secs_f64(left / rate));
        Progress { done, total: Some(total), rate, eta, peers, waiting: None }
    }

    pub(crate) fn of_install(done: u64, total: Option<u64>) -> Self {
        Progress { done, total, ..Progress::default() }
    }

    /// `done / total` in `0.0..=1.0`, if the total is known.
    ///
    /// ```
    /// let mut p = lanspread::Progress::default();
    /// assert_eq!(p.fraction(), None);
    /// p.done = 25;
    /// p.total = Some(100);
    /// assert_eq!(p.fraction(), Some(0.25));
    /// ```
    pub fn fraction(&self) -> Option<f64> {
        match self.total {
            Some(0) => Some(1.0),
            Some(t) => Some((self.done as f64 / t as f64).min(1.0)),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_follows_the_rate() {
        let p = Progress::of_download(50, 150, 25.0, vec![]);
        assert_eq!(p.eta, Some(Duration::from_secs(4)));
        assert_eq!(Progress::of_download(0, 10, 0.0, vec![]).eta, None);
    }
}
