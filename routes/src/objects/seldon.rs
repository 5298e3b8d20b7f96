//! Seldon Core v1 `SeldonDeployment`s (`machinelearning.seldon.io/v1`, `v1alpha2`, `v1alpha3`),
//! routed as Seldon's own Ambassador and Istio resources route them (seldon-core v1.18,
//! `operator/controllers/ambassador/v2.go` and `createIstioResources`):
//! - `/seldon/{namespace}/{name}/` is stripped and the request goes to the predictors' Services,
//!   `{name}-{predictor}` (`seldon-{md5}` past 63 characters; the predictor's
//!   `seldon.io/svc-name` annotation replaces it) on port 8000, split by `traffic`;
//! - a `shadow: true` predictor gets a copy of the traffic (its `traffic` percent, or all of it
//!   when 0, as Istio's `mirrorPercentage`), whose answers are discarded;
//! - an explainer is `/seldon/{namespace}/{name}-explainer/{predictor}/`, its Service
//!   `{name}-{predictor}-explainer` on port 9000 (or its `endpoint.service_port`);
//! - ready when `status.state` is `Available`.
//!
//! gRPC (the `seldon` and `namespace` metadata, port 5001) needs HTTP/2 to the upstream, which
//! the gateway does not speak yet: each object says so in a warning.

use super::reader::{get, mget};
use super::{is_dns_label, Cx, ObjectRoutes, State, CLUSTER_SUFFIX};
use crate::table::{Backend, Endpoint, HostRoute, Shadow, Target};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

const SVC_NAME_ANNOTATION: &str = "seldon.io/svc-name";
const ENGINE_PORT: u16 = 8000;
const EXPLAINER_PORT: u16 = 9000;

/// One predictor as the routes need it.
struct Predictor {
    name: String,
    service: String,
    traffic: u32,
    shadow: bool,
    explainer: Option<u16>,
}

impl Cx<'_> {
    pub(super) fn seldon(&mut self, obj: &Value) -> State {
        match super::reader::str_field(obj, "apiVersion") {
            Some(
                "machinelearning.seldon.io/v1"
                | "machinelearning.seldon.io/v1alpha2"
                | "machinelearning.seldon.io/v1alpha3",
            ) => {}
            Some(other) => {
                self.r.err(
                    "apiVersion",
                    format!(
                        "{other:?} is not supported (want machinelearning.seldon.io/v1, \
                         v1alpha2 or v1alpha3)"
                    ),
                );
                return State::Invalid;
            }
            None => {
                self.r.required_str(get(obj, "apiVersion"), "apiVersion");
                return State::Invalid;
            }
        }
        let Some(spec) = self.r.map(get(obj, "spec"), "spec") else {
            self.r.err("spec", "missing");
            return State::Invalid;
        };
        let list = match self.r.seq(mget(spec, "predictors"), "spec.predictors") {
            Some(l) if !l.is_empty() => l,
            Some(_) => {
                self.r.err("spec.predictors", "empty");
                return State::Invalid;
            }
            None => {
                if mget(spec, "predictors").is_none() {
                    self.r.err("spec.predictors", "missing");
                }
                return State::Invalid;
            }
        };
        let mut predictors = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let field = format!("spec.predictors[{i}]");
            if let Some(p) = self.r.map(Some(p), &field) {
                if let Some(p) = self.predictor(p, &field) {
                    predictors.push(p);
                }
            }
        }
        self.check_traffic(&predictors);
        self.r.warn(
            "spec.predictors",
            "gRPC (the `seldon`/`namespace` metadata, port 5001) is not routed: the gateway does \
             not speak HTTP/2 to upstreams yet; REST is routed",
        );
        let state = self
            .r
            .map(get(obj, "status"), "status")
            .and_then(|s| self.r.str(mget(s, "state"), "status.state"));
        if state != Some("Available") {
            return State::NotReady;
        }
        if !self.r.errors.is_empty() {
            return State::Invalid;
        }
        self.seldon_routes(&predictors)
    }

    fn predictor(&mut self, p: &serde_yaml::Mapping, field: &str) -> Option<Predictor> {
        let name = self
            .r
            .required_str(mget(p, "name"), &format!("{field}.name"))?;
        if !is_dns_label(name) {
            self.r.err(
                format!("{field}.name"),
                format!("{name:?} is not a valid DNS-1123 label"),
            );
            return None;
        }
        let traffic = self
            .r
            .percent(mget(p, "traffic"), &format!("{field}.traffic"))
            .unwrap_or(0);
        let shadow = self
            .r
            .bool(mget(p, "shadow"), &format!("{field}.shadow"))
            .unwrap_or(false);
        let annotations = self
            .r
            .string_map(mget(p, "annotations"), &format!("{field}.annotations"));
        let service = match annotations.get(SVC_NAME_ANNOTATION) {
            Some(s) if is_dns_label(s) => s.clone(),
            Some(s) => {
                self.r.err(
                    format!("{field}.annotations[{SVC_NAME_ANNOTATION:?}]"),
                    format!("{s:?} is not a valid Service name"),
                );
                return None;
            }
            None => seldon_name(&format!("{}-{name}", self.isvc.name)),
        };
        let explainer = match self
            .r
            .map(mget(p, "explainer"), &format!("{field}.explainer"))
        {
            None => None,
            Some(e) => {
                let ef = format!("{field}.explainer.endpoint.service_port");
                let port = self
                    .r
                    .map(mget(e, "endpoint"), &format!("{field}.explainer.endpoint"))
                    .and_then(|ep| self.r.int(mget(ep, "service_port"), &ef));
                match port {
                    None => Some(EXPLAINER_PORT),
                    Some(p) => match u16::try_from(p) {
                        Ok(p) if p > 0 => Some(p),
                        _ => {
                            self.r.err(ef, format!("{p} is not a port"));
                            None
                        }
                    },
                }
            }
        };
        Some(Predictor {
            name: name.to_string(),
            service,
            traffic,
            shadow,
            explainer,
        })
    }

    /// Seldon's webhook rules (`seldondeployment_webhook.go`): one shadow at most, never alone;
    /// the other predictors' traffic sums to 100 when there are several; a single predictor's,
    /// when set, is 100; no two predictors share a Service name.
    fn check_traffic(&mut self, predictors: &[Predictor]) {
        let shadows: Vec<_> = predictors.iter().filter(|p| p.shadow).collect();
        let serving: Vec<_> = predictors.iter().filter(|p| !p.shadow).collect();
        if shadows.len() > 1 {
            self.r
                .err("spec.predictors", "multiple shadows are not allowed");
        }
        if serving.is_empty() && !shadows.is_empty() {
            self.r
                .err("spec.predictors", "a shadow cannot be the only predictor");
        }
        let sum: u32 = serving.iter().map(|p| p.traffic).sum();
        if serving.len() > 1 && sum != 100 {
            self.r.err(
                "spec.predictors",
                format!("traffic must sum to 100 for multiple predictors (it sums to {sum})"),
            );
        }
        if predictors.len() == 1 && sum > 0 && sum < 100 {
            self.r.err(
                "spec.predictors[0].traffic",
                format!("{sum}: a single predictor's traffic must be 100 when set"),
            );
        }
        for (i, p) in predictors.iter().enumerate() {
            if predictors[..i].iter().any(|q| q.service == p.service) {
                self.r.err(
                    format!("spec.predictors[{i}]"),
                    format!("duplicate service name {:?}", p.service),
                );
            }
        }
    }

    fn seldon_routes(&mut self, predictors: &[Predictor]) -> State {
        let ns = self.isvc.namespace.clone();
        let backend = |cx: &Self, p: &Predictor, service: &str, port: u16, weight: u32| {
            let host = format!("{service}.{ns}.{CLUSTER_SUFFIX}");
            Backend {
                memo: Default::default(),
                revision: p.name.clone(),
                weight,
                endpoints: cx.endpoints(
                    &[service],
                    Endpoint {
                        host: host.clone(),
                        port,
                    },
                ),
                knative: false,
                upstream_host: Some(host),
            }
        };
        let serving: Vec<&Predictor> = predictors.iter().filter(|p| !p.shadow).collect();
        // One serving predictor takes everything, whatever its `traffic` says.
        let backends: Vec<Backend> = serving
            .iter()
            .map(|p| {
                let weight = if serving.len() == 1 { 100 } else { p.traffic };
                backend(self, p, &p.service, ENGINE_PORT, weight)
            })
            .filter(|b| b.weight > 0)
            .collect();
        let shadow = predictors.iter().find(|p| p.shadow).map(|p| Shadow {
            backend: backend(self, p, &p.service, ENGINE_PORT, 100),
            percent: if p.traffic == 0 { 100 } else { p.traffic },
        });
        let Some(first) = backends.first() else {
            return State::Invalid;
        };
        let target = Arc::new(Target {
            shadow,
            memo: Default::default(),
            component: "predictor".into(),
            upstream_host: first.upstream_host.clone().unwrap_or_default(),
            timeout_secs: None,
            backends,
        });
        let mut routes = ObjectRoutes::default();
        let (ns, name) = (&self.isvc.namespace, &self.isvc.name);
        routes.add(
            &format!("/seldon/{ns}/{name}"),
            &self.single(&target, BTreeMap::new()),
        );
        for p in predictors {
            let Some(port) = p.explainer else {
                continue;
            };
            let service = seldon_name(&format!("{name}-{}-explainer", p.name));
            let b = backend(self, p, &service, port, 100);
            let explainer = Arc::new(Target {
                shadow: None,
                memo: Default::default(),
                component: "explainer".into(),
                upstream_host: b.upstream_host.clone().unwrap_or_default(),
                timeout_secs: None,
                backends: vec![b],
            });
            routes.add(
                &format!("/seldon/{ns}/{name}-explainer/{}", p.name),
                &Arc::new(HostRoute {
                    memo: Default::default(),
                    isvc: self.isvc.clone(),
                    entry: explainer,
                    explainer: None,
                    tags: BTreeMap::new(),
                }),
            );
        }
        State::Routes(routes)
    }
}

/// Seldon's names for generated objects: as is up to 63 characters, else `seldon-` and the
/// hex MD5 of the name (`GetPredictorKey`, `GetExplainerDeploymentName`).
fn seldon_name(name: &str) -> String {
    use md5::{Digest, Md5};
    if name.len() <= 63 {
        return name.to_string();
    }
    let digest = Md5::digest(name.as_bytes());
    let mut out = String::from("seldon-");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long names are hashed as Seldon hashes them (md5 of the whole name, hex).
    #[test]
    fn long_names_are_hashed() {
        assert_eq!(seldon_name("iris-default"), "iris-default");
        assert_eq!(seldon_name(&"m".repeat(63)), "m".repeat(63));
        // python3 -c 'import hashlib; print(hashlib.md5(("m"*62+"-p").encode()).hexdigest())'
        let long = format!("{}-p", "m".repeat(62));
        assert_eq!(
            seldon_name(&long),
            "seldon-ae62243cc4592e511a37bc700156be6f"
        );
    }
}
