//! Headers a client must never hand a model server: the gateway's identity headers
//! (`kubeflow-userid`, `kubeflow-groups` by default) and the identity headers other gateways set
//! that applications behind KServe commonly trust (oauth2-proxy's `X-Forwarded-User`,
//! `X-Auth-Request-*`, Envoy's `X-Envoy-*`, ...), recognised in every spelling a client might
//! use to spoof them; and the values that would not survive the trip upstream unchanged. With
//! Istio + oidc-authservice, a request on a path that skipped auth kept whatever
//! `kubeflow-userid` the client sent; the gateway strips these on every path, auth or not.

/// What `strip_request_headers` holds when the config does not set it. A trailing `*` is a
/// prefix.
pub const DEFAULT_STRIP: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-auth-request-*",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-original-uri",
    "x-envoy-*",
];

/// Always stripped, whatever the config says: RFC 7239's `Forwarded`, whose `host`/`proto`
/// would contradict the `X-Forwarded-Host`/`-Proto` the gateway sets, and those two (the
/// gateway sets its own; a client's copy in another spelling must not survive next to it).
const ALWAYS_STRIP: &[&str] = &["forwarded", "x-forwarded-host", "x-forwarded-proto"];

/// `_` reads as `-` and case does not matter: the ways proxies and frameworks conflate names
/// (nginx with `underscores_in_headers`, CGI/WSGI environments, Envoy options).
fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

fn same_spelling(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// True when `name` is one of `identity_headers` in any spelling: any case, `_` for `-`.
pub fn is_identity_header(name: &str, identity_headers: &[&str]) -> bool {
    let name = name.trim().as_bytes();
    identity_headers
        .iter()
        .any(|h| same_spelling(h.trim().as_bytes(), name))
}

/// The names stripped from every client request before it goes upstream, matched in every
/// spelling. Built once at start; matching runs for every header of every request, so it
/// compares in place instead of normalising into new strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripList {
    exact: Vec<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
    /// The (folded) first bytes of every entry: most headers of a request start with another
    /// letter and are passed over without a comparison.
    first: [bool; 256],
}

impl StripList {
    /// The identity headers, the always-stripped ones and `configured` (the default list when
    /// the config leaves it out). An entry that is not a header name (or a prefix of one with
    /// a trailing `*`) is an error naming it.
    pub fn new(identity_headers: [&str; 2], configured: &[String]) -> Result<StripList, String> {
        let mut list = StripList {
            exact: Vec::new(),
            prefixes: Vec::new(),
            first: [false; 256],
        };
        let fixed = identity_headers
            .into_iter()
            .chain(ALWAYS_STRIP.iter().copied());
        for entry in fixed.chain(configured.iter().map(String::as_str)) {
            let (name, prefix) = match entry.strip_suffix('*') {
                Some(p) => (p, true),
                None => (entry, false),
            };
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(format!(
                    "{entry:?} is not a header name (or a prefix of one ending in '*')"
                ));
            }
            let folded: Vec<u8> = name.bytes().map(fold).collect();
            list.first[folded[0] as usize] = true;
            let into = if prefix {
                &mut list.prefixes
            } else {
                &mut list.exact
            };
            if !into.contains(&folded) {
                into.push(folded);
            }
        }
        Ok(list)
    }

    /// With the default list.
    pub fn with_defaults(identity_headers: [&str; 2]) -> StripList {
        let defaults: Vec<String> = DEFAULT_STRIP.iter().map(|s| s.to_string()).collect();
        Self::new(identity_headers, &defaults).expect("the default strip list is valid")
    }

    /// Whether a client header of this name is removed.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        if !name.first().is_some_and(|b| self.first[fold(*b) as usize]) {
            return false;
        }
        self.exact.iter().any(|e| same_spelling(e, name))
            || self
                .prefixes
                .iter()
                .any(|p| name.len() >= p.len() && same_spelling(p, &name[..p.len()]))
    }
}

/// Values with control characters (or non-visible ASCII other than space/tab) are refused,
/// never forwarded.
///
/// Also refused: leading or trailing space/tab, because HTTP parsers trim them and the upstream
/// would see a different identity (" admin" as "admin"). Non-ASCII printable text (UTF-8 names
/// and groups) is allowed: it is not a control character and `http::HeaderValue` carries it.
pub fn safe_header_value(v: &str) -> bool {
    v.chars().all(|c| c == ' ' || c == '\t' || !c.is_control())
        && !v.starts_with([' ', '\t'])
        && !v.ends_with([' ', '\t'])
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 2] = ["kubeflow-userid", "kubeflow-groups"];

    /// Every case and `_`/`-` spelling of an identity header is recognised; other headers are not.
    #[test]
    fn identity_header_spellings() {
        for name in [
            "kubeflow-userid",
            "Kubeflow-Userid",
            "KUBEFLOW-USERID",
            "kubeflow_userid",
            "Kubeflow_UserID",
            "kubeflow-groups",
            "KUBEFLOW_GROUPS",
        ] {
            assert!(is_identity_header(name, &IDS), "{name}");
        }
        for name in [
            "kubeflow-userid2",
            "kubeflowuserid",
            "x-kubeflow-userid",
            "authorization",
            "",
        ] {
            assert!(!is_identity_header(name, &IDS), "{name}");
        }
    }

    /// Configured names are compared in the same canonical form, whatever case they were written in.
    #[test]
    fn configured_names_are_canonicalised_too() {
        assert!(is_identity_header("x-user", &["X_User"]));
    }

    /// The default list strips the identity headers, every gateway's user headers (prefixes
    /// included) and `Forwarded`, in any spelling; ordinary headers pass.
    #[test]
    fn default_strip_list() {
        let list = StripList::with_defaults(IDS);
        for name in [
            "kubeflow-userid",
            "KUBEFLOW_GROUPS",
            "x-forwarded-user",
            "X-Forwarded-Email",
            "x_forwarded_groups",
            "x-forwarded-preferred-username",
            "x-forwarded-access-token",
            "x-auth-request-user",
            "X-Auth-Request-Email",
            "x_auth_request_access_token",
            "x-forwarded-uri",
            "x-forwarded-prefix",
            "x-original-uri",
            "x-envoy-original-path",
            "X-Envoy-Internal",
            "forwarded",
            "Forwarded",
            "x-forwarded-host",
            "x_forwarded_proto",
        ] {
            assert!(list.matches(name), "{name}");
        }
        for name in [
            "x-forwarded-for",
            "x-request-id",
            "authorization",
            "content-type",
            "x-auth-request",
            "x-envoy",
            "x-forwarded-users",
            "forwarded-for",
        ] {
            assert!(!list.matches(name), "{name}");
        }
    }

    /// A configured list replaces the defaults but never the identity or forwarding headers;
    /// entries must be header names.
    #[test]
    fn configured_strip_list() {
        let list = StripList::new(IDS, &["x-remote-user".into(), "x-team-*".into()]).unwrap();
        assert!(list.matches("X_Remote_User"));
        assert!(list.matches("x-team-id"));
        assert!(list.matches("kubeflow-userid"));
        assert!(list.matches("forwarded"));
        assert!(
            !list.matches("x-forwarded-user"),
            "the defaults are replaced"
        );
        assert!(StripList::new(IDS, &["bad header".into()]).is_err());
        assert!(StripList::new(IDS, &["*".into()]).is_err());
        assert!(StripList::new(IDS, &["".into()]).is_err());
    }

    /// Control characters, DEL and surrounding whitespace are refused; inner spaces, tabs and
    /// UTF-8 text are allowed.
    #[test]
    fn header_values() {
        for ok in [
            "user@example.com",
            "a b",
            "a\tb",
            "José",
            "",
            "kubeflow-user-example-com",
        ] {
            assert!(safe_header_value(ok), "{ok:?}");
        }
        for bad in [
            "a\r\nx-injected: 1",
            "a\n",
            "a\0",
            "a\x7f",
            "a\u{85}",
            "\x1b[31m",
            " admin",
            "admin ",
            "\tadmin",
        ] {
            assert!(!safe_header_value(bad), "{bad:?}");
        }
    }
}
