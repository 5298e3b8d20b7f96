//! What the running gateway shares between the proxy, the reloader and the admin endpoint. Each
//! piece is an immutable snapshot swapped whole; readers never lock.

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use routes::{Endpoint, ObjectError, RouteTable};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Endpoint names resolved to socket addresses, off the request path.
pub type Resolved = HashMap<Endpoint, Arc<[SocketAddr]>>;

/// A route table and the addresses of every endpoint it names, swapped as one: a request that
/// pinned an older table must still find the addresses of that table's revisions.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Shared, so a re-resolution of names swaps in new addresses without copying the table.
    pub table: Arc<RouteTable>,
    /// Shared: a rebuild that needs no new name keeps the same map.
    pub resolved: Arc<Resolved>,
}

#[derive(Debug)]
pub struct Live {
    pub current: ArcSwap<Snapshot>,
    /// Every problem the last reload found, for `/routes`.
    pub errors: ArcSwap<Vec<ObjectError>>,
    /// Fields ignored as their controller ignores them, for `/routes`.
    pub warnings: ArcSwap<Vec<ObjectError>>,
    /// Each route source's state, for `/readyz`, `/routes` and the metrics. Written by the
    /// sources' tasks, read by the admin endpoint; never on the request path.
    pub sources: Mutex<BTreeMap<&'static str, SourceStatus>>,
    ready: AtomicBool,
    /// Woken when the first table is loaded (see `wait_ready`).
    ready_notify: tokio::sync::Notify,
    pub metrics: Metrics,
}

impl Live {
    pub fn new(metrics: Metrics) -> Self {
        Live {
            current: ArcSwap::from_pointee(Snapshot::default()),
            errors: ArcSwap::from_pointee(Vec::new()),
            warnings: ArcSwap::from_pointee(Vec::new()),
            sources: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            ready_notify: tokio::sync::Notify::new(),
            metrics,
        }
    }

    /// A copy of every source's state, for the admin endpoint.
    pub fn sources(&self) -> BTreeMap<&'static str, SourceStatus> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn source(&self, name: &'static str, f: impl FnOnce(&mut SourceStatus)) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        f(sources.entry(name).or_default());
    }

    /// Where a source reads from (a directory, the API server's URL).
    pub fn source_location(&self, name: &'static str, location: String) {
        self.source(name, |s| s.location = location);
    }

    /// A source could not be read (the API server is unreachable, a watch failed): the last
    /// table stays, and the error stays shown (with its time) after the source recovers.
    pub fn source_error(&self, name: &'static str, message: String) {
        self.metrics.source_errors.with_label_values(&[name]).inc();
        self.source_up(name, false);
        self.source(name, |s| {
            s.last_error = Some(message);
            s.last_error_at = Some(SystemTime::now());
        });
    }

    /// One of a source's lists completed (the API source lists each resource and namespace).
    pub fn source_listed(&self, name: &'static str) {
        self.metrics.source_lists.with_label_values(&[name]).inc();
    }

    /// Whether the source reads now (for the API: every watch is open or listing).
    pub fn source_up(&self, name: &'static str, up: bool) {
        self.metrics
            .source_up
            .with_label_values(&[name])
            .set(i64::from(up));
        self.source(name, |s| s.up = up);
    }

    /// A source's complete read went into the table.
    pub fn source_synced(&self, name: &'static str, objects: usize) {
        let now = SystemTime::now();
        let m = &self.metrics;
        m.source_objects
            .with_label_values(&[name])
            .set(objects as i64);
        m.source_last_sync.with_label_values(&[name]).set(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        self.source(name, |s| {
            s.synced = true;
            s.last_sync = Some(now);
            s.objects = objects;
        });
    }

    /// True once the first route table has been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.ready_notify.notify_waiters();
    }

    /// Waits until the first table is loaded, at most `limit`; whether it is.
    pub async fn wait_ready(&self, limit: std::time::Duration) -> bool {
        let notified = self.ready_notify.notified();
        if self.is_ready() {
            return true;
        }
        let _ = tokio::time::timeout(limit, notified).await;
        self.is_ready()
    }
}

/// What `/routes` and `/readyz` say about one route source.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SourceStatus {
    /// The directory, or the API server's URL.
    pub location: String,
    /// Has delivered a complete read (every list, for the API).
    pub synced: bool,
    /// The last read worked; false while the source fails (the last table keeps serving).
    pub up: bool,
    /// Items in the last complete read (files, or objects).
    pub objects: usize,
    #[serde(serialize_with = "rfc3339")]
    pub last_sync: Option<SystemTime>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub last_error_at: Option<SystemTime>,
}

fn rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
        None => s.serialize_none(),
    }
}
