//! Hostile requests, as an attacker sends them: raw sockets (a client library would clean the
//! request up) against the real gateway, and upstreams that record exactly what got through.
//! Auth-specific cases (credentials, cookies, login) are in `auth.rs`.

use crate::support::gateway::{one_revision, Gateway};
use crate::support::raw_upstream::RawUpstream;
use crate::support::upstream::Upstream;
use crate::support::RawClient;

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

async fn raw_gateway(extra: &str) -> (RawUpstream, Gateway) {
    let up = RawUpstream::start().await;
    let (m, o) = one_revision(&up.endpoint(), extra);
    let gw = Gateway::start(&m, o).await;
    (up, gw)
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /v1/models/sklearn-iris:predict HTTP/1.1\r\nHost: {IRIS}\r\n{headers}\r\n{body}")
        .into_bytes()
}

/// Two `Content-Length` lines or a list in one are refused with 400 and the connection is
/// closed; nothing reaches the upstream. One `Content-Length` goes upstream as one line.
// Blocking raw sockets: the upstream needs a runtime thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_content_lengths_are_refused() {
    let (up, gw) = raw_gateway("").await;
    for (what, headers, body) in [
        (
            "same twice",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "hello",
        ),
        ("a list", "Content-Length: 5, 5\r\n", "hello"),
        ("a list without space", "Content-Length: 5,5\r\n", "hello"),
        (
            "two values",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "hello!",
        ),
    ] {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(&post(headers, body));
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert!(c.is_closed(), "{what}: the connection must be closed");
    }
    assert_eq!(up.received(), "", "nothing reached the upstream");

    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(&post("Content-Length: 5\r\n", "hello"));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let heads = up.heads();
    assert_eq!(heads.len(), 1);
    assert_eq!(
        heads[0].matches("content-length").count(),
        1,
        "{}",
        heads[0]
    );
}

/// `Transfer-Encoding` with `Content-Length`, in either order: the body is read as chunked,
/// `Content-Length` never goes upstream, and the client connection is closed after the answer
/// (RFC 9112 §6.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_with_cl_closes_the_connection() {
    let (up, gw) = raw_gateway("").await;
    for (what, headers) in [
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
        (
            "CL then TE",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
    ] {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(&post(headers, "5\r\nhello\r\n0\r\n\r\n"));
        assert!(resp.starts_with("HTTP/1.1 200"), "{what}: {resp}");
        assert!(c.is_closed(), "{what}: the connection must be closed");
    }
    let heads = up.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for h in heads {
        assert!(!h.contains("content-length"), "{h}");
    }
    assert!(up.received().contains("hello"));
}

/// A `Transfer-Encoding` other than exactly `chunked` is refused (400, or 501 for a coding we
/// do not implement) and the connection closed; nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encodings_other_than_chunked_are_refused() {
    let (up, gw) = raw_gateway("").await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for (headers, status) in [
        ("Transfer-Encoding: chunked, chunked\r\n", "400"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "400",
        ),
        ("Transfer-Encoding: chunked,\r\n", "400"),
        ("Transfer-Encoding: gzip, chunked\r\n", "501"),
        (
            "Transfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n",
            "501",
        ),
        // Not chunked at the end: pingora's parser refuses these itself.
        ("Transfer-Encoding: identity\r\n", "400"),
        ("Transfer-Encoding: chunked, gzip\r\n", "400"),
    ] {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(&post(headers, body));
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}")),
            "{headers:?}: {resp}"
        );
        assert!(c.is_closed(), "{headers:?}: the connection must be closed");
    }
    // HTTP/1.0 has no chunked coding at all.
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(
        format!("POST / HTTP/1.0\r\nHost: {IRIS}\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
            .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(up.received(), "", "nothing reached the upstream");
}

/// A chunk extension longer than 4 KiB is refused with 400 and the connection closed; the
/// upstream never gets a complete request. A short extension is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_chunk_extensions_are_refused() {
    let (up, gw) = raw_gateway("").await;
    let mut c = RawClient::connect(gw.port);
    let ok = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(100));
    let resp = c.exchange(&post("Transfer-Encoding: chunked\r\n", &ok));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let before = up.received().len();

    for ext in [4097, 6000, 20_000] {
        let mut c = RawClient::connect(gw.port);
        let body = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(ext - 1));
        let resp = c.exchange(&post("Transfer-Encoding: chunked\r\n", &body));
        assert!(resp.starts_with("HTTP/1.1 400"), "{ext}: {resp}");
        assert!(c.is_closed(), "{ext}: the connection must be closed");
    }
    let after = up.received();
    assert!(
        !after[before..].contains("hello"),
        "no byte of a body with a long extension went upstream: {}",
        &after[before..]
    );
}

/// `#` or `%00` anywhere in the target is a 400, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_and_nul_in_the_target_are_refused() {
    let (up, gw) = raw_gateway("").await;
    for target in [
        "/v1/models/sklearn-iris#x",
        "/healthz#/../private",
        "/v1/models/sklearn-iris?x=1#",
        "/v1/models/sklearn-iris%00",
        "/v1/models/sklearn-iris?x=%00",
    ] {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(format!("GET {target} HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert!(
            resp.contains("\"error\":\"bad request:"),
            "{target}: {resp}"
        );
    }
    assert_eq!(up.received(), "");
}

/// The path is normalised once and the normalised path is what goes upstream (dot segments,
/// repeated slashes, encoded unreserved characters); the query goes as sent. Encoded slashes
/// and backslashes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normalised_path_is_forwarded() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(&up.endpoint(), "");
    let gw = Gateway::start(&m, o).await;
    for (sent, forwarded) in [
        ("/v1/models/sklearn-iris", "/v1/models/sklearn-iris"),
        ("/v1//models///sklearn-iris", "/v1/models/sklearn-iris"),
        (
            "/v1/models/x/../sklearn-iris?a=%2F&b=..",
            "/v1/models/sklearn-iris?a=%2F&b=..",
        ),
        ("/v1/%6D%6Fdels/./sklearn-iris", "/v1/models/sklearn-iris"),
        ("/../../v1/models/sklearn-iris", "/v1/models/sklearn-iris"),
        (
            "/v1/models/x/..;x=y/sklearn-iris",
            "/v1/models/sklearn-iris",
        ),
        (
            &format!("http://{IRIS}/v1/./models/sklearn-iris?x"),
            "/v1/models/sklearn-iris?x",
        ),
    ] {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(format!("GET {sent} HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes());
        assert!(resp.starts_with("HTTP/1.1 200"), "{sent}: {resp}");
        assert_eq!(up.requests().last().unwrap().path, forwarded, "{sent}");
    }
    let hits = up.hits();
    for sent in [
        "/v1/models%2Fsklearn-iris",
        "/v1/models%2fx",
        "/v1/models%5Cx",
        "/v1/models\\x",
    ] {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(format!("GET {sent} HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{sent}: {resp}");
    }
    assert_eq!(up.hits(), hits);
}

/// A `Host` port routes only when the listener serves it: its own port or a configured public
/// port (here a NodePort); others are a 404. `_` in a host label is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_and_underscores() {
    let up = Upstream::start("iris").await;
    let (m, mut o) = one_revision(&up.endpoint(), "");
    o.extra = "    public_ports: [30080]\n".into();
    o.extra_listeners = true;
    let gw = Gateway::start(&m, o).await;
    let status = |host: String| {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        resp.split_whitespace().nth(1).unwrap_or("").to_owned()
    };
    assert_eq!(status(IRIS.into()), "200");
    assert_eq!(status(format!("{IRIS}:{}", gw.port)), "200");
    assert_eq!(status(format!("{IRIS}:30080")), "200");
    assert_eq!(
        status(format!("{IRIS}:80")),
        "404",
        "the list replaces the default 80"
    );
    assert_eq!(status(format!("{IRIS}:8443")), "404");
    assert_eq!(status("sklearn_iris.kserve-test.example.com".into()), "400");
    assert_eq!(status("sklearn-iris.kserve_test.example.com".into()), "400");
    // An absolute-form target names the host; a Host header naming another is refused.
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(
        format!("GET http://{IRIS}/ HTTP/1.1\r\nHost: other.kserve-test.example.com\r\n\r\n")
            .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(up.hits(), 3);
}

/// The client headers that other gateways use to carry identity, `Forwarded`, and every
/// header name with `_` are removed in every spelling before the request goes upstream, with
/// auth off; ordinary headers pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofable_headers_are_stripped() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(&up.endpoint(), "");
    let gw = Gateway::start(&m, o).await;
    let spoofed = [
        "kubeflow-userid: admin",
        "X-Forwarded-User: admin",
        "x-forwarded-email: admin@example.com",
        "X-FORWARDED-GROUPS: admins",
        "x-forwarded-preferred-username: admin",
        "x-forwarded-access-token: t",
        "X-Auth-Request-User: admin",
        "x-auth-request-email: admin@example.com",
        "x-auth-request-access-token: t",
        "x-forwarded-uri: /admin",
        "x-forwarded-prefix: /admin",
        "x-original-uri: /admin",
        "x-envoy-original-path: /admin",
        "X-Envoy-Internal: true",
        "Forwarded: for=1.2.3.4;host=evil.example.com;proto=https",
        "X-Forwarded-Host: evil.example.com",
        "X-Forwarded-Proto: https",
        "x_forwarded_user: admin",
        "X_Auth_Request_User: admin",
        "x_custom_underscore: 1",
    ];
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(
        format!(
            "GET / HTTP/1.1\r\nHost: {IRIS}\r\n{}\r\nx-custom-ok: 1\r\n\r\n",
            spoofed.join("\r\n")
        )
        .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.requests().pop().unwrap();
    let names: Vec<&str> = seen.headers.iter().map(|(n, _)| n.as_str()).collect();
    for h in spoofed {
        let name = h.split(':').next().unwrap().to_ascii_lowercase();
        let kept = seen.header_all(&name);
        match name.as_str() {
            // Set by the gateway itself.
            "x-forwarded-host" => assert_eq!(kept, [IRIS]),
            "x-forwarded-proto" => assert_eq!(kept, ["http"]),
            _ => assert!(kept.is_empty(), "{name} reached the upstream: {names:?}"),
        }
    }
    assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
    assert_eq!(seen.header("x-custom-ok"), Some("1"));
}

/// With `headers_with_underscores: reject`, a header name with `_` is a 400 and nothing goes
/// upstream; `strip_request_headers` replaces the default list (identity headers still go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_options() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(
        &up.endpoint(),
        "downstream: {headers_with_underscores: reject, strip_request_headers: [x-remote-user, x-team-*]}\n",
    );
    let gw = Gateway::start(&m, o).await;
    let mut c = RawClient::connect(gw.port);
    let resp =
        c.exchange(format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nx_user: a\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("x_user"), "{resp}");
    assert_eq!(up.hits(), 0);
    let resp = c.exchange(
        format!(
            "GET / HTTP/1.1\r\nHost: {IRIS}\r\nX-Remote-User: a\r\nx-team-id: 7\r\nkubeflow-userid: a\r\nx-forwarded-user: a\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("x-remote-user"), None);
    assert_eq!(seen.header("x-team-id"), None);
    assert_eq!(seen.header("kubeflow-userid"), None);
    assert_eq!(
        seen.header("x-forwarded-user"),
        Some("a"),
        "not on the configured list"
    );
}

/// Responses the gateway writes itself carry `X-Content-Type-Options: nosniff` and
/// `Cache-Control: no-store`.
#[tokio::test]
async fn own_responses_are_not_sniffed_or_cached() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(&up.endpoint(), "");
    let gw = Gateway::start(&m, o).await;
    for (host, path, status) in [
        ("nobody.kserve-test.example.com", "/", 404),
        (IRIS, "/a%2fb", 400),
    ] {
        let r = gw.get(host, path).send().await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
}
