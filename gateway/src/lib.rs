//! modelgate's gateway: wires the pure `routes` crate into pingora. `main.rs` only parses the
//! command line; `server` assembles the services; the modules below each own one concern.

pub mod admin;
pub mod authn;
pub mod cli;
pub mod config;
pub mod demo;
pub mod errors;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod resolver;
pub mod server;
pub mod state;
