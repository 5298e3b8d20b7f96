//! Every error the gateway answers itself, and the one function that turns one into an HTTP
//! response. Hooks never build error responses by hand.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorType};

/// What went wrong, in the client's terms: what the client did wrong, never how the gateway
/// is wired (no internal addresses, no provider text); the detail goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// No `Host`, more than one, or one that is not a host name.
    BadHost(String),
    /// A request head refused by `routes::request` (framing, target, path, header names).
    Head(routes::request::HeadError),
    /// The request itself is malformed (a head pingora's parser refused, body framing refused
    /// while streaming).
    BadRequest(String),
    /// The request head did not arrive within `downstream.header_timeout`.
    HeaderTimeout { secs: u64 },
    /// The request body stalled longer than `downstream.body_idle_timeout`.
    BodyTimeout { secs: u64 },
    /// A protocol upgrade (WebSocket): no model server speaks one, and a tunnel would carry
    /// traffic no check of the gateway sees.
    UpgradeNotSupported,
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
            GatewayError::HeaderTimeout { .. } | GatewayError::BodyTimeout { .. } => 408,
            GatewayError::UpgradeNotSupported => 501,
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
            GatewayError::HeaderTimeout { secs } => {
                format!("the request head did not arrive within {secs} s")
            }
            GatewayError::BodyTimeout { secs } => {
                format!("the request body stalled for more than {secs} s")
            }
            GatewayError::UpgradeNotSupported => {
                "not implemented: protocol upgrades (WebSocket) are not supported".into()
            }
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
            GatewayError::BodyTooLarge { .. }
            | GatewayError::BadRequest(_)
            | GatewayError::HeaderTimeout { .. }
            | GatewayError::BodyTimeout { .. } => true,
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

/// The response head for `err`: JSON, not cached, not sniffed, with its challenge; closing
/// the connection when `close` or the error demands it.
fn error_head(
    err: &GatewayError,
    body_len: usize,
    request_id: Option<&HeaderValue>,
    close: bool,
) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build_no_case(err.status(), Some(7))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body_len)?;
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
        resp.insert_header(http::header::WWW_AUTHENTICATE, challenge)?;
    }
    if close || err.closes() {
        resp.insert_header(http::header::CONNECTION, "close")?;
    }
    Ok(resp)
}

/// Writes `err` as the whole response, with `x-request-id` when known. A keep-alive connection
/// survives a 404; `close` (or an error that demands it) closes it after the answer.
pub async fn respond(
    session: &mut ServerSession,
    err: &GatewayError,
    request_id: Option<&HeaderValue>,
    close: bool,
) -> pingora::Result<()> {
    let body = err.body();
    let resp = error_head(err, body.len(), request_id, close)?;
    if close || err.closes() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await
}

/// The bytes of `err` as a whole HTTP/1.1 response that closes the connection, for a head that
/// never became a request (pingora's parser refused it, or it never finished): there is no
/// session to write through.
pub fn raw_response(err: &GatewayError, request_id: &HeaderValue) -> Vec<u8> {
    let body = err.body();
    let status = http::StatusCode::from_u16(err.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    for (name, value) in OWN_RESPONSE_HEADERS {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

/// A 302 to `location`, setting `cookies`. Used by the login flow; the connection stays open.
pub async fn redirect(
    session: &mut ServerSession,
    location: &str,
    cookies: &[String],
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build_no_case(302, Some(5 + cookies.len()))?;
    resp.insert_header(http::header::LOCATION, location)?;
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    for (name, value) in OWN_RESPONSE_HEADERS {
        resp.insert_header(name, value)?;
    }
    resp.insert_header("x-request-id", request_id.clone())?;
    for c in cookies {
        resp.append_header(http::header::SET_COOKIE, c)?;
    }
    session.write_response_header(Box::new(resp)).await?;
    session.finish_body().await
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

    /// A raw response is a whole HTTP/1.1 message that closes the connection.
    #[test]
    fn raw_responses() {
        let e = GatewayError::HeaderTimeout { secs: 10 };
        let raw = String::from_utf8(raw_response(&e, &HeaderValue::from_static("id-1"))).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close") && head.contains("x-request-id: id-1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            r#"{"error":"the request head did not arrive within 10 s"}"#
        );
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
