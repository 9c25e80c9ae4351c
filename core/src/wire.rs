//! Protocol IO over the transport port: one request per bidirectional stream.
//!
//! These helpers only use the [`lanspread_ports::transport`] traits; the
//! runtime and the tests share them.

use crate::protocol::{
    encode_stream_start, Decoded, ErrorResponse, ProtocolError, Request, Response, StreamStartDecoder, MAX_REQUEST_FRAME,
    MAX_RESPONSE_FRAME,
};
use bytes::{Bytes, BytesMut};
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
    let mut out = BytesMut::with_capacity(cap);
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
        other => Err(WireError::Unexpected(format!("{other:?}"))),
    }
}
