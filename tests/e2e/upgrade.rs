//! Zero-downtime upgrade of one process: a gateway started with `--upgrade` takes the listening
//! sockets over from the running one (SIGQUIT), which finishes what it has in flight and exits.

use crate::support::gateway::{listening_ports, one_revision, Gateway, BIN};
use crate::support::upstream::Upstream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

/// Under continuous load (a new connection per request, so every accept is tested), a second
/// gateway takes the sockets over: no connection is refused, no request fails, and a slow
/// request in flight on the old process is answered by it before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_loses_nothing() {
    let up = Upstream::start("iris").await;
    let sockets = tempfile::tempdir().unwrap();
    let sock = sockets.path().join("upgrade.sock");
    let (manifests, mut opts) = one_revision(&up.endpoint(), "");
    opts.shutdown = Some(format!(
        "{{grace_period: 0s, drain_timeout: 10s, upgrade_socket: \"{}\"}}",
        sock.display()
    ));
    let mut old = Gateway::start(&manifests, opts).await;

    // The new process's config: the old one's, with the ports it got, so that the sockets it
    // inherits are the ones it is configured for.
    let config = std::fs::read_to_string(old.dir.path().join("modelgate.yaml")).unwrap();
    let config = config
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{}", old.port), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{}", old.admin_port), 1);
    let new_config = old.dir.path().join("new.yaml");
    std::fs::write(&new_config, config).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let (client, url) = (client.clone(), old.url("/v1/models/sklearn-iris"));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client.get(&url).header("host", IRIS).send().await;
                sent.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => {
                        eprintln!("status {}", r.status());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("error {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // A slow request the old process must finish.
    let slow = {
        let req = old
            .get(IRIS, "/v1/models/sklearn-iris")
            .header("x-test-delay-ms", "1500");
        tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
    };
    while up.requests().len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let new_log = old.dir.path().join("new.log");
    let mut new = Command::new(BIN)
        .args(["--upgrade", "--config"])
        .arg(&new_config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_log).unwrap())
        .spawn()
        .unwrap();
    // The new process waits for the sockets on the upgrade socket; then the old one is told.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no upgrade socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    old.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = || std::fs::read_to_string(&new_log).unwrap_or_default();
    while listening_ports(&log()).is_none() {
        assert!(
            Instant::now() < deadline,
            "the new gateway did not take over; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        listening_ports(&log()),
        Some((old.port, old.admin_port)),
        "the new process listens where the old one did"
    );
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "in flight on the old process"
    );
    let status = old.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "old process: {status}\n{}", old.log());
    // The old process is gone: what is served now, the new one serves.
    let before = sent.load(Ordering::Relaxed);
    while sent.load(Ordering::Relaxed) < before + 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let _ = new.kill();
    let _ = new.wait();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed of {} requests; new log:\n{}",
        sent.load(Ordering::Relaxed),
        log()
    );
}
