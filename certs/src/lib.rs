//! TLS certificates for modelgate's listeners: PEM loading and checking ([`load_pem`],
//! [`from_pem`]), per-SNI selection ([`SniResolver`]: exact > wildcard > default), and the live
//! store that validates a whole new set before swapping it in ([`CertStore`]).
//!
//! No pingora here, on purpose: everything is plain rustls types (`ResolvesServerCert`,
//! `CertifiedKey`), so the selection rules are unit-tested with real handshakes in milliseconds
//! and the gateway only wires an `Arc<CertStore>` into `TlsSettings::set_cert_resolver`.
//! Validation happens here, before pingora sees anything, because pingora's `build()` panics
//! on bad certificate files. The rustls version and features are the ones pingora 0.9.1 uses
//! (ring; no aws-lc, no OpenSSL), so the trait objects are interchangeable.

mod error;
mod load;
mod resolver;
mod store;

pub use error::CertError;
pub use load::{from_pem, load_pem, CertifiedKeyInfo};
pub use resolver::SniResolver;
pub use store::CertStore;
