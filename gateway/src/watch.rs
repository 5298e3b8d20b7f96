//! The Kubernetes API as a route source: lists and watches the configured custom resources
//! with kube-rs's watcher (pages with `continue`, resume from the last `resourceVersion`,
//! bookmarks, a relist on `410 Gone`) and hands the whole current set to the catalog after each
//! burst of events, exactly as the directory source hands over a fresh read.
//!
//! Each resource type and namespace is one watch with its own set of objects. The source is
//! published only once every watch has completed its first list (the gateway is not ready
//! before), and a relist replaces a watch's set only when the new list is complete, so objects
//! deleted while the watch was away disappear and nothing is half-listed in between.

use crate::config::{KubernetesSettings, WatchedResource};
use crate::reload::Routes;
use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::watcher;
use pingora::server::ShutdownWatch;
use routes::{Contents, SourceItem};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The source's name in the catalog, `/routes`, `/readyz` and the metrics.
pub const SOURCE: &str = "kubernetes";

/// A burst of events is one rebuild: the table is rebuilt once the events have paused this
/// long, or at the latest `BURST_LIMIT` after the first (a steady stream must not starve it).
const QUIET: Duration = Duration::from_millis(20);
const BURST_LIMIT: Duration = Duration::from_millis(250);

/// Retries after an error wait from `BACKOFF_START`, doubling up to `BACKOFF_CAP`, with jitter
/// (client-go's reflector: 800 ms to 30 s).
const BACKOFF_START: Duration = Duration::from_millis(800);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// One resource type in one namespace (or all), and what it currently holds.
struct Watch {
    api: Api<DynamicObject>,
    resource: ApiResource,
    /// For messages: `inferenceservices.serving.kserve.io/v1beta1 in all namespaces`.
    name: String,
}

/// A watch that failed counts as open again once its stream has been quiet this long after the
/// retry (kube reconnects inside the stream without a word).
const RECOVERED_AFTER: Duration = Duration::from_secs(3);

/// What the watches share with the publisher.
struct Shared {
    /// The current objects of every watch; `None` until the watch's first list is complete.
    sets: Mutex<Vec<Option<BTreeMap<String, SourceItem>>>>,
    /// Which watches are failing now: the source is up only when none is.
    failing: Mutex<Vec<bool>>,
    changed: Notify,
    live: Arc<crate::state::Live>,
}

impl Shared {
    fn sets(&self) -> std::sync::MutexGuard<'_, Vec<Option<BTreeMap<String, SourceItem>>>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A complete list: the watch's whole set.
    fn replace(&self, index: usize, set: BTreeMap<String, SourceItem>) {
        self.sets()[index] = Some(set);
        self.live.source_listed(SOURCE);
        self.health(index, true);
        self.changed.notify_one();
    }

    /// An empty set for a watch that has never listed (its resource type does not exist yet).
    fn replace_if_unlisted(&self, index: usize) {
        let mut sets = self.sets();
        if sets[index].is_none() {
            sets[index] = Some(BTreeMap::new());
            self.changed.notify_one();
        }
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut BTreeMap<String, SourceItem>)) {
        if let Some(set) = self.sets()[index].as_mut() {
            f(set);
        }
        self.changed.notify_one();
    }

    fn failed(&self, index: usize, message: String) {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())[index] = true;
        self.live.source_error(SOURCE, message);
    }

    fn health(&self, index: usize, ok: bool) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing[index] = !ok;
        self.live.source_up(SOURCE, !failing.iter().any(|f| *f));
    }
}

pub struct KubeSource {
    settings: KubernetesSettings,
    routes: Arc<Routes>,
}

impl KubeSource {
    pub fn new(settings: KubernetesSettings, routes: Arc<Routes>) -> Self {
        KubeSource { settings, routes }
    }

    /// Connects (retrying with backoff: the API server may come up after the gateway), then
    /// runs every watch and the publisher until shutdown.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Backoff::default();
        let client = loop {
            match self.client().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot configure the Kubernetes client; retrying");
                    self.routes.live.source_error(SOURCE, e);
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        () = tokio::time::sleep(backoff.next()) => {}
                    }
                }
            }
        };
        let watches = self.watches(&client);
        let shared = Arc::new(Shared {
            sets: Mutex::new(watches.iter().map(|_| None).collect()),
            failing: Mutex::new(vec![false; watches.len()]),
            changed: Notify::new(),
            live: self.routes.live.clone(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (i, w) in watches.into_iter().enumerate() {
            let shared = shared.clone();
            let selector = self.settings.label_selector.clone();
            tasks.spawn(async move {
                run_watch(i, w, selector, shared).await;
            });
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            () = self.publish(&shared) => {}
        }
        tasks.abort_all();
    }

    async fn client(&self) -> Result<kube::Client, String> {
        let config = match &self.settings.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => {
                kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))?
            }
        };
        self.routes
            .live
            .source_location(SOURCE, config.cluster_url.to_string());
        kube::Client::try_from(config).map_err(|e| e.to_string())
    }

    fn watches(&self, client: &kube::Client) -> Vec<Watch> {
        let mut out = Vec::new();
        for r in &self.settings.resources {
            let resource = api_resource(r);
            let scopes: Vec<Option<&str>> = if self.settings.namespaces.is_empty() {
                vec![None]
            } else {
                self.settings
                    .namespaces
                    .iter()
                    .map(|n| Some(n.as_str()))
                    .collect()
            };
            for ns in scopes {
                let (api, scope) = match ns {
                    None => (
                        Api::all_with(client.clone(), &resource),
                        "all namespaces".to_string(),
                    ),
                    Some(ns) => (
                        Api::namespaced_with(client.clone(), ns, &resource),
                        format!("namespace {ns}"),
                    ),
                };
                out.push(Watch {
                    api,
                    name: format!("{}.{}/{} in {scope}", r.plural, r.group, r.version),
                    resource: resource.clone(),
                });
            }
        }
        out
    }

    /// Rebuilds the table after each burst of changes, once every watch has listed.
    async fn publish(&self, shared: &Shared) {
        loop {
            shared.changed.notified().await;
            let first = Instant::now();
            while first.elapsed() < BURST_LIMIT
                && tokio::time::timeout(QUIET, shared.changed.notified())
                    .await
                    .is_ok()
            {}
            let items: Vec<SourceItem> = {
                let mut sets = shared.sets();
                if sets.iter().any(Option::is_none) {
                    continue;
                }
                // Each object is handed over whole once: the catalog converts it then, and
                // while its resourceVersion stays the same it never reads it again. So the set
                // keeps only the version after this (10,000 objects held twice, decoded and
                // converted, took 225 MiB).
                let spent = Arc::new(serde_yaml::Value::Null);
                sets.iter_mut()
                    .flatten()
                    .flat_map(|s| s.values_mut())
                    .map(|item| {
                        let handed = item.clone();
                        if let Contents::Object { value, .. } = &mut item.contents {
                            *value = spent.clone();
                        }
                        handed
                    })
                    .collect()
            };
            self.routes.publish(SOURCE, &items, &[], "kubernetes").await;
        }
    }
}

fn api_resource(r: &WatchedResource) -> ApiResource {
    ApiResource {
        group: r.group.into(),
        version: r.version.clone(),
        api_version: format!("{}/{}", r.group, r.version),
        kind: r.kind.into(),
        plural: r.plural.into(),
    }
}

/// One watch, forever: events update its set, errors are reported and retried with backoff.
/// kube's watcher relists by itself after a `410 Gone` ERROR event, and after a failed list;
/// a `410` answer to the watch request itself it retries with the same, expired
/// `resourceVersion` (kube-runtime 5.0, `State::InitListed`), so that one starts a new watcher,
/// which lists again (client-go's reflector relists on both).
async fn run_watch(index: usize, watch: Watch, selector: Option<String>, shared: Arc<Shared>) {
    let mut config = watcher::Config::default();
    if let Some(s) = &selector {
        config = config.labels(s);
    }
    let mut backoff = Backoff::default();
    // Set by a 410 (either form): the relist it causes does not reset the backoff, so an API
    // server that refuses every watch is not relisted in full every second.
    let mut after_gone = false;
    loop {
        let mut stream = watcher(watch.api.clone(), config.clone()).boxed();
        // The objects of a list in progress; swapped in whole when the list is complete.
        let mut listing: Option<BTreeMap<String, SourceItem>> = None;
        let mut restart = false;
        // kube retries a failed watch inside the stream and says nothing when it works again
        // (no event until something changes): after an error, a stream quiet for
        // `RECOVERED_AFTER` is open again.
        let mut failing = false;
        loop {
            let next = if failing {
                match tokio::time::timeout(RECOVERED_AFTER, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        failing = false;
                        shared.health(index, true);
                        continue;
                    }
                }
            } else {
                stream.next().await
            };
            let Some(event) = next else { break };
            if event.is_ok() && failing {
                failing = false;
                shared.health(index, true);
            }
            match event {
                Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(obj)) => {
                    if let (Some(l), Some((path, item))) = (listing.as_mut(), item(&watch, obj)) {
                        l.insert(path, item);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let set = listing.take().unwrap_or_default();
                    tracing::info!(watch = %watch.name, objects = set.len(), "listed");
                    shared.replace(index, set);
                    if !after_gone {
                        backoff.reset();
                    }
                }
                Ok(watcher::Event::Apply(obj)) => {
                    if let Some((path, item)) = item(&watch, obj) {
                        shared.update(index, |set| {
                            set.insert(path, item);
                        });
                    }
                    backoff.reset();
                    after_gone = false;
                }
                Ok(watcher::Event::Delete(obj)) => {
                    if let Some((path, _)) = item(&watch, obj) {
                        shared.update(index, |set| {
                            set.remove(&path);
                        });
                    }
                    backoff.reset();
                    after_gone = false;
                }
                Err(e) => {
                    let status = |e: &kube::Error| match e {
                        kube::Error::Api(s) => Some(s.code),
                        _ => None,
                    };
                    let code = match &e {
                        watcher::Error::WatchStartFailed(k)
                        | watcher::Error::InitialListFailed(k)
                        | watcher::Error::WatchFailed(k) => status(k),
                        watcher::Error::WatchError(s) => Some(s.code),
                        watcher::Error::NoResourceVersion => None,
                    };
                    restart =
                        matches!(&e, watcher::Error::WatchStartFailed(_)) && code == Some(410);
                    after_gone |= code == Some(410);
                    let message = format!("{}: {e}", watch.name);
                    tracing::warn!(error = %message, "Kubernetes watch failed; retrying");
                    failing = true;
                    shared.failed(index, message);
                    // A resource type the cluster does not have (its CRD not installed: Seldon
                    // asked for on a cluster without it) lists as empty, so that the gateway
                    // gets ready; the error stays on /readyz and the list is retried.
                    if matches!(&e, watcher::Error::InitialListFailed(_)) && code == Some(404) {
                        shared.replace_if_unlisted(index);
                    }
                    tokio::time::sleep(backoff.next()).await;
                    if restart {
                        break;
                    }
                }
            }
        }
        if !restart {
            // The stream never ends by itself; if it does, start again after a pause.
            tokio::time::sleep(backoff.next()).await;
        }
    }
}

/// The catalog's item for one object: keyed by its API path, versioned by `resourceVersion`,
/// with `apiVersion`/`kind` filled in where a list left them out.
fn item(watch: &Watch, mut obj: DynamicObject) -> Option<(String, SourceItem)> {
    let name = obj.metadata.name.clone()?;
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let version = obj.metadata.resource_version.clone().unwrap_or_default();
    // Server-side apply's bookkeeping: often most of an object, never read here.
    obj.metadata.managed_fields = None;
    obj.types.get_or_insert_with(|| TypeMeta {
        api_version: watch.resource.api_version.clone(),
        kind: watch.resource.kind.clone(),
    });
    let value = match serde_yaml::to_value(&obj) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(object = %format!("{ns}/{name}"), error = %e, "cannot take the object");
            return None;
        }
    };
    let r = &watch.resource;
    let path = format!(
        "api:/apis/{}/{}/namespaces/{ns}/{}/{name}",
        r.group, r.version, r.plural
    );
    let item = SourceItem {
        path: path.clone(),
        contents: Contents::Object {
            value: Arc::new(value),
            version,
        },
    };
    Some((path, item))
}

/// Exponential backoff with jitter, reset by a success.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        // Up to a fifth either way, so replicas that failed together do not retry together.
        wait.mul_f64(0.8 + fastrand::f64() * 0.4)
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}
