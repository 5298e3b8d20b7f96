//! A fake Kubernetes API server on loopback, speaking the real wire protocol as far as
//! modelgate (kube-rs) and kubectl use it. No real API server can run here; this one is
//! checked against `kubectl` (`tests/e2e/kube_source.rs`).
//!
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}/{version}` (the legacy
//!   documents; kubectl falls back to them when aggregated discovery is not offered).
//! - Lists of the served custom resources, in all namespaces or one, with `labelSelector`,
//!   `limit` and `continue` (pages of one consistent snapshot; a token from before a
//!   compaction is `410 Expired`, as etcd's compaction makes it).
//! - Watches (`watch=true`): a chunked stream of `ADDED`/`MODIFIED`/`DELETED` events from the
//!   requested `resourceVersion`, `BOOKMARK`s when `allowWatchBookmarks` asks for them, and
//!   `410 Gone` for a compacted version, as an `ERROR` event or as the HTTP status.
//! - Faults: dropped watch connections, and an outage (every connection closed on accept).
//! - Service-account issuer discovery and JWKS, tokens signed with its key carrying the claims
//!   of a projected service-account token, and `GET` of pods (the bound-pod check).
//!
//! It speaks HTTPS only, with a certificate for 127.0.0.1 from a CA of its own (`ca_pem`), and
//! every request needs `Authorization: Bearer {reader_token}`, as RBAC would.

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, std::io::Error>;

/// A custom resource type this server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

pub const KSERVE: Resource = Resource {
    group: "serving.kserve.io",
    version: "v1beta1",
    kind: "InferenceService",
    plural: "inferenceservices",
};
pub const KFSERVING: Resource = Resource {
    group: "serving.kubeflow.org",
    version: "v1beta1",
    kind: "InferenceService",
    plural: "inferenceservices",
};
pub const SELDON: Resource = Resource {
    group: "machinelearning.seldon.io",
    version: "v1",
    kind: "SeldonDeployment",
    plural: "seldondeployments",
};
const SERVED: [Resource; 3] = [KSERVE, KFSERVING, SELDON];

/// How a watch from a compacted `resourceVersion` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gone {
    /// `200`, then one `ERROR` event with a `410` Status (what the watch cache does).
    #[default]
    Event,
    /// The HTTP status `410` with a Status body.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Added,
    Modified,
    Deleted,
}

/// One open watch: what it selects and where its events go.
struct Watcher {
    resource: Resource,
    namespace: Option<String>,
    selector: Vec<Requirement>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, std::io::Error>>,
}

/// One write: the object after it (`Deleted`: the last version) and before it.
struct Change {
    rv: u64,
    kind: Type,
    resource: Resource,
    object: Value,
    previous: Option<Value>,
}

impl Change {
    /// The event a watch with this selection sees, as the API server's watch cache filters:
    /// an object that starts matching is ADDED, one that stops matching is DELETED.
    fn event_for(&self, w: &Watcher) -> Option<Frame<Bytes>> {
        let now = w.matches(self.resource, &self.object);
        let before = self
            .previous
            .as_ref()
            .is_some_and(|p| w.matches(self.resource, p));
        let kind = match (self.kind, before, now) {
            (Type::Deleted, _, true) => "DELETED",
            (Type::Deleted, _, false) => return None,
            (_, true, true) => "MODIFIED",
            (_, false, true) => "ADDED",
            (_, true, false) => "DELETED",
            (_, false, false) => return None,
        };
        Some(event(kind, &self.object))
    }
}

#[derive(Default)]
struct Store {
    /// The last resourceVersion handed out (one counter for everything, as etcd's revision).
    rv: u64,
    /// Watches from a version below this one get `410`.
    compacted: u64,
    objects: BTreeMap<(Resource, String, String), Value>,
    /// Every change, in order, for watches that start in the past.
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    /// Paged lists in progress: the snapshot a `continue` token reads from.
    pages: HashMap<u64, (u64, Vec<Value>)>,
    next_page: u64,
    /// How a watch from a compacted version is refused.
    gone: Gone,
    outage: bool,
    /// Query strings of every list and watch request, in order.
    requests: Vec<String>,
    /// When the last list page was answered (the scale benchmark measures from there).
    last_list_at: Option<std::time::SystemTime>,
    pods: BTreeMap<(String, String), String>,
}

pub struct FakeApiServer {
    /// `https://127.0.0.1:{port}`.
    pub url: String,
    /// The CA that signed its serving certificate (a kubeconfig's `certificate-authority`).
    pub ca_pem: String,
    /// The token a client must send.
    pub reader_token: String,
    store: Arc<Mutex<Store>>,
    key_pem: String,
    kid: String,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Shared {
    store: Arc<Mutex<Store>>,
    discovery: String,
    jwks: String,
    token: String,
}

impl FakeApiServer {
    /// Starts on a port of its own on 127.0.0.1.
    pub async fn start() -> FakeApiServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub async fn start_on(listener: TcpListener) -> FakeApiServer {
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (ca_pem, tls) = tls();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        let kid = "fake-apiserver-key-1".to_string();
        let jwks = json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]});
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let reader_token = "gateway-reader-token".to_string();
        let store = Arc::new(Mutex::new(Store::default()));
        let shared = Arc::new(Shared {
            store: store.clone(),
            discovery: discovery.to_string(),
            jwks: jwks.to_string(),
            token: reader_token.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if shared.store.lock().unwrap().outage {
                    drop(stream);
                    continue;
                }
                let shared = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move {
                            // An outage closes kept-alive connections too, at their next request.
                            if shared.store.lock().unwrap().outage {
                                return Err(std::io::Error::other("outage"));
                            }
                            Ok(answer(&req, &shared))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApiServer {
            url,
            ca_pem,
            reader_token,
            store,
            key_pem: key.serialize_pem(),
            kid,
            task,
        }
    }

    /// Creates or replaces an object (`apiVersion`, `kind`, `metadata.namespace` and `name`
    /// say which), as `kubectl apply` would: a new `resourceVersion`, `generation` + 1, `uid`
    /// and `creationTimestamp` kept from the first version. Returns the new resourceVersion.
    pub fn apply(&self, object: Value) -> u64 {
        self.store.lock().unwrap().apply(object)
    }

    /// Deletes an object; false when there was none.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> bool {
        self.store.lock().unwrap().delete(resource, namespace, name)
    }

    /// Forgets the history (etcd compaction): watches from any version before now get 410, and
    /// list continue tokens expire.
    pub fn compact(&self) {
        let mut s = self.store.lock().unwrap();
        s.compacted = s.rv;
        s.history.clear();
        s.pages.clear();
    }

    /// How a watch from a compacted version is refused from now on.
    pub fn gone_as(&self, gone: Gone) {
        self.store.lock().unwrap().gone = gone;
    }

    /// Ends every open watch cleanly, as the API server does when a watch's `timeoutSeconds`
    /// is up: everything sent before is delivered.
    pub fn close_watches(&self) {
        self.store.lock().unwrap().watchers.clear();
    }

    /// Cuts every open watch connection mid-stream (no terminating chunk; what was still
    /// buffered may be lost, as with a crashed API server).
    pub fn drop_watches(&self) {
        let mut s = self.store.lock().unwrap();
        for w in s.watchers.drain(..) {
            let _ = w.tx.send(Err(std::io::Error::other("connection dropped")));
        }
    }

    /// While on, every new connection is closed as soon as it is accepted and every open watch
    /// is cut: the server is as good as unreachable.
    pub fn set_outage(&self, on: bool) {
        self.store.lock().unwrap().outage = on;
        if on {
            self.drop_watches();
        }
    }

    /// Sends a `BOOKMARK` with the current resourceVersion to every watch that asked for them.
    pub fn bookmark(&self) -> u64 {
        let mut s = self.store.lock().unwrap();
        let rv = s.rv;
        s.watchers.retain(|w| {
            if !w.bookmarks {
                return true;
            }
            let object = json!({
                "apiVersion": format!("{}/{}", w.resource.group, w.resource.version),
                "kind": w.resource.kind,
                "metadata": {"resourceVersion": rv.to_string()},
            });
            w.tx.send(Ok(event("BOOKMARK", &object))).is_ok()
        });
        rv
    }

    /// Open watches now.
    pub fn watchers(&self) -> usize {
        let mut s = self.store.lock().unwrap();
        s.watchers.retain(|w| !w.tx.is_closed());
        s.watchers.len()
    }

    /// Waits until at least `n` watches are open.
    pub async fn wait_watchers(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.watchers() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} watches never opened"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The query strings of every list and watch request so far.
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }

    pub fn last_list_at(&self) -> Option<std::time::SystemTime> {
        self.store.lock().unwrap().last_list_at
    }

    pub fn resource_version(&self) -> u64 {
        self.store.lock().unwrap().rv
    }

    /// A pod that exists, with its uid (for the bound-pod check).
    pub fn add_pod(&self, namespace: &str, name: &str, uid: &str) {
        self.store
            .lock()
            .unwrap()
            .pods
            .insert((namespace.into(), name.into()), uid.into());
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.store
            .lock()
            .unwrap()
            .pods
            .remove(&(namespace.into(), name.into()));
    }

    /// A projected service-account token for `namespace/name` with `audience`, signed by this
    /// server's key, bound to the pod `{name}-7d4b9c-x2x9z` (uid
    /// `4b1f6a1e-0000-4000-8000-000000000001`); `edit` changes the claims before signing.
    pub fn token(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        edit: impl FnOnce(&mut Value),
    ) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = json!({
            "aud": [audience],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": format!("{name}-7d4b9c-x2x9z"), "uid": "4b1f6a1e-0000-4000-8000-000000000001"},
                "serviceaccount": {"name": name, "uid": "4b1f6a1e-0000-4000-8000-000000000002"},
            },
        });
        edit(&mut claims);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    /// A kubeconfig for this server with the reader token, as a client outside the cluster has.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: reader\n  user:\n    token: {}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: reader\ncurrent-context: fake\n",
            self.url,
            base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
            self.reader_token
        )
    }
}

/// A CA of its own and a serving certificate for 127.0.0.1 and localhost signed by it.
fn tls() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "fake-apiserver CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_pem, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn resource_of(object: &Value) -> Option<Resource> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    SERVED
        .into_iter()
        .find(|r| format!("{}/{}", r.group, r.version) == api_version && r.kind == kind)
}

impl Store {
    fn apply(&mut self, mut object: Value) -> u64 {
        let resource = resource_of(&object).expect("an object of a served resource");
        let ns = object["metadata"]["namespace"]
            .as_str()
            .expect("metadata.namespace")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        self.rv += 1;
        let key = (resource, ns, name);
        let previous = self.objects.get(&key).cloned();
        let meta = object["metadata"].as_object_mut().unwrap();
        let (uid, created, generation) = match &previous {
            Some(p) => (
                p["metadata"]["uid"].clone(),
                p["metadata"]["creationTimestamp"].clone(),
                p["metadata"]["generation"].as_u64().unwrap_or(1) + 1,
            ),
            None => (
                json!(format!("00000000-0000-4000-8000-{:012}", self.rv)),
                meta.get("creationTimestamp")
                    .cloned()
                    .unwrap_or_else(|| json!("2026-01-01T00:00:00Z")),
                1,
            ),
        };
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created);
        meta.insert("generation".into(), json!(generation));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        let kind = if previous.is_some() {
            Type::Modified
        } else {
            Type::Added
        };
        self.objects.insert(key, object.clone());
        self.emit(Change {
            rv: self.rv,
            kind,
            resource,
            object,
            previous,
        });
        self.rv
    }

    fn delete(&mut self, resource: Resource, ns: &str, name: &str) -> bool {
        let Some(mut object) = self
            .objects
            .remove(&(resource, ns.to_string(), name.to_string()))
        else {
            return false;
        };
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(Change {
            rv: self.rv,
            kind: Type::Deleted,
            resource,
            object,
            previous: None,
        });
        true
    }

    fn emit(&mut self, change: Change) {
        self.watchers.retain(|w| match change.event_for(w) {
            Some(frame) => w.tx.send(Ok(frame)).is_ok(),
            None => true,
        });
        self.history.push(change);
    }
}

impl Watcher {
    fn matches(&self, resource: Resource, object: &Value) -> bool {
        self.resource == resource && selects(self.namespace.as_deref(), &self.selector, object)
    }
}

fn selects(namespace: Option<&str>, selector: &[Requirement], object: &Value) -> bool {
    namespace.is_none_or(|ns| object["metadata"]["namespace"] == ns)
        && selector
            .iter()
            .all(|r| r.matches(&object["metadata"]["labels"]))
}

fn event(kind: &str, object: &Value) -> Frame<Bytes> {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Frame::data(Bytes::from(line))
}

/// One term of a label selector (`a=b`, `a==b`, `a!=b`, `a`, `!a`).
#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn parse(selector: &str) -> Vec<Requirement> {
        selector
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                if let Some((k, v)) = t.split_once("!=") {
                    Requirement::NotEquals(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                    Requirement::Equals(k.trim().into(), v.trim().into())
                } else if let Some(k) = t.strip_prefix('!') {
                    Requirement::NotExists(k.trim().into())
                } else {
                    Requirement::Exists(t.into())
                }
            })
            .collect()
    }

    fn matches(&self, labels: &Value) -> bool {
        match self {
            Requirement::Equals(k, v) => labels[k] == v.as_str(),
            Requirement::NotEquals(k, v) => labels[k] != v.as_str(),
            Requirement::Exists(k) => labels.get(k).is_some(),
            Requirement::NotExists(k) => labels.get(k).is_none(),
        }
    }
}

fn full(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// A `metav1.Status` failure, as the API server sends every error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        })
        .to_string(),
    )
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(req: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    let authorised = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", shared.token));
    if !authorised {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if req.method() != http::Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "this fake serves reads only",
        );
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [".well-known", "openid-configuration"] => full(StatusCode::OK, shared.discovery.clone()),
        ["openid", "v1", "jwks"] => full(StatusCode::OK, shared.jwks.clone()),
        ["version"] => full(
            StatusCode::OK,
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "platform": "linux/amd64"})
                .to_string(),
        ),
        ["api"] => full(
            StatusCode::OK,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
                .to_string(),
        ),
        ["api", "v1"] => full(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get"], "shortNames": ["po"]},
            ]})
            .to_string(),
        ),
        ["api", "v1", "namespaces", ns, "pods", name] => {
            let s = shared.store.lock().unwrap();
            match s.pods.get(&(ns.to_string(), name.to_string())) {
                Some(uid) => full(
                    StatusCode::OK,
                    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns, "uid": uid}})
                        .to_string(),
                ),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                ),
            }
        }
        ["apis"] => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for r in SERVED {
                groups.entry(r.group).or_default().push(r.version);
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            full(
                StatusCode::OK,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}).to_string(),
            )
        }
        ["apis", group, version] => {
            let resources: Vec<Value> = SERVED
                .iter()
                .filter(|r| r.group == *group && r.version == *version)
                .map(|r| {
                    json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": true,
                        "kind": r.kind, "verbs": ["get", "list", "watch"],
                        "shortNames": if r.kind == "InferenceService" { json!(["isvc"]) } else { json!(["sdep"]) }})
                })
                .collect();
            if resources.is_empty() {
                return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
            }
            full(
                StatusCode::OK,
                json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": format!("{group}/{version}"), "resources": resources})
                .to_string(),
            )
        }
        ["apis", group, version, plural] => collection(req, shared, group, version, plural, None),
        ["apis", group, version, "namespaces", ns, plural] => {
            collection(req, shared, group, version, plural, Some(ns))
        }
        ["apis", group, version, "namespaces", ns, plural, name] => {
            let Some(resource) = served(group, version, plural) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
            };
            let s = shared.store.lock().unwrap();
            match s.objects.get(&(resource, ns.to_string(), name.to_string())) {
                Some(o) => full(StatusCode::OK, o.to_string()),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{}.{} \"{name}\" not found", resource.plural, resource.group),
                ),
            }
        }
        _ => status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource"),
    }
}

fn served(group: &str, version: &str, plural: &str) -> Option<Resource> {
    SERVED
        .into_iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// A list or a watch of one resource type, in one namespace or all.
fn collection(
    req: &Request<Incoming>,
    shared: &Shared,
    group: &str,
    version: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Response<Body> {
    let Some(resource) = served(group, version, plural) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let q = query(req);
    let selector = Requirement::parse(q.get("labelSelector").map_or("", String::as_str));
    let mut s = shared.store.lock().unwrap();
    s.requests.push(format!(
        "{}?{}",
        req.uri().path(),
        req.uri().query().unwrap_or("")
    ));
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if watch {
        return start_watch(&mut s, resource, namespace, selector, &q);
    }
    let (rv, items, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (id, offset) = token.split_once(':').unwrap_or((token, "0"));
            let id: u64 = id.parse().unwrap_or(u64::MAX);
            let offset: usize = offset.parse().unwrap_or(0);
            match s.pages.get(&id) {
                Some((rv, items)) => (*rv, items.clone(), offset),
                None => {
                    return status(
                        StatusCode::GONE,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    )
                }
            }
        }
        None => {
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == resource && selects(namespace, &selector, o))
                .map(|(_, o)| o.clone())
                .collect();
            (s.rv, items, 0)
        }
    };
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(items.len());
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        let id = match q.get("continue").and_then(|t| t.split_once(':')) {
            Some((id, _)) => id.parse().unwrap_or(0),
            None => {
                s.next_page += 1;
                let id = s.next_page;
                s.pages.insert(id, (rv, items.clone()));
                id
            }
        };
        meta["continue"] = json!(format!("{id}:{end}"));
        meta["remainingItemCount"] = json!(items.len() - end);
    }
    let page = &items[offset.min(end)..end];
    s.last_list_at = Some(std::time::SystemTime::now());
    drop(s);
    let body = json!({
        "apiVersion": format!("{group}/{version}"),
        "kind": format!("{}List", resource.kind),
        "metadata": meta,
        "items": page,
    });
    full(StatusCode::OK, body.to_string())
}

fn start_watch(
    s: &mut Store,
    resource: Resource,
    namespace: Option<&str>,
    selector: Vec<Requirement>,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let expired = from.filter(|&rv| rv < s.compacted).map(|_| s.gone);
    let too_old = || {
        format!(
            "too old resource version: {} ({})",
            from.unwrap_or(0),
            s.compacted.max(1)
        )
    };
    if from.is_some_and(|rv| rv > s.rv) {
        return status(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            &format!(
                "Too large resource version: {}, current: {}",
                from.unwrap_or(0),
                s.rv
            ),
        );
    }
    if expired == Some(Gone::Status) {
        return status(StatusCode::GONE, "Expired", &too_old());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    if expired == Some(Gone::Event) {
        let error = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": too_old(), "reason": "Expired", "code": 410});
        let _ = tx.send(Ok(event("ERROR", &error)));
        drop(tx);
    } else {
        let w = Watcher {
            resource,
            namespace: namespace.map(str::to_string),
            selector,
            bookmarks: matches!(
                q.get("allowWatchBookmarks").map(String::as_str),
                Some("true" | "1")
            ),
            tx,
        };
        match from {
            // No version: the current objects as ADDED first ("start at any point").
            None => {
                for ((r, _, _), o) in &s.objects {
                    if w.matches(*r, o) {
                        let _ = w.tx.send(Ok(event("ADDED", o)));
                    }
                }
            }
            Some(rv) => {
                for change in s.history.iter().filter(|c| c.rv > rv) {
                    if let Some(frame) = change.event_for(&w) {
                        let _ = w.tx.send(Ok(frame));
                    }
                }
            }
        }
        s.watchers.push(w);
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}
