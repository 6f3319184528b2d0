//! Signing keys: the algorithm allow-list (RFC 8725 §3.1, reference §8 rule 6) and the reading
//! of a JWK Set (RFC 7517 §5) into the keys fhirguard will verify with. A key that cannot be used
//! (encryption key, `oct`/`OKP`, an algorithm outside the list, bad material) is skipped and
//! logged; it never makes the whole set fail.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The algorithms a token may use: RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256 / P-384. Never `none`,
/// never HMAC (a public key must not become a shared secret), never EdDSA (not in the SPEC).
pub const ALLOWED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The allowed algorithm named `name` (case-sensitive, RFC 7518 §3.1), or None.
pub fn allowed_algorithm(name: &str) -> Option<Algorithm> {
    ALLOWED_ALGORITHMS
        .into_iter()
        .find(|alg| algorithm_name(*alg) == name)
}

/// The JOSE name of an algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `kty: RSA`, 2048–8192 bits: RS256/384/512 and PS256/384/512.
    Rsa,
    /// `kty: EC`, `crv: P-256`: ES256.
    EcP256,
    /// `kty: EC`, `crv: P-384`: ES384.
    EcP384,
}

impl KeyKind {
    /// The JWK `kty`.
    pub fn kty(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 | KeyKind::EcP384 => "EC",
        }
    }

    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
        }
    }
}

/// One usable verification key of a provider.
#[derive(Clone)]
pub struct SigningKey {
    /// The JWK's `kid`, which a token's header `kid` selects (RFC 7515 §4.1.4); None when the
    /// set does not name it.
    pub kid: Option<String>,
    /// Its key type and curve, which bound the algorithms it can verify.
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it names one (RFC 7517 §4.4): then only that algorithm.
    pub alg: Option<Algorithm>,
    pub(crate) decoding: DecodingKey,
    /// The key parsed once per algorithm it fits, for [`SigningKey::verifier`].
    verifiers: Arc<[(Algorithm, ParsedPublicKey)]>,
}

impl SigningKey {
    /// Whether a token signed with `alg` may be verified with this key (SPEC §4.5: "header
    /// `alg` must fit the key").
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }

    /// The key parsed for `alg` when the key set was read. Verifying through it skips what
    /// jsonwebtoken's verifier redoes on every call (building the key, and for RSA its
    /// Montgomery context): a fifth of the cost of a cache miss (benches/README.md).
    pub(crate) fn verifier(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.verifiers
            .iter()
            .find_map(|(fits, key)| (*fits == alg).then_some(key))
    }
}

/// The key parsed for each allowed algorithm it fits (only `alg` when the JWK names one). An
/// algorithm the library refuses the key for is left out: jsonwebtoken then decides as before.
fn verifiers(
    kind: KeyKind,
    alg: Option<Algorithm>,
    material: &KeyMaterial,
) -> Arc<[(Algorithm, ParsedPublicKey)]> {
    ALLOWED_ALGORITHMS
        .into_iter()
        .filter(|candidate| kind.fits(*candidate) && alg.is_none_or(|own| own == *candidate))
        .filter_map(|candidate| {
            let parsed = match material {
                KeyMaterial::Rsa { n, e } => {
                    let components = RsaPublicKeyComponents {
                        n: n.as_slice(),
                        e: e.as_slice(),
                    };
                    components.to_parsed_public_key(rsa_parameters(candidate)?)
                }
                KeyMaterial::Ec { point } => {
                    let algorithm: &'static dyn VerificationAlgorithm = match candidate {
                        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                        _ => return None,
                    };
                    ParsedPublicKey::new(algorithm, point)
                }
            };
            parsed.ok().map(|key| (candidate, key))
        })
        .collect()
}

/// The verification parameters jsonwebtoken uses for each RSA algorithm.
fn rsa_parameters(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// A key's public material, as the JWK gave it.
enum KeyMaterial {
    /// Big-endian modulus and exponent without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point `04 || x || y`.
    Ec { point: Vec<u8> },
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kid={} kty={} alg={}",
            self.kid.as_deref().unwrap_or("(none)"),
            self.kind.kty(),
            self.alg.map_or("(any fitting)", algorithm_name)
        )
    }
}

/// A JWK Set document is not `{"keys": [...]}`.
#[derive(Debug, thiserror::Error)]
#[error("the key set is not a JWK Set: {0}")]
pub struct JwkSetError(#[source] serde_json::Error);

/// The keys of a JWK Set, and why the others were skipped (`"kid: reason"`).
#[derive(Debug, Default)]
pub struct ParsedKeySet {
    /// The keys fhirguard will verify with, in the document's order.
    pub keys: Vec<SigningKey>,
    /// One `"kid: reason"` line per key left out (shown by `check --probe`).
    pub skipped: Vec<String>,
    /// SHA-256 of the document as served: an unchanged document is an unchanged key set.
    pub digest: [u8; 32],
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Reads a JWK Set; `authority` only labels the log lines of skipped keys.
pub fn parse_key_set(body: &[u8], authority: &str) -> Result<ParsedKeySet, JwkSetError> {
    let set: RawSet = serde_json::from_slice(body).map_err(JwkSetError)?;
    let mut parsed = ParsedKeySet {
        digest: Sha256::digest(body).into(),
        ..ParsedKeySet::default()
    };
    for value in set.keys {
        let raw = serde_json::from_value::<RawJwk>(value).ok();
        let kid = raw.as_ref().and_then(|r| r.kid.clone());
        match raw.ok_or("not a JWK object").and_then(signing_key) {
            Ok(key) => parsed.keys.push(key),
            Err(reason) => {
                let kid = kid.as_deref().unwrap_or("(no kid)");
                tracing::warn!(
                    authority,
                    kid,
                    reason,
                    "skipping a key of the identity provider's key set"
                );
                parsed.skipped.push(format!("{kid}: {reason}"));
            }
        }
    }
    Ok(parsed)
}

fn signing_key(raw: RawJwk) -> Result<SigningKey, &'static str> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("use is not sig");
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) => {
            Some(allowed_algorithm(name).ok_or("alg is not an allowed signature algorithm")?)
        }
    };
    let (kind, decoding, material) = match raw.kty.as_deref() {
        Some("RSA") => rsa_key(&raw)?,
        Some("EC") => ec_key(&raw)?,
        Some("oct") => return Err("kty oct (symmetric) keys are never used"),
        Some("OKP") => return Err("kty OKP is not supported"),
        Some(_) => return Err("unknown kty"),
        None => return Err("no kty"),
    };
    if alg.is_some_and(|alg| !kind.fits(alg)) {
        return Err("alg does not fit the key type");
    }
    Ok(SigningKey {
        kid: raw.kid,
        kind,
        alg,
        decoding,
        verifiers: verifiers(kind, alg, &material),
    })
}

fn base64url(value: Option<&String>, missing: &'static str) -> Result<Vec<u8>, &'static str> {
    let value = value.ok_or(missing)?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| "key material is not base64url")
}

fn rsa_key(raw: &RawJwk) -> Result<(KeyKind, DecodingKey, KeyMaterial), &'static str> {
    let n = base64url(raw.n.as_ref(), "RSA key without n")?;
    let e = base64url(raw.e.as_ref(), "RSA key without e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    // The verifier (aws-lc-rs RSA_*_2048_8192_*) accepts 2048..=8192-bit moduli.
    if !(2048..=8192).contains(&bits) {
        return Err("RSA modulus is not 2048 to 8192 bits");
    }
    if e.is_empty() || e.len() > 4 {
        return Err("RSA exponent is out of range");
    }
    let material = KeyMaterial::Rsa {
        n: n.to_vec(),
        e: e.to_vec(),
    };
    Ok((
        KeyKind::Rsa,
        DecodingKey::from_rsa_raw_components(n, e),
        material,
    ))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn ec_key(raw: &RawJwk) -> Result<(KeyKind, DecodingKey, KeyMaterial), &'static str> {
    let (kind, len) = match raw.crv.as_deref() {
        Some("P-256") => (KeyKind::EcP256, 32),
        Some("P-384") => (KeyKind::EcP384, 48),
        _ => return Err("EC curve is not P-256 or P-384"),
    };
    let x = base64url(raw.x.as_ref(), "EC key without x")?;
    let y = base64url(raw.y.as_ref(), "EC key without y")?;
    if x.len() != len || y.len() != len {
        return Err("EC coordinates have the wrong length for the curve");
    }
    let point = [&[0x04][..], &x, &y].concat();
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|_| "bad EC key material")?;
    Ok((kind, decoding, KeyMaterial::Ec { point }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_n(bits: usize) -> String {
        let mut n = vec![0xC5u8; bits / 8];
        n[0] = 0xC5;
        URL_SAFE_NO_PAD.encode(n)
    }

    fn parse(keys: serde_json::Value) -> ParsedKeySet {
        let body = serde_json::to_vec(&json!({ "keys": keys })).unwrap();
        parse_key_set(&body, "test").unwrap()
    }

    #[test]
    fn the_allow_list_refuses_none_hmac_and_eddsa() {
        for name in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
        ] {
            assert!(allowed_algorithm(name).is_some(), "{name}");
        }
        for name in [
            "none", "None", "HS256", "HS384", "HS512", "EdDSA", "ES512", "rs256", "",
        ] {
            assert!(allowed_algorithm(name).is_none(), "{name}");
        }
    }

    #[test]
    fn keeps_usable_keys_and_skips_the_rest() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let x384 = URL_SAFE_NO_PAD.encode([7u8; 48]);
        let parsed = parse(json!([
            { "kty": "RSA", "kid": "rsa", "use": "sig", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "rsa-ps", "alg": "PS256", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "EC", "kid": "p256", "crv": "P-256", "x": x, "y": x },
            { "kty": "EC", "kid": "p384", "crv": "P-384", "alg": "ES384", "x": x384, "y": x384 },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "short", "n": rsa_n(1024), "e": "AQAB" },
            { "kty": "RSA", "kid": "hs", "alg": "HS256", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "oct", "kid": "oct", "k": "c2VjcmV0" },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": x },
            { "kty": "EC", "kid": "p521", "crv": "P-521", "x": x, "y": x },
            { "kty": "EC", "kid": "wrong-len", "crv": "P-384", "x": x, "y": x },
            { "kty": "RSA", "kid": "bad-b64", "n": "!!!", "e": "AQAB" },
            "not an object",
        ]));
        let kids: Vec<_> = parsed.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["rsa", "rsa-ps", "p256", "p384"]);
        assert_eq!(parsed.skipped.len(), 10, "{:?}", parsed.skipped);
    }

    #[test]
    fn keys_are_parsed_once_for_each_algorithm_they_fit() {
        let parsed = parse(json!([
            { "kty": "RSA", "kid": "any", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "ps384", "alg": "PS384", "n": rsa_n(2048), "e": "AQAB" },
        ]));
        let any = &parsed.keys[0];
        for alg in &ALLOWED_ALGORITHMS[..6] {
            assert!(any.verifier(*alg).is_some(), "{alg:?}");
        }
        assert!(any.verifier(Algorithm::ES256).is_none());
        let own = &parsed.keys[1];
        assert!(own.verifier(Algorithm::PS384).is_some());
        assert!(own.verifier(Algorithm::RS256).is_none());
    }

    #[test]
    fn a_key_fits_its_type_and_its_own_alg() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let parsed = parse(json!([
            { "kty": "RSA", "kid": "any", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "RSA", "kid": "rs256", "alg": "RS256", "n": rsa_n(2048), "e": "AQAB" },
            { "kty": "EC", "kid": "p256", "crv": "P-256", "x": x, "y": x },
        ]));
        let [any, rs256, p256] = [&parsed.keys[0], &parsed.keys[1], &parsed.keys[2]];
        assert!(any.fits(Algorithm::RS256) && any.fits(Algorithm::PS512));
        assert!(!any.fits(Algorithm::ES256));
        assert!(rs256.fits(Algorithm::RS256) && !rs256.fits(Algorithm::PS256));
        assert!(p256.fits(Algorithm::ES256) && !p256.fits(Algorithm::ES384));
        assert_eq!(rs256.to_string(), "kid=rs256 kty=RSA alg=RS256");
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(parse_key_set(br#"{"issuer":"x"}"#, "test").is_err());
        assert!(parse_key_set(b"<html>", "test").is_err());
    }
}
