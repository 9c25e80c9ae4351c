//! The server task: accepts connections and answers every protocol request
//! from the local library.

use super::ctx::{Ctx, Input};
use bytes::Bytes;
use lanspread_core::protocol::{ErrorCode, Request, Response, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, PROTOCOL_VERSION};
use lanspread_core::serve::{Reply, ServeView};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{Connection, ReadPiece, RecvStream, SendStream};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What the server may serve, published by the peer machine.
pub(crate) type ServeRx = watch::Receiver<Arc<ServeView>>;

/// Bytes read from disk per write to the stream.
const SEND_PIECE: usize = 1 << 20;

/// Most connections served at once; further ones are closed at once.
const MAX_CONNECTIONS: usize = 256;

/// Most connections one host (one IP address) may hold: a peer needs one or
/// two to us; a few dozen leave room for several peers on one machine
/// (tests, demos) while one host cannot take every slot.
const MAX_CONNECTIONS_PER_HOST: usize = 32;

/// Replies with file data one host may have in flight at once, across its
/// connections: a host whose readers stall holds at most this many pieces
/// in memory, and other hosts' requests never wait behind it. A
/// downloader keeps a few units in flight per peer.
const SENDS_PER_HOST: usize = 8;

/// Stream reset code of a reply whose reader stalled.
const RESET_STALLED: u32 = 6;

/// What the server holds per remote host.
struct Host {
    connections: usize,
    sends: Arc<tokio::sync::Semaphore>,
}

pub(crate) async fn run(sh: Arc<Ctx>, serve: ServeRx) {
    let mut stop = sh.shutdown_signal();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut hosts: BTreeMap<IpAddr, Host> = BTreeMap::new();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<IpAddr>();
    loop {
        let conn = tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(host) = ended.recv() => {
                if let Some(h) = hosts.get_mut(&host) {
                    h.connections -= 1;
                    if h.connections == 0 {
                        hosts.remove(&host);
                    }
                }
                continue;
            }
            c = sh.ports.transport.accept() => match c {
                Some(c) => Arc::<dyn Connection>::from(c),
                None => break,
            },
        };
        let host = conn.remote_addr().ip().to_canonical();
        let held =
            hosts.entry(host).or_insert_with(|| Host { connections: 0, sends: Arc::new(tokio::sync::Semaphore::new(SENDS_PER_HOST)) });
        if held.connections >= MAX_CONNECTIONS_PER_HOST {
            conn.close(3, "too many connections from your host");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            conn.close(3, "too many connections");
            continue;
        };
        held.connections += 1;
        let (sh2, serve, ended_tx, sends) = (sh.clone(), serve.clone(), ended_tx.clone(), held.sends.clone());
        sh.tasks.spawn(async move {
            serve_connection(sh2, conn, serve, sends).await;
            drop(slot);
            let _ = ended_tx.send(host);
        });
    }
}

/// Runs one send step, or gives up when the reader lets it stall for the
/// write deadline: `Ok(false)` means the caller must reset the stream (a
/// reader that never reads would otherwise hold a file and a buffer).
async fn within(sh: &Ctx, step: impl Future<Output = Result<(), WireError>>) -> Result<bool, WireError> {
    tokio::select! {
        biased;
        r = step => r.map(|()| true),
        _ = sh.ports.clock.sleep(sh.cfg.write_timeout) => Ok(false),
    }
}

async fn serve_connection(sh: Arc<Ctx>, conn: Arc<dyn Connection>, serve: ServeRx, sends: Arc<tokio::sync::Semaphore>) {
    let authorized = Arc::new(AtomicBool::new(false));
    let limit = Arc::new(tokio::sync::Semaphore::new(sh.cfg.max_streams_per_conn));
    let mut stop = sh.shutdown_signal();
    // A connection that does not authenticate in time loses its slot.
    let hello_deadline = sh.ports.clock.sleep(sh.cfg.hello_timeout);
    tokio::pin!(hello_deadline);
    let mut awaiting_hello = true;
    loop {
        let (send, recv) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            () = &mut hello_deadline, if awaiting_hello => {
                awaiting_hello = false;
                if authorized.load(Ordering::SeqCst) {
                    continue;
                }
                tracing::debug!("{} sent no Hello within {:?}; closing", conn.remote_addr(), sh.cfg.hello_timeout);
                conn.close(5, "no Hello in time");
                break;
            }
            s = conn.accept_bi() => match s {
                Ok(Some(s)) => s,
                _ => break,
            },
        };
        // Bounded concurrency per connection: a flood of streams waits here
        // (and QUIC's stream credit stops the peer from opening more).
        let Ok(permit) = limit.clone().acquire_owned().await else { break };
        let (sh2, conn, authorized, serve, sends) = (sh.clone(), conn.clone(), authorized.clone(), serve.clone(), sends.clone());
        sh.tasks.spawn(async move {
            let sh = sh2;
            let _permit = permit;
            let stream = Stream { conn: conn.as_ref(), authorized: &authorized, serve: &serve, sends: &sends };
            if let Err(e) = serve_stream(&sh, stream, send, recv).await {
                tracing::debug!("serving {}: {e}", conn.peer_id());
            }
        });
    }
}

async fn respond(sh: &Ctx, send: &mut dyn SendStream, resp: &Response) -> Result<(), WireError> {
    let sent = within(sh, async {
        wire::write_message(&mut *send, resp, MAX_RESPONSE_FRAME).await?;
        send.finish().await?;
        Ok(())
    })
    .await?;
    if !sent {
        send.reset(RESET_STALLED);
    }
    Ok(())
}

/// What one request stream is served with.
struct Stream<'a> {
    conn: &'a dyn Connection,
    /// Whether the connection said Hello (with the party proof).
    authorized: &'a AtomicBool,
    serve: &'a ServeRx,
    /// The host's share of data replies in flight.
    sends: &'a tokio::sync::Semaphore,
}

async fn serve_stream(
    sh: &Arc<Ctx>,
    stream: Stream<'_>,
    mut send: Box<dyn SendStream>,
    mut recv: Box<dyn RecvStream>,
) -> Result<(), WireError> {
    let Stream { conn, authorized, serve, sends } = stream;
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
            return respond(sh, send.as_mut(), &Response::error(code, e.to_string())).await;
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
                    sh,
                    send.as_mut(),
                    &Response::error(ErrorCode::BadRequest, "Hello does not match the TLS identity or protocol version"),
                )
                .await;
            }
            if !sh.pool.admits(&h, conn) {
                return respond(sh, send.as_mut(), &Response::error(ErrorCode::Unauthorized, "this LAN party needs its key")).await;
            }
            authorized.store(true, Ordering::SeqCst);
            let hello = sh.pool.our_hello(conn, &them, &me, "server");
            respond(sh, send.as_mut(), &Response::Hello(hello)).await?;
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
            respond(sh, send.as_mut(), &Response::error(ErrorCode::Unauthorized, "say Hello first")).await
        }
        Request::Ping { nonce } => {
            let library_rev = serve.borrow().revision;
            sh.tell(Input::Seen(conn.peer_id()));
            respond(sh, send.as_mut(), &Response::Pong { nonce, library_rev }).await
        }
        req => {
            let view = serve.borrow().clone();
            match view.handle(&req) {
                Reply::Message(m) => respond(sh, send.as_mut(), &m).await,
                Reply::Data { path, offset, len } => {
                    let _turn = sends.acquire().await;
                    send_data(sh, send.as_mut(), &path, offset, len).await
                }
                Reply::Pieces { pieces, len } => {
                    let _turn = sends.acquire().await;
                    send_pieces(sh, send.as_mut(), pieces, len).await
                }
            }
        }
    }
}

/// Sends `len` bytes of `path` from `offset`, one piece at a time. Each
/// piece is read under the open-file budget, which is released before the
/// piece is written: a reader that stalls holds no descriptor, only the
/// piece in memory, and only until the write deadline resets its stream.
async fn send_data(sh: &Ctx, send: &mut dyn SendStream, path: &lanspread_ports::RelPath, offset: u64, len: u64) -> Result<(), WireError> {
    let end = offset + len;
    let mut pos = offset;
    let mut started = false;
    loop {
        let want = ((end - pos) as usize).min(SEND_PIECE);
        let data = match read_piece(sh, path, pos, want).await {
            Ok(d) => d,
            Err(e) if !started => {
                return respond(sh, send, &Response::error(ErrorCode::Internal, format!("cannot read {path}: {e}"))).await
            }
            // The file shrank or failed mid-send: abort the stream; the
            // client sees a short read and retries elsewhere.
            Err(_) => {
                send.reset(2);
                return Ok(());
            }
        };
        if !started {
            started = true;
            if !within(sh, wire::write_message(&mut *send, &Response::Data { len }, MAX_REQUEST_FRAME)).await? {
                send.reset(RESET_STALLED);
                return Ok(());
            }
        }
        if !data.is_empty() && !within(sh, async { Ok(send.write(data).await?) }).await? {
            send.reset(RESET_STALLED);
            return Ok(());
        }
        pos += want as u64;
        if pos >= end {
            break;
        }
    }
    if !within(sh, async { Ok(send.finish().await?) }).await? {
        send.reset(RESET_STALLED);
    }
    Ok(())
}

/// Reads exactly `want` bytes of `path` at `pos` under the server's share
/// of the open-file budget; the file is closed before this returns.
async fn read_piece(sh: &Ctx, path: &lanspread_ports::RelPath, pos: u64, want: usize) -> Result<Bytes, String> {
    let _permit = sh.files.serve().await;
    let file = sh.local.fs().open_read(path).await.map_err(|e| e.to_string())?;
    match file.read_at(pos, want).await {
        Ok(d) if d.len() == want => Ok(d),
        Ok(d) => Err(format!("read {} bytes instead of {want}", d.len())),
        Err(e) => Err(e.to_string()),
    }
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
        Err(e) => return respond(sh, send, &Response::error(ErrorCode::Internal, format!("cannot read a unit: {e}"))).await,
    };
    // One write of at most a unit (1 MiB): a copy is cheaper than hundreds
    // of small writes through the transport.
    let mut body = bytes::BytesMut::with_capacity(len as usize);
    for piece in &data {
        body.extend_from_slice(piece);
    }
    let sent = within(sh, async {
        wire::write_message(&mut *send, &Response::Data { len }, MAX_REQUEST_FRAME).await?;
        send.write(body.freeze()).await?;
        send.finish().await?;
        Ok(())
    })
    .await?;
    if !sent {
        send.reset(RESET_STALLED);
    }
    Ok(())
}
