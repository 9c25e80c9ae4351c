//! The allocator's tuning for a long-running seeder.
//!
//! A seeder's large buffers (the megabyte pieces it reads and sends) are
//! allocated and freed on many threads. glibc gives each thread of a busy
//! process its own arena (up to eight per core) and keeps freed buffers
//! cached in the arena that allocated them, where other threads cannot
//! reuse them: a seeder serving sixteen downloaders peaked at 114–133 MiB.
//! With two arenas the threads share what was freed.
//!
//! Not a fixed mmap threshold, which returns every large buffer to the
//! system at once: it peaked lower (87–95 MiB) but made each new buffer
//! fresh memory to fault in, and the swarm of case 8 was slower with it
//! (`BENCHMARKS.md`, "A seeder's memory serving 16 downloaders").

/// Arenas the process may use: two, so that one thread holding an arena's
/// lock does not stall the others, and freed buffers are still shared.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Applies the tuning; call before any thread starts. Only `serve` does: a
/// `get` lives for one download.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: `mallopt` only changes a parameter of the allocator; it is
    // called once, before any other thread exists, with a valid value for
    // M_ARENA_MAX. A refusal (0) leaves glibc's default, which is
    // harmless, so the result is not checked.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
}

/// Other platforms' allocators keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
