//! HTTP/2 over TLS against hostile clients, with a raw frame client (a client library never
//! opens more streams than allowed, nor resets every request it sends).

use crate::support::gateway::{metric, Gateway, Options};
use crate::support::h2raw::{Frame, CANCEL, GOAWAY, H2, HEADERS, REFUSED_STREAM, RST_STREAM};
use crate::support::manifest::{traffic, Isvc};
use crate::support::upstream::Upstream;
use crate::tls::Ca;
use std::time::{Duration, Instant};

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

/// The gateway with a TLS listener (HTTP/2 by ALPN); `more` is top-level configuration.
async fn tls_gateway(up: &Upstream, ca: &Ca, more: &str) -> (Gateway, u16) {
    let (pem, key, _) = ca.leaf(&[IRIS]);
    let gw = Gateway::start(
        &[(
            "iris.yaml",
            Isvc::new(
                "sklearn-iris",
                "kserve-test",
                vec![traffic("sklearn-iris-predictor-00001", 100, None, true)],
            )
            .yaml(),
        )],
        Options {
            endpoints: vec![(
                "kserve-test/sklearn-iris-predictor-00001".into(),
                vec![format!("\"{}\"", up.endpoint())],
            )],
            extra: format!(
                "  - address: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {{cert: iris.crt, key: iris.key}}\n{more}"
            ),
            files: vec![("iris.crt".into(), pem), ("iris.key".into(), key)],
            extra_listeners: true,
            ..Default::default()
        },
    )
    .await;
    let tls_port = gw.ports[1];
    (gw, tls_port)
}

/// At most 100 streams run at once on a connection: the ones over that are refused with
/// REFUSED_STREAM and never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused() {
    let ca = Ca::new();
    let up = Upstream::start("iris").await;
    let (gw, port) = tls_gateway(&up, &ca, "").await;
    let mut h2 = H2::connect(port, &ca.pem, IRIS).await;
    // Let the SETTINGS exchange finish first.
    while let Some(f) = h2.next(Duration::from_millis(300)).await {
        let _ = f;
    }
    let mut frames = Vec::new();
    for i in 0..150u32 {
        frames.extend(H2::get(
            2 * i + 1,
            IRIS,
            "/v1/models/sklearn-iris",
            &[("x-test-hold", "1")],
            true,
        ));
    }
    assert!(h2.send(&frames).await);
    let (mut refused, mut answered) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused + answered < 150 && Instant::now() < deadline {
        match h2.next(Duration::from_secs(2)).await {
            Some(f @ Frame { ty: RST_STREAM, .. }) if f.error_code() == Some(REFUSED_STREAM) => {
                // The streams over the limit are the last ones opened.
                assert!(f.stream > 200, "stream {} refused", f.stream);
                refused += 1
            }
            Some(Frame { ty: HEADERS, .. }) => answered += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!((answered, refused), (100, 50), "100 served, 50 refused");
    assert_eq!(up.hits(), 100);
    for _ in 0..100 {
        up.release();
    }
    drop(gw);
}

/// A client that resets every stream right after opening it (the rapid-reset attack) has its
/// connection closed with GOAWAY; fewer than 1 % of its streams reach the upstream, and another
/// client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection() {
    const STREAMS: u32 = 2000;
    let ca = Ca::new();
    let up = Upstream::start("iris").await;
    let (gw, port) = tls_gateway(&up, &ca, "").await;
    let mut h2 = H2::connect(port, &ca.pem, IRIS).await;
    while let Some(f) = h2.next(Duration::from_millis(300)).await {
        let _ = f;
    }
    let mut sent = 0;
    let mut goaway = None;
    'flood: for batch in 0..STREAMS / 50 {
        let mut frames = Vec::new();
        for i in 0..50 {
            let id = 2 * (batch * 50 + i) + 1;
            frames.extend(H2::get(id, IRIS, "/v1/models/sklearn-iris", &[], true));
            frames.extend(H2::rst(id, CANCEL));
        }
        if !h2.send(&frames).await {
            break;
        }
        sent += 50;
        while let Some(f) = h2.next(Duration::from_millis(1)).await {
            if f.ty == GOAWAY {
                goaway = f.error_code();
                break 'flood;
            }
        }
    }
    while goaway.is_none() {
        match h2.next(Duration::from_secs(5)).await {
            Some(f) if f.ty == GOAWAY => goaway = f.error_code(),
            Some(_) => {}
            None => break,
        }
    }
    eprintln!(
        "flood: sent {sent}, upstream {}, goaway {goaway:?}",
        up.hits()
    );
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM after {sent} streams"
    );
    assert!(
        up.hits() * 100 < sent as usize,
        "{} of {sent} reset streams reached the upstream",
        up.hits()
    );
    // Another client is served all along.
    let r = gw
        .get(IRIS, "/v1/models/sklearn-iris")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = gw.metrics().await;
    assert!(
        metric(&m, "modelgate_h2_reset_floods_total")
            + metric(&m, "modelgate_h2_premature_resets_total")
            > 0.0
            || goaway == Some(0xb),
        "{m}"
    );
}

/// Envoy's premature-reset rule, for resets that come after the gateway took the stream: once
/// a connection has opened 100 streams, more than half of them reset by the client within a
/// second of opening closes it with GOAWAY, and it is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premature_resets_close_the_connection() {
    let ca = Ca::new();
    let up = Upstream::start("iris").await;
    let (gw, port) = tls_gateway(&up, &ca, "").await;
    let mut h2 = H2::connect(port, &ca.pem, IRIS).await;
    while let Some(f) = h2.next(Duration::from_millis(300)).await {
        let _ = f;
    }
    let mut opened = 0u32;
    let mut goaway = None;
    'rounds: for round in 0..30u32 {
        let ids: Vec<u32> = (0..10).map(|i| 2 * (round * 10 + i) + 1).collect();
        let mut frames = Vec::new();
        for id in &ids {
            frames.extend(H2::get(
                *id,
                IRIS,
                "/",
                &[("x-test-delay-ms", "5000")],
                true,
            ));
        }
        if !h2.send(&frames).await {
            break;
        }
        opened += 10;
        // The upstream has them: the gateway took these streams.
        let deadline = Instant::now() + Duration::from_secs(5);
        while up.hits() < opened as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut resets = Vec::new();
        for id in &ids {
            resets.extend(H2::rst(*id, CANCEL));
        }
        if !h2.send(&resets).await {
            break;
        }
        while let Some(f) = h2.next(Duration::from_millis(50)).await {
            if f.ty == GOAWAY {
                goaway = f.error_code();
                break 'rounds;
            }
        }
    }
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM after {opened} streams"
    );
    assert!(
        (100..=120).contains(&opened),
        "closed once 100 streams were open: {opened}"
    );
    let m = gw
        .wait_metrics(|m| m.contains("modelgate_h2_reset_floods_total 1"))
        .await;
    assert!(
        metric(&m, "modelgate_h2_premature_resets_total") >= 50.0,
        "{m}"
    );
}

/// An HTTP/2 request body that stalls longer than `body_idle_timeout` is answered 408 (pingora's
/// HTTP/2 session has no read timeout: this one is the gateway's), and the upstream's copy of
/// the request is cut off where the body stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_aborted() {
    let ca = Ca::new();
    let up = Upstream::start("iris").await;
    let (gw, port) = tls_gateway(&up, &ca, "downstream: {body_idle_timeout: 1s}\n").await;
    let mut h2 = H2::connect(port, &ca.pem, IRIS).await;
    let mut frames = H2::request(
        1,
        "POST",
        IRIS,
        "/v1/models/sklearn-iris:predict",
        &[("content-length", "10")],
        false,
    );
    frames.extend(H2::data(1, b"hello", false));
    assert!(h2.send(&frames).await);
    let t = Instant::now();
    let answered = loop {
        match h2.next(Duration::from_secs(5)).await {
            Some(Frame {
                ty: HEADERS,
                stream: 1,
                ..
            }) => break true,
            Some(_) => {}
            None => break false,
        }
    };
    assert!(answered, "no answer to the stalled stream");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "answered before the timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.log().contains("status=408") {
        assert!(Instant::now() < deadline, "no 408 logged:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        up.wait_requests(Duration::from_secs(5)).await[0].body_len,
        5
    );
}
