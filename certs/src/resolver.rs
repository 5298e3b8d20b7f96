//! `SniResolver`: one immutable name -> certificate table, built and validated whole.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::load::normalize;
use crate::{CertError, CertifiedKeyInfo};

/// Resolves by SNI: exact name > wildcard > default.
///
/// * An exact SAN name wins (`api.example.com`).
/// * Else a wildcard SAN whose suffix is the SNI minus its first label: `*.example.com`
///   matches `a.example.com`, not `example.com`, not `a.b.example.com`. Because a wildcard
///   covers exactly one label, at most one wildcard can match a name, so "longest wildcard
///   wins" needs no ranking: `a.b.example.com` can only be matched by `*.b.example.com`.
/// * Else the default: the certificate marked [`default`](CertifiedKeyInfo::default), or the
///   first in the list. No SNI (clients connecting by IP address) also gets the default.
///
/// Matching ignores ASCII case and one trailing dot. The resolver never returns `None`, so a
/// handshake for an unknown name completes with the default certificate and the client decides;
/// that lets plain-IP health checks and `curl -k` work.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<CertifiedKeyInfo>,
    /// normalised name -> index into `certs`
    exact: HashMap<String, usize>,
    /// suffix of a wildcard (`example.com` for `*.example.com`) -> index into `certs`
    wildcard: HashMap<String, usize>,
    default: usize,
}

impl SniResolver {
    /// Builds the table.
    ///
    /// Errors: an empty list ([`CertError::Empty`]); a name served by two certificates
    /// ([`CertError::DuplicateName`], naming both origins); two certificates marked default
    /// ([`CertError::MultipleDefaults`]). Duplicates are an error rather than "first wins"
    /// because which certificate a client gets should never depend on file order, and a store
    /// that rejects the reload keeps serving the previous, good table.
    pub fn new(certs: Vec<CertifiedKeyInfo>) -> Result<Self, CertError> {
        if certs.is_empty() {
            return Err(CertError::Empty);
        }
        let mut exact: HashMap<String, usize> = HashMap::new();
        let mut wildcard: HashMap<String, usize> = HashMap::new();
        let mut default: Option<usize> = None;
        for (i, cert) in certs.iter().enumerate() {
            if cert.default {
                if let Some(first) = default {
                    return Err(CertError::MultipleDefaults {
                        first: certs[first].origin.clone(),
                        second: cert.origin.clone(),
                    });
                }
                default = Some(i);
            }
            for name in &cert.names {
                // Normalise again: `names` is a pub field and may have been built by hand.
                let name = normalize(name);
                let (table, key) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix.to_owned()),
                    None => (&mut exact, name.clone()),
                };
                if let Some(&first) = table.get(&key) {
                    return Err(CertError::DuplicateName {
                        name,
                        first: certs[first].origin.clone(),
                        second: cert.origin.clone(),
                    });
                }
                table.insert(key, i);
            }
        }
        Ok(Self {
            default: default.unwrap_or(0),
            certs,
            exact,
            wildcard,
        })
    }

    /// The certificate served for this SNI value (`None`: the client sent none).
    pub fn lookup(&self, sni: Option<&str>) -> &CertifiedKeyInfo {
        let index = sni
            .map(normalize)
            .and_then(|name| {
                self.exact.get(&name).or_else(|| {
                    let (first_label, suffix) = name.split_once('.')?;
                    if first_label.is_empty() {
                        return None;
                    }
                    self.wildcard.get(suffix)
                })
            })
            .copied()
            .unwrap_or(self.default);
        &self.certs[index]
    }

    /// The certificate served when nothing else matches.
    pub fn default_cert(&self) -> &CertifiedKeyInfo {
        &self.certs[self.default]
    }

    /// Every name served (exact and `*.` wildcards), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .exact
            .keys()
            .cloned()
            .chain(self.wildcard.keys().map(|suffix| format!("*.{suffix}")))
            .collect();
        names.sort();
        names
    }

    /// The certificates, in the order given.
    pub fn certs(&self) -> &[CertifiedKeyInfo] {
        &self.certs
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(client_hello.server_name()).key.clone())
    }
}
