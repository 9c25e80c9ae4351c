//! Protocol IO over the transport port: one request per bidirectional stream.
//!
//! These helpers only use the [`lanspread_ports::transport`] traits; the
//! runtime and the tests share them.

use crate::protocol::{
    encode_stream_start, Decoded, ErrorResponse, ProtocolError, Request, Response, StreamStartDecoder, MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME,
};
use bytes::{Buf, Bytes, BytesMut};
use lanspread_ports::transport::{Connection, RecvStream, SendStream, TransportError};
use serde::de::DeserializeOwned;

/// Largest piece read from a stream at once.
pub const READ_PIECE: usize = 1 << 20;

/// Failures of a protocol exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The bytes were not valid protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The peer answered with an error.
    #[error("peer refused: {0}")]
    Remote(ErrorResponse),
    /// The peer answered with the wrong kind of message.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The peer is busy and asks to be asked again after this long.
    #[error("peer busy; retry after {0:?}")]
    Busy(std::time::Duration),
    /// The peer sent this unit to another swarm member moments ago.
    #[error("unit sent to another swarm member; here again after {0:?}")]
    Elsewhere(std::time::Duration),
    /// The peer sent more or fewer raw bytes than announced or requested.
    #[error("expected {expected} bytes, peer sent {got}")]
    Length {
        /// Expected.
        expected: u64,
        /// Got (at least).
        got: u64,
    },
}

/// Reads the header and first frame of a stream. Returns the message and
/// any raw bytes that arrived after it.
pub async fn read_message<T: DeserializeOwned>(recv: &mut dyn RecvStream, max: usize) -> Result<(T, Bytes), WireError> {
    let mut dec = StreamStartDecoder::new(max);
    loop {
        let want = dec.max_needed().min(READ_PIECE);
        match recv.read(want).await? {
            Some(data) => {
                if let Decoded::Message(m, rest) = dec.push::<T>(&data)? {
                    return Ok((m, rest));
                }
            }
            None => return Err(dec.finish().into()),
        }
    }
}

/// Writes the header and one frame.
pub async fn write_message<T: serde::Serialize>(send: &mut dyn SendStream, msg: &T, max: usize) -> Result<(), WireError> {
    send.write(encode_stream_start(msg, max)?).await?;
    Ok(())
}

/// Reads exactly `len` raw bytes (the first of which may already be in
/// `leftover`), then expects the end of the stream. Never buffers more than
/// `len` bytes.
pub async fn read_exact(recv: &mut dyn RecvStream, leftover: Bytes, len: u64) -> Result<Bytes, WireError> {
    let cap = usize::try_from(len).map_err(|_| WireError::Length { expected: len, got: 0 })?;
    if leftover.len() as u64 > len {
        return Err(WireError::Length { expected: len, got: leftover.len() as u64 });
    }
    if leftover.len() == cap {
        expect_end(recv, len).await?;
        return Ok(leftover);
    }
    let mut out = payload_buffer(cap);
    out.extend_from_slice(&leftover);
    while out.len() < cap {
        let want = (cap - out.len()).min(READ_PIECE);
        match recv.read(want).await? {
            Some(d) => out.extend_from_slice(&d),
            None => return Err(WireError::Length { expected: len, got: out.len() as u64 }),
        }
    }
    expect_end(recv, len).await?;
    Ok(out.freeze())
}

/// Payloads of at least this size are received into page-aligned memory.
const ALIGNED_PAYLOAD: usize = 64 * 1024;
/// The alignment: what `O_DIRECT` asks of a buffer.
const PAYLOAD_ALIGN: usize = 4096;

/// An empty buffer with room for `cap` bytes. A large one starts at a page
/// boundary, so a filesystem adapter can write the chunk to disk straight
/// from it (direct IO needs aligned memory) instead of copying it first.
fn payload_buffer(cap: usize) -> BytesMut {
    if cap < ALIGNED_PAYLOAD {
        return BytesMut::with_capacity(cap);
    }
    let mut b = BytesMut::with_capacity(cap + PAYLOAD_ALIGN);
    let pad = b.as_ptr().align_offset(PAYLOAD_ALIGN);
    if pad < PAYLOAD_ALIGN {
        b.resize(pad, 0);
        b.advance(pad);
    }
    b
}

async fn expect_end(recv: &mut dyn RecvStream, len: u64) -> Result<(), WireError> {
    match recv.read(1).await? {
        None => Ok(()),
        Some(d) if d.is_empty() => Ok(()),
        Some(_) => {
            recv.stop(0);
            Err(WireError::Length { expected: len, got: len + 1 })
        }
    }
}

/// Sends a request on a new stream and reads a framed answer (no raw data).
pub async fn request(conn: &dyn Connection, req: &Request) -> Result<Response, WireError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(send.as_mut(), req, MAX_REQUEST_FRAME).await?;
    send.finish().await?;
    let (resp, rest): (Response, Bytes) = read_message(recv.as_mut(), MAX_RESPONSE_FRAME).await?;
    if !rest.is_empty() {
        return Err(WireError::Unexpected("raw bytes after a framed answer".into()));
    }
    match resp {
        Response::Error(e) => Err(WireError::Remote(e)),
        r => Ok(r),
    }
}

/// Sends a data request and reads exactly `expected_len` raw bytes.
pub async fn request_data(conn: &dyn Connection, req: &Request, expected_len: u64) -> Result<Bytes, WireError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(send.as_mut(), req, MAX_REQUEST_FRAME).await?;
    send.finish().await?;
    let (resp, rest): (Response, Bytes) = read_message(recv.as_mut(), MAX_REQUEST_FRAME).await?;
    match resp {
        Response::Data { len } if len == expected_len => read_exact(recv.as_mut(), rest, len).await,
        Response::Data { len } => {
            recv.stop(0);
            Err(WireError::Length { expected: expected_len, got: len })
        }
        Response::Error(e) => Err(WireError::Remote(e)),
        Response::Busy { retry_after_ms } => Err(WireError::Busy(std::time::Duration::from_millis(retry_after_ms.into()))),
        Response::Elsewhere { retry_after_ms } => Err(WireError::Elsewhere(std::time::Duration::from_millis(retry_after_ms.into()))),
        other => Err(WireError::Unexpected(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payload_buffers_start_on_a_page_and_hold_the_payload() {
        for cap in [ALIGNED_PAYLOAD, 1 << 20, (1 << 20) + 17] {
            let mut b = payload_buffer(cap);
            assert!(b.is_empty());
            assert!(b.as_ptr().addr().is_multiple_of(PAYLOAD_ALIGN), "{cap}");
            assert!(b.capacity() >= cap, "{cap}");
            let start = b.as_ptr();
            b.extend_from_slice(&vec![7u8; cap]);
            assert_eq!(b.as_ptr(), start, "filling it must not reallocate ({cap})");
        }
        let small = payload_buffer(100);
        assert!(small.capacity() >= 100);
    }
}
