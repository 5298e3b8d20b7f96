//! What the running gateway shares between the proxy, the reloader and the admin endpoint. Each
//! piece is an immutable snapshot swapped whole; readers never lock.

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use routes::{Endpoint, ObjectError, RouteTable};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Endpoint names resolved to socket addresses, off the request path.
pub type Resolved = HashMap<Endpoint, Arc<[SocketAddr]>>;

/// A route table and the addresses of every endpoint it names, swapped as one: a request that
/// pinned an older table must still find the addresses of that table's revisions.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Shared, so a re-resolution of names swaps in new addresses without copying the table.
    pub table: Arc<RouteTable>,
    pub resolved: Resolved,
}

#[derive(Debug)]
pub struct Live {
    pub current: ArcSwap<Snapshot>,
    /// Every problem the last reload found, for `/routes`.
    pub errors: ArcSwap<Vec<ObjectError>>,
    /// Fields ignored as their controller ignores them, for `/routes`.
    pub warnings: ArcSwap<Vec<ObjectError>>,
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
            ready: AtomicBool::new(false),
            ready_notify: tokio::sync::Notify::new(),
            metrics,
        }
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
