//! Shared pieces of the end-to-end tests: real upstream servers, the real gateway binary on free
//! ports, and InferenceService manifests as the KServe controller writes them.

pub mod gateway;
pub mod manifest;
pub mod oidc;
pub mod upstream;

/// A free loopback port: bind port 0, read the port, release it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
