//! Kubernetes service-account tokens as bearer credentials: which verifier a bearer token is
//! for, and the identity a verified one proves, as the API server's authenticator derives it.

use crate::session::Identity;
use base64::Engine;

/// The token's `iss`, read without verifying anything: only to choose the verifier (the Dex
/// one or the API server's), which then checks the signature and the issuer itself.
pub fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: Option<String>,
    }
    serde_json::from_slice::<Claims>(&bytes).ok()?.iss
}

/// The pod a projected token is bound to (`kubernetes.io.pod`), with its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The token's pod binding (`kubernetes.io.pod`), read from the payload: `None` when it is
/// bound to no pod, an error when the binding is there but not a pod's (the names go into an
/// API URL). Only for a token whose signature has been verified.
pub fn bound_pod(token: &str) -> Result<Option<BoundPod>, String> {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .ok_or("the token's payload is not JSON")?;
    let k = &claims["kubernetes.io"];
    if k.get("pod").is_none() {
        return Ok(None);
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let pod = BoundPod {
        namespace: text(&k["namespace"]),
        name: text(&k["pod"]["name"]),
        uid: text(&k["pod"]["uid"]),
    };
    let label = |s: &str| {
        (1..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let subdomain = |s: &str| s.len() <= 253 && s.split('.').all(label);
    if !label(&pod.namespace) || !subdomain(&pod.name) || pod.uid.is_empty() {
        return Err("the token's pod binding does not name a pod".into());
    }
    Ok(Some(pod))
}

/// `system:serviceaccount:{namespace}:{name}` → that user, in the groups Kubernetes puts every
/// service account in: `system:serviceaccounts`, `system:serviceaccounts:{namespace}` and
/// `system:authenticated`. Anything else (a token of the same issuer for something that is not
/// a service account) proves nothing here.
pub fn service_account_identity(sub: &str) -> Option<Identity> {
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with(['-', '.'])
            && !s.ends_with(['-', '.'])
    };
    if !label(namespace) || namespace.contains('.') || !label(name) {
        return None;
    }
    Some(Identity {
        user: sub.to_string(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims))
    }

    #[test]
    fn bound_pods_are_read() {
        let t = token(
            r#"{"kubernetes.io":{"namespace":"ml","pod":{"name":"p-1","uid":"u-1"},"serviceaccount":{"name":"s"}}}"#,
        );
        assert_eq!(
            bound_pod(&t),
            Ok(Some(BoundPod {
                namespace: "ml".into(),
                name: "p-1".into(),
                uid: "u-1".into()
            }))
        );
        // Bound to no pod (a TokenRequest for a Secret, or none at all).
        assert_eq!(
            bound_pod(&token(r#"{"kubernetes.io":{"namespace":"ml"}}"#)),
            Ok(None)
        );
        assert_eq!(bound_pod(&token(r#"{"sub":"x"}"#)), Ok(None));
        // A binding that is there but names no pod, or names that would change the URL.
        for bad in [
            r#"{"kubernetes.io":{"namespace":"ml","pod":{"name":"","uid":"u"}}}"#,
            r#"{"kubernetes.io":{"namespace":"ml","pod":{"name":"p"}}}"#,
            r#"{"kubernetes.io":{"namespace":"ml","pod":{"name":"..","uid":"u"}}}"#,
            r#"{"kubernetes.io":{"namespace":"ml","pod":{"name":"a/b","uid":"u"}}}"#,
            r#"{"kubernetes.io":{"namespace":"m.l","pod":{"name":"p","uid":"u"}}}"#,
            r#"{"kubernetes.io":{"pod":{"name":"p","uid":"u"}}}"#,
        ] {
            assert!(bound_pod(&token(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn issuers_are_peeked() {
        assert_eq!(
            peek_issuer(&token(
                r#"{"iss":"https://kubernetes.default.svc.cluster.local"}"#
            ))
            .as_deref(),
            Some("https://kubernetes.default.svc.cluster.local")
        );
        assert_eq!(peek_issuer(&token(r#"{"sub":"x"}"#)), None);
        for bad in ["", "a", "a.!!!.c", "a.e30"] {
            assert_eq!(peek_issuer(bad), None, "{bad}");
        }
    }

    /// Only `system:serviceaccount:{ns}:{name}` with valid names is a service account.
    #[test]
    fn service_account_identities() {
        let id = service_account_identity("system:serviceaccount:kserve-test:pipeline").unwrap();
        assert_eq!(id.user, "system:serviceaccount:kserve-test:pipeline");
        assert_eq!(
            id.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kserve-test",
                "system:authenticated"
            ]
        );
        for bad in [
            "user@example.com",
            "system:serviceaccount:kserve-test",
            "system:serviceaccount::name",
            "system:serviceaccount:ns:",
            "system:serviceaccount:Ns:name",
            "system:serviceaccount:ns:name,admins",
            "system:serviceaccount:a.b:name",
            "system:node:worker-1",
        ] {
            assert_eq!(service_account_identity(bad), None, "{bad}");
        }
    }
}
