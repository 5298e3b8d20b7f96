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
//! - two objects claiming one host: the older (`metadata.creationTimestamp`, then
//!   `namespace/name`, then file path) keeps it and the other gets an error for that host only.

use crate::isvc::{self, FieldError, ObjectRoutes, Parsed, State};
use crate::table::{Endpoint, HostRoute, IsvcRef, RouteTable};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
}

/// One file read from the route source. `contents` is `Err(reason)` when reading failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub contents: Result<String, String>,
}

/// A problem with one file or object, saying where: file, object and field path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectError {
    pub file: String,
    /// `namespace/name`, when the object could be identified.
    pub object: Option<String>,
    /// Field path such as `status.components.predictor.traffic[1].percent`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
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
}

impl ObjectError {
    fn new(file: &str, object: Option<&IsvcRef>, e: FieldError) -> Self {
        ObjectError {
            file: file.to_string(),
            object: object.map(IsvcRef::to_string),
            field: e.field,
            message: e.message,
        }
    }

    fn file(file: &str, message: String) -> Self {
        ObjectError {
            file: file.to_string(),
            object: None,
            field: None,
            message,
        }
    }
}

/// Every InferenceService seen, with the last good routes of each.
#[derive(Debug)]
pub struct Catalog {
    options: BuildOptions,
    generation: u64,
    /// By file path: the objects the file held at its last successful parse.
    files: BTreeMap<String, Vec<Held>>,
    routed: usize,
}

/// One object as held by one file.
#[derive(Debug, Clone)]
struct Held {
    isvc: IsvcRef,
    created: Option<String>,
    /// The last good routes; `None` while the object never was ready, or is stopped.
    routes: Option<Arc<ObjectRoutes>>,
}

impl Catalog {
    pub fn new(options: BuildOptions) -> Self {
        Catalog {
            options,
            generation: 0,
            files: BTreeMap::new(),
            routed: 0,
        }
    }

    /// Applies a complete, fresh read of the route source (every file, every time) and returns
    /// the new table (generation = previous + 1, starting at 1) and every current problem.
    pub fn apply(&mut self, files: &[SourceFile]) -> Outcome {
        let mut errors = Vec::new();
        let mut previous = std::mem::take(&mut self.files);
        let mut sorted: Vec<&SourceFile> = files.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        for (i, file) in sorted.iter().enumerate() {
            if i > 0 && sorted[i - 1].path == file.path {
                errors.push(ObjectError::file(
                    &file.path,
                    "listed twice in the source; the first copy is used".into(),
                ));
                continue;
            }
            let prev = previous.remove(&file.path);
            let held = match &file.contents {
                Err(reason) => {
                    errors.push(ObjectError::file(
                        &file.path,
                        format!("cannot read: {reason}"),
                    ));
                    prev
                }
                Ok(text) => match parse_documents(text) {
                    Err(message) => {
                        errors.push(ObjectError::file(&file.path, message));
                        prev
                    }
                    Ok(docs) => Some(self.read_file(&file.path, docs, prev, &mut errors)),
                },
            };
            if let Some(held) = held {
                self.files.insert(file.path.clone(), held);
            }
        }
        // Whatever is left in `previous` is a file gone from the source: its objects go too.
        self.generation += 1;
        let table = self.build(&mut errors);
        Outcome { table, errors }
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
        // Errors about something that has no name say which document it was.
        let in_doc = |i: usize, mut e: FieldError| {
            e.message = format!("{} (document {})", e.message, i + 1);
            ObjectError::new(path, None, e)
        };
        let mut objects = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            let mut found = Vec::new();
            let mut field_errors = Vec::new();
            isvc::flatten(doc, "", &mut found, &mut field_errors);
            errors.extend(field_errors.into_iter().map(|e| in_doc(i, e)));
            objects.extend(found.into_iter().map(|(prefix, obj)| (i, prefix, obj)));
        }
        let mut held: Vec<Held> = Vec::new();
        for (i, prefix, obj) in &objects {
            let converted = match isvc::convert(obj, prefix, &self.options) {
                Parsed::Ignored => continue,
                Parsed::Unidentified(errs) => {
                    errors.extend(errs.into_iter().map(|e| in_doc(*i, e)));
                    continue;
                }
                Parsed::Object(c) => *c,
            };
            let object = Some(&converted.isvc);
            if held.iter().any(|h| h.isvc == converted.isvc) {
                errors.push(ObjectError::new(
                    path,
                    object,
                    FieldError {
                        field: None,
                        message: "appears twice in this file; the first one is used".into(),
                    },
                ));
                continue;
            }
            errors.extend(
                converted
                    .errors
                    .into_iter()
                    .map(|e| ObjectError::new(path, object, e)),
            );
            let last_good = || {
                prev.iter()
                    .find(|h| h.isvc == converted.isvc)
                    .and_then(|h| h.routes.clone())
            };
            let routes = match converted.state {
                State::Routes(r) => Some(Arc::new(r)),
                State::Stopped => None,
                State::NotReady | State::Invalid => last_good(),
            };
            held.push(Held {
                isvc: converted.isvc,
                created: converted.created,
                routes,
            });
        }
        held
    }

    /// Merges every object's routes into one table, settling contested hosts by age.
    fn build(&mut self, errors: &mut Vec<ObjectError>) -> RouteTable {
        let mut claims: Vec<(&str, &Held, &Arc<ObjectRoutes>)> = self
            .files
            .iter()
            .flat_map(|(path, held)| {
                held.iter()
                    .filter_map(move |h| h.routes.as_ref().map(|r| (path.as_str(), h, r)))
            })
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
        let mut hosts: HashMap<String, Arc<HostRoute>> = HashMap::new();
        let mut owners: HashMap<&str, (&str, &IsvcRef)> = HashMap::new();
        let mut routed = BTreeSet::new();
        for (path, held, routes) in &claims {
            for (host, route) in &routes.hosts {
                if let Some((winner_path, winner)) = owners.get(host.as_str()) {
                    let message = format!(
                        "host {host} is already routed to {winner} (from {winner_path}), \
                         which is older; this object does not get it"
                    );
                    errors.push(ObjectError::new(
                        path,
                        Some(&held.isvc),
                        FieldError {
                            field: None,
                            message,
                        },
                    ));
                    continue;
                }
                owners.insert(host, (path, &held.isvc));
                hosts.insert(host.clone(), route.clone());
                routed.insert(&held.isvc);
            }
        }
        self.routed = routed.len();
        RouteTable::new(self.generation, hosts)
    }
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
