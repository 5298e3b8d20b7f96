//! TLS termination with rustls: certificates chosen by SNI, real handshakes.

use crate::support::gateway::{Gateway, Options};
use crate::support::manifest::{traffic, Isvc};
use crate::support::upstream::Upstream;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const IRIS: &str = "sklearn-iris.kserve-test.example.com";
const OTHER: &str = "other.team-b.example.com";

/// A throwaway CA and leaves it signs, all generated here.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "modelgate e2e CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (cert PEM, key PEM, cert DER)
    pub fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// A TLS listener serves by SNI: the exact certificate for its name, the wildcard for other
/// names under it, over HTTP/2 (ALPN, no `Host` header: `:authority` routes); the request
/// reaches the model with `X-Forwarded-Proto: https`, and a plain listener next to it keeps
/// working.
#[tokio::test]
async fn tls_listener_picks_certificate_by_sni() {
    let ca = Ca::new();
    let (exact_pem, exact_key, exact_der) = ca.leaf(&[IRIS]);
    let (wild_pem, wild_key, wild_der) = ca.leaf(&["*.team-b.example.com"]);
    let up = Upstream::start("iris").await;
    let gw = Gateway::start(
        &[
            ("iris.yaml", Isvc::new("sklearn-iris", "kserve-test", vec![traffic("sklearn-iris-predictor-00001", 100, None, true)]).yaml()),
            ("other.yaml", Isvc::new("other", "team-b", vec![traffic("other-predictor-00001", 100, None, true)]).yaml()),
        ],
        Options {
            endpoints: vec![
                ("kserve-test/sklearn-iris-predictor-00001".into(), vec![format!("\"{}\"", up.endpoint())]),
                ("team-b/other-predictor-00001".into(), vec![format!("\"{}\"", up.endpoint())]),
            ],
            extra: "  - address: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {cert: exact.crt, key: exact.key}\n        - {cert: wild.crt, key: wild.key}\n"
                .to_string(),
            files: vec![
                ("exact.crt".into(), exact_pem),
                ("exact.key".into(), exact_key),
                ("wild.crt".into(), wild_pem),
                ("wild.key".into(), wild_key),
            ],
            extra_listeners: true,
            ..Default::default()
        },
    )
    .await;
    let tls_port = gw.ports[1];
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve(IRIS, ([127, 0, 0, 1], tls_port).into())
        .resolve(OTHER, ([127, 0, 0, 1], tls_port).into())
        .tls_info(true)
        .build()
        .unwrap();
    for (host, der) in [(IRIS, &exact_der), (OTHER, &wild_der)] {
        let r = client
            .get(format!("https://{host}:{tls_port}/v1/models/m"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}\n{}", gw.log()));
        assert_eq!(r.status(), 200, "{host}");
        // HTTP/2 is offered by ALPN and taken by the client.
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "{host}");
        let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
        assert_eq!(
            info.peer_certificate(),
            Some(der.as_slice()),
            "{host} got the wrong certificate"
        );
        let seen = up.requests().last().unwrap().clone();
        assert_eq!(seen.header_all("x-forwarded-proto"), ["https"]);
    }
    let r = gw.get(IRIS, "/v1/models/m").send().await.unwrap();
    assert_eq!(r.status(), 200, "the plain listener still serves");
    assert_eq!(
        up.requests().last().unwrap().header("x-forwarded-proto"),
        Some("http")
    );
}

/// A certificate that does not load is a config error naming the listener and file (exit 64).
#[test]
fn bad_certificate_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("bad.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let config = dir.path().join("modelgate.yaml");
    std::fs::write(
        &config,
        "listeners:\n  - address: 127.0.0.1:0\n    tls: {certificates: [{cert: bad.crt, key: bad.key}]}\nroutes: {directory: routes}\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::gateway::BIN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners[0].tls.certificates[0]: "), "{err}");
    assert!(err.contains("bad.crt"), "{err}");
}
