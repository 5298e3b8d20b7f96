//! The upstream pair for `bench/run.sh`: one small, fast HTTP/1.1 server (hyper, one tokio
//! thread) listening on two loopback ports, one per revision of the benchmarked model. It
//! answers `GET` with a small JSON prediction, echoes a `POST` body, and counts requests per
//! port so every benchmark run can check the canary split it was given.
//!
//! Build: `cargo build --release --example bench_upstream -p gateway`
//!
//! ```sh
//! bench_upstream serve [PORT_A PORT_B]   # 0 or nothing: free ports; prints `listening A B`
//! curl -s http://127.0.0.1:A/__counts    # {"a": N, "b": M}: requests served per port so far
//! bench_upstream free-ports 3            # prints 3 free loopback ports (for the proxies)
//! bench_upstream seal-cookie SECRET_FILE [USER] [COOKIE_NAME]
//!                                        # a session cookie value sealed like the gateway does
//! ```
//!
//! `/__counts` itself is not counted. The process exits on SIGTERM or SIGINT and prints the
//! final counts to stdout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth::config::Secret;
use auth::session::{Identity, Session, SessionCodec};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a prediction looks like to the client: small, like a real v1 classifier answer.
const PREDICTION: &[u8] = br#"{"predictions":[1,0]}"#;
/// Request bodies above this are refused (the benchmark posts 1 KiB, and 1 MiB in `large`).
const MAX_BODY: usize = 8 << 20;

#[derive(Default)]
struct Counts {
    a: AtomicU64,
    b: AtomicU64,
}

impl Counts {
    fn json(&self) -> String {
        format!(
            "{{\"a\": {}, \"b\": {}}}",
            self.a.load(Ordering::Relaxed),
            self.b.load(Ordering::Relaxed)
        )
    }
}

fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    counter: &AtomicU64,
    counts: &Counts,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/__counts" {
        return Ok(response(StatusCode::OK, counts.json()));
    }
    counter.fetch_add(1, Ordering::Relaxed);
    match *req.method() {
        Method::POST | Method::PUT => {
            let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(response(StatusCode::PAYLOAD_TOO_LARGE, "{}")),
            };
            Ok(response(StatusCode::OK, body))
        }
        _ => Ok(response(StatusCode::OK, PREDICTION)),
    }
}

async fn accept_loop(listener: TcpListener, which: usize, counts: Arc<Counts>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                eprintln!("bench_upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let counts = counts.clone();
                async move {
                    let counter = if which == 0 { &counts.a } else { &counts.b };
                    handle(req, counter, &counts).await
                }
            });
            // A client that goes away mid-request is normal under load; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn parse_port(arg: Option<&String>) -> Result<u16, String> {
    arg.map_or(Ok(0), |p| p.parse().map_err(|e| format!("port {p:?}: {e}")))
}

fn serve(args: &[String]) -> Result<(), String> {
    let ports = [parse_port(args.first())?, parse_port(args.get(1))?];
    // One thread: the upstream shares core 0 with the load generator, so it must stay lean.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        let counts = Arc::new(Counts::default());
        let mut bound = Vec::new();
        for (which, port) in ports.into_iter().enumerate() {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("bind {addr}: {e}"))?;
            bound.push(listener.local_addr().map_err(|e| e.to_string())?.port());
            tokio::spawn(accept_loop(listener, which, counts.clone()));
        }
        println!("listening {} {}", bound[0], bound[1]);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("SIGTERM handler: {e}"))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        println!("counts {}", counts.json());
        Ok(())
    })
}

fn free_ports(args: &[String]) -> Result<(), String> {
    let n: usize = args.first().map_or(Ok(1), |n| {
        n.parse().map_err(|e| format!("count {n:?}: {e}"))
    })?;
    // All bound at once so they differ; released on exit for the caller to take.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let ports: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port().to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    println!("{}", ports.join(" "));
    Ok(())
}

/// Seals a session exactly as the gateway does after a login (`auth::session::SessionCodec`
/// with the cookie secret read from the same file the gateway reads), valid for one day.
fn seal_cookie(args: &[String]) -> Result<(), String> {
    let file = args.first().ok_or("seal-cookie needs SECRET_FILE")?;
    let secret = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let user = args.get(1).map_or("user@example.com", String::as_str);
    let name = args.get(2).map_or("authservice_session", String::as_str);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let codec = SessionCodec::new(&[Secret::new(secret.trim_end_matches(['\n', '\r']))]);
    let session = Session {
        identity: Identity {
            user: user.to_owned(),
            groups: vec!["kubeflow-users".to_owned()],
        },
        expires_at: now + 24 * 3600,
        issued_at: now,
    };
    println!("{}", codec.seal_session(name, &session));
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("free-ports") => free_ports(&args[1..]),
        Some("seal-cookie") => seal_cookie(&args[1..]),
        _ => Err("usage: bench_upstream serve [PORT_A PORT_B] | free-ports N | seal-cookie SECRET_FILE [USER] [COOKIE_NAME]".into()),
    };
    if let Err(e) = result {
        eprintln!("bench_upstream: {e}");
        std::process::exit(64);
    }
}
