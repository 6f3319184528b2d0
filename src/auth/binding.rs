//! Sender-constrained tokens: what a token's `cnf` claim binds it to (RFC 7800 §3.1) — a DPoP
//! key by its thumbprint (`jkt`, RFC 9449 §6.1) or a client certificate by its SHA-256
//! thumbprint (`x5t#S256`, RFC 8705 §3.1) — and the refusals when the request does not show
//! that key or certificate ([`SenderError`]). The checks themselves run per request in
//! [`crate::proxy::sender`], since a token verified once (and cached) must still be presented
//! with its key on every request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::dpop::nonce::NonceError;
use super::dpop::ProofError;
use super::error::AuthError;

/// A token's `cnf` claim, as far as fhirguard can enforce it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Confirmation {
    /// `cnf.jkt`: the RFC 7638 thumbprint of the DPoP key (RFC 9449 §6.1).
    pub jkt: Option<String>,
    /// `cnf.x5t#S256`: base64url SHA-256 of the client certificate's DER (RFC 8705 §3.1).
    pub x5t_s256: Option<String>,
}

/// The token's `cnf`, if any. A `cnf` fhirguard cannot enforce (only `jwk`, `kid`, `jku`, …:
/// RFC 7800 §3.2–3.5) is refused rather than ignored: the issuer meant the token to be bound,
/// and accepting it from anyone would drop that (fail closed).
pub fn confirmation(
    claims: &serde_json::Map<String, Value>,
) -> Result<Option<Confirmation>, AuthError> {
    let Some(cnf) = claims.get("cnf") else {
        return Ok(None);
    };
    let malformed = |detail| AuthError::Malformed { detail };
    let cnf = cnf
        .as_object()
        .ok_or(malformed("the cnf claim is not an object"))?;
    let member = |name| match cnf.get(name) {
        None => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(_) => Err(malformed("a cnf member is not a string")),
    };
    let confirmation = Confirmation {
        jkt: member("jkt")?,
        x5t_s256: member("x5t#S256")?,
    };
    if confirmation.jkt.is_none() && confirmation.x5t_s256.is_none() {
        return Err(malformed(
            "the cnf claim binds the token to a key fhirguard cannot check (only jkt and \
             x5t#S256 are supported)",
        ));
    }
    Ok(Some(confirmation))
}

/// `x5t#S256` of a certificate's SHA-256 digest (RFC 8705 §3.1).
pub fn certificate_thumbprint(digest: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(digest)
}

/// Which WWW-Authenticate challenge a refusal carries (RFC 9449 §7.1, RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// `DPoP error="…", algs="…"`, with this `error`.
    Dpop(&'static str),
    /// `Bearer error="invalid_token"` (RFC 8705 §3: a certificate-bound token's refusal).
    Bearer,
}

/// Why a sender-constrained token, or a client that must use one, was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// The DPoP proof failed a check of RFC 9449 §4.3.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// `Authorization: DPoP` with a token that has no `cnf.jkt` (RFC 9449 §7.1: the DPoP scheme
    /// carries DPoP-bound tokens only).
    #[error("The token is not DPoP-bound (no cnf.jkt) but was sent with the DPoP scheme")]
    NotDpopBound,
    /// Nonces are required and the proof has none, or one not valid now (RFC 9449 §8, §4.3
    /// item 10); the answer hands the client `nonce` to retry with (`DPoP-Nonce`, §9).
    #[error("{problem}; retry with the nonce of the DPoP-Nonce header")]
    UseNonce {
        /// What was wrong with the proof's `nonce`.
        problem: NonceError,
        /// A fresh nonce, sent back in the `DPoP-Nonce` header.
        nonce: http::HeaderValue,
    },
    /// The proof's key is not the one the token is bound to (RFC 9449 §4.3 item 12, §6.1).
    #[error("The DPoP proof's key does not match the token's cnf.jkt")]
    KeyMismatch,
    /// A DPoP-bound token sent as a Bearer token (RFC 9449 §7.2).
    #[error("The token is DPoP-bound and must be sent with the DPoP scheme and a proof")]
    BoundAsBearer,
    /// The client must use DPoP (`senderConstraints.dpop.requiredFor`).
    #[error("The client '{0}' must present DPoP-bound tokens with a DPoP proof")]
    DpopRequired(String),
    /// A certificate-bound token on a connection without a client certificate (RFC 8705 §3).
    #[error("The token is bound to a client certificate and the request presented none")]
    NoCertificate,
    /// The connection's client certificate is not the token's (RFC 8705 §3).
    #[error("The client certificate does not match the token's cnf x5t#S256")]
    CertificateMismatch,
    /// The client must use certificate-bound tokens
    /// (`senderConstraints.clientCertificates.requiredFor`).
    #[error("The client '{0}' must present certificate-bound tokens")]
    CertificateRequired(String),
    /// A trusted proxy's client-certificate header that cannot be read.
    #[error("The forwarded client certificate cannot be read: {0}")]
    ForwardedCertificate(&'static str),
}

impl SenderError {
    /// The fresh nonce the answer hands out (`DPoP-Nonce`, RFC 9449 §9), if any.
    pub fn nonce(&self) -> Option<&http::HeaderValue> {
        match self {
            SenderError::UseNonce { nonce, .. } => Some(nonce),
            _ => None,
        }
    }

    /// A bounded label for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            SenderError::Proof(error) => error.reason(),
            SenderError::UseNonce { problem, .. } => problem.reason(),
            SenderError::NotDpopBound => "dpop_not_bound",
            SenderError::KeyMismatch => "dpop_key_mismatch",
            SenderError::BoundAsBearer => "dpop_bound_as_bearer",
            SenderError::DpopRequired(_) => "dpop_required",
            SenderError::NoCertificate => "certificate_missing",
            SenderError::CertificateMismatch => "certificate_mismatch",
            SenderError::CertificateRequired(_) => "certificate_required",
            SenderError::ForwardedCertificate(_) => "certificate_header",
        }
    }

    /// The challenge: `invalid_dpop_proof` for a bad proof, `use_dpop_nonce` for a proof
    /// without a valid nonce, `invalid_token` for a token presented without what binds it
    /// (RFC 9449 §7.1, §7.2, §8); certificate refusals are `Bearer`'s `invalid_token`
    /// (RFC 8705 §3).
    pub fn challenge(&self) -> ChallengeKind {
        match self {
            SenderError::Proof(_) | SenderError::KeyMismatch => {
                ChallengeKind::Dpop("invalid_dpop_proof")
            }
            SenderError::UseNonce { .. } => ChallengeKind::Dpop("use_dpop_nonce"),
            SenderError::NotDpopBound
            | SenderError::BoundAsBearer
            | SenderError::DpopRequired(_) => ChallengeKind::Dpop("invalid_token"),
            SenderError::NoCertificate
            | SenderError::CertificateMismatch
            | SenderError::CertificateRequired(_)
            | SenderError::ForwardedCertificate(_) => ChallengeKind::Bearer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::UnverifiedToken;
    use serde_json::json;

    fn token(claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{h}.{c}.c2ln")
    }

    #[test]
    fn cnf_is_read_and_unenforceable_cnf_is_refused() {
        let read = |claims: Value| {
            let text = token(&claims);
            let parsed = UnverifiedToken::parse(&text).unwrap();
            confirmation(&parsed.claims.0).map_err(|e| e.reason())
        };
        assert_eq!(read(json!({})), Ok(None));
        assert_eq!(
            read(json!({"cnf": {"jkt": "abc"}})),
            Ok(Some(Confirmation {
                jkt: Some("abc".into()),
                x5t_s256: None
            }))
        );
        assert_eq!(
            read(json!({"cnf": {"x5t#S256": "xyz"}}))
                .unwrap()
                .unwrap()
                .x5t_s256,
            Some("xyz".into())
        );
        for bad in [
            json!({"cnf": "abc"}),
            json!({"cnf": {"jkt": 1}}),
            json!({"cnf": {"kid": "k"}}),
            json!({"cnf": {}}),
        ] {
            assert_eq!(read(bad.clone()), Err("malformed"), "{bad}");
        }
    }

    #[test]
    fn reasons_are_bounded_and_challenges_per_rfc() {
        assert_eq!(
            SenderError::BoundAsBearer.challenge(),
            ChallengeKind::Dpop("invalid_token")
        );
        assert_eq!(
            SenderError::Proof(ProofError::Replayed).challenge(),
            ChallengeKind::Dpop("invalid_dpop_proof")
        );
        assert_eq!(
            SenderError::CertificateMismatch.challenge(),
            ChallengeKind::Bearer
        );
        assert_eq!(
            SenderError::Proof(ProofError::Replayed).reason(),
            "dpop_proof_replayed"
        );
    }
}
