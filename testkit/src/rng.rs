//! The seeded random source of a simulation.
//!
//! Everything random in a simulation (peer ids, connection secrets, fault
//! injection points, workload shapes) must come from a [`SimRng`] so that
//! one `u64` seed replays a run exactly. There is no OS randomness here.
//!
//! [`SimRng::fork`] derives an independent sub-stream from the *seed* of its
//! parent and a label — not from the parent's current position — so adding
//! draws to one component never shifts the numbers another component sees.

use lanspread_ports::PeerId;
use rand::distributions::uniform::{SampleRange, SampleUniform};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Domain-separation context of the seed derivation.
const DERIVE_CONTEXT: &str = "lanspread-testkit SimRng 2024 seed derivation";

/// A cloneable, shared, seeded random number generator.
///
/// Clones share one stream (an `Arc<Mutex<StdRng>>`): the order of draws
/// decides the values, which is deterministic on a single-threaded runtime.
#[derive(Clone)]
pub struct SimRng {
    inner: Arc<Mutex<StdRng>>,
    /// The 32-byte seed of this stream (forks derive from it).
    seed: [u8; 32],
    /// The `u64` the root stream was built from (inherited by forks).
    root: u64,
}

impl fmt::Debug for SimRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRng").field("root_seed", &self.root).field("stream", &hex_prefix(&self.seed)).finish()
    }
}

fn hex_prefix(b: &[u8; 32]) -> String {
    b[..4].iter().map(|x| format!("{x:02x}")).collect()
}

fn derive(parent: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(DERIVE_CONTEXT);
    h.update(parent);
    h.update(&(label.len() as u64).to_le_bytes());
    h.update(label);
    *h.finalize().as_bytes()
}

impl SimRng {
    /// The root stream of a simulation with `seed`.
    pub fn new(seed: u64) -> SimRng {
        let mut base = [0u8; 32];
        base[..8].copy_from_slice(&seed.to_le_bytes());
        let stream_seed = derive(&base, b"root");
        SimRng { inner: Arc::new(Mutex::new(StdRng::from_seed(stream_seed))), seed: stream_seed, root: seed }
    }

    /// The `u64` seed of the root stream this one descends from (print it
    /// when a scenario fails).
    pub fn seed(&self) -> u64 {
        self.root
    }

    /// An independent sub-stream named `label`.
    ///
    /// A pure function of this stream's seed and `label`: forking the same
    /// label twice yields two copies of the same stream, so give every
    /// component its own label (`"net"`, `format!("peer-{i}")`, ...).
    pub fn fork(&self, label: &str) -> SimRng {
        let stream_seed = derive(&self.seed, label.as_bytes());
        SimRng { inner: Arc::new(Mutex::new(StdRng::from_seed(stream_seed))), seed: stream_seed, root: self.root }
    }

    fn lock(&self) -> MutexGuard<'_, StdRng> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with exclusive access to the underlying generator (for
    /// anything the helpers below do not cover).
    pub fn with<R>(&self, f: impl FnOnce(&mut StdRng) -> R) -> R {
        f(&mut self.lock())
    }

    /// A uniform value in `range` (`a..b` or `a..=b`). Panics on an empty
    /// range, like [`Rng::gen_range`].
    pub fn range<T, R>(&self, range: R) -> T
    where
        T: SampleUniform,
        R: SampleRange<T>,
    {
        self.lock().gen_range(range)
    }

    /// `true` with probability `p` (clamped to `0.0..=1.0`; NaN is `false`).
    pub fn chance(&self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.lock().gen_bool(p)
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&self) -> u64 {
        self.lock().next_u64()
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&self, buf: &mut [u8]) {
        self.lock().fill_bytes(buf);
    }

    /// `n` random bytes.
    pub fn bytes(&self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// 32 random bytes.
    pub fn bytes32(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }

    /// A random peer identity (32 random bytes).
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.bytes32())
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&self, items: &mut [T]) {
        items.shuffle(&mut *self.lock());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a = SimRng::new(7);
        let b = SimRng::new(7);
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SimRng::new(8).next_u64(), SimRng::new(7).next_u64());
        assert_eq!(a.seed(), 7);
    }

    #[test]
    fn clones_share_one_stream() {
        let a = SimRng::new(1);
        let b = a.clone();
        let x = a.next_u64();
        let y = b.next_u64();
        let fresh = SimRng::new(1);
        assert_eq!(fresh.next_u64(), x);
        assert_eq!(fresh.next_u64(), y);
    }

    #[test]
    fn fork_is_independent_of_draw_position() {
        let a = SimRng::new(3);
        let f1 = a.fork("net").next_u64();
        for _ in 0..10 {
            a.next_u64();
        }
        let f2 = a.fork("net").next_u64();
        assert_eq!(f1, f2);
        assert_ne!(a.fork("net").next_u64(), a.fork("fs").next_u64());
        assert_ne!(a.fork("net").next_u64(), SimRng::new(4).fork("net").next_u64());
        // Nested forks are distinct from flat ones.
        assert_ne!(a.fork("a").fork("b").next_u64(), a.fork("b").next_u64());
        assert_eq!(a.fork("x").seed(), 3);
    }

    #[test]
    fn helpers() {
        let r = SimRng::new(11);
        for _ in 0..100 {
            let v: u32 = r.range(5..10);
            assert!((5..10).contains(&v));
            let w: f64 = r.range(0.0..=1.0);
            assert!((0.0..=1.0).contains(&w));
        }
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        assert!(!r.chance(f64::NAN));
        assert!(r.chance(2.0));
        let hits = (0..1000).filter(|_| r.chance(0.25)).count();
        assert!((150..350).contains(&hits), "{hits}");
        assert_ne!(r.peer_id(), r.peer_id());
        assert_eq!(r.bytes(5).len(), 5);
        let mut v: Vec<u32> = (0..20).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    }
}
