//! The OpenID Connect provider test fixture (tests/oidc), set up to look like Dex.
