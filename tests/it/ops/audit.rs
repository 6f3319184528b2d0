//! The log run of tests/it/ops.rs: the real binary at debug level between a primary authority and a
//! SMART provider, sent valid and refused tokens — in the header, in the query, in the path — then
//! stopped, and every line it wrote checked for token material and for the audit fields.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use super::served::{config_file, json_lines, Served};
use crate::support::idp::FakeIdp;
use crate::support::stack::{HttpClient, Stack};
use crate::support::token::{self, now, TestKey};

const SMART_AUDIENCE: &str = "https://fhir.example.org/smart";
pub(crate) const FHIR_USER: &str = "https://fhir.example.org/Patient/123";
pub(crate) const REDACTED: &str = "[redacted: holds a token]";
/// An opaque credential sent in query strings: no log line may hold it.
pub(crate) const OPAQUE: &str = "opaque-2YotnFZFEjr1zCsicMWpAA";
/// The search whose parameters stand for patient data.
pub(crate) const SEARCH: &str = "family=Testpatient&birthdate=1970-01-01";

/// The field every audit line carries.
const AUDIT_FIELDS: [&str; 11] = [
    "request_id",
    "method",
    "path",
    "status",
    "outcome",
    "reason",
    "provider",
    "client_id",
    "subject",
    "fhir_user",
    "latency_ms",
];

/// Asserts that no log line holds any secret (a whole token, its payload or its signature).
pub(crate) fn assert_no_secret(lines: &[Value], tokens: &[&str]) {
    let mut secrets: Vec<&str> = Vec::new();
    for token in tokens {
        secrets.push(token);
        secrets.extend(token.split('.').skip(1).filter(|part| part.len() >= 16));
    }
    for line in lines {
        let text = line.to_string();
        for secret in &secrets {
            assert!(
                !text.contains(secret),
                "a log line holds token material {secret:?}: {text}"
            );
        }
    }
}

/// One request of the log run: its request id, target, `Authorization` header, expected status.
struct Probe {
    id: &'static str,
    target: String,
    authorization: Option<String>,
    expect: StatusCode,
}

impl Probe {
    fn new(
        id: &'static str,
        target: &str,
        authorization: Option<String>,
        expect: StatusCode,
    ) -> Probe {
        Probe {
            id,
            target: target.to_owned(),
            authorization,
            expect,
        }
    }
}

/// Runs the binary at debug level (`FHIRGUARD_LOG=debug`) with a primary authority and a SMART
/// provider, sends valid and refused tokens — in the header, in the query, in the path — then
/// stops it and checks every line. Returns the audit lines by request id, and all lines.
pub(crate) async fn audit_run(log_query_strings: bool) -> (HashMap<String, Value>, Vec<Value>) {
    let stack = Stack::start().await;
    let smart_key = TestKey::ec_p256("smart-1");
    let smart = FakeIdp::with_keys(vec![smart_key.jwk()]).await;
    let yaml = format!(
        "{}  smartIdentityProviders:\n    - authority: \"{}\"\n      applications:\n        - clientId: portal\n          audience: \"{SMART_AUDIENCE}\"\n          allowedDataActions: [Read]\n",
        stack.yaml(
            "[Read]",
            &format!("logging: {{level: info, logQueryStrings: {log_query_strings}}}\n")
        ),
        smart.base_url()
    );
    let (_dir, path) = config_file(&yaml);
    let mut served = Served::spawn(&path, "debug");
    let proxy = served.address("proxy").await;
    let admin = served.address("admin").await;
    let client = HttpClient::default();
    client.wait_ready(admin).await;

    let primary = stack.token();
    let smart_token = token::base_claims(&smart.issuer(), SMART_AUDIENCE, now())
        .claim("azp", "portal")
        .claim("scp", "patient/*.read")
        .claim("fhirUser", FHIR_USER)
        .sign(&smart_key);
    let expired = stack.expired_token();
    let other = token::base_claims(&stack.idp.issuer(), "https://fhir.example.org", now())
        .claim("sub", "subject-2")
        .sign(&stack.key);
    let (signed_part, _) = primary.rsplit_once('.').unwrap();
    let (_, other_signature) = other.rsplit_once('.').unwrap();
    let bad_signature = format!("{signed_part}.{other_signature}");

    let bearer = |token: &str| Some(format!("Bearer {token}"));
    let probes = [
        Probe::new(
            "search",
            &format!("/Patient?{SEARCH}"),
            bearer(&primary),
            StatusCode::OK,
        ),
        Probe::new(
            "smart",
            "/Patient/123",
            bearer(&smart_token),
            StatusCode::OK,
        ),
        Probe::new(
            "expired",
            "/Patient/1",
            bearer(&expired),
            StatusCode::UNAUTHORIZED,
        ),
        Probe::new(
            "signature",
            "/Patient/1",
            bearer(&bad_signature),
            StatusCode::UNAUTHORIZED,
        ),
        Probe::new(
            "basic",
            "/Patient/1",
            Some(format!("Basic {primary}")),
            StatusCode::UNAUTHORIZED,
        ),
        Probe::new(
            "in-query",
            &format!("/Patient?{SEARCH}&access_token={primary}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        Probe::new(
            "opaque-in-query",
            &format!("/Patient?{SEARCH}&access_token={OPAQUE}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        Probe::new(
            "opaque-in-anonymous-query",
            &format!("/metadata?ACCESS%5FTOKEN={OPAQUE}&access_token="),
            None,
            StatusCode::BAD_REQUEST,
        ),
        Probe::new(
            "credential-in-query",
            &format!("/Patient?{SEARCH}&client_secret={OPAQUE}&apiKey={OPAQUE}"),
            bearer(&primary),
            StatusCode::OK,
        ),
        Probe::new(
            "in-path",
            &format!("/Patient/{primary}"),
            bearer(&primary),
            StatusCode::BAD_REQUEST,
        ),
        Probe::new(
            "in-bad-path",
            &format!("/Patient/{primary}/%2F"),
            None,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for probe in &probes {
        let mut headers = vec![("x-request-id", probe.id)];
        if let Some(authorization) = &probe.authorization {
            headers.push(("authorization", authorization));
        }
        let (status, body) = client
            .send("GET", proxy, &probe.target, &headers)
            .await
            .expect("answered");
        assert_eq!(status, probe.expect, "{}: {body}", probe.id);
    }

    served.signal("TERM");
    let exit = served.exit_within(Duration::from_secs(30)).await;
    assert!(exit.success(), "exit status {exit}:\n{}", served.log());
    let lines = json_lines(&served.all_lines());
    assert!(
        lines.iter().any(|line| line["level"] == "DEBUG"),
        "the run logged at debug level"
    );
    assert_no_secret(
        &lines,
        &[
            &primary,
            &smart_token,
            &expired,
            &other,
            &bad_signature,
            OPAQUE,
        ],
    );

    let audit: Vec<&Value> = lines
        .iter()
        .filter(|line| line["target"] == "fhirguard::audit")
        .collect();
    assert_eq!(
        audit.len(),
        probes.len(),
        "one audit line per request: {audit:#?}"
    );
    for line in &audit {
        for field in AUDIT_FIELDS {
            assert!(
                line.get(field).is_some(),
                "audit line without {field}: {line}"
            );
        }
    }
    let audit = audit
        .into_iter()
        .map(|line| {
            (
                line["request_id"].as_str().unwrap().to_owned(),
                line.clone(),
            )
        })
        .collect();
    (audit, lines)
}
