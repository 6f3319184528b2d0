//! `auth::dpop::verify` (RFC 9449 §4.3) against a fixed request and access token: never panics,
//! and an accepted proof has `typ` `dpop+jwt`, an allowed algorithm, a public asymmetric `jwk`
//! with no private member, an `iat` within the window and a non-empty `jti`, and its thumbprint
//! is the RFC 7638 thumbprint of that `jwk`.
//!
//! The first byte picks what the rest is, so the checks after the signature are reached too:
//! 0, the whole proof; 1, the claims, under a fixed header and signed here with the Ed25519 key
//! below; 2, the header, over fixed valid claims, signed here with that key (it verifies only
//! when the header's `jwk` is that key's). `fuzz/make-seeds.sh` makes the seeds with the same key.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fhirguard::auth::dpop::{
    jwk_thumbprint, token_hash, verify, verify_with, ProofKeys, ProofTarget,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const NOW: u64 = 1_800_000_000;
const WINDOW: u64 = 300;
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
const URI: &str = "https://fhir.example.org/r4/Patient/1";

/// A test key, for fuzzing only (its public half is [`PUBLIC_X`]).
const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINUi63g/ips17u3u+NmRfywJ/pXEQzKhGhq372MX9FnM
-----END PRIVATE KEY-----
";
const PUBLIC_X: &str = "gwzqoyrnovz-U9uEKWoUUsSmkgdKG-XxOgCwM-PjRCc";

/// RFC 7518 §6: the members that make a JWK private or symmetric.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const ALGORITHMS: [&str; 9] = [
    "ES256", "ES384", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
];

struct Fixed {
    key: EncodingKey,
    uri: url::Url,
    header: String,
    claims: String,
    /// The memo, across inputs: headers of earlier inputs are remembered.
    keys: ProofKeys,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        key: EncodingKey::from_ed_pem(PRIVATE_PEM.as_bytes()).expect("the test key"),
        uri: url::Url::parse(URI).expect("the URI"),
        header: json!({
            "typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": PUBLIC_X},
        })
        .to_string(),
        claims: json!({
            "jti": "j-1", "htm": "GET", "htu": URI, "iat": NOW, "ath": token_hash(TOKEN),
        })
        .to_string(),
        keys: ProofKeys::new(),
    })
}

fn signed(fixed: &Fixed, header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &fixed.key, Algorithm::EdDSA)
        .expect("Ed25519 signs");
    format!("{input}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let fixed = fixed();
    let proof = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(proof) => proof.to_owned(),
            Err(_) => return,
        },
        1 => signed(fixed, fixed.header.as_bytes(), rest),
        _ => signed(fixed, rest, fixed.claims.as_bytes()),
    };
    let target = ProofTarget {
        method: "GET",
        uri: &fixed.uri,
        access_token: TOKEN,
        now: NOW,
        window: WINDOW,
    };
    let verified = verify(&proof, &target);
    for _ in 0..2 {
        let remembered = verify_with(&proof, &target, Some(&fixed.keys));
        assert_eq!(remembered, verified, "{proof}");
    }
    let Ok(accepted) = verified else {
        return;
    };
    let header = proof.split('.').next().and_then(|part| {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        serde_json::from_slice::<Map<String, Value>>(&bytes).ok()
    });
    let header = header.expect("an accepted proof's header is a base64url JSON object");
    assert_eq!(header.get("typ"), Some(&json!("dpop+jwt")), "{proof}");
    let alg = header.get("alg").and_then(Value::as_str);
    assert!(alg.is_some_and(|alg| ALGORITHMS.contains(&alg)), "{proof}");
    let jwk = header.get("jwk").and_then(Value::as_object);
    let jwk = jwk.expect("an accepted proof has a jwk object");
    let kty = jwk.get("kty").and_then(Value::as_str);
    assert!(matches!(kty, Some("RSA" | "EC" | "OKP")), "{proof}");
    for member in PRIVATE_MEMBERS {
        assert!(!jwk.contains_key(member), "accepted a jwk with {member}");
    }
    assert_eq!(jwk_thumbprint(jwk).as_ref(), Some(&accepted.thumbprint));
    assert!(accepted.issued_at.abs_diff(NOW) <= WINDOW, "{proof}");
    assert!(!accepted.jti.is_empty(), "{proof}");
    let claims = proof.split('.').nth(1).and_then(|part| {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        serde_json::from_slice::<Map<String, Value>>(&bytes).ok()
    });
    let claims = claims.expect("an accepted proof's claims are a base64url JSON object");
    assert_eq!(claims.get("jti"), Some(&json!(accepted.jti)), "{proof}");
    let iat = claims.get("iat").and_then(Value::as_f64);
    assert_eq!(iat.map(|iat| iat as u64), Some(accepted.issued_at), "{proof}");
    let nonce = claims.get("nonce").map(|n| n.as_str().unwrap_or_default());
    assert_eq!(nonce, accepted.nonce.as_deref(), "{proof}");
});
