//! Assembles the running gateway from validated settings: the proxy service on each listener,
//! the admin service, the route reloader, and in the quickstart the demo model server.

use crate::admin::Admin;
use crate::authn::{Authn, AuthnService};
use crate::config::{LogFormat, Settings, Shutdown};
use crate::exchange::{Drain, Gateway, Listener, ProxySettings};
use crate::listen::{AcceptGate, App, ConnLimit, ConnSettings};
use crate::metrics::Metrics;
use crate::reload::{DirSource, ReloadService, Routes};
use crate::state::Live;
use crate::upstream::PoolLimits;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use routes::request::HeadLimits;
use routes::{BuildOptions, Endpoint};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// pingora's server settings for one process: `name` prefixes its pid file. pingora's own grace
/// period is the drain: it starts once the listeners have stopped (after
/// `shutdown.grace_period`, see `Signals`), and the drain service ends the process as soon as
/// nothing is in flight, so this is only the backstop. The upgrade socket must be the same path
/// for the running process and the one that takes over from it (`--upgrade`): the configured
/// one, else one derived from `upgrade_key` (the admin address).
pub fn server_conf(
    threads: usize,
    shutdown: &Shutdown,
    name: &str,
    upgrade_key: &str,
) -> ServerConf {
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    // An admin port of 0 names nothing stable: such a gateway's socket is its own (an upgrade
    // then needs `shutdown.upgrade_socket`).
    let key: String = match upgrade_key.ends_with(":0") {
        true => format!("pid-{pid}"),
        false => upgrade_key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect(),
    };
    let upgrade_sock = match &shutdown.upgrade_socket {
        Some(path) => path.clone(),
        None => match private_dir() {
            Some(dir) => dir.join(format!("{name}-upgrade-{key}.sock")),
            // Nowhere safe by name: a directory nobody can guess, so no other user can take
            // the socket (and no other process can find it: an upgrade then needs
            // `shutdown.upgrade_socket`).
            None => unguessable_dir(&tmp).join(format!("{name}-upgrade.sock")),
        },
    };
    ServerConf {
        threads,
        // One current-thread runtime per worker instead of tokio's work-stealing pool: no
        // cross-thread task hand-offs on the request path (see BENCHMARKS.md).
        work_stealing: false,
        grace_period_seconds: Some(shutdown.drain_timeout.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        // Per process, so two gateways on one host (tests, blue/green) do not collide.
        pid_file: tmp.join(format!("{name}-{pid}.pid")).display().to_string(),
        upgrade_sock: upgrade_sock.display().to_string(),
        ..ServerConf::default()
    }
}

/// A directory no other user can write, for the upgrade socket: whoever can create that socket
/// first is handed the listening sockets on SIGQUIT. `$XDG_RUNTIME_DIR` (per user, 0700), else
/// `$TMPDIR/modelgate-{uid}`, created 0700 and used only when this user owns it and nobody else
/// may write it.
fn private_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Some(dir.into());
    }
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let dir = std::env::temp_dir().join(format!("modelgate-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let private = meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o022 == 0;
    if !private {
        tracing::warn!(dir = %dir.display(), "not a private directory: the upgrade socket goes elsewhere, and an upgrade needs shutdown.upgrade_socket");
    }
    private.then_some(dir)
}

/// A new 0700 directory with a random name under `tmp` (or `tmp` itself if that fails, which
/// only a full or read-only temporary directory can cause, where no socket can be made anyway).
fn unguessable_dir(tmp: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let mut random = [0u8; 16];
    if getrandom::fill(&mut random).is_err() {
        return tmp.to_path_buf();
    }
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = tmp.join(format!("modelgate-{name}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => dir,
        Err(_) => tmp.to_path_buf(),
    }
}

/// Binds every listener and the admin address that ask for port 0, here, before anything is
/// built from the settings (each listener is found by its local port, and its own port is one
/// the `Host` may carry), and hands the sockets to pingora's table of listening sockets (vendor
/// patch 0005), so the port is never free between choosing and binding it. The settings then
/// carry the real addresses, which the start-up log line reports.
fn bind_port_zero(server: &Server, settings: &mut Settings) -> std::io::Result<()> {
    use std::os::unix::io::IntoRawFd;
    let bind = |addr: &mut std::net::SocketAddr| -> std::io::Result<()> {
        if addr.port() != 0 {
            return Ok(());
        }
        let socket = std::net::TcpListener::bind(*addr)?;
        socket.set_nonblocking(true)?;
        *addr = socket.local_addr()?;
        server
            .listen_fds()
            .lock()
            .add(addr.to_string(), socket.into_raw_fd());
        Ok(())
    };
    for l in &mut settings.listeners {
        bind(&mut l.address)?;
        l.served_ports[0] = l.address.port();
    }
    bind(&mut settings.admin)
}

/// Runs the gateway until it is told to stop; returns the process exit code. With `upgrade`,
/// it first takes the listening sockets of the running gateway (which hands them over on
/// SIGQUIT) instead of binding them.
pub fn run(mut settings: Settings, upgrade: bool) -> i32 {
    let live = Arc::new(Live::new(Metrics::new()));
    let mut options = BuildOptions {
        overrides: settings.overrides.clone(),
        fallback: None,
        path_template: settings.path_template.clone(),
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

    let conf = server_conf(
        settings.threads,
        &settings.shutdown,
        "modelgate",
        &settings.admin.to_string(),
    );
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    if let Err(e) = bind_port_zero(&server, &mut settings) {
        tracing::error!(error = %e, "cannot bind a port-0 listener");
        return 1;
    }
    // One line in a fixed form, whatever the log format, for whoever started the gateway on
    // port 0 (tests, scripts) to learn where it listens.
    let proxies: Vec<String> = settings
        .listeners
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    eprintln!(
        "modelgate: listening on {} (admin {})",
        proxies.join(", "),
        settings.admin
    );

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
    let d = &settings.downstream;
    let gateway = Arc::new(Gateway {
        live: live.clone(),
        settings: ProxySettings {
            connect_timeout: settings.upstream.connect_timeout,
            request_timeout: settings.upstream.request_timeout,
            max_body: d.max_request_body_bytes,
            body_idle_timeout: d.body_idle_timeout,
            pool: PoolLimits {
                idle_per_endpoint: settings.upstream.idle_connections,
                idle_timeout: settings.upstream.idle_timeout,
            },
            ready_wait: upgrade.then_some(d.header_timeout),
        },
        authn: authn.clone(),
        identity_headers,
        strip: settings.strip.clone(),
        underscores: d.headers_with_underscores,
        cookie_name: settings.auth.as_ref().map(|a| a.cookie_name.clone()),
        forward_credentials: settings
            .auth
            .as_ref()
            .is_some_and(|a| a.forward_credentials),
        drain: Drain::default(),
        mirrors: Arc::new(tokio::sync::Semaphore::new(
            crate::exchange::MIRRORS_IN_FLIGHT,
        )),
    });
    let limit = d.max_connections.unwrap_or_else(|| {
        crate::config::default_max_connections(crate::config::descriptor_limit())
    });
    let limit = Arc::new(ConnLimit::new(
        limit,
        live.metrics.downstream_connections.clone(),
    ));
    let app = App {
        handler: gateway.clone(),
        metrics: live.metrics.clone(),
        listeners: settings
            .listeners
            .iter()
            .map(|l| {
                let listener = Listener {
                    auth: l.auth && authn.is_some(),
                    tls: l.tls.is_some(),
                    served_ports: l.served_ports.clone(),
                };
                (l.address.port(), Arc::new(listener))
            })
            .collect(),
        conn: ConnSettings {
            header_timeout: d.header_timeout,
            keepalive_timeout: d.keepalive_timeout,
            head_limits: HeadLimits {
                head_bytes: d.max_request_head_bytes,
                fields: d.max_header_fields,
                request_line: d.max_request_line_bytes,
            },
            h2_max_streams: d.h2_max_concurrent_streams,
            body_idle_timeout: d.body_idle_timeout,
        },
        limit: limit.clone(),
    };
    // One service for every listener: each connection finds its listener by local port.
    let mut proxy = Service::new("modelgate".into(), app);
    proxy.set_connection_filter(Arc::new(AcceptGate(limit)));
    for l in &settings.listeners {
        // No read buffer in front of the socket: the head reader and pingora's body reader have
        // buffers of their own, and an idle connection should not hold 64 KiB (pingora's
        // default). The write buffer (one MSS) stays: it joins a response head and a small body.
        let endpoint = ListenerConfig::tcp(l.address.to_string()).l4_buffer(L4BufferSettings {
            read: Some(0),
            write: None,
        });
        match &l.tls {
            None => proxy.add_listener(endpoint),
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
                proxy.add_listener(endpoint.tls(tls_settings));
            }
        }
    }
    server.add_service(proxy);
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
    let sources = [
        settings.route_dir.as_ref().map(|_| crate::reload::SOURCE),
        settings.kubernetes.as_ref().map(|_| crate::watch::SOURCE),
    ];
    let routes = Arc::new(Routes::new(
        options,
        live,
        extra_endpoints,
        sources.into_iter().flatten().collect(),
    ));
    let reload = ReloadService {
        dir: settings
            .route_dir
            .clone()
            .map(|dir| DirSource::new(dir, settings.route_settle, routes.clone())),
        kube: settings
            .kubernetes
            .clone()
            .map(|k| crate::watch::KubeSource::new(k, routes.clone())),
        routes,
        resolve_interval: settings.upstream.resolve_interval,
    };
    server.add_service(admin);
    server.add_service(background_service("routes", reload));
    if let Some(a) = authn {
        server.add_service(background_service("oidc", AuthnService(a)));
    }
    server.add_service(background_service(
        "drain",
        DrainService {
            gateway,
            timeout: settings.shutdown.drain_timeout,
        },
    ));
    tracing::info!(
        listeners = ?settings.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        admin = %settings.admin,
        routes = ?settings.route_dir,
        kubernetes = settings.kubernetes.is_some(),
        "modelgate starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            grace: settings.shutdown.grace_period,
        }),
    });
    0
}

/// SIGTERM, as Kubernetes sends it when it takes the pod out of its endpoints: go on accepting
/// and serving for `grace_period` (traffic still arrives while the endpoint removal spreads),
/// then let pingora stop the listeners, which starts the drain. SIGINT stops at once; SIGQUIT
/// hands the listeners to a new process (pingora's upgrade).
struct Signals {
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(grace_period = ?self.grace, "SIGTERM: still serving for the grace period");
                tokio::select! {
                    _ = tokio::time::sleep(self.grace) => {}
                    _ = int.recv() => return ShutdownSignal::FastShutdown,
                }
                tracing::info!("grace period over: no new connections; draining");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

/// The drain: once the listeners have stopped, in-flight requests get up to `timeout` to
/// finish (each kept-alive connection is closed after its response); the process exits as soon
/// as none is left, logging how many it had to cut.
struct DrainService {
    gateway: Arc<Gateway>,
    timeout: Duration,
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let drain = &self.gateway.drain;
        drain.start_draining();
        let started = Instant::now();
        let deadline = started + self.timeout;
        while drain.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cut = drain.in_flight();
        if cut > 0 {
            tracing::warn!(cut, drain_timeout = ?self.timeout, "drain timeout: cutting the requests still in flight");
        } else {
            tracing::info!(took = ?started.elapsed(), "drained: no request in flight");
        }
        std::process::exit(0);
    }
}
