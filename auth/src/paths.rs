//! Request-path normalisation for skip-path matching. oidc-authservice matched skip URLs with a
//! plain string prefix on the raw path, so `/healthz/../private` or `/healthzfoo` slipped past
//! auth. Here the path is decoded and resolved first, and matched on whole segments; anything
//! ambiguous is not normalised at all, which means "not skipped": auth applies.

use percent_encoding::percent_decode_str;

/// Normalises a request path for skip-path matching: percent-decodes, resolves `.`/`..`
/// segments, collapses `//`, drops the query. Returns None for paths that are not absolute or
/// decode to something invalid (NUL, bad UTF-8, encoded '/' is decoded then treated as a
/// separator).
///
/// Also None (auth applies) when the decoded path holds a control character, a backslash
/// (some upstreams treat it as a separator, so `/healthz/..\private` could mean `/private`), or
/// a '%' (double encoding: an upstream that decodes twice would see another path). A trailing
/// slash is kept.
pub fn normalize(raw: &str) -> Option<String> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return None;
    }
    let decoded = percent_decode_str(path).decode_utf8().ok()?;
    if decoded
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '%')
    {
        return None;
    }

    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split('/') {
        trailing_slash = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Whole-segment prefix match of a normalised path against normalised skip paths: `/healthz`
/// skips `/healthz` and `/healthz/x`, not `/healthzfoo`; `/healthz/../private` is `/private` and
/// is not skipped.
pub fn is_skipped(path: &str, skip_paths: &[String]) -> bool {
    skip_paths.iter().any(|skip| {
        let skip = skip.trim_end_matches('/');
        skip.is_empty()
            || path
                .strip_prefix(skip)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Normalises a raw request path and matches it: the check `decide` uses. Without skip paths
/// (the default) there is nothing to normalise for, on every request.
pub fn raw_path_is_skipped(raw: &str, skip_paths: &[String]) -> bool {
    !skip_paths.is_empty() && normalize(raw).is_some_and(|p| is_skipped(&p, skip_paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding, dot segments, duplicate slashes and the query are resolved; ambiguous or
    /// invalid paths give None.
    #[test]
    fn normalize_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/", Some("/")),
            ("/healthz", Some("/healthz")),
            ("/healthz/", Some("/healthz/")),
            ("/healthz?x=/../y", Some("/healthz")),
            ("/healthz#frag", Some("/healthz")),
            ("/./healthz", Some("/healthz")),
            ("//healthz", Some("/healthz")),
            ("/a//b///c", Some("/a/b/c")),
            ("/healthz/../private", Some("/private")),
            ("/healthz/%2e%2e/private", Some("/private")),
            ("/healthz/%2E%2E/private", Some("/private")),
            ("/healthz/.%2e/private", Some("/private")),
            ("/healthz%2f..%2fprivate", Some("/private")),
            ("/healthz%2F..%2Fprivate", Some("/private")),
            ("/..", Some("/")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/a/b/..", Some("/a/")),
            ("/a/.", Some("/a/")),
            ("/caf%C3%A9", Some("/café")),
            (
                "/v1/models/sklearn-iris:predict",
                Some("/v1/models/sklearn-iris:predict"),
            ),
            ("", None),
            ("healthz", None),
            ("*", None),
            ("http://evil/healthz", None),
            ("/healthz%00", None),
            ("/healthz%0a", None),
            ("/bad%ff", None),
            ("/healthz/..\\private", None),
            ("/healthz/..%5cprivate", None),
            ("/healthz/%252e%252e/private", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), *want, "{raw:?}");
        }
    }

    /// Skip paths match whole segments of the normalised path only.
    #[test]
    fn is_skipped_table() {
        let skip = vec!["/healthz".to_owned(), "/dex".to_owned()];
        let cases: &[(&str, bool)] = &[
            ("/healthz", true),
            ("/healthz/", true),
            ("/healthz/x", true),
            ("/./healthz", true),
            ("//healthz", true),
            ("/healthz?probe=1", true),
            ("/dex/auth", true),
            ("/healthzfoo", false),
            ("/healthz-private", false),
            ("/healthz/../private", false),
            ("/healthz/%2e%2e/private", false),
            ("/healthz/%2E%2E/private", false),
            ("/healthz%2f..%2fprivate", false),
            ("/healthz/..%5cprivate", false),
            ("/private", false),
            ("/", false),
            ("/Healthz", false),
        ];
        for (raw, want) in cases {
            assert_eq!(raw_path_is_skipped(raw, &skip), *want, "{raw:?}");
        }
    }

    /// A skip path written with a trailing slash matches the same as without one.
    #[test]
    fn trailing_slash_in_skip_path() {
        let skip = vec!["/static/".to_owned()];
        assert!(is_skipped("/static", &skip));
        assert!(is_skipped("/static/app.js", &skip));
        assert!(!is_skipped("/staticfoo", &skip));
    }
}
