//! The server task: accepts connections and answers every protocol request
//! from the local library, and from the units a running download verified
//! (swarming, [`super::swarm`]).

use super::admission::{SendSlots, SLOT_HOLD};
use super::ctx::{Ctx, Input};
use super::party::{same_proof, Role};
use super::swarm::Claim;
use bytes::Bytes;
use lanspread_core::game::{GameId, Hash};
use lanspread_core::protocol::Hello;
use lanspread_core::protocol::{ErrorCode, Request, Response, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, PROTOCOL_VERSION};
use lanspread_core::serve::{Reply, ServeView};
use lanspread_core::wire::{self, WireError};
use lanspread_ports::{Connection, PeerId, ReadPiece, RecvStream, SendStream, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What the server may serve, published by the peer machine.
pub(crate) type ServeRx = watch::Receiver<Arc<ServeView>>;

/// Bytes read from disk per write to the stream.
const SEND_PIECE: usize = 1 << 20;

/// Most connections served at once; further ones are closed at once. A
/// QUIC connection shares the endpoint's one UDP socket (no descriptor
/// each), and peers close the connections they stop using (the pool's
/// `IDLE_KEPT`), so this is sized for a LAN party where hundreds of
/// downloaders ask one seeder, each holding one connection to it.
const MAX_CONNECTIONS: usize = 1024;

/// Most connections one host (one IP address) may hold: a peer needs one or
/// two to us; a few dozen leave room for several peers on one machine
/// (tests, demos) while one host cannot take every slot.
const MAX_CONNECTIONS_PER_HOST: usize = 32;

/// Replies with file data one host may have in flight at once, across its
/// connections: a host whose readers stall holds at most this many pieces
/// in memory, and other hosts' requests never wait behind it. A
/// downloader keeps a few units in flight per peer.
const SENDS_PER_HOST: usize = 8;

/// How long a `Have` long poll waits for news before answering without.
const HAVE_WAIT: Duration = Duration::from_secs(2);

/// Stream reset code of a reply whose reader stalled.
const RESET_STALLED: u32 = 6;

/// Party-key exchanges one host may start per [`ATTEMPT_WINDOW`]: each
/// tests one guess of the words, so this bounds online guessing. A peer
/// needs one per connection.
const ATTEMPTS_PER_HOST: usize = 20;
/// The window of [`ATTEMPTS_PER_HOST`].
const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);

/// What the server holds per remote host.
struct Host {
    connections: usize,
    share: Arc<HostShare>,
}

/// What the connections of one host share.
struct HostShare {
    /// Data replies in flight ([`SENDS_PER_HOST`]).
    sends: tokio::sync::Semaphore,
    /// Data replies admitted and sending.
    sending: AtomicUsize,
    /// When its recent party-key exchanges started.
    attempts: Mutex<VecDeque<Timestamp>>,
}

impl HostShare {
    fn new() -> Self {
        HostShare { sends: tokio::sync::Semaphore::new(SENDS_PER_HOST), sending: AtomicUsize::new(0), attempts: Mutex::default() }
    }

    /// Prunes attempts older than the window; returns whether none is left.
    fn forget_old_attempts(&self, now: Timestamp) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        while attempts.front().is_some_and(|t| now.saturating_since(*t) >= ATTEMPT_WINDOW) {
            attempts.pop_front();
        }
        attempts.is_empty()
    }

    /// Records a party-key exchange, unless the host used up its attempts.
    fn try_attempt(&self, now: Timestamp) -> bool {
        self.forget_old_attempts(now);
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if attempts.len() >= ATTEMPTS_PER_HOST {
            return false;
        }
        attempts.push_back(now);
        true
    }
}

pub(crate) async fn run(sh: Arc<Ctx>, serve: ServeRx) {
    let mut stop = sh.shutdown_signal();
    let sends = Arc::new(SendSlots::new());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut hosts: BTreeMap<IpAddr, Host> = BTreeMap::new();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<IpAddr>();
    // This task serves one identity: a new one restarts it.
    let transport = sh.transport();
    loop {
        let conn = tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(host) = ended.recv() => {
                if let Some(h) = hosts.get_mut(&host) {
                    h.connections -= 1;
                }
                // A host is forgotten once it has no connection and no
                // recent party-key attempt.
                let now = sh.ports.clock.now();
                hosts.retain(|_, h| h.connections > 0 || !h.share.forget_old_attempts(now));
                continue;
            }
            c = transport.accept() => match c {
                Some(c) => Arc::<dyn Connection>::from(c),
                None => break,
            },
        };
        let host = conn.remote_addr().ip().to_canonical();
        let held = hosts.entry(host).or_insert_with(|| Host { connections: 0, share: Arc::new(HostShare::new()) });
        if held.connections >= MAX_CONNECTIONS_PER_HOST {
            conn.close(3, "too many connections from your host");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            conn.close(3, "too many connections");
            continue;
        };
        held.connections += 1;
        let (sh2, serve, ended_tx, share, sends) = (sh.clone(), serve.clone(), ended_tx.clone(), held.share.clone(), sends.clone());
        sh.tasks.spawn(async move {
            serve_connection(sh2, conn, serve, share, sends).await;
            drop(slot);
            let _ = ended_tx.send(host);
        });
    }
}

/// One step of a reply: a framed message, then raw bytes, then the end of
/// the stream, each optional.
struct Step<'a> {
    frame: Option<(&'a Response, usize)>,
    body: Option<Bytes>,
    finish: bool,
}

/// Sends `step`, or resets the stream when its reader lets the step stall
/// for the write deadline (a reader that never reads would otherwise hold a
/// file and a buffer). Returns whether the step went through.
async fn send_step(sh: &Ctx, send: &mut dyn SendStream, step: Step<'_>) -> Result<bool, WireError> {
    // The upload cap paces the bytes before the write deadline runs.
    sh.rates.upload(step.body.as_ref().map_or(0, |b| b.len() as u64)).await;
    let write = async {
        if let Some((msg, max)) = step.frame {
            wire::write_message(&mut *send, msg, max).await?;
        }
        if let Some(body) = step.body.filter(|b| !b.is_empty()) {
            send.write(body).await?;
        }
        if step.finish {
            send.finish().await?;
        }
        Ok::<(), WireError>(())
    };
    let sent = tokio::select! {
        biased;
        r = write => { r?; true }
        _ = sh.ports.clock.sleep(sh.cfg.write_timeout) => false,
    };
    if !sent {
        send.reset(RESET_STALLED);
    }
    Ok(sent)
}

async fn serve_connection(sh: Arc<Ctx>, conn: Arc<dyn Connection>, serve: ServeRx, host: Arc<HostShare>, sends: Arc<SendSlots>) {
    let handshake = Arc::new(Handshake::default());
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
                if handshake.authorized.load(Ordering::SeqCst) {
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
        let (sh2, conn, handshake, serve, host, sends) =
            (sh.clone(), conn.clone(), handshake.clone(), serve.clone(), host.clone(), sends.clone());
        sh.tasks.spawn(async move {
            let sh = sh2;
            let _permit = permit;
            let stream = Stream { conn: conn.as_ref(), handshake: &handshake, serve: &serve, host: &host, sends: &sends };
            if let Err(e) = serve_stream(&sh, stream, send, recv).await {
                tracing::debug!("serving {}: {e}", conn.peer_id());
            }
        });
    }
}

async fn respond(sh: &Ctx, send: &mut dyn SendStream, resp: &Response) -> Result<(), WireError> {
    send_step(sh, send, Step { frame: Some((resp, MAX_RESPONSE_FRAME)), body: None, finish: true }).await.map(drop)
}

/// The handshake state of one connection.
#[derive(Default)]
struct Handshake {
    /// It said Hello (and, in a party, confirmed the key).
    authorized: AtomicBool,
    /// A party-key exchange was started (one per connection).
    exchanged: AtomicBool,
    /// Between a party member's Hello and its Confirm: the confirmation we
    /// expect and where its server listens.
    pending: Mutex<Option<([u8; 32], Option<SocketAddr>)>>,
}

/// What one request stream is served with.
struct Stream<'a> {
    conn: &'a dyn Connection,
    handshake: &'a Handshake,
    serve: &'a ServeRx,
    /// What the connections of the client's host share.
    host: &'a HostShare,
    /// The global admission of data replies.
    sends: &'a SendSlots,
}

async fn serve_stream(
    sh: &Arc<Ctx>,
    stream: Stream<'_>,
    mut send: Box<dyn SendStream>,
    mut recv: Box<dyn RecvStream>,
) -> Result<(), WireError> {
    let Stream { conn, handshake, serve, host, sends } = stream;
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
        Request::Hello(h) => hello(sh, conn, handshake, host, h, send.as_mut()).await,
        Request::Confirm { proof } => confirm(sh, conn, handshake, &proof, send.as_mut()).await,
        _ if !handshake.authorized.load(Ordering::SeqCst) => {
            respond(sh, send.as_mut(), &Response::error(ErrorCode::Unauthorized, "say Hello first")).await
        }
        Request::Ping { nonce } => {
            let library_rev = serve.borrow().revision;
            sh.tell(Input::Seen(conn.peer_id()));
            respond(sh, send.as_mut(), &Response::Pong { nonce, library_rev }).await
        }
        Request::Have { id, digest, since } => {
            let answer = have(sh, serve, conn.peer_id(), &id, &digest, since).await;
            respond(sh, send.as_mut(), &answer).await
        }
        req => {
            let (reply, claim) = reply_to(sh, &serve.borrow().clone(), &req, conn.peer_id());
            match reply {
                Reply::Message(m) => respond(sh, send.as_mut(), &m).await,
                data => send_reply(sh, send.as_mut(), host, sends, data, claim).await,
            }
        }
    }
}

/// What to answer: from the served library, or for a unit of a version
/// this peer is still downloading, from what it verified so far. A unit
/// that just went to another downloader of its swarm is deferred.
fn reply_to(sh: &Ctx, view: &ServeView, req: &Request, asker: PeerId) -> (Reply, Option<Claim>) {
    let Request::GetUnit { id, digest, unit } = req else { return (view.handle(req), None) };
    let served = view.serves(id, digest);
    let Some(swarm) = sh.swarms.find(id, digest, served) else { return (view.handle(req), None) };
    let source = if served { None } else { swarm.unit_source(*unit) };
    if !served && source.is_none() {
        return (view.handle(req), None);
    }
    // A downloader is a member of the swarm from its first request on.
    swarm.note_member(asker);
    match swarm.claim(*unit, asker, sh.ports.clock.now()).map(Some) {
        Err(wait) => (Reply::Message(Response::Elsewhere { retry_after_ms: wait.as_millis().max(1) as u32 }), None),
        Ok(claim) => (source.map_or_else(|| view.handle(req), |s| s.reply(id, *unit)), claim),
    }
}

/// Sends file data once the client's host and the server have room, or
/// says `Busy` when too many replies already wait.
async fn send_reply(
    sh: &Ctx,
    send: &mut dyn SendStream,
    host: &HostShare,
    sends: &SendSlots,
    reply: Reply,
    claim: Option<Claim>,
) -> Result<(), WireError> {
    let _turn = host.sends.acquire().await;
    let mut slot = match sends.admit(&host.sending).await {
        Ok(slot) => slot,
        Err(wait) => {
            if let Some(claim) = claim {
                claim.withdraw();
            }
            let busy = Response::Busy { retry_after_ms: wait.as_millis() as u32 };
            return respond(sh, send, &busy).await;
        }
    };
    let started = sh.ports.clock.now();
    let reply = async {
        match reply {
            Reply::Data { path, offset, len } => send_data(sh, send, &path, offset, len).await,
            Reply::Pieces { pieces, len } => send_pieces(sh, send, pieces, len).await,
            Reply::Message(m) => respond(sh, send, &m).await,
        }
    };
    tokio::pin!(reply);
    let sent = tokio::select! {
        biased;
        r = &mut reply => r,
        _ = sh.ports.clock.sleep(SLOT_HOLD) => {
            slot.release_slot();
            reply.await
        }
    };
    let now = sh.ports.clock.now();
    sends.served(now.saturating_since(started));
    sh.last_upload_ms.store(now.as_duration().as_millis() as u64, Ordering::Relaxed);
    drop(slot);
    if let Some(claim) = claim {
        claim.sent(sh.ports.clock.now());
    }
    sent
}

/// Answers a `Have` long poll: at once when there is news for the asker,
/// else when news comes or after [`HAVE_WAIT`]. The asker becomes a member
/// of the version's swarm (and this peer's own download hears of it).
async fn have(sh: &Ctx, serve: &ServeRx, asker: PeerId, id: &GameId, digest: &Hash, since: u32) -> Response {
    let not_held = || Response::error(ErrorCode::UnknownGame, format!("{id} with this manifest is not held here"));
    let served = || serve.borrow().serves(id, digest);
    let Some(swarm) = sh.swarms.find(id, digest, served()).filter(|s| s.holds_any() || served()) else { return not_held() };
    swarm.note_member(asker);
    let mut changed = swarm.subscribe();
    let deadline = sh.ports.clock.now() + HAVE_WAIT;
    let mut stop = sh.shutdown_signal();
    loop {
        if let Some(news) = swarm.news_for(&asker, since, served()) {
            return Response::Have(news);
        }
        let left = deadline.saturating_since(sh.ports.clock.now());
        let woke = tokio::select! {
            biased;
            _ = stop.changed() => false,
            () = changed.changed() => true,
            _ = sh.ports.clock.sleep(left) => false,
        };
        if !woke {
            // A served version always has news; a download that ended
            // without a commit holds nothing any more.
            return swarm.quiet_news(&asker, since).map_or_else(not_held, Response::Have);
        }
    }
}

/// Server side of Hello. Without a party key the connection is admitted
/// at once. In a party, the client's half of the key exchange is answered
/// with ours and our confirmation; the client is admitted by its `Confirm`.
async fn hello(
    sh: &Ctx,
    conn: &dyn Connection,
    handshake: &Handshake,
    host: &HostShare,
    h: Hello,
    send: &mut dyn SendStream,
) -> Result<(), WireError> {
    let (them, me) = (conn.peer_id(), sh.transport().local_id());
    if h.peer_id != them || h.version != PROTOCOL_VERSION {
        let refusal = Response::error(ErrorCode::BadRequest, "Hello does not match the TLS identity or protocol version");
        return respond(sh, send, &refusal).await;
    }
    // The address it dialed from, at its listen port; a link-local address
    // keeps its scope id.
    let listens_at = (h.listen_port != 0).then(|| {
        let mut addr = conn.remote_addr();
        addr.set_port(h.listen_port);
        addr
    });
    let Some(key) = sh.pool.party_key() else {
        handshake.authorized.store(true, Ordering::SeqCst);
        respond(sh, send, &Response::Hello(sh.pool.our_hello(None, None))).await?;
        admitted(sh, them, listens_at);
        return Ok(());
    };
    let unauthorized = |why: &str| Response::error(ErrorCode::Unauthorized, why);
    let Some(theirs) = h.pake else { return respond(sh, send, &unauthorized("this LAN party needs its key")).await };
    if handshake.exchanged.swap(true, Ordering::SeqCst) {
        return respond(sh, send, &unauthorized("one party-key exchange per connection")).await;
    }
    if !host.try_attempt(sh.ports.clock.now()) {
        respond(sh, send, &unauthorized("too many party-key attempts from your host; wait a minute")).await?;
        conn.close(7, "too many party-key attempts");
        return Ok(());
    }
    let Some(exchange) = key.start(conn) else {
        return respond(sh, send, &Response::error(ErrorCode::Internal, "no TLS exporter for the party key")).await;
    };
    let ours = exchange.message.clone();
    let Some(session) = exchange.finish(&theirs) else {
        return respond(sh, send, &unauthorized("malformed party-key exchange")).await;
    };
    *handshake.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some((session.proof(Role::Client, &them, &me), listens_at));
    let hello = sh.pool.our_hello(Some(ours), Some(session.proof(Role::Server, &them, &me)));
    respond(sh, send, &Response::Hello(hello)).await
}

/// A party member's key confirmation: the connection is admitted if it
/// matches, closed if not.
async fn confirm(
    sh: &Ctx,
    conn: &dyn Connection,
    handshake: &Handshake,
    proof: &[u8; 32],
    send: &mut dyn SendStream,
) -> Result<(), WireError> {
    let pending = handshake.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
    match pending {
        Some((want, listens_at)) if same_proof(proof, &want) => {
            handshake.authorized.store(true, Ordering::SeqCst);
            respond(sh, send, &Response::Confirmed).await?;
            admitted(sh, conn.peer_id(), listens_at);
            Ok(())
        }
        _ => {
            respond(sh, send, &Response::error(ErrorCode::Unauthorized, "this LAN party needs its key")).await?;
            conn.close(7, "wrong party key");
            Ok(())
        }
    }
}

/// Tells the peer machine about a peer that authenticated.
fn admitted(sh: &Ctx, peer: lanspread_ports::PeerId, listens_at: Option<SocketAddr>) {
    if let Some(addr) = listens_at {
        sh.tell(Input::Hello { peer, addr });
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
        // The Data frame goes with the first piece; the last piece ends the stream.
        let header = Response::Data { len };
        let frame = (!started).then_some((&header, MAX_REQUEST_FRAME));
        started = true;
        pos += want as u64;
        let finish = pos >= end;
        if !send_step(sh, send, Step { frame, body: Some(data), finish }).await? || finish {
            return Ok(());
        }
    }
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
    let step = Step { frame: Some((&Response::Data { len }, MAX_REQUEST_FRAME)), body: Some(body.freeze()), finish: true };
    send_step(sh, send, step).await.map(drop)
}
