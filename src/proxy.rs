//! One request, named steps (SPEC §4), as phases over typed values:
//!
//! ```text
//! handle ─► decision::decide_head ─► Head::Anonymous ─────────────► plan::anonymous
//!                                  ─► Head::Decided(Authorized) ──► plan::request
//!                                  ─► Head::NeedsBody(Pending) ─► body read (bounded)
//!                                       ─► decision::decide_body ─► plan::request | plan::bundle
//!        ─► the answer, or a Refused → error.rs → the response; metrics and the audit line
//! ```
//!
//! [`decision`] decides (pure but for authentication), [`plan`] carries the decision out
//! (forwarding, SMART's checks of bodies, stored resources and answers), [`forward`] talks to
//! the upstream, [`session`] keeps what a token established between requests.
//!
//! Each request loads one [`Generation`] (config snapshot + the upstream client built from it)
//! at its start and uses it to the end, so a reload never changes the rules mid-request.

mod change;
pub mod decision;
pub mod forward;
mod generation;
pub mod headers;
mod plan;
pub mod session;
mod smart;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::auth::{self, KeyStore, Principal};
use crate::authz::Reasons;
use crate::body::{read_inspected, Body, BodyBuffers, RequestBody};
use crate::config::{Config, ProviderKind};
use crate::error::{Challenge, ResponseContext};
use crate::metrics::Metrics;
pub use change::check_body;
use decision::{decide_body, decide_head, Head, Judge, Refused, Trace, Verdict};
use forward::Exchange;
pub use forward::Peer;
pub use generation::Generation;
use headers::RequestId;
use session::{ConnectionMemo, TokenCache};

/// The proxy's shared state.
#[derive(Debug)]
pub struct Proxy {
    pub generation: ArcSwap<Generation>,
    pub keys: Arc<KeyStore>,
    /// Verified tokens and what was derived from them ([`session`]).
    pub tokens: TokenCache,
    pub metrics: Metrics,
    /// The request bodies held in memory at once (`limits.maxBufferedBytes`).
    pub buffers: BodyBuffers,
}

/// The key-set refresher reads the configuration in force.
impl crate::auth::ConfigSource for Proxy {
    fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.generation.load().config)
    }
}

/// A request that was answered (by the upstream, or by fhirguard for it).
#[derive(Debug)]
struct Answered {
    response: Response<Body>,
    principal: Option<Arc<Principal>>,
}

impl Proxy {
    /// [`Proxy::handle`] as a hyper service.
    pub async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
        memo: Arc<ConnectionMemo>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        Ok(self.handle(request, peer, Some(&memo)).await)
    }

    /// Handles one request: never fails, every refusal is a response. Generic over the body,
    /// so a request can be driven without a socket. `memo`: the client connection's last
    /// token, when the caller keeps one.
    pub async fn handle<B: RequestBody>(
        &self,
        request: Request<B>,
        peer: Peer,
        memo: Option<&ConnectionMemo>,
    ) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let generation = self.generation.load_full();
        let request_id = headers::request_id(request.headers());
        let method = request.method().clone();
        // The audit line is written after the request is handed on: keep what it shows, and
        // only when it is written at all.
        let audited = audit_enabled().then(|| {
            let uri = request.uri();
            (uri.path().to_owned(), uri.query().map(str::to_owned))
        });
        let result = self
            .decide_and_forward(&generation, request, peer, memo, &request_id)
            .await;
        let mut reason = String::new();
        let mut hint = String::new();
        let (mut response, outcome, principal) = match result {
            Ok(Answered {
                response,
                principal: None,
            }) => (response, "anonymous", None),
            Ok(Answered {
                response,
                principal,
            }) => (response, "allowed", principal),
            Err(Refused { rejection, trace }) => {
                let outcome = rejection.outcome();
                reason = rejection.to_string();
                // A near miss goes to the log (and `explain`), never into the answer.
                if let Some(near_miss) = rejection.token_hint() {
                    hint = near_miss.to_string();
                }
                let challenge = challenge_for(&generation.config, trace.principal.as_deref());
                let response = rejection.into_response(ResponseContext {
                    request_id: request_id.as_str(),
                    challenge,
                });
                (response, outcome, trace.principal)
            }
        };
        response
            .headers_mut()
            .insert(headers::REQUEST_ID, request_id.header());
        // The client as this generation labels it: no token verified → `anonymous`.
        let client = generation.client_label(principal.as_deref());
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .record_request(outcome, &method, client, seconds);
        if let Some((path, query)) = &audited {
            let audit = Audit {
                principal: principal.as_deref(),
                outcome,
                reason: &reason,
                hint: &hint,
            };
            log_decision(
                &generation.config,
                &audit,
                request_id.as_str(),
                &method,
                path,
                query.as_deref(),
                response.status().as_u16(),
                started,
            );
        }
        response
    }

    /// The phases: decide on the head; read the body when it decides; carry the decision out.
    async fn decide_and_forward<B: RequestBody>(
        &self,
        generation: &Generation,
        request: Request<B>,
        peer: Peer,
        memo: Option<&ConnectionMemo>,
        request_id: &RequestId,
    ) -> Result<Answered, Refused> {
        let config = &generation.config;
        let judge = Judge {
            keys: &self.keys,
            tokens: &self.tokens,
            config,
            metrics: Some(&self.metrics),
            memo,
            reasons: Reasons::OnDenial,
        };
        let (parts, body) = request.into_parts();
        // Bodies read into memory count against `limits.maxBufferedBytes` until the request is
        // done; nothing is counted (or touched) for the requests that stream.
        let mut held = self.buffers.reserve();
        let head = decide_head(&judge, &parts).await?;
        let principal = head.principal().cloned();
        let exchange = Exchange {
            config,
            upstream: &generation.upstream,
            keys: &self.keys,
            metrics: &self.metrics,
            peer,
            request_id,
            principal: principal.as_deref(),
        };
        let answered = match head {
            Head::Anonymous { path } => plan::anonymous(&exchange, &path, parts, body).await,
            Head::Decided(allowed) => {
                plan::request(&exchange, allowed, parts, Some(body), &mut held).await
            }
            Head::NeedsBody(pending) => {
                let read = read_inspected(body, &parts.headers, &config.limits, &mut held).await;
                match read {
                    Ok(bytes) => match decide_body(&judge, pending, &parts, bytes)? {
                        Verdict::Request(allowed) => {
                            plan::request::<B>(&exchange, allowed, parts, None, &mut held).await
                        }
                        Verdict::Bundle(allowed) => plan::bundle(&exchange, allowed, parts).await,
                    },
                    Err(error) => Err(error.into()),
                }
            }
        };
        match answered {
            Ok(response) => Ok(Answered {
                response,
                principal,
            }),
            Err(rejection) => {
                let trace = Trace {
                    principal,
                    ..Trace::default()
                };
                Err(Refused::new(rejection, trace))
            }
        }
    }
}

/// Counts a request as in flight until dropped, also when the client goes away mid-request.
#[derive(Debug)]
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
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

/// What the audit line records about a decision.
#[derive(Debug)]
struct Audit<'a> {
    principal: Option<&'a Principal>,
    outcome: &'static str,
    reason: &'a str,
    /// A near miss behind a refused token ([`auth::near_miss`]); empty otherwise.
    hint: &'a str,
}

/// Whether audit lines are written at the configured log level.
fn audit_enabled() -> bool {
    tracing::enabled!(target: "fhirguard::audit", tracing::Level::INFO)
}

/// What the audit line shows instead of a path or query that holds a token.
const REDACTED: &str = "[redacted: holds a token]";

/// One audit line per decision (SPEC §6): never the token; the query only when enabled.
#[allow(clippy::too_many_arguments)]
fn log_decision(
    config: &Config,
    audit: &Audit<'_>,
    request_id: &str,
    method: &Method,
    path: &str,
    query: Option<&str>,
    status: u16,
    started: Instant,
) {
    let principal = audit.principal;
    let provider = principal.map(|p| p.authority.as_str()).unwrap_or("");
    // A token in the URL is refused (step 2, or earlier as a bad path), but the refused URL
    // must not carry it into the log either (SPEC §7).
    let path = if auth::jwt_in_url(path, None).is_some() {
        REDACTED
    } else {
        path
    };
    let query = match query {
        Some(query) if config.logging.log_query => match auth::jwt_in_url("", Some(query)) {
            Some(_) => REDACTED,
            None => query,
        },
        _ => "",
    };
    tracing::info!(
        target: "fhirguard::audit",
        request_id,
        method = method.as_str(),
        path,
        query,
        status,
        outcome = audit.outcome,
        reason = audit.reason,
        hint = audit.hint,
        provider,
        client_id = principal.and_then(|p| p.client_id.as_deref()).unwrap_or(""),
        subject = principal.and_then(|p| p.subject.as_deref()).unwrap_or(""),
        fhir_user = principal.and_then(|p| p.fhir_user.as_deref()).unwrap_or(""),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "decision"
    );
}
