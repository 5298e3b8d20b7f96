//! What the request path does for every request, now that it is modelgate's own: hop-by-hop
//! headers, `Expect: 100-continue`, bodyless responses, body framing both ways, trailers,
//! keep-alive both ways, the upstream pool and its retry, client disconnects, upgrades, and the
//! JSON answer to heads the parser refuses. Raw sockets where a client library would tidy up.

use crate::support::gateway::{metric, one_revision, Gateway, Options};
use crate::support::manifest::{traffic, Isvc};
use crate::support::raw_upstream::RawUpstream;
use crate::support::upstream::Upstream;
use crate::support::RawClient;
use std::io::{Read, Write};
use std::time::Duration;

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

async fn gateway(up: &str, extra: &str) -> Gateway {
    let (m, o) = one_revision(up, extra);
    Gateway::start(&m, o).await
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {IRIS}\r\n{extra}\r\n").into_bytes()
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `Connection`, every header it names, `Keep-Alive`, `Proxy-Connection`, `TE` and `Trailer`
/// stay on their hop, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up.endpoint(), "").await;
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(&get(
        "/",
        "Connection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: x-checksum\r\nX-End-To-End: 1\r\n\
         X-Test-Response-Header: connection: x-resp-hop\r\nX-Test-Response-Header: x-resp-hop: 1\r\n\
         X-Test-Response-Header: keep-alive: timeout=1\r\nX-Test-Response-Header: x-resp-end: 1\r\n",
    ));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.requests().pop().unwrap();
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
    ] {
        assert_eq!(seen.header(name), None, "{name} went upstream");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("1"));
    assert_eq!(header(&resp, "x-resp-hop"), None, "{resp}");
    assert_eq!(header(&resp, "keep-alive"), None, "{resp}");
    assert_eq!(header(&resp, "x-resp-end"), Some("1"));
    // The gateway's own connection handling stands: the connection is still usable.
    let resp = c.exchange(&get("/", ""));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// `Expect: 100-continue` gets `100 Continue` from the gateway once the request has passed its
/// checks (the upstream never sees `Expect`); an oversized declared body gets 413 instead,
/// without the client having sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue() {
    let up = Upstream::start("iris").await;
    let gw = gateway(
        &up.endpoint(),
        "downstream: {max_request_body_bytes: 100}\n",
    )
    .await;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: {IRIS}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("expect"), None);
    assert_eq!(seen.body_len, 5);

    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(
        format!("POST / HTTP/1.1\r\nHost: {IRIS}\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n")
            .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(up.hits(), 1);
}

/// HEAD, 204 and 304 responses carry no body, and the connection goes on with the next
/// request correctly framed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodyless_responses() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up.endpoint(), "").await;
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(format!("HEAD / HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n"), "no body after HEAD: {resp:?}");
    for status in ["204", "304"] {
        let resp = c.exchange(&get("/", &format!("x-test-status: {status}\r\n")));
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
        assert!(
            resp.ends_with("\r\n\r\n"),
            "no body with {status}: {resp:?}"
        );
    }
    let resp = c.exchange(&get("/", ""));
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"upstream\":\"iris\""),
        "{resp}"
    );
}

/// Chunked and `Content-Length` bodies go through both ways, framed for each hop; request
/// trailers are read and dropped (pingora's HTTP/1 has none to forward), and the body arrives
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_framing_both_ways() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up.endpoint(), "").await;
    let mut c = RawClient::connect(gw.port);
    // A chunked upload, echoed back chunked (the upstream does not know the length).
    let resp = c.exchange(
        format!(
            "POST / HTTP/1.1\r\nHost: {IRIS}\r\nTransfer-Encoding: chunked\r\nx-test-echo: 1\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        header(&resp, "transfer-encoding"),
        Some("chunked"),
        "{resp}"
    );
    assert!(resp.contains("hello") && resp.contains(" world"), "{resp}");
    assert_eq!(up.requests().pop().unwrap().body_len, 11);

    // A chunked upload with trailers.
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(
        format!(
            "POST / HTTP/1.1\r\nHost: {IRIS}\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n0\r\nx-checksum: 1\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.requests().pop().unwrap().body_len, 3);
    // The same connection is framed right afterwards.
    let resp = c.exchange(&get("/", ""));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // A Content-Length upload, answered with a Content-Length.
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(
        format!("POST / HTTP/1.1\r\nHost: {IRIS}\r\nContent-Length: 4\r\n\r\nabcd").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(header(&resp, "content-length").is_some(), "{resp}");
    let seen = up.requests().pop().unwrap();
    assert_eq!(
        (seen.body_len, seen.header("content-length")),
        (4, Some("4"))
    );
}

/// Connections are kept alive on both sides: many requests on one client connection reach the
/// upstream over one pooled connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_both_ways() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up.endpoint(), "").await;
    let mut c = RawClient::connect(gw.port);
    for i in 0..20 {
        let resp = c.exchange(&get(&format!("/v1/models/sklearn-iris?i={i}"), ""));
        assert!(resp.starts_with("HTTP/1.1 200"), "{i}: {resp}");
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(
        up.connections(),
        1,
        "one pooled upstream connection served them all"
    );
}

/// An upstream that restarted (every pooled connection closed under the gateway) costs no
/// failed request: a pooled connection found dead is replaced, and a request that fails on one
/// before any response byte is sent once more on a fresh connection to the same endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_closed_by_the_upstream() {
    let up = Upstream::start("iris").await;
    let addr = up.addr();
    let gw = gateway(&up.endpoint(), "").await;
    for _ in 0..3 {
        let r = gw.get(IRIS, "/").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    drop(up);
    let up = Upstream::start_on(addr, "iris-restarted").await;
    for i in 0..10 {
        let r = gw.get(IRIS, "/").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-upstream"], "iris-restarted");
    }
    assert_eq!(up.hits(), 10, "each request reached the upstream once");
}

/// A request the upstream received and then dropped without answering is a 502, and is never
/// replayed to the other revision of a split (the model may have acted on it): every request is
/// seen by exactly one upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_upstream_saw_is_not_replayed() {
    let dropper = RawUpstream::start_dropping().await;
    let other = Upstream::start("other").await;
    let isvc = Isvc::new(
        "sklearn-iris",
        "kserve-test",
        vec![
            traffic("sklearn-iris-predictor-00002", 50, Some("latest"), true),
            traffic("sklearn-iris-predictor-00001", 50, Some("prev"), false),
        ],
    );
    let gw = Gateway::start(
        &[("iris.yaml", isvc.yaml())],
        Options {
            endpoints: vec![
                (
                    "kserve-test/sklearn-iris-predictor-00002".into(),
                    vec![format!("\"{}\"", dropper.endpoint())],
                ),
                (
                    "kserve-test/sklearn-iris-predictor-00001".into(),
                    vec![format!("\"{}\"", other.endpoint())],
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..20 {
        let r = gw
            .get(IRIS, "/v1/models/sklearn-iris")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            502 => {
                failed += 1;
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "kserve-test/sklearn-iris failed to answer");
            }
            s => panic!("status {s}"),
        }
    }
    assert!(
        ok > 0 && failed > 0,
        "both revisions drawn: {ok} ok, {failed} failed"
    );
    assert_eq!(
        dropper.heads().len(),
        failed,
        "each dropped request was seen once, not retried"
    );
    assert_eq!(
        other.hits(),
        ok,
        "no dropped request was replayed to the other revision"
    );
}

/// A client that goes away in the middle of a response costs nothing else: the upstream
/// connection is not put back half read, and the gateway serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnects() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up.endpoint(), "").await;
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&get("/", "x-test-hold: 1\r\n")).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    up.release();
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(&get("/", ""));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        up.connections(),
        2,
        "the abandoned upstream connection was not reused"
    );
}

/// A protocol upgrade (WebSocket) is refused with a clear 501; nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_refused() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up.endpoint(), "").await;
    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(&get(
        "/ws",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ));
    assert!(resp.starts_with("HTTP/1.1 501"), "{resp}");
    assert!(resp.contains("WebSocket"), "{resp}");
    assert_eq!(up.hits(), 0);
}

/// What a lenient parser would repair, and heads pingora's parser refuses, get modelgate's
/// JSON 400 (with the request id), the connection is closed, the refusal is counted, and
/// nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_json() {
    let up = RawUpstream::start().await;
    let gw = gateway(&up.endpoint(), "").await;
    for (what, head) in [
        ("bare LF", format!("GET / HTTP/1.1\nHost: {IRIS}\n\n")),
        (
            "bare LF in one line",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\nX: 1\r\n\r\n"),
        ),
        (
            "obs-fold",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nX: 1\r\n  folded\r\n\r\n"),
        ),
        (
            "space before colon",
            format!("GET / HTTP/1.1\r\nHost : {IRIS}\r\n\r\n"),
        ),
        (
            "NUL in a value",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nX: a\0b\r\n\r\n"),
        ),
        (
            "bare CR in a value",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nX: a\rb\r\n\r\n"),
        ),
        (
            "two Host lines",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nHost: {IRIS}\r\n\r\n"),
        ),
        (
            "userinfo in Host",
            format!("GET / HTTP/1.1\r\nHost: u@{IRIS}\r\n\r\n"),
        ),
        (
            "malformed request line",
            "GET  HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "an HTTP/2 preface on a plain listener",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string(),
        ),
    ] {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(head.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert!(resp.contains("{\"error\":\"bad request"), "{what}: {resp}");
        assert!(header(&resp, "x-request-id").is_some(), "{what}: {resp}");
        assert_eq!(header(&resp, "connection"), Some("close"), "{what}");
        assert!(c.is_closed(), "{what}: the connection must be closed");
    }
    assert_eq!(up.received(), "");
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            r#"modelgate_requests_total{class="4xx",isvc="",namespace="",revision=""}"#
        ) >= 10.0,
        "{m}"
    );
}
