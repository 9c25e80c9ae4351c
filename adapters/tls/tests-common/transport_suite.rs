//! Adapter-independent checks of the `Transport` port contract, shared by
//! the quinn and s2n adapter tests and the interop tests (included with
//! `#[path = ...] mod transport_suite;`). Loopback only.

#![allow(dead_code)]

use bytes::Bytes;
use lanspread_ports::{BiStream, Connection, PeerId, Transport, TransportError};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bound for any single step of a test.
pub const STEP: Duration = Duration::from_secs(30);

/// Deterministic pseudo-random payload.
pub fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// `dialer` connects to `listener`, pinning its identity; returns
/// (dialer side, listener side).
pub async fn connect_pair(dialer: &Arc<dyn Transport>, listener: &Arc<dyn Transport>) -> (Box<dyn Connection>, Box<dyn Connection>) {
    connect_pair_at(dialer, listener, listener.local_addr()).await
}

/// [`connect_pair`] through `addr` (one of the listener's addresses).
pub async fn connect_pair_at(
    dialer: &Arc<dyn Transport>,
    listener: &Arc<dyn Transport>,
    addr: SocketAddr,
) -> (Box<dyn Connection>, Box<dyn Connection>) {
    let expected = listener.local_id();
    let (c, s) = step("connect/accept", async { tokio::join!(dialer.connect(addr, Some(expected)), listener.accept()) }).await;
    let c = c.expect("connect");
    let s = s.expect("accept returned None");
    assert_eq!(c.peer_id(), listener.local_id());
    assert_eq!(s.peer_id(), dialer.local_id());
    (c, s)
}

/// Reads everything until the clean end, with reads of at most `max`.
pub async fn read_all(recv: &mut Box<dyn lanspread_ports::RecvStream>, max: usize) -> Result<Vec<u8>, TransportError> {
    let mut out = Vec::new();
    while let Some(chunk) = recv.read(max).await? {
        assert!(chunk.len() <= max, "read returned {} > {max}", chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Echoes one stream back until its end, then finishes.
pub async fn echo_stream((mut send, mut recv): BiStream, max: usize) {
    while let Some(chunk) = recv.read(max).await.expect("echo read") {
        assert!(chunk.len() <= max);
        send.write(chunk).await.expect("echo write");
    }
    send.finish().await.expect("echo finish");
}

/// Sends `data` (in `chunk`-sized zero-copy slices) on a new stream of
/// `opener`, while `echoer` echoes it; checks the echo is byte-identical.
/// Returns the elapsed time.
pub async fn echo_roundtrip(opener: &dyn Connection, echoer: &dyn Connection, data: Bytes, chunk: usize, read_max: usize) -> Duration {
    let start = Instant::now();
    let (mut send, mut recv) = step("open_bi", opener.open_bi()).await.expect("open_bi");
    let writer = {
        let data = data.clone();
        async move {
            let mut off = 0;
            while off < data.len() {
                let end = (off + chunk).min(data.len());
                send.write(data.slice(off..end)).await.expect("write");
                off = end;
            }
            send.finish().await.expect("finish");
            send
        }
    };
    let echo = async {
        let bi = echoer.accept_bi().await.expect("accept_bi").expect("accept_bi: connection closed");
        echo_stream(bi, read_max).await;
    };
    let reader = async { read_all(&mut recv, read_max).await.expect("read echo") };
    let (_send, (), got) = step("echo", async { tokio::join!(writer, echo, reader) }).await;
    let elapsed = start.elapsed();
    assert_eq!(got.len(), data.len(), "echo length");
    assert!(got == data[..], "echo differs");
    elapsed
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

/// Connect, then an 8 MiB echo on a stream opened by each side.
pub async fn echo_both_directions(a: Arc<dyn Transport>, b: Arc<dyn Transport>, tag: &str) {
    let (ca, cb) = connect_pair(&a, &b).await;
    let data = payload(8 << 20, 1);
    let d = echo_roundtrip(ca.as_ref(), cb.as_ref(), data.clone(), 256 << 10, 64 << 10).await;
    eprintln!("[{tag}] 8 MiB echo (dialer opens): {:?} ({:.0} MiB/s each way)", d, mib_per_s(data.len(), d));
    let data = payload(8 << 20, 2);
    let d = echo_roundtrip(cb.as_ref(), ca.as_ref(), data.clone(), 256 << 10, 64 << 10).await;
    eprintln!("[{tag}] 8 MiB echo (listener opens): {:?} ({:.0} MiB/s each way)", d, mib_per_s(data.len(), d));
    ca.close(0, "done");
    a.shutdown().await;
    b.shutdown().await;
}

/// Where a dual-stack endpoint listens: `[::]`, any port.
pub fn dual_stack_any() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
}

/// Dials `listener` at `target`, checks both ends see canonical addresses
/// (`target` itself on the dialer; the same IP family on the listener,
/// never an IPv4-mapped IPv6 address) and that a stream carries data.
pub async fn dial_and_echo(dialer: &Arc<dyn Transport>, listener: &Arc<dyn Transport>, target: SocketAddr) {
    let (c, s) = connect_pair_at(dialer, listener, target).await;
    assert_eq!(c.remote_addr(), target, "dialer's view of the remote");
    let seen = s.remote_addr();
    assert_eq!(seen.is_ipv4(), target.is_ipv4(), "listener sees {seen} for a dial to {target}");
    if let SocketAddr::V6(v6) = seen {
        assert!(v6.ip().to_ipv4_mapped().is_none(), "IPv4-mapped address reported: {seen}");
    }
    echo_roundtrip(c.as_ref(), s.as_ref(), payload(100_000, 11), 16_384, 8192).await;
    c.close(0, "done");
}

/// Both endpoints listen on `[::]` ([`dual_stack_any`]): the listener
/// answers a dial to `[::1]` and one to `127.0.0.1` on its one port.
pub async fn dual_stack_accepts_v4_and_v6(dialer: Arc<dyn Transport>, listener: Arc<dyn Transport>) {
    let local = listener.local_addr();
    assert!(local.is_ipv6() && local.ip().is_unspecified(), "listener is not on [::]: {local}");
    dial_and_echo(&dialer, &listener, SocketAddr::from((Ipv6Addr::LOCALHOST, local.port()))).await;
    dial_and_echo(&dialer, &listener, SocketAddr::from((Ipv4Addr::LOCALHOST, local.port()))).await;
    dialer.shutdown().await;
    listener.shutdown().await;
}

/// Small odd read sizes (exercises buffering of oversize chunks) and many
/// concurrent streams on one connection.
pub async fn small_reads_and_concurrent_streams(a: Arc<dyn Transport>, b: Arc<dyn Transport>) {
    let (ca, cb) = connect_pair(&a, &b).await;
    let data = payload(300_001, 3);
    echo_roundtrip(ca.as_ref(), cb.as_ref(), data, 65_536, 997).await;

    let ca: Arc<dyn Connection> = Arc::from(ca);
    let cb: Arc<dyn Connection> = Arc::from(cb);
    let server = {
        let cb = Arc::clone(&cb);
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            while let Ok(Some(bi)) = cb.accept_bi().await {
                tasks.push(tokio::spawn(echo_stream(bi, 4096)));
            }
            for t in tasks {
                t.await.expect("echo task");
            }
        })
    };
    let mut clients = Vec::new();
    for i in 0..16u64 {
        let ca = Arc::clone(&ca);
        clients.push(tokio::spawn(async move {
            let data = payload(50_000 + i as usize, 100 + i);
            let (mut send, mut recv) = ca.open_bi().await.expect("open_bi");
            send.write(data.clone()).await.expect("write");
            send.finish().await.expect("finish");
            let got = read_all(&mut recv, 8192).await.expect("read");
            assert!(got == data[..], "stream {i} differs");
        }));
    }
    step("concurrent streams", async {
        for c in clients {
            c.await.expect("client task");
        }
    })
    .await;
    ca.close(0, "done");
    step("server sees clean close", server).await.expect("server task");
    a.shutdown().await;
    b.shutdown().await;
}

/// Pinning the wrong identity fails with `IdentityMismatch` naming the
/// identity actually presented; the listener keeps working afterwards.
pub async fn identity_mismatch(a: Arc<dyn Transport>, b: Arc<dyn Transport>) {
    let wrong = PeerId([7u8; 32]);
    let res = step("connect", a.connect(b.local_addr(), Some(wrong))).await;
    match res {
        Err(TransportError::IdentityMismatch { addr, expected, got }) => {
            assert_eq!(addr, b.local_addr());
            assert_eq!(expected, wrong);
            assert_eq!(got, b.local_id());
        }
        Err(e) => panic!("expected IdentityMismatch, got {e:?}"),
        Ok(c) => panic!("expected IdentityMismatch, connected to {:?}", c.peer_id()),
    }
    // Unpinned dial works and reports the real identity.
    let (c, s) = step("connect/accept", async { tokio::join!(a.connect(b.local_addr(), None), b.accept()) }).await;
    let c = c.expect("unpinned connect");
    assert_eq!(c.peer_id(), b.local_id());
    assert_eq!(s.expect("accept").peer_id(), a.local_id());
    a.shutdown().await;
    b.shutdown().await;
}

/// The exporter agrees on both ends, differs between connections, and
/// refuses unregistered labels.
pub async fn exporter_matches(a: Arc<dyn Transport>, b: Arc<dyn Transport>) {
    let label = lanspread_tls::EXPORTER_LABEL;
    let (ca, cb) = connect_pair(&a, &b).await;
    let ka = ca.export_keying_material(label).expect("export a");
    let kb = cb.export_keying_material(label).expect("export b");
    assert_eq!(ka, kb);
    assert_ne!(ka, [0u8; 32]);
    assert!(ca.export_keying_material(b"not registered").is_err());
    let (ca2, cb2) = connect_pair(&a, &b).await;
    let ka2 = ca2.export_keying_material(label).expect("export a2");
    assert_eq!(ka2, cb2.export_keying_material(label).expect("export b2"));
    assert_ne!(ka, ka2, "exporter must be bound to the session");
    a.shutdown().await;
    b.shutdown().await;
}

/// `accept` returns `None` after `shutdown`, also for a pending accept;
/// connections are closed and new dials fail.
pub async fn accept_none_after_shutdown(a: Arc<dyn Transport>, b: Arc<dyn Transport>) {
    let (ca, _cb) = connect_pair(&a, &b).await;
    let pending = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.accept().await.is_none() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    step("shutdown", b.shutdown()).await;
    assert!(step("pending accept", pending).await.expect("task"), "pending accept must return None");
    assert!(step("accept", b.accept()).await.is_none());
    assert!(matches!(step("connect", b.connect(a.local_addr(), None)).await, Err(TransportError::Closed)));
    // The remote notices the close.
    let r = step("accept_bi after remote shutdown", ca.accept_bi()).await;
    assert!(matches!(r, Ok(None) | Err(_)), "{:?}", r.map(|o| o.is_some()));
    a.shutdown().await;
}

/// `reset`, and dropping a send stream without `finish`, reach the reader as
/// `StreamReset` (never as a clean end); `stop` makes the writer fail.
pub async fn reset_drop_and_stop(a: Arc<dyn Transport>, b: Arc<dyn Transport>) {
    let (ca, cb) = connect_pair(&a, &b).await;

    // Explicit reset after some data.
    let (mut send, _r1) = ca.open_bi().await.expect("open_bi");
    send.write(Bytes::from_static(b"partial")).await.expect("write");
    let (_s, mut recv) = step("accept_bi", cb.accept_bi()).await.expect("accept_bi").expect("stream");
    send.reset(42);
    let r = step("read after reset", read_all(&mut recv, 1024)).await;
    assert!(matches!(r, Err(TransportError::StreamReset(_))), "reset: {r:?}");

    // Dropped without finish.
    let (mut send, _r2) = ca.open_bi().await.expect("open_bi");
    send.write(Bytes::from_static(b"truncated")).await.expect("write");
    let (_s, mut recv) = step("accept_bi", cb.accept_bi()).await.expect("accept_bi").expect("stream");
    drop(send);
    let r = step("read after drop", read_all(&mut recv, 1024)).await;
    assert!(matches!(r, Err(TransportError::StreamReset(_))), "drop: {r:?}");

    // Reader stops: the writer eventually fails.
    let (mut send, _r3) = ca.open_bi().await.expect("open_bi");
    send.write(Bytes::from_static(b"hello")).await.expect("write");
    let (_s, mut recv) = step("accept_bi", cb.accept_bi()).await.expect("accept_bi").expect("stream");
    recv.stop(7);
    let block = payload(64 << 10, 5);
    let failed = step("write after stop", async {
        for _ in 0..10_000 {
            if let Err(e) = send.write(block.clone()).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("writes kept succeeding after stop");
    })
    .await;
    assert!(matches!(failed, TransportError::StreamReset(_)), "stop: {failed:?}");

    // The connection itself is unaffected.
    let data = payload(10_000, 6);
    echo_roundtrip(ca.as_ref(), cb.as_ref(), data, 4096, 4096).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Limits with a short idle timeout for [`keep_alive_holds_idle_connection`].
pub fn short_idle_limits() -> lanspread_tls::TransportLimits {
    lanspread_tls::TransportLimits {
        idle_timeout: Duration::from_millis(800),
        keep_alive: Duration::from_millis(200),
        ..Default::default()
    }
}

/// With [`short_idle_limits`] on both ends, keep-alives keep an unused
/// connection open well past the idle timeout.
pub async fn keep_alive_holds_idle_connection(a: Arc<dyn Transport>, b: Arc<dyn Transport>) {
    let (ca, cb) = connect_pair(&a, &b).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let data = payload(10_000, 8);
    echo_roundtrip(ca.as_ref(), cb.as_ref(), data, 4096, 4096).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// One-way throughput over one stream (for manual benchmarking).
pub async fn one_way_throughput(a: Arc<dyn Transport>, b: Arc<dyn Transport>, total: usize, tag: &str) {
    let (ca, cb) = connect_pair(&a, &b).await;
    let block = payload(1 << 20, 9);
    let start = Instant::now();
    let (mut send, _recv) = ca.open_bi().await.expect("open_bi");
    let writer = async move {
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(block.len());
            send.write(block.slice(..n)).await.expect("write");
            sent += n;
        }
        send.finish().await.expect("finish");
        send
    };
    let reader = async {
        let (_s, mut recv) = cb.accept_bi().await.expect("accept_bi").expect("stream");
        let mut got = 0;
        while let Some(c) = recv.read(1 << 20).await.expect("read") {
            got += c.len();
        }
        got
    };
    let (_send, got) = tokio::join!(writer, reader);
    let d = start.elapsed();
    assert_eq!(got, total);
    eprintln!("[{tag}] one-way {} MiB: {:?} ({:.0} MiB/s)", total >> 20, d, mib_per_s(total, d));
    a.shutdown().await;
    b.shutdown().await;
}
