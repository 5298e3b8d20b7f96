//! The objects routes come from, as `kubectl get -o yaml` prints them, each turned into its
//! routes by the module of its API family:
//! - [`kserve`]: `serving.kserve.io/v1beta1` InferenceServices (Knative/Serverless and
//!   RawDeployment/Standard modes), and KFServing 0.5-0.6's `serving.kubeflow.org/v1beta1`, the
//!   same API whose component Services end in `-default`;
//! - [`kfserving`]: `serving.kubeflow.org/v1alpha2`, default and canary revisions weighted by
//!   `status.traffic`/`status.canaryTraffic`;
//! - [`seldon`]: Seldon Core v1 `SeldonDeployment`s, reached by path (`/seldon/{ns}/{name}/`)
//!   and split by `spec.predictors[].traffic`, with a shadow predictor mirrored.
//!
//! Every family turns its objects into the same [`ObjectRoutes`], read from what the controller
//! wrote into `status`, so the catalog and the table never learn which controller an object came
//! from. [`reader`] holds the typed access with field paths that they all use.

pub(crate) mod kfserving;
pub(crate) mod kserve;
pub(crate) mod reader;
pub(crate) mod seldon;

use crate::catalog::BuildOptions;
use crate::host::normalize_host;
use crate::table::{Endpoint, HostRoute, IsvcRef, Target};
use reader::{get, kind, mget, str_field, Reader};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const STOP_ANNOTATION: &str = "serving.kserve.io/stop";
/// The cluster domain Kubernetes Services are assumed to live under when status names none.
const CLUSTER_SUFFIX: &str = "svc.cluster.local";

/// A problem inside one object: the field path (relative to the object) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: Option<String>,
    pub message: String,
}

/// Every host one object routes, in precedence order (main hosts, tag hosts, component hosts),
/// each host once; and every path prefix (`/seldon/{ns}/{name}`, KServe's `pathTemplate`),
/// which is kept in the same list: a key that starts with `/` is a path prefix, never a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRoutes {
    pub hosts: Vec<(Arc<str>, Arc<HostRoute>)>,
    /// [`ObjectRoutes::endpoints`], gathered on first use.
    endpoints: std::sync::OnceLock<Vec<crate::table::Endpoint>>,
}

impl ObjectRoutes {
    /// Every endpoint the object's routes name, once: a rebuild gathers them per object (kept
    /// while the object is unchanged), not per host.
    pub fn endpoints(&self) -> &[crate::table::Endpoint] {
        self.endpoints
            .get_or_init(|| crate::table::endpoints_of(self.hosts.iter().map(|(_, r)| r)))
    }

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

/// The kinds of object routes come from. Two objects are copies of one only when kind,
/// namespace and name all match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    InferenceService,
    SeldonDeployment,
}

/// An object that could be identified by `namespace/name`.
#[derive(Debug)]
pub struct Converted {
    pub kind: Kind,
    pub isvc: IsvcRef,
    /// `metadata.creationTimestamp`, RFC 3339; decides which object keeps a contested host.
    pub created: Option<String>,
    /// `metadata.resourceVersion` and `metadata.generation`: which of two copies of one object
    /// is the newer.
    pub version: Version,
    pub state: State,
    pub errors: Vec<FieldError>,
    /// Fields the controller ignores, which the gateway ignores too and says so.
    pub warnings: Vec<FieldError>,
}

/// Where an object is in its history, as the API server numbers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
}

impl Version {
    /// The newer of two copies: the higher `resourceVersion`, then the higher `generation`.
    /// resourceVersion is opaque to clients by the API's contract, but every API server in use
    /// (etcd's revision) writes a decimal integer, and two dumps of one cluster compare by it;
    /// one that is not a number counts as older than one that is.
    pub fn key(&self) -> (Option<u64>, Option<i64>) {
        (
            self.resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
            self.generation,
        )
    }
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

/// Reads one object (a mapping). `prefix` locates it in its document, for errors about an object
/// that cannot be named.
pub fn convert(obj: &Value, prefix: &str, options: &BuildOptions) -> Parsed {
    let kind = match str_field(obj, "kind") {
        Some("InferenceService") => Kind::InferenceService,
        Some("SeldonDeployment") => Kind::SeldonDeployment,
        _ => return Parsed::Ignored,
    };
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
    let resource_version = r
        .str(mget(meta, "resourceVersion"), "metadata.resourceVersion")
        .map(str::to_string);
    let generation = r.int(mget(meta, "generation"), "metadata.generation");
    let version = Version {
        resource_version,
        generation,
    };
    let annotations = r.string_map(mget(meta, "annotations"), "metadata.annotations");

    let state = match kind {
        Kind::InferenceService => convert_body(obj, &isvc, &annotations, &mut r, options),
        Kind::SeldonDeployment => {
            let mut cx = Cx {
                isvc: &isvc,
                options,
                r: &mut r,
                conditions: BTreeMap::new(),
            };
            cx.seldon(obj)
        }
    };
    let state = if r.errors.is_empty() {
        state
    } else {
        State::Invalid
    };
    Parsed::Object(Box::new(Converted {
        kind,
        isvc,
        created,
        version,
        state,
        errors: r.errors,
        warnings: r.warnings,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `serving.kserve.io/v1beta1`.
    Kserve,
    /// `serving.kubeflow.org/v1beta1` (KFServing 0.5-0.6): component services end in `-default`.
    KubeflowV1beta1,
    /// `serving.kubeflow.org/v1alpha2`.
    V1alpha2,
}

/// What every API family's conversion works with: the object's name, the build options, the
/// reader that collects errors, and the object's conditions.
pub(crate) struct Cx<'a> {
    pub isvc: &'a IsvcRef,
    pub options: &'a BuildOptions,
    pub r: &'a mut Reader,
    pub conditions: BTreeMap<String, String>,
}

impl Cx<'_> {
    fn is_true(&self, condition: &str) -> bool {
        self.conditions.get(condition).map(String::as_str) == Some("True")
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

    fn single(&self, target: &Arc<Target>, tags: BTreeMap<String, Arc<Target>>) -> Arc<HostRoute> {
        Arc::new(HostRoute {
            memo: Default::default(),
            isvc: self.isvc.clone(),
            entry: target.clone(),
            explainer: None,
            tags,
        })
    }

    /// The object's path prefix under KServe's `pathTemplate`, when one is configured: the same
    /// route as its main host.
    fn path_route(&self, routes: &mut ObjectRoutes, main: &Arc<HostRoute>) {
        if let Some(t) = &self.options.path_template {
            routes.add(&t.render(&self.isvc.namespace, &self.isvc.name), main);
        }
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
}

/// `a.b.svc.cluster.local` -> itself, `a.b.svc`, `a.b`: the names a pod can use for a Service,
/// whatever the cluster domain. A host without `.svc` is returned alone.
fn cluster_local_forms(host: &str) -> Vec<String> {
    let mut forms = vec![host.to_string()];
    // The last `.svc.`: a namespace may itself be called `svc`.
    let cut = host
        .rfind(".svc.")
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
pub fn is_dns_label(s: &str) -> bool {
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
        assert_eq!(
            cluster_local_forms("m.svc.svc.cluster.local"),
            ["m.svc.svc.cluster.local", "m.svc.svc", "m.svc"]
        );
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
