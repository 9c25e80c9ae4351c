//! `cargo xtask lan`: namespaced-LAN end-to-end tests.

use std::path::Path;

/// Entry point.
pub fn run(_root: &Path, _args: &[String]) -> Result<(), String> {
    Err("lan: the namespaced LAN harness is not built yet".into())
}
