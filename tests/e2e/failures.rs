use crate::support::gateway::{metric, one_revision, Gateway, Options};
use crate::support::manifest::{traffic, Isvc};
use crate::support::raw;
use crate::support::upstream::{dead_endpoint, Upstream};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

/// Unknown hosts get 404; missing, duplicate or malformed Host headers get 400; each with a
/// JSON `error` body, and the upstream never sees them.
#[tokio::test]
async fn bad_and_unknown_hosts() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(&up.endpoint(), "");
    let gw = Gateway::start(&m, o).await;

    let r = gw
        .get("nobody.kserve-test.example.com", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("nobody.kserve-test.example.com"));

    // pingora's HTTP/1 parser refuses several Host fields (and userinfo in Host); the gateway
    // answers that with its own JSON 400 and closes the connection.
    for (what, req) in [
        (
            "duplicate",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nHost: {IRIS}\r\n\r\n"),
        ),
        (
            "conflicting",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nHost: other.example.com\r\n\r\n"),
        ),
        (
            "userinfo",
            format!("GET / HTTP/1.1\r\nHost: user@{IRIS}\r\n\r\n"),
        ),
    ] {
        let resp = raw(gw.port, &req);
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert!(resp.contains("{\"error\":\"bad request"), "{what}: {resp}");
    }
    for (what, req) in [
        (
            "missing",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "invalid",
            "GET / HTTP/1.1\r\nHost: bad host!\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "bad port",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}:99999\r\nConnection: close\r\n\r\n"),
        ),
        (
            "empty",
            "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n".to_string(),
        ),
    ] {
        let resp = raw(gw.port, &req);
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert!(
            resp.contains("{\"error\":\"bad Host header"),
            "{what}: {resp}"
        );
    }
    assert_eq!(up.hits(), 0);
}

/// A 404 answered by the gateway keeps the client's keep-alive connection usable.
// Blocking socket reads below: the upstream needs a runtime thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_keeps_connection() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(&up.endpoint(), "");
    let gw = Gateway::start(&m, o).await;
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: nobody.example.com\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    s.write_all(format!("GET /v2/health/ready HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes())
        .unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// A refused connection to the canary sends the request (POST included) to the other revision
/// and counts a failover; when no revision is reachable the answer is 503.
#[tokio::test]
async fn failover_and_unreachable() {
    let prev = Upstream::start("prev").await;
    let dead = dead_endpoint();
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
                    vec![format!("\"{dead}\"")],
                ),
                (
                    "kserve-test/sklearn-iris-predictor-00001".into(),
                    vec![format!("\"{}\"", prev.endpoint())],
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    for i in 0..40 {
        let r = gw
            .post(IRIS, "/v1/models/sklearn-iris:predict")
            .body(format!("{{\"i\": {i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-upstream"], "prev");
    }
    assert_eq!(prev.hits(), 40);
    assert!(prev
        .requests()
        .iter()
        .all(|r| r.body_len > 0 && r.method == "POST"));
    let m = gw
        .wait_metrics(|m| m.contains("modelgate_requests_total{class=\"2xx\""))
        .await;
    let failovers = metric(
        &m,
        r#"modelgate_failovers_total{from_revision="sklearn-iris-predictor-00002",isvc="sklearn-iris",namespace="kserve-test"}"#,
    );
    assert!(
        failovers >= 5.0,
        "about half of 40 requests draw the dead canary first: {failovers}\n{m}"
    );

    // The tag host has only the dead revision: nothing to fail over to.
    let r = gw
        .get("latest-sklearn-iris-predictor.kserve-test.example.com", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "no revision of kserve-test/sklearn-iris is reachable"
    );
}

/// An upstream slower than the component's `timeout` gets 504, in about that time; the
/// config's default applies when the component sets none.
#[tokio::test]
async fn upstream_timeouts() {
    let up = Upstream::start("slow").await;
    let mut isvc = Isvc::new(
        "sklearn-iris",
        "kserve-test",
        vec![traffic("sklearn-iris-predictor-00001", 100, None, true)],
    );
    isvc.timeout = Some(1);
    let other = Isvc::new(
        "other",
        "kserve-test",
        vec![traffic("other-predictor-00001", 100, None, true)],
    );
    let gw = Gateway::start(
        &[("iris.yaml", isvc.yaml()), ("other.yaml", other.yaml())],
        Options {
            endpoints: vec![
                (
                    "kserve-test/sklearn-iris-predictor-00001".into(),
                    vec![format!("\"{}\"", up.endpoint())],
                ),
                (
                    "kserve-test/other-predictor-00001".into(),
                    vec![format!("\"{}\"", up.endpoint())],
                ),
            ],
            extra: "upstream: {request_timeout: 2s}\n".into(),
            ..Default::default()
        },
    )
    .await;
    let t = Instant::now();
    let r = gw
        .get(IRIS, "/v1/models/sklearn-iris")
        .header("x-test-delay-ms", "5000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(4500),
        "{took:?}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "kserve-test/sklearn-iris did not answer within 1 s"
    );

    let r = gw
        .get("other.kserve-test.example.com", "/")
        .header("x-test-delay-ms", "6000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "kserve-test/other did not answer within 2 s");

    // Under the timeout, the slow answer arrives.
    let r = gw
        .get(IRIS, "/")
        .header("x-test-delay-ms", "100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A declared body over the limit gets 413 before anything reaches the upstream; a streamed
/// (chunked) body is counted and cut off at the limit with 413.
#[tokio::test]
async fn body_limit() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(
        &up.endpoint(),
        "downstream: {max_request_body_bytes: 1000}\n",
    );
    let gw = Gateway::start(&m, o).await;

    let r = gw
        .post(IRIS, "/v1/models/sklearn-iris:predict")
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "exactly the limit is allowed");

    let r = gw
        .post(IRIS, "/v1/models/sklearn-iris:predict")
        .body(vec![b'x'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "request body is larger than 1000 bytes");
    assert_eq!(
        up.hits(),
        1,
        "the oversized request must not reach the upstream"
    );

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'y'; 300])).collect();
    let r = gw
        .post(IRIS, "/v1/models/sklearn-iris:predict")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        // The gateway may close while the client is still sending; it must never pass.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert!(up.requests().iter().all(|r| r.body_len <= 1000));
}

/// An idle keep-alive client connection is closed after `downstream.keepalive_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_is_closed() {
    let up = Upstream::start("iris").await;
    let (m, o) = one_revision(&up.endpoint(), "downstream: {keepalive_timeout: 1s}\n");
    let gw = Gateway::start(&m, o).await;
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    // The next read blocks until the gateway closes the idle connection (EOF).
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
