//! Skip paths. oidc-authservice matched them with a plain string prefix on the raw path, so
//! `/healthz/../private` or `/healthzfoo` slipped past auth. Here they match whole segments of
//! the path the gateway has already normalised (`routes::request::normalize_path`), which is
//! also the path it forwards: what skipped auth is exactly what the model server sees.

/// A path as the gateway's normaliser leaves one: absolute, no empty, `.` or `..` segment, and
/// none of `%`, `;`, `\`, `?`, `#` or control characters. Paths the gateway serves itself and
/// skip paths must be plain, or no request could ever match them.
pub fn is_plain(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    !p.chars()
        .any(|c| c.is_control() || matches!(c, '%' | ';' | '\\' | '?' | '#' | ' '))
        && segments.iter().enumerate().all(|(i, s)| match *s {
            "." | ".." => false,
            // Only a trailing slash leaves an empty segment.
            "" => i == last,
            _ => true,
        })
}

/// Whole-segment prefix match of a normalised path against the skip paths: `/healthz` skips
/// `/healthz` and `/healthz/x`, not `/healthzfoo` nor `/healthz;x`.
pub fn is_skipped(path: &str, skip_paths: &[String]) -> bool {
    skip_paths.iter().any(|skip| {
        let skip = skip.trim_end_matches('/');
        skip.is_empty()
            || path
                .strip_prefix(skip)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain paths are what normalisation produces; anything it would change is not plain.
    #[test]
    fn plain_paths() {
        for ok in [
            "/",
            "/healthz",
            "/healthz/",
            "/a/b.c/d",
            "/v2/health/ready",
            "/caf\u{e9}",
        ] {
            assert!(is_plain(ok), "{ok:?}");
        }
        for bad in [
            "",
            "healthz",
            "//healthz",
            "/a//b",
            "/./a",
            "/a/..",
            "/a/../b",
            "/a%2e",
            "/a;b",
            "/a\\b",
            "/a?x",
            "/a#x",
            "/a\n",
            "/a b",
        ] {
            assert!(!is_plain(bad), "{bad:?}");
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
            ("/dex/auth", true),
            ("/healthzfoo", false),
            ("/healthz-private", false),
            ("/healthz;x=y", false),
            ("/private", false),
            ("/", false),
            ("/Healthz", false),
        ];
        for (path, want) in cases {
            assert_eq!(is_skipped(path, &skip), *want, "{path:?}");
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
