//! Real upstream HTTP servers for the end-to-end tests: each one binds a free loopback port,
//! records every request it sees, and answers in a way the test picks with `x-test-*` headers.
//!
//! | request header      | behaviour                                                            |
//! |---------------------|----------------------------------------------------------------------|
//! | (none)              | 200, `x-upstream: <name>`, `{"upstream", "method", "path"}` JSON     |
//! | `x-test-delay-ms: N`| waits N ms before the response head (timeout tests)                  |
//! | `x-test-status: N`  | answers with status N                                                |
//! | `x-test-echo: 1`    | streams the request body back frame by frame as it arrives           |
//! | `x-test-hold: 1`    | sends the head and `first\n` at once, then `last\n` after `release()`|
//! | `x-test-set-cookie` | each value becomes a `Set-Cookie` of the response                    |
//! | `x-test-response-header: n: v` | each adds header `n: v` to the response                   |
//!
//! Bodies are never collected: the request body is counted as it streams past, so a test can
//! push large uploads through the gateway and check `body_len` without the server holding them.
//! Dropping an [`Upstream`] aborts its accept task, which owns every connection, so nothing
//! outlives the test.

// Each test binary uses a different part of this kit; unused helpers are not a smell here.
#![allow(dead_code)]

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

type BoxError = Box<dyn StdError + Send + Sync>;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path with its query string, as sent on the request line.
    pub path: String,
    /// Lower-case names; a header sent twice appears twice, values in the order received.
    pub headers: Vec<(String, String)>,
    /// Bytes of request body received, counted while it streamed.
    pub body_len: usize,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of header `name` (any case), in the order received.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// State shared between an [`Upstream`] handle and its connections.
struct Shared {
    name: String,
    hits: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    /// One permit per `release()`; each held response takes one to finish.
    releases: Arc<Semaphore>,
}

impl Shared {
    fn record(&self, recorded: Recorded) {
        lock(&self.requests).push(recorded);
    }
}

/// A mutex poisoned by a panicking test thread still holds good data; keep using it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A real HTTP/1.1 upstream on a free loopback port, serving until dropped.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Upstream {
    /// Binds 127.0.0.1:0 and serves until dropped (abort the accept task in Drop).
    pub async fn start(name: &str) -> Upstream {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    /// Binds `addr` (an earlier upstream's, to play a restarted model server) and serves until
    /// dropped.
    pub async fn start_on(addr: SocketAddr, name: &str) -> Upstream {
        // A dropped upstream's accept task ends a moment after its `abort()`, and its old
        // connections linger in TIME_WAIT: bind with SO_REUSEADDR, retrying until it is free.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            let socket = tokio::net::TcpSocket::new_v4().expect("upstream: socket");
            socket.set_reuseaddr(true).expect("upstream: SO_REUSEADDR");
            match socket.bind(addr).and_then(|()| socket.listen(1024)) {
                Ok(l) => break l,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("upstream: bind {addr}: {e}"),
            }
        };
        let addr = listener
            .local_addr()
            .expect("upstream: local address of a bound listener");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            releases: Arc::new(Semaphore::new(0)),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Upstream {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"`, the form the gateway's config takes.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Requests seen, counted when the request head arrives (before its body is read), so a
    /// request the gateway abandoned mid-body still counts.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// TCP connections the upstream accepted (a pooled connection is counted once).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every request seen, in the order their bodies finished.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Every request seen, once at least one has finished; panics after `within`.
    pub async fn wait_requests(&self, within: Duration) -> Vec<Recorded> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let seen = self.requests();
            if !seen.is_empty() {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the upstream never finished a request"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets a response held with `x-test-hold: 1` finish. Each call lets exactly one held
    /// response finish: one waiting now, or else the next one to arrive.
    pub fn release(&self) {
        self.shared.releases.add_permits(1);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet, so this closes them too.
        self.accept.abort();
    }
}

/// A loopback port with nothing listening (bind 127.0.0.1:0, note the port, drop the listener).
pub fn dead_endpoint() -> String {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("dead_endpoint: bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("dead_endpoint: local address of a bound listener");
    drop(listener);
    addr.to_string()
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(err) => {
                    eprintln!("upstream {}: accept failed: {err}", shared.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |request| handle(request, Arc::clone(&shared)));
    // Errors here are the client going away (the gateway timing out, a test dropping its
    // connection); they end this connection only, which is what the tests want.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// What the `x-test-*` headers asked for.
#[derive(Debug, Default)]
struct Script {
    delay: Option<Duration>,
    status: Option<StatusCode>,
    echo: bool,
    hold: bool,
    set_cookies: Vec<HeaderValue>,
    response_headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Script {
    fn from_headers(headers: &HeaderMap) -> Result<Script, String> {
        let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let on = |name: &str| text(name).is_some_and(|value| value.trim() == "1");
        let delay = match text("x-test-delay-ms") {
            None => None,
            Some(value) => {
                Some(Duration::from_millis(value.trim().parse().map_err(
                    |_| format!("x-test-delay-ms: {value:?} is not a number"),
                )?))
            }
        };
        let status = match text("x-test-status") {
            None => None,
            Some(value) => Some(
                value
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or_else(|| format!("x-test-status: {value:?} is not a status code"))?,
            ),
        };
        Ok(Script {
            delay,
            status,
            echo: on("x-test-echo"),
            hold: on("x-test-hold"),
            set_cookies: headers
                .get_all("x-test-set-cookie")
                .iter()
                .cloned()
                .collect(),
            response_headers: headers
                .get_all("x-test-response-header")
                .iter()
                .filter_map(|v| {
                    let (n, v) = v.to_str().ok()?.split_once(':')?;
                    Some((
                        http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                        HeaderValue::from_str(v.trim()).ok()?,
                    ))
                })
                .collect(),
        })
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<ReplyBody>, Infallible> {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: 0,
    };
    let script = match Script::from_headers(&parts.headers) {
        Ok(script) => script,
        Err(message) => {
            let recorded = drain(body, recorded).await;
            shared.record(recorded);
            let body = serde_json::json!({ "error": message }).to_string();
            return Ok(respond(&shared, StatusCode::BAD_REQUEST, Bytes::from(body)));
        }
    };

    let status = script.status.unwrap_or(StatusCode::OK);
    if script.echo {
        // Recorded when the echoed body ends, since only then is its length known.
        if let Some(delay) = script.delay {
            tokio::time::sleep(delay).await;
        }
        let echo = EchoBody {
            inner: body,
            pending: Some((recorded, Arc::clone(&shared))),
        };
        let mut response = respond(&shared, status, Bytes::new());
        *response.body_mut() = ReplyBody::Echo(echo);
        return Ok(response);
    }

    let recorded = drain(body, recorded).await;
    let summary = serde_json::json!({
        "upstream": shared.name,
        "method": recorded.method,
        "path": recorded.path,
    })
    .to_string();
    shared.record(recorded);
    if let Some(delay) = script.delay {
        tokio::time::sleep(delay).await;
    }
    if script.hold {
        let releases = Arc::clone(&shared.releases);
        let mut response = respond(&shared, status, Bytes::new());
        *response.body_mut() = ReplyBody::Hold(HoldBody::First(Box::pin(async move {
            // The semaphore is never closed, so this only fails if that changes; either way the
            // held response then finishes.
            if let Ok(permit) = releases.acquire_owned().await {
                permit.forget();
            }
        })));
        return Ok(response);
    }
    let mut response = respond(&shared, status, Bytes::from(summary));
    for c in script.set_cookies {
        response.headers_mut().append(http::header::SET_COOKIE, c);
    }
    for (n, v) in script.response_headers {
        response.headers_mut().append(n, v);
    }
    Ok(response)
}

/// Reads the request body to its end, counting bytes and keeping none.
async fn drain(mut body: Incoming, mut recorded: Recorded) -> Recorded {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    recorded.body_len += data.len();
                }
            }
            // The client went away mid-body: record what arrived.
            Err(_) => break,
        }
    }
    recorded
}

fn respond(shared: &Shared, status: StatusCode, body: Bytes) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::Full(Some(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        headers.insert("x-upstream", name);
    }
    response
}

/// The response bodies the upstream sends: whole, echoed, or held.
enum ReplyBody {
    Full(Option<Bytes>),
    Echo(EchoBody),
    Hold(HoldBody),
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReplyBody::Full(body) => Poll::Ready(body.take().map(|bytes| Ok(Frame::data(bytes)))),
            ReplyBody::Echo(echo) => echo.poll_frame(cx),
            ReplyBody::Hold(hold) => hold.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Full(body) => body.is_none(),
            ReplyBody::Echo(echo) => echo.pending.is_none(),
            ReplyBody::Hold(hold) => matches!(hold, HoldBody::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Full(Some(body)) => SizeHint::with_exact(body.len() as u64),
            ReplyBody::Full(None) => SizeHint::with_exact(0),
            // Echo the declared length, so a fixed-length upload comes back fixed-length.
            ReplyBody::Echo(echo) => echo.inner.size_hint(),
            ReplyBody::Hold(_) => SizeHint::default(),
        }
    }
}

/// Streams the request body back a frame at a time, counting it, and records the request when
/// the body ends, fails, or is dropped unfinished.
struct EchoBody {
    inner: Incoming,
    pending: Option<(Recorded, Arc<Shared>)>,
}

impl EchoBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.pending.is_none() {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some((recorded, _)) = &mut self.pending {
                            recorded.body_len += data.len();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    // Trailers are not echoed: an HTTP/1 response could only carry them chunked.
                    Err(_trailers) => continue,
                },
                Poll::Ready(Some(Err(err))) => {
                    self.finish();
                    return Poll::Ready(Some(Err(err.into())));
                }
                Poll::Ready(None) => {
                    self.finish();
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some((recorded, shared)) = self.pending.take() {
            shared.record(recorded);
        }
    }
}

impl Drop for EchoBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `first\n` at once, then `last\n` once the release future resolves.
enum HoldBody {
    First(Pin<Box<dyn Future<Output = ()> + Send>>),
    Waiting(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

impl HoldBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match std::mem::replace(self, HoldBody::Done) {
            HoldBody::First(release) => {
                *self = HoldBody::Waiting(release);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first\n")))))
            }
            HoldBody::Waiting(mut release) => match release.as_mut().poll(cx) {
                Poll::Pending => {
                    *self = HoldBody::Waiting(release);
                    Poll::Pending
                }
                Poll::Ready(()) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"last\n")))))
                }
            },
            HoldBody::Done => Poll::Ready(None),
        }
    }
}
