//! Reading fhirguard's Prometheus exposition: the value of one series, every series of a family,
//! and the metric families a real [`Metrics`] registers — learned from its registry's output,
//! never from the source text.

use std::collections::{BTreeMap, BTreeSet};

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

/// Every series of the family `name`: its labels (`label` → value) and its value. Label values
/// are taken as written (fhirguard's hold no quotes or backslashes).
pub fn series(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .filter_map(|pair| {
                    let (label, value) = pair.split_once("=\"")?;
                    Some((label.to_owned(), value.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// The sum of the series of `name` whose labels include every `(label, value)` of `wanted`:
/// 0 when there is none.
pub fn sum(text: &str, name: &str, wanted: &[(&str, &str)]) -> f64 {
    series(text, name)
        .into_iter()
        .filter(|(labels, _)| {
            wanted
                .iter()
                .all(|(label, value)| labels.get(*label).map(String::as_str) == Some(*value))
        })
        .map(|(_, value)| value)
        .sum()
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
        .shared
        .rate_limited
        .with_label_values(&["other", "replica", "throttled"]);
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
