//! Reading fhirguard's Prometheus exposition: the value of one series, and the metric families
//! a real [`Metrics`] registers — learned from its registry's output, never from the source text.

use std::collections::BTreeSet;

use fhirguard::metrics::Metrics;
use prometheus::proto::MetricType;

/// The value of one series (`name{label="v",…}` exactly as exposed, labels sorted), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

/// The name and type (`counter`, `gauge`, `histogram`) of every family a fresh [`Metrics`]
/// registers. A labelled family renders only once it has a series, so each is given one first.
pub fn registered_families() -> BTreeSet<(String, String)> {
    let metrics = Metrics::new();
    metrics
        .requests
        .with_label_values(&["allowed", "GET", "anonymous"]);
    metrics.request_duration.with_label_values(&["allowed"]);
    metrics.auth_failures.with_label_values(&["p", "expired"]);
    metrics.key_set_fetches.with_label_values(&["p", "ok"]);
    metrics.key_set_keys.with_label_values(&["p"]);
    metrics.key_set_last_success.with_label_values(&["p"]);
    metrics.config_reloads.with_label_values(&["success"]);
    metrics.head_timeouts.with_label_values(&["proxy"]);
    metrics
        .registry()
        .gather()
        .iter()
        .map(|family| {
            let kind = match family.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
            };
            (family.name().to_owned(), kind.to_owned())
        })
        .collect()
}

/// The names of [`registered_families`].
pub fn registered_names() -> BTreeSet<String> {
    registered_families()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}
