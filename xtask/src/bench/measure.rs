//! Timing processes, sampling their memory and CPU from /proc, and the
//! page-cache and statistics helpers every case shares.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`, 100 on Linux).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// State and CPU of a process from /proc/PID/stat: (state, own user+system
/// seconds, user+system seconds of its reaped children).
fn proc_stat(pid: u32) -> Option<(char, f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14-17 of stat(5): utime stime cutime cstime (index 11.. after the state).
    Some((state, (n(11) + n(12)) / clk_tck(), (n(13) + n(14)) / clk_tck()))
}

/// CPU seconds of a live process, its threads and its reaped children.
pub fn cpu_total(pid: u32) -> f64 {
    proc_stat(pid).map(|(_, own, kids)| own + kids).unwrap_or(0.0)
}

/// Peak resident set (VmHWM) of a live process, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// UDP datagrams dropped because a socket's receive buffer was full, in
/// this network namespace so far (RcvbufErrors of /proc/net/snmp).
pub fn udp_rcvbuf_errors() -> u64 {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(head), Some(vals)) = (lines.next(), lines.next()) else { return 0 };
    head.split_whitespace().zip(vals.split_whitespace()).find(|(k, _)| *k == "RcvbufErrors").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// Resets a process's peak RSS to its current RSS (`echo 5 > clear_refs`).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Whether this process may drop the page cache (root, writable /proc).
pub fn can_drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// `sync`, then drop the page cache if `cold`.
pub fn settle(cold: bool) {
    let _ = Command::new("sync").status();
    if cold {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
}

/// How a measured process ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Wall seconds from spawn to exit (±5 ms: exit is polled).
    pub wall: f64,
    /// Peak RSS (VmHWM, last sample before exit), KiB.
    pub peak_rss_kib: u64,
    /// CPU seconds of the process, its threads and its waited-for children.
    pub cpu: f64,
    /// Its stdout.
    pub stdout: String,
    /// Seconds from spawn until it first wrote to stdout (polled like the
    /// exit): when a `get --json` printed its result, before it lingers to
    /// serve the swarm.
    pub first_output: Option<f64>,
    /// (seconds since spawn, rchar, wchar) from /proc/PID/io, every ~10 ms.
    pub io: Vec<(f64, u64, u64)>,
}

/// (rchar, wchar) of a live process: bytes through read/write-like file syscalls.
fn proc_io(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<u64>().ok());
    Some((field("rchar:")?, field("wchar:")?))
}

/// Where a download's wall time went, from the I/O samples of `get`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Spawn → first data written (start-up, discovery, manifest, file creation).
    pub before: f64,
    /// First → last data written (the transfer).
    pub transfer: f64,
    /// Last data written → re-reading starts, or exit when nothing is read back (commit: the last fsyncs).
    pub commit: f64,
    /// The re-read of the downloaded files (post-download scan).
    pub rescan: f64,
    /// The rest, until exit.
    pub after: f64,
}

impl Finished {
    /// Splits the wall time by what the process was doing: writing the
    /// download (wchar growing), then reading it back (rchar growing).
    pub fn phases(&self) -> Option<Phases> {
        const STEP: u64 = 256 * 1024;
        let grew = |i: usize, f: fn(&(f64, u64, u64)) -> u64| i > 0 && f(&self.io[i]).saturating_sub(f(&self.io[i - 1])) >= STEP;
        let w: Vec<usize> = (0..self.io.len()).filter(|&i| grew(i, |x| x.2)).collect();
        let (w0, w1) = (*w.first()?, *w.last()?);
        let r: Vec<usize> = (w1 + 1..self.io.len()).filter(|&i| grew(i, |x| x.1)).collect();
        let t = |i: usize| self.io[i].0;
        // A sample marks the end of an interval in which the counter grew.
        let start = t(w0 - 1);
        Some(match (r.first(), r.last()) {
            (Some(&a), Some(&b)) => {
                let (r0, r1) = (t(a - 1), t(b));
                Phases { before: start, transfer: t(w1) - start, commit: r0 - t(w1), rescan: r1 - r0, after: self.wall - r1 }
            }
            // Nothing read back: everything after the last write is the commit and the exit.
            _ => Phases { before: start, transfer: t(w1) - start, commit: self.wall - t(w1), rescan: 0.0, after: 0.0 },
        })
    }
}

/// Runs `cmd` to completion with stdout/stderr in `logs/NAME.*`, measuring
/// wall time, peak RSS and CPU; fails if it fails or takes over `timeout`.
pub fn run_measured(name: &str, cmd: &mut Command, logs: &Path, timeout: Duration) -> Result<Finished, String> {
    std::fs::create_dir_all(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let (out, err) = (logs.join(format!("{name}.stdout")), logs.join(format!("{name}.stderr")));
    let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    cmd.stdin(Stdio::null()).stdout(file(&out)?).stderr(file(&err)?);
    let shown = show(cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("starting {shown}: {e}"))?;
    let pid = child.id();
    let mut peak = 0;
    let mut cpu = 0.0;
    let mut wall = None;
    let mut io = Vec::new();
    let mut next_io = 0.0;
    let mut first_output = None;
    let status = loop {
        if first_output.is_none() && std::fs::metadata(&out).is_ok_and(|m| m.len() > 0) {
            first_output = Some(started.elapsed().as_secs_f64());
        }
        // A zombie still shows its final CPU times; read them before reaping.
        match proc_stat(pid) {
            Some(('Z', own, kids)) => {
                wall.get_or_insert(started.elapsed().as_secs_f64());
                cpu = own + kids;
            }
            Some(_) => {
                if let Some(k) = peak_rss_kib(pid) {
                    peak = peak.max(k);
                }
                let now = started.elapsed().as_secs_f64();
                if now >= next_io {
                    if let Some((r, w)) = proc_io(pid) {
                        io.push((now, r, w));
                    }
                    next_io = now + 0.01;
                }
            }
            None => {}
        }
        if let Some(s) = child.try_wait().map_err(|e| format!("{name}: {e}"))? {
            break s;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{shown} did not finish within {} s\n{}", timeout.as_secs(), tail(&err, 15)));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = wall.unwrap_or_else(|| started.elapsed().as_secs_f64());
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    if !status.success() {
        return Err(format!("{shown} failed ({status})\n{}", tail(&err, 15)));
    }
    Ok(Finished { wall, peak_rss_kib: peak, cpu, stdout, io, first_output })
}

/// A long-running process (a seeder, a daemon), stopped when dropped.
pub struct Daemon {
    /// Name in messages and log files.
    pub name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with its output in `logs/NAME.*`.
    pub fn spawn(name: &str, cmd: &mut Command, logs: &Path) -> Result<Daemon, String> {
        std::fs::create_dir_all(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let (out, err) = (logs.join(format!("{name}.stdout")), logs.join(format!("{name}.stderr")));
        let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        cmd.stdin(Stdio::null()).stdout(file(&out)?).stderr(file(&err)?);
        let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", show(cmd)))?;
        Ok(Daemon { name: name.to_owned(), child, out, err })
    }

    /// Its pid (`ip netns exec` execs the program, so this is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line containing `needle`; fails if it exits first.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return Ok(l.to_owned());
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                return Err(format!("{} exited ({s}) before printing {needle:?}\n{}", self.name, tail(&self.err, 15)));
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not print {needle:?} within {} s\n{}", self.name, timeout.as_secs(), tail(&self.err, 15)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until something listens on TCP `port` (in namespace `ns`, if any).
    pub fn wait_tcp_port(&mut self, port: u16, ns: Option<&str>, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut cmd = match ns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "ss"]);
                    c
                }
                None => Command::new("ss"),
            };
            let out = cmd.args(["-Hltn", &format!("sport = :{port}")]).output();
            if out.is_ok_and(|o| !o.stdout.is_empty()) {
                return Ok(());
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                return Err(format!("{} exited ({s}) before listening on {port}\n{}", self.name, tail(&self.err, 15)));
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not listen on port {port} within {} s", self.name, timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).output();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` non-empty lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(|l| l.rsplit('\r').next().unwrap_or(l)).filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| format!("  | {l}\n")).collect()
}

/// A command as a shell-like line.
pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Runs a command, returning its stdout; the error carries its stderr.
pub fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{}: {e}", show(cmd)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed ({}): {}", show(cmd), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs a command for its effect.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    output(cmd).map(drop)
}

/// Median (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Min and max.
pub fn span(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// `rm -rf` then `mkdir -p`.
pub fn fresh_dir(p: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {}: {e}", p.display())),
    }
    std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))
}
