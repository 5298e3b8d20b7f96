//! InferenceServices for the route-table benchmarks: `n` ready v1beta1 objects in Knative
//! mode, each a 20 % canary (`latest` 20, `prev` 80) with tag hosts, spread over namespaces the
//! way a shared cluster has them, and endpoint overrides for every revision.

use routes::{BuildOptions, Endpoint, SourceItem};
use std::collections::HashMap;

pub const DOMAIN: &str = "example.com";

pub fn name(i: usize) -> (String, String) {
    (format!("model-{i}"), format!("team-{}", i % 100))
}

/// The public host of object `i`.
// Each bench target compiles this module on its own; not every one uses every helper.
#[allow(dead_code)]
pub fn host(i: usize) -> String {
    let (n, ns) = name(i);
    format!("{n}.{ns}.{DOMAIN}")
}

/// Object `i` as `kubectl get isvc -o yaml` prints it (the fields the gateway reads).
pub fn isvc_yaml(i: usize) -> String {
    let (n, ns) = name(i);
    format!(
        r#"apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {n}
  namespace: {ns}
  creationTimestamp: "2026-01-01T00:00:00Z"
  generation: 2
spec:
  predictor:
    canaryTrafficPercent: 20
    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
status:
  url: http://{n}.{ns}.{DOMAIN}
  address:
    url: http://{n}.{ns}.svc.cluster.local
  components:
    predictor:
      url: http://{n}-predictor.{ns}.{DOMAIN}
      address:
        url: http://{n}-predictor.{ns}.svc.cluster.local
      latestCreatedRevision: {n}-predictor-00002
      latestReadyRevision: {n}-predictor-00002
      traffic:
      - revisionName: {n}-predictor-00002
        percent: 20
        latestRevision: true
        tag: latest
        url: http://latest-{n}-predictor.{ns}.{DOMAIN}
      - revisionName: {n}-predictor-00001
        percent: 80
        latestRevision: false
        tag: prev
        url: http://prev-{n}-predictor.{ns}.{DOMAIN}
  conditions:
  - type: PredictorReady
    status: "True"
  - type: Ready
    status: "True"
"#
    )
}

/// `n` objects in files of `per_file` `---`-separated documents (a `kubectl get -A -o yaml`
/// dump split up).
pub fn source(n: usize, per_file: usize) -> Vec<SourceItem> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per_file.max(1))
        .enumerate()
        .map(|(f, chunk)| SourceItem {
            path: format!("isvc/part-{f:05}.yaml"),
            contents: routes::Contents::Text(Ok(chunk
                .iter()
                .map(|&i| isvc_yaml(i))
                .collect::<Vec<_>>()
                .join("---\n"))),
        })
        .collect()
}

/// Every revision of the `n` objects overridden to two loopback ports, as the benchmark's
/// gateway config does.
pub fn options(n: usize) -> BuildOptions {
    let mut overrides = HashMap::new();
    for i in 0..n {
        let (name, ns) = name(i);
        for (rev, port) in [("00001", 9001), ("00002", 9002)] {
            overrides.insert(
                format!("{ns}/{name}-predictor-{rev}"),
                vec![Endpoint {
                    host: "127.0.0.1".into(),
                    port,
                }],
            );
        }
    }
    BuildOptions {
        overrides,
        fallback: None,
        path_template: None,
    }
}
