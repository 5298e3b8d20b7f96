//! Pure decisions about one request: which host it names, what target goes upstream, its
//! request id, the forwarding headers. They take plain values so they are unit-tested without
//! sockets; the rules themselves live in `routes::request` and `routes::host`.

use http::HeaderValue;
use pingora::http::RequestHeader;

/// The authority a request names, as sent, or why there is none; with the `Host` header
/// itself (for `X-Forwarded-Host`), `None` when only the target's authority was sent. HTTP/1.1
/// must carry exactly one `Host` (RFC 9112 §3.2). An authority in the target (absolute form, or
/// HTTP/2's `:authority`, which pingora puts in the URI) is what routes (RFC 9112 §3.2.2); a
/// `Host` that names another host next to it is refused rather than ignored, so that no hop
/// can route by one and authorise by the other.
pub fn request_authority(req: &RequestHeader) -> Result<(&str, Option<HeaderValue>), String> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("more than one Host header".into()),
        (Some(h), None) => Some(h),
        (None, _) => None,
    };
    let host = header
        .map(|h| {
            h.to_str()
                .map_err(|_| "Host header is not ASCII".to_string())
        })
        .transpose()?;
    // HTTP/2 keeps `:authority` in the URI; pingora keeps only the path of an absolute-form
    // HTTP/1 target in the URI and the whole target in `raw_path`.
    let target = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| routes::request::absolute_form_authority(req.raw_path()));
    match (target, host) {
        (Some(target), Some(h)) => {
            let name = |v: &str| routes::normalize_host(v).map(|(n, _)| n).ok();
            if name(target).is_none() || name(target) != name(h) {
                return Err("Host header does not match the request target".into());
            }
            Ok((target, header.cloned()))
        }
        (Some(target), None) => Ok((target, None)),
        (None, Some(h)) => Ok((h, header.cloned())),
        (None, None) => Err("no Host header".into()),
    }
}

/// The target the upstream gets when it is not the one received: the normalised path (and the
/// query as sent), in origin form. `None` when the client's target goes on unchanged, which is
/// what clients send. Refuses targets and heads that `routes::request` refuses. `raw_target` is
/// the target as it was on the request line (the parsed one has lost any fragment).
pub fn forwarded_target(
    req: &RequestHeader,
    raw_target: &[u8],
) -> Result<Option<http::uri::PathAndQuery>, routes::request::HeadError> {
    use routes::request::{check_framing, check_target, normalize_path, HeadError};
    check_framing(req.version, &req.headers)?;
    check_target(raw_target)?;
    let path = normalize_path(req.uri.path())?;
    let as_received = req
        .uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str().as_bytes() == req.raw_path());
    if as_received && matches!(path, std::borrow::Cow::Borrowed(_)) {
        return Ok(None);
    }
    let target = match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    target.parse().map(Some).map_err(|_| HeadError::NotAPath)
}

/// Keeps a client's `X-Request-Id` when it is a sane token (so traces join up across hops),
/// else makes a new one. Sane: 1 to 128 of `[A-Za-z0-9._:-]`, nothing that could smuggle a
/// header or break a log line. A header value, because it is sent twice (upstream and back to
/// the client) and a clone of one costs no copy.
pub fn request_id(
    client: Option<&HeaderValue>,
    fresh: impl FnOnce() -> HeaderValue,
) -> HeaderValue {
    match client {
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.as_bytes().iter().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            v.clone()
        }
        _ => fresh(),
    }
}

/// A random request id in UUID v4 form. A byte at a time through a table of digit pairs: the
/// id is made on every request.
pub fn new_request_id() -> HeaderValue {
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        t
    };
    let mut v = fastrand::u128(..).to_be_bytes();
    v[6] = (v[6] & 0x0f) | 0x40; // version 4
    v[8] = (v[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in v.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the dash
        }
        out[at..at + 2].copy_from_slice(&PAIRS[*b as usize]);
        at += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

/// `X-Forwarded-For` for the upstream: the client's chain with the peer appended, as Envoy and
/// nginx do; the last entry is the one the gateway vouches for.
/// `peer` is the client's address as a header value, made once per connection: with no chain
/// from the client (the usual case at an edge) it goes on as is.
pub fn forwarded_for(existing: Option<&str>, peer: Option<&HeaderValue>) -> Option<HeaderValue> {
    match (existing.map(str::trim).filter(|s| !s.is_empty()), peer) {
        (Some(e), Some(p)) => {
            HeaderValue::from_str(&format!("{e}, {}", p.to_str().unwrap_or_default())).ok()
        }
        (Some(e), None) => HeaderValue::from_str(e).ok(),
        (None, p) => p.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(hosts: &[&str], uri: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for h in hosts {
            r.append_header("Host", *h).unwrap();
        }
        r
    }

    /// One Host names the authority, as sent.
    #[test]
    fn single_host() {
        let r = req(&["Sklearn-Iris.kserve-test.example.com:8080"], "/");
        let (authority, header) = request_authority(&r).unwrap();
        assert_eq!(authority, "Sklearn-Iris.kserve-test.example.com:8080");
        assert_eq!(header.unwrap(), "Sklearn-Iris.kserve-test.example.com:8080");
    }

    /// Missing or duplicate Host is refused with the reason.
    #[test]
    fn bad_hosts() {
        let err = |hosts: &[&str]| request_authority(&req(hosts, "/")).unwrap_err();
        assert_eq!(err(&[]), "no Host header");
        assert_eq!(err(&["a.com", "b.com"]), "more than one Host header");
        assert_eq!(err(&["a.com", "a.com"]), "more than one Host header");
    }

    /// The target's authority (absolute form, HTTP/2 `:authority`) routes; a Host naming
    /// another host next to it is refused, the same host in another spelling is not.
    #[test]
    fn target_authority() {
        let mut r = req(&[], "/");
        r.set_uri("http://M.ns.example.com/v1/models/m".parse().unwrap());
        assert_eq!(request_authority(&r).unwrap(), ("M.ns.example.com", None));
        let r = req(&["m.ns.example.com:8080"], "http://M.ns.example.com/v1");
        assert_eq!(request_authority(&r).unwrap().0, "M.ns.example.com");
        let r = req(&[], "http://M.ns.example.com:8080?x");
        assert_eq!(
            request_authority(&r).unwrap(),
            ("M.ns.example.com:8080", None)
        );
        let r = req(&["other.example.com"], "http://m.ns.example.com/v1");
        assert_eq!(
            request_authority(&r).unwrap_err(),
            "Host header does not match the request target"
        );
    }

    /// Clients' usual targets go on untouched; a path that normalisation changes, or an
    /// absolute-form target, goes upstream as the normalised origin form with its query.
    #[test]
    fn forwarded_targets() {
        let fwd = |uri: &str| {
            forwarded_target(&req(&["h"], uri), uri.as_bytes()).map(|t| t.map(|t| t.to_string()))
        };
        assert_eq!(fwd("/v1/models/m:predict?x=1"), Ok(None));
        assert_eq!(fwd("/a/../b?x=%2F"), Ok(Some("/b?x=%2F".into())));
        assert_eq!(fwd("//a/%7e"), Ok(Some("/a/~".into())));
        assert_eq!(
            fwd("http://h.example.com/a//b?q"),
            Ok(Some("/a/b?q".into()))
        );
        assert_eq!(fwd("http://h.example.com/a"), Ok(Some("/a".into())));
        assert!(fwd("/a%2fb").is_err());
        assert!(fwd("/a#b").is_err());
    }

    /// A valid client id is kept; anything else is replaced.
    #[test]
    fn request_ids() {
        let fresh = || HeaderValue::from_static("new");
        let id = |v: &[u8]| request_id(Some(&HeaderValue::from_bytes(v).unwrap()), fresh);
        assert_eq!(id(b"abc-123_x.y:z"), "abc-123_x.y:z");
        assert_eq!(request_id(None, fresh), "new");
        assert_eq!(id(b""), "new");
        assert_eq!(id(b"a b"), "new");
        assert_eq!(id(b"a\tx: y"), "new");
        assert_eq!(id(&[b'a'; 129]), "new");
        assert_eq!(id(&[b'a'; 128]), std::str::from_utf8(&[b'a'; 128]).unwrap());
        let id = new_request_id();
        let text = id.to_str().unwrap();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        assert_eq!(text.matches('-').count(), 4);
        assert_eq!([8, 13, 18, 23].map(|i| &text[i..=i]), ["-"; 4]);
        assert!(text
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(id, new_request_id());
    }

    /// The peer is appended to the client's chain.
    #[test]
    fn x_forwarded_for() {
        let ip = HeaderValue::from_static("10.0.0.1");
        let xff = |e, p| forwarded_for(e, p).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(xff(None, Some(&ip)).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            xff(Some("1.2.3.4"), Some(&ip)).as_deref(),
            Some("1.2.3.4, 10.0.0.1")
        );
        assert_eq!(xff(Some("  "), Some(&ip)).as_deref(), Some("10.0.0.1"));
        assert_eq!(xff(Some("1.2.3.4"), None).as_deref(), Some("1.2.3.4"));
        assert_eq!(xff(None, None), None);
    }
}
