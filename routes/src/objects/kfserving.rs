//! `serving.kubeflow.org/v1alpha2`: a default and an optional canary Knative Service per
//! component, weighted by `status.traffic` and `status.canaryTraffic`.

use super::reader::{get, mget};
use super::{capitalise, is_dns_label, Cx, ObjectRoutes, State, CLUSTER_SUFFIX};
use crate::table::{Backend, HostRoute, Target};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A v1alpha2 component's own hosts (default and canary), each pinned to its revision.
type OwnHosts = Vec<(String, Arc<Target>)>;

impl Cx<'_> {
    /// `serving.kubeflow.org/v1alpha2`: a default and an optional canary Knative Service per
    /// component, weighted by `status.traffic` and `status.canaryTraffic`.
    pub(super) fn v1alpha2(&mut self, obj: &Value) -> State {
        let Some(spec) = self.r.map(get(obj, "spec"), "spec") else {
            self.r.err("spec", "missing");
            return State::Invalid;
        };
        let mut ends: Vec<(&str, Vec<&str>)> = Vec::new();
        for end in ["default", "canary"] {
            let field = format!("spec.{end}");
            let Some(espec) = self.r.map(mget(spec, end), &field) else {
                if end == "default" && mget(spec, end).is_none() {
                    self.r.err(field, "missing");
                }
                continue;
            };
            let mut comps = Vec::new();
            for c in ["predictor", "transformer", "explainer"] {
                if self
                    .r
                    .map(mget(espec, c), &format!("{field}.{c}"))
                    .is_some()
                {
                    comps.push(c);
                } else if c == "predictor" && mget(espec, c).is_none() {
                    self.r.err(format!("{field}.predictor"), "missing");
                }
            }
            ends.push((end, comps));
        }
        let _ = self.r.percent(
            mget(spec, "canaryTrafficPercent"),
            "spec.canaryTrafficPercent",
        );
        let no_status = Mapping::new();
        let status = self
            .r
            .map(get(obj, "status"), "status")
            .unwrap_or(&no_status);
        // `traffic` and `canaryTraffic` are `omitempty` ints: absent means 0.
        let traffic = self
            .r
            .percent(mget(status, "traffic"), "status.traffic")
            .unwrap_or(0);
        let canary_traffic = self
            .r
            .percent(mget(status, "canaryTraffic"), "status.canaryTraffic")
            .unwrap_or(0);
        let Some((_, default_comps)) = ends.iter().find(|(e, _)| *e == "default").cloned() else {
            return State::Invalid;
        };
        let canary_comps = ends
            .iter()
            .find(|(e, _)| *e == "canary")
            .map(|(_, c)| c.clone());
        let mut needed: Vec<String> = default_comps
            .iter()
            .map(|c| format!("Default{}Ready", capitalise(c)))
            .collect();
        if canary_traffic > 0 {
            for c in canary_comps.iter().flatten() {
                needed.push(format!("Canary{}Ready", capitalise(c)));
            }
        }
        if !needed.iter().all(|c| self.is_true(c)) {
            return State::NotReady;
        }
        if traffic + canary_traffic != 100 {
            self.r.err(
                "status.traffic",
                format!(
                    "traffic ({traffic}) and canaryTraffic ({canary_traffic}) add up to {}, not 100",
                    traffic + canary_traffic
                ),
            );
        }
        let main = self.main_hosts(status);
        let ns = self.isvc.namespace.clone();
        let mut built: BTreeMap<&str, (Arc<Target>, OwnHosts)> = BTreeMap::new();
        for c in &default_comps {
            let upstream_host = format!("{}-{c}-default.{ns}.{CLUSTER_SUFFIX}", self.isvc.name);
            let mut backends = Vec::new();
            let mut own = Vec::new();
            for (end, weight) in [("default", traffic), ("canary", canary_traffic)] {
                if weight == 0 && end == "canary" {
                    continue;
                }
                let field = format!("status.{end}.{c}");
                let cs = self
                    .r
                    .map(mget(status, end), &format!("status.{end}"))
                    .and_then(|m| mget(m, c));
                let Some(cs) = self.r.map(cs, &field) else {
                    self.r.err(field, "missing");
                    continue;
                };
                let Some(rev) = self
                    .r
                    .required_str(mget(cs, "name"), &format!("{field}.name"))
                    .map(str::to_string)
                else {
                    continue;
                };
                if !is_dns_label(&rev) {
                    self.r.err(
                        format!("{field}.name"),
                        format!("{rev:?} is not a valid DNS-1123 label"),
                    );
                    continue;
                }
                let service = format!("{}-{c}-{end}", self.isvc.name);
                let endpoints = self.endpoints(&[&rev, &service], self.revision_endpoint(&rev));
                // A canary request carries the canary component's own host, as KFServing's
                // VirtualService set it; the default's is the target's.
                let backend = Backend {
                    memo: Default::default(),
                    revision: rev,
                    weight,
                    endpoints,
                    knative: true,
                    upstream_host: (end == "canary")
                        .then(|| format!("{service}.{ns}.{CLUSTER_SUFFIX}")),
                };
                if let Some(h) = self.r.host(mget(cs, "host"), &format!("{field}.host")) {
                    own.push((
                        h,
                        Arc::new(Target {
                            shadow: None,
                            memo: Default::default(),
                            component: c.to_string(),
                            upstream_host: format!("{service}.{ns}.{CLUSTER_SUFFIX}"),
                            timeout_secs: None,
                            backends: vec![Backend {
                                weight: 100,
                                upstream_host: None,
                                ..backend.clone()
                            }],
                        }),
                    ));
                }
                if weight > 0 {
                    backends.push(backend);
                }
            }
            let target = Arc::new(Target {
                shadow: None,
                memo: Default::default(),
                component: c.to_string(),
                upstream_host,
                timeout_secs: None,
                backends,
            });
            built.insert(c, (target, own));
        }
        if !self.r.errors.is_empty() || main.is_empty() {
            return State::Invalid;
        }
        let entry = built.get("transformer").or_else(|| built.get("predictor"));
        let Some((entry, _)) = entry else {
            return State::Invalid;
        };
        let mut routes = ObjectRoutes::default();
        let main_route = Arc::new(HostRoute {
            memo: Default::default(),
            isvc: self.isvc.clone(),
            entry: entry.clone(),
            explainer: built.get("explainer").map(|(t, _)| t.clone()),
            tags: BTreeMap::new(),
        });
        for h in &main {
            routes.add(h, &main_route);
        }
        self.path_route(&mut routes, &main_route);
        for (_, own) in built.values() {
            for (h, t) in own {
                routes.add(h, &self.single(t, BTreeMap::new()));
            }
        }
        State::Routes(routes)
    }
}
