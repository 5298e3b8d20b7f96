//! The OpenID Connect provider test fixture (tests/oidc), set up to look like Dex.
//!
//! [`OidcProvider::start`] runs `node tests/oidc/provider.mjs --port 0` (a real, certified
//! provider: panva's `oidc-provider`), waits for its `listening <issuer>` line and kills it on
//! drop. The helpers drive the provider's real pages with a cookie-jar HTTP client, no browser:
//! the authorization-code flow with PKCE ([`OidcProvider::id_token`]), a login that starts from
//! the gateway's redirect ([`OidcProvider::login_via_form`]) and device-flow approval
//! ([`OidcProvider::approve_device`]). The `/__test/` controls (key rotation, JWKS outage,
//! token forging, fetch counters) are wrapped one method each.
//!
//! Needs Node 20+ and npm; the packages are installed on first use (`support::install`).
//! `NODE` overrides the `node` binary.

// Each test uses a different part of this kit; unused helpers are not a smell here.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};
use serde_json::Value;

/// The confidential client the gateway uses (a Dex `staticClients` entry).
pub const CLIENT_ID: &str = "modelgate";
pub const CLIENT_SECRET: &str = "modelgate-secret";
/// The public client for the device flow (`modelgate login`).
pub const CLI_CLIENT_ID: &str = "modelgate-cli";
/// Static users: both have password `password`; `admin` is also in group `admins`.
pub const USER: &str = "user@example.com";
pub const ADMIN: &str = "admin@example.com";
pub const PASSWORD: &str = "password";

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects and form posts one login may take before we call it a loop.
const MAX_STEPS: usize = 30;

pub struct OidcProvider {
    child: Child,
    port: u16,
    /// Everything the provider wrote to stderr (one line per request), for failure messages.
    logs: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts the provider on a free loopback port and waits for its readiness line. Besides
    /// `redirect_uris`, the `modelgate` client accepts any `http://127.0.0.1:<port>/...`
    /// redirect, so the list may be empty.
    pub async fn start(redirect_uris: &[String]) -> OidcProvider {
        let dir = fixture_dir();
        super::install::oidc_packages(&dir);
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        let mut command = Command::new(&node);
        command
            .arg(dir.join("provider.mjs"))
            .args(["--port", "0", "--exit-with-stdin"]);
        for uri in redirect_uris {
            command.arg("--client-redirect").arg(uri);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{node} provider.mjs`: {e} (is Node 20+ on PATH?)"));

        // Both pipes are drained by threads for the provider's whole life, so it never blocks
        // on a full pipe; stderr is kept for failure messages.
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (ready, listening) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = ready.send(lines.next());
            lines.for_each(drop);
        });

        let line = tokio::time::timeout(START_TIMEOUT, listening).await;
        let port = match line {
            Ok(Ok(Some(ref line))) => line
                .strip_prefix("listening http://127.0.0.1:")
                .and_then(|rest| rest.strip_suffix("/dex"))
                .and_then(|port| port.parse::<u16>().ok()),
            _ => None,
        };
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            // The stderr thread ends at EOF, after the kill; give it a moment to catch up.
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "oidc provider did not report `listening` (waited up to {START_TIMEOUT:?}; stdout gave {line:?}); stderr:\n{}",
                logs.lock().unwrap()
            );
        };
        OidcProvider {
            child,
            port,
            logs,
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// `http://127.0.0.1:PORT/dex`, exactly as the ID tokens' `iss`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}/dex", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The provider's stderr so far: one line per request, errors, key rotations.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// A new cookie-jar client that does not follow redirects, as the helpers use.
    pub fn browser() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    /// Makes a fresh RS256 key the signing key (older keys stay published); returns its kid.
    pub async fn rotate(&self) -> String {
        let body = self.control(reqwest::Method::POST, "rotate", None).await;
        body["kid"].as_str().unwrap().to_owned()
    }

    /// From now on `/dex/keys` answers 503; everything else keeps working.
    pub async fn jwks_down(&self) {
        self.control(reqwest::Method::POST, "jwks/down", None).await;
    }

    pub async fn jwks_up(&self) {
        self.control(reqwest::Method::POST, "jwks/up", None).await;
    }

    /// A JWS over exactly `claims`, signed with the current signing key. `alg` defaults to
    /// RS256 and `kid` to the current key's; anything in `header` is kept as given, so
    /// `"alg": "none"` yields an unsigned token and `"alg": "HS256"` an HMAC keyed with the
    /// current RSA public key's PEM (algorithm confusion). ES256 uses the published EC key.
    pub async fn sign(&self, header: Value, claims: Value) -> String {
        let body = serde_json::json!({ "header": header, "claims": claims });
        let body = self
            .control(reqwest::Method::POST, "sign", Some(body))
            .await;
        body["token"].as_str().unwrap().to_owned()
    }

    /// The current signing key's public JWK (`kty`, `n`, `e`, `kid`, `alg`, `use`).
    pub async fn current_public_jwk(&self) -> Value {
        self.control(reqwest::Method::GET, "keys/current", None)
            .await
    }

    /// How many requests reached `/dex/keys` (503s while down included).
    pub async fn keys_fetches(&self) -> u64 {
        self.stats().await["keys_fetches"].as_u64().unwrap()
    }

    /// All counters: `keys_fetches`, `discovery_fetches`, `token_requests`, `userinfo_requests`.
    pub async fn stats(&self) -> Value {
        self.control(reqwest::Method::GET, "stats", None).await
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("http://127.0.0.1:{}/__test/{path}", self.port);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}\n{}", self.logs()));
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{url}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
    }

    /// A real ID token for `user`: the authorization-code flow with PKCE (S256), state and
    /// nonce, through the login form, for client `modelgate` and scopes
    /// `openid email profile groups offline_access`.
    pub async fn id_token(&self, user: &str, password: &str, redirect_uri: &str) -> String {
        let tokens = self.tokens(user, password, redirect_uri).await;
        tokens["id_token"].as_str().unwrap().to_owned()
    }

    /// Like [`OidcProvider::id_token`] but returns the whole token response (`id_token`,
    /// `access_token`, `refresh_token`, `expires_in`, ...).
    pub async fn tokens(&self, user: &str, password: &str, redirect_uri: &str) -> Value {
        let client = Self::browser();
        let (verifier, challenge) = pkce_pair();
        let (state, nonce) = (random_token(), random_token());
        let authorize = Url::parse_with_params(
            &format!("{}/auth", self.issuer()),
            [
                ("client_id", CLIENT_ID),
                ("response_type", "code"),
                ("scope", "openid email profile groups offline_access"),
                ("redirect_uri", redirect_uri),
                ("state", &state),
                ("nonce", &nonce),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        let location = self
            .login_via_form(&client, authorize.as_str(), user, password, redirect_uri)
            .await;
        let callback = Url::parse(&location).unwrap();
        let param = |name: &str| {
            callback
                .query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        assert_eq!(
            param("state").as_deref(),
            Some(state.as_str()),
            "{location}"
        );
        let code = param("code").unwrap_or_else(|| panic!("no code in {location}"));

        let url = format!("{}/token", self.issuer());
        let response = client
            .post(&url)
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{url}: {text}\n{}", self.logs());
        let tokens: Value = serde_json::from_str(&text).unwrap();
        let (_, claims) = decode_jwt(tokens["id_token"].as_str().unwrap());
        assert_eq!(claims["nonce"], nonce.as_str(), "nonce round trip");
        tokens
    }

    /// Approves a device-flow `user_code` as `user` through the verification pages at
    /// `/dex/device`: code form, confirmation, login form, success page.
    pub async fn approve_device(&self, user_code: &str, user: &str, password: &str) {
        let client = Self::browser();
        let start = Url::parse_with_params(
            &format!("{}/device", self.issuer()),
            [("user_code", user_code)],
        )
        .unwrap();
        match self
            .drive(&client, Step::Get(start.into()), user, password, None)
            .await
        {
            Outcome::Page(body) => assert!(
                body.contains("Login Successful"),
                "device approval for {user_code} did not succeed:\n{body}\n{}",
                self.logs()
            ),
            Outcome::Redirect(location) => {
                panic!("device approval ended in a redirect to {location}")
            }
        }
    }

    /// Follows `authorize_url` (typically the gateway's 302 to `/dex/auth?...`) with `client`,
    /// which must not follow redirects itself, fills the login form with `user`/`password`,
    /// submits any auto-submitting form, and stops at the first redirect whose Location starts
    /// with `stop_prefix`, returning that Location (absolute) without requesting it.
    pub async fn login_via_form(
        &self,
        client: &reqwest::Client,
        authorize_url: &str,
        user: &str,
        password: &str,
        stop_prefix: &str,
    ) -> String {
        let step = Step::Get(authorize_url.to_owned());
        match self
            .drive(client, step, user, password, Some(stop_prefix))
            .await
        {
            Outcome::Redirect(location) => location,
            Outcome::Page(body) => {
                panic!("login from {authorize_url} ended on a page, not a redirect to {stop_prefix}:\n{body}\n{}", self.logs())
            }
        }
    }

    /// The browser loop: follow redirects, fill a login form once, submit other forms as they
    /// are (their fields are hidden inputs), stop at `stop_prefix` or at a page without a form.
    async fn drive(
        &self,
        client: &reqwest::Client,
        mut step: Step,
        user: &str,
        password: &str,
        stop_prefix: Option<&str>,
    ) -> Outcome {
        let mut logged_in = false;
        for _ in 0..MAX_STEPS {
            let (url, request) = match &step {
                Step::Get(url) => (url.clone(), client.get(url)),
                Step::Post(url, fields) => (url.clone(), client.post(url).form(fields)),
            };
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}\n{}", self.logs()));
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("{url}: {status} without Location"));
                let location = Url::parse(&url)
                    .unwrap()
                    .join(location)
                    .unwrap()
                    .to_string();
                if stop_prefix.is_some_and(|prefix| location.starts_with(prefix)) {
                    return Outcome::Redirect(location);
                }
                step = Step::Get(location);
                continue;
            }
            let body = response.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{url}: {body}\n{}", self.logs());
            let Some(form) = Form::parse(&body) else {
                return Outcome::Page(body);
            };
            let action = Url::parse(&url)
                .unwrap()
                .join(&form.action)
                .unwrap()
                .to_string();
            let mut fields = form.fields;
            if fields.iter().any(|(name, _)| name == "password") {
                assert!(!logged_in, "login as {user} rejected:\n{body}");
                logged_in = true;
                for (name, value) in &mut fields {
                    match name.as_str() {
                        "login" => *value = user.to_owned(),
                        "password" => *value = password.to_owned(),
                        _ => {}
                    }
                }
            }
            step = Step::Post(action, fields);
        }
        panic!(
            "login did not finish within {MAX_STEPS} steps\n{}",
            self.logs()
        );
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Step {
    Get(String),
    Post(String, Vec<(String, String)>),
}

enum Outcome {
    Redirect(String),
    Page(String),
}

/// `<repo>/tests/oidc`; tests run with `CARGO_MANIFEST_DIR` = `<repo>/gateway`.
fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc")
}

/// The first `<form>` of a page: its action and its named `<input>`s, values unescaped.
/// Enough for the provider's own pages, which it renders itself; not a general HTML parser.
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

impl Form {
    fn parse(html: &str) -> Option<Form> {
        let start = html.find("<form")?;
        let end = html[start..]
            .find("</form>")
            .map_or(html.len(), |i| start + i);
        let form = &html[start..end];
        let open = &form[..form.find('>')?];
        let action = attribute(open, "action").unwrap_or_default();
        let mut fields = Vec::new();
        let mut rest = form;
        while let Some(i) = rest.find("<input") {
            rest = &rest[i + "<input".len()..];
            let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
            if let Some(name) = attribute(tag, "name") {
                fields.push((name, attribute(tag, "value").unwrap_or_default()));
            }
        }
        Some(Form { action, fields })
    }
}

/// The value of attribute `name` in a tag's text (quoted with " or '), HTML-unescaped.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut search = tag;
    loop {
        let i = search.find(name)?;
        let before = search[..i].chars().last();
        let after = &search[i + name.len()..];
        search = after;
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let Some(after) = after.trim_start().strip_prefix('=') else {
            continue;
        };
        let after = after.trim_start();
        let quote = after.chars().next()?;
        if quote != '"' && quote != '\'' {
            continue;
        }
        let value = &after[1..];
        let value = &value[..value.find(quote)?];
        return Some(unescape_html(value));
    }
}

fn unescape_html(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The (header, claims) of a compact JWS, without checking anything.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let part = parts.next().unwrap_or_else(|| panic!("not a JWT: {token}"));
        let bytes = base64url_decode(part).unwrap_or_else(|| panic!("bad base64url in {token}"));
        serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|e| panic!("{e} in {token}"))
    };
    (next(), next())
}

/// A PKCE `(code_verifier, code_challenge)` pair for method S256 (RFC 7636).
pub fn pkce_pair() -> (String, String) {
    let verifier = format!("{}{}", random_token(), random_token());
    let challenge = pkce_challenge(&verifier);
    (verifier, challenge)
}

pub fn pkce_challenge(verifier: &str) -> String {
    base64url_encode(&sha256(verifier.as_bytes()))
}

/// 22 characters of unpredictable base64url (128 bits from the std hasher's random keys).
pub fn random_token() -> String {
    let mut bytes = Vec::with_capacity(16);
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        bytes.extend_from_slice(&hasher.finish().to_le_bytes());
    }
    base64url_encode(&bytes)
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 section 5), as JOSE and PKCE use it.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = B64URL.iter().position(|&b| b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// SHA-256 (FIPS 180-4), for the PKCE challenge: the test crate has no hashing dependency.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}
