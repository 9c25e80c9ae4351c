//! Case 7, install: the many-file tree shipped as one zip beside its
//! `version.ini` (the usual layout of a game here). `lanspread install`
//! (unpacks into `local/`, durable before it returns) against `unzip`
//! into an empty folder, both followed by a timed `sync`, with the same
//! protocol as the trees (warm zip, cold destination).

use super::gen::{self, Game};
use super::measure;
use super::real::{Cx, Runs, Tool};
use super::strace::{self, Traced};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What the install part gave.
pub struct InstallResult {
    /// The zipped game (its root holds `version.ini` and `ID.zip`).
    pub game: Game,
    /// Entries in the zip.
    pub entries: u64,
    /// Bytes unpacked.
    pub unpacked: u64,
    /// `lanspread install` and `unzip`.
    pub runs: Vec<Runs>,
}

/// Runs the install comparison on the zip of `many` (and counts the syscalls of one install).
pub fn run(cx: &Cx<'_>, many: &Game, straces: &mut Vec<Traced>) -> Result<InstallResult, String> {
    let game = gen::zipped_game(&cx.opts.data(), many, "manyzip")?;
    let dir = cx.work.join("install");
    gen::link_copy(&game, &dir)?;
    let root = dir.join(&game.id);
    let zip = root.join(format!("{}.zip", game.id));
    // The scan index a downloaded game has: the install does not hash the zip again.
    measure::run_measured(
        "status-install",
        cx.lanspread("cfg-install").args(["status", "--games"]).arg(&dir),
        &cx.logs,
        Duration::from_secs(600),
    )?;
    let dst = cx.work.join("dst-unzip");
    let tools: &[Tool] = if cx.tools.unzip.is_some() { &[Tool::Install, Tool::Unzip] } else { &[Tool::Install] };
    let mut runs = cx.rounds("install", tools, |tool, verify| {
        let local = match tool {
            Tool::Install => root.join("local"),
            _ => dst.clone(),
        };
        clear(&local)?;
        let mut cmd = match tool {
            Tool::Install => install_cmd(cx, &game.id, &dir),
            _ => unzip_cmd(cx, &zip, &dst),
        };
        cx.warm_source_cold_destination(std::slice::from_ref(&zip))?;
        let (_, sample) = cx.timed(tool, &mut cmd, None)?;
        gen::compare_except(&many.root(), &local, verify, &["local", "version.ini"])?;
        Ok(sample)
    });
    if cx.tools.unzip.is_none() {
        runs.push(Runs { tool: Tool::Unzip, samples: Vec::new(), problem: Some("unzip is not installed".into()) });
    }
    if cx.tools.strace.is_some() {
        let _ = clear(&root.join("local"));
        let r = cx
            .warm_source_cold_destination(std::slice::from_ref(&zip))
            .and_then(|()| strace::count(cx, "install-many", &install_cmd(cx, &game.id, &dir)));
        straces.push(Traced { what: "`lanspread install` of the zipped many-file tree".into(), counts: r });
    }
    let _ = clear(&root.join("local"));
    let _ = clear(&dst);
    let files = gen::regular_files(&many.root(), &["local", "version.ini"])?;
    let unpacked = files.iter().map(|f| std::fs::symlink_metadata(many.root().join(f)).map_or(0, |m| m.len())).sum();
    Ok(InstallResult { game, entries: files.len() as u64, unpacked, runs })
}

fn install_cmd(cx: &Cx<'_>, id: &str, dir: &Path) -> Command {
    let mut c = cx.lanspread("cfg-install");
    c.args(["install", id, "--games"]).arg(dir);
    c
}

fn unzip_cmd(cx: &Cx<'_>, zip: &Path, dst: &Path) -> Command {
    let mut c = Command::new(cx.tools.unzip.clone().unwrap_or_else(|| "unzip".into()));
    c.args(["-q", "-o"]).arg(zip).arg("-d").arg(dst);
    c
}

/// Removes `dir` (an installation or an unzip destination) before a run.
fn clear(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}
