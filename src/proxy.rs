//! One request, named steps (SPEC §4): [`Proxy::handle`] decides ([`decision`]), carries the
//! decision out (`plan`, [`forward`]) and tells what became of it (`outcome`), under the one
//! [`Generation`] (config snapshot + upstream client) it loaded, so a reload never changes the
//! rules mid-request.
//!
//! ```text
//! handle ─► decide_head ─► Head::Anonymous ─────────────────────────► plan::anonymous
//!                       ─► Head::Decided(Authorized) ───────────────► plan::request
//!                       ─► Head::NeedsBody ─► body ─► decide_body ─► plan::request | ::bundle
//!        ─► send, finish ─► Outcome: the answer, or the refusal → error.rs; metrics, audit line
//! ```

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{Request, Response};

use crate::audit::{AuditRecord, Auditor};
use crate::auth::{KeyStore, Principal};
use crate::authz::Reasons;
use crate::body::{read_inspected, Body, BodyBuffers, RequestBody, Reservation};
use crate::config::Config;
use crate::cors::Withheld;
use crate::error::Rejection;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::shared::SharedStore;
use decision::{decide_body, decide_head, Head, Judge, Pending, Refused, Verdict};
use forward::Exchange;
use outcome::Outcome;
use plan::{After, Outgoing, Prepared};
use session::{ConnectionMemo, TokenCache};

impl Proxy {
    /// Handles one request: never fails, every refusal is a response. Generic over the body,
    /// so a request can be driven without a socket. `memo`: the client connection's last
    /// token, when the caller keeps one.
    ///
    /// It owns what it is given, so that the listener's service is this future itself: a
    /// wrapper awaiting it would copy its 5 KiB state on every request (benches/README.md,
    /// round 3).
    pub async fn handle<B: RequestBody>(
        self: Arc<Self>,
        request: Request<B>,
        peer: Peer,
        memo: Option<Arc<ConnectionMemo>>,
    ) -> Response<Body> {
        let memo = memo.as_deref();
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let generation = self.generation.load_full();
        let request_id = headers::request_id(request.headers());
        let method = request.method().clone();
        // The audit record is written after the request is handed on: keep what it shows, and
        // only when it is written at all.
        let audit = self.auditor.is_active();
        let target = audit.then(|| {
            let uri = request.uri();
            (uri.path().to_owned(), uri.query().map(str::to_owned))
        });
        // With `cors`, every answer is fhirguard's CORS answer to the request's origin.
        let origin =
            (generation.cors.as_ref()).and_then(|cors| cors.allowed_origin(request.headers()));
        let decided = self.decide_and_forward(&generation, request, peer, memo, &request_id, audit);
        let outcome = decided.await.unwrap_or_else(Outcome::refused);
        let (mut response, outcome) = outcome.respond(&generation.config, &request_id);
        response
            .headers_mut()
            .insert(headers::REQUEST_ID, request_id.header());
        if let Some(nonces) = &generation.nonces {
            outcome::offer_nonce(&mut response, outcome.principal.as_deref(), nonces);
        }
        if let Some(cors) = &generation.cors {
            if response.extensions().get::<Withheld>().is_none() {
                cors.decorate(origin, response.headers_mut());
            }
        }
        // The client as this generation labels it: no token verified → `anonymous`.
        let client = generation.client_label(outcome.principal.as_deref());
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .record_request(outcome.label(), &method, client, seconds);
        if let Some((path, query)) = &target {
            let reason = outcome.reason();
            let record = AuditRecord {
                request_id: request_id.as_str(),
                method: &method,
                path,
                query: query.as_deref(),
                request: outcome.request.as_deref(),
                bundle: outcome.bundle,
                outcome: outcome.audited(&reason),
                status: response.status().as_u16(),
                hint: &outcome.hint(),
                principal: outcome.principal.as_deref(),
                peer: Some(peer.address),
                time: SystemTime::now(),
                latency: started.elapsed(),
            };
            self.auditor.record(&generation.config, &record);
        }
        response
    }

    /// The phases: decide on the head; read the body when it decides; prepare, send, finish
    /// (`plan`). The upstream's future stays in this function's state, one level under
    /// `handle`: a request decided without SMART (most) is prepared without an await, and the
    /// other shapes are boxed, so their futures are neither laid out nor copied for every
    /// request (nested, rustc lays a future out more than once, #62958).
    async fn decide_and_forward<B: RequestBody>(
        &self,
        generation: &Generation,
        request: Request<B>,
        peer: Peer,
        memo: Option<&ConnectionMemo>,
        request_id: &headers::RequestId,
        audit: bool,
    ) -> Result<Outcome<Response<Body>>, Refused> {
        let config = &generation.config;
        let judge = self.judge(generation, memo, &peer);
        let (parts, body) = request.into_parts();
        // Bodies read into memory count against `limits.maxBufferedBytes` until the request is
        // done; nothing is counted (or touched) for the requests that stream.
        let mut held = self.buffers.reserve();
        let head = decide_head(&judge, &parts).await?;
        let session = head.session().cloned();
        let principal = session.as_ref().map(|session| session.principal());
        if let (Some(limits), Some(principal)) = (&generation.limits, principal) {
            let limited = self.limit(generation, limits, principal);
            Box::pin(limited).await?;
        }
        let exchange = Exchange {
            config,
            upstream: &generation.upstream,
            keys: &self.keys,
            metrics: &self.metrics,
            peer,
            request_id,
            identity: session.as_ref().map(|session| session.identity()),
        };
        let outcome = match head {
            Head::Decided(mut allowed) => {
                let outcome = Outcome::allowed(&mut allowed, audit);
                let prepared = match allowed.is_plain() {
                    true => Ok(plan::plain(allowed, parts, body)),
                    false => {
                        // Boxed: inline it would make the service's future 456 bytes larger,
                        // and hyper keeps a slot of that size on every connection, idle or not.
                        let request =
                            plan::request(&exchange, allowed, parts, Some(body), &mut held);
                        Box::pin(request).await
                    }
                };
                outcome.then(prepared.map(Prepared::Send))
            }
            Head::Anonymous { path } => {
                let answer = match &generation.cors {
                    // fhirguard owns CORS: preflights are answered, never forwarded.
                    Some(cors) if crate::hygiene::is_preflight(&parts.method, &parts.headers) => {
                        plan::preflight(cors, &parts, &body)
                    }
                    _ => plan::anonymous(&exchange, path, parts, body).await,
                };
                Outcome::on_behalf_of(None).then(answer)
            }
            Head::NeedsBody(pending) => {
                let decided =
                    self.body_decides(&judge, &exchange, pending, parts, body, &mut held, audit);
                Box::pin(decided).await?
            }
        };
        let (prepared, outcome) = outcome.split();
        let answered = match prepared {
            Ok(Prepared::Send(Outgoing {
                parts,
                body,
                path,
                query,
                after,
            })) => match exchange.send(parts, body, &path, query.as_deref()).await {
                Ok(response) if matches!(after, After::Nothing) => Ok(response),
                Ok(response) => Box::pin(plan::finish(&exchange, after, response)).await,
                Err(rejection) => Err(rejection),
            },
            Ok(Prepared::Answered(response)) => Ok(response),
            Err(rejection) => Err(rejection),
        };
        Ok(outcome.then(answered))
    }

    /// `rateLimits` (issue 22): an authenticated request counted against its client's
    /// allowance; over it, refused 429 — or, for a report-only client, forwarded and counted as
    /// would-be throttled. Boxed at the call: only configurations with limits lay it out.
    async fn limit(
        &self,
        generation: &Generation,
        limits: &RateLimiter,
        principal: &Arc<Principal>,
    ) -> Result<(), Refused> {
        let client = principal.client_id.as_ref();
        let refused = |rejection: Rejection| Refused::of(rejection, Some(Arc::clone(principal)));
        let checked = limits.check(client, self.shared.as_deref()).await;
        let throttled = match checked {
            Ok(None) => return Ok(()),
            Ok(Some(throttled)) => throttled,
            Err(error) => return Err(refused(error.into())),
        };
        let config = &generation.config;
        let report_only = config.report_only.covers(client.map(String::as_str));
        let result = match report_only {
            true => "would_be_throttled",
            false => "throttled",
        };
        let label = generation.client_label(Some(principal));
        self.metrics
            .shared
            .rate_limited
            .with_label_values(&[label.as_str(), throttled.scope.label(), result])
            .inc();
        if report_only {
            tracing::info!(
                client_id = label.as_str(),
                "would be throttled (report-only)"
            );
            return Ok(());
        }
        Err(refused(throttled.into()))
    }

    /// What judges this proxy's requests under `generation`.
    fn judge<'a>(
        &'a self,
        generation: &'a Generation,
        memo: Option<&'a ConnectionMemo>,
        peer: &'a Peer,
    ) -> Judge<'a> {
        Judge {
            keys: &self.keys,
            tokens: &self.tokens,
            config: &generation.config,
            metrics: Some(&self.metrics),
            memo,
            reasons: Reasons::OnDenial,
            replay: &self.replay,
            nonces: generation.nonces.as_ref(),
            peer: Some(peer),
        }
    }

    /// A request whose body decides: the body read within the limits, decided, carried out.
    #[allow(clippy::too_many_arguments)] // the request and what decides and carries it
    async fn body_decides<B: RequestBody>(
        &self,
        judge: &Judge<'_>,
        exchange: &Exchange<'_>,
        pending: Pending,
        parts: http::request::Parts,
        body: B,
        held: &mut Reservation<'_>,
        audit: bool,
    ) -> Result<Outcome<Prepared>, Refused> {
        let limits = &judge.config.limits;
        let bytes = match read_inspected(body, &parts.headers, limits, held).await {
            Ok(bytes) => bytes,
            Err(error) => {
                let principal = pending.classified.session.principal();
                let outcome = Outcome::on_behalf_of(Some(Arc::clone(principal)));
                return Ok(outcome.then(Err(error.into())));
            }
        };
        Ok(match decide_body(judge, pending, &parts, bytes)? {
            Verdict::Request(mut allowed) => {
                let outcome = Outcome::allowed(&mut allowed, audit);
                let prepared = plan::request::<B>(exchange, allowed, parts, None, held).await;
                outcome.then(prepared.map(Prepared::Send))
            }
            Verdict::Bundle(mut allowed) => {
                let outcome = Outcome::bundle(&mut allowed);
                outcome.then(plan::bundle(exchange, allowed, parts))
            }
        })
    }
}

/// The proxy's shared state.
#[derive(Debug)]
pub struct Proxy {
    /// The configuration generation in force; each request loads it once (SPEC §5).
    pub generation: ArcSwap<Generation>,
    /// The identity providers' key sets and introspection client, kept across reloads.
    pub keys: Arc<KeyStore>,
    /// Verified tokens and what was derived from them ([`session`]).
    pub tokens: TokenCache,
    /// The Prometheus families the request path counts into (served on `/metrics`).
    pub metrics: Metrics,
    /// The request bodies held in memory at once (`limits.maxBufferedBytes`).
    pub buffers: BodyBuffers,
    /// Writes each decision to the audit trail.
    pub auditor: Auditor,
    /// Seen DPoP proofs (RFC 9449 §11.1), per process.
    pub replay: replay::ReplayCache,
    /// The store the replicas share (`sharedState`, read at start-up), when configured.
    pub shared: Option<Arc<SharedStore>>,
}

/// The key-set refresher reads the configuration in force.
impl crate::auth::ConfigSource for Proxy {
    fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.generation.load().config)
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

// The phases and what they keep, each in its file (see the module doc).
mod authentication;
mod bundle_decision;
mod change;
pub mod decision;
mod documents;
pub mod forward;
mod generation;
pub mod headers;
pub mod introspected;
mod judgement;
mod outcome;
mod plan;
pub mod replay;
mod search;
pub mod sender;
pub mod session;
mod smart;
pub mod verified;

pub use change::check_body;
pub use forward::Peer;
pub use generation::Generation;
