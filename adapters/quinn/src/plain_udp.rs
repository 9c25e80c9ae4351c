//! Plain datagrams for quinn, for UDP stacks that lack what `quinn-udp`
//! asks of them.
//!
//! `quinn-udp` turns on ECN reporting and packet information on every
//! socket (on Windows `IP_RECVECN`, `IP_PKTINFO`, `IP_DONTFRAGMENT`), and
//! fails when the stack refuses one: old Windows builds, and Wine, where
//! `IP_RECVECN` answers `WSAEOPNOTSUPP`. Rather than fail to listen at
//! all, the endpoint then sends and receives one plain datagram at a time
//! through tokio: no ECN (congestion control falls back to loss), no
//! segmentation offload, no destination address (the socket is bound to
//! one address or the wildcard's route answers).

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// A UDP socket that quinn drives one datagram at a time.
#[derive(Debug)]
pub(crate) struct PlainUdp {
    io: Arc<tokio::net::UdpSocket>,
}

impl PlainUdp {
    /// Wraps a bound socket (it is made non-blocking here).
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<PlainUdp> {
        socket.set_nonblocking(true)?;
        Ok(PlainUdp { io: Arc::new(tokio::net::UdpSocket::from_std(socket)?) })
    }
}

impl AsyncUdpSocket for PlainUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable { io: Arc::clone(&self.io), waiting: None })
    }

    /// Sends each datagram of `transmit` (more than one only if it was
    /// segmented, which [`AsyncUdpSocket::max_transmit_segments`] of 1
    /// rules out; handled anyway).
    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let segment = transmit.segment_size.unwrap_or(transmit.contents.len()).max(1);
        for datagram in transmit.contents.chunks(segment) {
            self.io.try_send_to(datagram, transmit.destination)?;
        }
        Ok(())
    }

    fn poll_recv(&self, cx: &mut Context<'_>, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(meta)) = (bufs.first_mut(), meta.first_mut()) else { return Poll::Ready(Ok(0)) };
        loop {
            ready!(self.io.poll_recv_ready(cx))?;
            match self.io.try_recv_from(buf) {
                Ok((len, addr)) => {
                    *meta = RecvMeta { addr, len, stride: len, ecn: None, dst_ip: None };
                    return Poll::Ready(Ok(1));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // Windows reports an ICMP "port unreachable" for an earlier
                // send as a failed receive: not this socket's failure.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

/// Waits until the socket can send again.
struct Writable {
    io: Arc<tokio::net::UdpSocket>,
    waiting: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable").finish_non_exhaustive()
    }
}

impl UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = Arc::clone(&self.io);
        let waiting = self.waiting.get_or_insert_with(|| Box::pin(async move { io.writable().await }));
        let ready = waiting.as_mut().poll(cx);
        if ready.is_ready() {
            // A future is polled to completion once; the next wait makes its own.
            self.waiting = None;
        }
        ready
    }
}
