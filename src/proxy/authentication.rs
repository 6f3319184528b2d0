//! SPEC §4 steps 2–7 of deciding: the token read from the `Authorization` header (never from
//! the URL), who it names ([`crate::proxy::session`]'s caches before [`crate::auth`]'s
//! verification), and what it is bound to: a DPoP proof or a client certificate
//! ([`crate::proxy::sender`], RFC 9449 §4.3, RFC 8705 §3), checked on every request, cached or
//! not. Both are timed and their refusals counted by one helper ([`observe`]).

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;

use crate::auth::{self, Principal};
use crate::error::Rejection;
use crate::proxy::judgement::Judge;
use crate::proxy::sender::{self, Evidence, ProofState};
use crate::proxy::session::{self, Session};

/// Steps 2–7: the token from the `Authorization` header, who it names, and what it is bound
/// to. A refusal for want of the binding names the token's principal (for the trace).
pub(super) async fn authenticate(
    judge: &Judge<'_>,
    head: &Parts,
) -> Result<Arc<Session>, (Rejection, Option<Arc<Principal>>)> {
    // Step 2: tokens outside the header (reference §2.1).
    if let Some(part) = auth::jwt_in_url(head.uri.path(), head.uri.query()) {
        return Err((Rejection::TokenInUrl(part), None));
    }
    let started = Instant::now();
    let now = auth::unix_now();
    // Steps 3–7 at once when the connection's last request presented this very header.
    let recalled = match judge.memo {
        Some(memo) => {
            let (tokens, keys, config) = (judge.tokens, judge.keys, judge.config);
            session::recall(tokens, keys, config, &head.headers, now, memo).await
        }
        None => None,
    };
    let (scheme, token, authenticated) = match &recalled {
        Some(recalled) => (recalled.scheme, &*recalled.token, recalled.answer.clone()),
        None => {
            // Step 3: bearer extraction (RFC 6750 §2.1), or a DPoP-bound token (RFC 9449 §7.1).
            let presented = auth::access_token(&head.headers, judge.config.limits.max_token_bytes);
            let (scheme, token) = match presented {
                Ok(Some(presented)) => presented,
                Ok(None) => return Err((Rejection::MissingToken, None)),
                Err(error) => return Err((Rejection::from(error), None)),
            };
            // Steps 4–7: provider, signature, time, audience and client.
            let (tokens, keys, config) = (judge.tokens, judge.keys, judge.config);
            // Boxed: the connection's first request, or a new token, takes this way; inline,
            // its future would make every request's larger.
            let authenticated = Box::pin(session::authenticate(
                tokens, keys, config, token, now, judge.memo,
            ))
            .await;
            (scheme, token, authenticated)
        }
    };
    // The token's binding, on every request, cached or not (RFC 9449 §4.3, RFC 8705 §3); boxed,
    // so only requests with a proof, a bound token or a requirement pay for its state.
    if let Ok(session) = &authenticated {
        let principal = session.principal();
        if sender::needs_check(judge.config, scheme, principal, head, judge.peer) {
            let evidence = Evidence {
                head,
                scheme,
                token,
                peer: judge.peer,
                now,
            };
            let bound = Box::pin(bind(judge, &evidence, session, started)).await;
            return bound.map(|()| Arc::clone(session));
        }
    }
    let failure = authenticated.as_ref().err();
    observe(
        judge,
        started,
        failure.map(|e| (e.provider().unwrap_or("unknown"), e.reason())),
    );
    authenticated.map_err(|error| (Rejection::from(error), None))
}

/// The sender-constraint checks of a verified token ([`sender::check`]), timed with
/// authentication and counted under the token's provider when they refuse. The refusal names
/// the token's principal (for the trace).
async fn bind(
    judge: &Judge<'_>,
    evidence: &Evidence<'_>,
    session: &Session,
    started: Instant,
) -> Result<(), (Rejection, Option<Arc<Principal>>)> {
    let principal = session.principal();
    let proofs = ProofState {
        replay: judge.replay,
        nonces: judge.nonces,
    };
    let checked = sender::check(judge.config, proofs, evidence, principal).await;
    // A refused proof or binding; not the shared replay store's absence (503), which is no
    // authentication failure (fhirguard_shared_state_calls_total counts it).
    let failure = match &checked {
        Err(Rejection::Sender(error)) => Some((principal.authority.as_str(), error.reason())),
        _ => None,
    };
    observe(judge, started, failure);
    checked.map_err(|error| (error, Some(Arc::clone(principal))))
}

/// Authentication's metrics (when the judge counts): the time since `started` in
/// `fhirguard_auth_duration_seconds`, and a `failure` (provider, reason) in
/// `fhirguard_auth_failures_total`.
fn observe(judge: &Judge<'_>, started: Instant, failure: Option<(&str, &'static str)>) {
    if let Some(metrics) = judge.metrics {
        metrics
            .auth_duration
            .observe(started.elapsed().as_secs_f64());
        if let Some((provider, reason)) = failure {
            metrics
                .auth_failures
                .with_label_values(&[provider, reason])
                .inc();
        }
    }
}
