//! `CertStore`: the live resolver, swapped whole on reload.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{CertError, CertifiedKeyInfo, SniResolver};

/// The live resolver: built whole from a list of certs, validated, then swapped in (arc-swap)
/// so a bad reload never replaces good certificates.
///
/// `CertStore` implements [`ResolvesServerCert`] by delegating to the current snapshot, so the
/// gateway hands pingora one `Arc<CertStore>` at start-up
/// (`TlsSettings::set_cert_resolver(store.clone())`) and reloads swap underneath it. A
/// handshake already in progress keeps the snapshot it loaded.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<SniResolver>,
}

impl CertStore {
    /// A store serving `certs`; same validation as [`SniResolver::new`].
    pub fn new(certs: Vec<CertifiedKeyInfo>) -> Result<Self, CertError> {
        Ok(Self {
            current: ArcSwap::from_pointee(SniResolver::new(certs)?),
        })
    }

    /// Builds and validates a complete new resolver, then swaps it in. On error nothing
    /// changes: the previous certificates keep being served.
    pub fn replace(&self, certs: Vec<CertifiedKeyInfo>) -> Result<(), CertError> {
        let next = SniResolver::new(certs)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Every name currently served, sorted (for the admin endpoint and logs).
    pub fn names(&self) -> Vec<String> {
        self.current.load().names()
    }

    /// The current resolver, pinned: later reloads do not change what it returns.
    pub fn snapshot(&self) -> Arc<SniResolver> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .load()
                .lookup(client_hello.server_name())
                .key
                .clone(),
        )
    }
}
