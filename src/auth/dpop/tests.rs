//! Proof verification, one misuse a test (RFC 9449 §4.3), with P-256 keys made here.

use super::*;
use jsonwebtoken::EncodingKey;
use serde_json::json;

pub(crate) const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
const URI: &str = "https://fhir.example.org/r4/Patient/1";

/// An ES256 key pair: the signing key and the public JWK.
pub(crate) struct ProofKey {
    signing: EncodingKey,
    jwk: Value,
}

impl ProofKey {
    pub(crate) fn new() -> ProofKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw();
        let (x, y) = raw[1..].split_at(32);
        ProofKey {
            signing: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
        }
    }

    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.signing, Algorithm::ES256).unwrap();
        format!("{input}.{signature}")
    }

    pub(crate) fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
    }

    fn thumbprint(&self) -> String {
        jwk_thumbprint(self.jwk.as_object().unwrap()).unwrap()
    }
}

pub(crate) fn claims() -> Value {
    json!({
        "jti": "j-1", "htm": "GET", "htu": URI, "iat": NOW,
        "ath": token_hash(TOKEN),
    })
}

fn check(proof: &str) -> Result<Proof, ProofError> {
    let uri = url::Url::parse(URI).unwrap();
    verify(
        proof,
        &ProofTarget {
            method: "GET",
            uri: &uri,
            access_token: TOKEN,
            now: NOW,
            window: 300,
        },
    )
}

fn with(mut value: Value, key: &str, member: Value) -> Value {
    value[key] = member;
    value
}

fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().unwrap().remove(key);
    value
}

#[test]
fn a_good_proof_gives_its_key_thumbprint_jti_and_iat() {
    let key = ProofKey::new();
    let proof = check(&key.sign(&key.header(), &claims())).unwrap();
    assert_eq!(proof.thumbprint, key.thumbprint());
    assert_eq!(proof.jti, "j-1");
    assert_eq!(proof.issued_at, NOW);
    // htu is compared after normalisation; query and fragment are ignored (§4.3 item 9).
    for htu in [
        "HTTPS://FHIR.example.org:443/r4/Patient/1",
        "https://fhir.example.org/r4/Patient/1?x=1#f",
        "https://fhir.example.org/r4/./Patient/1",
    ] {
        let proof = key.sign(&key.header(), &with(claims(), "htu", json!(htu)));
        assert!(check(&proof).is_ok(), "{htu}");
    }
    // The iat window, either side.
    for iat in [NOW - 300, NOW + 300] {
        let proof = key.sign(&key.header(), &with(claims(), "iat", json!(iat)));
        assert!(check(&proof).is_ok(), "{iat}");
    }
}

#[test]
fn rfc_7638_thumbprint_example() {
    // RFC 7638 §3.1's example key and thumbprint.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
    });
    assert_eq!(
        jwk_thumbprint(jwk.as_object().unwrap()).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn each_misuse_is_refused_for_its_reason() {
    let key = ProofKey::new();
    let other = ProofKey::new();
    let header = key.header();
    let reason = |proof: String| check(&proof).map(|_| ()).map_err(|e| e.reason());
    let cases: Vec<(&str, String, &str)> = vec![
        ("not a JWT", "abc".into(), "dpop_proof_malformed"),
        (
            "typ missing",
            key.sign(&without(header.clone(), "typ"), &claims()),
            "dpop_proof_malformed",
        ),
        (
            "typ JWT",
            key.sign(&with(header.clone(), "typ", json!("JWT")), &claims()),
            "dpop_proof_malformed",
        ),
        (
            "alg none",
            key.sign(&with(header.clone(), "alg", json!("none")), &claims()),
            "dpop_proof_algorithm",
        ),
        (
            "alg HS256",
            key.sign(&with(header.clone(), "alg", json!("HS256")), &claims()),
            "dpop_proof_algorithm",
        ),
        (
            "no jwk",
            key.sign(&without(header.clone(), "jwk"), &claims()),
            "dpop_proof_key",
        ),
        (
            "private jwk",
            key.sign(
                &with(
                    header.clone(),
                    "jwk",
                    with(key.jwk.clone(), "d", json!("AAAA")),
                ),
                &claims(),
            ),
            "dpop_proof_key",
        ),
        (
            "symmetric jwk",
            key.sign(
                &with(
                    header.clone(),
                    "jwk",
                    json!({"kty": "oct", "k": "c2VjcmV0"}),
                ),
                &claims(),
            ),
            "dpop_proof_key",
        ),
        (
            "curve does not fit",
            key.sign(
                &with(
                    header.clone(),
                    "jwk",
                    with(key.jwk.clone(), "crv", json!("P-384")),
                ),
                &claims(),
            ),
            "dpop_proof_key",
        ),
        (
            "signed by another key",
            other.sign(&header, &claims()),
            "dpop_proof_signature",
        ),
        (
            "htm",
            key.sign(&header, &with(claims(), "htm", json!("POST"))),
            "dpop_proof_htm",
        ),
        (
            "htu other path",
            key.sign(
                &header,
                &with(
                    claims(),
                    "htu",
                    json!("https://fhir.example.org/r4/Patient/2"),
                ),
            ),
            "dpop_proof_htu",
        ),
        (
            "htu other host",
            key.sign(
                &header,
                &with(claims(), "htu", json!("https://evil.example/r4/Patient/1")),
            ),
            "dpop_proof_htu",
        ),
        (
            "htu http",
            key.sign(
                &header,
                &with(
                    claims(),
                    "htu",
                    json!("http://fhir.example.org/r4/Patient/1"),
                ),
            ),
            "dpop_proof_htu",
        ),
        (
            "stale iat",
            key.sign(&header, &with(claims(), "iat", json!(NOW - 301))),
            "dpop_proof_iat",
        ),
        (
            "future iat",
            key.sign(&header, &with(claims(), "iat", json!(NOW + 301))),
            "dpop_proof_iat",
        ),
        (
            "iat not a number",
            key.sign(&header, &with(claims(), "iat", json!("now"))),
            "dpop_proof_malformed",
        ),
        (
            "ath of another token",
            key.sign(&header, &with(claims(), "ath", json!(token_hash("other")))),
            "dpop_proof_ath",
        ),
        (
            "no ath",
            key.sign(&header, &without(claims(), "ath")),
            "dpop_proof_malformed",
        ),
        (
            "no jti",
            key.sign(&header, &without(claims(), "jti")),
            "dpop_proof_malformed",
        ),
        (
            "crit",
            key.sign(&with(header.clone(), "crit", json!(["x"])), &claims()),
            "dpop_proof_malformed",
        ),
    ];
    for (name, proof, expected) in cases {
        assert_eq!(reason(proof), Err(expected), "{name}");
    }
    // A tampered payload fails the signature.
    let good = key.sign(&header, &claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(with(claims(), "htm", json!("GET")).to_string() + " ");
    parts[1] = &forged;
    assert_eq!(reason(parts.join(".")), Err("dpop_proof_signature"));
}

#[test]
fn one_dpop_header_only() {
    let mut headers = HeaderMap::new();
    assert_eq!(proof_header(&headers), Err(ProofError::Missing));
    headers.append(DPOP, http::HeaderValue::from_static("a"));
    assert_eq!(proof_header(&headers), Ok("a"));
    headers.append(DPOP, http::HeaderValue::from_static("b"));
    assert_eq!(proof_header(&headers), Err(ProofError::Several));
}

/// The proof-key memo ([`key`]): a hit stands for exactly the header text read before, the
/// signature and claims are checked on every proof, and it stays bounded.
pub(crate) mod memo {
    use super::*;

    pub(crate) fn check_with(proof: &str, keys: &ProofKeys) -> Result<Proof, ProofError> {
        let uri = url::Url::parse(URI).unwrap();
        let target = ProofTarget {
            method: "GET",
            uri: &uri,
            access_token: TOKEN,
            now: NOW,
            window: 300,
        };
        verify_with(proof, &target, Some(keys))
    }

    fn header_text(proof: &str) -> &str {
        proof.split('.').next().unwrap()
    }

    #[test]
    fn a_header_is_remembered_once_its_signature_verified() {
        let key = ProofKey::new();
        let keys = ProofKeys::new();
        // Refused for its signature: not remembered.
        let forged = ProofKey::new().sign(&key.header(), &claims());
        assert_eq!(check_with(&forged, &keys), Err(ProofError::Signature));
        assert!(keys.is_empty());
        let good = key.sign(&key.header(), &claims());
        let first = check_with(&good, &keys).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.get(header_text(&good)).is_some());
        // The next proof under the same header comes from the memo, and says the same.
        let next = key.sign(&key.header(), &with(claims(), "jti", json!("j-2")));
        let second = check_with(&next, &keys).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(second.thumbprint, first.thumbprint);
        assert_eq!(second.thumbprint, key.thumbprint());
        assert_eq!(second.jti, "j-2");
        assert_eq!(check_with(&good, &keys), check(&good));
    }

    #[test]
    fn a_remembered_header_signed_by_another_key_is_refused() {
        let key = ProofKey::new();
        let other = ProofKey::new();
        let keys = ProofKeys::new();
        check_with(&key.sign(&key.header(), &claims()), &keys).unwrap();
        // The memoised header (key's jwk), signed by another key.
        let forged = other.sign(&key.header(), &with(claims(), "jti", json!("j-2")));
        assert!(keys.get(header_text(&forged)).is_some());
        assert_eq!(check_with(&forged, &keys), Err(ProofError::Signature));
        // A good header's signature over a tampered payload.
        let good = key.sign(&key.header(), &claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let tampered = URL_SAFE_NO_PAD.encode(with(claims(), "htm", json!("POST")).to_string());
        parts[1] = &tampered;
        assert_eq!(
            check_with(&parts.join("."), &keys),
            Err(ProofError::Signature)
        );
        // Every claim is still checked under a remembered header.
        let stale = key.sign(&key.header(), &with(claims(), "iat", json!(NOW - 301)));
        assert_eq!(check_with(&stale, &keys), Err(ProofError::IssuedAt));
        let other_token = key.sign(
            &key.header(),
            &with(claims(), "ath", json!(token_hash("other"))),
        );
        assert_eq!(check_with(&other_token, &keys), Err(ProofError::TokenHash));
        let htm = key.sign(&key.header(), &with(claims(), "htm", json!("POST")));
        assert_eq!(
            check_with(&htm, &keys),
            Err(ProofError::Method("POST".into()))
        );
    }

    #[test]
    fn another_key_under_the_same_kid_is_its_own_entry_with_its_own_thumbprint() {
        let key = ProofKey::new();
        let other = ProofKey::new();
        let keys = ProofKeys::new();
        let with_kid = |key: &ProofKey| with(key.header(), "kid", json!("client-key-1"));
        let first = check_with(&key.sign(&with_kid(&key), &claims()), &keys).unwrap();
        // Another jwk with the same kid: another header text, parsed afresh, and its own
        // thumbprint, which a token bound to the first key's (cnf.jkt) does not name.
        let proof = other.sign(&with_kid(&other), &claims());
        assert!(keys.get(header_text(&proof)).is_none());
        let second = check_with(&proof, &keys).unwrap();
        assert_eq!(first.thumbprint, key.thumbprint());
        assert_eq!(second.thumbprint, other.thumbprint());
        assert_ne!(second.thumbprint, first.thumbprint);
        assert_eq!(keys.len(), 2);
        // The first key's jwk with other members after it is yet another header.
        let header = with(with_kid(&key), "x-extra", json!(1));
        let proof = other.sign(&header, &claims());
        assert_eq!(check_with(&proof, &keys), Err(ProofError::Signature));
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn a_header_failing_its_checks_is_never_remembered() {
        let key = ProofKey::new();
        let keys = ProofKeys::new();
        for header in [
            with(key.header(), "typ", json!("JWT")),
            with(key.header(), "alg", json!("HS256")),
            with(
                key.header(),
                "jwk",
                with(key.jwk.clone(), "d", json!("AAAA")),
            ),
            with(key.header(), "crit", json!(["x"])),
        ] {
            let proof = key.sign(&header, &claims());
            assert!(check_with(&proof, &keys).is_err(), "{header}");
        }
        assert!(keys.is_empty());
    }

    #[test]
    fn the_memo_is_bounded_oldest_out_and_long_headers_stay_out() {
        let key = ProofKey::new();
        let keys = ProofKeys::new();
        let proof = key.sign(&key.header(), &claims());
        check_with(&proof, &keys).unwrap();
        let parsed = keys.get(header_text(&proof)).unwrap();
        for index in 0..key::MEMO_ENTRIES + 10 {
            keys.remember(&format!("header-{index}"), &parsed);
        }
        assert_eq!(keys.len(), key::MEMO_ENTRIES);
        // The first ones out, the real header first of all.
        assert!(keys.get(header_text(&proof)).is_none());
        assert!(keys.get("header-0").is_none());
        assert!(keys
            .get(&format!("header-{}", key::MEMO_ENTRIES + 9))
            .is_some());
        // A header longer than 2 KiB is verified, never remembered.
        let long = with(key.header(), "x-pad", json!("a".repeat(2048)));
        let proof = key.sign(&long, &claims());
        assert!(check_with(&proof, &keys).is_ok());
        assert!(keys.get(header_text(&proof)).is_none());
        assert_eq!(keys.len(), key::MEMO_ENTRIES);
    }

    #[test]
    fn the_ath_is_checked_for_each_token() {
        let key = ProofKey::new();
        let keys = ProofKeys::new();
        let uri = url::Url::parse(URI).unwrap();
        let verify = |token: &str, ath: &str| {
            let target = ProofTarget {
                method: "GET",
                uri: &uri,
                access_token: token,
                now: NOW,
                window: 300,
            };
            let proof = key.sign(&key.header(), &with(claims(), "ath", json!(ath)));
            verify_with(&proof, &target, Some(&keys)).map(|_| ())
        };
        let (one, two) = ("token.one.x", "token.two.y");
        assert_eq!(verify(one, &token_hash(one)), Ok(()));
        assert_eq!(verify(one, &token_hash(two)), Err(ProofError::TokenHash));
        assert_eq!(verify(two, &token_hash(two)), Ok(()));
        assert_eq!(verify(two, &token_hash(one)), Err(ProofError::TokenHash));
        assert_eq!(verify(one, &token_hash(one)), Ok(()));
        // A long token's ath is computed each time, not remembered: still checked.
        let long = "t".repeat(5000);
        assert_eq!(verify(&long, &token_hash(&long)), Ok(()));
        assert_eq!(verify(&long, &token_hash(one)), Err(ProofError::TokenHash));
        assert_eq!(verify(one, &token_hash(&long)), Err(ProofError::TokenHash));
    }
}

/// Each algorithm family verifies with its pre-parsed aws-lc-rs key, with the memo and without:
/// a good proof is accepted with its key's thumbprint, one signed by another key of the same
/// kind is refused, and a proof naming another algorithm than its key's is refused.
#[test]
fn every_algorithm_family_verifies_with_its_own_key_only() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{self as aws, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use jsonwebtoken::jwk::Jwk;

    fn pem(der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    }
    // A fresh key of `alg`'s kind and its public JWK (jsonwebtoken makes no OKP JWK).
    let generate = |alg: Algorithm| -> (EncodingKey, Value) {
        let key = match alg {
            Algorithm::RS256 | Algorithm::PS256 | Algorithm::RS512 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
                let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
                EncodingKey::from_rsa_pem(pem(pkcs8.as_ref()).as_bytes()).unwrap()
            }
            Algorithm::ES384 => {
                let pair = EcdsaKeyPair::generate(&aws::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
                EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref())
            }
            _ => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
                return (EncodingKey::from_ed_der(pkcs8.as_ref()), jwk);
            }
        };
        let jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        (key, jwk)
    };
    let keys = ProofKeys::new();
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::RS512,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let ((signing, jwk), (other, _)) = (generate(alg), generate(alg));
        let name = algorithm_name_of(alg);
        let header = json!({"typ": "dpop+jwt", "alg": name, "jwk": jwk});
        let sign = |key: &EncodingKey, header: &Value| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims().to_string())
            );
            let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
            format!("{input}.{signature}")
        };
        let good = sign(&signing, &header);
        let verified = check(&good).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            Some(verified.thumbprint.clone()),
            jwk_thumbprint(jwk.as_object().unwrap()),
            "{name}"
        );
        for _ in 0..2 {
            assert_eq!(
                memo::check_with(&good, &keys),
                Ok(verified.clone()),
                "{name}"
            );
        }
        // The header naming the other RSA padding than the signature's.
        let swapped = match alg {
            Algorithm::RS256 => Some("PS256"),
            Algorithm::PS256 => Some("RS256"),
            _ => None,
        };
        if let Some(swapped) = swapped {
            let proof = sign(&signing, &with(header.clone(), "alg", json!(swapped)));
            assert_eq!(check(&proof), Err(ProofError::Signature), "{name}");
        }
        let forged = sign(&other, &header);
        assert_eq!(check(&forged), Err(ProofError::Signature), "{name}");
        assert_eq!(
            memo::check_with(&forged, &keys),
            Err(ProofError::Signature),
            "{name}"
        );
    }
    assert_eq!(keys.len(), 5);
}

fn algorithm_name_of(alg: Algorithm) -> &'static str {
    crate::auth::keys::algorithm_name(alg)
}
