//! Library scan: what this peer has on disk, through the [`Fs`] port.
//!
//! A game root is a direct child directory of the game directory whose name
//! is a catalog id. It is *downloaded* iff a regular root-level
//! `version.ini` exists (its content gives the version) and *installed* iff
//! `local/` is a directory. The manifest lists every regular file and
//! directory beneath the root except `local/`, lanspread's control files,
//! symlinks and special files, with BLAKE3 chunk hashes.
//!
//! The [`ScanIndex`] (persisted at the top of the game directory) remembers,
//! per root, a signature of its recursive listing (paths, kinds, sizes,
//! mtimes) and the hashes of every file keyed by (size, mtime): a rescan of an
//! unchanged root costs one walk of metadata and no reads; a changed file is
//! rehashed.

use crate::catalog::Catalog;
use crate::game::{EntryKind, FileEntry, GameId, GameSummary, Hash, Manifest, Version, CHUNK_SIZE};
use crate::layout;
use lanspread_ports::fs::{FileKind, Fs, FsError, FsErrorKind};
use lanspread_ports::path::RelPath;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Observed local state of one catalog game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalGame {
    /// Id.
    pub id: GameId,
    /// Version from a regular root-level `version.ini`, if downloaded.
    pub version: Option<Version>,
    /// `local/` is a directory.
    pub installed: bool,
    /// A transaction intent log is present (recovery pending or op running).
    pub intent_pending: bool,
    /// The manifest served to peers (present iff downloaded).
    pub manifest: Option<Manifest>,
    /// Oddities noticed (e.g. `version.ini` is a directory), for the user.
    pub problems: Vec<String>,
}

impl LocalGame {
    /// Whether downloaded.
    pub fn downloaded(&self) -> bool {
        self.version.is_some()
    }

    /// The summary announced to peers (only for downloaded games).
    pub fn summary(&self, catalog: &Catalog) -> Option<GameSummary> {
        let manifest = self.manifest.as_ref()?;
        let version = self.version.clone()?;
        Some(GameSummary {
            id: self.id.clone(),
            name: catalog.get(&self.id).map(|e| e.name.clone()).unwrap_or_else(|| self.id.to_string()),
            version,
            size: manifest.total_size(),
            file_count: manifest.files.len() as u64,
            manifest_digest: manifest.digest(),
        })
    }
}

/// The scanned local library: one entry per catalog game that has a root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalLibrary {
    /// Games by id.
    pub games: BTreeMap<GameId, LocalGame>,
}

impl LocalLibrary {
    /// Summaries of every downloaded game, ordered by id.
    pub fn summaries(&self, catalog: &Catalog) -> Vec<GameSummary> {
        self.games.values().filter_map(|g| g.summary(catalog)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileSig {
    size: u64,
    modified_ns: Option<u128>,
    chunks: Vec<Hash>,
    hash: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexedRoot {
    listing: Hash,
    game: LocalGame,
    files: BTreeMap<RelPath, FileSig>,
}

/// Persistent scan cache (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanIndex {
    roots: BTreeMap<GameId, IndexedRoot>,
}

/// Largest index file we load.
const MAX_INDEX_LEN: u64 = 512 * 1024 * 1024;
const INDEX_FORMAT: u8 = 1;

/// Counters of one scan, for benchmarks and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Roots whose listing matched the index (nothing read).
    pub roots_reused: u64,
    /// Roots rebuilt.
    pub roots_rescanned: u64,
    /// Files hashed.
    pub files_hashed: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
}

impl ScanIndex {
    /// Loads the index from the game directory; a missing, corrupt or
    /// foreign-format index yields an empty one (it is only a cache).
    pub async fn load(fs: &dyn Fs) -> ScanIndex {
        let Ok(path) = RelPath::new(layout::INDEX) else { return ScanIndex::default() };
        match fs.read_file(&path, MAX_INDEX_LEN).await {
            Ok(bytes) if bytes.first() == Some(&INDEX_FORMAT) => postcard::from_bytes(&bytes[1..]).unwrap_or_default(),
            _ => ScanIndex::default(),
        }
    }

    /// Saves the index atomically.
    pub async fn save(&self, fs: &dyn Fs) -> Result<(), FsError> {
        let mut bytes = vec![INDEX_FORMAT];
        bytes.extend(postcard::to_stdvec(self).map_err(|e| FsError::new(FsErrorKind::Io, e.to_string()))?);
        let path = RelPath::new(layout::INDEX).map_err(|e| FsError::new(FsErrorKind::InvalidPath, e.to_string()))?;
        let tmp = RelPath::new(layout::INDEX_TMP).map_err(|e| FsError::new(FsErrorKind::InvalidPath, e.to_string()))?;
        fs.write_atomic(&path, &tmp, &bytes).await
    }

    /// Forgets a root (e.g. after it was removed).
    pub fn forget(&mut self, id: &GameId) {
        self.roots.remove(id);
    }

    /// The chunk hashes recorded for `path` of game `id`, if the file
    /// still has the recorded size and mtime (the same trust a rescan puts
    /// in the index).
    pub fn known_chunks(&self, id: &GameId, path: &RelPath, size: u64, modified_ns: Option<u128>) -> Option<&[Hash]> {
        let sig = self.roots.get(id)?.files.get(path)?;
        (sig.size == size && sig.modified_ns == modified_ns && modified_ns.is_some()).then_some(sig.chunks.as_slice())
    }

    /// Records hashes already known to be right (e.g. a just-verified
    /// download), so the next scan does not hash those files again.
    pub fn remember_verified(&mut self, id: &GameId, manifest: &Manifest, observed: &[(RelPath, u64, Option<u128>)]) {
        let root = self.roots.entry(id.clone()).or_insert_with(|| IndexedRoot {
            listing: [0; 32],
            game: LocalGame { id: id.clone(), version: None, installed: false, intent_pending: false, manifest: None, problems: vec![] },
            files: BTreeMap::new(),
        });
        root.listing = [0; 32]; // force a listing rebuild, but reuse hashes
        for (path, size, mtime) in observed {
            if let Some(f) = manifest.file(path) {
                if f.kind == EntryKind::File && f.size == *size {
                    root.files.insert(path.clone(), FileSig { size: *size, modified_ns: *mtime, chunks: f.chunks.clone(), hash: f.hash });
                }
            }
        }
    }
}

/// Scans one root, or the whole library, keeping the index up to date.
#[derive(Debug, Default)]
pub struct Scanner {
    /// The cache.
    pub index: ScanIndex,
    /// Counters since creation.
    pub stats: ScanStats,
}

struct Walked {
    listing: blake3::Hasher,
    entries: Vec<(RelPath, EntryKind, u64, Option<u128>)>,
    problems: Vec<String>,
    /// The first file or directory whose name some platform cannot hold
    /// (with why): the game is then not shared at all, since a peer on
    /// that platform could not write it whole.
    unportable: Option<String>,
}

impl Scanner {
    /// A scanner starting from `index`.
    pub fn new(index: ScanIndex) -> Self {
        Scanner { index, stats: ScanStats::default() }
    }

    /// Scans every catalog game that has a root in the game directory.
    pub async fn scan_all(&mut self, fs: &dyn Fs, catalog: &Catalog) -> Result<LocalLibrary, FsError> {
        let entries = fs.read_dir(&RelPath::root()).await?;
        let mut lib = LocalLibrary::default();
        let mut seen = Vec::new();
        for e in entries {
            if e.kind != FileKind::Dir {
                continue;
            }
            let Some(entry) = catalog.get_str(&e.name) else { continue };
            seen.push(entry.id.clone());
            if let Some(game) = self.scan_game(fs, &entry.id).await? {
                lib.games.insert(entry.id.clone(), game);
            }
        }
        self.index.roots.retain(|id, _| seen.contains(id));
        Ok(lib)
    }

    /// Scans one game root. `Ok(None)` if the root does not exist or is not
    /// a real directory (a symlink in place of a root is ignored).
    pub async fn scan_game(&mut self, fs: &dyn Fs, id: &GameId) -> Result<Option<LocalGame>, FsError> {
        let root = id.root();
        match fs.metadata(&root).await {
            Ok(m) if m.kind == FileKind::Dir => {}
            Ok(_) => {
                self.index.forget(id);
                return Ok(None);
            }
            Err(e) if e.kind == FsErrorKind::NotFound => {
                self.index.forget(id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let walked = walk_root(fs, &root).await?;
        let listing: Hash = *walked.listing.finalize().as_bytes();
        if let Some(cached) = self.index.roots.get(id) {
            if cached.listing == listing {
                self.stats.roots_reused += 1;
                return Ok(Some(cached.game.clone()));
            }
        }
        self.stats.roots_rescanned += 1;
        let game = self.build_game(fs, id, &root, walked, listing).await?;
        Ok(Some(game))
    }

    async fn build_game(&mut self, fs: &dyn Fs, id: &GameId, root: &RelPath, walked: Walked, listing: Hash) -> Result<LocalGame, FsError> {
        let mut problems = walked.problems;
        let unportable = walked.unportable;
        let mut version = None;
        let mut installed = false;
        let mut intent_pending = false;
        let old_files = self.index.roots.get(id).map(|r| r.files.clone()).unwrap_or_default();
        let mut new_files = BTreeMap::new();
        let mut files = Vec::new();
        for (rel, kind, size, mtime) in &walked.entries {
            let top_level = !rel.as_str().contains('/');
            if top_level && rel.as_str() == layout::LOCAL {
                installed = *kind == EntryKind::Dir;
                continue;
            }
            if top_level && rel.as_str() == layout::INTENT {
                intent_pending = true;
            }
            if top_level && layout::is_control_name(rel.as_str()) {
                continue;
            }
            if top_level && rel.as_str() == layout::VERSION_INI {
                if *kind != EntryKind::File {
                    problems.push("version.ini is a directory, not a file: the game is not downloaded".into());
                    continue;
                }
                let path = root.join_local(layout::VERSION_INI).map_err(path_err)?;
                match fs.read_file(&path, layout::MAX_VERSION_INI_LEN).await {
                    Ok(bytes) => match Version::from_ini(&bytes) {
                        Some(v) => version = Some(v),
                        None => problems.push("version.ini holds no usable version".into()),
                    },
                    Err(e) => problems.push(format!("version.ini unreadable: {e}")),
                }
            }
            match kind {
                EntryKind::Dir => files.push(FileEntry { path: rel.clone(), kind: EntryKind::Dir, size: 0, chunks: vec![], hash: [0; 32] }),
                EntryKind::File => {
                    let sig = match old_files.get(rel) {
                        Some(s) if s.size == *size && s.modified_ns == *mtime && mtime.is_some() => s.clone(),
                        _ => {
                            let full = root.join(rel.as_str()).map_err(path_err)?;
                            let (chunks, hash) = hash_file(fs, &full, *size).await?;
                            self.stats.files_hashed += 1;
                            self.stats.bytes_hashed += size;
                            FileSig { size: *size, modified_ns: *mtime, chunks, hash }
                        }
                    };
                    files.push(FileEntry {
                        path: rel.clone(),
                        kind: EntryKind::File,
                        size: *size,
                        chunks: sig.chunks.clone(),
                        hash: sig.hash,
                    });
                    new_files.insert(rel.clone(), sig);
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        // A tree that is ambiguous on a case-insensitive disk is never advertised.
        let mut manifest = version.clone().map(|v| Manifest { version: v, files });
        if let Some(name) = unportable {
            problems.push(format!("not shared: {name}"));
            manifest = None;
        } else if let Err(e) = crate::names::check_paths(manifest.iter().flat_map(|m| m.files.iter().map(|f| f.path.as_str()))) {
            problems.push(format!("not shared: {e}"));
            manifest = None;
        }
        let game = LocalGame { id: id.clone(), version, installed, intent_pending, manifest, problems };
        self.index.roots.insert(id.clone(), IndexedRoot { listing, game: game.clone(), files: new_files });
        Ok(game)
    }
}

fn path_err(e: lanspread_ports::path::PathError) -> FsError {
    FsError::new(FsErrorKind::InvalidPath, e.to_string())
}

/// Walks a root iteratively (hostile depth cannot overflow the stack),
/// never entering `local/`, control directories or symlinks.
async fn walk_root(fs: &dyn Fs, root: &RelPath) -> Result<Walked, FsError> {
    let mut listing = blake3::Hasher::new();
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut unportable = None;
    let mut stack = vec![RelPath::root()];
    while let Some(dir) = stack.pop() {
        let abs = if dir.is_root() { root.clone() } else { root.join(dir.as_str()).map_err(path_err)? };
        let mut list = fs.read_dir(&abs).await?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        for e in list {
            let rel = match dir.join(&e.name) {
                Ok(r) => r,
                Err(err) => {
                    // In the listing, so adding or renaming such a file
                    // rescans the root.
                    listing.update(format!("X{dir}/{}\0", e.name).as_bytes());
                    let shown = if dir.is_root() { e.name.clone() } else { format!("{dir}/{}", e.name) };
                    match e.kind {
                        FileKind::File | FileKind::Dir => {
                            unportable
                                .get_or_insert_with(|| format!("{shown:?} is a name that Windows, macOS or Linux cannot hold ({err})"));
                        }
                        FileKind::Symlink | FileKind::Other => problems.push(format!("skipped {shown:?}: {err}")),
                    }
                    continue;
                }
            };
            let kind = match e.kind {
                FileKind::File => EntryKind::File,
                FileKind::Dir => EntryKind::Dir,
                FileKind::Symlink => {
                    listing.update(format!("L{}\0", rel.as_str()).as_bytes());
                    if !(dir.is_root() && layout::is_control_name(&e.name)) {
                        problems.push(format!("skipped symlink {rel}"));
                    }
                    continue;
                }
                FileKind::Other => continue,
            };
            listing.update(
                format!("{}{}\0{}\0{:?}\0", if kind == EntryKind::Dir { 'D' } else { 'F' }, rel.as_str(), e.len, e.modified_ns).as_bytes(),
            );
            let top_control = dir.is_root() && (e.name == layout::LOCAL || layout::is_control_name(&e.name));
            if kind == EntryKind::Dir && !top_control {
                stack.push(rel.clone());
            }
            entries.push((rel, kind, if kind == EntryKind::File { e.len } else { 0 }, e.modified_ns));
        }
    }
    Ok(Walked { listing, entries, problems, unportable })
}

/// Hashes a file in [`CHUNK_SIZE`] pieces: (chunk hashes, whole-file hash).
pub async fn hash_file(fs: &dyn Fs, path: &RelPath, size: u64) -> Result<(Vec<Hash>, Hash), FsError> {
    let h = fs.open_read(path).await?;
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::with_capacity(FileEntry::chunk_count_for(size) as usize);
    let mut offset = 0u64;
    while offset < size {
        let want = (size - offset).min(CHUNK_SIZE) as usize;
        let data = h.read_at(offset, want).await?;
        if data.len() != want {
            return Err(FsError::new(FsErrorKind::Io, format!("{path}: changed size while hashing")));
        }
        whole.update(&data);
        chunks.push(*blake3::hash(&data).as_bytes());
        offset += want as u64;
    }
    Ok((chunks, *whole.finalize().as_bytes()))
}

/// Chunk hashes already known for a file with a given (path, size, mtime),
/// e.g. from [`ScanIndex::known_chunks`].
pub type KnownChunks<'a> = dyn Fn(&RelPath, u64, Option<u128>) -> Option<Vec<Hash>> + Sync + 'a;

/// Which chunks of a download are already in place under `root`: for each
/// file of `manifest` (in order; empty for directories and the sentinel),
/// one flag per chunk, true iff the bytes at that place hash to the
/// manifest's chunk hash. This is what makes an interrupted download resume
/// and an update fetch only what changed: data that reads back right is
/// right, whether it came from an earlier attempt or from the old version
/// at the same path and offset (a lost unsynced write reads back wrong).
///
/// `known` answers from the scan index for a file with a given (path, size,
/// mtime) without reading it. Missing or unreadable files count as absent;
/// nothing is written.
pub async fn reusable_chunks(fs: &dyn Fs, root: &RelPath, manifest: &Manifest, known: &KnownChunks<'_>) -> Vec<Vec<bool>> {
    let data: Vec<(usize, RelPath)> = manifest
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == EntryKind::File && !f.is_sentinel() && !f.chunks.is_empty())
        .filter_map(|(i, f)| Some((i, root.join(f.path.as_str()).ok()?)))
        .collect();
    let paths: Vec<RelPath> = data.iter().map(|(_, p)| p.clone()).collect();
    let stats = fs.metadata_many(&paths).await;
    let mut out: Vec<Vec<bool>> = manifest.files.iter().map(|_| Vec::new()).collect();
    for ((i, path), stat) in data.into_iter().zip(stats) {
        let f = &manifest.files[i];
        let Ok(m) = stat else { continue };
        if m.kind != FileKind::File || m.len == 0 {
            continue;
        }
        let mut flags = vec![false; f.chunks.len()];
        if let Some(hashes) = known(&f.path, m.len, m.modified_ns) {
            for (k, flag) in flags.iter_mut().enumerate() {
                let in_file = f.chunk_range(k as u64).is_some_and(|(off, len)| off + len <= m.len);
                *flag = in_file && hashes.get(k) == Some(&f.chunks[k]);
            }
        } else if let Ok(h) = fs.open_read(&path).await {
            for (k, flag) in flags.iter_mut().enumerate() {
                let Some((off, len)) = f.chunk_range(k as u64) else { break };
                if off + len > m.len {
                    break;
                }
                match h.read_at(off, len as usize).await {
                    Ok(bytes) if bytes.len() as u64 == len => *flag = chunk_hash(&bytes) == f.chunks[k],
                    _ => break,
                }
            }
        }
        out[i] = flags;
    }
    out
}

/// Hash of one chunk's bytes (what a downloader compares with the manifest).
pub fn chunk_hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}
