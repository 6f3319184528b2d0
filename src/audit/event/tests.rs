//! Table tests of the AuditEvent builder: every interaction's subtype and action, the outcome
//! codes, the agents and entities, and that no token reaches the event.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use super::super::{AuditRecord, Outcome};
use super::*;
use crate::auth::Principal;
use crate::config::ProviderKind;
use crate::fhir::classify;

const SOURCE: Source<'static> = Source {
    observer: "gw-1",
    server: "https://fhir.example.org",
};

pub(crate) fn principal(fhir_user: Option<&str>, subject: Option<&str>) -> Principal {
    Principal {
        provider: ProviderKind::Smart { index: 0 },
        authority: "https://idp.example.org".into(),
        issuer: "https://idp.example.org".into(),
        subject: subject.map(str::to_owned),
        object_id: None,
        client_id: Some("reader-app".into()),
        client_claim: Some("azp"),
        application: Some(0),
        audience: vec!["https://fhir.example.org".into()],
        fhir_user: fhir_user.map(str::to_owned),
        launch_patient: None,
        scopes: vec!["patient/*.read".into()],
        roles: Vec::new(),
        groups: Vec::new(),
        expires_at: 0,
        key_id: Some("k1".into()),
        confirmation: None,
    }
}

fn record<'a>(
    method: &'a Method,
    request: Option<&'a FhirRequest>,
    principal: Option<&'a Principal>,
) -> AuditRecord<'a> {
    AuditRecord {
        request_id: "req-1",
        method,
        path: "/",
        query: None,
        request,
        bundle: None,
        outcome: Outcome::Allowed,
        status: 200,
        hint: "",
        principal,
        peer: Some(SocketAddr::from(([10, 1, 2, 3], 50_123))),
        time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        latency: Duration::from_millis(3),
    }
}

fn classified(method: &Method, path: &str, query: Option<&str>) -> FhirRequest {
    let mut headers = HeaderMap::new();
    if path == "/Patient" && method == Method::POST && query == Some("if-none-exist") {
        headers.insert("if-none-exist", HeaderValue::from_static("identifier=x|1"));
        return classify(method, path, None, &headers).expect("classifies");
    }
    classify(method, path, query, &headers).expect("classifies")
}

fn subtype(event: &Value) -> Option<&str> {
    event["subtype"][0]["code"].as_str()
}

/// Method, path, query, expected subtype code, expected action.
type Case = (
    Method,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

#[test]
fn every_interaction_has_its_subtype_and_action() {
    let cases: &[Case] = &[
        (Method::GET, "/metadata", None, Some("capabilities"), "R"),
        (Method::GET, "/Patient/p1", None, Some("read"), "R"),
        (
            Method::GET,
            "/Patient/p1/_history/2",
            None,
            Some("vread"),
            "R",
        ),
        (
            Method::GET,
            "/Patient/p1/_history",
            None,
            Some("history-instance"),
            "R",
        ),
        (
            Method::GET,
            "/Patient/_history",
            None,
            Some("history-type"),
            "E",
        ),
        (Method::GET, "/_history", None, Some("history-system"), "E"),
        (
            Method::GET,
            "/Observation",
            Some("code=x"),
            Some("search-type"),
            "E",
        ),
        (
            Method::POST,
            "/Observation/_search",
            None,
            Some("search-type"),
            "E",
        ),
        (
            Method::GET,
            "/",
            Some("_type=Patient"),
            Some("search-system"),
            "E",
        ),
        (
            Method::GET,
            "/Patient/p1/Observation",
            None,
            Some("search"),
            "E",
        ),
        (Method::POST, "/Patient", None, Some("create"), "C"),
        (
            Method::POST,
            "/Patient",
            Some("if-none-exist"),
            Some("create"),
            "C",
        ),
        (Method::PUT, "/Patient/p1", None, Some("update"), "U"),
        (
            Method::PUT,
            "/Patient",
            Some("identifier=x|1"),
            Some("update"),
            "U",
        ),
        (Method::PATCH, "/Patient/p1", None, Some("patch"), "U"),
        (Method::DELETE, "/Patient/p1", None, Some("delete"), "D"),
        (
            Method::DELETE,
            "/Patient",
            Some("identifier=x|1"),
            Some("delete"),
            "D",
        ),
        (Method::POST, "/", None, None, "E"),
        (
            Method::GET,
            "/Patient/p1/$everything",
            None,
            Some("operation"),
            "E",
        ),
        (Method::POST, "/$export", None, Some("operation"), "E"),
    ];
    for (method, path, query, code, action) in cases {
        let request = classified(method, path, *query);
        let event = audit_event(&record(method, Some(&request), None), &SOURCE);
        assert_eq!(subtype(&event), *code, "{method} {path}");
        assert_eq!(event["action"], *action, "{method} {path}");
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["type"]["system"], EVENT_TYPE);
        if code.is_some() {
            assert_eq!(event["subtype"][0]["system"], RESTFUL_INTERACTION);
        }
    }
}

#[test]
fn a_bundle_is_a_batch_or_a_transaction_once_read() {
    let request = classified(&Method::POST, "/", None);
    for (kind, code) in [
        (BundleKind::Batch, "batch"),
        (BundleKind::Transaction, "transaction"),
    ] {
        let record = AuditRecord {
            bundle: Some(kind),
            ..record(&Method::POST, Some(&request), None)
        };
        assert_eq!(subtype(&audit_event(&record, &SOURCE)), Some(code));
    }
}

#[test]
fn unclassified_requests_take_the_action_of_their_method() {
    for (method, action) in [
        (Method::GET, "R"),
        (Method::HEAD, "R"),
        (Method::POST, "E"),
        (Method::PUT, "U"),
        (Method::PATCH, "U"),
        (Method::DELETE, "D"),
    ] {
        let event = audit_event(&record(&method, None, None), &SOURCE);
        assert_eq!(event["action"], action, "{method}");
        assert!(event.get("subtype").is_none(), "{method}");
    }
}

#[test]
fn outcome_codes_follow_the_status_sent() {
    let method = Method::GET;
    let cases = [
        (Outcome::Allowed, 200, "0", None),
        (Outcome::Anonymous, 304, "0", None),
        (
            Outcome::Allowed,
            404,
            "4",
            Some("the FHIR server answered 404"),
        ),
        (
            Outcome::Refused {
                outcome: "forbidden",
                reason: "step 8: Read is not granted",
            },
            403,
            "4",
            Some("step 8: Read is not granted"),
        ),
        (
            Outcome::Refused {
                outcome: "unauthenticated",
                reason: "The token expired",
            },
            401,
            "4",
            Some("The token expired"),
        ),
        (
            Outcome::Refused {
                outcome: "upstream_error",
                reason: "",
            },
            502,
            "8",
            Some("refused: 502"),
        ),
        (
            Outcome::WouldBeRefused {
                outcome: "report_only_forbidden",
                status: 403,
                reason: "Write is not granted",
            },
            201,
            "0",
            Some("report only: would have been refused with 403: Write is not granted"),
        ),
        (
            Outcome::WouldBeRefused {
                outcome: "report_only_forbidden",
                status: 403,
                reason: "Write is not granted",
            },
            500,
            "8",
            Some(
                "report only: would have been refused with 403: Write is not granted; \
                 the FHIR server answered 500",
            ),
        ),
    ];
    for (outcome, status, code, description) in cases {
        let record = AuditRecord {
            outcome,
            status,
            ..record(&method, None, None)
        };
        let event = audit_event(&record, &SOURCE);
        assert_eq!(event["outcome"], code, "{outcome:?} {status}");
        assert_eq!(
            event["outcomeDesc"].as_str(),
            description,
            "{outcome:?} {status}"
        );
    }
}

#[test]
fn recorded_is_an_instant_to_the_millisecond() {
    let event = audit_event(&record(&Method::GET, None, None), &SOURCE);
    assert_eq!(event["recorded"], "2023-11-14T22:13:20.123Z");
}

/// The agent whose type has `code`.
fn agent<'a>(event: &'a Value, code: &str) -> Option<&'a Value> {
    event["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"]["coding"][0]["code"] == code)
}

#[test]
fn a_read_names_the_client_the_server_and_the_user() {
    let principal = principal(
        Some("https://fhir.example.org/Practitioner/doc"),
        Some("user-42"),
    );
    let request = classified(&Method::GET, "/Observation/o1", None);
    let event = audit_event(
        &record(&Method::GET, Some(&request), Some(&principal)),
        &SOURCE,
    );
    let agents = event["agent"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    // BALP Read: the client is the destination of the data, the server its source.
    let client = agent(&event, "110152").expect("client");
    assert_eq!(client["type"]["coding"][0]["system"], DICOM);
    assert_eq!(client["who"]["identifier"]["value"], "reader-app");
    assert_eq!(
        client["who"]["identifier"]["system"],
        "https://idp.example.org"
    );
    assert_eq!(client["requestor"], false);
    assert_eq!(client["network"]["address"], "10.1.2.3");
    assert_eq!(client["network"]["type"], "2");
    let server = agent(&event, "110153").expect("server");
    assert_eq!(
        server["who"]["identifier"]["value"],
        "https://fhir.example.org"
    );
    assert_eq!(server["requestor"], false);
    let user = agent(&event, "IRCP").expect("user");
    assert_eq!(user["requestor"], true);
    assert_eq!(
        user["who"]["reference"],
        "https://fhir.example.org/Practitioner/doc"
    );
    assert_eq!(user["who"]["identifier"]["value"], "user-42");
    assert!(
        user.get("network").is_none(),
        "BALP: users are not network devices"
    );

    assert_eq!(event["source"]["observer"]["identifier"]["value"], "gw-1");
    assert_eq!(event["source"]["type"][0]["code"], "4");
    assert_eq!(event["source"]["type"][0]["system"], SOURCE_TYPE);
}

#[test]
fn a_write_reverses_the_roles_and_makes_the_user_its_author() {
    let principal = principal(None, Some("user-42"));
    let request = classified(&Method::PUT, "/Observation/o1", None);
    let event = audit_event(
        &record(&Method::PUT, Some(&request), Some(&principal)),
        &SOURCE,
    );
    let client = agent(&event, "110153").expect("client is the source");
    assert_eq!(client["who"]["identifier"]["value"], "reader-app");
    let user = agent(&event, "AUT").expect("user is the author");
    assert!(user["who"].get("reference").is_none());
    assert_eq!(user["who"]["identifier"]["value"], "user-42");
}

#[test]
fn without_a_user_the_application_is_the_requestor() {
    let principal = principal(None, None);
    let event = audit_event(&record(&Method::GET, None, Some(&principal)), &SOURCE);
    let agents = event["agent"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "client and server");
    assert_eq!(agents[0]["requestor"], true);

    let anonymous = audit_event(&record(&Method::GET, None, None), &SOURCE);
    assert_eq!(anonymous["agent"][0]["who"]["display"], "anonymous");
    assert_eq!(anonymous["agent"][0]["requestor"], true);
}

/// The entity whose role has `code`.
fn entity<'a>(event: &'a Value, code: &str) -> Option<&'a Value> {
    event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"]["code"] == code)
}

#[test]
fn entities_name_the_request_the_resource_and_the_patient() {
    let request = classified(&Method::GET, "/Observation/o1/_history/3", None);
    let event = audit_event(&record(&Method::GET, Some(&request), None), &SOURCE);
    let transaction = &event["entity"][0];
    assert_eq!(transaction["type"]["code"], "XrequestId");
    assert_eq!(transaction["what"]["identifier"]["value"], "req-1");
    let data = entity(&event, "4").expect("domain resource");
    assert_eq!(data["what"]["reference"], "Observation/o1/_history/3");
    assert_eq!(data["type"]["code"], "2");
    assert!(entity(&event, "1").is_none(), "no patient named");

    let request = classified(&Method::GET, "/Patient/p1/Observation", None);
    let event = audit_event(&record(&Method::GET, Some(&request), None), &SOURCE);
    assert_eq!(entity(&event, "4").unwrap()["what"]["type"], "Observation");
    let patient = entity(&event, "1").expect("patient");
    assert_eq!(patient["what"]["reference"], "Patient/p1");
    assert_eq!(patient["type"]["code"], "1");

    let request = classified(&Method::GET, "/Patient/p1", None);
    let event = audit_event(&record(&Method::GET, Some(&request), None), &SOURCE);
    assert_eq!(
        entity(&event, "1").unwrap()["what"]["reference"],
        "Patient/p1"
    );
}

#[test]
fn the_query_is_base64_and_only_when_given() {
    let request = classified(&Method::GET, "/Observation", Some("patient=p1&code=x"));
    let without = audit_event(&record(&Method::GET, Some(&request), None), &SOURCE);
    assert!(entity(&without, "24").is_none());
    assert!(!without.to_string().contains("patient=p1"));

    let with = AuditRecord {
        query: Some("patient=p1&code=x"),
        ..record(&Method::GET, Some(&request), None)
    };
    let event = audit_event(&with, &SOURCE);
    let query = entity(&event, "24").expect("query entity");
    assert_eq!(query["query"], "cGF0aWVudD1wMSZjb2RlPXg=");
    assert!(query.get("what").is_none(), "BALP Query: what 0..0");
}

#[test]
fn no_token_reaches_the_event() {
    // A token in the URL (refused at step 2) is redacted before the event is built.
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl";
    let path = format!("/Patient/{token}");
    let query = format!("access_token={token}");
    let principal = principal(Some("Practitioner/doc"), Some("user-42"));
    let method = Method::GET;
    let raw = AuditRecord {
        path: &path,
        query: Some(&query),
        outcome: Outcome::Refused {
            outcome: "unauthenticated",
            reason: "A token in the URL is refused",
        },
        status: 401,
        ..record(&method, None, Some(&principal))
    };
    for log_query in [false, true] {
        let mut scratch = String::new();
        let shown = raw.shown(log_query, &mut scratch);
        let event = audit_event(&shown, &SOURCE).to_string();
        assert!(!event.contains(token), "{event}");
        assert!(!event.contains("eyJ"), "{event}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(&query);
        assert!(!event.contains(&encoded), "{event}");
        assert_eq!(shown.path, super::super::REDACTED);
        assert_eq!(shown.query.is_some(), log_query);
    }
}

#[test]
fn credential_parameters_are_redacted_in_the_event() {
    // Issue 20 item 4: an opaque token (refused by hygiene) and any parameter named as a
    // credential keep their place in the query, never their value.
    let query = "family=x&access_token=opaque-2YotnFZFEjr1zCsicMWpAA&client_secret=s3cr3t-v4lue";
    let method = Method::GET;
    let raw = AuditRecord {
        path: "/Patient",
        query: Some(query),
        outcome: Outcome::Refused {
            outcome: "invalid",
            reason: "Access tokens must not be passed in the URL query string.",
        },
        status: 400,
        ..record(&method, None, None)
    };
    let mut scratch = String::new();
    let shown = raw.shown(true, &mut scratch);
    assert_eq!(
        shown.query,
        Some("family=x&access_token=[redacted]&client_secret=[redacted]")
    );
    let event = audit_event(&shown, &SOURCE).to_string();
    let encoded = base64::engine::general_purpose::STANDARD
        .encode("family=x&access_token=[redacted]&client_secret=[redacted]");
    assert!(event.contains(&encoded), "{event}");
    for secret in ["opaque-2YotnFZFEjr1zCsicMWpAA", "s3cr3t-v4lue"] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(
            !event.contains(secret) && !event.contains(&encoded),
            "{event}"
        );
    }
    // A query without one is shown as sent, without a copy.
    let plain = AuditRecord {
        query: Some("family=x&code=password"),
        ..raw
    };
    let mut scratch = String::new();
    assert_eq!(
        plain.shown(true, &mut scratch).query,
        Some("family=x&code=password")
    );
    assert!(scratch.is_empty());
}
