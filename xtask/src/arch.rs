//! The dependency rule of the hexagonal workspace, checked from `cargo metadata`
//! and from the sources of `core` and of the `lanspread` library.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Crates `core` may depend on besides `lanspread-ports`: pure, no IO, no runtime.
const CORE_ALLOWED: &[&str] = &[
    "lanspread-ports",
    "async-trait",
    "bytes",
    "serde",
    "serde_json",
    "postcard",
    "thiserror",
    "toml",
    "blake3",
    "hex",
    "caseless",
    "unicode-normalization",
];
/// Crates `ports` may depend on.
const PORTS_ALLOWED: &[&str] = &["async-trait", "bytes", "serde", "thiserror", "hex"];
/// Support crates adapters may share (not adapters of a port themselves).
const ADAPTER_SUPPORT: &[&str] = &["lanspread-tls"];
/// Text that must never appear in core's sources.
const CORE_FORBIDDEN_TEXT: &[&str] =
    &["std::fs", "std::net::Tcp", "std::net::Udp", "Instant::now", "SystemTime::now", "tokio", "std::thread"];

/// The library crate of the app layer: the runtime and the builder.
const LIBRARY: &str = "lanspread";
/// Its sources.
const LIBRARY_SRC: &str = "app/lanspread/src";
/// CLI machinery the library must not depend on (it belongs to `lanspread-cli`).
const LIBRARY_FORBIDDEN_DEPS: &[&str] = &["clap", "indicatif", "tracing-subscriber", "directories", "anyhow"];
/// Adapter crates the library names only in its builder.
const ADAPTER_CRATES: &[&str] =
    &["lanspread_quinn", "lanspread_s2n", "lanspread_mdns", "lanspread_capfs", "lanspread_tls", "lanspread_unpack", "lanspread_clock"];
/// The one module of the library that may name them.
const LIBRARY_BUILDER: &str = "builder.rs";
/// Lock types: the library's peer state is owned by the peer machine, so a
/// lock may guard IO resources only.
const LOCKS: &[&str] = &["Mutex", "RwLock"];
/// The library's files whose locks guard IO resources: the connection pool,
/// the game directory and scan index, the task registry, the first event
/// subscription, the write turns of one download's files, the game
/// directory's file lock, and the server's admission state (one
/// connection's handshake, one host's recent party-key attempts), and
/// the units running downloads verified on disk (`swarm.rs`).
const LOCKS_ALLOWED_IN: &[&str] = &[
    "runtime/pool.rs",
    "runtime/swarm.rs",
    "runtime/local.rs",
    "runtime/ctx.rs",
    "peer.rs",
    "runtime/download.rs",
    "builder.rs",
    "builder/rebind.rs",
    "runtime/server.rs",
];

/// The one file with `unsafe` code (glibc's `mallopt`, see its docs); every
/// other crate forbids it through the workspace's lints.
const UNSAFE_ALLOWED_IN: &str = "app/cli/src/alloc.rs";
/// What `unsafe` code looks like (spelled in two parts so that this line
/// is not a match itself).
const UNSAFE_FORMS: [&str; 3] = [concat!("unsafe", " {"), concat!("unsafe", " fn"), concat!("unsafe", " impl")];
/// Source trees searched for `unsafe`.
const SOURCE_TREES: &[&str] = &["ports", "core", "adapters", "app", "testkit", "xtask"];

#[derive(Debug)]
struct Pkg {
    name: String,
    layer: String,
    deps: Vec<(String, String)>, // (name, kind)
}

fn packages(root: &Path) -> Result<Vec<Pkg>, String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let meta: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let ws = meta["workspace_root"].as_str().unwrap_or_default().to_owned();
    let mut pkgs = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let manifest = p["manifest_path"].as_str().unwrap_or_default();
        let rel = manifest.strip_prefix(&ws).unwrap_or(manifest).trim_start_matches('/');
        let layer = rel.split('/').next().unwrap_or_default().to_owned();
        let deps = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["name"].as_str().unwrap_or_default().to_owned(), d["kind"].as_str().unwrap_or("normal").to_owned()))
            .collect();
        pkgs.push(Pkg { name: p["name"].as_str().unwrap_or_default().to_owned(), layer, deps });
    }
    Ok(pkgs)
}

/// All violations of the rule.
pub fn violations(root: &Path) -> Result<Vec<String>, String> {
    let pkgs = packages(root)?;
    let adapters: Vec<&str> = pkgs.iter().filter(|p| p.layer == "adapters").map(|p| p.name.as_str()).collect();
    let layer_of: BTreeMap<&str, &str> = pkgs.iter().map(|p| (p.name.as_str(), p.layer.as_str())).collect();
    let mut v = Vec::new();
    for p in &pkgs {
        for (dep, kind) in &p.deps {
            let normal = kind == "normal" || kind == "build";
            if dep == "lanspread-testkit" && normal {
                v.push(format!("{} depends on lanspread-testkit outside dev-dependencies: testkit is only a dev-dependency", p.name));
            }
            if p.name == LIBRARY && normal && LIBRARY_FORBIDDEN_DEPS.contains(&dep.as_str()) {
                v.push(format!("{LIBRARY} depends on {dep}: the library holds no CLI machinery (that is lanspread-cli's)"));
            }
            match p.layer.as_str() {
                "ports" if normal && !PORTS_ALLOWED.contains(&dep.as_str()) => v.push(format!(
                    "ports: {} depends on {dep}: ports holds traits and plain types and depends on no runtime, IO or lanspread crate",
                    p.name
                )),
                "core" if normal && !CORE_ALLOWED.contains(&dep.as_str()) => v.push(format!(
                    "core: {} depends on {dep}: core depends only on ports and pure crates ({})",
                    p.name,
                    CORE_ALLOWED.join(", ")
                )),
                "adapters" if normal => {
                    if adapters.contains(&dep.as_str()) && !ADAPTER_SUPPORT.contains(&dep.as_str()) {
                        v.push(format!("adapters: {} depends on adapter {dep}: adapters never depend on each other", p.name));
                    }
                    if matches!(layer_of.get(dep.as_str()), Some(&"core") | Some(&"app") | Some(&"testkit")) {
                        v.push(format!("adapters: {} depends on {dep}: adapters know only ports (and their own library)", p.name));
                    }
                }
                _ => {}
            }
        }
        if p.layer == "adapters" && ADAPTER_SUPPORT.contains(&p.name.as_str()) {
            for (dep, kind) in &p.deps {
                if kind == "normal" && layer_of.contains_key(dep.as_str()) && dep != "lanspread-ports" {
                    v.push(format!("{}: a support crate depends only on ports, not on {dep}", p.name));
                }
            }
        }
    }
    // Sources of core: no IO, no clock, no runtime, even through a full path.
    for (path, n, code) in code_lines(&root.join("core/src")) {
        for bad in CORE_FORBIDDEN_TEXT {
            if code.contains(bad) {
                v.push(format!("{}:{n}: core mentions `{bad}`: core does no IO and reads no clock", path.display()));
            }
        }
    }
    // Sources of the library: only the builder names adapter crates, and
    // no lock guards peer state.
    let builder = root.join(LIBRARY_SRC).join(LIBRARY_BUILDER);
    // The builder's own submodules (`builder/…`) choose adapters too.
    let builder_dir = builder.with_extension("");
    let lock_ok: Vec<_> = LOCKS_ALLOWED_IN.iter().map(|f| root.join(LIBRARY_SRC).join(f)).collect();
    for (path, n, code) in code_lines(&root.join(LIBRARY_SRC)) {
        if !lock_ok.contains(&path) {
            if let Some(lock) = LOCKS.iter().find(|l| code.contains(**l)) {
                v.push(format!(
                    "{}:{n}: {LIBRARY} uses a `{lock}` outside the files of IO resources: peer state belongs to core::peer::PeerMachine, reached by messages to the driver",
                    path.display()
                ));
            }
        }
        if path == builder || path.starts_with(&builder_dir) {
            continue;
        }
        for adapter in ADAPTER_CRATES {
            if code.contains(adapter) {
                v.push(format!(
                    "{}:{n}: {LIBRARY} mentions `{adapter}` outside {LIBRARY_BUILDER}: only the builder chooses adapters",
                    path.display()
                ));
            }
        }
    }
    v.extend(unsafe_outside_alloc(root));
    v.extend(platform_cfgs(root));
    if !root.join("ARCHITECTURE.md").is_file() {
        v.push("ARCHITECTURE.md is missing".into());
    } else {
        let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
        for p in &pkgs {
            if p.name != "xtask" && !doc.contains(&p.name) {
                v.push(format!("ARCHITECTURE.md's code map does not mention {}", p.name));
            }
        }
    }
    Ok(v)
}

/// Lines with an `unsafe` block, function or impl outside [`UNSAFE_ALLOWED_IN`].
fn unsafe_outside_alloc(root: &Path) -> Vec<String> {
    let allowed = root.join(UNSAFE_ALLOWED_IN);
    let mut v = Vec::new();
    for tree in SOURCE_TREES {
        for (path, n, code) in code_lines(&root.join(tree)) {
            let unsafe_code = UNSAFE_FORMS.iter().any(|u| code.contains(u));
            if unsafe_code && path != allowed && !path.components().any(|c| c.as_os_str() == "target") {
                v.push(format!("{}:{n}: `unsafe` outside {UNSAFE_ALLOWED_IN}: the workspace has one audited unsafe call", path.display()));
            }
        }
    }
    v
}

/// Sources that are the same on every platform: what differs between
/// operating systems lives in adapters and at the program's edges.
const PLATFORM_NEUTRAL: [&str; 3] = ["ports/src", "core/src", "app/lanspread/src"];

/// Lines of [`PLATFORM_NEUTRAL`] sources that choose code by platform.
fn platform_cfgs(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for tree in PLATFORM_NEUTRAL {
        for (path, n, code) in code_lines(&root.join(tree)) {
            let chooses = code.contains("cfg") && ["unix", "windows", "target_os", "target_family"].iter().any(|p| code.contains(p));
            if chooses {
                v.push(format!("{}:{n}: a platform `cfg` in {tree}: platform code belongs in an adapter or the program", path.display()));
            }
        }
    }
    v
}

/// Every line of the Rust sources beneath `dir` (path, 1-based line number,
/// the text before any `//`), files in a stable order.
fn code_lines(dir: &Path) -> Vec<(std::path::PathBuf, usize, String)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            out.push((path.clone(), n + 1, line.split("//").next().unwrap_or("").to_owned()));
        }
    }
    out
}

/// `cargo xtask arch`.
pub fn run(root: &Path) -> Result<(), String> {
    let v = violations(root)?;
    if v.is_empty() {
        eprintln!("arch: dependency rule holds");
        Ok(())
    } else {
        for line in &v {
            eprintln!("arch: {line}");
        }
        Err(format!("{} architecture violation(s)", v.len()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dependency_rule_holds() {
        let v = super::violations(&crate::root()).unwrap();
        assert!(v.is_empty(), "architecture violations:\n{}", v.join("\n"));
    }
}
