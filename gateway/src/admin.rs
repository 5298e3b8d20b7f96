//! The admin listener: health, readiness, the live route table and Prometheus metrics. Kept on
//! its own port (loopback by default) so it is never reachable through a model's host.

use crate::state::Live;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct Admin {
    pub live: Arc<Live>,
    pub authn: Option<Arc<crate::authn::Authn>>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json(status: u16, value: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", value.to_string().into_bytes())
}

impl Admin {
    /// The answer for one path; pure apart from reading the live snapshots.
    pub fn answer(&self, method: &http::Method, path: &str) -> Response<Vec<u8>> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return json(405, serde_json::json!({"error": "only GET"}));
        }
        match path {
            "/healthz" => json(200, serde_json::json!({"status": "ok"})),
            "/readyz" => {
                let (code, status) = if !self.live.is_ready() {
                    (503, "routes not loaded yet")
                } else if self.authn.as_ref().is_some_and(|a| !a.is_ready()) {
                    (503, "OpenID Connect provider not discovered yet")
                } else {
                    (200, "ready")
                };
                // Each source's state: ready stays true while a source fails after its first
                // read (the last table serves), and this says so.
                let sources = self.live.sources();
                json(
                    code,
                    serde_json::json!({"status": status, "sources": sources}),
                )
            }
            "/routes" => {
                // Serialised straight to bytes: with 100,000 hosts an intermediate
                // `serde_json::Value` tree took over a gigabyte (BENCHMARKS.md).
                #[derive(serde::Serialize)]
                struct View<'a> {
                    generation: u64,
                    hosts: std::collections::BTreeMap<&'a str, &'a Arc<routes::HostRoute>>,
                    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
                    paths: std::collections::BTreeMap<&'a str, &'a Arc<routes::HostRoute>>,
                    sources:
                        &'a std::collections::BTreeMap<&'static str, crate::state::SourceStatus>,
                    errors: &'a [routes::ObjectError],
                    #[serde(skip_serializing_if = "<[_]>::is_empty")]
                    warnings: &'a [routes::ObjectError],
                }
                let current = self.live.current.load_full();
                let errors = self.live.errors.load_full();
                let warnings = self.live.warnings.load_full();
                let sources = self.live.sources();
                let view = View {
                    sources: &sources,
                    generation: current.table.generation(),
                    hosts: current.table.hosts(),
                    paths: current.table.paths(),
                    errors: &errors,
                    warnings: &warnings,
                };
                match serde_json::to_vec(&view) {
                    Ok(body) => reply(200, "application/json", body),
                    Err(e) => json(500, serde_json::json!({"error": e.to_string()})),
                }
            }
            "/metrics" => reply(200, "text/plain; version=0.0.4", self.live.metrics.render()),
            _ => json(
                404,
                serde_json::json!({"error": format!("no admin endpoint {path}")}),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        self.answer(&req.method, req.uri.path())
    }
}
