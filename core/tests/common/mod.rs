//! Shared helpers of the transaction tests: an executor for futures that
//! never wait, a fake unpacker, game fixtures and the I1-I4 checkers.
#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use lanspread_core::game::{EntryKind, FileEntry, Manifest, Version};
use lanspread_core::layout;
use lanspread_core::scan::chunk_hash;
use lanspread_core::txn::keep::{decode_record, KeepOptions};
use lanspread_core::{Catalog, CatalogEntry, GameId};
use lanspread_memfs::{MemFs, Node};
use lanspread_ports::fs::Fs;
use lanspread_ports::path::RelPath;
use lanspread_ports::unpack::{ProgressFn, UnpackError, UnpackProgress, UnpackedFile, Unpacker};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Runs a future that never waits (everything on MemFs completes at once).
/// Unlike `block_on` it may be nested (mock closures call MemFs).
pub fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..1000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete: something waits on MemFs");
}

pub fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

// ---------------------------------------------------------------- unpacker

/// A fake archive format: one entry per line, `path=content` for a file,
/// `dir:path` for a directory, `!corrupt` fails the unpack right there
/// (after the earlier entries were written). Like a real unpacker it
/// returns the files it wrote, hashed from the bytes it wrote.
pub struct FakeUnpacker;

pub fn fake_archive(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(p, c)| if c.is_empty() && p.ends_with('/') { format!("dir:{}\n", p.trim_end_matches('/')) } else { format!("{p}={c}\n") })
        .collect()
}

#[async_trait]
impl Unpacker for FakeUnpacker {
    fn handles(&self, file_name: &str) -> bool {
        file_name.ends_with(".fake")
    }

    async fn unpack(
        &self,
        fs: Arc<dyn Fs>,
        archive: &RelPath,
        target: &RelPath,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<UnpackedFile>, UnpackError> {
        let io = |e: lanspread_ports::fs::FsError| UnpackError::Io(e.to_string());
        let mut written = BTreeMap::new();
        let data = fs.read_file(archive, 1 << 20).await.map_err(io)?;
        let text = String::from_utf8(data).map_err(|_| UnpackError::Corrupt(archive.to_string()))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for (i, line) in lines.iter().enumerate() {
            if *line == "!corrupt" {
                return Err(UnpackError::Corrupt(format!("{archive}: line {}", i + 1)));
            }
            if let Some(dir) = line.strip_prefix("dir:") {
                let rel = RelPath::new(dir).map_err(|e| UnpackError::Escape(e.to_string()))?;
                fs.create_dir_all(&target.join(rel.as_str()).unwrap()).await.map_err(io)?;
            } else {
                let (path, content) = line.split_once('=').ok_or_else(|| UnpackError::Corrupt(line.to_string()))?;
                let rel = RelPath::new(path).map_err(|e| UnpackError::Escape(e.to_string()))?;
                let dest = target.join(rel.as_str()).unwrap();
                if let Some(parent) = dest.parent() {
                    fs.create_dir_all(&parent).await.map_err(io)?;
                }
                let h = fs.open_write(&dest).await.map_err(io)?;
                h.set_len(0).await.map_err(io)?;
                h.write_at(0, Bytes::copy_from_slice(content.as_bytes())).await.map_err(io)?;
                written.insert(rel, content.as_bytes().to_vec());
            }
            progress(UnpackProgress { done: i as u64 + 1, total: Some(lines.len() as u64) });
        }
        let produced =
            written.into_iter().map(|(path, data)| UnpackedFile { path, size: data.len() as u64, hash: *blake3::hash(&data).as_bytes() });
        Ok(produced.collect())
    }
}

pub fn no_progress() -> ProgressFn<'static> {
    &|_| {}
}

// ---------------------------------------------------------------- fixtures

/// A downloadable version of a game: its files (path → content, `None` for
/// a directory) and its sentinel.
#[derive(Clone, Debug)]
pub struct Game {
    pub version: String,
    pub entries: BTreeMap<String, Option<String>>,
}

impl Game {
    pub fn new(version: &str, entries: &[(&str, Option<&str>)]) -> Self {
        Game { version: version.into(), entries: entries.iter().map(|(p, c)| (p.to_string(), c.map(str::to_owned))).collect() }
    }

    pub fn sentinel(&self) -> Vec<u8> {
        format!("{}\n", self.version).into_bytes()
    }

    pub fn manifest(&self) -> Manifest {
        let mut files: Vec<FileEntry> = self
            .entries
            .iter()
            .map(|(path, content)| match content {
                None => FileEntry { path: p(path), kind: EntryKind::Dir, size: 0, chunks: vec![], hash: [0; 32] },
                Some(c) => file_entry(path, c.as_bytes()),
            })
            .collect();
        files.push(file_entry(layout::VERSION_INI, &self.sentinel()));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let m = Manifest { version: Version::new(&self.version).unwrap(), files };
        m.validate(u64::MAX).unwrap();
        m
    }

    /// Writes the complete download durably (a helper, not recorded as a transaction).
    pub fn write_downloaded(&self, fs: &MemFs, root: &str) {
        fs.mkdir_p(root);
        for (path, content) in &self.entries {
            match content {
                None => fs.mkdir_p(&format!("{root}/{path}")),
                Some(c) => fs.write_file(&format!("{root}/{path}"), c),
            }
        }
        fs.write_file(&format!("{root}/{}", layout::VERSION_INI), self.sentinel());
    }

    /// Whether every manifest entry is present with the right content in `tree` (paths relative to the root).
    pub fn complete_in(&self, tree: &BTreeMap<String, Node>) -> Result<(), String> {
        for (path, content) in &self.entries {
            let want = match content {
                None => Node::Dir,
                Some(c) => Node::File(c.as_bytes().to_vec()),
            };
            match tree.get(path) {
                Some(n) if *n == want => {}
                other => return Err(format!("v{}: {path} is {other:?}, expected {want:?}", self.version)),
            }
        }
        Ok(())
    }

    /// Writes the data files the way the runtime does (open_write + write_at), in chunks of `chunk` bytes.
    pub async fn write_data(&self, fs: &dyn Fs, root: &RelPath, chunk: usize) {
        for (path, content) in &self.entries {
            let Some(c) = content else { continue };
            let h = fs.open_write(&root.join(path).unwrap()).await.unwrap();
            for (i, piece) in c.as_bytes().chunks(chunk.max(1)).enumerate() {
                h.write_at((i * chunk) as u64, Bytes::copy_from_slice(piece)).await.unwrap();
            }
        }
    }
}

fn file_entry(path: &str, data: &[u8]) -> FileEntry {
    let chunks = if data.is_empty() { vec![] } else { vec![chunk_hash(data)] };
    FileEntry { path: p(path), kind: EntryKind::File, size: data.len() as u64, chunks, hash: chunk_hash(data) }
}

/// An installed tree, as the fake archives describe it.
pub fn archive_text(files: &[(&str, &str)]) -> String {
    files.iter().map(|(p, c)| if p.ends_with('/') { format!("dir:{}\n", p.trim_end_matches('/')) } else { format!("{p}={c}\n") }).collect()
}

/// The tree `local/` must hold after installing these archive entries
/// (paths relative to `local/`), marker included.
pub fn expected_local(files: &[(&str, &str)]) -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    for (path, content) in files {
        let clean = path.trim_end_matches('/');
        let comps: Vec<&str> = clean.split('/').collect();
        for i in 1..comps.len() {
            t.insert(comps[..i].join("/"), Node::Dir);
        }
        if path.ends_with('/') {
            t.insert(clean.to_owned(), Node::Dir);
        } else {
            t.insert(clean.to_owned(), Node::File(content.as_bytes().to_vec()));
        }
    }
    t.insert(layout::OWNED_MARKER.into(), Node::File(lanspread_core::txn::install::MARKER_CONTENT.to_vec()));
    t
}

/// Subtree of `tree` beneath `prefix`, relative to it.
pub fn subtree(tree: &BTreeMap<String, Node>, prefix: &str) -> BTreeMap<String, Node> {
    let pre = format!("{prefix}/");
    tree.iter().filter_map(|(k, v)| k.strip_prefix(&pre).map(|rest| (rest.to_owned(), v.clone()))).collect()
}

pub fn catalog(ids: &[&str]) -> Catalog {
    Catalog::from_entries(ids.iter().map(|id| CatalogEntry {
        id: GameId::new(*id).unwrap(),
        name: id.to_string(),
        description: None,
        genre: None,
        release_year: None,
        publisher: None,
        max_players: None,
        size: None,
    }))
}

/// A sentinel tree outside the game root, to prove nothing there is touched (I2).
pub fn plant_outside(fs: &MemFs) {
    fs.write_file("outside/precious.txt", "do not touch");
    fs.write_file("outside/dir/deep.bin", "deep");
    fs.write_file("games/other/version.ini", "7\n");
    fs.write_file("games/other/data.fake", "x=1\n");
    fs.write_file("games/other/local/x", "1");
}

/// Everything but the game root `games/<id>` and the kept files
/// (`games/.lanspread-kept`).
pub fn outside_of(tree: &BTreeMap<String, Node>, id: &str) -> BTreeMap<String, Node> {
    let root = format!("games/{id}");
    let pre = format!("{root}/");
    let kept = format!("games/{}", layout::KEPT);
    let kept_pre = format!("{kept}/");
    let mine = |k: &str| k == root || k.starts_with(&pre) || k == kept || k.starts_with(&kept_pre);
    tree.iter().filter(|(k, _)| !mine(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Options of a test's install or uninstall (the kept directory is
/// `<id>-1000`).
pub fn keep(adopt: bool) -> KeepOptions {
    KeepOptions { adopt, time: 1000 }
}

/// A `local/` tree (relative paths) without its record, after checking
/// the record parses and every file it lists is there as recorded, unless
/// the user changed it (`changed` lists such paths).
pub fn strip_record(local: &BTreeMap<String, Node>, changed: &[&str]) -> Result<BTreeMap<String, Node>, String> {
    let mut tree = local.clone();
    let Some(node) = tree.remove(layout::RECORD) else { return Ok(tree) };
    let Node::File(bytes) = node else { return Err(format!("the record is {node:?}")) };
    let record = decode_record(&bytes).map_err(|e| format!("the record does not parse: {e}"))?;
    for (path, produced) in &record {
        if changed.contains(&path.as_str()) {
            continue;
        }
        match tree.get(path.as_str()) {
            Some(Node::File(d)) if d.len() as u64 == produced.size && *blake3::hash(d).as_bytes() == produced.hash => {}
            other => return Err(format!("the record lists {path} ({} bytes) but local/ has {other:?}", produced.size)),
        }
    }
    Ok(tree)
}

/// Files in the kept directories of `id` under `games`: (directory name,
/// relative path, content).
pub fn kept_files(tree: &BTreeMap<String, Node>, id: &str) -> Vec<(String, String, Vec<u8>)> {
    let pre = format!("games/{}/", layout::KEPT);
    let mut out = Vec::new();
    for (path, node) in tree {
        let (Some(rest), Node::File(d)) = (path.strip_prefix(&pre), node) else { continue };
        let Some((dir, rel)) = rest.split_once('/') else { continue };
        if dir.starts_with(&format!("{id}-")) {
            out.push((dir.to_owned(), rel.to_owned(), d.clone()));
        }
    }
    out
}

/// Every user file (path relative to `local/`, content) is in `local/` or
/// in a kept directory of `g`, at the same relative path: never lost.
pub fn check_user_files(tree: &BTreeMap<String, Node>, user: &[(&str, &str)]) -> Result<(), String> {
    let kept = kept_files(tree, "g");
    for (rel, content) in user {
        let in_local = tree.get(&format!("games/g/local/{rel}")) == Some(&Node::File(content.as_bytes().to_vec()));
        let in_kept = kept.iter().any(|(_, r, d)| r == rel && d == content.as_bytes());
        if !in_local && !in_kept {
            return Err(format!("the user's {rel} ({content:?}) is lost"));
        }
    }
    Ok(())
}

/// Root-level names that must not survive a recovery (in a non-hostile root).
pub const LEFTOVERS: &[&str] =
    &[layout::INTENT, layout::INTENT_TMP, layout::VERSION_TMP, layout::VERSION_DISCARDED, layout::INSTALLING, layout::BACKUP];

/// I3 (and "recovery only cleans up"): every path recovery made disappear
/// is provably ours; nothing that stayed changed content.
pub fn check_recovery_deletions(before: &BTreeMap<String, Node>, after: &BTreeMap<String, Node>) -> Result<(), String> {
    let intent = before.get(layout::INTENT).and_then(|n| match n {
        Node::File(d) => lanspread_core::txn::Intent::decode(d).ok(),
        _ => None,
    });
    let op = intent.as_ref().map(|i| i.op);
    use lanspread_core::txn::IntentOp::*;
    let marked = |dir: &str| matches!(before.get(&format!("{dir}/{}", layout::OWNED_MARKER)), Some(Node::File(_)));
    let root_removed = after.is_empty() && op == Some(Remove);
    for (path, node) in before {
        match after.get(path) {
            Some(n) if n == node => continue,
            Some(n) => return Err(format!("recovery changed {path} from {node:?} to {n:?}")),
            None => {}
        }
        if root_removed {
            continue;
        }
        let top = path.split('/').next().unwrap();
        let ok = match top {
            layout::INSTALLING => marked(layout::INSTALLING) || matches!(op, Some(Install | Update)),
            layout::BACKUP => marked(layout::BACKUP) || matches!(op, Some(Update | Uninstall)),
            layout::INTENT | layout::INTENT_TMP | layout::VERSION_TMP | layout::VERSION_DISCARDED => matches!(node, Node::File(_)),
            _ => false,
        };
        if !ok {
            return Err(format!("recovery deleted {path} ({node:?}) without proof of ownership (intent {op:?})"));
        }
    }
    Ok(())
}
