//! The metrics side: every metric and label value that the alert rules and the dashboard name is
//! in fhirguard's `/metrics` after traffic that exercises every outcome, refused tokens, key-set
//! fetches (good and failing) and reloads (good and bad).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fhirguard::metrics::OUTCOMES;
use fhirguard::reload::{ReloadOutcome, Reloader};
use http::{Method, StatusCode};
use serde_json::json;

use super::artifacts::{deploy_dir, read};
use crate::support::exposition::registered_names;
use crate::support::idp::FakeIdp;
use crate::support::poll::eventually;
use crate::support::stack::{Provider, Stack};
use crate::support::token::{self, now, TestKey};

/// Every `fhirguard_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("fhirguard_") {
        let boundary = rest[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The values given to `label` in selectors: `label="a"`, `label=~"a|b"`, `label!="a"`.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let text = text.replace("\\\"", "\"");
    let mut values = BTreeSet::new();
    for op in ["=\"", "=~\"", "!=\"", "!~\""] {
        let needle = format!("{label}{op}");
        for (index, _) in text.match_indices(&needle) {
            if text[..index].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let value = &text[index + needle.len()..];
            let value = &value[..value.find('"').unwrap()];
            values.extend(value.split('|').map(str::to_owned));
        }
    }
    values
}

#[test]
fn names_and_label_values_are_found_in_rule_text() {
    let text = r#"sum(rate(fhirguard_requests_total{outcome=~"allowed|anonymous"}[5m])) / fhirguard_x_bucket{result="ok",reason!="keys_unavailable"} Fhirguard_Alert xfhirguard_no"#;
    assert_eq!(
        metric_names(text),
        BTreeSet::from([
            "fhirguard_requests_total".to_owned(),
            "fhirguard_x_bucket".to_owned()
        ])
    );
    assert_eq!(
        label_values(text, "outcome"),
        BTreeSet::from(["allowed".to_owned(), "anonymous".to_owned()])
    );
    assert_eq!(
        label_values(text, "reason"),
        BTreeSet::from(["keys_unavailable".to_owned()])
    );
    assert!(label_values(text, "method").is_empty());
}

/// Outcomes the alerts or the dashboard name that [`metrics_after_traffic`] cannot produce: they
/// need only be outcomes fhirguard has. The traffic produces every outcome.
const NOT_IN_THIS_TRAFFIC: [&str; 0] = [];

/// fhirguard after traffic of every outcome, refused tokens, key-set fetches (good and failing)
/// and reloads (good and bad): its `/metrics` text.
async fn metrics_after_traffic() -> String {
    let down_key = TestKey::rsa("down-1");
    let mut down = FakeIdp::with_keys(vec![down_key.jwk()]).await;
    down.stop();
    let audience = "https://fhir.example.org";
    // The provider that is down keeps fhirguard unready: it is polled for a valid token below.
    let guard = Stack::builder()
        .key(TestKey::rsa("primary-1"))
        .smart(TestKey::ec_p256("smart-1"))
        .upstream_settings("responseTimeout: \"300ms\"")
        .grace(Duration::from_secs(1))
        .unready()
        .serve(|stack| {
            let extra = r#"keySets: { retryInterval: "100ms", fetchTimeout: "1s" }
reportOnly: [backend-service]
rateLimits: [{ clientIds: [backend-service, bulk], requestsPerSecond: 1, burst: 2 }]"#;
            let read = r#"["Read"]"#;
            (stack.config().with(extra))
                .primary(&stack.idp.base_url(), audience)
                .smart(&stack.smart().idp.base_url(), &[("reader", audience, read)])
                .smart(&down.base_url(), &[("down-app", audience, read)])
                .to_string()
        })
        .await;
    let Stack {
        idp: primary,
        key: primary_key,
        upstream,
        ..
    } = &guard.stack;
    let Provider {
        idp: smart,
        key: smart_key,
    } = guard.stack.smart();
    let send = |method: Method, target: String, token: Option<String>| {
        let guard = &guard;
        async move {
            guard
                .call(method, &target, token.as_deref(), &[], Bytes::new())
                .await
                .status
        }
    };
    let smart_token = |client: &str, exp: u64| {
        token::base_claims(&smart.issuer(), audience, now())
            .claim("azp", client)
            .claim("scp", "system/*.read")
            .claim("fhirUser", "https://fhir.example.org/Patient/123")
            .claim("exp", exp)
            .sign(smart_key)
    };
    let reader = smart_token("reader", now() + 600);
    eventually(
        "fhirguard allows a valid token",
        Duration::from_secs(10),
        || async {
            send(Method::GET, "/Patient/1".into(), Some(reader.clone())).await == StatusCode::OK
        },
    )
    .await;
    let primary_token = token::base_claims(&primary.issuer(), audience, now())
        .claim("appid", "backend-service")
        .claim("roles", json!(["FHIR Data Reader"]))
        .sign(primary_key);
    // A reader's delete, forwarded: `backend-service` is in report-only mode.
    let would_be = (
        Method::DELETE,
        "/Patient/2".to_owned(),
        Some(primary_token.clone()),
        StatusCode::OK,
    );
    let down_token = token::base_claims(&down.base_url(), audience, now())
        .claim("azp", "down-app")
        .sign(&down_key);
    let expected = [
        (
            Method::GET,
            "/Patient/1".to_owned(),
            Some(primary_token),
            StatusCode::OK,
        ),
        (Method::GET, "/metadata".to_owned(), None, StatusCode::OK),
        (
            Method::GET,
            "/Patient/1".to_owned(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/Patient/1".to_owned(),
            Some(smart_token("reader", now() - 3600)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::DELETE,
            "/Patient/1".to_owned(),
            Some(reader.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            format!("/Patient?access_token={reader}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/Patient/1".to_owned(),
            Some(down_token),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        would_be,
    ];
    for (method, target, token, status) in expected {
        assert_eq!(
            send(method.clone(), target.clone(), token).await,
            status,
            "{method} {target}"
        );
    }
    // Over the rate limit (burst 2, then one a second): `bulk` is throttled (429), the
    // report-only `backend-service` (two requests above) is forwarded, would-be throttled.
    let token_of = |client: &str| {
        token::base_claims(&primary.issuer(), audience, now())
            .claim("appid", client)
            .claim("roles", json!(["FHIR Data Reader"]))
            .sign(primary_key)
    };
    let (bulk, backend) = (token_of("bulk"), token_of("backend-service"));
    let mut statuses = BTreeSet::new();
    for _ in 0..4 {
        statuses.insert(send(Method::GET, "/Patient/1".into(), Some(bulk.clone())).await);
        let forwarded = send(Method::GET, "/Patient/1".into(), Some(backend.clone())).await;
        assert_eq!(forwarded, StatusCode::OK);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    upstream.set_delay(Duration::from_secs(2));
    assert_eq!(
        send(Method::GET, "/Patient/1".into(), Some(reader.clone())).await,
        StatusCode::GATEWAY_TIMEOUT
    );
    upstream.set_delay(Duration::ZERO);

    let (dir, yaml) = (tempfile::tempdir().unwrap(), &guard.yaml);
    let path = dir.path().join("config.yaml");
    let mut reloader = Reloader::new(path.clone(), Arc::clone(&guard.running.proxy));
    std::fs::write(&path, format!("{yaml}clockSkew: \"60s\"\n")).unwrap();
    assert!(matches!(
        reloader.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    std::fs::write(&path, format!("{yaml}noSuchKey: true\n")).unwrap();
    assert!(matches!(
        reloader.reload().await,
        ReloadOutcome::Failed { .. }
    ));

    let text = guard.metrics().await;
    guard.running.stop().await;
    text
}

#[tokio::test]
async fn every_metric_in_the_alerts_and_the_dashboard_is_exported() {
    let exported = metrics_after_traffic().await;
    // Families by `# TYPE`, and the sample names (histograms: _bucket, _sum, _count).
    let families: BTreeMap<String, String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    let samples: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l[..l.find(['{', ' ']).unwrap()].to_owned())
        .collect();
    // Every metric a real `Metrics` registers shows up after this traffic.
    let registered = registered_names();
    assert_eq!(
        families.keys().cloned().collect::<BTreeSet<_>>(),
        registered,
        "{exported}"
    );
    for (family, kind) in &families {
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                assert!(
                    samples.contains(&format!("{family}{suffix}")),
                    "{family}{suffix}"
                );
            }
        }
    }

    let alerts = read(&deploy_dir().join("prometheus/alerts.yaml"));
    let dashboard = read(&deploy_dir().join("grafana/fhirguard.json"));
    for (file, text) in [("alerts.yaml", &alerts), ("fhirguard.json", &dashboard)] {
        let named = metric_names(text);
        assert!(named.len() >= 5, "{file} names metrics");
        for name in &named {
            assert!(
                samples.contains(name) || families.contains_key(name),
                "{file}: {name} is not exported"
            );
        }
        for label in ["outcome", "result", "reason", "method", "client_id"] {
            let exported_values = label_values(&exported, label);
            for value in label_values(text, label) {
                // A dashboard variable (`$client_id`) stands for exported values.
                if value.starts_with('$') {
                    continue;
                }
                if label == "outcome" && NOT_IN_THIS_TRAFFIC.contains(&value.as_str()) {
                    assert!(OUTCOMES.contains(&value.as_str()), "{file}: {value}");
                    continue;
                }
                assert!(
                    exported_values.contains(&value),
                    "{file}: {label}=\"{value}\" never exported"
                );
            }
        }
    }
    // Each alert the issues ask for is there; issue 13's per-client figures too.
    assert!(alerts.contains("- alert: FhirguardReportOnlyWouldDeny"));
    assert!(label_values(&alerts, "outcome").contains("report_only"));
    let variables = serde_json::from_str::<serde_json::Value>(&dashboard).unwrap()["templating"]
        ["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| variable["name"].as_str().unwrap().to_owned())
        .collect::<BTreeSet<_>>();
    assert!(variables.contains("client_id"), "{variables:?}");
    for by_client in [
        "sum by (client_id) (rate(fhirguard_requests_total{",
        "sum by (client_id, outcome) (rate(fhirguard_requests_total{",
    ] {
        assert!(
            dashboard.contains(by_client),
            "the dashboard has {by_client}…"
        );
    }
    assert!(label_values(&dashboard, "outcome").contains("report_only"));
    for metric in [
        "fhirguard_key_set_fetches_total",
        "fhirguard_key_set_keys",
        "fhirguard_auth_failures_total",
        "fhirguard_config_reloads_total",
        "fhirguard_requests_total",
        "fhirguard_request_duration_seconds_bucket",
    ] {
        assert!(
            metric_names(&alerts).contains(metric),
            "alerts.yaml uses {metric}"
        );
    }
}
