//! Real TLS: a tokio-rustls server whose resolver is a `CertStore`, a rustls client that
//! trusts only the test CA, on a loopback port from binding port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use certs::CertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::common::{info, Ca};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves TLS with `store` as the certificate resolver, answering "ok" to every client.
async fn serve(store: Arc<CertStore>) -> SocketAddr {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        // The same coercion the gateway does for `TlsSettings::set_cert_resolver`.
        .with_cert_resolver(store as Arc<dyn rustls::server::ResolvesServerCert>);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed server side shows up as the client's assertion failing.
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    tls.write_all(b"ok").await.ok();
                    tls.shutdown().await.ok();
                }
            });
        }
    });
    addr
}

/// Handshakes as `sni`, verifying the chain against `ca` and the name; returns the leaf served.
async fn served_leaf(addr: SocketAddr, ca: &Ca, sni: &str) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der.clone()))
        .unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake as {sni}: {e}"));
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"ok");
    leaf
}

/// Over a real handshake the client gets the exact certificate for an exact name and the
/// wildcard for another name under it, each valid for that name; after `replace`, a new
/// handshake gets the new certificate from the same `Arc<CertStore>`.
#[tokio::test]
async fn handshake_picks_by_sni_and_sees_replace() {
    let ca = Ca::new();
    let exact = ca.leaf(&["api.example.com"]);
    let wildcard = ca.leaf(&["*.example.com"]);
    let store =
        Arc::new(CertStore::new(vec![info(&wildcard, "wildcard"), info(&exact, "exact")]).unwrap());
    let addr = serve(store.clone()).await;

    assert_eq!(served_leaf(addr, &ca, "api.example.com").await, exact.der);
    assert_eq!(
        served_leaf(addr, &ca, "models.example.com").await,
        wildcard.der
    );

    let renewed = ca.leaf(&["*.example.com"]);
    assert_ne!(renewed.der, wildcard.der);
    store
        .replace(vec![info(&renewed, "renewed"), info(&exact, "exact")])
        .unwrap();

    assert_eq!(
        served_leaf(addr, &ca, "models.example.com").await,
        renewed.der
    );
    assert_eq!(served_leaf(addr, &ca, "api.example.com").await, exact.der);
}
