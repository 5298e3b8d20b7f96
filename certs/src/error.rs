//! `CertError`: every way loading or installing certificates can fail, each naming where.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

/// Why a certificate could not be loaded or installed.
///
/// `Display` always starts with the origin (a file path, or the name the caller gave to
/// [`from_pem`](crate::from_pem)) so a reload log line says which file to fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum CertError {
    /// The file could not be read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The input is not valid PEM (bad base64, a section without its END line, ...).
    BadPem { origin: String, detail: String },
    /// No `CERTIFICATE` PEM block at all.
    NoCertificate { origin: String },
    /// No private key PEM block (PKCS#8, PKCS#1 RSA or SEC1 EC) at all.
    NoPrivateKey { origin: String },
    /// A key block is present but rustls/ring cannot sign with it (e.g. RSA < 2048 bits, P-521).
    UnsupportedKey { origin: String, detail: String },
    /// The private key is not the key of the leaf (first) certificate.
    KeyMismatch {
        key_origin: String,
        cert_origin: String,
    },
    /// A `CERTIFICATE` block is not a parseable X.509 certificate.
    BadCertificate { origin: String, detail: String },
    /// The leaf has no DNS name in subjectAltName, so no client would accept it.
    NoDnsNames { origin: String },
    /// A DNS name we cannot serve: a wildcard anywhere but a whole leftmost label, or empty.
    BadName { origin: String, name: String },
    /// `now` is past the leaf's notAfter.
    Expired {
        origin: String,
        not_after: SystemTime,
        now: SystemTime,
    },
    /// A resolver or store needs at least one certificate.
    Empty,
    /// Two certificates claim the same name; which one a client gets would be an accident.
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
    /// More than one certificate is marked as the default.
    MultipleDefaults { first: String, second: String },
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            Self::BadPem { origin, detail } => write!(f, "{origin}: invalid PEM: {detail}"),
            Self::NoCertificate { origin } => {
                write!(f, "{origin}: no PEM CERTIFICATE block found")
            }
            Self::NoPrivateKey { origin } => write!(
                f,
                "{origin}: no private key PEM block found \
                 (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
            ),
            Self::UnsupportedKey { origin, detail } => write!(
                f,
                "{origin}: unsupported private key type ({detail}); \
                 use RSA 2048-8192 bits, ECDSA P-256/P-384 or Ed25519"
            ),
            Self::KeyMismatch {
                key_origin,
                cert_origin,
            } if key_origin == cert_origin => write!(
                f,
                "{key_origin}: private key does not match the certificate"
            ),
            Self::KeyMismatch {
                key_origin,
                cert_origin,
            } => write!(
                f,
                "{key_origin}: private key does not match the certificate in {cert_origin}"
            ),
            Self::BadCertificate { origin, detail } => {
                write!(f, "{origin}: invalid X.509 certificate: {detail}")
            }
            Self::NoDnsNames { origin } => {
                write!(f, "{origin}: certificate has no DNS name in subjectAltName")
            }
            Self::BadName { origin, name } => write!(
                f,
                "{origin}: cannot serve name {name:?}: a wildcard must be the whole leftmost label (*.example.com)"
            ),
            Self::Expired {
                origin,
                not_after,
                now,
            } => write!(
                f,
                "{origin}: certificate expired at {} (now {})",
                humantime::format_rfc3339_seconds(*not_after),
                humantime::format_rfc3339_seconds(*now)
            ),
            Self::Empty => write!(f, "no certificates configured"),
            Self::DuplicateName {
                name,
                first,
                second,
            } => write!(f, "{second}: name {name} is already served by {first}"),
            Self::MultipleDefaults { first, second } => write!(
                f,
                "{second}: marked as default certificate, but {first} already is"
            ),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
