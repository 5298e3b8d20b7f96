//! The new engine's floor: modelgate's own connection loop (`gateway::listen`: the head reader
//! with its deadline and limits, pingora-core's parser, HTTP/1 keep-alive) and its upstream
//! pool (`gateway::upstream`), forwarding every request to one upstream with no routing, no
//! split, no auth, no gateway headers, no metrics or log per request. `bench/run.sh` measures it
//! next to modelgate, so the report can say how much of modelgate's cost per request is the
//! engine's and how much the gateway's (`bench/pingora-floor` is the old engine's floor).
//!
//! ```sh
//! loop_floor LISTEN_PORT UPSTREAM_ADDR   # e.g. loop_floor 8081 127.0.0.1:9001
//! ```

use gateway::exchange::{Client, Listener};
use gateway::listen::{App, ConnLimit, ConnSettings, Handler};
use gateway::upstream::{self, PoolLimits};
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::ServerSession;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
    pool: PoolLimits,
}

impl Floor {
    async fn forward(&self, session: &mut ServerSession) -> Option<()> {
        let stream = match upstream::checkout(self.upstream, &self.pool) {
            Some(s) => s,
            None => Box::pin(upstream::connect(self.upstream, Duration::from_secs(2)))
                .await
                .ok()?,
        };
        let mut up = ClientSession::new(stream);
        up.set_preserve_header_case(false);
        let req = session.req_header();
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = req.method.clone();
        parts.uri = req.uri.clone();
        parts.headers = req.headers.clone();
        up.write_request_header(Box::new(RequestHeader::from(parts)))
            .await
            .ok()?;
        while let Some(chunk) = session.read_request_body().await.ok()? {
            up.write_body(&chunk).await.ok()?;
        }
        up.finish_body().await.ok()?;
        up.read_response().await.ok()?;
        let resp = up.resp_header()?.clone();
        session.write_response_header(Box::new(resp)).await.ok()?;
        while !up.is_body_done() {
            let body = up.read_body_bytes().await.ok()?;
            let end = up.is_body_done();
            session
                .write_response_body(body.unwrap_or_default(), end)
                .await
                .ok()?;
        }
        session.finish_body().await.ok()?;
        up.respect_keepalive();
        if let Some(stream) = up.reuse().await {
            upstream::checkin(self.upstream, stream, &self.pool);
        }
        Some(())
    }
}

impl Handler for Floor {
    async fn serve(&self, session: &mut ServerSession, _client: &Client) -> bool {
        self.forward(session).await.is_some()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(upstream)) = (args.get(1), args.get(2).and_then(|a| a.parse().ok()))
    else {
        eprintln!("usage: loop_floor LISTEN_PORT UPSTREAM_ADDR");
        std::process::exit(64);
    };
    let shutdown = gateway::config::Shutdown {
        grace_period: Duration::ZERO,
        drain_timeout: Duration::from_secs(1),
        upgrade_socket: None,
    };
    let conf =
        gateway::server::server_conf(1, &shutdown, "loop-floor", &std::process::id().to_string());
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let metrics = gateway::metrics::Metrics::new();
    let app = App {
        handler: Arc::new(Floor {
            upstream,
            pool: PoolLimits {
                idle_per_endpoint: 64,
                idle_timeout: Duration::from_secs(60),
            },
        }),
        limit: Arc::new(ConnLimit::new(
            10_000,
            metrics.downstream_connections.clone(),
        )),
        metrics,
        listeners: vec![(
            port.parse().unwrap_or(0),
            Arc::new(Listener {
                auth: false,
                tls: false,
                served_ports: vec![],
            }),
        )],
        conn: ConnSettings {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            head_limits: Default::default(),
            h2_max_streams: 100,
            body_idle_timeout: Duration::from_secs(60),
        },
    };
    let mut service = Service::new("loop-floor".into(), app);
    service.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(service);
    server.run_forever();
}
