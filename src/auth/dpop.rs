//! DPoP proofs (RFC 9449): one `DPoP` header's JWT checked against the request it came with and
//! the access token it accompanies — `typ`, algorithm, embedded public key, signature, `htm`,
//! `htu`, `iat`, `ath` (§4.3) — and the RFC 7638 thumbprint of its key, which the caller compares
//! with the token's `cnf.jkt` (§6.1). Pure: whether the proof's `jti` was seen before is the
//! caller's replay cache ([`crate::proxy::replay`]); this module only returns the `jti`, and
//! the `nonce` claim, which [`nonce`] checks when server nonces are required (§8).

mod claims;
pub mod key;
pub mod nonce;

use std::borrow::Cow;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::echo;
use claims::Claims;
use key::ProofKey;
pub use key::ProofKeys;

/// The `DPoP` request header (RFC 9449 §4.1).
pub const DPOP: http::HeaderName = http::HeaderName::from_static("dpop");

/// The proof algorithms fhirguard verifies (RFC 9449 §4.3 item 5: asymmetric only; `none` and
/// the HMAC algorithms are never accepted), in the order the `algs` challenge parameter lists
/// them (§7.1).
pub const PROOF_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
];

/// The `algs` parameter of a `DPoP` challenge (RFC 9449 §7.1).
pub const PROOF_ALGORITHMS_TEXT: &str = "ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512";

/// A proof longer than this is refused unread: proofs are a few hundred bytes (an RSA key
/// makes them about 1 KiB).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// Why a DPoP proof was refused (401 `invalid_dpop_proof`, RFC 9449 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// §4.3 item 1: exactly one `DPoP` header.
    #[error("The request has no DPoP proof")]
    Missing,
    /// §4.3 item 1: more than one `DPoP` header, which might each name another key.
    #[error("The request has more than one DPoP header")]
    Several,
    /// §4.3 items 2–3: a JWT of three base64url JSON parts, every required claim present.
    #[error("The DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    /// §4.3 item 4: `typ` must be `dpop+jwt`.
    #[error("The DPoP proof's typ is not dpop+jwt")]
    Type,
    /// §4.3 item 5: an asymmetric algorithm on the allow-list.
    #[error("The DPoP proof's algorithm '{0}' is not allowed")]
    Algorithm(String),
    /// §4.3 item 6: `jwk` a public key that fits `alg`, never private members, never symmetric.
    #[error("The DPoP proof's jwk is not a usable public key: {0}")]
    Key(&'static str),
    /// §4.3 item 6: the signature verifies with `jwk`.
    #[error("The DPoP proof's signature is invalid")]
    Signature,
    /// §4.3 item 8: `htm` is the request's method.
    #[error("The DPoP proof's htm '{0}' is not the request's method")]
    Method(String),
    /// §4.3 item 9: `htu` is the request's URI without query and fragment.
    #[error("The DPoP proof's htu '{0}' is not the request's URI")]
    Uri(String),
    /// §4.3 item 11: `iat` within the acceptable window (the clock skew either side of now).
    #[error("The DPoP proof's iat is outside the accepted window")]
    IssuedAt,
    /// §4.3 item 12: `ath` is the base64url SHA-256 of the access token.
    #[error("The DPoP proof's ath does not match the access token")]
    TokenHash,
    /// §4.3 item 12 / §11.1: a `jti` already used within the window.
    #[error("The DPoP proof was already used")]
    Replayed,
}

impl ProofError {
    /// A bounded label for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            ProofError::Missing | ProofError::Several => "dpop_proof_missing",
            ProofError::Malformed(_) | ProofError::Type => "dpop_proof_malformed",
            ProofError::Algorithm(_) => "dpop_proof_algorithm",
            ProofError::Key(_) => "dpop_proof_key",
            ProofError::Signature => "dpop_proof_signature",
            ProofError::Method(_) => "dpop_proof_htm",
            ProofError::Uri(_) => "dpop_proof_htu",
            ProofError::IssuedAt => "dpop_proof_iat",
            ProofError::TokenHash => "dpop_proof_ath",
            ProofError::Replayed => "dpop_proof_replayed",
        }
    }
}

/// What the request is, as a proof must name it.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// The request's method, which `htm` must equal (§4.3 item 8).
    pub method: &'a str,
    /// The request's URI as the client addressed it, without query and fragment (§4.3 item 9).
    pub uri: &'a url::Url,
    /// The access token the proof accompanies.
    pub access_token: &'a str,
    /// Unix seconds.
    pub now: u64,
    /// How far `iat` may be from `now`, either way (seconds).
    pub window: u64,
}

/// A proof that passed every check of §4.3 but `jti`'s uniqueness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint (SHA-256, base64url) of the proof's public key: `cnf.jkt`.
    pub thumbprint: String,
    /// The proof's unique identifier, checked against the replay cache after the rest (§11.1).
    pub jti: String,
    /// `iat`, Unix seconds.
    pub issued_at: u64,
    /// The `nonce` claim (§4.2), if any; one that is not a string reads as empty (never valid).
    pub nonce: Option<String>,
}

/// The request's one `DPoP` header (§4.3 item 1).
pub fn proof_header(headers: &HeaderMap) -> Result<&str, ProofError> {
    let mut values = headers.get_all(DPOP).iter();
    let value = values.next().ok_or(ProofError::Missing)?;
    if values.next().is_some() {
        return Err(ProofError::Several);
    }
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| ProofError::Malformed("the header is not visible ASCII"))
}

/// Verifies a proof (§4.3 items 2–12, except `jti`'s uniqueness) against `target`.
pub fn verify(proof: &str, target: &ProofTarget<'_>) -> Result<Proof, ProofError> {
    verify_with(proof, target, None)
}

/// [`verify`], with the keys of headers read before taken from `keys` and a header whose
/// signature verified remembered there ([`key`]: the memo stands for exactly the header text
/// the signature covers; the signature and every claim are still checked).
pub fn verify_with(
    proof: &str,
    target: &ProofTarget<'_>,
    keys: Option<&ProofKeys>,
) -> Result<Proof, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed("too large"));
    }
    let (signing_input, signature) = proof
        .rsplit_once('.')
        .ok_or(ProofError::Malformed("not a JWT"))?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or(ProofError::Malformed("not a JWT"))?;
    // Both parts are read before the header's checks, so that a malformed part is reported
    // first, with or without the memo.
    let header_read = match keys.and_then(|keys| keys.get(header)) {
        Some(key) => HeaderRead::Remembered(key),
        None => HeaderRead::Decoded(json_object(header)?),
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| ProofError::Malformed("a part is not base64url"))?;
    let claims =
        Claims::parse(&payload).ok_or(ProofError::Malformed("a part is not a JSON object"))?;
    let (key, new) = match header_read {
        HeaderRead::Remembered(key) => (key, false),
        HeaderRead::Decoded(header) => (Arc::new(ProofKey::from_header(&header)?), true),
    };
    if !key.verifies(signing_input, signature) {
        return Err(ProofError::Signature);
    }
    if let (true, Some(keys)) = (new, keys) {
        keys.remember(header, &key);
    }
    check_claims(&claims, &key, target)?;
    let issued_at = issued_at(&claims)?;
    let jti = claims
        .jti
        .filter(|jti| !jti.is_empty())
        .ok_or(ProofError::Malformed("no jti"))?;
    Ok(Proof {
        thumbprint: key.thumbprint.clone(),
        jti: jti.into_owned(),
        issued_at,
        nonce: claims.nonce.map(Cow::into_owned),
    })
}

/// A proof's protected header: the key of the same header text read before, or the header
/// decoded for its checks.
enum HeaderRead {
    Remembered(Arc<ProofKey>),
    Decoded(Map<String, Value>),
}

/// §4.3 items 8–12: `htm`, `htu`, `iat`, `ath`.
fn check_claims(
    claims: &Claims<'_>,
    key: &ProofKey,
    target: &ProofTarget<'_>,
) -> Result<(), ProofError> {
    let htm = claims
        .htm
        .as_deref()
        .ok_or(ProofError::Malformed("no htm"))?;
    if htm != target.method {
        return Err(ProofError::Method(echo(htm)));
    }
    let htu = claims
        .htu
        .as_deref()
        .ok_or(ProofError::Malformed("no htu"))?;
    if !same_uri(htu, target.uri) {
        return Err(ProofError::Uri(echo(htu)));
    }
    let iat = issued_at(claims)?;
    if iat > target.now.saturating_add(target.window)
        || iat < target.now.saturating_sub(target.window)
    {
        return Err(ProofError::IssuedAt);
    }
    // §4.3 item 12 (RFC 9449 §4.2 `ath`): required when an access token is presented.
    let ath = claims
        .ath
        .as_deref()
        .ok_or(ProofError::Malformed("no ath"))?;
    if !key.hashes(target.access_token, ath) {
        return Err(ProofError::TokenHash);
    }
    Ok(())
}

/// `iat`, a NumericDate (RFC 7519 §2: seconds, fractions allowed and dropped).
fn issued_at(claims: &Claims<'_>) -> Result<u64, ProofError> {
    claims
        .iat
        .ok_or(ProofError::Malformed("no iat, or not a NumericDate"))
}

/// `htu` compared after RFC 3986 §6.2.2 syntax-based normalisation (the `url` crate's parse:
/// case of scheme and host, default port, dot segments, percent-encoding case), query and
/// fragment ignored (RFC 9449 §4.3 item 9).
fn same_uri(htu: &str, expected: &url::Url) -> bool {
    // The common case, without a parse: `htu` written as the url crate serialises `expected`
    // (a serialisation parses back to the same URL), which has no query, fragment or userinfo.
    if htu == expected.as_str()
        && expected.query().is_none()
        && expected.fragment().is_none()
        && expected.username().is_empty()
        && expected.password().is_none()
    {
        return true;
    }
    let Ok(mut htu) = url::Url::parse(htu) else {
        return false;
    };
    htu.set_query(None);
    htu.set_fragment(None);
    htu.scheme() == expected.scheme()
        && htu.host() == expected.host()
        && htu.port_or_known_default() == expected.port_or_known_default()
        && htu.path() == expected.path()
        && htu.username().is_empty()
        && htu.password().is_none()
}

/// `ath`: base64url(SHA-256(access token)) (RFC 9449 §4.2).
pub fn token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

fn json_object(part: &str) -> Result<Map<String, Value>, ProofError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed("a part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed("a part is not a JSON object"))
}

/// RFC 7638 §3: SHA-256 over the canonical JSON of the required members, base64url.
fn thumbprint(required: &[(&str, &str)]) -> String {
    let mut canonical = String::from("{");
    for (index, (name, value)) in required.iter().enumerate() {
        if index > 0 {
            canonical.push(',');
        }
        canonical.push_str(&Value::from(*name).to_string());
        canonical.push(':');
        canonical.push_str(&Value::from(*value).to_string());
    }
    canonical.push('}');
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// RFC 7638 thumbprint of a public JWK given as JSON (`explain`, tests).
pub fn jwk_thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let text = |name| jwk.get(name).and_then(Value::as_str);
    let required: Vec<(&str, &str)> = match text("kty")? {
        "RSA" => vec![("e", text("e")?), ("kty", "RSA"), ("n", text("n")?)],
        "EC" => vec![
            ("crv", text("crv")?),
            ("kty", "EC"),
            ("x", text("x")?),
            ("y", text("y")?),
        ],
        "OKP" => vec![("crv", text("crv")?), ("kty", "OKP"), ("x", text("x")?)],
        _ => return None,
    };
    Some(thumbprint(&required))
}

#[cfg(test)]
#[path = "dpop/tests.rs"]
pub(crate) mod tests;
