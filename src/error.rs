//! The one place where a refusal becomes an HTTP response (SPEC §4 "Responses", reference §2.4).
//!
//! Every module reports failures as its own error type; [`Rejection`] gathers them and
//! [`Rejection::into_response`] turns each into its status, `WWW-Authenticate` challenge and FHIR
//! `OperationOutcome` body with one exhaustive `match`, so no failure can leave without the
//! standard answer.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use serde_json::json;

use crate::auth::{AuthError, UrlPart};
use crate::authz::smart::{Denial, SmartError};
use crate::body::{full, Body, BufferError};
use crate::fhir::bundle::BundleError;
use crate::fhir::path::PathError;
use crate::fhir::ClassifyError;
use crate::hygiene::UnsafeRequest;

/// The media type of every body fhirguard writes itself (FHIR R4 §3.1.0.1.3).
pub const FHIR_JSON: &str = "application/fhir+json";

/// Why a request was not forwarded, or why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No `Authorization` header at all: 401 without `error` (RFC 6750 §3.1).
    #[error("no bearer token")]
    MissingToken,
    /// A token was presented and refused (401), or its keys cannot be had (503).
    #[error(transparent)]
    Token(#[from] AuthError),
    /// A JWT-shaped string in the URL (reference §2.1 "Token source").
    #[error("{}", .0.message())]
    TokenInUrl(UrlPart),
    /// The path cannot be forwarded safely (encoded slash, climbing `..`, …).
    #[error(transparent)]
    Path(#[from] PathError),
    /// The request is not a FHIR interaction fhirguard can classify.
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    /// A batch/transaction bundle that cannot be read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A bundle larger than `limits.maxBundleBytes`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The body could not be read from the client.
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    /// A request fhirguard and the upstream could read differently, refused before any decision
    /// (400): method tunnels, a preflight with a body, an ambiguous authority.
    #[error(transparent)]
    Unsafe(#[from] UnsafeRequest),
    /// A buffered body that did not arrive within `limits.bodyReadTimeout` (408).
    #[error("the request body did not arrive within {0:?} (limits.bodyReadTimeout)")]
    BodyTimeout(Duration),
    /// Buffering the body would hold more than `limits.maxBufferedBytes` across all
    /// connections (503 with `Retry-After`).
    #[error(
        "fhirguard holds as many buffered request bodies as limits.maxBufferedBytes ({limit}          bytes) allows; retry later"
    )]
    BufferFull { limit: usize },
    /// Authenticated, but not allowed to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The token's SMART scopes or `fhirUser` are invalid (400, reference §4.4–4.6).
    #[error(transparent)]
    Smart(#[from] SmartError),
    /// A request SMART refuses as malformed (400), e.g. an include under constrained scopes.
    #[error("{0}")]
    Invalid(String),
    /// The resource is outside the caller's compartment: answered as if absent (404,
    /// reference §4.7).
    #[error("{0}")]
    NotFound(String),
    /// The answer must be checked, and the client accepts no format fhirguard can read (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The upstream's answer had to be checked and could not be (too large, not FHIR JSON).
    #[error("the FHIR server's response could not be checked: {0}")]
    Unverifiable(String),
    /// The upstream refused the connection or broke it (502).
    #[error("the FHIR server is unreachable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream did not answer in time (504).
    #[error("the FHIR server did not answer within {0:?}")]
    UpstreamTimeout(Duration),
}

/// What a response needs beyond the rejection itself.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    pub request_id: &'a str,
    /// `authorization_uri` and `resource_id`/`realm` of the 401 challenge.
    pub challenge: Challenge<'a>,
}

/// The parameters of the `Bearer` challenge (reference §2.1, OSS `Startup.cs`).
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    pub authority: &'a str,
    pub audience: &'a str,
}

impl Rejection {
    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingToken => "missing_token",
            Rejection::Token(error) => error.reason(),
            Rejection::TokenInUrl(_) => "token_in_url",
            Rejection::Path(_) => "bad_path",
            Rejection::Classify(_) => "unclassified",
            Rejection::Bundle(_) => "bad_bundle",
            Rejection::BodyTooLarge { .. } => "body_too_large",
            Rejection::BodyRead(_) => "body_read",
            Rejection::Unsafe(unsafe_request) => unsafe_request.reason(),
            Rejection::BodyTimeout(_) => "body_timeout",
            Rejection::BufferFull { .. } => "buffer_full",
            Rejection::Forbidden(_) => "forbidden",
            Rejection::Smart(_) => "invalid_smart_claims",
            Rejection::Invalid(_) => "invalid_request",
            Rejection::NotFound(_) => "out_of_compartment",
            Rejection::NotAcceptable(_) => "not_acceptable",
            Rejection::Unverifiable(_) => "unverifiable_response",
            Rejection::UpstreamUnavailable(_) => "upstream_unavailable",
            Rejection::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    /// The near miss behind a refused token, for the log and `explain` only: it is not part
    /// of the response.
    pub fn token_hint(&self) -> Option<&crate::auth::near_miss::NearMiss> {
        match self {
            Rejection::Token(error) => error.hint(),
            _ => None,
        }
    }

    /// Status, OperationOutcome issue code and diagnostics, in one exhaustive match.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Rejection::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "login",
                "Authentication failed.".to_owned(),
            ),
            Rejection::Token(error) if error.is_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                format!(
                    "The identity provider's signing keys are unavailable: {}",
                    error.description()
                ),
            ),
            Rejection::Token(error) => (
                StatusCode::UNAUTHORIZED,
                "login",
                format!(
                    "Authentication failed. {}.",
                    error.description().trim_end_matches('.')
                ),
            ),
            Rejection::TokenInUrl(part) => (
                StatusCode::BAD_REQUEST,
                "invalid",
                part.message().to_owned(),
            ),
            Rejection::Path(error) => (StatusCode::BAD_REQUEST, "invalid", error.to_string()),
            Rejection::Classify(error) => (classify_status(error), error.code(), error.to_string()),
            Rejection::Bundle(error) => (StatusCode::BAD_REQUEST, "invalid", error.to_string()),
            Rejection::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                self.to_string(),
            ),
            Rejection::BodyRead(_) => (StatusCode::BAD_REQUEST, "invalid", self.to_string()),
            Rejection::Unsafe(unsafe_request) => (
                StatusCode::BAD_REQUEST,
                "invalid",
                unsafe_request.to_string(),
            ),
            Rejection::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout", self.to_string()),
            Rejection::BufferFull { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                self.to_string(),
            ),
            Rejection::Forbidden(reason) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("Authorization failed. {reason}"),
            ),
            Rejection::Smart(error) => (StatusCode::BAD_REQUEST, "invalid", error.to_string()),
            Rejection::Invalid(message) => (StatusCode::BAD_REQUEST, "invalid", message.clone()),
            Rejection::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Resource not found.".to_owned(),
            ),
            Rejection::NotAcceptable(message) => {
                (StatusCode::NOT_ACCEPTABLE, "not-supported", message.clone())
            }
            Rejection::Unverifiable(_) => (StatusCode::BAD_GATEWAY, "exception", self.to_string()),
            Rejection::UpstreamUnavailable(_) => {
                (StatusCode::BAD_GATEWAY, "exception", self.to_string())
            }
            Rejection::UpstreamTimeout(_) => {
                (StatusCode::GATEWAY_TIMEOUT, "timeout", self.to_string())
            }
        }
    }

    /// The `outcome` label of `fhirguard_requests_total` ([`crate::metrics::OUTCOMES`]).
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::MissingToken => "unauthenticated",
            Rejection::Token(error) if error.is_unavailable() => "unavailable",
            Rejection::Token(_) => "unauthenticated",
            Rejection::Classify(error) => match classify_status(error) {
                StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => "forbidden",
                _ => "invalid",
            },
            Rejection::Forbidden(_) | Rejection::NotFound(_) => "forbidden",
            Rejection::TokenInUrl(_)
            | Rejection::Path(_)
            | Rejection::Bundle(_)
            | Rejection::BodyTooLarge { .. }
            | Rejection::BodyRead(_)
            | Rejection::Unsafe(_)
            | Rejection::BodyTimeout(_)
            | Rejection::Smart(_)
            | Rejection::NotAcceptable(_)
            | Rejection::Invalid(_) => "invalid",
            Rejection::BufferFull { .. } => "unavailable",
            Rejection::Unverifiable(_)
            | Rejection::UpstreamUnavailable(_)
            | Rejection::UpstreamTimeout(_) => "upstream_error",
        }
    }

    /// The full response: status, headers and OperationOutcome body.
    pub fn into_response(&self, context: ResponseContext<'_>) -> Response<Body> {
        let (status, code, diagnostics) = self.parts();
        let mut response = operation_outcome(status, code, &diagnostics, context.request_id);
        let headers = response.headers_mut();
        match self {
            Rejection::MissingToken => {
                headers.insert(WWW_AUTHENTICATE, challenge(context.challenge, None));
            }
            Rejection::Token(error) if error.is_unavailable() => {
                let seconds = error.retry_after().map_or(5, |d| d.as_secs().max(1));
                headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            Rejection::Token(error) => {
                let description = error.description();
                headers.insert(
                    WWW_AUTHENTICATE,
                    challenge(context.challenge, Some(&description)),
                );
            }
            // Buffers drain within a body read: a second later is a fair guess.
            Rejection::BufferFull { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // RFC 9110 §15.5.9: the rest of the body is never read, so the connection closes.
            Rejection::BodyTimeout(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<BufferError> for Rejection {
    fn from(error: BufferError) -> Rejection {
        match error {
            BufferError::TooLarge { limit } => Rejection::BodyTooLarge { limit },
            BufferError::Timeout(timeout) => Rejection::BodyTimeout(timeout),
            BufferError::Spent(spent) => Rejection::BufferFull { limit: spent.limit },
            BufferError::Read(error) => Rejection::BodyRead(error.to_string()),
            BufferError::Encoded => Rejection::Invalid(BufferError::Encoded.to_string()),
        }
    }
}

impl From<Denial> for Rejection {
    fn from(denial: Denial) -> Rejection {
        match denial {
            Denial::Forbidden(reason) => Rejection::Forbidden(reason),
            Denial::NotFound(reason) => Rejection::NotFound(reason),
            Denial::Invalid(reason) => Rejection::Invalid(reason),
        }
    }
}

fn classify_status(error: &ClassifyError) -> StatusCode {
    match error.code() {
        "not-found" => StatusCode::NOT_FOUND,
        "not-supported" => StatusCode::METHOD_NOT_ALLOWED,
        "forbidden" => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `Bearer authorization_uri="…", resource_id="…", realm="…"[, error="invalid_token",
/// error_description="…"]` (RFC 6750 §3, reference §2.4).
fn challenge(challenge: Challenge<'_>, description: Option<&str>) -> HeaderValue {
    let mut value = format!(
        "Bearer authorization_uri=\"{}\", resource_id=\"{}\", realm=\"{}\"",
        quoted(challenge.authority),
        quoted(challenge.audience),
        quoted(challenge.audience)
    );
    if let Some(description) = description {
        value.push_str(", error=\"invalid_token\", error_description=\"");
        value.push_str(&quoted(description));
        value.push('"');
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The content of an RFC 9110 §5.6.4 quoted-string: `"` and `\` escaped, anything outside
/// visible ASCII and space dropped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

/// A FHIR `OperationOutcome` response whose `id` is the request id (the caller sets the
/// `X-Request-Id` header on every response alike).
pub fn operation_outcome(
    status: StatusCode,
    code: &str,
    diagnostics: &str,
    request_id: &str,
) -> Response<Body> {
    let outcome = json!({
        "resourceType": "OperationOutcome",
        "id": request_id,
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }],
    });
    let mut response = Response::new(full(Bytes::from(outcome.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::scope::ScopeError;

    fn answer(rejection: &Rejection) -> (StatusCode, serde_json::Value) {
        let (status, code, diagnostics) = rejection.parts();
        (status, json!({ "code": code, "diagnostics": diagnostics }))
    }

    #[test]
    fn smart_rejections_have_their_status_and_code() {
        let table = [
            (
                Rejection::Smart(SmartError::Scope(ScopeError::MixedContexts)),
                StatusCode::BAD_REQUEST,
                "invalid",
            ),
            (
                Rejection::Smart(SmartError::MissingFhirUser),
                StatusCode::BAD_REQUEST,
                "invalid",
            ),
            (
                Rejection::from(Denial::Invalid("x".to_owned())),
                StatusCode::BAD_REQUEST,
                "invalid",
            ),
            (
                Rejection::from(Denial::Forbidden("x".to_owned())),
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                Rejection::from(Denial::NotFound("outside".to_owned())),
                StatusCode::NOT_FOUND,
                "not-found",
            ),
            (
                Rejection::Unverifiable("too large".to_owned()),
                StatusCode::BAD_GATEWAY,
                "exception",
            ),
        ];
        for (rejection, status, code) in table {
            let (got, body) = answer(&rejection);
            assert_eq!(got, status, "{rejection}");
            assert_eq!(body["code"], code, "{rejection}");
        }
        // A 404 never says why: the resource must look absent.
        let (_, body) = answer(&Rejection::NotFound("Observation/2 is outside".to_owned()));
        assert_eq!(body["diagnostics"], "Resource not found.");
        let (_, body) = answer(&Rejection::Smart(SmartError::MissingFhirUser));
        assert_eq!(
            body["diagnostics"],
            "The token's patient/ or user/ scopes need a fhirUser claim (or extension_fhirUser) \
             naming the Patient or Practitioner they act for; system/ scopes need none."
        );
    }

    #[test]
    fn hygiene_and_body_rejections_have_their_status_code_outcome_and_headers() {
        use crate::hygiene::{ParameterPlace, UnsafeRequest};
        let context = ResponseContext {
            request_id: "r-1",
            challenge: Challenge {
                authority: "https://idp.example.org",
                audience: "https://fhir.example.org",
            },
        };
        let table = [
            (
                Rejection::from(UnsafeRequest::MethodParameter(ParameterPlace::FormBody)),
                StatusCode::BAD_REQUEST,
                "invalid",
                "invalid",
                "method_tunnel",
            ),
            (
                Rejection::from(UnsafeRequest::PreflightBody),
                StatusCode::BAD_REQUEST,
                "invalid",
                "invalid",
                "preflight_body",
            ),
            (
                Rejection::from(UnsafeRequest::AuthorityMismatch),
                StatusCode::BAD_REQUEST,
                "invalid",
                "invalid",
                "ambiguous_authority",
            ),
            (
                Rejection::BodyTimeout(Duration::from_secs(2)),
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "invalid",
                "body_timeout",
            ),
            (
                Rejection::BufferFull { limit: 10 },
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "unavailable",
                "buffer_full",
            ),
        ];
        for (rejection, status, code, outcome, reason) in table {
            let (got, body) = answer(&rejection);
            assert_eq!(got, status, "{rejection}");
            assert_eq!(body["code"], code, "{rejection}");
            assert_eq!(rejection.outcome(), outcome, "{rejection}");
            assert_eq!(rejection.reason(), reason, "{rejection}");
            assert!(crate::metrics::OUTCOMES.contains(&rejection.outcome()));
        }
        let full = Rejection::BufferFull { limit: 10 }.into_response(context);
        assert_eq!(full.headers()[RETRY_AFTER], "1");
        let late = Rejection::BodyTimeout(Duration::from_secs(2)).into_response(context);
        assert_eq!(late.headers()[CONNECTION], "close");
    }
}
