//! Test PKI: one CA per test, leaves for any names and key type, and helpers to load them.

use std::time::SystemTime;

use certs::{from_pem, CertifiedKeyInfo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};

/// A throwaway certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
}

/// A leaf certificate and its key, as PEM, plus the leaf DER to compare with what a client saw.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "modelgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An ECDSA P-256 leaf for `names`.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, key(&PKCS_ECDSA_P256_SHA256), |_| {})
    }

    /// A leaf for `names` with the given key; `tweak` edits the parameters (validity, ...).
    pub fn leaf_with(
        &self,
        names: &[&str],
        key: KeyPair,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        tweak(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A fresh key pair for an algorithm ring can generate (ECDSA, Ed25519).
pub fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).unwrap()
}

/// A fresh RSA key of `bits` (ring cannot generate RSA keys; the `rsa` crate can).
pub fn rsa_key(bits: usize) -> KeyPair {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits).unwrap();
    let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
}

/// The leaf loaded through the public API, labelled `origin`, valid now.
pub fn info(leaf: &Leaf, origin: &str) -> CertifiedKeyInfo {
    from_pem(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        origin,
        SystemTime::now(),
    )
    .unwrap()
}
