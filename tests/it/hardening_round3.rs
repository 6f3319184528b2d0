//! Issue 20, items 1–3: SMART v2 constraints on every interaction that returns a resource;
//! compartment membership read from the compartment element's own `reference`, canonical
//! spellings only; and no reference to another patient anywhere in what a patient context
//! writes. fhirguard runs in-process between a fake OpenID provider and the in-memory FHIR
//! store (`support::fhir_store`), which records every request, so each test asserts what the
//! client got and what reached (or did not reach) the server.

use std::ops::Deref;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::fhir_store::Search;
use crate::support::smart_app::SmartApp;
use crate::support::stack::{Answer, Guard, Stack};
use crate::support::token::TestKey;

/// The constraint.
const LAB_ONLY: &str = "patient/Observation.rs?category=laboratory patient/Patient.rs \
                        patient/Encounter.rs patient/Location.rs";

fn observation(id: &str, subject: Value, category: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
           "category": [{"coding": [{"code": category}]}], "subject": subject})
}

fn seed() -> Vec<Value> {
    let p1 = json!({"reference": "Patient/1"});
    let p2 = json!({"reference": "Patient/2"});
    vec![
        json!({"resourceType": "Patient", "id": "1"}),
        json!({"resourceType": "Patient", "id": "2"}),
        observation("o1", p1.clone(), "laboratory"),
        observation("o2", p1, "vital-signs"),
        observation("o3", p2, "laboratory"),
        // Another patient's Observations that name patient 1 only below `subject`.
        observation(
            "x-ext",
            json!({"reference": "Patient/2", "extension": [
                {"url": "http://example.org/x", "valueReference": {"reference": "Patient/1"}}]}),
            "laboratory",
        ),
        observation(
            "x-assigner",
            json!({"identifier": {"value": "mrn", "assigner": {"reference": "Patient/1"}}}),
            "laboratory",
        ),
        // Spellings of patient 1 that are not canonical.
        observation("x-slash", json!({"reference": "Patient/1/"}), "laboratory"),
        observation("x-double", json!({"reference": "Patient//1"}), "laboratory"),
        observation("x-dot", json!({"reference": "./Patient/1"}), "laboratory"),
        observation("x-case", json!({"reference": "patient/1"}), "laboratory"),
        observation(
            "x-encoded",
            json!({"reference": "Patient/%31"}),
            "laboratory",
        ),
        observation(
            "x-other-base",
            json!({"reference": "https://other.example/Patient/1"}),
            "laboratory",
        ),
        json!({"resourceType": "Appointment", "id": "a1", "status": "booked",
               "participant": [{"actor": {"reference": "Patient/1"}, "status": "accepted"}]}),
        json!({"resourceType": "Appointment", "id": "a2", "status": "booked",
               "participant": [{"actor": {"reference": "Patient/2",
                   "identifier": {"assigner": {"reference": "Patient/1"}}}, "status": "accepted"}]}),
        json!({"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/1"}}),
        json!({"resourceType": "Location", "id": "loc"}),
    ]
}

/// fhirguard in front of the store holding [`seed`]; requests go through `Proxy::handle`, with
/// no socket.
struct Harness(SmartApp);

impl Deref for Harness {
    type Target = SmartApp;

    fn deref(&self) -> &SmartApp {
        &self.0
    }
}

impl Harness {
    /// `search`: how the store answers searches — `AllOfType` leaves membership to fhirguard's
    /// filter alone.
    async fn start(search: Search) -> Harness {
        Harness(SmartApp::start(TestKey::ec_p256("round-3"), seed(), search).await)
    }

    /// A token of Patient/1 with `scopes`.
    fn token(&self, scopes: &str) -> String {
        self.0.token(scopes, "Patient/1")
    }

    async fn send(&self, scopes: &str, method: Method, target: &str, body: &Value) -> Answer {
        let content_type = match method {
            Method::PATCH => "application/json-patch+json",
            _ => "application/fhir+json",
        };
        let body = match body {
            Value::Null => Bytes::new(),
            body => Bytes::from(body.to_string()),
        };
        let token = self.token(scopes);
        let headers = [("content-type", content_type)];
        self.handle_call(method, target, Some(&token), &headers, body)
            .await
    }

    async fn get(&self, scopes: &str, target: &str) -> Answer {
        self.send(scopes, Method::GET, target, &Value::Null).await
    }

    /// What reached the server since `before`: `METHOD target` lines.
    fn received_since(&self, before: usize) -> Vec<String> {
        self.fhir()
            .since(before)
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// Item 1: SMART v2 constraints on every interaction that returns a resource.

/// The case (an instance history) and the variants an attacker tries next, under a
/// patient and a system context: each is 403 and nothing reaches the server.
#[tokio::test]
async fn constrained_types_are_refused_wherever_the_constraint_cannot_be_applied() {
    let h = Harness::start(Search::CompartmentParameters).await;
    let system = "system/Observation.rs?category=laboratory system/Patient.rs \
                  system/Encounter.rs";
    let mut refused = 0;
    for scopes in [LAB_ONLY, system] {
        for target in [
            "/Observation/o1/_history",
            "/Observation/o2/_history",
            "/Observation/o2/_history/1",
            "/Observation/o2",
            "/Observation/_history",
            "/_history",
            "/Patient?_revinclude=Observation:subject",
            "/Patient?_revinclude:iterate=Observation:subject",
            "/Patient?_Revinclude=Observation:subject",
            "/Encounter?_has:Observation:encounter:code=x",
            "/Patient?_has:Observation:subject:_id=o2&_summary=count",
            "/Patient/1/*",
            "/?_type=Observation",
            "/?_type=Patient,Observation",
        ] {
            let before = h.fhir().count();
            let answer = h.get(scopes, target).await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{scopes}: {target}: {}",
                answer.body
            );
            assert_eq!(
                h.received_since(before),
                Vec::<String>::new(),
                "{scopes}: {target}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 28);
    // Writes and conditional interactions relying on a constrained scope cannot be checked.
    let writer = "patient/Observation.cruds?category=laboratory patient/Patient.rs";
    let resource = observation("o9", json!({"reference": "Patient/1"}), "laboratory");
    for (method, target) in [
        (Method::POST, "/Observation"),
        (Method::PUT, "/Observation/o1"),
        (Method::DELETE, "/Observation/o1"),
        (Method::PUT, "/Observation?code=x"),
    ] {
        let before = h.fhir().count();
        let answer = h.send(writer, method.clone(), target, &resource).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {target}");
        assert_eq!(h.received_since(before), Vec::<String>::new());
    }
}

/// A search of the constrained type goes on, with the constraint ANDed into what the server
/// receives, beside the compartment parameter.
#[tokio::test]
async fn a_search_of_the_constrained_type_carries_the_constraint_upstream() {
    let h = Harness::start(Search::CompartmentParameters).await;
    let before = h.fhir().count();
    let answer = h.get(LAB_ONLY, "/Observation?code=x").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let received = h.received_since(before);
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].contains("category=laboratory"), "{received:?}");
    assert!(received[0].ends_with("subject=Patient/1"), "{received:?}");
    // The server may not drop the constraint as an unknown parameter.
    let sent = h.fhir().since(before);
    assert_eq!(sent[0].headers["prefer"], "handling=strict");
    // The proof is the server's: this store ignores `category` (as a lenient server would, which
    // `handling=strict` forbids), so what the client sees rests on the server applying it.
    // Another type is searched as before.
    let answer = h.get(LAB_ONLY, "/Encounter").await;
    assert_eq!(ids(&answer.json_or_null()), ["e1"]);
}

/// In a batch, each entry gets the rule it would get alone: the history and the read are 403
/// entries, the search goes on with the constraint.
#[tokio::test]
async fn batch_entries_hold_the_constraint() {
    let h = Harness::start(Search::CompartmentParameters).await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o2/_history"}},
        {"request": {"method": "GET", "url": "Observation/o2"}},
        {"request": {"method": "GET", "url": "Patient?_revinclude=Observation:subject"}},
        {"request": {"method": "GET", "url": "Observation?code=x"}},
    ]});
    let before = h.fhir().count();
    let answer = h.send(LAB_ONLY, Method::POST, "/", &batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json_or_null();
    let statuses: Vec<&str> = body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["403 Forbidden", "403 Forbidden", "403 Forbidden", "200 OK"]
    );
    let log = h.fhir().log();
    let entries: Vec<&String> = log.iter().filter(|l| l.starts_with("  entry")).collect();
    assert_eq!(entries.len(), 1, "{log:?}");
    assert!(entries[0].contains("category=laboratory"), "{entries:?}");
    assert!(h.fhir().count() > before);
}

/// A patch answers with the whole patched resource: with update but only a constrained read,
/// the server is asked for `Prefer: return=minimal` and the client gets the status without the
/// non-laboratory Observation.
#[tokio::test]
async fn a_patch_does_not_show_what_the_constraint_hides() {
    let h = Harness::start(Search::CompartmentParameters).await;
    let scopes = format!("{LAB_ONLY} patient/Observation.u");
    let patch = json!([{"op": "add", "path": "/status", "value": "amended"}]);
    let before = h.fhir().count();
    let answer = h
        .send(&scopes, Method::PATCH, "/Observation/o2", &patch)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json_or_null(),
        Value::Null,
        "no resource in the answer"
    );
    let sent = h.fhir().since(before);
    let patched = sent
        .iter()
        .find(|r| r.method == Method::PATCH)
        .expect("forwarded");
    assert_eq!(patched.headers["prefer"], "return=minimal");
    assert_eq!(
        h.fhir().resource("Observation/o2").unwrap()["status"],
        "amended"
    );
    // With an unconstrained read the patched resource is shown as before.
    let scopes = "patient/Observation.rus patient/Patient.rs";
    let answer = h
        .send(scopes, Method::PATCH, "/Observation/o2", &patch)
        .await;
    assert_eq!(answer.json_or_null()["id"], "o2");
}

// Item 2: membership reads the compartment element's own reference, canonical only.

/// Another patient's Observation that names patient 1 below `subject` (an extension, the
/// identifier's assigner) or in a spelling that is not canonical is not patient 1's: a read is
/// 404, an instance history 404 without asking for the history.
#[tokio::test]
async fn membership_reads_only_the_elements_own_canonical_reference() {
    let h = Harness::start(Search::AllOfType).await;
    let all = "patient/*.*";
    for id in [
        "x-ext",
        "x-assigner",
        "x-slash",
        "x-double",
        "x-dot",
        "x-case",
        "x-encoded",
        "x-other-base",
    ] {
        let answer = h.get(all, &format!("/Observation/{id}")).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{id}: {}",
            answer.body
        );
        let before = h.fhir().count();
        let answer = h.get(all, &format!("/Observation/{id}/_history")).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(
            h.received_since(before),
            [format!("GET /fhir/Observation/{id}")],
            "{id}: only the current resource is read"
        );
    }
    // Appointment: participant.actor's own reference, not one below it.
    assert_eq!(h.get(all, "/Appointment/a1").await.status, StatusCode::OK);
    assert_eq!(
        h.get(all, "/Appointment/a2").await.status,
        StatusCode::NOT_FOUND
    );
    // A search answer (the store returns every Observation) keeps only the members.
    let answer = h.get(all, "/Observation").await;
    assert_eq!(answer.status, StatusCode::OK);
    let mut found = ids(&answer.json_or_null());
    found.sort();
    assert_eq!(found, ["o1", "o2"]);
    assert!(answer.json_or_null().get("total").is_none());
    // And so does a batch's read and search entries.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/x-ext"}},
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "Appointment"}},
    ]});
    let answer = h.send(all, Method::POST, "/", &batch).await;
    let body = answer.json_or_null();
    let entries = body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["response"]["status"], "404 Not Found");
    assert_eq!(entries[1]["resource"]["id"], "o1");
    assert_eq!(ids(&entries[2]["resource"]), ["a1"]);
}

// Item 3: a patient context writes no reference to another patient, anywhere.

/// Every place and every spelling of a reference to patient 2 (or to patient 1 as another
/// server has it), in a create, an update and a JSON Patch: 403, and no write reaches the
/// server.
#[tokio::test]
async fn writes_naming_another_patient_anywhere_are_refused() {
    let h = Harness::start(Search::CompartmentParameters).await;
    let all = "patient/*.*";
    let spellings = [
        json!({"reference": "Patient/2"}),
        json!({"reference": "Patient/2/"}),
        json!({"reference": "Patient//2"}),
        json!({"reference": "Patient/2/_history/1"}),
        json!({"reference": "./Patient/2"}),
        json!({"reference": "/Patient/2"}),
        json!({"reference": "patient/2"}),
        json!({"reference": "PATIENT/2"}),
        json!({"reference": "%50atient/2"}),
        json!({"reference": "Patient%2F2"}),
        json!({"reference": "%252550atient/2"}),
        json!({"reference": " Patient/2"}),
        json!({"reference": "https://other.example/Patient/2"}),
        json!({"reference": "https://other.example/Patient/1"}),
        json!({"reference": "https://fhir.example.org/Patient/2"}),
        json!({"reference": "Patient?identifier=http://example.org|2"}),
        json!({"type": "Patient", "identifier": {"value": "2"}}),
        json!({"type": "http://hl7.org/fhir/StructureDefinition/Patient",
               "identifier": {"value": "2"}}),
        json!({"reference": 2}),
    ];
    let mut cases = 0;
    for named in &spellings {
        let places = [
            ("focus", json!([named])),
            (
                "extension",
                json!([{"url": "http://example.org/x", "valueReference": named}]),
            ),
            (
                "contained",
                json!([{"resourceType": "Observation", "id": "c", "status": "final",
                        "code": {"text": "x"}, "subject": named}]),
            ),
            ("performer", json!([named])),
            (
                "subject",
                json!({"reference": "Patient/1", "extension": [
                    {"url": "http://example.org/x", "valueReference": named}]}),
            ),
        ];
        for (element, value) in places {
            let mut resource = observation("o1", json!({"reference": "Patient/1"}), "x");
            resource[element] = value.clone();
            let writes = [
                (Method::POST, "/Observation", resource.clone()),
                (Method::PUT, "/Observation/o1", resource.clone()),
                (
                    Method::PATCH,
                    "/Observation/o1",
                    json!([{"op": "add", "path": format!("/{element}"), "value": value}]),
                ),
            ];
            for (method, target, body) in writes {
                let before = h.fhir().count();
                let answer = h.send(all, method.clone(), target, &body).await;
                assert_eq!(
                    answer.status,
                    StatusCode::FORBIDDEN,
                    "{method} {target} {element}: {named}: {}",
                    answer.body
                );
                let wrote: Vec<String> = h
                    .received_since(before)
                    .into_iter()
                    .filter(|line| !line.starts_with("GET "))
                    .collect();
                assert_eq!(wrote, Vec::<String>::new(), "{method} {element}: {named}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, spellings.len() * 5 * 3);
    // Patient 1's own reference in a spelling that is not canonical is refused too.
    for subject in ["Patient/1/", "Patient//1", "./Patient/1", "patient/1"] {
        let resource = observation("o9", json!({"reference": subject}), "x");
        let answer = h.send(all, Method::POST, "/Observation", &resource).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{subject}");
    }
    assert_eq!(
        h.fhir().resource("Observation/o1").unwrap()["category"][0]["coding"][0]["code"],
        "laboratory"
    );
}

/// What may be written: references to patient 1 (relative, versioned, at publicBaseUrl) and to
/// other types, contained references and URNs.
#[tokio::test]
async fn writes_naming_only_the_patient_go_on() {
    let h = Harness::start(Search::CompartmentParameters).await;
    let mut resource = observation("o9", json!({"reference": "Patient/1"}), "x");
    resource["focus"] = json!([
        {"reference": "Patient/1/_history/1"},
        {"reference": "https://fhir.example.org/Patient/1"},
        {"reference": "Observation/o2"},
        {"reference": "#c"},
        {"type": "Patient", "reference": "Patient/1"},
    ]);
    resource["contained"] = json!([{"resourceType": "Observation", "id": "c",
        "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/1"}}]);
    let answer = h
        .send("patient/*.*", Method::POST, "/Observation", &resource)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert!(h.fhir().has("Observation/o9"));
    let patch = json!([{"op": "add", "path": "/focus", "value": [{"reference": "Encounter/e1"}]}]);
    let answer = h
        .send("patient/*.*", Method::PATCH, "/Observation/o1", &patch)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

// In front of a real FHIR server (Medplum's FhirRouter, as `medplum.rs`): the server applies
// the constraint fhirguard adds, reads what fhirguard refuses to count as membership, and
// never sees the writes fhirguard refuses.

/// Straight to the FHIR server, or through fhirguard with `token`.
async fn exchange(
    guard: &Guard,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let body = match body {
        Value::Null => Bytes::new(),
        body => Bytes::from(body.to_string()),
    };
    let headers = [("content-type", "application/fhir+json")];
    let request = crate::support::client::request(method, url, token, &headers, body);
    let answer = guard.http.exchange(request).await;
    (answer.status, answer.json_or_null())
}

#[tokio::test]
async fn items_1_to_3_in_front_of_a_real_fhir_server() {
    if crate::medplum::prepared().is_none() {
        return;
    }
    let (_medplum, port) = tokio::task::spawn_blocking(crate::medplum::start_medplum)
        .await
        .unwrap();
    let upstream = format!("http://127.0.0.1:{port}/fhir");
    let app = SmartApp::serve(
        Stack::builder()
            .key(TestKey::ec_p256("round-3-medplum"))
            .upstream_url(upstream.clone()),
    )
    .await;
    let guard: &Guard = &app;
    let mut seeded = vec![
        json!({"resourceType": "Patient", "id": "p1"}),
        json!({"resourceType": "Patient", "id": "p2"}),
        observation("lab", json!({"reference": "Patient/p1"}), "laboratory"),
        observation("vitals", json!({"reference": "Patient/p1"}), "vital-signs"),
    ];
    seeded.push(observation(
        "x-ext",
        json!({"reference": "Patient/p2", "extension": [
            {"url": "http://example.org/x", "valueReference": {"reference": "Patient/p1"}}]}),
        "laboratory",
    ));
    for resource in seeded {
        let url = format!(
            "{upstream}/Observation/{}",
            resource["id"].as_str().unwrap()
        );
        let url = url.replace("Observation", resource["resourceType"].as_str().unwrap());
        let (status, body) = exchange(guard, Method::PUT, &url, None, &resource).await;
        assert!(status.is_success(), "seed: {body}");
    }
    let token = |scopes: &str| app.token(scopes, "Patient/p1");
    let get = |target: &str, scopes: &str| {
        let (url, token) = (guard.url(target), token(scopes));
        let guard = &guard;
        async move { exchange(guard, Method::GET, &url, Some(&token), &Value::Null).await }
    };
    let lab_only = "patient/Observation.rs?category=laboratory patient/Patient.rs";
    crate::support::poll::eventually(
        "a token is accepted",
        std::time::Duration::from_secs(10),
        || async { get("/Patient/p1", lab_only).await.0 == StatusCode::OK },
    )
    .await;

    // Item 1: the server applies the constraint to a search; every other way is refused.
    let (status, bundle) = get("/Observation", lab_only).await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert_eq!(ids(&bundle), ["lab"]);
    for target in [
        "/Observation/vitals/_history",
        "/Observation/vitals",
        "/Observation/vitals/_history/1",
        "/Patient?_revinclude=Observation:subject",
        "/Patient?_has:Observation:subject:code=x",
    ] {
        assert_eq!(
            get(target, lab_only).await.0,
            StatusCode::FORBIDDEN,
            "{target}"
        );
    }

    // Item 2: the server has x-ext; patient 1 does not, however its subject's extension reads.
    let all = "patient/*.*";
    let (status, _) = exchange(
        guard,
        Method::GET,
        &format!("{upstream}/Observation/x-ext"),
        None,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get("/Observation/x-ext", all).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/Observation/x-ext/_history", all).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, bundle) = get("/Observation", all).await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert!(ids(&bundle).contains(&"vitals".to_owned()), "{bundle}");
    assert!(!ids(&bundle).contains(&"x-ext".to_owned()), "{bundle}");

    // Item 3: the write naming patient 2 never reaches the server.
    for focus in ["Patient/p2", "Patient/p2/", "./Patient/p2", "patient/p2"] {
        let mut resource = observation("w", json!({"reference": "Patient/p1"}), "laboratory");
        resource["focus"] = json!([{"reference": focus}]);
        resource.as_object_mut().unwrap().remove("id");
        let (url, token) = (guard.url("/Observation"), token(all));
        let (status, body) = exchange(guard, Method::POST, &url, Some(&token), &resource).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{focus}: {body}");
    }
    let (_, found) = exchange(
        guard,
        Method::GET,
        &format!("{upstream}/Observation?focus=Patient/p2"),
        None,
        &Value::Null,
    )
    .await;
    assert_eq!(ids(&found), Vec::<String>::new(), "{found}");
}
