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
mod plan;
pub mod replay;
mod search;
pub mod sender;
pub mod session;
mod smart;
pub mod verified;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::audit::{self, AuditRecord, Auditor};
use crate::auth::dpop::nonce::{Nonces, DPOP_NONCE};
use crate::auth::{KeyStore, Principal};
use crate::authz::Reasons;
use crate::body::{read_inspected, Body, BodyBuffers, RequestBody, Reservation};
use crate::config::{Config, ProviderKind};
use crate::cors::Withheld;
use crate::error::{Challenge, Rejection, ResponseContext};
use crate::fhir::bundle::BundleKind;
use crate::fhir::FhirRequest;
use crate::hygiene;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::shared::SharedStore;
pub use change::check_body;
use decision::{decide_body, decide_head, Authorized, Head, Judge, Pending, Refused, Verdict};
use forward::Exchange;
pub use forward::Peer;
pub use generation::Generation;
use headers::RequestId;
use plan::{After, Outgoing, Prepared};
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

/// A request that was answered (by the upstream, or by fhirguard for it).
#[derive(Debug)]
struct Answered {
    response: Response<Body>,
    principal: Option<Arc<Principal>>,
    /// The refusal report-only mode forwarded instead (`reportOnly`).
    would_be: Option<Box<Rejection>>,
    /// What the audit record names, kept only when the auditor is active.
    audited: Audited,
}

/// A request ready to be sent (or answered, or failed while preparing), with what its outcome
/// and audit record need.
#[derive(Debug)]
struct Ready {
    prepared: Result<Prepared, Rejection>,
    /// The refusal report-only mode spared (`reportOnly`).
    would_be: Option<Box<Rejection>>,
    audited: Audited,
}

/// What an allowed request's outcome and audit record keep of its decision before its plan is
/// carried out.
#[derive(Debug, Default)]
struct Kept {
    would_be: Option<Box<Rejection>>,
    audited: Audited,
}

impl Kept {
    /// The report-only refusal, and the classified request only when auditing.
    fn of(allowed: &mut Authorized, audit: bool) -> Kept {
        Kept {
            would_be: allowed.would_be.take(),
            audited: Audited {
                request: audit.then(|| Box::new(allowed.request.clone())),
                bundle: None,
            },
        }
    }

    fn ready(self, prepared: Result<Prepared, Rejection>) -> Ready {
        Ready {
            prepared,
            would_be: self.would_be,
            audited: self.audited,
        }
    }
}

/// The classified request and bundle kind, for the audit record.
#[derive(Debug, Default)]
struct Audited {
    /// Boxed: kept only when auditing, and moved with every request's outcome.
    request: Option<Box<FhirRequest>>,
    bundle: Option<BundleKind>,
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
        let result = self
            .decide_and_forward(&generation, request, peer, memo, &request_id, audit)
            .await;
        let mut ended = Ended::of(result, &generation.config, &request_id);
        ended
            .response
            .headers_mut()
            .insert(headers::REQUEST_ID, request_id.header());
        if let Some(nonces) = &generation.nonces {
            ended.offer_nonce(nonces);
        }
        if let Some(cors) = &generation.cors {
            let response = &mut ended.response;
            if response.extensions().get::<Withheld>().is_none() {
                cors.decorate(origin, response.headers_mut());
            }
        }
        // The client as this generation labels it: no token verified → `anonymous`.
        let client = generation.client_label(ended.principal.as_deref());
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .record_request(ended.outcome, &method, client, seconds);
        if let Some((path, query)) = &target {
            let record = AuditRecord {
                request_id: request_id.as_str(),
                method: &method,
                path,
                query: query.as_deref(),
                request: ended.audited.request.as_deref(),
                bundle: ended.audited.bundle,
                outcome: ended.audit_outcome(),
                status: ended.response.status().as_u16(),
                hint: &ended.hint,
                principal: ended.principal.as_deref(),
                peer: Some(peer.address),
                time: SystemTime::now(),
                latency: started.elapsed(),
            };
            self.auditor.record(&generation.config, &record);
        }
        ended.response
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
        request_id: &RequestId,
        audit: bool,
    ) -> Result<Answered, Refused> {
        let config = &generation.config;
        let judge = self.judge(generation, memo, &peer);
        let (parts, body) = request.into_parts();
        // Bodies read into memory count against `limits.maxBufferedBytes` until the request is
        // done; nothing is counted (or touched) for the requests that stream.
        let mut held = self.buffers.reserve();
        let head = decide_head(&judge, &parts).await?;
        let principal = head.principal().cloned();
        if let (Some(limits), Some(principal)) = (&generation.limits, &principal) {
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
            principal: principal.as_deref(),
        };
        let Ready {
            prepared,
            would_be,
            audited,
        } = match head {
            Head::Decided(mut allowed) => {
                let kept = Kept::of(&mut allowed, audit);
                let prepared = match allowed.is_plain() {
                    true => Ok(plan::plain(allowed, parts, body)),
                    false => {
                        let request =
                            plan::request(&exchange, allowed, parts, Some(body), &mut held);
                        Box::pin(request).await
                    }
                };
                kept.ready(prepared.map(Prepared::Send))
            }
            Head::Anonymous { path } => {
                let answer = match &generation.cors {
                    // fhirguard owns CORS: preflights are answered, never forwarded.
                    Some(cors) if hygiene::is_preflight(&parts.method, &parts.headers) => {
                        plan::preflight(cors, &parts, &body)
                    }
                    _ => plan::anonymous(&exchange, path, parts, body).await,
                };
                Kept::default().ready(answer)
            }
            Head::NeedsBody(pending) => {
                let decided =
                    self.body_decides(&judge, &exchange, pending, parts, body, &mut held, audit);
                Box::pin(decided).await?
            }
        };
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
        match answered {
            Ok(response) => Ok(Answered {
                response,
                principal,
                would_be,
                audited,
            }),
            Err(rejection) => Err(Refused::of(rejection, principal)),
        }
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
    ) -> Result<Ready, Refused> {
        let limits = &judge.config.limits;
        let mut audited = Audited::default();
        let bytes = match read_inspected(body, &parts.headers, limits, held).await {
            Ok(bytes) => bytes,
            Err(error) => {
                let prepared = Err(error.into());
                let would_be = None;
                return Ok(Ready {
                    prepared,
                    would_be,
                    audited,
                });
            }
        };
        let verdict = decide_body(judge, pending, &parts, bytes)?;
        let (answer, would_be) = match verdict {
            Verdict::Request(mut allowed) => {
                let would_be = allowed.would_be.take();
                if audit {
                    audited.request = Some(Box::new(allowed.request.clone()));
                }
                let prepared = plan::request::<B>(exchange, allowed, parts, None, held).await;
                (prepared.map(Prepared::Send), would_be)
            }
            Verdict::Bundle(mut allowed) => {
                let would_be = allowed.would_be.take();
                audited.bundle = Some(allowed.decision.kind);
                (plan::bundle(exchange, allowed, parts), would_be)
            }
        };
        Ok(Ready {
            prepared: answer,
            would_be,
            audited,
        })
    }
}

/// How a request ended: the response, and what the metrics and the audit record say of it.
#[derive(Debug)]
struct Ended {
    response: Response<Body>,
    /// The `outcome` label of `fhirguard_requests_total`.
    outcome: &'static str,
    principal: Option<Arc<Principal>>,
    /// Why it was refused, or (report-only) would have been.
    reason: String,
    /// A near miss behind a refused token: the log's and `explain`'s, never the answer's.
    hint: String,
    /// The status a report-only request would have had.
    would_be_status: Option<u16>,
    audited: Audited,
}

impl Ended {
    fn of(result: Result<Answered, Refused>, config: &Config, request_id: &RequestId) -> Ended {
        match result {
            Ok(answered) => {
                let outcome = match (&answered.principal, &answered.would_be) {
                    (None, _) => "anonymous",
                    (Some(_), None) => "allowed",
                    // Counted and logged with the status and reason it would have had.
                    (Some(_), Some(_)) => "report_only",
                };
                let would_be = answered.would_be.as_deref();
                Ended {
                    response: answered.response,
                    outcome,
                    principal: answered.principal,
                    reason: would_be.map(ToString::to_string).unwrap_or_default(),
                    hint: String::new(),
                    would_be_status: would_be.map(|r| r.status().as_u16()),
                    audited: answered.audited,
                }
            }
            Err(Refused { rejection, trace }) => {
                let challenge = challenge_for(config, trace.principal.as_deref());
                let response = rejection.into_response(ResponseContext {
                    request_id: request_id.as_str(),
                    challenge,
                });
                let hint = rejection.token_hint().map(ToString::to_string);
                Ended {
                    response,
                    outcome: rejection.outcome(),
                    principal: trace.principal,
                    reason: rejection.to_string(),
                    hint: hint.unwrap_or_default(),
                    would_be_status: None,
                    audited: Audited {
                        request: trace.request.map(Box::new),
                        bundle: trace.bundle.map(|b| b.kind),
                    },
                }
            }
        }
    }

    /// RFC 9449 §8.2: any answer to a DPoP request may carry the nonce to use next, so clients
    /// move to the next window's without another 401. A request is a DPoP one when its token is
    /// DPoP-bound (`cnf.jkt`): such a token is accepted with the DPoP scheme only. A refusal
    /// that hands out a nonce (`use_dpop_nonce`) keeps its own.
    fn offer_nonce(&mut self, nonces: &Nonces) {
        let dpop = self
            .principal
            .as_ref()
            .and_then(|p| p.confirmation.as_ref())
            .is_some_and(|c| c.jkt.is_some());
        let headers = self.response.headers_mut();
        if dpop && !headers.contains_key(DPOP_NONCE) {
            headers.insert(DPOP_NONCE, nonces.current(crate::auth::unix_now()));
        }
    }

    /// The outcome as the audit trail tells it.
    fn audit_outcome(&self) -> audit::Outcome<'_> {
        let (outcome, reason) = (self.outcome, self.reason.as_str());
        match (outcome, self.would_be_status) {
            ("allowed", _) => audit::Outcome::Allowed,
            ("anonymous", _) => audit::Outcome::Anonymous,
            (outcome, Some(status)) => audit::Outcome::WouldBeRefused {
                outcome,
                status,
                reason,
            },
            (outcome, None) => audit::Outcome::Refused { outcome, reason },
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
