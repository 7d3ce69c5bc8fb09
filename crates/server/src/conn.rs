//! Bounds on connections, so that no client can hold the server's file
//! descriptors: how many connections are open at once (server-wide and
//! per source), and how long one may stay open while its client does not
//! read the responses.
//!
//! The other time bounds are hyper's: a request head must arrive within
//! the idle timeout (which also ends keep-alive connections left idle that
//! long), and a body within `READ_TIMEOUT`.
//!
//! What happens at each cap:
//!
//! - Server-wide: the server stops accepting until a connection closes.
//!   New connections wait in the kernel's accept queue and are answered,
//!   in order, as soon as a slot frees; every connection is bounded in
//!   time, so slots do free. Not accepting also means the server never
//!   opens a descriptor past the cap, so it cannot run out of them and
//!   spin on `EMFILE`. The cost: while the cap holds, a fresh client,
//!   health checks included, waits too. (Accepting and closing at once
//!   would answer it faster, with an error, but spend a descriptor and a
//!   wakeup on every refused connection, and keep the kernel's queue
//!   draining for a flood.)
//! - Per source: the connection is accepted (its address is only known
//!   then), told `503` with `Retry-After`, and closed at once, so one
//!   source never holds more than its share and others are served.
//!
//! A source is an IPv4 address, or an IPv6 /64: one host can use every
//! address of its /64 at will, so counting exact IPv6 addresses would not
//! bound it. IPv4-mapped IPv6 addresses count as their IPv4 address.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The connection bounds [`crate::serve`] enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once; past it, new ones wait to be
    /// accepted.
    pub max_connections: usize,
    /// Most connections open at once from one source; past it, new ones
    /// are refused with 503.
    pub max_per_source: usize,
    /// How long a connection may wait for its next request (keep-alive)
    /// or take to send a request head.
    pub idle_timeout: Duration,
    /// How long the responses may stay unwritten because the client does
    /// not read them (see [`WriteDeadline`]).
    pub write_timeout: Duration,
}

impl ConnectionLimits {
    /// Open files kept for the server's own use (the database and its
    /// journal, plugin files, backups, the runtime): up to this many, or
    /// half the limit if it is small.
    pub const RESERVED_FILES: u64 = 256;
    /// The default server-wide cap never exceeds this, however high the
    /// open-file limit: each connection also costs memory.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
    /// The default per-source cap never exceeds this.
    pub const DEFAULT_MAX_PER_SOURCE: usize = 256;
    /// The default of both timeouts.
    pub const DEFAULT_TIMEOUT: Duration = crate::READ_TIMEOUT;

    /// Most connections that `open_files` (the process's open-file limit)
    /// can hold, leaving the server its reserve.
    pub fn allowed_by(open_files: u64) -> usize {
        let reserve = Self::RESERVED_FILES.min(open_files / 2);
        usize::try_from(open_files - reserve).unwrap_or(usize::MAX).max(1)
    }

    /// The default per-source cap for a server-wide cap: an eighth of it,
    /// so that no fewer than eight sources can fill the server.
    pub fn default_per_source(max_connections: usize) -> usize {
        (max_connections / 8).clamp(1, Self::DEFAULT_MAX_PER_SOURCE)
    }

    /// The defaults for a process whose open-file limit is `open_files`.
    pub fn for_open_files(open_files: u64) -> Self {
        let max_connections = Self::allowed_by(open_files).min(Self::DEFAULT_MAX_CONNECTIONS);
        Self {
            max_connections,
            max_per_source: Self::default_per_source(max_connections),
            idle_timeout: Self::DEFAULT_TIMEOUT,
            write_timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

pub(crate) use agentauth_service::Source;

/// The open connections of each source.
#[derive(Debug)]
pub(crate) struct Sources {
    max_per_source: usize,
    open: Mutex<HashMap<Source, usize>>,
}

impl Sources {
    pub(crate) fn new(max_per_source: usize) -> Arc<Self> {
        Arc::new(Self { max_per_source, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for one more connection from `ip`, held until dropped;
    /// `None` if the source has its maximum open.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let source = Source::from(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            return None;
        }
        *count += 1;
        Some(SourceSlot { sources: Arc::clone(self), source })
    }
}

/// One open connection of a source; dropping it frees the slot. Sources
/// with no connection left are forgotten, so the map holds at most one
/// entry per open connection.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    sources: Arc<Sources>,
    source: Source,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// What a connection over its source's cap is told before it is closed.
pub(crate) const TOO_MANY_FROM_SOURCE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain\r\ncontent-length: 39\r\nretry-after: 1\r\nconnection: close\r\n\r\n\
    too many connections from this address\n";

/// How long a refused connection is read from before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// The most a refused connection is read before it is closed.
const REFUSAL_DRAIN: usize = 64 << 10;

/// Tells a connection over its source's cap why it is closed, and closes
/// it. The answer goes out at once (a fresh socket's buffer takes it);
/// then the server closes its side and reads what the client sent, for at
/// most [`REFUSAL_LINGER`] and [`REFUSAL_DRAIN`] bytes: closing a socket
/// with unread data resets the connection, and the client would lose the
/// answer. `held` (the connection's server-wide slot) is kept meanwhile.
pub(crate) fn refuse(stream: TcpStream, held: impl Send + 'static) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.try_write(TOO_MANY_FROM_SOURCE);
    tokio::spawn(async move {
        let _held = held;
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let drain = async {
            let (mut read, mut buf) = (0, [0u8; 4096]);
            while read < REFUSAL_DRAIN {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        };
        let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
    });
}

/// Whether an `accept` error concerns only the connection being accepted
/// (which is gone), rather than the server (out of descriptors or memory).
pub(crate) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// How often a lasting condition is logged again.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(60);

/// Lets a warning through at most once per period, so a condition that
/// lasts (a cap reached under attack) is reported without flooding the
/// log.
#[derive(Debug)]
pub(crate) struct Every {
    period: Duration,
    last: Option<Instant>,
}

impl Every {
    pub(crate) fn new(period: Duration) -> Self {
        Self { period, last: None }
    }

    pub(crate) fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.period) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// How a connection whose client stopped reading is given up.
pub(crate) trait Abort {
    fn abort(&self);
}

impl Abort for TcpStream {
    /// Resets rather than closes, so the kernel drops the unsent bytes at
    /// once instead of keeping them for a client that does not read.
    fn abort(&self) {
        let _ = self.set_zero_linger();
    }
}

/// Writes that got through while stalled and count as the client reading
/// again: a client that reads a trickle does not keep its connection.
const MIN_PROGRESS: usize = 16 * 1024;

/// A TCP stream whose writes fail once they have been stalled for the
/// write timeout, so a client that sends requests but does not read the
/// responses is disconnected.
///
/// The clock starts when the socket's send buffer is full (a write is
/// pending), and stops when a write is taken whole (the buffer had room
/// for everything there was to send) or at least [`MIN_PROGRESS`] bytes
/// got through. Responses are small, so a client that reads never sees
/// its connection stall for long. When the time is up the connection is
/// reset, not closed, so the kernel drops the unsent bytes at once.
#[derive(Debug)]
pub(crate) struct WriteDeadline<S = TcpStream> {
    inner: S,
    timeout: Duration,
    /// Made on the first stall; most connections never stall.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the clock runs, and what got through since it started.
    stalled: Option<usize>,
}

impl<S: Abort> WriteDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, deadline: None, stalled: None }
    }

    /// Accounts for one write of `offered` bytes that came out `polled`.
    fn account(
        &mut self,
        cx: &mut Context<'_>,
        offered: usize,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(written)) => {
                if let Some(progress) = self.stalled {
                    let progress = progress + written;
                    self.stalled = (written < offered && progress < MIN_PROGRESS).then_some(progress);
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                let sleep = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if self.stalled.is_none() {
                    // The clock starts now.
                    sleep.as_mut().reset(deadline);
                    self.stalled = Some(0);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.inner.abort();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client has not read its responses within the write timeout",
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Abort + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.account(cx, buf.len(), polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let offered = bufs.iter().map(|b| b.len()).sum();
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.account(cx, offered, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_are_one_source() {
        assert_eq!(Source::from(ip("2001:db8:1:2::1")), Source::from(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Source::from(ip("2001:db8:1:2::1")), Source::from(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn ipv4_sources_are_exact_addresses_and_mapped_ipv6_counts_as_ipv4() {
        assert_ne!(Source::from(ip("192.0.2.1")), Source::from(ip("192.0.2.2")));
        assert_eq!(Source::from(ip("::ffff:192.0.2.1")), Source::from(ip("192.0.2.1")));
    }

    #[test]
    fn a_source_at_its_maximum_is_refused_until_one_of_its_connections_closes() {
        let sources = Sources::new(2);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let first = sources.admit(a).expect("first");
        let _second = sources.admit(a).expect("second");
        assert!(sources.admit(a).is_none(), "a third from the same source");
        assert!(sources.admit(b).is_some(), "another source");
        drop(first);
        assert!(sources.admit(a).is_some(), "after one closed");
    }

    #[test]
    fn sources_without_connections_are_forgotten() {
        let sources = Sources::new(2);
        drop(sources.admit(ip("192.0.2.1")));
        assert!(sources.open.lock().expect("lock").is_empty());
    }

    #[test]
    fn default_caps_follow_the_open_file_limit() {
        let small = ConnectionLimits::for_open_files(1024);
        assert_eq!((small.max_connections, small.max_per_source), (768, 96));
        let large = ConnectionLimits::for_open_files(1 << 20);
        assert_eq!((large.max_connections, large.max_per_source), (16_384, 256));
        // A tiny limit still leaves the server half of it.
        assert_eq!(ConnectionLimits::for_open_files(64).max_connections, 32);
    }

    #[tokio::test]
    async fn a_refused_client_that_already_sent_its_request_still_reads_the_503() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        // The request, and more, is in the server's buffer unread.
        client.write_all(&vec![b'x'; 32 << 10]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        refuse(server, ());
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
        assert!(matches!(read, Ok(Ok(_))), "{read:?}");
        assert!(answer.starts_with(b"HTTP/1.1 503 "), "{:?}", String::from_utf8_lossy(&answer));
    }

    #[test]
    fn the_per_source_refusal_is_a_complete_503() {
        let text = std::str::from_utf8(TOO_MANY_FROM_SOURCE).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{head}");
    }

    /// A connected pair: the server's end wrapped with `timeout`, and the
    /// client's.
    async fn pair(timeout: Duration) -> (WriteDeadline, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        (WriteDeadline::new(server, timeout), client.expect("connect"))
    }

    #[tokio::test]
    async fn writes_to_a_client_that_does_not_read_fail_after_the_timeout() {
        use tokio::io::AsyncWriteExt;
        let (mut server, _client) = pair(Duration::from_millis(200)).await;
        let chunk = vec![b'x'; 64 * 1024];
        let writing = async {
            loop {
                if let Err(e) = server.write_all(&chunk).await {
                    return e;
                }
            }
        };
        let e = tokio::time::timeout(Duration::from_secs(20), writing).await.expect("the write timed out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_client_that_reads_slower_than_the_server_writes_keeps_its_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut server, mut client) = pair(Duration::from_millis(200)).await;
        let total = 8 * 1024 * 1024;
        let reading = async move {
            let mut buf = vec![0; 16 * 1024];
            let mut read = 0;
            while read < total {
                read += client.read(&mut buf).await.expect("reading");
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        };
        let writing = async {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..total / chunk.len() {
                server.write_all(&chunk).await?;
            }
            io::Result::Ok(())
        };
        let (written, ()) = tokio::join!(writing, reading);
        written.expect("every write went through");
    }

    impl Abort for tokio::io::DuplexStream {
        fn abort(&self) {}
    }

    #[tokio::test]
    async fn a_client_that_reads_a_trickle_is_cut_off_too() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = WriteDeadline::new(server, Duration::from_millis(300));
        let trickle = async move {
            let mut byte = [0; 1];
            while client.read(&mut byte).await.is_ok_and(|n| n == 1) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let writing = async {
            let chunk = vec![b'x'; 1024];
            loop {
                if let Err(e) = server.write_all(&chunk).await {
                    return e;
                }
            }
        };
        let e = tokio::select! {
            e = writing => e,
            () = trickle => panic!("the client stopped reading"),
            () = tokio::time::sleep(Duration::from_secs(10)) => panic!("a client reading a trickle kept its connection"),
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
