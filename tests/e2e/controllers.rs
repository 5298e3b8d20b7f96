//! Objects routed as their own controller routes them, through the real gateway: KServe 0.20
//! Standard-mode canaries, KFServing v1alpha2 canaries, Seldon deployments with a shadow, and
//! KServe's path-based routing.

use crate::support::gateway::{count_revisions, metric, Gateway, Options};
use crate::support::upstream::{dead_endpoint, Upstream};
use std::collections::HashMap;

fn ep(ns: &str, name: &str, endpoint: &str) -> (String, Vec<String>) {
    (format!("{ns}/{name}"), vec![format!("\"{endpoint}\"")])
}

const SELDON_BODY: &str = r#"{"data": {"ndarray": [[1, 2, 3, 4]]}}"#;

/// `n` requests (POSTs of a Seldon message when `post`) counted by the revision that answered.
async fn revisions(
    gw: &Gateway,
    host: &str,
    path: &str,
    n: usize,
    post: bool,
) -> HashMap<String, usize> {
    count_revisions(gw, host, path, n, &[], post.then_some(SELDON_BODY)).await
}

fn share(counts: &HashMap<String, usize>, key: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(key).copied().unwrap_or(0) as f64 * 100.0 / total as f64
}

const STANDARD: &str = r#"apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  annotations: {serving.kserve.io/deploymentMode: Standard}
  name: sklearn-iris
  namespace: kserve-test
spec:
  predictor:
    model: {modelFormat: {name: sklearn}, storageUri: "gs://m/1"}
  canary:
  - trafficPercent: 20
    predictor:
      name: v2
      model: {modelFormat: {name: sklearn}, storageUri: "gs://m/2"}
status:
  address: {url: "http://sklearn-iris-predictor.kserve-test.svc.cluster.local"}
  canaryStatuses: [{name: v2, ready: true, trafficPercent: 20}]
  components:
    predictor: {url: "http://sklearn-iris-predictor-kserve-test.example.com"}
  conditions:
  - {type: PredictorReady, status: "True"}
  - {type: CanaryPredictorReady, status: "True"}
  deploymentMode: Standard
  url: http://sklearn-iris-kserve-test.example.com
"#;

/// A KServe 0.20 Standard-mode canary at 20 %: 10,000 requests split 80/20 within 1.5 points,
/// each half carrying its own Service's host, as KServe's HTTPRoute sends them.
#[tokio::test]
async fn standard_canary_split() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let gw = Gateway::start(
        &[("iris.yaml", STANDARD.to_string())],
        Options {
            endpoints: vec![
                ep("kserve-test", "sklearn-iris-predictor", &stable.endpoint()),
                ep(
                    "kserve-test",
                    "sklearn-iris-v2-predictor",
                    &canary.endpoint(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let host = "sklearn-iris-kserve-test.example.com";
    let counts = revisions(&gw, host, "/v1/models/sklearn-iris", 10_000, false).await;
    let s = share(&counts, "sklearn-iris-v2-predictor");
    assert!((18.5..=21.5).contains(&s), "canary share {s}% ({counts:?})");
    assert_eq!(counts.values().sum::<usize>(), 10_000);
    let host_of = |up: &Upstream| up.requests()[0].header("host").unwrap().to_string();
    assert_eq!(
        host_of(&canary),
        "sklearn-iris-v2-predictor.kserve-test.svc.cluster.local"
    );
    assert_eq!(
        host_of(&stable),
        "sklearn-iris-predictor.kserve-test.svc.cluster.local"
    );
}

/// A v1alpha2 (KFServing) request that the split sends to the canary carries the canary
/// component's cluster-local host, as KFServing's VirtualService set it.
#[tokio::test]
async fn v1alpha2_canary_host() {
    let default = Upstream::start("default").await;
    let canary = Upstream::start("canary").await;
    let isvc = r#"apiVersion: serving.kubeflow.org/v1alpha2
kind: InferenceService
metadata: {name: flowers, namespace: kfserving-test}
spec:
  canaryTrafficPercent: 50
  default: {predictor: {tensorflow: {storageUri: "gs://m/1"}}}
  canary: {predictor: {tensorflow: {storageUri: "gs://m/2"}}}
status:
  url: http://flowers.kfserving-test.example.com/v1/models/flowers
  default: {predictor: {name: flowers-predictor-default-abcde, host: flowers-predictor-default.kfserving-test.example.com}}
  canary: {predictor: {name: flowers-predictor-canary-fghij, host: flowers-predictor-canary.kfserving-test.example.com}}
  traffic: 50
  canaryTraffic: 50
  conditions:
  - {type: DefaultPredictorReady, status: "True"}
  - {type: CanaryPredictorReady, status: "True"}
"#;
    let gw = Gateway::start(
        &[("flowers.yaml", isvc.to_string())],
        Options {
            endpoints: vec![
                ep(
                    "kfserving-test",
                    "flowers-predictor-default-abcde",
                    &default.endpoint(),
                ),
                ep(
                    "kfserving-test",
                    "flowers-predictor-canary-fghij",
                    &canary.endpoint(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let counts = revisions(&gw, "flowers.kfserving-test.example.com", "/", 200, false).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    for (up, host) in [
        (
            &default,
            "flowers-predictor-default.kfserving-test.svc.cluster.local",
        ),
        (
            &canary,
            "flowers-predictor-canary.kfserving-test.svc.cluster.local",
        ),
    ] {
        let hosts: Vec<_> = up
            .requests()
            .iter()
            .map(|r| r.header("host").unwrap().to_string())
            .collect();
        assert!(
            !hosts.is_empty() && hosts.iter().all(|h| h == host),
            "{hosts:?}"
        );
    }
}

fn seldon(shadow_traffic: u32) -> String {
    format!(
        r#"apiVersion: machinelearning.seldon.io/v1
kind: SeldonDeployment
metadata: {{name: iris, namespace: seldon}}
spec:
  predictors:
  - {{name: main, traffic: 80, graph: {{name: classifier, implementation: SKLEARN_SERVER}}}}
  - {{name: canary, traffic: 20, graph: {{name: classifier, implementation: SKLEARN_SERVER}}}}
  - {{name: mirror, shadow: true, traffic: {shadow_traffic}, graph: {{name: classifier, implementation: SKLEARN_SERVER}}}}
status: {{state: Available}}
"#
    )
}

const PREDICT: &str = "/seldon/seldon/iris/api/v1.0/predictions";

/// A Seldon deployment reached by `/seldon/{ns}/{name}/`: 10,000 POSTs split 80/20 by
/// `traffic` within 1.5 points, the prefix stripped upstream, `x-modelgate-revision` naming the
/// predictor; the shadow gets a copy of every request (its `traffic` 0: all), every copy
/// counted as answered, failed or dropped.
#[tokio::test]
async fn seldon_split_and_shadow() {
    let main = Upstream::start("main").await;
    let canary = Upstream::start("canary").await;
    let mirror = Upstream::start("mirror").await;
    let gw = Gateway::start(
        &[("iris.yaml", seldon(0))],
        Options {
            endpoints: vec![
                ep("seldon", "iris-main", &main.endpoint()),
                ep("seldon", "iris-canary", &canary.endpoint()),
                ep("seldon", "iris-mirror", &mirror.endpoint()),
            ],
            ..Default::default()
        },
    )
    .await;
    let total = 10_000;
    let counts = revisions(&gw, "gateway.example.com", PREDICT, total, true).await;
    assert_eq!(
        counts.len(),
        2,
        "the shadow never answers a client: {counts:?}"
    );
    let s = share(&counts, "canary");
    assert!((18.5..=21.5).contains(&s), "canary share {s}% ({counts:?})");
    let seen = main.requests();
    assert_eq!(seen[0].path, "/api/v1.0/predictions");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].header("host"),
        Some("iris-main.seldon.svc.cluster.local")
    );
    // Every copy is accounted for once the last ones land.
    let m = gw
        .wait_metrics(|m| {
            let n = |r: &str| {
                metric(
                    m,
                    &format!(
                        "modelgate_shadow_requests_total{{isvc=\"iris\",namespace=\"seldon\",result=\"{r}\"}}"
                    ),
                )
            };
            (n("answered") + n("failed") + n("dropped")) as usize == total
        })
        .await;
    let answered = metric(
        &m,
        "modelgate_shadow_requests_total{isvc=\"iris\",namespace=\"seldon\",result=\"answered\"}",
    ) as usize;
    assert!(answered > total / 2, "{m}");
    assert_eq!(mirror.hits(), answered);
    let copy = &mirror.requests()[0];
    assert_eq!(copy.path, "/api/v1.0/predictions");
    assert_eq!(
        copy.body_len,
        r#"{"data": {"ndarray": [[1, 2, 3, 4]]}}"#.len()
    );
    assert_eq!(
        copy.header("host"),
        Some("iris-mirror.seldon.svc.cluster.local")
    );
    // Explainer and unknown prefixes.
    let r = gw
        .get(
            "gateway.example.com",
            "/seldon/seldon/iris-2/api/v1.0/predictions",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A shadow that refuses connections, or one that accepts and never answers, never shows to
/// the client: every request is answered, and the copies fail or (once the in-flight bound is
/// full of hanging copies) are dropped, all counted.
#[tokio::test]
async fn shadow_failures_never_show() {
    let main = Upstream::start("main").await;
    let canary = Upstream::start("canary").await;
    // Accepts and reads, never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    for (shadow, result) in [
        (dead_endpoint(), "failed"),
        (hole_addr.to_string(), "dropped"),
    ] {
        let gw = Gateway::start(
            &[("iris.yaml", seldon(100))],
            Options {
                endpoints: vec![
                    ep("seldon", "iris-main", &main.endpoint()),
                    ep("seldon", "iris-canary", &canary.endpoint()),
                    ep("seldon", "iris-mirror", &shadow),
                ],
                ..Default::default()
            },
        )
        .await;
        let counts = revisions(&gw, "gateway.example.com", PREDICT, 200, true).await;
        assert_eq!(counts.values().sum::<usize>(), 200);
        let series = format!(
            "modelgate_shadow_requests_total{{isvc=\"iris\",namespace=\"seldon\",result=\"{result}\"}}"
        );
        let m = gw.wait_metrics(|m| metric(m, &series) > 0.0).await;
        let answered = "modelgate_shadow_requests_total{isvc=\"iris\",namespace=\"seldon\",result=\"answered\"}";
        assert_eq!(metric(&m, answered), 0.0, "nothing can have answered: {m}");
    }
    held.abort();
}

/// KServe's `pathTemplate`: `/serving/{ns}/{name}/...` reaches the InferenceService with the
/// prefix stripped, with the same split and tags as its host; a longer name never matches a
/// shorter one, and the Host need not be the model's.
#[tokio::test]
async fn path_template_routes() {
    let up = Upstream::start("iris").await;
    let other = Upstream::start("other").await;
    let isvc = |name: &str| {
        crate::support::manifest::Isvc::new(
            name,
            "kserve-test",
            vec![crate::support::manifest::traffic(
                &format!("{name}-predictor-00001"),
                100,
                Some("prev"),
                true,
            )],
        )
        .yaml()
    };
    let gw = Gateway::start(
        &[
            ("iris.yaml", isvc("sklearn-iris")),
            ("iris2.yaml", isvc("sklearn-iris-2")),
        ],
        Options {
            endpoints: vec![
                ep(
                    "kserve-test",
                    "sklearn-iris-predictor-00001",
                    &up.endpoint(),
                ),
                ep(
                    "kserve-test",
                    "sklearn-iris-2-predictor-00001",
                    &other.endpoint(),
                ),
            ],
            routes: "path_template: \"/serving/{{ .Namespace }}/{{ .Name }}\"".into(),
            ..Default::default()
        },
    )
    .await;
    for (path, upstream_path, who) in [
        (
            "/serving/kserve-test/sklearn-iris/v1/models/sklearn-iris:predict?x=1",
            "/v1/models/sklearn-iris:predict?x=1",
            "iris",
        ),
        ("/serving/kserve-test/sklearn-iris", "/", "iris"),
        (
            "/serving/kserve-test/sklearn-iris-2/v1/models/m",
            "/v1/models/m",
            "other",
        ),
        ("/serving/kserve-test/./sklearn-iris//v1/x", "/v1/x", "iris"),
    ] {
        let r = gw.get("203.0.113.7", path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-upstream"], who, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["path"], upstream_path, "{path}");
    }
    let r = gw
        .get("203.0.113.7", "/serving/kserve-test/sklearn-ir/v1/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The tag header pins as on the host.
    let r = gw
        .get("203.0.113.7", "/serving/kserve-test/sklearn-iris/v1/x")
        .header("knative-serving-tag", "prev")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-modelgate-revision"],
        "sklearn-iris-predictor-00001"
    );
    assert_eq!(
        up.requests().last().unwrap().header("host"),
        Some("sklearn-iris-predictor.kserve-test.svc.cluster.local")
    );
}

/// Seldon's own Python client (`seldon-core` 1.18, installed by the harness on first use) gets
/// a prediction through the gateway, as it would through Ambassador: `SeldonClient(gateway=
/// "ambassador", gateway_endpoint=..., namespace=...)`. The model echoes the request's
/// SeldonMessage back.
#[tokio::test]
async fn seldon_client_gets_a_prediction() {
    let python = tokio::task::spawn_blocking(crate::support::install::seldon_client)
        .await
        .unwrap();
    let main = Upstream::start("main").await;
    let sdep = r#"apiVersion: machinelearning.seldon.io/v1
kind: SeldonDeployment
metadata: {name: iris, namespace: seldon}
spec:
  predictors:
  - {name: default, graph: {name: classifier, implementation: SKLEARN_SERVER}}
status: {state: Available}
"#;
    let gw = Gateway::start(
        &[("iris.yaml", sdep.to_string())],
        Options {
            endpoints: vec![ep("seldon", "iris-default", &main.endpoint())],
            ..Default::default()
        },
    )
    .await;
    let script = r#"
import sys
import numpy as np
from seldon_core.seldon_client import SeldonClient
sc = SeldonClient(deployment_name="iris", namespace="seldon", gateway="ambassador",
                  gateway_endpoint=sys.argv[1])
r = sc.predict(data=np.array([[5.1, 3.5, 1.4, 0.2]]), headers={"x-test-echo": "1"})
print("success" if r.success else "failure: " + str(r.msg))
print(list(r.response["data"]["tensor"]["values"]))
"#;
    let endpoint = format!("127.0.0.1:{}", gw.port);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &endpoint])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("success\n"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[5.1, 3.5, 1.4, 0.2]"), "{stdout}");
    let seen = &main.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/api/v1.0/predictions");
    assert_eq!(seen.header("content-type"), Some("application/json"));
}
