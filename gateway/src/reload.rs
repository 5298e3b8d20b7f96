//! Keeps the live route table in step with the manifest directory: reads every file, builds a
//! whole new table through the catalog, resolves its endpoints, then swaps it in. Triggered by
//! file-system events (notify), SIGHUP, and at start; names are re-resolved on a timer.
//!
//! A file written in place (truncated, then filled in several writes: an editor, `cat >`, a
//! configuration tool) is applied only once it has been left alone for the settle time; until
//! then the catalog keeps what it last read of it. A file replaced by a rename (an atomic write,
//! kubelet's ConfigMap swap) has no write events of its own and applies at once.

use crate::resolver;
use crate::state::{Live, Snapshot};
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use routes::{BuildOptions, Catalog, Outcome, SourceItem};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Quiet time after the last file-system event before re-reading: editors and kubelet write in
/// several steps, and one reload per burst is enough.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How long a replaced table waits for the requests still using it (see `retire`).
const RETIRE_WAIT: Duration = Duration::from_secs(5);

/// Reads every manifest file in `dir`: `*.yaml` and `*.yml`, following symlinks (ConfigMap
/// volumes are all symlinks), skipping hidden entries (kubelet's `..data` and `..2024_...`
/// directories, editors' swap files). Sorted by name so errors come out in a stable order.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<SourceItem>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| SourceItem {
            path: p.display().to_string(),
            contents: routes::Contents::Text(
                std::fs::read_to_string(&p).map_err(|e| e.to_string()),
            ),
        })
        .collect())
}

/// The live table's one writer. Every source hands over its complete current read (the
/// directory after each change, the API after each burst of events); the catalog keeps the
/// other sources' last reads, so each rebuild sees everything. Rebuilds, name refreshes and
/// swaps are serialised by the catalog's lock, so a slower rebuild can never swap in an older
/// table after a newer one.
pub struct Routes {
    catalog: tokio::sync::Mutex<Catalog>,
    pub live: Arc<Live>,
    /// Endpoints outside the table that need addresses too (the OIDC provider).
    extra_endpoints: Vec<routes::Endpoint>,
    /// Sources that have not delivered a complete read yet: the gateway is ready once none is
    /// left (a table without the API's objects would answer 404 for every model).
    waiting: Mutex<Vec<&'static str>>,
    failed_lookups: FailedLookups,
}

/// When each name that has no address was last looked up: a rebuild looks it up again only
/// after `RETRY_LOOKUP` (a new revision's Service name often resolves a moment after the
/// object is ready), so that names that do not resolve cannot slow every rebuild down.
#[derive(Default)]
struct FailedLookups(Mutex<HashMap<routes::Endpoint, Instant>>);

const RETRY_LOOKUP: Duration = Duration::from_secs(2);

impl FailedLookups {
    fn retry(&self, ep: &routes::Endpoint) -> bool {
        let failed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(ep).is_none_or(|at| at.elapsed() >= RETRY_LOOKUP)
    }

    /// Keeps the times of the names still without an address; a name looked up again (its
    /// time older than `RETRY_LOOKUP`) gets a new time.
    fn note(&self, resolved: &crate::state::Resolved) {
        let mut failed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut next = HashMap::new();
        for (ep, addrs) in resolved {
            if addrs.is_empty() {
                let at = match failed.get(ep) {
                    Some(at) if at.elapsed() < RETRY_LOOKUP => *at,
                    _ => now,
                };
                next.insert(ep.clone(), at);
            }
        }
        *failed = next;
    }
}

impl Routes {
    pub fn new(
        options: BuildOptions,
        live: Arc<Live>,
        extra_endpoints: Vec<routes::Endpoint>,
        sources: Vec<&'static str>,
    ) -> Self {
        Routes {
            catalog: tokio::sync::Mutex::new(Catalog::new(options)),
            live,
            extra_endpoints,
            waiting: Mutex::new(sources),
            failed_lookups: FailedLookups::default(),
        }
    }

    /// One rebuild: a complete read of `source` (items in `keep` stay as last read), built with
    /// every other source's last read, resolved, then swapped in.
    pub async fn publish(
        &self,
        source: &'static str,
        items: &[SourceItem],
        keep: &[String],
        why: &str,
    ) {
        let mut catalog = self.catalog.lock().await;
        let started = Instant::now();
        let Outcome {
            table,
            errors,
            warnings,
        } = catalog.apply_source(source, items, keep);
        let objects = catalog.routed_objects();
        let built = started.elapsed();
        // Resolve before the swap, so a new revision is reachable the moment it is routed.
        let previous = self.live.current.load_full();
        let resolving = Instant::now();
        let resolved = {
            let retry = |ep: &routes::Endpoint| self.failed_lookups.retry(ep);
            resolver::resolve_new(
                table.endpoints().iter().chain(&self.extra_endpoints),
                &previous.resolved,
                retry,
            )
            .await
        };
        if !Arc::ptr_eq(&resolved, &previous.resolved) {
            self.failed_lookups.note(&resolved);
        }
        let resolved_in = resolving.elapsed();

        for e in &errors {
            tracing::error!(source = %e.source, object = e.object.as_deref().unwrap_or("-"), field = e.field.as_deref().unwrap_or("-"), "{e}");
        }
        for e in &warnings {
            tracing::warn!(source = %e.source, object = e.object.as_deref().unwrap_or("-"), field = e.field.as_deref().unwrap_or("-"), "{e}");
        }
        let m = &self.live.metrics;
        if errors.is_empty() {
            m.reloads_ok.inc();
        } else {
            m.reloads_failed.inc();
        }
        m.route_hosts.set(table.len() as i64);
        m.route_objects.set(objects as i64);
        m.route_errors.set(errors.len() as i64);
        tracing::info!(
            trigger = why,
            source,
            generation = table.generation(),
            hosts = table.len(),
            objects,
            errors = errors.len(),
            build_ms = built.as_secs_f64() * 1000.0,
            resolve_ms = resolved_in.as_secs_f64() * 1000.0,
            "route table loaded"
        );
        self.live.current.store(Arc::new(Snapshot {
            table: Arc::new(table),
            resolved,
        }));
        self.live.errors.store(Arc::new(errors));
        self.live.warnings.store(Arc::new(warnings));
        self.live.source_synced(source, items.len() + keep.len());
        let ready = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.retain(|s| *s != source);
            waiting.is_empty()
        };
        if ready {
            self.live.set_ready();
        }
        tokio::spawn(retire(previous));
    }

    /// Looks every name up again, without holding up rebuilds while it does (20,000 names,
    /// or one that times out, take seconds); the answers are then merged into whatever table is
    /// current by then, for the names it still has.
    pub async fn refresh_names(&self) {
        let before = self.live.current.load_full();
        let looked_up = resolver::resolve_all(
            before.table.endpoints().iter().chain(&self.extra_endpoints),
            &before.resolved,
        )
        .await;
        drop(before);
        let _catalog = self.catalog.lock().await;
        let current = self.live.current.load_full();
        let mut resolved = (*current.resolved).clone();
        for (ep, addrs) in looked_up {
            if let Some(slot) = resolved.get_mut(&ep) {
                *slot = addrs;
            }
        }
        // Names the table dropped since (rebuilds keep them) go here.
        let wanted: std::collections::HashSet<&routes::Endpoint> = current
            .table
            .endpoints()
            .iter()
            .chain(&self.extra_endpoints)
            .collect();
        resolved.retain(|ep, _| wanted.contains(ep));
        self.failed_lookups.note(&resolved);
        let resolved = Arc::new(resolved);
        self.live.current.store(Arc::new(Snapshot {
            table: current.table.clone(),
            resolved,
        }));
        tokio::spawn(retire(current));
    }
}

/// The source's name in the catalog, `/routes`, `/readyz` and the metrics.
pub const SOURCE: &str = "directory";

/// The manifest directory as a route source: re-read whole on every change.
pub struct DirSource {
    dir: PathBuf,
    settle: Duration,
    /// When each file was last written in place, by the watcher's events.
    written: Arc<Mutex<HashMap<PathBuf, Instant>>>,
    routes: Arc<Routes>,
}

impl DirSource {
    pub fn new(dir: PathBuf, settle: Duration, routes: Arc<Routes>) -> Self {
        routes
            .live
            .source_location(SOURCE, dir.display().to_string());
        DirSource {
            dir,
            settle,
            written: Default::default(),
            routes,
        }
    }

    /// One reload: read, then publish. A directory that cannot be read changes nothing.
    /// Returns when the next reload is due for a file still being written.
    pub async fn reload(&self, why: &str) -> Option<Instant> {
        let dir = self.dir.clone();
        let files = match tokio::task::spawn_blocking(move || read_dir(&dir)).await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                self.routes.live.metrics.reloads_failed.inc();
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the route directory; keeping the current table");
                self.routes
                    .live
                    .source_error(SOURCE, format!("{}: {e}", self.dir.display()));
                return None;
            }
            Err(e) => {
                self.routes.live.metrics.reloads_failed.inc();
                tracing::error!(error = %e, "route directory read panicked; keeping the current table");
                return None;
            }
        };
        let (files, unsettled, due) = self.settled(files, Instant::now());
        self.routes.publish(SOURCE, &files, &unsettled, why).await;
        self.routes.live.source_up(SOURCE, true);
        due
    }
    /// The read as the build should see it: a file written in place less than the settle time
    /// ago is left out and named in the second list (the catalog keeps what it last read of
    /// it), and the time when it will have settled is returned.
    fn settled(
        &self,
        files: Vec<SourceItem>,
        now: Instant,
    ) -> (Vec<SourceItem>, Vec<String>, Option<Instant>) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written.retain(|_, at| now.duration_since(*at) < self.settle);
        let mut due: Option<Instant> = None;
        let (mut out, mut unsettled) = (Vec::with_capacity(files.len()), Vec::new());
        for file in files {
            match written.get(Path::new(&file.path)) {
                Some(at) => {
                    let settles = *at + self.settle;
                    due = Some(due.map_or(settles, |d| d.min(settles)));
                    tracing::debug!(file = %file.path, "still being written; its last read stays");
                    unsettled.push(file.path);
                }
                None => out.push(file),
            }
        }
        (out, unsettled, due)
    }

    /// Watches the directory. Events inside it, whatever file they name, trigger a full re-read:
    /// kubelet's ConfigMap update only renames `..data`, and a deleted file has nothing to read.
    fn watch(&self, tx: mpsc::UnboundedSender<()>) -> notify::Result<notify::RecommendedWatcher> {
        use notify::event::{EventKind, ModifyKind};
        let written = self.written.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(ev) if ev.kind.is_access() => {}
                Ok(ev) => {
                    // Data written into a file (or a file created, to be written next): it
                    // settles before it is applied. A rename is not a write.
                    if matches!(
                        ev.kind,
                        EventKind::Create(_)
                            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
                    ) {
                        let now = Instant::now();
                        let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
                        for path in ev.paths {
                            w.insert(path, now);
                        }
                    }
                    let _ = tx.send(());
                }
                Err(e) => tracing::warn!(error = %e, "file watch error; forcing a reload"),
            })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }

    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Keep the watcher alive for the life of the loop.
        let _watcher = match self.watch(tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot watch the route directory; reloads need SIGHUP");
                None
            }
        };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        let mut due = self.reload("start").await;
        loop {
            let settle = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    // Debounce: wait until the directory has been quiet for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    due = self.reload("file change").await;
                }
                () = settle => due = self.reload("file settled").await,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    due = self.reload("SIGHUP").await;
                }
            }
        }
    }
}

/// Drops a replaced snapshot on the reloader's runtime rather than on a proxy worker: freeing
/// a table of 100,000 hosts takes milliseconds, which the last request still holding it would
/// otherwise add to its own latency. Waits for those requests (at most `RETIRE_WAIT`: a long
/// streaming response keeps its snapshot, and then it frees it itself).
async fn retire(old: Arc<Snapshot>) {
    let deadline = tokio::time::Instant::now() + RETIRE_WAIT;
    while Arc::strong_count(&old) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs every route source, and the name refresh, as one pingora background service.
pub struct ReloadService {
    pub routes: Arc<Routes>,
    pub dir: Option<DirSource>,
    pub kube: Option<crate::watch::KubeSource>,
    pub resolve_interval: Duration,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let dir = async {
            match &self.dir {
                Some(d) => d.run(shutdown.clone()).await,
                None => std::future::pending().await,
            }
        };
        let kube = async {
            match &self.kube {
                Some(k) => k.run(shutdown.clone()).await,
                None => std::future::pending().await,
            }
        };
        let refresh = async {
            let mut tick = tokio::time::interval(self.resolve_interval);
            tick.reset();
            loop {
                tick.tick().await;
                self.routes.refresh_names().await;
            }
        };
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = stop.changed() => {}
            () = dir => {}
            () = kube => {}
            () = refresh => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only visible `*.yaml`/`*.yml` files are read, symlinks followed, in name order.
    #[test]
    fn read_dir_picks_manifests() {
        let dir = std::env::temp_dir().join(format!("modelgate-readdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..2024_01_01")).unwrap();
        std::fs::write(dir.join("..2024_01_01/c.yaml"), "c").unwrap();
        std::os::unix::fs::symlink("..2024_01_01", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/c.yaml", dir.join("c.yaml")).unwrap();
        std::fs::write(dir.join("b.yml"), "b").unwrap();
        std::fs::write(dir.join("a.yaml"), "a").unwrap();
        std::fs::write(dir.join(".a.yaml.swp"), "x").unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let files = read_dir(&dir).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| {
                (
                    Path::new(&f.path)
                        .file_name()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string(),
                    match &f.contents {
                        routes::Contents::Text(Ok(t)) => t.clone(),
                        other => panic!("{other:?}"),
                    },
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a.yaml".into(), "a".into()),
                ("b.yml".into(), "b".into()),
                ("c.yaml".into(), "c".into())
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
