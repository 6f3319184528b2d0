//! Proof verification, one misuse a test (RFC 9449 §4.3), with P-256 keys made here.

use super::*;
use jsonwebtoken::EncodingKey;
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
const URI: &str = "https://fhir.example.org/r4/Patient/1";

/// An ES256 key pair: the signing key and the public JWK.
struct ProofKey {
    signing: EncodingKey,
    jwk: Value,
}

impl ProofKey {
    fn new() -> ProofKey {
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

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.signing, Algorithm::ES256).unwrap();
        format!("{input}.{signature}")
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
    }

    fn thumbprint(&self) -> String {
        jwk_thumbprint(self.jwk.as_object().unwrap()).unwrap()
    }
}

fn claims() -> Value {
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
