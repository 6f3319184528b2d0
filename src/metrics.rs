//! Prometheus metrics on an owned registry (SPEC §6): no global registry, so tests can build many
//! instances. Labels are bounded: outcomes, methods, reasons, configured authorities and
//! configured client ids only ([`ClientLabels`]) — never a subject, patient id, or a client id
//! taken from a token as-is.

mod clients;
mod families;
mod shared;

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
    TextEncoder,
};

pub use clients::{ClientLabel, ClientLabels, ANONYMOUS_CLIENT, OTHER_CLIENT};
use families::*;
pub use shared::{SharedMetrics, FALLBACK_USES, STORE_OPERATIONS, STORE_RESULTS, THROTTLE_RESULTS};

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
    /// Creates and registers every metric on a new registry (the `families` module), its
    /// fixed-label series included.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let on = Registrar::on(&registry);
        on.build_info();
        let metrics = Metrics {
            // The requests.
            requests: on.counter_vec(&REQUESTS),
            request_duration: on.histogram_vec(&REQUEST_DURATION),
            in_flight: on.gauge(&IN_FLIGHT),
            // The upstream.
            upstream_duration: on.histogram(&UPSTREAM_DURATION),
            upstream_retries: on.counter_vec(&UPSTREAM_RETRIES),
            // Authentication and key sets.
            auth_duration: on.histogram(&AUTH_DURATION),
            auth_failures: on.counter_vec(&AUTH_FAILURES),
            token_cache_hits: on.counter(&TOKEN_CACHE_HITS),
            token_cache_misses: on.counter(&TOKEN_CACHE_MISSES),
            introspections: on.counter_vec(&INTROSPECTIONS),
            dpop_replay_cache_entries: on.gauge(&DPOP_REPLAY_CACHE_ENTRIES),
            key_set_fetches: on.counter_vec(&KEY_SET_FETCHES),
            key_set_keys: on.gauge_vec(&KEY_SET_KEYS),
            key_set_last_success: on.gauge_vec(&KEY_SET_LAST_SUCCESS),
            // Configuration.
            config_reloads: on.counter_vec(&CONFIG_RELOADS),
            config_generation: on.gauge(&CONFIG_GENERATION),
            // Connections and bodies.
            head_timeouts: on.counter_vec(&HEAD_TIMEOUTS),
            body_read_timeouts: on.counter(&BODY_READ_TIMEOUTS),
            buffered_request_bytes: on.gauge(&BUFFERED_REQUEST_BYTES),
            buffer_full_refusals: on.counter(&BUFFER_FULL_REFUSALS),
            // Audit.
            audit_events_sent: on.counter(&AUDIT_EVENTS_SENT),
            audit_events_dropped: on.counter_vec(&AUDIT_EVENTS_DROPPED),
            audit_batch_failures: on.counter(&AUDIT_BATCH_FAILURES),
            // The shared store and the rate limits.
            shared: SharedMetrics::register(&registry),
            series: Arc::default(),
            registry,
        };
        metrics.open_fixed_series();
        metrics
    }

    /// The series of fixed label values exist from the start, at 0, so that `increase()` sees
    /// the first event (a first reload failure, a first timeout, a first drop or retry).
    fn open_fixed_series(&self) {
        for result in ["success", "failure"] {
            self.config_reloads.with_label_values(&[result]);
        }
        for listener in LISTENERS {
            self.head_timeouts.with_label_values(&[listener]);
        }
        for reason in AUDIT_DROP_REASONS {
            self.audit_events_dropped.with_label_values(&[reason]);
        }
        for reason in UPSTREAM_RETRY_REASONS {
            self.upstream_retries.with_label_values(&[reason]);
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
