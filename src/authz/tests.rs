//! The baseline decision: single requests and bundles.

use http::{HeaderMap, Method};

use super::*;
use crate::actions::DataAction::{Create, Delete, HardDelete, Read, Smart, Write};
use crate::fhir::bundle::classify_bundle;
use crate::fhir::classify;

fn classified(method: Method, target: &str) -> FhirRequest {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    classify(&method, path, query, &HeaderMap::new()).expect(target)
}

fn read_only() -> DataActions {
    DataActions::of(&[Read])
}

#[test]
fn read_only_application() {
    let allowed = [
        (Method::GET, "/Patient/1"),
        (Method::HEAD, "/Patient/1"),
        (Method::GET, "/Observation?subject=Patient/1"),
        (Method::POST, "/Observation/_search"),
        (Method::GET, "/Patient/1/_history"),
        (Method::GET, "/Patient/1/$everything"),
        (Method::GET, "/metadata"),
    ];
    for (method, target) in allowed {
        let decision = authorize(&classified(method.clone(), target), read_only());
        assert!(decision.allowed, "{method} {target}: {decision}");
    }
    let denied = [
        (Method::DELETE, "/Patient/1"),
        (Method::POST, "/Patient"),
        (Method::PUT, "/Patient/1"),
        (Method::PATCH, "/Patient/1"),
        (Method::GET, "/$export"),
        (Method::GET, "/Patient/1/$frobnicate"),
    ];
    for (method, target) in denied {
        let decision = authorize(&classified(method.clone(), target), read_only());
        assert!(!decision.allowed, "{method} {target}: {decision}");
    }
}

#[test]
fn serving_writes_reasons_only_for_denials() {
    let read = classified(Method::GET, "/Patient/1");
    let create = classified(Method::POST, "/Patient");
    let quiet = decide(&read, read_only(), Reasons::OnDenial);
    assert!(quiet.allowed);
    assert_eq!(quiet.reason, "");
    assert_eq!(
        decide(&read, read_only(), Reasons::Always).reason,
        "read Patient/1 requires Read | ReadById; granted Read"
    );
    let denied = decide(&create, read_only(), Reasons::OnDenial);
    assert!(!denied.allowed);
    assert_eq!(denied, authorize(&create, read_only()));
}

#[test]
fn reasons_name_what_is_missing() {
    let decision = authorize(&classified(Method::POST, "/Patient"), read_only());
    assert!(!decision.allowed);
    assert_eq!(
        decision.reason,
        "create Patient requires Write | Create; granted Read"
    );
    assert_eq!(
        decision.to_string(),
        "denied: create Patient requires Write | Create; granted Read"
    );
    assert_eq!(
        decision.required,
        classified(Method::POST, "/Patient").required
    );
    assert_eq!(decision.granted, read_only());

    let unknown = authorize(&classified(Method::GET, "/$frobnicate"), read_only());
    assert_eq!(
        unknown.reason,
        "operation $frobnicate requires every data action (*); granted Read"
    );
    let nothing = authorize(&classified(Method::GET, "/metadata"), DataActions::NONE);
    assert!(!nothing.allowed);
    assert_eq!(
        nothing.reason,
        "capabilities requires any data action; granted none"
    );
}

#[test]
fn hard_delete_needs_hard_delete() {
    let writer = DataActions::of(&[Read, Write, Delete]);
    assert!(authorize(&classified(Method::DELETE, "/Patient/1"), writer).allowed);
    let hard = classified(Method::DELETE, "/Patient/1?hardDelete=true");
    let decision = authorize(&hard, writer);
    assert!(!decision.allowed);
    assert!(
        decision.reason.contains("requires Delete & HardDelete"),
        "{}",
        decision.reason
    );
    assert!(authorize(&hard, writer.with(HardDelete)).allowed);
    assert!(
        !authorize(
            &classified(Method::DELETE, "/Patient/1/$purge-history"),
            writer
        )
        .allowed
    );
}

#[test]
fn smart_v2_actions_satisfy_alternatives() {
    let create_only = DataActions::of(&[Create]);
    assert!(authorize(&classified(Method::POST, "/Patient"), create_only).allowed);
    assert!(!authorize(&classified(Method::PUT, "/Patient/1"), create_only).allowed);
    assert!(authorize(&classified(Method::GET, "/$frobnicate"), DataActions::ALL).allowed);
}

fn transaction(kind: &str, requests: &[(&str, &str)]) -> BundleRequest {
    let entries: Vec<_> = requests
        .iter()
        .map(|(method, url)| serde_json::json!({"request": {"method": method, "url": url}}))
        .collect();
    let body = serde_json::json!({"resourceType": "Bundle", "type": kind, "entry": entries});
    classify_bundle(&serde_json::to_vec(&body).expect("json")).expect("bundle")
}

#[test]
fn bundles_need_every_entry() {
    let reads = transaction(
        "batch",
        &[("GET", "Patient/1"), ("GET", "Observation?subject=x")],
    );
    let decision = authorize_bundle(&reads, read_only());
    assert!(decision.allowed, "{decision}");
    assert_eq!(decision.entries.len(), 2);

    let mixed = transaction(
        "transaction",
        &[
            ("GET", "Patient/1"),
            ("DELETE", "Patient/2"),
            ("POST", "Patient"),
        ],
    );
    let decision = authorize_bundle(&mixed, read_only());
    assert!(!decision.allowed);
    assert_eq!(decision.kind, BundleKind::Transaction);
    let allowed: Vec<bool> = decision.entries.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, false, false]);
    assert_eq!(
        decision
            .denied_entries()
            .map(|(i, _)| i)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        decision.reason,
        "transaction entry[1]: delete Patient/2 requires Delete; granted Read"
    );
    let writer = DataActions::of(&[Read, Write, Delete]);
    assert!(authorize_bundle(&mixed, writer).allowed);
}

#[test]
fn bundles_need_at_least_one_action() {
    let empty = transaction("batch", &[]);
    assert!(authorize_bundle(&empty, read_only()).allowed);
    let decision = authorize_bundle(&empty, DataActions::NONE);
    assert!(!decision.allowed);
    assert_eq!(
        decision.reason,
        "a batch requires at least one data action; granted none"
    );
    // `Smart` alone is not a data action of `*` (reference §3.1).
    assert!(!authorize_bundle(&empty, DataActions::of(&[Smart])).allowed);
}
