//! One request, named steps (SPEC §4): anonymous paths, tokens outside the header, bearer
//! extraction, authentication, classification, authorization, forwarding. The first failure
//! decides, and [`crate::error`] turns it into the response.
//!
//! Each request loads one [`Generation`] (config snapshot + the upstream client built from it)
//! at its start and uses it to the end, so a reload never changes the rules mid-request.

pub mod body;
pub mod decision;
pub mod forward;
pub mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::{self, KeyStore, Principal, ProviderKind};
use crate::config::Config;
use crate::error::{Challenge, Rejection, ResponseContext};
use crate::metrics::{method_label, Metrics};
use body::{full, stream, Body};
pub use decision::granted_actions;
use decision::Findings;
use forward::{upstream_uri, Upstream};

/// A configuration generation: the validated config and what was built from it.
#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    pub config: Config,
    pub upstream: Upstream,
}

/// The proxy's shared state.
#[derive(Debug)]
pub struct Proxy {
    pub generation: ArcSwap<Generation>,
    pub keys: Arc<KeyStore>,
    pub metrics: Metrics,
}

/// The key-set refresher reads the configuration in force.
impl crate::auth::ConfigSource for Proxy {
    fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.generation.load().config)
    }
}

/// Where the request came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub address: SocketAddr,
    /// The listener terminated TLS.
    pub https: bool,
}

impl Proxy {
    /// Handles one request: never fails, every refusal is a response.
    pub async fn handle(&self, request: Request<Incoming>, peer: Peer) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let generation = self.generation.load_full();
        let request_id = headers::request_id(request.headers());
        let method = request.method().clone();
        let raw_path = request.uri().path().to_owned();
        let query = request.uri().query().map(str::to_owned);
        let mut findings = Findings::default();

        let result = self
            .decide_and_forward(&generation, request, peer, &request_id, &mut findings)
            .await;
        let mut reason = String::new();
        let (mut response, outcome) = match result {
            Ok(response) if findings.anonymous => (response, "anonymous"),
            Ok(response) => (response, "allowed"),
            Err(rejection) => {
                let outcome = outcome_of(&rejection);
                reason = rejection.to_string();
                let challenge = challenge_for(&generation.config, findings.principal.as_ref());
                let response = rejection.into_response(ResponseContext {
                    request_id: &request_id,
                    challenge,
                });
                (response, outcome)
            }
        };
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(headers::REQUEST_ID, id);
        }
        self.metrics
            .requests
            .with_label_values(&[outcome, method_label(&method)])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        let audit = Audit {
            principal: findings.principal.as_ref(),
            outcome,
            reason: &reason,
        };
        log_decision(
            &generation.config,
            &audit,
            &request_id,
            &method,
            &raw_path,
            query.as_deref(),
            response.status().as_u16(),
            started,
        );
        response
    }

    async fn decide_and_forward(
        &self,
        generation: &Generation,
        request: Request<Incoming>,
        peer: Peer,
        request_id: &str,
        findings: &mut Findings,
    ) -> Result<Response<Body>, Rejection> {
        let config = &generation.config;
        let (parts, body) = request.into_parts();
        decision::decide_head(
            &self.keys,
            config,
            Some(&self.metrics),
            &parts.method,
            &parts.uri,
            &parts.headers,
            findings,
        )
        .await?;
        let body = if findings.needs_bundle() {
            // Only bundles are buffered: their entries decide (SPEC §7).
            let bytes = read_limited(body, config.limits.max_bundle_bytes).await?;
            decision::decide_bundle(&bytes, findings)?;
            full(bytes)
        } else {
            stream(body)
        };
        let query = parts.uri.query().map(str::to_owned);
        let target = Target {
            path: findings.path.as_deref().unwrap_or("/"),
            query: query.as_deref(),
            peer,
            request_id,
        };
        self.forward(generation, parts, body, target, findings.principal.as_ref())
            .await
    }

    /// Step 9: forwards the request with its headers cleaned, and streams the answer back.
    async fn forward(
        &self,
        generation: &Generation,
        mut parts: http::request::Parts,
        body: Body,
        target: Target<'_>,
        principal: Option<&Principal>,
    ) -> Result<Response<Body>, Rejection> {
        let Target {
            path,
            query,
            peer,
            request_id,
        } = target;
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));
        let headers = &mut parts.headers;
        headers::remove_hop_by_hop(headers);
        headers::remove_identity_headers(headers);
        headers.remove(HOST);
        headers::set_forwarded(headers, peer.address, peer.https, host.as_deref());
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(headers::REQUEST_ID, id);
        }
        if let Some(principal) = principal {
            set_identity(headers, principal);
        }
        parts.uri = upstream_uri(&generation.config.upstream.url, path, query)?;
        parts.version = http::Version::HTTP_11;
        if generation.config.upstream.http2 {
            parts.version = http::Version::HTTP_2;
        }

        let upstream_started = Instant::now();
        let sent = generation
            .upstream
            .send(Request::from_parts(parts, body))
            .await;
        self.metrics
            .upstream_duration
            .observe(upstream_started.elapsed().as_secs_f64());
        let mut response = sent?;
        headers::remove_hop_by_hop(response.headers_mut());
        Ok(response)
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

/// Where a request goes and on whose behalf.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    /// The normalised path, relative to the FHIR base.
    path: &'a str,
    query: Option<&'a str>,
    peer: Peer,
    request_id: &'a str,
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

fn set_identity(headers: &mut http::HeaderMap, principal: &Principal) {
    let pairs = [
        (headers::CLIENT_ID, principal.client_id.as_deref()),
        (headers::SUBJECT, principal.subject.as_deref()),
        (headers::FHIR_USER, principal.fhir_user.as_deref()),
        (headers::ISSUER, Some(principal.issuer.as_str())),
    ];
    for (name, value) in pairs {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
}

async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, Rejection> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Rejection::BodyTooLarge { limit })
        }
        Err(error) => Err(Rejection::BodyRead(error.to_string())),
    }
}

/// What the audit line records about a decision.
#[derive(Debug)]
struct Audit<'a> {
    principal: Option<&'a Principal>,
    outcome: &'static str,
    reason: &'a str,
}

fn outcome_of(rejection: &Rejection) -> &'static str {
    match rejection.status().as_u16() {
        401 => "unauthenticated",
        403 => "forbidden",
        503 => "unavailable",
        502 | 504 => "upstream_error",
        _ => "invalid",
    }
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
        provider,
        client_id = principal.and_then(|p| p.client_id.as_deref()).unwrap_or(""),
        subject = principal.and_then(|p| p.subject.as_deref()).unwrap_or(""),
        fhir_user = principal.and_then(|p| p.fhir_user.as_deref()).unwrap_or(""),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "decision"
    );
}
