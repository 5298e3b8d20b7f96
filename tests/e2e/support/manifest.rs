//! InferenceService manifests shaped like `kubectl get isvc -o yaml` output.

/// One `status.components.<c>.traffic[]` entry.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub revision: String,
    pub percent: u32,
    pub tag: Option<String>,
    pub latest: bool,
}

pub fn traffic(revision: &str, percent: u32, tag: Option<&str>, latest: bool) -> Traffic {
    Traffic {
        revision: revision.into(),
        percent,
        tag: tag.map(Into::into),
        latest,
    }
}

/// A ready v1beta1 InferenceService in Knative mode with one predictor.
#[derive(Debug, Clone)]
pub struct Isvc {
    pub name: String,
    pub namespace: String,
    pub created: String,
    pub timeout: Option<u64>,
    pub canary_percent: Option<u32>,
    pub predictor: Vec<Traffic>,
    pub explainer: Option<Vec<Traffic>>,
    pub ready: bool,
}

impl Isvc {
    pub fn new(name: &str, namespace: &str, predictor: Vec<Traffic>) -> Self {
        Isvc {
            name: name.into(),
            namespace: namespace.into(),
            created: "2026-01-01T00:00:00Z".into(),
            timeout: None,
            canary_percent: None,
            predictor,
            explainer: None,
            ready: true,
        }
    }

    /// The object as JSON, as the API server sends it.
    pub fn json(&self) -> serde_json::Value {
        serde_yaml::from_str(&self.yaml()).unwrap()
    }

    /// The object as YAML.
    pub fn yaml(&self) -> String {
        let (n, ns) = (&self.name, &self.namespace);
        let mut spec_predictor = String::new();
        if let Some(t) = self.timeout {
            spec_predictor.push_str(&format!("    timeout: {t}\n"));
        }
        if let Some(p) = self.canary_percent {
            spec_predictor.push_str(&format!("    canaryTrafficPercent: {p}\n"));
        }
        let status = if self.ready { "True" } else { "False" };
        let mut components = component(n, ns, "predictor", &self.predictor);
        let mut spec_explainer = String::new();
        let mut conditions = format!(
            "  - type: PredictorReady\n    status: \"{status}\"\n  - type: Ready\n    status: \"{status}\"\n"
        );
        if let Some(e) = &self.explainer {
            components.push_str(&component(n, ns, "explainer", e));
            spec_explainer = "  explainer:\n    containers:\n    - name: kserve-container\n      image: example/explainer:1\n".into();
            conditions.push_str(&format!(
                "  - type: ExplainerReady\n    status: \"{status}\"\n"
            ));
        }
        format!(
            r#"apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {n}
  namespace: {ns}
  creationTimestamp: "{created}"
  generation: 1
spec:
  predictor:
{spec_predictor}    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
{spec_explainer}status:
  url: http://{n}.{ns}.example.com
  address:
    url: http://{n}.{ns}.svc.cluster.local
  components:
{components}  conditions:
{conditions}"#,
            created = self.created
        )
    }
}

fn component(n: &str, ns: &str, c: &str, traffic: &[Traffic]) -> String {
    let mut out = format!(
        "    {c}:\n      url: http://{n}-{c}.{ns}.example.com\n      address:\n        url: http://{n}-{c}.{ns}.svc.cluster.local\n"
    );
    if let Some(latest) = traffic.iter().find(|t| t.latest) {
        out.push_str(&format!(
            "      latestCreatedRevision: {r}\n      latestReadyRevision: {r}\n",
            r = latest.revision
        ));
    }
    out.push_str("      traffic:\n");
    for t in traffic {
        out.push_str(&format!(
            "      - revisionName: {}\n        percent: {}\n        latestRevision: {}\n",
            t.revision, t.percent, t.latest
        ));
        if let Some(tag) = &t.tag {
            out.push_str(&format!(
                "        tag: {tag}\n        url: http://{tag}-{n}-{c}.{ns}.example.com\n"
            ));
        }
    }
    out
}
