//! The pingora `ProxyHttp` implementation. Each hook is short and calls the pure pieces: host
//! and request-id rules in `request`, the table and split in `routes`, error responses in
//! `errors`. Phase order and what each hook does: docs/request-lifecycle.md.

use crate::authn::Authn;
use crate::errors::{redirect, respond, GatewayError};
use crate::metrics::status_class;
use crate::request::{
    forwarded_for, forwarded_target, new_request_id, request_authority, request_id,
};
use crate::state::{Live, Snapshot};
use async_trait::async_trait;
use auth::decide::Decision;
use auth::headers::StripList;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use routes::request::Underscores;
use routes::{HostError, HostRoute, Target};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Proxy settings fixed at start.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub keepalive_secs: u64,
    pub max_body: u64,
    /// `X-Forwarded-Proto` for this listener.
    pub scheme: &'static str,
}

pub struct Gateway {
    pub live: Arc<Live>,
    pub settings: ProxySettings,
    /// Set when `auth:` is configured and this listener authenticates.
    pub authn: Option<Arc<Authn>>,
    /// Names of the identity headers (lower-case): set only from a verified identity.
    pub identity_headers: [http::HeaderName; 2],
    /// Client headers removed from every request (the identity headers among them).
    pub strip: StripList,
    pub underscores: Underscores,
    /// The session cookie's name when `auth:` is configured, on every listener (one without
    /// auth must not hand the gateway's cookies to a model server either).
    pub cookie_name: Option<String>,
    pub forward_credentials: bool,
    /// Local port of each listener of this service, with the `Host` ports it serves.
    pub served_ports: Vec<(u16, Vec<u16>)>,
}

/// Per-request state. The route and target are `Arc`s taken from one table snapshot, so a
/// reload in the middle of a request (or between its retries) cannot change where it goes.
pub struct Ctx {
    start: Instant,
    /// The table and addresses this request uses from start to end (retries included).
    snapshot: Option<Arc<Snapshot>>,
    request_id: HeaderValue,
    host: Option<String>,
    /// The target sent upstream when it is not the one received (normalised path, origin form).
    forward: Option<http::uri::PathAndQuery>,
    /// The `Host` as the client sent it (port included), for `X-Forwarded-Host` and redirects.
    raw_host: HeaderValue,
    route: Option<Arc<HostRoute>>,
    /// Verified identity to pass upstream.
    identity: Option<auth::session::Identity>,
    target: Option<Arc<Target>>,
    /// Backends already tried, by index into `target.backends`.
    tried: Vec<usize>,
    backend: Option<usize>,
    body_bytes: u64,
    upstream_start: Option<Instant>,
    upstream_elapsed: Option<Duration>,
}

impl Ctx {
    /// The client's `Host`, which `request_host` has already checked is ASCII.
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

/// What authentication made of a request.
enum AuthStep {
    /// Go on to routing (with `ctx.identity` set when a user was verified).
    Continue,
    /// A response was written here (redirect, refusal, callback, logout).
    Answered,
    /// The OIDC provider's own pages: proxy them without auth.
    Provider,
}

/// The path the request is handled and forwarded with: normalised.
fn handled_path<'a>(
    forward: &'a Option<http::uri::PathAndQuery>,
    req: &'a RequestHeader,
) -> &'a str {
    forward.as_ref().map_or(req.uri.path(), |t| t.path())
}

impl Gateway {
    fn tls(&self) -> bool {
        self.settings.scheme == "https"
    }

    /// The `Host` ports that mean the listener this request came in on.
    fn served_ports(&self, session: &Session) -> &[u16] {
        let port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port());
        self.served_ports
            .iter()
            .find(|(p, _)| Some(*p) == port)
            .map(|(_, ports)| ports.as_slice())
            .unwrap_or(&[])
    }

    /// Acts on the one auth decision (`auth::decide`): nothing is decided here.
    async fn authenticate(
        &self,
        authn: &Authn,
        session: &mut Session,
        ctx: &mut Ctx,
        route: Option<&HostRoute>,
    ) -> Result<AuthStep> {
        let req = session.req_header();
        let facts = auth::decide::Request {
            method: &req.method,
            path: handled_path(&ctx.forward, req),
            headers: &req.headers,
            namespace: route.map(|r| r.isvc.namespace.as_str()).unwrap_or(""),
            isvc: route.map(|r| r.isvc.name.as_str()).unwrap_or(""),
            ready: authn.is_ready(),
        };
        let err = match authn.decide(&facts, crate::authn::now()).await {
            Decision::Provider => {
                ctx.target = Some(authn.provider_target.clone());
                return Ok(AuthStep::Provider);
            }
            Decision::Allow(identity) => {
                ctx.identity = Some(identity);
                if !self.forward_credentials {
                    session
                        .req_header_mut()
                        .remove_header(&http::header::AUTHORIZATION);
                }
                return Ok(AuthStep::Continue);
            }
            Decision::Anonymous { drop_authorization } => {
                if drop_authorization {
                    session
                        .req_header_mut()
                        .remove_header(&http::header::AUTHORIZATION);
                }
                return Ok(AuthStep::Continue);
            }
            Decision::Callback => {
                let cookies = cookie_header(req);
                let query = req.uri.query().unwrap_or("").to_string();
                let outcome = authn
                    .finish_login(&query, cookies.as_deref(), ctx.raw_host(), self.tls())
                    .await;
                match outcome {
                    Ok((location, set_cookies)) => {
                        redirect(session, &location, &set_cookies, &ctx.request_id).await?;
                        return Ok(AuthStep::Answered);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.detail, request_id = ctx.request_id.to_str().unwrap_or_default(), "login callback refused");
                        GatewayError::LoginFailed(e.client)
                    }
                }
            }
            Decision::Logout => {
                let (location, clear) = authn.logout(self.tls());
                redirect(session, &location, &[clear], &ctx.request_id).await?;
                return Ok(AuthStep::Answered);
            }
            Decision::Login => {
                // Back to the path as forwarded, so the login returns exactly where auth ran.
                let return_to = match (&ctx.forward, req.uri.path_and_query()) {
                    (Some(t), _) => t.as_str().to_string(),
                    (None, Some(pq)) => pq.as_str().to_string(),
                    (None, None) => "/".to_string(),
                };
                match authn.start_login(ctx.raw_host(), self.tls(), &return_to) {
                    Some(login) => {
                        redirect(
                            session,
                            &login.location,
                            &[login.set_cookie],
                            &ctx.request_id,
                        )
                        .await?;
                        return Ok(AuthStep::Answered);
                    }
                    None => GatewayError::AuthNotReady,
                }
            }
            Decision::Deny(deny) => GatewayError::Auth(deny),
        };
        self.reject(session, ctx, err).await?;
        Ok(AuthStep::Answered)
    }

    async fn reject(&self, session: &mut Session, ctx: &Ctx, err: GatewayError) -> Result<bool> {
        respond(session, &err, Some(&ctx.request_id), false).await?;
        Ok(true)
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

/// Header names the gateway sets upstream, parsed once.
mod upstream_names {
    use http::HeaderName;
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const KSERVE_ISVC_NAME: HeaderName = HeaderName::from_static("kserve-isvc-name");
    pub const KSERVE_ISVC_NAMESPACE: HeaderName = HeaderName::from_static("kserve-isvc-namespace");
    pub const KNATIVE_REVISION: HeaderName = HeaderName::from_static("knative-serving-revision");
    pub const KNATIVE_NAMESPACE: HeaderName = HeaderName::from_static("knative-serving-namespace");
}

impl Gateway {
    /// Every header the gateway sets on (`Some`) or removes from (`None`) the upstream request,
    /// handed to `set` one by one. What a client sent under these names is never passed on.
    fn upstream_headers(
        &self,
        ctx: &Ctx,
        target: &Target,
        backend: &routes::Backend,
        xff: Option<String>,
        mut set: impl FnMut(http::HeaderName, Option<HeaderValue>) -> Result<()>,
    ) -> Result<()> {
        use upstream_names::*;
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "upstream header value"))
        };
        set(http::header::HOST, Some(value(&target.upstream_host)?))?;
        set(X_FORWARDED_HOST, Some(ctx.raw_host.clone()))?;
        set(
            X_FORWARDED_PROTO,
            Some(HeaderValue::from_static(self.settings.scheme)),
        )?;
        set(X_FORWARDED_FOR, xff.as_deref().map(value).transpose()?)?;
        set(X_REQUEST_ID, Some(ctx.request_id.clone()))?;
        if let Some(id) = &ctx.identity {
            let [userid, groups] = &self.identity_headers;
            set(userid.clone(), Some(value(&id.user)?))?;
            set(groups.clone(), Some(value(&id.groups.join(","))?))?;
        }
        let Some(route) = &ctx.route else {
            // The OIDC provider's own pages: no model headers.
            return Ok(());
        };
        set(KSERVE_ISVC_NAME, Some(value(&route.isvc.name)?))?;
        set(KSERVE_ISVC_NAMESPACE, Some(value(&route.isvc.namespace)?))?;
        let knative = |v: &str| backend.knative.then(|| value(v)).transpose();
        set(KNATIVE_REVISION, knative(&backend.revision)?)?;
        set(KNATIVE_NAMESPACE, knative(&route.isvc.namespace)?)?;
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// No modules: pingora's default adds a response-compression module, switched off, whose
    /// context is still built and called on every request. Responses pass through as the model
    /// server wrote them.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            snapshot: None,
            request_id: HeaderValue::from_static(""),
            host: None,
            forward: None,
            raw_host: HeaderValue::from_static(""),
            route: None,
            identity: None,
            target: None,
            tried: Vec::new(),
            backend: None,
            body_bytes: 0,
            upstream_start: None,
            upstream_elapsed: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // pingora keeps idle HTTP/1.1 client connections forever unless told otherwise. It has
        // already switched keep-alive off where the request's framing demands a close
        // (`Transfer-Encoding` with `Content-Length`, in either order) or the client asked for
        // one; setting a timeout then would turn it back on.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.settings.keepalive_secs));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.start = Instant::now();
        let req = session.req_header();
        ctx.request_id = request_id(req.headers.get("x-request-id"), new_request_id);
        // The head first: framing, target and the one normalised path (routes::request).
        // HTTP/1's raw head keeps what the parsed target drops (a fragment); HTTP/2 has none.
        let downstream = session.as_downstream();
        let head = (!downstream.is_http2()).then(|| downstream.to_h1_raw());
        let raw_target = head
            .as_deref()
            .and_then(routes::request::raw_request_target)
            .unwrap_or(req.raw_path());
        match forwarded_target(req, raw_target) {
            Ok(forward) => ctx.forward = forward,
            Err(e) => return self.reject(session, ctx, GatewayError::Head(e)).await,
        }
        // Headers a client must not set, on any path, in any spelling, auth or not.
        if let Err(e) =
            strip_client_headers(session.req_header_mut(), &self.strip, self.underscores)
        {
            return self.reject(session, ctx, GatewayError::Head(e)).await;
        }
        let req = session.req_header();
        let (authority, raw_host) = match request_authority(req) {
            Ok(h) => h,
            Err(why) => return self.reject(session, ctx, GatewayError::BadHost(why)).await,
        };
        ctx.raw_host = match raw_host {
            Some(h) => h,
            // HTTP/2 without `Host`: the authority, which `request_authority` has checked.
            None => HeaderValue::from_str(authority)
                .map_err(|_| GatewayError::Internal.into_pingora())?,
        };
        // A port this listener does not serve matches no InferenceService (404, after auth,
        // like any unknown host).
        let host = match routes::request_host(authority, self.served_ports(session)) {
            Ok(h) => Some(h),
            Err(HostError::PortNotServed(_)) => None,
            Err(e) => {
                return self
                    .reject(session, ctx, GatewayError::BadHost(e.to_string()))
                    .await
            }
        };
        let shown_host = host
            .clone()
            .unwrap_or_else(|| authority.to_ascii_lowercase());
        if !self.live.is_ready() {
            return self.reject(session, ctx, GatewayError::NotReady).await;
        }
        let snapshot = self.live.current.load_full();
        let route = host
            .as_deref()
            .and_then(|h| snapshot.table.lookup(h))
            .cloned();
        ctx.snapshot = Some(snapshot);
        ctx.host = Some(shown_host);
        let mut provider = false;
        if let Some(authn) = self.authn.clone() {
            match self
                .authenticate(&authn, session, ctx, route.as_deref())
                .await?
            {
                AuthStep::Continue => {}
                AuthStep::Answered => return Ok(true),
                AuthStep::Provider => provider = true,
            }
        }
        // The gateway's own cookies stay between the browser and the gateway.
        if let Some(name) = &self.cookie_name {
            let keep_session = self.forward_credentials && ctx.identity.is_some();
            strip_gateway_cookies(session.req_header_mut(), name, keep_session);
        }
        if provider {
            return Ok(false);
        }
        let Some(route) = route else {
            let host = ctx.host.clone().unwrap_or_default();
            return self
                .reject(session, ctx, GatewayError::UnknownHost(host))
                .await;
        };
        let req = session.req_header();
        if let Some(len) = content_length(req) {
            if len > self.settings.max_body {
                let limit = self.settings.max_body;
                ctx.route = Some(route);
                return self
                    .reject(session, ctx, GatewayError::BodyTooLarge { limit })
                    .await;
            }
        }
        let tag = req
            .headers
            .get("knative-serving-tag")
            .and_then(|v| v.to_str().ok());
        ctx.target = Some(route.target(handled_path(&ctx.forward, req), tag).clone());
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(target), Some(snapshot)) = (&ctx.target, &ctx.snapshot) else {
            return Err(GatewayError::Internal.into_pingora());
        };
        let resolved = &snapshot.resolved;
        while let Some(idx) = target.pick(fastrand::u32(..), &ctx.tried) {
            ctx.tried.push(idx);
            let backend = &target.backends[idx];
            let addrs = backend
                .endpoints
                .iter()
                .filter_map(|e| resolved.get(e))
                .flat_map(|a| a.iter());
            let count = addrs.clone().count();
            let Some(addr) = addrs.clone().nth(fastrand::usize(..count.max(1))) else {
                // Never resolved: as good as a refused connection.
                tracing::warn!(isvc = %ctx.isvc_label(), revision = %backend.revision, "no address for revision");
                let (ns, name) = ctx.route_labels();
                self.live
                    .metrics
                    .upstream_failures
                    .with_label_values(&[ns, name, &backend.revision, "unresolved"])
                    .inc();
                continue;
            };
            ctx.backend = Some(idx);
            let mut peer = if ctx.route.is_none()
                && self.authn.as_ref().is_some_and(|a| a.settings.issuer_tls)
            {
                // The OIDC provider behind an https issuer.
                let sni = self
                    .authn
                    .as_ref()
                    .map(|a| a.settings.issuer_host.clone())
                    .unwrap_or_default();
                HttpPeer::new(*addr, true, sni)
            } else {
                HttpPeer::new(*addr, false, String::new())
            };
            let timeout = ctx.timeout(self.settings.request_timeout);
            peer.options.connection_timeout = Some(self.settings.connect_timeout);
            peer.options.read_timeout = Some(timeout);
            peer.options.write_timeout = Some(timeout);
            peer.options.idle_timeout = Some(self.settings.upstream_idle_timeout);
            ctx.upstream_start = Some(Instant::now());
            return Ok(Box::new(peer));
        }
        Err(GatewayError::NoRevisionReachable {
            isvc: ctx.isvc_label(),
        }
        .into_pingora())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(target) = &ctx.target else {
            return e;
        };
        let revision = ctx.revision().to_string();
        let isvc = ctx.isvc_label();
        let (ns, name) = ctx.route_labels();
        self.live
            .metrics
            .upstream_failures
            .with_label_values(&[ns, name, &revision, "connect"])
            .inc();
        // Nothing was sent upstream yet, so trying another revision is safe even for POST.
        if target.pick(0, &ctx.tried).is_some() {
            self.live
                .metrics
                .failovers
                .with_label_values(&[ns, name, &revision])
                .inc();
            tracing::warn!(isvc = %isvc, revision = %revision, error = %e, "connect failed; failing over to another revision");
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(target), Some(idx)) = (&ctx.target, ctx.backend) else {
            return Err(GatewayError::Internal.into_pingora());
        };
        let backend = &target.backends[idx];
        let xff = forwarded_for(
            upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok()),
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        );
        if let Some(target) = &ctx.forward {
            upstream.set_uri(http::Uri::from(target.clone()));
        }
        // pingora's `insert_header` parses and allocates each name and keeps a second map of the
        // client's header-name case; for nine headers on every request that was most of what
        // the gateway adds to pingora's own cost (BENCHMARKS.md). When the request target
        // round-trips through the URI (origin-form, as clients send), the headers are set on
        // the plain `http` parts instead, with constant names; header names then go upstream
        // lowercase (standard ones title-cased), as Istio's Envoy sends them.
        let round_trips = upstream
            .uri
            .path_and_query()
            .is_some_and(|pq| pq.as_str().as_bytes() == upstream.raw_path());
        if round_trips {
            let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
            let mut parts: http::request::Parts = std::mem::replace(upstream, empty).into();
            let set = self.upstream_headers(ctx, target, backend, xff, |name, value| {
                match value {
                    Some(v) => parts.headers.insert(name, v),
                    None => parts.headers.remove(name),
                };
                Ok(())
            });
            *upstream = RequestHeader::from(parts);
            set
        } else {
            self.upstream_headers(ctx, target, backend, xff, |name, value| match value {
                Some(v) => upstream.insert_header(name.as_str().to_owned(), v),
                None => {
                    upstream.remove_header(&name);
                    Ok(())
                }
            })
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.settings.max_body {
                return Err(GatewayError::BodyTooLarge {
                    limit: self.settings.max_body,
                }
                .into_pingora());
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Before the 1xx check: browsers keep cookies from a `101 Switching Protocols` too.
        if let Some(name) = &self.cookie_name {
            let removed = strip_gateway_set_cookies(resp, name);
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
        if resp.status.is_informational() {
            return Ok(());
        }
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_elapsed = Some(start.elapsed());
        }
        resp.insert_header("x-modelgate-revision", ctx.revision())?;
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(_)) => {
                GatewayError::from_pingora(e, &ctx.isvc_label(), 0, self.settings.max_body)
            }
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => {
                // The client is gone; there is nobody to answer.
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            (ErrorSource::Downstream, _) => GatewayError::BadRequest(e.etype().as_str().into()),
            _ => GatewayError::from_pingora(
                e,
                &ctx.isvc_label(),
                ctx.timeout(self.settings.request_timeout).as_secs(),
                self.settings.max_body,
            ),
        };
        if session.response_written().is_none() {
            if let Err(write_err) = respond(session, &err, Some(&ctx.request_id), true).await {
                tracing::debug!(error = %write_err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let total = ctx.start.elapsed();
        let (ns, name) = ctx
            .route
            .as_ref()
            .map(|r| (r.isvc.namespace.as_str(), r.isvc.name.as_str()))
            .unwrap_or(("", ""));
        let revision = ctx.revision();
        let m = &self.live.metrics;
        m.requests
            .with_label_values(&[ns, name, revision, status_class(status)])
            .inc();
        m.latency.observe(total.as_secs_f64());
        if let Some(e) = e {
            if matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ) && e.esource() == &ErrorSource::Upstream
            {
                m.upstream_failures
                    .with_label_values(&[ns, name, revision, "timeout"])
                    .inc();
            }
        }
        let req = session.req_header();
        tracing::info!(
            target: "modelgate::access",
            method = %req.method,
            host = ctx.host.as_deref().unwrap_or("-"),
            path = %req.uri.path(),
            status,
            isvc = %ctx.isvc_label(),
            revision,
            upstream_ms = ctx.upstream_elapsed.map(|d| d.as_secs_f64() * 1000.0),
            total_ms = total.as_secs_f64() * 1000.0,
            request_id = ctx.request_id.to_str().unwrap_or_default(),
            error = e.map(|e| e.etype().as_str()),
        );
    }
}

/// Removes every client header on the strip list (in any spelling) and every header whose
/// name has `_` (or refuses the request for one, in reject mode). Allocates only when there is
/// something to remove.
fn strip_client_headers(
    req: &mut RequestHeader,
    strip: &StripList,
    underscores: Underscores,
) -> std::result::Result<(), routes::request::HeadError> {
    let doomed = |k: &http::HeaderName| strip.matches(k.as_str()) || k.as_str().contains('_');
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
fn strip_gateway_set_cookies(resp: &mut ResponseHeader, cookie_name: &str) -> usize {
    let all = resp.headers.get_all(http::header::SET_COOKIE);
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
    resp.remove_header(&http::header::SET_COOKIE);
    for v in kept {
        let _ = resp.append_header(http::header::SET_COOKIE, v);
    }
    removed
}

/// The declared body length, if any and valid. An invalid one is left to pingora's parser.
fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
