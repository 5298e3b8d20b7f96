//! The Kubernetes API as the route source, against the fake API server (no real one can run
//! here). The fake is checked with a real client first: `kubectl` lists, pages and watches it.

use crate::auth::{auth_options, browser_login, manifests, Setup, USER};
use crate::support::gateway::{metric, Gateway, Options};
use crate::support::kube::{FakeApiServer, Gone, KSERVE};
use crate::support::manifest::{traffic, Isvc};
use crate::support::oidc::OidcProvider;
use crate::support::upstream::Upstream;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const A: &str = "model-a.kserve-test.example.com";
const B: &str = "model-b.kserve-test.example.com";

fn isvc(name: &str, revisions: &[(&str, u32)]) -> Value {
    let n = revisions.len();
    Isvc::new(
        name,
        "kserve-test",
        revisions
            .iter()
            .enumerate()
            .map(|(i, (rev, pct))| traffic(rev, *pct, None, i == n - 1))
            .collect(),
    )
    .json()
}

/// Options for a gateway that takes its routes from `api` only (`routes` adds keys to
/// `routes.kubernetes`).
fn from_api(api: &FakeApiServer, mut opts: Options, routes: &str) -> Options {
    opts.files
        .push(("kubeconfig.yaml".into(), api.kubeconfig()));
    opts.no_directory = true;
    opts.routes = format!("kubernetes: {{kubeconfig: kubeconfig.yaml{routes}}}");
    opts
}

fn endpoints(list: &[(&str, &Upstream)]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(rev, up)| {
            (
                format!("kserve-test/{rev}"),
                vec![format!("\"{}\"", up.endpoint())],
            )
        })
        .collect()
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let r = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Polls until `check` holds on `/readyz`'s body.
async fn wait_readyz(gw: &Gateway, within: Duration, check: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = readyz(gw).await;
        if check(code, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never matched: {code} {body:#}\nlog:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests to `host` every few milliseconds until stopped; counts what was not a 200.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(gw: &Gateway, host: &'static str) -> Load {
        let (client, url) = (gw.client.clone(), gw.url("/v1/models/m"));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = client.get(&url).header("host", host).send().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => failed.lock().unwrap().push(r.status().to_string()),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        });
        Load {
            stop,
            sent,
            failed,
            task,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failed = self.failed.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), failed)
    }
}

/// kubectl, the real client, against the fake: discovery, a list across namespaces as YAML, a
/// paged list (`--chunk-size`: `limit` and `continue`), one object, and a watch that prints
/// the list and then a change made after it started.
// Several threads: kubectl runs as a blocking child process while the fake serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_fake() {
    let api = FakeApiServer::start().await;
    api.apply(isvc("model-a", &[("model-a-predictor-00001", 100)]));
    api.apply(isvc("model-b", &[("model-b-predictor-00001", 100)]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .args(args)
            .output()
            .expect("kubectl is installed");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let resource = "inferenceservices.serving.kserve.io";
    let yaml = kubectl(&["get", resource, "-A", "-o", "yaml"]);
    let list: Value = serde_yaml::from_str(&yaml).unwrap();
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["model-a", "model-b"]);
    assert_eq!(list["items"][0]["metadata"]["resourceVersion"], "1");

    let before = api.requests().len();
    let names = kubectl(&["get", resource, "-A", "--chunk-size=1", "-o", "name"]);
    assert_eq!(
        names,
        "inferenceservice.serving.kserve.io/model-a\ninferenceservice.serving.kserve.io/model-b\n"
    );
    let pages = &api.requests()[before..];
    assert!(
        pages.len() == 2 && pages[1].contains("continue="),
        "{pages:?}"
    );

    let one = kubectl(&[
        "get",
        resource,
        "-n",
        "kserve-test",
        "model-b",
        "-o",
        "json",
    ]);
    let one: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(
        one["status"]["url"],
        "http://model-b.kserve-test.example.com"
    );

    // A watch: kubectl lists, then watches from the list's version.
    let mut watch = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .args(["get", resource, "-A", "--watch", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    api.wait_watchers(1).await;
    api.apply(isvc("model-c", &[("model-c-predictor-00001", 100)]));
    let mut seen = String::new();
    while !seen.contains("model-c") {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("kubectl --watch printed no new object ({e}): {seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.starts_with("inferenceservice.serving.kserve.io/model-a\n"),
        "{seen}"
    );
    let watches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.contains("watch=true"))
        .collect();
    assert!(
        watches.iter().any(|r| r.contains("resourceVersion=2")),
        "{watches:?}"
    );
}

/// The gateway follows the API while serving the whole time: it is ready only after the first
/// complete list (paged), then adds, canary updates and deletes reach the table (the time each
/// took is printed; the second it must stay under is measured in bench/run.sh, not here); a dropped watch
/// resumes from the last bookmark without a new list; an outage keeps the last table serving and
/// shows on `/readyz`, `/routes` and `/metrics`; after the outage, a watch from a compacted
/// version gets 410, as an ERROR event and as the HTTP status, and each time the relist removes
/// what was deleted while the gateway was away. Not one request fails.
#[tokio::test]
async fn routes_follow_the_api() {
    let api = FakeApiServer::start().await;
    let (a1, a2, b1) = (
        Upstream::start("a1").await,
        Upstream::start("a2").await,
        Upstream::start("b1").await,
    );
    // More objects than a page (kube's watcher asks for 500), so the first list has pages.
    for i in 0..520 {
        api.apply(isvc(
            &format!("bulk-{i}"),
            &[(&format!("bulk-{i}-predictor-00001"), 100)],
        ));
    }
    api.set_outage(true);
    api.apply(isvc("model-a", &[("model-a-predictor-00001", 100)]));
    let opts = Options {
        endpoints: endpoints(&[
            ("model-a-predictor-00001", &a1),
            ("model-a-predictor-00002", &a2),
            ("model-b-predictor-00001", &b1),
        ]),
        // The bulk objects' revisions go to the in-process demo server (no DNS names).
        extra: "demo: true\n".into(),
        ..Default::default()
    };
    let gw = Gateway::start_unready(&[], from_api(&api, opts, "")).await;
    // Not ready while the API server cannot be reached, and /readyz says why.
    let body = wait_readyz(&gw, Duration::from_secs(20), |code, b| {
        code == 503 && b["sources"]["kubernetes"]["last_error"].is_string()
    })
    .await;
    assert_eq!(body["status"], "routes not loaded yet");
    assert_eq!(body["sources"]["kubernetes"]["synced"], false);
    assert!(
        body["sources"]["kubernetes"]["location"]
            .as_str()
            .unwrap()
            .starts_with(&api.url),
        "{body}"
    );
    api.set_outage(false);
    gw.wait_ready().await;
    let lists: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| !r.contains("watch=true"))
        .collect();
    assert!(lists.iter().any(|r| r.contains("continue=")), "{lists:?}");

    let load = Load::start(&gw, A);
    let r = gw.routes().await;
    assert_eq!(r["sources"]["kubernetes"]["objects"], 521);
    assert!(r["hosts"][A].is_object(), "{r:#}");
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r:#}");

    // An add, within a second.
    let g = gw.generation().await;
    let t = Instant::now();
    api.apply(isvc("model-b", &[("model-b-predictor-00001", 100)]));
    gw.wait_routes(g, Duration::from_secs(10), |r| r["hosts"][B].is_object())
        .await;
    eprintln!("an add reached the table in {:?}", t.elapsed());
    let r = gw.get(B, "/v1/models/m").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(b1.hits(), 1);

    // A canary update: 50 % to a new revision.
    let g = gw.generation().await;
    api.apply(isvc(
        "model-a",
        &[
            ("model-a-predictor-00001", 50),
            ("model-a-predictor-00002", 50),
        ],
    ));
    gw.wait_routes(g, Duration::from_secs(10), |r| {
        r["hosts"][A]
            .to_string()
            .contains("model-a-predictor-00002")
    })
    .await;
    let before = a2.hits();
    for _ in 0..40 {
        assert_eq!(
            gw.get(A, "/v1/models/m").send().await.unwrap().status(),
            200
        );
    }
    assert!(a2.hits() > before, "the canary gets traffic");

    // A delete.
    let g = gw.generation().await;
    api.delete(KSERVE, "kserve-test", "model-b");
    gw.wait_routes(g, Duration::from_secs(10), |r| r["hosts"][B].is_null())
        .await;
    assert_eq!(
        gw.get(B, "/v1/models/m").send().await.unwrap().status(),
        404
    );

    // A bookmark moves the watch's version past changes it does not select (a Seldon object);
    // a closed watch resumes from there, with no new list.
    api.apply(
        json!({"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
        "metadata": {"name": "other", "namespace": "kserve-test"}, "spec": {"predictors": []}}),
    );
    let bookmark = api.bookmark();
    let requests = api.requests().len();
    // The end comes after the bookmark on the same stream, so the gateway has read it.
    api.close_watches();
    api.wait_watchers(1).await;
    let after = api.requests()[requests..].to_vec();
    assert_eq!(after.len(), 1, "one watch request, no list: {after:?}");
    assert!(
        after[0].contains("watch=true")
            && after[0]
                .split(['?', '&'])
                .any(|p| p == format!("resourceVersion={bookmark}")),
        "resumed from the bookmark {bookmark}: {after:?}"
    );
    assert!(after[0].contains("allowWatchBookmarks=true"), "{after:?}");

    // An outage: the last table serves; the state shows everywhere.
    api.set_outage(true);
    let body = wait_readyz(&gw, Duration::from_secs(20), |_, b| {
        b["sources"]["kubernetes"]["up"] == false
    })
    .await;
    assert_eq!(
        body["status"], "ready",
        "ready stays: the last table serves"
    );
    assert!(
        body["sources"]["kubernetes"]["last_error"].is_string(),
        "{body}"
    );
    let r = gw.routes().await;
    assert_eq!(r["sources"]["kubernetes"]["up"], false);
    assert!(r["sources"]["kubernetes"]["last_sync"].is_string());
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "modelgate_route_source_up{source=\"kubernetes\"}"),
        0.0
    );
    assert!(
        metric(
            &m,
            "modelgate_route_source_errors_total{source=\"kubernetes\"}"
        ) >= 1.0
    );
    for _ in 0..10 {
        assert_eq!(
            gw.get(A, "/v1/models/m").send().await.unwrap().status(),
            200
        );
    }

    // Changes while away are compacted: the watch from the old version gets 410 (an ERROR
    // event), the gateway relists, and what was deleted meanwhile disappears.
    for (gone, name) in [(Gone::Event, "bulk-1"), (Gone::Status, "bulk-2")] {
        api.gone_as(gone);
        api.set_outage(true);
        let lists = metric(
            &gw.metrics().await,
            "modelgate_route_source_lists_total{source=\"kubernetes\"}",
        );
        let g = gw.generation().await;
        api.delete(KSERVE, "kserve-test", name);
        api.compact();
        api.set_outage(false);
        let host = format!("{name}.kserve-test.example.com");
        gw.wait_routes(g, Duration::from_secs(20), |r| r["hosts"][&host].is_null())
            .await;
        let m = gw.metrics().await;
        assert!(
            metric(
                &m,
                "modelgate_route_source_lists_total{source=\"kubernetes\"}"
            ) > lists,
            "{gone:?}: relisted"
        );
        assert_eq!(
            metric(&m, "modelgate_route_source_up{source=\"kubernetes\"}"),
            1.0,
            "{}",
            gw.log()
        );
    }

    // A watch that fails to restart for a moment, then resumes (no relist, and no event after
    // it to say so), shows as up again. (A cut stream alone is no error: kube resumes it.)
    let lists = metric(
        &gw.metrics().await,
        "modelgate_route_source_lists_total{source=\"kubernetes\"}",
    );
    api.set_outage(true);
    wait_readyz(&gw, Duration::from_secs(20), |_, b| {
        b["sources"]["kubernetes"]["up"] == false
    })
    .await;
    api.set_outage(false);
    api.wait_watchers(1).await;
    wait_readyz(&gw, Duration::from_secs(20), |_, b| {
        b["sources"]["kubernetes"]["up"] == true
    })
    .await;
    assert_eq!(
        metric(
            &gw.metrics().await,
            "modelgate_route_source_lists_total{source=\"kubernetes\"}"
        ),
        lists,
        "resumed, not relisted"
    );

    let (sent, failed) = load.finish().await;
    assert!(sent > 100, "{sent}");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
}

/// Only the configured namespaces and labels are watched; an object that gains the label
/// appears and one that loses it goes (the API server sends them as ADDED and DELETED).
#[tokio::test]
async fn namespaces_and_label_selector() {
    let api = FakeApiServer::start().await;
    let up = Upstream::start("up").await;
    let labelled = |name: &str, ns: &str, label: bool| {
        let mut o = Isvc::new(
            name,
            ns,
            vec![traffic(&format!("{name}-predictor-00001"), 100, None, true)],
        )
        .json();
        if label {
            o["metadata"]["labels"] = json!({"modelgate.io/expose": "true"});
        }
        o
    };
    api.apply(labelled("shown", "kserve-test", true));
    api.apply(labelled("unlabelled", "kserve-test", false));
    api.apply(labelled("elsewhere", "other", true));
    let opts = Options {
        endpoints: vec![(
            "kserve-test/shown-predictor-00001".into(),
            vec![format!("\"{}\"", up.endpoint())],
        )],
        ..Default::default()
    };
    let gw = Gateway::start(
        &[],
        from_api(
            &api,
            opts,
            ", namespaces: [kserve-test], label_selector: \"modelgate.io/expose=true\"",
        ),
    )
    .await;
    let r = gw.routes().await;
    let hosts: Vec<&String> = r["hosts"].as_object().unwrap().keys().collect();
    assert!(hosts.iter().all(|h| h.starts_with("shown")), "{hosts:?}");
    assert!(!hosts.is_empty());
    assert!(
        api.requests()
            .iter()
            .all(|q| q.starts_with(
                "/apis/serving.kserve.io/v1beta1/namespaces/kserve-test/inferenceservices?"
            ) && q.contains("labelSelector=modelgate.io%2Fexpose%3Dtrue")),
        "{:?}",
        api.requests()
    );
    let g = gw.generation().await;
    api.apply(labelled("unlabelled", "kserve-test", true));
    api.apply(labelled("shown", "kserve-test", false));
    let r = gw
        .wait_routes(g, Duration::from_secs(10), |r| {
            let hosts = r["hosts"].as_object().unwrap();
            hosts.keys().all(|h| h.starts_with("unlabelled")) && !hosts.is_empty()
        })
        .await;
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r:#}");
}

/// A directory for static routes and the API together: the gateway is not ready while only the
/// directory has been read; then both are routed, and a host both claim is reported (the older
/// object keeps it), not silently shadowed.
#[tokio::test]
async fn directory_and_api_together() {
    let api = FakeApiServer::start().await;
    let (s, a) = (
        Upstream::start("static").await,
        Upstream::start("api").await,
    );
    let mut taker = isvc("model-a", &[("model-a-predictor-00001", 100)]);
    taker["metadata"]["creationTimestamp"] = "2026-06-01T00:00:00Z".into();
    taker["status"]["url"] = "http://static.kserve-test.example.com".into();
    api.apply(taker);
    let static_isvc = Isvc::new(
        "static",
        "kserve-test",
        vec![traffic("static-predictor-00001", 100, None, true)],
    );
    let mut opts = from_api(
        &api,
        Options {
            endpoints: endpoints(&[
                ("static-predictor-00001", &s),
                ("model-a-predictor-00001", &a),
            ]),
            ..Default::default()
        },
        "",
    );
    opts.no_directory = false;
    api.set_outage(true);
    let gw = Gateway::start_unready(&[("static.yaml", static_isvc.yaml())], opts).await;
    let body = wait_readyz(&gw, Duration::from_secs(20), |_, b| {
        b["sources"]["directory"]["synced"] == true
            && b["sources"]["kubernetes"]["last_error"].is_string()
    })
    .await;
    assert_eq!(body["status"], "routes not loaded yet", "{body}");
    assert_eq!(readyz(&gw).await.0, 503);
    api.set_outage(false);
    gw.wait_ready().await;
    let r = gw.routes().await;
    assert_eq!(r["sources"]["directory"]["synced"], true, "{r:#}");
    assert_eq!(r["sources"]["kubernetes"]["synced"], true, "{r:#}");
    let errors = r["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["source"]
            == "api:/apis/serving.kserve.io/v1beta1/namespaces/kserve-test/inferenceservices/model-a"
            && e["message"].as_str().unwrap().contains("host static.kserve-test.example.com is already routed to kserve-test/static")),
        "{errors:#?}"
    );
    let host = "static.kserve-test.example.com";
    assert_eq!(
        gw.get(host, "/v1/models/m").send().await.unwrap().status(),
        200
    );
    assert_eq!((s.hits(), a.hits()), (1, 0));
    // The API object's other hosts are its own.
    assert!(
        r["hosts"]["model-a-predictor.kserve-test.example.com"].is_object(),
        "{r:#}"
    );
}

/// Two gateways watching the same API server, with the same cookie secret, accept each other's
/// sessions (a browser login through one, the next request through the other).
#[tokio::test]
async fn two_gateways_share_sessions() {
    let api = FakeApiServer::start().await;
    for (_, text) in manifests() {
        api.apply(serde_yaml::from_str(&text).unwrap());
    }
    let provider = OidcProvider::start(&[]).await;
    let (up, open_up, other_up) = (
        Upstream::start("iris").await,
        Upstream::start("open").await,
        Upstream::start("replica").await,
    );
    let gw = Gateway::start(
        &[],
        from_api(
            &api,
            auth_options(&provider.issuer(), 0, &up, &open_up, ""),
            "",
        ),
    )
    .await;
    let replica = Gateway::start(
        &[],
        from_api(
            &api,
            auth_options(&provider.issuer(), 0, &other_up, &open_up, ""),
            "",
        ),
    )
    .await;
    let s = Setup {
        provider,
        up,
        open_up,
        gw,
    };
    let (_, cookie) = browser_login(&s, USER).await;
    assert_eq!(crate::auth::session_status(&replica, &cookie).await, 200);
    assert_eq!(
        other_up
            .requests()
            .last()
            .unwrap()
            .header_all("kubeflow-userid"),
        [USER]
    );
}
