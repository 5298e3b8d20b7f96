//! `serving.kserve.io/v1beta1` and KFServing 0.5-0.6's `serving.kubeflow.org/v1beta1`:
//! `status.components.<c>.traffic[]` in Knative (Serverless) mode, one Service per component in
//! RawDeployment (`Standard`) mode.

use super::reader::{get, mget};
use super::{
    capitalise, cluster_local_forms, is_dns_label, Cx, Flavor, ObjectRoutes, State, CLUSTER_SUFFIX,
};
use crate::host::normalize_host;
use crate::table::{Backend, Endpoint, HostRoute, Target};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const MODE_ANNOTATION: &str = "serving.kserve.io/deploymentMode";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Knative,
    Raw,
}

/// A component's status as KServe v1beta1 writes it (the fields we read).
#[derive(Debug, Default)]
struct ComponentStatus {
    url: Option<String>,
    address: Option<String>,
    latest_ready_revision: Option<String>,
    traffic: Vec<TrafficTarget>,
}

/// Knative's `TrafficTarget` as it appears in status (the fields we read).
#[derive(Debug)]
struct TrafficTarget {
    revision_name: Option<String>,
    percent: u32,
    /// False when `percent` was unreadable (already reported): the sum is not checked then.
    percent_ok: bool,
    tag: Option<String>,
    url: Option<String>,
}

/// The Standard-mode rollout of the predictor: the stable predictor's name, and the Services of
/// the ready canaries with their percent.
#[derive(Debug, Default)]
struct Canaries {
    stable: Option<String>,
    ready: Vec<(String, u32)>,
}

/// One component with its routes, before hosts are assigned.
struct Built {
    target: Arc<Target>,
    /// tag -> (the tag's hosts, target pinned to the tagged revision)
    tags: BTreeMap<String, (Vec<String>, Arc<Target>)>,
    own_hosts: Vec<String>,
}

impl Cx<'_> {
    /// did), then the annotation; objects from before either existed are Serverless.
    pub(super) fn mode(
        &mut self,
        annotations: &BTreeMap<String, String>,
        status: Option<&Mapping>,
    ) -> Mode {
        let from_status = status.and_then(|s| {
            self.r
                .str(mget(s, "deploymentMode"), "status.deploymentMode")
                .map(|m| (m.to_string(), "status.deploymentMode".to_string()))
        });
        let from_annotation = annotations.get(MODE_ANNOTATION).map(|m| {
            (
                m.clone(),
                format!("metadata.annotations[{MODE_ANNOTATION:?}]"),
            )
        });
        let Some((mode, field)) = from_status.or(from_annotation) else {
            return Mode::Knative;
        };
        match mode.as_str() {
            "Serverless" | "Knative" => Mode::Knative,
            "RawDeployment" | "Standard" => Mode::Raw,
            "ModelMesh" => {
                self.r.err(
                    field,
                    "ModelMesh is not supported: ModelMesh serves through its own router",
                );
                Mode::Knative
            }
            other => {
                self.r.err(
                    field,
                    format!(
                        "unknown deploymentMode {other:?} (want Serverless, Knative, \
                         RawDeployment or Standard)"
                    ),
                );
                Mode::Knative
            }
        }
    }

    /// `serving.kserve.io/v1beta1` and `serving.kubeflow.org/v1beta1`.
    pub(super) fn v1beta1(&mut self, obj: &Value, flavor: Flavor, mode: Mode) -> State {
        let Some(spec) = self.r.map(get(obj, "spec"), "spec") else {
            self.r.err("spec", "missing");
            return State::Invalid;
        };
        let mut components = Vec::new();
        for c in ["predictor", "transformer", "explainer"] {
            let field = format!("spec.{c}");
            let Some(cspec) = self.r.map(mget(spec, c), &field) else {
                if c == "predictor" && mget(spec, c).is_none() {
                    self.r.err(field, "missing");
                }
                continue;
            };
            let timeout = self
                .r
                .timeout(mget(cspec, "timeout"), &format!("{field}.timeout"));
            components.push((c, timeout));
        }
        // Ready is PredictorReady and IngressReady in KServe; IngressReady describes the Istio
        // VirtualService this gateway replaces, so only the component conditions count here,
        // exactly the ones KServe's ingress reconciler waits for before it routes.
        let ready = !components.is_empty()
            && components
                .iter()
                .all(|(c, _)| self.is_true(&format!("{}Ready", capitalise(c))));
        if !ready {
            return State::NotReady;
        }
        let no_status = Mapping::new();
        let status = self
            .r
            .map(get(obj, "status"), "status")
            .unwrap_or(&no_status);
        let main = self.main_hosts(status);
        let domain = main.first().and_then(|h| {
            h.strip_prefix(&format!("{}.{}.", self.isvc.name, self.isvc.namespace))
                .map(str::to_string)
        });
        let canaries = self.standard_canaries(spec, status, mode);
        let cstatus = self.r.map(mget(status, "components"), "status.components");
        let mut built: BTreeMap<&str, Built> = BTreeMap::new();
        for (c, timeout) in &components {
            let field = format!("status.components.{c}");
            let Some(cs) = cstatus.and_then(|m| self.r.map(mget(m, c), &field)) else {
                self.r.err(
                    field,
                    format!("missing although {}Ready is True", capitalise(c)),
                );
                continue;
            };
            let cs = self.component_status(cs, &field, mode);
            let service = match (flavor, *c) {
                (Flavor::KubeflowV1beta1, _) => format!("{}-{c}-default", self.isvc.name),
                // KServe 0.20: a named stable predictor has the Service `{isvc}-{name}-predictor`.
                (_, "predictor") if mode == Mode::Raw => match &canaries.stable {
                    Some(n) => format!("{}-{n}-predictor", self.isvc.name),
                    None => format!("{}-predictor", self.isvc.name),
                },
                _ => format!("{}-{c}", self.isvc.name),
            };
            let canaries = if *c == "predictor" {
                &canaries.ready[..]
            } else {
                &[]
            };
            if let Some(b) = self.component(
                c,
                *timeout,
                &service,
                &cs,
                &field,
                mode,
                domain.as_deref(),
                canaries,
            ) {
                built.insert(c, b);
            }
        }
        if !self.r.errors.is_empty() || main.is_empty() {
            return State::Invalid;
        }
        let entry_name = if built.contains_key("transformer") {
            "transformer"
        } else {
            "predictor"
        };
        let Some(entry) = built.get(entry_name) else {
            return State::Invalid;
        };
        let mut routes = ObjectRoutes::default();
        let main_route = Arc::new(HostRoute {
            memo: Default::default(),
            isvc: self.isvc.clone(),
            entry: entry.target.clone(),
            explainer: built.get("explainer").map(|b| b.target.clone()),
            tags: entry
                .tags
                .iter()
                .map(|(t, (_, target))| (t.clone(), target.clone()))
                .collect(),
        });
        for h in &main {
            routes.add(h, &main_route);
        }
        self.path_route(&mut routes, &main_route);
        for b in built.values() {
            for (hosts, target) in b.tags.values() {
                let route = self.single(target, BTreeMap::new());
                for host in hosts {
                    routes.add(host, &route);
                }
            }
        }
        for b in built.values() {
            let tags = b
                .tags
                .iter()
                .map(|(t, (_, target))| (t.clone(), target.clone()))
                .collect();
            let route = self.single(&b.target, tags);
            for h in &b.own_hosts {
                routes.add(h, &route);
            }
        }
        State::Routes(routes)
    }

    /// KServe 0.20's Standard-mode canaries (`spec.canary[]`, `spec.predictor.name`), and which
    /// of them `status.canaryStatuses` reports ready: KServe's HTTPRoute gives a ready canary its
    /// `trafficPercent` and drops one that is not ready (or not in status yet). Checked as
    /// KServe's webhook checks them. `canaryTrafficPercent` does nothing in Standard mode, which
    /// is said rather than pretended.
    fn standard_canaries(&mut self, spec: &Mapping, status: &Mapping, mode: Mode) -> Canaries {
        let mut out = Canaries::default();
        for c in ["predictor", "transformer", "explainer"] {
            let field = format!("spec.{c}.canaryTrafficPercent");
            let Some(cspec) = mget(spec, c).and_then(Value::as_mapping) else {
                continue;
            };
            if mode == Mode::Raw && mget(cspec, "canaryTrafficPercent").is_some() {
                self.r.warn(
                    field,
                    "ignored: KServe does not split by canaryTrafficPercent in Standard \
                     (RawDeployment) mode; spec.canary[] does",
                );
            }
        }
        let predictor = mget(spec, "predictor").and_then(Value::as_mapping);
        if mode == Mode::Raw {
            out.stable = predictor
                .and_then(|p| self.r.str(mget(p, "name"), "spec.predictor.name"))
                .and_then(|n| self.label(n, "spec.predictor.name"));
        }
        let Some(list) = self.r.seq(mget(spec, "canary"), "spec.canary") else {
            return out;
        };
        if mode != Mode::Raw {
            self.r.err(
                "spec.canary",
                "canaries in spec.canary need the Standard (RawDeployment) deployment mode; \
                 this object is Serverless (use canaryTrafficPercent)",
            );
            return out;
        }
        let mut ready = BTreeMap::new();
        for (i, cs) in self
            .r
            .seq(mget(status, "canaryStatuses"), "status.canaryStatuses")
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("status.canaryStatuses[{i}]");
            let Some(cs) = self.r.map(Some(cs), &field) else {
                continue;
            };
            let name = self
                .r
                .required_str(mget(cs, "name"), &format!("{field}.name"));
            let is_ready = self.r.bool(mget(cs, "ready"), &format!("{field}.ready"));
            if let Some(name) = name {
                ready.insert(name.to_string(), is_ready.unwrap_or(false));
            }
        }
        let mut names = Vec::new();
        let mut total = 0;
        for (i, c) in list.iter().enumerate() {
            let field = format!("spec.canary[{i}]");
            let Some(c) = self.r.map(Some(c), &field) else {
                continue;
            };
            // `trafficPercent` is not `omitempty` in KServe's types: absent reads as 0.
            let percent = self
                .r
                .percent(
                    mget(c, "trafficPercent"),
                    &format!("{field}.trafficPercent"),
                )
                .unwrap_or(0);
            total += percent;
            let name_field = format!("{field}.predictor.name");
            let name = self
                .r
                .map(mget(c, "predictor"), &format!("{field}.predictor"))
                .and_then(|p| self.r.required_str(mget(p, "name"), &name_field))
                .and_then(|n| self.label(n, &name_field));
            let Some(name) = name else {
                if mget(c, "predictor").is_none() {
                    self.r.err(format!("{field}.predictor"), "missing");
                }
                continue;
            };
            if out.stable.as_deref() == Some(name.as_str()) {
                self.r.err(
                    name_field,
                    format!("{name:?} is the stable predictor's name"),
                );
                continue;
            }
            if names.contains(&name) {
                self.r
                    .err(name_field, format!("canary {name:?} is listed twice"));
                continue;
            }
            names.push(name.clone());
            if ready.get(&name) == Some(&true) && percent > 0 {
                out.ready
                    .push((format!("{}-{name}-predictor", self.isvc.name), percent));
            }
        }
        if total > 100 {
            self.r.err(
                "spec.canary",
                format!("sum of canary trafficPercent values ({total}) must be <= 100"),
            );
        }
        out
    }

    /// `s` when it is a DNS-1123 label (a name KServe builds a Service name from).
    fn label(&mut self, s: &str, field: &str) -> Option<String> {
        if is_dns_label(s) {
            Some(s.to_string())
        } else {
            self.r
                .err(field, format!("{s:?} is not a valid DNS-1123 label"));
            None
        }
    }

    fn component_status(&mut self, cs: &Mapping, field: &str, mode: Mode) -> ComponentStatus {
        let mut out = ComponentStatus {
            url: self.r.url(mget(cs, "url"), &format!("{field}.url")),
            ..Default::default()
        };
        if let Some(a) = self.r.map(mget(cs, "address"), &format!("{field}.address")) {
            out.address = self.r.url(mget(a, "url"), &format!("{field}.address.url"));
        }
        if mode == Mode::Raw {
            return out;
        }
        out.latest_ready_revision = self
            .r
            .str(
                mget(cs, "latestReadyRevision"),
                &format!("{field}.latestReadyRevision"),
            )
            .map(str::to_string);
        let traffic = self.r.seq(mget(cs, "traffic"), &format!("{field}.traffic"));
        for (i, t) in traffic.into_iter().flatten().enumerate() {
            let tf = format!("{field}.traffic[{i}]");
            let Some(t) = self.r.map(Some(t), &tf) else {
                continue;
            };
            let revision_name = self
                .r
                .required_str(mget(t, "revisionName"), &format!("{tf}.revisionName"));
            if let Some(rev) = revision_name {
                if !is_dns_label(rev) {
                    self.r.err(
                        format!("{tf}.revisionName"),
                        format!("{rev:?} is not a valid DNS-1123 label"),
                    );
                }
            }
            let percent_field = mget(t, "percent");
            let percent = self.r.percent(percent_field, &format!("{tf}.percent"));
            let percent_ok = percent.is_some() || percent_field.is_none();
            let percent = percent.unwrap_or(0);
            let tag = self.r.str(mget(t, "tag"), &format!("{tf}.tag"));
            if let Some(tag) = tag {
                if !is_dns_label(tag) {
                    self.r.err(
                        format!("{tf}.tag"),
                        format!("{tag:?} is not a valid DNS-1123 label"),
                    );
                }
            }
            let _ = self
                .r
                .bool(mget(t, "latestRevision"), &format!("{tf}.latestRevision"));
            out.traffic.push(TrafficTarget {
                revision_name: revision_name.map(str::to_string),
                percent,
                percent_ok,
                tag: tag.map(str::to_string),
                url: self.r.url(mget(t, "url"), &format!("{tf}.url")),
            });
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn component(
        &mut self,
        c: &str,
        timeout_secs: Option<u64>,
        service: &str,
        cs: &ComponentStatus,
        field: &str,
        mode: Mode,
        domain: Option<&str>,
        canaries: &[(String, u32)],
    ) -> Option<Built> {
        let ns = &self.isvc.namespace;
        let upstream_host = cs
            .address
            .clone()
            .unwrap_or_else(|| format!("{service}.{ns}.{CLUSTER_SUFFIX}"));
        let mut own_hosts: Vec<String> = cs.url.iter().cloned().collect();
        if let Some(a) = &cs.address {
            own_hosts.extend(cluster_local_forms(a));
        }
        let target = |backends: Vec<Backend>| {
            Arc::new(Target {
                shadow: None,
                memo: Default::default(),
                component: c.to_string(),
                upstream_host: upstream_host.clone(),
                timeout_secs,
                backends,
            })
        };
        if mode == Mode::Raw {
            let endpoints = self.endpoints(
                &[service],
                Endpoint {
                    host: format!("{service}.{ns}.{CLUSTER_SUFFIX}"),
                    port: 80,
                },
            );
            // KServe's HTTPRoute: each ready canary its percent, the stable Service the rest.
            let canary_share: u32 = canaries.iter().map(|(_, p)| p).sum();
            let stable = Backend {
                memo: Default::default(),
                revision: service.to_string(),
                weight: 100 - canary_share.min(100),
                endpoints,
                knative: false,
                upstream_host: None,
            };
            let canaries = canaries.iter().map(|(canary, percent)| Backend {
                memo: Default::default(),
                revision: canary.clone(),
                weight: *percent,
                endpoints: self.endpoints(
                    &[canary],
                    Endpoint {
                        host: format!("{canary}.{ns}.{CLUSTER_SUFFIX}"),
                        port: 80,
                    },
                ),
                knative: false,
                upstream_host: Some(format!("{canary}.{ns}.{CLUSTER_SUFFIX}")),
            });
            // A backend with no share is no backend (a dark launch, or the stable at 0 %).
            let backends = std::iter::once(stable)
                .chain(canaries)
                .filter(|b| b.weight > 0)
                .collect();
            return Some(Built {
                target: target(backends),
                tags: BTreeMap::new(),
                own_hosts,
            });
        }
        let backend = |cx: &Self, revision: &str, weight: u32| Backend {
            memo: Default::default(),
            revision: revision.to_string(),
            weight,
            endpoints: cx.endpoints(&[revision, service], cx.revision_endpoint(revision)),
            knative: true,
            upstream_host: None,
        };
        if cs.traffic.is_empty() {
            // Status from before KServe copied Knative's traffic block: the latest ready revision
            // takes everything, as Knative's default route does.
            let Some(rev) = &cs.latest_ready_revision else {
                self.r.err(
                    format!("{field}.traffic"),
                    "missing, and no latestReadyRevision either",
                );
                return None;
            };
            return Some(Built {
                target: target(vec![backend(self, rev, 100)]),
                tags: BTreeMap::new(),
                own_hosts,
            });
        }
        let mut split: Vec<(String, u32)> = Vec::new();
        for t in &cs.traffic {
            let Some(rev) = &t.revision_name else {
                continue;
            };
            match split.iter_mut().find(|(r, _)| r == rev) {
                Some((_, p)) => *p += t.percent,
                None => split.push((rev.clone(), t.percent)),
            }
        }
        let total: u32 = cs.traffic.iter().map(|t| t.percent).sum();
        if total != 100 && cs.traffic.iter().all(|t| t.percent_ok) {
            self.r.err(
                format!("{field}.traffic"),
                format!("percents add up to {total}, not 100"),
            );
        }
        let backends = split
            .iter()
            .filter(|(_, p)| *p > 0)
            .map(|(rev, p)| backend(self, rev, *p))
            .collect();
        let mut tags = BTreeMap::new();
        for (i, t) in cs.traffic.iter().enumerate() {
            let (Some(tag), Some(rev)) = (&t.tag, &t.revision_name) else {
                continue;
            };
            if tags.contains_key(tag) {
                self.r.err(
                    format!("{field}.traffic[{i}].tag"),
                    format!("tag {tag:?} is used twice"),
                );
                continue;
            }
            // Knative names a tag host `{tag}-{route}.{namespace}.{domain}`; status carries it as
            // the entry's url, which we prefer when present.
            let host = match (&t.url, domain) {
                (Some(u), _) => Some(u.clone()),
                (None, Some(d)) => {
                    let h = format!("{tag}-{service}.{ns}.{d}");
                    match normalize_host(&h).map(|(h, _)| h) {
                        Ok(h) => Some(h),
                        Err(e) => {
                            self.r.err(
                                format!("{field}.traffic[{i}].tag"),
                                format!("tag host {h:?}: {e}"),
                            );
                            None
                        }
                    }
                }
                (None, None) => None,
            };
            // Knative serves the tag in every form the route's own host has: the external one
            // and the cluster-local `{tag}-{route}.{namespace}.svc.{cluster domain}` with its
            // short forms.
            let local = match &cs.address {
                Some(a) if a.starts_with(&format!("{service}.")) => format!("{tag}-{a}"),
                _ => format!("{tag}-{service}.{ns}.{CLUSTER_SUFFIX}"),
            };
            let hosts = host
                .into_iter()
                .chain(cluster_local_forms(&local))
                .collect();
            tags.insert(tag.clone(), (hosts, target(vec![backend(self, rev, 100)])));
        }
        Some(Built {
            target: target(backends),
            tags,
            own_hosts,
        })
    }
}
