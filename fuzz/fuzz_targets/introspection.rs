//! Token introspection's client input. `auth::introspection::looks_like_jwt` on the bearer
//! token: never panics, and every token the JWT path reads whose header is a JSON object from
//! its first byte (as every issuer writes one) is sent down the JWT path. The judgement of an
//! introspection answer, `active_claims` (RFC 7662 §2.2): never panics; an answer is active only
//! with `active: true`, an access token's `token_type` (or none) and the provider's `iss` (or
//! none), and its claims are then the answer without `active`.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fhirguard::auth::introspection::{active_claims, looks_like_jwt};
use fhirguard::auth::token::UnverifiedToken;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const ISSUER: &str = "https://idp.example.org";

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let jwt = looks_like_jwt(token);
        let object_first = token
            .split('.')
            .next()
            .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
            .is_some_and(|header| header.first() == Some(&b'{'));
        if UnverifiedToken::parse(token).is_ok() && object_first {
            assert!(jwt, "a JWT sent to introspection: {token}");
        }
    }
    let Ok(answer) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let Ok(claims) = active_claims(answer.clone(), ISSUER, "https://idp.example.org") else {
        return;
    };
    assert_eq!(answer.get("active"), Some(&Value::Bool(true)));
    match answer.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) => assert!(
            ["bearer", "dpop", "access_token"].contains(&kind.to_ascii_lowercase().as_str()),
            "active with token_type {kind:?}"
        ),
        Some(other) => panic!("active with token_type {other}"),
    }
    assert!(
        matches!(answer.get("iss"), None | Some(Value::Null))
            || answer.get("iss").and_then(Value::as_str) == Some(ISSUER),
        "active with another iss"
    );
    let mut expected = answer;
    expected.remove("active");
    assert_eq!(claims.0, expected);
});
