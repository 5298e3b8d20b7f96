//! Self-test of the OpenID Connect provider fixture (tests/oidc).
