//! The real `modelgate` binary, started on free loopback ports with a config and a manifest
//! directory of the test's own, and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_modelgate");

pub struct Gateway {
    child: Child,
    pub port: u16,
    /// Every proxy listener's port, the first being `port` (extra listeners bind port 0 too).
    pub ports: Vec<u16>,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

/// Builder-style options for one gateway.
#[derive(Default)]
pub struct Options {
    /// `namespace/name` -> endpoints.
    pub endpoints: Vec<(String, Vec<String>)>,
    /// Extra top-level YAML appended to the config.
    pub extra: String,
    /// A fixed proxy port (chosen with `free_port` first, when something else must know it
    /// before the gateway starts, like an OIDC provider's redirect URI).
    pub port: Option<u16>,
    /// Files written next to the config (secrets), by name.
    pub files: Vec<(String, String)>,
    /// `extra` continues the `listeners:` list (more listeners) instead of adding top-level keys.
    pub extra_listeners: bool,
    /// The `shutdown:` section (default: no grace period, a 1 s drain).
    pub shutdown: Option<String>,
    /// More keys of the `routes:` section (flow-mapping entries), beside `directory`.
    pub routes: String,
    /// No `routes.directory` (the routes come from the Kubernetes API only).
    pub no_directory: bool,
}

impl Gateway {
    /// Writes `manifests` (file name, YAML) into a fresh route directory and starts the gateway;
    /// returns once `/readyz` answers 200.
    pub async fn start(manifests: &[(&str, String)], opts: Options) -> Gateway {
        let gw = Self::start_unready(manifests, opts).await;
        gw.wait_ready().await;
        gw
    }

    /// Starts the gateway and returns once its admin port answers, ready or not.
    pub async fn start_unready(manifests: &[(&str, String)], opts: Options) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let routes = dir.path().join("routes");
        std::fs::create_dir(&routes).unwrap();
        for (name, text) in manifests {
            std::fs::write(routes.join(name), text).unwrap();
        }
        // Port 0 unless the test must know the port before the start (an OIDC redirect URI):
        // the gateway binds it itself and says which port it got.
        let (port, admin_port) = (opts.port.unwrap_or(0), 0);
        for (name, text) in &opts.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut config = format!("listeners:\n  - address: \"127.0.0.1:{port}\"\n");
        if opts.extra_listeners {
            config.push_str(&opts.extra);
        }
        let shutdown = opts
            .shutdown
            .as_deref()
            .unwrap_or("{grace_period: 0s, drain_timeout: 1s}");
        config.push_str(&format!(
            "admin: {{address: \"127.0.0.1:{admin_port}\"}}\nroutes: {{{}}}\nshutdown: {shutdown}\n",
            [(!opts.no_directory).then_some("directory: routes"), (!opts.routes.is_empty()).then_some(opts.routes.as_str())]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if !opts.endpoints.is_empty() {
            config.push_str("endpoints:\n");
            for (k, v) in &opts.endpoints {
                config.push_str(&format!("  {k}: [{}]\n", v.join(", ")));
            }
        }
        if !opts.extra_listeners {
            config.push_str(&opts.extra);
        }
        let config_path = dir.path().join("modelgate.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn modelgate");
        let log_path = dir.path().join("gateway.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (ports, admin_port) = loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(ports) = all_listening_ports(&log) {
                break ports;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not say where it listens; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let gw = Gateway {
            child,
            port: ports[0],
            ports,
            admin_port,
            dir,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while gw
            .client
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "gateway did not start; log:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gw
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.admin_url("/readyz")).send().await {
                // pingora binds the proxy listener in its own service, possibly just after the
                // routes are loaded: wait for it to accept too.
                if r.status() == 200
                    && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                        .await
                        .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's log so far, without the terminal colours `tracing` writes.
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // ESC [ ... m
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    pub fn routes_dir(&self) -> PathBuf {
        self.dir.path().join("routes")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// A request to `path` with the given `Host`.
    pub fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).header("host", host)
    }

    pub fn post(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).header("host", host)
    }

    /// `/routes` as JSON.
    pub async fn routes(&self) -> serde_json::Value {
        self.client
            .get(self.admin_url("/routes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn generation(&self) -> u64 {
        self.routes().await["generation"].as_u64().unwrap()
    }

    /// Polls `/routes` until the generation passes `after` and `check` holds, or fails after
    /// `within` with the gateway's log.
    pub async fn wait_routes(
        &self,
        after: u64,
        within: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.routes().await;
            if r["generation"].as_u64().unwrap() > after && check(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "routes did not change as expected within {within:?}; last: {r:#}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls `/metrics` until `check` holds (counters are bumped just after a response leaves).
    pub async fn wait_metrics(&self, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.metrics().await;
            if check(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "metrics never matched:\n{m}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the gateway process (`TERM`, `INT`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `within`; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `n` requests (a POST of `body` when there is one, else GETs) over 16 keep-alive
/// connections, each with the `headers` given, and counts the `x-modelgate-revision` of the
/// answers, all of which must be 200.
pub async fn count_revisions(
    gw: &Gateway,
    host: &str,
    path: &str,
    n: usize,
    headers: &[(&str, &str)],
    body: Option<&'static str>,
) -> std::collections::HashMap<String, usize> {
    let workers = 16;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = gw.client.clone();
        let url = gw.url(path);
        let host = host.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let share = n / workers + usize::from(w < n % workers);
        tasks.push(tokio::spawn(async move {
            let mut counts = std::collections::HashMap::<String, usize>::new();
            for _ in 0..share {
                let mut req = match body {
                    Some(b) => client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(b),
                    None => client.get(&url),
                };
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let r = req
                    .header("host", &host)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let rev = r.headers()["x-modelgate-revision"]
                    .to_str()
                    .unwrap()
                    .to_string();
                r.bytes().await.unwrap();
                *counts.entry(rev).or_default() += 1;
            }
            counts
        }));
    }
    let mut all = std::collections::HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *all.entry(k).or_default() += v;
        }
    }
    all
}

/// The first proxy port and the admin port from the gateway's start-up line
/// (`modelgate: listening on 127.0.0.1:P[, ...] (admin 127.0.0.1:Q)`).
pub fn listening_ports(log: &str) -> Option<(u16, u16)> {
    let (ports, admin) = all_listening_ports(log)?;
    Some((*ports.first()?, admin))
}

/// Every proxy listener's port, in config order, and the admin port.
pub fn all_listening_ports(log: &str) -> Option<(Vec<u16>, u16)> {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("modelgate: listening on "))?;
    let (proxies, admin) = line.split_once(" (admin ")?;
    let port = |addr: &str| addr.trim().rsplit_once(':')?.1.parse().ok();
    let ports = proxies
        .split(", ")
        .map(port)
        .collect::<Option<Vec<u16>>>()?;
    Some((ports, port(admin.strip_suffix(')')?)?))
}

/// Writes `text` to `dir/name` the way `kubectl cp`/editors with safe-write do: a temporary file
/// renamed over the target.
pub fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The value of one sample line in Prometheus text, e.g. `modelgate_reloads_total{result="success"}`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `sklearn-iris` in `kserve-test` with one revision served by `up` (`host:port`), and gateway
/// options with `extra` config: the setup most tests start from.
pub fn one_revision(up: &str, extra: &str) -> (Vec<(&'static str, String)>, Options) {
    (
        vec![(
            "iris.yaml",
            crate::support::manifest::Isvc::new(
                "sklearn-iris",
                "kserve-test",
                vec![crate::support::manifest::traffic(
                    "sklearn-iris-predictor-00001",
                    100,
                    None,
                    true,
                )],
            )
            .yaml(),
        )],
        Options {
            endpoints: vec![(
                "kserve-test/sklearn-iris-predictor-00001".into(),
                vec![format!("\"{up}\"")],
            )],
            extra: extra.into(),
            ..Default::default()
        },
    )
}
