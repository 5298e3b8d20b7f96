//! An upstream that records the exact bytes the gateway sent it, for the framing tests: a
//! client library (and hyper on the server side) cleans up or refuses exactly the requests
//! those tests are about, so this one parses only enough to answer (the head, then a
//! `Content-Length` or chunked body) and keeps every byte as it arrived.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct RawUpstream {
    addr: SocketAddr,
    /// Bytes received, one entry per connection.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    accept: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start() -> RawUpstream {
        Self::serve_with(false).await
    }

    /// One that reads each request head and closes the connection without answering: a model
    /// server that crashed on the request.
    pub async fn start_dropping() -> RawUpstream {
        Self::serve_with(true).await
    }

    async fn serve_with(drop_requests: bool) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("raw upstream: bind");
        let addr = listener.local_addr().expect("raw upstream: local address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&received);
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            let slot = {
                                let mut all = shared.lock().unwrap();
                                all.push(Vec::new());
                                all.len() - 1
                            };
                            connections.spawn(serve(stream, Arc::clone(&shared), slot, drop_requests));
                        }
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        RawUpstream {
            addr,
            received,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Everything received on every connection, in order, as text.
    pub fn received(&self) -> String {
        let all = self.received.lock().unwrap();
        all.iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("")
    }

    /// The request heads received (each up to its blank line), lower-cased.
    pub fn heads(&self) -> Vec<String> {
        self.received()
            .to_ascii_lowercase()
            .split("\r\n\r\n")
            .filter(|h| h.starts_with(|c: char| c.is_ascii_alphabetic()) && h.contains(" http/1."))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads requests one after another and answers each `200 ok`, keeping the connection open.
async fn serve(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    slot: usize,
    drop_requests: bool,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // One request: the head, then its body by the framing the head declares.
        let complete = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let body = &buf[end + 4..];
                let length = head.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                });
                let done = if head.contains("\r\ntransfer-encoding: chunked") {
                    body.starts_with(b"0\r\n\r\n")
                        .then_some(5)
                        .or_else(|| find(body, b"\r\n0\r\n\r\n").map(|i| i + 7))
                } else {
                    let n = length.unwrap_or(0);
                    (body.len() >= n).then_some(n)
                };
                if let Some(n) = done {
                    break Some(end + 4 + n);
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(n) => {
                    received.lock().unwrap()[slot].extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        let Some(used) = complete else { return };
        if drop_requests {
            return;
        }
        buf.drain(..used);
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-upstream: raw\r\n\r\nok";
        if stream.write_all(response).await.is_err() {
            return;
        }
    }
}
