//! The one place where a refusal becomes an HTTP response (SPEC §4 "Responses", reference §2.4).
//!
//! Every module reports failures as its own error type; [`Rejection`] holds each as it came
//! (no cause is flattened into a string), and `Rejection::answer` gives each its status,
//! `OperationOutcome` issue code, metric outcome and extra headers in one exhaustive `match`,
//! so no failure can leave without the standard answer. A batch's denied entries are answered
//! through the same mapping ([`Rejection::outcome_resource`]). The headers an answer carries
//! beyond its `OperationOutcome` (challenges, `Retry-After`, rate limits) are written by
//! its `headers` module.

mod headers;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::{json, Value};

use headers::Extra;

use crate::auth::binding::ChallengeKind;
use crate::auth::{AuthError, SenderError, UrlPart};
use crate::authz::smart::enforcement::Enforcement;
use crate::authz::smart::{Denial, SmartError};
use crate::authz::{BundleDecision, Decision};
use crate::body::{full, Body, BufferError};
use crate::cors::CorsRefusal;
use crate::fhir::bundle::BundleError;
use crate::fhir::format::NotAcceptable;
use crate::fhir::path::PathError;
use crate::fhir::{ClassifyError, FHIR_JSON};
use crate::hygiene::UnsafeRequest;
use crate::limits::Throttled;
use crate::shared::StoreError;
use crate::upstream::UpstreamFailure;

/// Why a request was not forwarded, or why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No `Authorization` header at all: 401 without `error` (RFC 6750 §3.1).
    #[error("no bearer token")]
    MissingToken,
    /// A token was presented and refused (401), or its keys cannot be had (503).
    #[error(transparent)]
    Token(#[from] AuthError),
    /// A verified token without the DPoP proof or client certificate it is bound to, or a
    /// client that must use bound tokens without one (401, RFC 9449 §7, RFC 8705 §3).
    #[error(transparent)]
    Sender(#[from] SenderError),
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
    /// A body fhirguard must read and could not: too large (413), too slow (408), over the
    /// shared budget (503), unreadable or encoded (400).
    #[error(transparent)]
    Body(#[from] BufferError),
    /// A request fhirguard and the upstream could read differently, refused before any decision
    /// (400): method tunnels, a preflight with a body, an ambiguous authority.
    #[error(transparent)]
    Unsafe(#[from] UnsafeRequest),
    /// A CORS preflight from an origin, or for a method or header, that `cors` does not allow
    /// (403, without CORS headers, so the browser blocks the request).
    #[error(transparent)]
    Cors(#[from] CorsRefusal),
    /// Authenticated, but the grant does not cover the request (403, step 8).
    #[error("{}", .0.reason)]
    Denied(Box<Decision>),
    /// A transaction with a denied entry, or a bundle the grant allows no entry of (403).
    #[error("{}", .0.reason)]
    BundleDenied(Box<BundleDecision>),
    /// The token's SMART scopes or `fhirUser` are invalid (400, reference §4.4–4.6).
    #[error(transparent)]
    Smart(#[from] SmartError),
    /// SMART's plan for the request refuses it (403, 404 or 400 by the rule).
    #[error(transparent)]
    Confined(#[from] Denial),
    /// Carrying out SMART's plan refused it, or could not check the answer (400/403/404/502).
    #[error(transparent)]
    Enforcement(#[from] Enforcement),
    /// The answer must be checked, and the client accepts no format fhirguard can read (406).
    #[error(transparent)]
    NotAcceptable(#[from] NotAcceptable),
    /// The upstream refused or broke the connection (502), or did not answer in time (504).
    #[error(transparent)]
    Upstream(#[from] UpstreamFailure),
    /// The client is over its `rateLimits` allowance (429, issue 22).
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// The shared-state store did not answer and `sharedState.failureMode` is `closed` (503).
    #[error(transparent)]
    SharedState(#[from] StoreError),
}

/// What a response needs beyond the rejection itself.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    /// The request's `X-Request-Id`, also the `OperationOutcome.id` (SPEC §4, responses).
    pub request_id: &'a str,
    /// `authorization_uri` and `resource_id`/`realm` of the 401 challenge.
    pub challenge: Challenge<'a>,
}

/// The parameters of the `Bearer` challenge (reference §2.1, OSS `Startup.cs`).
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    /// `authorization_uri`: the judging provider's authority, as configured.
    pub authority: &'a str,
    /// `resource_id` and `realm`: the audience tokens must carry for this FHIR server.
    pub audience: &'a str,
}

/// How a rejection is answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// The `OperationOutcome` issue code (R4 IssueType).
    code: &'static str,
    /// The `outcome` label of `fhirguard_requests_total` ([`crate::metrics::OUTCOMES`]).
    outcome: &'static str,
    /// A bounded label for logs and `explain`: the failing rule's name.
    reason: &'static str,
    /// The `OperationOutcome`'s diagnostics.
    diagnostics: Diagnostics,
    headers: Extra,
}

#[derive(Debug)]
enum Diagnostics {
    /// The rejection's `Display`.
    Own,
    /// `Authentication failed. <description>.` (reference §2.4).
    Authentication(String),
    /// `Authorization failed. <reason>` (reference §2.4).
    Authorization,
    /// `The identity provider's signing keys are unavailable: <description>`.
    KeysUnavailable(String),
    /// `Token introspection is unavailable: <description>` (RFC 7662).
    IntrospectionUnavailable(String),
    /// A fixed text: a 404 never says why (the resource must look absent).
    Fixed(&'static str),
}

impl Answer {
    fn new(
        status: StatusCode,
        code: &'static str,
        outcome: &'static str,
        reason: &'static str,
    ) -> Answer {
        Answer {
            status,
            code,
            outcome,
            reason,
            diagnostics: Diagnostics::Own,
            headers: Extra::None,
        }
    }

    fn invalid(reason: &'static str) -> Answer {
        Answer::new(StatusCode::BAD_REQUEST, "invalid", "invalid", reason)
    }

    fn forbidden() -> Answer {
        Answer {
            diagnostics: Diagnostics::Authorization,
            ..Answer::new(StatusCode::FORBIDDEN, "forbidden", "forbidden", "forbidden")
        }
    }

    /// Outside the compartment: answered as if absent (reference §4.7).
    fn not_found() -> Answer {
        Answer {
            diagnostics: Diagnostics::Fixed("Resource not found."),
            ..Answer::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "forbidden",
                "out_of_compartment",
            )
        }
    }

    fn upstream(status: StatusCode, code: &'static str, reason: &'static str) -> Answer {
        Answer::new(status, code, "upstream_error", reason)
    }

    /// A request fhirguard cannot classify (SPEC §4 step 8).
    fn of_classify(error: &ClassifyError) -> Answer {
        use StatusCode as S;
        match error {
            ClassifyError::UnsupportedMethod(_) | ClassifyError::MethodNotAllowed { .. } => {
                Answer::new(
                    S::METHOD_NOT_ALLOWED,
                    "not-supported",
                    "invalid",
                    "unclassified",
                )
            }
            ClassifyError::UnknownResourceType(_)
            | ClassifyError::UnknownRoute(_)
            | ClassifyError::OperationNotSupported { .. } => {
                Answer::new(S::NOT_FOUND, "not-found", "forbidden", "unclassified")
            }
            ClassifyError::InvalidId(_) => Answer::invalid("unclassified"),
        }
    }

    /// A body fhirguard must read and could not (SPEC §7).
    fn of_body(error: &BufferError) -> Answer {
        use StatusCode as S;
        match error {
            BufferError::TooLarge { .. } => Answer::new(
                S::PAYLOAD_TOO_LARGE,
                "too-costly",
                "invalid",
                "body_too_large",
            ),
            BufferError::Timeout(_) => {
                Answer::new(S::REQUEST_TIMEOUT, "timeout", "invalid", "body_timeout")
                    .with(Extra::Close)
            }
            // Buffers drain within a body read: a second later is a fair guess.
            BufferError::Spent(_) => Answer::new(
                S::SERVICE_UNAVAILABLE,
                "transient",
                "unavailable",
                "buffer_full",
            )
            .with(Extra::RetryAfter(1)),
            BufferError::Read(_) => Answer::invalid("body_read"),
            BufferError::Encoded => Answer::invalid("invalid_request"),
        }
    }

    /// SMART's plan refuses the request (reference §4.7).
    fn of_confined(denial: &Denial) -> Answer {
        match denial {
            Denial::Forbidden(_) => Answer::forbidden(),
            Denial::NotFound(_) => Answer::not_found(),
            Denial::Invalid(_) => Answer::invalid("invalid_request"),
        }
    }

    /// Carrying out SMART's plan refused the request, or its answer could not be checked.
    fn of_enforcement(refusal: &Enforcement) -> Answer {
        use StatusCode as S;
        match refusal {
            Enforcement::WriteOutside { .. }
            | Enforcement::CaseVariant { .. }
            | Enforcement::ForeignReference { .. }
            | Enforcement::NotJsonPatch { .. }
            | Enforcement::PatchNotApplicable { .. }
            | Enforcement::PatchChangesIdentity => Answer::forbidden(),
            Enforcement::PatchNotJson(_)
            | Enforcement::BodyNotJson(_)
            | Enforcement::BodyTypeMismatch
            | Enforcement::IfNoneExistCount
            | Enforcement::IfNoneExistNotAscii
            | Enforcement::IfNoneExistInvalid
            | Enforcement::FormNotUtf8
            | Enforcement::FormNotUrlencoded
            | Enforcement::FormNotQuery => Answer::invalid("invalid_request"),
            Enforcement::StoredOutside { .. }
            | Enforcement::AnswerOutside { .. }
            | Enforcement::AnswerOutsideGrant
            | Enforcement::ConditionalAnswer { .. } => Answer::not_found(),
            Enforcement::Unverifiable(_) => {
                Answer::upstream(S::BAD_GATEWAY, "exception", "unverifiable_response")
            }
        }
    }

    /// Forwarding failed (SPEC §4 step 9).
    fn of_upstream(failure: &UpstreamFailure) -> Answer {
        use StatusCode as S;
        match failure {
            UpstreamFailure::Unavailable(_)
            | UpstreamFailure::Path(_)
            | UpstreamFailure::Uri(_) => {
                Answer::upstream(S::BAD_GATEWAY, "exception", "upstream_unavailable")
            }
            UpstreamFailure::Timeout(_) => {
                Answer::upstream(S::GATEWAY_TIMEOUT, "timeout", "upstream_timeout")
            }
        }
    }

    fn with(self, headers: Extra) -> Answer {
        Answer { headers, ..self }
    }

    fn saying(self, diagnostics: Diagnostics) -> Answer {
        Answer {
            diagnostics,
            ..self
        }
    }
}

impl Rejection {
    /// Status, issue code, metric outcome, reason, diagnostics and headers: the one
    /// exhaustive match.
    fn answer(&self) -> Answer {
        use StatusCode as S;
        match self {
            Rejection::MissingToken => {
                Answer::new(S::UNAUTHORIZED, "login", "unauthenticated", "missing_token")
                    .saying(Diagnostics::Fixed("Authentication failed."))
                    .with(Extra::Challenge(None))
            }
            // Key sets come back within a retry: the provider's own hint, else 5 s.
            Rejection::Token(error) if error.is_unavailable() => Answer::new(
                S::SERVICE_UNAVAILABLE,
                "transient",
                "unavailable",
                error.reason(),
            )
            .saying(match error {
                AuthError::IntrospectionUnavailable { .. } => {
                    Diagnostics::IntrospectionUnavailable(error.description())
                }
                _ => Diagnostics::KeysUnavailable(error.description()),
            })
            .with(Extra::RetryAfter(
                error.retry_after().map_or(5, |d| d.as_secs().max(1)),
            )),
            Rejection::Token(error) => {
                let description = error.description();
                Answer::new(S::UNAUTHORIZED, "login", "unauthenticated", error.reason())
                    .saying(Diagnostics::Authentication(description.clone()))
                    .with(Extra::Challenge(Some(description)))
            }
            Rejection::Sender(error) => {
                let description = error.to_string();
                let headers = match error.challenge() {
                    ChallengeKind::Dpop(code) => Extra::Dpop {
                        error: code,
                        description: description.clone(),
                        nonce: error.nonce().cloned(),
                    },
                    ChallengeKind::Bearer => Extra::Challenge(Some(description.clone())),
                };
                Answer::new(S::UNAUTHORIZED, "login", "unauthenticated", error.reason())
                    .saying(Diagnostics::Authentication(description))
                    .with(headers)
            }
            Rejection::TokenInUrl(_) => Answer::invalid("token_in_url"),
            Rejection::Path(_) => Answer::invalid("bad_path"),
            Rejection::Bundle(_) => Answer::invalid("bad_bundle"),
            Rejection::Unsafe(unsafe_request) => Answer::invalid(unsafe_request.reason()),
            Rejection::Cors(refusal) => {
                Answer::new(S::FORBIDDEN, "forbidden", "forbidden", refusal.reason())
                    .with(Extra::WithoutCors)
            }
            Rejection::Smart(_) => Answer::invalid("invalid_smart_claims"),
            Rejection::Classify(error) => Answer::of_classify(error),
            Rejection::Body(error) => Answer::of_body(error),
            Rejection::Denied(_) | Rejection::BundleDenied(_) => Answer::forbidden(),
            Rejection::Confined(denial) => Answer::of_confined(denial),
            Rejection::Enforcement(refusal) => Answer::of_enforcement(refusal),
            Rejection::NotAcceptable(_) => Answer::new(
                S::NOT_ACCEPTABLE,
                "not-supported",
                "invalid",
                "not_acceptable",
            ),
            Rejection::Upstream(failure) => Answer::of_upstream(failure),
            Rejection::Throttled(throttled) => Answer::new(
                S::TOO_MANY_REQUESTS,
                "throttled",
                "throttled",
                "rate_limited",
            )
            .with(Extra::RateLimit {
                retry_after: throttled.retry_after,
                limit: throttled.rate_limit(),
                policy: throttled.policy.clone(),
            }),
            // The store reconnects in the background within a second or so.
            Rejection::SharedState(_) => Answer::new(
                S::SERVICE_UNAVAILABLE,
                "transient",
                "unavailable",
                "shared_state_unavailable",
            )
            .with(Extra::RetryAfter(1)),
        }
    }

    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        self.answer().status
    }

    /// The `outcome` label of `fhirguard_requests_total` ([`crate::metrics::OUTCOMES`]).
    pub fn outcome(&self) -> &'static str {
        self.answer().outcome
    }

    /// A bounded label for logs and `explain`: the failing rule's name.
    pub fn reason(&self) -> &'static str {
        self.answer().reason
    }

    /// The near miss behind a refused token, for the log and `explain` only: it is not part
    /// of the response.
    pub fn token_hint(&self) -> Option<&crate::auth::near_miss::NearMiss> {
        match self {
            Rejection::Token(error) => error.hint(),
            _ => None,
        }
    }

    /// The `OperationOutcome` of this rejection, whose `id` is the request id: the body of the
    /// response, and of a batch entry fhirguard answers itself.
    pub fn outcome_resource(&self, request_id: &str) -> Value {
        self.resource(self.answer(), request_id)
    }

    fn resource(&self, answer: Answer, request_id: &str) -> Value {
        let diagnostics = match answer.diagnostics {
            Diagnostics::Own => self.to_string(),
            Diagnostics::Authentication(description) => format!(
                "Authentication failed. {}.",
                description.trim_end_matches('.')
            ),
            Diagnostics::Authorization => format!("Authorization failed. {self}"),
            Diagnostics::KeysUnavailable(description) => {
                format!("The identity provider's signing keys are unavailable: {description}")
            }
            Diagnostics::IntrospectionUnavailable(description) => {
                format!("Token introspection is unavailable: {description}")
            }
            Diagnostics::Fixed(text) => text.to_owned(),
        };
        json!({
            "resourceType": "OperationOutcome",
            "id": request_id,
            "issue": [{ "severity": "error", "code": answer.code, "diagnostics": diagnostics }],
        })
    }

    /// The full response: status, headers and `OperationOutcome` body.
    pub fn into_response(&self, context: ResponseContext<'_>) -> Response<Body> {
        let mut answer = self.answer();
        let headers = std::mem::replace(&mut answer.headers, Extra::None);
        let status = answer.status;
        let body = self.resource(answer, context.request_id);
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        headers.write(&mut response, context.challenge);
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::header::{CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE};

    use super::*;
    use crate::auth::dpop::nonce::DPOP_NONCE;
    use crate::authz::scope::ScopeError;
    use crate::authz::smart::enforcement::AnswerError;
    use crate::body::BudgetSpent;

    fn answer(rejection: &Rejection) -> (StatusCode, Value) {
        let outcome = rejection.outcome_resource("r-1");
        (rejection.status(), outcome["issue"][0].clone())
    }

    fn context() -> ResponseContext<'static> {
        ResponseContext {
            request_id: "r-1",
            challenge: Challenge {
                authority: "https://idp.example.org",
                audience: "https://fhir.example.org",
            },
        }
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
                Rejection::from(Enforcement::from(AnswerError::TooLarge { limit: 1 })),
                StatusCode::BAD_GATEWAY,
                "exception",
            ),
            (
                Rejection::from(Enforcement::PatchChangesIdentity),
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                Rejection::from(Enforcement::FormNotUrlencoded),
                StatusCode::BAD_REQUEST,
                "invalid",
            ),
            (
                Rejection::from(NotAcceptable::Accept),
                StatusCode::NOT_ACCEPTABLE,
                "not-supported",
            ),
        ];
        for (rejection, status, code) in table {
            let (got, body) = answer(&rejection);
            assert_eq!(got, status, "{rejection}");
            assert_eq!(body["code"], code, "{rejection}");
        }
        // A 404 never says why: the resource must look absent.
        let (_, body) = answer(&Rejection::from(Enforcement::AnswerOutsideGrant));
        assert_eq!(body["diagnostics"], "Resource not found.");
        let (_, body) = answer(&Rejection::from(Denial::Forbidden("x is y".to_owned())));
        assert_eq!(body["diagnostics"], "Authorization failed. x is y");
        let (_, body) = answer(&Rejection::Smart(SmartError::MissingFhirUser));
        assert_eq!(
            body["diagnostics"],
            "The token's patient/ or user/ scopes need a fhirUser claim (or extension_fhirUser) \
             naming the Patient or Practitioner they act for; system/ scopes need none."
        );
    }

    /// Classification failures (moved here from the classifier's tests: the code is the error
    /// mapping's, not the classifier's).
    #[test]
    fn classification_errors_have_their_status_code_and_outcome() {
        let table = [
            (
                ClassifyError::UnsupportedMethod("TRACE".into()),
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                "invalid",
            ),
            (
                ClassifyError::MethodNotAllowed {
                    method: "POST".into(),
                    path: "/Patient/1".into(),
                },
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                "invalid",
            ),
            (
                ClassifyError::UnknownResourceType("Nope".into()),
                StatusCode::NOT_FOUND,
                "not-found",
                "forbidden",
            ),
            (
                ClassifyError::UnknownRoute("/a/b/c/d/e".into()),
                StatusCode::NOT_FOUND,
                "not-found",
                "forbidden",
            ),
            (
                ClassifyError::OperationNotSupported {
                    operation: "purge-history".into(),
                    path: "/$purge-history".into(),
                },
                StatusCode::NOT_FOUND,
                "not-found",
                "forbidden",
            ),
            (
                ClassifyError::InvalidId("a b".into()),
                StatusCode::BAD_REQUEST,
                "invalid",
                "invalid",
            ),
        ];
        for (error, status, code, outcome) in table {
            let rejection = Rejection::from(error);
            let (got, body) = answer(&rejection);
            assert_eq!((got, &body["code"]), (status, &json!(code)), "{rejection}");
            assert_eq!(rejection.outcome(), outcome, "{rejection}");
            assert_eq!(body["diagnostics"], rejection.to_string());
        }
    }

    #[test]
    fn hygiene_and_body_rejections_have_their_status_code_outcome_and_headers() {
        use crate::hygiene::{ParameterPlace, UnsafeRequest};
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
                Rejection::from(BufferError::Timeout(Duration::from_secs(2))),
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "invalid",
                "body_timeout",
            ),
            (
                Rejection::from(BufferError::Spent(BudgetSpent { limit: 10 })),
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "unavailable",
                "buffer_full",
            ),
            (
                Rejection::from(BufferError::TooLarge { limit: 10 }),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                "invalid",
                "body_too_large",
            ),
            (
                Rejection::from(UpstreamFailure::Timeout(Duration::from_secs(2))),
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "upstream_error",
                "upstream_timeout",
            ),
            (
                Rejection::from(UpstreamFailure::Unavailable("refused".into())),
                StatusCode::BAD_GATEWAY,
                "exception",
                "upstream_error",
                "upstream_unavailable",
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
        let full = Rejection::from(BufferError::Spent(BudgetSpent { limit: 10 }));
        // RFC 7662: an inactive opaque token is 401 invalid_token; no answer is 503.
        let inactive = Rejection::from(AuthError::Inactive {
            authority: "a".into(),
        });
        let (status, body) = answer(&inactive);
        assert_eq!(
            (status, inactive.reason()),
            (StatusCode::UNAUTHORIZED, "inactive")
        );
        assert_eq!(body["code"], "login");
        let challenge = inactive.into_response(context()).headers()[WWW_AUTHENTICATE].clone();
        assert!(challenge
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\""));
        let down = Rejection::from(AuthError::IntrospectionUnavailable {
            authority: "a".into(),
            retry_after: Duration::from_secs(5),
        });
        let (status, body) = answer(&down);
        assert_eq!(
            (status, down.outcome()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(body["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("Token introspection is unavailable"));
        assert_eq!(down.into_response(context()).headers()[RETRY_AFTER], "5");
        assert_eq!(full.into_response(context()).headers()[RETRY_AFTER], "1");
        let late = Rejection::from(BufferError::Timeout(Duration::from_secs(2)));
        assert_eq!(late.into_response(context()).headers()[CONNECTION], "close");
        let missing = Rejection::MissingToken.into_response(context());
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing.headers()[WWW_AUTHENTICATE],
            "Bearer authorization_uri=\"https://idp.example.org\", \
             resource_id=\"https://fhir.example.org\", realm=\"https://fhir.example.org\""
        );
        assert_eq!(missing.headers()[CONTENT_TYPE], FHIR_JSON);
    }

    /// Issue 22: over a rate limit is 429 `throttled` with `Retry-After` and the IETF
    /// `RateLimit` / `RateLimit-Policy` fields; the shared store down with `failureMode: closed`
    /// is 503 `transient` with `Retry-After: 1`.
    #[test]
    fn throttled_and_store_refusals_have_their_status_code_and_headers() {
        use crate::config::LimitScope;
        use crate::limits::Throttled;
        use crate::shared::StoreError;
        let throttled = Rejection::from(Throttled {
            requests_per_second: 2,
            burst: 10,
            scope: LimitScope::Replica,
            retry_after: 3,
            policy: HeaderValue::from_static("\"client\";q=10;w=5"),
        });
        assert_eq!(
            (throttled.status(), throttled.outcome(), throttled.reason()),
            (StatusCode::TOO_MANY_REQUESTS, "throttled", "rate_limited")
        );
        assert!(crate::metrics::OUTCOMES.contains(&throttled.outcome()));
        let (_, body) = answer(&throttled);
        assert_eq!(body["code"], "throttled");
        let response = throttled.into_response(context());
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(response.headers()["ratelimit"], "\"client\";r=0;t=3");
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"client\";q=10;w=5"
        );
        let down = Rejection::from(StoreError::Timeout(Duration::from_millis(250)));
        assert_eq!(
            (down.status(), down.outcome(), down.reason()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "shared_state_unavailable"
            )
        );
        let (_, body) = answer(&down);
        assert_eq!(body["code"], "transient");
        assert_eq!(down.into_response(context()).headers()[RETRY_AFTER], "1");
    }

    /// RFC 9449 §7.1: a bad proof is `invalid_dpop_proof`, a bound token without its proof
    /// `invalid_token`, both in a `DPoP` challenge naming the algorithms; RFC 8705 §3: a
    /// certificate mismatch is Bearer's `invalid_token`.
    #[test]
    fn sender_refusals_are_401_with_their_challenge() {
        use crate::auth::dpop::ProofError;
        let cases = [
            (
                SenderError::Proof(ProofError::Replayed),
                "DPoP error=\"invalid_dpop_proof\", error_description=\"The DPoP proof was \
                 already used\", algs=\"ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512\"",
            ),
            (
                SenderError::BoundAsBearer,
                "DPoP error=\"invalid_token\", error_description=\"The token is DPoP-bound and \
                 must be sent with the DPoP scheme and a proof\", algs=\"ES256 ES384 EdDSA PS256 \
                 PS384 PS512 RS256 RS384 RS512\"",
            ),
        ];
        for (error, challenge) in cases {
            let rejection = Rejection::Sender(error);
            assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(rejection.outcome(), "unauthenticated");
            let response = rejection.into_response(context());
            assert_eq!(response.headers()[WWW_AUTHENTICATE], challenge);
            assert!(response.headers().get(DPOP_NONCE).is_none());
        }
        // RFC 9449 §9: a proof without a valid nonce, answered with a fresh one.
        let nonce = Rejection::Sender(SenderError::UseNonce {
            problem: crate::auth::dpop::nonce::NonceError::Missing,
            nonce: HeaderValue::from_static("bm9uY2U"),
        });
        assert_eq!(nonce.reason(), "dpop_nonce_missing");
        let response = nonce.into_response(context());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "DPoP error=\"use_dpop_nonce\", error_description=\"The DPoP proof has no nonce; \
             retry with the nonce of the DPoP-Nonce header\", algs=\"ES256 ES384 EdDSA PS256 \
             PS384 PS512 RS256 RS384 RS512\""
        );
        assert_eq!(response.headers()[DPOP_NONCE], "bm9uY2U");
        let mismatch = Rejection::Sender(SenderError::CertificateMismatch);
        assert_eq!(mismatch.reason(), "certificate_mismatch");
        let response = mismatch.into_response(context());
        let challenge = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}
