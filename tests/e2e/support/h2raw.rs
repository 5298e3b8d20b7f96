//! A raw HTTP/2 client over TLS that writes frames exactly as a test says, including the ones a
//! real client library never sends (more streams than the server allows, a reset right after
//! each request): HPACK literals without indexing, no flow control beyond what the tests need.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;

#[derive(Debug)]
pub struct Frame {
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.ty {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        self.payload
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub struct H2 {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's high bits `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals without indexing (RFC 7541 §6.2.2), no Huffman.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

impl H2 {
    /// Connects, completes TLS with ALPN `h2` (trusting `ca_pem`), and sends the client
    /// preface and an empty SETTINGS frame.
    pub async fn connect(port: u16, ca_pem: &str, server_name: &str) -> H2 {
        let mut roots = rustls::RootCertStore::empty();
        let mut reader = std::io::BufReader::new(ca_pem.as_bytes());
        for cert in rustls_pemfile_certs(&mut reader) {
            roots.add(cert).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        tls.write_all(&hello).await.unwrap();
        H2 {
            tls,
            buf: Vec::new(),
        }
    }

    /// A HEADERS frame (END_HEADERS, and END_STREAM when `end`) for a GET.
    pub fn get(
        stream: u32,
        authority: &str,
        path: &str,
        extra: &[(&str, &str)],
        end: bool,
    ) -> Vec<u8> {
        Self::request(stream, "GET", authority, path, extra, end)
    }

    /// A HEADERS frame (END_HEADERS, and END_STREAM when `end`) for any method.
    pub fn request(
        stream: u32,
        method: &str,
        authority: &str,
        path: &str,
        extra: &[(&str, &str)],
        end: bool,
    ) -> Vec<u8> {
        let mut headers = vec![
            (":method", method),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
        ];
        headers.extend_from_slice(extra);
        let flags = 0x4 | if end { 0x1 } else { 0 };
        frame(HEADERS, flags, stream, &header_block(&headers))
    }

    /// A DATA frame, with END_STREAM when `end`.
    pub fn data(stream: u32, payload: &[u8], end: bool) -> Vec<u8> {
        frame(DATA, u8::from(end), stream, payload)
    }

    pub fn rst(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// Writes frames; false when the server has closed the connection.
    pub async fn send(&mut self, frames: &[u8]) -> bool {
        self.tls.write_all(frames).await.is_ok() && self.tls.flush().await.is_ok()
    }

    /// The next frame from the server, acknowledging its SETTINGS and answering PINGs on the
    /// way; `None` at EOF or after `within` without one.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16
                    | (self.buf[1] as usize) << 8
                    | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    match (f.ty, f.flags & 0x1) {
                        (SETTINGS, 0) => {
                            self.send(&frame(SETTINGS, 0x1, 0, &[])).await;
                        }
                        (PING, 0) => {
                            let payload = f.payload.clone();
                            self.send(&frame(PING, 0x1, 0, &payload)).await;
                        }
                        _ => {}
                    }
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(within, self.tls.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// The certificates of a PEM bundle.
fn rustls_pemfile_certs(
    reader: &mut dyn std::io::BufRead,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}
