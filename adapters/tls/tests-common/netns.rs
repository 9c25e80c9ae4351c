//! Running one test inside a private network namespace (`unshare -n`),
//! where it may create interfaces without touching the machine's network.
//! Shared by the adapter tests (included with `#[path = ...] mod netns;`).

#![allow(dead_code)]

use std::process::Command;

const INSIDE: &str = "LANSPREAD_TEST_IN_NETNS";

/// Runs `ip ARGS` (inside the namespace), panicking on failure.
pub fn ip(args: &str) {
    let out = Command::new("ip").args(args.split_whitespace()).output();
    assert!(matches!(&out, Ok(o) if o.status.success()), "`ip {args}` failed: {out:?}");
}

/// The index of interface `name`, from `ip -o link show NAME`.
pub fn ifindex(name: &str) -> u32 {
    let out = Command::new("ip").args(["-o", "link", "show", name]).output().expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':').next().and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no index of {name} in {text:?}"))
}

/// Runs `name` (this very test) again in a private network namespace with
/// loopback up, then runs each `setup` line as `ip LINE` in there. Returns
/// `true` when the caller is inside and must do the work; `false` when the
/// test ran (and passed) in the namespace, or no namespace can be made here
/// (the test then reports that it was skipped, and passes).
pub fn inside_private_netns(name: &str, setup: &[&str]) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        ip("link set lo up");
        for line in setup {
            ip(line);
        }
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED {name}: cannot run `unshare`: {e}");
            return false;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("unshare failed") {
        eprintln!("SKIPPED {name}: no private network namespace here: {}", stderr.trim());
        return false;
    }
    assert!(out.status.success(), "{name} failed in its network namespace:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{name} did not run in its network namespace:\n{stdout}\n{stderr}");
    false
}

/// `setup` lines for a veth pair `v0`/`v1`, both up with multicast, with
/// fixed link-local addresses `fe80::a` and `fe80::b` (no duplicate address
/// detection, so they are usable at once) and IPv4 10.99.0.1 / 10.99.0.2.
pub const VETH_PAIR: &[&str] = &[
    "link add v0 type veth peer name v1",
    "link set v0 multicast on up",
    "link set v1 multicast on up",
    "addr add fe80::a/64 dev v0 nodad",
    "addr add fe80::b/64 dev v1 nodad",
    "addr add 10.99.0.1/24 dev v0",
    "addr add 10.99.0.2/24 dev v1",
];
