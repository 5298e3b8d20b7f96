//! Every error the gateway answers itself, and the one function that turns one into an HTTP
//! response. Hooks never build error responses by hand.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

/// What went wrong, in the client's terms: what the client did wrong, never how the gateway
/// is wired (no internal addresses, no provider text); the detail goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// No `Host`, more than one, or one that is not a host name.
    BadHost(String),
    /// A request head refused by `routes::request` (framing, target, path, header names).
    Head(routes::request::HeadError),
    /// The request itself is malformed (body framing pingora refused while streaming).
    BadRequest(String),
    /// No route table has been loaded yet.
    NotReady,
    /// The OpenID Connect provider has not been discovered yet.
    AuthNotReady,
    /// Refused by the auth decision (401, 403, 400 or 503, with its challenge).
    Auth(auth::decide::Deny),
    /// The login callback failed; the text is safe to show (the detail was logged).
    LoginFailed(String),
    /// No InferenceService claims the host (or the host's port is not served here).
    UnknownHost(String),
    /// The request body is larger than `downstream.max_request_body_bytes`.
    BodyTooLarge { limit: u64 },
    /// Every revision of the component was tried, or none has an address.
    NoRevisionReachable { isvc: String },
    /// The upstream did not answer within the component's timeout.
    UpstreamTimeout { isvc: String, secs: u64 },
    /// The upstream broke the exchange (reset, malformed response).
    UpstreamFailed { isvc: String },
    /// The gateway itself failed; never expected.
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadHost(_) | GatewayError::BadRequest(_) => 400,
            GatewayError::Head(e) => e.status(),
            GatewayError::NotReady | GatewayError::AuthNotReady => 503,
            GatewayError::Auth(d) => d.status(),
            GatewayError::LoginFailed(_) => 401,
            GatewayError::UnknownHost(_) => 404,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::NoRevisionReachable { .. } => 503,
            GatewayError::UpstreamTimeout { .. } => 504,
            GatewayError::UpstreamFailed { .. } => 502,
            GatewayError::Internal => 500,
        }
    }

    pub fn message(&self) -> String {
        match self {
            GatewayError::BadHost(why) => format!("bad Host header: {why}"),
            GatewayError::BadRequest(why) => format!("bad request: {why}"),
            GatewayError::Head(e) if e.status() == 501 => format!("not implemented: {e}"),
            GatewayError::Head(e) => format!("bad request: {e}"),
            GatewayError::NotReady => "routes are not loaded yet".into(),
            GatewayError::AuthNotReady => "the OpenID Connect provider is not reachable yet".into(),
            GatewayError::Auth(d) => d.message(),
            GatewayError::LoginFailed(why) => format!("login failed: {why}"),
            GatewayError::UnknownHost(h) => format!("no InferenceService serves host {h:?}"),
            GatewayError::BodyTooLarge { limit } => {
                format!("request body is larger than {limit} bytes")
            }
            GatewayError::NoRevisionReachable { isvc } => {
                format!("no revision of {isvc} is reachable")
            }
            GatewayError::UpstreamTimeout { isvc, secs } => {
                format!("{isvc} did not answer within {secs} s")
            }
            GatewayError::UpstreamFailed { isvc } => format!("{isvc} failed to answer"),
            GatewayError::Internal => "internal gateway error".into(),
        }
    }

    /// The JSON body, `{"error": "..."}`.
    pub fn body(&self) -> Bytes {
        Bytes::from(serde_json::json!({ "error": self.message() }).to_string())
    }

    /// Carries this error through pingora's `Result` as an `HTTPStatus` error, so that
    /// `fail_to_proxy` can answer it.
    pub fn into_pingora(self) -> Box<Error> {
        Error::explain(ErrorType::HTTPStatus(self.status()), self.message())
    }

    /// Classifies a pingora error raised while proxying. Connect failures only reach here when
    /// failover found nothing else to try.
    pub fn from_pingora(e: &Error, isvc: &str, timeout_secs: u64, body_limit: u64) -> Self {
        use ErrorType::*;
        let isvc = isvc.to_string();
        match e.etype() {
            HTTPStatus(413) => GatewayError::BodyTooLarge { limit: body_limit },
            HTTPStatus(503) => GatewayError::NoRevisionReachable { isvc },
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | BindError
            | SocketError => GatewayError::NoRevisionReachable { isvc },
            ReadTimedout | WriteTimedout => GatewayError::UpstreamTimeout {
                isvc,
                secs: timeout_secs,
            },
            _ => GatewayError::UpstreamFailed { isvc },
        }
    }

    /// The connection cannot carry another request after this answer: an oversized body is
    /// never read to its end, and a refused framing leaves the next request's start unknown.
    pub fn closes(&self) -> bool {
        match self {
            GatewayError::BodyTooLarge { .. } => true,
            GatewayError::Head(e) => e.closes(),
            _ => false,
        }
    }
}

/// Headers on every response the gateway writes itself: a browser must not sniff a JSON error
/// into HTML, and no cache may keep an answer about one user's credentials.
pub const OWN_RESPONSE_HEADERS: [(&str, &str); 2] = [
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
];

/// Writes `err` as the whole response, with `x-request-id` when known. Uses the session's
/// normal write path (not `respond_error`) so a keep-alive connection survives a 404. `close`
/// says the connection will not carry another request (the client must not reuse it).
pub async fn respond(
    session: &mut Session,
    err: &GatewayError,
    request_id: Option<&HeaderValue>,
    close: bool,
) -> pingora::Result<()> {
    let body = err.body();
    let mut resp = ResponseHeader::build(err.status(), Some(6))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (name, value) in OWN_RESPONSE_HEADERS {
        resp.insert_header(name, value)?;
    }
    if let Some(id) = request_id {
        resp.insert_header("x-request-id", id.clone())?;
    }
    if let Some(challenge) = match err {
        GatewayError::Auth(d) => d.www_authenticate(),
        GatewayError::LoginFailed(_) => Some("Bearer realm=\"modelgate\"".to_owned()),
        _ => None,
    } {
        resp.insert_header("www-authenticate", challenge)?;
    }
    if close || err.closes() {
        resp.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// A 302 to `location`, setting `cookies`. Used by the login flow; the connection stays open.
pub async fn redirect(
    session: &mut Session,
    location: &str,
    cookies: &[String],
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(302, Some(5 + cookies.len()))?;
    resp.insert_header("location", location)?;
    resp.insert_header("content-length", "0")?;
    for (name, value) in OWN_RESPONSE_HEADERS {
        resp.insert_header(name, value)?;
    }
    resp.insert_header("x-request-id", request_id.clone())?;
    for c in cookies {
        resp.append_header("set-cookie", c)?;
    }
    session.write_response_header(Box::new(resp), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each failure maps to the status the issue names, with a JSON `error` body.
    #[test]
    fn statuses_and_bodies() {
        let cases = [
            (GatewayError::BadHost("x".into()), 400),
            (GatewayError::UnknownHost("h".into()), 404),
            (GatewayError::BodyTooLarge { limit: 1 }, 413),
            (
                GatewayError::NoRevisionReachable {
                    isvc: "ns/m".into(),
                },
                503,
            ),
            (
                GatewayError::UpstreamTimeout {
                    isvc: "ns/m".into(),
                    secs: 1,
                },
                504,
            ),
            (
                GatewayError::UpstreamFailed {
                    isvc: "ns/m".into(),
                },
                502,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status);
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(v["error"], e.message());
        }
    }

    /// Connect failures are "unreachable" (503), read timeouts are 504, the rest 502.
    #[test]
    fn pingora_errors_are_classified() {
        let class =
            |t: ErrorType| GatewayError::from_pingora(&Error::new(t), "ns/m", 3, 10).status();
        assert_eq!(class(ErrorType::ConnectRefused), 503);
        assert_eq!(class(ErrorType::ConnectTimedout), 503);
        assert_eq!(class(ErrorType::ReadTimedout), 504);
        assert_eq!(class(ErrorType::HTTPStatus(413)), 413);
        assert_eq!(class(ErrorType::HTTPStatus(503)), 503);
        assert_eq!(class(ErrorType::ConnectionClosed), 502);
        assert_eq!(class(ErrorType::InvalidHTTPHeader), 502);
    }
}
