//! Report-only mode (issue 13 part 1): for the listed clients a request that authorization
//! would refuse (403) is forwarded, answered by the upstream, and counted as a would-be denial;
//! authentication and SMART's compartment filtering are never relaxed, other clients stay
//! enforced, and a reload turns the mode on and off.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::exposition::sum;
use crate::support::fhir_store::Search;
use crate::support::poll::eventually;
use crate::support::stack::{Answer, Guard, Stack};
use crate::support::token::{self, now, TestKey};

const AUDIENCE: &str = "https://fhir.example.org";

fn yaml(stack: &Stack, report_only: &str) -> String {
    let read = r#"["Read"]"#;
    let applications = [
        ("reader", AUDIENCE, read),
        ("enforced", AUDIENCE, read),
        ("patient-app", AUDIENCE, read),
    ];
    (stack.config().with(&format!("reportOnly: {report_only}")))
        .smart(&stack.idp.base_url(), &applications)
        .to_string()
}

fn seed() -> Vec<Value> {
    vec![
        json!({ "resourceType": "Patient", "id": "p1" }),
        json!({ "resourceType": "Observation", "id": "o1", "subject": { "reference": "Patient/p1" } }),
        json!({ "resourceType": "Observation", "id": "o2", "subject": { "reference": "Patient/p2" } }),
    ]
}

/// `method target` with the bearer `token`, through `Proxy::handle` (no socket); a POST
/// carries an Observation.
async fn call(g: &Guard, method: Method, target: &str, token: &str) -> Answer {
    let body = match method {
        Method::POST => Bytes::from(json!({ "resourceType": "Observation" }).to_string()),
        _ => Bytes::new(),
    };
    let headers = [("content-type", "application/fhir+json")];
    g.handle_call(method, target, Some(token), &headers, body)
        .await
}

/// The value of the `fhirguard_requests_total` series of `outcome` and `method` (whatever other
/// labels it carries), summed.
async fn requests(g: &Guard, outcome: &str, method: &str) -> f64 {
    let wanted = [("outcome", outcome), ("method", method)];
    sum(&g.metrics().await, "fhirguard_requests_total", &wanted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn would_be_denials_of_listed_clients_are_forwarded_and_counted_others_enforced() {
    let g = Stack::builder()
        .key(TestKey::ec_p256("report-1"))
        .store(seed(), Search::AllOfType)
        .serve(|stack| yaml(stack, "[reader, patient-app]"))
        .await;
    let Stack {
        idp, key, upstream, ..
    } = &g.stack;
    let system = |client: &str| {
        token::base_claims(&idp.issuer(), AUDIENCE, now())
            .claim("client_id", client)
            .claim("scp", "system/*.*")
            .sign(key)
    };

    // A read-only application's write: forwarded, the upstream's answer, a would-be denial.
    let before = upstream.count();
    let answer = call(&g, Method::POST, "/Observation", &system("reader")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let sent = upstream.since(before);
    assert_eq!(sent.len(), 1, "the write reached the upstream");
    assert_eq!(sent[0].method, Method::POST);
    assert_eq!(requests(&g, "report_only", "POST").await, 1.0);
    assert_eq!(requests(&g, "forbidden", "POST").await, 0.0);

    // The same write by an enforced application: refused, nothing sent.
    let before = upstream.count();
    let answer = call(&g, Method::POST, "/Observation", &system("enforced")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(upstream.count(), before, "nothing forwarded");
    assert_eq!(requests(&g, "forbidden", "POST").await, 1.0);

    // An expired token of a report-only client: still 401.
    let expired = token::base_claims(&idp.issuer(), AUDIENCE, now() - 7200)
        .claim("client_id", "reader")
        .claim("scp", "system/*.*")
        .claim("exp", now() - 3600)
        .sign(key);
    let answer = call(&g, Method::GET, "/Observation", &expired).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);

    // A patient app whose scopes do not grant Observation: the would-be denial is forwarded,
    // confined to the compartment, and its answer filtered by the scopes — nothing of
    // Observation, and nothing of another patient.
    let patient = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("client_id", "patient-app")
        .claim("scp", "patient/Patient.rs")
        .claim("fhirUser", "Patient/p1")
        .sign(key);
    let before = upstream.count();
    let answer = call(&g, Method::GET, "/Observation", &patient).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let bundle: Value = serde_json::from_str(&answer.body).expect("a Bundle");
    assert_eq!(bundle["resourceType"], "Bundle");
    let entries = bundle["entry"].as_array().map_or(0, Vec::len);
    assert_eq!(entries, 0, "filtered: {bundle}");
    let sent = upstream.since(before);
    assert!(
        sent.iter()
            .any(|r| r.target.contains("Patient%2Fp1") || r.target.contains("Patient/p1")),
        "the search went confined to the compartment: {:?}",
        sent.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(requests(&g, "report_only", "GET").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_report_only_on_and_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fhirguard.yaml");
    let g = Stack::builder()
        .key(TestKey::ec_p256("report-2"))
        .store(seed(), Search::AllOfType)
        .config_file(path.clone())
        .serve(|stack| yaml(stack, "false"))
        .await;
    let Stack { idp, key, .. } = &g.stack;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("client_id", "reader")
        .claim("scp", "system/*.*")
        .sign(key);
    let write = || call(&g, Method::POST, "/Observation", &token);
    assert_eq!(write().await.status, StatusCode::FORBIDDEN);

    for (mode, expected) in [
        ("true", StatusCode::CREATED),
        ("false", StatusCode::FORBIDDEN),
    ] {
        std::fs::write(&path, yaml(&g.stack, mode)).unwrap();
        eventually(
            &format!("reportOnly: {mode} in force"),
            Duration::from_secs(10),
            || async { write().await.status == expected },
        )
        .await;
    }
}
