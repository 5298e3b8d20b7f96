//! Stateless sessions: the identity lives in the cookie itself, sealed with AES-256-GCM (the
//! `cookie` crate's private jar, with the cookie name bound in as associated data). Any number
//! of replicas sharing the cookie secret accept each other's sessions and a restart loses
//! nothing — unlike oidc-authservice's BoltDB store, which pinned it to one replica. Rotation:
//! the first secret seals, every secret opens.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::{Cookie, CookieJar, Key};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// Sealed values longer than this are refused before any decryption is tried; browsers keep at
/// most ~4 KiB per cookie anyway.
const MAX_SEALED_LEN: usize = 8 * 1024;

/// Who the user is, as the identity headers will say it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// What the session cookie holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub identity: Identity,
    /// Unix seconds.
    pub expires_at: u64,
    /// Unix seconds, for `auth.sessions_not_before`. Sessions sealed before the field existed
    /// read as 0: older than any cut-off, so a brake pulled today refuses them too.
    #[serde(default)]
    pub issued_at: u64,
}

/// Why a session value was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Genuine, but past its `expires_at`.
    Expired,
    /// Garbage, truncated, tampered with, sealed with an unknown key or for another cookie name.
    Invalid,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionError::Expired => "session expired",
            SessionError::Invalid => "invalid session",
        })
    }
}

impl std::error::Error for SessionError {}

/// Seals and opens cookie values with the configured secrets.
pub struct SessionCodec {
    keys: Vec<Key>,
}

impl fmt::Debug for SessionCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCodec")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl SessionCodec {
    /// One key per secret, `cookie::Key::derive_from(secret bytes)` (HKDF-SHA256).
    /// `AuthConfig::validate` guarantees at least one secret of 32+ bytes; a shorter one (only
    /// possible when built by hand) is first hashed with SHA-256 rather than panicking.
    pub fn new(secrets: &[Secret]) -> Self {
        let keys = secrets
            .iter()
            .map(|s| {
                let bytes = s.expose().as_bytes();
                if bytes.len() >= 32 {
                    Key::derive_from(bytes)
                } else {
                    Key::derive_from(&Sha256::digest(bytes))
                }
            })
            .collect();
        SessionCodec { keys }
    }

    /// Authenticated encryption (the cookie crate's private jar: AES-256-GCM, the cookie name
    /// bound in) with the FIRST key. The plaintext is base64url-encoded first because the jar
    /// seals strings. Empty when the codec has no key (never after validation).
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let Some(key) = self.keys.first() else {
            return String::new();
        };
        let mut jar = CookieJar::new();
        jar.private_mut(key).add(Cookie::new(
            name.to_owned(),
            URL_SAFE_NO_PAD.encode(plaintext),
        ));
        jar.get(name)
            .map(|c| c.value().to_owned())
            .unwrap_or_default()
    }

    /// Tries every key; None for garbage, truncation, tampering, an unknown key, or a
    /// different name.
    pub fn open(&self, name: &str, sealed: &str) -> Option<Vec<u8>> {
        if sealed.is_empty() || sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let jar = CookieJar::new();
        self.keys.iter().find_map(|key| {
            let cookie = Cookie::new(name.to_owned(), sealed.to_owned());
            let opened = jar.private(key).decrypt(cookie)?;
            URL_SAFE_NO_PAD.decode(opened.value()).ok()
        })
    }

    pub fn seal_session(&self, cookie_name: &str, s: &Session) -> String {
        let json = serde_json::to_vec(s).unwrap_or_default();
        self.seal(cookie_name, &json)
    }

    /// Opens and checks a session value against the clock (`now`, unix seconds).
    pub fn open_session(
        &self,
        cookie_name: &str,
        sealed: &str,
        now: u64,
    ) -> Result<Session, SessionError> {
        let bytes = self
            .open(cookie_name, sealed)
            .ok_or(SessionError::Invalid)?;
        let session: Session = serde_json::from_slice(&bytes).map_err(|_| SessionError::Invalid)?;
        if session.expires_at <= now {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }
}

/// Set-Cookie values: HttpOnly; SameSite=Lax; Path=/; Max-Age; Secure when `secure`.
///
/// Lax, not Strict: after the provider redirects back, the browser follows our 302 to the
/// original page as part of a cross-site navigation, and a Strict cookie would not be sent on it
/// (a login loop).
pub fn session_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    cookie_header(name, value, "/", max_age.as_secs(), secure)
}

/// A Set-Cookie value that deletes `name` at `path` (Max-Age=0 and an Expires in the past for
/// old clients).
pub fn clear_cookie(name: &str, path: &str, secure: bool) -> String {
    let mut c = cookie_header(name, "", path, 0, secure);
    c.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    c
}

/// The one place cookie attributes are written, so every cookie gets HttpOnly and SameSite.
pub(crate) fn cookie_header(
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
    secure: bool,
) -> String {
    let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Every value of cookie `name` in a Cookie request header, in order (several headers may be
/// joined with "; "; a name can repeat when cookies with different paths or domains match).
/// Surrounding double quotes are removed, as RFC 6265 allows them.
pub fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header
        .split(';')
        .filter_map(move |pair| pair_value(pair, name))
}

/// Finds a cookie by name in a Cookie request header (several headers may be joined with "; ").
/// The first one wins, as browsers send the most specific path first.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| pair_value(pair, name))
}

/// Whether a cookie name is one of the gateway's own: the session cookie or a login-state
/// cookie (`{cookie_name}_state_...`).
pub fn is_gateway_cookie(name: &str, cookie_name: &str) -> bool {
    name == cookie_name
        || name
            .strip_prefix(cookie_name)
            .is_some_and(|rest| rest.starts_with("_state_"))
}

/// The `Cookie` header for the upstream: every pair of the request's `Cookie` headers (HTTP/2
/// sends one per cookie) except the gateway's own cookies, joined with "; "; `keep_session`
/// keeps the session cookie itself (`auth.forward_credentials`). `None` when nothing is
/// removed (the header goes on untouched), `Some("")` when nothing is left.
pub fn upstream_cookie(
    headers: &http::HeaderMap,
    cookie_name: &str,
    keep_session: bool,
) -> Option<String> {
    let doomed = |pair: &[u8]| {
        let name = pair
            .split(|b| *b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        std::str::from_utf8(name)
            .is_ok_and(|n| is_gateway_cookie(n, cookie_name) && !(keep_session && n == cookie_name))
    };
    let pairs = || {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
    };
    if !pairs().any(doomed) {
        return None;
    }
    let kept: Vec<String> = pairs()
        .filter(|p| !doomed(p) && !p.trim_ascii().is_empty())
        .map(|p| String::from_utf8_lossy(p.trim_ascii()).into_owned())
        .collect();
    Some(kept.join("; "))
}

/// Whether a `Set-Cookie` value from a model server sets one of the gateway's cookies (any
/// attributes, `Domain` or not): a model server must not be able to fix a user's session. A
/// nameless cookie (`=authservice_session=v`) counts too: browsers store it with an empty name
/// and send it back as `authservice_session=v` (RFC 6265bis §5.6).
pub fn sets_gateway_cookie(set_cookie: &[u8], cookie_name: &str) -> bool {
    let pair = set_cookie
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let (name, value) = match pair.iter().position(|b| *b == b'=') {
        Some(i) => (pair[..i].trim_ascii(), &pair[i + 1..]),
        None => (pair, &b""[..]),
    };
    if name.is_empty() {
        return !value.is_empty() && sets_gateway_cookie(value, cookie_name);
    }
    std::str::from_utf8(name).is_ok_and(|n| is_gateway_cookie(n, cookie_name))
}

/// The value of one `name=value` pair when its name is `name`.
fn pair_value<'a>(pair: &'a str, name: &str) -> Option<&'a str> {
    let (k, v) = pair.split_once('=')?;
    if k.trim() != name {
        return None;
    }
    let v = v.trim();
    Some(
        v.strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(c: char) -> Secret {
        Secret::new(c.to_string().repeat(32))
    }

    fn session(expires_at: u64) -> Session {
        Session {
            identity: Identity {
                user: "user@example.com".into(),
                groups: vec!["admins".into(), "ml".into()],
            },
            expires_at,
            issued_at: 5,
        }
    }

    /// A sealed value opens to the same bytes, and a sealed session to the same session.
    #[test]
    fn round_trip() {
        let codec = SessionCodec::new(&[secret('a')]);
        let sealed = codec.seal("c", b"hello \x00\xff");
        assert_eq!(
            codec.open("c", &sealed).as_deref(),
            Some(&b"hello \x00\xff"[..])
        );

        let s = session(2000);
        let sealed = codec.seal_session("authservice_session", &s);
        assert_eq!(
            codec.open_session("authservice_session", &sealed, 1000),
            Ok(s)
        );
    }

    /// Sealing twice gives different values (random nonce), both of which open.
    #[test]
    fn sealing_is_randomised() {
        let codec = SessionCodec::new(&[secret('a')]);
        let (x, y) = (codec.seal("c", b"v"), codec.seal("c", b"v"));
        assert_ne!(x, y);
        assert!(codec.open("c", &x).is_some() && codec.open("c", &y).is_some());
    }

    /// A second replica built from the same secret opens what the first sealed (no shared store).
    #[test]
    fn replicas_sharing_the_secret_agree() {
        let sealed = SessionCodec::new(&[secret('a')]).seal_session("s", &session(10));
        assert!(SessionCodec::new(&[secret('a')])
            .open_session("s", &sealed, 5)
            .is_ok());
    }

    /// Rotation: a value sealed with the old key still opens once a new key is added first,
    /// new values are sealed with the new key, and removing the old key retires old values.
    #[test]
    fn rotation() {
        let old = SessionCodec::new(&[secret('a')]);
        let sealed_old = old.seal("s", b"v");

        let rotated = SessionCodec::new(&[secret('b'), secret('a')]);
        assert_eq!(rotated.open("s", &sealed_old).as_deref(), Some(&b"v"[..]));
        let sealed_new = rotated.seal("s", b"w");
        assert_eq!(
            old.open("s", &sealed_new),
            None,
            "new values use the first key"
        );

        let retired = SessionCodec::new(&[secret('b')]);
        assert_eq!(retired.open("s", &sealed_old), None);
        assert_eq!(retired.open("s", &sealed_new).as_deref(), Some(&b"w"[..]));
    }

    /// Tampered, truncated, garbage and empty values do not open.
    #[test]
    fn damaged_values_do_not_open() {
        let codec = SessionCodec::new(&[secret('a')]);
        let sealed = codec.seal("s", b"some plaintext");

        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(&bytes);

        for bad in [
            tampered.as_str(),
            &sealed[..sealed.len() - 4],
            &sealed[..10],
            "garbage",
            "!!!not base64!!!",
            "",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(codec.open("s", bad), None, "{bad:?}");
            assert_eq!(
                codec.open_session("s", bad, 0),
                Err(SessionError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(codec.open("s", &"A".repeat(MAX_SEALED_LEN + 1)), None);
    }

    /// A value sealed for one cookie name does not open under another, so a state cookie cannot
    /// be replayed as a session.
    #[test]
    fn name_is_bound_in() {
        let codec = SessionCodec::new(&[secret('a')]);
        let sealed = codec.seal_session("authservice_session_state_abcdefgh", &session(10));
        assert_eq!(codec.open("authservice_session", &sealed), None);
        assert_eq!(
            codec.open_session("authservice_session", &sealed, 0),
            Err(SessionError::Invalid)
        );
    }

    /// Expiry uses the clock passed in: valid strictly before `expires_at`, expired from it on.
    #[test]
    fn expiry() {
        let codec = SessionCodec::new(&[secret('a')]);
        let sealed = codec.seal_session("s", &session(1000));
        assert!(codec.open_session("s", &sealed, 999).is_ok());
        assert_eq!(
            codec.open_session("s", &sealed, 1000),
            Err(SessionError::Expired)
        );
        assert_eq!(
            codec.open_session("s", &sealed, 5000),
            Err(SessionError::Expired)
        );
    }

    /// Genuine bytes that are not a session (another use of the same name) are Invalid.
    #[test]
    fn non_session_plaintext_is_invalid() {
        let codec = SessionCodec::new(&[secret('a')]);
        let sealed = codec.seal("s", b"{\"not\":\"a session\"}");
        assert_eq!(
            codec.open_session("s", &sealed, 0),
            Err(SessionError::Invalid)
        );
    }

    /// A codec without keys seals nothing and opens nothing, instead of panicking.
    #[test]
    fn no_keys() {
        let codec = SessionCodec::new(&[]);
        assert_eq!(codec.seal("s", b"v"), "");
        assert_eq!(codec.open("s", "anything"), None);
    }

    /// A short secret (only possible without validation) does not panic and still round-trips.
    #[test]
    fn short_secret_does_not_panic() {
        let codec = SessionCodec::new(&[Secret::new("short")]);
        let sealed = codec.seal("s", b"v");
        assert_eq!(codec.open("s", &sealed).as_deref(), Some(&b"v"[..]));
    }

    /// The session cookie is HttpOnly, SameSite=Lax, Path=/, has Max-Age, and Secure only when asked.
    #[test]
    fn session_cookie_attributes() {
        assert_eq!(
            session_cookie("authservice_session", "v", Duration::from_secs(86400), true),
            "authservice_session=v; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            session_cookie("authservice_session", "v", Duration::from_secs(60), false),
            "authservice_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
        );
    }

    /// Clearing a cookie repeats its path and expires it both ways.
    #[test]
    fn clear_cookie_attributes() {
        assert_eq!(
            clear_cookie("s_state_abc", "/authservice/oidc/callback", true),
            "s_state_abc=; Path=/authservice/oidc/callback; Max-Age=0; HttpOnly; SameSite=Lax; \
             Secure; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    /// A session sealed before `issued_at` existed opens with it at 0.
    #[test]
    fn sessions_without_issued_at_are_from_the_epoch() {
        let codec = SessionCodec::new(&[secret('a')]);
        let old = codec.seal(
            "s",
            br#"{"identity":{"user":"u","groups":[]},"expires_at":10}"#,
        );
        assert_eq!(codec.open_session("s", &old, 5).unwrap().issued_at, 0);
    }

    /// The upstream keeps every cookie but the gateway's session and login-state cookies, across
    /// several Cookie headers; the header is untouched when there is nothing to remove.
    #[test]
    fn upstream_cookies() {
        let up = |values: &[&str], keep| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(
                    http::header::COOKIE,
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            upstream_cookie(&h, "authservice_session", keep)
        };
        assert_eq!(up(&["a=1; b=2"], false), None);
        assert_eq!(up(&["authservice_sessionx=1"], false), None);
        assert_eq!(
            up(&["a=1; authservice_session=s; b=2"], false).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(
            up(
                &[
                    "authservice_session=s",
                    "authservice_session_state_abc=t",
                    "c=3"
                ],
                false
            )
            .as_deref(),
            Some("c=3")
        );
        assert_eq!(up(&["authservice_session=s"], false).as_deref(), Some(""));
        assert_eq!(
            up(&[" authservice_session =s;a=1"], false).as_deref(),
            Some("a=1")
        );
        assert_eq!(
            up(
                &["authservice_session=s; authservice_session_state_x=t"],
                true
            )
            .as_deref(),
            Some("authservice_session=s")
        );
    }

    /// A Set-Cookie for the session or a state cookie is recognised whatever its attributes.
    #[test]
    fn upstream_set_cookies() {
        let name = "authservice_session";
        for v in [
            "authservice_session=x",
            "authservice_session=x; Domain=example.com; Path=/",
            " authservice_session =x",
            "authservice_session_state_abcdefgh=y; Path=/authservice/oidc/callback",
            "authservice_session",
            "=authservice_session=x; Path=/",
            " = authservice_session=x",
            "==authservice_session=x",
        ] {
            assert!(sets_gateway_cookie(v.as_bytes(), name), "{v}");
        }
        for v in [
            "other=1",
            "authservice_sessions=1",
            "x=authservice_session",
            "Authservice_session=1",
        ] {
            assert!(!sets_gateway_cookie(v.as_bytes(), name), "{v}");
        }
    }

    /// Cookie lookup: exact name (not a prefix), joined headers, spaces, quotes, first wins,
    /// values containing '='.
    #[test]
    fn cookie_lookup() {
        let h = "a=1; authservice_session_state_x=2;authservice_session=\"v=w\"; authservice_session=later";
        assert_eq!(cookie_value(h, "authservice_session"), Some("v=w"));
        assert_eq!(cookie_value(h, "authservice_session_state_x"), Some("2"));
        assert_eq!(cookie_value(h, "a"), Some("1"));
        assert_eq!(cookie_value(h, "authservice"), None);
        assert_eq!(cookie_value("", "a"), None);
        assert_eq!(cookie_value("novalue; a", "a"), None);
        assert_eq!(
            cookie_values(h, "authservice_session").collect::<Vec<_>>(),
            ["v=w", "later"]
        );
    }
}
