//! A proof's key (RFC 9449 §4.3 items 4–7): the protected header's `typ`, `alg` and `jwk` read
//! into a verifier that aws-lc-rs has parsed once, with the key's RFC 7638 thumbprint; and
//! [`ProofKeys`], a bounded memo from a header's exact base64url text to that key, so that a
//! client signing proof after proof with one key costs one header parse, not one per request.
//!
//! **What the memo may and may not do.** It is keyed on the header segment byte for byte — the
//! very text the signature covers — so a hit stands for exactly the header that was read
//! before: another `jwk`, `alg`, `kid` or any other byte is another entry, read from scratch.
//! A hit skips only what is a function of that text (the JSON parse, the `typ`/`alg`/`crit`/
//! `jwk` checks, the key's parse and its thumbprint); the signature over the proof, and every
//! claim, are checked on every request. A header enters the memo only after a signature by its
//! key verified, and only a short one (`MEMO_HEADER_BYTES`), and the memo holds at most
//! [`MEMO_ENTRIES`], first in first out. One memo serves the process (the replay cache holds
//! it, [`crate::proxy::replay`]): a client making up keys cannot grow it, only push other
//! clients' headers out, whose next proofs then cost the full parse, as every proof did before.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwapOption;
use aws_lc_rs::signature::{self as aws, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{token_hash, ProofError, PROOF_ALGORITHMS};
use crate::auth::error::echo;
use crate::auth::keys::algorithm_name;

/// How many headers [`ProofKeys`] remembers: far more than the keys that sign at one time in a
/// deployment, each entry a few hundred bytes.
pub const MEMO_ENTRIES: usize = 1024;

/// A header longer than this is verified but not remembered (an RSA-4096 `jwk` makes a header
/// of about 1.1 KiB), so the memo stays under a few MiB whatever clients send.
const MEMO_HEADER_BYTES: usize = 2048;

/// A token longer than this has its `ath` computed each time, not remembered: with the memo
/// full, the tokens kept stay under 1024 × 4 KiB.
const MEMO_TOKEN_BYTES: usize = 4096;

/// A proof header's key, ready to verify signatures: §4.3 items 4–7 passed for its header.
pub struct ProofKey {
    verifier: ParsedPublicKey,
    /// RFC 7638 thumbprint (SHA-256, base64url): what `cnf.jkt` must name (§6.1).
    pub(super) thumbprint: String,
    /// The last access token seen with this key and its `ath` (§4.2): a client presents one
    /// token with its key until the token is renewed, so its SHA-256 is computed once. Unlike
    /// the verified-token cache, which keeps digests only, this keeps a token's text, until the
    /// next token or the entry's eviction: on the proxy's path only DPoP-bound tokens (`cnf.jkt`)
    /// reach a proof's check, and such a token is worthless without its key's private half
    /// (RFC 9449 §1).
    last_token: ArcSwapOption<TokenHash>,
}

impl fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofKey")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// An access token and its `ath`.
#[derive(Debug)]
struct TokenHash {
    token: Box<str>,
    ath: String,
}

impl ProofKey {
    /// §4.3 items 4–7 for a decoded protected header: `typ`, no `crit`, an allowed `alg`, and a
    /// public `jwk` that fits it.
    pub(super) fn from_header(header: &Map<String, Value>) -> Result<ProofKey, ProofError> {
        // §4.3 item 4.
        if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err(ProofError::Type);
        }
        if header.contains_key("crit") {
            return Err(ProofError::Malformed("critical header parameters"));
        }
        // §4.3 item 5.
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(ProofError::Malformed("no alg"))?;
        let alg = PROOF_ALGORITHMS
            .into_iter()
            .find(|alg| algorithm_name(*alg) == alg_name)
            .ok_or_else(|| ProofError::Algorithm(echo(alg_name)))?;
        // §4.3 items 6–7.
        let jwk = header
            .get("jwk")
            .and_then(Value::as_object)
            .ok_or(ProofError::Key("no jwk header parameter"))?;
        let (key, thumbprint) = public_key(jwk, alg)?;
        // A key aws-lc-rs cannot parse (a point off the curve, a zero-padded modulus) verifies
        // no signature: refused as one that does not verify.
        let verifier = key.parse(alg).ok_or(ProofError::Signature)?;
        Ok(ProofKey {
            verifier,
            thumbprint,
            last_token: ArcSwapOption::empty(),
        })
    }

    /// §4.3 item 6: whether `signature` (base64url) is this key's over `signing_input`.
    pub(super) fn verifies(&self, signing_input: &str, signature: &str) -> bool {
        URL_SAFE_NO_PAD.decode(signature).is_ok_and(|signature| {
            self.verifier
                .verify_sig(signing_input.as_bytes(), &signature)
                .is_ok()
        })
    }

    /// Whether `ath` is base64url(SHA-256(`access_token`)) (§4.2), the hash remembered for the
    /// last token this key came with.
    pub(super) fn hashes(&self, access_token: &str, ath: &str) -> bool {
        if let Some(last) = &*self.last_token.load() {
            if *last.token == *access_token {
                return last.ath == ath;
            }
        }
        let expected = token_hash(access_token);
        let matches = expected == ath;
        if access_token.len() <= MEMO_TOKEN_BYTES {
            self.last_token.store(Some(Arc::new(TokenHash {
                token: access_token.into(),
                ath: expected,
            })));
        }
        matches
    }
}

/// A `jwk`'s key material, decoded and checked to fit the algorithm; not yet parsed.
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The SEC1 uncompressed point `04 ‖ x ‖ y`.
    Ec(Vec<u8>),
    Ed(Vec<u8>),
}

impl Material {
    /// The verifier of `alg` over this material: the algorithms jsonwebtoken verifies each JWS
    /// algorithm with (RFC 7518 §3; RSA keys of 2048 to 8192 bits).
    fn parse(&self, alg: Algorithm) -> Option<ParsedPublicKey> {
        let parsed = match (self, alg) {
            (Material::Rsa { n, e }, alg) => {
                let params: &'static aws::RsaParameters = match alg {
                    Algorithm::RS256 => &aws::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &aws::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &aws::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &aws::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &aws::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &aws::RSA_PSS_2048_8192_SHA512,
                    _ => return None,
                };
                RsaPublicKeyComponents { n, e }.to_parsed_public_key(params)
            }
            (Material::Ec(point), Algorithm::ES256) => {
                ParsedPublicKey::new(&aws::ECDSA_P256_SHA256_FIXED, point)
            }
            (Material::Ec(point), Algorithm::ES384) => {
                ParsedPublicKey::new(&aws::ECDSA_P384_SHA384_FIXED, point)
            }
            (Material::Ed(x), Algorithm::EdDSA) => ParsedPublicKey::new(&aws::ED25519, x),
            _ => return None,
        };
        parsed.ok()
    }
}

/// The members a public JWK may not have: private key material of RSA, EC and OKP keys, and
/// the symmetric key of `oct` (RFC 7518 §6; RFC 9449 §4.3 item 6 "MUST NOT contain a private
/// key").
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The key material of a proof's `jwk`, checked to fit `alg`, and its RFC 7638 thumbprint.
fn public_key(jwk: &Map<String, Value>, alg: Algorithm) -> Result<(Material, String), ProofError> {
    if PRIVATE_MEMBERS
        .iter()
        .any(|member| jwk.contains_key(*member))
    {
        return Err(ProofError::Key(
            "it holds private or symmetric key material",
        ));
    }
    let member = |name| {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or(ProofError::Key("a required member is missing"))
    };
    let decode = |text: &str| {
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| ProofError::Key("its members are not valid base64url"))
    };
    let kty = member("kty")?;
    // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
    let (key, required): (Material, Vec<(&str, &str)>) = match (kty, alg) {
        ("RSA", Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
        | ("RSA", Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512) => {
            let (n, e) = (member("n")?, member("e")?);
            // RFC 7518 §3.3: at least 2048 bits.
            if URL_SAFE_NO_PAD.decode(n).map_or(0, |n| n.len()) < 256 {
                return Err(ProofError::Key("an RSA key shorter than 2048 bits"));
            }
            let key = Material::Rsa {
                n: decode(n)?,
                e: decode(e)?,
            };
            (key, vec![("e", e), ("kty", kty), ("n", n)])
        }
        ("EC", Algorithm::ES256 | Algorithm::ES384) => {
            let crv = member("crv")?;
            let fits = matches!(
                (crv, alg),
                ("P-256", Algorithm::ES256) | ("P-384", Algorithm::ES384)
            );
            if !fits {
                return Err(ProofError::Key("the curve does not fit alg"));
            }
            let (x, y) = (member("x")?, member("y")?);
            let mut point = vec![0x04];
            point.extend(decode(x)?);
            point.extend(decode(y)?);
            (
                Material::Ec(point),
                vec![("crv", crv), ("kty", kty), ("x", x), ("y", y)],
            )
        }
        ("OKP", Algorithm::EdDSA) => {
            let crv = member("crv")?;
            if crv != "Ed25519" {
                return Err(ProofError::Key("only Ed25519 is supported for EdDSA"));
            }
            let x = member("x")?;
            (
                Material::Ed(decode(x)?),
                vec![("crv", crv), ("kty", kty), ("x", x)],
            )
        }
        _ => return Err(ProofError::Key("its kty does not fit alg")),
    };
    Ok((key, super::thumbprint(&required)))
}

/// The headers whose keys verified a proof lately, by their exact base64url text.
pub struct ProofKeys {
    memo: RwLock<Memo>,
}

#[derive(Default)]
struct Memo {
    keys: HashMap<Arc<str>, Arc<ProofKey>>,
    /// The headers in the order they came in, the oldest first out.
    order: VecDeque<Arc<str>>,
}

impl fmt::Debug for ProofKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofKeys")
            .field("entries", &self.len())
            .finish()
    }
}

impl Default for ProofKeys {
    fn default() -> ProofKeys {
        ProofKeys::new()
    }
}

impl ProofKeys {
    /// An empty memo: every proof's key is parsed until its header verifies once.
    pub fn new() -> ProofKeys {
        ProofKeys {
            memo: RwLock::new(Memo::default()),
        }
    }

    /// The key of a header read before.
    pub(super) fn get(&self, header: &str) -> Option<Arc<ProofKey>> {
        let memo = self.memo.read().unwrap_or_else(PoisonError::into_inner);
        memo.keys.get(header).cloned()
    }

    /// Remembers `header`'s key, once a signature by it verified; the oldest header out when
    /// the memo is full.
    pub(super) fn remember(&self, header: &str, key: &Arc<ProofKey>) {
        if header.len() > MEMO_HEADER_BYTES {
            return;
        }
        let mut memo = self.memo.write().unwrap_or_else(PoisonError::into_inner);
        if memo.keys.contains_key(header) {
            return;
        }
        while memo.order.len() >= MEMO_ENTRIES {
            if let Some(oldest) = memo.order.pop_front() {
                memo.keys.remove(&oldest);
            }
        }
        let header: Arc<str> = header.into();
        memo.order.push_back(Arc::clone(&header));
        memo.keys.insert(header, Arc::clone(key));
    }

    /// Headers remembered.
    pub fn len(&self) -> usize {
        let memo = self.memo.read().unwrap_or_else(PoisonError::into_inner);
        memo.keys.len()
    }

    /// Whether no header is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
