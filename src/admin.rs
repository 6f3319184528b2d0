//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (alive), `/readyz` (config loaded and every identity provider
//! has keys). Never proxied, never authenticated (SPEC §6).

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::introspection::IntrospectionResult;
use crate::body::{empty, full, Body};
use crate::proxy::Proxy;

/// Answers one admin request.
pub async fn handle(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => {
            export_key_sets(&proxy);
            export_token_cache(&proxy);
            export_introspections(&proxy);
            export_replay_cache(&proxy).await;
            let mut response = Response::new(full(proxy.metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/readyz" => {
            let generation = proxy.generation.load();
            if proxy.keys.is_ready(&generation.config) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: an identity provider has no signing keys yet\n",
                )
            }
        }
        _ => {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Copies the key-set state of every configured authority into the gauges and counters, at
/// scrape time, so the key store needs no metrics of its own.
fn export_key_sets(proxy: &Proxy) {
    let generation = proxy.generation.load();
    let metrics = &proxy.metrics;
    for (_, authority) in generation.config.auth.providers() {
        let stats = proxy.keys.authority_stats(authority);
        metrics
            .key_set_keys
            .with_label_values(&[authority])
            .set(i64::try_from(stats.keys).unwrap_or(i64::MAX));
        if let Some(last) = stats.last_success {
            metrics
                .key_set_last_success
                .with_label_values(&[authority])
                .set(i64::try_from(last).unwrap_or(i64::MAX));
        }
        for (result, total) in [("ok", stats.fetches_ok), ("error", stats.fetches_error)] {
            let counter = metrics
                .key_set_fetches
                .with_label_values(&[authority, result]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}

/// Copies the introspection counters of the configured introspecting provider (RFC 7662) into
/// `fhirguard_introspections_total`, at scrape time (as key sets above).
fn export_introspections(proxy: &Proxy) {
    let generation = proxy.generation.load();
    let Some(settings) = &generation.config.introspection else {
        return;
    };
    let authority = settings.authority.as_str();
    let counts = proxy.keys.introspector().counts(authority);
    for (result, total) in IntrospectionResult::ALL.iter().zip(counts) {
        let counter = proxy
            .metrics
            .introspections
            .with_label_values(&[authority, result.label()]);
        counter.inc_by(total.saturating_sub(counter.get()));
    }
}

/// Copies the verified-token cache's counters into theirs, at scrape time (as key sets above).
fn export_token_cache(proxy: &Proxy) {
    let stats = proxy.tokens.stats();
    let metrics = &proxy.metrics;
    for (counter, total) in [
        (&metrics.token_cache_hits, stats.hits),
        (&metrics.token_cache_misses, stats.misses),
    ] {
        counter.inc_by(total.saturating_sub(counter.get()));
    }
}

/// Sets the DPoP replay cache's gauge from the cache, at scrape time (as key sets above): the
/// request path pays nothing for it.
async fn export_replay_cache(proxy: &Proxy) {
    let entries = proxy.replay.entries().await;
    proxy
        .metrics
        .dpop_replay_cache_entries
        .set(i64::try_from(entries).unwrap_or(i64::MAX));
}
