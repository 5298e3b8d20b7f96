//! PEM loading: what is accepted, and that every rejection names its origin and its reason.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certs::{from_pem, load_pem, CertError};
use rcgen::{date_time_ymd, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};

use crate::common::{key, rsa_key, Ca, Leaf};

fn load(cert_pem: &str, key_pem: &str) -> Result<certs::CertifiedKeyInfo, CertError> {
    from_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        "ns/secret",
        SystemTime::now(),
    )
}

fn at(year: i32, month: u8, day: u8) -> SystemTime {
    let secs = date_time_ymd(year, month, day).unix_timestamp();
    UNIX_EPOCH + Duration::from_secs(secs.try_into().unwrap())
}

/// A private directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("certs-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless and must not fail the test.
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A valid certificate and key load; the names are the SAN DNS names, lower-case, wildcards
/// kept, IP addresses left out; notAfter is the certificate's.
#[test]
fn valid_pair_loads_with_names_and_not_after() {
    let ca = Ca::new();
    let leaf = ca.leaf_with(
        &["API.Example.com", "*.models.example.com", "10.0.0.1"],
        key(&PKCS_ECDSA_P256_SHA256),
        |p| p.not_after = date_time_ymd(2040, 1, 2),
    );
    let info = load(&leaf.cert_pem, &leaf.key_pem).unwrap();
    assert_eq!(info.names, ["api.example.com", "*.models.example.com"]);
    assert_eq!(info.not_after, at(2040, 1, 2));
    assert_eq!(info.origin, "ns/secret");
    assert!(!info.default);
    assert_eq!(info.key.cert.len(), 1);
    assert_eq!(info.key.end_entity_cert().unwrap().as_ref(), leaf.der);
}

/// A chain file (leaf then CA) keeps the whole chain, leaf first, for the client.
#[test]
fn chain_file_keeps_intermediates_in_order() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let chain = format!("{}{}", leaf.cert_pem, ca.cert_pem);
    let info = load(&chain, &leaf.key_pem).unwrap();
    let ders: Vec<&[u8]> = info.key.cert.iter().map(|c| c.as_ref()).collect();
    assert_eq!(ders, [&leaf.der[..], &ca.cert_der[..]]);
}

/// Text without any PEM block is "no certificate", not a parse error from deep inside.
#[test]
fn garbage_is_no_certificate() {
    let err = load("this is not a certificate\n", "nor a key\n").unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err:?}");
    assert_eq!(err.to_string(), "ns/secret: no PEM CERTIFICATE block found");
}

/// A PEM block cut short (BEGIN without END) is invalid PEM.
#[test]
fn truncated_pem_is_bad_pem() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let truncated = &leaf.cert_pem[..leaf.cert_pem.len() / 2];
    let err = load(truncated, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, CertError::BadPem { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("ns/secret: invalid PEM"),
        "{err}"
    );
}

/// A key file holding only a certificate (a classic copy-paste mistake) has no private key.
#[test]
fn cert_without_key_is_no_private_key() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let err = load(&leaf.cert_pem, &leaf.cert_pem).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("ns/secret: no private key"),
        "{err}"
    );
}

/// The key of another certificate is rejected, naming both files.
#[test]
fn key_of_another_cert_does_not_match() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let other = ca.leaf(&["a.example.com"]);
    let err = load(&leaf.cert_pem, &other.key_pem).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "ns/secret: private key does not match the certificate"
    );
}

/// The leaf must come first: a chain file with the CA first does not match the leaf's key.
#[test]
fn chain_with_ca_first_does_not_match() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let chain = format!("{}{}", ca.cert_pem, leaf.cert_pem);
    let err = load(&chain, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
}

/// ECDSA P-256, ECDSA P-384, Ed25519 and RSA 2048 keys all load.
#[test]
fn ec_ed25519_and_rsa_keys_load() {
    let ca = Ca::new();
    for (label, key) in [
        ("p256", key(&PKCS_ECDSA_P256_SHA256)),
        ("p384", key(&PKCS_ECDSA_P384_SHA384)),
        ("ed25519", key(&PKCS_ED25519)),
        ("rsa2048", rsa_key(2048)),
    ] {
        let leaf: Leaf = ca.leaf_with(&["a.example.com"], key, |_| {});
        let info = load(&leaf.cert_pem, &leaf.key_pem).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(info.names, ["a.example.com"], "{label}");
    }
}

/// A key ring cannot sign with (RSA 1024) is "unsupported key type", before any match check.
#[test]
fn rsa_1024_is_unsupported_key() {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let weak = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    let weak_pem = weak.to_pkcs8_pem(LineEnding::LF).unwrap();
    let err = load(&leaf.cert_pem, &weak_pem).unwrap_err();
    assert!(matches!(err, CertError::UnsupportedKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("ns/secret: unsupported private key type"),
        "{err}"
    );
}

/// Expired is judged against the `now` passed in: the same certificate loads the day before
/// notAfter and fails the day after, with both dates in the message.
#[test]
fn expired_only_when_now_is_past_not_after() {
    let ca = Ca::new();
    let leaf = ca.leaf_with(&["a.example.com"], key(&PKCS_ECDSA_P256_SHA256), |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let load_at = |now| {
        from_pem(
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            "old",
            now,
        )
    };

    assert!(load_at(at(2020, 12, 31)).is_ok());
    let err = load_at(at(2021, 1, 2)).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "old: certificate expired at 2021-01-01T00:00:00Z (now 2021-01-02T00:00:00Z)"
    );
}

/// A certificate with only an IP address SAN serves no SNI name and is rejected.
#[test]
fn no_dns_names_is_rejected() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["10.0.0.1"]);
    let err = load(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, CertError::NoDnsNames { .. }), "{err:?}");
}

/// A wildcard that is not a whole leftmost label cannot be served and is rejected by name.
#[test]
fn partial_wildcard_is_rejected() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["api*.example.com"]);
    let err = load(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(
        matches!(&err, CertError::BadName { name, .. } if name == "api*.example.com"),
        "{err:?}"
    );
}

/// From files: success, and errors name the file that is wrong (the key file for key
/// problems, the missing path for unreadable files).
#[test]
fn load_pem_names_the_file() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let dir = TempDir::new("load_pem_names_the_file");
    let cert = dir.write("tls.crt", &leaf.cert_pem);
    let key = dir.write("tls.key", &leaf.key_pem);
    let not_a_key = dir.write("not-a-key.pem", &leaf.cert_pem);
    let now = SystemTime::now();

    let info = load_pem(&cert, &key, now).unwrap();
    assert_eq!(info.origin, cert.display().to_string());

    let err = load_pem(&cert, &not_a_key, now).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: no private key", not_a_key.display())),
        "{err}"
    );

    let missing = dir.0.join("missing.crt");
    let err = load_pem(&missing, &key, now).unwrap_err();
    assert!(matches!(err, CertError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
}

/// A well-formed PEM CERTIFICATE block whose contents are not X.509 is "invalid X.509
/// certificate", not a key mismatch.
#[test]
fn non_x509_certificate_block_is_bad_certificate() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.example.com"]);
    let fake = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let err = load(fake, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, CertError::BadCertificate { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("ns/secret: invalid X.509 certificate"),
        "{err}"
    );
}
