//! Shared pieces of the end-to-end tests: real upstream servers, the real gateway binary on free
//! ports, and InferenceService manifests as the KServe controller writes them.

pub mod gateway;
pub mod h2raw;
pub mod install;
pub mod kube;
pub mod manifest;
pub mod oidc;
pub mod raw_upstream;
pub mod upstream;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A free loopback port: bind port 0, read the port, release it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Sends raw bytes and returns the raw response (the connection is closed by asking for it).
pub fn raw(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON body is complete or the peer closes.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|l| body.len() >= l) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.1 exchange on a raw connection the caller keeps, so a test can see whether the
/// gateway closes it afterwards.
pub struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawClient { stream }
    }

    /// Sends `request` and reads one response: its head and the body its framing says
    /// (`Content-Length`, chunked to the last chunk, none after HEAD or for 1xx/204/304); empty
    /// when the gateway closed the connection without answering.
    pub fn exchange(&mut self, request: &[u8]) -> String {
        let _ = self.stream.write_all(request);
        let head_request = request.starts_with(b"HEAD ");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = &out[end + 4..];
                let done = if head_request || matches!(status, 100..=199 | 204 | 304) {
                    true
                } else if head.contains("\r\ntransfer-encoding: chunked") {
                    body.ends_with(b"0\r\n\r\n")
                } else {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    body.len() >= len
                };
                if done {
                    break;
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whether the gateway closes the connection (EOF or reset) rather than waiting for the
    /// next request on it.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}
