//! The pingora `ProxyHttp` implementation. Each hook is short and calls the pure pieces: host
//! and request-id rules in `request`, the table and split in `routes`, error responses in
//! `errors`. Phase order and what each hook does: docs/request-lifecycle.md.

use crate::errors::{respond, GatewayError};
use crate::metrics::status_class;
use crate::request::{forwarded_for, new_request_id, request_host, request_id};
use crate::state::{Live, Snapshot};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use routes::{HostRoute, Target};
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
}

/// Per-request state. The route and target are `Arc`s taken from one table snapshot, so a
/// reload in the middle of a request (or between its retries) cannot change where it goes.
pub struct Ctx {
    start: Instant,
    /// The table and addresses this request uses from start to end (retries included).
    snapshot: Option<Arc<Snapshot>>,
    request_id: String,
    host: Option<String>,
    route: Option<Arc<HostRoute>>,
    target: Option<Arc<Target>>,
    /// Backends already tried, by index into `target.backends`.
    tried: Vec<usize>,
    backend: Option<usize>,
    body_bytes: u64,
    upstream_start: Option<Instant>,
    upstream_elapsed: Option<Duration>,
}

impl Ctx {
    fn revision(&self) -> &str {
        match (&self.target, self.backend) {
            (Some(t), Some(i)) => &t.backends[i].revision,
            _ => "",
        }
    }

    fn isvc_label(&self) -> String {
        self.route
            .as_ref()
            .map(|r| r.isvc.to_string())
            .unwrap_or_default()
    }

    fn timeout(&self, default: Duration) -> Duration {
        self.target
            .as_ref()
            .and_then(|t| t.timeout_secs)
            .map(Duration::from_secs)
            .unwrap_or(default)
    }
}

impl Gateway {
    async fn reject(&self, session: &mut Session, ctx: &Ctx, err: GatewayError) -> Result<bool> {
        respond(session, &err, Some(&ctx.request_id), false).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            snapshot: None,
            request_id: String::new(),
            host: None,
            route: None,
            target: None,
            tried: Vec::new(),
            backend: None,
            body_bytes: 0,
            upstream_start: None,
            upstream_elapsed: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // pingora keeps idle HTTP/1.1 client connections forever unless told otherwise.
        session.set_keepalive(Some(self.settings.keepalive_secs));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.start = Instant::now();
        let req = session.req_header();
        ctx.request_id = request_id(
            req.headers.get("x-request-id").map(|v| v.as_bytes()),
            new_request_id,
        );
        let host = match request_host(req) {
            Ok(h) => h,
            Err(why) => return self.reject(session, ctx, GatewayError::BadHost(why)).await,
        };
        if !self.live.is_ready() {
            return self.reject(session, ctx, GatewayError::NotReady).await;
        }
        let snapshot = self.live.current.load_full();
        let route = snapshot.table.lookup(&host).cloned();
        ctx.snapshot = Some(snapshot);
        let Some(route) = route else {
            return self
                .reject(session, ctx, GatewayError::UnknownHost(host))
                .await;
        };
        ctx.host = Some(host);
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
        ctx.target = Some(route.target(req.uri.path(), tag).clone());
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(route), Some(target), Some(snapshot)) = (&ctx.route, &ctx.target, &ctx.snapshot)
        else {
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
                tracing::warn!(isvc = %route.isvc, revision = %backend.revision, "no address for revision");
                self.live
                    .metrics
                    .upstream_failures
                    .with_label_values(&[
                        &route.isvc.namespace,
                        &route.isvc.name,
                        &backend.revision,
                        "unresolved",
                    ])
                    .inc();
                continue;
            };
            ctx.backend = Some(idx);
            let mut peer = HttpPeer::new(*addr, false, String::new());
            let timeout = ctx.timeout(self.settings.request_timeout);
            peer.options.connection_timeout = Some(self.settings.connect_timeout);
            peer.options.read_timeout = Some(timeout);
            peer.options.write_timeout = Some(timeout);
            peer.options.idle_timeout = Some(self.settings.upstream_idle_timeout);
            ctx.upstream_start = Some(Instant::now());
            return Ok(Box::new(peer));
        }
        Err(GatewayError::NoRevisionReachable {
            isvc: route.isvc.to_string(),
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
        let (Some(route), Some(target)) = (&ctx.route, &ctx.target) else {
            return e;
        };
        let revision = ctx.revision().to_string();
        let isvc = &route.isvc;
        self.live
            .metrics
            .upstream_failures
            .with_label_values(&[&isvc.namespace, &isvc.name, &revision, "connect"])
            .inc();
        // Nothing was sent upstream yet, so trying another revision is safe even for POST.
        if target.pick(0, &ctx.tried).is_some() {
            self.live
                .metrics
                .failovers
                .with_label_values(&[&isvc.namespace, &isvc.name, &revision])
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
        let (Some(route), Some(target), Some(idx)) = (&ctx.route, &ctx.target, ctx.backend) else {
            return Err(GatewayError::Internal.into_pingora());
        };
        let backend = &target.backends[idx];
        let original_host = ctx.host.clone().unwrap_or_default();
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
        upstream.insert_header("host", &target.upstream_host)?;
        // Set by the gateway only: what a client sent here is not trusted.
        upstream.insert_header("x-forwarded-host", original_host)?;
        upstream.insert_header("x-forwarded-proto", self.settings.scheme)?;
        match xff {
            Some(v) => upstream.insert_header("x-forwarded-for", v)?,
            None => {
                upstream.remove_header("x-forwarded-for");
            }
        }
        upstream.insert_header("x-request-id", &ctx.request_id)?;
        upstream.insert_header("kserve-isvc-name", &route.isvc.name)?;
        upstream.insert_header("kserve-isvc-namespace", &route.isvc.namespace)?;
        if backend.knative {
            upstream.insert_header("knative-serving-revision", &backend.revision)?;
            upstream.insert_header("knative-serving-namespace", &route.isvc.namespace)?;
        } else {
            upstream.remove_header("knative-serving-revision");
            upstream.remove_header("knative-serving-namespace");
        }
        Ok(())
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
        if resp.status.is_informational() {
            return Ok(());
        }
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_elapsed = Some(start.elapsed());
        }
        resp.insert_header("x-modelgate-revision", ctx.revision())?;
        resp.insert_header("x-request-id", &ctx.request_id)?;
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
            request_id = %ctx.request_id,
            error = e.map(|e| e.etype().as_str()),
        );
    }
}

/// The declared body length, if any and valid. An invalid one is left to pingora's parser.
fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
