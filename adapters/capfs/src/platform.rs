//! What differs between operating systems, kept in one place: positional
//! IO, free space, directory durability, and what a rename or a removal does
//! when another program holds the file open.
//!
//! Unix (Linux and macOS alike) has `pread`/`pwrite` and `fstatvfs`.
//! Windows has `ReadFile`/`WriteFile` at an offset (`seek_read`,
//! `seek_write`, which also move the handle's cursor; nothing here reads the
//! cursor), `GetDiskFreeSpaceExW` (through `fs4`), and no way to flush a
//! directory (see [`sync_dir_handle`]).

use cap_std::fs::File;
use std::io;
use std::path::Path;
use std::time::Duration;

/// The longest full path (in UTF-16 units, without the terminating NUL)
/// that every Windows program and API can open: `MAX_PATH` less one. std
/// itself would reach longer paths through the `\\?\` prefix, but cap-std's
/// handle-relative opens go through the directory handle's full path, which
/// fails past this length, so such paths are refused up front with a clear
/// error instead of failing half-way through a download.
#[cfg(windows)]
const MAX_WINDOWS_PATH: usize = 259;

/// Refuses `rel` beneath `root` when the whole path is longer than Windows
/// programs can open.
#[cfg(windows)]
pub(crate) fn check_path_len(root: &Path, rel: &str) -> Result<(), String> {
    let root = root.to_string_lossy();
    let root = root.strip_prefix(r"\\?\").unwrap_or(&root);
    let len = root.encode_utf16().count() + 1 + rel.encode_utf16().count();
    if len > MAX_WINDOWS_PATH {
        return Err(format!(
            "{rel}: the full path would be {len} characters, longer than the {MAX_WINDOWS_PATH} Windows allows; \
             use a game directory with a shorter path (e.g. C:\\Games)"
        ));
    }
    Ok(())
}

/// No such limit on Unix (the kernel's 4096 bytes is checked by the port).
#[cfg(unix)]
pub(crate) fn check_path_len(_root: &Path, _rel: &str) -> Result<(), String> {
    Ok(())
}

/// Writes all of `data` at `offset`.
#[cfg(unix)]
pub(crate) fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    cap_std::fs::FileExt::write_all_at(file, data, offset)
}

/// Writes all of `data` at `offset`.
#[cfg(windows)]
pub(crate) fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    use cap_std::fs::FileExt;
    while !data.is_empty() {
        match file.seek_write(data, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the bytes that follow `buf`'s contents (which start at `base` in
/// the file) into its spare capacity, extending its length by what was read,
/// without zero-filling the buffer first.
#[cfg(unix)]
pub(crate) fn read_into_spare(file: &File, buf: &mut Vec<u8>, base: u64) -> io::Result<usize> {
    let offset = base + buf.len() as u64;
    Ok(rustix::io::pread(file, rustix::buffer::spare_capacity(buf), offset)?)
}

/// Reads the bytes that follow `buf`'s contents (which start at `base` in
/// the file) into its spare capacity, extending its length by what was read.
/// Safe Rust cannot hand `ReadFile` uninitialized memory, so the spare
/// capacity is zeroed first.
#[cfg(windows)]
pub(crate) fn read_into_spare(file: &File, buf: &mut Vec<u8>, base: u64) -> io::Result<usize> {
    use cap_std::fs::FileExt;
    let start = buf.len();
    buf.resize(buf.capacity().max(start + 1), 0);
    let read = file.seek_read(&mut buf[start..], base + start as u64);
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    read
}

/// Bytes available to this user on the disk that holds `root`.
#[cfg(unix)]
pub(crate) fn free_space(root: &cap_std::fs::Dir, _root_path: &Path) -> io::Result<u64> {
    let st = rustix::fs::fstatvfs(root)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Bytes available to this user (quotas included) on the volume that holds
/// `root_path`: `GetDiskFreeSpaceExW`.
#[cfg(windows)]
pub(crate) fn free_space(_root: &cap_std::fs::Dir, root_path: &Path) -> io::Result<u64> {
    fs4::available_space(root_path)
}

/// Makes the entries of the directory open as `dir` durable.
#[cfg(unix)]
pub(crate) fn sync_dir_handle(dir: &File) -> io::Result<()> {
    dir.sync_all()
}

/// Windows has no directory `fsync`: `FlushFileBuffers` refuses a directory
/// handle that was not opened for writing, and NTFS journals directory
/// changes (creates, renames, removals) in its log. What a transaction
/// needs, that a published name points at durable data, comes from flushing
/// each file's data (`FlushFileBuffers`, [`File::sync_all`]) before the
/// rename that publishes it, which every transaction already does.
#[cfg(windows)]
pub(crate) fn sync_dir_handle(_dir: &File) -> io::Result<()> {
    Ok(())
}

/// Whether `e` says another program holds the file open in a way that
/// forbids what was asked (an antivirus scanning a new file, the search
/// indexer, a running game): a sharing or lock violation, or
/// `ERROR_ACCESS_DENIED`, which is what a file with a pending delete or the
/// open target of a rename answers (and also a real permission, which is
/// why it is retried but not reported as [`is_sharing_violation`]).
#[cfg(windows)]
pub(crate) fn is_held_open(e: &io::Error) -> bool {
    const ERROR_ACCESS_DENIED: i32 = 5;
    is_sharing_violation(e) || e.raw_os_error() == Some(ERROR_ACCESS_DENIED)
}

/// `ERROR_SHARING_VIOLATION` or `ERROR_LOCK_VIOLATION`.
#[cfg(windows)]
pub(crate) fn is_sharing_violation(e: &io::Error) -> bool {
    const ERROR_SHARING_VIOLATION: i32 = 32;
    const ERROR_LOCK_VIOLATION: i32 = 33;
    matches!(e.raw_os_error(), Some(ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION))
}

/// On Unix an open file never stops a rename or an unlink.
#[cfg(unix)]
pub(crate) fn is_held_open(_e: &io::Error) -> bool {
    false
}

/// On Unix an open file never stops a rename or an unlink.
#[cfg(unix)]
pub(crate) fn is_sharing_violation(_e: &io::Error) -> bool {
    false
}

/// Waits between the tries of an operation that met a file held open: 13
/// tries over about 5 s, long enough for a scanner to let go of a fresh
/// file, short enough that a game left running fails the operation soon
/// with a message that names the file.
pub(crate) const HELD_OPEN_BACKOFF: [Duration; 12] = {
    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    [ms(10), ms(20), ms(40), ms(80), ms(150), ms(250), ms(400), ms(500), ms(750), ms(750), ms(1000), ms(1000)]
};

/// Runs `op`, and again after each wait of `backoff` while it fails with an
/// error that `held_open` recognizes; `Err(HeldOpen(last error))` once the
/// waits are spent. Any other error is returned at once.
pub(crate) fn retry_held_open<T>(
    mut op: impl FnMut() -> io::Result<T>,
    mut held_open: impl FnMut(&io::Error) -> bool,
    backoff: &[Duration],
    mut sleep: impl FnMut(Duration),
) -> Result<T, Retry> {
    let mut waits = backoff.iter();
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if held_open(&e) => match waits.next() {
                Some(wait) => sleep(*wait),
                None => return Err(Retry::HeldOpen(e)),
            },
            Err(e) => return Err(Retry::Failed(e)),
        }
    }
}

/// Why [`retry_held_open`] gave up.
#[derive(Debug)]
pub(crate) enum Retry {
    /// Another program still held the file after every wait.
    HeldOpen(io::Error),
    /// Any other failure, on the first try that met it.
    Failed(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The injected sharing violation (Windows' error 32, whatever it means
    /// on the platform running the test).
    fn violation() -> io::Error {
        io::Error::from_raw_os_error(32)
    }

    fn is_violation(e: &io::Error) -> bool {
        e.raw_os_error() == Some(32)
    }

    #[test]
    fn a_file_let_go_of_in_time_is_renamed_after_waiting() {
        let tries = Cell::new(0);
        let mut slept = Vec::new();
        let op = || {
            tries.set(tries.get() + 1);
            if tries.get() <= 3 {
                Err(violation())
            } else {
                Ok("renamed")
            }
        };
        let r = retry_held_open(op, is_violation, &HELD_OPEN_BACKOFF, |d| slept.push(d));
        assert_eq!(r.unwrap(), "renamed");
        assert_eq!(tries.get(), 4);
        assert_eq!(slept, HELD_OPEN_BACKOFF[..3]);
    }

    #[test]
    fn a_file_held_open_for_good_fails_after_a_bounded_wait() {
        let tries = Cell::new(0);
        let mut waited = Duration::ZERO;
        let op = || -> io::Result<()> {
            tries.set(tries.get() + 1);
            Err(violation())
        };
        let r = retry_held_open(op, is_violation, &HELD_OPEN_BACKOFF, |d| waited += d);
        assert!(matches!(r, Err(Retry::HeldOpen(ref e)) if is_violation(e)), "{r:?}");
        assert_eq!(tries.get(), HELD_OPEN_BACKOFF.len() + 1);
        assert!(waited >= Duration::from_secs(4) && waited <= Duration::from_secs(6), "{waited:?}");
    }

    #[test]
    fn other_errors_are_not_retried() {
        let tries = Cell::new(0);
        let op = || -> io::Result<()> {
            tries.set(tries.get() + 1);
            Err(io::ErrorKind::NotFound.into())
        };
        let r = retry_held_open(op, is_violation, &HELD_OPEN_BACKOFF, |_| panic!("no wait for a missing file"));
        assert!(matches!(r, Err(Retry::Failed(ref e)) if e.kind() == io::ErrorKind::NotFound), "{r:?}");
        assert_eq!(tries.get(), 1);
    }
}
