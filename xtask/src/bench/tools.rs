//! The baseline tools: found on PATH, installed with apt-get when running as
//! root on Debian, or reported missing (their baseline is then skipped).

use super::{log, measure, Opts};
use std::path::PathBuf;
use std::process::Command;

/// What was found, and versions for the report.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// rsync.
    pub rsync: Option<PathBuf>,
    /// aria2c.
    pub aria2c: Option<PathBuf>,
    /// nginx.
    pub nginx: Option<PathBuf>,
    /// `ip` and `tc` (iproute2) both present.
    pub iproute2: bool,
    /// perf (profiling, case 6).
    pub perf: Option<PathBuf>,
    /// unzip (case 7, install baseline).
    pub unzip: Option<PathBuf>,
    /// strace (case 7, syscall counts).
    pub strace: Option<PathBuf>,
    /// prlimit (case 7, `RLIMIT_NOFILE` of lanspread; else `sh -c ulimit`).
    pub prlimit: Option<PathBuf>,
    /// qbittorrent-nox (case 8, the BitTorrent baseline).
    pub qbittorrent: Option<PathBuf>,
    /// mktorrent (case 8, makes its .torrent).
    pub mktorrent: Option<PathBuf>,
    /// curl (case 8, qBittorrent's Web API).
    pub curl: Option<PathBuf>,
    /// Human-readable tool versions.
    pub versions: Vec<(String, String)>,
    /// Messages about missing tools.
    pub missing: Vec<String>,
}

/// Finds `name` on PATH (plus the sbin folders, where Debian keeps ip/tc/nginx).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn first_line(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_owned()
        }
        Err(_) => String::new(),
    }
}

/// Finds the tools the chosen cases need, installing missing Debian packages when root.
pub fn ensure(opts: &Opts) -> Result<Tools, String> {
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if opts.wants(1) {
        wanted.push(("rsync", "rsync"));
    }
    if opts.wants(7) {
        wanted.extend([("rsync", "rsync"), ("unzip", "unzip"), ("strace", "strace")]);
    }
    if opts.wants(2) {
        wanted.extend([("aria2c", "aria2"), ("nginx", "nginx"), ("ip", "iproute2"), ("tc", "iproute2"), ("ss", "iproute2")]);
    }
    if opts.wants(8) {
        wanted.extend([
            ("qbittorrent-nox", "qbittorrent-nox"),
            ("mktorrent", "mktorrent"),
            ("curl", "curl"),
            ("ip", "iproute2"),
            ("tc", "iproute2"),
            ("ss", "iproute2"),
        ]);
    }
    let missing: Vec<&str> = wanted.iter().filter(|(b, _)| which(b).is_none()).map(|(_, p)| *p).collect();
    let mut pkgs: Vec<&str> = missing.clone();
    pkgs.sort_unstable();
    pkgs.dedup();
    if !pkgs.is_empty() {
        if crate::lan::is_root() && which("apt-get").is_some() {
            log(&format!("bench: installing {} with apt-get", pkgs.join(" ")));
            let install = |pk: &[&str]| {
                measure::run(
                    Command::new("apt-get")
                        .args(["install", "-y", "-q", "--no-install-recommends"])
                        .args(pk)
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                )
            };
            if install(&pkgs).is_err() {
                let _ = measure::run(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"));
                if let Err(e) = install(&pkgs) {
                    log(&format!("bench: apt-get could not install {}: {e}", pkgs.join(" ")));
                }
            }
        } else {
            log(&format!("bench: missing {} and not root (or no apt-get): those baselines are skipped", pkgs.join(" ")));
        }
    }
    let mut t = Tools {
        rsync: which("rsync"),
        aria2c: which("aria2c"),
        nginx: which("nginx"),
        iproute2: which("ip").is_some() && which("tc").is_some() && which("ss").is_some(),
        perf: which("perf"),
        unzip: which("unzip"),
        strace: which("strace"),
        prlimit: which("prlimit"),
        qbittorrent: which("qbittorrent-nox"),
        mktorrent: which("mktorrent"),
        curl: which("curl"),
        ..Tools::default()
    };
    wanted.sort_unstable();
    wanted.dedup();
    for (bin, pkg) in &wanted {
        if which(bin).is_none() {
            t.missing.push(format!("`{bin}` (Debian package {pkg}) is missing: its baseline is skipped"));
        }
    }
    if let Some(p) = &t.rsync {
        t.versions.push(("rsync".into(), first_line(Command::new(p).arg("--version"))));
    }
    if let Some(p) = &t.aria2c {
        t.versions.push(("aria2c".into(), first_line(Command::new(p).arg("--version"))));
    }
    if let Some(p) = &t.nginx {
        t.versions.push(("nginx".into(), first_line(Command::new(p).arg("-v"))));
    }
    t.versions.push(("cp".into(), first_line(Command::new("cp").arg("--version"))));
    if let Some(p) = &t.perf {
        t.versions.push(("perf".into(), first_line(Command::new(p).arg("--version"))));
    }
    if opts.wants(7) {
        for (name, p, arg) in [("unzip", &t.unzip, "-v"), ("strace", &t.strace, "-V"), ("prlimit", &t.prlimit, "--version")] {
            if let Some(p) = p {
                t.versions.push((name.into(), first_line(Command::new(p).arg(arg))));
            }
        }
    }
    if opts.wants(8) {
        if let Some(p) = &t.qbittorrent {
            let libtorrent = measure::output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "libtorrent-rasterbar2.0"]))
                .map(|v| format!(" / libtorrent-rasterbar {}", v.trim()))
                .unwrap_or_default();
            t.versions.push(("qbittorrent-nox".into(), format!("{}{libtorrent}", first_line(Command::new(p).arg("--version")))));
        }
        if let Some(p) = &t.mktorrent {
            t.versions.push(("mktorrent".into(), first_line(Command::new(p).arg("-h"))));
        }
    }
    for m in &t.missing {
        log(&format!("bench: {m}"));
    }
    Ok(t)
}
