//! The auditor: which lines a configuration writes, and what they may show.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use http::Method;
use serde_json::Value;

use super::*;

const BASE: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\n\
    publicBaseUrl: \"https://fhir.example.org/r4\"\n\
    authenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  \
    audience: \"https://fhir.example.org\"\n";

fn config(extra: &str) -> Config {
    Config::parse(&format!("{BASE}{extra}")).expect("config")
}

fn record<'a>(method: &'a Method, query: Option<&'a str>) -> AuditRecord<'a> {
    AuditRecord {
        request_id: "req-7",
        method,
        path: "/Observation",
        query,
        request: None,
        bundle: None,
        outcome: Outcome::Allowed,
        status: 200,
        hint: "",
        principal: None,
        peer: None,
        time: UNIX_EPOCH,
        latency: Duration::ZERO,
    }
}

fn auditor(config: &Config) -> (Auditor, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let auditor = Auditor::start(config, &Metrics::new())
        .expect("starts")
        .with_lines(Lines::Memory(Arc::clone(&lines)));
    (auditor, lines)
}

#[test]
fn the_json_format_writes_no_audit_event() {
    let config = config("");
    let (auditor, lines) = auditor(&config);
    auditor.record(&config, &record(&Method::GET, Some("code=x")));
    assert!(lines.lock().unwrap().is_empty());
}

#[test]
fn the_fhir_format_writes_one_audit_event_per_record() {
    let config = config("audit:\n  format: fhir\n  observer: gw-1\n");
    let (auditor, lines) = auditor(&config);
    auditor.record(&config, &record(&Method::GET, Some("code=x")));
    auditor.record(&config, &record(&Method::GET, None));
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 2);
    for line in lines.iter() {
        assert!(!line.contains('\n'));
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["source"]["observer"]["display"], "gw-1");
        assert_eq!(
            event["agent"][1]["who"]["identifier"]["value"], "https://fhir.example.org/r4",
            "the server the client addressed"
        );
    }
    // logQueryStrings is off: the query stays out.
    assert!(!lines[0].contains("\"query\""), "{}", lines[0]);
}

#[test]
fn the_query_is_written_only_with_log_query_strings() {
    let config = config("audit:\n  format: fhir\nlogging:\n  logQueryStrings: true\n");
    let (auditor, lines) = auditor(&config);
    auditor.record(&config, &record(&Method::GET, Some("code=x")));
    let lines = lines.lock().unwrap();
    let event: Value = serde_json::from_str(&lines[0]).unwrap();
    let query = event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["query"].as_str());
    assert_eq!(query, Some("Y29kZT14"), "base64 of code=x");
}

#[test]
fn the_observer_defaults_to_the_host_name() {
    let config = config("audit:\n  format: fhir\n");
    let (auditor, _) = auditor(&config);
    assert!(!auditor.observer.is_empty());
}

#[test]
fn a_server_needs_a_runtime_and_never_panics_without_one() {
    let config = config("audit:\n  fhirServer: \"http://127.0.0.1:9/fhir\"\n");
    let error = Auditor::start(&config, &Metrics::new()).unwrap_err();
    assert!(matches!(error, AuditError::NoRuntime), "{error}");
}
