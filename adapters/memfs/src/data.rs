//! The content of a regular file, in shared copy-on-write chunks.
//!
//! A file is a list of chunks of [`CHUNK`] bytes, each either absent (all
//! zeros, so a file grown by `set_len` costs nothing until written) or an
//! `Arc`'d buffer. Cloning a [`Data`] copies only the list of pointers, so
//! the durable copy an fsync keeps, the baseline a crash replays from and
//! the survivor of a crash share their bytes with the live file; a write
//! copies only the chunks it changes that are shared (and not even those
//! it overwrites whole). A read within one chunk shares the chunk instead
//! of copying it: a chunk is as large as a manifest chunk, so a server
//! sending the same file to many simulated peers at once holds it once.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Bytes per chunk.
pub(crate) const CHUNK: usize = 1 << 20;

/// File content (see the module docs).
///
/// Invariant: `chunks.len() == len.div_ceil(CHUNK)`, and a present chunk
/// `i` holds exactly the bytes `i * CHUNK .. min((i + 1) * CHUNK, len)`.
#[derive(Clone, Default)]
pub(crate) struct Data {
    len: usize,
    chunks: Vec<Option<Arc<Vec<u8>>>>,
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({} bytes)", self.len)
    }
}

impl From<Vec<u8>> for Data {
    fn from(v: Vec<u8>) -> Data {
        if v.len() <= CHUNK {
            // A small file keeps its buffer.
            let len = v.len();
            let chunks = if len == 0 { Vec::new() } else { vec![Some(Arc::new(v))] };
            return Data { len, chunks };
        }
        Data { len: v.len(), chunks: v.chunks(CHUNK).map(|c| Some(Arc::new(c.to_vec()))).collect() }
    }
}

impl Data {
    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The length of chunk `i`'s span.
    fn span(&self, i: usize) -> usize {
        (self.len - i * CHUNK).min(CHUNK)
    }

    /// The whole content.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.read(0, self.len).into()
    }

    /// The bytes `start..end`, clamped to the content.
    pub(crate) fn read(&self, start: usize, end: usize) -> Bytes {
        let end = end.min(self.len);
        let start = start.min(end);
        if start < end && start / CHUNK == (end - 1) / CHUNK {
            if let Some(c) = &self.chunks[start / CHUNK] {
                let off = start / CHUNK * CHUNK;
                return Bytes::from_owner(Shared(Arc::clone(c))).slice(start - off..end - off);
            }
        }
        let mut out = Vec::with_capacity(end - start);
        let mut pos = start;
        while pos < end {
            let (i, off) = (pos / CHUNK, pos % CHUNK);
            let n = (CHUNK - off).min(end - pos);
            match &self.chunks[i] {
                Some(c) => out.extend_from_slice(&c[off..off + n]),
                None => out.resize(out.len() + n, 0),
            }
            pos += n;
        }
        Bytes::from(out)
    }

    /// Grows (with zeros) or truncates to `new_len`.
    pub(crate) fn resize(&mut self, new_len: usize) {
        if new_len < self.len {
            self.chunks.truncate(new_len.div_ceil(CHUNK));
            self.len = new_len;
            if let Some(last) = self.chunks.len().checked_sub(1) {
                let span = self.span(last);
                if let Some(c) = &mut self.chunks[last] {
                    if c.len() != span {
                        Arc::make_mut(c).truncate(span);
                    }
                }
            }
        } else if new_len > self.len {
            let old_len = self.len;
            self.len = new_len;
            // A partial last chunk extends with zeros; new chunks are absent.
            if !old_len.is_multiple_of(CHUNK) {
                let last = old_len / CHUNK;
                let span = self.span(last);
                if let Some(c) = &mut self.chunks[last] {
                    grow(Arc::make_mut(c), span);
                }
            }
            self.chunks.resize(new_len.div_ceil(CHUNK), None);
        }
    }

    /// Overwrites `offset..offset + data.len()`, which must lie within the
    /// content (resize first).
    pub(crate) fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len, "write beyond the end of the content");
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (i, off) = (pos / CHUNK, pos % CHUNK);
            let span = self.span(i);
            let n = (span - off).min(rest.len());
            let (piece, tail) = rest.split_at(n);
            if off == 0 && n == span {
                // Overwritten whole: no need to copy the old chunk.
                self.chunks[i] = Some(Arc::new(piece.to_vec()));
            } else {
                let c = self.chunks[i].get_or_insert_with(|| Arc::new(vec![0; span]));
                Arc::make_mut(c)[off..off + n].copy_from_slice(piece);
            }
            pos += n;
            rest = tail;
        }
    }
}

/// A chunk lent to a reader (read-only while the reader holds it: a write
/// to the chunk copies it first).
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Extends `v` with zeros to `len`, growing its buffer geometrically (so
/// small appends stay cheap) but never beyond one chunk.
fn grow(v: &mut Vec<u8>, len: usize) {
    if v.capacity() < len {
        let target = (v.capacity() * 2).clamp(len, CHUNK.max(len));
        v.reserve_exact(target - v.len());
    }
    v.resize(len, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model: a plain vector.
    fn check(d: &Data, model: &[u8]) {
        assert_eq!(d.len(), model.len());
        assert_eq!(d.to_vec(), model);
        assert_eq!(d.chunks.len(), model.len().div_ceil(CHUNK));
        for (i, c) in d.chunks.iter().enumerate() {
            if let Some(c) = c {
                assert_eq!(c.len(), d.span(i), "chunk {i}");
            }
        }
    }

    #[test]
    fn matches_a_vector_under_writes_and_resizes() {
        let mut d = Data::default();
        let mut model: Vec<u8> = Vec::new();
        let mut x = 12345u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for step in 0..400 {
            let limit = (4 * CHUNK + 100) as u64;
            match next(3) {
                0 => {
                    let len = next(limit) as usize;
                    d.resize(len);
                    model.resize(len, 0);
                }
                _ => {
                    let off = next(limit) as usize;
                    let n = next(2 * CHUNK as u64 + 3) as usize;
                    let data: Vec<u8> = (0..n).map(|k| ((k as u8) ^ (step as u8)) | 1).collect();
                    if off + n > model.len() {
                        d.resize(off + n);
                        model.resize(off + n, 0);
                    }
                    d.write(off, &data);
                    model[off..off + n].copy_from_slice(&data);
                }
            }
            check(&d, &model);
            let a = next(model.len() as u64 + 10) as usize;
            let b = next(model.len() as u64 + 10) as usize;
            let (a, b) = (a.min(b), a.max(b));
            let (ma, mb) = (a.min(model.len()), b.min(model.len()));
            assert_eq!(&d.read(a, b)[..], &model[ma..mb]);
        }
    }

    #[test]
    fn clones_share_until_written() {
        let big: Vec<u8> = (0..3 * CHUNK + 7).map(|i| i as u8).collect();
        let mut live = Data::from(big.clone());
        let durable = live.clone();
        for (a, b) in live.chunks.iter().zip(&durable.chunks) {
            assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
        }
        live.write(CHUNK + 1, b"xy");
        assert!(Arc::ptr_eq(live.chunks[0].as_ref().unwrap(), durable.chunks[0].as_ref().unwrap()));
        assert!(!Arc::ptr_eq(live.chunks[1].as_ref().unwrap(), durable.chunks[1].as_ref().unwrap()));
        assert_eq!(durable.to_vec(), big, "the durable copy keeps the old bytes");
        let mut want = big;
        want[CHUNK + 1..CHUNK + 3].copy_from_slice(b"xy");
        assert_eq!(live.to_vec(), want);
    }

    #[test]
    fn a_read_within_a_chunk_is_not_disturbed_by_later_writes() {
        let mut d = Data::from(vec![7u8; 2 * CHUNK]);
        let r = d.read(CHUNK + 10, CHUNK + 20);
        let whole = d.read(0, CHUNK);
        d.write(CHUNK + 10, &[1; 10]);
        d.write(0, &[2; 3]);
        assert_eq!(&r[..], &[7; 10]);
        assert!(whole.iter().all(|b| *b == 7));
        assert_eq!(&d.read(CHUNK + 9, CHUNK + 21)[..], &[7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 7]);
    }

    #[test]
    fn growing_is_sparse() {
        let mut d = Data::from(b"abc".to_vec());
        d.resize(1 << 30);
        assert_eq!(d.chunks.iter().filter(|c| c.is_some()).count(), 1);
        assert_eq!(&d.read(0, 5)[..], b"abc\0\0");
        d.resize(2);
        assert_eq!(d.to_vec(), b"ab");
    }
}
