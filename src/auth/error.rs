//! Why a presented token was refused ([`AuthError`]), worded like ASP.NET's JwtBearer
//! `error_description` (reference §2.1, §2.4) but with the offending value named, so an operator
//! can fix the token or the configuration from the 401 alone. No description ever contains the
//! token; values taken from the (unverified) token are cut to [`ECHO_LIMIT`] characters.

use std::fmt;
use std::time::Duration;

use super::near_miss::NearMiss;
use crate::authz::scope::Context;

/// How many characters of a token-supplied value a description repeats.
pub const ECHO_LIMIT: usize = 100;

/// A refused token (401 `invalid_token`), or keys that cannot be had (503 + `Retry-After`).
///
/// `authority` fields name the configured identity provider that judged the token (as written
/// in the config); they feed the metrics label, never the description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// RFC 6750 §2.1: the `Authorization` header uses another scheme (`Basic …`).
    #[error("The authorization scheme is not Bearer")]
    NotBearer,
    /// RFC 6750 §2.1: one `Authorization` header, not several.
    #[error("The request has more than one Authorization header")]
    SeveralAuthorizationHeaders,
    /// `Authorization: Bearer` with nothing after it.
    #[error("The bearer token is empty")]
    EmptyToken,
    /// The credentials are not an RFC 6750 §2.1 `b64token`.
    #[error("The token contains characters that are not allowed in a bearer token")]
    InvalidCharacters,
    /// Longer than `limits.maxTokenBytes`.
    #[error("The token is too large (more than {limit} bytes)")]
    TooLarge {
        /// `limits.maxTokenBytes`.
        limit: usize,
    },
    /// Not a compact JWS of three base64url JSON parts (RFC 7515 §7.1), or a claim of the wrong type.
    #[error("The token is malformed{}", detail_suffix(.detail))]
    Malformed {
        /// What is wrong (which part or claim), appended to the description; may be empty.
        detail: &'static str,
    },
    /// No `iss` claim: no identity provider can be chosen (SPEC §4.4).
    #[error("The token has no iss claim")]
    MissingIssuer,
    /// `iss` equals no configured provider's discovered `issuer` (reference §8 rule 4).
    /// `hint`: a near miss, for `explain` and the log only ([`AuthError::hint`]).
    #[error("The issuer '{issuer}' is not a configured identity provider")]
    UnknownIssuer {
        /// The token's `iss`, cut to [`ECHO_LIMIT`] characters.
        issuer: String,
        /// A discovered issuer one well-known step away (the other Entra ID token version, a
        /// trailing `/`).
        hint: Option<NearMiss>,
    },
    /// `alg` outside RS256/384/512, PS256/384/512, ES256/384 (RFC 8725 §3.1; `none` and HS*).
    #[error("The algorithm '{alg}' is not allowed")]
    Algorithm {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The header `alg`, as the token gave it.
        alg: String,
    },
    /// The key named by `kid` cannot verify this `alg` (kty, curve, or the JWK's own `alg`).
    #[error("The algorithm '{alg}' does not fit the signature key '{kid}'")]
    AlgorithmMismatch {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The header `alg`.
        alg: String,
        /// The `kid` of the key that does not fit it.
        kid: String,
    },
    /// No key with this `kid` in the provider's key set, even after a refetch.
    #[error("{}", unknown_kid(.kid))]
    UnknownKid {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The header `kid`; None when the token has none and no single key fits its `alg`.
        kid: Option<String>,
    },
    /// The signature does not verify with the provider's key.
    #[error("The signature is invalid")]
    Signature {
        /// The configured authority of the provider that judged the token.
        authority: String,
    },
    /// `exp` is required (IdentityModel `RequireExpirationTime`).
    #[error("The token has no expiration")]
    NoExpiration {
        /// The configured authority of the provider that judged the token.
        authority: String,
    },
    /// `exp < now − clockSkew`.
    #[error("The token expired at '{}'", rfc3339(*.exp))]
    Expired {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// `exp`, in seconds since the Unix epoch.
        exp: u64,
    },
    /// `nbf > now + clockSkew`.
    #[error("The token is not valid before '{}'", rfc3339(*.nbf))]
    NotYetValid {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// `nbf`, in seconds since the Unix epoch.
        nbf: u64,
    },
    /// `nbf` after `exp`: the token is never valid (IdentityModel IDX10224).
    #[error("The token lifetime is invalid: not before '{}' is after expiration '{}'", rfc3339(*.nbf), rfc3339(*.exp))]
    Lifetime {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// `nbf`, in seconds since the Unix epoch.
        nbf: u64,
        /// `exp`, in seconds since the Unix epoch.
        exp: u64,
    },
    /// `aud` does not contain the configured audience (reference §8 rules 8, 9). `hint`: a near
    /// miss, for `explain` and the log only.
    #[error("The audience '{}' is invalid", .audiences.join(", "))]
    Audience {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The token's `aud` values (the first five), each cut to [`ECHO_LIMIT`] characters.
        audiences: Vec<String>,
        /// A configured audience one well-known step away (`api://` prefix, trailing `/`).
        hint: Option<NearMiss>,
    },
    /// Smart provider: the token's client claim names no configured application, or the token
    /// has none of the client claims looked in (`looked_in`, e.g. "azp or appid").
    #[error("{}", unknown_client(.client, .looked_in))]
    UnknownClient {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The client and the claim that named it.
        client: Option<(String, &'static str)>,
        /// The claims searched for a client, in order (e.g. "azp or appid").
        looked_in: &'static str,
    },
    /// Smart provider: `scp`/`scope` missing or empty (reference §2.3 rule 5).
    #[error("The token has no scp or scope claim")]
    MissingScope {
        /// The configured authority of the provider that judged the token.
        authority: String,
    },
    /// Smart provider: neither `fhirUser` nor `extension_fhirUser` where one is required
    /// (reference §2.3 rule 6, §4.5; SPEC §4 step 7).
    #[error("{required_by}")]
    MissingFhirUser {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// Why this token needed one; its text is the description.
        required_by: FhirUserRule,
    },
    /// Smart provider: `fhirUser` is not a resource reference `<ResourceType>/<id>` — relative
    /// or absolute, or only absolute under `compatibility: azure` (`absolute_only`).
    #[error("{}", bad_fhir_user(.value, *.absolute_only))]
    BadFhirUser {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The claim's value, cut to [`ECHO_LIMIT`] characters.
        value: String,
        /// Only an absolute URL is accepted here (`compatibility: azure`).
        absolute_only: bool,
    },
    /// No usable key set for a provider that may have issued the token (SPEC §5): 503.
    #[error("No signing keys could be obtained from the identity provider '{authority}'")]
    KeysUnavailable {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The 503's `Retry-After`: what is left of `keySets.retryInterval` since the last
        /// fetch attempt, at least one second.
        retry_after: Duration,
    },
    /// RFC 7662 §2.2: the introspection answer says the opaque token is not active (revoked,
    /// expired, unknown, or not an access token): 401 `invalid_token`.
    #[error("The token is not active")]
    Inactive {
        /// The configured authority of the provider that judged the token.
        authority: String,
    },
    /// The introspection endpoint did not answer (down, timed out, refused fhirguard's client
    /// credentials): the token was not judged, 503 + `Retry-After`.
    #[error(
        "The token introspection endpoint of the identity provider '{authority}' is unavailable"
    )]
    IntrospectionUnavailable {
        /// The configured authority of the provider that judged the token.
        authority: String,
        /// The 503's `Retry-After` (a fixed few seconds).
        retry_after: Duration,
    },
}

impl AuthError {
    /// The `error_description` of the `WWW-Authenticate` challenge (RFC 6750 §3). Callers still
    /// quote it (RFC 9110 §5.6.4); it never holds the token.
    pub fn description(&self) -> String {
        self.to_string()
    }

    /// A near miss behind the refusal (an `iss` or `aud` one well-known step from the
    /// configured value): for `explain` and the audit log line, never for the client's answer.
    pub fn hint(&self) -> Option<&NearMiss> {
        match self {
            AuthError::UnknownIssuer { hint, .. } | AuthError::Audience { hint, .. } => {
                hint.as_ref()
            }
            _ => None,
        }
    }

    /// A bounded label for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::NotBearer
            | AuthError::SeveralAuthorizationHeaders
            | AuthError::EmptyToken
            | AuthError::InvalidCharacters
            | AuthError::TooLarge { .. }
            | AuthError::Malformed { .. } => "malformed",
            AuthError::MissingIssuer | AuthError::UnknownIssuer { .. } => "unknown_issuer",
            AuthError::Algorithm { .. } | AuthError::AlgorithmMismatch { .. } => "algorithm",
            AuthError::UnknownKid { .. } => "unknown_kid",
            AuthError::Signature { .. } => "signature",
            AuthError::NoExpiration { .. } => "no_expiration",
            AuthError::Expired { .. } => "expired",
            AuthError::NotYetValid { .. } | AuthError::Lifetime { .. } => "not_yet_valid",
            AuthError::Audience { .. } => "audience",
            AuthError::UnknownClient { .. } => "unknown_client",
            AuthError::MissingScope { .. } => "missing_scope",
            AuthError::MissingFhirUser { .. } => "missing_fhir_user",
            AuthError::BadFhirUser { .. } => "bad_fhir_user",
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
            AuthError::Inactive { .. } => "inactive",
            AuthError::IntrospectionUnavailable { .. } => "introspection_unavailable",
        }
    }

    /// The configured authority that judged the token, when one was chosen.
    pub fn provider(&self) -> Option<&str> {
        match self {
            AuthError::NotBearer
            | AuthError::SeveralAuthorizationHeaders
            | AuthError::EmptyToken
            | AuthError::InvalidCharacters
            | AuthError::TooLarge { .. }
            | AuthError::Malformed { .. }
            | AuthError::MissingIssuer
            | AuthError::UnknownIssuer { .. } => None,
            AuthError::Algorithm { authority, .. }
            | AuthError::AlgorithmMismatch { authority, .. }
            | AuthError::UnknownKid { authority, .. }
            | AuthError::Signature { authority }
            | AuthError::NoExpiration { authority }
            | AuthError::Expired { authority, .. }
            | AuthError::NotYetValid { authority, .. }
            | AuthError::Lifetime { authority, .. }
            | AuthError::Audience { authority, .. }
            | AuthError::UnknownClient { authority, .. }
            | AuthError::MissingScope { authority }
            | AuthError::MissingFhirUser { authority, .. }
            | AuthError::BadFhirUser { authority, .. }
            | AuthError::KeysUnavailable { authority, .. }
            | AuthError::Inactive { authority }
            | AuthError::IntrospectionUnavailable { authority, .. } => Some(authority),
        }
    }

    /// True for the 503 case: the token was not judged, the keys were missing.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            AuthError::KeysUnavailable { .. } | AuthError::IntrospectionUnavailable { .. }
        )
    }

    /// When to try again (the 503's `Retry-After`), for [`AuthError::KeysUnavailable`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::KeysUnavailable { retry_after, .. }
            | AuthError::IntrospectionUnavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A token-supplied value as a description may repeat it: at most [`ECHO_LIMIT`] characters,
/// control characters dropped (the header writer escapes quotes and backslashes).
pub(crate) fn echo(value: &str) -> String {
    let mut out: String = value
        .chars()
        .filter(|c| !c.is_control())
        .take(ECHO_LIMIT)
        .collect();
    if value.chars().filter(|c| !c.is_control()).count() > ECHO_LIMIT {
        out.push('…');
    }
    out
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn unknown_kid(kid: &Option<String>) -> String {
    match kid {
        Some(kid) => format!("The signature key '{kid}' was not found"),
        None => "The token has no kid and no single signature key fits its algorithm".to_owned(),
    }
}

fn unknown_client(client: &Option<(String, &'static str)>, looked_in: &str) -> String {
    match client {
        Some((client, claim)) => format!(
            "The client '{client}' (claim {claim}) is not a configured application of this \
             identity provider"
        ),
        None => format!("The token names no client: it has no {looked_in} claim"),
    }
}

fn bad_fhir_user(value: &str, absolute_only: bool) -> String {
    if absolute_only {
        format!(
            "The fhirUser claim '{value}' must be an absolute URL ending in <resourceType>/<id> \
             (compatibility: azure)"
        )
    } else {
        format!(
            "The fhirUser claim '{value}' is not a resource reference: expected \
             <resourceType>/<id>, relative (Practitioner/7) or an absolute http(s) URL ending \
             in it"
        )
    }
}

/// Why a token needed a `fhirUser` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FhirUserRule {
    /// `compatibility: azure`: every smart provider's token needs one, absolute (reference §2.3
    /// rule 6).
    Azure,
    /// Its clinical scopes are of this context (`patient` or `user`): no compartment and no
    /// user without it (reference §4.5).
    Scopes(Context),
}

impl fmt::Display for FhirUserRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FhirUserRule::Azure => f.write_str(
                "The token has no fhirUser claim; with compatibility: azure every token of a \
                 smart identity provider needs one",
            ),
            FhirUserRule::Scopes(context) => write!(
                f,
                "The token has {context}/ scopes but no fhirUser claim (or extension_fhirUser); \
                 patient/ and user/ scopes need one, system/ scopes do not"
            ),
        }
    }
}

/// Unix seconds as `YYYY-MM-DDThh:mm:ssZ` (RFC 3339, UTC), via the days-from-civil inverse
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
pub(crate) fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_time_as_rfc3339() {
        for (unix, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_341_600, "2026-11-22T10:00:00Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(unix), text, "{unix}");
        }
    }

    #[test]
    fn echo_cuts_long_values_and_drops_control_characters() {
        assert_eq!(echo("a\r\nb"), "ab");
        let long = "x".repeat(300);
        assert_eq!(echo(&long).chars().count(), ECHO_LIMIT + 1);
    }

    #[test]
    fn descriptions_read_like_asp_net() {
        let authority = String::from("https://idp");
        let cases = [
            (
                AuthError::Malformed { detail: "" },
                "The token is malformed",
            ),
            (
                AuthError::Signature {
                    authority: authority.clone(),
                },
                "The signature is invalid",
            ),
            (
                AuthError::Audience {
                    authority: authority.clone(),
                    audiences: vec!["a".into(), "b".into()],
                    hint: Some(NearMiss::AudienceTrailingSlash {
                        audience: "a/".into(),
                    }),
                },
                "The audience 'a, b' is invalid",
            ),
            (
                AuthError::Expired {
                    authority: authority.clone(),
                    exp: 1_795_341_600,
                },
                "The token expired at '2026-11-22T10:00:00Z'",
            ),
            (
                AuthError::UnknownKid {
                    authority: authority.clone(),
                    kid: Some("k1".into()),
                },
                "The signature key 'k1' was not found",
            ),
            (
                AuthError::UnknownClient {
                    authority: authority.clone(),
                    client: Some(("x".into(), "client_id")),
                    looked_in: "azp, appid, client_id or cid",
                },
                "The client 'x' (claim client_id) is not a configured application of this \
                 identity provider",
            ),
            (
                AuthError::UnknownClient {
                    authority: authority.clone(),
                    client: None,
                    looked_in: "azp or appid",
                },
                "The token names no client: it has no azp or appid claim",
            ),
            (
                AuthError::MissingFhirUser {
                    authority: authority.clone(),
                    required_by: FhirUserRule::Scopes(Context::Patient),
                },
                "The token has patient/ scopes but no fhirUser claim (or extension_fhirUser); \
                 patient/ and user/ scopes need one, system/ scopes do not",
            ),
            (
                AuthError::BadFhirUser {
                    authority,
                    value: "Patient/1".into(),
                    absolute_only: true,
                },
                "The fhirUser claim 'Patient/1' must be an absolute URL ending in \
                 <resourceType>/<id> (compatibility: azure)",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.description(), text);
        }
    }

    #[test]
    fn only_keys_unavailable_is_a_503() {
        let error = AuthError::KeysUnavailable {
            authority: "https://idp".into(),
            retry_after: Duration::from_secs(7),
        };
        assert!(error.is_unavailable());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(error.provider(), Some("https://idp"));
        assert!(!AuthError::EmptyToken.is_unavailable());
        assert_eq!(AuthError::EmptyToken.retry_after(), None);
    }
}
