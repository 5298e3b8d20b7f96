//! The floor under modelgate's request path: pingora 0.9.1 proxying every request to one
//! upstream with no hooks at all (no routing, no split, no headers, no metrics), with the
//! gateway's own server settings (`gateway::server::server_conf`, one worker thread), mimalloc
//! and no modules. `bench/run.sh` measures it next to modelgate, so the report can say how much
//! of modelgate's cost per request is pingora's own and how much is the gateway's.
//!
//! ```sh
//! pingora_floor LISTEN_PORT UPSTREAM_ADDR   # e.g. pingora_floor 8081 127.0.0.1:9001
//! ```

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use std::net::SocketAddr;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    /// As modelgate: without pingora's default (disabled) compression module.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(upstream)) = (args.get(1), args.get(2).and_then(|a| a.parse().ok()))
    else {
        eprintln!("usage: pingora_floor LISTEN_PORT UPSTREAM_ADDR");
        std::process::exit(64);
    };
    let shutdown = gateway::config::Shutdown {
        grace_period: Duration::ZERO,
        drain_timeout: Duration::from_secs(1),
    };
    let conf = gateway::server::server_conf(1, &shutdown, "pingora-floor");
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor { upstream });
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    server.run_forever();
}
