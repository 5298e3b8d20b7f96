//! Integration tests for `certs`, one binary: certificates are generated here with rcgen (no
//! committed keys), handshakes run on loopback ports from binding port 0.

mod common;
mod handshake;
mod pem;
mod resolver;
mod store;
