//! The gateway's own configuration file: parsed into one internal model and validated once, so
//! nothing unchecked reaches the proxy. Every error names the field it is about.

use routes::Endpoint;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration as written in YAML. Unknown keys are errors: a misspelt timeout must not
/// silently fall back to its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listeners")]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub admin: Admin,
    pub routes: RouteSource,
    /// `namespace/name` (a revision, or a component Service) to the `host:port`s that serve it.
    #[serde(default)]
    pub endpoints: HashMap<String, Vec<String>>,
    /// Quickstart: serve every revision that has no endpoint override from an in-process demo
    /// model server on loopback.
    #[serde(default)]
    pub demo: bool,
    #[serde(default)]
    pub upstream: Upstream,
    #[serde(default)]
    pub downstream: Downstream,
    #[serde(default)]
    pub log: Log,
    /// Worker threads of the proxy service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// How long SIGTERM keeps accepting new connections (Kubernetes needs a few seconds to take
    /// the pod out of its endpoints), then how long in-flight requests get to finish.
    #[serde(default)]
    pub shutdown: Shutdown,
    /// Kubeflow-style authentication against an OpenID Connect provider (Dex).
    #[serde(default)]
    pub auth: Option<auth::config::AuthConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    /// With a top-level `auth:` section, whether this listener authenticates (default true).
    #[serde(default = "default_true")]
    pub auth: bool,
    /// Terminate TLS on this listener with these certificates (chosen by SNI).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Ports clients put in `Host` that mean this listener: the ports of whatever forwards to
    /// it (a NodePort, a LoadBalancer's port). Default 80, or 443 with `tls`. The listener's
    /// own port always counts; any other port in `Host` is a 404.
    #[serde(default)]
    pub public_ports: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM files; relative paths are relative to the config file. The first is the default
    /// for clients that send no (or an unknown) server name.
    pub certificates: Vec<CertFiles>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_admin_address")]
    pub address: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: default_admin_address(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSource {
    /// Directory of InferenceService manifests; relative paths are relative to the config file.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Watch the Kubernetes API for InferenceServices (and, when asked, KFServing's and
    /// Seldon's objects). With `directory` too, both are routed.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSource>,
    /// How long a file written in place must stay unchanged before it is applied: a file
    /// truncated and then written in several steps is never read half-written. Renames (an
    /// atomic replace, a ConfigMap update) apply at once.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// KServe's ingress `pathTemplate`: every InferenceService is also reached under this
    /// prefix (`/serving/{{ .Namespace }}/{{ .Name }}`), which the upstream request drops.
    #[serde(default)]
    pub path_template: Option<String>,
}

/// `routes.kubernetes`: what to list and watch, and how to reach the API server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSource {
    /// A kubeconfig file (its current context), for running outside the cluster. Default: the
    /// in-cluster service-account configuration.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces to watch; default all (which needs a ClusterRole).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only objects with these labels (`key=value,key2`, as `kubectl -l` takes it).
    #[serde(default)]
    pub label_selector: Option<String>,
    /// `inferenceservices.serving.kserve.io` (v1beta1). Default true.
    #[serde(default = "default_true")]
    pub kserve: bool,
    /// KFServing's `inferenceservices.serving.kubeflow.org` versions to watch too (`v1beta1`,
    /// `v1alpha2`). Default none.
    #[serde(default)]
    pub kfserving: Vec<String>,
    /// `seldondeployments.machinelearning.seldon.io` (v1). Default false.
    #[serde(default)]
    pub seldon: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Used when a component sets no `timeout` of its own (Knative's default is 300 s).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    #[serde(default = "default_upstream_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often endpoint names are looked up again.
    #[serde(default = "default_resolve_interval", with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// Idle connections kept per endpoint and worker thread.
    #[serde(default = "default_idle_connections")]
    pub idle_connections: usize,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            idle_timeout: default_upstream_idle(),
            resolve_interval: default_resolve_interval(),
            idle_connections: default_idle_connections(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Downstream {
    /// Idle keep-alive client connections are closed after this long.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Request bodies above this many bytes get 413.
    #[serde(default = "default_max_body")]
    pub max_request_body_bytes: u64,
    /// Client headers removed before the request goes upstream, in every spelling (case, `_`
    /// for `-`); a trailing `*` is a prefix. Replaces the default list
    /// (`auth::headers::DEFAULT_STRIP`); the identity headers and `Forwarded` are always
    /// removed.
    #[serde(default)]
    pub strip_request_headers: Option<Vec<String>>,
    /// Client headers whose name contains `_`: `drop` them, or `reject` the request with 400.
    #[serde(default)]
    pub headers_with_underscores: routes::request::Underscores,
    /// The whole request head must arrive within this from its first byte (or from the end of
    /// the previous response on a kept-alive connection), else 408; an idle connection is
    /// closed at the same deadline.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A request body that stalls this long is aborted (and its upstream request cancelled).
    #[serde(default = "default_body_idle_timeout", with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// The request head (line, fields, line ends): larger is 431.
    #[serde(default = "default_max_head")]
    pub max_request_head_bytes: usize,
    /// Header fields in a request: more is 431.
    #[serde(default = "default_max_fields")]
    pub max_header_fields: usize,
    /// The request line: longer is 414.
    #[serde(default = "default_max_request_line")]
    pub max_request_line_bytes: usize,
    /// Concurrent client connections; over it, accept waits. Default: 10,000, or less when the
    /// descriptor limit leaves room for fewer (each may need an upstream connection too).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Concurrent streams per HTTP/2 connection; more are refused with REFUSED_STREAM.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
}

impl Default for Downstream {
    fn default() -> Self {
        Downstream {
            keepalive_timeout: default_keepalive(),
            max_request_body_bytes: default_max_body(),
            strip_request_headers: None,
            headers_with_underscores: Default::default(),
            header_timeout: default_header_timeout(),
            body_idle_timeout: default_body_idle_timeout(),
            max_request_head_bytes: default_max_head(),
            max_header_fields: default_max_fields(),
            max_request_line_bytes: default_max_request_line(),
            max_connections: None,
            h2_max_concurrent_streams: default_h2_streams(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,modelgate::access=off`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace_period: Duration,
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The Unix socket over which a running gateway hands its listening sockets to one started
    /// with `--upgrade` (SIGQUIT to the old one). Both must name the same path; by default it
    /// is derived from the admin address, which no two gateways on a host share.
    #[serde(default)]
    pub upgrade_socket: Option<PathBuf>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            grace_period: default_grace(),
            drain_timeout: default_drain(),
            upgrade_socket: None,
        }
    }
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        address: "0.0.0.0:8080".into(),
        auth: true,
        tls: None,
        public_ports: None,
    }]
}
fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}
fn default_settle() -> Duration {
    Duration::from_millis(300)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_upstream_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_resolve_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(60)
}
fn default_idle_connections() -> usize {
    64
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_head() -> usize {
    60 * 1024
}
fn default_max_fields() -> usize {
    100
}
fn default_max_request_line() -> usize {
    8 * 1024
}
fn default_h2_streams() -> u32 {
    100
}

/// The default connection cap: 10,000, or what the descriptor limit leaves room for when each
/// client connection may hold an upstream one and a reserve stays for the admin port, logs,
/// route files and the resolver.
pub fn default_max_connections(descriptor_limit: Option<u64>) -> usize {
    const RESERVE: u64 = 128;
    match descriptor_limit {
        Some(n) => (n.saturating_sub(RESERVE) / 2).clamp(16, 10_000) as usize,
        None => 10_000,
    }
}

/// The soft descriptor limit of this process, read from `/proc/self/limits` (no `unsafe` for
/// `getrlimit`); `None` where there is no such file or it says "unlimited".
pub fn descriptor_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn default_max_body() -> u64 {
    // Large enough for batched tensors sent as JSON; small enough to bound a single request.
    64 * 1024 * 1024
}
fn default_log_level() -> String {
    "info".into()
}
fn default_threads() -> usize {
    1
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_drain() -> Duration {
    Duration::from_secs(30)
}

/// The validated configuration the gateway runs on.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    /// Authenticate requests on this listener (only when `auth` is configured).
    pub auth: bool,
    /// Loaded and checked certificates, when the listener terminates TLS.
    pub tls: Option<std::sync::Arc<certs::CertStore>>,
    /// The `Host` ports that mean this listener: its own, then `public_ports`.
    pub served_ports: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listeners: Vec<ListenerSettings>,
    pub admin: SocketAddr,
    /// `routes.directory`, absolute.
    pub route_dir: Option<PathBuf>,
    pub route_settle: Duration,
    pub kubernetes: Option<KubernetesSettings>,
    pub path_template: Option<routes::PathTemplate>,
    pub overrides: HashMap<String, Vec<Endpoint>>,
    pub demo: bool,
    pub upstream: Upstream,
    pub downstream: Downstream,
    pub log: Log,
    pub threads: usize,
    pub shutdown: Shutdown,
    pub auth: Option<auth::config::AuthSettings>,
    /// The identity headers (lower case), the auth section's or Kubeflow's defaults: stripped
    /// from every client request even without auth.
    pub identity_headers: [String; 2],
    /// What is stripped from every client request.
    pub strip: auth::headers::StripList,
}

/// Identity headers stripped from client requests even when auth is not configured, so a
/// client can never hand a model a user name.
const DEFAULT_IDENTITY_HEADERS: [&str; 2] = ["kubeflow-userid", "kubeflow-groups"];

/// Every problem found in a configuration, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Parses YAML text. `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![format!("{origin}: {e}")]))
    }

    /// Checks every field and resolves relative paths against `base` (the config file's
    /// directory). Collects all errors rather than stopping at the first.
    pub fn validate(self, origin: &str, base: &Path) -> Result<Settings, ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |field: String, msg: String| errors.push(format!("{origin}: {field}: {msg}"));

        if self.listeners.is_empty() {
            err("listeners".into(), "at least one listener is needed".into());
        }
        let mut listeners = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let tls = l.tls.as_ref().and_then(|t| {
                let mut loaded = Vec::new();
                for (j, c) in t.certificates.iter().enumerate() {
                    let abs = |p: &Path| {
                        if p.is_absolute() {
                            p.to_path_buf()
                        } else {
                            base.join(p)
                        }
                    };
                    match certs::load_pem(&abs(&c.cert), &abs(&c.key), std::time::SystemTime::now())
                    {
                        Ok(k) => loaded.push(k),
                        Err(e) => err(
                            format!("listeners[{i}].tls.certificates[{j}]"),
                            e.to_string(),
                        ),
                    }
                }
                if loaded.len() != t.certificates.len() {
                    return None;
                }
                match certs::CertStore::new(loaded) {
                    Ok(store) => Some(std::sync::Arc::new(store)),
                    Err(e) => {
                        err(format!("listeners[{i}].tls.certificates"), e.to_string());
                        None
                    }
                }
            });
            let public = l
                .public_ports
                .clone()
                .unwrap_or_else(|| vec![if l.tls.is_some() { 443 } else { 80 }]);
            if public.contains(&0) {
                err(
                    format!("listeners[{i}].public_ports"),
                    "0 is not a port".into(),
                );
            }
            match l.address.parse::<SocketAddr>() {
                Ok(address) => {
                    let mut served_ports = vec![address.port()];
                    served_ports.extend(public.iter().filter(|p| **p != address.port()));
                    listeners.push(ListenerSettings {
                        address,
                        auth: l.auth,
                        tls,
                        served_ports,
                    })
                }
                Err(_) => err(
                    format!("listeners[{i}].address"),
                    format!("{:?} is not an ip:port socket address", l.address),
                ),
            }
        }
        let admin = self
            .admin
            .address
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| {
                err(
                    "admin.address".into(),
                    format!("{:?} is not an ip:port socket address", self.admin.address),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            });
        // Port 0 is bound to a port of its own each time (see `server::bind_port_zero`).
        if admin.port() != 0 && listeners.iter().any(|l| l.address == admin) {
            err(
                "admin.address".into(),
                format!("{admin} is also a proxy listener"),
            );
        }

        // Absolute, so that the paths the file watcher reports (always absolute) and those the
        // directory read lists are the same paths (the settle time goes by them).
        let route_dir = self.routes.directory.as_ref().map(|dir| {
            let dir = std::path::absolute(base.join(dir)).unwrap_or_else(|_| base.join(dir));
            if !dir.is_dir() {
                err(
                    "routes.directory".into(),
                    format!("{} is not a directory", dir.display()),
                );
            }
            dir
        });
        let kubernetes = self
            .routes
            .kubernetes
            .as_ref()
            .map(|k| k.validate(base, &mut err));
        if route_dir.is_none() && kubernetes.is_none() {
            err(
                "routes".into(),
                "needs a source: `directory`, `kubernetes`, or both".into(),
            );
        }

        let path_template = match self
            .routes
            .path_template
            .as_deref()
            .map(routes::PathTemplate::parse)
        {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                err("routes.path_template".into(), e);
                None
            }
        };

        let mut overrides = HashMap::new();
        let mut keys: Vec<_> = self.endpoints.keys().collect();
        keys.sort();
        for key in keys {
            let list = &self.endpoints[key];
            let valid_key = key.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if !valid_key {
                err(
                    format!("endpoints.{key:?}"),
                    "key must be namespace/name (a revision or component Service)".into(),
                );
                continue;
            }
            if list.is_empty() {
                err(
                    format!("endpoints.{key:?}"),
                    "needs at least one host:port".into(),
                );
                continue;
            }
            let mut parsed = Vec::new();
            for (i, e) in list.iter().enumerate() {
                match Endpoint::parse(e) {
                    Ok(ep) => parsed.push(ep),
                    Err(msg) => err(format!("endpoints.{key:?}[{i}]"), msg),
                }
            }
            overrides.insert(key.clone(), parsed);
        }

        for (field, d) in [
            ("upstream.connect_timeout", self.upstream.connect_timeout),
            ("upstream.request_timeout", self.upstream.request_timeout),
            ("upstream.idle_timeout", self.upstream.idle_timeout),
            ("upstream.resolve_interval", self.upstream.resolve_interval),
            (
                "downstream.keepalive_timeout",
                self.downstream.keepalive_timeout,
            ),
            ("downstream.header_timeout", self.downstream.header_timeout),
            (
                "downstream.body_idle_timeout",
                self.downstream.body_idle_timeout,
            ),
        ] {
            if d.is_zero() {
                err(field.into(), "must be greater than zero".into());
            }
        }
        if self.downstream.max_request_body_bytes == 0 {
            err(
                "downstream.max_request_body_bytes".into(),
                "must be greater than zero".into(),
            );
        }
        let d = &self.downstream;
        for (field, value, min, max) in [
            (
                "downstream.max_request_head_bytes",
                d.max_request_head_bytes,
                1024,
                1024 * 1024,
            ),
            ("downstream.max_header_fields", d.max_header_fields, 8, 256),
            (
                "downstream.max_request_line_bytes",
                d.max_request_line_bytes,
                256,
                64 * 1024,
            ),
            (
                "downstream.max_connections",
                d.max_connections.unwrap_or(1),
                1,
                1_000_000,
            ),
            (
                "downstream.h2_max_concurrent_streams",
                d.h2_max_concurrent_streams as usize,
                1,
                10_000,
            ),
        ] {
            if !(min..=max).contains(&value) {
                err(field.into(), format!("{value} is not in {min}..={max}"));
            }
        }
        if d.max_request_line_bytes > d.max_request_head_bytes {
            err(
                "downstream.max_request_line_bytes".into(),
                "must not be larger than max_request_head_bytes".into(),
            );
        }
        if self.threads == 0 || self.threads > 256 {
            err(
                "threads".into(),
                format!("{} is not in 1..=256", self.threads),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            err("log.level".into(), format!("{:?}: {e}", self.log.level));
        }

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let auth = match self.auth {
            None => None,
            Some(a) => match a.validate(origin, base, &|name| std::env::var(name).ok(), now) {
                Ok(s) => Some(s),
                Err(mut e) => {
                    errors.append(&mut e);
                    None
                }
            },
        };

        let identity_headers = match &auth {
            Some(a) => [a.userid_header.clone(), a.groups_header.clone()],
            None => DEFAULT_IDENTITY_HEADERS.map(String::from),
        };
        let configured: Vec<String> = match &self.downstream.strip_request_headers {
            Some(list) => list.clone(),
            None => auth::headers::DEFAULT_STRIP
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let strip = auth::headers::StripList::new(
            [&identity_headers[0], &identity_headers[1]],
            &configured,
        )
        .unwrap_or_else(|e| {
            errors.push(format!("{origin}: downstream.strip_request_headers: {e}"));
            auth::headers::StripList::with_defaults(DEFAULT_IDENTITY_HEADERS)
        });

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Settings {
            auth,
            identity_headers,
            strip,
            listeners,
            admin,
            route_dir,
            route_settle: self.routes.settle,
            kubernetes,
            path_template,
            overrides,
            demo: self.demo,
            upstream: self.upstream,
            downstream: self.downstream,
            log: self.log,
            threads: self.threads,
            shutdown: self.shutdown,
        })
    }
}

/// The validated `routes.kubernetes`.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    pub kubeconfig: Option<PathBuf>,
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    /// What to watch, in the order it is listed.
    pub resources: Vec<WatchedResource>,
}

/// One custom resource type to list and watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedResource {
    pub group: &'static str,
    pub version: String,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl KubernetesSource {
    fn validate(&self, base: &Path, err: &mut impl FnMut(String, String)) -> KubernetesSettings {
        let field = |f: &str| format!("routes.kubernetes.{f}");
        let kubeconfig = self.kubeconfig.as_ref().map(|p| base.join(p));
        if let Some(p) = &kubeconfig {
            if let Err(e) = std::fs::metadata(p) {
                err(field("kubeconfig"), format!("{}: {e}", p.display()));
            }
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if self.namespaces[..i].contains(ns) {
                err(
                    format!("{}[{i}]", field("namespaces")),
                    format!("{ns:?} is listed twice"),
                );
            }
            if !routes::objects::is_dns_label(ns) {
                err(
                    format!("{}[{i}]", field("namespaces")),
                    format!("{ns:?} is not a namespace name (a DNS label)"),
                );
            }
        }
        if let Some(sel) = &self.label_selector {
            if sel.trim().is_empty() || sel.chars().any(|c| c.is_control()) {
                err(
                    field("label_selector"),
                    format!("{sel:?} is not a label selector"),
                );
            }
        }
        let mut resources = Vec::new();
        if self.kserve {
            resources.push(WatchedResource {
                group: "serving.kserve.io",
                version: "v1beta1".into(),
                kind: "InferenceService",
                plural: "inferenceservices",
            });
        }
        if self.kfserving.len() > 1 {
            err(
                field("kfserving"),
                "one version: the API server serves the same objects under each, so two \
                 watches would see every object twice"
                    .into(),
            );
        }
        for (i, v) in self.kfserving.iter().enumerate() {
            if !matches!(v.as_str(), "v1beta1" | "v1alpha2") {
                err(
                    format!("{}[{i}]", field("kfserving")),
                    format!("{v:?}: KFServing served v1beta1 and v1alpha2"),
                );
                continue;
            }
            resources.push(WatchedResource {
                group: "serving.kubeflow.org",
                version: v.clone(),
                kind: "InferenceService",
                plural: "inferenceservices",
            });
        }
        if self.seldon {
            resources.push(WatchedResource {
                group: "machinelearning.seldon.io",
                version: "v1".into(),
                kind: "SeldonDeployment",
                plural: "seldondeployments",
            });
        }
        if resources.is_empty() {
            err(
                "routes.kubernetes".into(),
                "watches nothing: `kserve` is off and neither `kfserving` nor `seldon` is set"
                    .into(),
            );
        }
        KubernetesSettings {
            kubeconfig,
            namespaces: self.namespaces.clone(),
            label_selector: self.label_selector.clone(),
            resources,
        }
    }
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{origin}: cannot read: {e}")]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Config::parse(&text, &origin)?.validate(&origin, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigErrors> {
        let dir = std::env::temp_dir();
        Config::parse(yaml, "test.yaml")?.validate("test.yaml", &dir)
    }

    /// A minimal file gets every documented default.
    #[test]
    fn defaults() {
        let s = check("routes: {directory: .}").unwrap();
        assert_eq!(s.listeners.len(), 1);
        assert_eq!(s.listeners[0].address, "0.0.0.0:8080".parse().unwrap());
        assert!(s.listeners[0].auth);
        assert!(s.listeners[0].tls.is_none());
        assert!(s.auth.is_none());
        assert_eq!(s.admin, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(s.upstream.request_timeout, Duration::from_secs(300));
        assert_eq!(s.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.downstream.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(s.downstream.max_request_body_bytes, 64 * 1024 * 1024);
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.threads, 1);
        assert!(!s.demo);
    }

    /// Durations take humantime strings; endpoints are parsed per entry.
    #[test]
    fn full_file() {
        let s = check(
            r#"
listeners: [{address: "127.0.0.1:18080"}]
admin: {address: "127.0.0.1:19901"}
routes: {directory: .}
endpoints:
  kserve-test/sklearn-iris-predictor-00001: ["127.0.0.1:9001", "localhost:9002"]
upstream: {request_timeout: 1500ms, connect_timeout: 1s}
downstream: {keepalive_timeout: 5s, max_request_body_bytes: 1024}
log: {format: json, level: debug}
threads: 2
"#,
        )
        .unwrap();
        assert_eq!(s.upstream.request_timeout, Duration::from_millis(1500));
        assert_eq!(s.downstream.max_request_body_bytes, 1024);
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(
            s.overrides["kserve-test/sklearn-iris-predictor-00001"]
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>(),
            ["127.0.0.1:9001", "localhost:9002"]
        );
    }

    /// Every bad field is reported, each with its path, in one pass.
    #[test]
    fn all_errors_are_listed_with_their_field() {
        let errs = check(
            r#"
listeners: [{address: "nope"}]
admin: {address: "127.0.0.1"}
routes: {directory: /does/not/exist}
endpoints:
  no-slash: ["127.0.0.1:1"]
  ns/rev: ["127.0.0.1"]
  ns/empty: []
upstream: {request_timeout: 0s}
downstream: {max_request_body_bytes: 0}
log: {level: "=="}
threads: 0
"#,
        )
        .unwrap_err()
        .0;
        let expect = [
            "test.yaml: listeners[0].address: \"nope\" is not an ip:port socket address",
            "test.yaml: admin.address: \"127.0.0.1\" is not an ip:port socket address",
            "test.yaml: routes.directory: /does/not/exist is not a directory",
            "test.yaml: endpoints.\"no-slash\": key must be namespace/name (a revision or component Service)",
            "test.yaml: endpoints.\"ns/empty\": needs at least one host:port",
            "test.yaml: endpoints.\"ns/rev\"[0]: \"127.0.0.1\" has no port (want host:port)",
            "test.yaml: upstream.request_timeout: must be greater than zero",
            "test.yaml: downstream.max_request_body_bytes: must be greater than zero",
            "test.yaml: threads: 0 is not in 1..=256",
        ];
        for e in expect {
            assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
        }
        assert!(errs.iter().any(|x| x.starts_with("test.yaml: log.level:")));
        assert_eq!(errs.len(), expect.len() + 1, "{errs:#?}");
    }

    /// A listener serves its own port and its public ports (default 80, 443 with TLS) in
    /// `Host`; the strip list and the underscore action are read from `downstream`.
    #[test]
    fn served_ports_and_header_options() {
        let s = check("listeners: [{address: \"127.0.0.1:18080\"}, {address: \"127.0.0.1:18081\", public_ports: [30080, 18081]}]\nroutes: {directory: .}").unwrap();
        assert_eq!(s.listeners[0].served_ports, [18080, 80]);
        assert_eq!(s.listeners[1].served_ports, [18081, 30080]);
        assert!(s.strip.matches("x-forwarded-user"), "the default list");
        assert!(
            s.strip.matches("kubeflow-userid"),
            "identity headers always"
        );
        assert_eq!(
            s.downstream.headers_with_underscores,
            routes::request::Underscores::Drop
        );
        let s = check("routes: {directory: .}\ndownstream: {strip_request_headers: [x-a], headers_with_underscores: reject}").unwrap();
        assert!(s.strip.matches("X_A") && !s.strip.matches("x-forwarded-user"));
        assert_eq!(
            s.downstream.headers_with_underscores,
            routes::request::Underscores::Reject
        );
        let e =
            check("routes: {directory: .}\ndownstream: {strip_request_headers: [\"bad name\"]}")
                .unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(
            e.0[0].starts_with("test.yaml: downstream.strip_request_headers: \"bad name\""),
            "{e}"
        );
        let e = check(
            "listeners: [{address: \"127.0.0.1:1\", public_ports: [0]}]\nroutes: {directory: .}",
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            ["test.yaml: listeners[0].public_ports: 0 is not a port"]
        );
        assert!(
            check("routes: {directory: .}\ndownstream: {headers_with_underscores: allow}").is_err()
        );
    }

    /// A misspelt key is an error naming it, not a silent default.
    #[test]
    fn unknown_keys_are_rejected() {
        let e = check("routes: {directory: .}\nupstream: {request_timout: 5s}").unwrap_err();
        assert!(e.0[0].contains("unknown field `request_timout`"), "{e}");
        let e = check("listeners: []\nroutes: {directory: .}").unwrap_err();
        assert_eq!(
            e.0,
            ["test.yaml: listeners: at least one listener is needed"]
        );
    }

    /// `routes` needs a source; the Kubernetes source's defaults, and what it refuses.
    #[test]
    fn kubernetes_source() {
        let e = check("routes: {}").unwrap_err().0;
        assert!(e[0].contains("routes: needs a source"), "{e:?}");
        let s = check("routes: {kubernetes: {}}").unwrap();
        assert!(s.route_dir.is_none());
        let k = s.kubernetes.unwrap();
        assert_eq!(k.resources.len(), 1);
        assert_eq!(k.resources[0].group, "serving.kserve.io");
        assert!(k.namespaces.is_empty() && k.kubeconfig.is_none());
        let s = check("routes: {kubernetes: {kserve: false, kfserving: [v1alpha2], seldon: true}}")
            .unwrap();
        let plural: Vec<_> = s
            .kubernetes
            .unwrap()
            .resources
            .iter()
            .map(|r| format!("{}/{}", r.group, r.version))
            .collect();
        assert_eq!(
            plural,
            [
                "serving.kubeflow.org/v1alpha2",
                "machinelearning.seldon.io/v1"
            ]
        );
        for (yaml, needle) in [
            ("routes: {kubernetes: {kserve: false}}", "watches nothing"),
            (
                "routes: {kubernetes: {kfserving: [v1beta1, v1alpha2]}}",
                "one version",
            ),
            ("routes: {kubernetes: {kfserving: [v1]}}", "kfserving[0]"),
            ("routes: {kubernetes: {namespaces: [a, a]}}", "listed twice"),
            (
                "routes: {kubernetes: {namespaces: [Bad_Name]}}",
                "not a namespace name",
            ),
            (
                "routes: {kubernetes: {kubeconfig: /does/not/exist}}",
                "kubeconfig",
            ),
            (
                "routes: {kubernetes: {label_selector: \"\"}}",
                "label_selector",
            ),
        ] {
            let e = check(yaml).unwrap_err().0;
            assert!(e.iter().any(|m| m.contains(needle)), "{yaml}: {e:?}");
        }
    }
}
