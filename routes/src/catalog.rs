//! The catalog: every InferenceService the gateway knows, with the last good routes of each, and
//! the step that turns a fresh read of the route source into a new [`RouteTable`].
//!
//!
//! Every [`Catalog::apply`] gets a complete, fresh read of the source. The rules that decide what
//! survives a bad read:
//! - a file that cannot be read or parsed keeps the last good routes of every object it held;
//! - an object that fails validation, or is not ready, keeps its own last good routes, and does
//!   not hold back any other object;
//! - an object gone from a file that parsed, or a file gone from the source, loses its routes;
//!   so does an object annotated `serving.kserve.io/stop: "true"`;
//! - two copies of one object (`namespace/name` twice: two dumps of one cluster, an old and a
//!   new file): the newer copy (`metadata.resourceVersion`, then `generation`; on a tie the
//!   first in path order) is used whole and the other is reported as a duplicate;
//! - two objects claiming one host: the older (`metadata.creationTimestamp`, then
//!   `namespace/name`, then file path) keeps it and the other gets an error for that host only.

use crate::objects::{self, FieldError, Kind, ObjectRoutes, Parsed, State, Version};
use crate::table::{Endpoint, HostMap, IsvcRef, RouteTable};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// How revisions and components are reached. Keys of `overrides` are `namespace/name`, where
/// name is a Knative revision name, or a component Service name (`{isvc}-{component}`, used in
/// RawDeployment mode and for v1alpha2-era names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub overrides: HashMap<String, Vec<Endpoint>>,
    /// When set, every revision or component without an override goes here (the quickstart's
    /// in-process demo model server).
    pub fallback: Option<Vec<Endpoint>>,
    /// KServe's ingress `pathTemplate`: every InferenceService is also reached under this path
    /// prefix, which the upstream request drops.
    pub path_template: Option<PathTemplate>,
}

/// KServe's `pathTemplate` (`/serving/{{ .Namespace }}/{{ .Name }}`), checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// Literal text and placeholders, in order.
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Namespace,
    Name,
}

impl PathTemplate {
    /// Parses a Go-template path as KServe's ingress config takes it, with only `{{ .Namespace }}`
    /// and `{{ .Name }}` (both required: a prefix that does not name the object would route
    /// every object to the same place). The literal text must be plain path characters, so
    /// that the rendered prefix is a normalised path that a request's normalised path can start
    /// with; a trailing `/` is dropped (matches end on a segment boundary anyway).
    pub fn parse(template: &str) -> Result<Self, String> {
        if !template.starts_with('/') {
            return Err(format!("{template:?} must start with '/'"));
        }
        let mut parts = Vec::new();
        let mut rest = template.trim_end_matches('/');
        while let Some(open) = rest.find("{{") {
            let text = &rest[..open];
            let close = rest[open..]
                .find("}}")
                .ok_or_else(|| format!("{template:?}: '{{{{' without '}}}}'"))?;
            let field = rest[open + 2..open + close].trim();
            parts.push(TemplatePart::Text(text.to_string()));
            parts.push(match field {
                ".Namespace" => TemplatePart::Namespace,
                ".Name" => TemplatePart::Name,
                other => {
                    return Err(format!(
                        "{template:?}: unknown field {other:?} (want .Namespace or .Name)"
                    ))
                }
            });
            rest = &rest[open + close + 2..];
        }
        parts.push(TemplatePart::Text(rest.to_string()));
        for part in &parts {
            if let TemplatePart::Text(t) = part {
                let plain = t.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~')
                });
                if !plain || t.contains("//") || t.split('/').any(|s| s == "." || s == "..") {
                    return Err(format!(
                        "{template:?}: {t:?} is not plain path text (letters, digits, '/', '-', \
                         '_', '.', '~'; no empty, '.' or '..' segments)"
                    ));
                }
            }
        }
        // Each field is a whole path segment: ns and name are DNS labels (no '/'), so two
        // objects can never render the same prefix (`{{.Namespace}}{{.Name}}` could: `ab`+`c`
        // and `a`+`bc`).
        for (i, part) in parts.iter().enumerate() {
            if matches!(part, TemplatePart::Namespace | TemplatePart::Name) {
                let before = match i.checked_sub(1).map(|j| &parts[j]) {
                    Some(TemplatePart::Text(t)) => t.ends_with('/'),
                    _ => false,
                };
                let after = match parts.get(i + 1) {
                    Some(TemplatePart::Text(t)) => t.is_empty() || t.starts_with('/'),
                    None => true,
                    _ => false,
                };
                if !before || !after {
                    return Err(format!(
                        "{template:?}: {{{{ .Namespace }}}} and {{{{ .Name }}}} must each be a whole \
                         path segment"
                    ));
                }
            }
        }
        for needed in [TemplatePart::Namespace, TemplatePart::Name] {
            if !parts.contains(&needed) {
                return Err(format!(
                    "{template:?} must contain {{{{ .Namespace }}}} and {{{{ .Name }}}}"
                ));
            }
        }
        parts.retain(|p| p != &TemplatePart::Text(String::new()));
        Ok(PathTemplate { parts })
    }

    /// The prefix of one object.
    pub fn render(&self, namespace: &str, name: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                TemplatePart::Text(t) => t.as_str(),
                TemplatePart::Namespace => namespace,
                TemplatePart::Name => name,
            })
            .collect()
    }
}

/// One item of a route source: a manifest file, or one object from the Kubernetes API.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceItem {
    /// Unique within its source: the file's path, or the object's API path
    /// (`api:/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/name`). Errors
    /// name it.
    pub path: String,
    pub contents: Contents,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Contents {
    /// A file's text, or why it could not be read.
    Text(Result<String, String>),
    /// An object the API server sent (already decoded), with a string that changes whenever
    /// the object does (its `resourceVersion`): an unchanged object is not converted again.
    Object {
        value: Arc<serde_yaml::Value>,
        version: String,
    },
}

impl SourceItem {
    pub fn text(path: impl Into<String>, contents: Result<String, String>) -> Self {
        SourceItem {
            path: path.into(),
            contents: Contents::Text(contents),
        }
    }
}

/// A problem with one file or object, saying where: file (or API path), object and field path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectError {
    /// The [`SourceItem::path`]: a file, or an object's API path.
    pub source: String,
    /// `namespace/name`, when the object could be identified.
    pub object: Option<String>,
    /// Field path such as `status.components.predictor.traffic[1].percent`.
    pub field: Option<String>,
    pub message: String,
    /// A field the controller ignores, ignored here too: reported, not an error.
    #[serde(skip)]
    pub warning: bool,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(p) = &self.field {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The result of one build: always a complete table, plus every problem found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub table: RouteTable,
    pub errors: Vec<ObjectError>,
    /// Fields ignored as their controller ignores them (not errors: the build is good).
    pub warnings: Vec<ObjectError>,
}

impl ObjectError {
    fn new(file: &str, object: Option<&IsvcRef>, e: FieldError) -> Self {
        ObjectError {
            source: file.to_string(),
            object: object.map(IsvcRef::to_string),
            field: e.field,
            message: e.message,
            warning: false,
        }
    }

    fn warning(file: &str, object: Option<&IsvcRef>, e: FieldError) -> Self {
        ObjectError {
            warning: true,
            ..ObjectError::new(file, object, e)
        }
    }

    fn file(file: &str, message: String) -> Self {
        ObjectError {
            source: file.to_string(),
            object: None,
            field: None,
            message,
            warning: false,
        }
    }
}

/// Every InferenceService seen, with the last good routes of each.
#[derive(Debug)]
pub struct Catalog {
    options: BuildOptions,
    generation: u64,
    /// By source name (the directory, the Kubernetes API), each with its own items. A read of
    /// one source replaces only that source's items: the two are watched apart.
    sources: BTreeMap<String, Source>,
    routed: usize,
}

/// One source as of its last read.
#[derive(Debug, Default)]
struct Source {
    /// By item path: the objects the item held at its last successful parse.
    items: BTreeMap<String, FileState>,
    /// What the last read found wrong with its items (reported again when another source is
    /// read, so that every build lists every current problem).
    errors: Vec<ObjectError>,
}

/// A file as of its last successful parse. A reload re-reads every file, but only a file whose
/// text changed is parsed again: parsing is most of a build (serde_yaml reads about 25 MB/s
/// here), and a reload usually changes one file of many.
#[derive(Debug)]
struct FileState {
    /// Length and SipHash of the text that was parsed.
    digest: (usize, u64),
    held: Vec<Held>,
    /// The problems that parse found; reported again on every build while the file is unchanged.
    errors: Vec<ObjectError>,
}

/// One object as held by one file.
#[derive(Debug, Clone)]
struct Held {
    kind: Kind,
    isvc: IsvcRef,
    created: Option<String>,
    version: Version,
    /// The last good routes; `None` while the object never was ready, or is stopped.
    routes: Option<Arc<ObjectRoutes>>,
    /// `serving.kserve.io/stop`: no routes on purpose (a copy that is only not ready yet does
    /// not hide an older copy's routes; a stopped one does).
    stopped: bool,
}

/// Below this many changed files the work stays on the calling thread: the usual reload
/// changes one file, and only a start or a bulk change has enough to split.
const PARALLEL_FILES: usize = 8;

impl Catalog {
    pub fn new(options: BuildOptions) -> Self {
        Catalog {
            options,
            generation: 0,
            sources: BTreeMap::new(),
            routed: 0,
        }
    }

    /// Applies a complete, fresh read of the only route source (every file, every time) and
    /// returns the new table (generation = previous + 1, starting at 1) and every current
    /// problem.
    pub fn apply(&mut self, files: &[SourceItem]) -> Outcome {
        self.apply_source("", files, &[])
    }

    /// Applies a complete, fresh read of the source `source` (every item it has now); the other
    /// sources keep what they last read. Items named in `keep` (absent from `files`) keep the
    /// state of their last read as it is: a file still being written is neither read nor
    /// dropped (the reloader's settle time).
    pub fn apply_source(&mut self, source: &str, files: &[SourceItem], keep: &[String]) -> Outcome {
        let mut errors = Vec::new();
        let mut previous =
            std::mem::take(&mut self.sources.entry(source.to_string()).or_default().items);
        let mut items = BTreeMap::new();
        for path in keep {
            if let Some(state) = previous.remove(path) {
                errors.extend(state.errors.iter().cloned());
                items.insert(path.clone(), state);
            }
        }
        let mut sorted: Vec<&SourceItem> = files.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let mut jobs = Vec::with_capacity(sorted.len());
        for (i, file) in sorted.iter().enumerate() {
            if i > 0 && sorted[i - 1].path == file.path {
                errors.push(ObjectError::file(
                    &file.path,
                    "listed twice in the source; the first copy is used".into(),
                ));
                continue;
            }
            jobs.push(Job {
                file,
                text: match &file.contents {
                    Contents::Text(Ok(text)) => Ok((Text::Yaml(text), digest(text))),
                    Contents::Object { value, version } => {
                        Ok((Text::Object(value), (usize::MAX, digest(version).1)))
                    }
                    Contents::Text(Err(reason)) => Err(reason),
                },
                prev: previous.remove(&file.path),
            });
        }
        // Whatever is left in `previous` is a file gone from the source: its objects go too.
        for (file, (state, file_errors)) in self.read_all(jobs) {
            errors.extend(file_errors);
            if let Some(state) = state {
                items.insert(file.path.clone(), state);
            }
        }
        self.sources
            .insert(source.to_string(), Source { items, errors });
        let mut errors: Vec<ObjectError> = self
            .sources
            .values()
            .flat_map(|s| s.errors.iter().cloned())
            .collect();
        self.generation += 1;
        let table = self.build(&mut errors);
        let (warnings, errors) = errors.into_iter().partition(|e| e.warning);
        Outcome {
            table,
            errors,
            warnings,
        }
    }

    /// Reads every file (in parallel when many changed), keeping the input order so errors and
    /// host conflicts come out the same however the work was split.
    fn read_all<'f>(&self, jobs: Vec<Job<'f>>) -> Vec<(&'f SourceItem, FileRead)> {
        let changed = jobs
            .iter()
            .filter(|j| j.prev.as_ref().map(|p| p.digest) != j.text.as_ref().ok().map(|t| t.1))
            .count();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if changed < PARALLEL_FILES || threads < 2 {
            return jobs
                .into_iter()
                .map(|job| (job.file, self.read_source(job)))
                .collect();
        }
        let per_thread = jobs.len().div_ceil(threads);
        let mut chunks: Vec<Vec<_>> = Vec::new();
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            chunks.push(jobs.by_ref().take(per_thread).collect());
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|job| (job.file, self.read_source(job)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// One file: its state for the next build and the errors to report now. A file that cannot
    /// be read or parsed keeps its previous state (and reports only why it failed).
    fn read_source(&self, job: Job<'_>) -> FileRead {
        let Job { file, text, prev } = job;
        let (text, digest) = match text {
            Ok(read) => read,
            Err(reason) => {
                let e = ObjectError::file(&file.path, format!("cannot read: {reason}"));
                return (prev, vec![e]);
            }
        };
        let prev = match prev {
            Some(same) if same.digest == digest => {
                let errors = same.errors.clone();
                return (Some(same), errors);
            }
            prev => prev,
        };
        let docs = match text {
            Text::Object(value) => vec![(**value).clone()],
            Text::Yaml(text) => match parse_documents(text) {
                Err(message) => return (prev, vec![ObjectError::file(&file.path, message)]),
                Ok(docs) => docs,
            },
        };
        // A file with nothing in it is one being written (truncated, not yet filled), or a
        // mistake: it must not remove every route it held. An empty `kind: List` is a real
        // empty file.
        if docs.iter().all(serde_yaml::Value::is_null) {
            let e = ObjectError::file(
                &file.path,
                "empty (no YAML document); its last good objects are kept (delete the file to \
                 remove them, or write a `kind: List` with `items: []`)"
                    .into(),
            );
            return (prev, vec![e]);
        }
        let mut errors = Vec::new();
        let held = self.read_file(&file.path, docs, prev.map(|p| p.held), &mut errors);
        let state = FileState {
            digest,
            held,
            errors: errors.clone(),
        };
        (Some(state), errors)
    }

    /// Number of InferenceServices that currently have routes.
    pub fn routed_objects(&self) -> usize {
        self.routed
    }

    fn read_file(
        &self,
        path: &str,
        docs: Vec<serde_yaml::Value>,
        prev: Option<Vec<Held>>,
        errors: &mut Vec<ObjectError>,
    ) -> Vec<Held> {
        let prev = prev.unwrap_or_default();
        let prev: HashMap<(Kind, &IsvcRef), &Held> =
            prev.iter().map(|h| ((h.kind, &h.isvc), h)).collect();
        // Errors about something that has no name say which document it was.
        let in_doc = |i: usize, mut e: FieldError| {
            e.message = format!("{} (document {})", e.message, i + 1);
            ObjectError::new(path, None, e)
        };
        let mut objects = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            let mut found = Vec::new();
            let mut field_errors = Vec::new();
            objects::flatten(doc, "", &mut found, &mut field_errors);
            errors.extend(field_errors.into_iter().map(|e| in_doc(i, e)));
            objects.extend(found.into_iter().map(|(prefix, obj)| (i, prefix, obj)));
        }
        let mut held: Vec<Held> = Vec::new();
        // Each held copy's own errors and warnings, reported only for the copy that is kept.
        let mut copy_errors: Vec<Vec<ObjectError>> = Vec::new();
        for (i, prefix, obj) in &objects {
            let converted = match objects::convert(obj, prefix, &self.options) {
                Parsed::Ignored => continue,
                Parsed::Unidentified(errs) => {
                    errors.extend(errs.into_iter().map(|e| in_doc(*i, e)));
                    continue;
                }
                Parsed::Object(c) => *c,
            };
            let object = Some(&converted.isvc);
            // Two copies in one file: the newer is used whole (see `newest`).
            let earlier = held
                .iter()
                .position(|h| h.kind == converted.kind && h.isvc == converted.isvc);
            if let Some(at) = earlier {
                let newer = converted.version.key() > held[at].version.key();
                let (kept, dropped) = if newer {
                    (&converted.version, &held[at].version)
                } else {
                    (&held[at].version, &converted.version)
                };
                errors.push(ObjectError::new(
                    path,
                    object,
                    FieldError {
                        field: None,
                        message: duplicate_message(dropped, kept, path),
                    },
                ));
                if !newer {
                    continue;
                }
                held.remove(at);
                copy_errors.remove(at);
            }
            copy_errors.push(
                converted
                    .errors
                    .into_iter()
                    .map(|e| ObjectError::new(path, object, e))
                    .chain(
                        converted
                            .warnings
                            .into_iter()
                            .map(|e| ObjectError::warning(path, object, e)),
                    )
                    .collect(),
            );
            let last_good = || {
                prev.get(&(converted.kind, &converted.isvc))
                    .and_then(|h| h.routes.clone())
            };
            let stopped = matches!(converted.state, State::Stopped);
            let routes = match converted.state {
                State::Routes(r) => Some(Arc::new(r)),
                State::Stopped => None,
                State::NotReady | State::Invalid => last_good(),
            };
            held.push(Held {
                kind: converted.kind,
                isvc: converted.isvc,
                created: converted.created,
                version: converted.version,
                routes,
                stopped,
            });
        }
        errors.extend(copy_errors.into_iter().flatten());
        held
    }

    /// Merges every object's routes into one table, settling contested hosts by age.
    fn build(&mut self, errors: &mut Vec<ObjectError>) -> RouteTable {
        let mut claims: Vec<(&str, &Held, &Arc<ObjectRoutes>)> = newest(&self.sources, errors)
            .into_iter()
            .filter_map(|(path, h)| h.routes.as_ref().map(|r| (path, h, r)))
            .collect();
        // Oldest first; an object without a creation timestamp counts as the newest.
        claims.sort_by(|(pa, a, _), (pb, b, _)| {
            (a.created.is_none(), &a.created, &a.isvc, pa).cmp(&(
                b.created.is_none(),
                &b.created,
                &b.isvc,
                pb,
            ))
        });
        let capacity = claims.iter().map(|(_, _, r)| r.hosts.len()).sum();
        let mut hosts = HostMap::with_capacity_and_hasher(capacity, Default::default());
        self.routed = 0;
        for (i, (path, held, routes)) in claims.iter().enumerate() {
            let mut routed = false;
            for (host, route) in &routes.hosts {
                use std::collections::hash_map::Entry;
                match hosts.entry(host.clone()) {
                    Entry::Vacant(v) => {
                        v.insert(route.clone());
                        routed = true;
                    }
                    Entry::Occupied(_) => {
                        // Which older claim has it, for the message (contested hosts are rare:
                        // no second map of every host for them).
                        let (winner_path, winner, _) = claims[..i]
                            .iter()
                            .find(|(_, _, r)| r.hosts.iter().any(|(h, _)| h == host))
                            .expect("an earlier claim inserted it");
                        let message = format!(
                            "host {host} is already routed to {} (from {winner_path}), \
                             which is older; this object does not get it",
                            winner.isvc
                        );
                        errors.push(ObjectError::new(
                            path,
                            Some(&held.isvc),
                            FieldError {
                                field: None,
                                message,
                            },
                        ));
                    }
                }
            }
            self.routed += usize::from(routed);
        }
        let mut endpoints: std::collections::HashSet<&Endpoint, foldhash::fast::RandomState> =
            Default::default();
        for (_, _, routes) in &claims {
            endpoints.extend(routes.endpoints());
        }
        let endpoints = endpoints.into_iter().cloned().collect();
        RouteTable::with_endpoints(self.generation, hosts, endpoints)
    }
}

/// One copy of every object: where the source holds several (in different files), the newest
/// whole, never a mix, and an error on each of the others. A newest copy that has no routes
/// only because it is not ready yet (or invalid) does not take the object's routes away: the
/// newest copy that has routes is used whole until it is ready (a stopped one does). In path
/// order.
fn newest<'a>(
    sources: &'a BTreeMap<String, Source>,
    errors: &mut Vec<ObjectError>,
) -> Vec<(&'a str, &'a Held)> {
    let mut order: Vec<(Kind, &IsvcRef)> = Vec::new();
    let mut copies: HashMap<(Kind, &IsvcRef), Vec<(&str, &Held)>> = HashMap::new();
    for (path, file) in sources.values().flat_map(|s| &s.items) {
        for h in &file.held {
            let key = (h.kind, &h.isvc);
            let list = copies.entry(key).or_default();
            if list.is_empty() {
                order.push(key);
            }
            list.push((path.as_str(), h));
        }
    }
    let mut chosen = Vec::with_capacity(order.len());
    for key in order {
        let list = &copies[&key];
        // The first of the highest version (ties go to path order).
        let best = |f: &dyn Fn(&Held) -> bool| {
            list.iter()
                .filter(|(_, h)| f(h))
                .fold(None, |best: Option<&(&str, &Held)>, c| match best {
                    Some(b) if b.1.version.key() >= c.1.version.key() => Some(b),
                    _ => Some(c),
                })
                .copied()
        };
        let Some(newest) = best(&|_| true) else {
            continue;
        };
        let used = match newest.1 {
            h if h.routes.is_none() && !h.stopped => {
                best(&|h| h.routes.is_some()).unwrap_or(newest)
            }
            _ => newest,
        };
        for &(path, h) in list {
            if std::ptr::eq(h, used.1) {
                continue;
            }
            let mut message = duplicate_message(&h.version, &used.1.version, used.0);
            if std::ptr::eq(h, newest.1) {
                message.push_str(" until it is ready (it has no routes yet)");
            }
            errors.push(ObjectError::new(
                path,
                Some(&h.isvc),
                FieldError {
                    field: None,
                    message,
                },
            ));
        }
        chosen.push(used);
    }
    chosen
}

fn duplicate_message(dropped: &Version, kept: &Version, kept_in: &str) -> String {
    let show = |v: &Version| match (&v.resource_version, v.generation) {
        (Some(rv), Some(g)) => format!("resourceVersion {rv}, generation {g}"),
        (Some(rv), None) => format!("resourceVersion {rv}"),
        (None, Some(g)) => format!("generation {g}"),
        (None, None) => "no resourceVersion".to_string(),
    };
    format!(
        "duplicate: another copy of this object ({}, in {kept_in}) is used whole; this copy \
         ({}) is ignored",
        show(kept),
        show(dropped)
    )
}

/// The state a file leaves for the next build, and its errors for this one.
type FileRead = (Option<FileState>, Vec<ObjectError>);

fn digest(text: &str) -> (usize, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    (text.len(), h.finish())
}

/// One item to read, with what it held last time.
struct Job<'f> {
    file: &'f SourceItem,
    /// The contents and their digest, or why the file could not be read.
    text: Result<(Text<'f>, (usize, u64)), &'f str>,
    prev: Option<FileState>,
}

enum Text<'f> {
    Yaml(&'f str),
    Object(&'f Arc<serde_yaml::Value>),
}

/// Splits a file into its YAML documents. Any syntax error fails the whole file (naming the
/// line), since the documents after it cannot be trusted.
fn parse_documents(text: &str) -> Result<Vec<serde_yaml::Value>, String> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(v) => docs.push(v),
            Err(e) => {
                // serde_yaml's message usually ends "at line L column C"; add the line when not.
                let message = e.to_string();
                return Err(match e.location() {
                    Some(l) if !message.contains(" at line ") => {
                        format!("invalid YAML at line {}: {message}", l.line())
                    }
                    _ => format!("invalid YAML: {message}"),
                });
            }
        }
    }
    Ok(docs)
}
