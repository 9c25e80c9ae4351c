//! Process limits set at start-up.
//!
//! Stock systems give a process a low soft `RLIMIT_NOFILE` (1024 on Linux
//! desktops, 256 on macOS) under a much higher hard limit. Like most servers,
//! the program raises its soft limit to the hard one before anything else,
//! so a large game has headroom. Nothing depends on it: the download, the
//! server, the scan and the unpacker keep their own open-file budgets and
//! must work with both limits at 256.
//!
//! Windows has no such limit on handles (the C runtime's descriptor table
//! is not used by Rust's files and sockets), so there only `Unsupported` is
//! built, and the rule below is compiled but unused.
#![cfg_attr(not(unix), allow(dead_code))]

/// Highest soft limit asked for: a hard limit of "unlimited" (or 2^30 in
/// some containers) would otherwise hand every child process (an external
/// `unrar`) a descriptor table it may walk to close.
const CEILING: u64 = 1 << 20;

/// What [`raise_nofile`] did, logged once tracing is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nofile {
    /// The soft limit was raised.
    Raised {
        /// Soft limit before.
        from: Option<u64>,
        /// Soft limit now.
        to: u64,
        /// Hard limit (`None`: unlimited).
        hard: Option<u64>,
    },
    /// The soft limit already was as high as it may go.
    Kept {
        /// Soft limit (`None`: unlimited).
        soft: Option<u64>,
        /// Hard limit (`None`: unlimited).
        hard: Option<u64>,
    },
    /// `setrlimit` refused; the soft limit is unchanged.
    Refused {
        /// Soft limit (`None`: unlimited).
        soft: Option<u64>,
        /// The value asked for.
        wanted: u64,
        /// Why.
        error: String,
    },
    /// This platform has no `RLIMIT_NOFILE`.
    #[cfg(not(unix))]
    Unsupported,
}

/// The soft limit to ask for, or `None` if `soft` is already as high as it may go.
fn target(soft: Option<u64>, hard: Option<u64>) -> Option<u64> {
    let want = hard.unwrap_or(u64::MAX).min(CEILING);
    match soft {
        None => None,
        Some(s) if s >= want => None,
        Some(_) => Some(want),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most 2^20).
#[cfg(unix)]
pub fn raise_nofile() -> Nofile {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let (soft, hard) = (now.current, now.maximum);
    let Some(want) = target(soft, hard) else { return Nofile::Kept { soft, hard } };
    let set = |to: u64| setrlimit(Resource::Nofile, Rlimit { current: Some(to), maximum: hard });
    match set(want) {
        Ok(()) => Nofile::Raised { from: soft, to: want, hard },
        // macOS refuses a soft limit above OPEN_MAX (10240) even under an
        // unlimited hard limit.
        Err(_) if want > 10240 && soft.is_some_and(|s| s < 10240) && set(10240).is_ok() => Nofile::Raised { from: soft, to: 10240, hard },
        Err(e) => Nofile::Refused { soft, wanted: want, error: e.to_string() },
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (not on this platform).
#[cfg(not(unix))]
pub fn raise_nofile() -> Nofile {
    Nofile::Unsupported
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string())
}

/// Logs (at debug) what [`raise_nofile`] did.
pub fn log(n: &Nofile) {
    match n {
        Nofile::Raised { from, to, hard } => {
            tracing::debug!("RLIMIT_NOFILE: soft limit raised from {} to {to} (hard limit {})", show(*from), show(*hard))
        }
        Nofile::Kept { soft, hard } => {
            tracing::debug!("RLIMIT_NOFILE: soft limit {} kept (hard limit {})", show(*soft), show(*hard))
        }
        Nofile::Refused { soft, wanted, error } => {
            tracing::debug!("RLIMIT_NOFILE: raising the soft limit from {} to {wanted} was refused: {error}", show(*soft))
        }
        #[cfg(not(unix))]
        Nofile::Unsupported => tracing::debug!("RLIMIT_NOFILE: not available on this platform"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_the_hard_limit_capped() {
        assert_eq!(target(Some(1024), Some(524_288)), Some(524_288));
        assert_eq!(target(Some(256), None), Some(CEILING));
        assert_eq!(target(Some(1024), Some(1 << 30)), Some(CEILING));
        assert_eq!(target(Some(256), Some(256)), None);
        assert_eq!(target(Some(CEILING), Some(1 << 30)), None);
        assert_eq!(target(None, None), None);
    }

    #[cfg(unix)]
    #[test]
    fn raising_leaves_a_soft_limit_at_most_the_hard_one() {
        let n = raise_nofile();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert!(now.current.unwrap_or(u64::MAX) <= now.maximum.unwrap_or(u64::MAX), "{n:?}");
        if let Nofile::Raised { to, .. } = n {
            assert_eq!(now.current, Some(to));
        }
    }
}
