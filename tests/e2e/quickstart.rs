//! The README's quickstart, run as a newcomer would: `modelgate` with no arguments from a
//! checkout, then every command of the README walk-through, in order.

use crate::support::gateway::BIN;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The shell commands between the walk-through markers of README.md, from its ```sh blocks.
fn walkthrough_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("end marker");
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            l if in_block && !l.is_empty() && !l.starts_with('#') => commands.push(l.to_string()),
            _ => {}
        }
    }
    commands
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// `cargo run --release` (the binary without arguments) serves the example InferenceServices
/// with demo models on loopback (8080 and 9901, or what `MODELGATE_PORT` and
/// `MODELGATE_ADMIN_PORT` say), and every README walk-through command works against it: routing
/// by Host, v1 and v2 protocols, the transformer and explainer, the canary share, tag
/// pinning, a hot reload of an edited manifest, JSON errors and the admin endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough() {
    let commands = walkthrough_commands();
    assert!(commands.len() >= 10, "walk-through found: {commands:#?}");

    // A checkout-like directory, so the README's relative paths and the hot-reload edit work
    // without touching the repository's own examples.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&workspace().join("examples"), &dir.path().join("examples"));
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let child = Command::new(BIN)
        .current_dir(dir.path())
        // Port 0: the gateway binds its own ports and says which; the README's commands read
        // them from MODELGATE_PORT / MODELGATE_ADMIN_PORT, so a quickstart already running on
        // 8080/9901 never answers in this one's place.
        .env("MODELGATE_PORT", "0")
        .env("MODELGATE_ADMIN_PORT", "0")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Killed when the test ends, pass or fail.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let log_text = || std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (port, admin) = loop {
        if let Some(ports) = crate::support::gateway::listening_ports(&log_text()) {
            break ports;
        }
        assert!(
            Instant::now() < deadline,
            "quickstart did not say where it listens; log:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let admin_url = |path: &str| format!("http://127.0.0.1:{admin}{path}");
    while get(&admin_url("/readyz")).await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "quickstart not ready; log:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut outputs = Vec::new();
    for cmd in &commands {
        let generation = get(&admin_url("/routes")).await.map(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(&b).unwrap()["generation"]
                .as_u64()
                .unwrap()
        });
        let out = Command::new("bash")
            .args(["-c", cmd])
            .current_dir(dir.path())
            .env("MODELGATE_PORT", port.to_string())
            .env("MODELGATE_ADMIN_PORT", admin.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        if cmd.starts_with("sed -i") {
            // The reader watches the share change; the test waits for the reload the same way.
            let g = generation.unwrap();
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let (_, body) = get(&admin_url("/routes")).await.unwrap();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if v["generation"].as_u64().unwrap() > g {
                    break;
                }
                assert!(Instant::now() < deadline, "edit not picked up within 1 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else {
            assert!(!stdout.is_empty(), "`{cmd}` printed nothing");
        }
        outputs.push((cmd.clone(), stdout));
    }

    let find = |needle: &str| -> Vec<&String> {
        outputs
            .iter()
            .filter(|(c, _)| c.contains(needle))
            .map(|(_, o)| o)
            .collect()
    };
    assert_eq!(
        find("sklearn-iris:predict")[0].trim(),
        r#"{"predictions":[1,0]}"#
    );
    assert!(
        find("/infer")[0].contains(r#""data":[1]"#),
        "{}",
        find("/infer")[0]
    );
    assert!(find("torch-iris:predict")[0].contains("x-modelgate-revision: torch-iris-transformer-"));
    assert!(find("torch-iris:explain")[0].contains("x-modelgate-revision: torch-iris-explainer-"));
    let shares: Vec<_> = find("seq 200");
    assert_eq!(shares.len(), 2);
    let count = |out: &str, rev: &str| -> u32 {
        out.lines()
            .find(|l| l.trim_end().ends_with(rev))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let before = count(shares[0], "xgboost-iris-predictor-00002");
    let after = count(shares[1], "xgboost-iris-predictor-00002");
    assert!(
        (15..=70).contains(&before),
        "20 % canary got {before}/200:\n{}",
        shares[0]
    );
    assert!(
        (70..=130).contains(&after),
        "50 % canary got {after}/200:\n{}",
        shares[1]
    );
    assert_eq!(
        find("latest-xgboost")[0].trim(),
        "xgboost-iris-predictor-00002"
    );
    assert_eq!(
        find("Knative-Serving-Tag: prev")[0].trim(),
        "xgboost-iris-predictor-00001"
    );
    let not_found = find("nobody.kserve-test")[0];
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    assert!(not_found.contains(r#"{"error":"#));
    assert!(find("/routes")[0].contains(r#""generation":"#));
    assert!(find("/metrics")[0].contains("modelgate_requests_total"));
}
