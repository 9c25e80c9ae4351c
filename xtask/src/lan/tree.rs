//! Comparing game roots byte by byte, and measuring download progress.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
    Link(PathBuf),
}

/// The downloaded content of a game root: everything except `local/` (the
/// installation) and dot-files (the peer's own bookkeeping).
fn list(root: &Path) -> Result<BTreeMap<PathBuf, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') || (rel.as_os_str().is_empty() && name == "local") {
                continue;
            }
            let path = rel.join(&name);
            let meta = std::fs::symlink_metadata(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?;
            let entry = if meta.file_type().is_symlink() {
                Entry::Link(std::fs::read_link(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?)
            } else if meta.is_dir() {
                stack.push(path.clone());
                Entry::Dir
            } else {
                Entry::File(meta.len())
            };
            out.insert(path, entry);
        }
    }
    Ok(out)
}

/// Where `a` and `b` first differ (None: same bytes); `ba` and `bb` are
/// scratch buffers of equal length, reused across files.
fn same_bytes(a: &Path, b: &Path, ba: &mut [u8], bb: &mut [u8]) -> Result<Option<u64>, String> {
    let open = |p: &Path| File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let mut offset = 0u64;
    loop {
        let na = crate::read_full(&mut fa, ba).map_err(|e| format!("{}: {e}", a.display()))?;
        let nb = crate::read_full(&mut fb, bb).map_err(|e| format!("{}: {e}", b.display()))?;
        if let Some(i) = ba[..na.min(nb)].iter().zip(&bb[..na.min(nb)]).position(|(x, y)| x != y) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + na.min(nb) as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

/// Checks that `got` holds exactly the files of `want` (local/ and
/// dot-files aside), byte for byte. Returns (files, bytes) compared.
pub fn compare(want: &Path, got: &Path) -> Result<(usize, u64), String> {
    let (a, b) = (list(want)?, list(got)?);
    let mut problems = Vec::new();
    for (p, e) in &a {
        match b.get(p) {
            None => problems.push(format!("missing {}", p.display())),
            Some(f) if f != e => problems.push(format!("{}: expected {e:?}, found {f:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        problems.push(format!("unexpected {}", p.display()));
    }
    let (mut files, mut bytes) = (0, 0);
    if problems.is_empty() {
        let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        for (p, e) in &a {
            if let Entry::File(len) = e {
                if let Some(at) = same_bytes(&want.join(p), &got.join(p), &mut ba, &mut bb)? {
                    problems.push(format!("{} differs at byte {at}", p.display()));
                }
                files += 1;
                bytes += len;
            }
        }
    }
    if files == 0 && problems.is_empty() {
        problems.push(format!("{} holds no files", want.display()));
    }
    if problems.is_empty() {
        Ok((files, bytes))
    } else {
        Err(format!("{} is not a copy of {}: {}", got.display(), want.display(), problems.join("; ")))
    }
}

/// Bytes actually written (allocated blocks) under `root`: downloads size
/// their files up front, sparse, so this grows with the data received.
pub fn allocated(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Checks that the game at `root` is installed: `local/` is a non-empty directory.
pub fn installed(root: &Path) -> Result<usize, String> {
    let local = root.join("local");
    let n = std::fs::read_dir(&local).map_err(|e| format!("not installed: {}: {e}", local.display()))?.count();
    if n == 0 {
        return Err(format!("not installed: {} is empty", local.display()));
    }
    Ok(n)
}
