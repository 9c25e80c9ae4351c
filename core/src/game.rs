//! Game identifiers, versions and manifests.

use lanspread_ports::path::RelPath;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Size of a verified chunk: the unit of hashing, scheduling and resume.
pub const CHUNK_SIZE: u64 = 1 << 20;

/// A BLAKE3 digest.
pub type Hash = [u8; 32];

/// Why a game id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameIdError {
    /// Empty id.
    #[error("game id is empty")]
    Empty,
    /// More than 64 bytes.
    #[error("game id {0:?} is longer than 64 bytes")]
    TooLong(String),
    /// Anything but ASCII letters, digits, `-`, `_` and `.`, or a leading dot.
    #[error("game id {0:?} must be one path component of ASCII letters, digits, '-', '_' or '.' (not starting with '.')")]
    Invalid(String),
}

/// A catalog game id: one safe, portable path component.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GameId(String);

impl GameId {
    /// Validates an id.
    pub fn new(s: impl Into<String>) -> Result<Self, GameIdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(GameIdError::Empty);
        }
        if s.len() > 64 {
            return Err(GameIdError::TooLong(s));
        }
        let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok_chars || s.starts_with('.') || RelPath::component(&s).is_err() {
            return Err(GameIdError::Invalid(s));
        }
        Ok(GameId(s))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The game root, relative to the game directory.
    pub fn root(&self) -> RelPath {
        RelPath::component(&self.0).expect("validated game id is a component")
    }
}

impl<'de> Deserialize<'de> for GameId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        GameId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A game version, as written in `version.ini`. Ordered "naturally": runs of
/// digits compare as numbers, so `1.10` > `1.9` and `20240105` > `20231231`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version(String);

impl Version {
    /// Longest accepted version string.
    pub const MAX_LEN: usize = 128;

    /// Parses the content of a `version.ini`: the first non-empty line,
    /// trimmed (an optional `version=` key is accepted). `None` if there is
    /// no usable version (empty, too long, not UTF-8, control characters).
    pub fn from_ini(content: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(content).ok()?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('[') && !l.starts_with(';'))?;
        let value = match line.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("version") => v.trim(),
            _ => line,
        };
        Version::new(value)
    }

    /// Validates a version string.
    pub fn new(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > Self::MAX_LEN || s.chars().any(char::is_control) {
            return None;
        }
        Some(Version(s.to_owned()))
    }

    /// The version string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        natural_cmp(&self.0, &other.0).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (strip_zeros(&a[..na]), strip_zeros(&b[..nb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn strip_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n..]
}

/// Kind of a manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file with content.
    File,
    /// A directory (listed so empty directories survive the transfer).
    Dir,
}

/// One entry of a game's file manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the game root.
    pub path: RelPath,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// BLAKE3 of each [`CHUNK_SIZE`] chunk, in order (empty for empty files
    /// and directories).
    pub chunks: Vec<Hash>,
    /// BLAKE3 of the whole file.
    pub hash: Hash,
}

impl FileEntry {
    /// Number of chunks a file of `size` bytes has.
    pub fn chunk_count_for(size: u64) -> u64 {
        size.div_ceil(CHUNK_SIZE)
    }

    /// Byte range `(offset, len)` of chunk `i`.
    pub fn chunk_range(&self, i: u64) -> Option<(u64, u64)> {
        let offset = i.checked_mul(CHUNK_SIZE)?;
        if offset >= self.size {
            return None;
        }
        Some((offset, (self.size - offset).min(CHUNK_SIZE)))
    }

    /// Whether this entry is the download sentinel.
    pub fn is_sentinel(&self) -> bool {
        self.path.as_str() == crate::layout::VERSION_INI
    }

    /// Checks internal consistency (chunk count matches size; directories
    /// carry no data). Used on manifests received from peers.
    pub fn is_consistent(&self) -> bool {
        match self.kind {
            EntryKind::Dir => self.size == 0 && self.chunks.is_empty(),
            EntryKind::File => Self::chunk_count_for(self.size) == self.chunks.len() as u64,
        }
    }
}

/// The complete description of one downloaded version of a game.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Manifest {
    /// The version (content of `version.ini`).
    pub version: Version,
    /// Entries, sorted by path, without control files, `local/` or symlinks.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Total bytes of file content.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).fold(0u64, u64::saturating_add)
    }

    /// A digest identifying this exact manifest (used to pin one manifest
    /// when peers disagree).
    pub fn digest(&self) -> Hash {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }
    /// Whether `content`, the verified bytes of this manifest's
    /// `version.ini`, names the version the manifest claims. A holder can
    /// claim any version in its summary and manifest; the sentinel's content
    /// is what the committed game will say, so a download commits only when
    /// both agree.
    pub fn sentinel_names_version(&self, content: &[u8]) -> bool {
        Version::from_ini(content).as_ref() == Some(&self.version)
    }

    /// Each entry's path beneath `root` (its game root), in manifest order:
    /// computed once per manifest by those who address its files often
    /// (the server per unit request, the downloader per write).
    pub fn paths_under(&self, root: &RelPath) -> Result<Vec<RelPath>, lanspread_ports::PathError> {
        self.files.iter().map(|f| root.join(f.path.as_str())).collect()
    }

    /// Looks a file up by path.
    pub fn file(&self, path: &RelPath) -> Option<&FileEntry> {
        self.files.binary_search_by(|f| f.path.cmp(path)).ok().map(|i| &self.files[i])
    }

    /// Validates a manifest received from a peer: every path portable and
    /// unique, no control names at the root and no two paths that are one
    /// on a case-insensitive or normalizing disk ([`crate::names`]), a sentinel present, sizes and
    /// chunk lists consistent, parents listed before children, total within
    /// `max_total`.
    pub fn validate(&self, max_total: u64) -> Result<(), String> {
        let mut total: u64 = 0;
        let mut prev: Option<&RelPath> = None;
        let mut dirs = std::collections::BTreeSet::new();
        let mut has_sentinel = false;
        for f in &self.files {
            if !f.path.is_portable() || f.path.is_root() {
                return Err(format!("non-portable path {:?}", f.path));
            }
            if let Some(p) = prev {
                if p >= &f.path {
                    return Err(format!("manifest not sorted or has duplicates at {:?}", f.path));
                }
            }
            prev = Some(&f.path);
            if !f.is_consistent() {
                return Err(format!("inconsistent entry {:?}", f.path));
            }
            if let Some(parent) = f.path.parent() {
                if !parent.is_root() && !dirs.contains(&parent) {
                    return Err(format!("{:?} listed without its parent directory", f.path));
                }
            }
            if f.kind == EntryKind::Dir {
                dirs.insert(f.path.clone());
            }
            if f.is_sentinel() {
                if f.kind != EntryKind::File || f.size > crate::layout::MAX_VERSION_INI_LEN {
                    return Err("version.ini is not a small regular file".into());
                }
                has_sentinel = true;
            }
            total = total.checked_add(f.size).ok_or("total size overflows")?;
        }
        if !has_sentinel {
            return Err("manifest has no version.ini".into());
        }
        crate::names::check_paths(self.files.iter().map(|f| f.path.as_str())).map_err(|e| e.to_string())?;
        if total > max_total {
            return Err(format!("manifest totals {total} bytes, over the limit of {max_total}"));
        }
        Ok(())
    }
}

/// What a peer announces about one game in `ListGames`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameSummary {
    /// Catalog id.
    pub id: GameId,
    /// Display name (from the catalog).
    pub name: String,
    /// Downloaded version.
    pub version: Version,
    /// Total bytes.
    pub size: u64,
    /// Number of manifest entries.
    pub file_count: u64,
    /// [`Manifest::digest`] of the manifest it serves.
    pub manifest_digest: Hash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentinel_must_name_the_claimed_version() {
        let m = Manifest { version: Version::new("2.0").unwrap(), files: vec![] };
        assert!(m.sentinel_names_version(b"2.0\n"));
        assert!(m.sentinel_names_version(b"[game]\nversion = 2.0\n"));
        assert!(!m.sentinel_names_version(b"1.0\n"), "a manifest claiming 2.0 over a 1.0 sentinel");
        assert!(!m.sentinel_names_version(b""));
    }

    #[test]
    fn ids_are_single_safe_components() {
        assert!(GameId::new("quake-3_arena.v2").is_ok());
        for bad in ["", "..", ".", "a/b", "a\0b", "a\\b", ".hidden", "CON", "a b", &"x".repeat(65)] {
            assert!(GameId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_order_naturally() {
        let v = |s| Version::new(s).unwrap();
        assert!(v("1.10") > v("1.9"));
        assert!(v("20240105") > v("20231231"));
        assert!(v("2.0") > v("2.0-rc1") || v("2.0") < v("2.0-rc1"));
        assert_eq!(v("1.01").cmp(&v("1.1")), Ordering::Greater.min(v("1.01").cmp(&v("1.1"))));
        assert_eq!(Version::from_ini(b"\n  1.2.3 \n").unwrap().as_str(), "1.2.3");
        assert_eq!(Version::from_ini(b"[game]\nversion = 42\n").unwrap().as_str(), "42");
        assert!(Version::from_ini(b"").is_none());
        assert!(Version::from_ini(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn manifests_ambiguous_on_some_disk_are_invalid() {
        let entry =
            |p: &str| FileEntry { path: RelPath::new(p).unwrap(), kind: EntryKind::File, size: 1, chunks: vec![[0; 32]], hash: [0; 32] };
        let manifest = |paths: &[&str]| {
            let mut files: Vec<FileEntry> = paths.iter().map(|p| entry(p)).collect();
            files.push(entry("version.ini"));
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Manifest { version: Version::new("1").unwrap(), files }
        };
        assert!(manifest(&["a.pak"]).validate(u64::MAX).is_ok());
        for bad in [&[".LANSPREAD.JSON"][..], &["A.pak", "a.pak"], &["Version.INI"], &["caf\u{e9}", "cafe\u{301}"]] {
            let err = manifest(bad).validate(u64::MAX).unwrap_err();
            assert!(err.contains("case-insensitive"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn chunk_ranges() {
        let f = FileEntry {
            path: RelPath::new("a").unwrap(),
            kind: EntryKind::File,
            size: CHUNK_SIZE * 2 + 5,
            chunks: vec![[0; 32]; 3],
            hash: [0; 32],
        };
        assert!(f.is_consistent());
        assert_eq!(f.chunk_range(2), Some((CHUNK_SIZE * 2, 5)));
        assert_eq!(f.chunk_range(3), None);
        assert_eq!(f.chunk_range(u64::MAX), None);
    }
}
