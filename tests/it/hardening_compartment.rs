//! Issue 11, classes 1, 5, 8 and 9: a patient context stays inside its compartment. fhirguard
//! runs in-process between a fake OpenID provider and the in-memory FHIR store
//! (`support::fhir_store`, applying compartment parameters) that, like a real server, answers
//! counts and totals for whatever it is asked, answers conditional reads with 304/412, keeps
//! version histories and applies JSON Patches — and records every request it receives, so each
//! test asserts both what the client got and what reached the server.

use std::ops::Deref;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::binary::Explain;
use crate::support::fhir_store::Search;
use crate::support::smart_app::SmartApp;
use crate::support::stack::Answer;
use crate::support::token::TestKey;
use crate::support::upstream::Recorded;

fn observation(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"text": "x"},
           "subject": {"reference": format!("Patient/{patient}")}})
}

/// fhirguard in front of the store, with a `patient/*.*` token for Patient/1; requests go
/// through `Proxy::handle`, with no socket.
struct Harness {
    app: SmartApp,
    /// A `patient/*.*` token for Patient/1.
    token: String,
}

impl Deref for Harness {
    type Target = SmartApp;

    fn deref(&self) -> &SmartApp {
        &self.app
    }
}

impl Harness {
    async fn start() -> Harness {
        let seed = vec![
            json!({"resourceType": "Patient", "id": "1"}),
            json!({"resourceType": "Patient", "id": "2"}),
            observation("o1", "1"),
            observation("o2", "2"),
            observation("o3", "2"),
            json!({"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/1"}}),
            json!({"resourceType": "Encounter", "id": "e2", "subject": {"reference": "Patient/2"}}),
            json!({"resourceType": "Location", "id": "loc"}),
        ];
        let key = TestKey::ec_p256("hardening-1");
        let app = SmartApp::start(key, seed, Search::CompartmentParameters).await;
        let token = app.token("patient/*.*", "Patient/1");
        Harness { app, token }
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        self.handle_call(method, target, Some(&self.token), headers, body.to_owned())
            .await
    }

    async fn get(&self, target: &str) -> Answer {
        self.send(Method::GET, target, &[], "").await
    }

    /// `target` is refused with 403 naming a compartment rule, and nothing reaches the server.
    async fn assert_refused(&self, method: Method, target: &str, form: &str) {
        let before = self.fhir().count();
        let headers: &[(&str, &str)] = if form.is_empty() {
            &[]
        } else {
            &[("content-type", "application/x-www-form-urlencoded")]
        };
        let answer = self.send(method.clone(), target, headers, form).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {target} {form}: {}",
            answer.body
        );
        assert_eq!(answer.json_or_null()["issue"][0]["code"], "forbidden");
        assert!(
            answer.diagnostics().contains("compartment hardening"),
            "{method} {target} {form}: the reason names no rule: {}",
            answer.diagnostics()
        );
        assert_eq!(
            self.fhir().count(),
            before,
            "{method} {target} {form} reached the server"
        );
    }
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap_or("-"),
                        e["resource"]["id"].as_str().unwrap_or("-")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What reached the server for one request: its target, plus the form body of a POST search.
fn searched(received: &Recorded) -> String {
    format!(
        "{} {}",
        received.target,
        String::from_utf8_lossy(&received.body)
    )
}

// Class 1: compartment escape through search modifiers.

#[tokio::test]
async fn modifiers_and_foreign_values_on_compartment_parameters_are_refused() {
    let h = Harness::start().await;
    for target in [
        "/Observation?subject:not=Patient/1&_summary=count",
        "/Observation?subject:not=Patient/1&_total=accurate&_count=0",
        "/Observation?subject:not=Patient/1&code=x&_summary=count",
        "/Encounter?patient:not=Patient/1&_summary=count",
        "/Patient?_id:not=1&_summary=count",
        "/Observation?subject:missing=true",
        "/Observation?subject:identifier=http://x%7C1",
        "/Observation?subject:above=Patient/1",
        "/Observation?subject:Group=1",
        "/Observation?subject%3Anot=Patient/1&_summary=count",
        "/Observation?SUBJECT:NOT=Patient/1",
        "/Observation?Subject=Patient/2",
        "/Patient?_ID=2",
        "/Observation?subject.name=x",
        "/Observation?subject:Patient.name=x",
        "/Observation?subject=foo/Patient/1",
        "/Observation?subject=http://other.example/Patient/1",
        "/Observation?subject=Patient/1,Patient/2",
        "/Observation?subject=Patient/1&subject=Patient/2",
        "/Observation?subject=",
        "/Observation?performer=Patient/2",
        "/Observation?subject%253Anot=Patient/1",
        "/Observation?%C5%BFubject=Patient/2",
        "/Observation?subject%20=Patient/2",
        "/Patient/1/Observation?subject:not=Patient/1",
        "/Location?_has:Encounter:location:patient=Patient/2&_summary=count",
    ] {
        h.assert_refused(Method::GET, target, "").await;
    }
    // The POST _search form is read the same.
    for form in [
        "subject:not=Patient/1&_summary=count",
        "subject%3Anot=Patient/1",
        "_id:not=1",
        "patient=Patient/2&code=x",
    ] {
        let target = if form.starts_with("_id") {
            "/Patient/_search"
        } else {
            "/Observation/_search"
        };
        h.assert_refused(Method::POST, target, form).await;
    }
    // The query-string half of a POST _search too.
    h.assert_refused(
        Method::POST,
        "/Observation/_search?subject:not=Patient/1",
        "_summary=count",
    )
    .await;
}

#[tokio::test]
async fn counts_and_totals_come_only_from_confined_searches() {
    let h = Harness::start().await;
    for (target, canonical) in [
        (
            "/Observation?subject=Patient/1&_summary=count",
            "subject=Patient/1",
        ),
        ("/Observation?_total=accurate&_count=0", "subject=Patient/1"),
        ("/Observation?patient=1&code=x", "subject=Patient/1"),
        (
            "/Observation?subject=https://fhir.example.org/Patient/1",
            "subject=Patient/1",
        ),
        ("/Encounter?_summary=count", "patient=Patient/1"),
        ("/Patient?_id=1&_summary=count", "_id=1"),
    ] {
        let before = h.fhir().count();
        let answer = h.get(target).await;
        assert_eq!(answer.status, StatusCode::OK, "{target}: {}", answer.body);
        assert_eq!(
            answer.json_or_null()["total"],
            1,
            "{target}: {}",
            answer.body
        );
        let sent = h.fhir().since(before);
        assert_eq!(sent.len(), 1, "{target}");
        assert!(
            sent[0].target.ends_with(&format!("&{canonical}")),
            "{target} was forwarded as {}",
            sent[0].target
        );
    }
    // A search form: the canonical parameter reaches the server in the URL or the form.
    for form in ["_summary=count", "subject=Patient/1&_count=0"] {
        let before = h.fhir().count();
        let answer = h
            .send(
                Method::POST,
                "/Observation/_search",
                &[("content-type", "application/x-www-form-urlencoded")],
                form,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{form}: {}", answer.body);
        let sent = h.fhir().since(before);
        assert!(
            searched(&sent[0]).contains("subject=Patient/1"),
            "{form}: {}",
            searched(&sent[0])
        );
    }
    // Other types' references cannot name a patient and stay allowed.
    let answer = h.get("/Observation?performer=Practitioner/7").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(ids(&answer.json_or_null()), ["Observation/o1"]);
}

// Class 5: 304 as an existence oracle.

#[tokio::test]
async fn conditional_reads_cannot_confirm_another_patients_resource() {
    let h = Harness::start().await;
    for (name, value) in [
        ("if-none-match", "W/\"1\""),
        ("if-none-match", "*"),
        ("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ("if-match", "W/\"7\""),
        ("range", "bytes=0-1"),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let before = h.fhir().count();
            let answer = h
                .send(method.clone(), "/Observation/o2", &[(name, value)], "")
                .await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "{method} {name}: {value}"
            );
            assert!(answer.headers.get("etag").is_none(), "{name}: {value}");
            let sent = h.fhir().since(before);
            assert!(
                sent.iter().all(|r| !r.headers.contains_key(name)),
                "{name} reached the server"
            );
            // The own resource is answered in full, never with a bare 304 or 412.
            let own = h
                .send(method.clone(), "/Observation/o1", &[(name, value)], "")
                .await;
            assert_eq!(own.status, StatusCode::OK, "{method} own {name}: {value}");
        }
    }
    // Batch entries carry their own conditions: the answer is checked the same.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o2", "ifNoneMatch": "W/\"1\""}},
        {"request": {"method": "GET", "url": "Observation/o2", "ifMatch": "W/\"7\""}},
        {"request": {"method": "GET", "url": "Observation/nope", "ifNoneMatch": "*"}},
        {"request": {"method": "GET", "url": "Observation/o1", "ifNoneMatch": "W/\"1\""}},
        {"request": {"method": "GET", "url": "Observation/o1"}},
    ]});
    let answer = h.send(Method::POST, "/", &[], &batch.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json_or_null();
    let statuses: Vec<&str> = body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "404 Not Found",
            "404 Not Found",
            "404 Not Found",
            "200 OK",
            "200 OK"
        ],
        "{}",
        answer.body
    );
    assert!(answer.json_or_null()["entry"][0]["response"]
        .get("etag")
        .is_none());
    let sent = h.fhir().requests().pop().unwrap();
    assert!(
        !String::from_utf8_lossy(&sent.body).contains("ifNoneMatch"),
        "the entries' conditions reached the server"
    );
    // A vread: the same.
    let answer = h
        .send(
            Method::GET,
            "/Observation/o2/_history/1",
            &[("if-none-match", "W/\"1\"")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // A write's preconditions cannot probe another patient's resource either: the check of
    // the stored resource is read without them, and answers 404 whatever the version.
    for (name, value) in [
        ("if-match", "W/\"7\""),
        ("if-match", "W/\"1\""),
        ("if-none-match", "*"),
    ] {
        let answer = h
            .send(
                Method::PUT,
                "/Observation/o2",
                &[(name, value)],
                &observation("o2", "1").to_string(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "PUT {name}: {value}");
        let answer = h
            .send(Method::DELETE, "/Observation/o3", &[(name, value)], "")
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "DELETE {name}: {value}"
        );
    }
    assert!(h.fhir().resource("Observation/o3").is_some());
}

// Class 8: counts and existence through other doors.

#[tokio::test]
async fn writes_to_absent_and_foreign_resources_answer_alike() {
    let h = Harness::start().await;
    for (method, target, body) in [
        (Method::PUT, "/Observation/o2", observation("o2", "1")),
        (Method::PUT, "/Observation/fresh", observation("fresh", "1")),
        (Method::DELETE, "/Observation/o2", json!(null)),
        (Method::DELETE, "/Observation/nope", json!(null)),
    ] {
        let before = h.fhir().count();
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let answer = h.send(method.clone(), target, &[], &body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {target}");
        assert!(
            h.fhir()
                .since(before)
                .iter()
                .all(|r| r.method == Method::GET),
            "{method} {target} was forwarded"
        );
    }
    assert!(h.fhir().resource("Observation/fresh").is_none());
    // The patient's own resources are written as before.
    let answer = h
        .send(
            Method::PUT,
            "/Observation/o1",
            &[],
            &observation("o1", "1").to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let answer = h.send(Method::DELETE, "/Observation/o1", &[], "").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn history_never_answers_other_patients_counts() {
    let h = Harness::start().await;
    for target in [
        "/Observation/_history?_count=0",
        "/Observation/_history?_summary=count",
        "/Observation/_history?_since=2000-01-01",
        "/Observation/_history",
        "/_history?_count=0",
        "/_history",
        "/Patient/_history?_count=0",
        "/Encounter/_history?_count=0",
    ] {
        h.assert_refused(Method::GET, target, "").await;
    }
    // Another patient's instance history: 404 whatever the parameters, and only the check of
    // the current resource reaches the server.
    for target in [
        "/Observation/o2/_history?_count=0",
        "/Observation/o2/_history?_summary=count",
        "/Observation/o2/_history",
        "/Observation/nope/_history?_count=0",
        "/Patient/2/_history?_count=0",
    ] {
        let before = h.fhir().count();
        let answer = h.get(target).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{target}");
        assert!(answer.json_or_null().get("total").is_none(), "{target}");
        assert!(
            h.fhir()
                .since(before)
                .iter()
                .all(|r| !r.target.contains("_history")),
            "{target}: the history reached the server"
        );
    }
    // The own resource's history is answered (filtered), also as a count.
    let answer = h.get("/Observation/o1/_history").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(ids(&answer.json_or_null()), ["Observation/o1"]);
    let answer = h.get("/Observation/o1/_history?_count=0").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json_or_null()["total"], 1);
    // Shared types keep their history.
    assert_eq!(
        h.get("/Location/_history?_count=0").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn batch_and_transaction_entries_cannot_count_other_patients() {
    let h = Harness::start().await;
    let leaky = [
        "Observation/_history?_count=0",
        "_history?_count=0",
        "Patient/_history?_count=0",
        "Observation/o2/_history?_count=0",
        "Observation?subject:not=Patient/1&_summary=count",
        "Observation?subject%3Anot=Patient/1&_summary=count",
        "Patient?_id:not=1&_summary=count",
    ];
    let mut entries =
        vec![json!({"request": {"method": "GET", "url": "Observation?_summary=count"}})];
    entries.extend(
        leaky
            .iter()
            .map(|url| json!({"request": {"method": "GET", "url": url}})),
    );
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
    let before = h.fhir().count();
    let answer = h.send(Method::POST, "/", &[], &batch.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json_or_null();
    let answered = body["entry"].as_array().unwrap();
    assert_eq!(answered.len(), leaky.len() + 1);
    // The confined count is the patient's own; every leaky entry is a 403.
    assert_eq!(answered[0]["response"]["status"], "200 OK");
    assert_eq!(answered[0]["resource"]["total"], 1);
    for (entry, url) in answered[1..].iter().zip(leaky) {
        assert_eq!(entry["response"]["status"], "403 Forbidden", "{url}");
        assert!(entry.get("resource").is_none(), "{url}");
    }
    let sent = h.fhir().since(before);
    assert_eq!(sent.len(), 1);
    let forwarded: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(forwarded["entry"].as_array().unwrap().len(), 1);
    assert_eq!(
        forwarded["entry"][0]["request"]["url"],
        "Observation?_summary=count&subject=Patient/1"
    );
    // A transaction with any of them is refused whole.
    for url in leaky {
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "GET", "url": url}},
        ]});
        let before = h.fhir().count();
        let answer = h
            .send(Method::POST, "/", &[], &transaction.to_string())
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{url}");
        assert_eq!(h.fhir().count(), before, "{url}");
    }
}

#[tokio::test]
async fn conditional_create_criteria_are_confined() {
    let harness = Harness::start().await;
    let h = &harness;
    let create = |criteria: &'static str| {
        let body = observation("c1", "1").to_string();
        async move {
            let before = h.fhir().count();
            let answer = h
                .send(
                    Method::POST,
                    "/Observation",
                    &[("if-none-exist", criteria)],
                    &body,
                )
                .await;
            (answer, h.fhir().since(before))
        }
    };
    for criteria in [
        "subject=Patient/2",
        "patient=2&code=x",
        "subject:not=Patient/1",
        "subject%3Anot=Patient/1",
        "Observation?subject=Patient/2",
        "_has:Observation:subject:code=x",
    ] {
        let (answer, sent) = create(criteria).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{criteria}");
        assert!(
            answer.diagnostics().contains("compartment hardening"),
            "{criteria}: {}",
            answer.diagnostics()
        );
        assert!(sent.is_empty(), "{criteria}");
    }
    for (criteria, confined) in [
        ("_id=o2", "_id=o2&subject=Patient/1"),
        ("code=x", "code=x&subject=Patient/1"),
        ("Observation?code=x", "code=x&subject=Patient/1"),
        ("subject=Patient/1", "subject=Patient/1&subject=Patient/1"),
    ] {
        let (answer, sent) = create(criteria).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{criteria}: {}",
            answer.body
        );
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].headers["if-none-exist"], confined, "{criteria}");
    }
    // Two conditions: which one the server reads is unknown.
    let answer = h
        .send(
            Method::POST,
            "/Observation",
            &[("if-none-exist", "code=x"), ("if-none-exist", "_id=o2")],
            &observation("c1", "1").to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

// Class 9: writes that leave the compartment.

const JSON_PATCH: &str = "application/json-patch+json";

#[tokio::test]
async fn patches_are_applied_and_must_stay_in_the_compartment() {
    let harness = Harness::start().await;
    let h = &harness;
    let patch = |target: &'static str, content_type: &'static str, body: Value| async move {
        let before = h.fhir().count();
        let answer = h
            .send(
                Method::PATCH,
                target,
                &[("content-type", content_type)],
                &body.to_string(),
            )
            .await;
        let patched = h
            .fhir()
            .since(before)
            .iter()
            .any(|r| r.method == Method::PATCH);
        (answer, patched)
    };
    let leaving = [
        json!([{"op": "replace", "path": "/subject/reference", "value": "Patient/2"}]),
        json!([{"op": "replace", "path": "/subject", "value": {"reference": "https://fhir.example.org/Patient/2"}}]),
        json!([{"op": "add", "path": "/performer", "value": [{"reference": "Patient/2"}]}]),
        json!([{"op": "remove", "path": "/subject"}]),
        json!([{"op": "add", "path": "/subject/reference", "value": "http://other.example/Patient/1"}]),
        json!([{"op": "copy", "from": "/subject", "path": "/performer"},
               {"op": "replace", "path": "/subject/reference", "value": "Patient/2"}]),
        json!([{"op": "move", "from": "/subject", "path": "/focus"}]),
        json!([{"op": "replace", "path": "", "value": observation("o1", "2")}]),
        json!([{"op": "replace", "path": "/id", "value": "o2"}]),
        // Case variants a server might bind to the compartment element.
        json!([{"op": "add", "path": "/Performer", "value": [{"reference": "Patient/2"}]}]),
        json!([{"op": "add", "path": "/subject/Reference", "value": "Patient/2"}]),
        json!([{"op": "add", "path": "/SUBJECT", "value": {"reference": "Patient/2"}}]),
        // What fhirguard cannot evaluate is refused.
        json!([{"op": "test", "path": "/status", "value": "amended"}]),
        json!([{"op": "replace", "path": "/nope/x", "value": 1}]),
        json!({"op": "replace", "path": "/status", "value": "amended"}),
    ];
    for body in leaving {
        let (answer, patched) = patch("/Observation/o1", JSON_PATCH, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{body}: {}",
            answer.body
        );
        assert!(
            answer.diagnostics().contains("compartment hardening"),
            "{body}: {}",
            answer.diagnostics()
        );
        assert!(!patched, "{body} was forwarded");
    }
    assert_eq!(
        h.fhir().resource("Observation/o1").unwrap()["subject"]["reference"],
        "Patient/1"
    );
    // FHIRPath Patch and other media types cannot be evaluated.
    let fhirpath = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Observation.subject"},
        {"name": "value", "valueReference": {"reference": "Patient/2"}},
    ]}]});
    for content_type in ["application/fhir+json", "application/json", "text/plain"] {
        let (answer, patched) = patch("/Observation/o1", content_type, fhirpath.clone()).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{content_type}");
        assert!(!patched, "{content_type}");
    }
    // Another patient's resource: 404, as a read would be.
    let keep = json!([{"op": "replace", "path": "/status", "value": "amended"}]);
    let (answer, patched) = patch("/Observation/o2", JSON_PATCH, keep.clone()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(!patched);
    let (answer, patched) = patch("/Observation/nope", JSON_PATCH, keep.clone()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(!patched);
    // A patch that stays is forwarded, pinned to the version checked.
    let before = h.fhir().count();
    let (answer, patched) = patch(
        "/Observation/o1",
        "application/json-patch+json; charset=utf-8",
        keep,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(patched);
    let sent = h.fhir().since(before);
    let forwarded = sent.iter().find(|r| r.method == Method::PATCH).unwrap();
    assert_eq!(forwarded.headers["if-match"], "W/\"1\"");
    assert_eq!(
        h.fhir().resource("Observation/o1").unwrap()["status"],
        "amended"
    );
    // Adding a performer of another type stays in the compartment.
    let other_type =
        json!([{"op": "add", "path": "/performer", "value": [{"reference": "Practitioner/7"}]}]);
    let (answer, patched) = patch("/Observation/o1", JSON_PATCH, other_type).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(patched);
    // Patches inside a bundle need the stored resource: refused there.
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Binary", "contentType": JSON_PATCH, "data": "W10="},
         "request": {"method": "PATCH", "url": "Observation/o1"}},
    ]});
    let answer = h
        .send(Method::POST, "/", &[], &transaction.to_string())
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn creates_and_updates_naming_another_patient_are_refused() {
    let h = Harness::start().await;
    let mut both = observation("x1", "1");
    both["performer"] = json!([{"reference": "Patient/2"}]);
    let mut absolute = observation("x2", "1");
    absolute["performer"] = json!([{"reference": "https://fhir.example.org/Patient/2"}]);
    let mut conditional = observation("x3", "1");
    conditional["performer"] = json!([{"reference": "Patient?identifier=http://x|2"}]);
    let mut elsewhere = observation("x4", "1");
    elsewhere["subject"] = json!({"reference": "http://other.example/Patient/1"});
    let mut variant = observation("x7", "1");
    variant["Performer"] = json!([{"reference": "Patient/2"}]);
    let mut versioned_other = observation("x5", "1");
    versioned_other["performer"] = json!([{"reference": "Patient/2/_history/1"}]);
    for resource in [
        both,
        absolute,
        conditional,
        elsewhere,
        versioned_other,
        variant,
    ] {
        for (method, target) in [
            (Method::POST, "/Observation".to_owned()),
            (
                Method::PUT,
                format!("/Observation/{}", resource["id"].as_str().unwrap()),
            ),
        ] {
            let before = h.fhir().count();
            let answer = h
                .send(method.clone(), &target, &[], &resource.to_string())
                .await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {resource}");
            assert!(
                h.fhir()
                    .since(before)
                    .iter()
                    .all(|r| r.method == Method::GET),
                "{method} {resource} was written"
            );
        }
    }
    // The patient's own resource linking to another patient writes into that compartment.
    let linked = json!({"resourceType": "Patient", "id": "1",
                        "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}]});
    let answer = h
        .send(Method::PUT, "/Patient/1", &[], &linked.to_string())
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(answer.diagnostics().contains("compartment hardening"));
    // The own patient with another type as performer is fine.
    let mut fine = observation("x6", "1");
    fine["performer"] = json!([{"reference": "Practitioner/7"}, {"reference": "Patient/1"}]);
    let answer = h
        .send(Method::POST, "/Observation", &[], &fine.to_string())
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

// explain names the rule that refused.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_compartment_rule() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, &h.yaml).unwrap();
    let token = h.token.clone();
    for (path, rule) in [
        (
            "/Observation?subject:not=Patient/1&_summary=count",
            "compartment parameters are exact",
        ),
        ("/Observation/_history?_count=0", "unconfinable history"),
        (
            "/Location?_has:Encounter:location:patient=Patient/2",
            "may reach only shared types",
        ),
    ] {
        let output = Explain::new(&file)
            .token_arg(&token)
            .method("GET")
            .path(path)
            .run()
            .await;
        let stdout = output.stdout;
        assert_eq!(output.code, Some(1), "{path}: {stdout}");
        assert!(
            stdout.contains("verdict: 403") && stdout.contains(rule),
            "{path}: {stdout}"
        );
    }
}

/// `explain --body` checks a create's body as the proxy does: another patient named beside the
/// own one, or a duplicate member name, is refused with the rule named.
#[tokio::test]
async fn explain_checks_a_create_body_as_the_proxy_does() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, &h.yaml).unwrap();
    let cases = [
        (
            r#"{"resourceType":"Observation","subject":{"reference":"Patient/1"},"performer":[{"reference":"Patient/2"}]}"#,
            "verdict: 403",
            "compartment hardening",
        ),
        (
            r#"{"resourceType":"Observation","subject":{"reference":"Patient/2"},"subject":{"reference":"Patient/1"}}"#,
            "verdict: 400",
            "duplicate JSON member name \"subject\"",
        ),
        (
            r#"{"resourceType":"Observation","subject":{"reference":"Patient/1"}}"#,
            "verdict: ALLOW",
            "",
        ),
    ];
    for (index, (body, verdict, rule)) in cases.into_iter().enumerate() {
        let body_file = dir.path().join(format!("body-{index}.json"));
        std::fs::write(&body_file, body).unwrap();
        let output = Explain::new(&file)
            .token_arg(&h.token)
            .method("POST")
            .path("/Observation")
            .body(&body_file)
            .run()
            .await;
        let stdout = output.stdout;
        assert!(
            stdout.contains(verdict) && stdout.contains(rule),
            "{body}: {stdout}"
        );
    }
}
