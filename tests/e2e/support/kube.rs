//! A fake Kubernetes API server on loopback, as far as service-account token verification
//! needs one: `/.well-known/openid-configuration` and `/openid/v1/jwks` exactly as the API
//! server serves them (issuer discovery; no authorization or token endpoint), behind a bearer
//! token like the real one's default RBAC, and tokens it signs with its key (ES256) carrying
//! the claims a projected service-account token has.

#![allow(dead_code)]

use base64::Engine;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct FakeApiServer {
    pub url: String,
    /// The token a client must send to read discovery and keys.
    pub reader_token: String,
    key_pem: String,
    kid: String,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        let kid = "fake-apiserver-key-1".to_string();
        let jwks = serde_json::json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]});
        let discovery = serde_json::json!({
            "issuer": url,
            "jwks_uri": format!("{url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let reader_token = "gateway-reader-token".to_string();
        let routes = Arc::new((
            discovery.to_string(),
            jwks.to_string(),
            reader_token.clone(),
        ));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let routes = routes.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &routes)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApiServer {
            url,
            reader_token,
            key_pem: key.serialize_pem(),
            kid,
            task,
        }
    }

    /// A projected service-account token for `namespace/name` with `audience`, signed by this
    /// server's key; `edit` changes the claims before signing.
    pub fn token(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = serde_json::json!({
            "aud": [audience],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": format!("{name}-7d4b9c-x2x9z"), "uid": "4b1f6a1e-0000-4000-8000-000000000001"},
                "serviceaccount": {"name": name, "uid": "4b1f6a1e-0000-4000-8000-000000000002"},
            },
        });
        edit(&mut claims);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

fn answer(req: &Request<Incoming>, routes: &(String, String, String)) -> Response<Full<Bytes>> {
    let (discovery, jwks, token) = routes;
    let authorised = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {token}"));
    let (status, body) = match (authorised, req.uri().path()) {
        (false, _) => (
            StatusCode::UNAUTHORIZED,
            r#"{"kind":"Status","code":401}"#.to_string(),
        ),
        (true, "/.well-known/openid-configuration") => (StatusCode::OK, discovery.clone()),
        (true, "/openid/v1/jwks") => (StatusCode::OK, jwks.clone()),
        (true, _) => (
            StatusCode::NOT_FOUND,
            r#"{"kind":"Status","code":404}"#.to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
