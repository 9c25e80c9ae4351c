//! A minimal zip writer for generated games: stored entries (the generated
//! content is random, so deflate would store it anyway), no zip64 (fewer
//! than 65,535 entries and 4 GiB), a fixed date, so the same files give the
//! same archive. No tool or crate needed, on CI either.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// 1980-01-01 00:00 in MS-DOS format (date, time).
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;
/// Version 2.0 (made by: Unix, so the mode in the external attributes counts).
const VERSION_NEEDED: u16 = 20;
const MADE_BY: u16 = (3 << 8) | 20;
/// Names are UTF-8.
const FLAGS: u16 = 1 << 11;
/// Regular file, mode 0644.
const EXTERNAL_ATTRS: u32 = 0o100_644 << 16;

fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
        *e = c;
    }
    t
}

fn crc32(table: &[u32; 256], data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, b| table[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8))
}

/// One entry of the central directory.
struct Entry {
    name: String,
    crc: u32,
    size: u32,
    offset: u32,
}

fn header(sig: u32, e: &Entry, central: bool) -> Vec<u8> {
    let mut h = Vec::with_capacity(46 + e.name.len());
    h.extend_from_slice(&sig.to_le_bytes());
    if central {
        h.extend_from_slice(&MADE_BY.to_le_bytes());
    }
    for v in [VERSION_NEEDED, FLAGS, 0, DOS_TIME, DOS_DATE] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in [e.crc, e.size, e.size] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // extra field
    if central {
        for v in [0u16, 0, 0] {
            // comment, disk, internal attributes
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(&EXTERNAL_ATTRS.to_le_bytes());
        h.extend_from_slice(&e.offset.to_le_bytes());
    }
    h.extend_from_slice(e.name.as_bytes());
    h
}

fn end_record(entries: usize, cd_size: u64, cd_offset: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(22);
    h.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, entries as u16, entries as u16] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&(cd_size as u32).to_le_bytes());
    h.extend_from_slice(&(cd_offset as u32).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h
}

/// Writes `files` (relative to `root`) into the zip `out`, stored; returns
/// the archive's size.
pub fn write_stored(root: &Path, files: &[PathBuf], out: &Path) -> Result<u64, String> {
    let err = |e: std::io::Error| format!("{}: {e}", out.display());
    if files.len() >= 0xffff {
        return Err(format!("{}: {} entries need zip64, which this writer does not do", out.display(), files.len()));
    }
    let table = crc_table();
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out).map_err(err)?);
    let (mut offset, mut entries) = (0u64, Vec::with_capacity(files.len()));
    for rel in files {
        let data = std::fs::read(root.join(rel)).map_err(|e| format!("{}: {e}", root.join(rel).display()))?;
        let name = rel.to_str().ok_or_else(|| format!("{}: not UTF-8", rel.display()))?.to_owned();
        if offset + data.len() as u64 + 30 + name.len() as u64 >= u64::from(u32::MAX) {
            return Err(format!("{}: more than 4 GiB needs zip64, which this writer does not do", out.display()));
        }
        let e = Entry { name, crc: crc32(&table, &data), size: data.len() as u32, offset: offset as u32 };
        let h = header(0x0403_4b50, &e, false);
        w.write_all(&h).and_then(|()| w.write_all(&data)).map_err(err)?;
        offset += (h.len() + data.len()) as u64;
        entries.push(e);
    }
    let cd_offset = offset;
    for e in &entries {
        let h = header(0x0201_4b50, e, true);
        w.write_all(&h).map_err(err)?;
        offset += h.len() as u64;
    }
    w.write_all(&end_record(entries.len(), offset - cd_offset, cd_offset)).map_err(err)?;
    w.flush().map_err(err)?;
    Ok(offset + 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_string() {
        assert_eq!(crc32(&crc_table(), b"123456789"), 0xcbf4_3926);
    }
}
