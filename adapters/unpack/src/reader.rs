//! A synchronous `Read + Seek` view of a port file handle, for the archive
//! crates. Used only on blocking threads.

use bytes::Bytes;
use lanspread_ports::FileHandle;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;

/// First read after a seek: small, so that hopping between zip local
/// headers does not read megabytes each time.
const MIN_FILL: usize = 64 * 1024;
/// Read-ahead once reading is sequential (doubling from [`MIN_FILL`]).
const MAX_FILL: usize = 4 * crate::CHUNK;

/// Buffered reader over a [`FileHandle`].
pub(crate) struct FsReader {
    rt: Handle,
    file: Box<dyn FileHandle>,
    len: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
    next_fill: usize,
    /// Mirrors `pos`, for progress reports.
    position: Arc<AtomicU64>,
}

impl FsReader {
    pub(crate) fn new(rt: Handle, file: Box<dyn FileHandle>, len: u64) -> Self {
        FsReader { rt, file, len, pos: 0, buf: Bytes::new(), buf_start: 0, next_fill: MIN_FILL, position: Arc::new(AtomicU64::new(0)) }
    }

    /// A shared view of the current read position.
    pub(crate) fn position(&self) -> Arc<AtomicU64> {
        self.position.clone()
    }

    fn buf_end(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    fn set_pos(&mut self, pos: u64) {
        self.pos = pos;
        self.position.store(pos, Ordering::Relaxed);
    }

    fn fill(&mut self, want: usize) -> io::Result<()> {
        // Just past the buffer (maybe skipping a small header): sequential.
        let sequential = !self.buf.is_empty() && self.pos >= self.buf_end() && self.pos - self.buf_end() < MIN_FILL as u64;
        self.next_fill = if sequential { (self.next_fill * 2).min(MAX_FILL) } else { MIN_FILL };
        let n = self.next_fill.max(want);
        let data = self.rt.block_on(self.file.read_at(self.pos, n)).map_err(|e| io::Error::other(e.to_string()))?;
        self.buf_start = self.pos;
        self.buf = data;
        Ok(())
    }
}

impl Read for FsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        if !(self.buf_start..self.buf_end()).contains(&self.pos) {
            self.fill(out.len().min(MAX_FILL))?;
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let off = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - off);
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.set_pos(self.pos + n as u64);
        Ok(n)
    }
}

impl Seek for FsReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the archive"))?;
        self.set_pos(new);
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use lanspread_ports::FsResult;
    use std::sync::Mutex;

    struct Mem(Vec<u8>, Arc<Mutex<Vec<(u64, usize)>>>);

    #[async_trait]
    impl FileHandle for Mem {
        async fn read_at(&self, offset: u64, len: usize) -> FsResult<Bytes> {
            self.1.lock().unwrap().push((offset, len));
            let s = (offset as usize).min(self.0.len());
            let e = (s + len).min(self.0.len());
            Ok(Bytes::copy_from_slice(&self.0[s..e]))
        }
        async fn write_at(&self, _: u64, _: Bytes) -> FsResult<()> {
            unreachable!()
        }
        async fn set_len(&self, _: u64) -> FsResult<()> {
            unreachable!()
        }
        async fn len(&self) -> FsResult<u64> {
            Ok(self.0.len() as u64)
        }
        async fn sync(&self) -> FsResult<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn reads_seeks_and_ramps_up() {
        let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mem = Mem(data.clone(), log.clone());
        let rt = Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut r = FsReader::new(rt, Box::new(mem), data.len() as u64);
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            assert_eq!(all, data);
            // Sequential reads ramp up to the large read-ahead.
            assert!(log.lock().unwrap().iter().any(|&(_, n)| n == MAX_FILL));
            let fills = log.lock().unwrap().len();
            assert!(fills < 12, "{fills} fills");
            r.seek(SeekFrom::Start(1000)).unwrap();
            let mut b = [0u8; 10];
            r.read_exact(&mut b).unwrap();
            assert_eq!(&b, &data[1000..1010]);
            // Seeking back within the buffer does not read again.
            let before = log.lock().unwrap().len();
            r.seek(SeekFrom::Current(-5)).unwrap();
            r.read_exact(&mut b).unwrap();
            assert_eq!(&b, &data[1005..1015]);
            assert_eq!(log.lock().unwrap().len(), before);
            assert_eq!(r.seek(SeekFrom::End(-1)).unwrap(), data.len() as u64 - 1);
            assert_eq!(r.read(&mut b).unwrap(), 1);
            assert_eq!(r.read(&mut b).unwrap(), 0);
            assert!(r.seek(SeekFrom::Current(-(data.len() as i64) - 1)).is_err());
        })
        .await
        .unwrap();
    }
}
