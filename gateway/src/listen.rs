//! Client connections: pingora-core accepts them (and terminates TLS); this module owns what
//! happens next, which pingora-proxy kept to itself: the HTTP/1 keep-alive loop with a deadline
//! and limits on every request head, the HTTP/2 accept loop with a stream limit and Envoy's
//! premature-reset rule, a cap on concurrent connections, and the drain at shutdown. Each
//! request then goes to `exchange`.

use crate::errors::{raw_response, GatewayError};
use crate::exchange::{Client, Listener};
use crate::metrics::{status_class, Metrics};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::http::v2::server::{
    default_h2_options, handshake, H2Accept, HttpSession as H2Session,
};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream, ALPN};
use pingora::server::ShutdownWatch;
use routes::request::{HeadLimits, HeadScanner};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

/// Connection-level settings fixed at start.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// The whole request head must arrive within this from its first byte (a new connection)
    /// or from the end of the previous response (a kept-alive one); an idle connection is
    /// closed at the same deadline.
    pub header_timeout: Duration,
    /// An idle kept-alive connection is closed after this, if that comes first.
    pub keepalive_timeout: Duration,
    pub head_limits: HeadLimits,
    /// Concurrent HTTP/2 streams per connection; more are refused (REFUSED_STREAM).
    pub h2_max_streams: u32,
    /// Reading a request body: the longest wait for its next bytes.
    pub body_idle_timeout: Duration,
}

/// What serves one request once its head is read: the gateway (`exchange::Gateway`), or the
/// benchmark's floor that forwards everything to one upstream.
pub trait Handler: Send + Sync + 'static {
    /// Serves the request on `session` to its end; whether the connection may carry another.
    fn serve(
        &self,
        session: &mut ServerSession,
        client: &Client,
    ) -> impl Future<Output = bool> + Send;

    /// What a drain waits for. A connection accepted as the listeners close (at shutdown, or
    /// when a new process takes the sockets over) has not sent its request yet: it counts here
    /// until its first head has arrived, so its request is served rather than cut.
    fn drain(&self) -> Option<&crate::exchange::Drain> {
        None
    }
}

/// HTTP/2 streams a connection may leave malformed before it is closed (pingora's own budget,
/// which its public accept call does not keep across calls).
const H2_MALFORMED_BUDGET: usize = 32;

/// Envoy's premature-reset rule: a connection whose streams are mostly reset by the client
/// within a second of opening is closed, once it has opened this many.
const PREMATURE_MIN_STREAMS: u32 = 100;
const PREMATURE_WINDOW: Duration = Duration::from_secs(1);

/// How many downstream connections are open, against a cap: the listener's accept waits
/// (`ConnectionFilter`) while the cap is reached, so descriptors stay for upstream
/// connections and the admin port.
#[derive(Debug)]
pub struct ConnLimit {
    live: AtomicUsize,
    max: usize,
    freed: Notify,
    gauge: prometheus::IntGauge,
}

impl ConnLimit {
    pub fn new(max: usize, gauge: prometheus::IntGauge) -> Self {
        ConnLimit {
            live: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
            gauge,
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn hold(self: &Arc<Self>) -> ConnGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        ConnGuard(self.clone())
    }
}

struct ConnGuard(Arc<ConnLimit>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
        self.0.freed.notify_one();
    }
}

/// Makes the listener's accept wait while the cap is reached.
#[derive(Debug)]
pub struct AcceptGate(pub Arc<ConnLimit>);

#[async_trait]
impl pingora::listeners::ConnectionFilter for AcceptGate {
    async fn should_accept(&self, _addr: Option<&SocketAddr>) -> bool {
        loop {
            let freed = self.0.freed.notified();
            if self.0.live() < self.0.max {
                return true;
            }
            freed.await;
        }
    }
}

/// The pingora app: every listener's connections.
pub struct App<H> {
    pub handler: Arc<H>,
    pub metrics: Metrics,
    /// By local port.
    pub listeners: Vec<(u16, Arc<Listener>)>,
    pub conn: ConnSettings,
    pub limit: Arc<ConnLimit>,
}

#[async_trait]
impl<H: Handler> ServerApp for App<H> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _held = self.limit.hold();
        let port = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).map(|a| a.port()));
        let listener = self
            .listeners
            .iter()
            .find(|(p, _)| Some(*p) == port)
            .or(self.listeners.first())
            .map(|(_, l)| l.clone())?;
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let client = Arc::new(Client::new(listener, ip));
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Boxed: its future is large, and would make every HTTP/1 connection's as large.
            Box::pin(self.serve_h2(stream, client, shutdown.clone())).await;
        } else {
            self.serve_h1(stream, &client, shutdown.clone()).await;
        }
        None
    }
}

/// How reading a request head ended without a head.
enum NoHead {
    /// The client closed, or went quiet before its first byte: close without a word.
    Closed,
    /// Answer this and close.
    Refuse(GatewayError),
}

impl<H: Handler> App<H> {
    /// The HTTP/1 keep-alive loop: read a head (under its deadline and limits), let pingora
    /// parse it, serve the request, and again while the connection may be reused.
    async fn serve_h1(&self, mut stream: Stream, client: &Client, mut shutdown: ShutdownWatch) {
        let mut buf = BytesMut::new();
        // A new connection: the first byte within the header timeout, then the head within the
        // header timeout from that byte.
        let mut idle_until = Instant::now() + self.conn.header_timeout;
        let mut head_until = None;
        let mut first = self.handler.drain().map(|d| d.enter());
        loop {
            let head = self
                .read_head(
                    &mut stream,
                    &mut buf,
                    idle_until,
                    head_until,
                    first.is_some(),
                    &mut shutdown,
                )
                .await;
            match head {
                Ok(()) => {}
                Err(NoHead::Closed) => return,
                Err(NoHead::Refuse(err)) => return self.refuse(stream, &err).await,
            }
            let mut h1 = pingora::protocols::http::v1::server::HttpSession::new(stream);
            // Header names go on in lower case (as Envoy sends them): no second map of the
            // client's spellings.
            h1.set_preserve_header_case(false);
            let mut session = ServerSession::H1(h1);
            session.set_pipelined_prefix(std::mem::take(&mut buf));
            session.set_pipelining_enabled(true);
            match session.read_request().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    // A head pingora's parser refused (two `Host`s, a bad request line, an
                    // HTTP/2 preface here): modelgate's JSON error, logged and counted.
                    let ServerSession::H1(s) = session else {
                        return;
                    };
                    let err = GatewayError::BadRequest(parse_error_text(&e));
                    return self.refuse(s.into_inner(), &err).await;
                }
            }
            // pingora resets keep-alive on every head it reads; the idle limits are ours.
            session.set_keepalive(Some(self.conn.keepalive_timeout.as_secs().max(1)));
            session.set_read_timeout(Some(self.conn.body_idle_timeout));
            session.set_total_drain_timeout(Some(self.conn.body_idle_timeout));
            // The request counts as in flight from the first poll of `serve`, with no await in
            // between: the new connection's count ends here.
            drop(first.take());
            let keep = self.handler.serve(&mut session, client).await;
            if !keep || *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let Ok(Some(reusable)) = session.finish().await else {
                return;
            };
            let (next, prefix) = reusable.into_parts();
            stream = next;
            buf = prefix.unwrap_or_default();
            // A kept-alive connection: the next head within the header timeout from the end of
            // this response, and its first byte within the keep-alive timeout.
            let now = Instant::now();
            let head_deadline = now + self.conn.header_timeout;
            idle_until = (now + self.conn.keepalive_timeout).min(head_deadline);
            head_until = Some(head_deadline);
        }
    }

    /// Reads into `buf` until it holds a whole request head, scanning it as it arrives
    /// (`routes::request::HeadScanner`: CRLF only, no folding, the size limits). Before the
    /// first byte, the wait ends at `idle_until` (or at shutdown); after it, at `head_until`,
    /// else the header timeout from that byte.
    async fn read_head(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        idle_until: Instant,
        head_until: Option<Instant>,
        fresh: bool,
        shutdown: &mut ShutdownWatch,
    ) -> Result<(), NoHead> {
        let limits = &self.conn.head_limits;
        let mut scanner = HeadScanner::default();
        let mut deadline = match buf.is_empty() {
            true => idle_until,
            false => head_until.unwrap_or_else(|| Instant::now() + self.conn.header_timeout),
        };
        loop {
            if !buf.is_empty() {
                match scanner.scan(buf, limits) {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => {}
                    Err(e) => return Err(NoHead::Refuse(GatewayError::Head(e))),
                }
            }
            if buf.capacity() - buf.len() < 512 {
                // Grow in steps, never far past the limit: an unfinished head costs at most that.
                let room = (limits.head_bytes + 1)
                    .saturating_sub(buf.len())
                    .clamp(1, 4096);
                buf.reserve(room.max(2048.min(limits.head_bytes + 1)));
            }
            // At shutdown an idle kept-alive connection is closed; a new one is waited for
            // (its client connected to get an answer), up to its header deadline.
            let started = !buf.is_empty();
            let closable = !started && !fresh;
            if closable && *shutdown.borrow() {
                return Err(NoHead::Closed);
            }
            let read = tokio::select! {
                biased;
                _ = shutdown.changed(), if closable => return Err(NoHead::Closed),
                r = tokio::time::timeout_at(deadline.into(), stream.read_buf(buf)) => r,
            };
            match read {
                Err(_) if started => {
                    return Err(NoHead::Refuse(GatewayError::HeaderTimeout {
                        secs: self.conn.header_timeout.as_secs(),
                    }))
                }
                Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return Err(NoHead::Closed),
                Ok(Ok(_)) if !started => {
                    deadline =
                        head_until.unwrap_or_else(|| Instant::now() + self.conn.header_timeout);
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Answers a head that never became a request, logs and counts it, and closes.
    async fn refuse(&self, mut stream: Stream, err: &GatewayError) {
        let request_id = crate::request::new_request_id();
        let status = err.status();
        self.metrics
            .requests
            .with_label_values(&["", "", "", status_class(status)])
            .inc();
        tracing::info!(
            target: "modelgate::access",
            status,
            error = %err.message(),
            request_id = request_id.to_str().unwrap_or_default(),
            "request head refused"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(&raw_response(err, &request_id)).await;
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
        })
        .await;
    }

    /// The HTTP/2 accept loop: one task per stream on this thread, GOAWAY at shutdown, and the
    /// connection closed when its streams are mostly reset by the client right after opening.
    async fn serve_h2(
        self: &Arc<Self>,
        stream: Stream,
        client: Arc<Client>,
        mut shutdown: ShutdownWatch,
    ) {
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let mut options = default_h2_options();
        options.max_concurrent_streams(self.conn.h2_max_streams);
        options.max_header_list_size(self.conn.head_limits.head_bytes as u32);
        let Ok(mut conn) = handshake(stream, Some(options)).await else {
            return;
        };
        let resets = Arc::new(Resets::default());
        let mut closing = false;
        let mut malformed = 0usize;
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.changed(), if !closing => {
                    conn.graceful_shutdown();
                    closing = true;
                    continue;
                }
                next = H2Session::from_h2_conn(&mut conn, digest.clone()) => next,
            };
            match next {
                Err(_) | Ok(None) => return,
                Ok(Some(H2Accept::Rejected)) => {
                    malformed += 1;
                    if malformed > H2_MALFORMED_BUDGET {
                        return;
                    }
                }
                Ok(Some(H2Accept::Session(session))) => {
                    let opened = resets.opened.fetch_add(1, Ordering::AcqRel) + 1;
                    if !closing && resets.flood(opened) {
                        self.metrics.h2_reset_floods.inc();
                        tracing::warn!(
                            client = ?digest.socket_digest.as_ref().and_then(|d| d.peer_addr()),
                            opened,
                            reset = resets.premature.load(Ordering::Acquire),
                            "HTTP/2 connection closed: most of its streams were reset right after opening"
                        );
                        conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        closing = true;
                        drop(session);
                        continue;
                    }
                    let app = self.clone();
                    let client = client.clone();
                    let resets = resets.clone();
                    tokio::spawn(async move {
                        app.serve_h2_stream(ServerSession::new_http2(session), &client, &resets)
                            .await;
                    });
                }
            }
        }
    }

    /// One HTTP/2 stream. A stream the client has already reset is not served (nothing goes
    /// upstream); a reset within a second of opening counts as premature.
    async fn serve_h2_stream(&self, mut session: ServerSession, client: &Client, resets: &Resets) {
        let opened = Instant::now();
        // Let the connection task read what the client sent with the stream (a RST_STREAM).
        tokio::task::yield_now().await;
        if was_reset(&mut session) {
            resets.premature();
            self.metrics.h2_premature_resets.inc();
            return;
        }
        self.handler.serve(&mut session, client).await;
        if opened.elapsed() < PREMATURE_WINDOW && was_reset(&mut session) {
            resets.premature();
            self.metrics.h2_premature_resets.inc();
        }
        let _ = session.finish().await;
    }
}

/// Streams of one HTTP/2 connection: opened, and reset by the client within a second.
#[derive(Debug, Default)]
struct Resets {
    opened: AtomicU32,
    premature: AtomicU32,
}

impl Resets {
    fn premature(&self) {
        self.premature.fetch_add(1, Ordering::AcqRel);
    }

    /// More than half of at least `PREMATURE_MIN_STREAMS` streams reset prematurely.
    fn flood(&self, opened: u32) -> bool {
        opened >= PREMATURE_MIN_STREAMS && self.premature.load(Ordering::Acquire) * 2 > opened
    }
}

/// Whether the client has reset this HTTP/2 stream (without waiting).
fn was_reset(session: &mut ServerSession) -> bool {
    let Some(idle) = session.watch_h2_stream_close() else {
        return false;
    };
    let idle = pin!(idle);
    matches!(
        idle.poll(&mut Context::from_waker(Waker::noop())),
        Poll::Ready(Ok(_))
    )
}

/// What pingora's parser said about a head it refused, without the bytes it quotes.
fn parse_error_text(e: &pingora::Error) -> String {
    let cause = e
        .root_cause()
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect::<String>();
    match e.context.as_ref().map(|c| c.as_str()) {
        Some(c) if !c.starts_with("buf:") => c.chars().take(120).collect(),
        _ if !cause.is_empty() && !cause.starts_with("buf:") => {
            format!("malformed request head ({cause})")
        }
        _ => "malformed request head".into(),
    }
}
