//! `cargo xtask bench`.

use std::path::Path;

/// Entry point.
pub fn run(_root: &Path, _args: &[String]) -> Result<(), String> {
    Err("bench: the benchmark harness is not built yet".into())
}
