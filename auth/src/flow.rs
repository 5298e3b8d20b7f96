//! The browser login flow (authorization code with PKCE, state and nonce), the callback checks
//! and the logout redirect, as pure functions: randomness and the clock are passed in, the
//! network calls (code exchange, ID-token verification) belong to the caller.
//!
//! Unlike oidc-authservice, which kept the state in its BoltDB (one replica only) under one
//! fixed cookie name, the state lives sealed in its own cookie, named after the state so several
//! tabs can log in at once, scoped to the callback path and gone after ten minutes.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::form_urlencoded;

use crate::config::AuthSettings;
use crate::session::{
    clear_cookie, cookie_header, cookie_value, session_cookie, Identity, Session, SessionCodec,
};

/// How long a login may take between the redirect to the provider and the callback.
pub const STATE_TTL_SECS: u64 = 600;

/// Longest return_to kept; longer ones become "/" (cookies are limited to ~4 KiB).
const MAX_RETURN_TO: usize = 2048;

/// What the gateway answers to a browser that must log in: 302 to `location`, with `set_cookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStart {
    pub location: String,
    pub set_cookie: String,
}

/// What the state cookie holds, sealed under the state cookie's own name.
#[derive(Serialize, Deserialize)]
struct PendingState {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    expires_at: u64,
}

/// The name of the state cookie for one login: `{cookie_name}_state_{first 8 chars of state}`.
pub fn state_cookie_name(cookie_name: &str, state: &str) -> String {
    let prefix: String = state.chars().take(8).collect();
    format!("{cookie_name}_state_{prefix}")
}

/// `random` must be 64 fresh random bytes (the caller owns randomness): state (16), nonce (16),
/// PKCE verifier (32).
/// The state cookie is named `{cookie_name}_state_{first 8 chars of state}` so several tabs can
/// log in at once, Path=`redirect_path`, Max-Age 600, HttpOnly, SameSite=Lax, Secure as asked;
/// it holds the sealed {state, nonce, verifier, return_to, expires_at}.
/// `authorization_endpoint` is settings.authorization_url if set, else the discovered one;
/// `redirect_uri` is absolute (the gateway builds it from scheme + Host + redirect_path). Query:
/// response_type=code, client_id, redirect_uri, scope, state, nonce, code_challenge (S256),
/// code_challenge_method=S256.
#[allow(clippy::too_many_arguments)]
pub fn start_login(
    settings: &AuthSettings,
    codec: &SessionCodec,
    authorization_endpoint: &str,
    redirect_uri: &str,
    return_to: &str,
    secure: bool,
    now: u64,
    random: &[u8; 64],
) -> LoginStart {
    let state = URL_SAFE_NO_PAD.encode(&random[..16]);
    let nonce = URL_SAFE_NO_PAD.encode(&random[16..32]);
    let verifier = URL_SAFE_NO_PAD.encode(&random[32..]);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));

    let name = state_cookie_name(&settings.cookie_name, &state);
    let pending = PendingState {
        state: state.clone(),
        nonce: nonce.clone(),
        verifier,
        return_to: safe_return_to(return_to),
        expires_at: now + STATE_TTL_SECS,
    };
    let sealed = codec.seal(&name, &serde_json::to_vec(&pending).unwrap_or_default());
    let set_cookie = cookie_header(
        &name,
        &sealed,
        &settings.redirect_path,
        STATE_TTL_SECS,
        secure,
    );

    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &settings.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    LoginStart {
        location: append_query(authorization_endpoint, &query),
        set_cookie,
    }
}

/// `base?query`, or `base&query` when `base` already has a query.
fn append_query(base: &str, query: &str) -> String {
    let sep = if base.ends_with(['?', '&']) {
        ""
    } else if base.contains('?') {
        "&"
    } else {
        "?"
    };
    format!("{base}{sep}{query}")
}

/// A checked callback: the caller exchanges `code` (with `verifier`), verifies the ID token's
/// `nonce`, sets the session cookie, clears the state cookie and redirects to `return_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCallback {
    pub code: String,
    pub verifier: String,
    pub nonce: String,
    pub return_to: String,
    pub clear_state_cookie: String,
}

/// Why a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowError {
    /// The provider answered with `error` (e.g. access_denied); text sanitised for display.
    Provider {
        error: String,
        description: Option<String>,
    },
    /// A callback parameter appeared more than once.
    DuplicateParameter(&'static str),
    MissingState,
    /// The state parameter is not one this gateway could have issued.
    MalformedState,
    MissingCode,
    /// No state cookie for this state: another browser, cookies blocked, or already used.
    MissingStateCookie,
    /// The state cookie does not open: forged, tampered, or sealed with a retired key.
    InvalidStateCookie,
    /// The login took longer than [`STATE_TTL_SECS`].
    StateExpired,
    /// The state parameter differs from the one in the cookie: possible CSRF.
    StateMismatch,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The description is the provider's free text: logged (Debug), never shown, so a
            // provider cannot put words or its internals into the gateway's answer.
            FlowError::Provider { error, .. } => {
                write!(f, "the identity provider returned {error}")
            }
            FlowError::DuplicateParameter(p) => {
                write!(f, "callback parameter {p} appears more than once")
            }
            FlowError::MissingState => f.write_str("missing url parameter: state"),
            FlowError::MalformedState => f.write_str("malformed url parameter: state"),
            FlowError::MissingCode => f.write_str("missing url parameter: code"),
            FlowError::MissingStateCookie => f.write_str(
                "no login in progress for this state (missing state cookie); start again",
            ),
            FlowError::InvalidStateCookie => f.write_str("invalid state cookie"),
            FlowError::StateExpired => f.write_str("the login took too long; start again"),
            FlowError::StateMismatch => {
                f.write_str("state parameter does not match the state cookie; possible CSRF")
            }
        }
    }
}

impl std::error::Error for FlowError {}

/// Provider-supplied text shown back to the user: printable ASCII only, at most 200 characters.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

/// Equality that does not stop at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the callback's query (state, code; an `error` from the provider is an error) against
/// the state cookie from the Cookie header: missing, expired, mismatched or forged state → Err.
pub fn check_callback(
    settings: &AuthSettings,
    codec: &SessionCodec,
    query: &str,
    cookie_header: Option<&str>,
    secure: bool,
    now: u64,
) -> Result<PendingCallback, FlowError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let (mut state, mut code, mut error, mut description) = (None, None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let (slot, name) = match k.as_ref() {
            "state" => (&mut state, "state"),
            "code" => (&mut code, "code"),
            "error" => (&mut error, "error"),
            "error_description" => (&mut description, "error_description"),
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(FlowError::DuplicateParameter(name));
        }
    }

    if let Some(error) = error {
        return Err(FlowError::Provider {
            error: sanitize(&error),
            description: description.map(|d| sanitize(&d)).filter(|d| !d.is_empty()),
        });
    }
    let state = state
        .filter(|s| !s.is_empty())
        .ok_or(FlowError::MissingState)?;
    // Ours are 22 base64url characters; anything else cannot name a state cookie of ours.
    if state.len() < 8
        || state.len() > 64
        || !state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(FlowError::MalformedState);
    }

    let name = state_cookie_name(&settings.cookie_name, &state);
    let sealed = cookie_header
        .and_then(|h| cookie_value(h, &name))
        .ok_or(FlowError::MissingStateCookie)?;
    let pending: PendingState = codec
        .open(&name, sealed)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(FlowError::InvalidStateCookie)?;
    if pending.expires_at <= now {
        return Err(FlowError::StateExpired);
    }
    if !constant_time_eq(pending.state.as_bytes(), state.as_bytes()) {
        return Err(FlowError::StateMismatch);
    }
    let code = code
        .filter(|c| !c.is_empty())
        .ok_or(FlowError::MissingCode)?;

    Ok(PendingCallback {
        code,
        verifier: pending.verifier,
        nonce: pending.nonce,
        return_to: safe_return_to(&pending.return_to),
        clear_state_cookie: clear_cookie(&name, &settings.redirect_path, secure),
    })
}

/// The Set-Cookie for a freshly verified identity: a sealed [`Session`] valid for
/// `session_lifetime` from `now`.
pub fn session_set_cookie(
    settings: &AuthSettings,
    codec: &SessionCodec,
    identity: Identity,
    now: u64,
    secure: bool,
) -> String {
    let session = Session {
        identity,
        expires_at: now + settings.session_lifetime.as_secs(),
        issued_at: now,
    };
    let sealed = codec.seal_session(&settings.cookie_name, &session);
    session_cookie(
        &settings.cookie_name,
        &sealed,
        settings.session_lifetime,
        secure,
    )
}

/// oauth2-proxy's invalidRedirectRegex, `[/\\](?:[\s\v]*|\.{1,2})[/\\]`: a slash or backslash,
/// then only whitespace or one or two dots, then another slash or backslash.
fn has_slash_trick(s: &str) -> bool {
    let b = s.as_bytes();
    let sep = |c: u8| c == b'/' || c == b'\\';
    (0..b.len()).filter(|&i| sep(b[i])).any(|i| {
        let rest = &b[i + 1..];
        let ws = rest
            .iter()
            .take_while(|c| c.is_ascii_whitespace() || **c == 0x0b)
            .count();
        if rest.get(ws).copied().is_some_and(sep) {
            return true;
        }
        let dots = rest.iter().take_while(|c| **c == b'.').count();
        (1..=2).contains(&dots) && rest.get(dots).copied().is_some_and(sep)
    })
}

/// One form of a return_to (raw or decoded) is acceptable: a path on this host, no backslash,
/// no control character, no slash trick.
fn acceptable_form(s: &str) -> bool {
    s.starts_with('/') && !s.chars().any(|c| c.is_control() || c == '\\') && !has_slash_trick(s)
}

/// Only a relative path on this host survives; anything else (absolute URLs, `//evil`,
/// `/\evil`, `\\evil`, `/%2F%2Fevil`, schemes, control chars, `@` tricks) becomes "/". Follow
/// oauth2-proxy's validator.go rules.
///
/// oauth2-proxy's rules for relative redirects (starts with '/', not '//', none of
/// `//`, `/\`, `/ /`, `/./`, `/../` anywhere) are applied to the raw value and to each of up to
/// two percent-decodings of it, so encoded tricks are caught whatever decodes them later. The
/// raw value must also be visible ASCII (what a request-target is made of) and at most 2048
/// bytes. Absolute URLs are never accepted: there is no allow-list of other domains.
pub fn safe_return_to(raw: &str) -> String {
    let fallback = || "/".to_owned();
    if raw.is_empty() || raw.len() > MAX_RETURN_TO || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return fallback();
    }
    let mut form = raw.to_owned();
    for _ in 0..3 {
        if !acceptable_form(&form) {
            return fallback();
        }
        let decoded = percent_decode_str(&form).decode_utf8_lossy().into_owned();
        if decoded == form {
            break;
        }
        form = decoded;
    }
    raw.to_owned()
}

/// Where logout sends the browser: the provider's end-session endpoint (none: "/"), at an
/// address the browser can reach. Discovery reports it at the issuer's address, which in a
/// cluster is in-cluster (`http://dex.auth.svc.cluster.local:5556/dex/logout`); when browsers
/// reach the provider elsewhere (`auth.authorization_url`, maybe relative such as `/dex/auth`
/// through the gateway), an endpoint on the issuer's or the discovered authorization
/// endpoint's origin is moved to that base. An endpoint on another origin is left as it is.
pub fn logout_location(
    end_session_endpoint: Option<&str>,
    issuer: &str,
    discovered_authorization: &str,
    browser_authorization: Option<&str>,
) -> String {
    let Some(end) = end_session_endpoint else {
        return "/".to_owned();
    };
    let (Some(browser), Ok(end_url)) = (browser_authorization, url::Url::parse(end)) else {
        return end.to_owned();
    };
    let origin_of = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
    let internal = [issuer, discovered_authorization]
        .iter()
        .any(|u| origin_of(u) == Some(end_url.origin()));
    if !internal {
        return end.to_owned();
    }
    let path_and_query = match end_url.query() {
        Some(q) => format!("{}?{q}", end_url.path()),
        None => end_url.path().to_owned(),
    };
    match url::Url::parse(browser) {
        // Relative (`/dex/auth`): the browser stays on the host it is on.
        Err(_) => path_and_query,
        Ok(b) => format!("{}{path_and_query}", b.origin().ascii_serialization()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_settings, Secret};
    use std::collections::HashMap;

    const NOW: u64 = 1_700_000_000;
    const REDIRECT_URI: &str = "https://kubeflow.example.com/authservice/oidc/callback";

    fn setup() -> (AuthSettings, SessionCodec) {
        let s = test_settings(serde_json::json!({}));
        let codec = SessionCodec::new(&s.cookie_secrets);
        (s, codec)
    }

    fn random(seed: u8) -> [u8; 64] {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
    }

    fn login(s: &AuthSettings, codec: &SessionCodec, return_to: &str) -> LoginStart {
        start_login(
            s,
            codec,
            "/dex/auth",
            REDIRECT_URI,
            return_to,
            true,
            NOW,
            &random(1),
        )
    }

    fn query_of(location: &str) -> HashMap<String, String> {
        let q = location.split_once('?').unwrap().1;
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    /// The `name=value` part of a Set-Cookie, as the browser would send it back.
    fn cookie_pair(set_cookie: &str) -> &str {
        set_cookie.split(';').next().unwrap()
    }

    /// The login redirect carries every authorization-request parameter, with an S256 challenge
    /// of the verifier the callback later returns.
    #[test]
    fn start_login_location() {
        let (s, codec) = setup();
        let start = login(&s, &codec, "/models/x?y=1");
        assert!(start.location.starts_with("/dex/auth?response_type=code&"));
        let q = query_of(&start.location);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "kubeflow-oidc-authservice");
        assert_eq!(q["redirect_uri"], REDIRECT_URI);
        assert_eq!(q["scope"], "openid profile email groups");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], URL_SAFE_NO_PAD.encode(&random(1)[..16]));
        assert_eq!(q["nonce"], URL_SAFE_NO_PAD.encode(&random(1)[16..32]));
        assert_eq!(q.len(), 8);

        let cookie = cookie_pair(&start.set_cookie);
        let cb_query = format!("state={}&code=abc", q["state"]);
        let cb = check_callback(&s, &codec, &cb_query, Some(cookie), true, NOW + 1).unwrap();
        assert_eq!(
            q["code_challenge"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(cb.verifier.as_bytes()))
        );
        assert_eq!(cb.verifier.len(), 43, "RFC 7636: 43-128 characters");
        assert_eq!(cb.nonce, q["nonce"]);
    }

    /// An authorization endpoint that already has a query gets '&'.
    #[test]
    fn endpoint_with_query() {
        let (s, codec) = setup();
        let start = start_login(
            &s,
            &codec,
            "https://idp/auth?tenant=a",
            REDIRECT_URI,
            "/",
            false,
            NOW,
            &random(1),
        );
        assert!(start
            .location
            .starts_with("https://idp/auth?tenant=a&response_type=code&"));
    }

    /// The state cookie is per state, scoped to the callback path, short-lived, HttpOnly,
    /// SameSite=Lax, and Secure only when asked.
    #[test]
    fn state_cookie_attributes() {
        let (s, codec) = setup();
        let state = URL_SAFE_NO_PAD.encode(&random(1)[..16]);
        let start = login(&s, &codec, "/");
        let name = format!("authservice_session_state_{}", &state[..8]);
        assert!(start.set_cookie.starts_with(&format!("{name}=")));
        assert!(start.set_cookie.ends_with(
            "; Path=/authservice/oidc/callback; Max-Age=600; HttpOnly; SameSite=Lax; Secure"
        ));
        let plain = start_login(
            &s,
            &codec,
            "/dex/auth",
            REDIRECT_URI,
            "/",
            false,
            NOW,
            &random(1),
        );
        assert!(!plain.set_cookie.contains("Secure"));
    }

    /// A full round trip returns the code, the original return_to and a cookie-clearing header.
    #[test]
    fn callback_happy_path() {
        let (s, codec) = setup();
        let start = login(&s, &codec, "/models/x?y=1");
        let state = &query_of(&start.location)["state"];
        let header = format!(
            "other=1; {}; authservice_session=old",
            cookie_pair(&start.set_cookie)
        );
        let cb = check_callback(
            &s,
            &codec,
            &format!("?code=c0de&state={state}"),
            Some(&header),
            false,
            NOW + 599,
        )
        .unwrap();
        assert_eq!(cb.code, "c0de");
        assert_eq!(cb.return_to, "/models/x?y=1");
        let name = state_cookie_name("authservice_session", state);
        assert_eq!(
            cb.clear_state_cookie,
            format!("{name}=; Path=/authservice/oidc/callback; Max-Age=0; HttpOnly; SameSite=Lax; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        );
    }

    /// Two tabs logging in at once each get their own state cookie, and each callback finds its own.
    #[test]
    fn concurrent_logins() {
        let (s, codec) = setup();
        let a = start_login(
            &s,
            &codec,
            "/dex/auth",
            REDIRECT_URI,
            "/a",
            true,
            NOW,
            &random(1),
        );
        let b = start_login(
            &s,
            &codec,
            "/dex/auth",
            REDIRECT_URI,
            "/b",
            true,
            NOW,
            &random(2),
        );
        let header = format!(
            "{}; {}",
            cookie_pair(&a.set_cookie),
            cookie_pair(&b.set_cookie)
        );
        for (start, want) in [(&a, "/a"), (&b, "/b")] {
            let q = format!("state={}&code=x", query_of(&start.location)["state"]);
            let cb = check_callback(&s, &codec, &q, Some(&header), true, NOW).unwrap();
            assert_eq!(cb.return_to, want);
        }
    }

    /// Every refusal of the callback, one branch each.
    #[test]
    fn callback_errors() {
        let (s, codec) = setup();
        let start = login(&s, &codec, "/");
        let state = query_of(&start.location)["state"].clone();
        let name = state_cookie_name(&s.cookie_name, &state);
        let good = cookie_pair(&start.set_cookie).to_owned();

        // The same state prefix, a cookie sealed with another key (forged).
        let other = SessionCodec::new(&[Secret::new("z".repeat(32))]);
        let forged_start = start_login(
            &s,
            &other,
            "/dex/auth",
            REDIRECT_URI,
            "/",
            true,
            NOW,
            &random(1),
        );
        let forged = cookie_pair(&forged_start.set_cookie).to_owned();

        // A genuine cookie whose state differs after the 8-character prefix.
        let mut other_state = state.clone();
        other_state.replace_range(10..11, if &state[10..11] == "A" { "B" } else { "A" });

        let cases: Vec<(String, Option<String>, u64, FlowError)> = vec![
            (
                "error=access_denied&error_description=User+said+no%0d%0a&state=x".into(),
                Some(good.clone()),
                NOW,
                FlowError::Provider {
                    error: "access_denied".into(),
                    description: Some("User said no".into()),
                },
            ),
            (
                format!("state={state}&state={state}&code=x"),
                Some(good.clone()),
                NOW,
                FlowError::DuplicateParameter("state"),
            ),
            (
                "code=x".into(),
                Some(good.clone()),
                NOW,
                FlowError::MissingState,
            ),
            (
                "code=x&state=".into(),
                Some(good.clone()),
                NOW,
                FlowError::MissingState,
            ),
            (
                "code=x&state=short".into(),
                Some(good.clone()),
                NOW,
                FlowError::MalformedState,
            ),
            (
                "code=x&state=has%3Bsemicolon".into(),
                Some(good.clone()),
                NOW,
                FlowError::MalformedState,
            ),
            (
                format!("state={state}"),
                Some(good.clone()),
                NOW,
                FlowError::MissingCode,
            ),
            (
                format!("state={state}&code="),
                Some(good.clone()),
                NOW,
                FlowError::MissingCode,
            ),
            (
                format!("state={state}&code=x"),
                None,
                NOW,
                FlowError::MissingStateCookie,
            ),
            (
                format!("state={state}&code=x"),
                Some("a=b".into()),
                NOW,
                FlowError::MissingStateCookie,
            ),
            (
                format!("state={state}&code=x"),
                Some(forged),
                NOW,
                FlowError::InvalidStateCookie,
            ),
            (
                format!("state={state}&code=x"),
                Some(format!("{name}=garbage")),
                NOW,
                FlowError::InvalidStateCookie,
            ),
            (
                format!("state={state}&code=x"),
                Some(good.clone()),
                NOW + STATE_TTL_SECS,
                FlowError::StateExpired,
            ),
            (
                format!("state={other_state}&code=x"),
                Some(good.clone()),
                NOW,
                FlowError::StateMismatch,
            ),
        ];
        for (query, cookie, now, want) in cases {
            let got = check_callback(&s, &codec, &query, cookie.as_deref(), true, now);
            assert_eq!(got, Err(want), "{query} / {cookie:?}");
        }
    }

    /// A session cookie value cannot stand in for a state cookie (names are bound into the seal).
    #[test]
    fn session_value_is_not_a_state_cookie() {
        let (s, codec) = setup();
        let state = "AAAAAAAAAAAAAAAAAAAAAA";
        let session = session_set_cookie(
            &s,
            &codec,
            Identity {
                user: "u".into(),
                groups: vec![],
            },
            NOW,
            true,
        );
        let value = cookie_pair(&session).split_once('=').unwrap().1;
        let header = format!("{}={value}", state_cookie_name(&s.cookie_name, state));
        assert_eq!(
            check_callback(
                &s,
                &codec,
                &format!("state={state}&code=x"),
                Some(&header),
                true,
                NOW
            ),
            Err(FlowError::InvalidStateCookie)
        );
    }

    /// The session cookie set after login is valid for session_lifetime from now.
    #[test]
    fn session_after_login() {
        let (s, codec) = setup();
        let id = Identity {
            user: "u@x".into(),
            groups: vec!["g".into()],
        };
        let set = session_set_cookie(&s, &codec, id.clone(), NOW, true);
        assert!(set.ends_with("; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax; Secure"));
        let value = cookie_pair(&set).split_once('=').unwrap().1;
        let session = codec.open_session(&s.cookie_name, value, NOW).unwrap();
        assert_eq!(
            session,
            Session {
                identity: id,
                expires_at: NOW + 86400,
                issued_at: NOW,
            }
        );
    }

    /// A provider error shows its (sanitised) code to the client, never its description.
    #[test]
    fn provider_errors_show_only_their_code() {
        let e = FlowError::Provider {
            error: "access_denied".into(),
            description: Some("LDAP bind to ldap://10.0.0.3 failed".into()),
        };
        assert_eq!(
            e.to_string(),
            "the identity provider returned access_denied"
        );
        assert!(
            format!("{e:?}").contains("LDAP bind"),
            "the log keeps the detail"
        );
    }

    /// Open-redirect attempts all become "/"; paths on this host survive unchanged.
    #[test]
    fn open_redirect_table() {
        let cases: &[(&str, &str)] = &[
            // kept
            ("/", "/"),
            ("/redirect", "/redirect"),
            (
                "/models/sklearn-iris?x=1&y=%20",
                "/models/sklearn-iris?x=1&y=%20",
            ),
            (
                "/_/jupyter/?ns=kubeflow-user",
                "/_/jupyter/?ns=kubeflow-user",
            ),
            ("/@evil.com", "/@evil.com"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            // empty or not a path
            ("", "/"),
            ("redirect", "/"),
            ("evil.com/x", "/"),
            ("@evil.com", "/"),
            ("https://evil.com", "/"),
            ("http://evil.com/x", "/"),
            ("https://good.com@evil.com", "/"),
            ("javascript:alert(1)", "/"),
            ("data:text/html,x", "/"),
            ("\\\\evil.com", "/"),
            ("\\/evil.com", "/"),
            // protocol-relative and backslash tricks
            ("//evil.com", "/"),
            ("//good.com@evil.com", "/"),
            ("/\\evil.com", "/"),
            ("/\\@evil.com", "/"),
            ("///evil.com", "/"),
            ("/a/\\evil.com", "/"),
            // whitespace between the slashes (oauth2-proxy's table)
            ("/ /evil.com", "/"),
            ("/ \\evil.com", "/"),
            ("/\t/evil.com", "/"),
            ("/\t\\evil.com", "/"),
            ("/\x0b/evil.com", "/"),
            ("/\n/evil.com", "/"),
            ("/\r/evil.com", "/"),
            ("/\t/\t\\evil.com", "/"),
            // dot segments between slashes
            ("/./\\evil.com", "/"),
            ("/./../../\\evil.com", "/"),
            ("/./evil", "/"),
            ("/a/../b", "/"),
            // encoded forms
            ("/%2F%2Fevil.com", "/"),
            ("/%2f%2fevil.com", "/"),
            ("%2F%2Fevil.com", "/"),
            ("/%5Cevil.com", "/"),
            ("/%5C%5Cevil.com", "/"),
            ("/%09/evil.com", "/"),
            ("/%2e/%2fevil.com", "/"),
            ("/%252F%252Fevil.com", "/"),
            ("/%0d%0aSet-Cookie:%20x=y", "/"),
            ("/%00", "/"),
            // raw characters a request-target cannot hold
            ("/a b", "/"),
            ("/\x7f", "/"),
            ("/é", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(safe_return_to(raw), *want, "{raw:?}");
        }
        assert_eq!(
            safe_return_to(&format!("/{}", "a".repeat(MAX_RETURN_TO))),
            "/"
        );
    }

    /// A return_to that was unsafe at login is "/" in the callback too.
    #[test]
    fn unsafe_return_to_is_replaced_before_sealing() {
        let (s, codec) = setup();
        let start = login(&s, &codec, "//evil.com");
        let q = format!("state={}&code=x", query_of(&start.location)["state"]);
        let cb = check_callback(
            &s,
            &codec,
            &q,
            Some(cookie_pair(&start.set_cookie)),
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(cb.return_to, "/");
    }

    /// Logout goes to the provider's end-session endpoint where the browser reaches the
    /// provider: moved off the in-cluster address onto `authorization_url`'s base (relative
    /// included), else as discovered; home without one.
    #[test]
    fn logout_locations() {
        let issuer = "http://dex.auth.svc.cluster.local:5556/dex";
        let discovered = "http://dex.auth.svc.cluster.local:5556/dex/auth";
        let end = Some("http://dex.auth.svc.cluster.local:5556/dex/logout?x=1");
        assert_eq!(
            logout_location(None, issuer, discovered, Some("/dex/auth")),
            "/"
        );
        assert_eq!(
            logout_location(end, issuer, discovered, None),
            "http://dex.auth.svc.cluster.local:5556/dex/logout?x=1"
        );
        assert_eq!(
            logout_location(end, issuer, discovered, Some("/dex/auth")),
            "/dex/logout?x=1"
        );
        assert_eq!(
            logout_location(
                end,
                issuer,
                discovered,
                Some("https://login.example.com/dex/auth")
            ),
            "https://login.example.com/dex/logout?x=1"
        );
        // The discovered authorization endpoint's origin counts as internal too.
        assert_eq!(
            logout_location(
                Some("http://10.0.0.5:5556/dex/logout"),
                issuer,
                "http://10.0.0.5:5556/dex/auth",
                Some("/dex/auth")
            ),
            "/dex/logout"
        );
        // A provider that already publishes a public end-session URL keeps it.
        assert_eq!(
            logout_location(
                Some("https://idp.example.com/logout"),
                issuer,
                discovered,
                Some("/dex/auth")
            ),
            "https://idp.example.com/logout"
        );
    }
}
