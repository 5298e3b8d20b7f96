//! Authentication end to end: the real gateway, a real OpenID Connect provider process set up
//! like Dex (tests/oidc), real upstream servers. Every bad credential gets 401/403/302, never
//! a 500 and never a pass.

use crate::support::free_port;
use crate::support::gateway::{Gateway, Options, BIN};
use crate::support::manifest::{traffic, Isvc};
use crate::support::oidc::OidcProvider;
use crate::support::upstream::Upstream;
use auth::config::Secret;
use auth::session::{Identity, Session, SessionCodec};
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const IRIS: &str = "sklearn-iris.kserve-test.example.com";
pub(crate) const OPEN: &str = "open-model.public.example.com";
/// An InferenceService whose policy admits only ADMIN.
pub(crate) const SECRET: &str = "secret-model.restricted.example.com";
pub(crate) const COOKIE_SECRET: &str = "test-cookie-secret-0123456789abcdef-0123456789";
pub(crate) const USER: &str = "user@example.com";
pub(crate) const ADMIN: &str = "admin@example.com";
pub(crate) const PASSWORD: &str = "password";

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) struct Setup {
    pub provider: OidcProvider,
    pub up: Upstream,
    pub open_up: Upstream,
    pub gw: Gateway,
}

pub(crate) fn redirect_uri(port: u16) -> String {
    format!("http://{IRIS}:{port}/authservice/oidc/callback")
}

/// Gateway options with auth against `issuer`; `extra_auth` is appended inside `auth:`.
pub(crate) fn auth_options(
    issuer: &str,
    port: u16,
    up: &Upstream,
    open_up: &Upstream,
    extra_auth: &str,
) -> Options {
    Options {
        endpoints: vec![
            ("kserve-test/sklearn-iris-predictor-00001".into(), vec![format!("\"{}\"", up.endpoint())]),
            ("public/open-model-predictor-00001".into(), vec![format!("\"{}\"", open_up.endpoint())]),
            ("restricted/secret-model-predictor-00001".into(), vec![format!("\"{}\"", up.endpoint())]),
        ],
        extra: format!(
            "auth:\n  issuer: {issuer}\n  client_id: modelgate\n  client_secret: {{file: client-secret}}\n  cookie_secrets: [{{file: cookie-secret}}]\n  extra_audiences: [modelgate-cli]\n  skip_paths: [/healthz]\n  policies:\n    - {{namespace: public, disabled: true}}\n    - {{namespace: restricted, users: [{ADMIN}]}}\n{extra_auth}"
        ),
        port: Some(port),
        files: vec![
            ("client-secret".into(), "modelgate-secret\n".into()),
            ("cookie-secret".into(), format!("{COOKIE_SECRET}\n")),
        ],
        ..Default::default()
    }
}

pub(crate) fn manifests() -> Vec<(&'static str, String)> {
    vec![
        (
            "iris.yaml",
            Isvc::new(
                "sklearn-iris",
                "kserve-test",
                vec![traffic("sklearn-iris-predictor-00001", 100, None, true)],
            )
            .yaml(),
        ),
        (
            "open.yaml",
            Isvc::new(
                "open-model",
                "public",
                vec![traffic("open-model-predictor-00001", 100, None, true)],
            )
            .yaml(),
        ),
        (
            "secret.yaml",
            Isvc::new(
                "secret-model",
                "restricted",
                vec![traffic("secret-model-predictor-00001", 100, None, true)],
            )
            .yaml(),
        ),
    ]
}

impl Setup {
    /// An ID token for `user` from the provider, through the real code flow.
    pub async fn token(&self, user: &str) -> String {
        self.provider
            .id_token(user, PASSWORD, &redirect_uri(self.gw.port))
            .await
    }

    /// `GET /v1/models/sklearn-iris` on the iris host with `Authorization: Bearer {token}`.
    pub async fn bearer_get(&self, token: &str) -> reqwest::Response {
        self.gw
            .get(IRIS, "/v1/models/sklearn-iris")
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }

    /// A session cookie value for `user`, sealed now as the gateway seals one.
    pub fn seal(&self, user: &str) -> String {
        sealed(user, now())
    }
}

/// A session cookie value for `user` issued at `issued_at`, valid for ten more minutes.
pub(crate) fn sealed(user: &str, issued_at: u64) -> String {
    SessionCodec::new(&[Secret::new(COOKIE_SECRET)]).seal_session(
        "authservice_session",
        &Session {
            identity: Identity {
                user: user.into(),
                groups: vec![],
            },
            expires_at: now() + 600,
            issued_at,
        },
    )
}

pub(crate) async fn setup(extra_auth: &str) -> Setup {
    // The provider takes any example.com redirect, so the gateway can bind port 0 itself.
    let provider = OidcProvider::start(&[]).await;
    let up = Upstream::start("iris").await;
    let open_up = Upstream::start("open").await;
    let gw = Gateway::start(
        &manifests(),
        auth_options(&provider.issuer(), 0, &up, &open_up, extra_auth),
    )
    .await;
    Setup {
        provider,
        up,
        open_up,
        gw,
    }
}

/// A browser-like client: cookie jar, no automatic redirects, the model host resolving to the
/// gateway.
pub(crate) fn browser(port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(IRIS, ([127, 0, 0, 1], port).into())
        .build()
        .unwrap()
}

pub(crate) fn iris_url(port: u16, path: &str) -> String {
    format!("http://{IRIS}:{port}{path}")
}

/// Logs in through the whole browser flow and returns the session cookie value.
pub(crate) async fn browser_login(s: &Setup, user: &str) -> (reqwest::Client, String) {
    let port = s.gw.port;
    let client = browser(port);
    let r = client
        .get(iris_url(port, "/v1/models/sklearn-iris?from=browser"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/auth?", s.provider.issuer())),
        "{location}"
    );
    for p in [
        "response_type=code",
        "client_id=modelgate",
        "code_challenge_method=S256",
        "state=",
        "nonce=",
        "code_challenge=",
    ] {
        assert!(location.contains(p), "{p} missing in {location}");
    }
    let callback = s
        .provider
        .login_via_form(&client, &location, user, PASSWORD, &redirect_uri(port))
        .await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302, "callback: {:?}", r.text().await);
    assert_eq!(
        r.headers()["location"],
        "/v1/models/sklearn-iris?from=browser"
    );
    let set_cookie: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = set_cookie
        .iter()
        .find(|c| c.starts_with("authservice_session="))
        .unwrap_or_else(|| panic!("no session cookie in {set_cookie:?}"))
        .clone();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(flag), "{flag} missing in {session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP without secure_cookies: {session}"
    );
    let value = session
        .trim_start_matches("authservice_session=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (client, value)
}

/// The whole browser flow: 302 to the provider with state, nonce and PKCE; login form; callback
/// sets an HttpOnly SameSite=Lax session cookie and returns to the original URL; the prediction
/// then reaches the model with `kubeflow-userid` and `kubeflow-groups` set by the gateway. The
/// same value works as `Authorization: Bearer`, and on a second gateway sharing the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_flow() {
    let s = setup("").await;
    let (client, session) = browser_login(&s, USER).await;
    let r = client
        .post(iris_url(s.gw.port, "/v1/models/sklearn-iris:predict"))
        .body(r#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.requests().last().unwrap().clone();
    assert_eq!(seen.header_all("kubeflow-userid"), [USER]);
    assert_eq!(seen.header_all("kubeflow-groups"), ["kubeflow-users"]);

    // The session value as a bearer token, from a client without cookies.
    let r = s.bearer_get(&session).await;
    assert_eq!(r.status(), 200);

    // A second replica with the same cookie secret accepts the session (and a restart would too).
    let port2 = free_port();
    let gw2 = Gateway::start(
        &manifests(),
        auth_options(&s.provider.issuer(), port2, &s.up, &s.open_up, ""),
    )
    .await;
    let r = gw2
        .get(IRIS, "/v1/models/sklearn-iris")
        .header("cookie", format!("authservice_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.up.requests().last().unwrap().header("kubeflow-userid"),
        Some(USER)
    );

    // Logout clears the cookie and goes to the provider's end-session page.
    let r = client
        .post(iris_url(s.gw.port, "/authservice/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("authservice_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

/// The provider's pages are reachable through the gateway without auth (as Kubeflow's
/// VirtualService sends /dex/ to Dex), so a browser logs in through the same host.
#[tokio::test]
async fn provider_paths_pass_through() {
    let s = setup("").await;
    let r =
        s.gw.get(IRIS, "/dex/.well-known/openid-configuration")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["issuer"], s.provider.issuer());
}

/// Bearer ID tokens from the provider are verified locally; identity headers a client sends,
/// in any spelling, never reach the model; on a skip path they are stripped too.
#[tokio::test]
async fn bearer_tokens_and_spoofed_identity() {
    let s = setup("").await;
    let token = s.token(ADMIN).await;
    let r =
        s.gw.get(IRIS, "/v1/models/sklearn-iris")
            .header("authorization", format!("Bearer {token}"))
            .header("kubeflow-userid", "evil@example.com")
            .header("Kubeflow_Userid", "evil@example.com")
            .header("KUBEFLOW-USERID", "evil2@example.com")
            .header("kubeflow-groups", "cluster-admins")
            .header("KubeFlow_Groups", "cluster-admins")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.requests().last().unwrap().clone();
    assert_eq!(seen.header_all("kubeflow-userid"), [ADMIN]);
    assert_eq!(
        seen.header_all("kubeflow-groups"),
        ["admins,kubeflow-users"]
    );
    assert!(
        seen.headers
            .iter()
            .all(|(k, _)| k != "kubeflow_userid" && k != "kubeflow_groups"),
        "{:?}",
        seen.headers
    );

    // Auth switched off for a namespace: no identity at all, spoofed or not.
    let r =
        s.gw.get(OPEN, "/v1/models/open-model")
            .header("Kubeflow-Userid", "evil@example.com")
            .header("kubeflow_groups", "admins")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.open_up.requests().last().unwrap().clone();
    assert!(
        seen.headers.iter().all(|(k, _)| !k
            .replace('_', "-")
            .eq_ignore_ascii_case("kubeflow-userid")
            && !k.replace('_', "-").eq_ignore_ascii_case("kubeflow-groups")),
        "{:?}",
        seen.headers
    );
}

async fn status_with(
    gw: &Gateway,
    authorization: Option<String>,
    cookie: Option<String>,
) -> (u16, reqwest::header::HeaderMap, String) {
    // An API client: a JSON client gets the 401 rather than the login redirect.
    let mut req = gw
        .get(IRIS, "/v1/models/sklearn-iris")
        .header("accept", "application/json");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Every bad credential gets 401 with a JSON body and `WWW-Authenticate: Bearer`: none,
/// garbage, truncated, expired, not yet valid, wrong issuer, wrong audience, `alg: none`, HS256
/// signed with the RSA public key, a bad signature, an unknown kid; garbage, truncated, expired
/// and re-keyed session cookies. A browser with a bad session is sent to log in instead.
#[tokio::test]
async fn bad_credentials_are_refused() {
    let s = setup("").await;
    let p = &s.provider;
    let good = p.id_token(USER, PASSWORD, &redirect_uri(s.gw.port)).await;
    let t = now();
    let claims = |overrides: serde_json::Value| {
        let mut c = json!({"iss": p.issuer(), "aud": "modelgate", "sub": "u1", "email": USER, "groups": ["kubeflow-users"], "iat": t, "exp": t + 600});
        for (k, v) in overrides.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // A correctly signed token with good claims passes: the forging path itself is sound.
    let signed_ok = p.sign(json!({}), claims(json!({}))).await;
    assert_eq!(
        status_with(&s.gw, Some(format!("Bearer {signed_ok}")), None)
            .await
            .0,
        200
    );

    let jwk = p.current_public_jwk().await;
    let hs256 = {
        use hmac_sha256::HMAC;
        let header = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}));
        let payload = b64(&claims(json!({})));
        let input = format!("{header}.{payload}");
        let mac = HMAC::mac(input.as_bytes(), jwk.to_string().as_bytes());
        use base64::Engine;
        format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
        )
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(json!({})))
    );
    let mut bad_sig = good.clone().into_bytes();
    let last = bad_sig.len() - 5;
    bad_sig[last] = if bad_sig[last] == b'A' { b'B' } else { b'A' };
    let bad_sig = String::from_utf8(bad_sig).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "Bearer not-a-token".into()),
        ("garbage jwt", "Bearer aaa.bbb.ccc".into()),
        ("truncated", format!("Bearer {}", &good[..good.len() - 20])),
        (
            "expired",
            format!(
                "Bearer {}",
                p.sign(json!({}), claims(json!({"exp": t - 3600, "iat": t - 7200})))
                    .await
            ),
        ),
        (
            "nbf in the future",
            format!(
                "Bearer {}",
                p.sign(json!({}), claims(json!({"nbf": t + 3600}))).await
            ),
        ),
        (
            "wrong iss",
            format!(
                "Bearer {}",
                p.sign(
                    json!({}),
                    claims(json!({"iss": "http://evil.example.com/dex"}))
                )
                .await
            ),
        ),
        (
            "wrong aud",
            format!(
                "Bearer {}",
                p.sign(json!({}), claims(json!({"aud": "someone-else"})))
                    .await
            ),
        ),
        ("alg none", format!("Bearer {none}")),
        ("hs256 with the rsa public key", format!("Bearer {hs256}")),
        ("bad signature", format!("Bearer {bad_sig}")),
        (
            "unknown kid",
            format!(
                "Bearer {}",
                p.sign(json!({"kid": "no-such-kid"}), claims(json!({})))
                    .await
            ),
        ),
        ("empty bearer", "Bearer ".into()),
        ("basic auth", "Basic dXNlcjpwYXNz".into()),
    ];
    for (what, authz) in cases {
        let (status, headers, body) = status_with(&s.gw, Some(authz), None).await;
        assert_eq!(status, 401, "{what}: {body}");
        // RFC 6750 §3.1: `invalid_token` when a token was sent and refused; no error code
        // for no token or another authentication method.
        let challenge = headers["www-authenticate"].to_str().unwrap();
        if matches!(what, "empty bearer" | "basic auth") {
            assert_eq!(challenge, "Bearer realm=\"modelgate\"", "{what}");
        } else {
            assert!(
                challenge.starts_with("Bearer realm=\"modelgate\", error=\"invalid_token\""),
                "{what}: {challenge}"
            );
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert!(v["error"].is_string(), "{what}: {body}");
    }

    let codec = SessionCodec::new(&[Secret::new(COOKIE_SECRET)]);
    let other = SessionCodec::new(&[Secret::new("another-secret-0123456789abcdef-0123456789")]);
    let identity = Identity {
        user: USER.into(),
        groups: vec![],
    };
    let valid = codec.seal_session(
        "authservice_session",
        &Session {
            identity: identity.clone(),
            expires_at: t + 600,
            issued_at: t,
        },
    );
    assert_eq!(
        status_with(&s.gw, None, Some(format!("authservice_session={valid}")))
            .await
            .0,
        200
    );
    let cookies = vec![
        ("garbage cookie", "authservice_session=garbage".to_string()),
        (
            "truncated cookie",
            format!("authservice_session={}", &valid[..valid.len() - 8]),
        ),
        (
            "expired cookie",
            format!(
                "authservice_session={}",
                codec.seal_session(
                    "authservice_session",
                    &Session {
                        identity: identity.clone(),
                        expires_at: t - 1,
                        issued_at: t,
                    }
                )
            ),
        ),
        (
            "re-keyed cookie",
            format!(
                "authservice_session={}",
                other.seal_session(
                    "authservice_session",
                    &Session {
                        identity: identity.clone(),
                        expires_at: t + 600,
                        issued_at: t,
                    }
                )
            ),
        ),
        (
            "sealed under another name",
            format!(
                "authservice_session={}",
                codec.seal_session(
                    "authservice_session_state_x",
                    &Session {
                        identity,
                        expires_at: t + 600,
                        issued_at: t,
                    }
                )
            ),
        ),
    ];
    for (what, cookie) in &cookies {
        let (status, _, body) = status_with(&s.gw, None, Some(cookie.clone())).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    let (status, headers, _) = status_with(&s.gw, None, None).await;
    assert_eq!(status, 401, "no credentials");
    assert_eq!(
        headers["www-authenticate"], "Bearer realm=\"modelgate\"",
        "no credentials sent: no error code (RFC 6750 §3.1)"
    );
    // A browser with a bad session is sent to log in, not shown an error.
    let r = browser(s.gw.port)
        .get(iris_url(s.gw.port, "/v1/models/sklearn-iris"))
        .header("accept", "text/html")
        .header("cookie", cookies[0].1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("{}/auth?", p.issuer())));
    assert_eq!(
        s.up.hits(),
        2,
        "only the two valid credentials reached the model"
    );
}

/// Key rotation: a token signed with a new kid verifies after one refetch of the keys. With
/// the JWKS endpoint down, cached keys keep working and an unknown kid is a 401, not a 500.
#[tokio::test]
async fn key_rotation_and_jwks_outage() {
    let s = setup("").await;
    let p = &s.provider;
    let before = p.id_token(USER, PASSWORD, &redirect_uri(s.gw.port)).await;
    assert_eq!(
        status_with(&s.gw, Some(format!("Bearer {before}")), None)
            .await
            .0,
        200
    );
    let fetches = p.keys_fetches().await;
    p.rotate().await;
    let after = p.id_token(USER, PASSWORD, &redirect_uri(s.gw.port)).await;
    assert_eq!(
        status_with(&s.gw, Some(format!("Bearer {after}")), None)
            .await
            .0,
        200
    );
    assert_eq!(
        p.keys_fetches().await,
        fetches + 1,
        "one refetch for the new kid"
    );

    p.jwks_down().await;
    assert_eq!(
        status_with(&s.gw, Some(format!("Bearer {before}")), None)
            .await
            .0,
        200
    );
    assert_eq!(
        status_with(&s.gw, Some(format!("Bearer {after}")), None)
            .await
            .0,
        200
    );
    p.rotate().await;
    let unknown = p.id_token(USER, PASSWORD, &redirect_uri(s.gw.port)).await;
    let (status, _, body) = status_with(&s.gw, Some(format!("Bearer {unknown}")), None).await;
    assert_eq!(status, 401, "{body}");
    p.jwks_up().await;
}

/// Allow-lists: a verified user outside a namespace's users and groups gets 403.
#[tokio::test]
async fn allow_lists_forbid() {
    let s = setup("    - {namespace: kserve-test, groups: [admins]}\n").await;
    let user = s.token(USER).await;
    let admin = s.token(ADMIN).await;
    let (status, _, body) = status_with(&s.gw, Some(format!("Bearer {user}")), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
    assert_eq!(
        status_with(&s.gw, Some(format!("Bearer {admin}")), None)
            .await
            .0,
        200
    );
}

/// Sends a raw request line (so the path is not normalised by a client library).
pub(crate) fn raw_status(port: u16, path: &str, extra: &str) -> u16 {
    raw_status_host(port, IRIS, path, extra)
}

pub(crate) fn raw_status_host(port: u16, host: &str, path: &str, extra: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Skip paths match whole segments of the normalised path, which is also the path forwarded:
/// `/healthz` is open, but no spelling of `/healthz/../private` is (every encoding of `..`,
/// with and without `;` path parameters, which Tomcat and Spring strip before they resolve dot
/// segments), and what a valid user sends that way reaches the model as `/private`. Encoded
/// slashes and backslashes are refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_path_bypass_attempts() {
    let s = setup("").await;
    let port = s.gw.port;
    let json = "Accept: application/json\r\n";
    assert_eq!(raw_status(port, "/healthz", ""), 200);
    assert_eq!(raw_status(port, "/healthz/live", ""), 200);
    assert_eq!(s.up.hits(), 2);
    let mut bypasses = vec![
        "/healthzfoo".to_string(),
        "/healthz;x=y".to_string(),
        "//healthz/../private".to_string(),
        "/./healthz/../private".to_string(),
        "/private".to_string(),
    ];
    for dots in ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", ".%2E", "%2E."] {
        for params in ["", ";", ";x=y", ";jsessionid=1", "%3bx", "%3B"] {
            bypasses.push(format!("/healthz/{dots}{params}/private"));
            bypasses.push(format!("/healthz/x/{dots}{params}/{dots}{params}/private"));
        }
    }
    for path in &bypasses {
        assert_eq!(raw_status(port, path, json), 401, "{path}");
    }
    assert_eq!(s.up.hits(), 2, "no bypass attempt reached the model");

    // With credentials each one is served, and the model sees the path auth saw.
    let session = s.seal(USER);
    let cookie = format!("Cookie: authservice_session={session}\r\n");
    for path in bypasses.iter().filter(|p| p.ends_with("/private")) {
        assert_eq!(raw_status(port, path, &cookie), 200, "{path}");
        let seen = s.up.requests().last().unwrap().path.clone();
        assert_eq!(seen, "/private", "{path}");
    }
    // An InferenceService whose policy lets only the admin in: no spelling gets past it.
    let hits = s.up.hits();
    for path in bypasses.iter().filter(|p| p.ends_with("/private")) {
        assert_eq!(raw_status_host(port, SECRET, path, &cookie), 403, "{path}");
    }
    assert_eq!(s.up.hits(), hits);
    for path in [
        "/healthz%2f..%2fprivate",
        "/healthz%2F..%2Fprivate",
        "/healthz/..%5cprivate",
        "/healthz/..%5Cprivate",
        "/healthz/..\\private",
        "/healthz/%252e%252e/private",
        "/healthz/%00/private",
    ] {
        assert_eq!(raw_status(port, path, &cookie), 400, "{path}");
    }
}

/// After login, only a relative path on this host is followed: open-redirect attempts land on
/// `/`.
#[tokio::test]
async fn no_open_redirect_after_login() {
    let s = setup("").await;
    let port = s.gw.port;
    // Encoded slashes never get as far as a login.
    let r = browser(port)
        .get(iris_url(port, "/%2F%2Fevil.example.com"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // reqwest sends `/\\evil` as `//evil`; both are normalised to a path on this host first.
    for path in ["//evil.example.com/x", "/\\evil.example.com"] {
        let client = browser(port);
        let r = client
            .get(iris_url(port, path))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{path}");
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let callback = s
            .provider
            .login_via_form(&client, &location, USER, PASSWORD, &redirect_uri(port))
            .await;
        let r = client.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 302, "{path}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(
            to.starts_with("/evil.example.com") && !to.starts_with("//"),
            "{path} -> {to}"
        );
    }
    // A callback without a matching state cookie is refused.
    let r =
        s.gw.get(IRIS, "/authservice/oidc/callback?code=abc&state=forged")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
}

/// `modelgate login` gets an ID token with the device flow and prints an Authorization header
/// that the gateway accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_login_device_flow() {
    let s = setup("").await;
    let issuer = s.provider.issuer();
    let args = [
        "--issuer",
        &issuer,
        "--client-id",
        "modelgate-cli",
        "--print",
        "header",
    ];
    let header = cli_login(&s.provider, &args, USER).await;
    let token = header
        .strip_prefix("Authorization: Bearer ")
        .expect("a header line")
        .to_string();
    let (status, _, body) = status_with(&s.gw, Some(format!("Bearer {token}")), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.up.requests().last().unwrap().header("kubeflow-userid"),
        Some(USER)
    );
}

/// Runs `modelgate login ARGS`, signs in as `user` through the device-verification pages when
/// it prompts, and returns what it printed on stdout.
pub(crate) async fn cli_login(provider: &OidcProvider, args: &[&str], user: &str) -> String {
    let mut child = std::process::Command::new(BIN)
        .arg("login")
        .args(args)
        .args(["--timeout", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a sign-in prompt");
    assert!(line.starts_with("modelgate: open "), "{line}");
    let code = line.rsplit(' ').next().unwrap().to_string();
    provider.approve_device(&code, user, PASSWORD).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// No secret ever reaches the log: not the client secret, not the cookie secret, not a
/// session value.
#[tokio::test]
async fn secrets_stay_out_of_the_log() {
    let s = setup("").await;
    let (_client, session) = browser_login(&s, USER).await;
    // A refused credential is logged too; make sure that path leaks nothing either.
    let _ = status_with(&s.gw, None, Some(format!("authservice_session={session}x"))).await;
    let log = s.gw.log();
    assert!(log.contains("OpenID Connect provider ready"), "{log}");
    for secret in ["modelgate-secret", COOKIE_SECRET, session.as_str()] {
        assert!(!log.contains(secret), "{secret:?} found in the log");
    }
}

/// `modelgate login --config FILE --print cookie` prints a ready `authservice_session=...`
/// sealed with the gateway's own cookie secret, which the gateway accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_login_prints_a_session_cookie() {
    let s = setup("").await;
    let config = s.gw.dir.path().join("modelgate.yaml");
    let config = config.to_str().unwrap();
    let cookie = cli_login(
        &s.provider,
        &["--config", config, "--print", "cookie"],
        ADMIN,
    )
    .await;
    assert!(cookie.starts_with("authservice_session="), "{cookie}");
    let (status, _, body) = status_with(&s.gw, None, Some(cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.up.requests().last().unwrap().header("kubeflow-userid"),
        Some(ADMIN)
    );
}

/// Until discovery succeeds the gateway is not ready and authenticated routes answer 503 with
/// a JSON body (never 500, never a pass); it keeps retrying in the background.
#[tokio::test]
async fn not_ready_until_the_provider_answers() {
    let up = Upstream::start("iris").await;
    let open_up = Upstream::start("open").await;
    let dead = crate::support::upstream::dead_endpoint();
    let port = free_port();
    let opts = auth_options(&format!("http://{dead}/dex"), port, &up, &open_up, "");
    // Gateway::start waits for /readyz, which never comes: start it by hand.
    let gw = Gateway::start_unready(&manifests(), opts).await;
    // Routes load first (readyz says so until then); then the provider is what is missing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        if r.text().await.unwrap().contains("OpenID Connect provider") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = gw
        .get(IRIS, "/v1/models/sklearn-iris")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("OpenID Connect provider"));
    assert_eq!(up.hits(), 0);
    // Retries are logged with their backoff.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw
        .log()
        .matches("OpenID Connect provider not reachable yet")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login_cookie(client: &reqwest::Client, url: &str) -> String {
    let r = client
        .get(url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    r.headers()["set-cookie"].to_str().unwrap().to_string()
}

/// Cookies are `Secure` when the request came over TLS, or when config says so; plain HTTP
/// without the setting gets no `Secure` (the browser would drop the cookie).
#[tokio::test]
async fn cookies_are_secure_over_tls_or_by_config() {
    let ca = crate::tls::Ca::new();
    let (cert, key, _) = ca.leaf(&[IRIS]);
    let port = free_port();
    let provider = OidcProvider::start(&[redirect_uri(port)]).await;
    let up = Upstream::start("iris").await;
    let open_up = Upstream::start("open").await;
    let mut opts = auth_options(&provider.issuer(), port, &up, &open_up, "");
    opts.extra = format!(
        "  - address: \"127.0.0.1:0\"\n    tls: {{certificates: [{{cert: tls.crt, key: tls.key}}]}}\n{}",
        opts.extra
    );
    opts.extra_listeners = true;
    opts.files.push(("tls.crt".into(), cert));
    opts.files.push(("tls.key".into(), key));
    let gw = Gateway::start(&manifests(), opts).await;
    let tls_port = gw.ports[1];
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve(IRIS, ([127, 0, 0, 1], tls_port).into())
        .build()
        .unwrap();
    let over_tls = login_cookie(
        &client,
        &format!("https://{IRIS}:{tls_port}/v1/models/sklearn-iris"),
    )
    .await;
    assert!(
        over_tls.contains("; Secure") && over_tls.contains("HttpOnly"),
        "{over_tls}"
    );
    let plain = login_cookie(
        &browser(gw.port),
        &iris_url(gw.port, "/v1/models/sklearn-iris"),
    )
    .await;
    assert!(!plain.contains("Secure"), "{plain}");

    let s = setup("  secure_cookies: true\n").await;
    let forced = login_cookie(
        &browser(s.gw.port),
        &iris_url(s.gw.port, "/v1/models/sklearn-iris"),
    )
    .await;
    assert!(forced.contains("; Secure"), "{forced}");
}

/// A listener with `auth: false` serves without authentication next to one that requires it,
/// and still strips client-sent identity headers.
#[tokio::test]
async fn listener_can_opt_out() {
    let port = free_port();
    let provider = OidcProvider::start(&[redirect_uri(port)]).await;
    let up = Upstream::start("iris").await;
    let open_up = Upstream::start("open").await;
    let mut opts = auth_options(&provider.issuer(), port, &up, &open_up, "");
    opts.extra = format!(
        "  - address: \"127.0.0.1:0\"\n    auth: false\n{}",
        opts.extra
    );
    opts.extra_listeners = true;
    let gw = Gateway::start(&manifests(), opts).await;
    let open_port = gw.ports[1];
    assert_eq!(status_with(&gw, None, None).await.0, 401);
    let r = gw
        .client
        .get(format!(
            "http://127.0.0.1:{open_port}/v1/models/sklearn-iris"
        ))
        .header("host", IRIS)
        .header("kubeflow-userid", "evil@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.requests().last().unwrap().header("kubeflow-userid"),
        None
    );
}

/// Path-based routes (KServe's `pathTemplate`) authenticate exactly as host routes do: no
/// credential is 401, a valid bearer reaches the model with the identity and the prefix
/// stripped, a namespace's policy applies to the object the path names (the restricted model
/// admits only ADMIN), and a policy-disabled namespace is open.
#[tokio::test]
async fn path_routes_are_authenticated() {
    let port = free_port();
    let provider = OidcProvider::start(&[redirect_uri(port)]).await;
    let up = Upstream::start("iris").await;
    let open_up = Upstream::start("open").await;
    let mut options = auth_options(&provider.issuer(), port, &up, &open_up, "");
    options.routes = "path_template: \"/serving/{{ .Namespace }}/{{ .Name }}\"".into();
    let gw = Gateway::start(&manifests(), options).await;
    let user = provider.id_token(USER, PASSWORD, &redirect_uri(port)).await;
    let path = "/serving/kserve-test/sklearn-iris/v1/models/sklearn-iris:predict";
    let host = "203.0.113.7";
    let send = |path: &str, token: Option<&str>| {
        let mut req = gw.get(host, path).header("accept", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    assert_eq!(send(path, None).await.unwrap().status(), 401);
    let r = send(path, Some(&user)).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.requests().last().unwrap().clone();
    assert_eq!(seen.path, "/v1/models/sklearn-iris:predict");
    assert_eq!(seen.header_all("kubeflow-userid"), [USER]);
    let restricted = "/serving/restricted/secret-model/v1/models/secret-model:predict";
    assert_eq!(send(restricted, Some(&user)).await.unwrap().status(), 403);
    let admin = provider
        .id_token(ADMIN, PASSWORD, &redirect_uri(port))
        .await;
    assert_eq!(send(restricted, Some(&admin)).await.unwrap().status(), 200);
    let open = "/serving/public/open-model/v1/models/open-model";
    assert_eq!(send(open, None).await.unwrap().status(), 200);
}

/// Replicas share nothing but the secrets: a session from a real browser login through one
/// gateway is accepted by a second gateway with the same cookie secret (the replica the load
/// balancer picks next), and refused by one with another secret.
#[tokio::test]
async fn replicas_accept_each_others_sessions() {
    let s = setup("").await;
    let (_, cookie) = browser_login(&s, USER).await;
    let other_up = Upstream::start("replica").await;
    let replica = Gateway::start(
        &manifests(),
        auth_options(&s.provider.issuer(), 0, &other_up, &s.open_up, ""),
    )
    .await;
    assert_eq!(session_status(&replica, &cookie).await, 200);
    assert_eq!(
        other_up
            .requests()
            .last()
            .unwrap()
            .header_all("kubeflow-userid"),
        [USER]
    );
    let mut options = auth_options(&s.provider.issuer(), 0, &other_up, &s.open_up, "");
    options.files[1].1 = "another-cookie-secret-0123456789abcdef-0123456789\n".into();
    let stranger = Gateway::start(&manifests(), options).await;
    assert_eq!(session_status(&stranger, &cookie).await, 401);
}

/// The status of a JSON request to the iris model with `authservice_session={cookie}`.
pub(crate) async fn session_status(gw: &Gateway, cookie: &str) -> u16 {
    gw.get(IRIS, "/v1/models/sklearn-iris")
        .header("accept", "application/json")
        .header("cookie", format!("authservice_session={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What a gateway needs to read the fake API server's keys: its reader token and its CA.
fn api_server_files(options: &mut Options, api: &crate::support::kube::FakeApiServer) {
    options
        .files
        .push(("reader-token".into(), format!("{}\n", api.reader_token)));
    options
        .files
        .push(("api-ca.pem".into(), api.ca_pem.clone()));
}

/// Kubernetes service-account tokens (`auth.kubernetes_tokens`), against a fake API server that
/// serves issuer discovery and JWKS the way the real one does (behind a reader token): a
/// projected token for `modelgate` passes as `system:serviceaccount:{ns}:{name}` with the
/// service-account groups, which policies can name; the API server's own audience, another
/// audience, an expired token, a forged signature, a subject that is no service account and an
/// unknown key all get 401; a Dex token still works beside them.
#[tokio::test]
async fn service_account_tokens() {
    use crate::support::kube::FakeApiServer;
    let api = FakeApiServer::start().await;
    let port = free_port();
    let provider = OidcProvider::start(&[redirect_uri(port)]).await;
    let up = Upstream::start("iris").await;
    let open_up = Upstream::start("open").await;
    let extra = format!(
        "  kubernetes_tokens: {{issuer: \"{}\", audiences: [modelgate], token_file: reader-token, ca_file: api-ca.pem}}\n  policies:\n    - {{namespace: restricted, groups: [\"system:serviceaccounts:restricted\"]}}\n",
        api.url
    );
    let mut options = auth_options(&provider.issuer(), port, &up, &open_up, "");
    // The policies above replace the default ones (public open, restricted to ADMIN).
    options.extra = options
        .extra
        .replace(
            &format!("  policies:\n    - {{namespace: public, disabled: true}}\n    - {{namespace: restricted, users: [{ADMIN}]}}\n"),
            "",
        )
        + &extra;
    api_server_files(&mut options, &api);
    let gw = Gateway::start(&manifests(), options).await;
    let call = |host: &'static str, token: String| {
        gw.get(host, "/v1/models/m")
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .send()
    };

    let token = api.token("kserve-test", "pipeline", "modelgate", |_| {});
    let r = call(IRIS, token).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let seen = up.requests().last().unwrap().clone();
    assert_eq!(
        seen.header_all("kubeflow-userid"),
        ["system:serviceaccount:kserve-test:pipeline"]
    );
    assert_eq!(
        seen.header_all("kubeflow-groups"),
        ["system:serviceaccounts,system:serviceaccounts:kserve-test,system:authenticated"]
    );
    // Policies name service accounts by their groups: only the namespace's own may call.
    let own = api.token("restricted", "runner", "modelgate", |_| {});
    assert_eq!(call(SECRET, own).await.unwrap().status(), 200);
    let other = api.token("kserve-test", "pipeline", "modelgate", |_| {});
    assert_eq!(call(SECRET, other).await.unwrap().status(), 403);

    let now = now() as i64;
    let bad: Vec<(&str, String)> = vec![
        (
            "the API server's audience",
            api.token("kserve-test", "p", &api.url, |_| {}),
        ),
        (
            "another audience",
            api.token("kserve-test", "p", "vault", |_| {}),
        ),
        (
            "expired",
            api.token("kserve-test", "p", "modelgate", |c| {
                c["exp"] = (now - 3600).into();
                c["iat"] = (now - 7200).into();
                c["nbf"] = (now - 7200).into();
            }),
        ),
        (
            "not a service account",
            api.token("kserve-test", "p", "modelgate", |c| {
                c["sub"] = "system:node:worker-1".into()
            }),
        ),
        ("forged signature", {
            let t = api.token("kserve-test", "p", "modelgate", |_| {});
            let (head, _) = t.rsplit_once('.').unwrap();
            format!("{head}.{}", "A".repeat(86))
        }),
        ("unknown key", {
            let other = FakeApiServer::start().await;
            other.token("kserve-test", "p", "modelgate", |c| {
                c["iss"] = api.url.clone().into()
            })
        }),
    ];
    for (what, token) in bad {
        let r = call(IRIS, token).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }
    // The Dex bearer path is unchanged beside it.
    let dex = provider.id_token(USER, PASSWORD, &redirect_uri(port)).await;
    assert_eq!(call(IRIS, dex).await.unwrap().status(), 200);
}

/// With `check_pods`, a service-account token works only while the pod it is bound to exists
/// with the uid it names: a pod that is gone, or was replaced by one of the same name, gets
/// 401; a pod deleted after a token worked stops it within the recheck time (5 s); a token
/// bound to no pod is not affected.
#[tokio::test]
async fn service_account_tokens_of_gone_pods() {
    use crate::support::kube::FakeApiServer;
    let api = FakeApiServer::start().await;
    let up = Upstream::start("iris").await;
    let open_up = Upstream::start("open").await;
    let provider = OidcProvider::start(&[]).await;
    let mut options = auth_options(&provider.issuer(), 0, &up, &open_up, &format!(
        "  kubernetes_tokens: {{issuer: \"{0}\", discovery_url: \"{0}\", audiences: [modelgate], token_file: reader-token, ca_file: api-ca.pem, check_pods: true}}\n",
        api.url
    ));
    api_server_files(&mut options, &api);
    let gw = Gateway::start(&manifests(), options).await;
    let gw = &gw;
    let call = |token: String| async move {
        gw.get(IRIS, "/v1/models/m")
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
            .status()
    };
    let pod_token = |pod: &str, uid: &str| {
        let (pod, uid) = (pod.to_string(), uid.to_string());
        api.token("kserve-test", "pipeline", "modelgate", move |c| {
            c["kubernetes.io"]["pod"] = json!({"name": pod, "uid": uid});
        })
    };
    api.add_pod("kserve-test", "alive", "uid-alive");
    api.add_pod("kserve-test", "replaced", "uid-new");
    api.add_pod("kserve-test", "deleted-later", "uid-later");
    assert_eq!(call(pod_token("alive", "uid-alive")).await, 200);
    assert_eq!(call(pod_token("never-was", "uid-x")).await, 401);
    assert_eq!(call(pod_token("replaced", "uid-old")).await, 401);
    let unbound = api.token("kserve-test", "pipeline", "modelgate", |c| {
        c["kubernetes.io"].as_object_mut().unwrap().remove("pod");
    });
    assert_eq!(call(unbound).await, 200);

    let later = pod_token("deleted-later", "uid-later");
    assert_eq!(call(later.clone()).await, 200);
    api.remove_pod("kserve-test", "deleted-later");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = call(later.clone()).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted pod's token still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
