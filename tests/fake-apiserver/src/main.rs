//! The fake API server as a process, for `bench/run.sh`: serves `--objects N` ready
//! InferenceServices (each a 20 % canary with tag hosts, as the route-table benchmark's), writes
//! a kubeconfig for itself to `--kubeconfig`, and takes changes on a control port (`--control`,
//! loopback): `POST /apply` with an object as JSON applies it and answers with the time it was
//! sent to the watches; `GET /last-list` says when the last list page was answered. Both times
//! are Unix milliseconds.

use fake_apiserver::FakeApiServer;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Object `i`: `model-{i}` in namespace `team-{i % 100}`.
fn isvc(i: usize) -> Value {
    let (n, ns) = (format!("model-{i}"), format!("team-{}", i % 100));
    json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": n, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"predictor": {"canaryTrafficPercent": 20, "model": {"modelFormat": {"name": "sklearn"},
            "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}},
        "status": {
            "url": format!("http://{n}.{ns}.example.com"),
            "address": {"url": format!("http://{n}.{ns}.svc.cluster.local")},
            "components": {"predictor": {
                "url": format!("http://{n}-predictor.{ns}.example.com"),
                "latestCreatedRevision": format!("{n}-predictor-00002"),
                "latestReadyRevision": format!("{n}-predictor-00002"),
                "traffic": [
                    {"revisionName": format!("{n}-predictor-00002"), "percent": 20, "latestRevision": true,
                     "tag": "latest", "url": format!("http://latest-{n}-predictor.{ns}.example.com")},
                    {"revisionName": format!("{n}-predictor-00001"), "percent": 80, "latestRevision": false,
                     "tag": "prev", "url": format!("http://prev-{n}-predictor.{ns}.example.com")},
                ],
            }},
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}],
        },
    })
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut objects, mut kubeconfig, mut control) = (0usize, None, None);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--objects" => objects = value().parse().expect("--objects N"),
            "--kubeconfig" => kubeconfig = Some(value()),
            "--control" => control = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    let api = Arc::new(FakeApiServer::start().await);
    for i in 0..objects {
        api.apply(isvc(i));
    }
    if let Some(path) = kubeconfig {
        std::fs::write(path, api.kubeconfig()).expect("write the kubeconfig");
    }
    let control = tokio::net::TcpListener::bind(control.as_deref().unwrap_or("127.0.0.1:0"))
        .await
        .expect("bind the control port");
    println!(
        "fake-apiserver: {} with {objects} objects, control {}",
        api.url,
        control.local_addr().unwrap()
    );
    loop {
        let Ok((stream, _)) = control.accept().await else {
            return;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let api = api.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let body = match path.as_str() {
                        "/apply" => {
                            let bytes = req.into_body().collect().await.map(|b| b.to_bytes());
                            match bytes.ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                                Some(object) => {
                                    let rv = api.apply(object);
                                    json!({"resourceVersion": rv, "sent_ms": millis(SystemTime::now())})
                                }
                                None => json!({"error": "want an object as JSON"}),
                            }
                        }
                        "/last-list" => json!({"ms": api.last_list_at().map(millis)}),
                        _ => json!({"error": "POST /apply or GET /last-list"}),
                    };
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        body.to_string(),
                    ))))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
