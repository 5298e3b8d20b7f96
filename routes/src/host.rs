//! Host normalisation: the one place that decides what a `Host` header names, so lookup,
//! validation and the table's keys always agree, and which ports a listener answers for.

use std::fmt;

/// Why a `Host` value names no host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    Empty,
    BadPort,
    BadName(String),
    /// A well-formed host with a port this listener does not serve. Not a client error but a
    /// routing miss (404): Envoy's `strip_matching_host_port` strips only the listener's own
    /// port, and `host:8443` then matches no virtual host.
    PortNotServed(u16),
}

impl HostError {
    /// 404 for a port we do not serve, 400 for a malformed host.
    pub fn status(&self) -> u16 {
        match self {
            HostError::PortNotServed(_) => 404,
            _ => 400,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Empty => write!(f, "empty host"),
            HostError::BadPort => write!(f, "invalid port in host"),
            HostError::BadName(why) => write!(f, "invalid host name: {why}"),
            HostError::PortNotServed(port) => write!(f, "port {port} is not served here"),
        }
    }
}

impl std::error::Error for HostError {}

/// The host a request names, for the table: [`normalize_host`], with the port (if any) one of
/// `served_ports` (the listener's own port and the public ports in front of it, such as a
/// NodePort's or a LoadBalancer's). Another port is [`HostError::PortNotServed`].
pub fn request_host(raw: &str, served_ports: &[u16]) -> Result<String, HostError> {
    let (name, port) = normalize_host(raw)?;
    match port {
        Some(p) if !served_ports.contains(&p) => Err(HostError::PortNotServed(p)),
        _ => Ok(name),
    }
}

/// Lower-cases a `Host` value and splits off its port and one trailing dot, so
/// `Sklearn-Iris.KServe-Test.example.com.:8080` and `sklearn-iris.kserve-test.example.com` name
/// the same key. Rejects anything that is not a DNS name or an IP literal: the gateway answers
/// 400 instead of looking up garbage. `_` is refused too: it is not valid in a host name, no
/// Kubernetes object can carry one, and a host that two parsers read differently is how a
/// request gets routed by one rule and authorised by another.
pub fn normalize_host(raw: &str) -> Result<(String, Option<u16>), HostError> {
    let raw = raw.trim_matches([' ', '\t']);
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    // Bracketed IPv6 literal, with or without a port.
    if let Some(rest) = raw.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(HostError::BadName("unclosed '['".into()));
        };
        let port = match after {
            "" => None,
            _ => Some(check_port(
                after.strip_prefix(':').ok_or(HostError::BadPort)?,
            )?),
        };
        return addr
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| (format!("[{ip}]"), port))
            .map_err(|_| HostError::BadName("invalid IPv6 literal".into()));
    }
    let (name, port) = match raw.rsplit_once(':') {
        Some((name, port)) => (name, Some(check_port(port)?)),
        None => (raw, None),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > 253 {
        return Err(HostError::BadName("longer than 253 characters".into()));
    }
    // The labels' lengths and hyphens and the characters in one pass, then a lower-case copy.
    let bytes = name.as_bytes();
    let mut label_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match HOST_BYTE[b as usize] {
            NAME => {}
            DOT => {
                check_label(&bytes[label_start..i])?;
                label_start = i + 1;
            }
            _ => {
                let c = name[i..].chars().next().unwrap_or('?');
                return Err(HostError::BadName(format!("character {c:?}")));
            }
        }
    }
    check_label(&bytes[label_start..])?;
    Ok((name.to_ascii_lowercase(), port))
}

const BAD: u8 = 0;
const NAME: u8 = 1;
const DOT: u8 = 2;
/// What each byte may be in a host name: a letter, digit or `-`, a dot, or nothing.
const HOST_BYTE: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'-' {
            t[b] = NAME;
        }
        b += 1;
    }
    t[b'.' as usize] = DOT;
    t
};

/// A DNS label (RFC 1123): 1 to 63 characters, no hyphen at either end (the characters are
/// checked by the caller).
fn check_label(label: &[u8]) -> Result<(), HostError> {
    match label {
        [] => Err(HostError::BadName("empty label".into())),
        _ if label.len() > 63 => Err(HostError::BadName("label longer than 63 characters".into())),
        [b'-', ..] | [.., b'-'] => Err(HostError::BadName("label starts or ends with '-'".into())),
        _ => Ok(()),
    }
}

fn check_port(port: &str) -> Result<u16, HostError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    port.parse::<u16>().map_err(|_| HostError::BadPort)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case, port and one trailing dot do not change which host is named.
    #[test]
    fn case_port_and_trailing_dot_are_ignored() {
        for raw in [
            "sklearn-iris.kserve-test.example.com",
            "Sklearn-Iris.KSERVE-test.example.com",
            "sklearn-iris.kserve-test.example.com:8080",
            "sklearn-iris.kserve-test.example.com.",
            "SKLEARN-IRIS.kserve-test.example.com.:80",
        ] {
            assert_eq!(
                request_host(raw, &[80, 8080]).as_deref(),
                Ok("sklearn-iris.kserve-test.example.com"),
                "{raw}"
            );
        }
    }

    /// A port is dropped only when the listener serves it; any other port is a routing miss
    /// (404), told apart from a malformed host (400).
    #[test]
    fn only_served_ports_are_stripped() {
        let host = "m.ns.example.com";
        assert_eq!(request_host(host, &[8080]).as_deref(), Ok(host));
        assert_eq!(
            request_host("m.ns.example.com:8080", &[8080]).as_deref(),
            Ok(host)
        );
        assert_eq!(
            request_host("m.ns.example.com:443", &[8443, 443]).as_deref(),
            Ok(host)
        );
        for (raw, port) in [
            ("m.ns.example.com:8443", 8443),
            ("m.ns.example.com:80", 80),
            ("[::1]:81", 81),
        ] {
            let e = request_host(raw, &[8080]).unwrap_err();
            assert_eq!(e, HostError::PortNotServed(port), "{raw}");
            assert_eq!(e.status(), 404);
        }
        assert_eq!(
            request_host("m.ns.example.com:x", &[8080])
                .unwrap_err()
                .status(),
            400
        );
    }

    /// IP literals are hosts too (they simply route nowhere unless a manifest names them).
    #[test]
    fn ip_literals() {
        let name = |raw| normalize_host(raw).map(|(n, _)| n);
        assert_eq!(
            normalize_host("127.0.0.1:8080"),
            Ok(("127.0.0.1".into(), Some(8080)))
        );
        assert_eq!(
            normalize_host("[::1]:8080"),
            Ok(("[::1]".into(), Some(8080)))
        );
        assert_eq!(name("[::1]").as_deref(), Ok("[::1]"));
    }

    /// Anything that is not a host name is a client error, told apart from a routing miss.
    #[test]
    fn invalid_hosts_are_rejected() {
        for raw in [
            "",
            " ",
            ":80",
            "a..b",
            ".",
            "-a.b",
            "a-.b",
            "a b",
            "a/b",
            "a@b",
            "a.b:",
            "a.b:99999",
            "a.b:8o",
            "a:b:c",
            "[::1",
            "[zz]",
            "[::1]x",
            "ä.example.com",
            "a_b.example.com",
            "_.example.com",
            "model.ns_x.example.com",
        ] {
            assert!(normalize_host(raw).is_err(), "{raw:?} should be rejected");
        }
        assert!(normalize_host(&format!("{}.com", "a".repeat(64))).is_err());
        // 127 labels are 253 characters once the trailing dot goes: the longest valid name.
        assert!(normalize_host(&"a.".repeat(127)).is_ok());
        assert!(normalize_host(&"a.".repeat(128)).is_err());
    }
}
