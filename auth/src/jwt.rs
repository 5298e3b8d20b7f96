//! ID-token verification against the provider's published keys (JWKS), the shared key cache that
//! refetches on an unknown `kid`, and a small cache of already-verified tokens.
//!
//! Pure except for [`KeyCache::verify`] and [`KeyCache::refresh`], whose only I/O is the `fetch`
//! closure the caller passes in. The clock is always passed in as `now` (Unix seconds), so every
//! time rule is tested exactly.
//!
//! What is accepted is deliberately narrow: RS256 (what Dex signs with) and ES256, decided from the
//! token header *before* any key is looked at, so the classic confusions (`alg: none`, an HS256
//! token "signed" with the RSA public key as the HMAC secret) never reach the crypto. jsonwebtoken
//! only checks the signature here; its own time checks read the system clock, so every claim rule
//! (iss, aud, exp, nbf, iat, the user claim) is ours.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Tokens longer than this are refused as malformed before any parsing. Dex ID tokens are well
/// under 4 KiB even with many groups; the cap only bounds the work an attacker can ask for.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The two signing algorithms we accept, for tokens and for keys alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
        }
    }
}

#[derive(Clone)]
struct PublishedKey {
    kid: Option<String>,
    alg: Alg,
    key: DecodingKey,
}

/// Published keys by kid. Only RS256 (RSA) and ES256 (EC P-256) signing keys are kept; any other
/// key is skipped (and logged), never an error for the whole set, so a provider that also
/// publishes, say, an Ed25519 key keeps working for the keys we do understand.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: Vec<PublishedKey>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| (k.kid.as_deref().unwrap_or("<no kid>"), k.alg.name())),
            )
            .finish()
    }
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`). Errors only when the document itself is not a
    /// JWKS; individual keys we cannot or will not use are skipped.
    pub fn parse(json: &[u8]) -> Result<Jwks, String> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err("JWKS has no \"keys\" array".to_string());
        };
        let mut keys: Vec<PublishedKey> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => {
                    if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                        tracing::warn!(index = i, kid = ?key.kid, "JWKS: duplicate kid, keeping the first key");
                        continue;
                    }
                    keys.push(key);
                }
                Err(reason) => {
                    let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                    tracing::info!(index = i, kid, %reason, "JWKS: skipping key");
                }
            }
        }
        Ok(Jwks { keys })
    }

    /// The key ids we kept, in document order (keys without a kid are left out).
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// One JWK to a key we keep, or the reason we skip it.
fn parse_key(jwk: &Value) -> Result<PublishedKey, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if let Some(usage) = field("use") {
        if usage != "sig" {
            return Err(format!("use is {usage:?}, not \"sig\""));
        }
    }
    let kid = field("kid").map(str::to_string);
    let kty = field("kty").ok_or("no kty")?;
    // A key without "alg" is usable with the one algorithm we accept for its type.
    let alg = match (kty, field("alg")) {
        ("RSA", None | Some("RS256")) => Alg::Rs256,
        ("EC", None | Some("ES256")) => Alg::Es256,
        (kty, alg) => return Err(format!("kty {kty} with alg {alg:?} is not RS256 or ES256")),
    };
    let key = match alg {
        Alg::Rs256 => {
            let n = field("n").ok_or("RSA key without n")?;
            let e = field("e").ok_or("RSA key without e")?;
            DecodingKey::from_rsa_components(n, e).map_err(|e| format!("RSA key: {e}"))?
        }
        Alg::Es256 => {
            if field("crv") != Some("P-256") {
                return Err(format!("EC curve {:?} is not P-256", field("crv")));
            }
            let x = field("x").ok_or("EC key without x")?;
            let y = field("y").ok_or("EC key without y")?;
            for (name, coord) in [("x", x), ("y", y)] {
                match URL_SAFE_NO_PAD.decode(coord) {
                    Ok(bytes) if bytes.len() == 32 => {}
                    _ => return Err(format!("EC {name} is not 32 bytes of base64url")),
                }
            }
            DecodingKey::from_ec_components(x, y).map_err(|e| format!("EC key: {e}"))?
        }
    };
    Ok(PublishedKey { kid, alg, key })
}

/// What a valid ID token must say, and how to read the identity out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyParams {
    /// Must equal the token's `iss` exactly (no trailing-slash normalisation).
    pub issuer: String,
    /// The token's `aud` (string or array) must contain at least one of these.
    pub audiences: Vec<String>,
    /// Clock skew allowed on exp, nbf and iat.
    pub leeway_secs: u64,
    /// The claim that names the user, e.g. `email` (oidc-authservice's `USERID_CLAIM`).
    pub userid_claim: String,
    /// Prepended to the user claim, e.g. `""` or `oidc:` (oidc-authservice's `USERID_PREFIX`).
    pub userid_prefix: String,
    /// The claim holding the groups, e.g. `groups`; absent in the token means no groups.
    pub groups_claim: String,
}

/// The identity a valid token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `userid_prefix` + the user claim.
    pub user: String,
    pub groups: Vec<String>,
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
    /// The token's `nonce`, for the login flow to compare with the one it sent.
    pub nonce: Option<String>,
}

/// Why a token was refused. Safe to log; says nothing about key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts, not JSON, too long, or a claim of the wrong type.
    Malformed,
    /// The header's `alg` is not RS256/ES256, or does not match the key named by `kid`.
    DisallowedAlg(String),
    /// No published key has this kid (`None`: the token has no kid and no key fits its alg).
    UnknownKid(Option<String>),
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    /// `nbf` or `iat` is later than now plus the leeway.
    NotYetValid,
    /// A required claim (exp, iss, aud, the user claim) is absent or empty.
    MissingClaim(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("token is malformed"),
            TokenError::DisallowedAlg(alg) => write!(f, "token algorithm {alg} is not allowed"),
            TokenError::UnknownKid(Some(kid)) => write!(f, "no published key has kid {kid:?}"),
            TokenError::UnknownKid(None) => {
                f.write_str("token has no kid and no published key fits its algorithm")
            }
            TokenError::BadSignature => f.write_str("token signature is invalid"),
            TokenError::WrongIssuer => f.write_str("token issuer is not the configured issuer"),
            TokenError::WrongAudience => f.write_str("token audience is not this client"),
            TokenError::Expired => f.write_str("token has expired"),
            TokenError::NotYetValid => f.write_str("token is not valid yet"),
            TokenError::MissingClaim(claim) => write!(f, "token has no usable {claim:?} claim"),
        }
    }
}

impl std::error::Error for TokenError {}

/// The two header fields we read, parsed by hand so an unsupported `alg` (including `none`) is
/// reported as such rather than as a parse failure inside jsonwebtoken.
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

fn parse_header(token: &str) -> Result<TokenHeader, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(TokenError::Malformed),
    };
    // RFC 7515 §4.1.11: a token with critical extensions we do not understand must be refused.
    if header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

/// Verifies an ID token: signature with a published key, then iss, aud, exp/nbf/iat against `now`
/// (Unix seconds) with `leeway_secs`, then the user and groups claims.
///
/// Allow-list RS256 and ES256 only: `none`, HS*, and anything else are refused before any key is
/// touched. The key named by `kid` must itself be for the header's alg. A token without a kid is
/// tried against every key of its alg (as go-oidc does).
pub fn verify(
    token: &str,
    keys: &Jwks,
    params: &VerifyParams,
    now: u64,
) -> Result<Verified, TokenError> {
    let header = parse_header(token)?;
    let alg = Alg::from_name(&header.alg).ok_or(TokenError::DisallowedAlg(header.alg))?;

    let claims = match &header.kid {
        Some(kid) => {
            let key = keys
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| TokenError::UnknownKid(Some(kid.clone())))?;
            if key.alg != alg {
                return Err(TokenError::DisallowedAlg(format!(
                    "{} (key {kid:?} is {})",
                    alg.name(),
                    key.alg.name()
                )));
            }
            check_signature(token, alg, &key.key)?
        }
        None => {
            let mut result = Err(TokenError::UnknownKid(None));
            for key in keys.keys.iter().filter(|k| k.alg == alg) {
                result = check_signature(token, alg, &key.key);
                if !matches!(result, Err(TokenError::BadSignature)) {
                    break;
                }
            }
            result?
        }
    };
    check_claims(&claims, params, now)
}

/// Signature only: every claim check in jsonwebtoken is switched off (see the module comment).
fn check_signature(
    token: &str,
    alg: Alg,
    key: &DecodingKey,
) -> Result<Map<String, Value>, TokenError> {
    let mut validation = Validation::new(alg.jsonwebtoken());
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(err) => Err(match err.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::Provider(_) => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::DisallowedAlg(alg.name().to_string())
            }
            _ => TokenError::Malformed,
        }),
    }
}

/// A NumericDate claim: absent or null is `None`; a non-negative number (fractions floored, as
/// RFC 7519 allows them) is the value; anything else makes the token malformed.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(TokenError::Malformed),
        Some(_) => Err(TokenError::Malformed),
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    params: &VerifyParams,
    now: u64,
) -> Result<Verified, TokenError> {
    match claims.get("iss") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim("iss".into())),
        Some(Value::String(iss)) if *iss == params.issuer => {}
        Some(_) => return Err(TokenError::WrongIssuer),
    }

    let aud_ok = match claims.get("aud") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim("aud".into())),
        Some(Value::String(aud)) => params.audiences.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| params.audiences.iter().any(|a| a == aud)),
        Some(_) => false,
    };
    if !aud_ok {
        return Err(TokenError::WrongAudience);
    }

    // RFC 7519: the current time must be *before* exp; leeway widens every window by the same.
    let leeway = params.leeway_secs;
    let exp =
        numeric_claim(claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(t) = numeric_claim(claims, name)? {
            if t > now.saturating_add(leeway) {
                return Err(TokenError::NotYetValid);
            }
        }
    }

    let user = match claims.get(&params.userid_claim) {
        Some(Value::String(user)) if !user.is_empty() => user,
        _ => return Err(TokenError::MissingClaim(params.userid_claim.clone())),
    };

    // Dex sends an array; some providers send a lone string. Anything else counts as no groups.
    let groups = match claims.get(&params.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };

    let nonce = claims
        .get("nonce")
        .and_then(Value::as_str)
        .map(str::to_string);

    Ok(Verified {
        user: format!("{}{}", params.userid_prefix, user),
        groups,
        expires_at: exp,
        nonce,
    })
}

/// Tokens already verified, so a request carrying a known token skips the RSA check.
///
/// An entry is keyed by SHA-256 of the verification parameters and the token, and lives until
/// `min(exp, inserted + ttl)`: never past the token's own expiry, and at most `ttl` after a key
/// rotation removed the key that signed it. Bounded: when full, expired entries are purged and, if
/// that is not enough, arbitrary entries are dropped (a miss only costs one verification).
pub struct VerifiedCache {
    ttl_secs: u64,
    max_entries: usize,
    entries: Mutex<HashMap<[u8; 32], (Verified, u64)>>,
}

impl VerifiedCache {
    /// `max_entries == 0` or a zero `ttl` disables the cache.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        VerifiedCache {
            ttl_secs: ttl.as_secs(),
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.ttl_secs > 0 && self.max_entries > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Verified, u64)>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep serving.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key for `token` verified under `params`.
    pub fn key(token: &str, params: &VerifyParams) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            &params.issuer,
            &params.userid_claim,
            &params.userid_prefix,
            &params.groups_claim,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        for aud in &params.audiences {
            h.update((aud.len() as u64).to_be_bytes());
            h.update(aud.as_bytes());
        }
        h.update(params.leeway_secs.to_be_bytes());
        h.update(token.as_bytes());
        h.finalize().into()
    }

    /// The cached identity, if the entry is still valid at `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<Verified> {
        if !self.enabled() {
            return None;
        }
        let mut entries = self.lock();
        match entries.get(key) {
            Some((verified, valid_until)) if now < *valid_until => Some(verified.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: [u8; 32], verified: &Verified, now: u64) {
        if !self.enabled() {
            return;
        }
        let valid_until = verified.expires_at.min(now.saturating_add(self.ttl_secs));
        if valid_until <= now {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            entries.retain(|_, (_, until)| now < *until);
            while entries.len() >= self.max_entries {
                let Some(victim) = entries.keys().next().copied() else {
                    break;
                };
                entries.remove(&victim);
            }
        }
        entries.insert(key, (verified.clone(), valid_until));
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The JWKS cache the gateway shares between requests: an `ArcSwap` snapshot that requests read
/// without locking, a refetch path that is single-flight and rate-limited, and a
/// [`VerifiedCache`] in front of it all.
pub struct KeyCache {
    keys: ArcSwap<Jwks>,
    min_refetch_secs: u64,
    /// Held while fetching; holds the time (Unix s) of the last fetch attempt, good or bad.
    last_fetch: tokio::sync::Mutex<Option<u64>>,
    verified: VerifiedCache,
}

impl KeyCache {
    /// How long a verified token is served from the cache without re-checking its signature.
    pub const VERIFIED_TTL: Duration = Duration::from_secs(60);
    /// How many verified tokens are remembered.
    pub const VERIFIED_MAX_ENTRIES: usize = 10_000;

    /// Starts empty, with the verified-token cache at its defaults. `min_refetch` is rounded up to
    /// whole seconds, the unit of `now`.
    pub fn new(min_refetch: Duration) -> Self {
        KeyCache {
            keys: ArcSwap::from_pointee(Jwks::default()),
            min_refetch_secs: min_refetch.as_millis().div_ceil(1000) as u64,
            last_fetch: tokio::sync::Mutex::new(None),
            verified: VerifiedCache::new(Self::VERIFIED_TTL, Self::VERIFIED_MAX_ENTRIES),
        }
    }

    /// Replaces the verified-token cache (`max_entries == 0` turns it off).
    pub fn with_verified_cache(mut self, ttl: Duration, max_entries: usize) -> Self {
        self.verified = VerifiedCache::new(ttl, max_entries);
        self
    }

    /// The current snapshot.
    pub fn keys(&self) -> Arc<Jwks> {
        self.keys.load_full()
    }

    /// Installs a freshly fetched key set. Verified tokens are forgotten, so a key that was
    /// withdrawn stops vouching for tokens at once.
    pub fn replace(&self, keys: Jwks) {
        self.keys.store(Arc::new(keys));
        self.verified.clear();
    }

    /// Fetches and installs the keys now (for a background refresh), sharing the single-flight
    /// lock with on-demand refetches and counting as one for the rate limit. A failed fetch keeps
    /// the current keys. Returns the number of keys installed.
    pub async fn refresh<F, Fut>(&self, now: u64, fetch: F) -> Result<usize, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Jwks, String>>,
    {
        let mut last = self.last_fetch.lock().await;
        *last = Some(now);
        let keys = fetch().await?;
        let count = keys.len();
        self.replace(keys);
        Ok(count)
    }

    /// Verifies with the cached keys; on [`TokenError::UnknownKid`], refetches once via `fetch`
    /// (single-flight: concurrent callers wait for one fetch and then use its result; and no more
    /// than one fetch per `min_refetch`, measured with `now`), then verifies again. A failed fetch
    /// is logged and keeps the cached keys.
    pub async fn verify<F, Fut>(
        &self,
        token: &str,
        params: &VerifyParams,
        now: u64,
        fetch: F,
    ) -> Result<Verified, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Jwks, String>>,
    {
        let cache_key = VerifiedCache::key(token, params);
        if let Some(hit) = self.verified.get(&cache_key, now) {
            return Ok(hit);
        }

        let before = self.keys.load_full();
        let result = match verify(token, &before, params, now) {
            Err(TokenError::UnknownKid(kid)) => {
                self.refetch_and_verify(token, params, now, fetch, before, kid)
                    .await
            }
            other => other,
        };
        if let Ok(verified) = &result {
            self.verified.insert(cache_key, verified, now);
        }
        result
    }

    async fn refetch_and_verify<F, Fut>(
        &self,
        token: &str,
        params: &VerifyParams,
        now: u64,
        fetch: F,
        before: Arc<Jwks>,
        kid: Option<String>,
    ) -> Result<Verified, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Jwks, String>>,
    {
        let mut last = self.last_fetch.lock().await;
        // Someone replaced the keys while we waited for the lock: use theirs, fetch nothing.
        let current = self.keys.load_full();
        if !Arc::ptr_eq(&before, &current) {
            drop(last);
            return verify(token, &current, params, now);
        }
        if let Some(at) = *last {
            if now < at.saturating_add(self.min_refetch_secs) {
                tracing::debug!(?kid, "unknown kid, JWKS refetch rate-limited");
                return Err(TokenError::UnknownKid(kid));
            }
        }
        *last = Some(now);
        tracing::info!(?kid, "unknown kid, refetching JWKS");
        match fetch().await {
            Ok(keys) => self.replace(keys),
            Err(err) => {
                tracing::warn!(?kid, error = %err, "JWKS refetch failed, keeping cached keys")
            }
        }
        drop(last);
        verify(token, &self.keys.load_full(), params, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::EncodePrivateKey as _;
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "http://dex.auth.svc.cluster.local:5556/dex";

    struct TestKeys {
        rsa_pem: String,
        rsa_public_pem: String,
        rsa_n: String,
        rsa_e: String,
        ec_pem: String,
        ec_x: String,
        ec_y: String,
    }

    /// A fixed 2048-bit RSA test key (`openssl genpkey -algorithm RSA`), embedded because
    /// generating one with the rsa crate takes 10-30 s in a debug build. Test-only, signs nothing
    /// outside this module.
    const TEST_RSA_PKCS8_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDiednwc6y+AF95
AAreG0xiwxkrwhsJ8dBDPsgN0wDiSxz3wlzok4l75V1iMSbnmTP8PMcKTa/llmKV
K1G2w5cBp8YSYb6uRlFvju+q9WypCG8Dehd3+mrYb386jwqjhPxDMS0JyLO6OuI1
+CARXrkDyvrMSJB91vUTrLDmg7CR0/b7gNSFuQIMl/FyFAaoXpIFtu1Qt638+dM+
geQLS1YZJEgKo4RQfnCeGTK1TDuf43q5mtqHyuZkyLxRglnWLMKSWoBsafAuV5NJ
v+0SiJGGfr9acm6oaOC/9G7F5K9+/EGh+5gCgA2TrcKTLz9xmMJmR3iKhOEzu7jN
hGi2P+Y7AgMBAAECggEAPyHSlAna5Jg8BQHzBZk8gOd788vHN811zdkJcXkZbPud
Vp+SwK6oC6aTkpS7EKKPcEgNAB1J5Ek4r/aEb9s0FB0NxQAEZJZrixqgStrhcHlO
YPy+4A4pjK4AHHXVdGHU5HIn6OtO1qIlfv/tCIqMLrd9lEbCKKIsbVCde5TIOs4C
bUgRNrHRKxPxxLFZWNv4rRTDmnk66vOkVz+I8pb1eE/cLAseIoHvf8NrFF0UqFNA
XRkWOOz+JTbVr6y4csgy2aLTmzeGeQDyqS7h06YvHmN0ZJP8xgxNAwVPKj0ug9N5
8J6pNdGpt3ERZWJv7JI2ntJkqAvN4WtE6za9oyEGqQKBgQD1kQgvHylup769vInR
Ari85Oj+fzQYe8xKmaUKVrtJ9TizGHU3uMWwgr7I4MooJ9U5rc+hIB2K7mRuUzyo
sxaB8LNA1ZR5msdi7b/ZL+LDtQxE6BJVoWe2YFvYkM/QEPLKSOP/XfSUCmrJlHkE
dnJzWgE2zioV2vu9RuIIE5o/DQKBgQDsGS0Rbb+9XSA1AN8AIRUH2pDpWZ9sBi36
YzNOg6xd0TKwppPjud6ybz+/zT9Ka+ho6++5HhfIl2DUtIuO3mMXAHDDYQltUg+8
+eAAkXiocB7E04jtGMH7HiNBQQeT/BlU/L1FpvTxEGBKKjInxPXOyciRtvegb7No
hlhEDRCoZwKBgQDYqJNN7/KAPOPfR19Y10vi7RxcniJ6j49ZKmIg0xD/Waoi6atR
9GYHK/PkC+CQuUQ5VY7hHBK0p0xYwnu8Y/Wxw4qD42zSNatBL36awtMR1MT0bsTu
ZC+7Cx0939ZaPvnXW6Q9hMnra514KNT1CQRFnd2AWzlqewCsqMN4WMM4aQKBgF9t
WZr2yg4G6vKhdID/3hk7jWDT+azW3pSare0pKW0OFjfyTEo6ITnr309t7Qvui5SE
8HLZJ/HKxbeTdej8F/7/DZTazs2h4nyWXqS8J5GlJ7qUaX6ziAwwxT0lxKNavP5t
3S6e6dfZr6GqZnVOla/MPUYwNuxg2ZoA2wI+aaI3AoGAOKr5yli/srDv88S+le/q
sJRt5Lt9zq4P+eNmscnkWjZELrIRWN6ZLwAKCSlD13ltC043ilwR2PxIiz+oaZ/I
fKt3dKmPEfQDM+0XPBsPp4v1y2LQ2koOqQ5ihEt/DhKztCIyW18qQnOhNZgLW7H9
vj9u22TB4pm6K3btQGQLQ5w=
-----END PRIVATE KEY-----
";

    /// The RSA key is parsed and the P-256 key generated once per test binary.
    fn test_keys() -> &'static TestKeys {
        static KEYS: OnceLock<TestKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let rsa_key = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_RSA_PKCS8_PEM).unwrap();
            let public = rsa_key.to_public_key();
            let ec_key = p256::SecretKey::random(&mut rand::thread_rng());
            let point = ec_key.public_key().to_encoded_point(false);
            TestKeys {
                rsa_pem: TEST_RSA_PKCS8_PEM.to_string(),
                rsa_public_pem: public.to_pkcs1_pem(Default::default()).unwrap(),
                rsa_n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                rsa_e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
                ec_pem: ec_key.to_pkcs8_pem(Default::default()).unwrap().to_string(),
                ec_x: URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                ec_y: URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            }
        })
    }

    fn rsa_jwk(kid: &str) -> Value {
        let k = test_keys();
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": k.rsa_n, "e": k.rsa_e})
    }

    fn ec_jwk(kid: &str) -> Value {
        let k = test_keys();
        json!({"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid, "x": k.ec_x, "y": k.ec_y})
    }

    fn jwks(keys: Vec<Value>) -> Jwks {
        Jwks::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn standard_keys() -> Jwks {
        jwks(vec![rsa_jwk("rsa1"), ec_jwk("ec1")])
    }

    fn params() -> VerifyParams {
        VerifyParams {
            issuer: ISS.into(),
            audiences: vec!["kubeflow-oidc-authservice".into()],
            leeway_secs: 30,
            userid_claim: "email".into(),
            userid_prefix: String::new(),
            groups_claim: "groups".into(),
        }
    }

    /// The claims Dex puts in an ID token for a password login.
    fn claims() -> Value {
        json!({
            "iss": ISS,
            "sub": "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs",
            "aud": "kubeflow-oidc-authservice",
            "exp": NOW + 3600,
            "iat": NOW - 10,
            "nonce": "n-0S6_WzA2Mj",
            "at_hash": "x",
            "email": "user@example.com",
            "email_verified": true,
            "groups": ["admins", "ml"],
            "name": "user",
        })
    }

    fn sign_rs256(kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        let key = EncodingKey::from_rsa_pem(test_keys().rsa_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn sign_es256(kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_string);
        let key = EncodingKey::from_ec_pem(test_keys().ec_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// A token from raw header and claims JSON with the given signature bytes.
    fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    /// A valid RS256 token yields the user claim, the groups, exp and the nonce.
    #[test]
    fn valid_rs256() {
        let token = sign_rs256(Some("rsa1"), &claims());
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Ok(Verified {
                user: "user@example.com".into(),
                groups: vec!["admins".into(), "ml".into()],
                expires_at: NOW + 3600,
                nonce: Some("n-0S6_WzA2Mj".into()),
            })
        );
    }

    /// A valid ES256 token verifies with the P-256 key; the user prefix is prepended.
    #[test]
    fn valid_es256_with_prefix() {
        let token = sign_es256(Some("ec1"), &claims());
        let p = VerifyParams {
            userid_prefix: "oidc:".into(),
            ..params()
        };
        let v = verify(&token, &standard_keys(), &p, NOW).unwrap();
        assert_eq!(v.user, "oidc:user@example.com");
    }

    /// `alg: none` is refused by name, whatever the signature part holds.
    #[test]
    fn alg_none_refused() {
        for sig in [&b""[..], b"sig"] {
            let token = raw_token(&json!({"alg": "none", "kid": "rsa1"}), &claims(), sig);
            assert_eq!(
                verify(&token, &standard_keys(), &params(), NOW),
                Err(TokenError::DisallowedAlg("none".into()))
            );
        }
    }

    /// HS256 "signed" with the RSA public key as the HMAC secret (key confusion) is refused.
    #[test]
    fn hs256_with_public_key_as_secret_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa1".into());
        let secret = EncodingKey::from_secret(test_keys().rsa_public_pem.as_bytes());
        let token = jsonwebtoken::encode(&header, &claims(), &secret).unwrap();
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::DisallowedAlg("HS256".into()))
        );
    }

    /// Algorithms outside the allow-list (RS384, PS256, EdDSA) are refused too.
    #[test]
    fn other_algs_refused() {
        for alg in ["RS384", "PS256", "EdDSA", "ES384"] {
            let token = raw_token(&json!({"alg": alg, "kid": "rsa1"}), &claims(), b"x");
            assert_eq!(
                verify(&token, &standard_keys(), &params(), NOW),
                Err(TokenError::DisallowedAlg(alg.into()))
            );
        }
    }

    /// Claims changed after signing fail the signature check.
    #[test]
    fn tampered_claims_bad_signature() {
        let token = sign_rs256(Some("rsa1"), &claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(with(claims(), "email", json!("admin@example.com")).to_string());
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &standard_keys(), &params(), NOW),
            Err(TokenError::BadSignature)
        );
    }

    /// A signature by a different key with the same kid is a bad signature.
    #[test]
    fn other_key_bad_signature() {
        let other = p256::SecretKey::random(&mut rand::thread_rng());
        let key =
            EncodingKey::from_ec_pem(other.to_pkcs8_pem(Default::default()).unwrap().as_bytes())
                .unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec1".into());
        let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::BadSignature)
        );
    }

    /// iss must equal the configured issuer exactly (a trailing slash differs).
    #[test]
    fn wrong_issuer() {
        for iss in [
            json!("https://evil.example.com"),
            json!(format!("{ISS}/")),
            json!(1),
        ] {
            let token = sign_rs256(Some("rsa1"), &with(claims(), "iss", iss));
            assert_eq!(
                verify(&token, &standard_keys(), &params(), NOW),
                Err(TokenError::WrongIssuer)
            );
        }
        let token = sign_rs256(Some("rsa1"), &without(claims(), "iss"));
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::MissingClaim("iss".into()))
        );
    }

    /// aud must contain one of the configured audiences; absent aud is a missing claim.
    #[test]
    fn wrong_audience() {
        for aud in [
            json!("other-client"),
            json!(["a", "b"]),
            json!([]),
            json!(7),
        ] {
            let token = sign_rs256(Some("rsa1"), &with(claims(), "aud", aud));
            assert_eq!(
                verify(&token, &standard_keys(), &params(), NOW),
                Err(TokenError::WrongAudience)
            );
        }
        let token = sign_rs256(Some("rsa1"), &without(claims(), "aud"));
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::MissingClaim("aud".into()))
        );
    }

    /// An aud array with our client id plus another audience is accepted; so is a match on the
    /// second configured audience.
    #[test]
    fn audience_array_with_extra_entry() {
        let token = sign_rs256(
            Some("rsa1"),
            &with(
                claims(),
                "aud",
                json!(["kubeflow-oidc-authservice", "other"]),
            ),
        );
        assert!(verify(&token, &standard_keys(), &params(), NOW).is_ok());
        let p = VerifyParams {
            audiences: vec!["first".into(), "other".into()],
            ..params()
        };
        assert!(verify(&token, &standard_keys(), &p, NOW).is_ok());
    }

    /// A token past exp (beyond the leeway) is expired; a missing exp is refused.
    #[test]
    fn expired() {
        let token = sign_rs256(Some("rsa1"), &with(claims(), "exp", json!(NOW - 3600)));
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::Expired)
        );
        let token = sign_rs256(Some("rsa1"), &without(claims(), "exp"));
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::MissingClaim("exp".into()))
        );
        let token = sign_rs256(Some("rsa1"), &with(claims(), "exp", json!("tomorrow")));
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::Malformed)
        );
    }

    /// nbf or iat later than now plus the leeway is not yet valid.
    #[test]
    fn not_yet_valid() {
        for name in ["nbf", "iat"] {
            let token = sign_rs256(Some("rsa1"), &with(claims(), name, json!(NOW + 3600)));
            assert_eq!(
                verify(&token, &standard_keys(), &params(), NOW),
                Err(TokenError::NotYetValid),
                "{name}"
            );
        }
    }

    /// Leeway edges: valid while now < exp + leeway; nbf/iat accepted up to now + leeway.
    #[test]
    fn leeway_edges() {
        let keys = standard_keys();
        let p = params(); // leeway 30
        let at =
            |name: &str, value: u64| sign_rs256(Some("rsa1"), &with(claims(), name, json!(value)));
        assert!(verify(&at("exp", NOW - 29), &keys, &p, NOW).is_ok());
        assert_eq!(
            verify(&at("exp", NOW - 30), &keys, &p, NOW),
            Err(TokenError::Expired)
        );
        assert!(verify(&at("nbf", NOW + 30), &keys, &p, NOW).is_ok());
        assert_eq!(
            verify(&at("nbf", NOW + 31), &keys, &p, NOW),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&at("iat", NOW + 30), &keys, &p, NOW).is_ok());
        assert_eq!(
            verify(&at("iat", NOW + 31), &keys, &p, NOW),
            Err(TokenError::NotYetValid)
        );
        let strict = VerifyParams {
            leeway_secs: 0,
            ..params()
        };
        assert!(verify(&at("exp", NOW + 1), &keys, &strict, NOW).is_ok());
        assert_eq!(
            verify(&at("exp", NOW), &keys, &strict, NOW),
            Err(TokenError::Expired)
        );
    }

    /// A kid not in the set is UnknownKid; a token without kid tries the keys of its alg.
    #[test]
    fn unknown_kid() {
        let token = sign_rs256(Some("rotated"), &claims());
        assert_eq!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::UnknownKid(Some("rotated".into())))
        );
        let no_kid = sign_rs256(None, &claims());
        assert!(verify(&no_kid, &standard_keys(), &params(), NOW).is_ok());
        assert_eq!(
            verify(&no_kid, &jwks(vec![ec_jwk("ec1")]), &params(), NOW),
            Err(TokenError::UnknownKid(None))
        );
        assert_eq!(
            verify(&token, &Jwks::default(), &params(), NOW),
            Err(TokenError::UnknownKid(Some("rotated".into())))
        );
    }

    /// The key named by kid must be for the header's alg (an ES256 header on an RSA key is refused).
    #[test]
    fn key_alg_mismatch() {
        let token = sign_es256(Some("rsa1"), &claims());
        assert!(matches!(
            verify(&token, &standard_keys(), &params(), NOW),
            Err(TokenError::DisallowedAlg(alg)) if alg.starts_with("ES256")
        ));
    }

    /// The user claim must be a non-empty string.
    #[test]
    fn missing_user_claim() {
        for claims in [
            without(claims(), "email"),
            with(claims(), "email", json!("")),
            with(claims(), "email", json!(["user@example.com"])),
        ] {
            let token = sign_rs256(Some("rsa1"), &claims);
            assert_eq!(
                verify(&token, &standard_keys(), &params(), NOW),
                Err(TokenError::MissingClaim("email".into()))
            );
        }
    }

    /// Groups absent (or null) means no groups; a lone string is one group.
    #[test]
    fn groups_shapes() {
        let keys = standard_keys();
        let token = sign_rs256(Some("rsa1"), &without(claims(), "groups"));
        assert_eq!(
            verify(&token, &keys, &params(), NOW).unwrap().groups,
            Vec::<String>::new()
        );
        let token = sign_rs256(Some("rsa1"), &with(claims(), "groups", Value::Null));
        assert_eq!(
            verify(&token, &keys, &params(), NOW).unwrap().groups,
            Vec::<String>::new()
        );
        let token = sign_rs256(Some("rsa1"), &with(claims(), "groups", json!("solo")));
        assert_eq!(
            verify(&token, &keys, &params(), NOW).unwrap().groups,
            vec!["solo".to_string()]
        );
    }

    /// Truncated, garbage and oversized tokens are malformed, never a panic.
    #[test]
    fn garbage_tokens_malformed() {
        let good = sign_rs256(Some("rsa1"), &claims());
        let dot = good.rfind('.').unwrap();
        let cases = vec![
            String::new(),
            ".".into(),
            "..".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            "!!!.???.***".into(),
            good[..dot].to_string(),
            format!("{}.{}", &good[..dot], "not*base64"),
            good[..20].to_string(),
            raw_token(&json!("just a string"), &claims(), b"x"),
            raw_token(&json!({"kid": "rsa1"}), &claims(), b"x"),
            format!(
                "{}..{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
                "c2ln"
            ),
            raw_token(
                &json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"]}),
                &claims(),
                b"x",
            ),
            "a".repeat(MAX_TOKEN_LEN + 1),
        ];
        for token in cases {
            let got = verify(&token, &standard_keys(), &params(), NOW);
            assert!(
                matches!(
                    got,
                    Err(TokenError::Malformed) | Err(TokenError::BadSignature)
                ),
                "{token:.40}: {got:?}"
            );
        }
        // A signed token whose payload is not JSON.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"rsa1"}"#);
        let token = format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode("not json"));
        assert!(verify(&token, &standard_keys(), &params(), NOW).is_err());
    }

    /// Keys we do not use (HMAC, RS384, P-384, encryption keys, broken ones) are skipped, not fatal.
    #[test]
    fn jwks_skips_unusable_keys() {
        let k = test_keys();
        let set = jwks(vec![
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            json!({"kty": "RSA", "kid": "rs384", "alg": "RS384", "n": k.rsa_n, "e": k.rsa_e}),
            json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": k.rsa_n, "e": k.rsa_e}),
            json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": k.ec_x, "y": k.ec_y}),
            json!({"kty": "EC", "kid": "short", "crv": "P-256", "x": "AAAA", "y": k.ec_y}),
            json!({"kty": "RSA", "kid": "no-n", "e": k.rsa_e}),
            json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"}),
            json!("not an object"),
            json!({"kty": "RSA", "kid": "noalg", "n": k.rsa_n, "e": k.rsa_e}),
            ec_jwk("ec1"),
            ec_jwk("ec1"),
        ]);
        assert_eq!(set.kids(), vec!["noalg".to_string(), "ec1".to_string()]);
        assert!(Jwks::parse(br#"{"keys": []}"#).unwrap().is_empty());
        assert!(Jwks::parse(b"[]").is_err());
        assert!(Jwks::parse(b"<html>").is_err());
    }

    /// An HMAC key published in the JWKS is never usable, even if a token names it.
    #[test]
    fn published_hmac_key_never_used() {
        let set = jwks(vec![json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})]);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hmac".into());
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"secret")).unwrap();
        assert_eq!(
            verify(&token, &set, &params(), NOW),
            Err(TokenError::DisallowedAlg("HS256".into()))
        );
    }

    async fn counting_fetch(
        calls: &AtomicUsize,
        result: Result<Jwks, String>,
    ) -> Result<Jwks, String> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        result
    }

    /// An unknown kid triggers one refetch; the new key then verifies.
    #[tokio::test]
    async fn key_cache_refetches_on_unknown_kid() {
        let cache = KeyCache::new(Duration::from_secs(30));
        cache.replace(jwks(vec![ec_jwk("ec1")]));
        let calls = AtomicUsize::new(0);
        let token = sign_rs256(Some("rsa1"), &claims());
        let got = cache
            .verify(&token, &params(), NOW, || {
                counting_fetch(&calls, Ok(standard_keys()))
            })
            .await;
        assert_eq!(got.unwrap().user, "user@example.com");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.keys().kids(),
            vec!["rsa1".to_string(), "ec1".to_string()]
        );
    }

    /// N concurrent verifies with the same unknown kid share one fetch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn key_cache_single_flight() {
        let cache = Arc::new(KeyCache::new(Duration::from_secs(0)));
        let calls = Arc::new(AtomicUsize::new(0));
        let token = sign_rs256(Some("rsa1"), &claims());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, calls, token) = (cache.clone(), calls.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .verify(&token, &params(), NOW, || {
                        counting_fetch(&calls, Ok(standard_keys()))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Concurrent verifies whose shared fetch still lacks the kid all fail, after one fetch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn key_cache_single_flight_when_kid_stays_unknown() {
        let cache = Arc::new(KeyCache::new(Duration::from_secs(0)));
        let calls = Arc::new(AtomicUsize::new(0));
        let token = sign_rs256(Some("gone"), &claims());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, calls, token) = (cache.clone(), calls.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .verify(&token, &params(), NOW, || {
                        counting_fetch(&calls, Ok(standard_keys()))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(
                task.await.unwrap(),
                Err(TokenError::UnknownKid(Some("gone".into())))
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A second unknown kid within min_refetch does not fetch; after it, it does.
    #[tokio::test]
    async fn key_cache_rate_limit() {
        let cache = KeyCache::new(Duration::from_secs(30));
        let calls = AtomicUsize::new(0);
        let first = sign_rs256(Some("k1"), &claims());
        let second = sign_rs256(Some("k2"), &claims());
        let r = cache
            .verify(&first, &params(), NOW, || {
                counting_fetch(&calls, Ok(standard_keys()))
            })
            .await;
        assert_eq!(r, Err(TokenError::UnknownKid(Some("k1".into()))));
        let r = cache
            .verify(&second, &params(), NOW + 29, || {
                counting_fetch(&calls, Ok(standard_keys()))
            })
            .await;
        assert_eq!(r, Err(TokenError::UnknownKid(Some("k2".into()))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let _ = cache
            .verify(&second, &params(), NOW + 30, || {
                counting_fetch(&calls, Ok(standard_keys()))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A failed fetch keeps the cached keys (and counts for the rate limit).
    #[tokio::test]
    async fn key_cache_failed_fetch_keeps_keys() {
        let cache = KeyCache::new(Duration::from_secs(30));
        cache.replace(standard_keys());
        let calls = AtomicUsize::new(0);
        let unknown = sign_rs256(Some("new"), &claims());
        let r = cache
            .verify(&unknown, &params(), NOW, || {
                counting_fetch(&calls, Err("connection refused".into()))
            })
            .await;
        assert_eq!(r, Err(TokenError::UnknownKid(Some("new".into()))));
        assert_eq!(
            cache.keys().kids(),
            vec!["rsa1".to_string(), "ec1".to_string()]
        );
        let known = sign_rs256(Some("rsa1"), &claims());
        let r = cache
            .verify(&known, &params(), NOW + 1, || {
                counting_fetch(&calls, Err("unused".into()))
            })
            .await;
        assert!(r.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Errors other than an unknown kid never fetch.
    #[tokio::test]
    async fn key_cache_no_fetch_for_other_errors() {
        let cache = KeyCache::new(Duration::from_secs(0));
        cache.replace(standard_keys());
        let calls = AtomicUsize::new(0);
        let token = sign_rs256(Some("rsa1"), &with(claims(), "exp", json!(NOW - 3600)));
        let r = cache
            .verify(&token, &params(), NOW, || {
                counting_fetch(&calls, Ok(standard_keys()))
            })
            .await;
        assert_eq!(r, Err(TokenError::Expired));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    /// refresh installs the fetched keys and reports failures without dropping the old ones.
    #[tokio::test]
    async fn key_cache_refresh() {
        let cache = KeyCache::new(Duration::from_secs(30));
        assert!(cache.keys().is_empty());
        assert_eq!(
            cache.refresh(NOW, || async { Ok(standard_keys()) }).await,
            Ok(2)
        );
        assert_eq!(
            cache
                .refresh(NOW + 60, || async { Err("503".to_string()) })
                .await,
            Err("503".to_string())
        );
        assert_eq!(cache.keys().len(), 2);
    }

    fn verified(exp: u64) -> Verified {
        Verified {
            user: "u".into(),
            groups: vec![],
            expires_at: exp,
            nonce: None,
        }
    }

    /// A cached token is served until min(exp, inserted + ttl), never after.
    #[test]
    fn verified_cache_lifetime() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 10);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        cache.insert(a, &verified(NOW + 3600), NOW);
        cache.insert(b, &verified(NOW + 10), NOW);
        assert_eq!(cache.get(&a, NOW + 59), Some(verified(NOW + 3600)));
        assert_eq!(cache.get(&a, NOW + 60), None);
        assert_eq!(cache.get(&b, NOW + 9), Some(verified(NOW + 10)));
        assert_eq!(cache.get(&b, NOW + 10), None);
        cache.insert(a, &verified(NOW), NOW);
        assert_eq!(cache.get(&a, NOW), None);
    }

    /// The cache never holds more than max_entries; expired entries go first.
    #[test]
    fn verified_cache_bounded() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 3);
        for i in 0..10u8 {
            cache.insert([i; 32], &verified(NOW + 3600), NOW);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.get(&[9; 32], NOW), Some(verified(NOW + 3600)));
        let off = VerifiedCache::new(Duration::from_secs(60), 0);
        off.insert([1; 32], &verified(NOW + 3600), NOW);
        assert_eq!(off.get(&[1; 32], NOW), None);
    }

    /// KeyCache serves a verified token from the cache, forgets it when the keys are replaced,
    /// and an expired token is never served from the cache.
    #[tokio::test]
    async fn key_cache_uses_verified_cache() {
        let cache = KeyCache::new(Duration::from_secs(30));
        cache.replace(standard_keys());
        let token = sign_rs256(Some("rsa1"), &with(claims(), "exp", json!(NOW + 100)));
        let never = || async { Err::<Jwks, _>("no fetch expected".to_string()) };
        assert!(cache.verify(&token, &params(), NOW, never).await.is_ok());
        assert_eq!(cache.verified.len(), 1);
        // Served from the cache even with an empty key set...
        cache.keys.store(Arc::new(Jwks::default()));
        assert!(cache
            .verify(&token, &params(), NOW + 1, never)
            .await
            .is_ok());
        // ...but not past exp, even inside the leeway.
        cache.keys.store(Arc::new(standard_keys()));
        assert!(cache
            .verify(&token, &params(), NOW + 100, never)
            .await
            .is_ok());
        assert_eq!(
            cache
                .verified
                .get(&VerifiedCache::key(&token, &params()), NOW + 100),
            None
        );
        assert_eq!(
            cache.verify(&token, &params(), NOW + 130, never).await,
            Err(TokenError::Expired)
        );
        // Replacing the keys forgets every verified token.
        assert!(cache
            .verify(&token, &params(), NOW + 2, never)
            .await
            .is_ok());
        cache.replace(Jwks::default());
        assert!(cache.verified.is_empty());
        assert_eq!(
            cache.verify(&token, &params(), NOW + 3, never).await,
            Err(TokenError::UnknownKid(Some("rsa1".into())))
        );
    }

    /// Different verification parameters never share a cache entry.
    #[test]
    fn verified_cache_key_depends_on_params() {
        let p2 = VerifyParams {
            audiences: vec!["other".into()],
            ..params()
        };
        assert_ne!(
            VerifiedCache::key("t", &params()),
            VerifiedCache::key("t", &p2)
        );
        assert_ne!(
            VerifiedCache::key("t", &params()),
            VerifiedCache::key("u", &params())
        );
    }
}
