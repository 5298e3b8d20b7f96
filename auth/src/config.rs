//! The `auth:` section of the gateway config: what an operator writes ([`AuthConfig`], YAML with
//! serde defaults), and the validated form the gateway runs with ([`AuthSettings`], secrets read,
//! names normalised). Validation reads the secrets itself (files relative to the config file,
//! environment through a closure so tests need no process environment) and reports every error
//! at once as `origin: auth.field: message`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::headers::safe_header_value;
use crate::paths;

/// A secret read from a file or an environment variable; never printed (Debug/Display say
/// "[redacted]").
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself: for the HMAC/AEAD key or the token request, never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from: YAML `{file: /path}` (relative paths are relative to the config
/// file) or `{env: NAME}`, exactly one of the two. Secrets never sit in the config file itself,
/// so the config can be a ConfigMap and the secret a mounted Secret.
///
/// A struct rather than an enum because serde_yaml 0.9 reads enums only from `!file` tags, not
/// from the `{file: ...}` maps operators write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub env: Option<String>,
}

impl SecretSource {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SecretSource {
            file: Some(path.into()),
            env: None,
        }
    }

    pub fn env(name: impl Into<String>) -> Self {
        SecretSource {
            file: None,
            env: Some(name.into()),
        }
    }
}

/// Cookie secrets shorter than this are refused: `cookie::Key::derive_from` needs 32 bytes of
/// key material, and so does AES-256.
pub const MIN_COOKIE_SECRET_LEN: usize = 32;

/// Browsers cap Max-Age at 400 days (RFC 6265bis), so a longer lifetime would silently shrink.
const MAX_SESSION_LIFETIME: Duration = Duration::from_secs(400 * 24 * 3600);

/// Clock skew tolerated on `exp`/`iat`/`nbf`; more than this hides a broken clock.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Headers the gateway relies on for other purposes; using one as an identity header would let
/// the strip-then-set logic destroy it.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "accept",
];

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .to_vec()
}
fn default_redirect_path() -> String {
    "/authservice/oidc/callback".into()
}
fn default_logout_path() -> String {
    "/authservice/logout".into()
}
fn default_cookie_name() -> String {
    "authservice_session".into()
}
fn default_session_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_userid_header() -> String {
    "kubeflow-userid".into()
}
fn default_userid_claim() -> String {
    "email".into()
}
fn default_groups_header() -> String {
    "kubeflow-groups".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// The `auth:` section as written. Every key but `issuer`, `client_id`, `client_secret` and
/// `cookie_secrets` has a default matching oidc-authservice's Kubeflow deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// e.g. `http://dex.auth.svc.cluster.local:5556/dex`. Empty is reported by `validate`.
    #[serde(default)]
    pub issuer: String,
    /// Public URL for browsers; may be relative (Kubeflow uses `/dex/auth`).
    #[serde(default)]
    pub authorization_url: Option<String>,
    #[serde(default)]
    pub client_id: String,
    pub client_secret: SecretSource,
    /// The first seals, all open (rotation); each at least 32 bytes.
    #[serde(default)]
    pub cookie_secrets: Vec<SecretSource>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_redirect_path")]
    pub redirect_path: String,
    #[serde(default = "default_logout_path")]
    pub logout_path: String,
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    #[serde(with = "humantime_serde", default = "default_session_lifetime")]
    pub session_lifetime: Duration,
    /// None: Secure when the request came over TLS.
    #[serde(default)]
    pub secure_cookies: Option<bool>,
    #[serde(default)]
    pub skip_paths: Vec<String>,
    #[serde(default = "default_userid_header")]
    pub userid_header: String,
    #[serde(default)]
    pub userid_prefix: String,
    #[serde(default = "default_userid_claim")]
    pub userid_claim: String,
    #[serde(default = "default_groups_header")]
    pub groups_header: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default)]
    pub extra_audiences: Vec<String>,
    /// Per namespace (and optionally per InferenceService).
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    #[serde(with = "humantime_serde", default = "default_jwks_refresh")]
    pub jwks_refresh: Duration,
    #[serde(with = "humantime_serde", default = "default_leeway")]
    pub leeway: Duration,
    /// Which unauthenticated requests are sent to the provider's login page.
    #[serde(default)]
    pub login_redirect: LoginRedirect,
    /// Pass the credential the gateway verified (the `Authorization` header, the session
    /// cookie) on to the model server. Off: a model server is tenant code, and a user's token
    /// would let it act as the user (Envoy's JWT filter drops the token by default too).
    #[serde(default)]
    pub forward_credentials: bool,
    /// RFC 3339 time: sessions sealed before it are refused (the emergency brake for copied
    /// cookies; sessions are stateless, so nothing else can revoke one before it expires).
    #[serde(default)]
    pub sessions_not_before: Option<String>,
    /// Kubernetes service-account tokens as bearer credentials (machine-to-machine calls from
    /// pipelines and other services, without a browser session).
    #[serde(default)]
    pub kubernetes_tokens: Option<KubernetesTokensConfig>,
}

/// `auth.kubernetes_tokens`: projected service-account tokens, verified against the API
/// server's own OIDC discovery and JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesTokensConfig {
    /// The API server's service-account issuer (`--service-account-issuer`, e.g.
    /// `https://kubernetes.default.svc.cluster.local`): the tokens' `iss`.
    pub issuer: String,
    /// Where `/.well-known/openid-configuration` is served; default the issuer. In a cluster,
    /// usually the API server itself: `https://kubernetes.default.svc`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// The audiences accepted (`audience:` of the projected token volume), e.g. `[modelgate]`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accept tokens for the API server's own audience too. Off: such a token (any pod's
    /// default token) was meant for the API server, and a model server could replay it there.
    #[serde(default)]
    pub allow_api_audience: bool,
    /// A bearer token for the discovery and JWKS requests (the gateway's own service-account
    /// token, e.g. `/var/run/secrets/kubernetes.io/serviceaccount/token`), re-read each time.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle for the API server (e.g. the service account's `ca.crt`); default the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Also check that the pod a token is bound to (`kubernetes.io.pod`) still exists with the
    /// same uid, by asking the API server at `discovery_url` (which must then be the API
    /// server; it needs `get` on pods). A token from a deleted pod then stops working at once
    /// instead of at its expiry. Tokens bound to no pod are not affected.
    #[serde(default)]
    pub check_pods: bool,
}

/// The validated `auth.kubernetes_tokens`.
#[derive(Debug, Clone)]
pub struct KubernetesTokens {
    pub issuer: String,
    /// No trailing slash.
    pub discovery_url: String,
    pub audiences: Vec<String>,
    pub token_file: Option<PathBuf>,
    /// The CA bundle's PEM text, read at load.
    pub ca_pem: Option<Vec<u8>>,
    pub check_pods: bool,
}

/// What the API server calls itself as an audience: its issuer, and the in-cluster names.
fn is_api_audience(aud: &str, issuer: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    aud == issuer.trim_end_matches('/')
        || aud == "https://kubernetes.default.svc"
        || aud.starts_with("https://kubernetes.default.svc.")
        || aud == "api"
}

impl KubernetesTokensConfig {
    fn validate(self, base: &Path, err: &mut dyn FnMut(&str, String)) -> Option<KubernetesTokens> {
        let field = |f: &str| format!("kubernetes_tokens.{f}");
        // Exactly as written: tokens carry it byte for byte (AKS issuers end in '/').
        let issuer = self.issuer.clone();
        let url_ok = |u: &str| {
            url::Url::parse(u)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none())
                .is_some()
        };
        let mut ok = true;
        if !url_ok(&issuer) {
            err(
                &field("issuer"),
                format!("{issuer:?} is not an http(s) URL"),
            );
            ok = false;
        }
        let discovery_set = self.discovery_url.is_some();
        let discovery_url = self
            .discovery_url
            .unwrap_or_else(|| issuer.clone())
            .trim_end_matches('/')
            .to_owned();
        if !url_ok(&discovery_url) {
            err(
                &field("discovery_url"),
                format!("{discovery_url:?} is not an http(s) URL"),
            );
            ok = false;
        }
        if self.audiences.is_empty() {
            err(
                &field("audiences"),
                "at least one is needed (the projected token's audience, e.g. modelgate)".into(),
            );
            ok = false;
        }
        for a in &self.audiences {
            if is_api_audience(a, &issuer) && !self.allow_api_audience {
                err(
                    &field("audiences"),
                    format!(
                        "{a:?} is the API server's own audience: every pod's default token \
                         carries it, and a model server could replay it to the API server; \
                         use a projected token with its own audience (or set \
                         allow_api_audience)"
                    ),
                );
                ok = false;
            }
        }
        // `join` keeps an absolute path as it is.
        let ca_pem = match &self.ca_file {
            None => None,
            Some(p) => match std::fs::read(base.join(p)) {
                Ok(pem)
                    if reqwest::Certificate::from_pem_bundle(&pem).is_ok_and(|c| !c.is_empty()) =>
                {
                    Some(pem)
                }
                Ok(_) => {
                    err(
                        &field("ca_file"),
                        format!("{}: no PEM certificate", p.display()),
                    );
                    ok = false;
                    None
                }
                Err(e) => {
                    err(&field("ca_file"), format!("{}: {e}", p.display()));
                    ok = false;
                    None
                }
            },
        };
        if self.check_pods && !discovery_set {
            err(
                &field("check_pods"),
                "needs discovery_url set to the API server (the pods are asked for there, with \
                 the gateway's token; the issuer can be a public OIDC host)"
                    .into(),
            );
            ok = false;
        }
        let token_file = self.token_file.as_deref().map(|p| base.join(p));
        if let Some(p) = &token_file {
            if let Err(e) = std::fs::metadata(p) {
                err(&field("token_file"), format!("{}: {e}", p.display()));
                ok = false;
            }
        }
        ok.then_some(KubernetesTokens {
            issuer,
            discovery_url,
            audiences: self.audiences,
            token_file,
            ca_pem,
            check_pods: self.check_pods,
        })
    }
}

/// Which unauthenticated requests get a 302 to the login page rather than a 401.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginRedirect {
    /// `GET`/`HEAD` that accept `text/html` (a browser navigation).
    Browsers,
    /// Every `GET`/`HEAD` without an `Authorization` header that does not ask for JSON
    /// (`Accept: application/json` without `text/html`, or `X-Requested-With`): what
    /// oidc-authservice and oauth2-proxy do, and what Kubeflow's documented `curl` login (follow
    /// the redirects to Dex's form, post the credentials, read the cookie) relies on.
    #[default]
    Get,
    /// Never: every unauthenticated request gets a 401.
    Never,
}

/// Who may call the InferenceServices of one namespace (or one InferenceService).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub namespace: String,
    #[serde(default)]
    pub isvc: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One validated policy. Empty `users` and `groups` mean every authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub isvc: Option<String>,
    pub disabled: bool,
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// The validated `auth:` section the gateway runs with.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// No trailing slash.
    pub issuer: String,
    /// Path part of the issuer, e.g. "/dex"; "" when the issuer is at the root, in which case
    /// nothing is proxied to the provider (see [`AuthSettings::is_provider_path`]).
    pub issuer_path: String,
    /// Where the gateway sends `{issuer_path}/` traffic. An IPv6 host keeps its brackets, so
    /// `format!("{issuer_host}:{issuer_port}")` is an address.
    pub issuer_host: String,
    pub issuer_port: u16,
    pub issuer_tls: bool,
    pub authorization_url: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub cookie_secrets: Vec<Secret>,
    /// Always contains "openid" (added first when the config left it out, as oidc-authservice does).
    pub scopes: Vec<String>,
    pub redirect_path: String,
    pub logout_path: String,
    pub cookie_name: String,
    pub session_lifetime: Duration,
    pub secure_cookies: Option<bool>,
    /// Plain paths ([`paths::is_plain`]), without a trailing slash.
    pub skip_paths: Vec<String>,
    /// Lower-case.
    pub userid_header: String,
    pub userid_prefix: String,
    pub userid_claim: String,
    /// Lower-case.
    pub groups_header: String,
    pub groups_claim: String,
    /// client_id first, then extra_audiences (duplicates dropped).
    pub audiences: Vec<String>,
    pub policies: Vec<Policy>,
    pub jwks_refresh: Duration,
    pub leeway: Duration,
    pub login_redirect: LoginRedirect,
    pub forward_credentials: bool,
    /// Unix seconds: sessions issued earlier are refused.
    pub sessions_not_before: Option<u64>,
    pub kubernetes_tokens: Option<KubernetesTokens>,
}

impl AuthSettings {
    /// The most specific policy (isvc over namespace) for a route, if any.
    pub fn policy(&self, namespace: &str, isvc: &str) -> Option<&Policy> {
        let in_ns = |p: &&Policy| p.namespace == namespace;
        self.policies
            .iter()
            .filter(in_ns)
            .find(|p| p.isvc.as_deref() == Some(isvc))
            .or_else(|| {
                self.policies
                    .iter()
                    .filter(in_ns)
                    .find(|p| p.isvc.is_none())
            })
    }

    /// True when a normalised request path belongs to the provider (`{issuer_path}` or below),
    /// which the gateway proxies to the issuer without auth. Always false for an issuer at the
    /// root: proxying every path to it would switch auth off.
    pub fn is_provider_path(&self, normalized_path: &str) -> bool {
        !self.issuer_path.is_empty()
            && (normalized_path == self.issuer_path
                || normalized_path
                    .strip_prefix(self.issuer_path.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    }

    /// Whether cookies get `Secure`: the configured value, else whether the request came over TLS.
    pub fn secure_for(&self, request_tls: bool) -> bool {
        self.secure_cookies.unwrap_or(request_tls)
    }
}

/// Reads a secret; trailing newlines are dropped because `echo secret > file` and most
/// Kubernetes Secret tooling add one.
fn read_secret(
    src: &SecretSource,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, String> {
    let raw = match (&src.file, &src.env) {
        (Some(p), None) => {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
        (None, Some(name)) => {
            env(name).ok_or_else(|| format!("environment variable {name} is not set"))?
        }
        _ => return Err("set exactly one of `file` or `env`".into()),
    };
    let value = raw.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err("secret is empty".into());
    }
    Ok(Secret(value))
}

/// RFC 7230 `token`: what a header name or a cookie name may be made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A path the gateway serves itself: absolute, already normal, no query.
fn check_own_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/'"));
    }
    if p == "/" {
        return Err("must not be \"/\"".into());
    }
    if paths::is_plain(p) {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a plain path (no query, '%', ';', '\\', '.', '..', '//' or control characters)"
        ))
    }
}

fn check_duration(d: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if d < min || d > max {
        return Err(format!(
            "{} is not between {} and {}",
            humantime_serde::re::humantime::format_duration(d),
            humantime_serde::re::humantime::format_duration(min),
            humantime_serde::re::humantime::format_duration(max)
        ));
    }
    Ok(())
}

impl AuthConfig {
    /// Validates every field, reads the secrets (files relative to `base`; env through `env`),
    /// collects ALL errors as "origin: auth.field: message".
    /// `now` (Unix seconds) checks that `sessions_not_before` is not in the future, which
    /// would refuse every new login too.
    pub fn validate(
        self,
        origin: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        now: u64,
    ) -> Result<AuthSettings, Vec<String>> {
        let mut errors = Vec::new();
        let mut err =
            |field: &str, msg: String| errors.push(format!("{origin}: auth.{field}: {msg}"));

        // issuer
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        let (mut issuer_path, mut issuer_host, mut issuer_port, mut issuer_tls) =
            (String::new(), String::new(), 0, false);
        if issuer.is_empty() {
            err("issuer", "is required".into());
        } else {
            match url::Url::parse(&issuer) {
                Err(e) => err("issuer", format!("{issuer:?} is not a URL: {e}")),
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    err("issuer", format!("{issuer:?} must be http or https"))
                }
                Ok(u) if u.query().is_some() || u.fragment().is_some() => err(
                    "issuer",
                    format!("{issuer:?} must not have a query or fragment"),
                ),
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    err("issuer", format!("{issuer:?} must not carry credentials"))
                }
                Ok(u) => {
                    issuer_tls = u.scheme() == "https";
                    issuer_host = u.host_str().unwrap_or_default().to_owned();
                    issuer_port = u.port_or_known_default().unwrap_or(80);
                    issuer_path = u.path().trim_end_matches('/').to_owned();
                    if issuer_host.is_empty() {
                        err("issuer", format!("{issuer:?} has no host"));
                    }
                }
            }
        }

        // authorization_url
        if let Some(a) = &self.authorization_url {
            let ok = if a.starts_with('/') {
                !a.starts_with("//")
                    && !a.contains('\\')
                    && safe_header_value(a)
                    && !a.contains(' ')
            } else {
                url::Url::parse(a)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            };
            if !ok {
                err(
                    "authorization_url",
                    format!("{a:?} must be an http(s) URL or a path starting with '/'"),
                );
            }
        }

        // client
        if self.client_id.is_empty() {
            err("client_id", "is required".into());
        } else if !safe_header_value(&self.client_id) || self.client_id.contains(' ') {
            err(
                "client_id",
                "must not contain spaces or control characters".into(),
            );
        }
        let client_secret = read_secret(&self.client_secret, base, env)
            .map_err(|e| err("client_secret", e))
            .ok();

        // cookie secrets
        let mut cookie_secrets = Vec::new();
        if self.cookie_secrets.is_empty() {
            err(
                "cookie_secrets",
                format!("at least one secret of {MIN_COOKIE_SECRET_LEN}+ bytes is required"),
            );
        }
        for (i, src) in self.cookie_secrets.iter().enumerate() {
            let field = format!("cookie_secrets[{i}]");
            match read_secret(src, base, env) {
                Err(e) => err(&field, e),
                Ok(s) if s.0.len() < MIN_COOKIE_SECRET_LEN => err(
                    &field,
                    format!(
                        "is {} bytes; at least {MIN_COOKIE_SECRET_LEN} are required (e.g. `openssl rand -base64 32`)",
                        s.0.len()
                    ),
                ),
                Ok(s) => cookie_secrets.push(s),
            }
        }

        // scopes
        let mut scopes = Vec::new();
        for (i, s) in self.scopes.iter().enumerate() {
            if !is_token(s) || s.contains('"') {
                err(
                    &format!("scopes[{i}]"),
                    format!("{s:?} is not a valid scope"),
                );
            } else if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }

        // paths the gateway serves
        for (field, p) in [
            ("redirect_path", &self.redirect_path),
            ("logout_path", &self.logout_path),
        ] {
            if let Err(e) = check_own_path(p) {
                err(field, e);
            }
        }
        if self.redirect_path == self.logout_path {
            err("logout_path", "must differ from redirect_path".into());
        }

        // cookie
        if !is_token(&self.cookie_name) || self.cookie_name.len() > 64 {
            err(
                "cookie_name",
                format!(
                    "{:?} is not a valid cookie name (1-64 token characters)",
                    self.cookie_name
                ),
            );
        }
        if let Err(e) = check_duration(
            self.session_lifetime,
            Duration::from_secs(60),
            MAX_SESSION_LIFETIME,
        ) {
            err("session_lifetime", e);
        }

        // skip paths
        let mut skip_paths = Vec::new();
        for (i, p) in self.skip_paths.iter().enumerate() {
            let field = format!("skip_paths[{i}]");
            let n = p.trim_end_matches('/');
            if n.is_empty() && p.starts_with('/') {
                err(
                    &field,
                    "\"/\" would skip auth everywhere; use a policy with disabled: true".into(),
                );
            } else if !paths::is_plain(n) {
                // Requests are matched after normalisation, so a skip path that is not plain
                // could never match anything.
                err(
                    &field,
                    format!("{p:?} is not a plain absolute path (no query, '%', ';', '\\', '.', '..', '//' or control characters)"),
                );
            } else if !skip_paths.iter().any(|s| s == n) {
                skip_paths.push(n.to_owned());
            }
        }

        // identity headers and claims
        let userid_header = self.userid_header.to_ascii_lowercase();
        let groups_header = self.groups_header.to_ascii_lowercase();
        for (field, h) in [
            ("userid_header", &userid_header),
            ("groups_header", &groups_header),
        ] {
            if !is_token(h) {
                err(field, format!("{h:?} is not a valid header name"));
            } else if RESERVED_HEADERS.contains(&h.as_str()) {
                err(field, format!("{h:?} is reserved"));
            }
        }
        if crate::headers::is_identity_header(&groups_header, &[&userid_header]) {
            err("groups_header", "must differ from userid_header".into());
        }
        // A trailing space is fine (the user id follows); a leading one would be trimmed away.
        if !safe_header_value(self.userid_prefix.trim_end_matches(' ')) {
            err(
                "userid_prefix",
                "must not contain control characters or start with a space".into(),
            );
        }
        for (field, c) in [
            ("userid_claim", &self.userid_claim),
            ("groups_claim", &self.groups_claim),
        ] {
            if c.is_empty() {
                err(field, "must not be empty".into());
            }
        }

        // audiences
        let mut audiences = vec![self.client_id.clone()];
        for (i, a) in self.extra_audiences.iter().enumerate() {
            if a.is_empty() {
                err(&format!("extra_audiences[{i}]"), "must not be empty".into());
            } else if !audiences.contains(a) {
                audiences.push(a.clone());
            }
        }

        // policies
        let mut policies: Vec<Policy> = Vec::new();
        for (i, p) in self.policies.into_iter().enumerate() {
            let field = |f: &str| format!("policies[{i}].{f}");
            if p.namespace.is_empty() {
                err(&field("namespace"), "must not be empty".into());
            }
            if p.isvc.as_deref() == Some("") {
                err(
                    &field("isvc"),
                    "must not be empty (leave it out for the whole namespace)".into(),
                );
            }
            for (j, u) in p.users.iter().enumerate() {
                if u.trim().is_empty() {
                    err(&field(&format!("users[{j}]")), "must not be empty".into());
                }
            }
            for (j, g) in p.groups.iter().enumerate() {
                if g.trim().is_empty() {
                    err(&field(&format!("groups[{j}]")), "must not be empty".into());
                }
            }
            if p.disabled && !(p.users.is_empty() && p.groups.is_empty()) {
                err(
                    &field("disabled"),
                    "a disabled policy cannot also list users or groups".into(),
                );
            }
            if policies
                .iter()
                .any(|q| q.namespace == p.namespace && q.isvc == p.isvc)
            {
                let target = match &p.isvc {
                    Some(s) => format!("{}/{s}", p.namespace),
                    None => p.namespace.clone(),
                };
                err(
                    &field("namespace"),
                    format!("a policy for {target} is already defined"),
                );
            }
            policies.push(Policy {
                namespace: p.namespace,
                isvc: p.isvc,
                disabled: p.disabled,
                users: p.users,
                groups: p.groups,
            });
        }

        if let Err(e) = check_duration(
            self.jwks_refresh,
            Duration::from_secs(10),
            Duration::from_secs(24 * 3600),
        ) {
            err("jwks_refresh", e);
        }
        if let Err(e) = check_duration(self.leeway, Duration::ZERO, MAX_LEEWAY) {
            err("leeway", e);
        }

        let sessions_not_before = self.sessions_not_before.as_deref().and_then(|t| {
            use time::format_description::well_known::Rfc3339;
            match time::OffsetDateTime::parse(t, &Rfc3339) {
                Err(e) => {
                    err(
                        "sessions_not_before",
                        format!("{t:?} is not an RFC 3339 time (like 2026-12-01T09:30:00Z): {e}"),
                    );
                    None
                }
                Ok(at) if at.unix_timestamp() > now as i64 => {
                    err(
                        "sessions_not_before",
                        format!(
                            "{t:?} is in the future: every new login would be refused until then"
                        ),
                    );
                    None
                }
                Ok(at) => Some(at.unix_timestamp().max(0) as u64),
            }
        });

        let kubernetes_tokens = self
            .kubernetes_tokens
            .and_then(|k| k.validate(base, &mut |f, m| err(f, m)));

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(AuthSettings {
            issuer,
            issuer_path,
            issuer_host,
            issuer_port,
            issuer_tls,
            authorization_url: self.authorization_url,
            client_id: self.client_id,
            client_secret: client_secret.unwrap_or_else(|| Secret::new("")),
            cookie_secrets,
            scopes,
            redirect_path: self.redirect_path,
            logout_path: self.logout_path,
            cookie_name: self.cookie_name,
            session_lifetime: self.session_lifetime,
            secure_cookies: self.secure_cookies,
            skip_paths,
            userid_header,
            userid_prefix: self.userid_prefix,
            userid_claim: self.userid_claim,
            groups_header,
            groups_claim: self.groups_claim,
            audiences,
            policies,
            jwks_refresh: self.jwks_refresh,
            leeway: self.leeway,
            login_redirect: self.login_redirect,
            forward_credentials: self.forward_credentials,
            sessions_not_before,
            kubernetes_tokens,
        })
    }
}

/// The clock of the unit tests (2023-11-14T22:13:20Z).
#[cfg(test)]
pub(crate) const TEST_NOW: u64 = 1_700_000_000;

/// Settings for the other modules' tests: Kubeflow defaults, secrets from a fake environment.
#[cfg(test)]
pub(crate) fn test_settings(extra: serde_json::Value) -> AuthSettings {
    let mut cfg = serde_json::json!({
        "issuer": "http://dex.auth.svc.cluster.local:5556/dex",
        "client_id": "kubeflow-oidc-authservice",
        "client_secret": {"env": "CLIENT_SECRET"},
        "cookie_secrets": [{"env": "COOKIE_SECRET"}],
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (cfg.as_object_mut(), extra) {
        obj.extend(more);
    }
    let cfg: AuthConfig = serde_json::from_value(cfg).unwrap();
    let env = |name: &str| match name {
        "CLIENT_SECRET" => Some("pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok".to_owned()),
        "COOKIE_SECRET" => Some("0123456789abcdef0123456789abcdef".to_owned()),
        _ => None,
    };
    cfg.validate("test.yaml", Path::new("/nonexistent"), &env, TEST_NOW)
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COOKIE: &str = "0123456789abcdef0123456789abcdef";

    fn env(name: &str) -> Option<String> {
        match name {
            "CLIENT_SECRET" => Some("client-secret\n".into()),
            "COOKIE_SECRET" => Some(COOKIE.into()),
            "OLD_COOKIE_SECRET" => Some(format!("{COOKIE}-old")),
            "SHORT" => Some("short".into()),
            _ => None,
        }
    }

    fn minimal() -> serde_json::Value {
        json!({
            "issuer": "http://dex.auth.svc.cluster.local:5556/dex/",
            "client_id": "kubeflow-oidc-authservice",
            "client_secret": {"env": "CLIENT_SECRET"},
            "cookie_secrets": [{"env": "COOKIE_SECRET"}],
        })
    }

    fn validate(v: serde_json::Value) -> Result<AuthSettings, Vec<String>> {
        let cfg: AuthConfig = serde_json::from_value(v).unwrap();
        cfg.validate("gw.yaml", Path::new("/etc/modelgate"), &env, TEST_NOW)
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut v = minimal();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    /// `kubernetes_tokens` needs an issuer URL and an audience of its own: the API server's
    /// audience (its issuer, `https://kubernetes.default.svc...`) only when explicitly allowed.
    #[test]
    fn kubernetes_tokens() {
        let k = |v: serde_json::Value| validate(with(json!({ "kubernetes_tokens": v })));
        let issuer = "https://kubernetes.default.svc.cluster.local";
        let s = k(json!({"issuer": issuer, "audiences": ["modelgate"]})).unwrap();
        let kt = s.kubernetes_tokens.unwrap();
        assert_eq!(
            (kt.issuer.as_str(), kt.discovery_url.as_str()),
            (issuer, issuer)
        );
        let token =
            std::env::temp_dir().join(format!("modelgate-test-token-{}", std::process::id()));
        std::fs::write(&token, "t").unwrap();
        let with_discovery = k(json!({"issuer": issuer, "discovery_url": "https://kubernetes.default.svc/", "audiences": ["modelgate"], "token_file": token})).unwrap();
        let kt = with_discovery.kubernetes_tokens.unwrap();
        assert_eq!(kt.discovery_url, "https://kubernetes.default.svc");
        assert_eq!(kt.token_file.unwrap(), token);
        std::fs::remove_file(&token).unwrap();
        // The issuer is kept exactly (tokens carry it byte for byte), the discovery URL trimmed.
        let slash =
            k(json!({"issuer": "https://oidc.example.com/abc/", "audiences": ["modelgate"]}))
                .unwrap();
        let kt = slash.kubernetes_tokens.unwrap();
        assert_eq!(
            (kt.issuer.as_str(), kt.discovery_url.as_str()),
            (
                "https://oidc.example.com/abc/",
                "https://oidc.example.com/abc"
            )
        );
        for (v, needle) in [
            (json!({"issuer": issuer, "audiences": []}), "at least one"),
            (
                json!({"issuer": issuer, "audiences": [issuer]}),
                "API server's own audience",
            ),
            (
                json!({"issuer": issuer, "audiences": ["https://kubernetes.default.svc"]}),
                "API server's own audience",
            ),
            (
                json!({"issuer": "kubernetes", "audiences": ["modelgate"]}),
                "not an http(s) URL",
            ),
            (
                json!({"issuer": issuer, "audiences": ["modelgate"], "ca_file": "/nonexistent/ca.crt"}),
                "ca_file",
            ),
            // The pods are asked for at the discovery URL: never the issuer by default (a
            // cloud's public OIDC host would get the gateway's token).
            (
                json!({"issuer": issuer, "audiences": ["modelgate"], "check_pods": true}),
                "check_pods",
            ),
        ] {
            let errors = k(v.clone()).unwrap_err();
            assert!(errors.iter().any(|e| e.contains(needle)), "{v}: {errors:?}");
        }
        assert!(
            k(json!({"issuer": issuer, "audiences": [issuer], "allow_api_audience": true})).is_ok()
        );
        let pods = k(
            json!({"issuer": issuer, "discovery_url": "https://kubernetes.default.svc",
            "audiences": ["modelgate"], "check_pods": true}),
        )
        .unwrap();
        assert!(pods.kubernetes_tokens.unwrap().check_pods);
    }

    /// Omitted keys take oidc-authservice's Kubeflow defaults; the issuer is split for proxying.
    #[test]
    fn defaults() {
        let s = validate(minimal()).unwrap();
        assert_eq!(s.issuer, "http://dex.auth.svc.cluster.local:5556/dex");
        assert_eq!(s.issuer_path, "/dex");
        assert_eq!(
            (s.issuer_host.as_str(), s.issuer_port, s.issuer_tls),
            ("dex.auth.svc.cluster.local", 5556, false)
        );
        assert_eq!(s.authorization_url, None);
        assert_eq!(
            s.client_secret.expose(),
            "client-secret",
            "trailing newline dropped"
        );
        assert_eq!(s.cookie_secrets, vec![Secret::new(COOKIE)]);
        assert_eq!(s.scopes, ["openid", "profile", "email", "groups"]);
        assert_eq!(s.redirect_path, "/authservice/oidc/callback");
        assert_eq!(s.logout_path, "/authservice/logout");
        assert_eq!(s.cookie_name, "authservice_session");
        assert_eq!(s.session_lifetime, Duration::from_secs(86400));
        assert_eq!(s.secure_cookies, None);
        assert!(s.skip_paths.is_empty());
        assert_eq!(s.userid_header, "kubeflow-userid");
        assert_eq!(s.userid_prefix, "");
        assert_eq!(s.userid_claim, "email");
        assert_eq!(s.groups_header, "kubeflow-groups");
        assert_eq!(s.groups_claim, "groups");
        assert_eq!(s.audiences, ["kubeflow-oidc-authservice"]);
        assert!(s.policies.is_empty());
        assert_eq!(s.jwks_refresh, Duration::from_secs(300));
        assert_eq!(s.leeway, Duration::from_secs(30));
    }

    /// Every key can be set; durations are humantime, headers are lower-cased, skip paths
    /// normalised, audiences start with the client id, and "openid" is added when left out.
    #[test]
    fn everything_set() {
        let s = validate(with(json!({
            "issuer": "https://idp.example.com",
            "authorization_url": "/dex/auth",
            "scopes": ["email", "groups"],
            "redirect_path": "/oauth/cb",
            "logout_path": "/oauth/logout",
            "cookie_name": "kf_session",
            "session_lifetime": "8h",
            "secure_cookies": true,
            "skip_paths": ["/healthz/", "/static/y", "/healthz"],
            "userid_header": "X-Auth-User",
            "userid_prefix": "oidc: ",
            "userid_claim": "sub",
            "groups_header": "X-Auth-Groups",
            "groups_claim": "roles",
            "extra_audiences": ["kserve", "kubeflow-oidc-authservice"],
            "policies": [{"namespace": "a", "isvc": "m", "users": ["u@x"], "groups": ["g"]}],
            "jwks_refresh": "1m",
            "leeway": "0s",
        })))
        .unwrap();
        assert_eq!(
            (s.issuer_path.as_str(), s.issuer_port, s.issuer_tls),
            ("", 443, true)
        );
        assert_eq!(s.scopes, ["openid", "email", "groups"]);
        assert_eq!(s.session_lifetime, Duration::from_secs(8 * 3600));
        assert_eq!(s.skip_paths, ["/healthz", "/static/y"]);
        assert_eq!(
            (s.userid_header.as_str(), s.groups_header.as_str()),
            ("x-auth-user", "x-auth-groups")
        );
        assert_eq!(s.audiences, ["kubeflow-oidc-authservice", "kserve"]);
        assert_eq!(s.jwks_refresh, Duration::from_secs(60));
        assert_eq!(s.leeway, Duration::ZERO);
        assert_eq!(
            s.policies,
            [Policy {
                namespace: "a".into(),
                isvc: Some("m".into()),
                disabled: false,
                users: vec!["u@x".into()],
                groups: vec!["g".into()]
            }]
        );
    }

    /// Every invalid field is reported, all at once, each as "origin: auth.field: message".
    #[test]
    fn every_error_listed_with_its_field() {
        let errors = validate(json!({
            "issuer": "ftp://dex",
            "authorization_url": "//evil/auth",
            "client_id": "",
            "client_secret": {"env": "MISSING"},
            "cookie_secrets": [{"env": "SHORT"}, {"file": "does-not-exist"}],
            "scopes": ["openid", "bad scope"],
            "redirect_path": "oidc/callback",
            "logout_path": "/a/../logout",
            "cookie_name": "bad;name",
            "session_lifetime": "1s",
            "skip_paths": ["healthz", "/", "/static//x/../y", "/a;b"],
            "userid_header": "bad header",
            "userid_prefix": "\n",
            "userid_claim": "",
            "groups_header": "Cookie",
            "groups_claim": "",
            "extra_audiences": [""],
            "policies": [
                {"namespace": "", "isvc": ""},
                {"namespace": "a", "disabled": true, "users": ["u"], "groups": [" "]},
                {"namespace": "a", "users": [""]},
            ],
            "jwks_refresh": "1s",
            "leeway": "1h",
            "login_redirect": "get",
            "sessions_not_before": "yesterday",
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors
            .iter()
            .map(|e| {
                e.strip_prefix("gw.yaml: auth.")
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            fields,
            [
                "issuer",
                "authorization_url",
                "client_id",
                "client_secret",
                "cookie_secrets[0]",
                "cookie_secrets[1]",
                "scopes[1]",
                "redirect_path",
                "logout_path",
                "cookie_name",
                "session_lifetime",
                "skip_paths[0]",
                "skip_paths[1]",
                "skip_paths[2]",
                "skip_paths[3]",
                "userid_header",
                "groups_header",
                "userid_prefix",
                "userid_claim",
                "groups_claim",
                "extra_audiences[0]",
                "policies[0].namespace",
                "policies[0].isvc",
                "policies[1].groups[0]",
                "policies[1].disabled",
                "policies[2].users[0]",
                "policies[2].namespace",
                "jwks_refresh",
                "leeway",
                "sessions_not_before",
            ],
            "{errors:#?}"
        );
        assert!(errors
            .iter()
            .any(|e| e.contains("environment variable MISSING is not set")));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("/etc/modelgate/does-not-exist")),
            "relative to base"
        );
    }

    /// `sessions_not_before` takes RFC 3339 with any offset, and refuses a time in the future,
    /// which would refuse every new login until then.
    #[test]
    fn sessions_not_before() {
        let at = |t: &str| validate(with(json!({"sessions_not_before": t})));
        assert_eq!(
            at("2023-11-14T22:13:20Z").unwrap().sessions_not_before,
            Some(TEST_NOW)
        );
        assert_eq!(
            at("2023-11-14T23:13:19+01:00").unwrap().sessions_not_before,
            Some(TEST_NOW - 1)
        );
        let e = at("2023-11-14T22:13:21Z").unwrap_err();
        assert!(
            e[0].contains("auth.sessions_not_before") && e[0].contains("in the future"),
            "{e:?}"
        );
        assert!(at("14 Nov 2023").is_err());
        assert_eq!(validate(minimal()).unwrap().sessions_not_before, None);
    }

    /// The login redirect defaults to every plain GET (what Kubeflow's curl login needs) and is
    /// one of three words.
    #[test]
    fn login_redirect_modes() {
        assert_eq!(
            validate(minimal()).unwrap().login_redirect,
            LoginRedirect::Get
        );
        for (word, mode) in [
            ("browsers", LoginRedirect::Browsers),
            ("get", LoginRedirect::Get),
            ("never", LoginRedirect::Never),
        ] {
            let s = validate(with(json!({"login_redirect": word}))).unwrap();
            assert_eq!(s.login_redirect, mode);
        }
        let bad: Result<AuthConfig, _> =
            serde_json::from_value(with(json!({"login_redirect": "always"})));
        assert!(bad.is_err());
    }

    /// Required keys left out are reported by validate, not as a parse error.
    #[test]
    fn required_keys() {
        let errors = validate(json!({"client_secret": {"env": "CLIENT_SECRET"}})).unwrap_err();
        assert_eq!(
            errors,
            [
                "gw.yaml: auth.issuer: is required",
                "gw.yaml: auth.client_id: is required",
                "gw.yaml: auth.cookie_secrets: at least one secret of 32+ bytes is required",
            ]
        );
    }

    /// A cookie secret shorter than 32 bytes is refused, naming its length.
    #[test]
    fn short_cookie_secret_rejected() {
        let errors = validate(with(
            json!({"cookie_secrets": [{"env": "COOKIE_SECRET"}, {"env": "SHORT"}]}),
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("gw.yaml: auth.cookie_secrets[1]: is 5 bytes; at least 32"),
            "{errors:?}"
        );
    }

    /// Secrets are read from files (relative to the config's directory, trailing newline
    /// dropped) and from the environment, in order, for rotation.
    #[test]
    fn secrets_from_file_and_env() {
        let dir = std::env::temp_dir().join(format!("modelgate-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cookie"), format!("{COOKIE}-from-file\r\n")).unwrap();
        std::fs::write(dir.join("client"), "file-client-secret").unwrap();
        let cfg: AuthConfig = serde_json::from_value(with(json!({
            "client_secret": {"file": "client"},
            "cookie_secrets": [{"file": "cookie"}, {"env": "OLD_COOKIE_SECRET"}, {"file": dir.join("cookie")}],
        })))
        .unwrap();
        let s = cfg.validate("gw.yaml", &dir, &env, TEST_NOW).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.client_secret.expose(), "file-client-secret");
        let secrets: Vec<&str> = s.cookie_secrets.iter().map(Secret::expose).collect();
        let from_file = format!("{COOKIE}-from-file");
        let old = format!("{COOKIE}-old");
        assert_eq!(
            secrets,
            [from_file.as_str(), old.as_str(), from_file.as_str()]
        );
    }

    /// Secrets never appear in Debug or Display output, nor in the settings' Debug.
    #[test]
    fn secret_never_in_debug_output() {
        let s = validate(minimal()).unwrap();
        let debug = format!("{s:?} {s:#?} {} {}", s.client_secret, s.cookie_secrets[0]);
        assert!(!debug.contains("client-secret"));
        assert!(!debug.contains(COOKIE));
        assert!(debug.contains("[redacted]"));
        assert_eq!(format!("{:?}", Secret::new("x")), "[redacted]");
    }

    /// Unknown keys are refused, in the section and in a secret source.
    #[test]
    fn unknown_keys_refused() {
        assert!(
            serde_json::from_value::<AuthConfig>(with(json!({"cookie_secure": true}))).is_err()
        );
        assert!(serde_json::from_value::<AuthConfig>(with(
            json!({"client_secret": {"vault": "x"}})
        ))
        .is_err());
        assert!(
            serde_json::from_value::<PolicyConfig>(json!({"namespace": "a", "user": ["x"]}))
                .is_err()
        );
    }

    /// The isvc policy wins over the namespace policy; other namespaces have none.
    #[test]
    fn most_specific_policy() {
        let s = validate(with(json!({"policies": [
            {"namespace": "a", "isvc": "m", "users": ["x"]},
            {"namespace": "a", "groups": ["g"]},
            {"namespace": "b", "isvc": "m", "disabled": true},
        ]})))
        .unwrap();
        assert_eq!(s.policy("a", "m").unwrap().users, ["x"]);
        assert_eq!(s.policy("a", "other").unwrap().groups, ["g"]);
        assert!(s.policy("b", "m").unwrap().disabled);
        assert_eq!(s.policy("b", "other"), None);
        assert_eq!(s.policy("c", "m"), None);
    }

    /// Only paths under the issuer's path go to the provider, and nothing when it is at the root.
    #[test]
    fn provider_paths() {
        let s = validate(minimal()).unwrap();
        assert!(s.is_provider_path("/dex"));
        assert!(s.is_provider_path("/dex/auth"));
        assert!(!s.is_provider_path("/dexter"));
        assert!(!s.is_provider_path("/"));
        let root = validate(with(json!({"issuer": "https://idp.example.com/"}))).unwrap();
        assert_eq!(root.issuer, "https://idp.example.com");
        assert!(!root.is_provider_path("/"));
        assert!(!root.is_provider_path("/auth"));
    }

    /// Cookies are Secure as configured, else when the request came over TLS.
    #[test]
    fn secure_for() {
        let auto = validate(minimal()).unwrap();
        assert!(auto.secure_for(true) && !auto.secure_for(false));
        let forced = validate(with(json!({"secure_cookies": true}))).unwrap();
        assert!(forced.secure_for(false));
        let off = validate(with(json!({"secure_cookies": false}))).unwrap();
        assert!(!off.secure_for(true));
    }

    /// A secret source must name exactly one of file and env.
    #[test]
    fn secret_source_needs_exactly_one() {
        for src in [json!({}), json!({"file": "/x", "env": "CLIENT_SECRET"})] {
            let errors = validate(with(json!({ "client_secret": src }))).unwrap_err();
            assert_eq!(
                errors,
                ["gw.yaml: auth.client_secret: set exactly one of `file` or `env`"]
            );
        }
    }
}
