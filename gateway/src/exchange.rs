//! The request path: one request, from its parsed head to the last byte of its response, as
//! one loop that does the I/O and calls pure functions for every decision
//! (`routes::request`, `routes::host`, `auth::decide`, `Target::pick`). The phases, in order,
//! are the ones docs/request-lifecycle.md lists:
//!
//! check the head → strip client headers → host → route on one table snapshot → authenticate →
//! pick a backend → send the head and stream the body upstream → stream the response back →
//! log and count.
//!
//! Connections (HTTP/1 keep-alive, HTTP/2 streams, the head deadline and limits) belong to
//! `listen`; this module sees one `ServerSession` with its head read.

use crate::authn::Authn;
use crate::errors::{redirect, respond, GatewayError};
use crate::metrics::status_class;
use crate::request::{
    forwarded_for, forwarded_target, new_request_id, request_authority, request_id,
};
use crate::state::{Live, Snapshot};
use crate::upstream::{self, ConnectError, PoolLimits};
use auth::decide::Decision;
use auth::headers::StripList;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, RetryType};
use routes::request::Underscores;
use routes::{Backend, HostError, HostRoute, Target};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request-path settings fixed at start.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body: u64,
    /// How long a request body may stall between two reads.
    pub body_idle_timeout: Duration,
    pub pool: PoolLimits,
    /// With `--upgrade`: how long a request may wait for the first route table.
    pub ready_wait: Option<Duration>,
}

/// What one listening port is: whether it authenticates and terminates TLS, and which `Host`
/// ports mean it.
#[derive(Debug, Clone)]
pub struct Listener {
    pub auth: bool,
    pub tls: bool,
    pub served_ports: Vec<u16>,
}

/// One client connection as the request path sees it: its listener, and its address formatted
/// once for `X-Forwarded-For`.
#[derive(Debug, Clone)]
pub struct Client {
    pub listener: Arc<Listener>,
    pub ip: Option<HeaderValue>,
}

impl Client {
    pub fn new(listener: Arc<Listener>, ip: Option<std::net::IpAddr>) -> Self {
        Client {
            listener,
            ip: ip.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok()),
        }
    }
}

impl Listener {
    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// Requests in flight and whether the gateway is draining, shared by every connection.
#[derive(Debug, Default)]
pub struct Drain {
    in_flight: AtomicUsize,
    draining: AtomicBool,
}

impl Drain {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    /// Counts one piece of work (a request, a new connection's first head) until dropped.
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }
}

/// One request counted as in flight until it is dropped.
pub struct InFlight<'a>(&'a Drain);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything the request path shares between requests.
pub struct Gateway {
    pub live: Arc<Live>,
    pub settings: ProxySettings,
    /// Set when `auth:` is configured (a listener with `auth: false` does not use it).
    pub authn: Option<Arc<Authn>>,
    /// Names of the identity headers (lower case): set only from a verified identity.
    pub identity_headers: [HeaderName; 2],
    /// Client headers removed from every request (the identity headers among them).
    pub strip: StripList,
    pub underscores: Underscores,
    /// The session cookie's name when `auth:` is configured, on every listener.
    pub cookie_name: Option<String>,
    pub forward_credentials: bool,
    pub drain: Drain,
    /// Shadow copies in flight (see `mirror`).
    pub mirrors: Arc<tokio::sync::Semaphore>,
}

/// Per-request state. The route and target are `Arc`s from one table snapshot, so a reload in
/// the middle of a request (or between its retries) cannot change where it goes.
struct Ctx {
    start: Instant,
    snapshot: Option<Arc<Snapshot>>,
    request_id: HeaderValue,
    /// The host as routed (lower case), for logs and the 404.
    host: Option<String>,
    /// The `Host` as the client sent it (port included), for `X-Forwarded-Host` and redirects.
    raw_host: HeaderValue,
    /// The target sent upstream when it is not the one received (normalised path, origin form).
    forward: Option<http::uri::PathAndQuery>,
    /// Bytes of the path that name the route (a path prefix: `/seldon/ns/name`), dropped from
    /// the upstream request.
    strip: usize,
    route: Option<Arc<HostRoute>>,
    identity: Option<auth::session::Identity>,
    target: Option<Arc<Target>>,
    /// The OIDC provider's own pages: proxied without model headers.
    provider: bool,
    backend: Option<usize>,
    status: u16,
    upstream_start: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    /// What went wrong, for the access log.
    error: Option<&'static str>,
    /// The connection must not carry another request.
    close: bool,
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            snapshot: None,
            request_id: HeaderValue::from_static(""),
            host: None,
            raw_host: HeaderValue::from_static(""),
            forward: None,
            strip: 0,
            route: None,
            identity: None,
            target: None,
            provider: false,
            backend: None,
            status: 0,
            upstream_start: None,
            upstream_elapsed: None,
            error: None,
            close: false,
        }
    }

    /// The client's `Host`, which `request_authority` has already checked is ASCII.
    fn raw_host(&self) -> &str {
        self.raw_host.to_str().unwrap_or_default()
    }

    fn revision(&self) -> &str {
        match (&self.target, self.backend) {
            (Some(t), Some(i)) => &t.backends[i].revision,
            _ => "",
        }
    }

    fn isvc_label(&self) -> String {
        match (&self.route, &self.target) {
            (Some(r), _) => r.isvc.to_string(),
            (None, Some(t)) => t.component.clone(),
            _ => String::new(),
        }
    }

    fn route_labels(&self) -> (&str, &str) {
        self.route
            .as_ref()
            .map(|r| (r.isvc.namespace.as_str(), r.isvc.name.as_str()))
            .unwrap_or(("", ""))
    }

    fn timeout(&self, default: Duration) -> Duration {
        self.target
            .as_ref()
            .and_then(|t| t.timeout_secs)
            .map(Duration::from_secs)
            .unwrap_or(default)
    }
}

/// How a request ended when it did not end with the upstream's response.
enum Failure {
    /// Nothing has been written to the client: answer with this error.
    Answer(GatewayError),
    /// A response was written (by the gateway, or the upstream's has started), or the client is
    /// gone: nothing more can be said; the connection closes.
    Done,
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Answer(e)
    }
}

/// The path the request is handled and forwarded with: normalised.
/// `path` without its first `strip` bytes (a route's path prefix), `/` when nothing is left.
fn stripped(path: &str, strip: usize) -> &str {
    match path.get(strip..) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

fn handled_path<'a>(
    forward: &'a Option<http::uri::PathAndQuery>,
    req: &'a RequestHeader,
) -> &'a str {
    forward.as_ref().map_or(req.uri.path(), |t| t.path())
}

impl crate::listen::Handler for Gateway {
    fn serve(
        &self,
        session: &mut ServerSession,
        client: &Client,
    ) -> impl std::future::Future<Output = bool> + Send {
        self.serve_request(session, client)
    }

    fn drain(&self) -> Option<&Drain> {
        Some(&self.drain)
    }
}

impl Gateway {
    /// Serves one request whose head `session` has read, start to end. Returns whether the
    /// connection may carry another request.
    pub async fn serve_request(&self, session: &mut ServerSession, client: &Client) -> bool {
        let _in_flight = self.drain.enter();
        let mut ctx = Ctx::new();
        match self.handle(session, client, &mut ctx).await {
            Ok(()) => {}
            Err(Failure::Answer(err)) => {
                ctx.status = err.status();
                if err.closes() {
                    ctx.close = true;
                }
                let close = ctx.close || self.drain.is_draining();
                if respond(session, &err, Some(&ctx.request_id), close)
                    .await
                    .is_err()
                {
                    ctx.close = true;
                }
            }
            Err(Failure::Done) => ctx.close = true,
        }
        self.log(session, &ctx);
        !ctx.close
    }

    async fn handle(
        &self,
        session: &mut ServerSession,
        client: &Client,
        ctx: &mut Ctx,
    ) -> Result<(), Failure> {
        let req = session.req_header();
        ctx.request_id = request_id(req.headers.get("x-request-id"), new_request_id);
        // The head: framing, target, the one normalised path (routes::request). HTTP/1's raw
        // head keeps what the parsed target drops (a fragment); HTTP/2 has none.
        let head = (!session.is_http2()).then(|| session.to_h1_raw());
        let raw_target = head
            .as_deref()
            .and_then(routes::request::raw_request_target)
            .unwrap_or(req.raw_path());
        ctx.forward = forwarded_target(req, raw_target).map_err(GatewayError::Head)?;
        // Headers a client must not set, on any path, in any spelling, auth or not.
        strip_client_headers(session.req_header_mut(), &self.strip, self.underscores)
            .map_err(GatewayError::Head)?;
        let req = session.req_header();
        let (authority, raw_host) = request_authority(req).map_err(GatewayError::BadHost)?;
        ctx.raw_host = match raw_host {
            Some(h) => h,
            // HTTP/2 without `Host`: the authority, which `request_authority` has checked.
            None => HeaderValue::from_str(authority).map_err(|_| GatewayError::Internal)?,
        };
        // A port this listener does not serve matches no InferenceService (404, after auth,
        // like any unknown host).
        let (host, served) = match routes::request_host(authority, &client.listener.served_ports) {
            Ok(h) => (h, true),
            Err(HostError::PortNotServed(_)) => (authority.to_ascii_lowercase(), false),
            Err(e) => return Err(GatewayError::BadHost(e.to_string()).into()),
        };
        if !self.live.is_ready() {
            // A process that took the listening sockets over from a running one (`--upgrade`)
            // gets connections before its first table is loaded: they wait for it rather than
            // fail. Otherwise nothing should be sent here before `/readyz` says so.
            let waited = match self.settings.ready_wait {
                Some(limit) => Box::pin(self.live.wait_ready(limit)).await,
                None => false,
            };
            if !waited {
                return Err(GatewayError::NotReady.into());
            }
        }
        // One snapshot of the table and its addresses for the whole request.
        let snapshot = self.live.current.load_full();
        // By host; else by path prefix (`/seldon/{ns}/{name}`, KServe's `pathTemplate`), as an
        // Istio or Ambassador route on any host would.
        let route = match served.then(|| snapshot.table.lookup(&host)).flatten() {
            Some(r) => Some(r.clone()),
            None if served => {
                let path = handled_path(&ctx.forward, session.req_header());
                snapshot.table.lookup_path(path).map(|(r, strip)| {
                    ctx.strip = strip;
                    r.clone()
                })
            }
            None => None,
        };
        ctx.host = Some(host);
        ctx.snapshot = Some(snapshot);

        if let (Some(authn), true) = (self.authn.as_deref(), client.listener.auth) {
            // Taking over from a running process (`--upgrade`): wait for the provider too,
            // within the same bound, rather than answer 503.
            if let Some(limit) = self.settings.ready_wait.filter(|_| !authn.is_ready()) {
                let deadline = Instant::now() + limit;
                while !authn.is_ready() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            if !self
                .authenticate(authn, session, client, ctx, route.as_deref())
                .await?
            {
                return Ok(());
            }
        }
        // The gateway's own cookies stay between the browser and the gateway.
        if let Some(name) = &self.cookie_name {
            let keep_session = self.forward_credentials && ctx.identity.is_some();
            strip_gateway_cookies(session.req_header_mut(), name, keep_session);
        }
        if !ctx.provider {
            let Some(route) = route else {
                let host = ctx.host.clone().unwrap_or_default();
                return Err(GatewayError::UnknownHost(host).into());
            };
            let req = session.req_header();
            let tag = req
                .headers
                .get("knative-serving-tag")
                .and_then(|v| v.to_str().ok());
            let path = stripped(handled_path(&ctx.forward, req), ctx.strip);
            ctx.target = Some(route.target(path, tag).clone());
            ctx.route = Some(route);
        }
        if session.is_upgrade_req() {
            return Err(GatewayError::UpgradeNotSupported.into());
        }
        if content_length(session.req_header()).is_some_and(|len| len > self.settings.max_body) {
            return Err(GatewayError::BodyTooLarge {
                limit: self.settings.max_body,
            }
            .into());
        }
        self.forward(session, client, ctx).await
    }

    /// Acts on the one auth decision (`auth::decide`): nothing is decided here. `Ok(true)`:
    /// go on to routing; `Ok(false)`: the answer has been written.
    async fn authenticate(
        &self,
        authn: &Authn,
        session: &mut ServerSession,
        client: &Client,
        ctx: &mut Ctx,
        route: Option<&HostRoute>,
    ) -> Result<bool, Failure> {
        let req = session.req_header();
        let facts = auth::decide::Request {
            method: &req.method,
            path: handled_path(&ctx.forward, req),
            headers: &req.headers,
            namespace: route.map(|r| r.isvc.namespace.as_str()).unwrap_or(""),
            isvc: route.map(|r| r.isvc.name.as_str()).unwrap_or(""),
            ready: authn.is_ready(),
        };
        let tls = client.listener.tls;
        match authn.decide(&facts, crate::authn::now()).await {
            Decision::Provider => {
                // The provider's own pages go as they came, whatever route a path matched.
                ctx.strip = 0;
                ctx.target = Some(authn.provider_target.clone());
                ctx.provider = true;
                Ok(true)
            }
            Decision::Allow(identity) => {
                ctx.identity = Some(identity);
                if !self.forward_credentials {
                    session
                        .req_header_mut()
                        .remove_header(&http::header::AUTHORIZATION);
                }
                Ok(true)
            }
            Decision::Anonymous { drop_authorization } => {
                if drop_authorization {
                    session
                        .req_header_mut()
                        .remove_header(&http::header::AUTHORIZATION);
                }
                Ok(true)
            }
            Decision::Callback => Box::pin(self.callback(authn, session, tls, ctx))
                .await
                .map(|()| false),
            Decision::Logout => {
                let (location, clear) = authn.logout(tls);
                self.answer_redirect(session, ctx, &location, &[clear])
                    .await?;
                Ok(false)
            }
            Decision::Login => {
                // Back to the path as forwarded, so the login returns exactly where auth ran.
                let return_to = match (&ctx.forward, req.uri.path_and_query()) {
                    (Some(t), _) => t.as_str().to_string(),
                    (None, Some(pq)) => pq.as_str().to_string(),
                    (None, None) => "/".to_string(),
                };
                let login = authn
                    .start_login(ctx.raw_host(), tls, &return_to)
                    .ok_or(GatewayError::AuthNotReady)?;
                self.answer_redirect(session, ctx, &login.location, &[login.set_cookie])
                    .await?;
                Ok(false)
            }
            Decision::Deny(deny) => Err(GatewayError::Auth(deny).into()),
        }
    }

    async fn callback(
        &self,
        authn: &Authn,
        session: &mut ServerSession,
        tls: bool,
        ctx: &mut Ctx,
    ) -> Result<(), Failure> {
        let req = session.req_header();
        let cookies = cookie_header(req);
        let query = req.uri.query().unwrap_or("").to_string();
        match authn
            .finish_login(&query, cookies.as_deref(), ctx.raw_host(), tls)
            .await
        {
            Ok((location, set_cookies)) => {
                self.answer_redirect(session, ctx, &location, &set_cookies)
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e.detail, request_id = ctx.request_id.to_str().unwrap_or_default(), "login callback refused");
                Err(GatewayError::LoginFailed(e.client).into())
            }
        }
    }

    async fn answer_redirect(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        location: &str,
        cookies: &[String],
    ) -> Result<(), Failure> {
        ctx.status = 302;
        if self.drain.is_draining() {
            session.set_keepalive(None);
        }
        redirect(session, location, cookies, &ctx.request_id)
            .await
            .map_err(|_| Failure::Done)
    }

    /// Picks a backend, sends the request and streams the response back. A refused connection
    /// fails over to another revision (nothing was sent); a request that fails on a pooled
    /// connection before any response byte is sent once more on a fresh connection to the same
    /// endpoint (the upstream never saw it); anything later is a 502/504 or, once the response
    /// has started, a cut connection.
    async fn forward(
        &self,
        session: &mut ServerSession,
        client: &Client,
        ctx: &mut Ctx,
    ) -> Result<(), Failure> {
        let timeout = ctx.timeout(self.settings.request_timeout);
        let has_body = !session.is_body_empty();
        if has_body
            && session
                .req_header()
                .headers
                .contains_key(http::header::EXPECT)
        {
            // The request has passed every check: tell the client to send the body (Envoy's
            // default; the upstream never sees `Expect`).
            session
                .write_continue_response()
                .await
                .map_err(|_| Failure::Done)?;
        }
        let (mut up, addr, mut reused) = self.connect_any(ctx).await?;
        let mut replay = Replay::default();
        let mut attempt = 0;
        loop {
            let backend = match (&ctx.target, ctx.backend) {
                (Some(t), Some(i)) => t.backends.get(i),
                _ => None,
            };
            let (head, wire) = self.upstream_head(session, client, ctx, backend, has_body)?;
            up.read_timeout = Some(timeout);
            up.write_timeout = Some(timeout);
            ctx.upstream_start = Some(Instant::now());
            match self
                .until_response(session, &mut up, head, &wire, has_body, &mut replay)
                .await
            {
                Ok(resp) => {
                    ctx.upstream_elapsed = ctx.upstream_start.map(|s| s.elapsed());
                    self.respond_from(session, &mut up, resp, ctx).await?;
                    // Both sides ended cleanly: the connection can carry the next request.
                    up.respect_keepalive();
                    if let Some(stream) = up.reuse().await {
                        upstream::checkin(addr, stream, &self.settings.pool);
                    }
                    if ctx.target.as_ref().is_some_and(|t| t.shadow.is_some()) {
                        self.mirror(session, client, ctx, &replay, has_body);
                    }
                    return Ok(());
                }
                Err(Exchange::Failed(e))
                    if attempt == 0 && reused && !replay.overflowed && unseen(&e) =>
                {
                    // The pooled connection was closed under us before the upstream read the
                    // request: the same request, once, on a fresh connection.
                    tracing::debug!(error = %e, "pooled upstream connection failed; retrying on a fresh one");
                    attempt += 1;
                    up = client_session(
                        Box::pin(upstream::connect(addr, self.settings.connect_timeout))
                            .await
                            .map_err(|_| self.unreachable(ctx))?,
                    );
                    reused = false;
                }
                Err(Exchange::Failed(e)) => return Err(self.upstream_failure(ctx, &e, timeout)),
                Err(Exchange::Downstream(f)) => return Err(f),
            }
        }
    }

    /// A copy of the request for the target's shadow, when this request is drawn for one: sent
    /// after the client has its answer, from a task of its own, and its answer thrown away, so
    /// a slow or failing shadow never shows to the client. Bounded: at most `MIRRORS_IN_FLIGHT`
    /// copies at once, each within the request timeout, and only of a body the gateway still
    /// holds whole (up to `REPLAY_LIMIT`); anything else is dropped and counted.
    fn mirror(
        &self,
        session: &ServerSession,
        client: &Client,
        ctx: &Ctx,
        replay: &Replay,
        has_body: bool,
    ) {
        let (Some(target), Some(snapshot)) = (ctx.target.as_deref(), ctx.snapshot.as_deref())
        else {
            return;
        };
        let Some(shadow) = &target.shadow else {
            return;
        };
        if fastrand::u32(..100) >= shadow.percent {
            return;
        }
        let (ns, name) = ctx.route_labels();
        let counter = |result| {
            self.live
                .metrics
                .shadow_requests
                .with_label_values(&[ns, name, result])
        };
        let whole = !has_body || (replay.complete && !replay.overflowed);
        let permit = match self.mirrors.clone().try_acquire_owned() {
            Ok(p) if whole => p,
            _ => return counter("dropped").inc(),
        };
        let addr = shadow
            .backend
            .endpoints
            .iter()
            .filter_map(|e| snapshot.resolved.get(e))
            .flat_map(|a| a.iter())
            .next()
            .copied();
        let head = self.upstream_head(session, client, ctx, Some(&shadow.backend), has_body);
        let (Some(addr), Ok((head, wire))) = (addr, head) else {
            return counter("failed").inc();
        };
        let (answered, failed) = (counter("answered"), counter("failed"));
        let chunks = replay.chunks.clone();
        let pool = self.settings.pool;
        let (connect_timeout, timeout) = (
            self.settings.connect_timeout,
            ctx.timeout(self.settings.request_timeout),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let stream = match upstream::checkout(addr, &pool) {
                    Some(s) => s,
                    None => upstream::connect(addr, connect_timeout)
                        .await
                        .map_err(|e| Error::explain(ErrorType::ConnectError, e.to_string()))?,
                };
                let mut up = client_session(stream);
                up.write_request_header_wire(head, &wire).await?;
                for chunk in &chunks {
                    up.write_body(chunk).await?;
                }
                if has_body {
                    up.finish_body().await?;
                }
                read_final_head(&mut up).await?;
                while up.read_body_bytes().await?.is_some() {}
                up.respect_keepalive();
                if let Some(stream) = up.reuse().await {
                    upstream::checkin(addr, stream, &pool);
                }
                Ok::<(), Box<Error>>(())
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(())) => answered.inc(),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "shadow request failed");
                    failed.inc()
                }
                Err(_) => failed.inc(),
            }
        });
    }

    /// The request head for the upstream, serialised here in one pass: the request line in
    /// origin form, the client's header lines less the hop-by-hop ones, those its `Connection`
    /// header names and those the gateway sets, then the gateway's. No second header map is
    /// built (growing and hashing one cost about 4k instructions a request): the session gets
    /// a small head that says only how the body is framed (vendor patch 0004).
    fn upstream_head(
        &self,
        session: &ServerSession,
        client: &Client,
        ctx: &Ctx,
        backend: Option<&Backend>,
        has_body: bool,
    ) -> Result<(Box<RequestHeader>, BytesMut), Failure> {
        use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
        let req = session.req_header();
        let target = ctx.target.as_deref().ok_or(GatewayError::Internal)?;
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = req.method.clone();
        parts.uri = match &ctx.forward {
            Some(t) => http::Uri::from(t.clone()),
            None => match req.uri.path_and_query() {
                // HTTP/1 origin form (what clients send) is the URI itself.
                Some(_) if req.uri.authority().is_none() => req.uri.clone(),
                Some(pq) => http::Uri::from(pq.clone()),
                None => http::Uri::from_static("/"),
            },
        };
        let mut wire = BytesMut::with_capacity(UPSTREAM_HEAD_CAPACITY);
        wire.put_slice(parts.method.as_str().as_bytes());
        wire.put_u8(b' ');
        if ctx.strip == 0 {
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            wire.put_slice(target.as_bytes());
        } else {
            wire.put_slice(stripped(parts.uri.path(), ctx.strip).as_bytes());
            if let Some(q) = parts.uri.query() {
                wire.put_u8(b'?');
                wire.put_slice(q.as_bytes());
            }
        }
        wire.put_slice(b" HTTP/1.1\r\n");
        let named = connection_named(&req.headers);
        let mut client_xff = None;
        for (name, value) in req.headers.iter() {
            if gateway_owned(name) {
                if name == names::X_FORWARDED_FOR {
                    client_xff = value.to_str().ok();
                }
                continue;
            }
            if named.as_ref().is_some_and(|n| n.contains(name)) {
                continue;
            }
            if has_body && name == CONTENT_LENGTH && parts.headers.is_empty() {
                parts.headers.insert(CONTENT_LENGTH, value.clone());
            }
            header_line(&mut wire, name.as_str(), value);
        }
        if has_body && parts.headers.is_empty() {
            // No length: the body goes on chunked, whatever the client framed it with.
            let chunked = HeaderValue::from_static("chunked");
            header_line(&mut wire, TRANSFER_ENCODING.as_str(), &chunked);
            parts.headers.insert(TRANSFER_ENCODING, chunked);
        }
        let host = match backend {
            Some(b) => b.upstream_host_value(target),
            None => target.upstream_host_value(),
        };
        header_line(&mut wire, "host", host);
        header_line(&mut wire, names::X_FORWARDED_HOST.as_str(), &ctx.raw_host);
        header_line(
            &mut wire,
            names::X_FORWARDED_PROTO.as_str(),
            &HeaderValue::from_static(client.listener.scheme()),
        );
        if let Some(xff) = forwarded_for(client_xff, client.ip.as_ref()) {
            header_line(&mut wire, names::X_FORWARDED_FOR.as_str(), &xff);
        }
        header_line(&mut wire, names::X_REQUEST_ID.as_str(), &ctx.request_id);
        if let Some(id) = &ctx.identity {
            let value = |v: &str| HeaderValue::from_str(v).map_err(|_| GatewayError::Internal);
            let [userid, groups] = &self.identity_headers;
            header_line(&mut wire, userid.as_str(), &value(&id.user)?);
            header_line(&mut wire, groups.as_str(), &value(&id.groups.join(","))?);
        }
        if let (Some(route), Some(backend)) = (&ctx.route, backend) {
            let (name, namespace) = route.isvc_values();
            header_line(&mut wire, names::KSERVE_ISVC_NAME.as_str(), name);
            header_line(&mut wire, names::KSERVE_ISVC_NAMESPACE.as_str(), namespace);
            if backend.knative {
                header_line(
                    &mut wire,
                    names::KNATIVE_REVISION.as_str(),
                    backend.revision_value(),
                );
                header_line(&mut wire, names::KNATIVE_NAMESPACE.as_str(), namespace);
            }
        }
        wire.put_slice(b"\r\n");
        Ok((Box::new(RequestHeader::from(parts)), wire))
    }

    /// A connection to one backend of the target, drawn by weight: a pooled one when there is
    /// one, else a new one; a backend whose connection is refused (or that has no address) is
    /// counted and the next one drawn. With a warm pool this is a lookup; a new connection is
    /// made out of line. The session is boxed: moving it would copy half a kilobyte.
    async fn connect_any(
        &self,
        ctx: &mut Ctx,
    ) -> Result<(Box<ClientSession>, SocketAddr, bool), Failure> {
        let (Some(target), Some(snapshot)) = (ctx.target.clone(), ctx.snapshot.clone()) else {
            return Err(GatewayError::Internal.into());
        };
        let mut tried: Vec<usize> = Vec::new();
        while let Some(idx) = target.pick(fastrand::u32(..), &tried) {
            tried.push(idx);
            ctx.backend = Some(idx);
            let backend = &target.backends[idx];
            let addrs = backend
                .endpoints
                .iter()
                .filter_map(|e| snapshot.resolved.get(e))
                .flat_map(|a| a.iter());
            let count = addrs.clone().count();
            let Some(addr) = addrs.clone().nth(fastrand::usize(..count.max(1))).copied() else {
                // Never resolved: as good as a refused connection.
                tracing::warn!(isvc = %ctx.isvc_label(), revision = %backend.revision, "no address for revision");
                self.count_failure(ctx, "unresolved");
                continue;
            };
            if let Some(stream) = upstream::checkout(addr, &self.settings.pool) {
                return Ok((client_session(stream), addr, true));
            }
            // Connecting is rare with a warm pool and its future is large (TLS): out of line.
            match Box::pin(self.connect(addr, ctx)).await {
                Ok(stream) => return Ok((client_session(stream), addr, false)),
                Err(e) => {
                    self.count_failure(ctx, "connect");
                    // Nothing was sent, so another revision is safe even for a POST.
                    if target.pick(0, &tried).is_some() {
                        let (ns, name) = ctx.route_labels();
                        self.live
                            .metrics
                            .failovers
                            .with_label_values(&[ns, name, ctx.revision()])
                            .inc();
                        tracing::warn!(isvc = %ctx.isvc_label(), revision = ctx.revision(), error = %e, "connect failed; failing over to another revision");
                    }
                }
            }
        }
        Err(self.unreachable(ctx))
    }

    /// A new connection: plain TCP to a model server, TLS to an `https` OIDC provider.
    async fn connect(&self, addr: SocketAddr, ctx: &Ctx) -> Result<Stream, ConnectError> {
        match self.authn.as_deref() {
            Some(a) if ctx.provider && a.settings.issuer_tls => {
                let mut peer = pingora::upstreams::peer::HttpPeer::new(
                    addr,
                    true,
                    a.settings.issuer_host.clone(),
                );
                peer.options.connection_timeout = Some(self.settings.connect_timeout);
                pingora::connectors::TransportConnector::new(None)
                    .new_stream(&peer)
                    .await
                    .map_err(|e| ConnectError::Refused(std::io::Error::other(e.to_string())))
            }
            _ => upstream::connect(addr, self.settings.connect_timeout).await,
        }
    }

    fn unreachable(&self, ctx: &Ctx) -> Failure {
        GatewayError::NoRevisionReachable {
            isvc: ctx.isvc_label(),
        }
        .into()
    }

    fn count_failure(&self, ctx: &Ctx, kind: &str) {
        let (ns, name) = ctx.route_labels();
        self.live
            .metrics
            .upstream_failures
            .with_label_values(&[ns, name, ctx.revision(), kind])
            .inc();
    }

    fn upstream_failure(&self, ctx: &mut Ctx, e: &Error, timeout: Duration) -> Failure {
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        self.count_failure(ctx, if timed_out { "timeout" } else { "other" });
        ctx.error = Some(e.etype().as_str());
        tracing::warn!(isvc = %ctx.isvc_label(), revision = ctx.revision(), error = %e, request_id = ctx.request_id.to_str().unwrap_or_default(), "upstream exchange failed");
        GatewayError::from_pingora(
            e,
            &ctx.isvc_label(),
            timeout.as_secs(),
            self.settings.max_body,
        )
        .into()
    }

    /// Sends the head and (streaming) the body, until the upstream's response head arrives.
    /// The upstream may answer before the body is all sent; the rest of it is then streamed
    /// next to the response.
    async fn until_response(
        &self,
        session: &mut ServerSession,
        up: &mut ClientSession,
        head: Box<RequestHeader>,
        wire: &[u8],
        has_body: bool,
        replay: &mut Replay,
    ) -> Result<http::response::Parts, Exchange> {
        up.write_request_header_wire(head, wire)
            .await
            .map_err(Exchange::Failed)?;
        let mut body_done = !has_body;
        if has_body {
            // Whatever a previous attempt read from the client goes first.
            for chunk in replay.chunks.clone() {
                up.write_body(&chunk).await.map_err(Exchange::Failed)?;
            }
            body_done = replay.complete;
            if body_done {
                up.finish_body().await.map_err(Exchange::Failed)?;
            }
        }
        loop {
            if body_done && session.is_http2() {
                // An HTTP/2 client may reset the stream while the upstream thinks: stop then,
                // and cancel the upstream request (its connection is dropped, not pooled).
                return tokio::select! {
                    biased;
                    head = read_final_head(up) => head.map_err(Exchange::Failed),
                    _ = session.read_body_or_idle(true) => Err(Exchange::Downstream(Failure::Done)),
                };
            }
            if body_done {
                // HTTP/1: a client that went away is noticed when the response is written; a
                // probe here would cost a read per request.
                return read_final_head(up).await.map_err(Exchange::Failed);
            }
            tokio::select! {
                biased;
                head = read_final_head(up) => {
                    let head = head.map_err(Exchange::Failed)?;
                    replay.pending_body = true;
                    return Ok(head);
                }
                chunk = self.read_body(session, replay) => {
                    match chunk.map_err(Exchange::Downstream)? {
                        Some(chunk) => {
                            up.write_body(&chunk).await.map_err(Exchange::Failed)?;
                        }
                        None => {
                            up.finish_body().await.map_err(Exchange::Failed)?;
                            body_done = true;
                        }
                    }
                }
            }
        }
    }

    /// The next piece of the request body (`None` at its end), within the body idle timeout
    /// and the size limit; kept for a replay while it is small.
    async fn read_body(
        &self,
        session: &mut ServerSession,
        replay: &mut Replay,
    ) -> Result<Option<Bytes>, Failure> {
        let chunk = loop {
            if session.is_body_done() {
                replay.complete = true;
                return Ok(None);
            }
            let read = if session.is_http2() {
                // pingora's HTTP/2 session has no read timeout of its own.
                tokio::time::timeout(self.settings.body_idle_timeout, session.read_request_body())
                    .await
                    .unwrap_or_else(|_| Error::e_explain(ErrorType::ReadTimedout, "request body"))
            } else {
                // HTTP/1: the session's read timeout, set per connection, is this one.
                session.read_request_body().await
            };
            match read {
                Err(e) if e.etype() == &ErrorType::ReadTimedout => {
                    return Err(GatewayError::BodyTimeout {
                        secs: self.settings.body_idle_timeout.as_secs(),
                    }
                    .into())
                }
                Err(e) if e.etype() == &ErrorType::HTTPStatus(400) || is_framing(&e) => {
                    return Err(GatewayError::BadRequest(e.etype().as_str().into()).into())
                }
                Err(_) => return Err(Failure::Done),
                Ok(None) => {
                    replay.complete = true;
                    return Ok(None);
                }
                // pingora hands over an empty piece at times (when it has read a chunked
                // body's trailers): there is nothing to send, and an empty chunk upstream would
                // end the body there.
                Ok(Some(chunk)) if chunk.is_empty() => continue,
                Ok(Some(chunk)) => break chunk,
            }
        };
        replay.read += chunk.len() as u64;
        if replay.read > self.settings.max_body {
            return Err(GatewayError::BodyTooLarge {
                limit: self.settings.max_body,
            }
            .into());
        }
        replay.keep(&chunk);
        if session.is_body_done() {
            replay.complete = true;
        }
        Ok(Some(chunk))
    }

    /// Writes the upstream's response head and streams its body (and the rest of the request
    /// body, if the upstream answered early) until both are done.
    async fn respond_from(
        &self,
        session: &mut ServerSession,
        up: &mut ClientSession,
        mut resp: http::response::Parts,
        ctx: &mut Ctx,
    ) -> Result<(), Failure> {
        self.response_headers(&mut resp.headers, ctx);
        ctx.status = resp.status.as_u16();
        let resp = Box::new(ResponseHeader::from(resp));
        if self.drain.is_draining() {
            session.set_keepalive(None);
        }
        let mut response_done = up.is_body_done();
        let mut replay = Replay::default();
        let mut request_done = session.is_body_done() || session.is_body_empty();
        if session.write_response_header(resp).await.is_err() {
            return Err(Failure::Done);
        }
        while !response_done || !request_done {
            tokio::select! {
                biased;
                body = up.read_body_bytes(), if !response_done => {
                    let body = match body {
                        Ok(b) => b,
                        Err(e) => {
                            self.count_failure(ctx, "other");
                            ctx.error = Some(e.etype().as_str());
                            tracing::warn!(isvc = %ctx.isvc_label(), error = %e, "upstream response body failed");
                            return Err(Failure::Done);
                        }
                    };
                    response_done = up.is_body_done();
                    let data = body.unwrap_or_default();
                    if (!data.is_empty() || response_done)
                        && session.write_response_body(data, response_done).await.is_err()
                    {
                        return Err(Failure::Done);
                    }
                }
                chunk = self.read_body(session, &mut replay), if !request_done => {
                    match chunk {
                        Ok(Some(chunk)) => {
                            if up.write_body(&chunk).await.is_err() {
                                // The upstream stopped reading: its response stands.
                                request_done = true;
                            }
                        }
                        Ok(None) => {
                            let _ = up.finish_body().await;
                            request_done = true;
                        }
                        Err(_) => return Err(Failure::Done),
                    }
                }
            }
        }
        if session.finish_body().await.is_err() {
            return Err(Failure::Done);
        }
        Ok(())
    }

    /// The response as the client gets it: hop-by-hop headers and any `Set-Cookie` for the
    /// gateway's cookies removed (and counted), the revision and request id added.
    fn response_headers(&self, headers: &mut http::HeaderMap, ctx: &Ctx) {
        remove_hop_by_hop_response(headers);
        if let Some(name) = &self.cookie_name {
            let removed = strip_gateway_set_cookies(headers, name);
            if removed > 0 {
                let (ns, isvc) = ctx.route_labels();
                tracing::warn!(isvc = %ctx.isvc_label(), revision = ctx.revision(), removed, "upstream tried to set the gateway's cookies; removed");
                self.live
                    .metrics
                    .blocked_set_cookies
                    .with_label_values(&[ns, isvc])
                    .inc_by(removed as u64);
            }
        }
        if let (Some(t), Some(i)) = (&ctx.target, ctx.backend) {
            headers.insert(
                names::X_MODELGATE_REVISION,
                t.backends[i].revision_value().clone(),
            );
        }
        headers.insert(names::X_REQUEST_ID, ctx.request_id.clone());
    }

    fn log(&self, session: &ServerSession, ctx: &Ctx) {
        let total = ctx.start.elapsed();
        let (ns, name) = ctx.route_labels();
        let revision = ctx.revision();
        let m = &self.live.metrics;
        let class = status_class(ctx.status);
        match (&ctx.route, &ctx.target, ctx.backend) {
            // The revision's counters, looked up once per table build.
            (Some(_), Some(t), Some(i)) => {
                let counters = t.backends[i].memo.gateway.get_or_init(|| {
                    Arc::new(crate::metrics::RevisionCounters::new(m, ns, name, revision))
                });
                match counters.downcast_ref::<crate::metrics::RevisionCounters>() {
                    Some(c) => c.count(class),
                    None => m
                        .requests
                        .with_label_values(&[ns, name, revision, class])
                        .inc(),
                }
            }
            _ => m
                .requests
                .with_label_values(&[ns, name, revision, class])
                .inc(),
        }
        m.latency.observe(total.as_secs_f64());
        let req = session.req_header();
        tracing::info!(
            target: "modelgate::access",
            method = %req.method,
            host = ctx.host.as_deref().unwrap_or("-"),
            path = %req.uri.path(),
            status = ctx.status,
            isvc = %ctx.isvc_label(),
            revision,
            upstream_ms = ctx.upstream_elapsed.map(|d| d.as_secs_f64() * 1000.0),
            total_ms = total.as_secs_f64() * 1000.0,
            request_id = ctx.request_id.to_str().unwrap_or_default(),
            error = ctx.error,
        );
    }
}

/// An HTTP/1 client session on `stream`, boxed (it is large) and without a second map of the
/// upstream's header-name spellings (they go to the client in lower case).
fn client_session(stream: Stream) -> Box<ClientSession> {
    let mut session = Box::new(ClientSession::new(stream));
    session.set_preserve_header_case(false);
    session
}

/// What the upstream exchange before the response head ended with.
enum Exchange {
    /// The upstream side failed (`Error` says how, and whether a retry is safe).
    Failed(Box<Error>),
    /// The client side failed or was refused.
    Downstream(Failure),
}

/// The request body read so far, kept (while small) so that a request that failed on a pooled
/// connection can be sent again whole.
#[derive(Default)]
struct Replay {
    chunks: Vec<Bytes>,
    kept: usize,
    read: u64,
    /// More was read than is kept: no replay possible.
    overflowed: bool,
    /// The whole body has been read from the client.
    complete: bool,
    /// The upstream answered before the body was all sent.
    pending_body: bool,
}

/// Room for a usual upstream head (a client's few hundred bytes and the gateway's dozen
/// lines); a larger one grows the buffer.
const UPSTREAM_HEAD_CAPACITY: usize = 1024;

/// One header line of an HTTP/1 head. Names and values are `http` types, which hold no CR, LF
/// or NUL: a line cannot be split or cut.
fn header_line(wire: &mut BytesMut, name: &str, value: &HeaderValue) {
    wire.put_slice(name.as_bytes());
    wire.put_slice(b": ");
    wire.put_slice(value.as_bytes());
    wire.put_slice(b"\r\n");
}

/// Shadow copies in flight at once, per gateway; more are dropped (and counted).
pub const MIRRORS_IN_FLIGHT: usize = 64;

/// How much request body is kept for a replay.
const REPLAY_LIMIT: usize = 64 * 1024;

impl Replay {
    fn keep(&mut self, chunk: &Bytes) {
        if self.overflowed || self.kept + chunk.len() > REPLAY_LIMIT {
            self.overflowed = true;
            self.chunks.clear();
            return;
        }
        self.kept += chunk.len();
        self.chunks.push(chunk.clone());
    }
}

/// Whether the upstream cannot have seen the request: the connection failed with nothing read
/// back (pingora marks that `ReusedOnly`: safe to retry when the connection was a reused one),
/// or writing the request failed (the upstream had closed it).
fn unseen(e: &Error) -> bool {
    matches!(e.retry, RetryType::ReusedOnly) || e.etype() == &ErrorType::WriteError
}

/// A body framing error pingora raised while reading the client's body.
fn is_framing(e: &Error) -> bool {
    matches!(e.etype(), ErrorType::Custom(t) if t.starts_with("Invalid") || t.starts_with("Premature"))
}

/// Reads the upstream's response head, skipping interim 1xx responses (the gateway answered
/// `Expect` itself, and upgrades are refused); a copy of it to edit for the client.
async fn read_final_head(up: &mut ClientSession) -> pingora::Result<http::response::Parts> {
    loop {
        up.read_response().await?;
        let head = up
            .resp_header()
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response head"))?;
        if !head.status.is_informational() {
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = head.status;
            parts.headers = head.headers.clone();
            return Ok(parts);
        }
    }
}

/// Header names the gateway sets, parsed once.
mod names {
    use http::HeaderName;
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_MODELGATE_REVISION: HeaderName = HeaderName::from_static("x-modelgate-revision");
    pub const KSERVE_ISVC_NAME: HeaderName = HeaderName::from_static("kserve-isvc-name");
    pub const KSERVE_ISVC_NAMESPACE: HeaderName = HeaderName::from_static("kserve-isvc-namespace");
    pub const KNATIVE_REVISION: HeaderName = HeaderName::from_static("knative-serving-revision");
    pub const KNATIVE_NAMESPACE: HeaderName = HeaderName::from_static("knative-serving-namespace");
}

/// Client headers that never go upstream as sent: the hop-by-hop ones (RFC 9110 §7.6.1:
/// `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade`, `Trailer`,
/// `Transfer-Encoding`, since the upstream request is framed anew), `Expect` (the gateway
/// answered it), and the ones the gateway sets itself.
fn gateway_owned(name: &HeaderName) -> bool {
    use http::header::*;
    matches!(
        *name,
        CONNECTION | TE | UPGRADE | TRAILER | TRANSFER_ENCODING | EXPECT | HOST
    ) || matches!(
        name.as_str(),
        "keep-alive"
            | "proxy-connection"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-for"
            | "x-request-id"
            | "kserve-isvc-name"
            | "kserve-isvc-namespace"
            | "knative-serving-revision"
            | "knative-serving-namespace"
    )
}

/// The headers a `Connection` header names (for this hop only), if it names any.
fn connection_named(headers: &http::HeaderMap) -> Option<Vec<HeaderName>> {
    let mut values = headers.get_all(http::header::CONNECTION).iter().peekable();
    values.peek()?;
    Some(
        values
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect(),
    )
}

/// The hop-by-hop headers of a response (RFC 9110 §7.6.1), but `Transfer-Encoding`: it tells
/// pingora to frame the response to the client chunked, as the upstream sent it. One pass to
/// find out whether there is anything to remove.
fn remove_hop_by_hop_response(headers: &mut http::HeaderMap) {
    use http::header::{CONNECTION, TRAILER, UPGRADE};
    let hop = |n: &HeaderName| {
        matches!(*n, CONNECTION | UPGRADE | TRAILER)
            || matches!(n.as_str(), "keep-alive" | "proxy-connection")
    };
    if !headers.keys().any(hop) {
        return;
    }
    let mut doomed: Vec<HeaderName> = connection_named(headers).unwrap_or_default();
    doomed.retain(|n| *n != http::header::TRANSFER_ENCODING);
    doomed.extend(headers.keys().filter(|n| hop(n)).cloned());
    for name in doomed {
        headers.remove(name);
    }
}

/// Every `Cookie` header of the request as one value (HTTP/2 sends one per cookie).
fn cookie_header(req: &RequestHeader) -> Option<String> {
    let cookies: Vec<&str> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!cookies.is_empty()).then(|| cookies.join("; "))
}

/// Removes every client header on the strip list (in any spelling) and every header whose
/// name has `_` (or refuses the request for one, in reject mode). Allocates only when there is
/// something to remove.
fn strip_client_headers(
    req: &mut RequestHeader,
    strip: &StripList,
    underscores: Underscores,
) -> Result<(), routes::request::HeadError> {
    let doomed = |k: &HeaderName| strip.matches(k.as_str()) || k.as_str().contains('_');
    if !req.headers.keys().any(doomed) {
        return Ok(());
    }
    let mut names = routes::request::underscore_headers(&req.headers, underscores)?;
    names.extend(
        req.headers
            .keys()
            .filter(|k| strip.matches(k.as_str()))
            .cloned(),
    );
    for k in names {
        req.remove_header(&k);
    }
    Ok(())
}

/// Takes the gateway's session and login-state cookies out of the upstream `Cookie` header
/// (all of them, or all but the session with `forward_credentials`), keeping the others.
fn strip_gateway_cookies(req: &mut RequestHeader, cookie_name: &str, keep_session: bool) {
    let Some(kept) = auth::session::upstream_cookie(&req.headers, cookie_name, keep_session) else {
        return;
    };
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        // Built from valid header values with pairs removed; still a valid value.
        if let Ok(v) = HeaderValue::from_str(&kept) {
            let _ = req.insert_header(http::header::COOKIE, v);
        }
    }
}

/// Removes every `Set-Cookie` of the upstream's response that would set one of the gateway's
/// cookies; returns how many.
fn strip_gateway_set_cookies(headers: &mut http::HeaderMap, cookie_name: &str) -> usize {
    let all = headers.get_all(http::header::SET_COOKIE);
    let removed = all
        .iter()
        .filter(|v| auth::session::sets_gateway_cookie(v.as_bytes(), cookie_name))
        .count();
    if removed == 0 {
        return 0;
    }
    let kept: Vec<HeaderValue> = all
        .iter()
        .filter(|v| !auth::session::sets_gateway_cookie(v.as_bytes(), cookie_name))
        .cloned()
        .collect();
    headers.remove(http::header::SET_COOKIE);
    for v in kept {
        headers.append(http::header::SET_COOKIE, v);
    }
    removed
}

/// The declared body length, if any and valid.
fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn gateway() -> Gateway {
        Gateway {
            live: Arc::new(Live::new(Metrics::new())),
            settings: ProxySettings {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(1),
                max_body: 1,
                body_idle_timeout: Duration::from_secs(1),
                pool: PoolLimits {
                    idle_per_endpoint: 1,
                    idle_timeout: Duration::from_secs(1),
                },
                ready_wait: None,
            },
            authn: None,
            identity_headers: [
                HeaderName::from_static("kubeflow-userid"),
                HeaderName::from_static("kubeflow-groups"),
            ],
            strip: StripList::with_defaults(["kubeflow-userid", "kubeflow-groups"]),
            underscores: Underscores::Drop,
            cookie_name: None,
            forward_credentials: false,
            drain: Drain::default(),
            mirrors: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// The per-request future is small: its size is what is copied when it starts (about an
    /// instruction a byte), so large and rare work is boxed out of line. Prints the sizes
    /// (BENCHMARKS.md quotes them) and keeps them from growing back unnoticed.
    #[tokio::test]
    async fn the_request_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = upstream::connect(addr, Duration::from_secs(1))
            .await
            .unwrap();
        let mut session = ServerSession::new_http1(stream);
        let gw = gateway();
        let client = Client::new(
            Arc::new(Listener {
                auth: false,
                tls: false,
                served_ports: vec![80],
            }),
            None,
        );
        let serve = std::mem::size_of_val(&gw.serve_request(&mut session, &client));
        let mut ctx = Ctx::new();
        let forward = std::mem::size_of_val(&gw.forward(&mut session, &client, &mut ctx));
        println!(
            "serve_request future: {serve} bytes; forward: {forward} bytes; ClientSession: {} bytes; ServerSession: {} bytes",
            std::mem::size_of::<ClientSession>(),
            std::mem::size_of::<ServerSession>()
        );
        assert!(serve <= 4096, "serve_request future is {serve} bytes");
    }
}
