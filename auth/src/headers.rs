//! The identity headers (`kubeflow-userid`, `kubeflow-groups` by default): recognising every
//! spelling a client might use to spoof them, and refusing values that would not survive the
//! trip to the upstream unchanged. With Istio + oidc-authservice, a request on a path that
//! skipped auth kept whatever `kubeflow-userid` the client sent; the gateway strips these on
//! every path.

use crate::config::AuthSettings;
use crate::session::Identity;

/// True when `name` is one of the identity headers in any spelling: any case, `_` for `-` (the
/// gateway removes all of them from the client's request, on every path, before setting its
/// own). The spellings are the ways proxies and frameworks conflate names: nginx with
/// `underscores_in_headers`, CGI/WSGI environments, Envoy options. Runs for every header of
/// every request, so it compares in place instead of normalising into new strings.
pub fn is_identity_header(name: &str, identity_headers: &[&str]) -> bool {
    fn fold(b: u8) -> u8 {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    }
    let name = name.trim().as_bytes();
    identity_headers.iter().any(|h| {
        let h = h.trim().as_bytes();
        h.len() == name.len() && h.iter().zip(name).all(|(a, b)| fold(*a) == fold(*b))
    })
}

/// The configured identity header names, for [`is_identity_header`].
pub fn identity_headers(settings: &AuthSettings) -> [&str; 2] {
    [&settings.userid_header, &settings.groups_header]
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

/// The identity headers the gateway sets for an allowed request: the user id (with the
/// configured prefix, as oidc-authservice did) and the groups joined with ",". `decide` has
/// already refused values for which these would be unsafe.
pub fn identity_header_values(
    settings: &AuthSettings,
    identity: &Identity,
) -> [(String, String); 2] {
    [
        (
            settings.userid_header.clone(),
            format!("{}{}", settings.userid_prefix, identity.user),
        ),
        (settings.groups_header.clone(), identity.groups.join(",")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case and `_`/`-` spelling of an identity header is recognised; other headers are not.
    #[test]
    fn identity_header_spellings() {
        let ids = ["kubeflow-userid", "kubeflow-groups"];
        for name in [
            "kubeflow-userid",
            "Kubeflow-Userid",
            "KUBEFLOW-USERID",
            "kubeflow_userid",
            "Kubeflow_UserID",
            "kubeflow-groups",
            "KUBEFLOW_GROUPS",
        ] {
            assert!(is_identity_header(name, &ids), "{name}");
        }
        for name in [
            "kubeflow-userid2",
            "kubeflowuserid",
            "x-kubeflow-userid",
            "authorization",
            "",
        ] {
            assert!(!is_identity_header(name, &ids), "{name}");
        }
    }

    /// Configured names are compared in the same canonical form, whatever case they were written in.
    #[test]
    fn configured_names_are_canonicalised_too() {
        assert!(is_identity_header("x-user", &["X_User"]));
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

    /// The user id gets the prefix; groups are joined with a comma.
    #[test]
    fn header_values_for_identity() {
        let mut settings =
            crate::config::test_settings(serde_json::json!({"userid_prefix": "oidc:"}));
        settings.groups_header = "kubeflow-groups".into();
        let id = Identity {
            user: "u@x.com".into(),
            groups: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            identity_header_values(&settings, &id),
            [
                ("kubeflow-userid".to_owned(), "oidc:u@x.com".to_owned()),
                ("kubeflow-groups".to_owned(), "a,b".to_owned())
            ]
        );
    }
}
