//! Report-only mode (issue 13 part 1): for the listed clients a request that authorization
//! would refuse (403) is forwarded, answered by the upstream, and counted as a would-be denial;
//! authentication and SMART's compartment filtering are never relaxed, other clients stay
//! enforced, and a reload turns the mode on and off.

use std::time::Duration;

use bytes::Bytes;
use fhirguard::app::StartOptions;
use fhirguard::config::Config;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::support::fhir_store::Search;
use crate::support::idp::FakeIdp;
use crate::support::poll::eventually;
use crate::support::stack::{start_ready, start_ready_with};
use crate::support::token::{self, now, TestKey};
use crate::support::upstream::FakeFhir;

const AUDIENCE: &str = "https://fhir.example.org";

fn yaml(idp: &FakeIdp, upstream: &FakeFhir, report_only: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
adminListen: "127.0.0.1:0"
upstream: "{upstream}"
allowHttpAuthorities: true
reportOnly: {report_only}
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "{authority}"
      applications:
        - clientId: "reader"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read"]
        - clientId: "enforced"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read"]
        - clientId: "patient-app"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read"]
"#,
        upstream = upstream.base_url("/fhir"),
        authority = idp.base_url(),
    )
}

fn seed() -> Vec<Value> {
    vec![
        json!({ "resourceType": "Patient", "id": "p1" }),
        json!({ "resourceType": "Observation", "id": "o1", "subject": { "reference": "Patient/p1" } }),
        json!({ "resourceType": "Observation", "id": "o2", "subject": { "reference": "Patient/p2" } }),
    ]
}

struct Answer {
    status: StatusCode,
    body: String,
}

async fn call(address: std::net::SocketAddr, method: Method, target: &str, token: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = match method {
        Method::POST => Bytes::from(json!({ "resourceType": "Observation" }).to_string()),
        _ => Bytes::new(),
    };
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{address}{target}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/fhir+json")
        .body(Full::new(body))
        .unwrap();
    let response = client.request(request).await.expect("an answer");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The value of the `fhirguard_requests_total` series of `outcome` and `method` (whatever other
/// labels it carries), summed.
async fn requests(admin: std::net::SocketAddr, outcome: &str, method: &str) -> f64 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri = format!("http://{admin}/metrics");
    let response = client.get(uri.parse().unwrap()).await.expect("metrics");
    let text = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|line| line.starts_with("fhirguard_requests_total{"))
        .filter(|line| line.contains(&format!("outcome=\"{outcome}\"")))
        .filter(|line| line.contains(&format!("method=\"{method}\"")))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn would_be_denials_of_listed_clients_are_forwarded_and_counted_others_enforced() {
    let key = TestKey::ec_p256("report-1");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let upstream = FakeFhir::store(seed(), Search::AllOfType).await;
    let text = yaml(&idp, &upstream, "[reader, patient-app]");
    let running = start_ready(Config::parse(&text).expect("config")).await;
    let address = running.proxy_address;
    let system = |client: &str| {
        token::base_claims(&idp.issuer(), AUDIENCE, now())
            .claim("client_id", client)
            .claim("scp", "system/*.*")
            .sign(&key)
    };

    // A read-only application's write: forwarded, the upstream's answer, a would-be denial.
    let before = upstream.count();
    let answer = call(address, Method::POST, "/Observation", &system("reader")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let sent = upstream.since(before);
    assert_eq!(sent.len(), 1, "the write reached the upstream");
    assert_eq!(sent[0].method, Method::POST);
    assert_eq!(
        requests(running.admin_address, "report_only", "POST").await,
        1.0
    );
    assert_eq!(
        requests(running.admin_address, "forbidden", "POST").await,
        0.0
    );

    // The same write by an enforced application: refused, nothing sent.
    let before = upstream.count();
    let answer = call(address, Method::POST, "/Observation", &system("enforced")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(upstream.count(), before, "nothing forwarded");
    assert_eq!(
        requests(running.admin_address, "forbidden", "POST").await,
        1.0
    );

    // An expired token of a report-only client: still 401.
    let expired = token::base_claims(&idp.issuer(), AUDIENCE, now() - 7200)
        .claim("client_id", "reader")
        .claim("scp", "system/*.*")
        .claim("exp", now() - 3600)
        .sign(&key);
    let answer = call(address, Method::GET, "/Observation", &expired).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);

    // A patient app whose scopes do not grant Observation: the would-be denial is forwarded,
    // confined to the compartment, and its answer filtered by the scopes — nothing of
    // Observation, and nothing of another patient.
    let patient = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("client_id", "patient-app")
        .claim("scp", "patient/Patient.rs")
        .claim("fhirUser", "Patient/p1")
        .sign(&key);
    let before = upstream.count();
    let answer = call(address, Method::GET, "/Observation", &patient).await;
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
    assert_eq!(
        requests(running.admin_address, "report_only", "GET").await,
        1.0
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_report_only_on_and_off() {
    let key = TestKey::ec_p256("report-2");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let upstream = FakeFhir::store(seed(), Search::AllOfType).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fhirguard.yaml");
    std::fs::write(&path, yaml(&idp, &upstream, "false")).unwrap();
    let config = Config::load(&path).expect("config");
    let options = StartOptions {
        config_path: Some(path.clone()),
        grace: Duration::from_secs(5),
    };
    let running = start_ready_with(config, options).await;
    let address = running.proxy_address;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("client_id", "reader")
        .claim("scp", "system/*.*")
        .sign(&key);
    let write = || call(address, Method::POST, "/Observation", &token);
    assert_eq!(write().await.status, StatusCode::FORBIDDEN);

    for (mode, expected) in [
        ("true", StatusCode::CREATED),
        ("false", StatusCode::FORBIDDEN),
    ] {
        std::fs::write(&path, yaml(&idp, &upstream, mode)).unwrap();
        eventually(
            &format!("reportOnly: {mode} in force"),
            Duration::from_secs(10),
            || async { write().await.status == expected },
        )
        .await;
    }
    running.stop().await;
}
