//! Request units: the numbered pieces of work a download asks peers for.
//!
//! A game of 16,000 small files must not cost 16,000 requests, streams and
//! round trips, so requests name *units* that may span many files, as
//! BitTorrent pieces and Steam depot chunks span file boundaries. The layout
//! is a pure function of the manifest (part of protocol v2): both ends
//! compute the same numbering, a request names a unit by its index and the
//! manifest digest, and later work can name units in have-bitmaps.
//!
//! The rule: walk the manifest's regular, non-empty files in manifest order
//! and their [`CHUNK_SIZE`] chunks in order; each chunk is a [`Piece`].
//! Pieces are packed greedily into units of at most [`UNIT_TARGET`] bytes and
//! [`MAX_PIECES_PER_UNIT`] pieces. A full chunk of a large file therefore is
//! a unit of its own, and hundreds of small files share one.
//!
//! Verification stays per file: every piece is checked against its own
//! chunk hash before anything of the unit counts, and a mismatch names the
//! file, so a peer that lies in one file of a batch earns its strike.

use crate::game::{EntryKind, Hash, Manifest, CHUNK_SIZE};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Most bytes in one unit (a whole chunk of a large file is one unit).
pub const UNIT_TARGET: u64 = CHUNK_SIZE;
/// Most pieces in one unit: bounds the per-request work of both ends for
/// trees of tiny files.
pub const MAX_PIECES_PER_UNIT: usize = 512;

/// Index of a unit in a manifest's [`UnitLayout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnitIdx(pub u32);

impl UnitIdx {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for UnitIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unit {}", self.0)
    }
}

/// Index of an entry in [`Manifest::files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileIdx(pub u32);

impl FileIdx {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One chunk of one file inside a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The file.
    pub file: FileIdx,
    /// The chunk of that file.
    pub chunk: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// Why a unit's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The unit does not exist in this layout.
    #[error("{0} does not exist")]
    NoSuchUnit(UnitIdx),
    /// The bytes have the wrong length.
    #[error("{unit}: got {got} bytes, expected {expected}")]
    Length {
        /// The unit.
        unit: UnitIdx,
        /// Expected.
        expected: u64,
        /// Received.
        got: u64,
    },
    /// A piece does not match its chunk hash.
    #[error("{unit}: {path} at offset {offset} does not match its hash")]
    Corrupt {
        /// The unit.
        unit: UnitIdx,
        /// The file that was lied about.
        path: String,
        /// Offset of the bad piece.
        offset: u64,
    },
}

/// The units of one manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitLayout {
    pieces: Vec<Piece>,
    /// `starts[u]..starts[u + 1]` are unit `u`'s pieces.
    starts: Vec<u32>,
    lens: Vec<u64>,
}

impl UnitLayout {
    /// The layout of `manifest` (see the module docs for the rule).
    pub fn of(manifest: &Manifest) -> Self {
        let mut layout = UnitLayout { pieces: Vec::new(), starts: vec![0], lens: Vec::new() };
        let mut open_len = 0u64;
        let mut open_pieces = 0usize;
        for (i, f) in manifest.files.iter().enumerate() {
            if f.kind != EntryKind::File {
                continue;
            }
            for c in 0..f.chunks.len() as u64 {
                let Some((offset, len)) = f.chunk_range(c) else { break };
                if open_pieces > 0 && (open_len + len > UNIT_TARGET || open_pieces >= MAX_PIECES_PER_UNIT) {
                    layout.close_unit(open_len);
                    (open_len, open_pieces) = (0, 0);
                }
                layout.pieces.push(Piece { file: FileIdx(i as u32), chunk: c as u32, offset, len });
                open_len += len;
                open_pieces += 1;
            }
        }
        if open_pieces > 0 {
            layout.close_unit(open_len);
        }
        layout
    }

    fn close_unit(&mut self, len: u64) {
        self.starts.push(self.pieces.len() as u32);
        self.lens.push(len);
    }

    /// Number of units.
    pub fn count(&self) -> usize {
        self.lens.len()
    }

    /// Every unit index, in order.
    pub fn units(&self) -> impl Iterator<Item = UnitIdx> {
        (0..self.count() as u32).map(UnitIdx)
    }

    /// Bytes of a unit (0 for a unit that does not exist).
    pub fn len(&self, unit: UnitIdx) -> u64 {
        self.lens.get(unit.index()).copied().unwrap_or(0)
    }

    /// Whether there is no unit at all (a game of empty files).
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The pieces of a unit, in order (empty for a unit that does not exist).
    pub fn pieces(&self, unit: UnitIdx) -> &[Piece] {
        let u = unit.index();
        match (self.starts.get(u), self.starts.get(u + 1)) {
            (Some(&a), Some(&b)) => &self.pieces[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Splits the received bytes of `unit` into its pieces, each checked
    /// against its chunk hash in `manifest` (the manifest this layout was
    /// made of). The returned slices share `data`'s memory.
    pub fn verify(&self, manifest: &Manifest, unit: UnitIdx, data: &Bytes) -> Result<Vec<(Piece, Bytes)>, UnitError> {
        let pieces = self.pieces(unit);
        if pieces.is_empty() {
            return Err(UnitError::NoSuchUnit(unit));
        }
        let expected = self.len(unit);
        if data.len() as u64 != expected {
            return Err(UnitError::Length { unit, expected, got: data.len() as u64 });
        }
        let mut at = 0usize;
        let mut out = Vec::with_capacity(pieces.len());
        for p in pieces {
            let bytes = data.slice(at..at + p.len as usize);
            at += p.len as usize;
            let file = &manifest.files[p.file.index()];
            if file.chunks.get(p.chunk as usize) != Some(&hash(&bytes)) {
                return Err(UnitError::Corrupt { unit, path: file.path.to_string(), offset: p.offset });
            }
            out.push((*p, bytes));
        }
        Ok(out)
    }
}

fn hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::{FileEntry, Version};
    use lanspread_ports::RelPath;
    use proptest::prelude::*;

    fn manifest(sizes: &[u64]) -> Manifest {
        let mut files: Vec<FileEntry> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let content = vec![i as u8; size as usize];
                let chunks = content.chunks(CHUNK_SIZE as usize).map(hash).collect();
                FileEntry { path: RelPath::new(format!("f{i:05}")).unwrap(), kind: EntryKind::File, size, chunks, hash: hash(&content) }
            })
            .collect();
        files.push(FileEntry { path: RelPath::new("d").unwrap(), kind: EntryKind::Dir, size: 0, chunks: vec![], hash: [0; 32] });
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { version: Version::new("1").unwrap(), files }
    }

    fn content(m: &Manifest, unit: UnitIdx, layout: &UnitLayout) -> Bytes {
        let mut out = Vec::new();
        for p in layout.pieces(unit) {
            let i = m.files[p.file.index()].path.as_str()[1..].parse::<usize>().unwrap();
            out.extend(std::iter::repeat_n(i as u8, p.len as usize));
        }
        Bytes::from(out)
    }

    #[test]
    fn small_files_share_units_and_large_chunks_stand_alone() {
        let mut sizes = vec![4096u64; 1000];
        sizes.push(CHUNK_SIZE * 2 + 10);
        let m = manifest(&sizes);
        let layout = UnitLayout::of(&m);
        // 1000 files of 4 KiB: 4 MB in units of 1 MiB (256 files each), then 3 chunks of the big file
        // (its 10-byte tail shares no unit with anything after it, since it is last).
        assert_eq!(layout.count(), 4 + 3);
        assert_eq!(layout.pieces(UnitIdx(0)).len(), 256);
        assert_eq!(layout.len(UnitIdx(4)), CHUNK_SIZE);
        assert_eq!(layout.len(UnitIdx(6)), 10);
        let total: u64 = layout.units().map(|u| layout.len(u)).sum();
        assert_eq!(total, m.total_size());
    }

    #[test]
    fn tiny_files_are_capped_per_unit() {
        let m = manifest(&vec![1u64; 2000]);
        let layout = UnitLayout::of(&m);
        assert_eq!(layout.count(), 2000usize.div_ceil(MAX_PIECES_PER_UNIT));
        assert!(layout.units().all(|u| layout.pieces(u).len() <= MAX_PIECES_PER_UNIT));
    }

    #[test]
    fn empty_files_and_directories_have_no_piece() {
        let layout = UnitLayout::of(&manifest(&[0, 0]));
        assert!(layout.is_empty());
        assert!(layout.pieces(UnitIdx(0)).is_empty());
    }

    #[test]
    fn verify_names_the_lying_file() {
        let m = manifest(&[100, 200, 300]);
        let layout = UnitLayout::of(&m);
        let good = content(&m, UnitIdx(0), &layout);
        assert_eq!(layout.verify(&m, UnitIdx(0), &good).unwrap().len(), 3);
        let mut bad = good.to_vec();
        bad[150] ^= 1;
        match layout.verify(&m, UnitIdx(0), &Bytes::from(bad)) {
            Err(UnitError::Corrupt { path, offset: 0, .. }) => assert_eq!(path, "f00001"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(layout.verify(&m, UnitIdx(0), &good.slice(1..)), Err(UnitError::Length { .. })));
        assert!(matches!(layout.verify(&m, UnitIdx(9), &good), Err(UnitError::NoSuchUnit(_))));
    }

    proptest! {
        #[test]
        fn every_chunk_is_in_exactly_one_bounded_unit(sizes in proptest::collection::vec(0u64..3 * CHUNK_SIZE, 0..40)) {
            let m = manifest(&sizes);
            let layout = UnitLayout::of(&m);
            let mut seen = std::collections::BTreeSet::new();
            for u in layout.units() {
                let pieces = layout.pieces(u);
                prop_assert!(!pieces.is_empty() && pieces.len() <= MAX_PIECES_PER_UNIT);
                prop_assert!(layout.len(u) <= UNIT_TARGET);
                prop_assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), layout.len(u));
                for p in pieces {
                    prop_assert!(seen.insert((p.file, p.chunk)));
                    prop_assert_eq!(m.files[p.file.index()].chunk_range(u64::from(p.chunk)), Some((p.offset, p.len)));
                }
            }
            let chunks: usize = m.files.iter().map(|f| f.chunks.len()).sum();
            prop_assert_eq!(seen.len(), chunks);
        }
    }
}
