//! Per-client rate limits on one replica (`rateLimits`, `scope: replica`, issue 22): a client
//! over its burst is answered 429 with an `OperationOutcome` (`throttled`), `Retry-After` and the
//! IETF `RateLimit` / `RateLimit-Policy` fields, and counted per client; a report-only client
//! over the same limit is forwarded and counted as would-be throttled; a client no entry names is
//! never limited; a reload applies new limits. (The cluster scope, with a real `redis-server`, is
//! `shared_state`'s.)

use std::sync::Arc;

use fhirguard::reload::{ReloadOutcome, Reloader};
use http::StatusCode;
use serde_json::json;

use crate::support::exposition::sum;
use crate::support::stack::{Guard, Stack, AUDIENCE, ROLE};
use crate::support::token::{base_claims, now};

/// A token of `client` carrying the role.
fn token(guard: &Guard, client: &str) -> String {
    base_claims(&guard.stack.idp.issuer(), AUDIENCE, now())
        .claim("appid", client)
        .claim("roles", json!([ROLE]))
        .sign(&guard.stack.key)
}

/// The statuses of `count` requests of `client`, sent one after the other.
async fn statuses(guard: &Guard, client: &str, count: usize) -> Vec<u16> {
    let token = token(guard, client);
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(guard.get("/Patient", Some(&token)).await.status.as_u16());
    }
    statuses
}

#[tokio::test]
async fn a_client_over_its_limit_is_throttled_and_a_report_only_one_counted() {
    // One request a second after a burst of 2: the requests below take milliseconds, so at most
    // one more is let through by the refill if the machine stalls for a second.
    let limits = "reportOnly: [watcher]\n\
                  rateLimits:\n  - {clientIds: [bulk, watcher], requestsPerSecond: 1, burst: 2}\n";
    let guard = Stack::builder()
        .serve(|stack| stack.yaml("[Read]", limits))
        .await;

    let bulk = statuses(&guard, "bulk", 6).await;
    assert_eq!(bulk[..2], [200, 200], "{bulk:?}");
    let throttled = bulk.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 3, "{bulk:?}");
    let answer = guard.get("/Patient", Some(&token(&guard, "bulk"))).await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.body
    );
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(
        answer.header("ratelimit-policy"),
        Some("\"client\";q=2;w=2")
    );
    assert_eq!(answer.header("ratelimit"), Some("\"client\";r=0;t=1"));
    let outcome = answer.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "throttled");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("1 requests per second (burst 2)"),
        "{outcome}"
    );

    // Report-only: forwarded, counted as would-be throttled under its own label.
    let watcher = statuses(&guard, "watcher", 6).await;
    assert_eq!(watcher, [200; 6]);
    // Not named by the entry: never limited.
    assert_eq!(statuses(&guard, "other-app", 6).await, [200; 6]);

    let metrics = guard.metrics().await;
    let counted = |client: &str, result: &str| {
        sum(
            &metrics,
            "fhirguard_rate_limited_total",
            &[
                ("client_id", client),
                ("scope", "replica"),
                ("result", result),
            ],
        )
    };
    // `bulk` is not a configured client: its label is `other`.
    assert_eq!(counted("other", "throttled"), (throttled + 1) as f64);
    assert!(counted("watcher", "would_be_throttled") >= 3.0, "{metrics}");
    assert_eq!(counted("watcher", "throttled"), 0.0);
    let outcome = [("outcome", "throttled")];
    assert_eq!(
        sum(&metrics, "fhirguard_requests_total", &outcome),
        (throttled + 1) as f64
    );
    guard.running.stop().await;
}

/// `rateLimits` follows a reload: a client throttled under one generation is not under the next,
/// whose limits are other.
#[tokio::test]
async fn a_reload_applies_new_limits() {
    let before = "rateLimits:\n  - {clientIds: all, requestsPerSecond: 1, burst: 1}\n";
    let guard = Stack::builder()
        .serve(|stack| stack.yaml("[Read]", before))
        .await;
    let limited = statuses(&guard, "bulk", 4).await;
    assert!(limited.contains(&429), "{limited:?}");

    let after = guard.stack.yaml(
        "[Read]",
        "rateLimits:\n  - {clientIds: [someone-else], requestsPerSecond: 1, burst: 1}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, after).unwrap();
    let mut reloader = Reloader::new(path, Arc::clone(&guard.running.proxy));
    assert!(matches!(
        reloader.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(statuses(&guard, "bulk", 4).await, [200; 4]);
    guard.running.stop().await;
}
