//! Transport adapter on quinn: one [`quinn::Endpoint`] that both listens and
//! dials, with the mutual-TLS configuration of `lanspread-tls`.

#![forbid(unsafe_code)]

mod plain_udp;

use async_trait::async_trait;
use bytes::Bytes;
use lanspread_ports::{BiStream, Connection, PeerId, RecvStream, SendStream, Transport, TransportError};
use lanspread_tls::{AcceptQueue, ClientTls, Identity, TransportLimits, EXPORTER_LEN, STREAM_DROPPED_CODE};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, ReadError, TransportConfig, WriteError};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Incoming connections that finished their handshake but were not yet
/// taken by [`Transport::accept`].
const ACCEPT_QUEUE: usize = 64;

/// IPv6 + UDP header bytes: an IP MTU minus this is a safe UDP payload.
const IP_UDP_OVERHEAD: u16 = 48;

/// Largest UDP payload quinn may discover and send. quinn 0.11 batches up
/// to 10 datagrams per GSO `sendmsg`, and a batch over 64 KiB fails with
/// EMSGSIZE, which quinn-udp silently treats as sent: with a ~9000-byte
/// MTU whole batches vanish, black-hole detection fires and transfers
/// stall for seconds. 10 x 6500 stays below the limit and still gives
/// ~1.2 GB/s on loopback (the same as 8952 without GSO).
const MAX_GSO_SAFE_PAYLOAD: u16 = 6500;

/// A quinn endpoint implementing [`Transport`].
pub struct QuinnTransport {
    endpoint: quinn::Endpoint,
    local_id: PeerId,
    local_addr: SocketAddr,
    client_tls: ClientTls,
    limits: Arc<TransportLimits>,
    queue: AcceptQueue<QuinnConnection>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for QuinnTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuinnTransport").field("local_id", &self.local_id).field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

fn other(context: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Other(format!("{context}: {e}"))
}

/// The quinn transport parameters derived from `limits`.
fn transport_config(limits: &TransportLimits) -> Result<TransportConfig, TransportError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.max_concurrent_bidi_streams.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(limits.stream_receive_window.into())
        .receive_window(limits.connection_receive_window.into())
        .send_window(u64::from(limits.send_window))
        .max_idle_timeout(Some(IdleTimeout::try_from(limits.idle_timeout).map_err(|e| other("idle timeout", e))?))
        .keep_alive_interval(Some(limits.keep_alive))
        .datagram_receive_buffer_size(None);
    let upper = limits.max_mtu.saturating_sub(IP_UDP_OVERHEAD).min(MAX_GSO_SAFE_PAYLOAD);
    if upper > 1200 {
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(upper).interval(Duration::from_secs(60));
        t.mtu_discovery_config(Some(mtu));
    }
    Ok(t)
}

/// Socket buffer size we ask for (the kernel may cap it, e.g. at
/// `net.core.rmem_max`). Large datagrams eat the default ~200 KiB receive
/// buffer in a handful of packets, and the resulting loss cripples
/// throughput with a jumbo MTU.
const SOCKET_BUFFER: usize = 4 << 20;

fn enlarge_socket_buffers(socket: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not enlarge UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not enlarge UDP send buffer");
    }
}

/// How the endpoint's socket is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datagrams {
    /// quinn-udp where the UDP stack allows it (ECN, segmentation offload),
    /// else [`plain_udp`].
    Best,
    /// Always [`plain_udp`] (tests of that path on any system).
    Plain,
}

/// A quinn endpoint on `socket`, through quinn-udp unless the stack
/// refuses what it needs (see [`plain_udp`]) or `datagrams` says plain.
fn make_endpoint(
    config: EndpointConfig,
    server: quinn::ServerConfig,
    socket: std::net::UdpSocket,
    runtime: Arc<dyn quinn::Runtime>,
    datagrams: Datagrams,
) -> std::io::Result<quinn::Endpoint> {
    let offloads = match datagrams {
        Datagrams::Best => quinn::udp::UdpSocketState::new((&socket).into()),
        Datagrams::Plain => Err(std::io::ErrorKind::Unsupported.into()),
    };
    match offloads {
        Ok(_) => quinn::Endpoint::new(config, Some(server), socket, runtime),
        Err(e) => {
            if datagrams == Datagrams::Best {
                tracing::warn!(error = %e, "this system's UDP stack refuses ECN or packet information: sending plain datagrams");
            }
            let plain: Arc<dyn quinn::AsyncUdpSocket> = Arc::new(plain_udp::PlainUdp::new(socket)?);
            quinn::Endpoint::new_with_abstract_socket(config, Some(server), plain, runtime)
        }
    }
}

/// Binds the endpoint's UDP socket. An IPv6 address is bound with
/// `IPV6_V6ONLY` off, so `[::]:port` also takes IPv4 (dual stack, whatever
/// the OS default: Linux follows a sysctl, Windows defaults to v6-only); a
/// peer found at an IPv6 link-local address can then be dialed and can
/// dial us, and IPv4 keeps working on the same port.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(%addr, error = %e, "cannot listen dual-stack; IPv6 only");
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

impl QuinnTransport {
    /// Binds `addr` and starts listening (server and client on one UDP
    /// socket; `[::]:port` is dual-stack, see [`bind_udp`]). Must be called
    /// from within a Tokio runtime.
    pub fn listen(addr: SocketAddr, identity: &Identity, limits: TransportLimits) -> Result<Arc<QuinnTransport>, TransportError> {
        QuinnTransport::listen_with(addr, identity, limits, Datagrams::Best)
    }

    /// [`QuinnTransport::listen`], sending plain datagrams as on a UDP
    /// stack without ECN (Wine, old Windows), so tests cover that path.
    #[doc(hidden)]
    pub fn listen_plain(addr: SocketAddr, identity: &Identity, limits: TransportLimits) -> Result<Arc<QuinnTransport>, TransportError> {
        QuinnTransport::listen_with(addr, identity, limits, Datagrams::Plain)
    }

    fn listen_with(
        addr: SocketAddr,
        identity: &Identity,
        limits: TransportLimits,
        datagrams: Datagrams,
    ) -> Result<Arc<QuinnTransport>, TransportError> {
        let runtime = quinn::default_runtime().ok_or_else(|| TransportError::Other("no async runtime found".into()))?;
        let transport = Arc::new(transport_config(&limits)?);

        let server_tls = lanspread_tls::server_config(identity).map_err(|e| other("server tls", e))?;
        let server_crypto = QuicServerConfig::try_from(server_tls).map_err(|e| other("server tls", e))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(Arc::clone(&transport));

        let client_tls = ClientTls::new(identity).map_err(|e| other("client tls", e))?;
        let client_crypto = QuicClientConfig::try_from(client_tls.config()).map_err(|e| other("client tls", e))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport);

        let mut endpoint_config = EndpointConfig::default();
        let max_payload = limits.max_mtu.saturating_sub(28).clamp(1200, 65_527);
        endpoint_config.max_udp_payload_size(max_payload).map_err(|e| other("max udp payload", e))?;

        let socket = bind_udp(addr).map_err(|e| TransportError::Other(format!("bind {addr}: {e}")))?;
        enlarge_socket_buffers(&socket);
        let mut endpoint = make_endpoint(endpoint_config, server_config, socket, runtime, datagrams).map_err(|e| other("endpoint", e))?;
        endpoint.set_default_client_config(client_config);
        let local_addr = endpoint.local_addr().map_err(|e| other("local addr", e))?;

        let limits = Arc::new(limits);
        let (queue, tx) = AcceptQueue::new(ACCEPT_QUEUE);
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), tx, Arc::clone(&limits), queue.shutdown_signal()));

        Ok(Arc::new(QuinnTransport {
            endpoint,
            local_id: identity.peer_id(),
            local_addr,
            client_tls,
            limits,
            queue,
            accept_task: Mutex::new(Some(accept_task)),
        }))
    }

    fn is_shut_down(&self) -> bool {
        self.queue.is_shut_down()
    }
}

/// Takes incoming connection attempts and completes each handshake in its
/// own task, so one slow peer cannot stall the others.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    tx: mpsc::Sender<QuinnConnection>,
    limits: Arc<TransportLimits>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait_for(|s| *s) => None,
        };
        let Some(incoming) = incoming else { break };
        let tx = tx.clone();
        let limits = Arc::clone(&limits);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "incoming handshake failed");
                    return;
                }
            };
            match QuinnConnection::new(conn, limits) {
                Ok(conn) => {
                    // A closed receiver means we are shutting down; the
                    // connection is dropped (and closed) with the error.
                    let _ = tx.send(conn).await;
                }
                Err(e) => tracing::debug!(%remote, error = %e, "incoming connection refused"),
            }
        });
    }
}

#[async_trait]
impl Transport for QuinnTransport {
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
        let dial = self.client_tls.dial(expected);
        let connecting =
            self.endpoint.connect(addr, dial.server_name()).map_err(|e| TransportError::Connect { addr, reason: e.to_string() })?;
        let conn = match connecting.await {
            Ok(conn) => conn,
            Err(e) => {
                if let Some((expected, got)) = dial.mismatch() {
                    return Err(TransportError::IdentityMismatch { addr, expected, got });
                }
                return Err(TransportError::Connect { addr, reason: e.to_string() });
            }
        };
        let conn = QuinnConnection::new(conn, Arc::clone(&self.limits))?;
        if let Some(expected) = expected {
            if conn.peer != expected {
                conn.conn.close(0u32.into(), b"identity mismatch");
                return Err(TransportError::IdentityMismatch { addr, expected, got: conn.peer });
            }
        }
        Ok(Box::new(conn))
    }

    async fn shutdown(&self) {
        self.queue.shut_down();
        self.endpoint.close(0u32.into(), b"shutdown");
        let task = self.accept_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
        }
        // Drop connections that were accepted but never handed out.
        drop(self.queue.drain().await);
        // Give the close frames a moment to leave (they go out at once on a
        // LAN); do not wait out the whole draining period, which made every
        // short-lived `lanspread get` half a second slower.
        let _ = tokio::time::timeout(Duration::from_millis(50), self.endpoint.wait_idle()).await;
    }
}

/// One authenticated quinn connection.
struct QuinnConnection {
    conn: quinn::Connection,
    peer: PeerId,
    limits: Arc<TransportLimits>,
}

impl QuinnConnection {
    fn new(conn: quinn::Connection, limits: Arc<TransportLimits>) -> Result<Self, TransportError> {
        let peer = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|certs| lanspread_tls::peer_id_from_certs(&certs));
        match peer {
            Some(peer) => Ok(QuinnConnection { conn, peer, limits }),
            None => {
                conn.close(0u32.into(), b"no certificate");
                Err(TransportError::Other("peer presented no certificate".to_string()))
            }
        }
    }
}

fn connection_lost(e: ConnectionError) -> TransportError {
    TransportError::ConnectionLost(e.to_string())
}

/// Whether a connection ended by someone's decision (either side's
/// application, a clean transport close, or the idle timer) rather than by
/// a failure.
fn is_clean_close(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::ApplicationClosed(_) | ConnectionError::LocallyClosed | ConnectionError::TimedOut => true,
        ConnectionError::ConnectionClosed(c) => c.error_code == quinn::TransportErrorCode::NO_ERROR,
        ConnectionError::VersionMismatch | ConnectionError::TransportError(_) | ConnectionError::Reset | ConnectionError::CidsExhausted => {
            false
        }
    }
}

fn bi_stream(send: quinn::SendStream, recv: quinn::RecvStream) -> BiStream {
    (Box::new(QuinnSend { inner: send, finished: false }), Box::new(QuinnRecv { inner: recv }))
}

#[async_trait]
impl Connection for QuinnConnection {
    fn peer_id(&self) -> PeerId {
        self.peer
    }

    fn remote_addr(&self) -> SocketAddr {
        lanspread_tls::addr::canonical(self.conn.remote_address())
    }

    async fn open_bi(&self) -> Result<BiStream, TransportError> {
        let (send, recv) = self.conn.open_bi().await.map_err(connection_lost)?;
        Ok(bi_stream(send, recv))
    }

    async fn accept_bi(&self) -> Result<Option<BiStream>, TransportError> {
        match self.conn.accept_bi().await {
            Ok((send, recv)) => Ok(Some(bi_stream(send, recv))),
            Err(e) if is_clean_close(&e) => Ok(None),
            Err(e) => Err(connection_lost(e)),
        }
    }

    fn export_keying_material(&self, label: &[u8]) -> Result<[u8; 32], TransportError> {
        if !self.limits.exporter_label_allowed(label) {
            return Err(TransportError::Other("exporter label not registered in TransportLimits::exporter_labels".into()));
        }
        let mut out = [0u8; EXPORTER_LEN];
        self.conn
            .export_keying_material(&mut out, label, b"")
            .map_err(|_| TransportError::Other("keying material export failed".into()))?;
        Ok(out)
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(code.into(), reason.as_bytes());
    }
}

struct QuinnSend {
    inner: quinn::SendStream,
    /// Set by `finish`/`reset`; a stream dropped before either is reset.
    finished: bool,
}

impl Drop for QuinnSend {
    fn drop(&mut self) {
        // quinn would finish a dropped stream, making a truncated transfer
        // look complete; abandon it instead.
        if !self.finished {
            let _ = self.inner.reset(STREAM_DROPPED_CODE.into());
        }
    }
}

fn write_error(e: WriteError) -> TransportError {
    match e {
        WriteError::Stopped(code) => TransportError::StreamReset(format!("stopped by peer: {code}")),
        WriteError::ConnectionLost(e) => connection_lost(e),
        WriteError::ClosedStream => TransportError::Other("stream already finished or reset".into()),
        WriteError::ZeroRttRejected => TransportError::ConnectionLost("0-RTT rejected".into()),
    }
}

#[async_trait]
impl SendStream for QuinnSend {
    async fn write(&mut self, data: Bytes) -> Result<(), TransportError> {
        if data.is_empty() {
            return Ok(());
        }
        self.inner.write_chunk(data).await.map_err(write_error)
    }

    async fn finish(&mut self) -> Result<(), TransportError> {
        self.finished = true;
        self.inner.finish().map_err(|_| TransportError::Other("stream already finished or reset".into()))
    }

    fn reset(&mut self, code: u32) {
        self.finished = true;
        let _ = self.inner.reset(code.into());
    }
}

struct QuinnRecv {
    inner: quinn::RecvStream,
}

#[async_trait]
impl RecvStream for QuinnRecv {
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, TransportError> {
        if max == 0 {
            return Ok(Some(Bytes::new()));
        }
        match self.inner.read_chunk(max, true).await {
            Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
            Err(ReadError::Reset(code)) => Err(TransportError::StreamReset(format!("reset by peer: {code}"))),
            Err(ReadError::ConnectionLost(e)) => Err(connection_lost(e)),
            Err(ReadError::ClosedStream) => Err(TransportError::Other("stream already stopped or finished".into())),
            Err(ReadError::IllegalOrderedRead) => Err(TransportError::Other("illegal ordered read".into())),
            Err(ReadError::ZeroRttRejected) => Err(TransportError::ConnectionLost("0-RTT rejected".into())),
        }
    }

    fn stop(&mut self, code: u32) {
        let _ = self.inner.stop(code.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_config_from_defaults() {
        assert!(transport_config(&TransportLimits::default()).is_ok());
    }
}
