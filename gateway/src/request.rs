//! Pure decisions about one request: which host it names, its request id, the forwarding
//! headers. They take plain values so they are unit-tested without sockets.

use http::HeaderValue;
use pingora::http::RequestHeader;

/// The request's host, normalised, or why there is none. HTTP/1.1 must carry exactly one `Host`
/// (RFC 9112 §3.2); HTTP/2 may carry `:authority` instead, which pingora puts in the URI. Also
/// returns the `Host` header as sent (for `X-Forwarded-Host`), `None` when the authority was
/// used.
pub fn request_host(req: &RequestHeader) -> Result<(String, Option<HeaderValue>), String> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let (raw, header) = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("more than one Host header".into()),
        (Some(h), None) => (
            h.to_str()
                .map_err(|_| "Host header is not ASCII".to_string())?,
            Some(h.clone()),
        ),
        (None, _) => match req.uri.authority() {
            Some(a) => (a.as_str(), None),
            None => return Err("no Host header".into()),
        },
    };
    let host = routes::normalize_host(raw).map_err(|e| e.to_string())?;
    Ok((host, header))
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

/// A random request id in UUID v4 form.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = fastrand::u128(..);
    let v = (v & !(0xf000u128 << 64)) | (0x4000u128 << 64); // version 4
    let v = (v & !(0xc000u128 << 48)) | (0x8000u128 << 48); // RFC 4122 variant
    let mut out = [0u8; 36];
    let mut nibble = 32;
    for (i, b) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *b = b'-';
        } else {
            nibble -= 1;
            *b = HEX[((v >> (nibble * 4)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

/// `X-Forwarded-For` for the upstream: the client's chain with the peer appended, as Envoy and
/// nginx do; the last entry is the one the gateway vouches for.
pub fn forwarded_for(existing: Option<&str>, peer_ip: Option<std::net::IpAddr>) -> Option<String> {
    let peer = peer_ip.map(|ip| ip.to_string());
    match (existing.map(str::trim).filter(|s| !s.is_empty()), peer) {
        (Some(e), Some(p)) => Some(format!("{e}, {p}")),
        (Some(e), None) => Some(e.to_string()),
        (None, p) => p,
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

    /// One Host names the host, normalised.
    #[test]
    fn single_host() {
        assert_eq!(
            request_host(&req(&["Sklearn-Iris.kserve-test.example.com:8080"], "/")),
            Ok((
                "sklearn-iris.kserve-test.example.com".into(),
                Some(HeaderValue::from_static(
                    "Sklearn-Iris.kserve-test.example.com:8080"
                ))
            ))
        );
    }

    /// Missing, duplicate or malformed Host is refused with the reason.
    #[test]
    fn bad_hosts() {
        assert_eq!(request_host(&req(&[], "/")), Err("no Host header".into()));
        assert_eq!(
            request_host(&req(&["a.com", "b.com"], "/")),
            Err("more than one Host header".into())
        );
        assert_eq!(
            request_host(&req(&["a.com", "a.com"], "/")),
            Err("more than one Host header".into())
        );
        assert!(request_host(&req(&["a b.com"], "/")).is_err());
        assert!(request_host(&req(&[""], "/")).is_err());
    }

    /// Without a Host header, the URI's authority (HTTP/2 `:authority`) is used.
    #[test]
    fn authority_fallback() {
        let mut r = req(&[], "/");
        r.set_uri("http://M.ns.example.com/v1/models/m".parse().unwrap());
        assert_eq!(request_host(&r), Ok(("m.ns.example.com".into(), None)));
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
        assert_ne!(id, new_request_id());
    }

    /// The peer is appended to the client's chain.
    #[test]
    fn x_forwarded_for() {
        let ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(forwarded_for(None, ip).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            forwarded_for(Some("1.2.3.4"), ip).as_deref(),
            Some("1.2.3.4, 10.0.0.1")
        );
        assert_eq!(forwarded_for(Some("  "), ip).as_deref(), Some("10.0.0.1"));
        assert_eq!(forwarded_for(None, None), None);
    }
}
