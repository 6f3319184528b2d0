//! Sender constraints, per request (issue 14): after the token is verified (or found in the
//! verified-token cache), the request must show what the token is bound to — a DPoP proof by
//! the key of `cnf.jkt` (RFC 9449 §4.3, §6.1) or the client certificate of `cnf.x5t#S256`
//! (RFC 8705 §3) — and a client that must use bound tokens (`senderConstraints.*.requiredFor`)
//! must send one. A plain bearer token without `cnf` of a client with no requirement costs one
//! branch ([`needs_check`]).

use http::request::Parts;
use percent_encoding::percent_decode_str;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::auth::binding::certificate_thumbprint;
use crate::auth::dpop::nonce::Nonces;
use crate::auth::dpop::{self, ProofError, ProofTarget};
use crate::auth::{Principal, Scheme, SenderError};
use crate::config::{CertificateHeader, Config};
use crate::error::Rejection;
use crate::proxy::forward::Peer;
use crate::proxy::replay::ReplayCache;

/// SHA-256 of the DER of the TLS connection's client certificate, when the listener asked for
/// one and the client sent it (RFC 8705 §3): a request extension, set by the listener's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCertificate(pub [u8; 32]);

/// Whether the request needs any sender-constraint check: the DPoP scheme, a bound token, a
/// configuration that requires binding for some client, or a trusted proxy's certificate header
/// (`forwards_certificate`).
pub fn needs_check(
    config: &Config,
    scheme: Scheme,
    principal: &Principal,
    head: &Parts,
    peer: Option<&Peer>,
) -> bool {
    scheme == Scheme::Dpop
        || principal.confirmation.is_some()
        || config.sender.any_required()
        || forwards_certificate(config, head, peer)
}

/// Whether a trusted proxy sent the configured certificate header. It is forwarded to the FHIR
/// server, which may read it as the client's identity, so it must be readable and consistent
/// (an XFCC `Hash` and `Cert` naming one certificate) even for a token bound to none.
fn forwards_certificate(config: &Config, head: &Parts, peer: Option<&Peer>) -> bool {
    config.sender.forwarded.as_ref().is_some_and(|forwarded| {
        head.headers.contains_key(forwarded.header.name())
            && peer.is_some_and(|peer| forwarded.trusts(peer.address.ip()))
    })
}

/// What a DPoP proof is checked against besides the request: the proofs already seen, and the
/// server nonces when they are required (`None`: off).
#[derive(Debug, Clone, Copy)]
pub struct ProofState<'a> {
    /// The proofs already seen: a `jti` is accepted once (RFC 9449 §11.1).
    pub replay: &'a ReplayCache,
    /// The server nonces a proof must carry (RFC 9449 §8), when required.
    pub nonces: Option<&'a Nonces>,
}

/// What the request shows besides its token.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The request's head: its method and URI (the proof's `htm`, `htu`), the `DPoP` header,
    /// and the client certificate (the TLS connection's, or a trusted proxy's header).
    pub head: &'a Parts,
    /// `Bearer` or `DPoP` (RFC 9449 §7.1): a bound token never comes as a plain Bearer.
    pub scheme: Scheme,
    /// The access token, whose hash a proof's `ath` must carry (RFC 9449 §4.3).
    pub token: &'a str,
    /// The connection (`None`: explain, which has none).
    pub peer: Option<&'a Peer>,
    /// Unix seconds.
    pub now: u64,
}

/// The checks of RFC 9449 §4.3 / §7 and RFC 8705 §3 for a verified token: a refusal is a
/// [`SenderError`], or the shared replay store's absence with `failureMode: closed`.
pub async fn check(
    config: &Config,
    proofs: ProofState<'_>,
    evidence: &Evidence<'_>,
    principal: &Principal,
) -> Result<(), Rejection> {
    let client = principal.client_id.as_deref();
    let jkt = principal
        .confirmation
        .as_ref()
        .and_then(|c| c.jkt.as_deref());
    match (evidence.scheme, jkt) {
        (Scheme::Dpop, None) => return Err(SenderError::NotDpopBound.into()),
        (Scheme::Dpop, Some(jkt)) => check_proof(config, proofs, evidence, jkt).await?,
        // RFC 9449 §7.2: a DPoP-bound token is never accepted as a bearer token.
        (Scheme::Bearer, Some(_)) => return Err(SenderError::BoundAsBearer.into()),
        (Scheme::Bearer, None) if config.sender.requires_dpop(client) => {
            let client = client.unwrap_or_default().to_owned();
            return Err(SenderError::DpopRequired(client).into());
        }
        (Scheme::Bearer, None) => {}
    }
    let x5t = principal
        .confirmation
        .as_ref()
        .and_then(|c| c.x5t_s256.as_deref());
    match x5t {
        Some(x5t) => {
            let presented =
                client_certificate(config, evidence)?.ok_or(SenderError::NoCertificate)?;
            if certificate_thumbprint(&presented) != x5t {
                return Err(SenderError::CertificateMismatch.into());
            }
        }
        None if config.sender.requires_certificate(client) => {
            let client = client.unwrap_or_default().to_owned();
            return Err(SenderError::CertificateRequired(client).into());
        }
        // Not bound: a trusted proxy's header is still read, so that one the FHIR server would
        // read differently (two elements, a Hash and a Cert that disagree) is refused.
        None => {
            client_certificate(config, evidence)?;
        }
    }
    Ok(())
}

/// RFC 9449 §4.3: the proof, its key against `cnf.jkt`, its nonce when nonces are required
/// (item 10, §8), then its `jti` against the replay cache (last, so a proof refused for another
/// reason does not use up its `jti`).
async fn check_proof(
    config: &Config,
    proofs: ProofState<'_>,
    evidence: &Evidence<'_>,
    jkt: &str,
) -> Result<(), Rejection> {
    let head = evidence.head;
    let proof = dpop::proof_header(&head.headers).map_err(SenderError::from)?;
    let uri = request_uri(config, head, evidence.peer.map(|p| p.https))
        .ok_or(SenderError::Proof(ProofError::Uri(String::new())))?;
    let window = config.clock_skew.as_secs();
    let target = ProofTarget {
        method: head.method.as_str(),
        uri: &uri,
        access_token: evidence.token,
        now: evidence.now,
        window,
    };
    let keys = Some(proofs.replay.keys());
    let proof = dpop::verify_with(proof, &target, keys).map_err(SenderError::from)?;
    if proof.thumbprint != jkt {
        return Err(SenderError::KeyMismatch.into());
    }
    if let Some(nonces) = proofs.nonces {
        if let Err(problem) = nonces.check(proof.nonce.as_deref(), evidence.now) {
            let nonce = nonces.current(evidence.now);
            return Err(SenderError::UseNonce { problem, nonce }.into());
        }
    }
    let fresh = proofs
        .replay
        .check(
            config.shared_replay(),
            &proof.thumbprint,
            &proof.jti,
            proof.issued_at,
            evidence.now,
            window,
        )
        .await?;
    if !fresh {
        return Err(SenderError::Proof(ProofError::Replayed).into());
    }
    Ok(())
}

/// The URI the client addressed, without query and fragment (RFC 9449 §4.3 item 9):
/// `publicBaseUrl` followed by the request path when configured (fhirguard's paths are relative
/// to the FHIR base), else the connection's scheme and the request's authority or `Host`.
/// `https`: whether the connection is TLS (`None`: no connection, explain — the URI's own scheme,
/// else http).
pub fn request_uri(config: &Config, head: &Parts, https: Option<bool>) -> Option<url::Url> {
    let path = head.uri.path();
    let text = match &config.public_base_url {
        Some(base) => format!("{}{path}", base.as_str().trim_end_matches('/')),
        None => {
            let host = match head.uri.authority() {
                Some(authority) => authority.as_str(),
                None => head.headers.get(http::header::HOST)?.to_str().ok()?,
            };
            let scheme = match https {
                Some(true) => "https",
                Some(false) => "http",
                None => head.uri.scheme_str().unwrap_or("http"),
            };
            format!("{scheme}://{host}{path}")
        }
    };
    url::Url::parse(&text).ok()
}

/// The client certificate's SHA-256: the TLS connection's, else — from a trusted proxy only —
/// the configured header's.
fn client_certificate(
    config: &Config,
    evidence: &Evidence<'_>,
) -> Result<Option<[u8; 32]>, SenderError> {
    let Some(peer) = evidence.peer else {
        return Ok(None);
    };
    if let Some(ClientCertificate(digest)) = evidence.head.extensions.get() {
        return Ok(Some(*digest));
    }
    let Some(forwarded) = &config.sender.forwarded else {
        return Ok(None);
    };
    if !forwarded.trusts(peer.address.ip()) {
        return Ok(None);
    }
    forwarded_certificate(forwarded.header, &evidence.head.headers)
}

/// The certificate digest a trusted proxy's header carries.
pub fn forwarded_certificate(
    header: CertificateHeader,
    headers: &http::HeaderMap,
) -> Result<Option<[u8; 32]>, SenderError> {
    let mut values = headers.get_all(header.name()).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let unreadable = SenderError::ForwardedCertificate;
    if values.next().is_some() {
        return Err(unreadable("more than one header"));
    }
    let value = value
        .to_str()
        .map_err(|_| unreadable("not visible ASCII"))?;
    match header {
        CertificateHeader::SslClientCert => pem_digest(value).map(Some),
        CertificateHeader::XForwardedClientCert => xfcc_digest(value).map(Some),
    }
}

/// Envoy's `x-forwarded-client-cert`: exactly one element (Envoy's `SANITIZE_SET`: the
/// certificate of the connection Envoy terminated), its `Hash` (hex SHA-256 of the DER) and/or
/// its `Cert` (URL-encoded PEM). When both are present they must name the same certificate: a
/// FHIR server behind fhirguard may read the `Cert` where fhirguard bound the token to the
/// `Hash`, so an element whose two disagree is refused (401), as is a repeated `Hash` or `Cert`.
///
/// `pub` (hidden) for the `certificate` fuzz target (`fuzz/`).
#[doc(hidden)]
pub fn xfcc_digest(value: &str) -> Result<[u8; 32], SenderError> {
    let unreadable = SenderError::ForwardedCertificate;
    let elements = split_outside_quotes(value, ',');
    let [element] = elements.as_slice() else {
        return Err(unreadable(
            "x-forwarded-client-cert must hold exactly one element",
        ));
    };
    let (mut hash, mut cert) = (None, None);
    for pair in split_outside_quotes(element, ';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        let (slot, repeated) = match key.trim().to_ascii_lowercase().as_str() {
            "hash" => (&mut hash, "more than one Hash"),
            "cert" => (&mut cert, "more than one Cert"),
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(unreadable(repeated));
        }
    }
    let hash = hash
        .map(|hash| hex_digest(hash).ok_or(unreadable("Hash is not a hex SHA-256")))
        .transpose()?;
    match (hash, cert) {
        (Some(hash), Some(cert)) if pem_digest(cert)? != hash => {
            Err(unreadable("Hash and Cert name different certificates"))
        }
        (Some(hash), _) => Ok(hash),
        (None, Some(cert)) => pem_digest(cert),
        (None, None) => Err(unreadable("no Hash or Cert")),
    }
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

fn hex_digest(text: &str) -> Option<[u8; 32]> {
    // Digits only: `from_str_radix` alone also takes a sign, so `+a` would read as `0a`.
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of the DER of the first certificate of a URL-encoded PEM.
fn pem_digest(encoded: &str) -> Result<[u8; 32], SenderError> {
    let unreadable = SenderError::ForwardedCertificate;
    let pem = percent_decode_str(encoded).collect::<Vec<u8>>();
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or(unreadable("no PEM certificate"))?
        .map_err(|_| unreadable("not a PEM certificate"))?;
    Ok(Sha256::digest(der.as_ref()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_hash_or_cert_and_one_element_only() {
        let hash = "a".repeat(64);
        let digest = xfcc_digest(&format!("By=spiffe://x;Hash={hash};Subject=\"CN=a,O=b\""));
        assert_eq!(digest, Ok([0xaa; 32]));
        assert!(xfcc_digest(&format!("Hash={hash},Hash={hash}")).is_err());
        assert!(xfcc_digest("Hash=zz").is_err());
        assert!(xfcc_digest("By=x").is_err());
    }

    /// Found by the `certificate` fuzz target: a `+` in place of a pair's first hex digit was
    /// read as `0` (`u8::from_str_radix` takes a sign), so a `Hash` that is not hex was accepted.
    #[test]
    fn xfcc_hash_is_hex_digits_only() {
        let hash = format!("+a{}", "a".repeat(62));
        assert_eq!(
            xfcc_digest(&format!("Hash={hash}")),
            Err(SenderError::ForwardedCertificate(
                "Hash is not a hex SHA-256"
            ))
        );
        let hash = format!("{}-1", "a".repeat(62));
        assert!(xfcc_digest(&format!("Hash={hash}")).is_err());
        assert_eq!(
            xfcc_digest(&format!("Hash={}", "aA".repeat(32))),
            Ok([0xaa; 32])
        );
    }
}
