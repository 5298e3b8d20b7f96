//! The old engine's floor: pingora-proxy 0.9.1 proxying every request to one upstream with no
//! hooks at all (no routing, no split, no headers, no metrics), with the server settings
//! modelgate used on it (one worker thread, no work stealing), mimalloc and no modules.
//! `bench/run.sh` measures it next to modelgate, as the floor modelgate stood on until it
//! moved to a request path of its own on pingora-core.
//!
//! ```sh
//! pingora_floor LISTEN_PORT UPSTREAM_ADDR   # e.g. pingora_floor 8081 127.0.0.1:9001
//! ```

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use std::net::SocketAddr;

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
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    let conf = pingora::server::configuration::ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: tmp.join(format!("pingora-floor-{pid}.pid")).display().to_string(),
        upgrade_sock: tmp.join(format!("pingora-floor-{pid}.sock")).display().to_string(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor { upstream });
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    server.run_forever();
}
