//! The metrics of the shared store and the rate limits (issue 22): store calls by operation and
//! result with their latency, fallbacks to a replica's own state while the store is down, and
//! requests throttled (or, report-only, that would have been) per configured client.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Registry};

/// Every `operation` label of the store metrics.
pub const STORE_OPERATIONS: [&str; 4] = [
    "dpop_replay",
    "rate_limit",
    "introspection_get",
    "introspection_set",
];
/// Every `result` label of `fhirguard_shared_state_calls_total`.
pub const STORE_RESULTS: [&str; 3] = ["ok", "error", "timeout"];
/// Every `use` label of `fhirguard_shared_state_fallbacks_total`.
pub const FALLBACK_USES: [&str; 3] = ["dpop_replay", "rate_limit", "introspection"];
/// Every `result` label of `fhirguard_rate_limited_total`.
pub const THROTTLE_RESULTS: [&str; 2] = ["throttled", "would_be_throttled"];

/// Buckets for store calls, in seconds: 100 µs to 1 s.
const STORE_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

/// The store's and the rate limits' metrics, each store series resolved once.
#[derive(Debug, Clone)]
pub struct SharedMetrics {
    /// `fhirguard_shared_state_calls_total{operation, result}`, by
    /// [`STORE_OPERATIONS`] × [`STORE_RESULTS`].
    calls: Vec<IntCounter>,
    /// `fhirguard_shared_state_call_duration_seconds{operation}`, by [`STORE_OPERATIONS`].
    durations: Vec<Histogram>,
    /// `fhirguard_shared_state_fallbacks_total{use}`, by [`FALLBACK_USES`].
    fallbacks: Vec<IntCounter>,
    /// `fhirguard_rate_limited_total{client_id, scope, result}`.
    pub rate_limited: IntCounterVec,
}

impl SharedMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub(super) fn register(registry: &Registry) -> SharedMetrics {
        let calls = IntCounterVec::new(
            prometheus::Opts::new(
                "fhirguard_shared_state_calls_total",
                "Calls to the shared-state store (sharedState.redis), by operation and result \
                 (ok, error, timeout).",
            ),
            &["operation", "result"],
        )
        .expect("valid counter");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "fhirguard_shared_state_call_duration_seconds",
                "Time a call to the shared-state store took, by operation.",
            )
            .buckets(STORE_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid histogram");
        let fallbacks = IntCounterVec::new(
            prometheus::Opts::new(
                "fhirguard_shared_state_fallbacks_total",
                "Requests served with this replica's own state because the shared store did not \
                 answer (sharedState.failureMode: open), by use.",
            ),
            &["use"],
        )
        .expect("valid counter");
        let rate_limited = IntCounterVec::new(
            prometheus::Opts::new(
                "fhirguard_rate_limited_total",
                "Requests over a rateLimits entry, by client, scope (replica, cluster) and result \
                 (throttled: answered 429; would_be_throttled: a report-only client's, forwarded).",
            ),
            &["client_id", "scope", "result"],
        )
        .expect("valid counter");
        for collector in [
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(durations.clone()),
            Box::new(fallbacks.clone()),
            Box::new(rate_limited.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        SharedMetrics {
            calls: STORE_OPERATIONS
                .iter()
                .flat_map(|op| STORE_RESULTS.iter().map(move |r| [*op, *r]))
                .map(|labels| calls.with_label_values(&labels))
                .collect(),
            durations: STORE_OPERATIONS
                .iter()
                .map(|op| durations.with_label_values(&[op]))
                .collect(),
            fallbacks: FALLBACK_USES
                .iter()
                .map(|u| fallbacks.with_label_values(&[u]))
                .collect(),
            rate_limited,
        }
    }

    /// Counts one store call of `operation` (an index of [`STORE_OPERATIONS`]) that ended with
    /// `result` (an index of [`STORE_RESULTS`]) after `seconds`.
    pub fn record_call(&self, operation: usize, result: usize, seconds: f64) {
        if let Some(counter) = self.calls.get(operation * STORE_RESULTS.len() + result) {
            counter.inc();
        }
        if let Some(histogram) = self.durations.get(operation) {
            histogram.observe(seconds);
        }
    }

    /// Counts one fallback of `use_` (an index of [`FALLBACK_USES`]).
    pub fn record_fallback(&self, use_: usize) {
        if let Some(counter) = self.fallbacks.get(use_) {
            counter.inc();
        }
    }
}
