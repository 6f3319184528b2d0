//! The metric families of [`super::Metrics`]: each one's name, help and labels, by group (the
//! requests, the upstream, authentication and key sets, configuration, connections and bodies,
//! audit), and the [`Registrar`] that creates a family and registers it in one step.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Buckets for request latencies, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One metric family: its name, help text and label names.
#[derive(Debug)]
pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

// The requests.

pub(super) const REQUESTS: Family = Family {
    name: "fhirguard_requests_total",
    help: "Requests handled by the proxy, by outcome, method and client (a configured client id, \
           'other' for any other verified token, 'anonymous' without one).",
    labels: &["outcome", "method", "client_id"],
};
pub(super) const REQUEST_DURATION: Family = Family {
    name: "fhirguard_request_duration_seconds",
    help: "Time from request head to response head, by outcome.",
    labels: &["outcome"],
};
pub(super) const IN_FLIGHT: Family = Family {
    name: "fhirguard_in_flight_requests",
    help: "Requests being handled right now.",
    labels: &[],
};

// The upstream.

pub(super) const UPSTREAM_DURATION: Family = Family {
    name: "fhirguard_upstream_duration_seconds",
    help: "Time from forwarding a request to the upstream's response head.",
    labels: &[],
};
pub(super) const UPSTREAM_RETRIES: Family = Family {
    name: "fhirguard_upstream_retries_total",
    help: "Requests sent to the upstream again, by reason (unsent, closed, refused_stream).",
    labels: &["reason"],
};

// Authentication and key sets.

pub(super) const AUTH_DURATION: Family = Family {
    name: "fhirguard_auth_duration_seconds",
    help: "Time spent validating tokens.",
    labels: &[],
};
pub(super) const AUTH_FAILURES: Family = Family {
    name: "fhirguard_auth_failures_total",
    help: "Refused tokens, by identity provider (configured authority, or 'unknown') and reason.",
    labels: &["provider", "reason"],
};
pub(super) const TOKEN_CACHE_HITS: Family = Family {
    name: "fhirguard_token_cache_hits_total",
    help: "Tokens found in the verified-token cache.",
    labels: &[],
};
pub(super) const TOKEN_CACHE_MISSES: Family = Family {
    name: "fhirguard_token_cache_misses_total",
    help: "Tokens not found in the verified-token cache.",
    labels: &[],
};
pub(super) const INTROSPECTIONS: Family = Family {
    name: "fhirguard_introspections_total",
    help: "Token introspection requests (RFC 7662), by identity provider and result (active, \
           inactive, error).",
    labels: &["provider", "result"],
};
pub(super) const DPOP_REPLAY_CACHE_ENTRIES: Family = Family {
    name: "fhirguard_dpop_replay_cache_entries",
    help: "DPoP proofs remembered by this process's replay cache (their jti, until their iat \
           leaves the window).",
    labels: &[],
};
pub(super) const KEY_SET_FETCHES: Family = Family {
    name: "fhirguard_key_set_fetches_total",
    help: "Discovery and key-set fetches, by identity provider and result.",
    labels: &["provider", "result"],
};
pub(super) const KEY_SET_KEYS: Family = Family {
    name: "fhirguard_key_set_keys",
    help: "Usable signing keys held, by identity provider.",
    labels: &["provider"],
};
pub(super) const KEY_SET_LAST_SUCCESS: Family = Family {
    name: "fhirguard_key_set_last_success_timestamp_seconds",
    help: "Unix time of the last successful key-set fetch, by identity provider.",
    labels: &["provider"],
};

// Configuration.

pub(super) const CONFIG_RELOADS: Family = Family {
    name: "fhirguard_config_reloads_total",
    help: "Configuration reloads, by result (success, failure).",
    labels: &["result"],
};
pub(super) const CONFIG_GENERATION: Family = Family {
    name: "fhirguard_config_generation",
    help: "The generation of the configuration in force (1 at start, +1 per successful reload).",
    labels: &[],
};
const BUILD_INFO: Family = Family {
    name: "fhirguard_build_info",
    help: "Always 1; the labels say which build runs.",
    labels: &["version"],
};

// Connections and bodies.

pub(super) const HEAD_TIMEOUTS: Family = Family {
    name: "fhirguard_head_timeouts_total",
    help: "Connections closed because no request head arrived within limits.headerReadTimeout \
           (from accept, TLS handshake and HTTP/2 preface included), by listener.",
    labels: &["listener"],
};
pub(super) const BODY_READ_TIMEOUTS: Family = Family {
    name: "fhirguard_body_read_timeouts_total",
    help: "Buffered request bodies that did not arrive within limits.bodyReadTimeout (408).",
    labels: &[],
};
pub(super) const BUFFERED_REQUEST_BYTES: Family = Family {
    name: "fhirguard_buffered_request_bytes",
    help: "Request-body bytes buffered for inspection right now, across connections.",
    labels: &[],
};
pub(super) const BUFFER_FULL_REFUSALS: Family = Family {
    name: "fhirguard_buffer_full_refusals_total",
    help: "Request bodies refused because limits.maxBufferedBytes was reached (503).",
    labels: &[],
};

// Audit.

pub(super) const AUDIT_EVENTS_SENT: Family = Family {
    name: "fhirguard_audit_events_sent_total",
    help: "AuditEvents stored by the audit FHIR server (audit.fhirServer).",
    labels: &[],
};
pub(super) const AUDIT_EVENTS_DROPPED: Family = Family {
    name: "fhirguard_audit_events_dropped_total",
    help: "AuditEvents not stored by the audit FHIR server, by reason (queue_full, send_failed, \
           rejected, shutdown).",
    labels: &["reason"],
};
pub(super) const AUDIT_BATCH_FAILURES: Family = Family {
    name: "fhirguard_audit_batch_failures_total",
    help: "Batch POSTs to the audit FHIR server that failed, retried attempts included.",
    labels: &[],
};

/// Creates each metric of a [`Family`] and registers it on the registry, so that no metric is
/// made without being exported. A family's name is unique on the registry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Registrar<'r> {
    registry: &'r Registry,
}

impl<'r> Registrar<'r> {
    pub(super) fn on(registry: &'r Registry) -> Registrar<'r> {
        Registrar { registry }
    }

    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.registry
            .register(Box::new(metric.clone()))
            .expect("unique metric names");
        metric
    }

    pub(super) fn counter(&self, family: &Family) -> IntCounter {
        self.register(IntCounter::with_opts(opts(family)).expect("valid counter"))
    }

    pub(super) fn counter_vec(&self, family: &Family) -> IntCounterVec {
        let counter = IntCounterVec::new(opts(family), family.labels).expect("valid counter");
        self.register(counter)
    }

    pub(super) fn gauge(&self, family: &Family) -> IntGauge {
        self.register(IntGauge::with_opts(opts(family)).expect("valid gauge"))
    }

    pub(super) fn gauge_vec(&self, family: &Family) -> IntGaugeVec {
        self.register(IntGaugeVec::new(opts(family), family.labels).expect("valid gauge"))
    }

    /// A latency histogram ([`LATENCY_BUCKETS`]).
    pub(super) fn histogram(&self, family: &Family) -> Histogram {
        let histogram = Histogram::with_opts(latency(family)).expect("valid histogram");
        self.register(histogram)
    }

    /// Latency histograms ([`LATENCY_BUCKETS`]) by the family's labels.
    pub(super) fn histogram_vec(&self, family: &Family) -> HistogramVec {
        let histograms = HistogramVec::new(latency(family), family.labels);
        self.register(histograms.expect("valid histogram"))
    }

    /// `fhirguard_build_info{version} 1`: which build runs.
    pub(super) fn build_info(&self) {
        self.gauge_vec(&BUILD_INFO)
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
    }
}

fn opts(family: &Family) -> Opts {
    Opts::new(family.name, family.help)
}

fn latency(family: &Family) -> HistogramOpts {
    HistogramOpts::new(family.name, family.help).buckets(LATENCY_BUCKETS.to_vec())
}
