//! Criterion benchmarks of what authentication costs a request: verifying a Dex-style ID token
//! (`jwt::verify`, RS256 and ES256), the same through `KeyCache` with its verified-token cache
//! (the gateway's path: a hit skips the signature check), and opening a session cookie
//! (`SessionCodec::open_session`, AES-256-GCM).
//!
//! Run: `cargo bench -p auth --bench verify`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use auth::config::Secret;
use auth::jwt::{verify, Jwks, KeyCache, VerifyParams};
use auth::session::{Identity, Session, SessionCodec};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::json;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "http://dex.auth.svc.cluster.local:5556/dex";
const COOKIE: &str = "authservice_session";

struct Keys {
    jwks: Jwks,
    rs256_token: String,
    es256_token: String,
}

/// Fresh keys (RSA 2048 like Dex, and P-256), their JWKS, and one token signed with each.
fn keys() -> Keys {
    let mut rng = rand::thread_rng();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let public = rsa_key.to_public_key();
    let ec_key = p256::SecretKey::random(&mut rng);
    let point = ec_key.public_key().to_encoded_point(false);
    let jwks = json!({"keys": [
        {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rsa1",
         "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
         "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())},
        {"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": "ec1",
         "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
         "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())},
    ]});
    let claims = json!({
        "iss": ISS,
        "sub": "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs",
        "aud": "modelgate",
        "exp": NOW + 3600,
        "iat": NOW - 10,
        "email": "user@example.com",
        "email_verified": true,
        "groups": ["kubeflow-users"],
        "name": "user",
    });
    let sign = |alg, kid: &str, key: EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let rsa_pem = rsa_key.to_pkcs8_pem(Default::default()).unwrap();
    let ec_pem = ec_key.to_pkcs8_pem(Default::default()).unwrap();
    Keys {
        jwks: Jwks::parse(jwks.to_string().as_bytes()).unwrap(),
        rs256_token: sign(
            Algorithm::RS256,
            "rsa1",
            EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap(),
        ),
        es256_token: sign(
            Algorithm::ES256,
            "ec1",
            EncodingKey::from_ec_pem(ec_pem.as_bytes()).unwrap(),
        ),
    }
}

fn params() -> VerifyParams {
    VerifyParams {
        issuer: ISS.into(),
        audiences: vec!["modelgate".into()],
        leeway_secs: 30,
        userid_claim: "email".into(),
        userid_prefix: String::new(),
        groups_claim: "groups".into(),
    }
}

/// Runs a future that must complete without waiting (a verified-cache hit, or keys already
/// loaded), without a runtime, so the figure is the verification alone.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future waited; the benchmark expects no I/O"),
    }
}

async fn no_fetch() -> Result<Jwks, String> {
    Err("the benchmark fetches no keys".into())
}

fn jwt(c: &mut Criterion) {
    let k = keys();
    let p = params();
    let mut group = c.benchmark_group("jwt");
    group.bench_function("verify_rs256", |b| {
        b.iter(|| verify(black_box(&k.rs256_token), &k.jwks, &p, NOW).unwrap())
    });
    group.bench_function("verify_es256", |b| {
        b.iter(|| verify(black_box(&k.es256_token), &k.jwks, &p, NOW).unwrap())
    });

    // The gateway's path: every request after the first with the same token is a cache hit.
    let cache = KeyCache::new(Duration::from_secs(10));
    cache.replace(k.jwks.clone());
    group.bench_function("key_cache_hit_rs256", |b| {
        b.iter(|| ready(cache.verify(black_box(&k.rs256_token), &p, NOW, no_fetch)).unwrap())
    });
    // Cache off: KeyCache overhead (snapshot load, cache key hashing) plus a full verification.
    let uncached = KeyCache::new(Duration::from_secs(10)).with_verified_cache(Duration::ZERO, 0);
    uncached.replace(k.jwks.clone());
    group.bench_function("key_cache_off_rs256", |b| {
        b.iter(|| ready(uncached.verify(black_box(&k.rs256_token), &p, NOW, no_fetch)).unwrap())
    });
    group.finish();
}

fn session(c: &mut Criterion) {
    let codec = SessionCodec::new(&[Secret::new(
        "bench-cookie-secret-0123456789abcdef-0123456789",
    )]);
    let s = Session {
        identity: Identity {
            user: "user@example.com".into(),
            groups: vec!["kubeflow-users".into()],
        },
        expires_at: NOW + 24 * 3600,
        issued_at: NOW,
    };
    let sealed = codec.seal_session(COOKIE, &s);
    // A rotated secret: the cookie was sealed with the old one, now second in the list.
    let rotated = SessionCodec::new(&[
        Secret::new("bench-cookie-secret-new-0123456789abcdef-0123"),
        Secret::new("bench-cookie-secret-0123456789abcdef-0123456789"),
    ]);
    let mut group = c.benchmark_group("session");
    group.bench_function("open_session", |b| {
        b.iter(|| codec.open_session(COOKIE, black_box(&sealed), NOW).unwrap())
    });
    group.bench_function("open_session_second_key", |b| {
        b.iter(|| {
            rotated
                .open_session(COOKIE, black_box(&sealed), NOW)
                .unwrap()
        })
    });
    group.bench_function("seal_session", |b| {
        b.iter(|| codec.seal_session(COOKIE, black_box(&s)))
    });
    group.finish();
}

criterion_group!(benches, jwt, session);
criterion_main!(benches);
