//! A model server is tenant code: the user's credentials stay between the browser and the
//! gateway, a model server cannot set the gateway's cookies, and what the gateway says about a
//! failure names the client's mistake, not the gateway's wiring. Also the login redirect that
//! Kubeflow's documented curl login relies on, and the session brake. Against the real gateway
//! and the test OpenID Connect provider (tests/oidc), set up as in `auth.rs`.

use crate::auth::{browser, iris_url, now, sealed, setup, ADMIN, IRIS, OPEN, PASSWORD, USER};
use crate::support::gateway::{metric, BIN};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The gateway's session and login-state cookies never reach a model server (the others do),
/// nor does an `Authorization` header the gateway verified; on a path where auth is off, the
/// gateway's cookies still go and a client's own `Authorization` passes as sent.
#[tokio::test]
async fn credentials_stay_with_the_gateway() {
    let s = setup("").await;
    let session = s.seal(USER);
    let r =
        s.gw.get(IRIS, "/v1/models/sklearn-iris")
            .header(
                "cookie",
                format!(
                    "a=1; authservice_session={session}; authservice_session_state_abcdefgh=x; b=2"
                ),
            )
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.requests().pop().unwrap();
    assert_eq!(seen.header_all("cookie"), ["a=1; b=2"]);
    assert_eq!(seen.header("kubeflow-userid"), Some(USER));

    let token = s.token(USER).await;
    for bearer in [session.as_str(), token.as_str()] {
        let r =
            s.gw.get(IRIS, "/v1/models/sklearn-iris")
                .header("authorization", format!("Bearer {bearer}"))
                .header("cookie", format!("authservice_session={session}"))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        let seen = s.up.requests().pop().unwrap();
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(
            seen.header("cookie"),
            None,
            "only the gateway's cookie was sent"
        );
    }

    // A namespace with auth off: the model may run its own auth on `Authorization`.
    let r =
        s.gw.get(OPEN, "/v1/models/open-model")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .header("cookie", format!("authservice_session={session}; c=3"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.open_up.requests().pop().unwrap();
    assert_eq!(seen.header("authorization"), Some("Basic dXNlcjpwYXNz"));
    assert_eq!(seen.header_all("cookie"), ["c=3"]);
    // ... but a gateway session sent as a bearer is the gateway's credential even there.
    let r =
        s.gw.get(OPEN, "/v1/models/open-model")
            .header("authorization", format!("Bearer {session}"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.open_up.requests().pop().unwrap().header("authorization"),
        None
    );
}

/// With `auth.forward_credentials: true` the verified credential goes on to the model; the
/// login-state cookies still do not.
#[tokio::test]
async fn forward_credentials_passes_them_on() {
    let s = setup("  forward_credentials: true\n").await;
    let token = s.token(USER).await;
    let r = s.bearer_get(&token).await;
    assert_eq!(r.status(), 200);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        s.up.requests().pop().unwrap().header("authorization"),
        Some(bearer.as_str())
    );
    let session = s.seal(USER);
    let r =
        s.gw.get(IRIS, "/v1/models/sklearn-iris")
            .header(
                "cookie",
                format!("authservice_session={session}; authservice_session_state_abcdefgh=x"),
            )
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.up.requests().pop().unwrap().header_all("cookie"),
        [format!("authservice_session={session}")]
    );
}

/// A `Set-Cookie` from a model server for the session or a login-state cookie, with or without
/// `Domain`, is removed from the response and counted; the model's other cookies pass.
#[tokio::test]
async fn upstreams_cannot_set_the_gateway_cookies() {
    let s = setup("").await;
    let r =
        s.gw.get(IRIS, "/v1/models/sklearn-iris")
            .header("cookie", format!("authservice_session={}", s.seal(USER)))
            .header("x-test-set-cookie", "authservice_session=fixed; Path=/")
            .header(
                "x-test-set-cookie",
                "authservice_session=fixed; Domain=example.com; Path=/",
            )
            .header("x-test-set-cookie", "authservice_session_state_abcdefgh=x")
            // Nameless: browsers store it and send back `authservice_session=fixed`.
            .header("x-test-set-cookie", "=authservice_session=fixed; Path=/")
            .header("x-test-set-cookie", "theme=dark; Path=/")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let set: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["theme=dark; Path=/"]);
    let m =
        s.gw.wait_metrics(|m| m.contains("modelgate_blocked_set_cookies_total{"))
            .await;
    assert_eq!(
        metric(
            &m,
            r#"modelgate_blocked_set_cookies_total{isvc="sklearn-iris",namespace="kserve-test"}"#
        ),
        4.0
    );
}

/// A verified user id that is not a safe header value (here with a ',', which reads as two
/// users to anything that splits the header) is refused with 400 and never forwarded.
#[tokio::test]
async fn unforwardable_user_ids_are_refused() {
    let s = setup("").await;
    let t = now();
    let token = s
        .provider
        .sign(
            json!({}),
            json!({"iss": s.provider.issuer(), "aud": "modelgate", "sub": "u1",
                   "email": format!("{USER},{ADMIN}"), "iat": t, "exp": t + 600}),
        )
        .await;
    let r = s.bearer_get(&token).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("user id cannot be forwarded"),
        "{body}"
    );
    assert_eq!(s.up.hits(), 0);
}

/// A failed login says what went wrong in the client's terms: the provider's error code, never
/// its free-text description, and never the provider's address; the detail is in the log with
/// the request id. The gateway's answers carry `nosniff` and `no-store`.
#[tokio::test]
async fn failures_do_not_describe_the_wiring() {
    let s = setup("").await;
    let port = s.gw.port;
    let internal = format!("127.0.0.1:{}", s.provider.port());
    let r = s
        .gw
        .get(
            IRIS,
            "/authservice/oidc/callback?error=access_denied&error_description=LDAP%20at%2010.0.0.3%20is%20down",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    assert_eq!(
        body,
        r#"{"error":"login failed: the identity provider returned access_denied"}"#
    );

    // A code the provider does not know: the exchange fails at the provider's token endpoint.
    let client = browser(port);
    let r = client
        .get(iris_url(port, "/v1/models/sklearn-iris"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let state = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let r = client
        .get(iris_url(
            port,
            &format!("/authservice/oidc/callback?code=bogus&state={state}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert_eq!(
        body,
        r#"{"error":"login failed: the identity provider refused the login code"}"#
    );
    assert!(!body.contains(&internal));
    let log = s.gw.log();
    assert!(
        log.lines().any(|l| l.contains("login callback refused")
            && l.contains(&id)
            && l.contains(&internal)),
        "the detail is logged with the request id:\n{log}"
    );
}

/// Logout sends the browser to the provider's end-session endpoint at an address it can reach:
/// on `authorization_url`'s base (here relative, through the gateway), not at the in-cluster
/// issuer address that discovery reports.
#[tokio::test]
async fn logout_goes_where_the_browser_reaches_the_provider() {
    let s = setup("  authorization_url: /dex/auth\n").await;
    let client = browser(s.gw.port);
    let r = client
        .get(iris_url(s.gw.port, "/v1/models/sklearn-iris"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/dex/auth?"));
    let r = client
        .post(iris_url(s.gw.port, "/authservice/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/dex/logout");
    // The relative end-session URL works through the gateway: it is the provider's page.
    let r = client
        .get(iris_url(s.gw.port, "/dex/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

/// `auth.sessions_not_before` refuses sessions sealed before it, as cookie or bearer, and a
/// plain GET is sent to log in again; a session sealed since passes.
#[tokio::test]
async fn sessions_not_before_refuses_older_sessions() {
    let cutoff = now() - 30;
    let at =
        humantime_serde::re::humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(cutoff));
    let s = setup(&format!("  sessions_not_before: \"{at}\"\n")).await;
    let old = sealed(USER, cutoff - 1);
    let new = sealed(USER, cutoff);
    let get = |cookie: Option<&str>, bearer: Option<&str>| {
        let mut r =
            s.gw.get(IRIS, "/v1/models/sklearn-iris")
                .header("accept", "application/json");
        if let Some(c) = cookie {
            r = r.header("cookie", format!("authservice_session={c}"));
        }
        if let Some(b) = bearer {
            r = r.header("authorization", format!("Bearer {b}"));
        }
        r.send()
    };
    for r in [
        get(Some(&old), None).await.unwrap(),
        get(None, Some(&old)).await.unwrap(),
    ] {
        assert_eq!(r.status(), 401);
        let body = r.text().await.unwrap();
        assert!(body.contains("session was revoked"), "{body}");
    }
    let r = browser(s.gw.port)
        .get(iris_url(s.gw.port, "/v1/models/sklearn-iris"))
        .header("cookie", format!("authservice_session={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "a GET logs in again");
    assert_eq!(get(Some(&new), None).await.unwrap().status(), 200);
    assert_eq!(s.up.hits(), 1);
}

/// Kubeflow's documented way to get a session without a browser works with plain curl: GET the
/// model URL following redirects to the provider's login form, POST the credentials following
/// redirects back through the callback, read `authservice_session` from the cookie jar and use
/// it. A JSON client still gets the 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_follows_the_login_redirects() {
    let s = setup("").await;
    let port = s.gw.port;
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("jar");
    let url = iris_url(port, "/v1/models/sklearn-iris");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-L", "--max-redirs", "10", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args(["--resolve", &format!("{IRIS}:{port}:127.0.0.1")])
            .args(args)
            .output()
            .expect("curl is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // 1. The model URL, as curl sends it (Accept: */*), ends on the provider's login form.
    let page = curl(&["-w", "\n%{url_effective}", &url]);
    let (html, at) = page.rsplit_once('\n').unwrap();
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no login form at {at}:\n{html}"));
    let action = reqwest::Url::parse(at)
        .unwrap()
        .join(action)
        .unwrap()
        .to_string();
    // 2. The credentials, following the redirects through the callback back to the model.
    let body = curl(&[
        "--data-urlencode",
        &format!("login={USER}"),
        "--data-urlencode",
        &format!("password={PASSWORD}"),
        "-w",
        "\n%{http_code} %{url_effective}",
        &action,
    ]);
    let last = body.lines().last().unwrap();
    assert_eq!(last, format!("200 {url}"), "{body}");
    // 3. The cookie jar holds the session; curl uses it with nothing else.
    let jar_text = std::fs::read_to_string(&jar).unwrap();
    let session = jar_text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 7 && f[5] == "authservice_session").then(|| f[6].to_string())
        })
        .unwrap_or_else(|| panic!("no authservice_session in the jar:\n{jar_text}"));
    // The status curl gets for the model URL, sent as the README's curl commands send it.
    let status = |extra: [&str; 2]| {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", &format!("Host: {IRIS}")])
            .args(extra)
            .arg(format!("http://127.0.0.1:{port}/v1/models/sklearn-iris"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cookie = format!("authservice_session={session}");
    assert_eq!(status(["--cookie", &cookie]), "200");
    assert_eq!(
        s.up.requests().last().unwrap().header("kubeflow-userid"),
        Some(USER)
    );
    assert_eq!(status(["-H", "Accept: application/json"]), "401");
}

/// The periodic JWKS refresh goes through the key cache's single flight and counts for its
/// rate limit: right after a refresh, a token with an unknown `kid` does not trigger another
/// fetch (today's refresh bypassed both).
#[tokio::test]
async fn periodic_refresh_counts_for_the_refetch_rate_limit() {
    let s = setup("  jwks_refresh: 10s\n").await;
    // Discovery and the first key fetch are done once the gateway is ready; wait for the
    // first periodic refresh after them.
    let at_start = s.provider.keys_fetches().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.provider.keys_fetches().await <= at_start {
        assert!(Instant::now() < deadline, "no periodic refresh in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.provider.rotate().await;
    let t = now();
    let token = s
        .provider
        .sign(
            json!({}),
            json!({"iss": s.provider.issuer(), "aud": "modelgate", "sub": "u1",
                   "email": USER, "iat": t, "exp": t + 600}),
        )
        .await;
    let r = s.bearer_get(&token).await;
    assert_eq!(
        r.status(),
        401,
        "the refetch is rate-limited right after a refresh"
    );
    assert_eq!(
        s.provider.keys_fetches().await,
        at_start + 1,
        "no fetch beyond the periodic one"
    );
}

/// `modelgate login --timeout N` waits N seconds for the user before it gives up, whatever the
/// provider's poll interval (5 s here).
#[tokio::test]
async fn cli_login_waits_its_whole_timeout() {
    let s = setup("").await;
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let issuer = s.provider.issuer();
        move || {
            Command::new(BIN)
                .args([
                    "login",
                    "--issuer",
                    &issuer,
                    "--client-id",
                    "modelgate-cli",
                    "--timeout",
                    "3",
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gave up at the deadline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "gave up after {took:?}"
    );
}
