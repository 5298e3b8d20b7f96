//! Assembles the running gateway from validated settings: the proxy service on each listener,
//! the admin service, the route reloader, and in the quickstart the demo model server.

use crate::admin::Admin;
use crate::authn::{Authn, AuthnService};
use crate::config::{LogFormat, Settings, Shutdown};
use crate::metrics::Metrics;
use crate::proxy::{Gateway, ProxySettings};
use crate::reload::{ReloadService, Reloader};
use crate::state::Live;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use routes::{BuildOptions, Endpoint};
use std::sync::Arc;

/// Installs the `tracing` subscriber: text or JSON, filtered by `log.level` (or `RUST_LOG`).
pub fn init_logging(settings: &Settings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Starts the demo model server on an ephemeral loopback port in its own thread and returns
/// its address. Binding happens here, before pingora starts, so the port is known up front.
fn start_demo() -> std::io::Result<Endpoint> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("demo-models".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => crate::demo::serve(l).await,
                    Err(e) => tracing::error!(error = %e, "demo model server failed to start"),
                }
            })
        })?;
    Ok(Endpoint {
        host: "127.0.0.1".into(),
        port,
    })
}

/// pingora's server settings for one process: `name` prefixes its pid file and upgrade socket.
/// Public so `examples/pingora_floor.rs` runs pingora exactly as the gateway does.
pub fn server_conf(threads: usize, shutdown: &Shutdown, name: &str) -> ServerConf {
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    ServerConf {
        threads,
        // One current-thread runtime per worker instead of tokio's work-stealing pool: no
        // cross-thread task hand-offs on the request path (see BENCHMARKS.md).
        work_stealing: false,
        grace_period_seconds: Some(shutdown.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(shutdown.drain_timeout.as_secs()),
        // Per instance, so two gateways on one host (tests, blue/green) do not collide.
        pid_file: tmp.join(format!("{name}-{pid}.pid")).display().to_string(),
        upgrade_sock: tmp.join(format!("{name}-{pid}.sock")).display().to_string(),
        ..ServerConf::default()
    }
}

/// Runs the gateway until it is told to stop; returns the process exit code.
pub fn run(settings: Settings) -> i32 {
    let live = Arc::new(Live::new(Metrics::new()));
    let mut options = BuildOptions {
        overrides: settings.overrides.clone(),
        fallback: None,
    };
    if settings.demo {
        match start_demo() {
            Ok(ep) => {
                tracing::info!(address = %ep, "demo model server serves every revision without an endpoint override");
                options.fallback = Some(vec![ep]);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the demo model server");
                return 1;
            }
        }
    }

    let conf = server_conf(settings.threads, &settings.shutdown, "modelgate");
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let authn = settings.auth.clone().map(|a| Arc::new(Authn::new(a)));
    let [userid, groups] = &settings.identity_headers;
    // Validated as header names by the auth config (and the defaults are constants).
    let identity_headers = match (
        http::HeaderName::from_bytes(userid.as_bytes()),
        http::HeaderName::from_bytes(groups.as_bytes()),
    ) {
        (Ok(u), Ok(g)) => [u, g],
        _ => {
            tracing::error!(
                userid,
                groups,
                "identity header names are not valid header names"
            );
            return crate::cli::EXIT_CONFIG;
        }
    };
    let proxy_settings = ProxySettings {
        connect_timeout: settings.upstream.connect_timeout,
        request_timeout: settings.upstream.request_timeout,
        upstream_idle_timeout: settings.upstream.idle_timeout,
        keepalive_secs: settings.downstream.keepalive_timeout.as_secs().max(1),
        max_body: settings.downstream.max_request_body_bytes,
        scheme: "http",
    };
    // One proxy service per kind of listener (auth or not, TLS or not): each pingora service
    // has one ProxyHttp value, and the hooks need to know both.
    for (with_auth, tls) in [(true, false), (false, false), (true, true), (false, true)] {
        let group: Vec<_> = settings
            .listeners
            .iter()
            .filter(|l| (l.auth && authn.is_some()) == with_auth && l.tls.is_some() == tls)
            .collect();
        if group.is_empty() {
            continue;
        }
        let gateway = Gateway {
            live: live.clone(),
            settings: ProxySettings {
                scheme: if tls { "https" } else { "http" },
                ..proxy_settings.clone()
            },
            authn: if with_auth { authn.clone() } else { None },
            identity_headers: identity_headers.clone(),
            strip: settings.strip.clone(),
            underscores: settings.downstream.headers_with_underscores,
            cookie_name: settings.auth.as_ref().map(|a| a.cookie_name.clone()),
            forward_credentials: settings
                .auth
                .as_ref()
                .is_some_and(|a| a.forward_credentials),
            served_ports: group
                .iter()
                .map(|l| (l.address.port(), l.served_ports.clone()))
                .collect(),
        };
        let name = format!(
            "modelgate{}{}",
            if with_auth { "-auth" } else { "" },
            if tls { "-tls" } else { "" }
        );
        let mut proxy = http_proxy_service_with_name(&server.configuration, gateway, &name);
        for l in group {
            match &l.tls {
                None => proxy.add_tcp(&l.address.to_string()),
                Some(store) => {
                    let mut tls_settings = match TlsSettings::intermediate("", "") {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(error = %e, "TLS settings");
                            return 1;
                        }
                    };
                    // The store was loaded and checked with the config; pingora panics on
                    // unreadable files, so it never sees any.
                    tls_settings.set_cert_resolver(store.clone());
                    tls_settings.enable_h2();
                    proxy.add_tls_with_settings(&l.address.to_string(), None, tls_settings);
                }
            }
        }
        server.add_service(proxy);
    }
    let mut admin = Service::new(
        "admin".into(),
        Admin {
            live: live.clone(),
            authn: authn.clone(),
        },
    );
    admin.add_tcp(&settings.admin.to_string());
    let extra_endpoints = authn
        .as_ref()
        .map(|a| a.provider_target.backends[0].endpoints.clone())
        .unwrap_or_default();
    let reloader = Reloader::new(
        settings.route_dir.clone(),
        options,
        live,
        settings.upstream.resolve_interval,
        extra_endpoints,
    );
    server.add_service(admin);
    server.add_service(background_service(
        "routes",
        ReloadService(Arc::new(reloader)),
    ));
    if let Some(a) = authn {
        server.add_service(background_service("oidc", AuthnService(a)));
    }
    tracing::info!(
        listeners = ?settings.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        admin = %settings.admin,
        routes = %settings.route_dir.display(),
        "modelgate starting"
    );
    server.run_forever()
}
