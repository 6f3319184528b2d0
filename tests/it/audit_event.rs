//! `audit.format: fhir` and `audit.fhirServer` against real FHIR software (issue 13 "Tests"):
//!
//! - the AuditEvents fhirguard writes for a set of decisions (allowed read, refused write, search
//!   with its query, anonymous, upstream 5xx, report-only would-be denial, …) each pass Medplum's
//!   validator (npm `@medplum/core` `validateResource` over the R4 definitions,
//!   `tests/medplum/validate-audit-event.mjs`);
//! - the queue to `audit.fhirServer` stores its batches in Medplum's FHIR server
//!   (`tests/medplum/fhir-server.mjs`), read back with a search;
//! - a full queue drops and counts instead of blocking, and shutdown counts what it could not send.
//!
//! Needs Node.js and `npm ci --prefix tests/medplum` (run here when `node_modules` is missing).
//! Without `node` the Medplum tests are skipped, except under CI (env `CI` set), where that
//! fails them.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fhirguard::audit::{audit_event, AuditRecord, Auditor, Lines, Outcome, Source};
use fhirguard::auth::Principal;
use fhirguard::config::{Config, ProviderKind};
use fhirguard::fhir::bundle::BundleKind;
use fhirguard::fhir::{classify, FhirRequest};
use fhirguard::metrics::Metrics;
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::medplum::{medplum_dir, prepared, start_medplum};
use crate::support::client::HttpClient;
use crate::support::poll::eventually;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl";

fn principal(fhir_user: Option<&str>, subject: Option<&str>) -> Principal {
    Principal {
        provider: ProviderKind::Smart { index: 0 },
        authority: "https://idp.example.org/realms/r".into(),
        issuer: "https://idp.example.org/realms/r".into(),
        subject: subject.map(str::to_owned),
        object_id: None,
        client_id: Some("ward-app".into()),
        client_claim: Some("azp"),
        application: Some(0),
        audience: vec!["https://fhir.example.org".into()],
        fhir_user: fhir_user.map(str::to_owned),
        launch_patient: None,
        scopes: vec!["user/*.read".into()],
        roles: Vec::new(),
        groups: Vec::new(),
        expires_at: 0,
        key_id: Some("k1".into()),
        confirmation: None,
    }
}

fn classified(method: &Method, path: &str, query: Option<&str>) -> FhirRequest {
    classify(method, path, query, &HeaderMap::new()).expect("classifies")
}

/// One decision of the set: what the pipeline would hand the auditor.
struct Decision {
    name: &'static str,
    method: Method,
    path: &'static str,
    query: Option<&'static str>,
    request: Option<FhirRequest>,
    bundle: Option<BundleKind>,
    outcome: Outcome<'static>,
    status: u16,
    principal: Option<Principal>,
}

impl Decision {
    fn new(name: &'static str, method: Method, path: &'static str) -> Decision {
        let request = Some(classified(&method, path, None));
        Decision {
            name,
            method,
            path,
            query: None,
            request,
            bundle: None,
            outcome: Outcome::Allowed,
            status: 200,
            principal: Some(principal(
                Some("https://fhir.example.org/Practitioner/doc"),
                Some("user-42"),
            )),
        }
    }

    fn record(&self) -> AuditRecord<'_> {
        AuditRecord {
            request_id: self.name,
            method: &self.method,
            path: self.path,
            query: self.query,
            request: self.request.as_ref(),
            bundle: self.bundle,
            outcome: self.outcome,
            status: self.status,
            hint: "",
            principal: self.principal.as_ref(),
            peer: Some(SocketAddr::from(([192, 0, 2, 7], 51_000))),
            time: SystemTime::now(),
            latency: Duration::from_millis(4),
        }
    }
}

/// The decisions of issue 13's list, and a few more interactions.
fn decisions() -> Vec<Decision> {
    let search = Decision {
        query: Some("patient=p1&code=http://loinc.org|1234-5"),
        request: Some(classified(
            &Method::GET,
            "/Observation",
            Some("patient=p1&code=http://loinc.org|1234-5"),
        )),
        ..Decision::new("search-with-query", Method::GET, "/Observation")
    };
    vec![
        Decision::new("allowed-read", Method::GET, "/Patient/p1"),
        Decision {
            outcome: Outcome::Refused {
                outcome: "forbidden",
                reason: "The token grants Read; the request needs Write",
            },
            status: 403,
            ..Decision::new("refused-write", Method::PUT, "/Observation/o1")
        },
        search,
        Decision {
            principal: None,
            outcome: Outcome::Anonymous,
            ..Decision::new("anonymous", Method::GET, "/metadata")
        },
        Decision {
            outcome: Outcome::Refused {
                outcome: "upstream_error",
                reason: "The FHIR server could not be reached",
            },
            status: 502,
            ..Decision::new("upstream-5xx", Method::GET, "/Observation/o2")
        },
        Decision {
            outcome: Outcome::WouldBeRefused {
                outcome: "report_only",
                status: 403,
                reason: "The token grants Read; the request needs Delete",
            },
            status: 204,
            ..Decision::new("would-be-denial", Method::DELETE, "/Observation/o1")
        },
        Decision {
            request: None,
            principal: None,
            outcome: Outcome::Refused {
                outcome: "unauthenticated",
                reason: "A token in the URL is refused",
            },
            status: 401,
            query: Some("access_token=eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl"),
            ..Decision::new("token-in-url", Method::GET, "/Patient")
        },
        Decision {
            principal: Some(principal(None, None)),
            status: 201,
            ..Decision::new("system-create", Method::POST, "/Observation")
        },
        Decision {
            bundle: Some(BundleKind::Transaction),
            ..Decision::new("transaction", Method::POST, "/")
        },
        Decision::new("vread", Method::GET, "/Patient/p1/_history/2"),
        Decision::new("compartment-search", Method::GET, "/Patient/p1/Observation"),
        Decision::new("patch", Method::PATCH, "/Patient/p1"),
        Decision::new("operation", Method::GET, "/Patient/p1/$everything"),
        Decision::new("history-type", Method::GET, "/Observation/_history"),
    ]
}

const SOURCE: Source<'static> = Source {
    observer: "fhirguard-test",
    server: "https://fhir.example.org",
};

/// The events as `audit.format: fhir` writes them, with `logging.logQueryStrings: true`.
fn written_events() -> Vec<Value> {
    decisions()
        .iter()
        .map(|decision| {
            let mut scratch = String::new();
            audit_event(&decision.record().shown(true, &mut scratch), &SOURCE)
        })
        .collect()
}

#[test]
fn every_audit_event_passes_medplums_validator() {
    let events = written_events();
    for event in &events {
        assert!(!event.to_string().contains(TOKEN), "{event}");
    }
    if prepared().is_none() {
        return;
    }
    let mut child = Command::new("node")
        .arg("validate-audit-event.mjs")
        .current_dir(medplum_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for event in &events {
            writeln!(stdin, "{event}").expect("write");
        }
    }
    let output = child.wait_with_output().expect("validator ends");
    let verdicts: Vec<Value> = output
        .stdout
        .lines()
        .map(|line| serde_json::from_str(&line.expect("utf-8")).expect("JSON"))
        .collect();
    assert_eq!(verdicts.len(), events.len(), "one verdict per event");
    let names: Vec<&str> = decisions().iter().map(|d| d.name).collect();
    for ((name, event), verdict) in names.iter().zip(&events).zip(&verdicts) {
        assert_eq!(
            verdict["ok"], true,
            "{name}: {}\n{event:#}",
            verdict["issues"]
        );
    }
    assert!(output.status.success());
}

fn config(audit: &str) -> Config {
    let text = format!(
        "upstream: \"http://127.0.0.1:8081/fhir\"\n\
         authenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  \
         audience: \"https://fhir.example.org\"\n\
         logging:\n  logQueryStrings: true\n\
         audit:\n{audit}"
    );
    Config::parse(&text).expect("config")
}

fn dropped(metrics: &Metrics, reason: &str) -> u64 {
    metrics
        .audit_events_dropped
        .with_label_values(&[reason])
        .get()
}

async fn get_json(url: &str) -> Value {
    let answer = HttpClient::default().get_url(url, &[]).await;
    assert!(answer.status.is_success(), "{}", answer.status);
    answer.json()
}

/// Polls `done` until it holds or `limit` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_stored_in_a_real_fhir_server() {
    if prepared().is_none() {
        return;
    }
    let (_server, port) = start_medplum();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let config = config(&format!(
        "  format: fhir\n  observer: gw-test\n  fhirServer: \"{base}\"\n  batchSize: 4\n  \
         flushInterval: 200ms\n"
    ));
    let metrics = Metrics::new();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let auditor = Auditor::start(&config, &metrics)
        .expect("starts")
        .with_lines(Lines::Memory(Arc::clone(&lines)));

    let decisions = decisions();
    // Two events: fewer than a batch, so the flush interval sends them.
    for decision in &decisions[..2] {
        auditor.record(&config, &decision.record());
    }
    let sent = || metrics.audit_events_sent.get();
    let partial = || async { sent() == 2 };
    eventually(
        "the flush interval sends a partial batch",
        Duration::from_secs(10),
        partial,
    )
    .await;
    // The rest: full batches of 4 and a remainder, which shutdown flushes.
    for decision in &decisions[2..] {
        auditor.record(&config, &decision.record());
    }
    auditor.shutdown(Duration::from_secs(10)).await;
    let total = u64::try_from(decisions.len()).unwrap();
    assert_eq!(sent(), total);
    for reason in ["queue_full", "send_failed", "rejected", "shutdown"] {
        assert_eq!(dropped(&metrics, reason), 0, "{reason}");
    }
    assert_eq!(metrics.audit_batch_failures.get(), 0);
    assert_eq!(
        lines.lock().unwrap().len(),
        decisions.len(),
        "one line each"
    );

    let found = get_json(&format!("{base}/AuditEvent?_count=100")).await;
    let stored: Vec<&Value> = found["entry"]
        .as_array()
        .expect("a searchset")
        .iter()
        .map(|entry| &entry["resource"])
        .collect();
    let mut request_ids: Vec<&str> = stored
        .iter()
        .filter_map(|event| event["entity"][0]["what"]["identifier"]["value"].as_str())
        .collect();
    request_ids.sort_unstable();
    let mut expected: Vec<&str> = decisions.iter().map(|d| d.name).collect();
    expected.sort_unstable();
    assert_eq!(request_ids, expected, "every event stored once");
    for event in &stored {
        assert_eq!(event["source"]["observer"]["display"], "gw-test");
        assert!(!event.to_string().contains(TOKEN));
    }

    // After shutdown nothing is queued any more: a record is dropped and counted.
    auditor.record(&config, &decisions[0].record());
    assert_eq!(dropped(&metrics, "shutdown"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    // An audit server that accepts connections and never answers: the first POST hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.push(socket);
        }
    });
    let config = config(&format!(
        "  fhirServer: \"http://{address}/fhir\"\n  queueCapacity: 2\n  batchSize: 1\n  \
         flushInterval: 10ms\n  sendTimeout: 30s\n"
    ));
    let metrics = Metrics::new();
    let auditor = Auditor::start(&config, &metrics).expect("starts");
    let decisions = decisions();
    let record = decisions[0].record();

    let started = Instant::now();
    for _ in 0..200 {
        auditor.record(&config, &record);
    }
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_secs(2),
        "recording never waits for the audit server: {spent:?}"
    );
    // At most the queue (2) and the batch being sent (1) are held; the rest is dropped.
    let full = dropped(&metrics, "queue_full");
    assert!((197..=198).contains(&full), "queue_full {full}");

    // The server never answers: shutdown gives up after its bound and counts what it held.
    let started = Instant::now();
    auditor.shutdown(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(metrics.audit_events_sent.get(), 0);
    assert_eq!(
        full + dropped(&metrics, "shutdown"),
        200,
        "every event counted"
    );
    held.abort();
}
