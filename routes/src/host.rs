//! Host normalisation: the one place that decides what a `Host` header names, so lookup,
//! validation and the table's keys always agree.

use std::fmt;

/// Why a `Host` value names no host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    Empty,
    BadPort,
    BadName(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Empty => write!(f, "empty host"),
            HostError::BadPort => write!(f, "invalid port in host"),
            HostError::BadName(why) => write!(f, "invalid host name: {why}"),
        }
    }
}

impl std::error::Error for HostError {}

/// Lower-cases a `Host` value and drops its port and one trailing dot, so
/// `Sklearn-Iris.KServe-Test.example.com.:8080` and `sklearn-iris.kserve-test.example.com` are the
/// same key. Rejects anything that is not a DNS name or an IP literal: the gateway answers 400
/// instead of looking up garbage.
pub fn normalize_host(raw: &str) -> Result<String, HostError> {
    let raw = raw.trim_matches([' ', '\t']);
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    // Bracketed IPv6 literal, with or without a port.
    if let Some(rest) = raw.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(HostError::BadName("unclosed '['".into()));
        };
        if !after.is_empty() {
            check_port(after.strip_prefix(':').ok_or(HostError::BadPort)?)?;
        }
        return addr
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| format!("[{ip}]"))
            .map_err(|_| HostError::BadName("invalid IPv6 literal".into()));
    }
    let name = match raw.rsplit_once(':') {
        Some((name, port)) => {
            check_port(port)?;
            name
        }
        None => raw,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > 253 {
        return Err(HostError::BadName("longer than 253 characters".into()));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostError::BadName("empty label".into()));
        }
        if label.len() > 63 {
            return Err(HostError::BadName("label longer than 63 characters".into()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::BadName("label starts or ends with '-'".into()));
        }
        // '_' is not valid in host names but appears in real service names; accept it as
        // browsers and Envoy do, so it is a routing miss (404), not a client error.
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(HostError::BadName(format!("character {c:?}")));
        }
    }
    Ok(name.to_ascii_lowercase())
}

fn check_port(port: &str) -> Result<(), HostError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| HostError::BadPort)
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
                normalize_host(raw).as_deref(),
                Ok("sklearn-iris.kserve-test.example.com"),
                "{raw}"
            );
        }
    }

    /// IP literals are hosts too (they simply route nowhere unless a manifest names them).
    #[test]
    fn ip_literals() {
        assert_eq!(normalize_host("127.0.0.1:8080").as_deref(), Ok("127.0.0.1"));
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Ok("[::1]"));
        assert_eq!(normalize_host("[::1]").as_deref(), Ok("[::1]"));
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
        ] {
            assert!(normalize_host(raw).is_err(), "{raw:?} should be rejected");
        }
        assert!(normalize_host(&format!("{}.com", "a".repeat(64))).is_err());
        // 127 labels are 253 characters once the trailing dot goes: the longest valid name.
        assert!(normalize_host(&"a.".repeat(127)).is_ok());
        assert!(normalize_host(&"a.".repeat(128)).is_err());
    }
}
