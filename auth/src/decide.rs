//! The one auth decision per request, pure: the request's few relevant values, the settings, the
//! clock and a bearer-token verifier go in; Allow, Anonymous, Login or Deny comes out. The
//! gateway turns it into a response or identity headers; nothing here does I/O.

use crate::config::AuthSettings;
use crate::headers::safe_header_value;
use crate::paths;
use crate::session::{cookie_values, Identity, SessionCodec, SessionError};

/// The parts of a request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    /// Raw path, maybe with query.
    pub path: &'a str,
    pub accept: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub namespace: &'a str,
    pub isvc: &'a str,
}

#[derive(Debug, PartialEq)]
pub enum AuthDecision {
    /// Verified identity; the gateway sets the identity headers from it.
    Allow(Identity),
    /// Auth is off for this request (skip path, or a policy with disabled: true); identity
    /// headers are still stripped.
    Anonymous,
    /// Browser without a valid session: start the login flow (GET + Accept includes text/html).
    Login,
    /// 401 (no/invalid credentials; with WWW-Authenticate: Bearer ...) or 403 (valid user
    /// outside the allow-lists) or 400 for identity values with control characters. `reason`
    /// goes in the JSON body.
    Deny { status: u16, reason: String },
}

/// The 401 reason when the request carried no credentials at all (RFC 6750: no error code then).
pub const NO_CREDENTIALS: &str =
    "no credentials: send a session cookie or Authorization: Bearer <token>";

impl AuthDecision {
    /// The WWW-Authenticate value for a 401 (RFC 6750 §3): `error="invalid_token"` with the
    /// reason when a credential was presented and refused; none otherwise.
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            AuthDecision::Deny {
                status: 401,
                reason,
            } if reason == NO_CREDENTIALS => Some("Bearer realm=\"modelgate\"".to_owned()),
            AuthDecision::Deny {
                status: 401,
                reason,
            } => {
                let desc: String = reason
                    .chars()
                    .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
                    .collect();
                Some(format!(
                    "Bearer realm=\"modelgate\", error=\"invalid_token\", error_description=\"{desc}\""
                ))
            }
            _ => None,
        }
    }
}

fn deny(status: u16, reason: impl Into<String>) -> AuthDecision {
    AuthDecision::Deny {
        status,
        reason: reason.into(),
    }
}

/// A browser navigation: GET with text/html among the accepted types. API clients (curl's
/// `*/*`, JSON clients, XHR) get a 401 they can act on instead of an HTML login page.
fn is_browser_get(req: &RequestInfo) -> bool {
    req.method == "GET"
        && req.accept.is_some_and(|a| {
            a.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
            })
        })
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

/// Why an identity cannot be forwarded, if it cannot: an empty user, control characters or
/// surrounding spaces anywhere, or a ',' in a group (the groups header is comma-separated, so
/// "a,admins" would become two groups upstream).
fn identity_problem(id: &Identity) -> Option<String> {
    if id.user.is_empty() {
        return Some("identity has an empty user id".into());
    }
    if !safe_header_value(&id.user) {
        return Some("user id contains control characters or surrounding spaces".into());
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

/// `verify_bearer` verifies a JWT (the other helper's code, wired by the lead); it is only
/// called for a bearer value that is not a valid sealed session (oidc-authservice accepts the
/// session value as a bearer too).
///
/// Order: skip path or disabled policy → Anonymous; Authorization: Bearer (session value or
/// JWT); else cookie session; no/bad credentials → Login for browser GETs, else 401; identity
/// values that cannot be forwarded → 400; outside the most specific policy's users/groups →
/// 403. A present-but-invalid Authorization header is a 401 even if a cookie is valid (no silent
/// fallback).
pub fn decide(
    settings: &AuthSettings,
    codec: &SessionCodec,
    req: &RequestInfo,
    now: u64,
    verify_bearer: &mut dyn FnMut(&str) -> Result<Identity, String>,
) -> AuthDecision {
    if paths::raw_path_is_skipped(req.path, &settings.skip_paths) {
        return AuthDecision::Anonymous;
    }
    let policy = settings.policy(req.namespace, req.isvc);
    if policy.is_some_and(|p| p.disabled) {
        return AuthDecision::Anonymous;
    }

    let identity = if let Some(header) = req.authorization {
        let Some(token) = bearer_token(header) else {
            return deny(401, "the Authorization header is not a Bearer token");
        };
        // A sealed session is base64 (no '.'); a JWT always has two dots. Deciding which one
        // this is up front spares every JWT request a failed decryption.
        let session = if token.contains('.') {
            Err(SessionError::Invalid)
        } else {
            codec.open_session(&settings.cookie_name, token, now)
        };
        match session {
            Ok(session) => session.identity,
            Err(SessionError::Expired) => return deny(401, "session expired"),
            Err(SessionError::Invalid) => match verify_bearer(token) {
                Ok(identity) => identity,
                Err(e) => return deny(401, format!("invalid bearer token: {e}")),
            },
        }
    } else {
        // Several cookies of the same name can arrive (other paths or parent domains); the
        // first that opens wins, so a stale or foreign one does not hide a good one.
        let mut outcome = Err(None);
        if let Some(header) = req.cookie {
            for value in cookie_values(header, &settings.cookie_name) {
                match codec.open_session(&settings.cookie_name, value, now) {
                    Ok(session) => {
                        outcome = Ok(session.identity);
                        break;
                    }
                    Err(e) => outcome = Err(Some(e)),
                }
            }
        }
        match outcome {
            Ok(identity) => identity,
            Err(_) if is_browser_get(req) => return AuthDecision::Login,
            Err(None) => return deny(401, NO_CREDENTIALS),
            Err(Some(e)) => return deny(401, e.to_string()),
        }
    };

    if let Some(problem) = identity_problem(&identity) {
        return deny(400, problem);
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
            return deny(403, format!("user {} may not call {target}", identity.user));
        }
    }
    AuthDecision::Allow(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_settings;
    use crate::session::Session;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const JWT_ALICE: &str = "eyJ.alice.sig";
    const JWT_BAD_GROUP: &str = "eyJ.badgroup.sig";

    fn settings() -> AuthSettings {
        test_settings(json!({
            "skip_paths": ["/healthz"],
            "policies": [
                {"namespace": "open"},
                {"namespace": "public", "disabled": true},
                {"namespace": "team", "users": ["Alice@Example.com"], "groups": ["ml"]},
                {"namespace": "team", "isvc": "secret", "users": ["bob@example.com"]},
                {"namespace": "team", "isvc": "demo", "disabled": true},
            ],
        }))
    }

    fn id(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// The fake verifier: two known JWTs, everything else refused.
    fn verify(token: &str) -> Result<Identity, String> {
        match token {
            JWT_ALICE => Ok(id("alice@example.com", &["ml"])),
            JWT_BAD_GROUP => Ok(id("carol@example.com", &["ml,admins"])),
            _ => Err("signature mismatch".into()),
        }
    }

    struct Case {
        rule: &'static str,
        method: &'static str,
        path: &'static str,
        accept: Option<&'static str>,
        cookie: Option<String>,
        authorization: Option<String>,
        namespace: &'static str,
        isvc: &'static str,
        want: AuthDecision,
        verifier_called: bool,
    }

    fn base(rule: &'static str, want: AuthDecision) -> Case {
        Case {
            rule,
            method: "POST",
            path: "/v1/models/m:predict",
            accept: None,
            cookie: None,
            authorization: None,
            namespace: "open",
            isvc: "m",
            want,
            verifier_called: false,
        }
    }

    fn sealed(
        codec: &SessionCodec,
        s: &AuthSettings,
        identity: Identity,
        expires_at: u64,
    ) -> String {
        codec.seal_session(
            &s.cookie_name,
            &Session {
                identity,
                expires_at,
            },
        )
    }

    /// Each rule of `decide`, one row each, with the fake verifier and a fixed clock.
    #[test]
    fn decision_table() {
        let s = settings();
        let codec = SessionCodec::new(&s.cookie_secrets);
        let alice = sealed(&codec, &s, id("alice@example.com", &["ml"]), NOW + 60);
        let bob = sealed(&codec, &s, id("bob@example.com", &[]), NOW + 60);
        let dave = sealed(&codec, &s, id("dave@example.com", &["ops"]), NOW + 60);
        let expired = sealed(&codec, &s, id("alice@example.com", &[]), NOW);
        let newline_user = sealed(&codec, &s, id("alice@example.com\r\nx: y", &[]), NOW + 60);
        let other_key = SessionCodec::new(&[crate::config::Secret::new("k".repeat(40))]);
        let forged = sealed(&other_key, &s, id("admin", &[]), NOW + 60);
        let session_cookie = |v: &str| Some(format!("authservice_session={v}"));
        let bearer = |v: &str| Some(format!("Bearer {v}"));
        let allow = |u: &str, g: &[&str]| AuthDecision::Allow(id(u, g));
        let d = |status: u16, reason: &str| AuthDecision::Deny {
            status,
            reason: reason.into(),
        };

        let cases = vec![
            Case { path: "/healthz", ..base("a skip path needs no credentials", AuthDecision::Anonymous) },
            Case { path: "/healthz/live?x=1", ..base("a skip path covers its sub-paths", AuthDecision::Anonymous) },
            Case {
                path: "/healthz/../v1/models/m:predict",
                ..base("a dot segment does not escape auth through a skip path", d(401, NO_CREDENTIALS))
            },
            Case {
                path: "/healthz/x",
                authorization: Some("Basic Zm9vOmJhcg==".into()),
                ..base("a skip path ignores even a bad Authorization header", AuthDecision::Anonymous)
            },
            Case { namespace: "public", ..base("a disabled namespace policy is anonymous", AuthDecision::Anonymous) },
            Case {
                namespace: "team",
                isvc: "demo",
                ..base("a disabled isvc policy overrides its namespace policy", AuthDecision::Anonymous)
            },
            Case { ..base("no credentials from an API client is a 401", d(401, NO_CREDENTIALS)) },
            Case {
                method: "GET",
                accept: Some("text/html,application/xhtml+xml,*/*;q=0.8"),
                ..base("no credentials from a browser GET starts the login", AuthDecision::Login)
            },
            Case {
                method: "GET",
                accept: Some("TEXT/HTML; q=0.9"),
                ..base("Accept is matched case-insensitively, ignoring parameters", AuthDecision::Login)
            },
            Case {
                method: "POST",
                accept: Some("text/html"),
                ..base("a browser POST gets a 401, not a redirect that would lose its body", d(401, NO_CREDENTIALS))
            },
            Case {
                method: "GET",
                accept: Some("*/*"),
                ..base("curl's */* is not a browser", d(401, NO_CREDENTIALS))
            },
            Case {
                cookie: session_cookie(&alice),
                ..base("a valid session cookie allows", allow("alice@example.com", &["ml"]))
            },
            Case {
                cookie: Some(format!("authservice_session=stale; other=1; authservice_session={alice}")),
                ..base("the first session cookie that opens wins", allow("alice@example.com", &["ml"]))
            },
            Case {
                cookie: session_cookie(&expired),
                ..base("an expired session cookie from an API client is a 401", d(401, "session expired"))
            },
            Case {
                cookie: session_cookie(&forged),
                ..base("a forged session cookie is a 401", d(401, "invalid session"))
            },
            Case {
                method: "GET",
                accept: Some("text/html"),
                cookie: session_cookie(&expired),
                ..base("an expired session cookie from a browser starts the login", AuthDecision::Login)
            },
            Case {
                cookie: Some(format!("authservice_session_state_abcdefgh={alice}")),
                ..base("a session value under another cookie name is not a session", d(401, NO_CREDENTIALS))
            },
            Case {
                authorization: bearer(&alice),
                ..base("a session value is accepted as a bearer token", allow("alice@example.com", &["ml"]))
            },
            Case {
                authorization: Some(format!("bearer   {alice} ")),
                ..base("the Bearer scheme is case-insensitive", allow("alice@example.com", &["ml"]))
            },
            Case {
                authorization: bearer(&expired),
                ..base("an expired session as a bearer is a 401 without asking the verifier", d(401, "session expired"))
            },
            Case {
                authorization: bearer(JWT_ALICE),
                verifier_called: true,
                ..base("a JWT that is not a session goes to the verifier", allow("alice@example.com", &["ml"]))
            },
            Case {
                authorization: bearer("eyJ.forged.sig"),
                cookie: session_cookie(&alice),
                verifier_called: true,
                ..base(
                    "a bad bearer is a 401 even with a valid cookie (no fallback)",
                    d(401, "invalid bearer token: signature mismatch"),
                )
            },
            Case {
                authorization: Some("Basic Zm9vOmJhcg==".into()),
                cookie: session_cookie(&alice),
                ..base("a non-Bearer Authorization is a 401 even with a valid cookie", d(401, "the Authorization header is not a Bearer token"))
            },
            Case {
                authorization: Some("Bearer".into()),
                ..base("an empty bearer token is a 401", d(401, "the Authorization header is not a Bearer token"))
            },
            Case {
                method: "GET",
                accept: Some("text/html"),
                authorization: bearer("eyJ.forged.sig"),
                verifier_called: true,
                ..base("a bad bearer from a browser is a 401, not a login", d(401, "invalid bearer token: signature mismatch"))
            },
            Case {
                cookie: session_cookie(&newline_user),
                ..base(
                    "a user id with control characters is a 400",
                    d(400, "user id contains control characters or surrounding spaces"),
                )
            },
            Case {
                authorization: bearer(JWT_BAD_GROUP),
                verifier_called: true,
                ..base(
                    "a group containing ',' is a 400 (it would split into two groups upstream)",
                    d(400, "group \"ml,admins\" cannot be forwarded (control characters, ',' or surrounding spaces)"),
                )
            },
            Case {
                namespace: "nopolicy",
                cookie: session_cookie(&dave),
                ..base("without a policy every authenticated user is allowed", allow("dave@example.com", &["ops"]))
            },
            Case {
                namespace: "team",
                cookie: session_cookie(&alice),
                ..base("a listed user is allowed (case-insensitively)", allow("alice@example.com", &["ml"]))
            },
            Case {
                namespace: "team",
                cookie: session_cookie(&dave),
                ..base("a user outside the users and groups lists is a 403", d(403, "user dave@example.com may not call namespace team"))
            },
            Case {
                namespace: "team",
                isvc: "other",
                cookie: session_cookie(&sealed(&codec, &s, id("erin@example.com", &["ml"]), NOW + 60)),
                ..base("a member of a listed group is allowed", allow("erin@example.com", &["ml"]))
            },
            Case {
                namespace: "team",
                isvc: "secret",
                cookie: session_cookie(&alice),
                ..base("the isvc policy replaces the namespace policy", d(403, "user alice@example.com may not call team/secret"))
            },
            Case {
                namespace: "team",
                isvc: "secret",
                cookie: session_cookie(&bob),
                ..base("the isvc policy's own users are allowed", allow("bob@example.com", &[]))
            },
        ];

        for c in cases {
            let req = RequestInfo {
                method: c.method,
                path: c.path,
                accept: c.accept,
                cookie: c.cookie.as_deref(),
                authorization: c.authorization.as_deref(),
                namespace: c.namespace,
                isvc: c.isvc,
            };
            let mut called = false;
            let mut verifier = |t: &str| {
                called = true;
                verify(t)
            };
            let got = decide(&s, &codec, &req, NOW, &mut verifier);
            assert_eq!(got, c.want, "rule: {}", c.rule);
            assert_eq!(called, c.verifier_called, "verifier call, rule: {}", c.rule);
        }
    }

    /// A missing credential gets a bare Bearer challenge; a refused one says invalid_token with
    /// a description free of quotes; 403 and 400 get none.
    #[test]
    fn www_authenticate() {
        assert_eq!(
            deny(401, NO_CREDENTIALS).www_authenticate().as_deref(),
            Some("Bearer realm=\"modelgate\"")
        );
        assert_eq!(
            deny(401, "bad \"sig\"\n").www_authenticate().as_deref(),
            Some("Bearer realm=\"modelgate\", error=\"invalid_token\", error_description=\"bad sig\"")
        );
        assert_eq!(deny(403, "no").www_authenticate(), None);
        assert_eq!(AuthDecision::Login.www_authenticate(), None);
    }
}
