//! Kubeflow-style authentication without pingora: what oidc-authservice and oauth2-proxy do in
//! front of Kubeflow, as pure decisions (clock, keys and randomness passed in) plus the few
//! async calls to the OpenID Connect provider (discovery, JWKS, code exchange, device flow).

pub mod config;
pub mod decide;
pub mod flow;
pub mod headers;
pub mod jwt;
pub mod kubernetes;
pub mod paths;
pub mod provider;
pub mod session;
