//! What becomes of a request, carried from its decision to its audit line: one [`Outcome`]
//! whose answer changes type with the phase (nothing yet once decided, what to send once
//! prepared, the response once sent) while the rest — who asked, the refusal report-only mode
//! spared, what the audit line names — rides along. A refusal becomes the response here, in
//! error.rs's one match ([`Outcome::respond`]); the outcome left then gives the metrics' label
//! and the audit line's verdict.

use std::sync::Arc;

use http::Response;

use crate::audit;
use crate::auth::dpop::nonce::{Nonces, DPOP_NONCE};
use crate::auth::Principal;
use crate::body::Body;
use crate::config::{Config, ProviderKind};
use crate::error::{Challenge, Rejection, ResponseContext};
use crate::fhir::bundle::BundleKind;
use crate::fhir::FhirRequest;
use crate::proxy::headers::RequestId;
use crate::proxy::judgement::{Authorized, AuthorizedBundle, Refused};

/// What becomes of a request: the phase's answer or the refusal, and what the metrics and the
/// audit line tell of it.
#[derive(Debug)]
pub(super) struct Outcome<A> {
    /// The phase's value (`()` once decided, then what to send, then the response), or the
    /// refusal that becomes the response.
    pub(super) answer: Result<A, Rejection>,
    /// Who the token names (`None`: anonymous, or refused before a token was accepted).
    pub(super) principal: Option<Arc<Principal>>,
    /// The refusal report-only mode forwarded instead (`reportOnly`, issue 13).
    pub(super) would_be: Option<Box<Rejection>>,
    /// The classified request, for the audit line: kept only when auditing (boxed: moved with
    /// every request's outcome).
    pub(super) request: Option<Box<FhirRequest>>,
    /// A batch/transaction's kind, for the audit line.
    pub(super) bundle: Option<BundleKind>,
}

impl Outcome<()> {
    /// A request allowed on its own: the refusal report-only mode spared, and the classified
    /// request only when `audit`ing.
    pub(super) fn allowed(allowed: &mut Authorized, audit: bool) -> Outcome<()> {
        Outcome {
            would_be: allowed.would_be.take(),
            request: audit.then(|| Box::new(allowed.request.clone())),
            ..Outcome::on_behalf_of(Some(Arc::clone(allowed.session.principal())))
        }
    }

    /// A batch/transaction allowed (whole, or entry by entry).
    pub(super) fn bundle(allowed: &mut AuthorizedBundle) -> Outcome<()> {
        Outcome {
            would_be: allowed.would_be.take(),
            bundle: Some(allowed.decision.kind),
            ..Outcome::on_behalf_of(Some(Arc::clone(allowed.session.principal())))
        }
    }

    /// A request on `principal`'s behalf (`None`: anonymous), before or without a decision that
    /// the audit line names.
    pub(super) fn on_behalf_of(principal: Option<Arc<Principal>>) -> Outcome<()> {
        Outcome {
            answer: Ok(()),
            principal,
            would_be: None,
            request: None,
            bundle: None,
        }
    }

    /// The next phase's answer. A refusal after the decision (a body, stored resource or answer
    /// failing SMART's checks, the upstream failing) is told as the decision's refusals are not:
    /// on behalf of its principal only.
    pub(super) fn then<N>(self, answer: Result<N, Rejection>) -> Outcome<N> {
        match answer {
            Ok(answer) => Outcome {
                answer: Ok(answer),
                principal: self.principal,
                would_be: self.would_be,
                request: self.request,
                bundle: self.bundle,
            },
            Err(rejection) => Outcome {
                answer: Err(rejection),
                principal: self.principal,
                would_be: None,
                request: None,
                bundle: None,
            },
        }
    }

    /// The `outcome` label of `fhirguard_requests_total`.
    pub(super) fn label(&self) -> &'static str {
        match (&self.answer, &self.principal, &self.would_be) {
            (Err(rejection), _, _) => rejection.outcome(),
            (Ok(()), None, _) => "anonymous",
            (Ok(()), Some(_), None) => "allowed",
            // Counted and logged with the status and reason it would have had.
            (Ok(()), Some(_), Some(_)) => "report_only",
        }
    }

    /// Why it was refused, or (report-only) would have been: the audit line's reason.
    pub(super) fn reason(&self) -> String {
        match (&self.answer, &self.would_be) {
            (Err(rejection), _) => rejection.to_string(),
            (Ok(()), Some(would_be)) => would_be.to_string(),
            (Ok(()), None) => String::new(),
        }
    }

    /// A near miss behind a refused token: the log's and `explain`'s, never the answer's.
    pub(super) fn hint(&self) -> String {
        let hint = self.answer.as_ref().err().and_then(Rejection::token_hint);
        hint.map(ToString::to_string).unwrap_or_default()
    }

    /// The outcome as the audit trail tells it, with its `reason` ([`Outcome::reason`]).
    pub(super) fn audited<'a>(&self, reason: &'a str) -> audit::Outcome<'a> {
        match (self.label(), &self.answer, &self.would_be) {
            ("allowed", ..) => audit::Outcome::Allowed,
            ("anonymous", ..) => audit::Outcome::Anonymous,
            (outcome, Ok(()), Some(would_be)) => audit::Outcome::WouldBeRefused {
                outcome,
                status: would_be.status().as_u16(),
                reason,
            },
            (outcome, ..) => audit::Outcome::Refused { outcome, reason },
        }
    }
}

impl<A> Outcome<A> {
    /// A refusal of deciding, with what the audit line names of the request (its [`Trace`]).
    ///
    /// [`Trace`]: crate::proxy::judgement::Trace
    pub(super) fn refused(Refused { rejection, trace }: Refused) -> Outcome<A> {
        Outcome {
            answer: Err(rejection),
            principal: trace.principal,
            would_be: None,
            request: trace.request.map(Box::new),
            bundle: trace.bundle.map(|b| b.kind),
        }
    }

    /// The answer taken out, and the outcome left to carry the next one ([`Outcome::then`]).
    pub(super) fn split(self) -> (Result<A, Rejection>, Outcome<()>) {
        let rest = Outcome {
            answer: Ok(()),
            principal: self.principal,
            would_be: self.would_be,
            request: self.request,
            bundle: self.bundle,
        };
        (self.answer, rest)
    }
}

impl Outcome<Response<Body>> {
    /// The response: the answer, or the refusal as error.rs answers it (its challenge naming
    /// the provider that judged the token). The refusal stays in the outcome left, for the
    /// metrics and the audit line.
    pub(super) fn respond(
        self,
        config: &Config,
        request_id: &RequestId,
    ) -> (Response<Body>, Outcome<()>) {
        let (answer, outcome) = self.split();
        match answer {
            Ok(response) => (response, outcome),
            Err(rejection) => {
                let challenge = challenge_for(config, outcome.principal.as_deref());
                let response = rejection.into_response(ResponseContext {
                    request_id: request_id.as_str(),
                    challenge,
                });
                let outcome = Outcome {
                    answer: Err(rejection),
                    ..outcome
                };
                (response, outcome)
            }
        }
    }
}

/// RFC 9449 §8.2: any answer to a DPoP request may carry the nonce to use next, so clients move
/// to the next window's without another 401. A request is a DPoP one when its token is
/// DPoP-bound (`cnf.jkt`): such a token is accepted with the DPoP scheme only. A refusal that
/// hands out a nonce (`use_dpop_nonce`) keeps its own.
pub(super) fn offer_nonce(
    response: &mut Response<Body>,
    principal: Option<&Principal>,
    nonces: &Nonces,
) {
    let dpop = principal
        .and_then(|p| p.confirmation.as_ref())
        .is_some_and(|c| c.jkt.is_some());
    let headers = response.headers_mut();
    if dpop && !headers.contains_key(DPOP_NONCE) {
        headers.insert(DPOP_NONCE, nonces.current(crate::auth::unix_now()));
    }
}

/// The challenge parameters: the provider that judged the token, else the primary authority,
/// else the first smart identity provider.
fn challenge_for<'a>(config: &'a Config, principal: Option<&'a Principal>) -> Challenge<'a> {
    let auth = &config.auth;
    if let Some(primary) = &auth.primary {
        return Challenge {
            authority: &primary.authority,
            audience: &primary.audience,
        };
    }
    let provider = principal
        .and_then(|p| match p.provider {
            ProviderKind::Smart { index } => auth.smart_providers.get(index),
            ProviderKind::Primary => None,
        })
        .or_else(|| auth.smart_providers.first());
    Challenge {
        authority: provider.map_or("", |p| p.authority.as_str()),
        audience: provider
            .and_then(|p| p.applications.first())
            .map_or("", |a| a.audience.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method, StatusCode};

    use super::*;
    use crate::actions::DataActions;
    use crate::authz::Reasons;
    use crate::body::empty;
    use crate::proxy::headers;
    use crate::proxy::judgement::Trace;

    fn config() -> Config {
        Config::parse(
            r#"
upstream: "http://127.0.0.1:1/fhir"
authenticationConfiguration:
  authority: "https://login.example.org/tenant"
  audience: "https://fhir.example.org"
"#,
        )
        .expect("config")
    }

    fn principal() -> Arc<Principal> {
        Arc::new(Principal::for_tests(ProviderKind::Primary, "writer"))
    }

    /// A create the principal holds no data action for, and its refusal (403).
    fn denied() -> (FhirRequest, Rejection) {
        let headers = HeaderMap::new();
        let request =
            crate::fhir::classify(&Method::POST, "/Patient", None, &headers).expect("a create");
        let decision = crate::authz::decide(&request, DataActions::NONE, Reasons::Always);
        assert!(!decision.allowed, "{decision}");
        (request, Rejection::Denied(Box::new(decision)))
    }

    fn answered() -> Result<Response<Body>, Rejection> {
        Ok(Response::new(empty()))
    }

    fn respond(outcome: Outcome<Response<Body>>) -> (Response<Body>, Outcome<()>) {
        outcome.respond(&config(), &headers::request_id(&HeaderMap::new()))
    }

    #[test]
    fn anonymous_and_allowed_requests_are_told_as_such() {
        let (response, told) = respond(Outcome::on_behalf_of(None).then(answered()));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(told.label(), "anonymous");
        assert_eq!(told.audited(""), audit::Outcome::Anonymous);
        let (_, told) = respond(Outcome::on_behalf_of(Some(principal())).then(answered()));
        assert_eq!(told.label(), "allowed");
        assert_eq!((told.reason(), told.hint()), (String::new(), String::new()));
        assert_eq!(told.audited(""), audit::Outcome::Allowed);
    }

    /// Report-only (issue 13): forwarded and answered by the upstream, but counted and audited
    /// with the status and reason of the refusal it was spared.
    #[test]
    fn a_report_only_request_is_told_as_the_refusal_it_was_spared() {
        let (request, denial) = denied();
        let spared = denial.to_string();
        let outcome = Outcome {
            would_be: Some(Box::new(denial)),
            request: Some(Box::new(request)),
            ..Outcome::on_behalf_of(Some(principal()))
        };
        let (response, told) = respond(outcome.then(answered()));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(told.label(), "report_only");
        let reason = told.reason();
        assert_eq!(reason, spared);
        let expected = audit::Outcome::WouldBeRefused {
            outcome: "report_only",
            status: 403,
            reason: &spared,
        };
        assert_eq!(told.audited(&reason), expected);
        assert!(told.request.is_some(), "the audit line names the request");
    }

    /// A refusal of deciding keeps what its trace established, for the audit line.
    #[test]
    fn a_refusal_of_deciding_is_the_response_and_keeps_its_trace() {
        let (request, denial) = denied();
        let trace = Trace {
            principal: Some(principal()),
            request: Some(request),
            ..Trace::default()
        };
        let refused = Outcome::refused(Refused::new(denial, trace));
        let (response, told) = respond(refused);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(told.label(), "forbidden");
        let reason = told.reason();
        assert!(reason.contains("requires"), "{reason}");
        let expected = audit::Outcome::Refused {
            outcome: "forbidden",
            reason: &reason,
        };
        assert_eq!(told.audited(&reason), expected);
        assert!(told.principal.is_some() && told.request.is_some());
    }

    /// A refusal after the decision (a check of the body or the answer, the upstream failing)
    /// names only who asked: not the report-only refusal, nor the request or bundle.
    #[test]
    fn a_refusal_after_the_decision_names_only_who_asked() {
        let (request, denial) = denied();
        let outcome = Outcome {
            would_be: Some(Box::new(denial)),
            request: Some(Box::new(request)),
            bundle: Some(BundleKind::Batch),
            ..Outcome::on_behalf_of(Some(principal()))
        };
        let failed = outcome.then::<Response<Body>>(Err(Rejection::MissingToken));
        assert!(failed.principal.is_some());
        assert!(failed.would_be.is_none() && failed.request.is_none() && failed.bundle.is_none());
        let (response, told) = respond(failed);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(told.label(), "unauthenticated");
        let reason = told.reason();
        let expected = audit::Outcome::Refused {
            outcome: "unauthenticated",
            reason: &reason,
        };
        assert_eq!(told.audited(&reason), expected);
    }
}
