//! Case 7 (issue 11, item 6): games shaped like real ones, every tool timed
//! durably.
//!
//! Trees (`--trees`, default all three):
//! - `many`: generated like a real game's data ([`gen::Shape::real_game`]:
//!   about 16,000 files, sizes log-normal around 4 KiB with a tail up to
//!   24 MiB, 320 directories, dangling symlinks);
//! - `deb`: the data of a real game from a Debian package ([`super::deb`]),
//!   skipped with its reason where apt is not available;
//! - `2gb`: the mixed game of case 1.
//!
//! Every run of every tool: a fresh empty destination; `sync`, the page
//! cache dropped (when permitted), the source and the `lanspread` binary
//! read once, so every tool reads a warm source and writes a cold
//! destination; then the tool, then `sync`. *Returned* is the time until
//! the command returns, *durable* until the `sync` after it returns.
//! Tools: `cp -a`, an rsync daemon on 127.0.0.1, and `lanspread serve` +
//! `lanspread get --no-install` (quinn, loopback), every `lanspread`
//! process with both `RLIMIT_NOFILE` limits at `--nofile` (default 256).
//! The many-file tree is also installed from one zip against `unzip`
//! ([`super::install`]), and one `get` and one install of it are counted
//! with `strace -c -f` ([`super::strace`]).

use super::gen::{self, Game};
use super::measure::{self, Daemon, Finished};
use super::report::Section;
use super::tools::Tools;
use super::{log, loopback, Opts};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RSYNC_PORT: u16 = 18731;
const PORT: u16 = 47934;
/// The transport of `lanspread` in this case (the default one).
pub const TRANSPORT: &str = "quinn";
/// Longest run of one tool.
const TIMEOUT: Duration = Duration::from_secs(900);

/// A tool of case 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `cp -a`.
    Cp,
    /// `rsync -a rsync://127.0.0.1/…`.
    Rsync,
    /// `lanspread get --no-install`.
    Get,
    /// `lanspread install` of the zipped game.
    Install,
    /// `unzip` of the same zip.
    Unzip,
}

impl Tool {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Cp => "cp -a",
            Tool::Rsync => "rsync daemon",
            Tool::Get => "lanspread get",
            Tool::Install => "lanspread install",
            Tool::Unzip => "unzip",
        }
    }
    /// Short name in row titles.
    pub fn short(self) -> &'static str {
        match self {
            Tool::Cp => "cp -a",
            Tool::Rsync => "rsync",
            Tool::Get => "get",
            Tool::Install => "install",
            Tool::Unzip => "unzip",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Tool::Cp => "cp",
            Tool::Rsync => "rsync",
            Tool::Get => "get",
            Tool::Install => "install",
            Tool::Unzip => "unzip",
        }
    }
}

/// One timed run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Until the command returned.
    pub returned: f64,
    /// The `sync` after it.
    pub sync: f64,
    /// CPU seconds of the timed process and its children.
    pub cpu: f64,
    /// Its peak RSS, KiB.
    pub rss: u64,
    /// Serving side (seeder or rsync daemon) during the run: CPU seconds.
    pub peer_cpu: f64,
    /// Serving side: peak RSS, KiB (seeder only: VmHWM reset before the run).
    pub peer_rss: u64,
}

impl Sample {
    /// Until the `sync` after the command returned.
    pub fn durable(&self) -> f64 {
        self.returned + self.sync
    }
}

/// The counted runs of one tool, or why it has none.
#[derive(Debug, Clone)]
pub struct Runs {
    /// The tool.
    pub tool: Tool,
    /// Counted samples.
    pub samples: Vec<Sample>,
    /// The first failure (the tool is not run again after one).
    pub problem: Option<String>,
}

/// What one tree gave.
pub struct TreeResult {
    /// `many`, `deb` or `2gb`.
    pub label: String,
    /// The tree.
    pub game: Game,
    /// Directories in it.
    pub dirs: u64,
    /// Symlinks in it (not copied by lanspread, skipped by the comparison).
    pub links: u64,
    /// Per tool.
    pub runs: Vec<Runs>,
    /// Seconds from starting the seeder to `serving` (scan and hash).
    pub seeder_startup: Option<f64>,
}

/// The context every part of case 7 shares.
pub struct Cx<'a> {
    /// Options.
    pub opts: &'a Opts,
    /// Tools.
    pub tools: &'a Tools,
    /// Scratch folder of the case.
    pub work: PathBuf,
    /// Logs of every process.
    pub logs: PathBuf,
}

impl Cx<'_> {
    /// `prog` with both `RLIMIT_NOFILE` limits at `--nofile` (unchanged with 0).
    pub fn limited(&self, prog: &Path) -> Command {
        let n = self.opts.nofile;
        match (&self.tools.prlimit, n) {
            (_, 0) => Command::new(prog),
            (Some(prlimit), _) => {
                let mut c = Command::new(prlimit);
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(prog);
                c
            }
            (None, _) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$@\""), "sh"]).arg(prog);
                c
            }
        }
    }

    /// `lanspread` (limited) with its config in `work/CFG`.
    pub fn lanspread(&self, cfg: &str) -> Command {
        let mut c = self.limited(&self.opts.bin);
        c.env("LANSPREAD_CONFIG_DIR", self.work.join(cfg));
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "warn");
        }
        c
    }

    /// Before a timed run: `sync`, drop the page cache (when permitted),
    /// read the sources and the binary once (warm source, cold destination).
    pub fn warm_source_cold_destination(&self, sources: &[PathBuf]) -> Result<(), String> {
        measure::settle(self.opts.cold);
        for s in sources {
            if s.is_dir() {
                gen::read_all(s)?;
            } else {
                std::fs::read(s).map_err(|e| format!("{}: {e}", s.display()))?;
            }
        }
        std::fs::read(&self.opts.bin).map_err(|e| format!("{}: {e}", self.opts.bin.display()))?;
        Ok(())
    }

    /// Runs `cmd`, then `sync`, both measured; `peer` is the serving side.
    pub fn timed(&self, tool: Tool, cmd: &mut Command, peer: Option<u32>) -> Result<(Finished, Sample), String> {
        if let Some(p) = peer {
            measure::reset_peak_rss(p);
        }
        let cpu0 = peer.map(measure::cpu_total).unwrap_or(0.0);
        let f = measure::run_measured(tool.slug(), cmd, &self.logs, TIMEOUT)?;
        let s = measure::run_measured("sync", &mut Command::new("sync"), &self.logs, TIMEOUT)?;
        let mut sample = Sample { returned: f.wall, sync: s.wall, cpu: f.cpu, rss: f.peak_rss_kib, ..Sample::default() };
        if let Some(p) = peer {
            // The rsync daemon reaps its per-connection child asynchronously.
            std::thread::sleep(Duration::from_millis(200));
            sample.peer_cpu = measure::cpu_total(p) - cpu0;
            sample.peer_rss = measure::peak_rss_kib(p).unwrap_or(0);
        }
        Ok((f, sample))
    }

    /// Warm-up and counted rounds of `tools`, in an order rotated every
    /// round; `run(tool, verify_bytes)` does one run. A tool that fails is
    /// not run again.
    pub fn rounds(&self, what: &str, tools: &[Tool], mut run: impl FnMut(Tool, bool) -> Result<Sample, String>) -> Vec<Runs> {
        let mut all: Vec<Runs> = tools.iter().map(|t| Runs { tool: *t, samples: Vec::new(), problem: None }).collect();
        let rounds = self.opts.warmup + self.opts.runs;
        for round in 0..rounds {
            let counted = round >= self.opts.warmup;
            for i in 0..all.len() {
                let r = &mut all[(i + round) % tools.len()];
                if r.problem.is_some() {
                    continue;
                }
                match run(r.tool, round == 0) {
                    Ok(s) => {
                        log(&format!(
                            "bench 7 {what}: {} {} {}: returned {:.3} s, durable {:.3} s, cpu {:.2} s, peak RSS {:.0} MiB{}",
                            r.tool.name(),
                            if counted { "run" } else { "warm-up" },
                            round + 1,
                            s.returned,
                            s.durable(),
                            s.cpu,
                            s.rss as f64 / 1024.0,
                            if s.peer_rss > 0 { format!(", seeder peak RSS {:.0} MiB", s.peer_rss as f64 / 1024.0) } else { String::new() }
                        ));
                        if counted {
                            r.samples.push(s);
                        }
                    }
                    Err(e) => {
                        log(&format!("bench 7 {what}: {} failed: {e}", r.tool.name()));
                        r.problem = Some(e);
                    }
                }
            }
        }
        all
    }
}

/// Runs case 7.
pub fn run(opts: &Opts, tools: &Tools) -> Result<Section, String> {
    let work = opts.work().join("real");
    measure::fresh_dir(&work)?;
    let cx = Cx { opts, tools, logs: work.join("logs"), work };
    let mut trees = Vec::new();
    let mut straces = Vec::new();
    let mut install = None;
    for (i, label) in opts.trees.iter().enumerate() {
        let game = match tree_game(opts, label) {
            Ok(g) => g,
            Err(e) => {
                log(&format!("bench 7 {label}: skipped: {e}"));
                trees.push(Err((label.clone(), e)));
                continue;
            }
        };
        log(&format!("bench 7 {label}: {} files, {} bytes in {}", game.files, game.bytes, game.root().display()));
        let port = PORT + i as u16;
        trees.push(tree(&cx, label, &game, port, &mut straces));
        if label == "many" {
            install = Some(super::install::run(&cx, &game, &mut straces));
        }
    }
    Ok(super::real_report::section(&cx, &trees, install.as_ref(), &straces))
}

/// The game of tree `label`.
fn tree_game(opts: &Opts, label: &str) -> Result<Game, String> {
    let scale = if opts.quick { 0.05 } else { 1.0 };
    match label {
        "many" => gen::shaped_game(&opts.data(), "many", &gen::Shape::real_game(scale)),
        "deb" => super::deb::game(opts),
        "2gb" => gen::mixed_game(&opts.data(), "game1", scale),
        other => Err(format!("unknown tree {other:?} (many, deb, 2gb)")),
    }
}

/// Measures every tool on one tree (and, for `many`, counts the syscalls of one `get`).
fn tree(
    cx: &Cx<'_>,
    label: &str,
    game: &Game,
    port: u16,
    straces: &mut Vec<super::strace::Traced>,
) -> Result<TreeResult, (String, String)> {
    let fail = |e: String| (label.to_owned(), e);
    let (dirs, links) = gen::dirs_and_links(&game.root()).map_err(fail)?;
    let seed_dir = cx.work.join(format!("seed-{label}"));
    gen::link_copy(game, &seed_dir).map_err(fail)?;
    let t = std::time::Instant::now();
    let seeder = start_seeder(cx, &seed_dir, label, port);
    let seeder_startup = seeder.is_ok().then(|| t.elapsed().as_secs_f64());
    let rsyncd = match &cx.tools.rsync {
        Some(r) => loopback::start_rsyncd(r, game, &cx.work.join(label), &cx.logs, RSYNC_PORT),
        None => Err("rsync is not installed".into()),
    };
    let peer = |tool: Tool| match tool {
        Tool::Get => seeder.as_ref().ok().map(Daemon::pid),
        Tool::Rsync => rsyncd.as_ref().ok().map(Daemon::pid),
        _ => None,
    };
    let usable = [(Tool::Cp, Ok(())), (Tool::Rsync, rsyncd.as_ref().map(drop)), (Tool::Get, seeder.as_ref().map(drop))];
    let tools: Vec<Tool> = usable.iter().filter(|(_, ok)| ok.is_ok()).map(|(t, _)| *t).collect();
    let mut runs = cx.rounds(label, &tools, |tool, verify| run_one(cx, tool, game, label, port, peer(tool), verify));
    for (tool, ok) in usable {
        if let Err(e) = ok {
            runs.push(Runs { tool, samples: Vec::new(), problem: Some(e.clone()) });
        }
    }
    if label == "many" && seeder.is_ok() {
        straces.push(trace_get(cx, game, label, port));
    }
    drop((seeder, rsyncd));
    Ok(TreeResult { label: label.to_owned(), game: game.clone(), dirs, links, runs, seeder_startup })
}

fn start_seeder(cx: &Cx<'_>, dir: &Path, label: &str, port: u16) -> Result<Daemon, String> {
    let mut cmd = cx.lanspread(&format!("cfg-seed-{label}"));
    cmd.arg("serve").arg("--games").arg(dir).args(["--listen", &format!("127.0.0.1:{port}"), "--transport", TRANSPORT, "--no-mdns"]);
    let mut d = Daemon::spawn(&format!("seed-{label}"), &mut cmd, &cx.logs)?;
    d.wait_line("serving", TIMEOUT)?;
    Ok(d)
}

/// `lanspread get ID --no-install` into `dst` from the seeder on `port`.
fn get_cmd(cx: &Cx<'_>, game: &Game, label: &str, port: u16, dst: &Path) -> Result<Command, String> {
    std::fs::copy(game.dir.join("catalog.toml"), dst.join("catalog.toml")).map_err(|e| format!("catalog: {e}"))?;
    let mut cmd = cx.lanspread(&format!("cfg-get-{label}"));
    cmd.args(["get", &game.id, "--games"]).arg(dst).args(["--no-install", "--json", "--wait", "60", "--transport", TRANSPORT]);
    cmd.args(["--peer", &format!("127.0.0.1:{port}"), "--no-mdns", "--listen", "127.0.0.1:0"]);
    Ok(cmd)
}

fn run_one(cx: &Cx<'_>, tool: Tool, game: &Game, label: &str, port: u16, peer: Option<u32>, verify: bool) -> Result<Sample, String> {
    let dst = cx.work.join(format!("dst-{label}-{}", tool.slug()));
    measure::fresh_dir(&dst)?;
    let mut cmd = match tool {
        Tool::Cp => {
            let mut c = Command::new("cp");
            c.arg("-a").arg(game.root()).arg(&dst);
            c
        }
        Tool::Rsync => {
            let mut c = Command::new("rsync");
            c.args(["-a", &format!("rsync://127.0.0.1:{RSYNC_PORT}/bench/{}", game.id)]).arg(format!("{}/", dst.display()));
            c
        }
        Tool::Get => get_cmd(cx, game, label, port, &dst)?,
        Tool::Install | Tool::Unzip => return Err(format!("{} is not a tool of a tree", tool.name())),
    };
    cx.warm_source_cold_destination(&[game.root()])?;
    let (f, sample) = cx.timed(tool, &mut cmd, peer)?;
    if tool == Tool::Get {
        loopback::parse_get_json(&f.stdout)?;
    }
    gen::compare(&game.root(), &dst.join(&game.id), verify)?;
    let _ = std::fs::remove_dir_all(&dst);
    Ok(sample)
}

/// One `get` of the tree under `strace -c -f`.
fn trace_get(cx: &Cx<'_>, game: &Game, label: &str, port: u16) -> super::strace::Traced {
    let dst = cx.work.join(format!("dst-{label}-strace"));
    let r = measure::fresh_dir(&dst).and_then(|()| get_cmd(cx, game, label, port, &dst)).and_then(|cmd| {
        cx.warm_source_cold_destination(&[game.root()])?;
        let counts = super::strace::count(cx, &format!("get-{label}"), &cmd)?;
        gen::compare(&game.root(), &dst.join(&game.id), false)?;
        Ok(counts)
    });
    let _ = std::fs::remove_dir_all(&dst);
    super::strace::Traced { what: format!("`lanspread get` of the {label} tree (downloader)"), counts: r }
}
