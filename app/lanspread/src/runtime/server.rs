//! The server task: accepts connections and answers every protocol request
//! from the local library.

use super::ctx::{Ctx, Input};
use bytes::Bytes;
use lanspread_core::protocol::{ErrorCode, Request, Response, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, PROTOCOL_VERSION};
use lanspread_core::serve::{Reply, ServeView};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{Connection, ReadPiece, RecvStream, SendStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What the server may serve, published by the peer machine.
pub(crate) type ServeRx = watch::Receiver<Arc<ServeView>>;

/// Bytes read from disk per write to the stream.
const SEND_PIECE: usize = 1 << 20;

/// Most connections served at once; further ones are closed at once.
const MAX_CONNECTIONS: usize = 256;

pub(crate) async fn run(sh: Arc<Ctx>, serve: ServeRx) {
    let mut stop = sh.shutdown_signal();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let conn = tokio::select! {
            biased;
            _ = stop.changed() => break,
            c = sh.ports.transport.accept() => match c {
                Some(c) => Arc::<dyn Connection>::from(c),
                None => break,
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            conn.close(3, "too many connections");
            continue;
        };
        let (sh2, serve) = (sh.clone(), serve.clone());
        sh.tasks.spawn(async move {
            serve_connection(sh2, conn, serve).await;
            drop(slot);
        });
    }
}

async fn serve_connection(sh: Arc<Ctx>, conn: Arc<dyn Connection>, serve: ServeRx) {
    let authorized = Arc::new(AtomicBool::new(false));
    let limit = Arc::new(tokio::sync::Semaphore::new(sh.cfg.max_streams_per_conn));
    let mut stop = sh.shutdown_signal();
    loop {
        let (send, recv) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            s = conn.accept_bi() => match s {
                Ok(Some(s)) => s,
                _ => break,
            },
        };
        // Bounded concurrency per connection: a flood of streams waits here
        // (and QUIC's stream credit stops the peer from opening more).
        let Ok(permit) = limit.clone().acquire_owned().await else { break };
        let (sh2, conn, authorized, serve) = (sh.clone(), conn.clone(), authorized.clone(), serve.clone());
        sh.tasks.spawn(async move {
            let sh = sh2;
            let _permit = permit;
            if let Err(e) = serve_stream(&sh, conn.as_ref(), &authorized, &serve, send, recv).await {
                tracing::debug!("serving {}: {e}", conn.peer_id());
            }
        });
    }
}

async fn respond(send: &mut dyn SendStream, resp: &Response) -> Result<(), WireError> {
    wire::write_message(send, resp, MAX_RESPONSE_FRAME).await?;
    send.finish().await?;
    Ok(())
}

async fn serve_stream(
    sh: &Arc<Ctx>,
    conn: &dyn Connection,
    authorized: &AtomicBool,
    serve: &ServeRx,
    mut send: Box<dyn SendStream>,
    mut recv: Box<dyn RecvStream>,
) -> Result<(), WireError> {
    // A peer that opens a stream and sends nothing (or trickles) loses it.
    let read = tokio::select! {
        biased;
        r = wire::read_message::<Request>(recv.as_mut(), MAX_REQUEST_FRAME) => r,
        _ = sh.ports.clock.sleep(sh.cfg.request_timeout) => {
            send.reset(4);
            return Ok(());
        }
    };
    let req: Request = match read {
        Ok((req, _)) => req,
        Err(WireError::Protocol(e)) => {
            // Answer in our version so the other side sees a clear reason.
            let code = if matches!(e, lanspread_core::protocol::ProtocolError::VersionMismatch { .. }) {
                ErrorCode::VersionMismatch
            } else {
                ErrorCode::BadRequest
            };
            return respond(send.as_mut(), &Response::error(code, e.to_string())).await;
        }
        Err(e) => return Err(e),
    };
    recv.stop(0);
    match req {
        Request::Hello(h) => {
            let them = conn.peer_id();
            let me = sh.ports.transport.local_id();
            if h.peer_id != them || h.version != PROTOCOL_VERSION {
                return respond(
                    send.as_mut(),
                    &Response::error(ErrorCode::BadRequest, "Hello does not match the TLS identity or protocol version"),
                )
                .await;
            }
            if !sh.pool.admits(&h, conn) {
                return respond(send.as_mut(), &Response::error(ErrorCode::Unauthorized, "this LAN party needs its key")).await;
            }
            authorized.store(true, Ordering::SeqCst);
            let hello = sh.pool.our_hello(conn, &them, &me, "server");
            respond(send.as_mut(), &Response::Hello(hello)).await?;
            if h.listen_port != 0 {
                // The address it dialed from, at its listen port; a link-local
                // address keeps its scope id.
                let mut addr = conn.remote_addr();
                addr.set_port(h.listen_port);
                sh.tell(Input::Hello { peer: them, addr });
            }
            Ok(())
        }
        _ if !authorized.load(Ordering::SeqCst) => {
            respond(send.as_mut(), &Response::error(ErrorCode::Unauthorized, "say Hello first")).await
        }
        Request::Ping { nonce } => {
            let library_rev = serve.borrow().revision;
            sh.tell(Input::Seen(conn.peer_id()));
            respond(send.as_mut(), &Response::Pong { nonce, library_rev }).await
        }
        req => {
            let view = serve.borrow().clone();
            match view.handle(&req) {
                Reply::Message(m) => respond(send.as_mut(), &m).await,
                Reply::Data { path, offset, len } => send_data(sh, send.as_mut(), &path, offset, len).await,
                Reply::Pieces { pieces, len } => send_pieces(sh, send.as_mut(), pieces, len).await,
            }
        }
    }
}

async fn send_data(sh: &Ctx, send: &mut dyn SendStream, path: &lanspread_ports::RelPath, offset: u64, len: u64) -> Result<(), WireError> {
    let fs = sh.local.fs();
    // The descriptor is held for the whole send, under the server's budget.
    let _permit = sh.files.serve().await;
    let file = match fs.open_read(path).await {
        Ok(f) => f,
        Err(e) => return respond(send, &Response::error(ErrorCode::Internal, format!("cannot read {path}: {e}"))).await,
    };
    wire::write_message(send, &Response::Data { len }, MAX_REQUEST_FRAME).await?;
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let want = ((end - pos) as usize).min(SEND_PIECE);
        let data: Bytes = match file.read_at(pos, want).await {
            Ok(d) if d.len() == want => d,
            // The file shrank or failed: abort the stream; the client sees a
            // short read and retries elsewhere.
            _ => {
                send.reset(2);
                return Ok(());
            }
        };
        send.write(data).await?;
        pos += want as u64;
    }
    send.finish().await?;
    Ok(())
}

/// Sends a unit. One piece (a chunk of a large file) streams from an open
/// file; many pieces (small files) are read in one batch of the `Fs` port,
/// one blocking call that holds one file open at a time, and sent together.
async fn send_pieces(sh: &Ctx, send: &mut dyn SendStream, mut pieces: Vec<ReadPiece>, len: u64) -> Result<(), WireError> {
    if pieces.len() == 1 {
        let p = pieces.remove(0);
        return send_data(sh, send, &p.path, p.offset, p.len as u64).await;
    }
    let read = {
        let _permit = sh.files.serve().await;
        sh.local.fs().read_pieces(&pieces).await
    };
    let data = match read {
        Ok(d) => d,
        Err(e) => return respond(send, &Response::error(ErrorCode::Internal, format!("cannot read a unit: {e}"))).await,
    };
    wire::write_message(send, &Response::Data { len }, MAX_REQUEST_FRAME).await?;
    // One write of at most a unit (1 MiB): a copy is cheaper than hundreds
    // of small writes through the transport.
    let mut body = bytes::BytesMut::with_capacity(len as usize);
    for piece in &data {
        body.extend_from_slice(piece);
    }
    send.write(body.freeze()).await?;
    send.finish().await?;
    Ok(())
}
