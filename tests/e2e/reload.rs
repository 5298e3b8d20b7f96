use crate::support::gateway::{write_atomic, Gateway, Options};
use crate::support::manifest::{traffic, Isvc};
use crate::support::upstream::Upstream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const IRIS: &str = "sklearn-iris.kserve-test.example.com";
/// The issue's bar: a change takes effect within a second.
const WITHIN: Duration = Duration::from_secs(1);

fn iris(revision: &str) -> String {
    Isvc::new(
        "sklearn-iris",
        "kserve-test",
        vec![traffic(revision, 100, None, true)],
    )
    .yaml()
}

fn entry_revisions(routes: &serde_json::Value, host: &str) -> Vec<String> {
    routes["hosts"][host]["entry"]["backends"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| b["revision"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

struct Two {
    a: Upstream,
    b: Upstream,
    gw: Gateway,
}

async fn two_revisions() -> Two {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(
        &[("iris.yaml", iris("sklearn-iris-predictor-00001"))],
        Options {
            endpoints: vec![
                (
                    "kserve-test/sklearn-iris-predictor-00001".into(),
                    vec![format!("\"{}\"", a.endpoint())],
                ),
                (
                    "kserve-test/sklearn-iris-predictor-00002".into(),
                    vec![format!("\"{}\"", b.endpoint())],
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    Two { a, b, gw }
}

async fn served_by(gw: &Gateway) -> String {
    let r = gw.get(IRIS, "/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-upstream"].to_str().unwrap().to_string()
}

/// An atomic rename, a write in place, a new file and a deleted file each take effect within a
/// second.
#[tokio::test]
async fn file_changes_take_effect() {
    let Two { a: _a, b: _b, gw } = two_revisions().await;
    let dir = gw.routes_dir();
    assert_eq!(served_by(&gw).await, "a");

    let g = gw.generation().await;
    write_atomic(&dir, "iris.yaml", &iris("sklearn-iris-predictor-00002"));
    gw.wait_routes(g, WITHIN, |r| {
        entry_revisions(r, IRIS) == ["sklearn-iris-predictor-00002"]
    })
    .await;
    assert_eq!(served_by(&gw).await, "b");

    let g = gw.generation().await;
    std::fs::write(dir.join("iris.yaml"), iris("sklearn-iris-predictor-00001")).unwrap();
    gw.wait_routes(g, WITHIN, |r| {
        entry_revisions(r, IRIS) == ["sklearn-iris-predictor-00001"]
    })
    .await;
    assert_eq!(served_by(&gw).await, "a");

    let g = gw.generation().await;
    let other = Isvc::new(
        "other",
        "kserve-test",
        vec![traffic("sklearn-iris-predictor-00002", 100, None, true)],
    );
    std::fs::write(dir.join("other.yml"), other.yaml()).unwrap();
    gw.wait_routes(g, WITHIN, |r| {
        !r["hosts"]["other.kserve-test.example.com"].is_null()
    })
    .await;
    let r = gw
        .get("other.kserve-test.example.com", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-upstream"], "b");

    let g = gw.generation().await;
    std::fs::remove_file(dir.join("iris.yaml")).unwrap();
    gw.wait_routes(g, WITHIN, |r| r["hosts"][IRIS].is_null())
        .await;
    assert_eq!(gw.get(IRIS, "/").send().await.unwrap().status(), 404);
}

/// A Kubernetes ConfigMap volume update (kubelet writes a new timestamped directory and swaps
/// the `..data` symlink; no event names the manifest file) takes effect within a second.
#[tokio::test]
async fn configmap_symlink_swap() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(
        &[],
        Options {
            endpoints: vec![
                (
                    "kserve-test/sklearn-iris-predictor-00001".into(),
                    vec![format!("\"{}\"", a.endpoint())],
                ),
                (
                    "kserve-test/sklearn-iris-predictor-00002".into(),
                    vec![format!("\"{}\"", b.endpoint())],
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let dir = gw.routes_dir();
    // The layout kubelet's atomic writer makes.
    let write_version = |version: &str, revision: &str| {
        let ts = dir.join(format!("..{version}"));
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("iris.yaml"), iris(revision)).unwrap();
        std::os::unix::fs::symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    };
    let g = gw.generation().await;
    write_version(
        "2026_11_23_01_00_00.000000001",
        "sklearn-iris-predictor-00001",
    );
    std::os::unix::fs::symlink("..data/iris.yaml", dir.join("iris.yaml")).unwrap();
    gw.wait_routes(g, WITHIN, |r| {
        entry_revisions(r, IRIS) == ["sklearn-iris-predictor-00001"]
    })
    .await;
    assert_eq!(served_by(&gw).await, "a");

    let g = gw.generation().await;
    write_version(
        "2026_11_23_01_05_00.000000002",
        "sklearn-iris-predictor-00002",
    );
    std::fs::remove_dir_all(dir.join("..2026_11_23_01_00_00.000000001")).unwrap();
    gw.wait_routes(g, WITHIN, |r| {
        entry_revisions(r, IRIS) == ["sklearn-iris-predictor-00002"]
    })
    .await;
    assert_eq!(served_by(&gw).await, "b");
}

/// SIGHUP forces a reload even when no file changed.
#[tokio::test]
async fn sighup_reloads() {
    let Two { a: _a, b: _b, gw } = two_revisions().await;
    let g = gw.generation().await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    gw.wait_routes(g, WITHIN, |_| true).await;
    assert_eq!(
        served_by(&gw).await,
        "a",
        "the gateway survives SIGHUP and keeps serving"
    );
}

/// A file that does not parse and an object that does not validate are reported with file,
/// object and field; their last good routes keep serving; other objects still update.
#[tokio::test]
async fn bad_updates_keep_last_good_routes() {
    let Two { a: _a, b: _b, gw } = two_revisions().await;
    let dir = gw.routes_dir();
    let other =
        |rev: &str| Isvc::new("other", "kserve-test", vec![traffic(rev, 100, None, true)]).yaml();
    std::fs::write(
        dir.join("other.yaml"),
        other("sklearn-iris-predictor-00001"),
    )
    .unwrap();
    let g = gw.generation().await;
    gw.wait_routes(g, WITHIN, |r| {
        !r["hosts"]["other.kserve-test.example.com"].is_null()
    })
    .await;

    // Syntax error in iris.yaml; a good change to other.yaml in the same moment.
    let g = gw.generation().await;
    write_atomic(
        &dir,
        "iris.yaml",
        "apiVersion: serving.kserve.io/v1beta1\nkind: [unclosed\n",
    );
    write_atomic(&dir, "other.yaml", &other("sklearn-iris-predictor-00002"));
    let r = gw
        .wait_routes(g, WITHIN, |r| {
            entry_revisions(r, "other.kserve-test.example.com") == ["sklearn-iris-predictor-00002"]
                && !r["errors"].as_array().unwrap().is_empty()
        })
        .await;
    let err = &r["errors"][0];
    assert!(
        err["source"].as_str().unwrap().ends_with("iris.yaml"),
        "{err}"
    );
    assert_eq!(entry_revisions(&r, IRIS), ["sklearn-iris-predictor-00001"]);
    assert_eq!(served_by(&gw).await, "a");

    // Parses, but a percent is out of range: the object and field are named.
    let g = gw.generation().await;
    let bad = iris("sklearn-iris-predictor-00002").replace("percent: 100", "percent: 120");
    write_atomic(&dir, "iris.yaml", &bad);
    let r = gw
        .wait_routes(g, WITHIN, |r| {
            r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["object"] == "kserve-test/sklearn-iris")
        })
        .await;
    let err = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["object"] == "kserve-test/sklearn-iris")
        .unwrap();
    assert_eq!(
        err["field"], "status.components.predictor.traffic[0].percent",
        "{err}"
    );
    assert_eq!(entry_revisions(&r, IRIS), ["sklearn-iris-predictor-00001"]);
    assert_eq!(served_by(&gw).await, "a");
    let m = gw.metrics().await;
    assert!(
        m.contains("modelgate_reloads_total{result=\"failure\"}"),
        "{m}"
    );
}

/// Under continuous load, 50 rewrites of the manifests (every fifth one invalid) lose no
/// request, and every response comes from a revision of the old or the new table.
#[tokio::test]
async fn reload_under_load_loses_nothing() {
    let Two { a, b, gw } = two_revisions().await;
    let dir = gw.routes_dir();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, sent) = (
            gw.client.clone(),
            gw.url("/v1/models/sklearn-iris:predict"),
            stop.clone(),
            sent.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = match client
                    .post(&url)
                    .header("host", IRIS)
                    .body(r#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#)
                    .send()
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return Err(format!("request failed: {e}")),
                };
                if r.status() != 200 {
                    return Err(format!("status {}: {:?}", r.status(), r.text().await));
                }
                seen.push(
                    r.headers()["x-modelgate-revision"]
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
                r.bytes().await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(seen)
        }));
    }
    for i in 0..50 {
        let g = gw.generation().await;
        let text = if i % 5 == 4 {
            "kind: InferenceService\nmetadata: [this is not valid\n".to_string()
        } else if i % 2 == 0 {
            iris("sklearn-iris-predictor-00002")
        } else {
            iris("sklearn-iris-predictor-00001")
        };
        write_atomic(&dir, "iris.yaml", &text);
        gw.wait_routes(g, Duration::from_secs(5), |_| true).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let seen = match c.await.unwrap() {
            Ok(seen) => seen,
            Err(e) => panic!(
                "no request may fail during a reload: {e}\nlog:\n{}",
                gw.log()
            ),
        };
        total += seen.len();
        assert!(seen
            .iter()
            .all(|r| r == "sklearn-iris-predictor-00001" || r == "sklearn-iris-predictor-00002"));
    }
    assert!(total >= 50, "the load ran through the reloads: {total}");
    assert_eq!(a.hits() + b.hits(), total);
    assert!(a.hits() > 0 && b.hits() > 0);
}

/// A whole canary rollout, as the KServe controller writes status: create, canary 20 %,
/// promote, canary again, roll back to 0 %. The gateway follows status at every step.
#[tokio::test]
async fn canary_rollout_walk() {
    let ups = [
        Upstream::start("r1").await,
        Upstream::start("r2").await,
        Upstream::start("r3").await,
    ];
    let rev = |n: usize| format!("sklearn-iris-predictor-0000{n}");
    let gw = Gateway::start(
        &[("iris.yaml", iris(&rev(1)))],
        Options {
            endpoints: (1..=3)
                .map(|n| {
                    (
                        format!("kserve-test/{}", rev(n)),
                        vec![format!("\"{}\"", ups[n - 1].endpoint())],
                    )
                })
                .collect(),
            ..Default::default()
        },
    )
    .await;
    let step = |canary: Option<u32>, t: Vec<crate::support::manifest::Traffic>| {
        let mut i = Isvc::new("sklearn-iris", "kserve-test", t);
        i.canary_percent = canary;
        i.yaml()
    };
    let steps = [
        (
            "canary 20",
            step(
                Some(20),
                vec![
                    traffic(&rev(2), 20, Some("latest"), true),
                    traffic(&rev(1), 80, Some("prev"), false),
                ],
            ),
            vec![(rev(2), 20), (rev(1), 80)],
        ),
        (
            "promote",
            step(None, vec![traffic(&rev(2), 100, Some("latest"), true)]),
            vec![(rev(2), 100)],
        ),
        (
            "canary again",
            step(
                Some(20),
                vec![
                    traffic(&rev(3), 20, Some("latest"), true),
                    traffic(&rev(2), 80, Some("prev"), false),
                ],
            ),
            vec![(rev(3), 20), (rev(2), 80)],
        ),
        (
            "roll back",
            step(
                Some(0),
                vec![
                    traffic(&rev(3), 0, Some("latest"), true),
                    traffic(&rev(2), 100, Some("prev"), false),
                ],
            ),
            vec![(rev(2), 100)],
        ),
    ];
    for (name, yaml, want) in steps {
        let g = gw.generation().await;
        write_atomic(&gw.routes_dir(), "iris.yaml", &yaml);
        let r = gw.wait_routes(g, WITHIN, |_| true).await;
        let got: Vec<(String, u64)> = r["hosts"][IRIS]["entry"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["revision"].as_str().unwrap().to_string(),
                    b["weight"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut got = got;
        got.sort();
        let mut want: Vec<(String, u64)> = want.into_iter().map(|(r, w)| (r, w as u64)).collect();
        want.sort();
        assert_eq!(got, want, "{name}");
        let counts = crate::routing::split(&gw, IRIS, 500, None).await;
        for (revision, _) in &want {
            assert!(
                counts.contains_key(revision),
                "{name}: {revision} got no traffic: {counts:?}"
            );
        }
        assert_eq!(counts.len(), want.len(), "{name}: {counts:?}");
    }
    // After the rollback the failed canary is still reachable on its tag host.
    let r = gw
        .get("latest-sklearn-iris-predictor.kserve-test.example.com", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-upstream"], "r3");
}

/// A file truncated and then written in several steps (200 ms apart, as an editor or `cat >`
/// over a slow pipe does) is never applied half-written: a file of two objects, rewritten in
/// place one object at a time, never loses the second object while the first is written, so no
/// request to it sees a 404, and the whole new text applies once it has settled. An emptied
/// file is an error that keeps its routes; deleting the file removes them.
#[tokio::test]
async fn files_written_in_place_are_applied_whole() {
    use std::io::Write;
    const OTHER: &str = "other.kserve-test.example.com";
    let Two { a: _a, b: _b, gw } = two_revisions().await;
    let dir = gw.routes_dir();
    let other =
        |rev: &str| Isvc::new("other", "kserve-test", vec![traffic(rev, 100, None, true)]).yaml();
    let both = |rev: &str| [iris(rev), other(rev)];
    let g = gw.generation().await;
    write_atomic(
        &dir,
        "iris.yaml",
        &both("sklearn-iris-predictor-00001").join("---\n"),
    );
    gw.wait_routes(g, WITHIN, |r| !r["hosts"][OTHER].is_null())
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let not_ok = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, not_ok, sent) = (stop.clone(), not_ok.clone(), sent.clone());
        let client = gw.get(OTHER, "/");
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client.try_clone().unwrap().send().await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                if r.status() != 200 {
                    not_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let g = gw.generation().await;
    let [first, second] = both("sklearn-iris-predictor-00002");
    let mut f = std::fs::File::create(dir.join("iris.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for piece in [first, format!("---\n{second}")] {
        f.write_all(piece.as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(f);
    gw.wait_routes(g, Duration::from_secs(2), |r| {
        entry_revisions(r, IRIS) == ["sklearn-iris-predictor-00002"]
            && entry_revisions(r, OTHER) == ["sklearn-iris-predictor-00002"]
    })
    .await;
    assert_eq!(served_by(&gw).await, "b");

    // Emptied: an error, the routes stay, the failure is counted.
    let g = gw.generation().await;
    std::fs::File::create(dir.join("iris.yaml")).unwrap();
    let r = gw
        .wait_routes(g, Duration::from_secs(2), |r| {
            r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["message"].as_str().unwrap().starts_with("empty"))
        })
        .await;
    assert_eq!(entry_revisions(&r, OTHER), ["sklearn-iris-predictor-00002"]);
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 10);
    assert_eq!(
        not_ok.load(Ordering::Relaxed),
        0,
        "requests failed while the file was written"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("modelgate_reloads_total{result=\"failure\"}"),
        "{m}"
    );

    let g = gw.generation().await;
    std::fs::remove_file(dir.join("iris.yaml")).unwrap();
    gw.wait_routes(g, WITHIN, |r| r["hosts"][OTHER].is_null())
        .await;
}
