//! The one auth decision per request, pure: the request's method, normalised path and headers,
//! its route, whether the provider is ready, the settings, the clock and the outcome of the
//! bearer-token check go in; one [`Decision`] comes out. The gateway acts on it (proxies to the
//! provider, finishes a login, sets identity headers, answers a redirect or a refusal) and
//! decides nothing itself; nothing here does I/O.

use http::header::{ACCEPT, AUTHORIZATION, COOKIE};
use http::{HeaderMap, Method};

use crate::config::{AuthSettings, LoginRedirect};
use crate::headers::safe_header_value;
use crate::paths;
use crate::session::{Identity, SessionCodec, SessionError};

/// The parts of a request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// Normalised (`routes::request::normalize_path`), without the query: the path that is
    /// forwarded, so what skips auth is what the model server sees.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The route's namespace and InferenceService, empty when no route matched.
    pub namespace: &'a str,
    pub isvc: &'a str,
    /// Discovery has succeeded and the provider's keys are loaded.
    pub ready: bool,
}

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// A path under the issuer's (`/dex/...`): the provider's own pages, proxied without auth.
    Provider,
    /// The login callback: the gateway checks it and exchanges the code.
    Callback,
    /// The logout path: clear the session and send the browser to the provider's end-session
    /// page.
    Logout,
    /// A verified user; the gateway sets the identity headers from it.
    Allow(Identity),
    /// Auth is off for this request (skip path, or a policy with `disabled: true`); identity
    /// headers are still stripped. `drop_authorization`: the `Authorization` header carries one
    /// of the gateway's sealed sessions, which is the gateway's credential, never a model
    /// server's, even where nothing is verified.
    Anonymous {
        drop_authorization: bool,
    },
    /// No valid credentials on a request that `auth.login_redirect` sends to the login page.
    Login,
    Deny(Deny),
}

/// Why a request is refused. Each knows its status, what the client is told (what it did
/// wrong, never how the gateway is wired) and its `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    /// The provider has not been discovered yet: 503.
    NotReady,
    /// No credentials at all: 401 with a bare challenge (RFC 6750 §3.1: no error code then).
    NoCredentials,
    /// Two `Authorization` headers: RFC 6750 §3.1 `invalid_request`, 400.
    SeveralAuthorizations,
    /// An `Authorization` header that is not `Bearer <token>`: an authentication method we do
    /// not support, so a bare challenge (RFC 6750 §3.1).
    NotBearer,
    /// The verifier refused the bearer token; its reason is about the client's own token.
    InvalidToken(String),
    SessionExpired,
    /// Sealed before `auth.sessions_not_before`.
    SessionRevoked,
    InvalidSession,
    /// A verified identity that cannot be forwarded as a header value unchanged: 400.
    UnforwardableIdentity(String),
    /// A verified user outside the policy's users and groups: 403.
    Forbidden {
        user: String,
        target: String,
    },
}

impl Deny {
    pub fn status(&self) -> u16 {
        match self {
            Deny::NotReady => 503,
            Deny::UnforwardableIdentity(_) | Deny::SeveralAuthorizations => 400,
            Deny::Forbidden { .. } => 403,
            _ => 401,
        }
    }

    /// The client's `error` text.
    pub fn message(&self) -> String {
        match self {
            Deny::NotReady => "the OpenID Connect provider is not reachable yet".into(),
            Deny::NoCredentials => {
                "unauthorized: no credentials: send a session cookie or Authorization: Bearer <token>"
                    .into()
            }
            Deny::SeveralAuthorizations => "bad request: more than one Authorization header".into(),
            Deny::NotBearer => "unauthorized: the Authorization header is not a Bearer token".into(),
            Deny::InvalidToken(why) => format!("unauthorized: invalid bearer token: {why}"),
            Deny::SessionExpired => "unauthorized: session expired".into(),
            Deny::SessionRevoked => {
                "unauthorized: session was revoked; log in again".into()
            }
            Deny::InvalidSession => "unauthorized: invalid session".into(),
            Deny::UnforwardableIdentity(why) => format!("bad request: {why}"),
            Deny::Forbidden { user, target } => {
                format!("forbidden: user {user} may not call {target}")
            }
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3): `error="invalid_token"` only when a token
    /// was presented and refused; a bare challenge when none was sent or the method is not
    /// Bearer; `invalid_request` for two `Authorization` headers.
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            Deny::SeveralAuthorizations => Some(
                "Bearer realm=\"modelgate\", error=\"invalid_request\", error_description=\"more than one Authorization header\"".to_owned(),
            ),
            _ if self.status() != 401 => None,
            Deny::NoCredentials | Deny::NotBearer => Some("Bearer realm=\"modelgate\"".to_owned()),
            _ => {
                let message = self.message();
                let why = message.strip_prefix("unauthorized: ").unwrap_or(&message);
                let desc: String = why
                    .chars()
                    .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
                    .collect();
                Some(format!(
                    "Bearer realm=\"modelgate\", error=\"invalid_token\", error_description=\"{desc}\""
                ))
            }
        }
    }
}

/// The token of the request's one `Authorization: Bearer` header when it is shaped like a JWT
/// (two dots), which the gateway verifies (async: it may refetch keys) before [`decide`]; a
/// sealed session, the other bearer form, has none.
pub fn bearer_jwt(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let (Some(one), None) = (all.next(), all.next()) else {
        return None;
    };
    bearer_token(one.to_str().ok()?).filter(|t| t.bytes().filter(|b| *b == b'.').count() == 2)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive); None for
/// any other scheme or an empty token.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token.bytes().any(|b| b == b' ' || b == b'\t'))
    .then_some(token)
}

/// Whether `auth.login_redirect` sends this unauthenticated request to the login page. Never
/// with an `Authorization` header (the client chose its credential; it gets a 401 it can act
/// on) nor for anything but `GET`/`HEAD` (a redirect would lose a body).
fn redirects_to_login(req: &Request, mode: LoginRedirect) -> bool {
    if req.headers.contains_key(AUTHORIZATION) || !matches!(*req.method, Method::GET | Method::HEAD)
    {
        return false;
    }
    let accepts = |wanted: &str| {
        req.headers.get_all(ACCEPT).iter().any(|v| {
            v.to_str().unwrap_or("").split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case(wanted))
            })
        })
    };
    match mode {
        LoginRedirect::Never => false,
        LoginRedirect::Browsers => accepts("text/html"),
        // oauth2-proxy's and oidc-authservice's rule: an XHR or a JSON client gets the 401.
        LoginRedirect::Get => {
            let json_client = accepts("application/json") && !accepts("text/html");
            !(req.headers.contains_key("x-requested-with") || json_client)
        }
    }
}

/// Why an identity cannot be forwarded, if it cannot: an empty user, control characters or
/// surrounding spaces anywhere, or a ',' (a user id with one reads as a list to anything that
/// splits identity headers; the groups header is comma-separated, so "a,admins" would become
/// two groups upstream).
fn identity_problem(id: &Identity) -> Option<String> {
    if id.user.is_empty() {
        return Some("identity has an empty user id".into());
    }
    if !safe_header_value(&id.user) || id.user.contains(',') {
        return Some(
            "user id cannot be forwarded (control characters, ',' or surrounding spaces)".into(),
        );
    }
    for g in &id.groups {
        if !safe_header_value(g) || g.contains(',') || g.is_empty() {
            return Some(format!(
                "group {g:?} cannot be forwarded (control characters, ',' or surrounding spaces)"
            ));
        }
    }
    None
}

/// Every value of the session cookie across the request's `Cookie` headers (HTTP/2 sends one
/// header per cookie), in order.
fn session_cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |v| crate::session::cookie_values(v, name))
}

/// Whether an `Authorization: Bearer` header holds one of the gateway's sealed sessions
/// (expired or not). Only tried for a token that could be one (no '.'), so a model's own JWT or
/// Basic credentials cost nothing.
fn carries_session(
    settings: &AuthSettings,
    codec: &SessionCodec,
    headers: &HeaderMap,
    now: u64,
) -> bool {
    headers.get_all(AUTHORIZATION).iter().any(|v| {
        v.to_str()
            .ok()
            .and_then(bearer_token)
            .filter(|t| !t.contains('.'))
            .is_some_and(|t| {
                !matches!(
                    codec.open_session(&settings.cookie_name, t, now),
                    Err(SessionError::Invalid)
                )
            })
    })
}

/// The decision. `verified_jwt` is the outcome of verifying [`bearer_jwt`]'s token (`None`
/// when there is none).
///
/// Order: provider path → Provider; the callback → Callback; the logout path (GET/POST) →
/// Logout; a skip path or a disabled policy → Anonymous; provider not ready → 503; the one
/// `Authorization: Bearer` (a sealed session, else the verified JWT) or else the session cookie
/// → the identity, checked against `sessions_not_before`; none or invalid → Login when
/// `login_redirect` says so, else 401; identity values that cannot be forwarded → 400; outside
/// the most specific policy's users/groups → 403. A present but invalid `Authorization` is a
/// 401 even if a cookie is valid (no silent fallback).
pub fn decide(
    settings: &AuthSettings,
    codec: &SessionCodec,
    req: &Request,
    now: u64,
    verified_jwt: Option<Result<Identity, String>>,
) -> Decision {
    let deny = Decision::Deny;
    if settings.is_provider_path(req.path) {
        return Decision::Provider;
    }
    if req.path == settings.redirect_path {
        return Decision::Callback;
    }
    if req.path == settings.logout_path && matches!(*req.method, Method::GET | Method::POST) {
        return Decision::Logout;
    }
    let anonymous = || Decision::Anonymous {
        drop_authorization: carries_session(settings, codec, req.headers, now),
    };
    if paths::is_skipped(req.path, &settings.skip_paths) {
        return anonymous();
    }
    let policy = settings.policy(req.namespace, req.isvc);
    if policy.is_some_and(|p| p.disabled) {
        return anonymous();
    }
    if !req.ready {
        return deny(Deny::NotReady);
    }

    let revoked = |issued_at: u64| {
        settings
            .sessions_not_before
            .is_some_and(|nb| issued_at < nb)
    };
    let mut authorizations = req.headers.get_all(AUTHORIZATION).iter();
    let identity = match (authorizations.next(), authorizations.next()) {
        (Some(_), Some(_)) => return deny(Deny::SeveralAuthorizations),
        (Some(header), None) => {
            let Some(token) = header.to_str().ok().and_then(bearer_token) else {
                return deny(Deny::NotBearer);
            };
            // A sealed session is base64 (no '.'); a JWT always has two dots. Deciding which
            // one this is up front spares every JWT request a failed decryption.
            let session = if token.contains('.') {
                Err(SessionError::Invalid)
            } else {
                codec.open_session(&settings.cookie_name, token, now)
            };
            match session {
                Ok(s) if revoked(s.issued_at) => return deny(Deny::SessionRevoked),
                Ok(s) => s.identity,
                Err(SessionError::Expired) => return deny(Deny::SessionExpired),
                Err(SessionError::Invalid) => match verified_jwt {
                    Some(Ok(identity)) => identity,
                    Some(Err(why)) => return deny(Deny::InvalidToken(why)),
                    None => {
                        return deny(Deny::InvalidToken("not a valid session or ID token".into()))
                    }
                },
            }
        }
        (None, _) => {
            // Several cookies of the same name can arrive (other paths or parent domains); the
            // first that opens wins, so a stale or foreign one does not hide a good one.
            let mut outcome = Err(None);
            for value in session_cookies(req.headers, &settings.cookie_name) {
                match codec.open_session(&settings.cookie_name, value, now) {
                    Ok(s) if revoked(s.issued_at) => outcome = Err(Some(Deny::SessionRevoked)),
                    Ok(s) => {
                        outcome = Ok(s.identity);
                        break;
                    }
                    Err(SessionError::Expired) => outcome = Err(Some(Deny::SessionExpired)),
                    Err(SessionError::Invalid) => outcome = Err(Some(Deny::InvalidSession)),
                }
            }
            match outcome {
                Ok(identity) => identity,
                Err(_) if redirects_to_login(req, settings.login_redirect) => {
                    return Decision::Login
                }
                Err(why) => return deny(why.unwrap_or(Deny::NoCredentials)),
            }
        }
    };

    if let Some(problem) = identity_problem(&identity) {
        return deny(Deny::UnforwardableIdentity(problem));
    }
    if let Some(p) = policy {
        let open = p.users.is_empty() && p.groups.is_empty();
        let user_listed = p
            .users
            .iter()
            .any(|u| u.eq_ignore_ascii_case(&identity.user));
        let group_listed = identity.groups.iter().any(|g| p.groups.contains(g));
        if !(open || user_listed || group_listed) {
            let target = match &p.isvc {
                Some(isvc) => format!("{}/{isvc}", p.namespace),
                None => format!("namespace {}", p.namespace),
            };
            return deny(Deny::Forbidden {
                user: identity.user,
                target,
            });
        }
    }
    Decision::Allow(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_settings, TEST_NOW as NOW};
    use crate::session::Session;
    use http::{HeaderName, HeaderValue};
    use serde_json::json;

    const JWT_ALICE: &str = "eyJ.alice.sig";
    const JWT_BAD_GROUP: &str = "eyJ.badgroup.sig";
    const JWT_COMMA_USER: &str = "eyJ.comma.sig";

    fn settings(extra: serde_json::Value) -> AuthSettings {
        let mut base = json!({
            "skip_paths": ["/healthz"],
            "policies": [
                {"namespace": "open"},
                {"namespace": "public", "disabled": true},
                {"namespace": "team", "users": ["Alice@Example.com"], "groups": ["ml"]},
                {"namespace": "team", "isvc": "secret", "users": ["bob@example.com"]},
                {"namespace": "team", "isvc": "demo", "disabled": true},
            ],
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        test_settings(base)
    }

    fn id(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// The fake verifier: three known JWTs, everything else refused.
    fn verify(token: &str) -> Result<Identity, String> {
        match token {
            JWT_ALICE => Ok(id("alice@example.com", &["ml"])),
            JWT_BAD_GROUP => Ok(id("carol@example.com", &["ml,admins"])),
            JWT_COMMA_USER => Ok(id("carol@example.com,admin@example.com", &[])),
            _ => Err("token signature is invalid".into()),
        }
    }

    struct Case {
        rule: &'static str,
        method: Method,
        path: &'static str,
        headers: Vec<(&'static str, String)>,
        namespace: &'static str,
        isvc: &'static str,
        ready: bool,
        want: Decision,
    }

    fn base(rule: &'static str, want: Decision) -> Case {
        Case {
            rule,
            method: Method::POST,
            path: "/v1/models/m:predict",
            headers: vec![],
            namespace: "open",
            isvc: "m",
            ready: true,
            want,
        }
    }

    fn get(mut c: Case, headers: &[(&'static str, &str)]) -> Case {
        c.method = Method::GET;
        c.headers
            .extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
        c
    }

    fn sealed(
        codec: &SessionCodec,
        s: &AuthSettings,
        identity: Identity,
        issued_at: u64,
        expires_at: u64,
    ) -> String {
        codec.seal_session(
            &s.cookie_name,
            &Session {
                identity,
                expires_at,
                issued_at,
            },
        )
    }

    fn run(s: &AuthSettings, codec: &SessionCodec, cases: Vec<Case>) {
        for c in cases {
            let mut headers = HeaderMap::new();
            for (k, v) in &c.headers {
                headers.append(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let req = Request {
                method: &c.method,
                path: c.path,
                headers: &headers,
                namespace: c.namespace,
                isvc: c.isvc,
                ready: c.ready,
            };
            let verified = bearer_jwt(&headers).map(verify);
            let got = decide(s, codec, &req, NOW, verified);
            assert_eq!(got, c.want, "rule: {}", c.rule);
        }
    }

    /// Each rule of `decide`, one row each, with the fake verifier and a fixed clock.
    #[test]
    fn decision_table() {
        let s = settings(json!({}));
        let codec = SessionCodec::new(&s.cookie_secrets);
        let live =
            |user: &str, groups: &[&str]| sealed(&codec, &s, id(user, groups), NOW - 10, NOW + 60);
        let alice = live("alice@example.com", &["ml"]);
        let bob = live("bob@example.com", &[]);
        let dave = live("dave@example.com", &["ops"]);
        let expired = sealed(&codec, &s, id("alice@example.com", &[]), NOW - 100, NOW);
        let newline_user = live("alice@example.com\r\nx: y", &[]);
        let comma_user = live("carol@example.com,admin@example.com", &[]);
        let other_key = SessionCodec::new(&[crate::config::Secret::new("k".repeat(40))]);
        let forged = sealed(&other_key, &s, id("admin", &[]), NOW, NOW + 60);
        let cookie = |v: &str| ("cookie", format!("authservice_session={v}"));
        let bearer = |v: &str| ("authorization", format!("Bearer {v}"));
        let allow = |u: &str, g: &[&str]| Decision::Allow(id(u, g));
        let d = Decision::Deny;
        let with = |mut c: Case, h: Vec<(&'static str, String)>| {
            c.headers = h;
            c
        };

        let cases = vec![
            Case { path: "/dex/auth", ..base("the provider's pages pass through", Decision::Provider) },
            Case { path: "/dex", ..base("the issuer path itself is the provider's", Decision::Provider) },
            Case { path: "/dexter", ..base("a longer segment is not the provider's", d(Deny::NoCredentials)) },
            Case { path: "/authservice/oidc/callback", ..base("the callback", Decision::Callback) },
            Case { path: "/authservice/logout", ..base("logout by POST", Decision::Logout) },
            get(Case { path: "/authservice/logout", ..base("logout by GET", Decision::Logout) }, &[]),
            Case { method: Method::PUT, path: "/authservice/logout", ..base("logout is GET or POST only", d(Deny::NoCredentials)) },
            Case { path: "/healthz", ..base("a skip path needs no credentials", Decision::Anonymous { drop_authorization: false }) },
            Case { path: "/healthz/live", ..base("a skip path covers its sub-paths", Decision::Anonymous { drop_authorization: false }) },
            Case { path: "/healthz", ready: false, ..base("a skip path does not wait for the provider", Decision::Anonymous { drop_authorization: false }) },
            Case { ready: false, ..base("not ready is a 503 before any credential is looked at", d(Deny::NotReady)) },
            with(Case { path: "/healthz/x", ..base("a skip path ignores even a bad Authorization header", Decision::Anonymous { drop_authorization: false }) }, vec![("authorization", "Basic Zm9vOmJhcg==".into())]),
            Case { namespace: "public", ..base("a disabled namespace policy is anonymous", Decision::Anonymous { drop_authorization: false }) },
            Case { namespace: "team", isvc: "demo", ..base("a disabled isvc policy overrides its namespace policy", Decision::Anonymous { drop_authorization: false }) },
            Case { ..base("no credentials on a POST is a 401", d(Deny::NoCredentials)) },
            get(base("no credentials on a plain GET (curl's */*) starts the login", Decision::Login), &[("accept", "*/*")]),
            get(base("no credentials on a GET without Accept starts the login", Decision::Login), &[]),
            Case { method: Method::HEAD, ..base("HEAD is redirected like GET", Decision::Login) },
            get(base("a browser GET starts the login", Decision::Login), &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")]),
            get(base("a JSON client gets the 401", d(Deny::NoCredentials)), &[("accept", "application/json")]),
            get(base("JSON among other types, without text/html, is a JSON client", d(Deny::NoCredentials)), &[("accept", "application/json;q=1, */*;q=0.1")]),
            get(base("text/html with JSON is a browser", Decision::Login), &[("accept", "application/json, text/html")]),
            get(base("an XHR gets the 401", d(Deny::NoCredentials)), &[("x-requested-with", "XMLHttpRequest")]),
            get(base("a GET with an invalid Authorization header gets the 401", d(Deny::NotBearer)), &[("authorization", "Basic Zm9vOmJhcg==")]),
            Case { method: Method::PUT, ..base("a PUT gets a 401, not a redirect that would lose its body", d(Deny::NoCredentials)) },
            with(base("a valid session cookie allows", allow("alice@example.com", &["ml"])), vec![cookie(&alice)]),
            with(base("the first session cookie that opens wins", allow("alice@example.com", &["ml"])), vec![("cookie", format!("authservice_session=stale; other=1; authservice_session={alice}"))]),
            with(base("session cookies are read from every Cookie header", allow("alice@example.com", &["ml"])), vec![("cookie", "other=1".into()), cookie(&alice)]),
            with(base("an expired session cookie from an API client is a 401", d(Deny::SessionExpired)), vec![cookie(&expired)]),
            with(base("a forged session cookie is a 401", d(Deny::InvalidSession)), vec![cookie(&forged)]),
            get(with(base("an expired session cookie on a GET starts the login", Decision::Login), vec![cookie(&expired)]), &[]),
            with(base("a session value under another cookie name is not a session", d(Deny::NoCredentials)), vec![("cookie", format!("authservice_session_state_abcdefgh={alice}"))]),
            with(base("a session value is accepted as a bearer token", allow("alice@example.com", &["ml"])), vec![bearer(&alice)]),
            with(base("the Bearer scheme is case-insensitive", allow("alice@example.com", &["ml"])), vec![("authorization", format!("bearer   {alice} "))]),
            with(base("an expired session as a bearer is a 401", d(Deny::SessionExpired)), vec![bearer(&expired)]),
            with(base("a verified JWT allows", allow("alice@example.com", &["ml"])), vec![bearer(JWT_ALICE)]),
            with(base("a bad bearer is a 401 even with a valid cookie (no fallback)", d(Deny::InvalidToken("token signature is invalid".into()))), vec![bearer("eyJ.forged.sig"), cookie(&alice)]),
            with(base("a bearer that is neither a session nor a JWT is a 401", d(Deny::InvalidToken("not a valid session or ID token".into()))), vec![bearer("garbage")]),
            with(base("a non-Bearer Authorization is a 401 even with a valid cookie", d(Deny::NotBearer)), vec![("authorization", "Basic Zm9vOmJhcg==".into()), cookie(&alice)]),
            with(base("an empty bearer token is a 401", d(Deny::NotBearer)), vec![("authorization", "Bearer".into())]),
            with(base("two Authorization headers are a 400", d(Deny::SeveralAuthorizations)), vec![bearer(&alice), bearer(&alice)]),
            with(Case { path: "/healthz", ..base("a session as a bearer on a skip path is dropped, not forwarded", Decision::Anonymous { drop_authorization: true }) }, vec![bearer(&alice)]),
            with(Case { namespace: "public", ..base("so is an expired one, under a disabled policy", Decision::Anonymous { drop_authorization: true }) }, vec![bearer(&expired)]),
            with(Case { namespace: "public", ..base("a model's own bearer token passes where auth is off", Decision::Anonymous { drop_authorization: false }) }, vec![bearer("model-api-key"), bearer(JWT_ALICE)]),
            get(with(base("a bad bearer on a GET is a 401, not a login", d(Deny::InvalidToken("token signature is invalid".into()))), vec![bearer("eyJ.forged.sig")]), &[("accept", "text/html")]),
            with(base("a user id with control characters is a 400", d(Deny::UnforwardableIdentity("user id cannot be forwarded (control characters, ',' or surrounding spaces)".into()))), vec![cookie(&newline_user)]),
            with(base("a user id with a ',' is a 400 (it would read as two users)", d(Deny::UnforwardableIdentity("user id cannot be forwarded (control characters, ',' or surrounding spaces)".into()))), vec![cookie(&comma_user)]),
            with(base("a verified JWT with a ',' in its user id is a 400", d(Deny::UnforwardableIdentity("user id cannot be forwarded (control characters, ',' or surrounding spaces)".into()))), vec![bearer(JWT_COMMA_USER)]),
            with(base("a group containing ',' is a 400 (it would split into two groups upstream)", d(Deny::UnforwardableIdentity("group \"ml,admins\" cannot be forwarded (control characters, ',' or surrounding spaces)".into()))), vec![bearer(JWT_BAD_GROUP)]),
            with(Case { namespace: "nopolicy", ..base("without a policy every authenticated user is allowed", allow("dave@example.com", &["ops"])) }, vec![cookie(&dave)]),
            with(Case { namespace: "team", ..base("a listed user is allowed (case-insensitively)", allow("alice@example.com", &["ml"])) }, vec![cookie(&alice)]),
            with(Case { namespace: "team", ..base("a user outside the users and groups lists is a 403", d(Deny::Forbidden { user: "dave@example.com".into(), target: "namespace team".into() })) }, vec![cookie(&dave)]),
            with(Case { namespace: "team", isvc: "other", ..base("a member of a listed group is allowed", allow("erin@example.com", &["ml"])) }, vec![cookie(&live("erin@example.com", &["ml"]))]),
            with(Case { namespace: "team", isvc: "secret", ..base("the isvc policy replaces the namespace policy", d(Deny::Forbidden { user: "alice@example.com".into(), target: "team/secret".into() })) }, vec![cookie(&alice)]),
            with(Case { namespace: "team", isvc: "secret", ..base("the isvc policy's own users are allowed", allow("bob@example.com", &[])) }, vec![cookie(&bob)]),
        ];
        run(&s, &codec, cases);
    }

    /// `login_redirect: browsers` redirects only text/html GETs; `never` redirects nothing.
    #[test]
    fn login_redirect_modes() {
        for (mode, curl, browser) in [
            (
                "browsers",
                Decision::Deny(Deny::NoCredentials),
                Decision::Login,
            ),
            (
                "never",
                Decision::Deny(Deny::NoCredentials),
                Decision::Deny(Deny::NoCredentials),
            ),
            ("get", Decision::Login, Decision::Login),
        ] {
            let s = settings(json!({ "login_redirect": mode }));
            let codec = SessionCodec::new(&s.cookie_secrets);
            run(
                &s,
                &codec,
                vec![
                    get(base("curl", curl), &[("accept", "*/*")]),
                    get(base("a browser", browser), &[("accept", "text/html")]),
                ],
            );
        }
    }

    /// Sessions sealed before `sessions_not_before` are refused, as cookie or bearer; a GET is
    /// sent to log in again; later sessions pass.
    #[test]
    fn sessions_not_before() {
        let s = settings(json!({ "sessions_not_before": "2023-11-14T22:00:00Z" }));
        let cutoff = s.sessions_not_before.unwrap();
        let codec = SessionCodec::new(&s.cookie_secrets);
        let user = || id("alice@example.com", &[]);
        let old = sealed(&codec, &s, user(), cutoff - 1, NOW + 60);
        let new = sealed(&codec, &s, user(), cutoff, NOW + 60);
        let cookie = |v: &str| vec![("cookie", format!("authservice_session={v}"))];
        let revoked = || Decision::Deny(Deny::SessionRevoked);
        let mut cases = vec![
            base("a session sealed before the cut-off is refused", revoked()),
            base("so is the same session as a bearer", revoked()),
            get(
                base(
                    "a GET with a revoked session logs in again",
                    Decision::Login,
                ),
                &[],
            ),
            base(
                "a session sealed at the cut-off passes",
                Decision::Allow(user()),
            ),
        ];
        cases[0].headers = cookie(&old);
        cases[1].headers = vec![("authorization", format!("Bearer {old}"))];
        cases[2].headers.extend(cookie(&old));
        cases[3].headers = cookie(&new);
        run(&s, &codec, cases);
    }

    /// A missing credential gets a bare Bearer challenge; a refused one says invalid_token with
    /// a description free of quotes; other statuses get none.
    #[test]
    fn www_authenticate() {
        assert_eq!(
            Deny::NoCredentials.www_authenticate().as_deref(),
            Some("Bearer realm=\"modelgate\"")
        );
        assert_eq!(
            Deny::InvalidToken("bad \"sig\"\n".into()).www_authenticate().as_deref(),
            Some("Bearer realm=\"modelgate\", error=\"invalid_token\", error_description=\"invalid bearer token: bad sig\"")
        );
        assert_eq!(
            Deny::SessionExpired.www_authenticate().as_deref(),
            Some("Bearer realm=\"modelgate\", error=\"invalid_token\", error_description=\"session expired\"")
        );
        let forbidden = Deny::Forbidden {
            user: "u".into(),
            target: "t".into(),
        };
        assert_eq!(forbidden.www_authenticate(), None);
        assert_eq!(
            Deny::NotBearer.www_authenticate().as_deref(),
            Some("Bearer realm=\"modelgate\""),
            "an unsupported method gets no error code"
        );
        assert!(Deny::SeveralAuthorizations
            .www_authenticate()
            .unwrap()
            .contains("error=\"invalid_request\""));
        assert_eq!(Deny::NotReady.www_authenticate(), None);
        assert_eq!(
            Deny::UnforwardableIdentity("x".into()).www_authenticate(),
            None
        );
    }

    /// Only one Authorization header carrying a two-dot Bearer token is handed to the verifier.
    #[test]
    fn bearer_jwts() {
        let h = |vals: &[&str]| {
            let mut m = HeaderMap::new();
            for v in vals {
                m.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            m
        };
        assert_eq!(bearer_jwt(&h(&["Bearer a.b.c"])), Some("a.b.c"));
        assert_eq!(bearer_jwt(&h(&["bearer  a.b.c "])), Some("a.b.c"));
        assert_eq!(bearer_jwt(&h(&["Bearer sealedsession"])), None);
        assert_eq!(bearer_jwt(&h(&["Basic a.b.c"])), None);
        assert_eq!(bearer_jwt(&h(&["Bearer a.b.c", "Bearer a.b.c"])), None);
        assert_eq!(bearer_jwt(&h(&[])), None);
    }
}
