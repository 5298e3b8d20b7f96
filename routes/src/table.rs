//! The immutable route table a request is served from. Built whole by [`crate::Catalog`], then
//! swapped in by the gateway; nothing here changes after construction.

use http::HeaderValue;
use serde::Serialize;
use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// What a request would otherwise derive from a table entry every time, derived once, on first
/// use: a header value, or (`gateway`) state of the gateway's own (metric handles) that this
/// crate does not know. Not part of the entry's value: equal and serialised as nothing.
#[derive(Default, Clone)]
pub struct Memo {
    value: OnceLock<HeaderValue>,
    second: OnceLock<HeaderValue>,
    pub gateway: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Memo {
    /// `text` as a header value, computed once. Table strings are validated names and hosts,
    /// so the fallback (an empty value) is never used in practice.
    fn value(&self, text: &str) -> &HeaderValue {
        self.value
            .get_or_init(|| HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("")))
    }

    fn second(&self, text: &str) -> &HeaderValue {
        self.second
            .get_or_init(|| HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("")))
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Memo")
    }
}

/// A `host:port` an upstream listens on. The host may be a DNS name: the gateway resolves names
/// in the background, never on the request path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port` or `[v6]:port`. The port is required: an override that forgot it would
    /// otherwise silently go to port 80.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{s:?} is not [ipv6]:port"))?;
            (h, p)
        } else {
            s.rsplit_once(':')
                .ok_or_else(|| format!("{s:?} has no port (want host:port)"))?
        };
        if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
            return Err(format!("{s:?} has no valid host"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?} has no valid port"))?;
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The InferenceService a route belongs to, for headers, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct IsvcRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for IsvcRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One revision of a component with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// The Knative revision name, or in RawDeployment mode the component's Service name.
    pub revision: String,
    /// Share of the component's traffic, in percent; never 0 (0 % entries are dropped).
    pub weight: u32,
    /// Where the revision listens: its Service, or the endpoints the gateway config names.
    pub endpoints: Vec<Endpoint>,
    /// Knative revisions get `Knative-Serving-Revision` / `-Namespace` headers, as the Knative
    /// activator and queue-proxy expect; RawDeployment Services do not.
    pub knative: bool,
    /// The `Host` sent upstream when this backend is drawn, where it is not the target's: a
    /// canary with a Service of its own (KFServing v1alpha2, KServe Standard-mode canaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    #[serde(skip)]
    pub memo: Memo,
}

impl Backend {
    /// The revision as a header value (`Knative-Serving-Revision`, `x-modelgate-revision`).
    pub fn revision_value(&self) -> &HeaderValue {
        self.memo.value(&self.revision)
    }

    /// The `Host` for the upstream request when this backend is drawn from `target`.
    pub fn upstream_host_value<'a>(&'a self, target: &'a Target) -> &'a HeaderValue {
        match &self.upstream_host {
            Some(host) => self.memo.second(host),
            None => target.upstream_host_value(),
        }
    }
}

/// A component (predictor, transformer or explainer) and how its traffic splits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub component: String,
    /// The `Host` sent upstream: the component's cluster-local name, as Knative routes expect.
    pub upstream_host: String,
    /// `spec.<component>.timeout` in seconds; `None` means the gateway's default.
    pub timeout_secs: Option<u64>,
    pub backends: Vec<Backend>,
    /// A backend that gets a copy of (some of) the traffic, whose answers are thrown away:
    /// Seldon's `shadow: true` predictor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    #[serde(skip)]
    pub memo: Memo,
}

/// A mirror of a target's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shadow {
    pub backend: Backend,
    /// The share of requests copied, in percent (1–100).
    pub percent: u32,
}

impl Target {
    /// `upstream_host` as a header value.
    pub fn upstream_host_value(&self) -> &HeaderValue {
        self.memo.value(&self.upstream_host)
    }

    pub fn total_weight(&self) -> u32 {
        self.backends.iter().map(|b| b.weight).sum()
    }

    /// The weighted draw. `roll` is any uniformly random `u32` (the caller owns the randomness,
    /// so tests are exact); backends whose index is in `exclude` (already tried) are skipped and
    /// the rest keep their relative weights. `None` when nothing is left.
    pub fn pick(&self, roll: u32, exclude: &[usize]) -> Option<usize> {
        let remaining: u32 = self
            .backends
            .iter()
            .enumerate()
            .filter(|(i, _)| !exclude.contains(i))
            .map(|(_, b)| b.weight)
            .sum();
        if remaining == 0 {
            return None;
        }
        let mut point = roll % remaining;
        for (i, b) in self.backends.iter().enumerate() {
            if exclude.contains(&i) {
                continue;
            }
            if point < b.weight {
                return Some(i);
            }
            point -= b.weight;
        }
        None
    }
}

/// Everything one host routes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRoute {
    pub isvc: IsvcRef,
    /// The entry component: the transformer when there is one, else the predictor (or, on a tag
    /// or component host, that one component).
    pub entry: Arc<Target>,
    /// Where `/v1/models/{name}:explain` goes, when the InferenceService has an explainer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explainer: Option<Arc<Target>>,
    /// `Knative-Serving-Tag: {tag}` on this host sends all traffic to that tag's revision.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Arc<Target>>,
    #[serde(skip)]
    pub memo: Memo,
}

impl HostRoute {
    /// The InferenceService's name and namespace as header values (`KServe-Isvc-Name`,
    /// `KServe-Isvc-Namespace`).
    pub fn isvc_values(&self) -> (&HeaderValue, &HeaderValue) {
        (
            self.memo.value(&self.isvc.name),
            self.memo.second(&self.isvc.namespace),
        )
    }

    /// Chooses the component for a request: an explain call goes to the explainer, a known tag
    /// header pins the tagged revision, anything else takes the entry component's split (an
    /// unknown tag is ignored, as Knative does).
    pub fn target(&self, path: &str, tag: Option<&str>) -> &Arc<Target> {
        if let Some(explainer) = &self.explainer {
            if is_explain_path(path) {
                return explainer;
            }
        }
        if let Some(t) = tag.and_then(|t| self.tags.get(t)) {
            return t;
        }
        &self.entry
    }
}

/// `/v1/models/{name}:explain`, with the model name KServe's VirtualService accepts (`[\w-]+`).
/// The query string, if any, must already be cut off.
pub fn is_explain_path(path: &str) -> bool {
    path.strip_prefix("/v1/models/")
        .and_then(|rest| rest.strip_suffix(":explain"))
        .is_some_and(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Hosts to routes. Keys are shared with the objects that claim them (no copy per build);
/// foldhash rather than SipHash because every request hashes its `Host` here and a build
/// inserts every host: the keys come from the route source, not from clients, so flooding one
/// bucket is not something a client can do.
pub type HostMap = HashMap<Arc<str>, Arc<HostRoute>, foldhash::fast::RandomState>;

/// The whole table, keyed by normalised host, and by path prefix for the routes reached by path
/// (keys starting with `/`, which no host does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    generation: u64,
    hosts: HostMap,
    /// How many segments the path prefixes have (`/seldon/ns/name`: 3), longest first.
    path_depths: Vec<usize>,
    /// Every endpoint any backend names, once.
    endpoints: Vec<Endpoint>,
}

impl RouteTable {
    /// Hosts must already be normalised ([`crate::normalize_host`]).
    pub fn new(generation: u64, hosts: HostMap) -> Self {
        let endpoints = endpoints_of(hosts.values());
        Self::with_endpoints(generation, hosts, endpoints)
    }

    /// [`RouteTable::new`] with the endpoints already gathered (the catalog has them per
    /// object: walking 130,000 hosts for them took 40 ms of every rebuild).
    pub fn with_endpoints(generation: u64, hosts: HostMap, endpoints: Vec<Endpoint>) -> Self {
        let mut path_depths: Vec<usize> = hosts
            .keys()
            .filter(|k| k.starts_with('/'))
            .map(|k| k.matches('/').count())
            .collect();
        path_depths.sort_unstable_by(|a, b| b.cmp(a));
        path_depths.dedup();
        RouteTable {
            generation,
            hosts,
            path_depths,
            endpoints,
        }
    }

    /// Counts successful builds, so `/routes` and logs tell which table served a request.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `host` must already be normalised.
    pub fn lookup(&self, host: &str) -> Option<&Arc<HostRoute>> {
        self.hosts.get(host)
    }

    /// The route whose path prefix `path` (normalised, without the query) starts with, ending on
    /// a segment boundary (`/seldon/ns/m-2` never matches `/seldon/ns/m`), the longest first;
    /// with the length of the prefix, which the upstream request drops.
    pub fn lookup_path(&self, path: &str) -> Option<(&Arc<HostRoute>, usize)> {
        for &depth in &self.path_depths {
            // The end of the first `depth` segments: the `depth + 1`th '/' or the end.
            let end = match path.match_indices('/').nth(depth) {
                Some((i, _)) => i,
                None if path.matches('/').count() == depth => path.len(),
                None => continue,
            };
            if let Some(route) = self.hosts.get(&path[..end]) {
                return Some((route, end));
            }
        }
        None
    }

    /// Hosts and path prefixes.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hosts in sorted order, for stable output.
    pub fn hosts(&self) -> BTreeMap<&str, &Arc<HostRoute>> {
        self.hosts
            .iter()
            .filter(|(h, _)| !h.starts_with('/'))
            .map(|(h, r)| (&**h, r))
            .collect()
    }

    /// Path prefixes in sorted order.
    pub fn paths(&self) -> BTreeMap<&str, &Arc<HostRoute>> {
        self.hosts
            .iter()
            .filter(|(h, _)| h.starts_with('/'))
            .map(|(h, r)| (&**h, r))
            .collect()
    }

    /// Every endpoint any backend names, once, for the gateway's resolver.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

/// The endpoints of these routes, each once (routes shared by several hosts walked once).
pub fn endpoints_of<'a>(routes: impl Iterator<Item = &'a Arc<HostRoute>>) -> Vec<Endpoint> {
    let mut seen: HashSet<*const HostRoute, foldhash::fast::RandomState> = HashSet::default();
    let mut out: HashSet<&Endpoint, foldhash::fast::RandomState> = HashSet::default();
    for r in routes.filter(|r| seen.insert(Arc::as_ptr(r))) {
        let targets = std::iter::once(&r.entry)
            .chain(r.explainer.iter())
            .chain(r.tags.values());
        for t in targets {
            for b in t.backends.iter().chain(t.shadow.iter().map(|s| &s.backend)) {
                out.extend(b.endpoints.iter());
            }
        }
    }
    out.into_iter().cloned().collect()
}

impl Serialize for RouteTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            generation: u64,
            hosts: BTreeMap<&'a str, &'a Arc<HostRoute>>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            paths: BTreeMap<&'a str, &'a Arc<HostRoute>>,
        }
        View {
            generation: self.generation,
            hosts: self.hosts(),
            paths: self.paths(),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(revision: &str, weight: u32) -> Backend {
        Backend {
            memo: Default::default(),
            revision: revision.into(),
            weight,
            endpoints: vec![],
            knative: true,
            upstream_host: None,
        }
    }

    fn target(backends: Vec<Backend>) -> Target {
        Target {
            shadow: None,
            memo: Default::default(),
            component: "predictor".into(),
            upstream_host: "m-predictor.ns.svc.cluster.local".into(),
            timeout_secs: None,
            backends,
        }
    }

    /// The draw maps rolls onto backends in proportion to their weights, exactly.
    #[test]
    fn pick_is_proportional() {
        let t = target(vec![backend("canary", 20), backend("prev", 80)]);
        let mut counts = [0u32; 2];
        for roll in 0..100_000u32 {
            counts[t.pick(roll, &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [20_000, 80_000]);
    }

    /// Excluding a tried backend leaves the others with their relative weights.
    #[test]
    fn pick_skips_excluded() {
        let t = target(vec![backend("a", 20), backend("b", 60), backend("c", 20)]);
        let mut counts = [0u32; 3];
        for roll in 0..80u32 {
            counts[t.pick(roll, &[1]).unwrap()] += 1;
        }
        assert_eq!(counts, [40, 0, 40]);
        assert_eq!(t.pick(7, &[0, 1, 2]), None);
    }

    /// A target with no weight at all picks nothing rather than panicking.
    #[test]
    fn pick_empty() {
        assert_eq!(target(vec![]).pick(3, &[]), None);
    }

    /// Explain calls go to the explainer; a known tag pins its revision; an unknown tag is ignored.
    #[test]
    fn target_selection() {
        let entry = Arc::new(target(vec![backend("entry", 100)]));
        let explainer = Arc::new(Target {
            shadow: None,
            memo: Default::default(),
            component: "explainer".into(),
            ..target(vec![backend("expl", 100)])
        });
        let tagged = Arc::new(target(vec![backend("old", 100)]));
        let route = HostRoute {
            memo: Default::default(),
            isvc: IsvcRef {
                namespace: "ns".into(),
                name: "m".into(),
            },
            entry: entry.clone(),
            explainer: Some(explainer.clone()),
            tags: BTreeMap::from([("prev".to_string(), tagged.clone())]),
        };
        assert_eq!(route.target("/v1/models/m:predict", None), &entry);
        assert_eq!(route.target("/v1/models/m:explain", None), &explainer);
        assert_eq!(
            route.target("/v1/models/m:explain", Some("prev")),
            &explainer
        );
        assert_eq!(route.target("/v1/models/m:predict", Some("prev")), &tagged);
        assert_eq!(route.target("/v1/models/m:predict", Some("nope")), &entry);
        assert_eq!(route.target("/v2/models/m/infer", None), &entry);
    }

    /// Only KServe's explain path shape counts.
    #[test]
    fn explain_path_shape() {
        assert!(is_explain_path("/v1/models/sklearn-iris:explain"));
        assert!(is_explain_path("/v1/models/a_b-1:explain"));
        assert!(!is_explain_path("/v1/models/:explain"));
        assert!(!is_explain_path("/v1/models/a/b:explain"));
        assert!(!is_explain_path("/v1/models/a.b:explain"));
        assert!(!is_explain_path("/v1/models/a:predict"));
        assert!(!is_explain_path("/v2/models/a:explain"));
    }

    /// Endpoints need a host and a non-zero port.
    #[test]
    fn endpoint_parse() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:8080"),
            Ok(Endpoint {
                host: "127.0.0.1".into(),
                port: 8080
            })
        );
        assert_eq!(
            Endpoint::parse("[::1]:9000").unwrap().to_string(),
            "[::1]:9000"
        );
        assert_eq!(
            Endpoint::parse("rev.ns.svc.cluster.local:80").unwrap().host,
            "rev.ns.svc.cluster.local"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:0",
            "host:70000",
            "[::1]",
            "a b:80",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
