use crate::support::gateway::BIN;
use crate::support::manifest::{traffic, Isvc};
use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The shipped quickstart config and its manifests validate cleanly.
#[test]
fn validate_accepts_the_quickstart() {
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(workspace().join("examples/quickstart/modelgate.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("ok: 3 files, 3 InferenceServices routed"),
        "{stdout}"
    );
}

/// `validate` exits 64 and lists every config error, each naming its field.
#[test]
fn validate_lists_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "listeners: [{address: nowhere}]\nroutes: {directory: missing}\nthreads: 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["listeners[0].address", "routes.directory", "threads"] {
        assert!(
            err.contains(&format!(": {field}: ")),
            "{field} missing in {err}"
        );
    }
    // Running (not just validating) a bad config exits 64 too, before binding anything.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `validate` exits 64 and lists every manifest error with file, object and field.
#[test]
fn validate_lists_manifest_errors() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    std::fs::create_dir(&routes).unwrap();
    std::fs::write(routes.join("broken.yaml"), "kind: [unclosed\n").unwrap();
    let bad = Isvc::new(
        "m",
        "ns",
        vec![traffic("m-predictor-00001", 120, None, true)],
    )
    .yaml();
    std::fs::write(routes.join("bad.yaml"), bad).unwrap();
    let good = Isvc::new(
        "ok",
        "ns",
        vec![traffic("ok-predictor-00001", 100, None, true)],
    )
    .yaml();
    std::fs::write(routes.join("good.yaml"), good).unwrap();
    let config = dir.path().join("modelgate.yaml");
    std::fs::write(&config, "routes: {directory: routes}\n").unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: ns/m: status.components.predictor.traffic[0].percent: "),
        "{err}"
    );
    assert!(err.contains("broken.yaml: "), "{err}");
    assert!(err.trim_end().ends_with("2 error(s)"), "{err}");
}
