//! The deployment files of `examples/kubernetes`, checked offline: every manifest against the
//! Kubernetes schemas (strict: no unknown field), the gateway config they carry by the gateway
//! itself, and the container build file by hadolint. No cluster and no image build can run
//! here; these keep the files honest.

use crate::support::gateway::BIN;
use crate::support::install::deploy_checkers;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes")
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Every manifest (the `.yaml.example` alternatives too) is valid Kubernetes 1.31 with no
/// unknown field, and the Dockerfile passes hadolint.
#[tokio::test]
async fn manifests_and_dockerfile_lint() {
    let bin = tokio::task::spawn_blocking(deploy_checkers).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(deploy_dir()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = name.strip_suffix(".yaml.example") {
            let copy = tmp.path().join(format!("{stem}.yaml"));
            std::fs::copy(&path, &copy).unwrap();
            files.push(copy);
        } else if name.ends_with(".yaml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    let (ok, text) = output(
        Command::new(bin.join("kubernetes-validate"))
            .args(["--strict", "-k", "1.31.0"])
            .args(&files),
    );
    assert!(ok && !text.contains("ERROR"), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), 13, "{text}");
    let (ok, text) =
        output(Command::new(bin.join("hadolint")).arg(deploy_dir().join("Dockerfile")));
    assert!(ok, "{text}");
}

/// The config in the ConfigMap is one the gateway accepts: `modelgate validate` on it, with the
/// mounted paths (config, secrets, the service account's token and CA) laid out as the pod has
/// them, under a temporary root.
#[test]
fn the_config_map_is_a_valid_config() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
        serde_json::to_value(serde_yaml_doc(&text)).unwrap()
    };
    let config_map = read("config.yaml");
    let config = config_map["data"]["modelgate.yaml"].as_str().unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    let config = config
        .replace("/etc/modelgate/", &format!("{r}/etc/modelgate/"))
        .replace(
            "/var/run/secrets/kubernetes.io/serviceaccount/",
            &format!("{r}/sa/"),
        );
    for dir in ["etc/modelgate/config", "etc/modelgate/secrets", "sa"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    let write = |p: &str, text: &str| std::fs::write(root.path().join(p), text).unwrap();
    write("etc/modelgate/config/modelgate.yaml", &config);
    write("etc/modelgate/secrets/client-secret", "client-secret\n");
    write(
        "etc/modelgate/secrets/cookie-secret",
        "a-cookie-secret-of-more-than-thirty-two-bytes\n",
    );
    write("sa/token", "token\n");
    let ca = rcgen::generate_simple_self_signed(vec!["kubernetes.default.svc".into()]).unwrap();
    write("sa/ca.crt", &ca.cert.pem());
    let (ok, text) = output(
        Command::new(BIN)
            .arg("validate")
            .arg("--config")
            .arg(root.path().join("etc/modelgate/config/modelgate.yaml")),
    );
    assert!(ok, "{text}");
    // The template's secrets are refused as they are: nothing starts with them.
    let secret = std::fs::read_to_string(deploy_dir().join("secret.yaml.example")).unwrap();
    let template = serde_yaml_doc(&secret);
    let cookie = template["stringData"]["cookie-secret"].as_str().unwrap();
    write("etc/modelgate/secrets/cookie-secret", cookie);
    let (ok, text) = output(
        Command::new(BIN)
            .arg("validate")
            .arg("--config")
            .arg(root.path().join("etc/modelgate/config/modelgate.yaml")),
    );
    assert!(!ok && text.contains("cookie_secrets"), "{text}");
}

fn serde_yaml_doc(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}
