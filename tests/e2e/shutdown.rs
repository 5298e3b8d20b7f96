//! Graceful shutdown, as Kubernetes does it: SIGTERM while traffic still arrives, then a drain.

use crate::support::gateway::{one_revision, Gateway};
use crate::support::upstream::Upstream;
use crate::support::RawClient;
use std::time::{Duration, Instant};

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

/// After SIGTERM the gateway keeps accepting and serving for the grace period; then it stops
/// accepting, closes idle keep-alive connections, lets the requests in flight finish (each
/// answered with `Connection: close`) and exits 0 as soon as they have, before the drain
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_through_the_grace_period_then_drains() {
    let up = Upstream::start("iris").await;
    let (m, mut o) = one_revision(&up.endpoint(), "");
    o.shutdown = Some("{grace_period: 2s, drain_timeout: 20s}".into());
    let mut gw = Gateway::start(&m, o).await;
    let port = gw.port;
    // An idle kept-alive connection.
    let mut idle = RawClient::connect(port);
    let resp = idle.exchange(format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Ten requests in flight, each on a connection of its own, answered in 4 s.
    let slow: Vec<_> = (0..10)
        .map(|_| {
            tokio::task::spawn_blocking(move || {
                let mut c = RawClient::connect(port);
                c.exchange(
                    format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nx-test-delay-ms: 4000\r\n\r\n")
                        .as_bytes(),
                )
            })
        })
        .collect();
    while up.hits() < 11 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sigterm = Instant::now();
    gw.signal("TERM");

    // The grace period: new connections are accepted and served.
    let mut during = 0;
    while sigterm.elapsed() < Duration::from_millis(1500) {
        let mut c = RawClient::connect(port);
        let resp = c.exchange(
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "during the grace period: {resp}"
        );
        during += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(during > 5, "{during}");

    // Then no new connection, and the idle one is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting after the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sigterm.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        sigterm.elapsed()
    );
    assert!(
        idle.is_closed(),
        "the idle keep-alive connection is closed at the drain"
    );

    // Every request in flight finishes, told to close its connection.
    for s in slow {
        let resp = s.await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("\r\nconnection: close"),
            "{resp}"
        );
    }
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        sigterm.elapsed() < Duration::from_secs(10),
        "exited once drained, not at the drain timeout: {:?}",
        sigterm.elapsed()
    );
    assert!(
        gw.log().contains("drained: no request in flight"),
        "{}",
        gw.log()
    );
}

/// Requests still in flight at the drain timeout are cut, and the log says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_cuts_what_is_left() {
    let up = Upstream::start("iris").await;
    let (m, mut o) = one_revision(&up.endpoint(), "");
    o.shutdown = Some("{grace_period: 0s, drain_timeout: 1s}".into());
    let mut gw = Gateway::start(&m, o).await;
    let port = gw.port;
    let slow: Vec<_> = (0..3)
        .map(|_| {
            tokio::task::spawn_blocking(move || {
                let mut c = RawClient::connect(port);
                c.exchange(
                    format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nx-test-delay-ms: 30000\r\n\r\n")
                        .as_bytes(),
                )
            })
        })
        .collect();
    while up.hits() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sigterm = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let took = sigterm.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), "", "cut without a response");
    }
    assert!(
        gw.log().contains("cutting the requests still in flight") && gw.log().contains("cut=3"),
        "{}",
        gw.log()
    );
}
