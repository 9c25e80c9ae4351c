//! Processes started in the hosts' namespaces, with their logs in files.
//! Every process is killed when its [`Procs`] is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One spawned process.
pub struct Proc {
    /// Name used in messages and log file names, e.g. `h1-serve`.
    pub name: String,
    child: Child,
    started: Instant,
    ended: Option<Instant>,
    status: Option<ExitStatus>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Its exit status, if it has exited (never blocks).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                self.ended = Some(Instant::now());
            }
        }
        self.status
    }

    /// Seconds from its start to its exit (or to now).
    pub fn secs(&self) -> f64 {
        self.ended.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64()
    }

    /// Waits for it to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.poll() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not exit within {:.0} s", self.name, timeout.as_secs_f64()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a stdout line containing `needle`, failing early if it exits.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stdout().lines().find(|l| l.contains(needle)) {
                return Ok(l.to_owned());
            }
            if let Some(s) = self.poll() {
                return Err(format!("{} exited ({s}) before printing {needle:?}", self.name));
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not print {needle:?} within {:.0} s", self.name, timeout.as_secs_f64()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if self.poll().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
            self.ended = Some(Instant::now());
        }
    }

    /// SIGTERM, then wait; returns the exit status (SIGKILL after `grace`).
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, String> {
        if let Some(s) = self.poll() {
            return Err(format!("{} had already exited ({s})", self.name));
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).output();
        match self.wait(grace) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.kill();
                Err(format!("{e} after SIGTERM (killed)"))
            }
        }
    }

    fn tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for (what, path) in [("stdout", &self.out), ("stderr", &self.err)] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // Progress bars redraw with \r; keep the last state of each line.
            let all: Vec<&str> = text.lines().map(|l| l.rsplit('\r').next().unwrap_or(l)).filter(|l| !l.trim().is_empty()).collect();
            let from = all.len().saturating_sub(lines);
            s.push_str(&format!("  --- {} {what} ({}; last {} of {} lines)\n", self.name, path.display(), all.len() - from, all.len()));
            for l in &all[from..] {
                s.push_str(&format!("  | {l}\n"));
            }
        }
        s
    }
}

/// The processes of one scenario.
pub struct Procs {
    logs: PathBuf,
    list: Vec<Proc>,
}

impl Procs {
    /// Logs go to `logs/NAME.stdout` and `logs/NAME.stderr`.
    pub fn new(logs: &Path) -> Result<Procs, String> {
        std::fs::create_dir_all(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        Ok(Procs { logs: logs.to_path_buf(), list: Vec::new() })
    }

    /// Starts `bin args…` in namespace `ns` with `env`; returns its index.
    pub fn spawn(&mut self, name: &str, ns: &str, bin: &Path, args: &[String], env: &[(&str, &Path)]) -> Result<usize, String> {
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the program: the child's pid is the program's.
        cmd.args(["netns", "exec", ns]).arg(bin).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.spawn_command(name, cmd)
    }

    /// Starts `cmd` as process `name`, its output in the logs (and
    /// `RUST_LOG=info` unless set); returns its index.
    pub fn spawn_command(&mut self, name: &str, mut cmd: Command) -> Result<usize, String> {
        let out = self.logs.join(format!("{name}.stdout"));
        let err = self.logs.join(format!("{name}.stderr"));
        let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        cmd.stdin(Stdio::null()).stdout(file(&out)?).stderr(file(&err)?);
        if std::env::var_os("RUST_LOG").is_none() && cmd.get_envs().all(|(k, _)| k != "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        std::fs::write(self.logs.join(format!("{name}.cmd")), format!("{}\n", super::show(&cmd))).map_err(|e| format!("log: {e}"))?;
        let child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        self.list.push(Proc { name: name.to_owned(), child, started: Instant::now(), ended: None, status: None, out, err });
        Ok(self.list.len() - 1)
    }

    /// Process `i`.
    pub fn get(&mut self, i: usize) -> &mut Proc {
        &mut self.list[i]
    }

    /// The last `lines` lines of every process's logs.
    pub fn tails(&self, lines: usize) -> String {
        self.list.iter().map(|p| p.tail(lines)).collect()
    }

    /// Kills every process still running.
    pub fn kill_all(&mut self) {
        for p in &mut self.list {
            p.kill();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}
