//! Fixture manifests, each compared with its full expected outcome.
//!
//! `fixtures/{valid,invalid}/NAME.yaml` is applied alone (file path `NAME.yaml`) to a fresh
//! catalog; `NAME.expected.json` holds every error (as displayed) and the whole table. Run with
//! `BLESS=1` to rewrite the expected files after a deliberate change, then review the diff.

use routes::{BuildOptions, Catalog, Outcome, SourceItem};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn source(path: &str, text: &str) -> SourceItem {
    SourceItem {
        path: path.to_string(),
        contents: routes::Contents::Text(Ok(text.to_string())),
    }
}

fn outcome_json(outcome: &Outcome) -> Value {
    json!({
        "errors": outcome.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "warnings": outcome.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "table": serde_json::to_value(&outcome.table).unwrap(),
    })
}

/// Compares `actual` with `expected_path`, or writes it there under `BLESS=1`.
fn check(expected_path: &Path, actual: &Value) {
    if std::env::var_os("BLESS").is_some() {
        let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
        std::fs::write(expected_path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with BLESS=1 to create it)",
            expected_path.display()
        )
    });
    let expected: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        actual,
        &expected,
        "{} differs; actual:\n{}",
        expected_path.display(),
        serde_json::to_string_pretty(actual).unwrap()
    );
}

fn run_dir(dir: &str) -> usize {
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let outcome = Catalog::new(BuildOptions::default()).apply(&[source(name, &text)]);
        if dir == "valid" {
            assert!(outcome.errors.is_empty(), "{name}: {:?}", outcome.errors);
        } else {
            assert!(!outcome.errors.is_empty(), "{name} should have errors");
        }
        check(
            &path.with_extension("expected.json"),
            &outcome_json(&outcome),
        );
        n += 1;
    }
    n
}

/// Every valid fixture (plain, canary, transformer + explainer, tags, List, multi-document,
/// RawDeployment/Standard, v1alpha2 canary, kubeflow v1beta1, not ready, stopped) builds exactly
/// its expected table with no errors.
#[test]
fn valid_fixtures() {
    assert!(run_dir("valid") >= 11);
}

/// Every invalid fixture reports exactly its expected errors (file, object, field path) and
/// still builds the table from whatever is valid beside it.
#[test]
fn invalid_fixtures() {
    assert!(run_dir("invalid") >= 6);
}

/// The rollout walk: create (00001 at 100 %), canary 20 % (00002 latest 20 / 00001 prev 80),
/// promote (00002 at 100 %), canary again (00003 latest 20 / 00002 prev 80), roll back with
/// canaryTrafficPercent 0 (00002 at 100 %, 00003 still tagged `latest` at 0 %: out of the split,
/// still reachable by its tag host and header). The gateway follows status at every step.
#[test]
fn rollout_walk() {
    walk("rollout", "routes/xgboost-iris.yaml", 5);
}

/// KServe 0.20's Standard-mode rollout with `spec.canary[]`, as its HTTPRoute weights it:
/// create, a canary not ready yet (out), ready at 20 %, a dark launch at 0 %, several canaries
/// (one not in status: out), promotion (stable renamed, canary entry removed), a new canary,
/// rollback.
#[test]
fn standard_rollout_walk() {
    walk("rollout-standard", "routes/sklearn-iris.yaml", 8);
}

/// KServe's `pathTemplate`: the fixtures of `path-template/` built with
/// `/serving/{{ .Namespace }}/{{ .Name }}`, each with its whole expected table (hosts and paths).
#[test]
fn path_template_fixtures() {
    let template = routes::PathTemplate::parse("/serving/{{ .Namespace }}/{{ .Name }}").unwrap();
    let dir = fixtures().join("path-template");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let options = BuildOptions {
            path_template: Some(template.clone()),
            ..Default::default()
        };
        let outcome = Catalog::new(options).apply(&[source(name, &text)]);
        assert!(outcome.errors.is_empty(), "{name}: {:?}", outcome.errors);
        check(
            &path.with_extension("expected.json"),
            &outcome_json(&outcome),
        );
        n += 1;
    }
    assert!(n >= 1);
}

/// Applies each step of `dir` in name order to one catalog, as one file rewritten each time.
fn walk(dir: &str, file: &str, steps: usize) {
    let mut catalog = Catalog::new(BuildOptions::default());
    let dir = fixtures().join(dir);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), steps);
    for (i, step) in paths.iter().enumerate() {
        let text = std::fs::read_to_string(step).unwrap();
        let outcome = catalog.apply(&[source(file, &text)]);
        assert!(
            outcome.errors.is_empty() && outcome.warnings.is_empty(),
            "{}: {:?} {:?}",
            step.display(),
            outcome.errors,
            outcome.warnings
        );
        assert_eq!(outcome.table.generation(), i as u64 + 1);
        assert_eq!(catalog.routed_objects(), 1);
        check(
            &step.with_extension("expected.json"),
            &outcome_json(&outcome),
        );
    }
}

/// The quickstart manifests load with no errors and route exactly these hosts.
#[test]
fn quickstart_manifests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/isvc");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            files.push(source(&name, &std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert_eq!(files.len(), 3);
    let mut catalog = Catalog::new(BuildOptions::default());
    let outcome = catalog.apply(&files);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(catalog.routed_objects(), 3);
    let hosts: Vec<&str> = outcome.table.hosts().into_keys().collect();
    let mut expected = Vec::new();
    for name in ["sklearn-iris", "xgboost-iris", "torch-iris"] {
        for host in [
            format!("{name}.kserve-test.example.com"),
            format!("{name}.kserve-test.svc.cluster.local"),
            format!("{name}.kserve-test.svc"),
            format!("{name}.kserve-test"),
        ] {
            expected.push(host);
        }
        let components: &[&str] = if name == "torch-iris" {
            &["predictor", "transformer", "explainer"]
        } else {
            &["predictor"]
        };
        for c in components {
            expected.push(format!("{name}-{c}.kserve-test.example.com"));
            expected.push(format!("{name}-{c}.kserve-test.svc.cluster.local"));
            expected.push(format!("{name}-{c}.kserve-test.svc"));
            expected.push(format!("{name}-{c}.kserve-test"));
        }
    }
    // Tag hosts in every form the component's own host has (Knative serves them all).
    for tag in ["latest", "prev"] {
        for suffix in ["example.com", "svc.cluster.local", "svc"] {
            expected.push(format!("{tag}-xgboost-iris-predictor.kserve-test.{suffix}"));
        }
        expected.push(format!("{tag}-xgboost-iris-predictor.kserve-test"));
    }
    expected.sort();
    assert_eq!(hosts, expected);
}
