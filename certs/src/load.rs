//! PEM in, `CertifiedKeyInfo` out: parse the chain and key, check they belong together, read
//! the names the leaf serves and when it expires.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::CertError;

/// One certificate chain and key, parsed and checked: the key matches the leaf, the chain is
/// non-empty, the names it serves (SAN DNS names, lower-case; wildcards like `*.example.com`)
/// are known.
#[derive(Debug, Clone)]
pub struct CertifiedKeyInfo {
    /// SAN DNS names of the leaf, lower-case, without trailing dot, deduplicated, in
    /// certificate order. IP-address SANs are not listed: SNI never carries an address.
    pub names: Vec<String>,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
    /// What rustls hands to the client: chain (leaf first) and signing key.
    pub key: Arc<CertifiedKey>,
    /// Where it came from (the certificate file path, or the caller's label); used in errors.
    pub origin: String,
    /// Serve this one when SNI is missing or matches nothing. When no certificate in a list
    /// is marked, the first one is the default.
    pub default: bool,
}

impl CertifiedKeyInfo {
    /// Marks this certificate as the default (see [`SniResolver`](crate::SniResolver)).
    pub fn into_default(mut self) -> Self {
        self.default = true;
        self
    }
}

/// Loads a PEM certificate chain (leaf first) and its PEM private key from files.
///
/// Errors name the file and say what is wrong: unreadable, no PEM blocks, no private key,
/// unsupported key type, key does not match certificate, no DNS names, expired. Expired is
/// judged against `now` (passed in, so tests and "will this still be valid tomorrow" checks are
/// exact); a not-yet-valid certificate is accepted, since clock skew is the client's call.
pub fn load_pem(
    cert_path: &Path,
    key_path: &Path,
    now: SystemTime,
) -> Result<CertifiedKeyInfo, CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    parse(
        &cert_pem,
        &cert_path.display().to_string(),
        &key_pem,
        &key_path.display().to_string(),
        now,
    )
}

/// Like [`load_pem`], from bytes already in memory (a Kubernetes Secret's `tls.crt` and
/// `tls.key`). `origin` names the source in errors, e.g. `kserve/gateway-tls`.
pub fn from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: &str,
    now: SystemTime,
) -> Result<CertifiedKeyInfo, CertError> {
    parse(cert_pem, origin, key_pem, origin, now)
}

fn parse(
    cert_pem: &[u8],
    cert_origin: &str,
    key_pem: &[u8],
    key_origin: &str,
    now: SystemTime,
) -> Result<CertifiedKeyInfo, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(cert_origin, e))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            origin: cert_origin.to_owned(),
        });
    }

    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(CertError::NoPrivateKey {
                origin: key_origin.to_owned(),
            })
        }
        Err(e) => return Err(bad_pem(key_origin, e)),
    };

    // Parse every block, so a corrupt leaf is reported as such (not as a key mismatch) and a
    // corrupt intermediate fails here rather than in some client's handshake.
    let bad_cert = |detail: String| CertError::BadCertificate {
        origin: cert_origin.to_owned(),
        detail,
    };
    for der in &chain {
        X509Certificate::from_der(der).map_err(|e| bad_cert(e.to_string()))?;
    }

    // The key first: "wrong key" or "leaf not first" is the most fundamental mistake, and
    // reporting it beats reporting a symptom (such as a CA certificate having no DNS names).
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        CertError::UnsupportedKey {
            origin: key_origin.to_owned(),
            detail: e.to_string(),
        }
    })?;
    let key = CertifiedKey::new(chain, signing_key);
    // ring's keys always know their public half, so anything but Ok is a mismatch (or a leaf
    // rustls cannot parse, which is no better).
    if key.keys_match().is_err() {
        return Err(CertError::KeyMismatch {
            key_origin: key_origin.to_owned(),
            cert_origin: cert_origin.to_owned(),
        });
    }

    let (_, leaf) = X509Certificate::from_der(&key.cert[0]).map_err(|e| bad_cert(e.to_string()))?;
    let not_after = unix_to_system_time(leaf.validity().not_after.timestamp());
    if now > not_after {
        return Err(CertError::Expired {
            origin: cert_origin.to_owned(),
            not_after,
            now,
        });
    }

    let names = dns_names(&leaf, cert_origin)?;

    Ok(CertifiedKeyInfo {
        names,
        not_after,
        key: Arc::new(key),
        origin: cert_origin.to_owned(),
        default: false,
    })
}

fn bad_pem(origin: &str, e: pem::Error) -> CertError {
    CertError::BadPem {
        origin: origin.to_owned(),
        detail: e.to_string(),
    }
}

/// SAN DNS names, normalised and checked. The subject CN is ignored, as browsers and rustls
/// clients ignore it.
fn dns_names(leaf: &X509Certificate<'_>, origin: &str) -> Result<Vec<String>, CertError> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| CertError::BadCertificate {
            origin: origin.to_owned(),
            detail: format!("subjectAltName: {e}"),
        })?;
    let mut names: Vec<String> = Vec::new();
    for general_name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        let GeneralName::DNSName(raw) = general_name else {
            continue;
        };
        let name = normalize(raw);
        if !is_servable(&name) {
            return Err(CertError::BadName {
                origin: origin.to_owned(),
                name: (*raw).to_owned(),
            });
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(CertError::NoDnsNames {
            origin: origin.to_owned(),
        });
    }
    Ok(names)
}

/// Lower-case, one trailing dot removed: the form names are stored and looked up in.
pub(crate) fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Non-empty labels; `*` only as the whole leftmost label, with at least one label after it.
fn is_servable(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && rest
            .split('.')
            .all(|label| !label.is_empty() && !label.contains('*'))
}

fn unix_to_system_time(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    // Only unrepresentable dates land here; treat them as "already past", which fails loudly.
    t.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are compared lower-case and without the trailing dot of an absolute name.
    #[test]
    fn normalize_lowercases_and_drops_one_trailing_dot() {
        assert_eq!(normalize("API.Example.COM."), "api.example.com");
        assert_eq!(normalize("*.Example.com"), "*.example.com");
    }

    /// A wildcard is only served as the whole leftmost label.
    #[test]
    fn only_leftmost_whole_label_wildcards_are_servable() {
        assert!(is_servable("example.com"));
        assert!(is_servable("*.example.com"));
        assert!(!is_servable("a*.example.com"));
        assert!(!is_servable("a.*.example.com"));
        assert!(!is_servable("*"));
        assert!(!is_servable("a..example.com"));
        assert!(!is_servable(""));
    }

    /// notAfter before 1970 still converts (and is then always expired).
    #[test]
    fn negative_timestamps_convert() {
        assert_eq!(
            unix_to_system_time(-10),
            UNIX_EPOCH - Duration::from_secs(10)
        );
        assert_eq!(
            unix_to_system_time(10),
            UNIX_EPOCH + Duration::from_secs(10)
        );
    }
}
