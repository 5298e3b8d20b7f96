//! Shared pieces of the end-to-end tests: real upstream servers, the real gateway binary on free
//! ports, and InferenceService manifests as the KServe controller writes them.

pub mod gateway;
pub mod manifest;
pub mod oidc;
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
