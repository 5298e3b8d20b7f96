//! Self-test of the OpenID Connect provider fixture (tests/oidc): it must look like Dex and its
//! test controls must do what the gateway's auth tests rely on.

use crate::support::oidc::{
    decode_jwt, pkce_challenge, OidcProvider, ADMIN, CLIENT_ID, CLIENT_SECRET, CLI_CLIENT_ID,
    PASSWORD, USER,
};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

const CALLBACK: &str = "http://127.0.0.1:9/authservice/oidc/callback";

async fn get_json(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn published_kids(oidc: &OidcProvider) -> Vec<String> {
    let (status, jwks) = get_json(&format!("{}/keys", oidc.issuer())).await;
    assert_eq!(status, StatusCode::OK);
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Discovery is served under the Dex issuer with Dex's endpoint paths, device flow included.
#[tokio::test]
async fn discovery_has_dex_paths() {
    let oidc = OidcProvider::start(&[CALLBACK.to_owned()]).await;
    let issuer = oidc.issuer();
    assert_eq!(issuer, format!("http://127.0.0.1:{}/dex", oidc.port()));
    let (status, doc) = get_json(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(status, StatusCode::OK);
    for (field, path) in [
        ("issuer", ""),
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/keys"),
        ("userinfo_endpoint", "/userinfo"),
        ("device_authorization_endpoint", "/device/code"),
        ("end_session_endpoint", "/logout"),
    ] {
        assert_eq!(doc[field], format!("{issuer}{path}"), "{field}");
    }
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    let (_, jwks) = get_json(&format!("{issuer}/keys")).await;
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert_eq!(algs, ["RS256", "ES256"]);
}

/// A code-flow login (PKCE, login form) yields an RS256 ID token with Dex's claims and groups.
#[tokio::test]
async fn id_token_has_dex_claims() {
    let oidc = OidcProvider::start(&[]).await;
    let token = oidc.id_token(USER, PASSWORD, CALLBACK).await;
    let (header, claims) = decode_jwt(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], oidc.current_public_jwk().await["kid"]);
    assert_eq!(claims["iss"], oidc.issuer());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["email"], USER);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "user");
    assert_eq!(claims["groups"], json!(["kubeflow-users"]));
    // Dex's subject: base64 of protobuf {user_id, connector_id: "local"}.
    assert_eq!(
        claims["sub"],
        "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs"
    );

    let admin = oidc.id_token(ADMIN, PASSWORD, CALLBACK).await;
    assert_eq!(
        decode_jwt(&admin).1["groups"],
        json!(["admins", "kubeflow-users"])
    );
}

/// The refresh token works with client_secret_post too, and yields a new ID token.
#[tokio::test]
async fn refresh_with_client_secret_post() {
    let oidc = OidcProvider::start(&[]).await;
    let tokens = oidc.tokens(USER, PASSWORD, CALLBACK).await;
    let refresh = tokens["refresh_token"].as_str().expect("refresh_token");
    let response = reqwest::Client::new()
        .post(format!("{}/token", oidc.issuer()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed: Value = response.json().await.unwrap();
    assert_eq!(
        decode_jwt(refreshed["id_token"].as_str().unwrap()).1["email"],
        USER
    );
}

/// A wrong password shows the login form again with an error, and no redirect.
#[tokio::test]
async fn wrong_password_shows_the_form_again() {
    let oidc = OidcProvider::start(&[]).await;
    let client = OidcProvider::browser();
    let authorize = Url::parse_with_params(
        &format!("{}/auth", oidc.issuer()),
        [
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", CALLBACK),
            (
                "code_challenge",
                &pkce_challenge("a-verifier-long-enough-for-rfc-7636-minimum-43"),
            ),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let response = client.get(authorize).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let interaction = format!(
        "http://127.0.0.1:{}{}",
        oidc.port(),
        response.headers()["location"].to_str().unwrap()
    );
    let form = client
        .get(&interaction)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        form.contains(r#"name="login""#) && form.contains(r#"name="password""#),
        "{form}"
    );
    let response = client
        .post(&interaction)
        .form(&[("login", USER), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Invalid Email Address and password"),
        "{page}"
    );
    assert!(page.contains(r#"name="password""#), "{page}");
}

/// Rotation publishes the old and the new key, and the next ID token carries the new kid.
#[tokio::test]
async fn rotate_publishes_both_keys() {
    let oidc = OidcProvider::start(&[]).await;
    let old = oidc.current_public_jwk().await["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let new = oidc.rotate().await;
    assert_ne!(new, old);
    assert_eq!(oidc.current_public_jwk().await["kid"], new.as_str());
    let kids = published_kids(&oidc).await;
    assert!(kids.contains(&old) && kids.contains(&new), "{kids:?}");
    assert_eq!(kids.len(), 3, "two RSA keys and the EC key: {kids:?}");
    let token = oidc.id_token(USER, PASSWORD, CALLBACK).await;
    assert_eq!(decode_jwt(&token).0["kid"], new.as_str());
}

/// While the JWKS is down, /dex/keys answers 503 and discovery still works; fetches are counted.
#[tokio::test]
async fn jwks_down_answers_503() {
    let oidc = OidcProvider::start(&[]).await;
    let keys = format!("{}/keys", oidc.issuer());
    assert_eq!(oidc.keys_fetches().await, 0);
    oidc.jwks_down().await;
    assert_eq!(get_json(&keys).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let discovery = format!("{}/.well-known/openid-configuration", oidc.issuer());
    assert_eq!(get_json(&discovery).await.0, StatusCode::OK);
    oidc.jwks_up().await;
    assert_eq!(get_json(&keys).await.0, StatusCode::OK);
    assert_eq!(oidc.keys_fetches().await, 2);
}

/// `sign` returns a token over exactly the given claims, with the current kid or a forged header.
#[tokio::test]
async fn sign_returns_the_given_claims() {
    let oidc = OidcProvider::start(&[]).await;
    let claims =
        json!({"iss": "https://evil.example", "aud": "modelgate", "exp": 1, "email": USER});
    let token = oidc.sign(json!({}), claims.clone()).await;
    let (header, payload) = decode_jwt(&token);
    assert_eq!(payload, claims);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], oidc.current_public_jwk().await["kid"]);
    assert_eq!(
        token.split('.').nth(2).unwrap().len(),
        342,
        "an RS256 signature over 2048 bits"
    );

    let unsigned = oidc.sign(json!({"alg": "none"}), claims.clone()).await;
    assert_eq!(
        decode_jwt(&unsigned).0,
        json!({"alg": "none", "typ": "JWT"})
    );
    assert!(unsigned.ends_with('.'));
}

/// The device flow for the public CLI client: device code, approval via the pages, tokens.
#[tokio::test]
async fn device_flow_for_the_cli_client() {
    let oidc = OidcProvider::start(&[]).await;
    let http = reqwest::Client::new();
    let start: Value = http
        .post(format!("{}/device/code", oidc.issuer()))
        .form(&[
            ("client_id", CLI_CLIENT_ID),
            ("scope", "openid email groups offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        start["verification_uri"],
        format!("{}/device", oidc.issuer())
    );
    let user_code = start["user_code"].as_str().unwrap();
    let device_code = start["device_code"].as_str().unwrap();
    let poll = || async {
        let response = http
            .post(format!("{}/token", oidc.issuer()))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", CLI_CLIENT_ID),
            ])
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let (status, pending) = poll().await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(pending["error"], "authorization_pending");

    oidc.approve_device(user_code, ADMIN, PASSWORD).await;
    let (status, tokens) = poll().await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (_, claims) = decode_jwt(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["aud"], CLI_CLIENT_ID);
    assert_eq!(claims["email"], ADMIN);
    assert_eq!(claims["groups"], json!(["admins", "kubeflow-users"]));
}

/// The PKCE helper matches RFC 7636 appendix B.
#[test]
fn pkce_challenge_matches_rfc7636() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}
