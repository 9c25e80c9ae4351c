//! Crash-safe transactions (in progress).
