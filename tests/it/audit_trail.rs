//! The audit trail from the request path (issue 13 part 3): with `audit.fhirServer`, each
//! decision fhirguard makes reaches the audit server as an `AuditEvent` in a batch bundle — an
//! allowed read, a refused write, a report-only write — and never the token.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::poll::eventually;
use crate::support::stack::Stack;
use crate::support::token::{self, now, TestKey};
use crate::support::upstream::FakeFhir;

const AUDIENCE: &str = "https://fhir.example.org";

/// The AuditEvents the audit server has received, from the batch bundles POSTed to it.
fn received(audit: &FakeFhir) -> Vec<Value> {
    audit
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .flat_map(|bundle| bundle["entry"].as_array().cloned().unwrap_or_default())
        .map(|entry| entry["resource"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_decision_reaches_the_audit_server_as_an_audit_event() {
    let audit = FakeFhir::start().await;
    let g = Stack::builder()
        .key(TestKey::ec_p256("audit-1"))
        .serve(|stack| {
            let audit_server = format!(
                r#"reportOnly: [lenient]
audit:
  format: fhir
  fhirServer: "{}"
  flushInterval: 100ms"#,
                audit.base_url("/audit")
            );
            let applications = [
                ("reader", AUDIENCE, r#"["Read"]"#),
                ("lenient", AUDIENCE, r#"["Read"]"#),
            ];
            (stack.config().with(&audit_server))
                .smart(&stack.idp.base_url(), &applications)
                .to_string()
        })
        .await;
    let token = |client: &str| {
        token::base_claims(&g.stack.idp.issuer(), AUDIENCE, now())
            .claim("client_id", client)
            .claim("scp", "system/*.*")
            .sign(&g.stack.key)
    };
    let mut tokens = Vec::new();
    for (method, target, who, expected) in [
        (Method::GET, "/Patient/1", "reader", StatusCode::OK),
        (
            Method::DELETE,
            "/Patient/1",
            "reader",
            StatusCode::FORBIDDEN,
        ),
        (Method::DELETE, "/Patient/2", "lenient", StatusCode::OK),
    ] {
        let bearer = token(who);
        let answer = g
            .handle_call(method.clone(), target, Some(&bearer), &[], Bytes::new())
            .await;
        assert_eq!(answer.status, expected, "{method} {target} by {who}");
        tokens.push(bearer);
    }
    eventually(
        "three AuditEvents at the audit server",
        Duration::from_secs(10),
        || {
            let count = received(&audit).len();
            async move { count >= 3 }
        },
    )
    .await;
    let events = received(&audit);
    let posted = audit.requests();
    assert!(
        posted
            .iter()
            .all(|r| r.target == "/audit" || r.target == "/audit/"),
        "{:?}",
        posted.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    let by_entity = |what: &str| {
        events
            .iter()
            .find(|e| e.to_string().contains(what))
            .unwrap_or_else(|| panic!("no AuditEvent about {what}: {events:#?}"))
    };
    // BALP: `rest` events; read → R, delete → D; outcome 0 (success) or 4 (refused).
    let read = by_entity("Patient/1\"");
    assert_eq!(read["resourceType"], "AuditEvent");
    assert_eq!(read["type"]["code"], "rest");
    let refused = events
        .iter()
        .find(|e| e["action"] == "D" && e["outcome"] == "4")
        .unwrap_or_else(|| panic!("no refused delete: {events:#?}"));
    assert!(refused["outcomeDesc"]
        .as_str()
        .unwrap_or("")
        .contains("requires"));
    let lenient = by_entity("Patient/2");
    assert_eq!(lenient["action"], "D");
    assert!(
        lenient["outcomeDesc"]
            .as_str()
            .unwrap_or("")
            .contains("report only"),
        "{lenient}"
    );
    let all = serde_json::to_string(&events).unwrap();
    for bearer in &tokens {
        assert!(
            !all.contains(bearer.as_str()),
            "a token reached the audit trail"
        );
    }
    g.running.stop().await;
}
