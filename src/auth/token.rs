//! A compact JWS (RFC 7515 §7.1) read without trusting it, its signature check, and the claim
//! rules that need no keys: lifetime (reference §2.1 `exp`/`nbf`), audience (reference §8
//! rule 8) and the claim shapes Entra, ADFS, B2C and Keycloak send (string or array).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::AuthError;
use super::keys::SigningKey;

/// The protected header, as far as fhirguard reads it. `jku`, `x5u` and `jwk` are deliberately
/// not even parsed: keys come only from the provider's discovered `jwks_uri` (SPEC §4.5).
#[derive(Debug, Clone, Deserialize)]
pub struct JoseHeader {
    /// `alg` (RFC 7515 §4.1.1): checked against the allow-list and the key, never trusted to
    /// choose the verification itself (RFC 8725 §3.1).
    pub alg: String,
    /// `kid` (RFC 7515 §4.1.4): which key of the provider's set signed the token.
    pub kid: Option<String>,
    /// RFC 7515 §4.1.11: extensions the recipient must understand. fhirguard understands none.
    pub crit: Option<Value>,
}

/// A token split and decoded, nothing verified yet.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    /// The decoded protected header.
    pub header: JoseHeader,
    /// The decoded payload; nothing in it is trusted until the signature verifies.
    pub claims: ClaimSet,
    signing_input: &'a str,
    signature: &'a str,
}

const fn malformed(detail: &'static str) -> AuthError {
    AuthError::Malformed { detail }
}

impl<'a> UnverifiedToken<'a> {
    /// Splits `header.payload.signature` and decodes the JSON of the first two parts.
    pub fn parse(token: &'a str) -> Result<UnverifiedToken<'a>, AuthError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(malformed(""))?;
        let (header, payload) = signing_input.split_once('.').ok_or(malformed(""))?;
        if payload.contains('.') {
            return Err(malformed("encrypted (JWE) tokens are not supported"));
        }
        let header: JoseHeader = serde_json::from_slice(&decode_part(header)?)
            .map_err(|_| malformed("the header is not a JSON object with an alg"))?;
        if header.crit.is_some() {
            return Err(malformed(
                "the header has critical parameters fhirguard does not understand",
            ));
        }
        let claims = ClaimSet(
            serde_json::from_slice(&decode_part(payload)?)
                .map_err(|_| malformed("the payload is not a JSON object"))?,
        );
        Ok(UnverifiedToken {
            header,
            claims,
            signing_input,
            signature,
        })
    }

    /// Verifies the signature over `header.payload` with `key` and `alg` (already allowed and
    /// fitted to the key by the caller).
    pub fn verify(&self, key: &SigningKey, alg: Algorithm) -> bool {
        if let Some(parsed) = key.verifier(alg) {
            // As jsonwebtoken decodes it: base64url without padding.
            return URL_SAFE_NO_PAD
                .decode(self.signature)
                .is_ok_and(|signature| {
                    parsed
                        .verify_sig(self.signing_input.as_bytes(), &signature)
                        .is_ok()
                });
        }
        jsonwebtoken::crypto::verify(
            self.signature,
            self.signing_input.as_bytes(),
            &key.decoding,
            alg,
        )
        .unwrap_or(false)
    }

    /// A string claim; any other JSON type is absent.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.claims.string(name)
    }

    /// A claim that is one string or an array of strings ([`ClaimSet::strings`]).
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.claims.strings(name)
    }

    /// `scp` then `scope` ([`ClaimSet::scopes`]).
    pub fn scopes(&self) -> Vec<String> {
        self.claims.scopes()
    }
}

/// A token's claims as a JSON object: a JWT's payload (RFC 7519 §4), or an introspection answer's
/// members (RFC 7662 §2.2, which reuses the JWT claim names), judged by the same rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimSet(pub Map<String, Value>);

impl ClaimSet {
    /// A claim as JSON.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A string claim; any other JSON type is absent.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A claim that is one string or an array of strings (`aud`, `roles`, `groups`).
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.0.get(name) {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `scp` then `scope`, each a space-delimited string or an array, split on whitespace,
    /// duplicates removed (reference §2.2: Entra sends one string).
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = Vec::new();
        for value in self
            .strings("scp")
            .iter()
            .chain(self.strings("scope").iter())
        {
            for scope in value.split_whitespace() {
                if !scopes.iter().any(|s| s == scope) {
                    scopes.push(scope.to_owned());
                }
            }
        }
        scopes
    }

    /// A NumericDate claim (RFC 7519 §2), fractions dropped; Err when present but not a number.
    pub fn numeric_date(&self, name: &'static str) -> Result<Option<u64>, AuthError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or(malformed("a time claim is not a positive NumericDate")),
            Some(_) => Err(malformed("a time claim is not a NumericDate")),
        }
    }
}

fn decode_part(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed("a part is not base64url"))
}

/// The wall clock in Unix seconds, the unit of `exp`, `nbf` and `iat` (RFC 7519 §2 NumericDate).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token's validity window, Unix seconds: what the verified-token cache keeps so that the
/// window is checked again on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// `exp`.
    pub expires_at: u64,
    /// `nbf`, when present.
    pub not_before: Option<u64>,
}

impl Lifetime {
    /// `nbf ≤ now + skew`, then `exp ≥ now − skew` (reference §2.1).
    pub fn check(&self, now: u64, skew: u64, authority: &str) -> Result<(), AuthError> {
        if let Some(nbf) = self.not_before {
            if nbf > now.saturating_add(skew) {
                return Err(AuthError::NotYetValid {
                    authority: authority.to_owned(),
                    nbf,
                });
            }
        }
        if self.expires_at < now.saturating_sub(skew) {
            return Err(AuthError::Expired {
                authority: authority.to_owned(),
                exp: self.expires_at,
            });
        }
        Ok(())
    }
}

/// The lifetime rules of IdentityModel `ValidateLifetime` in its order: `exp` required, `nbf`
/// not after `exp`, `nbf ≤ now + skew`, `exp ≥ now − skew` (reference §2.1).
pub fn check_lifetime(
    token: &ClaimSet,
    now: u64,
    skew: u64,
    authority: &str,
) -> Result<Lifetime, AuthError> {
    let exp = token
        .numeric_date("exp")?
        .ok_or_else(|| AuthError::NoExpiration {
            authority: authority.to_owned(),
        })?;
    let nbf = token.numeric_date("nbf")?;
    if let Some(nbf) = nbf.filter(|nbf| *nbf > exp) {
        return Err(AuthError::Lifetime {
            authority: authority.to_owned(),
            nbf,
            exp,
        });
    }
    let lifetime = Lifetime {
        expires_at: exp,
        not_before: nbf,
    };
    lifetime.check(now, skew, authority)?;
    Ok(lifetime)
}

/// Whether the token audiences contain `expected`: ordinal, or with IdentityModel's tolerance of
/// exactly one trailing `/` on either side when `ignore_trailing_slash` (reference §2.1 `aud`).
pub fn audience_matches(audiences: &[String], expected: &str, ignore_trailing_slash: bool) -> bool {
    audiences.iter().any(|aud| {
        aud == expected
            || (ignore_trailing_slash
                && (aud.strip_suffix('/') == Some(expected)
                    || expected.strip_suffix('/') == Some(aud.as_str())))
    })
}

/// A `fhirUser` value that is a resource reference: `<ResourceType>/<id>` exactly (relative, as
/// the open-source server accepts it and many identity providers emit it), or an absolute
/// http(s) URL ending in it ([`is_fhir_user_url`]). `absolute_only`: Azure's rule, the URL only.
pub fn is_fhir_user_reference(value: &str, absolute_only: bool) -> bool {
    if value.contains("://") || absolute_only {
        return is_fhir_user_url(value);
    }
    value
        .split_once('/')
        .is_some_and(|(kind, id)| is_type_name(kind) && is_id(id))
}

fn is_type_name(kind: &str) -> bool {
    kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphabetic())
}

/// A FHIR id (R4 `id`: `[A-Za-z0-9\-\.]{1,64}`).
fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// A `fhirUser` value shaped `<absolute http(s) URL>/<ResourceType>/<id>` (reference §2.3 rule 6,
/// §4.5): a FHIR resource type name and a FHIR id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_fhir_user_url(value: &str) -> bool {
    let Ok(url) = url::Url::parse(value) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return false;
    }
    let mut segments = url.path_segments().into_iter().flatten().rev();
    let (Some(id), Some(kind)) = (segments.next(), segments.next()) else {
        return false;
    };
    is_type_name(kind) && is_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{h}.{c}.c2ln")
    }

    #[test]
    fn parses_header_and_claims_without_trusting_them() {
        let text = token(
            &json!({"alg": "RS256", "kid": "k", "jku": "https://evil"}),
            &json!({"iss": "i"}),
        );
        let parsed = UnverifiedToken::parse(&text).unwrap();
        assert_eq!(parsed.header.alg, "RS256");
        assert_eq!(parsed.header.kid.as_deref(), Some("k"));
        assert_eq!(parsed.string("iss"), Some("i"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        let good_claims = URL_SAFE_NO_PAD.encode(r#"{"iss":"x"}"#);
        let cases = [
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{good_header}.{good_claims}.s.x.y"),
            format!("!!.{good_claims}.s"),
            format!("{}.{good_claims}.s", URL_SAFE_NO_PAD.encode("[1]")),
            format!(
                "{}.{good_claims}.s",
                URL_SAFE_NO_PAD.encode(r#"{"kid":"k"}"#)
            ),
            format!("{good_header}.{}.s", URL_SAFE_NO_PAD.encode("\"str\"")),
            format!(
                "{}.{good_claims}.s",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","crit":["b64"]}"#)
            ),
        ];
        for text in cases {
            let error = UnverifiedToken::parse(&text).unwrap_err();
            assert_eq!(error.reason(), "malformed", "{text}");
        }
    }

    #[test]
    fn claims_may_be_strings_or_arrays() {
        let text = token(
            &json!({"alg": "RS256"}),
            &json!({"aud": "a", "roles": ["r1", "r2"], "scp": "s1 s2", "scope": ["s2 s3", "s4"]}),
        );
        let parsed = UnverifiedToken::parse(&text).unwrap();
        assert_eq!(parsed.strings("aud"), ["a"]);
        assert_eq!(parsed.strings("roles"), ["r1", "r2"]);
        assert_eq!(parsed.scopes(), ["s1", "s2", "s3", "s4"]);
        assert!(parsed.strings("groups").is_empty());
    }

    #[test]
    fn lifetime_follows_identity_model() {
        let skew = 300;
        let now = 1_000_000;
        let cases = [
            (json!({"exp": now + 10}), Ok(now + 10)),
            (json!({"exp": now - 299}), Ok(now - 299)),
            (json!({"exp": (now + 10) as f64 + 0.5}), Ok(now + 10)),
            (json!({}), Err("no_expiration")),
            (json!({"exp": "soon"}), Err("malformed")),
            (json!({"exp": now - 301}), Err("expired")),
            (
                json!({"exp": now + 1000, "nbf": now + 301}),
                Err("not_yet_valid"),
            ),
            (json!({"exp": now + 1000, "nbf": now + 299}), Ok(now + 1000)),
            (json!({"exp": now, "nbf": now + 1}), Err("not_yet_valid")),
        ];
        for (claims, expected) in cases {
            let text = token(&json!({"alg": "RS256"}), &claims);
            let parsed = UnverifiedToken::parse(&text).unwrap();
            let got = check_lifetime(&parsed.claims, now, skew, "a")
                .map(|l| l.expires_at)
                .map_err(|e| e.reason());
            assert_eq!(got, expected, "{claims}");
        }
    }

    #[test]
    fn audience_matching_is_exact_unless_told() {
        let auds = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = [
            (auds(&["https://x"]), "https://x", false, true),
            (auds(&["a", "https://x"]), "https://x", false, true),
            (auds(&["https://x/"]), "https://x", false, false),
            (auds(&["https://x/"]), "https://x", true, true),
            (auds(&["https://x"]), "https://x/", true, true),
            (auds(&["https://x//"]), "https://x", true, false),
            (auds(&["HTTPS://X"]), "https://x", true, false),
            (auds(&[]), "https://x", true, false),
        ];
        for (list, expected, ignore, result) in cases {
            assert_eq!(
                audience_matches(&list, expected, ignore),
                result,
                "{list:?} {expected} {ignore}"
            );
        }
    }

    #[test]
    fn fhir_user_references_may_be_relative_outside_azure() {
        for good in [
            "Patient/123",
            "Practitioner/fhir-system-client",
            "Device/a.b",
            "https://fhir.example.org/Patient/123",
        ] {
            assert!(is_fhir_user_reference(good, false), "{good}");
        }
        for bad in [
            "patient/123",
            "Patient/",
            "/Patient/123",
            "x/Patient/123",
            "//evil.example/Patient/123",
            "Patient/1/_history/2",
            "Patient/12_3",
            "Patient",
            "urn:uuid:1234",
            "",
        ] {
            assert!(!is_fhir_user_reference(bad, false), "{bad}");
        }
        assert!(!is_fhir_user_reference("Patient/123", true));
        assert!(is_fhir_user_reference(
            "https://fhir.example.org/Patient/123",
            true
        ));
    }

    #[test]
    fn fhir_user_must_end_in_type_and_id() {
        for good in [
            "https://fhir.example.org/Patient/123",
            "https://x.azurehealthcareapis.com/Practitioner/a-b.c",
            "http://localhost:8080/fhir/RelatedPerson/1",
        ] {
            assert!(is_fhir_user_url(good), "{good}");
        }
        for bad in [
            "Patient/123",
            "https://fhir.example.org/Patient/",
            "https://fhir.example.org/patient/123",
            "https://fhir.example.org/Patient/12_3",
            "https://fhir.example.org/123",
            "https://fhir.example.org/Patient/123?x=1",
            "urn:uuid:1234",
            "ftp://x/Patient/1",
        ] {
            assert!(!is_fhir_user_url(bad), "{bad}");
        }
    }
}
