//! End-to-end tests: the real `modelgate` binary in front of real HTTP servers on loopback.
//! Each test states the rule it checks.

mod support;

mod auth;
mod cli;
mod controllers;
mod credentials;
mod deploy;
mod failures;
mod hardening;
mod http2;
mod kube_source;
mod oidc_provider;
mod quickstart;
mod reload;
mod request_path;
mod routing;
mod shutdown;
mod slow_clients;
mod tls;
mod upgrade;
