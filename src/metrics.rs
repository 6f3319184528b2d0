//! Prometheus metrics on an owned registry (SPEC §6): no global registry, so tests can build many
//! instances. Labels are bounded: outcomes, methods, reasons, configured authorities and
//! configured client ids only ([`clients`]) — never a subject, patient id, or a client id taken
//! from a token as-is.

mod clients;
mod shared;

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use clients::{ClientLabel, ClientLabels, ANONYMOUS_CLIENT, OTHER_CLIENT};
pub use shared::{SharedMetrics, FALLBACK_USES, STORE_OPERATIONS, STORE_RESULTS, THROTTLE_RESULTS};

/// Buckets for request latencies, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric fhirguard exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `fhirguard_requests_total{outcome, method, client_id}`
    pub requests: IntCounterVec,
    /// `fhirguard_request_duration_seconds{outcome}`: whole request, to the response head. No
    /// `client_id`: a histogram is 17 series per label set (14 buckets, `+Inf`, sum, count), so
    /// per client it would multiply the exposition by the number of clients for a figure the
    /// counters and `fhirguard_upstream_duration_seconds` already explain.
    pub request_duration: HistogramVec,
    /// `fhirguard_auth_duration_seconds`: token validation.
    pub auth_duration: Histogram,
    /// `fhirguard_upstream_duration_seconds`: upstream, to the response head.
    pub upstream_duration: Histogram,
    /// `fhirguard_upstream_retries_total{reason}`: requests sent to the upstream a second time,
    /// by [`UPSTREAM_RETRY_REASONS`].
    pub upstream_retries: IntCounterVec,
    /// `fhirguard_auth_failures_total{provider, reason}`
    pub auth_failures: IntCounterVec,
    /// `fhirguard_key_set_fetches_total{provider, result}`
    pub key_set_fetches: IntCounterVec,
    /// `fhirguard_key_set_keys{provider}`
    pub key_set_keys: IntGaugeVec,
    /// `fhirguard_introspections_total{provider, result}`: RFC 7662 introspection requests,
    /// `result` one of active, inactive, error.
    pub introspections: IntCounterVec,
    /// `fhirguard_key_set_last_success_timestamp_seconds{provider}`
    pub key_set_last_success: IntGaugeVec,
    /// `fhirguard_token_cache_hits_total`
    pub token_cache_hits: IntCounter,
    /// `fhirguard_token_cache_misses_total`
    pub token_cache_misses: IntCounter,
    /// `fhirguard_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `fhirguard_config_generation`
    pub config_generation: IntGauge,
    /// `fhirguard_in_flight_requests`
    pub in_flight: IntGauge,
    /// `fhirguard_head_timeouts_total{listener}`: connections closed for want of a request head
    /// in time (from accept: TLS handshake and HTTP/2 preface included).
    pub head_timeouts: IntCounterVec,
    /// `fhirguard_body_read_timeouts_total`: buffered bodies that did not arrive in time (408).
    pub body_read_timeouts: IntCounter,
    /// `fhirguard_buffered_request_bytes`: request-body bytes held in memory right now.
    pub buffered_request_bytes: IntGauge,
    /// `fhirguard_buffer_full_refusals_total`: bodies refused because the buffered-bytes budget
    /// was spent (503).
    pub buffer_full_refusals: IntCounter,
    /// `fhirguard_audit_events_sent_total`: AuditEvents the audit FHIR server stored (its
    /// batch-response entry said 2xx).
    pub audit_events_sent: IntCounter,
    /// `fhirguard_audit_events_dropped_total{reason}`: AuditEvents given up on, by
    /// [`AUDIT_DROP_REASONS`].
    pub audit_events_dropped: IntCounterVec,
    /// `fhirguard_audit_batch_failures_total`: batch POSTs to the audit FHIR server that failed
    /// (each attempt, retried ones included).
    pub audit_batch_failures: IntCounter,
    /// `fhirguard_dpop_replay_cache_entries`: DPoP proofs remembered by this process's replay
    /// cache (RFC 9449 §11.1), set at scrape time.
    pub dpop_replay_cache_entries: IntGauge,
    /// The shared store's calls, fallbacks and the rate limits' refusals (issue 22).
    pub shared: SharedMetrics,
    /// The `request_duration` series, each resolved once on first use (the `requests` series
    /// are cached per client, in the generation's [`ClientLabels`]); also this instance's
    /// identity for those caches.
    series: Arc<RequestSeries>,
}

/// Every outcome label of `fhirguard_requests_total` and `fhirguard_request_duration_seconds`:
/// the one list of them (the README, the dashboard and the alerts name these).
pub const OUTCOMES: [&str; 9] = [
    "allowed",
    "anonymous",
    "unauthenticated",
    "forbidden",
    // Authorization would have refused (403), but the client is in report-only mode
    // (`reportOnly`), so the request was forwarded: a would-be denial.
    "report_only",
    "invalid",
    "unavailable",
    "upstream_error",
    // Over a `rateLimits` entry: answered 429.
    "throttled",
];

/// Every reason label of `fhirguard_audit_events_dropped_total`: the queue was full, the batch
/// could not be delivered after its retries, the server refused the entry, or fhirguard stopped
/// before it was sent.
pub const AUDIT_DROP_REASONS: [&str; 4] = ["queue_full", "send_failed", "rejected", "shutdown"];

/// Every reason label of `fhirguard_upstream_retries_total`: the reused connection was closed
/// before the request was written (any method), or after an idempotent request was written and
/// before any answer, or the HTTP/2 upstream refused the stream (any method).
pub const UPSTREAM_RETRY_REASONS: [&str; 3] = ["unsent", "closed", "refused_stream"];

/// Every listener label of `fhirguard_head_timeouts_total`.
pub const LISTENERS: [&str; 2] = ["proxy", "admin"];

/// Every method label ([`method_label`]).
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// Labelled series resolved once: `with_label_values` hashes the labels and takes a lock, which
/// a request should not pay twice over.
#[derive(Debug, Default)]
struct RequestSeries {
    durations: [OnceLock<Histogram>; OUTCOMES.len()],
}

impl Metrics {
    /// Creates and registers every metric on a new registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter_vec(
            "fhirguard_requests_total",
            "Requests handled by the proxy, by outcome, method and client (a configured client \
             id, 'other' for any other verified token, 'anonymous' without one).",
            &["outcome", "method", "client_id"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "fhirguard_request_duration_seconds",
                "Time from request head to response head, by outcome.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid histogram");
        let auth_duration = Histogram::with_opts(
            HistogramOpts::new(
                "fhirguard_auth_duration_seconds",
                "Time spent validating tokens.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "fhirguard_upstream_duration_seconds",
                "Time from forwarding a request to the upstream's response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        let upstream_retries = counter_vec(
            "fhirguard_upstream_retries_total",
            "Requests sent to the upstream again, by reason (unsent, closed, refused_stream).",
            &["reason"],
        );
        let auth_failures = counter_vec(
            "fhirguard_auth_failures_total",
            "Refused tokens, by identity provider (configured authority, or 'unknown') and reason.",
            &["provider", "reason"],
        );
        let key_set_fetches = counter_vec(
            "fhirguard_key_set_fetches_total",
            "Discovery and key-set fetches, by identity provider and result.",
            &["provider", "result"],
        );
        let introspections = counter_vec(
            "fhirguard_introspections_total",
            "Token introspection requests (RFC 7662), by identity provider and result (active, \
             inactive, error).",
            &["provider", "result"],
        );
        let key_set_keys = gauge_vec(
            "fhirguard_key_set_keys",
            "Usable signing keys held, by identity provider.",
            &["provider"],
        );
        let key_set_last_success = gauge_vec(
            "fhirguard_key_set_last_success_timestamp_seconds",
            "Unix time of the last successful key-set fetch, by identity provider.",
            &["provider"],
        );
        let token_cache_hits = IntCounter::new(
            "fhirguard_token_cache_hits_total",
            "Tokens found in the verified-token cache.",
        )
        .expect("valid counter");
        let token_cache_misses = IntCounter::new(
            "fhirguard_token_cache_misses_total",
            "Tokens not found in the verified-token cache.",
        )
        .expect("valid counter");
        let config_reloads = counter_vec(
            "fhirguard_config_reloads_total",
            "Configuration reloads, by result (success, failure).",
            &["result"],
        );
        let config_generation = IntGauge::new(
            "fhirguard_config_generation",
            "The generation of the configuration in force (1 at start, +1 per successful reload).",
        )
        .expect("valid gauge");
        let in_flight = IntGauge::new(
            "fhirguard_in_flight_requests",
            "Requests being handled right now.",
        )
        .expect("valid gauge");
        let head_timeouts = counter_vec(
            "fhirguard_head_timeouts_total",
            "Connections closed because no request head arrived within limits.headerReadTimeout \
             (from accept, TLS handshake and HTTP/2 preface included), by listener.",
            &["listener"],
        );
        let body_read_timeouts = IntCounter::new(
            "fhirguard_body_read_timeouts_total",
            "Buffered request bodies that did not arrive within limits.bodyReadTimeout (408).",
        )
        .expect("valid counter");
        let buffered_request_bytes = IntGauge::new(
            "fhirguard_buffered_request_bytes",
            "Request-body bytes buffered for inspection right now, across connections.",
        )
        .expect("valid gauge");
        let buffer_full_refusals = IntCounter::new(
            "fhirguard_buffer_full_refusals_total",
            "Request bodies refused because limits.maxBufferedBytes was reached (503).",
        )
        .expect("valid counter");
        let audit_events_sent = IntCounter::new(
            "fhirguard_audit_events_sent_total",
            "AuditEvents stored by the audit FHIR server (audit.fhirServer).",
        )
        .expect("valid counter");
        let audit_events_dropped = counter_vec(
            "fhirguard_audit_events_dropped_total",
            "AuditEvents not stored by the audit FHIR server, by reason (queue_full, send_failed, \
             rejected, shutdown).",
            &["reason"],
        );
        let audit_batch_failures = IntCounter::new(
            "fhirguard_audit_batch_failures_total",
            "Batch POSTs to the audit FHIR server that failed, retried attempts included.",
        )
        .expect("valid counter");
        let dpop_replay_cache_entries = IntGauge::new(
            "fhirguard_dpop_replay_cache_entries",
            "DPoP proofs remembered by this process's replay cache (their jti, until their iat \
             leaves the window).",
        )
        .expect("valid gauge");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "fhirguard_build_info",
                "Always 1; the labels say which build runs.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let collectors: [Box<dyn prometheus::core::Collector>; 24] = [
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(auth_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(auth_failures.clone()),
            Box::new(key_set_fetches.clone()),
            Box::new(key_set_keys.clone()),
            Box::new(introspections.clone()),
            Box::new(key_set_last_success.clone()),
            Box::new(token_cache_hits.clone()),
            Box::new(token_cache_misses.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_generation.clone()),
            Box::new(in_flight.clone()),
            Box::new(head_timeouts.clone()),
            Box::new(body_read_timeouts.clone()),
            Box::new(buffered_request_bytes.clone()),
            Box::new(buffer_full_refusals.clone()),
            Box::new(audit_events_sent.clone()),
            Box::new(audit_events_dropped.clone()),
            Box::new(audit_batch_failures.clone()),
            Box::new(dpop_replay_cache_entries.clone()),
            Box::new(build_info),
        ];
        // Both reload series exist from the start, so `increase()` sees the first failure.
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        for listener in LISTENERS {
            head_timeouts.with_label_values(&[listener]);
        }
        for reason in AUDIT_DROP_REASONS {
            audit_events_dropped.with_label_values(&[reason]);
        }
        for reason in UPSTREAM_RETRY_REASONS {
            upstream_retries.with_label_values(&[reason]);
        }
        for collector in collectors {
            registry.register(collector).expect("unique metric names");
        }
        let shared = SharedMetrics::register(&registry);
        Metrics {
            registry,
            requests,
            request_duration,
            auth_duration,
            upstream_duration,
            upstream_retries,
            auth_failures,
            key_set_fetches,
            key_set_keys,
            introspections,
            key_set_last_success,
            token_cache_hits,
            token_cache_misses,
            config_reloads,
            config_generation,
            in_flight,
            head_timeouts,
            body_read_timeouts,
            buffered_request_bytes,
            buffer_full_refusals,
            audit_events_sent,
            audit_events_dropped,
            audit_batch_failures,
            dpop_replay_cache_entries,
            shared,
            series: Arc::default(),
        }
    }

    /// Counts one finished request and observes its duration. `outcome` is one of [`OUTCOMES`];
    /// `client` comes from the generation the request was decided under
    /// ([`ClientLabels`]). With the series resolved, this is two short scans, a pointer
    /// comparison and two atomic updates: no lock, no allocation.
    pub fn record_request(
        &self,
        outcome: &str,
        method: &http::Method,
        client: ClientLabel<'_>,
        seconds: f64,
    ) {
        let label = method_label(method);
        let outcome_index = OUTCOMES.iter().position(|o| *o == outcome);
        let cached = outcome_index
            .zip(METHODS.iter().position(|m| *m == label))
            .and_then(|(o, m)| client.counter(&self.series, &self.requests, o, m));
        match cached {
            Some(counter) => counter.inc(),
            None => self
                .requests
                .with_label_values(&[outcome, label, client.as_str()])
                .inc(),
        }
        match outcome_index {
            Some(o) => self.series.durations[o]
                .get_or_init(|| self.request_duration.with_label_values(&[outcome]))
                .observe(seconds),
            None => self
                .request_duration
                .with_label_values(&[outcome])
                .observe(seconds),
        }
    }

    /// The registry every metric is on (what `/metrics` renders).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// A bounded method label: the standard methods, else `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_build_info() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["allowed", "GET", "reader"])
            .inc_by(3);
        let text = metrics.render();
        assert!(text.contains(
            "fhirguard_requests_total{client_id=\"reader\",method=\"GET\",outcome=\"allowed\"} 3"
        ));
        assert!(text.contains("fhirguard_build_info{version="));
    }

    #[test]
    fn recorded_requests_land_on_their_labels() {
        let metrics = Metrics::new();
        let clients = ClientLabels::new([["reader"]]);
        let reader = clients.client(Some("reader"));
        metrics.record_request("forbidden", &http::Method::DELETE, reader, 0.002);
        metrics.record_request("forbidden", &http::Method::DELETE, reader, 0.002);
        let brew = http::Method::from_bytes(b"BREW").unwrap();
        metrics.record_request("allowed", &brew, clients.client(Some("x")), 0.5);
        metrics.record_request("report_only", &http::Method::PUT, reader, 0.1);
        let text = metrics.render();
        let requests = "fhirguard_requests_total";
        for line in [
            "{client_id=\"reader\",method=\"DELETE\",outcome=\"forbidden\"} 2",
            "{client_id=\"other\",method=\"other\",outcome=\"allowed\"} 1",
            "{client_id=\"reader\",method=\"PUT\",outcome=\"report_only\"} 1",
        ] {
            assert!(
                text.contains(&format!("{requests}{line}")),
                "{line} in {text}"
            );
        }
        // Sample names built here: the deploy suite reads this file for the registered names.
        let duration = "fhirguard_request_duration_seconds";
        assert!(text.contains(&format!("{duration}_count{{outcome=\"forbidden\"}} 2")));
        assert!(text.contains(&format!("{duration}_sum{{outcome=\"allowed\"}} 0.5")));
        assert!(
            !text.contains("outcome=\"anonymous\""),
            "no series before its first request"
        );
        assert!(
            !text.contains("client_id=\"anonymous\""),
            "no series before its first request"
        );
    }

    /// A table first used by one registry is not used to count into it by another: each
    /// registry gets its own requests.
    #[test]
    fn a_table_shared_by_two_registries_counts_into_each_its_own() {
        let (first, second) = (Metrics::new(), Metrics::new());
        let clients = ClientLabels::none();
        first.record_request("allowed", &http::Method::GET, clients.anonymous(), 0.1);
        second.record_request("allowed", &http::Method::GET, clients.anonymous(), 0.1);
        second.record_request("allowed", &http::Method::GET, clients.anonymous(), 0.1);
        let series =
            "fhirguard_requests_total{client_id=\"anonymous\",method=\"GET\",outcome=\"allowed\"}";
        assert!(first.render().contains(&format!("{series} 1")));
        assert!(second.render().contains(&format!("{series} 2")));
    }

    /// The label set stays bounded: any number of unlisted clients is one `other` series.
    #[test]
    fn unlisted_clients_share_one_series() {
        let metrics = Metrics::new();
        let clients = ClientLabels::new([["reader"]]);
        for n in 0..100 {
            let id = format!("stranger-{n}");
            metrics.record_request(
                "allowed",
                &http::Method::GET,
                clients.client(Some(&id)),
                0.1,
            );
        }
        let text = metrics.render();
        let lines: Vec<_> = text
            .lines()
            .filter(|line| line.starts_with("fhirguard_requests_total{"))
            .collect();
        assert_eq!(
            lines,
            ["fhirguard_requests_total{client_id=\"other\",method=\"GET\",outcome=\"allowed\"} 100"]
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "other"
        );
    }
}
