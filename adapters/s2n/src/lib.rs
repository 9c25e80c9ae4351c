//! Transport adapter on s2n-quic, with the mutual-TLS configuration of
//! `lanspread-tls` (rustls provider).
//!
//! s2n-quic has separate server and client endpoints: the server is bound
//! to the listen address, the client to an ephemeral port on the same IP.
//! Peers therefore see our outgoing connections coming from that ephemeral
//! port, not from the listen port.
//!
//! s2n-quic exposes the TLS session only during the handshake (event
//! `TlsExporterReady`), so the peer's certificate fingerprint and the
//! exporter values for [`TransportLimits::exporter_labels`] are captured
//! there, in the connection's event context.

#![forbid(unsafe_code)]

use async_trait::async_trait;
use bytes::Bytes;
use lanspread_ports::{BiStream, Connection, PeerId, RecvStream, SendStream, Transport, TransportError};
use lanspread_tls::addr::needs_scope;
use lanspread_tls::{AcceptQueue, ClientTls, Identity, TransportLimits, EXPORTER_LEN, STREAM_DROPPED_CODE};
use s2n_quic::client::Connect;
use s2n_quic::provider::event::{events, ConnectionInfo, ConnectionMeta, Subscriber};
use s2n_quic::provider::limits::Limits;
use s2n_quic::provider::tls::rustls as s2n_rustls;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Established incoming connections not yet taken by [`Transport::accept`].
const ACCEPT_QUEUE: usize = 64;

/// Why a dial to an IPv6 link-local address fails at once: s2n-quic's
/// socket addresses carry no scope id, so a datagram to `fe80::…` from a
/// socket not tied to one interface cannot be routed (the kernel refuses
/// it). Failing fast lets the caller's address race move on.
const LINK_LOCAL_UNSUPPORTED: &str = "s2n-quic cannot address IPv6 link-local peers (no scope id); use another address";

/// UDP socket buffer size we ask for (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`). With jumbo datagrams the default
/// ~200 KiB receive buffer overflows under load: 4 MiB lifted s2n's
/// loopback receive rate from ~780 to ~1000 MiB/s here.
const SOCKET_BUFFER: usize = 4 << 20;

fn other(context: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Other(format!("{context}: {e}"))
}

/// What the handshake revealed about one connection.
#[derive(Debug, Default, Clone)]
struct HandshakeInfo {
    peer: Option<PeerId>,
    exporters: Vec<(Vec<u8>, [u8; EXPORTER_LEN])>,
}

/// Event subscriber capturing [`HandshakeInfo`] at `TlsExporterReady`.
struct HandshakeRecorder {
    labels: Arc<Vec<Vec<u8>>>,
}

impl Subscriber for HandshakeRecorder {
    type ConnectionContext = HandshakeInfo;

    fn create_connection_context(&mut self, _meta: &ConnectionMeta, _info: &ConnectionInfo<'_>) -> Self::ConnectionContext {
        HandshakeInfo::default()
    }

    fn on_tls_exporter_ready(
        &mut self,
        context: &mut Self::ConnectionContext,
        _meta: &ConnectionMeta,
        event: &events::TlsExporterReady<'_>,
    ) {
        let session = &event.session;
        context.peer =
            session.peer_cert_chain_der().ok().and_then(|chain| chain.first().map(|der| lanspread_tls::peer_id_of(der.as_slice())));
        context.exporters = self
            .labels
            .iter()
            .filter_map(|label| {
                let mut out = [0u8; EXPORTER_LEN];
                session.tls_exporter(label, b"", &mut out).ok().map(|()| (label.clone(), out))
            })
            .collect();
    }
}

fn s2n_limits(limits: &TransportLimits) -> Result<Limits, TransportError> {
    let e = |e| other("limits", e);
    // s2n's send buffer is per stream; more than the peer's stream window
    // can never be in flight.
    let send_buffer = limits.send_window.min(limits.stream_receive_window);
    Limits::new()
        .with_max_open_remote_bidirectional_streams(limits.max_concurrent_bidi_streams.into())
        .map_err(e)?
        .with_max_open_remote_unidirectional_streams(0)
        .map_err(e)?
        .with_bidirectional_local_data_window(limits.stream_receive_window.into())
        .map_err(e)?
        .with_bidirectional_remote_data_window(limits.stream_receive_window.into())
        .map_err(e)?
        .with_data_window(limits.connection_receive_window.into())
        .map_err(e)?
        .with_max_send_buffer_size(send_buffer)
        .map_err(e)?
        .with_max_idle_timeout(limits.idle_timeout)
        .map_err(e)?
        .with_max_keep_alive_period(limits.keep_alive)
        .map_err(e)
}

fn io(addr: SocketAddr, limits: &TransportLimits) -> Result<s2n_quic::provider::io::tokio::Provider, TransportError> {
    let bind_err = |e: std::io::Error| TransportError::Other(format!("bind {addr}: {e}"));
    s2n_quic::provider::io::tokio::Builder::default()
        .with_receive_address(addr)
        .map_err(bind_err)?
        .with_max_mtu(limits.max_mtu.max(1228))
        .map_err(bind_err)?
        .with_recv_buffer_size(SOCKET_BUFFER)
        .map_err(bind_err)?
        .with_send_buffer_size(SOCKET_BUFFER)
        .map_err(bind_err)?
        .build()
        .map_err(bind_err)
}

/// Registry of live connections, so `shutdown` can close them. Weak, so it
/// never keeps a connection alive.
type LiveSet = Arc<Mutex<Vec<Weak<ConnInner>>>>;

/// An s2n-quic server + client pair implementing [`Transport`].
pub struct S2nTransport {
    local_id: PeerId,
    local_addr: SocketAddr,
    /// Bound to a link-local address: its socket is tied to that interface,
    /// so link-local peers on it can be reached (see [`LINK_LOCAL_UNSUPPORTED`]).
    bound_link_local: bool,
    client: Mutex<Option<s2n_quic::Client>>,
    client_tls: ClientTls,
    limits: Arc<TransportLimits>,
    queue: AcceptQueue<S2nConnection>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    live: LiveSet,
}

impl std::fmt::Debug for S2nTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2nTransport").field("local_id", &self.local_id).field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl S2nTransport {
    /// Starts a server bound to `addr` and a client on an ephemeral port of
    /// the same IP. An IPv6 address is bound with `IPV6_V6ONLY` off (the
    /// s2n-quic default), so `[::]:port` takes IPv4 and IPv6. Must be called
    /// from within a Tokio runtime.
    pub fn listen(addr: SocketAddr, identity: &Identity, limits: TransportLimits) -> Result<Arc<S2nTransport>, TransportError> {
        let labels = Arc::new(limits.exporter_labels.clone());

        let server_tls = s2n_rustls::Server::from(lanspread_tls::server_config(identity).map_err(|e| other("server tls", e))?);
        let server = s2n_quic::Server::builder()
            .with_tls(server_tls)
            .map_err(|e| other("server tls", e))?
            .with_io(io(addr, &limits)?)
            .map_err(|e| other("server io", e))?
            .with_limits(s2n_limits(&limits)?)
            .map_err(|e| other("server limits", e))?
            .with_event(HandshakeRecorder { labels: Arc::clone(&labels) })
            .map_err(|e| other("server events", e))?
            .start()
            .map_err(|e| other("server start", e))?;
        let local_addr = server.local_addr().map_err(|e| other("server local addr", e))?;

        let client_tls = ClientTls::new(identity).map_err(|e| other("client tls", e))?;
        // Same IP (so same family, interface and scope), any port.
        let mut client_bind = addr;
        client_bind.set_port(0);
        let client = s2n_quic::Client::builder()
            .with_tls(s2n_rustls::Client::from(client_tls.config()))
            .map_err(|e| other("client tls", e))?
            .with_io(io(client_bind, &limits)?)
            .map_err(|e| other("client io", e))?
            .with_limits(s2n_limits(&limits)?)
            .map_err(|e| other("client limits", e))?
            .with_event(HandshakeRecorder { labels })
            .map_err(|e| other("client events", e))?
            .start()
            .map_err(|e| other("client start", e))?;

        let limits = Arc::new(limits);
        let live = LiveSet::default();
        let (queue, tx) = AcceptQueue::new(ACCEPT_QUEUE);
        let scope = scope_of(&addr);
        let accept_task = tokio::spawn(accept_loop(server, tx, Arc::clone(&limits), Arc::clone(&live), scope, queue.shutdown_signal()));

        Ok(Arc::new(S2nTransport {
            local_id: identity.peer_id(),
            local_addr,
            bound_link_local: needs_scope(&addr),
            client: Mutex::new(Some(client)),
            client_tls,
            limits,
            queue,
            accept_task: Mutex::new(Some(accept_task)),
            live,
        }))
    }

    fn is_shut_down(&self) -> bool {
        self.queue.is_shut_down()
    }
}

async fn accept_loop(
    mut server: s2n_quic::Server,
    tx: mpsc::Sender<S2nConnection>,
    limits: Arc<TransportLimits>,
    live: LiveSet,
    scope: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            conn = server.accept() => conn,
            _ = shutdown.wait_for(|s| *s) => None,
        };
        let Some(conn) = conn else { break };
        match S2nConnection::new(conn, Arc::clone(&limits), &live, scope) {
            Ok(conn) => {
                let sent = tokio::select! {
                    r = tx.send(conn) => r.is_ok(),
                    _ = shutdown.wait_for(|s| *s) => false,
                };
                if !sent {
                    break;
                }
            }
            Err(e) => tracing::debug!(error = %e, "incoming connection refused"),
        }
    }
}

#[async_trait]
impl Transport for S2nTransport {
    fn local_id(&self) -> PeerId {
        self.local_id
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn accept(&self) -> Option<Box<dyn Connection>> {
        self.queue.accept().await.map(|c| Box::new(c) as Box<dyn Connection>)
    }

    async fn connect(&self, addr: SocketAddr, expected: Option<PeerId>) -> Result<Box<dyn Connection>, TransportError> {
        if self.is_shut_down() {
            return Err(TransportError::Closed);
        }
        if needs_scope(&addr) && !self.bound_link_local {
            return Err(TransportError::Connect { addr, reason: LINK_LOCAL_UNSUPPORTED.into() });
        }
        let dial = self.client_tls.dial(expected);
        let attempt = {
            let client = self.client.lock().map_err(|_| TransportError::Closed)?;
            let client = client.as_ref().ok_or(TransportError::Closed)?;
            client.connect(Connect::new(addr).with_server_name(dial.server_name()))
        };
        let conn = match attempt.await {
            Ok(conn) => conn,
            Err(e) => {
                if let Some((expected, got)) = dial.mismatch() {
                    return Err(TransportError::IdentityMismatch { addr, expected, got });
                }
                return Err(TransportError::Connect { addr, reason: e.to_string() });
            }
        };
        let conn = S2nConnection::new(conn, Arc::clone(&self.limits), &self.live, scope_of(&addr))?;
        if let Some(expected) = expected {
            if conn.0.peer != expected {
                conn.close(0, "identity mismatch");
                return Err(TransportError::IdentityMismatch { addr, expected, got: conn.0.peer });
            }
        }
        Ok(Box::new(conn))
    }

    async fn shutdown(&self) {
        self.queue.shut_down();
        let task = self.accept_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let client = self.client.lock().ok().and_then(|mut c| c.take());
        drop(client);
        let live: Vec<_> = self.live.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        for conn in live.iter().filter_map(Weak::upgrade) {
            conn.close(0);
        }
        for conn in self.queue.drain().await {
            conn.0.close(0);
        }
    }
}

/// Shared state of one connection; streams keep it alive so `shutdown`
/// can still reach the connection while they exist.
struct ConnInner {
    handle: s2n_quic::connection::Handle,
    acceptor: tokio::sync::Mutex<s2n_quic::connection::StreamAcceptor>,
    peer: PeerId,
    remote: SocketAddr,
    exporters: Vec<(Vec<u8>, [u8; EXPORTER_LEN])>,
    limits: Arc<TransportLimits>,
}

impl ConnInner {
    fn close(&self, code: u32) {
        self.handle.close(app_code(code));
    }
}

/// One authenticated s2n-quic connection.
struct S2nConnection(Arc<ConnInner>);

impl S2nConnection {
    /// `scope`: the interface of a link-local remote (s2n-quic drops it).
    fn new(conn: s2n_quic::Connection, limits: Arc<TransportLimits>, live: &LiveSet, scope: u32) -> Result<Self, TransportError> {
        let info = conn.query_event_context(|ctx: &HandshakeInfo| ctx.clone()).map_err(|e| other("handshake info", e))?;
        let Some(peer) = info.peer else {
            conn.close(s2n_quic::application::Error::UNKNOWN);
            return Err(TransportError::Other("peer presented no certificate".into()));
        };
        let remote = conn.remote_addr().map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        let remote = with_scope(lanspread_tls::addr::canonical(remote), scope);
        let (mut handle, acceptor) = conn.split();
        // Keep-alive pings (period: TransportLimits::keep_alive).
        let _ = handle.keep_alive(true);
        let inner =
            Arc::new(ConnInner { handle, acceptor: tokio::sync::Mutex::new(acceptor), peer, remote, exporters: info.exporters, limits });
        if let Ok(mut live) = live.lock() {
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&inner));
        }
        Ok(S2nConnection(inner))
    }
}

/// The scope id of `addr` (0 for anything but scoped IPv6).
fn scope_of(addr: &SocketAddr) -> u32 {
    match addr {
        SocketAddr::V6(v6) => v6.scope_id(),
        SocketAddr::V4(_) => 0,
    }
}

/// s2n-quic's addresses have no scope id: a link-local remote gets back
/// the one of the interface we dialed it on or listen on.
fn with_scope(addr: SocketAddr, scope: u32) -> SocketAddr {
    match addr {
        SocketAddr::V6(mut v6) if needs_scope(&addr) && v6.scope_id() == 0 => {
            v6.set_scope_id(scope);
            SocketAddr::V6(v6)
        }
        other => other,
    }
}

fn app_code(code: u32) -> s2n_quic::application::Error {
    s2n_quic::application::Error::new(code.into()).unwrap_or(s2n_quic::application::Error::UNKNOWN)
}

fn connection_error(e: s2n_quic::connection::Error) -> TransportError {
    TransportError::ConnectionLost(e.to_string())
}

fn stream_error(e: s2n_quic::stream::Error) -> TransportError {
    use s2n_quic::stream::Error as E;
    match e {
        E::StreamReset { error, .. } => TransportError::StreamReset(format!("code {}", *error)),
        E::ConnectionError { error, .. } => connection_error(error),
        e => TransportError::Other(e.to_string()),
    }
}

fn bi_stream(stream: s2n_quic::stream::BidirectionalStream, conn: &Arc<ConnInner>) -> BiStream {
    let (recv, send) = stream.split();
    (
        Box::new(S2nSend { inner: send, finished: false, _conn: Arc::clone(conn) }),
        Box::new(S2nRecv { inner: recv, buffered: Bytes::new(), _conn: Arc::clone(conn) }),
    )
}

#[async_trait]
impl Connection for S2nConnection {
    fn peer_id(&self) -> PeerId {
        self.0.peer
    }

    fn remote_addr(&self) -> SocketAddr {
        self.0.remote
    }

    async fn open_bi(&self) -> Result<BiStream, TransportError> {
        let mut handle = self.0.handle.clone();
        let stream = handle.open_bidirectional_stream().await.map_err(connection_error)?;
        Ok(bi_stream(stream, &self.0))
    }

    async fn accept_bi(&self) -> Result<Option<BiStream>, TransportError> {
        let mut acceptor = self.0.acceptor.lock().await;
        match acceptor.accept_bidirectional_stream().await {
            Ok(Some(stream)) => Ok(Some(bi_stream(stream, &self.0))),
            Ok(None) => Ok(None),
            // Closed by either side's application: a clean end.
            Err(s2n_quic::connection::Error::Application { .. }) => Ok(None),
            Err(e) => Err(connection_error(e)),
        }
    }

    fn export_keying_material(&self, label: &[u8]) -> Result<[u8; 32], TransportError> {
        if !self.0.limits.exporter_label_allowed(label) {
            return Err(TransportError::Other("exporter label not registered in TransportLimits::exporter_labels".into()));
        }
        self.0
            .exporters
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| *v)
            .ok_or_else(|| TransportError::Other("keying material export failed".into()))
    }

    fn close(&self, code: u32, _reason: &str) {
        // s2n-quic does not send a reason phrase for application closes.
        self.0.close(code);
    }
}

struct S2nSend {
    inner: s2n_quic::stream::SendStream,
    /// Set by `finish`/`reset`; a stream dropped before either is reset.
    finished: bool,
    _conn: Arc<ConnInner>,
}

#[async_trait]
impl SendStream for S2nSend {
    async fn write(&mut self, data: Bytes) -> Result<(), TransportError> {
        if data.is_empty() {
            return Ok(());
        }
        self.inner.send(data).await.map_err(stream_error)
    }

    async fn finish(&mut self) -> Result<(), TransportError> {
        self.finished = true;
        self.inner.finish().map_err(stream_error)
    }

    fn reset(&mut self, code: u32) {
        self.finished = true;
        let _ = self.inner.reset(app_code(code));
    }
}

impl Drop for S2nSend {
    fn drop(&mut self) {
        // s2n-quic would finish a dropped stream, making a truncated
        // transfer look complete; abandon it instead.
        if !self.finished {
            let _ = self.inner.reset(app_code(STREAM_DROPPED_CODE));
        }
    }
}

struct S2nRecv {
    inner: s2n_quic::stream::ReceiveStream,
    /// Remainder of a received chunk larger than the caller's `max`.
    buffered: Bytes,
    _conn: Arc<ConnInner>,
}

#[async_trait]
impl RecvStream for S2nRecv {
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, TransportError> {
        if max == 0 {
            return Ok(Some(Bytes::new()));
        }
        while self.buffered.is_empty() {
            match self.inner.receive().await.map_err(stream_error)? {
                Some(chunk) => self.buffered = chunk,
                None => return Ok(None),
            }
        }
        let n = max.min(self.buffered.len());
        Ok(Some(self.buffered.split_to(n)))
    }

    fn stop(&mut self, code: u32) {
        let _ = self.inner.stop_sending(app_code(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_defaults() {
        assert!(s2n_limits(&TransportLimits::default()).is_ok());
    }
}
