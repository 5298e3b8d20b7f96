use crate::support::gateway::{one_revision, Gateway, Options};
use crate::support::manifest::{traffic, Isvc};
use crate::support::upstream::Upstream;
use std::collections::HashMap;

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

fn ep(ns: &str, name: &str, up: &Upstream) -> (String, Vec<String>) {
    (
        format!("{ns}/{name}"),
        vec![format!("\"{}\"", up.endpoint())],
    )
}

/// Requests are routed by Host to the InferenceService's revision, with the headers a Knative
/// revision expects, the gateway's forwarding headers, and the serving revision in the response.
#[tokio::test]
async fn routes_by_host_with_upstream_headers() {
    let iris = Upstream::start("iris").await;
    let other = Upstream::start("other").await;
    let gw = Gateway::start(
        &[
            (
                "iris.yaml",
                Isvc::new(
                    "sklearn-iris",
                    "kserve-test",
                    vec![traffic("sklearn-iris-predictor-00001", 100, None, true)],
                )
                .yaml(),
            ),
            (
                "other.yaml",
                Isvc::new(
                    "other",
                    "team-b",
                    vec![traffic("other-predictor-00007", 100, None, true)],
                )
                .yaml(),
            ),
        ],
        Options {
            endpoints: vec![
                ep("kserve-test", "sklearn-iris-predictor-00001", &iris),
                ep("team-b", "other-predictor-00007", &other),
            ],
            ..Default::default()
        },
    )
    .await;

    let r = gw
        .post(IRIS, "/v1/models/sklearn-iris:predict?x=1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("knative-serving-revision", "spoofed")
        .body(r#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-modelgate-revision"],
        "sklearn-iris-predictor-00001"
    );
    assert_eq!(r.headers()["x-upstream"], "iris");
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(request_id.len(), 36, "{request_id}");

    let seen = iris.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/v1/models/sklearn-iris:predict?x=1");
    assert_eq!(
        s.header("host"),
        Some("sklearn-iris-predictor.kserve-test.svc.cluster.local")
    );
    assert_eq!(s.header("kserve-isvc-name"), Some("sklearn-iris"));
    assert_eq!(s.header("kserve-isvc-namespace"), Some("kserve-test"));
    assert_eq!(
        s.header_all("knative-serving-revision"),
        ["sklearn-iris-predictor-00001"]
    );
    assert_eq!(s.header("knative-serving-namespace"), Some("kserve-test"));
    assert_eq!(s.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(s.header_all("x-forwarded-host"), [IRIS]);
    assert_eq!(s.header_all("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(s.header("x-request-id"), Some(request_id.as_str()));
    assert_eq!(s.body_len, 37);

    // A client's well-formed request id is kept end to end.
    let r = gw
        .get("other.team-b.example.com", "/v2/health/ready")
        .header("x-request-id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "other");
    assert_eq!(r.headers()["x-request-id"], "trace-abc_123");
    assert_eq!(
        other.requests()[0].header("x-request-id"),
        Some("trace-abc_123")
    );
    assert_eq!(iris.hits(), 1);
}

/// Host matching ignores case, a trailing dot and a port the listener serves (its own, or the
/// default public port 80); the cluster-local names from status.address.url route too. A port
/// the listener does not serve is a routing miss, as with Envoy's `strip_matching_host_port`.
#[tokio::test]
async fn host_forms() {
    let up = Upstream::start("iris").await;
    let gw = {
        let (m, o) = one_revision(&up.endpoint(), "");
        Gateway::start(&m, o).await
    };
    let own_port = format!("sklearn-iris.kserve-test.example.com:{}", gw.port);
    for host in [
        "SKLEARN-IRIS.kserve-test.Example.com",
        own_port.as_str(),
        "sklearn-iris.kserve-test.example.com:80",
        "sklearn-iris.kserve-test.example.com.",
        "sklearn-iris.kserve-test.svc.cluster.local",
        "sklearn-iris.kserve-test.svc",
        "sklearn-iris.kserve-test",
    ] {
        let r = gw
            .get(host, "/v1/models/sklearn-iris")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
        assert_eq!(r.headers()["x-upstream"], "iris", "{host}");
    }
    let hits = up.hits();
    for host in [
        "sklearn-iris.kserve-test.example.com:8443",
        "sklearn-iris.kserve-test.example.com:443",
    ] {
        let r = gw
            .get(host, "/v1/models/sklearn-iris")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{host}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["error"],
            format!("no InferenceService serves host {host:?}")
        );
    }
    assert_eq!(up.hits(), hits);
}

/// A 20 % canary gets 20 % of 10,000 requests, within ±1.5 points; tag hosts and the
/// `Knative-Serving-Tag` header pin one revision; an unknown tag takes the normal split.
#[tokio::test]
async fn canary_split_and_tags() {
    let latest = Upstream::start("latest").await;
    let prev = Upstream::start("prev").await;
    let mut isvc = Isvc::new(
        "sklearn-iris",
        "kserve-test",
        vec![
            traffic("sklearn-iris-predictor-00002", 20, Some("latest"), true),
            traffic("sklearn-iris-predictor-00001", 80, Some("prev"), false),
        ],
    );
    isvc.canary_percent = Some(20);
    let gw = Gateway::start(
        &[("iris.yaml", isvc.yaml())],
        Options {
            endpoints: vec![
                ep("kserve-test", "sklearn-iris-predictor-00002", &latest),
                ep("kserve-test", "sklearn-iris-predictor-00001", &prev),
            ],
            ..Default::default()
        },
    )
    .await;

    let total = 10_000usize;
    let counts = split(&gw, IRIS, total, None).await;
    let canary = counts
        .get("sklearn-iris-predictor-00002")
        .copied()
        .unwrap_or(0);
    let share = canary as f64 * 100.0 / total as f64;
    assert!(
        (18.5..=21.5).contains(&share),
        "canary share {share}% ({counts:?})"
    );
    assert_eq!(counts.values().sum::<usize>(), total);

    for (host, tag, want) in [
        (
            "latest-sklearn-iris-predictor.kserve-test.example.com",
            None,
            "latest",
        ),
        (
            "prev-sklearn-iris-predictor.kserve-test.example.com",
            None,
            "prev",
        ),
        // Knative serves a tag on every form of the component's host, in-cluster ones too.
        (
            "latest-sklearn-iris-predictor.kserve-test.svc.cluster.local",
            None,
            "latest",
        ),
        ("prev-sklearn-iris-predictor.kserve-test.svc", None, "prev"),
        ("latest-sklearn-iris-predictor.kserve-test", None, "latest"),
        (IRIS, Some("latest"), "latest"),
        (IRIS, Some("prev"), "prev"),
    ] {
        for _ in 0..20 {
            let mut req = gw.get(host, "/v1/models/sklearn-iris");
            if let Some(t) = tag {
                req = req.header("knative-serving-tag", t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-upstream"], want, "{host} {tag:?}");
        }
    }
    let counts = split(&gw, IRIS, 400, Some("no-such-tag")).await;
    assert_eq!(
        counts.len(),
        2,
        "unknown tag must not pin a revision: {counts:?}"
    );
}

/// Sends `n` GETs over 16 keep-alive connections and counts the serving revisions.
pub async fn split(
    gw: &Gateway,
    host: &str,
    n: usize,
    tag: Option<&str>,
) -> HashMap<String, usize> {
    let extra: Vec<(&str, &str)> = tag
        .map(|t| ("knative-serving-tag", t))
        .into_iter()
        .collect();
    crate::support::gateway::count_revisions(gw, host, "/v1/models/sklearn-iris", n, &extra, None)
        .await
}

/// `/v1/models/{name}:explain` goes to the explainer; everything else to the predictor.
#[tokio::test]
async fn explainer_path() {
    let pred = Upstream::start("predictor").await;
    let expl = Upstream::start("explainer").await;
    let mut isvc = Isvc::new(
        "m",
        "ns",
        vec![traffic("m-predictor-00001", 100, None, true)],
    );
    isvc.explainer = Some(vec![traffic("m-explainer-00001", 100, None, true)]);
    let gw = Gateway::start(
        &[("m.yaml", isvc.yaml())],
        Options {
            endpoints: vec![
                ep("ns", "m-predictor-00001", &pred),
                ep("ns", "m-explainer-00001", &expl),
            ],
            ..Default::default()
        },
    )
    .await;
    let r = gw
        .post("m.ns.example.com", "/v1/models/m:explain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-upstream"], "explainer");
    assert_eq!(
        expl.requests()[0].header("host"),
        Some("m-explainer.ns.svc.cluster.local")
    );
    let r = gw
        .post("m.ns.example.com", "/v1/models/m:predict")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-upstream"], "predictor");
}

/// Bodies stream both ways: the client sees the first response chunk while the upstream is
/// still holding the rest, and an echoed upload arrives intact.
#[tokio::test]
async fn bodies_stream() {
    let up = Upstream::start("iris").await;
    let gw = {
        let (m, o) = one_revision(&up.endpoint(), "");
        Gateway::start(&m, o).await
    };
    let mut r = gw
        .get(IRIS, "/stream")
        .header("x-test-hold", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), r.chunk())
        .await
        .expect("first chunk must arrive while the upstream holds the rest")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first\n");
    up.release();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"last\n");

    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = gw
        .post(IRIS, "/echo")
        .header("x-test-echo", "1")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), payload);
}

/// The admin listener answers health, readiness, the live table and Prometheus metrics.
#[tokio::test]
async fn admin_endpoints() {
    let up = Upstream::start("iris").await;
    let gw = {
        let (m, o) = one_revision(&up.endpoint(), "");
        Gateway::start(&m, o).await
    };
    let c = &gw.client;
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/nope")).send().await.unwrap().status(),
        404
    );
    let routes = gw.routes().await;
    assert_eq!(routes["generation"], 1);
    assert_eq!(routes["errors"], serde_json::json!([]));
    let host = &routes["hosts"][IRIS];
    assert_eq!(host["isvc"]["name"], "sklearn-iris");
    assert_eq!(
        host["entry"]["backends"][0]["revision"],
        "sklearn-iris-predictor-00001"
    );
    assert_eq!(host["entry"]["backends"][0]["endpoints"][0], up.endpoint());

    gw.get(IRIS, "/v1/models/sklearn-iris")
        .send()
        .await
        .unwrap();
    gw.get("nobody.example.com", "/").send().await.unwrap();
    // Requests are counted in the logging phase, just after the response leaves: poll.
    let m = gw
        .wait_metrics(|m| m.contains("modelgate_request_duration_seconds_count 2"))
        .await;
    for series in [
        r#"modelgate_requests_total{class="2xx",isvc="sklearn-iris",namespace="kserve-test",revision="sklearn-iris-predictor-00001"} 1"#,
        r#"modelgate_requests_total{class="4xx",isvc="",namespace="",revision=""} 1"#,
        r#"modelgate_reloads_total{result="success"} 1"#,
        "modelgate_request_duration_seconds_count 2",
        "modelgate_route_objects 1",
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }
}

/// With `log.format: json`, each request leaves one JSON access-log line with host, path,
/// status, isvc, revision, upstream time and total time.
#[tokio::test]
async fn json_access_log() {
    let up = Upstream::start("iris").await;
    let gw = {
        let (m, o) = one_revision(&up.endpoint(), "log: {format: json}\n");
        Gateway::start(&m, o).await
    };
    let r = gw
        .get(IRIS, "/v1/models/sklearn-iris?q=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    // The line is written just after the response leaves: poll the log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let log = gw.log();
        if let Some(l) = log.lines().find(|l| l.contains(&id)) {
            break l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line for {id}:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["target"], "modelgate::access");
    assert_eq!(v["host"], IRIS);
    assert_eq!(v["path"], "/v1/models/sklearn-iris");
    assert_eq!(v["status"], 200);
    assert_eq!(v["isvc"], "kserve-test/sklearn-iris");
    assert_eq!(v["revision"], "sklearn-iris-predictor-00001");
    assert!(v["upstream_ms"].as_f64().unwrap() > 0.0);
    assert!(v["total_ms"].as_f64().unwrap() >= v["upstream_ms"].as_f64().unwrap());
}

/// A request target in absolute form (`GET http://host/path`, as a client configured to use
/// the gateway as a forward proxy sends) goes upstream with the same gateway headers as the
/// usual origin form: the client's forwarding headers replaced, the revision's headers set.
// Multi-threaded: the raw exchange blocks its thread while the upstream answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_gets_the_gateway_headers() {
    let iris = Upstream::start("iris").await;
    let (m, o) = one_revision(&iris.endpoint(), "");
    let gw = Gateway::start(&m, o).await;
    let response = crate::support::raw(
        gw.port,
        &format!(
            "GET http://{IRIS}/v1/models/sklearn-iris?x=1 HTTP/1.1\r\nHost: {IRIS}\r\n\
             X-Forwarded-Host: evil.example.com\r\nKnative-Serving-Revision: spoofed\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = iris.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(
        s.path.ends_with("/v1/models/sklearn-iris?x=1"),
        "{}",
        s.path
    );
    assert_eq!(
        s.header("host"),
        Some("sklearn-iris-predictor.kserve-test.svc.cluster.local")
    );
    assert_eq!(s.header_all("x-forwarded-host"), [IRIS]);
    assert_eq!(
        s.header_all("knative-serving-revision"),
        ["sklearn-iris-predictor-00001"]
    );
    assert_eq!(s.header("kserve-isvc-name"), Some("sklearn-iris"));
    assert_eq!(s.header_all("x-forwarded-proto"), ["http"]);
}
