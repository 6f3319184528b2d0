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
