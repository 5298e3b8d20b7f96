//! The HTTP calls to the OpenID Connect provider (Dex, or any OIDC provider): discovery, the
//! JWKS, the authorization-code exchange with PKCE, and the device authorization grant. The only
//! network code in `auth`.
//!
//! openidconnect does discovery (its typed metadata, issuer check and JSON rules), the code
//! exchange and the device authorization request (typed responses, client_secret_basic with
//! RFC 6749's form-encoding of the credentials). Two calls are plain reqwest, each saying why:
//! the JWKS fetch (our own [`Jwks`] parser keeps only the keys `jwt` accepts) and the device-token
//! polling loop.
//!
//! Errors are strings that say which call failed and why; they never contain the client secret
//! (the secret only ever travels in an `Authorization` header, which no error message includes).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreDeviceAuthorizationResponse, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret, DeviceAuthorizationUrl,
    IssuerUrl, JsonWebKeySet, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::jwt::Jwks;

/// A JWKS larger than this is refused (Dex publishes two or three keys, a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What we use from the provider's discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    /// RP-initiated logout (absent from Dex; present in most other providers).
    pub end_session_endpoint: Option<String>,
    /// RFC 8628 device authorization (Dex: `{issuer}/device/code`).
    pub device_authorization_endpoint: Option<String>,
}

/// The two discovery fields openidconnect's core metadata does not type.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct ExtraMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_session_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_authorization_endpoint: Option<String>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type DiscoveredMetadata = openidconnect::ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The client for every provider call: rustls, connect timeout 5 s, whole-request timeout 10 s,
/// and no redirects (a token endpoint that redirects would replay the code and credentials to
/// wherever it points; openidconnect recommends the same against SSRF).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("modelgate/", env!("CARGO_PKG_VERSION")))
        .build()
        // Only fails if the TLS backend cannot initialise, which no configuration can cause.
        .expect("the rustls HTTP client builds")
}

/// An error and its sources, one line: openidconnect's top-level messages ("Request failed")
/// only make sense with their causes.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !out.contains(&cause_text) {
            out.push_str(": ");
            out.push_str(&cause_text);
        }
        source = cause.source();
    }
    out
}

/// A token-endpoint failure: the provider's `error: description` when it sent one, else the cause.
fn token_error<RE, TE>(what: &str, err: RequestTokenError<RE, TE>) -> String
where
    RE: std::error::Error + 'static,
    TE: openidconnect::ErrorResponse + 'static,
{
    match err {
        RequestTokenError::ServerResponse(response) => format!("{what}: provider said {response}"),
        RequestTokenError::Request(e) => format!("{what}: {}", error_chain(&e)),
        RequestTokenError::Parse(e, _body) => {
            format!("{what}: unreadable response: {}", error_chain(&e))
        }
        RequestTokenError::Other(message) => format!("{what}: {message}"),
    }
}

/// GET `{issuer}/.well-known/openid-configuration`; the document's issuer must equal `issuer`
/// exactly. openidconnect also fetches the JWKS once here, so a provider whose keys are
/// unreachable is not reported as discovered.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<ProviderMetadata, String> {
    let issuer_url =
        IssuerUrl::new(issuer.to_string()).map_err(|e| format!("issuer {issuer:?}: {e}"))?;
    let doc = DiscoveredMetadata::discover_async(issuer_url, http)
        .await
        .map_err(|e| format!("OIDC discovery for {issuer}: {}", error_chain(&e)))?;
    // openidconnect compares issuers too; this makes "exactly" independent of its URL type.
    if doc.issuer().as_str() != issuer {
        return Err(format!(
            "OIDC discovery for {issuer}: document names issuer {:?}",
            doc.issuer().as_str()
        ));
    }
    let token_endpoint = doc
        .token_endpoint()
        .ok_or_else(|| format!("OIDC discovery for {issuer}: no token_endpoint"))?;
    let extra = doc.additional_metadata();
    Ok(ProviderMetadata {
        issuer: issuer.to_string(),
        authorization_endpoint: doc.authorization_endpoint().as_str().to_string(),
        token_endpoint: token_endpoint.as_str().to_string(),
        jwks_uri: doc.jwks_uri().as_str().to_string(),
        end_session_endpoint: extra.end_session_endpoint.clone(),
        device_authorization_endpoint: extra.device_authorization_endpoint.clone(),
    })
}

/// GET the JWKS. Plain reqwest rather than openidconnect's `JsonWebKeySet::fetch_async`: our
/// [`Jwks::parse`] is what decides which keys `jwt::verify` may use, and it should see the
/// document exactly as published (openidconnect would also insist on a JSON content type).
pub async fn fetch_jwks(http: &reqwest::Client, jwks_uri: &str) -> Result<Jwks, String> {
    fetch_jwks_as(http, jwks_uri, None).await
}

/// [`fetch_jwks`] with a bearer token (the Kubernetes API server's JWKS needs one unless it
/// lets anonymous requests read it).
pub async fn fetch_jwks_as(
    http: &reqwest::Client,
    jwks_uri: &str,
    bearer: Option<&str>,
) -> Result<Jwks, String> {
    let what = format!("JWKS {jwks_uri}");
    let body = get_small_json(http, jwks_uri, bearer, &what).await?;
    Jwks::parse(&body).map_err(|e| format!("{what}: {e}"))
}

/// The body of a GET for a small JSON document (at most `MAX_JWKS_BYTES`, checked before and
/// while reading), with an optional bearer token; errors start with `what`.
async fn get_small_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut request = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{what}: {}", error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{what}: HTTP {status}"));
    }
    let too_large = || format!("{what}: larger than {MAX_JWKS_BYTES} bytes");
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(too_large());
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{what}: {}", error_chain(&e)))?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(too_large());
    }
    Ok(body.to_vec())
}

/// The Kubernetes API server's service-account issuer discovery
/// (`{base}/.well-known/openid-configuration`): its `jwks_uri`, after checking that the document
/// names `issuer` exactly. Read by hand rather than through openidconnect, whose provider
/// metadata requires an authorization endpoint, which the API server's document does not have.
pub async fn kubernetes_jwks_uri(
    http: &reqwest::Client,
    base: &str,
    issuer: &str,
    bearer: Option<&str>,
) -> Result<String, String> {
    let url = format!("{base}/.well-known/openid-configuration");
    let what = format!("discovery {url}");
    let body = get_small_json(http, &url, bearer, &what).await?;
    #[derive(serde::Deserialize)]
    struct Doc {
        issuer: String,
        jwks_uri: String,
    }
    let doc: Doc = serde_json::from_slice(&body).map_err(|e| format!("{what}: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!(
            "{what}: document names issuer {:?}, not {issuer:?}",
            doc.issuer
        ));
    }
    Ok(doc.jwks_uri)
}

/// An openidconnect client for the token endpoint, with the secret if there is one (sent as
/// client_secret_basic, openidconnect's default).
fn oidc_client(
    meta: &ProviderMetadata,
    client_id: &str,
    client_secret: Option<&str>,
) -> Result<
    CoreClient<
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
    >,
    String,
> {
    let issuer = IssuerUrl::new(meta.issuer.clone())
        .map_err(|e| format!("issuer {:?}: {e}", meta.issuer))?;
    let token_url = TokenUrl::new(meta.token_endpoint.clone())
        .map_err(|e| format!("token endpoint {:?}: {e}", meta.token_endpoint))?;
    let client = CoreClient::new(
        ClientId::new(client_id.to_string()),
        issuer,
        JsonWebKeySet::default(),
    )
    .set_token_uri(token_url);
    Ok(match client_secret {
        Some(secret) => client.set_client_secret(ClientSecret::new(secret.to_string())),
        None => client,
    })
}

/// Authorization-code exchange with the PKCE verifier; client_secret_basic. Returns the raw
/// id_token, which the caller verifies with [`crate::jwt`] (openidconnect only checks that it is a
/// well-formed JWT here).
pub async fn exchange_code(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    client_secret: Option<&str>,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<String, String> {
    let what = format!("code exchange at {}", meta.token_endpoint);
    let client = oidc_client(meta, client_id, client_secret)?;
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|e| format!("{what}: redirect URI {redirect_uri:?}: {e}"))?;
    let response = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
        .set_redirect_uri(Cow::Owned(redirect))
        .request_async(http)
        .await
        .map_err(|e| token_error(&what, e))?;
    response
        .extra_fields()
        .id_token()
        .map(|token| token.to_string())
        .ok_or_else(|| {
            format!("{what}: the response has no id_token (is the openid scope requested?)")
        })
}

/// What the device authorization endpoint answered: show `user_code` and `verification_uri`
/// (or `verification_uri_complete`) to the user, then [`poll_device_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    /// Seconds between polls (RFC 8628 default 5 when the provider omits it).
    pub interval: u64,
    /// Seconds until `device_code` expires.
    pub expires_in: u64,
}

/// Starts the device authorization grant (RFC 8628 §3.1). `openid` is always requested (added
/// by openidconnect); `scopes` adds to it.
pub async fn device_authorize(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    client_secret: Option<&str>,
    scopes: &[String],
) -> Result<DeviceAuthorization, String> {
    let endpoint = meta
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| {
            format!(
                "device authorization: {} publishes no device_authorization_endpoint",
                meta.issuer
            )
        })?;
    let what = format!("device authorization at {endpoint}");
    let url =
        DeviceAuthorizationUrl::new(endpoint.to_string()).map_err(|e| format!("{what}: {e}"))?;
    let client = oidc_client(meta, client_id, client_secret)?.set_device_authorization_url(url);
    let response: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(
            scopes
                .iter()
                .filter(|s| s.as_str() != "openid")
                .map(|s| Scope::new(s.clone())),
        )
        .request_async(http)
        .await
        .map_err(|e| token_error(&what, e))?;
    Ok(DeviceAuthorization {
        device_code: response.device_code().secret().clone(),
        user_code: response.user_code().secret().clone(),
        verification_uri: response.verification_uri().as_str().to_string(),
        verification_uri_complete: response
            .verification_uri_complete()
            .map(|uri| uri.secret().clone()),
        interval: response.interval().as_secs(),
        expires_in: response.expires_in().as_secs(),
    })
}

/// The token endpoint's answer to one device-code poll.
#[derive(Deserialize)]
struct PollResponse {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// RFC 6749 §2.3.1: client_secret_basic form-encodes id and secret before base64 (as
/// openidconnect does for the other calls).
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Polls the token endpoint (RFC 8628 §3.4–3.5): `authorization_pending` → wait `interval`;
/// `slow_down` → `interval` + 5 s from then on; `expired_token`, `access_denied` or any other
/// error → give up. Returns the raw id_token, or an error once waiting again would pass
/// `deadline`.
///
/// Plain reqwest rather than openidconnect's `exchange_device_access_token`: that loop wants the
/// library's own response type back (we hand [`DeviceAuthorization`] across crates as plain
/// data), measures its own timeout instead of our deadline, and hides the pending/slow_down
/// decisions that this function is the place to show and test.
pub async fn poll_device_token(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    client_secret: Option<&str>,
    device: &DeviceAuthorization,
    deadline: Instant,
) -> Result<String, String> {
    let what = format!("device token poll at {}", meta.token_endpoint);
    // Never spin: a provider answering interval 0 still gets one poll a second.
    let mut interval = device.interval.max(1);
    loop {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", DEVICE_CODE_GRANT)
            .append_pair("device_code", &device.device_code);
        let mut request = http
            .post(&meta.token_endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        match client_secret {
            Some(secret) => {
                request = request.basic_auth(form_encode(client_id), Some(form_encode(secret)));
            }
            None => {
                form.append_pair("client_id", client_id);
            }
        }
        let response = request
            .body(form.finish())
            .send()
            .await
            .map_err(|e| format!("{what}: {}", error_chain(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{what}: {}", error_chain(&e)))?;
        let parsed: PollResponse = serde_json::from_slice(&body)
            .map_err(|e| format!("{what}: HTTP {status}, unreadable response: {e}"))?;

        if status.is_success() {
            return parsed.id_token.ok_or_else(|| {
                format!("{what}: the response has no id_token (is the openid scope requested?)")
            });
        }
        let error = parsed.error.unwrap_or_default();
        let detail = parsed
            .error_description
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        match error.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += 5,
            "expired_token" => {
                return Err(format!(
                    "{what}: the device code expired before the user approved it{detail}"
                ))
            }
            "access_denied" => return Err(format!("{what}: the user denied the request{detail}")),
            "" => return Err(format!("{what}: HTTP {status} without an error code")),
            other => return Err(format!("{what}: provider said {other}{detail}")),
        }

        match next_poll(Instant::now(), deadline, Duration::from_secs(interval)) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => {
                return Err(format!(
                    "{what}: gave up at the deadline, the user has not approved yet"
                ))
            }
        }
    }
}

/// How long to wait before the next poll: the interval, cut short at the deadline so that the
/// last poll happens at the deadline (the user gets the whole `--timeout`); `None` once the
/// deadline has passed.
fn next_poll(now: Instant, deadline: Instant, interval: Duration) -> Option<Duration> {
    (now < deadline).then(|| interval.min(deadline - now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use serde_json::json;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    const SECRET: &str = "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok";

    /// The device poll waits the interval, but never past the deadline, and polls once more at
    /// it: a 3 s timeout with a 5 s interval gives up at 3 s, not at once; 12 s at 12, not 10.
    #[test]
    fn polls_until_the_deadline() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(next_poll(t0, t0 + s(3), s(5)), Some(s(3)));
        assert_eq!(next_poll(t0 + s(3), t0 + s(3), s(5)), None);
        let mut now = t0;
        let mut polls = vec![0];
        while let Some(wait) = next_poll(now, t0 + s(12), s(5)) {
            now += wait;
            polls.push((now - t0).as_secs());
        }
        assert_eq!(polls, [0, 5, 10, 12]);
    }

    #[derive(Debug, Clone)]
    struct Recorded {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn form(&self) -> Vec<(String, String)> {
            url::form_urlencoded::parse(self.body.as_bytes())
                .into_owned()
                .collect()
        }
    }

    type Handler = dyn Fn(&Recorded, &str) -> (u16, String) + Send + Sync;

    /// A one-request-per-connection HTTP/1.1 server on 127.0.0.1:0 answering canned JSON.
    struct Server {
        base: String,
        requests: Arc<Mutex<Vec<Recorded>>>,
    }

    impl Server {
        fn requests(&self) -> Vec<Recorded> {
            self.requests.lock().unwrap().clone()
        }
    }

    async fn serve(
        handler: impl Fn(&Recorded, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (task_base, task_requests) = (base.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (base, requests, handler) =
                    (task_base.clone(), task_requests.clone(), handler.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    requests.lock().unwrap().push(request.clone());
                    let (status, body) = handler(&request, &base);
                    let response = format!(
                        "HTTP/1.1 {status} Canned\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Server { base, requests }
    }

    async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Recorded> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
        Some(Recorded {
            method,
            path,
            headers,
            body,
        })
    }

    /// Dex's discovery document (v2.4x), with the issuer at `{base}/dex`.
    fn dex_discovery(issuer: &str) -> String {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/keys"),
            "userinfo_endpoint": format!("{issuer}/userinfo"),
            "device_authorization_endpoint": format!("{issuer}/device/code"),
            "introspection_endpoint": format!("{issuer}/token/introspect"),
            "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "scopes_supported": ["openid", "email", "groups", "profile", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["iss", "sub", "aud", "iat", "exp", "email", "email_verified", "locale", "name", "preferred_username", "at_hash"]
        })
        .to_string()
    }

    /// A Dex-shaped JWKS: one RSA signing key plus one key we do not use.
    fn dex_jwks() -> String {
        json!({"keys": [
            {"use": "sig", "kty": "RSA", "kid": "a1b2c3", "alg": "RS256",
             "n": URL_SAFE_NO_PAD.encode([0xc5u8; 256]), "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
        ]})
        .to_string()
    }

    /// A well-formed (unsigned for our purposes) ID token, as the token endpoint returns it.
    fn id_token(issuer: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"a1b2c3"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            json!({"iss": issuer, "sub": "Cg0wLTM4NS0yODA4OS0wEgRtb2Nr", "aud": "kubeflow-oidc-authservice",
                   "exp": 4_000_000_000u64, "iat": 1_700_000_000u64, "email": "user@example.com"})
            .to_string(),
        );
        format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]))
    }

    fn metadata(base: &str) -> ProviderMetadata {
        let issuer = format!("{base}/dex");
        ProviderMetadata {
            authorization_endpoint: format!("{issuer}/auth"),
            token_endpoint: format!("{issuer}/token"),
            jwks_uri: format!("{issuer}/keys"),
            end_session_endpoint: None,
            device_authorization_endpoint: Some(format!("{issuer}/device/code")),
            issuer,
        }
    }

    fn dex_routes(req: &Recorded, base: &str) -> (u16, String) {
        match req.path.as_str() {
            "/dex/.well-known/openid-configuration" => (200, dex_discovery(&format!("{base}/dex"))),
            "/dex/keys" => (200, dex_jwks()),
            _ => (404, r#"{"error":"not_found"}"#.into()),
        }
    }

    /// Discovery reads the endpoints (including the device endpoint) from Dex's document.
    #[tokio::test]
    async fn discovery_ok() {
        let server = serve(dex_routes).await;
        let issuer = format!("{}/dex", server.base);
        let meta = discover(&http_client(), &issuer).await.unwrap();
        assert_eq!(meta, metadata(&server.base));
        let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
        assert!(paths.contains(&"/dex/.well-known/openid-configuration".to_string()));
    }

    /// A document naming another issuer (even one differing by a trailing slash) is refused.
    #[tokio::test]
    async fn discovery_issuer_mismatch() {
        let server = serve(|req, base| match req.path.as_str() {
            "/dex/.well-known/openid-configuration" => {
                (200, dex_discovery("https://evil.example.com/dex"))
            }
            _ => dex_routes(req, base),
        })
        .await;
        let err = discover(&http_client(), &format!("{}/dex", server.base))
            .await
            .unwrap_err();
        assert!(
            err.contains("unexpected issuer") && err.contains("evil.example.com"),
            "{err}"
        );

        let server = serve(dex_routes).await;
        let err = discover(&http_client(), &format!("{}/dex/", server.base))
            .await
            .unwrap_err();
        assert!(err.contains("unexpected issuer"), "{err}");
    }

    /// A provider that is down or answers with an error page is a discovery error naming the issuer.
    #[tokio::test]
    async fn discovery_http_error() {
        let server = serve(|_, _| (503, r#"{"error":"unavailable"}"#.into())).await;
        let issuer = format!("{}/dex", server.base);
        let err = discover(&http_client(), &issuer).await.unwrap_err();
        assert!(err.contains(&issuer) && err.contains("503"), "{err}");
    }

    /// The JWKS is parsed with our rules (the oct key is skipped); HTTP errors are reported.
    #[tokio::test]
    async fn jwks_fetch_and_parse() {
        let server = serve(|req, base| match req.path.as_str() {
            "/broken" => (500, "{}".into()),
            "/html" => (200, "<html></html>".into()),
            _ => dex_routes(req, base),
        })
        .await;
        let http = http_client();
        let keys = fetch_jwks(&http, &format!("{}/dex/keys", server.base))
            .await
            .unwrap();
        assert_eq!(keys.kids(), vec!["a1b2c3".to_string()]);
        let err = fetch_jwks(&http, &format!("{}/broken", server.base))
            .await
            .unwrap_err();
        assert!(err.contains("500"), "{err}");
        let err = fetch_jwks(&http, &format!("{}/html", server.base))
            .await
            .unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

    /// The code exchange posts code, PKCE verifier and redirect URI with client_secret_basic, and
    /// returns the id_token exactly as sent.
    #[tokio::test]
    async fn code_exchange_success() {
        let server = serve(|req, base| match req.path.as_str() {
            "/dex/token" => (
                200,
                json!({"access_token": "at", "token_type": "bearer", "expires_in": 86399,
                       "id_token": id_token(&format!("{base}/dex"))})
                .to_string(),
            ),
            _ => dex_routes(req, base),
        })
        .await;
        let meta = metadata(&server.base);
        let token = exchange_code(
            &http_client(),
            &meta,
            "kubeflow-oidc-authservice",
            Some(SECRET),
            "the-code",
            "the-verifier-0123456789012345678901234567890123",
            "https://kubeflow.example.com/authservice/oidc/callback",
        )
        .await
        .unwrap();
        assert_eq!(token, id_token(&meta.issuer));

        let req = server
            .requests()
            .into_iter()
            .find(|r| r.path == "/dex/token")
            .unwrap();
        assert_eq!(req.method, "POST");
        let basic = STANDARD.encode(format!("kubeflow-oidc-authservice:{SECRET}"));
        assert_eq!(
            req.header("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        let form = req.form();
        for (name, value) in [
            ("grant_type", "authorization_code"),
            ("code", "the-code"),
            (
                "code_verifier",
                "the-verifier-0123456789012345678901234567890123",
            ),
            (
                "redirect_uri",
                "https://kubeflow.example.com/authservice/oidc/callback",
            ),
        ] {
            assert!(
                form.contains(&(name.to_string(), value.to_string())),
                "{name} in {form:?}"
            );
        }
        assert!(!req.body.contains(SECRET));
    }

    /// A token-endpoint error JSON becomes an error naming the endpoint and the provider's
    /// error code, never the secret.
    #[tokio::test]
    async fn code_exchange_error_json() {
        let server = serve(|req, base| match req.path.as_str() {
            "/dex/token" => (
                400,
                json!({"error": "invalid_grant", "error_description": "Invalid or expired code parameter."})
                    .to_string(),
            ),
            _ => dex_routes(req, base),
        })
        .await;
        let meta = metadata(&server.base);
        let err = exchange_code(
            &http_client(),
            &meta,
            "client",
            Some(SECRET),
            "c",
            "v",
            "https://x/cb",
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("invalid_grant") && err.contains(&meta.token_endpoint),
            "{err}"
        );
        assert!(!err.contains(SECRET));
    }

    /// A success response without id_token (no openid scope) is an error.
    #[tokio::test]
    async fn code_exchange_without_id_token() {
        let server =
            serve(|_, _| (200, r#"{"access_token":"at","token_type":"bearer"}"#.into())).await;
        let err = exchange_code(
            &http_client(),
            &metadata(&server.base),
            "client",
            None,
            "c",
            "v",
            "https://x/cb",
        )
        .await
        .unwrap_err();
        assert!(err.contains("id_token"), "{err}");
    }

    /// A canned token endpoint that answers the device-code polls in order.
    fn device_routes(
        polls: Vec<(u16, String)>,
    ) -> impl Fn(&Recorded, &str) -> (u16, String) + Send + Sync + 'static {
        let polls = Mutex::new(VecDeque::from(polls));
        move |req, base| {
            match req.path.as_str() {
            "/dex/device/code" => (
                200,
                json!({"device_code": "dc-123", "user_code": "ABCD-EFGH",
                       "verification_uri": format!("{base}/dex/device"),
                       "verification_uri_complete": format!("{base}/dex/device?user_code=ABCD-EFGH"),
                       "expires_in": 300, "interval": 1})
                .to_string(),
            ),
            "/dex/token" => polls
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((500, r#"{"error":"server_error"}"#.into())),
            _ => dex_routes(req, base),
        }
        }
    }

    fn pending() -> (u16, String) {
        (400, r#"{"error":"authorization_pending"}"#.into())
    }

    fn tokens(base: &str) -> (u16, String) {
        (
            200,
            json!({"access_token": "at", "token_type": "bearer", "id_token": id_token(&format!("{base}/dex"))})
                .to_string(),
        )
    }

    /// Device flow: authorize, then pending → success returns the id_token after one interval.
    #[tokio::test]
    async fn device_flow_pending_then_success() {
        let server = serve_device(|base| vec![pending(), tokens(base)]).await;
        let meta = metadata(&server.base);
        let http = http_client();
        let scopes = vec![
            "openid".to_string(),
            "email".to_string(),
            "groups".to_string(),
        ];
        let device = device_authorize(&http, &meta, "kubeflow-cli", Some(SECRET), &scopes)
            .await
            .unwrap();
        assert_eq!(
            device,
            DeviceAuthorization {
                device_code: "dc-123".into(),
                user_code: "ABCD-EFGH".into(),
                verification_uri: format!("{}/dex/device", server.base),
                verification_uri_complete: Some(format!(
                    "{}/dex/device?user_code=ABCD-EFGH",
                    server.base
                )),
                interval: 1,
                expires_in: 300,
            }
        );
        let start = Instant::now();
        let token = poll_device_token(
            &http,
            &meta,
            "kubeflow-cli",
            Some(SECRET),
            &device,
            start + Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(token, id_token(&meta.issuer));
        assert!(start.elapsed() >= Duration::from_secs(1));

        let requests = server.requests();
        let auth = requests
            .iter()
            .find(|r| r.path == "/dex/device/code")
            .unwrap();
        let scope = auth
            .form()
            .into_iter()
            .find(|(n, _)| n == "scope")
            .unwrap()
            .1;
        assert_eq!(scope, "openid email groups");
        let polls: Vec<&Recorded> = requests.iter().filter(|r| r.path == "/dex/token").collect();
        assert_eq!(polls.len(), 2);
        let form = polls[0].form();
        assert!(form.contains(&("grant_type".into(), DEVICE_CODE_GRANT.into())));
        assert!(form.contains(&("device_code".into(), "dc-123".into())));
        assert!(polls[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic "));
    }

    /// A server whose token endpoint answers the given polls in order (built once per server).
    async fn serve_device(polls: impl FnOnce(&str) -> Vec<(u16, String)>) -> Server {
        let queue: Arc<Mutex<Option<Box<Handler>>>> = Arc::new(Mutex::new(None));
        let q = queue.clone();
        let server = serve(move |req, base| {
            let guard = q.lock().unwrap();
            (guard.as_ref().unwrap())(req, base)
        })
        .await;
        *queue.lock().unwrap() = Some(Box::new(device_routes(polls(&server.base))));
        server
    }

    /// slow_down adds 5 s to the interval before the next poll.
    #[tokio::test]
    async fn device_flow_slow_down() {
        let server =
            serve_device(|base| vec![(400, r#"{"error":"slow_down"}"#.into()), tokens(base)]).await;
        let meta = metadata(&server.base);
        let device = DeviceAuthorization {
            device_code: "dc-123".into(),
            user_code: "ABCD-EFGH".into(),
            verification_uri: String::new(),
            verification_uri_complete: None,
            interval: 1,
            expires_in: 300,
        };
        let start = Instant::now();
        let token = poll_device_token(
            &http_client(),
            &meta,
            "cli",
            None,
            &device,
            start + Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(token, id_token(&meta.issuer));
        assert!(
            start.elapsed() >= Duration::from_secs(6),
            "{:?}",
            start.elapsed()
        );
        // A public client sends its id in the form, and no Authorization header.
        let poll = server
            .requests()
            .into_iter()
            .find(|r| r.path == "/dex/token")
            .unwrap();
        assert!(poll.form().contains(&("client_id".into(), "cli".into())));
        assert_eq!(poll.header("authorization"), None);
    }

    /// expired_token and access_denied end the flow with an error at once.
    #[tokio::test]
    async fn device_flow_expired_and_denied() {
        for (code, expect) in [("expired_token", "expired"), ("access_denied", "denied")] {
            let server = serve_device(|_| vec![(400, json!({"error": code}).to_string())]).await;
            let device = DeviceAuthorization {
                device_code: "dc".into(),
                user_code: "U".into(),
                verification_uri: String::new(),
                verification_uri_complete: None,
                interval: 1,
                expires_in: 300,
            };
            let start = Instant::now();
            let err = poll_device_token(
                &http_client(),
                &metadata(&server.base),
                "cli",
                Some(SECRET),
                &device,
                start + Duration::from_secs(30),
            )
            .await
            .unwrap_err();
            assert!(err.contains(expect), "{err}");
            assert!(!err.contains(SECRET));
            assert!(start.elapsed() < Duration::from_secs(1));
        }
    }

    /// Polling goes on until the deadline, polls once more at it, and only then gives up: the
    /// user gets the whole timeout (it used to give up as soon as the next interval would pass
    /// the deadline, 0.5 s early here and at once for a timeout shorter than the interval).
    #[tokio::test]
    async fn device_flow_deadline() {
        let server = serve_device(|_| vec![pending(), pending(), pending(), pending()]).await;
        let device = DeviceAuthorization {
            device_code: "dc".into(),
            user_code: "U".into(),
            verification_uri: String::new(),
            verification_uri_complete: None,
            interval: 1,
            expires_in: 300,
        };
        let start = Instant::now();
        let err = poll_device_token(
            &http_client(),
            &metadata(&server.base),
            "cli",
            None,
            &device,
            start + Duration::from_millis(1500),
        )
        .await
        .unwrap_err();
        assert!(err.contains("deadline"), "{err}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_millis(3000),
            "{took:?}"
        );
        assert_eq!(server.requests().len(), 3, "polls at 0, 1 and 1.5 s");
    }

    /// Device authorization without a published endpoint is an error, not a request.
    #[tokio::test]
    async fn device_authorize_needs_endpoint() {
        let meta = ProviderMetadata {
            device_authorization_endpoint: None,
            ..metadata("http://127.0.0.1:9")
        };
        let err = device_authorize(&http_client(), &meta, "cli", None, &[])
            .await
            .unwrap_err();
        assert!(err.contains("device_authorization_endpoint"), "{err}");
    }
}
