//! One InferenceService object, as `kubectl get isvc -o yaml` prints it, turned into its routes.
//!
//! Three shapes are understood, all read from what the controller wrote into `status`:
//! - `serving.kserve.io/v1beta1` (and KFServing 0.5-0.6's `serving.kubeflow.org/v1beta1`, whose
//!   component services end in `-default`): `status.components.<c>.traffic[]` in Knative
//!   (Serverless) mode, one Service per component in RawDeployment (`Standard`) mode;
//! - `serving.kubeflow.org/v1alpha2`: `status.default`/`status.canary` revisions weighted by
//!   `status.traffic`/`status.canaryTraffic`.
//!
//! The fields are read by hand from a [`serde_yaml::Value`] rather than through derived serde
//! structs: a derived struct stops at the first wrong type and does not say where it was, while a
//! user needs every problem with its field path (`status.components.predictor.traffic[1].percent`).
//! [`Reader`] does that bookkeeping; the structs below hold only the fields we use.

use crate::catalog::BuildOptions;
use crate::host::normalize_host;
use crate::table::{Backend, Endpoint, HostRoute, IsvcRef, Target};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const STOP_ANNOTATION: &str = "serving.kserve.io/stop";
const MODE_ANNOTATION: &str = "serving.kserve.io/deploymentMode";
/// The cluster domain Kubernetes Services are assumed to live under when status names none.
const CLUSTER_SUFFIX: &str = "svc.cluster.local";

/// A problem inside one object: the field path (relative to the object) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: Option<String>,
    pub message: String,
}

/// Every host one InferenceService routes, in precedence order (main hosts, tag hosts,
/// component hosts), each host once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRoutes {
    pub hosts: Vec<(Arc<str>, Arc<HostRoute>)>,
}

impl ObjectRoutes {
    /// The first claim on a host within one object wins: a component host that happens to equal
    /// the main host (RawDeployment without a virtual host) keeps the main route.
    fn add(&mut self, host: &str, route: &Arc<HostRoute>) {
        if !self.hosts.iter().any(|(h, _)| &**h == host) {
            self.hosts.push((host.into(), route.clone()));
        }
    }
}

/// What an identified object contributes now.
#[derive(Debug)]
pub enum State {
    /// Ready and valid: these replace the object's routes.
    Routes(ObjectRoutes),
    /// Not (or no longer) ready: the object keeps its last good routes, if any. Not an error.
    NotReady,
    /// `serving.kserve.io/stop: "true"`: the object's routes go.
    Stopped,
    /// Something is wrong (see the errors): the object keeps its last good routes.
    Invalid,
}

/// An object that could be identified by `namespace/name`.
#[derive(Debug)]
pub struct Converted {
    pub isvc: IsvcRef,
    /// `metadata.creationTimestamp`, RFC 3339; decides which object keeps a contested host.
    pub created: Option<String>,
    pub state: State,
    pub errors: Vec<FieldError>,
}

/// The result of reading one Kubernetes object.
#[derive(Debug)]
pub enum Parsed {
    /// Another kind (a ConfigMap next to the InferenceServices): silently skipped.
    Ignored,
    /// An InferenceService without a usable `metadata.name`/`namespace`.
    Unidentified(Vec<FieldError>),
    Object(Box<Converted>),
}

/// Flattens one YAML document into the objects it holds: itself, or the `items` of a
/// `kind: List` (as `kubectl get isvc -A -o yaml` prints). Returns each object with the path
/// prefix that locates it (`items[2].`), and the errors for anything that is not an object.
pub fn flatten(
    doc: Value,
    prefix: &str,
    out: &mut Vec<(String, Value)>,
    errors: &mut Vec<FieldError>,
) {
    // Takes the document by value: objects are moved out, never cloned (a copy of every
    // parsed object was a sixth of the build time with 10,000 InferenceServices).
    match doc {
        Value::Null => {}
        Value::Tagged(t) => flatten(t.value, prefix, out, errors),
        Value::Mapping(mut m) if is_list(&m) => match m.remove("items") {
            None => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    flatten(item, &format!("{prefix}items[{i}]."), out, errors);
                }
            }
            Some(other) => errors.push(FieldError {
                field: Some(format!("{prefix}items")),
                message: format!("expected a list, found {}", kind(&other)),
            }),
        },
        Value::Mapping(m) => out.push((prefix.to_string(), Value::Mapping(m))),
        other => errors.push(FieldError {
            field: (!prefix.is_empty()).then(|| prefix.trim_end_matches('.').to_string()),
            message: format!(
                "expected a Kubernetes object (a mapping), found {}",
                kind(&other)
            ),
        }),
    }
}

/// `kind: List`, or a typed list such as `InferenceServiceList`.
fn is_list(m: &serde_yaml::Mapping) -> bool {
    match m.get("kind").and_then(Value::as_str) {
        Some("List") => true,
        Some(k) => k.ends_with("List") && m.contains_key("items"),
        None => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// `serving.kserve.io/v1beta1`.
    Kserve,
    /// `serving.kubeflow.org/v1beta1` (KFServing 0.5-0.6): component services end in `-default`.
    KubeflowV1beta1,
    /// `serving.kubeflow.org/v1alpha2`.
    V1alpha2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Knative,
    Raw,
}

/// Reads one object (a mapping). `prefix` locates it in its document, for errors about an object
/// that cannot be named.
pub fn convert(obj: &Value, prefix: &str, options: &BuildOptions) -> Parsed {
    if str_field(obj, "kind") != Some("InferenceService") {
        return Parsed::Ignored;
    }
    let mut r = Reader::default();
    let meta = r.map(get(obj, "metadata"), "metadata");
    let name = meta.and_then(|m| r.required_str(mget(m, "name"), "metadata.name"));
    let namespace = meta.and_then(|m| r.required_str(mget(m, "namespace"), "metadata.namespace"));
    for (value, field) in [(name, "metadata.name"), (namespace, "metadata.namespace")] {
        if let Some(v) = value {
            if !is_dns_label(v) {
                r.err(field, format!("{v:?} is not a valid DNS-1123 label"));
            }
        }
    }
    let (Some(name), Some(namespace)) = (name, namespace) else {
        let errors = r
            .errors
            .into_iter()
            .map(|e| FieldError {
                field: e.field.map(|f| format!("{prefix}{f}")),
                message: e.message,
            })
            .collect();
        return Parsed::Unidentified(errors);
    };
    if !r.errors.is_empty() {
        // Name or namespace present but unusable in a host name.
        return Parsed::Unidentified(r.errors);
    }
    let isvc = IsvcRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let meta = meta.expect("name came from metadata");
    let created = r
        .str(
            mget(meta, "creationTimestamp"),
            "metadata.creationTimestamp",
        )
        .map(str::to_string);
    let annotations = r.string_map(mget(meta, "annotations"), "metadata.annotations");

    let state = convert_body(obj, &isvc, &annotations, &mut r, options);
    let state = if r.errors.is_empty() {
        state
    } else {
        State::Invalid
    };
    Parsed::Object(Box::new(Converted {
        isvc,
        created,
        state,
        errors: r.errors,
    }))
}

fn convert_body(
    obj: &Value,
    isvc: &IsvcRef,
    annotations: &BTreeMap<String, String>,
    r: &mut Reader,
    options: &BuildOptions,
) -> State {
    let flavor = match str_field(obj, "apiVersion") {
        Some("serving.kserve.io/v1beta1") => Flavor::Kserve,
        Some("serving.kubeflow.org/v1beta1") => Flavor::KubeflowV1beta1,
        Some("serving.kubeflow.org/v1alpha2") => Flavor::V1alpha2,
        Some(other) => {
            r.err(
                "apiVersion",
                format!(
                    "{other:?} is not supported (want serving.kserve.io/v1beta1, \
                     serving.kubeflow.org/v1beta1 or serving.kubeflow.org/v1alpha2)"
                ),
            );
            return State::Invalid;
        }
        None => {
            r.required_str(get(obj, "apiVersion"), "apiVersion");
            return State::Invalid;
        }
    };
    if annotations
        .get(STOP_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return State::Stopped;
    }
    let status = r.map(get(obj, "status"), "status");
    let conditions = status
        .map(|s| r.conditions(mget(s, "conditions"), "status.conditions"))
        .unwrap_or_default();
    let mut cx = Cx {
        isvc,
        options,
        r,
        conditions,
    };
    match flavor {
        Flavor::V1alpha2 => cx.v1alpha2(obj),
        _ => {
            let mode = cx.mode(annotations, status);
            cx.v1beta1(obj, flavor, mode)
        }
    }
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

/// A v1alpha2 component's own hosts (default and canary), each pinned to its revision.
type OwnHosts = Vec<(String, Arc<Target>)>;

/// One component with its routes, before hosts are assigned.
struct Built {
    target: Arc<Target>,
    /// tag -> (tag host, target pinned to the tagged revision)
    tags: BTreeMap<String, (Option<String>, Arc<Target>)>,
    own_hosts: Vec<String>,
}

struct Cx<'a> {
    isvc: &'a IsvcRef,
    options: &'a BuildOptions,
    r: &'a mut Reader,
    conditions: BTreeMap<String, String>,
}

impl Cx<'_> {
    fn is_true(&self, condition: &str) -> bool {
        self.conditions.get(condition).map(String::as_str) == Some("True")
    }

    /// KServe resolves the mode from `status.deploymentMode` first (what the controller actually
    /// did), then the annotation; objects from before either existed are Serverless.
    fn mode(&mut self, annotations: &BTreeMap<String, String>, status: Option<&Mapping>) -> Mode {
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

    fn endpoints(&self, keys: &[&str], default: Endpoint) -> Vec<Endpoint> {
        for key in keys {
            let key = format!("{}/{key}", self.isvc.namespace);
            if let Some(e) = self.options.overrides.get(&key) {
                return e.clone();
            }
        }
        self.options
            .fallback
            .clone()
            .unwrap_or_else(|| vec![default])
    }

    fn revision_endpoint(&self, revision: &str) -> Endpoint {
        Endpoint {
            host: format!("{revision}.{}.{CLUSTER_SUFFIX}", self.isvc.namespace),
            port: 80,
        }
    }

    /// `serving.kserve.io/v1beta1` and `serving.kubeflow.org/v1beta1`.
    fn v1beta1(&mut self, obj: &Value, flavor: Flavor, mode: Mode) -> State {
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
            let service = match flavor {
                Flavor::KubeflowV1beta1 => format!("{}-{c}-default", self.isvc.name),
                _ => format!("{}-{c}", self.isvc.name),
            };
            if let Some(b) =
                self.component(c, *timeout, &service, &cs, &field, mode, domain.as_deref())
            {
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
        for b in built.values() {
            for (host, target) in b.tags.values() {
                if let Some(host) = host {
                    routes.add(host, &self.single(target, BTreeMap::new()));
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

    fn single(&self, target: &Arc<Target>, tags: BTreeMap<String, Arc<Target>>) -> Arc<HostRoute> {
        Arc::new(HostRoute {
            memo: Default::default(),
            isvc: self.isvc.clone(),
            entry: target.clone(),
            explainer: None,
            tags,
        })
    }

    /// `status.url`'s host and the cluster-local forms of `status.address.url`.
    fn main_hosts(&mut self, status: &Mapping) -> Vec<String> {
        let mut hosts = Vec::new();
        match self.r.url(mget(status, "url"), "status.url") {
            Some(h) => hosts.push(h),
            None if mget(status, "url").is_none() => self.r.err("status.url", "missing"),
            None => {}
        }
        if let Some(address) = self.r.map(mget(status, "address"), "status.address") {
            if let Some(h) = self.r.url(mget(address, "url"), "status.address.url") {
                for form in cluster_local_forms(&h) {
                    if !hosts.contains(&form) {
                        hosts.push(form);
                    }
                }
            }
        }
        hosts
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
            let backend = Backend {
                memo: Default::default(),
                revision: service.to_string(),
                weight: 100,
                endpoints,
                knative: false,
            };
            return Some(Built {
                target: target(vec![backend]),
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
            tags.insert(tag.clone(), (host, target(vec![backend(self, rev, 100)])));
        }
        Some(Built {
            target: target(backends),
            tags,
            own_hosts,
        })
    }

    /// `serving.kubeflow.org/v1alpha2`: a default and an optional canary Knative Service per
    /// component, weighted by `status.traffic` and `status.canaryTraffic`.
    fn v1alpha2(&mut self, obj: &Value) -> State {
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
                let backend = Backend {
                    memo: Default::default(),
                    revision: rev,
                    weight,
                    endpoints,
                    knative: true,
                };
                if let Some(h) = self.r.host(mget(cs, "host"), &format!("{field}.host")) {
                    own.push((
                        h,
                        Arc::new(Target {
                            memo: Default::default(),
                            component: c.to_string(),
                            upstream_host: format!("{service}.{ns}.{CLUSTER_SUFFIX}"),
                            timeout_secs: None,
                            backends: vec![Backend {
                                weight: 100,
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
        for (_, own) in built.values() {
            for (h, t) in own {
                routes.add(h, &self.single(t, BTreeMap::new()));
            }
        }
        State::Routes(routes)
    }
}

/// `a.b.svc.cluster.local` -> itself, `a.b.svc`, `a.b`: the names a pod can use for a Service,
/// whatever the cluster domain. A host without `.svc` is returned alone.
fn cluster_local_forms(host: &str) -> Vec<String> {
    let mut forms = vec![host.to_string()];
    let cut = host
        .find(".svc.")
        .or_else(|| host.strip_suffix(".svc").map(str::len));
    if let Some(i) = cut {
        let short = &host[..i];
        let svc = format!("{short}.svc");
        for f in [svc, short.to_string()] {
            if !forms.contains(&f) && !f.is_empty() {
                forms.push(f);
            }
        }
    }
    forms
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// RFC 1123 label as Kubernetes checks names: lower-case alphanumerics and '-', at most 63.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The host of an `http(s)://` URL as Knative writes it into status, normalised. Paths (v1alpha2
/// writes `/v1/models/{name}`) are ignored.
fn url_host(s: &str) -> Result<String, String> {
    let lower = s.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let rest = if lower.starts_with("http://") {
        &s[7..]
    } else if lower.starts_with("https://") {
        &s[8..]
    } else {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("{s:?} has user info"));
    }
    normalize_host(authority)
        .map(|(h, _)| h)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| mget(m, key))
}

/// A key's value; an explicit `null` counts as absent, as it does for Kubernetes.
fn mget<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

/// Typed access that records every problem with its field path instead of stopping.
#[derive(Debug, Default)]
struct Reader {
    errors: Vec<FieldError>,
}

impl Reader {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: Some(field.into()),
            message: message.into(),
        });
    }

    fn wrong(&mut self, field: &str, want: &str, v: &Value) {
        self.err(field, format!("expected {want}, found {}", kind(v)));
    }

    fn map<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a Mapping> {
        match v? {
            Value::Mapping(m) => Some(m),
            other => {
                self.wrong(field, "a mapping", other);
                None
            }
        }
    }

    fn seq<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a Vec<Value>> {
        match v? {
            Value::Sequence(s) => Some(s),
            other => {
                self.wrong(field, "a list", other);
                None
            }
        }
    }

    fn str<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a str> {
        match v? {
            Value::String(s) => Some(s),
            other => {
                self.wrong(field, "a string", other);
                None
            }
        }
    }

    fn required_str<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a str> {
        match self.str(v, field) {
            Some("") => {
                self.err(field, "empty");
                None
            }
            None if v.is_none() => {
                self.err(field, "missing");
                None
            }
            other => other,
        }
    }

    fn bool(&mut self, v: Option<&Value>, field: &str) -> Option<bool> {
        match v? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong(field, "a boolean", other);
                None
            }
        }
    }

    fn int(&mut self, v: Option<&Value>, field: &str) -> Option<i64> {
        match v? {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            Value::Number(n) if n.is_u64() => {
                self.err(field, format!("{n} is too large"));
                None
            }
            other => {
                self.wrong(field, "an integer", other);
                None
            }
        }
    }

    fn percent(&mut self, v: Option<&Value>, field: &str) -> Option<u32> {
        let p = self.int(v, field)?;
        if (0..=100).contains(&p) {
            Some(p as u32)
        } else {
            self.err(field, format!("{p} is not in 0..=100"));
            None
        }
    }

    /// `spec.<component>.timeout`: seconds, a positive integer.
    fn timeout(&mut self, v: Option<&Value>, field: &str) -> Option<u64> {
        let value = v?;
        match value {
            Value::Number(n) if n.as_i64().is_some_and(|t| t > 0) => n.as_u64(),
            other => {
                let shown = match other {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => format!("{s:?}"),
                    other => kind(other).to_string(),
                };
                self.err(
                    field,
                    format!("must be a positive integer (seconds), found {shown}"),
                );
                None
            }
        }
    }

    fn url(&mut self, v: Option<&Value>, field: &str) -> Option<String> {
        let s = self.str(v, field)?;
        match url_host(s) {
            Ok(h) => Some(h),
            Err(e) => {
                self.err(field, e);
                None
            }
        }
    }

    /// A bare host name (v1alpha2's `host` fields).
    fn host(&mut self, v: Option<&Value>, field: &str) -> Option<String> {
        let s = self.str(v, field)?;
        match normalize_host(s).map(|(h, _)| h) {
            Ok(h) => Some(h),
            Err(e) => {
                self.err(field, format!("{s:?}: {e}"));
                None
            }
        }
    }

    fn string_map(&mut self, v: Option<&Value>, field: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, val) in self.map(v, field).into_iter().flatten() {
            match (k.as_str(), val.as_str()) {
                (Some(k), Some(val)) => {
                    out.insert(k.to_string(), val.to_string());
                }
                (Some(k), None) => self.wrong(&format!("{field}[{k:?}]"), "a string", val),
                (None, _) => self.wrong(field, "string keys", k),
            }
        }
        out
    }

    /// `type` -> `status` of Knative conditions.
    fn conditions(&mut self, v: Option<&Value>, field: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(list) = self.seq(v, field) else {
            return out;
        };
        for (i, c) in list.iter().enumerate() {
            let cf = format!("{field}[{i}]");
            let Some(c) = self.map(Some(c), &cf) else {
                continue;
            };
            let t = self.required_str(mget(c, "type"), &format!("{cf}.type"));
            let s = self.required_str(mget(c, "status"), &format!("{cf}.status"));
            if let (Some(t), Some(s)) = (t, s) {
                out.insert(t.to_string(), s.to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pods reach a Service by its full name, `.svc`, or `name.namespace`; all three are hosts.
    #[test]
    fn cluster_local_forms_cover_the_short_names() {
        assert_eq!(
            cluster_local_forms("m.ns.svc.cluster.local"),
            ["m.ns.svc.cluster.local", "m.ns.svc", "m.ns"]
        );
        assert_eq!(cluster_local_forms("m.ns.svc.corp.internal")[2], "m.ns");
        assert_eq!(cluster_local_forms("m.ns.svc"), ["m.ns.svc", "m.ns"]);
        assert_eq!(cluster_local_forms("m.example.com"), ["m.example.com"]);
    }

    /// Only http(s) URLs with a valid host are accepted; the path and port do not matter.
    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("http://M.ns.example.com:8080/v1/models/m").as_deref(),
            Ok("m.ns.example.com")
        );
        assert_eq!(url_host("https://m.ns").as_deref(), Ok("m.ns"));
        for bad in [
            "",
            "m.ns.example.com",
            "ftp://m",
            "http://",
            "http://a b",
            "http://u@h",
        ] {
            assert!(url_host(bad).is_err(), "{bad:?}");
        }
    }
}
