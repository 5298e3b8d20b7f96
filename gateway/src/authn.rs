//! Authentication in the request path, the way Kubeflow's authservice does it in front of Dex:
//! this module holds the live provider state (discovery, keys) and turns the pure decisions of
//! the `auth` crate into what the proxy hooks need. No HTTP response is written here.

use arc_swap::ArcSwapOption;
use auth::config::AuthSettings;
use auth::decide::{bearer_jwt, decide, Decision, Request};
use auth::flow::{self, LoginStart};
use auth::jwt::{KeyCache, TokenError, Verified, VerifyParams};
use auth::provider::{self, ProviderMetadata};
use auth::session::{self, Identity, Session, SessionCodec};
use pingora::server::ShutdownWatch;
use routes::{Backend, Endpoint, Target};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: the clock the pure auth code is given.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 64 bytes from the operating system's CSPRNG, for state, nonce and PKCE.
fn random64() -> [u8; 64] {
    let mut b = [0u8; 64];
    // The OS RNG failing is not recoverable; refusing to log in beats a predictable state.
    getrandom::fill(&mut b).expect("operating system random number generator");
    b
}

/// How long an unknown `kid` waits before it may trigger another JWKS fetch.
const MIN_REFETCH: Duration = Duration::from_secs(10);

/// Kubernetes service-account tokens (`auth.kubernetes_tokens`), verified against the API
/// server's own issuer discovery and JWKS, with the same key cache and the same checks as the
/// Dex tokens (signature, `iss`, an accepted audience, `exp`/`nbf`).
struct KubeTokens {
    settings: auth::config::KubernetesTokens,
    http: reqwest::Client,
    jwks_uri: ArcSwapOption<String>,
    keys: KeyCache,
    params: VerifyParams,
    /// Pods asked about (by uid), when, and whether they were there (`check_pods`): each pod
    /// costs one API request per `POD_SEEN_FOR`, whatever its tokens' traffic.
    pods_seen: std::sync::Mutex<std::collections::HashMap<String, PodAnswer>>,
}

/// When a pod was asked about, and whether it was there.
type PodAnswer = (Instant, Result<(), String>);

/// How long a pod's answer (there, or gone) is kept: a deleted pod's tokens stop working
/// within this time, at one API request per pod and period.
const POD_SEEN_FOR: Duration = Duration::from_secs(5);

impl KubeTokens {
    fn new(settings: auth::config::KubernetesTokens, leeway: Duration) -> Self {
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        // Checked to parse when the config was loaded.
        for cert in settings
            .ca_pem
            .as_deref()
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(pem).ok())
            .unwrap_or_default()
        {
            http = http.add_root_certificate(cert);
        }
        let params = VerifyParams {
            issuer: settings.issuer.clone(),
            audiences: settings.audiences.clone(),
            leeway_secs: leeway.as_secs(),
            userid_claim: "sub".into(),
            userid_prefix: String::new(),
            groups_claim: "groups".into(),
        };
        KubeTokens {
            http: http.build().expect("the rustls HTTP client builds"),
            jwks_uri: ArcSwapOption::empty(),
            keys: KeyCache::new(MIN_REFETCH),
            params,
            settings,
            pods_seen: Default::default(),
        }
    }

    /// With `check_pods`: the pod the (verified) token is bound to still exists, with the uid
    /// the token names. Fails closed: an API server that cannot say refuses the token.
    async fn check_pod(&self, token: &str) -> Result<(), String> {
        if !self.settings.check_pods {
            return Ok(());
        }
        let Some(pod) = auth::kubernetes::bound_pod(token)? else {
            return Ok(());
        };
        let fresh = |seen: &Instant| seen.elapsed() < POD_SEEN_FOR;
        if let Some((_, answer)) = self
            .pods_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pod.uid)
            .filter(|(at, _)| fresh(at))
        {
            return answer.clone();
        }
        // An API server that did not answer is asked again next time (the token is refused
        // meanwhile); a pod that is there or gone is remembered.
        let answer = self.ask_for_pod(&pod).await?;
        let mut seen = self.pods_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, (at, _)| fresh(at));
        seen.insert(pod.uid.clone(), (Instant::now(), answer.clone()));
        answer
    }

    /// Whether the pod is there (the inner result), or why the API server could not say.
    async fn ask_for_pod(
        &self,
        pod: &auth::kubernetes::BoundPod,
    ) -> Result<Result<(), String>, String> {
        let url = format!(
            "{}/api/v1/namespaces/{}/pods/{}",
            self.settings.discovery_url, pod.namespace, pod.name
        );
        let mut req = self.http.get(&url);
        if let Some(t) = self.bearer() {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .map_err(|e| format!("cannot ask the API server for the token's pod: {e}"))?;
        match r.status().as_u16() {
            200 => {}
            404 => {
                return Ok(Err(format!(
                    "the token's pod {}/{} no longer exists",
                    pod.namespace, pod.name
                )))
            }
            s => return Err(format!("the API server answered {s} for the token's pod")),
        }
        let body: serde_json::Value = r
            .json()
            .await
            .map_err(|e| format!("the API server's pod: {e}"))?;
        if body["metadata"]["uid"] != pod.uid.as_str() {
            return Ok(Err(format!(
                "the token's pod {}/{} was replaced (another uid)",
                pod.namespace, pod.name
            )));
        }
        Ok(Ok(()))
    }

    /// The gateway's own token for the API server, read each time (kubelet rotates it).
    fn bearer(&self) -> Option<String> {
        let path = self.settings.token_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the token for the API server");
                None
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.jwks_uri.load().is_some() && !self.keys.keys().is_empty()
    }

    /// One step towards ready: discovery, then the first key fetch.
    async fn step(&self) -> Result<(), String> {
        match self.jwks_uri.load_full() {
            None => {
                let uri = provider::kubernetes_jwks_uri(
                    &self.http,
                    &self.settings.discovery_url,
                    &self.settings.issuer,
                    self.bearer().as_deref(),
                )
                .await?;
                self.jwks_uri.store(Some(Arc::new(uri)));
            }
            Some(uri) => {
                let keys =
                    provider::fetch_jwks_as(&self.http, &uri, self.bearer_for(&uri).as_deref())
                        .await?;
                install_keys(&self.keys, keys, &uri)?;
            }
        }
        Ok(())
    }

    /// The reader token, for the discovery URL's own origin only: a `jwks_uri` elsewhere (a
    /// cloud's public OIDC host) gets no credential of the gateway's.
    fn bearer_for(&self, url: &str) -> Option<String> {
        let origin = |u: &str| {
            reqwest::Url::parse(u)
                .ok()
                .map(|u| u.origin().ascii_serialization())
        };
        let same = origin(url).is_some() && origin(url) == origin(&self.settings.discovery_url);
        same.then(|| self.bearer()).flatten()
    }

    async fn refresh(&self) -> Result<usize, String> {
        let uri = self
            .jwks_uri
            .load_full()
            .ok_or("API server not discovered yet")?;
        let bearer = self.bearer_for(&uri);
        self.keys
            .refresh(now(), || {
                provider::fetch_jwks_as(&self.http, &uri, bearer.as_deref())
            })
            .await
    }

    async fn verify(&self, token: &str, now: u64) -> Result<Identity, String> {
        let uri = self.jwks_uri.load_full();
        let fetch = || async move {
            match uri {
                Some(u) => {
                    provider::fetch_jwks_as(&self.http, &u, self.bearer_for(&u).as_deref()).await
                }
                None => Err("API server not discovered yet".to_string()),
            }
        };
        let verified = self
            .keys
            .verify(token, &self.params, now, fetch)
            .await
            .map_err(|e| e.to_string())?;
        let identity = auth::kubernetes::service_account_identity(&verified.user)
            .ok_or_else(|| "the token's subject is not a service account".to_string())?;
        self.check_pod(token).await?;
        Ok(identity)
    }

    async fn run(&self, refresh: Duration, shutdown: ShutdownWatch) {
        maintain_keys(
            "the Kubernetes API server's service-account keys",
            &self.settings.issuer,
            refresh,
            shutdown,
            || self.is_ready(),
            || self.step(),
            || self.refresh(),
        )
        .await;
    }
}

/// The first keys, from `fetch`: an empty set (no key of an algorithm the gateway verifies)
/// is an error, so that it is retried with backoff rather than fetched again at once.
fn install_keys(cache: &KeyCache, keys: auth::jwt::Jwks, uri: &str) -> Result<(), String> {
    if keys.is_empty() {
        return Err(format!("{uri}: no key the gateway can verify with"));
    }
    cache.replace(keys);
    Ok(())
}

/// Background work for one issuer's keys: `step` (discovery, then the first key fetch) with
/// backoff until `ready`, then `refresh` every `every`; failures are logged and the last good
/// state is kept.
async fn maintain_keys<S, R>(
    what: &str,
    issuer: &str,
    every: Duration,
    mut shutdown: ShutdownWatch,
    ready: impl Fn() -> bool,
    step: impl Fn() -> S,
    refresh: impl Fn() -> R,
) where
    S: std::future::Future<Output = Result<(), String>>,
    R: std::future::Future<Output = Result<usize, String>>,
{
    let mut backoff = Duration::from_millis(250);
    while !ready() {
        if let Err(e) = step().await {
            tracing::warn!(issuer, error = %e, retry_in = ?backoff, "{what} not reachable yet");
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
    tracing::info!(issuer, "{what} ready");
    let mut tick = tokio::time::interval(every);
    tick.reset();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                if let Err(e) = refresh().await {
                    tracing::warn!(issuer, error = %e, "{what}: refresh failed; keeping the cached keys");
                }
            }
        }
    }
}

pub struct Authn {
    pub settings: AuthSettings,
    codec: SessionCodec,
    http: reqwest::Client,
    meta: ArcSwapOption<ProviderMetadata>,
    keys: KeyCache,
    params: VerifyParams,
    /// With `auth.kubernetes_tokens`: the API server's service-account token verifier.
    kube: Option<KubeTokens>,
    /// The provider as an upstream, for `{issuer_path}/` requests (the Dex login pages).
    pub provider_target: Arc<Target>,
}

impl std::fmt::Debug for Authn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authn")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Authn {
    pub fn new(settings: AuthSettings) -> Self {
        let codec = SessionCodec::new(&settings.cookie_secrets);
        let params = VerifyParams {
            issuer: settings.issuer.clone(),
            audiences: settings.audiences.clone(),
            leeway_secs: settings.leeway.as_secs(),
            userid_claim: settings.userid_claim.clone(),
            userid_prefix: settings.userid_prefix.clone(),
            groups_claim: settings.groups_claim.clone(),
        };
        let host = settings
            .issuer_host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let endpoint = Endpoint {
            host: host.to_string(),
            port: settings.issuer_port,
        };
        let provider_target = Arc::new(Target {
            shadow: None,
            memo: Default::default(),
            component: "oidc-provider".into(),
            upstream_host: format!("{}:{}", settings.issuer_host, settings.issuer_port),
            timeout_secs: Some(30),
            backends: vec![Backend {
                memo: Default::default(),
                revision: "oidc-provider".into(),
                weight: 100,
                endpoints: vec![endpoint],
                knative: false,
                upstream_host: None,
            }],
        });
        let kube = settings
            .kubernetes_tokens
            .clone()
            .map(|k| KubeTokens::new(k, settings.leeway));
        Authn {
            kube,
            codec,
            http: provider::http_client(),
            meta: ArcSwapOption::empty(),
            keys: KeyCache::new(MIN_REFETCH),
            params,
            provider_target,
            settings,
        }
    }

    /// The provider's discovery has succeeded and its keys are loaded. The API server's keys
    /// do not count: an API server out of reach must not take sessions and Dex tokens down
    /// with it (service-account tokens get 401 until its keys are there, and a warning is
    /// logged).
    pub fn is_ready(&self) -> bool {
        self.meta.load().is_some() && !self.keys.keys().is_empty()
    }

    /// The first key fetch, before the gateway is ready (no request can be waiting on a
    /// refetch yet). It does not count for the refetch rate limit, so a key rotated just after
    /// start is still fetched when its first token arrives.
    async fn fetch_keys(&self) -> Result<(), String> {
        let Some(meta) = self.meta.load_full() else {
            return Err("provider not discovered yet".into());
        };
        let keys = provider::fetch_jwks(&self.http, &meta.jwks_uri).await?;
        install_keys(&self.keys, keys, &meta.jwks_uri)
    }

    /// The periodic refresh, through the key cache's single flight: it never runs next to an
    /// on-demand refetch, and counts as one for the rate limit.
    async fn refresh_keys(&self) -> Result<usize, String> {
        let Some(meta) = self.meta.load_full() else {
            return Err("provider not discovered yet".into());
        };
        self.keys
            .refresh(now(), || provider::fetch_jwks(&self.http, &meta.jwks_uri))
            .await
    }

    /// Background work: discovery and the first key fetch with backoff (the gateway is not
    /// ready until both succeed), then a key refresh every `jwks_refresh`. Failures are logged
    /// and the last good state is kept.
    pub async fn run(&self, shutdown: ShutdownWatch) {
        match &self.kube {
            Some(k) => {
                tokio::join!(
                    self.run_provider(shutdown.clone()),
                    k.run(self.settings.jwks_refresh, shutdown)
                );
            }
            None => self.run_provider(shutdown).await,
        }
    }

    async fn run_provider(&self, shutdown: ShutdownWatch) {
        let step = || async {
            if self.meta.load().is_none() {
                let meta = provider::discover(&self.http, &self.settings.issuer).await?;
                self.meta.store(Some(Arc::new(meta)));
                Ok(())
            } else {
                self.fetch_keys().await
            }
        };
        maintain_keys(
            "the OpenID Connect provider",
            &self.settings.issuer,
            self.settings.jwks_refresh,
            shutdown,
            || self.is_ready(),
            step,
            || self.refresh_keys(),
        )
        .await;
    }

    /// Verifies a bearer JWT; an unknown `kid` triggers one (single-flight, rate-limited)
    /// refetch of the keys.
    pub async fn verify_jwt(&self, token: &str, now: u64) -> Result<Identity, String> {
        // A token of the API server's issuer is a service account's (its verifier checks the
        // issuer again, with the signature); every other one is the provider's.
        if let Some(k) = &self.kube {
            if auth::kubernetes::peek_issuer(token).as_deref() == Some(&k.settings.issuer) {
                return k.verify(token, now).await;
            }
        }
        let identity = self
            .verify(token, now)
            .await
            .map(|v| Identity {
                user: v.user,
                groups: v.groups,
            })
            .map_err(|e| e.to_string())?;
        self.not_kubernetes(identity)
    }

    /// With service-account tokens accepted, `system:` names are theirs: a provider user or
    /// group spelt like one (`system:serviceaccounts:ml`) must not pass a policy meant for
    /// service accounts.
    fn not_kubernetes(&self, identity: Identity) -> Result<Identity, String> {
        let reserved = |n: &str| n.starts_with("system:");
        if self.kube.is_some()
            && (reserved(&identity.user) || identity.groups.iter().any(|g| reserved(g)))
        {
            return Err(
                "the provider's identity uses a `system:` name, which service accounts own".into(),
            );
        }
        Ok(identity)
    }

    /// Verification with the cached keys and, for an unknown `kid`, one refetch. The user is
    /// already prefixed (`VerifyParams::userid_prefix`).
    async fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        let meta = self.meta.load_full();
        let fetch = || async move {
            match meta {
                Some(m) => provider::fetch_jwks(&self.http, &m.jwks_uri).await,
                None => Err("provider not discovered yet".to_string()),
            }
        };
        self.keys.verify(token, &self.params, now, fetch).await
    }

    /// The decision for one request. A bearer JWT is verified first (async: an unknown `kid`
    /// may refetch the keys); the pure `auth::decide::decide` does the rest.
    pub async fn decide(&self, req: &Request<'_>, now: u64) -> Decision {
        let verified = match bearer_jwt(req.headers) {
            Some(t) => Some(self.verify_jwt(t, now).await),
            None => None,
        };
        decide(&self.settings, &self.codec, req, now, verified)
    }

    /// The 302 to the provider's login page, with its state cookie.
    pub fn start_login(&self, host: &str, tls: bool, return_to: &str) -> Option<LoginStart> {
        let meta = self.meta.load_full()?;
        let authorization = self
            .settings
            .authorization_url
            .as_deref()
            .unwrap_or(&meta.authorization_endpoint);
        Some(flow::start_login(
            &self.settings,
            &self.codec,
            authorization,
            &self.redirect_uri(host, tls),
            return_to,
            self.settings.secure_for(tls),
            now(),
            &random64(),
        ))
    }

    fn redirect_uri(&self, host: &str, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{host}{}", self.settings.redirect_path)
    }

    /// The callback: checks state against its cookie, exchanges the code, verifies the ID token
    /// and its nonce, and returns where to send the browser with the cookies to set.
    pub async fn finish_login(
        &self,
        query: &str,
        cookie_header: Option<&str>,
        host: &str,
        tls: bool,
    ) -> Result<(String, Vec<String>), LoginError> {
        let now = now();
        let secure = self.settings.secure_for(tls);
        let pending = flow::check_callback(
            &self.settings,
            &self.codec,
            query,
            cookie_header,
            secure,
            now,
        )
        .map_err(|e| LoginError::new(e.to_string(), format!("{e:?}")))?;
        let meta = self.meta.load_full().ok_or_else(|| {
            LoginError::new(
                "the identity provider is not reachable yet".into(),
                "provider not discovered yet".into(),
            )
        })?;
        let id_token = provider::exchange_code(
            &self.http,
            &meta,
            &self.settings.client_id,
            Some(self.settings.client_secret.expose()),
            &pending.code,
            &pending.verifier,
            &self.redirect_uri(host, tls),
        )
        .await
        .map_err(|e| LoginError::new("the identity provider refused the login code".into(), e))?;
        let verified = self.verify(&id_token, now).await.map_err(|e| {
            LoginError::new(
                "the ID token from the identity provider did not verify".into(),
                format!("ID token from the provider: {e}"),
            )
        })?;
        if verified.nonce.as_deref() != Some(pending.nonce.as_str()) {
            let why = "the ID token's nonce does not match the login";
            return Err(LoginError::new(why.into(), why.into()));
        }
        let identity = self
            .not_kubernetes(Identity {
                user: verified.user,
                groups: verified.groups,
            })
            .map_err(|e| LoginError::new(e.clone(), e))?;
        Ok((
            pending.return_to,
            vec![
                flow::session_set_cookie(&self.settings, &self.codec, identity, now, secure),
                pending.clear_state_cookie,
            ],
        ))
    }

    /// Logout: clear the session cookie; go to the provider's end-session page, where the
    /// browser reaches the provider (not at the in-cluster issuer address), when it has one.
    pub fn logout(&self, tls: bool) -> (String, String) {
        let meta = self.meta.load_full();
        let location = match meta.as_deref() {
            Some(m) => flow::logout_location(
                m.end_session_endpoint.as_deref(),
                &self.settings.issuer,
                &m.authorization_endpoint,
                self.settings.authorization_url.as_deref(),
            ),
            None => "/".to_owned(),
        };
        (
            location,
            session::clear_cookie(
                &self.settings.cookie_name,
                "/",
                self.settings.secure_for(tls),
            ),
        )
    }

    /// Seals a session for `identity` (used by `modelgate login --print cookie`).
    pub fn seal(&self, identity: Identity, now: u64) -> String {
        let session = Session {
            identity,
            expires_at: now + self.settings.session_lifetime.as_secs(),
            issued_at: now,
        };
        self.codec
            .seal_session(&self.settings.cookie_name, &session)
    }

    pub async fn discover_now(&self) -> Result<(), String> {
        let m = provider::discover(&self.http, &self.settings.issuer).await?;
        self.meta.store(Some(Arc::new(m)));
        self.fetch_keys().await
    }
}

/// Why a login callback failed: what the browser is told, and the detail for the log (which
/// may name the provider's addresses or repeat its error text).
#[derive(Debug)]
pub struct LoginError {
    pub client: String,
    pub detail: String,
}

impl LoginError {
    fn new(client: String, detail: String) -> Self {
        LoginError { client, detail }
    }
}

/// Runs the provider state as a pingora background service.
pub struct AuthnService(pub Arc<Authn>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for AuthnService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}
