//! Bundle parsing and per-entry classification.

use serde_json::json;

use super::*;
use crate::fhir::tests::req;

fn bundle(kind: &str, requests: &[serde_json::Value]) -> Vec<u8> {
    let entries: Vec<_> = requests
        .iter()
        .map(|request| {
            // A search entry carries its parameters in its URL, never a resource.
            let search = request["url"]
                .as_str()
                .is_some_and(|u| u.contains("_search"));
            match search {
                true => json!({"request": request}),
                false => json!({"resource": {"resourceType": "Patient"}, "request": request}),
            }
        })
        .collect();
    serde_json::to_vec(&json!({"resourceType": "Bundle", "type": kind, "entry": entries}))
        .expect("json")
}

fn entry_error(body: &[u8]) -> (usize, &'static str, EntryProblem, String) {
    match classify_bundle(body) {
        Err(error @ BundleError::Entry { .. }) => {
            let message = error.to_string();
            let BundleError::Entry {
                index,
                field,
                problem,
            } = error
            else {
                unreachable!()
            };
            (index, field, problem, message)
        }
        other => panic!("expected an entry error, got {other:?}"),
    }
}

#[test]
fn classifies_every_entry_in_order() {
    let body = bundle(
        "transaction",
        &[
            json!({"method": "GET", "url": "Patient/1"}),
            json!({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x"}),
            json!({"method": "PUT", "url": "Patient/2", "ifMatch": "W/\"3\""}),
            json!({"method": "PUT", "url": "Patient?identifier=y"}),
            json!({"method": "DELETE", "url": "Patient/3?hardDelete=true"}),
            json!({"method": "GET", "url": "/Observation?subject=Patient/1"}),
            json!({"method": "POST", "url": "Patient/_search"}),
            json!({"method": "PATCH", "url": "Patient/4"}),
            json!({"method": "HEAD", "url": "Patient/5/_history/1"}),
            json!({"method": "GET", "url": "Patient/%24everything"}),
        ],
    );
    let classified = classify_bundle(&body).expect("bundle");
    assert_eq!(classified.kind, BundleKind::Transaction);
    let expected = [
        (Interaction::Read, "Read|ReadById"),
        (Interaction::ConditionalCreate, "Read&Write|Search&Create"),
        (Interaction::Update, "Write|Update"),
        (Interaction::ConditionalUpdate, "Read&Write|Search&Update"),
        (Interaction::Delete, "Delete&HardDelete"),
        (Interaction::SearchType, "Read|Search"),
        (Interaction::SearchType, "Read|Search"),
        (Interaction::Patch, "Read&Write|Update"),
        (Interaction::Vread, "Read|ReadById"),
        (Interaction::Operation, "Read"),
    ];
    assert_eq!(classified.entries.len(), expected.len());
    for (index, (entry, (interaction, required))) in
        classified.entries.iter().zip(expected).enumerate()
    {
        assert_eq!(entry.interaction, interaction, "entry {index}");
        assert_eq!(entry.required, req(required), "entry {index}");
    }
    // `Patient/$everything` decodes to a type-level operation.
    assert_eq!(
        classified.entries[9].resource_type.as_deref(),
        Some("Patient")
    );
}

#[test]
fn batch_and_empty_bundles() {
    let classified = classify_bundle(&bundle("batch", &[])).expect("batch");
    assert_eq!(classified.kind, BundleKind::Batch);
    assert!(classified.entries.is_empty());
    let no_entry = br#"{"resourceType":"Bundle","type":"batch"}"#;
    assert!(classify_bundle(no_entry)
        .expect("no entry")
        .entries
        .is_empty());
}

#[test]
fn refuses_bodies_that_are_not_request_bundles() {
    assert!(matches!(
        classify_bundle(b"{nope"),
        Err(BundleError::NotJson(_))
    ));
    assert!(matches!(
        classify_bundle(b"{} trailing"),
        Err(BundleError::NotJson(_))
    ));
    assert!(matches!(
        classify_bundle(b"[1]"),
        Err(BundleError::Malformed(_))
    ));
    let patient = br#"{"resourceType":"Patient","type":"batch"}"#;
    let error = classify_bundle(patient).expect_err("patient");
    assert_eq!(
        error.to_string(),
        "The request body is not a Bundle (resourceType: 'Patient')."
    );
    let document = br#"{"resourceType":"Bundle","type":"document"}"#;
    let error = classify_bundle(document).expect_err("document");
    assert_eq!(
        error.to_string(),
        "Bundle.type must be 'batch' or 'transaction' (found 'document')."
    );
    let untyped = br#"{"resourceType":"Bundle"}"#;
    assert!(
        matches!(classify_bundle(untyped), Err(BundleError::UnsupportedType(t)) if t == "missing")
    );
    let entry_object = br#"{"resourceType":"Bundle","type":"batch","entry":{}}"#;
    assert!(matches!(
        classify_bundle(entry_object),
        Err(BundleError::Malformed(_))
    ));
}

#[test]
fn refuses_duplicate_keys() {
    let smuggled = br#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"Patient/1","method":"DELETE"}}]}"#;
    let error = classify_bundle(smuggled).expect_err("duplicate method");
    assert!(matches!(
        &error,
        BundleError::NotJson(JsonError::DuplicateMember(name)) if name == "method"
    ));
    assert!(
        error
            .to_string()
            .contains("duplicate JSON member name \"method\""),
        "{error}"
    );
    // Anywhere in the body, the resources included.
    for body in [
        &br#"{"resourceType":"Bundle","type":"batch","type":"transaction"}"#[..],
        br#"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/2"},"subject":{"reference":"Patient/1"}},"request":{"method":"POST","url":"Observation"}}]}"#,
    ] {
        assert!(matches!(
            classify_bundle(body),
            Err(BundleError::NotJson(JsonError::DuplicateMember(_)))
        ));
    }
}

#[test]
fn entry_errors_name_the_entry() {
    let ok = json!({"method": "GET", "url": "Patient/1"});
    let rows = [
        (json!(null), "request", EntryProblem::Missing),
        (
            json!({"url": "Patient/1"}),
            "request.method",
            EntryProblem::Missing,
        ),
        (
            json!({"method": "GET"}),
            "request.url",
            EntryProblem::Missing,
        ),
        (
            json!({"method": 3, "url": "Patient/1"}),
            "request.method",
            EntryProblem::NotAString,
        ),
        (
            json!({"method": "GET", "url": ["Patient/1"]}),
            "request.url",
            EntryProblem::NotAString,
        ),
        (
            json!({"method": "get", "url": "Patient/1"}),
            "request.method",
            EntryProblem::BadMethod("get".into()),
        ),
        (
            json!({"method": "OPTIONS", "url": "Patient"}),
            "request.method",
            EntryProblem::BadMethod("OPTIONS".into()),
        ),
        (
            json!({"method": "GET", "url": "https://other.example/Patient/1"}),
            "request.url",
            EntryProblem::AbsoluteUrl,
        ),
        (
            json!({"method": "GET", "url": "urn:uuid:1234"}),
            "request.url",
            EntryProblem::AbsoluteUrl,
        ),
        (
            json!({"method": "GET", "url": "//host/Patient/1"}),
            "request.url",
            EntryProblem::AbsoluteUrl,
        ),
        (
            json!({"method": "GET", "url": "Patient/1#x"}),
            "request.url",
            EntryProblem::Path(PathError::InvalidCharacter("'#'".into())),
        ),
        (
            json!({"method": "GET", "url": "../Patient/1"}),
            "request.url",
            EntryProblem::Path(PathError::AboveRoot),
        ),
        (
            json!({"method": "GET", "url": "Patient%2F1"}),
            "request.url",
            EntryProblem::Path(PathError::EncodedSeparator("%2F".into())),
        ),
        (
            json!({"method": "GET", "url": "Foo/1"}),
            "request.url",
            EntryProblem::Classify(ClassifyError::UnknownResourceType("Foo".into())),
        ),
        (
            json!({"method": "POST", "url": "Patient/1"}),
            "request.method",
            EntryProblem::Classify(ClassifyError::MethodNotAllowed {
                method: "POST".into(),
                path: "/Patient/1".into(),
            }),
        ),
        (
            json!({"method": "PUT", "url": "Patient"}),
            "request.method",
            EntryProblem::Classify(ClassifyError::MethodNotAllowed {
                method: "PUT".into(),
                path: "/Patient".into(),
            }),
        ),
        (
            json!({"method": "POST", "url": ""}),
            "request.url",
            EntryProblem::NestedBundle,
        ),
        (
            json!({"method": "POST", "url": "/"}),
            "request.url",
            EntryProblem::NestedBundle,
        ),
        (
            json!({"method": "POST", "url": "Patient", "ifNoneExist": 1}),
            "request.ifNoneExist",
            EntryProblem::NotAString,
        ),
        (
            json!({"method": "PUT", "url": "Patient/1", "ifMatch": "a\nb"}),
            "request.ifMatch",
            EntryProblem::BadHeaderValue,
        ),
    ];
    for (request, field, problem) in rows {
        let body = bundle(
            "batch",
            &[ok.clone(), ok.clone(), ok.clone(), request.clone()],
        );
        let (index, got_field, got_problem, message) = entry_error(&body);
        assert_eq!(
            (index, got_field, &got_problem),
            (3, field, &problem),
            "{request}"
        );
        assert!(
            message.starts_with(&format!("entry[3].{field}: ")),
            "{message}"
        );
    }
    let body = bundle(
        "batch",
        &[json!({"method": "GET", "url": "https://x/Patient"})],
    );
    assert_eq!(
        entry_error(&body).3,
        "entry[0].request.url: absolute URLs are not supported; use a URL relative to the FHIR base"
    );
}

#[test]
fn entries_tunnelling_a_method_are_refused() {
    for url in [
        "Patient/1?_method=DELETE",
        "Patient?name=x&%5Fmethod=DELETE",
        "Patient?_METHOD=PUT",
        "Patient?a=b;_method=DELETE",
    ] {
        let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": url}}
        ]});
        let error = classify_bundle(body.to_string().as_bytes()).expect_err(url);
        assert!(
            matches!(
                error,
                BundleError::Entry {
                    index: 0,
                    field: "request.url",
                    problem: EntryProblem::MethodParameter
                }
            ),
            "{url}: {error}"
        );
    }
    let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=_method"}}
    ]});
    assert!(classify_bundle(body.to_string().as_bytes()).is_ok());
}

#[test]
fn search_entries_carry_no_resource() {
    let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Parameters", "parameter": [{"name": "subject", "valueString": "Patient/2"}]},
         "request": {"method": "POST", "url": "Observation/_search?code=x"}}
    ]});
    let error = classify_bundle(body.to_string().as_bytes()).expect_err("search with a resource");
    assert!(matches!(
        error,
        BundleError::Entry {
            index: 0,
            field: "resource",
            problem: EntryProblem::SearchWithResource
        }
    ));
    let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "POST", "url": "Observation/_search?code=x"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}}
    ]});
    assert_eq!(
        classify_bundle(body.to_string().as_bytes())
            .unwrap()
            .entries
            .len(),
        2
    );
}

#[test]
fn entries_carrying_an_access_token_are_refused() {
    for (method, url) in [
        ("GET", "Patient/1?access_token=opaque"),
        ("GET", "Patient?name=x&access%5Ftoken="),
        ("GET", "Patient?ACCESS_TOKEN=a&access_token=b"),
        (
            "GET",
            "Patient?a=b;accessToken=eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        ),
        ("DELETE", "Patient?identifier=x&access.token=y"),
    ] {
        let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/2"}},
            {"request": {"method": method, "url": url}}
        ]});
        let error = classify_bundle(body.to_string().as_bytes()).expect_err(url);
        assert!(
            matches!(
                error,
                BundleError::Entry {
                    index: 1,
                    field: "request.url",
                    problem: EntryProblem::AccessToken
                }
            ),
            "{url}: {error}"
        );
        assert!(error.to_string().contains("access_token"), "{error}");
    }
    let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=access_token"}}
    ]});
    assert!(classify_bundle(body.to_string().as_bytes()).is_ok());
}
