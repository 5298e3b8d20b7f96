//! modelgate's gateway: wires the pure `routes` and `auth` crates into pingora-core. `main.rs`
//! only parses the command line; `server` assembles the services; `listen` owns client
//! connections, `exchange` the request path, `upstream` the connections to model servers; the
//! other modules each own one concern.

pub mod admin;
pub mod authn;
pub mod cli;
pub mod config;
pub mod demo;
pub mod errors;
pub mod exchange;
pub mod listen;
pub mod metrics;
pub mod reload;
pub mod request;
pub mod resolver;
pub mod server;
pub mod state;
pub mod upstream;
pub mod watch;
