//! Simulated games: generated game roots in a `MemFs`, and an unpacker for
//! their archive format.
//!
//! A sim archive (`<id>.simpack`) starts with a small text header listing
//! the files it installs (`path\tsize\tseed` per line, ended by an empty
//! line), followed by bulk bytes that only give it a realistic size. The
//! [`SimUnpacker`] writes each listed file with deterministic content through
//! the `Fs` port, like a real unpacker, in pieces, with progress, and
//! returns the files it wrote hashed from the bytes it wrote.

use crate::rng::SimRng;
use async_trait::async_trait;
use bytes::Bytes;
use lanspread_core::catalog::{Catalog, CatalogEntry};
use lanspread_core::game::GameId;
use lanspread_memfs::MemFs;
use lanspread_ports::unpack::{ProgressFn, UnpackedFile};
use lanspread_ports::{Fs, RelPath, UnpackError, UnpackProgress, Unpacker};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A game to generate.
#[derive(Debug, Clone)]
pub struct SimGame {
    /// Id.
    pub id: String,
    /// Version (content of version.ini).
    pub version: String,
    /// Size of the archive's bulk in bytes.
    pub archive_bytes: u64,
    /// Extra loose data files (path, size).
    pub extra_files: Vec<(String, u64)>,
    /// Files the archive installs (path, size).
    pub installs: Vec<(String, u64)>,
}

impl SimGame {
    /// A game whose archive has `mib` MiB.
    pub fn new(id: &str, version: &str, bytes: u64) -> Self {
        SimGame {
            id: id.to_owned(),
            version: version.to_owned(),
            archive_bytes: bytes,
            extra_files: vec![("data/readme.txt".into(), 300), ("data/maps/arena.map".into(), 70_000)],
            installs: vec![("game.exe".into(), 4096), ("assets/pak0.pak".into(), 200_000), ("assets/sounds/intro.ogg".into(), 5000)],
        }
    }

    /// The catalog entry.
    pub fn entry(&self) -> CatalogEntry {
        CatalogEntry {
            id: GameId::new(self.id.clone()).expect("valid sim game id"),
            name: format!("Sim {}", self.id),
            description: None,
            genre: None,
            release_year: None,
            publisher: None,
            max_players: None,
            size: Some(self.archive_bytes),
        }
    }

    /// The archive bytes (deterministic from the id, version and `rng`).
    fn archive(&self, rng: &SimRng) -> Vec<u8> {
        let mut out = b"SIMPACK\n".to_vec();
        let vseed = self.version.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        for (i, (path, size)) in self.installs.iter().enumerate() {
            out.extend_from_slice(format!("{path}\t{size}\t{}\n", vseed.wrapping_add(i as u64)).as_bytes());
        }
        out.push(b'\n');
        let bulk = rng.fork(&format!("archive-{}-{}", self.id, self.version)).bytes(self.archive_bytes as usize);
        out.extend_from_slice(&bulk);
        out
    }

    /// Writes the game root into `fs` (downloaded, not installed).
    pub fn write(&self, fs: &MemFs, rng: &SimRng) {
        let root = &self.id;
        fs.write_file(&format!("{root}/{}.simpack", self.id), self.archive(rng));
        for (path, size) in &self.extra_files {
            let data = rng.fork(&format!("extra-{}-{}-{path}", self.id, self.version)).bytes(*size as usize);
            fs.write_file(&format!("{root}/{path}"), data);
        }
        fs.write_file(&format!("{root}/version.ini"), format!("{}\n", self.version));
    }
}

/// A game root's downloaded files in a `MemFs` (no `local/`, no control
/// files), by path.
pub fn downloaded_tree(fs: &MemFs, id: &str) -> BTreeMap<String, lanspread_memfs::Node> {
    fs.tree_at(id).into_iter().filter(|(p, _)| !p.starts_with("local") && !p.starts_with('.')).collect()
}

/// Panics unless `b` downloaded exactly the files `a` has of game `id`
/// (`who` names `b` in the message).
pub fn assert_same_download(a: &MemFs, b: &MemFs, id: &str, who: &str) {
    let (ta, tb) = (downloaded_tree(a, id), downloaded_tree(b, id));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>(), "{who}: file lists differ");
    for (p, n) in &ta {
        assert!(tb[p] == *n, "{who}: {id}/{p} differs");
    }
}

/// A catalog listing `games`.
pub fn catalog_of(games: &[&SimGame]) -> Catalog {
    Catalog::from_entries(games.iter().map(|g| g.entry()))
}

/// Deterministic content of an installed file.
pub fn installed_content(path: &str, size: u64, seed: u64) -> Vec<u8> {
    let mut x = seed ^ path.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Unpacks `.simpack` archives through the `Fs` port.
#[derive(Debug, Default)]
pub struct SimUnpacker;

#[async_trait]
impl Unpacker for SimUnpacker {
    fn handles(&self, file_name: &str) -> bool {
        file_name.ends_with(".simpack")
    }

    async fn unpack(
        &self,
        fs: Arc<dyn Fs>,
        archive: &RelPath,
        target: &RelPath,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<UnpackedFile>, UnpackError> {
        let io = |e: lanspread_ports::FsError| UnpackError::Io(e.to_string());
        let h = fs.open_read(archive).await.map_err(io)?;
        let total = h.len().await.map_err(io)?;
        let head = h.read_at(0, total.min(64 * 1024) as usize).await.map_err(io)?;
        let end = head.windows(2).position(|w| w == b"\n\n").ok_or_else(|| UnpackError::Corrupt("no file list".into()))?;
        let text = std::str::from_utf8(&head[..end]).map_err(|_| UnpackError::Corrupt("header is not text".into()))?;
        let list = text.strip_prefix("SIMPACK\n").ok_or_else(|| UnpackError::Corrupt("not a simpack".into()))?;
        let mut done = 0;
        let mut written = BTreeMap::new();
        for line in list.lines() {
            let mut parts = line.split('\t');
            let (Some(path), Some(size), Some(seed)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(UnpackError::Corrupt(format!("bad entry {line:?}")));
            };
            let size: u64 = size.parse().map_err(|_| UnpackError::Corrupt(format!("bad size in {line:?}")))?;
            let seed: u64 = seed.parse().map_err(|_| UnpackError::Corrupt(format!("bad seed in {line:?}")))?;
            let rel = RelPath::new(path).map_err(|e| UnpackError::Escape(e.to_string()))?;
            let dest = target.join(path).map_err(|e| UnpackError::Escape(e.to_string()))?;
            if let Some(parent) = dest.parent() {
                fs.create_dir_all(&parent).await.map_err(io)?;
            }
            let f = fs.open_write(&dest).await.map_err(io)?;
            f.set_len(0).await.map_err(io)?;
            let content = installed_content(path, size, seed);
            for (i, piece) in content.chunks(64 * 1024).enumerate() {
                f.write_at((i * 64 * 1024) as u64, Bytes::copy_from_slice(piece)).await.map_err(io)?;
            }
            f.sync().await.map_err(io)?;
            written.insert(rel, (size, *blake3::hash(&content).as_bytes()));
            done += size;
            progress(UnpackProgress { done: done.min(total), total: Some(total) });
        }
        Ok(written.into_iter().map(|(path, (size, hash))| UnpackedFile { path, size, hash }).collect())
    }
}
