//! What a request head must be before anything routes, authenticates or forwards it: body
//! framing that every hop reads the same way, a request target without fragments or encoded
//! NULs, and one normalised path that auth, routing and the upstream all see. Pure functions
//! over the parsed head (`http` types and raw bytes), so any request loop can call them and the
//! rules are unit-tested without sockets.
//!
//! The stance is Envoy's edge-proxy one: where a message could be read two ways by two hops
//! (request smuggling, path confusion between the gateway and a model server), refuse it.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Version};
use std::borrow::Cow;
use std::fmt;

/// Why a request head is refused. Each knows its status and whether the connection must be
/// closed after the answer (anything about body framing: the next request's boundary is
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Two `Content-Length` lines, or a list in one (`5, 5`). RFC 9110 §8.6 allows collapsing
    /// identical values; two hops that disagree on whether to is how requests get smuggled.
    SeveralContentLengths,
    /// A `Transfer-Encoding` that is not exactly `chunked`: repeated (`chunked, chunked`),
    /// empty, malformed, or on HTTP/1.0.
    BadTransferEncoding(String),
    /// A transfer coding other than `chunked` (`gzip, chunked`): RFC 9112 §6.1 says 501.
    UnsupportedTransferCoding(String),
    /// `#` in the request target: a fragment is never sent by a client (RFC 9110 §7.1), so one
    /// that arrives is an attempt to make two parsers disagree about the path.
    Fragment,
    /// `%00` anywhere in the target, or another percent-encoded control character in the path.
    EncodedControl,
    /// A byte in the target that must be percent-encoded: a control character, a space, or
    /// anything beyond ASCII (which no two parsers decode alike).
    RawByte(u8),
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// `%2F` or `%5C` in the path (Envoy's `path_with_escaped_slashes_action: REJECT_REQUEST`),
    /// or a double-encoded dot, slash, backslash, `;`, `%` or control character (`%252e`),
    /// which a backend that decodes twice would read as a separator, a dot segment, a
    /// parameter or a NUL.
    EncodedSeparator,
    /// A backslash in the path: some servers treat it as `/`.
    Backslash,
    /// The target is not a path (`*`, an authority, or empty).
    NotAPath,
    /// A header name with `_`, when underscores are set to be rejected.
    Underscore(HeaderName),
    /// A line of the head that ends in a bare LF: RFC 9112 §2.2 lets a recipient accept it, and
    /// a hop that does and one that does not disagree on where the head ends.
    BareLf,
    /// A CR that is not part of a line's CRLF (RFC 9112 §2.2: reject or replace with SP).
    BareCr,
    /// A header line that starts with a space or tab: obsolete line folding (RFC 9112 §5.2).
    ObsFold,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1: reject with 400).
    SpaceBeforeColon,
    /// A NUL in a field value.
    Nul,
    /// The head is longer than the limit: 431.
    HeadTooLarge(usize),
    /// More header fields than the limit: 431.
    TooManyFields(usize),
    /// The request line is longer than the limit: 414.
    RequestLineTooLong(usize),
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::UnsupportedTransferCoding(_) => 501,
            HeadError::HeadTooLarge(_) | HeadError::TooManyFields(_) => 431,
            HeadError::RequestLineTooLong(_) => 414,
            _ => 400,
        }
    }

    /// The connection cannot carry another request after this answer: the body framing is in
    /// doubt, or the head itself was not read to its end.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            HeadError::SeveralContentLengths
                | HeadError::BadTransferEncoding(_)
                | HeadError::UnsupportedTransferCoding(_)
                | HeadError::BareLf
                | HeadError::BareCr
                | HeadError::ObsFold
                | HeadError::SpaceBeforeColon
                | HeadError::Nul
                | HeadError::HeadTooLarge(_)
                | HeadError::TooManyFields(_)
                | HeadError::RequestLineTooLong(_)
        )
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::SeveralContentLengths => f.write_str("more than one Content-Length"),
            HeadError::BadTransferEncoding(v) => {
                write!(
                    f,
                    "Transfer-Encoding must be exactly \"chunked\", not {v:?}"
                )
            }
            HeadError::UnsupportedTransferCoding(v) => {
                write!(f, "transfer coding {v:?} is not supported")
            }
            HeadError::Fragment => f.write_str("'#' in the request target"),
            HeadError::EncodedControl => {
                f.write_str("percent-encoded control character in the request target")
            }
            HeadError::RawByte(b) => write!(
                f,
                "byte 0x{b:02x} in the request target must be percent-encoded"
            ),
            HeadError::BadPercentEncoding => f.write_str("malformed percent-encoding in the path"),
            HeadError::EncodedSeparator => {
                f.write_str("encoded '/' or '\\' (or a double-encoded dot or slash) in the path")
            }
            HeadError::Backslash => f.write_str("'\\' in the path"),
            HeadError::NotAPath => f.write_str("the request target is not a path"),
            HeadError::Underscore(name) => {
                write!(f, "header name {:?} contains '_'", name.as_str())
            }
            HeadError::BareLf => f.write_str("a line of the request head ends in LF without CR"),
            HeadError::BareCr => f.write_str("a CR without LF in the request head"),
            HeadError::ObsFold => f.write_str("obsolete line folding in the request head"),
            HeadError::SpaceBeforeColon => f.write_str("whitespace before ':' in a header line"),
            HeadError::Nul => f.write_str("NUL in a header value"),
            HeadError::HeadTooLarge(limit) => {
                write!(f, "the request head is larger than {limit} bytes")
            }
            HeadError::TooManyFields(limit) => {
                write!(f, "the request head has more than {limit} header fields")
            }
            HeadError::RequestLineTooLong(limit) => {
                write!(f, "the request line is longer than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for HeadError {}

/// Body framing of an HTTP/1.1 request: at most one `Content-Length` value, and a
/// `Transfer-Encoding` only as exactly `chunked` (one line, one token). A parser that already
/// dropped `Content-Length` because `Transfer-Encoding` was present must also have closed the
/// connection after the response; this sees only what is left.
pub fn check_framing(version: Version, headers: &HeaderMap) -> Result<(), HeadError> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.next().is_some() || first.as_bytes().contains(&b',') {
            return Err(HeadError::SeveralContentLengths);
        }
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    let shown = || {
        headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if version != Version::HTTP_11 {
        return Err(HeadError::BadTransferEncoding(shown()));
    }
    if codings.next().is_none() && first.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Ok(());
    }
    // The slow path: say which rule the value broke. A coding we do not know is 501 (RFC 9112
    // §6.1); anything else, `chunked` twice included, is malformed framing.
    let all = shown();
    let tokens: Vec<&str> = all
        .split(',')
        .map(|t| t.trim_matches([' ', '\t']))
        .collect();
    let is_token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if tokens.iter().all(|t| is_token(t)) {
        if let Some(other) = tokens.iter().find(|t| !t.eq_ignore_ascii_case("chunked")) {
            return Err(HeadError::UnsupportedTransferCoding((*other).to_owned()));
        }
    }
    Err(HeadError::BadTransferEncoding(all))
}

/// The raw request target as sent: no `#` and no `%00` anywhere, query included, and only
/// visible ASCII. Runs on the bytes because a URI parser drops the fragment without a word.
pub fn check_target(raw: &[u8]) -> Result<(), HeadError> {
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'#' => return Err(HeadError::Fragment),
            b'%' if raw[i + 1..].starts_with(b"00") => return Err(HeadError::EncodedControl),
            _ if !b.is_ascii_graphic() => return Err(HeadError::RawByte(b)),
            _ => {}
        }
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A segment that is `.` or `..`, also with path parameters (`..;x=y`, `..%3Bx`): Tomcat and
/// Spring strip parameters before they resolve dot segments, so `/healthz/..;x/private` is
/// `/private` to them and must be `/private` here too.
fn dot_segment(segment: &str) -> Option<bool> {
    if !segment.starts_with('.') {
        return None;
    }
    let end = segment
        .find(';')
        .into_iter()
        .chain(segment.to_ascii_lowercase().find("%3b"))
        .min()
        .unwrap_or(segment.len());
    match &segment[..end] {
        "." => Some(false),
        ".." => Some(true),
        _ => None,
    }
}

/// The one path that auth, routing and the upstream see: percent-encoded unreserved characters
/// decoded, other escapes kept as sent, repeated slashes merged, dot segments resolved (never
/// above the root), a trailing slash kept. Refuses what a backend could read as a different
/// path: a backslash, `%2F`/`%5C`, double-encoded dots and separators, encoded control
/// characters, malformed escapes. `path` is the path of the target, without its query.
///
/// Borrows when the path is already normal, which is what clients send.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, HeadError> {
    if !path.starts_with('/') {
        return Err(HeadError::NotAPath);
    }
    let bytes = path.as_bytes();
    // What clients send is already normal: one pass to see that nothing needs doing (no
    // escape, no backslash, no empty or dot segment).
    let mut prev = 0u8;
    let plain = bytes.iter().all(|&b| {
        let ok = b != b'%' && b != b'\\' && !(prev == b'/' && (b == b'/' || b == b'.'));
        prev = b;
        ok
    });
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    if bytes.contains(&b'\\') {
        return Err(HeadError::Backslash);
    }
    let mut decoded: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = path[i..].find('%').map_or(bytes.len(), |j| i + j);
            if let Some(d) = decoded.as_mut() {
                d.push_str(&path[i..next]);
            }
            i = next;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(HeadError::BadPercentEncoding);
        };
        let b = h * 16 + l;
        if b < 0x20 || b == 0x7f {
            return Err(HeadError::EncodedControl);
        }
        if b == b'/' || b == b'\\' {
            return Err(HeadError::EncodedSeparator);
        }
        if b == b'%' {
            let next = (
                bytes.get(i + 3).copied().and_then(hex),
                bytes.get(i + 4).copied().and_then(hex),
            );
            if let (Some(h2), Some(l2)) = next {
                let twice = h2 * 16 + l2;
                if matches!(twice, b'.' | b'/' | b'\\' | b';' | b'%')
                    || twice < 0x20
                    || twice == 0x7f
                {
                    return Err(HeadError::EncodedSeparator);
                }
            }
        }
        if unreserved(b) {
            decoded
                .get_or_insert_with(|| path[..i].to_owned())
                .push(b as char);
        } else if let Some(d) = decoded.as_mut() {
            d.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    let text: &str = decoded.as_deref().unwrap_or(path);
    let needs_segments = text.contains("//") || text.split('/').any(|s| dot_segment(s).is_some());
    if !needs_segments {
        return Ok(match decoded {
            Some(d) => Cow::Owned(d),
            None => Cow::Borrowed(path),
        });
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in text.split('/').skip(1) {
        trailing_slash = seg.is_empty() || dot_segment(seg).is_some();
        match (seg, dot_segment(seg)) {
            ("", _) | (_, Some(false)) => {}
            (_, Some(true)) => {
                segments.pop();
            }
            (s, None) => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The authority of an absolute-form target (`http://host:port/p?q`, as a client configured to
/// use the gateway as a forward proxy sends), as written; `None` for any other form.
pub fn absolute_form_authority(target: &[u8]) -> Option<&str> {
    let lower = target
        .get(..8)
        .map(|p| p.to_ascii_lowercase())
        .unwrap_or_default();
    let rest = if lower.starts_with(b"http://") {
        &target[7..]
    } else if lower.starts_with(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()
}

/// The request target of a raw HTTP/1 request head: the bytes between the method and the
/// version on the request line. A URI parser drops a fragment, so [`check_target`] needs these.
pub fn raw_request_target(head: &[u8]) -> Option<&[u8]> {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let start = line.iter().position(|b| *b == b' ')? + 1;
    let end = line.iter().rposition(|b| *b == b' ')?;
    (start <= end).then(|| &line[start..end])
}

/// How large a request head may be. Enforced while the head is read, so a client that never
/// finishes one holds at most `head_bytes` of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The whole head: request line, fields, line endings (nginx: 8 KiB lines, 32 KiB in all;
    /// Envoy: 60 KiB).
    pub head_bytes: usize,
    pub fields: usize,
    pub request_line: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            head_bytes: 60 * 1024,
            fields: 100,
            request_line: 8 * 1024,
        }
    }
}

/// Where an HTTP/1 request head ends, found while it arrives, and the checks that need its raw
/// bytes (a parser that accepts bare LF or folded lines has already normalised them away):
/// every line ends in CRLF, no bare CR, no obsolete folding, no whitespace before a colon, no
/// NUL, and the limits. Empty lines before the request line are skipped (RFC 9112
/// §2.2). Keeps its place between calls, so a head that arrives slowly is not scanned again
/// from its start.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// Where the unfinished line starts.
    line: usize,
    /// How far `buf` has been searched for line ends.
    pos: usize,
    fields: usize,
    /// Lines ended so far, each by a CRLF.
    lines: usize,
    request_line_done: bool,
}

impl HeadScanner {
    /// Scans `buf`, everything received for this head so far (it only grows between calls).
    /// `Some(n)`: the head is the first `n` bytes (blank line included); the rest is body or
    /// the next request. `None`: not complete yet. The line ends are found with `memchr` (one
    /// pass over the new bytes), each line's own checks look at its first bytes up to the
    /// colon, and the bytes no head may hold anywhere (a CR that is not half of a line's CRLF,
    /// a NUL) are counted once, over the complete head.
    pub fn scan(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<Option<usize>, HeadError> {
        let from = self.pos;
        for nl in memchr::memchr_iter(b'\n', &buf[from..]).map(|i| from + i) {
            if nl == self.line || buf[nl - 1] != b'\r' {
                return Err(HeadError::BareLf);
            }
            self.lines += 1;
            let line = &buf[self.line..nl - 1];
            if !self.request_line_done {
                if line.len() > limits.request_line {
                    return Err(HeadError::RequestLineTooLong(limits.request_line));
                }
                // Empty lines before the request line are skipped (RFC 9112 §2.2).
                self.request_line_done = !line.is_empty();
            } else if line.is_empty() {
                let end = nl + 1;
                if end > limits.head_bytes {
                    return Err(HeadError::HeadTooLarge(limits.head_bytes));
                }
                let head = &buf[..end];
                // Every line's LF has its CR (checked above): any other CR is a bare one.
                if memchr::memchr_iter(b'\r', head).count() != self.lines {
                    return Err(HeadError::BareCr);
                }
                if memchr::memchr(0, head).is_some() {
                    return Err(HeadError::Nul);
                }
                self.pos = end;
                return Ok(Some(end));
            } else {
                self.fields += 1;
                if self.fields > limits.fields {
                    return Err(HeadError::TooManyFields(limits.fields));
                }
                field_line(line)?;
            }
            self.line = nl + 1;
        }
        self.pos = buf.len();
        let unfinished = buf.len() - self.line;
        if !self.request_line_done && unfinished > limits.request_line {
            return Err(HeadError::RequestLineTooLong(limits.request_line));
        }
        if buf.len() > limits.head_bytes {
            return Err(HeadError::HeadTooLarge(limits.head_bytes));
        }
        Ok(None)
    }
}

/// A field line (CRLF removed) starts with neither space nor tab (obsolete folding) and has no
/// whitespace before its colon. Only the name is looked at.
fn field_line(line: &[u8]) -> Result<(), HeadError> {
    if matches!(line[0], b' ' | b'\t') {
        return Err(HeadError::ObsFold);
    }
    for &b in line {
        match b {
            b':' => return Ok(()),
            b' ' | b'\t' => return Err(HeadError::SpaceBeforeColon),
            _ => {}
        }
    }
    Ok(())
}

/// What to do with a client header whose name contains `_` (nginx's `underscores_in_headers
/// off` drops them, Envoy's `headers_with_underscores_action` drops or rejects): `kubeflow_userid`
/// and `kubeflow-userid` are the same variable to CGI-style frameworks, so an application
/// behind the gateway could read a header that the gateway never checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Underscores {
    #[default]
    Drop,
    Reject,
}

/// The header names with `_`, to drop; or the refusal when they are rejected.
pub fn underscore_headers(
    headers: &HeaderMap,
    action: Underscores,
) -> Result<Vec<HeaderName>, HeadError> {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    match (action, names.first()) {
        (Underscores::Reject, Some(name)) => Err(HeadError::Underscore(name.clone())),
        _ => Ok(names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// One Content-Length, or exactly `chunked`, frames a body one way only; everything else
    /// is refused, with 501 for a coding we do not implement.
    #[test]
    fn framing_table() {
        use Version as V;
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let ok: &[(Headers, V)] = &[
            (&[], V::HTTP_11),
            (&[("content-length", "5")], V::HTTP_11),
            (&[("content-length", "5")], V::HTTP_10),
            (&[("transfer-encoding", "chunked")], V::HTTP_11),
            (&[("transfer-encoding", "Chunked")], V::HTTP_11),
        ];
        for (h, v) in ok {
            assert_eq!(check_framing(*v, &headers(h)), Ok(()), "{h:?}");
        }
        let bad: &[(Headers, V, u16)] = &[
            (
                &[("content-length", "5"), ("content-length", "5")],
                V::HTTP_11,
                400,
            ),
            (
                &[("content-length", "5"), ("content-length", "6")],
                V::HTTP_11,
                400,
            ),
            (&[("content-length", "5, 5")], V::HTTP_11, 400),
            (&[("content-length", "5,")], V::HTTP_11, 400),
            (
                &[("transfer-encoding", "chunked, chunked")],
                V::HTTP_11,
                400,
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                V::HTTP_11,
                400,
            ),
            (&[("transfer-encoding", "chunked,")], V::HTTP_11, 400),
            (&[("transfer-encoding", "")], V::HTTP_11, 400),
            (&[("transfer-encoding", "chunked;q=1")], V::HTTP_11, 400),
            (&[("transfer-encoding", "\"chunked\"")], V::HTTP_11, 400),
            (&[("transfer-encoding", "chunked")], V::HTTP_10, 400),
            (&[("transfer-encoding", "chunked")], V::HTTP_2, 400),
            (&[("transfer-encoding", "gzip, chunked")], V::HTTP_11, 501),
            (&[("transfer-encoding", "identity")], V::HTTP_11, 501),
            (
                &[
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked"),
                ],
                V::HTTP_11,
                501,
            ),
        ];
        for (h, v, status) in bad {
            let e = check_framing(*v, &headers(h)).unwrap_err();
            assert_eq!(e.status(), *status, "{h:?}: {e}");
            assert!(e.closes(), "{h:?}: framing errors close the connection");
        }
    }

    /// A fragment or an encoded NUL anywhere in the target is refused; the rest is left to the
    /// path rules.
    #[test]
    fn target_table() {
        for ok in ["/", "/v1/models/m:predict?x=1", "/a%20b", "*"] {
            assert_eq!(check_target(ok.as_bytes()), Ok(()), "{ok}");
        }
        for (bad, byte) in [
            (&b"/caf\xc3\xa9"[..], 0xc3),
            (b"/a b", b' '),
            (b"/a\tb", b'\t'),
            (b"/a\x7f", 0x7f),
        ] {
            assert_eq!(check_target(bad), Err(HeadError::RawByte(byte)), "{bad:?}");
        }
        for (bad, want) in [
            ("/a#b", HeadError::Fragment),
            ("/#", HeadError::Fragment),
            ("/a?x=#", HeadError::Fragment),
            ("/a%00b", HeadError::EncodedControl),
            ("/a?x=%00", HeadError::EncodedControl),
        ] {
            assert_eq!(check_target(bad.as_bytes()), Err(want), "{bad}");
        }
    }

    /// Normal paths are borrowed unchanged; unreserved escapes are decoded, slashes merged and
    /// dot segments resolved, also when hidden behind encodings or `;` parameters.
    #[test]
    fn normalize_table() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            (
                "/v1/models/sklearn-iris:predict",
                "/v1/models/sklearn-iris:predict",
            ),
            ("/healthz/", "/healthz/"),
            ("/./healthz", "/healthz"),
            ("//healthz", "/healthz"),
            ("/a//b///c", "/a/b/c"),
            ("/healthz/../private", "/private"),
            ("/healthz/%2e%2e/private", "/private"),
            ("/healthz/%2E%2E/private", "/private"),
            ("/healthz/.%2e/private", "/private"),
            ("/healthz/%2e./private", "/private"),
            ("/healthz/..;x=y/private", "/private"),
            ("/healthz/..;/private", "/private"),
            ("/healthz/%2e%2e;x=y/private", "/private"),
            ("/healthz/..%3bx/private", "/private"),
            ("/healthz/..%3B/private", "/private"),
            ("/healthz/.;x/private", "/healthz/private"),
            ("/healthz;x=y/../private", "/private"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/%7Euser/%41", "/~user/A"),
            ("/a%20b", "/a%20b"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/a;b/c", "/a;b/c"),
            ("/...", "/..."),
            ("/a..b/.c", "/a..b/.c"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_deref(), Ok(*want), "{raw:?}");
        }
        assert!(matches!(
            normalize_path("/v1/models/m:predict"),
            Ok(Cow::Borrowed(_))
        ));
    }

    /// Whatever a backend could read as another path is refused.
    #[test]
    fn normalize_refusals() {
        for (raw, want) in [
            ("", HeadError::NotAPath),
            ("*", HeadError::NotAPath),
            ("healthz", HeadError::NotAPath),
            ("/healthz/..\\private", HeadError::Backslash),
            ("/a\\b", HeadError::Backslash),
            ("/healthz%2f..%2fprivate", HeadError::EncodedSeparator),
            ("/healthz%2F..", HeadError::EncodedSeparator),
            ("/healthz/..%5cprivate", HeadError::EncodedSeparator),
            ("/healthz/..%5Cprivate", HeadError::EncodedSeparator),
            ("/healthz/%252e%252e/private", HeadError::EncodedSeparator),
            ("/healthz/%252f", HeadError::EncodedSeparator),
            ("/healthz/..%253b/private", HeadError::EncodedSeparator),
            ("/a%2500", HeadError::EncodedSeparator),
            ("/a%25250a", HeadError::EncodedSeparator),
            ("/healthz%00", HeadError::EncodedControl),
            ("/healthz%0a", HeadError::EncodedControl),
            ("/healthz%0D%0Ax:y", HeadError::EncodedControl),
            ("/a%7f", HeadError::EncodedControl),
            ("/a%", HeadError::BadPercentEncoding),
            ("/a%2", HeadError::BadPercentEncoding),
            ("/a%zz", HeadError::BadPercentEncoding),
        ] {
            assert_eq!(normalize_path(raw), Err(want), "{raw:?}");
        }
        // Double encoding of anything else is only text.
        assert_eq!(normalize_path("/a%2541").as_deref(), Ok("/a%2541"));
    }

    /// An absolute-form target names its authority; other forms name none.
    #[test]
    fn absolute_form_authorities() {
        fn a(t: &str) -> Option<&str> {
            absolute_form_authority(t.as_bytes())
        }
        assert_eq!(a("http://h.example.com/a?x"), Some("h.example.com"));
        assert_eq!(a("HTTP://H.example.com:8080?x"), Some("H.example.com:8080"));
        assert_eq!(a("https://h.example.com"), Some("h.example.com"));
        assert_eq!(a("/a"), None);
        assert_eq!(a("*"), None);
        assert_eq!(a("h.example.com:443"), None);
    }

    /// The target is read off the request line whatever the line ending.
    #[test]
    fn raw_targets() {
        let t = raw_request_target;
        assert_eq!(
            t(b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n"),
            Some(&b"/a#b"[..])
        );
        assert_eq!(t(b"GET /a HTTP/1.1\nHost: h\n\n"), Some(&b"/a"[..]));
        assert_eq!(
            t(b"GET http://h/a?x HTTP/1.1\r\n"),
            Some(&b"http://h/a?x"[..])
        );
        assert_eq!(t(b"GET"), None);
    }

    /// A head is found wherever it is split between reads, and its end is where the blank line
    /// ends; the bytes after it are not looked at.
    #[test]
    fn head_scanner_finds_the_end() {
        let head = b"GET /a HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\nbody";
        let limits = HeadLimits::default();
        for split in 0..head.len() {
            let mut s = HeadScanner::default();
            let first = s.scan(&head[..split], &limits).unwrap();
            let got = first.or_else(|| s.scan(head, &limits).unwrap());
            assert_eq!(got, Some(head.len() - 4), "split at {split}");
        }
        let mut s = HeadScanner::default();
        assert_eq!(
            s.scan(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", &limits),
            Ok(Some(22)),
            "leading empty lines are skipped"
        );
    }

    /// What a lenient parser would quietly repair is refused, with 400 and a close.
    #[test]
    fn head_scanner_refusals() {
        let limits = HeadLimits::default();
        for (head, want) in [
            (&b"GET / HTTP/1.1\nHost: h\r\n\r\n"[..], HeadError::BareLf),
            (b"GET / HTTP/1.1\r\nHost: h\n\r\n", HeadError::BareLf),
            (b"GET / HTTP/1.1\r\nHost: h\r\n\n", HeadError::BareLf),
            (
                b"GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n",
                HeadError::BareCr,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
                HeadError::ObsFold,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\n\tfolded\r\n\r\n",
                HeadError::ObsFold,
            ),
            (
                b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
                HeadError::SpaceBeforeColon,
            ),
            (
                b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n",
                HeadError::SpaceBeforeColon,
            ),
            (b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", HeadError::Nul),
        ] {
            let e = HeadScanner::default().scan(head, &limits).unwrap_err();
            assert_eq!(e, want, "{:?}", String::from_utf8_lossy(head));
            assert!(e.closes() && e.status() == 400);
            // The same refusal wherever the head is split between reads.
            for split in 0..head.len() {
                let mut s = HeadScanner::default();
                let e = s
                    .scan(&head[..split], &limits)
                    .and_then(|_| s.scan(head, &limits))
                    .unwrap_err();
                assert_eq!(
                    e,
                    want,
                    "split at {split}: {:?}",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    /// The limits are enforced while the head arrives, before it is complete: 414 for the
    /// request line, 431 for the fields and the whole head.
    #[test]
    fn head_scanner_limits() {
        let limits = HeadLimits {
            head_bytes: 200,
            fields: 3,
            request_line: 40,
        };
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(40));
        let e = HeadScanner::default()
            .scan(long_line.as_bytes(), &limits)
            .unwrap_err();
        assert_eq!((e.status(), e), (414, HeadError::RequestLineTooLong(40)));
        let e = HeadScanner::default()
            .scan(format!("{long_line}\r\n\r\n").as_bytes(), &limits)
            .unwrap_err();
        assert_eq!(e, HeadError::RequestLineTooLong(40));
        let fields = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n";
        let e = HeadScanner::default().scan(fields, &limits).unwrap_err();
        assert_eq!((e.status(), e), (431, HeadError::TooManyFields(3)));
        let mut s = HeadScanner::default();
        let big = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(190));
        let e = s.scan(big.as_bytes(), &limits).unwrap_err();
        assert_eq!((e.status(), e), (431, HeadError::HeadTooLarge(200)));
        let ok = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(HeadScanner::default().scan(ok, &limits), Ok(Some(ok.len())));
        let whole = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(190));
        let e = HeadScanner::default()
            .scan(whole.as_bytes(), &limits)
            .unwrap_err();
        assert_eq!(
            e,
            HeadError::HeadTooLarge(200),
            "a complete head over the limit too"
        );
    }

    /// Names with `_` are listed to drop, or refused in reject mode; others are kept.
    #[test]
    fn underscores() {
        let h = headers(&[("x_user", "a"), ("x-ok", "b"), ("kubeflow_userid", "c")]);
        let dropped = underscore_headers(&h, Underscores::Drop).unwrap();
        assert_eq!(dropped.len(), 2);
        assert!(matches!(
            underscore_headers(&h, Underscores::Reject),
            Err(HeadError::Underscore(_))
        ));
        let clean = headers(&[("x-ok", "b")]);
        assert_eq!(underscore_headers(&clean, Underscores::Reject), Ok(vec![]));
    }
}
