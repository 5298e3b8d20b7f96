//! Slow and greedy clients, with raw sockets: the head deadline, the body idle timeout, the
//! head limits enforced while the head arrives, the connection cap, and the memory a crowd of
//! unfinished heads may hold.

use crate::support::gateway::{one_revision, Gateway};
use crate::support::upstream::Upstream;
use crate::support::RawClient;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IRIS: &str = "sklearn-iris.kserve-test.example.com";

async fn gateway(up: &Upstream, downstream: &str) -> Gateway {
    let (m, o) = one_revision(&up.endpoint(), &format!("downstream: {{{downstream}}}\n"));
    Gateway::start(&m, o).await
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until EOF (or the read timeout) and returns what came.
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// A head must arrive whole within `header_timeout` of its first byte: a client sending one
/// byte at a time gets 408 and is closed, however steadily it sends; so are many at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_get_408() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up, "header_timeout: 1s").await;
    let port = gw.port;
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let s = connect(port);
                let reader = s.try_clone().unwrap();
                let trickle = std::thread::spawn(move || {
                    let mut s = s;
                    for b in format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nX-Slow: ")
                        .bytes()
                        .chain(std::iter::repeat(b'x'))
                    {
                        if s.write_all(&[b]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
                let mut reader = reader;
                let resp = read_all(&mut reader);
                let _ = trickle.join();
                resp
            })
        })
        .collect();
    for c in clients {
        let resp = c.join().unwrap();
        assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
        assert!(
            resp.contains("the request head did not arrive within 1 s"),
            "{resp}"
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "all closed at their deadline: {took:?}"
    );
    assert_eq!(up.hits(), 0);
}

/// A connection that never sends a byte is closed at the header deadline, without an answer;
/// so is a kept-alive connection that goes quiet after its response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up, "header_timeout: 1s").await;
    let t = Instant::now();
    let mut s = connect(gw.port);
    assert_eq!(read_all(&mut s), "", "closed without a word");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let mut c = RawClient::connect(gw.port);
    let resp = c.exchange(format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let t = Instant::now();
    assert!(c.is_closed());
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A request body that stalls longer than `body_idle_timeout` is answered 408, and the
/// upstream's copy of the request is cut off where the body stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_aborted() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up, "body_idle_timeout: 1s").await;
    let mut s = connect(gw.port);
    s.write_all(
        format!("POST / HTTP/1.1\r\nHost: {IRIS}\r\nContent-Length: 10\r\n\r\nhello").as_bytes(),
    )
    .unwrap();
    let t = Instant::now();
    let resp = read_all(&mut s);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("the request body stalled"), "{resp}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // The upstream saw the head and the five bytes, then its connection was dropped.
    assert_eq!(
        up.wait_requests(Duration::from_secs(5)).await[0].body_len,
        5
    );
}

/// The head limits are enforced while the head arrives: 431 for too many fields or too many
/// bytes (even before the head is complete), 414 for a long request line; the connection is
/// closed and nothing reaches the upstream. A head within every limit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_limits() {
    let up = Upstream::start("iris").await;
    let gw = gateway(
        &up,
        "max_request_head_bytes: 4096, max_header_fields: 20, max_request_line_bytes: 1024",
    )
    .await;
    let fields = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();
    let cases = [
        (
            "21 fields",
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\n{}\r\n", fields(20)),
            "431",
        ),
        (
            "a 5000-byte head",
            format!(
                "GET / HTTP/1.1\r\nHost: {IRIS}\r\nX-Big: {}\r\n\r\n",
                "v".repeat(4900)
            ),
            "431",
        ),
        (
            "an unfinished 5000-byte head",
            format!(
                "GET / HTTP/1.1\r\nHost: {IRIS}\r\nX-Big: {}",
                "v".repeat(4900)
            ),
            "431",
        ),
        (
            "a 2000-byte request line",
            format!("GET /{} HTTP/1.1\r\nHost: {IRIS}\r\n\r\n", "a".repeat(2000)),
            "414",
        ),
        (
            "an unfinished long request line",
            format!("GET /{}", "a".repeat(2000)),
            "414",
        ),
    ];
    for (what, head, status) in cases {
        let mut c = RawClient::connect(gw.port);
        let resp = c.exchange(head.as_bytes());
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {resp}"
        );
        assert!(c.is_closed(), "{what}: closed");
    }
    assert_eq!(up.hits(), 0);
    let mut c = RawClient::connect(gw.port);
    let ok = format!(
        "GET /{} HTTP/1.1\r\nHost: {IRIS}\r\n{}\r\n",
        "a".repeat(900),
        fields(19)
    );
    let resp = c.exchange(ok.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// Over `max_connections`, accept waits: the next client is served only once another leaves,
/// and the admin port answers all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap() {
    let up = Upstream::start("iris").await;
    let gw = gateway(&up, "max_connections: 3, header_timeout: 30s").await;
    let mut idle: Vec<TcpStream> = (0..3).map(|_| connect(gw.port)).collect();
    // Each holds a slot once the gateway has taken it; a request on a fourth waits.
    gw.wait_metrics(|m| m.contains("modelgate_downstream_connections 3"))
        .await;
    let mut waiting = connect(gw.port);
    waiting
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {IRIS}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(waiting.read(&mut buf).is_err(), "served over the cap");
    let r = gw
        .client
        .get(gw.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = gw.metrics().await;
    assert!(m.contains("modelgate_downstream_connections 3"), "{m}");
    drop(idle.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let resp = read_all(&mut waiting);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// A crowd of clients each holding a maximal unfinished head costs at most the head limit
/// each, and the memory goes back once they leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_heads_are_bounded() {
    const CLIENTS: usize = 300;
    let up = Upstream::start("iris").await;
    let gw = gateway(&up, "header_timeout: 60s").await;
    let head_limit = 60 * 1024;
    let before = rss_kib(gw.pid());
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {IRIS}\r\nX-Big: {}",
        "v".repeat(head_limit - 100)
    );
    let mut clients: Vec<TcpStream> = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = connect(gw.port);
        s.write_all(head.as_bytes()).unwrap();
        clients.push(s);
    }
    // Wait until the gateway holds every head: its memory stops growing.
    let mut held = rss_kib(gw.pid());
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_kib(gw.pid());
        if now <= held + 64 {
            break;
        }
        held = now;
    }
    let per_client = (held.saturating_sub(before)) * 1024 / CLIENTS as u64;
    println!("{CLIENTS} unfinished heads: RSS {before} -> {held} KiB, {per_client} bytes each");
    assert!(
        per_client <= (head_limit as u64) * 3 / 2,
        "{per_client} bytes per client for a {head_limit}-byte head (RSS {before} -> {held} KiB)"
    );
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = rss_kib(gw.pid());
        if after <= before + 10 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS did not come back: {before} -> {held} -> {after} KiB"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
