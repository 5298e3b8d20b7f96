//! Connections to model servers: a small pool of our own, per worker thread and endpoint.
//!
//! pingora's `Connector` hands each released connection to an idle-watch task on another thread
//! and checks it back with a `getpeername` per reuse (about 7k instructions a request). The
//! gateway's workers are single-threaded runtimes, so a connection taken on one thread is
//! released on the same one: the pool is a thread-local LIFO list per endpoint, bounded in
//! size and age, with no task per idle connection. A connection the upstream closed while idle
//! is noticed on checkout by one non-blocking read; one closed in the instant after that makes
//! the request fail before any response byte, and the caller retries it once on a fresh
//! connection (the request was not seen).

use pingora::protocols::l4::stream::{L4BufferSettings, Stream as L4Stream};
use pingora::protocols::Stream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::ReadBuf;

/// The write buffer of an upstream connection: a request head and a small body in one write.
const UPSTREAM_WRITE_BUFFER: usize = 16 * 1024;

/// How many idle connections a worker keeps per endpoint, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub idle_per_endpoint: usize,
    pub idle_timeout: Duration,
}

/// Idle connections per endpoint. foldhash, not SipHash: the keys are the configured
/// endpoints, nothing a client chooses, and the map is looked up twice a request.
type Idle = HashMap<SocketAddr, Vec<(Stream, Instant)>, foldhash::fast::RandomState>;

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

/// The most recently released live connection to `addr`, if any. Connections past the idle
/// timeout, and ones that have been closed or have sent something unasked, are dropped.
pub fn checkout(addr: SocketAddr, limits: &PoolLimits) -> Option<Stream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        // Oldest first: whatever has been idle too long goes, whether or not it is next.
        let fresh = list
            .iter()
            .position(|(_, since)| now.duration_since(*since) < limits.idle_timeout)
            .unwrap_or(list.len());
        list.drain(..fresh);
        while let Some((mut stream, _)) = list.pop() {
            if is_quiet(&mut stream) {
                return Some(stream);
            }
        }
        None
    })
}

/// Keeps a connection whose exchange ended cleanly for the next request to `addr`.
pub fn checkin(addr: SocketAddr, stream: Stream, limits: &PoolLimits) {
    if limits.idle_per_endpoint == 0 {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= limits.idle_per_endpoint {
            // The oldest is the least likely to be wanted (and the most likely to be stale).
            list.remove(0);
        }
        list.push((stream, Instant::now()));
    });
}

/// Whether an idle connection has nothing to say: a read would block. EOF, data the upstream
/// sent unasked, or an error all mean it cannot carry a request.
fn is_quiet(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(
        Pin::new(&mut **stream).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}

/// Why a new connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    TimedOut,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connect failed: {e}"),
            ConnectError::TimedOut => f.write_str("connect timed out"),
        }
    }
}

/// A new plain TCP connection with `TCP_NODELAY`. Boxed by callers: it is the rare path, and
/// its future is large.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Stream, ConnectError> {
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::TimedOut),
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Ok(Ok(tcp)) => tcp,
    };
    // Small requests and responses must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let mut stream = L4Stream::from(tcp);
    // A write buffer, so that a request head leaves in one segment with its body (or the
    // body's first 16 KiB) rather than in a write of its own (vendor patch 0003). No read
    // buffer: the HTTP/1 session reads into its own.
    stream.set_buffer(L4BufferSettings::new(0, UPSTREAM_WRITE_BUFFER));
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair(listener: &tokio::net::TcpListener) -> (Stream, tokio::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, server) =
            tokio::join!(connect(addr, Duration::from_secs(1)), listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    /// The pool gives back the most recent connection first, drops the oldest beyond its size,
    /// and forgets connections past the idle timeout or closed by the upstream.
    #[tokio::test]
    async fn lifo_bounded_and_checked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = PoolLimits {
            idle_per_endpoint: 2,
            idle_timeout: Duration::from_secs(60),
        };
        let (a, _a) = pair(&listener).await;
        let (b, _b) = pair(&listener).await;
        let (c, _c) = pair(&listener).await;
        let ids: Vec<_> = [&a, &b, &c].iter().map(|s| s.id()).collect();
        for s in [a, b, c] {
            checkin(addr, s, &limits);
        }
        assert_eq!(
            checkout(addr, &limits).map(|s| s.id()),
            Some(ids[2]),
            "LIFO"
        );
        assert_eq!(checkout(addr, &limits).map(|s| s.id()), Some(ids[1]));
        assert!(
            checkout(addr, &limits).is_none(),
            "the oldest was dropped at the bound"
        );

        let (d, mut d_server) = pair(&listener).await;
        checkin(addr, d, &limits);
        d_server.shutdown().await.unwrap();
        drop(d_server);
        // Let the FIN arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            checkout(addr, &limits).is_none(),
            "a closed connection is not reused"
        );

        let stale = PoolLimits {
            idle_timeout: Duration::ZERO,
            ..limits
        };
        let (e, _e) = pair(&listener).await;
        checkin(addr, e, &stale);
        assert!(checkout(addr, &stale).is_none(), "past the idle timeout");
    }
}
