//! `.rar` archives, through an external `unrar` or `unar` program.
//!
//! The archive (and its sibling volumes, for multi-volume sets) is copied
//! from the port into a private temporary directory on the real disk, the
//! tool extracts it into another one, every extracted entry is validated
//! (no link, no special file, a strict portable name), and only then is the
//! content copied beneath the target through the port.

use crate::common::{entry_path, fs_err, run, Ctx};
use crate::ends_with_ci;
use async_trait::async_trait;
use bytes::Bytes;
use lanspread_ports::unpack::UnpackedFile;
use lanspread_ports::{FileKind, Fs, ProgressFn, RelPath, UnpackError, Unpacker};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Extracts `.rar` archives with `unar` (preferred: free, one stable
/// command line) or RARLAB's `unrar`, looked up on the search path when an
/// unpack starts.
#[derive(Debug, Clone, Default)]
pub struct RarUnpacker {
    search_path: Option<OsString>,
    temp_dir: Option<PathBuf>,
}

/// The external programs we know how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Unrar,
    Unar,
}

impl RarUnpacker {
    /// Looks the tools up on `$PATH`; stages in the system temporary directory.
    pub fn new() -> Self {
        RarUnpacker::default()
    }

    /// Looks the tools up in `path` (a `PATH`-style list) instead of `$PATH`.
    pub fn with_search_path(mut self, path: impl Into<OsString>) -> Self {
        self.search_path = Some(path.into());
        self
    }

    /// Stages the archive and its extracted content beneath `dir` instead of
    /// the system temporary directory (pick one on the same disk as the
    /// games when `/tmp` is small).
    pub fn with_temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// The first tool found, `unar` before `unrar`: on the search path,
    /// then (unless a search path was given) next to this program, where a
    /// Windows player drops `unrar.exe` (or `UnRAR.exe`: Windows' names are
    /// caseless).
    fn find_tool(&self) -> Option<(Tool, PathBuf)> {
        let mut dirs: Vec<PathBuf> = match &self.search_path {
            Some(path) => std::env::split_paths(path).collect(),
            None => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
                std::env::split_paths(&path).chain(beside).collect()
            }
        };
        dirs.retain(|d| !d.as_os_str().is_empty());
        find_in(&dirs, std::env::consts::EXE_SUFFIX)
    }
}

/// The first of the tools we drive that `dirs` hold, each named with the
/// platform's executable `suffix` (`.exe` on Windows).
fn find_in(dirs: &[PathBuf], suffix: &str) -> Option<(Tool, PathBuf)> {
    [(Tool::Unar, "unar"), (Tool::Unrar, "unrar")]
        .into_iter()
        .find_map(|(tool, name)| dirs.iter().map(|d| d.join(format!("{name}{suffix}"))).find(|p| is_executable(p)).map(|p| (tool, p)))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file())
}

#[async_trait]
impl Unpacker for RarUnpacker {
    fn handles(&self, file_name: &str) -> bool {
        ends_with_ci(file_name, ".rar")
    }

    async fn unpack(
        &self,
        fs: Arc<dyn Fs>,
        archive: &RelPath,
        target: &RelPath,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<UnpackedFile>, UnpackError> {
        let Some((tool, program)) = self.find_tool() else {
            return Err(UnpackError::MissingTool(MISSING_TOOL.into()));
        };
        let temp_base = self.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let (archive, t) = (archive.clone(), target.clone());
        run(fs, target.clone(), progress, move |ctx| unrar(ctx, &archive, &t, tool, &program, &temp_base)).await
    }
}

/// What a player is told when a RAR game needs a tool we cannot find.
#[cfg(not(windows))]
const MISSING_TOOL: &str = "unrar or unar (install one of them, e.g. the `unrar` or `unar` package) to unpack RAR archives";
#[cfg(windows)]
const MISSING_TOOL: &str = "unrar.exe or unar.exe (put one on PATH or next to lanspread.exe) to unpack RAR archives";

/// Whether `candidate` is another volume of the multi-volume set `archive`
/// (`x.part1.rar` + `x.part2.rar`..., or `x.rar` + `x.r00`, `x.r01`...).
fn is_sibling_volume(archive: &str, candidate: &str) -> bool {
    if archive == candidate {
        return false;
    }
    let (a, c) = (archive.to_ascii_lowercase(), candidate.to_ascii_lowercase());
    let Some(stem) = a.strip_suffix(".rar") else {
        return false;
    };
    if let Some(i) = stem.rfind(".part") {
        let (base, num) = (&stem[..i], &stem[i + 5..]);
        if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
            let Some(rest) = c.strip_prefix(base).and_then(|r| r.strip_prefix(".part")).and_then(|r| r.strip_suffix(".rar")) else {
                return false;
            };
            return !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
        }
    }
    let Some(ext) = c.strip_prefix(stem).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    let b = ext.as_bytes();
    b.len() == 3 && (b[0] == b'r' || b[0] == b's') && b[1].is_ascii_digit() && b[2].is_ascii_digit()
}

/// Copies `src` (in the port) to the real file `dst`.
fn copy_out(ctx: &Ctx, src: &RelPath, dst: &Path) -> Result<(), UnpackError> {
    use std::io::Write;
    let h = ctx.block(ctx.fs.open_read(src)).map_err(fs_err)?;
    let len = ctx.block(h.len()).map_err(fs_err)?;
    let mut out = std::fs::File::create(dst).map_err(|e| UnpackError::Io(format!("{}: {e}", dst.display())))?;
    let mut off = 0u64;
    while off < len {
        ctx.check_cancelled()?;
        let data: Bytes = ctx.block(h.read_at(off, crate::CHUNK)).map_err(fs_err)?;
        if data.is_empty() {
            break;
        }
        out.write_all(&data).map_err(|e| UnpackError::Io(format!("{}: {e}", dst.display())))?;
        off += data.len() as u64;
    }
    Ok(())
}

/// An extracted entry, validated.
enum Staged {
    Dir(RelPath),
    File(RelPath, PathBuf, u64),
}

/// Walks the extraction directory without following links, validating
/// every entry.
fn collect(out_dir: &Path, target: &RelPath) -> Result<Vec<Staged>, UnpackError> {
    let io = |p: &Path, e: std::io::Error| UnpackError::Io(format!("{}: {e}", p.display()));
    let mut found = Vec::new();
    let mut stack = vec![(out_dir.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| UnpackError::Escape(format!("{:?}: entry name is not UTF-8", entry.file_name())))?;
            let rel = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
            let path = entry.path();
            let m = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            let dest = entry_path(target, &rel)?.ok_or_else(|| UnpackError::Escape(format!("{rel:?}: empty entry name")))?;
            let ft = m.file_type();
            if ft.is_symlink() {
                return Err(UnpackError::Escape(format!("{rel:?}: link entries are refused")));
            } else if ft.is_dir() {
                found.push(Staged::Dir(dest));
                stack.push((path, rel));
            } else if ft.is_file() {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::MetadataExt;
                    if m.nlink() > 1 {
                        return Err(UnpackError::Escape(format!("{rel:?}: hard-linked entries are refused")));
                    }
                }
                found.push(Staged::File(dest, path, m.len()));
            } else {
                return Err(UnpackError::Unsupported(format!("{rel:?}: special file")));
            }
        }
    }
    Ok(found)
}

fn unrar(ctx: &mut Ctx, archive: &RelPath, target: &RelPath, tool: Tool, program: &Path, temp_base: &Path) -> Result<(), UnpackError> {
    let tmp = tempfile::Builder::new()
        .prefix("lanspread-rar-")
        .tempdir_in(temp_base)
        .map_err(|e| UnpackError::Io(format!("{}: cannot create a staging directory: {e}", temp_base.display())))?;
    let src_dir = tmp.path().join("src");
    let out_dir = tmp.path().join("out");
    for d in [&src_dir, &out_dir] {
        std::fs::create_dir(d).map_err(|e| UnpackError::Io(format!("{}: {e}", d.display())))?;
    }

    // Stage the archive and its sibling volumes.
    let name = archive.file_name();
    let parent = archive.parent().unwrap_or_else(RelPath::root);
    copy_out(ctx, archive, &src_dir.join(name))?;
    for e in ctx.block(ctx.fs.read_dir(&parent)).map_err(fs_err)? {
        if e.kind == FileKind::File && is_sibling_volume(name, &e.name) {
            let sib = parent.join_local(&e.name).map_err(|err| UnpackError::Io(format!("{}: {err}", e.name)))?;
            copy_out(ctx, &sib, &src_dir.join(&e.name))?;
        }
    }

    // Extract.
    ctx.check_cancelled()?;
    let staged = src_dir.join(name);
    let mut cmd = Command::new(program);
    match tool {
        // x: full paths; -o-: never overwrite; -p-: never ask for a password;
        // -y: yes to every question; -idq: quiet.
        Tool::Unrar => cmd.args(["x", "-o-", "-p-", "-y", "-idq"]).arg(&staged).arg(format!("{}/", out_dir.display())),
        // -q: quiet; -D: no enclosing directory; -k skip: no AppleDouble
        // files for resource forks; -o: output directory.
        Tool::Unar => cmd.args(["-q", "-D", "-k", "skip", "-o"]).arg(&out_dir).arg(&staged),
    };
    let out = cmd
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| UnpackError::Io(format!("{}: cannot run: {e}", program.display())))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        let cut = msg.len().saturating_sub(500);
        let cut = (cut..msg.len()).find(|&i| msg.is_char_boundary(i)).unwrap_or(msg.len());
        return Err(UnpackError::Corrupt(format!("{archive}: {} failed ({}): {}", program.display(), out.status, &msg[cut..])));
    }
    // The staged archive is no longer needed: free its space early.
    let _ = std::fs::remove_dir_all(&src_dir);

    // Validate everything, then copy it in.
    let found = collect(&out_dir, target)?;
    let total: u64 = found.iter().map(|s| if let Staged::File(_, _, n) = s { *n } else { 0 }).sum();
    ctx.check_space(total)?;
    let mut done = 0u64;
    ctx.report(0, Some(total));
    for s in found {
        match s {
            Staged::Dir(d) => ctx.ensure_dir(&d)?,
            Staged::File(dest, path, n) => {
                let mut f = std::fs::File::open(&path).map_err(|e| UnpackError::Io(format!("{}: {e}", path.display())))?;
                let mut on_chunk = |ctx: &Ctx, written: u64| ctx.report(done + written, Some(total));
                ctx.write_file(&dest, &mut f as &mut dyn Read, n, &mut on_chunk)?;
                done += n;
                ctx.report(done, Some(total));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{find_in, is_sibling_volume, Tool};
    use std::path::Path;

    fn plant(dir: &Path, name: &str) {
        let p = dir.join(name);
        std::fs::write(&p, b"").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn windows_tools_are_found_by_their_exe_names_and_unar_comes_first() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_in(&dirs, ".exe"), None);
        plant(b.path(), "unrar.exe");
        assert_eq!(find_in(&dirs, ".exe"), Some((Tool::Unrar, b.path().join("unrar.exe"))));
        assert_eq!(find_in(&dirs, ""), None, "a bare `unrar` is not looked for where `.exe` is the suffix, and back");
        plant(a.path(), "unar.exe");
        assert_eq!(find_in(&dirs, ".exe"), Some((Tool::Unar, a.path().join("unar.exe"))));
    }

    /// RARLAB ships `UnRAR.exe`; Windows finds it by any case.
    #[cfg(windows)]
    #[test]
    fn unrar_is_found_whatever_its_case() {
        let dir = tempfile::tempdir().unwrap();
        plant(dir.path(), "UnRAR.exe");
        let (tool, _) = find_in(&[dir.path().to_path_buf()], std::env::consts::EXE_SUFFIX).unwrap();
        assert_eq!(tool, Tool::Unrar);
    }

    #[test]
    fn sibling_volumes() {
        assert!(is_sibling_volume("Game.part1.rar", "Game.part2.rar"));
        assert!(is_sibling_volume("game.part01.rar", "GAME.PART10.RAR"));
        assert!(!is_sibling_volume("game.part1.rar", "game.part1.rar"));
        assert!(!is_sibling_volume("game.part1.rar", "other.part2.rar"));
        assert!(!is_sibling_volume("game.part1.rar", "game.r00"));
        assert!(is_sibling_volume("game.rar", "game.r00"));
        assert!(is_sibling_volume("game.rar", "game.s12"));
        assert!(!is_sibling_volume("game.rar", "game.zip"));
        assert!(!is_sibling_volume("game.rar", "gamex.r00"));
        assert!(!is_sibling_volume("game.rar", "game.r000"));
    }
}
