//! SMART on FHIR end to end (reference §4, §5.2–5.3, issue 3): fhirguard in-process between a
//! fake OpenID provider and the in-memory FHIR store (`support::fhir_store`) searching every
//! resource of the type, ignoring parameters — so compartment filtering is fhirguard's doing.

use std::ops::Deref;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::fhir_store::Search;
use crate::support::smart_app::SmartApp;
use crate::support::stack::Answer;
use crate::support::token::TestKey;

fn observation(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "subject": {"reference": format!("Patient/{patient}")}})
}

/// fhirguard in front of the store holding two patients, an Observation of each and an
/// Organization; requests go through `Proxy::handle`, with no socket.
struct Harness(SmartApp);

impl Deref for Harness {
    type Target = SmartApp;

    fn deref(&self) -> &SmartApp {
        &self.0
    }
}

impl Harness {
    async fn start() -> Harness {
        let seed = vec![
            json!({"resourceType": "Patient", "id": "1"}),
            json!({"resourceType": "Patient", "id": "2"}),
            observation("o1", "1"),
            observation("o2", "2"),
            json!({"resourceType": "Organization", "id": "org"}),
        ];
        let app = SmartApp::start(TestKey::ec_p256("smart-1"), seed, Search::AllOfType).await;
        Harness(app)
    }

    async fn call(&self, method: Method, target: &str, token: Option<&str>, body: &str) -> Answer {
        self.handle_call(method, target, token, &[], body.to_owned())
            .await
    }

    async fn call_with(
        &self,
        method: Method,
        target: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        self.handle_call(method, target, Some(token), headers, body.to_owned())
            .await
    }

    async fn get(&self, target: &str, token: &str) -> Answer {
        self.call(Method::GET, target, Some(token), "").await
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

#[tokio::test]
async fn a_patient_token_sees_only_its_own_compartment() {
    let h = Harness::start().await;
    let t = h.token("patient/Observation.rs patient/Patient.rs", "Patient/1");

    assert_eq!(h.get("/Observation/o1", &t).await.status, StatusCode::OK);
    let other = h.get("/Observation/o2", &t).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    assert_eq!(other.json_or_null()["issue"][0]["code"], "not-found");
    assert_eq!(h.get("/Patient/1", &t).await.status, StatusCode::OK);
    let head = h.call(Method::HEAD, "/Observation/o2", Some(&t), "").await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    let head = h.call(Method::HEAD, "/Observation/o1", Some(&t), "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(h.get("/Patient/2", &t).await.status, StatusCode::NOT_FOUND);

    // The search is narrowed upstream and the answer filtered.
    let search = h.get("/Observation?status=final", &t).await;
    assert_eq!(search.status, StatusCode::OK);
    assert_eq!(ids(&search.json_or_null()), ["Observation/o1"]);
    assert!(h
        .fhir()
        .log()
        .last()
        .unwrap()
        .ends_with("status=final&subject=Patient/1"));

    assert_eq!(
        h.get("/Observation?subject=Patient/2", &t).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.get("/Patient/2/Observation", &t).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.get("/Patient/1/Observation", &t).await.status,
        StatusCode::OK
    );
    // POST _search: the form body's parameters are checked too, and the search stays a POST
    // whose form carries the client's parameters and the compartment's, none in the URL.
    let post = |form: &'static str| h.call(Method::POST, "/Observation/_search", Some(&t), form);
    assert_eq!(
        post("subject=Patient/2").await.status,
        StatusCode::FORBIDDEN
    );
    let search = post("status=final").await;
    assert_eq!(ids(&search.json_or_null()), ["Observation/o1"]);
    assert!(h.fhir().log().last().unwrap().ends_with(
        "POST /fhir/Observation/_search [application/x-www-form-urlencoded] \
             status=final&subject=Patient/1"
    ));
    // The URL's query and the form are one search; both stay out of the forwarded URL.
    let search = h
        .call(
            Method::POST,
            "/Observation/_search?status=final",
            Some(&t),
            "code=x",
        )
        .await;
    assert_eq!(search.status, StatusCode::OK);
    assert!(h.fhir().log().last().unwrap().ends_with(
        "POST /fhir/Observation/_search [application/x-www-form-urlencoded] \
         status=final&code=x&subject=Patient/1"
    ));
    // A method tunnel in the form, or a body that is not a form, is refused.
    assert_eq!(post("_method=DELETE").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(post("%5Fmethod=GET").await.status, StatusCode::BAD_REQUEST);
    // Scopes: no Encounter, no write.
    assert_eq!(
        h.get("/Encounter?status=x", &t).await.status,
        StatusCode::FORBIDDEN
    );
    let create = h
        .call(
            Method::POST,
            "/Observation",
            Some(&t),
            &observation("x", "1").to_string(),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    // _include of a type the scopes do not grant.
    let include = h
        .get(
            "/Observation?_include=Observation:performer:Practitioner",
            &t,
        )
        .await;
    assert_eq!(include.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn patient_writes_are_checked_against_the_compartment() {
    let h = Harness::start().await;
    let t = h.token("patient/*.*", "Patient/1");
    let theirs = observation("x2", "2").to_string();
    let answer = h
        .call(Method::POST, "/Observation", Some(&t), &theirs)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    let mine = observation("x1", "1").to_string();
    let answer = h.call(Method::POST, "/Observation", Some(&t), &mine).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);

    // Taking over patient 2's observation by updating it with patient 1's subject: refused.
    let takeover = observation("o2", "1").to_string();
    let answer = h
        .call(Method::PUT, "/Observation/o2", Some(&t), &takeover)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    let answer = h
        .call(Method::DELETE, "/Observation/o2", Some(&t), "")
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(h.fhir().has("Observation/o2"));
    let answer = h
        .call(Method::DELETE, "/Observation/o1", Some(&t), "")
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(!h.fhir().has("Observation/o1"));
}

#[tokio::test]
async fn system_tokens_read_everything_and_cannot_write() {
    let h = Harness::start().await;
    let t = h.token("system/*.read", "Patient/1");
    let search = h.get("/Observation", &t).await;
    assert_eq!(
        ids(&search.json_or_null()),
        ["Observation/o1", "Observation/o2"]
    );
    assert_eq!(h.get("/Observation/o2", &t).await.status, StatusCode::OK);
    let answer = h
        .call(
            Method::POST,
            "/Observation",
            Some(&t),
            &observation("x", "1").to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn invalid_scopes_and_fhir_users_are_400() {
    let h = Harness::start().await;
    for (scopes, user) in [
        ("patient/Observation.read user/Patient.read", "Patient/1"),
        ("patient/Observation.read patient/Patient.rs", "Patient/1"),
        ("patient/observation.read", "Patient/1"),
        ("patient/Observation.rs?code:not=x", "Patient/1"),
        ("patient/Observation.read", "RelatedPerson/1"),
    ] {
        let answer = h.get("/Observation/o1", &h.token(scopes, user)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{scopes} {user}");
        assert_eq!(answer.json_or_null()["issue"][0]["code"], "invalid");
    }
}

#[tokio::test]
async fn transactions_are_all_or_nothing_and_batches_answer_per_entry() {
    let h = Harness::start().await;
    let t = h.token("system/Observation.read system/Patient.read", "Patient/1");
    let bundle = |kind: &str| {
        json!({"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": "GET", "url": "Observation/o1"}},
            {"request": {"method": "GET", "url": "Encounter/e1"}},
            {"request": {"method": "GET", "url": "Patient/2"}},
        ]})
        .to_string()
    };
    let before = h.fhir().log().len();
    let answer = h
        .call(Method::POST, "/", Some(&t), &bundle("transaction"))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(
        h.fhir().log().len(),
        before,
        "nothing of a refused transaction is forwarded"
    );

    let answer = h.call(Method::POST, "/", Some(&t), &bundle("batch")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json_or_null()["type"], "batch-response");
    let body = answer.json_or_null();
    let entries = body["entry"].as_array().unwrap();
    let statuses: Vec<&str> = entries
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["200 OK", "403 Forbidden", "200 OK"]);

    assert_eq!(entries[2]["response"]["location"], "Patient/2");
    assert_eq!(
        entries[1]["response"]["outcome"]["issue"][0]["code"],
        "forbidden"
    );

    // Under a patient context, reads and searches inside a batch are checked entry by entry.
    let patient = h.token("patient/Observation.rs", "Patient/1");
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "Observation/o2"}},
        {"request": {"method": "GET", "url": "Observation?status=final"}},
        {"request": {"method": "GET", "url": "Encounter/e1"}},
    ]})
    .to_string();
    let answer = h.call(Method::POST, "/", Some(&patient), &batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json_or_null();
    let entries = body["entry"].as_array().unwrap();
    let statuses: Vec<&str> = entries
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["200 OK", "404 Not Found", "200 OK", "403 Forbidden"]
    );
    assert!(entries[1].get("resource").is_none());
    assert_eq!(ids(&entries[2]["resource"]), ["Observation/o1"]);
    assert!(h
        .fhir()
        .log()
        .contains(&"  entry Observation?status=final&subject=Patient/1".to_owned()));
}

#[tokio::test]
async fn export_needs_unconstrained_system_scopes() {
    let h = Harness::start().await;
    let patient = h.token("patient/*.read", "Patient/1");
    assert_eq!(
        h.get("/$export", &patient).await.status,
        StatusCode::FORBIDDEN
    );
    let system = h.token("system/Observation.read", "Patient/1");
    assert_eq!(
        h.get("/Patient/$export", &system).await.status,
        StatusCode::FORBIDDEN
    );
    h.get("/$export", &system).await;
    assert!(h
        .fhir()
        .log()
        .last()
        .unwrap()
        .ends_with("/fhir/$export?_type=Observation"));
}

#[tokio::test]
async fn discovery_documents_are_served_anonymously() {
    let h = Harness::start().await;
    let answer = h
        .call(Method::GET, "/.well-known/smart-configuration", None, "")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json_or_null()["issuer"], h.stack.idp.issuer());
    assert!(answer.json_or_null()["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("permission-v2")));
    // The endpoints come from the provider's discovery document, not a guessed pattern.
    assert_eq!(
        answer.json_or_null()["token_endpoint"],
        format!("{}/token", h.stack.idp.base_url())
    );
    assert_eq!(
        answer.json_or_null()["authorization_endpoint"],
        format!("{}/authorize", h.stack.idp.base_url())
    );

    let metadata = h.call(Method::GET, "/metadata", None, "").await;
    assert_eq!(metadata.status, StatusCode::OK);
    let security = &metadata.json_or_null()["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "OAuth");
    assert_eq!(
        security["extension"][0]["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
}

/// Where fhirguard must read the answer and the client asks for a format it cannot read, the
/// answer is 406 with an OperationOutcome, before anything is forwarded; JSON is unchanged.
#[tokio::test]
async fn checked_answers_in_formats_fhirguard_cannot_read_are_406() {
    let h = Harness::start().await;
    let t = h.token("patient/Observation.rs patient/Patient.rs", "Patient/1");
    let xml = [("accept", "application/fhir+xml")];
    let cases: [(&str, &[(&str, &str)]); 7] = [
        ("/Observation/o1?_format=xml", &[]),
        ("/Observation/o1?_format=application/fhir%2Bxml", &[]),
        ("/Observation/o1", &xml),
        ("/Observation/o1?_format=json&_format=xml", &[]),
        ("/Observation?status=final&_format=xml", &[]),
        (
            "/Observation/o1/_history",
            &[("accept", "application/xml, text/xml")],
        ),
        (
            "/Patient/1/Observation",
            &[("accept", "application/json;q=0, text/html")],
        ),
    ];
    for (target, headers) in cases {
        let before = h.fhir().log().len();
        let answer = h.call_with(Method::GET, target, &t, headers, "").await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_ACCEPTABLE,
            "{target} {headers:?}"
        );
        assert_eq!(answer.json_or_null()["resourceType"], "OperationOutcome");
        assert_eq!(answer.json_or_null()["issue"][0]["code"], "not-supported");
        let why = answer.diagnostics();
        assert!(why.contains("fhirguard reads only FHIR JSON"), "{why}");
        assert_eq!(h.fhir().log().len(), before, "{target}: nothing forwarded");
    }
    // The form of a POST _search is read for _format too.
    let post = h
        .call_with(
            Method::POST,
            "/Observation/_search",
            &t,
            &[("content-type", "application/x-www-form-urlencoded")],
            "status=final&_format=xml",
        )
        .await;
    assert_eq!(post.status, StatusCode::NOT_ACCEPTABLE);
    // JSON, asked for in any of its names, passes.
    for (target, headers) in [
        ("/Observation/o1?_format=json", &[][..]),
        (
            "/Observation/o1",
            &[("accept", "application/fhir+json")][..],
        ),
        (
            "/Observation/o1",
            &[("accept", "application/fhir+xml;q=0.9, */*;q=0.1")][..],
        ),
        ("/Observation?_format=application/fhir%2Bjson", &xml[..]),
    ] {
        let answer = h.call_with(Method::GET, target, &t, headers, "").await;
        assert_eq!(answer.status, StatusCode::OK, "{target} {headers:?}");
    }
    // A system token's reads are not checked: its formats are the FHIR server's business.
    let system = h.token("system/*.read", "Patient/1");
    let answer = h
        .call_with(Method::GET, "/Observation/o1?_format=xml", &system, &[], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

/// SPEC §7: a body fhirguard inspects and forwards must mean the same to the FHIR server, so
/// duplicate member names — which parsers resolve differently — are refused (400), at any depth
/// and however the name is escaped.
#[tokio::test]
async fn duplicate_json_member_names_are_refused() {
    let h = Harness::start().await;
    let t = h.token("patient/Observation.cruds patient/Patient.rs", "Patient/1");
    let creates = [
        r#"{"resourceType":"Observation","subject":{"reference":"Patient/2"},"subject":{"reference":"Patient/1"}}"#,
        r#"{"resourceType":"Observation","subject":{"reference":"Patient/2","reference":"Patient/1"}}"#,
        r#"{"resourceType":"Observation","subject":{"reference":"Patient/2"},"sub\u006aect":{"reference":"Patient/1"}}"#,
        r#"{"resourceType":"Observation","resourceType":"Observation","subject":{"reference":"Patient/1"}}"#,
    ];
    let before = h.fhir().log().len();
    for body in creates {
        let answer = h.call(Method::POST, "/Observation", Some(&t), body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let why = answer.diagnostics();
        assert!(why.contains("duplicate JSON member name"), "{why}");
    }
    // Bundles, under any token: the entries decide, so they must be read as the server will.
    let system = h.token("system/*.read", "Patient/1");
    let bundles = [
        r#"{"resourceType":"Bundle","type":"batch","type":"transaction","entry":[]}"#,
        r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/1","url":"Patient/2"}}]}"#,
        r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","method":"DELETE","url":"Patient/1"}}]}"#,
    ];
    for body in bundles {
        for token in [&t, &system] {
            let answer = h.call(Method::POST, "/", Some(token), body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        }
    }
    assert_eq!(h.fhir().log().len(), before, "nothing forwarded");
    // The same resource without the duplicate is stored.
    let good = r#"{"resourceType":"Observation","id":"o9","subject":{"reference":"Patient/1"}}"#;
    let answer = h.call(Method::POST, "/Observation", Some(&t), good).await;
    assert!(answer.status.is_success(), "{}", answer.body);
}
