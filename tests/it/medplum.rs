//! SMART enforcement in front of a real FHIR server: Medplum's `FhirRouter` over its in-memory
//! repository (npm `@medplum/fhir-router`, `tests/medplum/fhir-server.mjs`), with fhirguard
//! in-process between it and a fake OpenID provider (issue 3 "Tests").
//!
//! Seeds two patients with an observation each, then pins what a `patient/` token for patient 1
//! can and cannot do, what a `system/*.read` token can do, and how transactions and batches are
//! answered. Needs Node.js and `npm ci --prefix tests/medplum` (.ci/run does it; the test runs it
//! when `node_modules` is missing). Without `node` the test is skipped, except under CI (env `CI`
//! set), where that fails it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::client::{self, Answer};
use crate::support::poll::eventually;
use crate::support::stack::{Guard, Stack};
use crate::support::token::{self, now, TestKey};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

const AUDIENCE: &str = "https://fhir.example.org/smart";
const BASE: &str = "https://fhir.example.org";

/// The Node server, killed when dropped (it also exits when its stdin closes).
pub(crate) struct NodeServer(Child);

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn medplum_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/medplum")
}

/// `Some(())` when Node.js can run and the packages are installed (installing them if needed);
/// `None` (skip) only outside CI.
pub(crate) fn prepared() -> Option<()> {
    let in_ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    let node = Command::new("node").arg("--version").output();
    if !node.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(!in_ci, "CI is set but `node --version` failed: {node:?}");
        eprintln!("skipping the Medplum suite: `node` is not installed");
        return None;
    }
    crate::interop_oidc::npm_ci_when_missing(&medplum_dir(), "@medplum/fhir-router");
    Some(())
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Starts the server and reads its `{"port": N}` greeting.
pub(crate) fn start_medplum() -> (NodeServer, u16) {
    let (server, greeting) = start_node(&medplum_dir(), "fhir-server.mjs", &[]);
    let port = greeting["port"].as_u64().expect("port") as u16;
    (server, port)
}

/// Starts a Node script with `env`, and reads the one line of JSON it greets with.
fn start_node(dir: &Path, script: &str, env: &[(&str, &str)]) -> (NodeServer, Value) {
    let mut child = Command::new("node")
        .arg(script)
        .arg("0")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("stdout");
    let server = NodeServer(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("greeting");
    let greeting: Value = serde_json::from_str(&line)
        .unwrap_or_else(|error| panic!("bad greeting {line:?}: {error}"));
    (server, greeting)
}

/// fhirguard in front of Medplum; the stack's fake primary authority mints the suite's own
/// tokens (when the config names it).
struct Suite {
    guard: Guard,
    /// Medplum's FHIR base, for seeding it directly.
    upstream: String,
}

impl Suite {
    /// fhirguard on the YAML `config` writes, in front of Medplum at `upstream`, which is seeded
    /// with two patients, a practitioner and an observation for each patient.
    async fn start(upstream: String, config: impl FnOnce(&Stack) -> String) -> Suite {
        let guard = Stack::builder()
            .key(TestKey::ec_p256("smart-1"))
            .upstream_url(upstream.clone())
            .serve(config)
            .await;
        let suite = Suite { guard, upstream };
        for resource in [
            json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]}),
            json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}]}),
            json!({"resourceType": "Practitioner", "id": "doc"}),
            observation("o1", "p1"),
            observation("o2", "p2"),
        ] {
            suite.seed(resource).await;
        }
        suite
    }

    async fn send(&self, method: Method, url: String, token: Option<&str>, body: &Value) -> Answer {
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let headers = [("content-type", "application/fhir+json")];
        let request = client::request(method, &url, token, &headers, body);
        self.guard.http.exchange(request).await
    }

    /// Through fhirguard.
    async fn call(&self, method: Method, target: &str, token: &str, body: &Value) -> Answer {
        self.send(method, self.guard.url(target), Some(token), body)
            .await
    }

    async fn get(&self, target: &str, token: &str) -> Answer {
        self.call(Method::GET, target, token, &Value::Null).await
    }

    /// A client_credentials token from the real OpenID provider at `issuer`.
    async fn issued(&self, issuer: &str, client: &str, scope: &str) -> String {
        use base64::Engine as _;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{client}:{client}-secret"));
        let form = format!(
            "grant_type=client_credentials&scope={}",
            scope.replace(' ', "+")
        );
        let basic = format!("Basic {basic}");
        let headers = [
            ("authorization", basic.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        let url = format!("{issuer}/token");
        let request = client::request(Method::POST, &url, None, &headers, form);
        let response = self.guard.http.exchange(request).await;
        let status = response.status;
        let answer: Value = response.json_or_null();
        assert_eq!(status, StatusCode::OK, "{client} {scope}: {answer}");
        answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Straight to the FHIR server (seeding).
    async fn seed(&self, resource: Value) {
        let url = format!(
            "{}/{}/{}",
            self.upstream,
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let answer = self.send(Method::PUT, url, None, &resource).await;
        assert!(answer.status.is_success(), "seed: {}", answer.body);
    }

    fn token(&self, scopes: &str, fhir_user: &str) -> String {
        let Stack { idp, key, .. } = &self.guard.stack;
        token::base_claims(&idp.issuer(), AUDIENCE, now())
            .claim("azp", "app")
            .claim("scp", scopes)
            .claim("fhirUser", format!("{BASE}/{fhir_user}"))
            .sign(key)
    }
}

fn observation(id: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": { "text": "heart rate" },
        "subject": { "reference": format!("Patient/{patient}") },
        "performer": [{ "reference": "Practitioner/doc" }],
    })
}

fn ids(bundle: &Value) -> Vec<String> {
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let r = &e["resource"];
                    format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap_or("-"),
                        r["id"].as_str().unwrap_or("-")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn smart_tokens_in_front_of_a_real_fhir_server() {
    if prepared().is_none() {
        return;
    }
    let (_medplum, port) = tokio::task::spawn_blocking(start_medplum).await.unwrap();
    let upstream = format!("http://127.0.0.1:{port}/fhir");
    let suite = Suite::start(upstream, |stack| {
        (stack.config().with(&format!("publicBaseUrl: \"{BASE}\"")))
            .smart(&stack.idp.base_url(), &[("app", AUDIENCE, r#"["*"]"#)])
            .to_string()
    })
    .await;
    let s = &suite;

    // Ready: the provider's keys are held once a system token is accepted.
    let system = s.token("system/*.read", "Patient/p1");
    eventually(
        "a system token is accepted",
        Duration::from_secs(10),
        || async { s.get("/Patient/p1", &system).await.status == StatusCode::OK },
    )
    .await;

    // patient/Observation.rs for patient 1: its own data only.
    let p1 = s.token("patient/Observation.rs", "Patient/p1");
    assert_eq!(s.get("/Observation/o1", &p1).await.status, StatusCode::OK);
    assert_eq!(
        s.get("/Observation/o2", &p1).await.status,
        StatusCode::NOT_FOUND
    );
    let search = s.get("/Observation", &p1).await;
    assert_eq!(search.status, StatusCode::OK, "{}", search.body);
    assert_eq!(ids(&search.json_or_null()), ["Observation/o1"]);
    let search = s.get("/Observation?code=heart%20rate", &p1).await;
    assert_eq!(ids(&search.json_or_null()), ["Observation/o1"]);
    assert_eq!(
        s.get("/Observation?subject=Patient/p2", &p1).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get("/Patient/p2/Observation", &p1).await.status,
        StatusCode::FORBIDDEN
    );
    // No Patient scope: reading oneself is refused too; including a non-granted type is 403.
    assert_eq!(
        s.get("/Patient/p1", &p1).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get(
            "/Observation?_include=Observation:performer:Practitioner",
            &p1
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let create = s
        .call(Method::POST, "/Observation", &p1, &observation("n1", "p1"))
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN, "rs cannot create");

    // With create: for oneself yes, for patient 2 no.
    let p1_writer = s.token("patient/Observation.crs patient/Patient.rs", "Patient/p1");
    let theirs = s
        .call(
            Method::POST,
            "/Observation",
            &p1_writer,
            &observation("n2", "p2"),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN, "{}", theirs.body);
    let mine = s
        .call(
            Method::POST,
            "/Observation",
            &p1_writer,
            &observation("n1", "p1"),
        )
        .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);
    // Includes of granted types: the patient's own record is included, nobody else's.
    let included = s
        .get(
            "/Observation?_include=Observation:subject:Patient",
            &p1_writer,
        )
        .await;
    assert_eq!(included.status, StatusCode::OK, "{}", included.body);
    let seen = ids(&included.json_or_null());
    assert!(seen.contains(&"Patient/p1".to_owned()), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|id| id == "Patient/p2" || id == "Observation/o2"),
        "{seen:?}"
    );

    // system/*.read: everything readable, nothing writable.
    let all = s.get("/Observation", &system).await;
    assert!(
        ids(&all.json_or_null()).contains(&"Observation/o2".to_owned()),
        "{}",
        all.body
    );
    assert_eq!(
        s.get("/Observation/o2", &system).await.status,
        StatusCode::OK
    );
    let write = s
        .call(
            Method::POST,
            "/Observation",
            &system,
            &observation("n3", "p2"),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);

    // A transaction with one denied entry is refused whole, and nothing is created.
    let reader = s.token("system/Observation.read system/Patient.read", "Patient/p1");
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"resource": observation("t1", "p1"), "request": {"method": "PUT", "url": "Observation/t1"}},
    ]});
    let answer = s.call(Method::POST, "/", &reader, &transaction).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(
        s.get("/Observation/t1", &system).await.status,
        StatusCode::NOT_FOUND
    );

    // A batch is answered entry by entry, in order.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "Practitioner/doc"}},
        {"request": {"method": "GET", "url": "Patient/p2"}},
    ]});
    let answer = s.call(Method::POST, "/", &reader, &batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json_or_null();
    let entries = body["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 3);
    let status = |i: usize| {
        entries[i]["response"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(status(0).starts_with("200"), "{}", entries[0]);
    assert_eq!(status(1), "403 Forbidden");
    assert!(status(2).starts_with("200"), "{}", entries[2]);
    assert_eq!(entries[2]["resource"]["id"], "p2");

    // Under a patient context the batch's reads and searches are checked entry by entry.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "Observation/o2"}},
        {"request": {"method": "GET", "url": "Observation?code=heart%20rate"}},
    ]});
    let answer = s.call(Method::POST, "/", &p1, &batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json_or_null();
    let entries = body["entry"].as_array().expect("entries");
    assert!(status_of(&entries[0]).starts_with("200"), "{}", entries[0]);
    assert_eq!(status_of(&entries[1]), "404 Not Found", "{}", entries[1]);
    assert!(entries[1].get("resource").is_none());
    // o1 and the n1 created above; never patient 2's o2.
    assert_eq!(
        ids(&entries[2]["resource"]),
        ["Observation/n1", "Observation/o1"],
        "{}",
        entries[2]
    );
}

fn status_of(entry: &Value) -> String {
    entry["response"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Issue 10 "Tests": SMART clients as a real OpenID provider (npm `oidc-provider`) issues their
/// tokens — RFC 9068 claims only for a backend service (`client_id`, `scope`, no `fhirUser`), a
/// relative `fhirUser` for a patient app, a practitioner with a `patient` launch claim for an EHR
/// launch — through fhirguard to Medplum's FHIR server, every application `[Read]`.
#[tokio::test]
async fn smart_clients_of_a_real_identity_provider() {
    if prepared().is_none() {
        return;
    }
    crate::interop_oidc::ensure_node_modules();
    let (_medplum, port) = tokio::task::spawn_blocking(start_medplum).await.unwrap();
    let upstream = format!("http://127.0.0.1:{port}/fhir");
    let env = [
        ("PATIENT_FHIR_USER", "Patient/p1"),
        ("PRACTITIONER", "Practitioner/doc"),
        ("LAUNCH_PATIENT", "p1"),
        ("RESOURCE", AUDIENCE),
    ];
    let (_provider, greeting) =
        tokio::task::spawn_blocking(move || start_node(&interop_dir(), "oidc-provider.mjs", &env))
            .await
            .unwrap();
    let issuer = greeting["issuer"].as_str().expect("issuer").to_owned();
    let applications =
        ["backend-app", "patient-app", "ehr-app"].map(|client| (client, AUDIENCE, r#"["Read"]"#));
    let suite = Suite::start(upstream, |stack| {
        let extra = format!("publicBaseUrl: \"{BASE}\"\nsmartLaunchPatientClaim: patient");
        (stack.config().with(&extra))
            .smart(&issuer, &applications)
            .to_string()
    })
    .await;
    let s = &suite;

    // SMART Backend Services: `system/*.rs`, the client named by `client_id`, no fhirUser.
    let backend = s.issued(&issuer, "backend-app", "system/*.rs").await;
    eventually(
        "the backend token is accepted",
        Duration::from_secs(10),
        || async { s.get("/Observation/o2", &backend).await.status == StatusCode::OK },
    )
    .await;
    let all = s.get("/Observation", &backend).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(
        ids(&all.json_or_null()),
        ["Observation/o1", "Observation/o2"]
    );
    let write = s
        .call(
            Method::POST,
            "/Observation",
            &backend,
            &observation("b1", "p1"),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "[Read] cannot create");

    // A patient app: v2 `rs` under [Read], a relative fhirUser.
    let patient = s
        .issued(&issuer, "patient-app", "patient/Observation.rs")
        .await;
    confined_to_p1(s, &patient).await;
    // `r` reads but cannot search.
    let read_only = s
        .issued(&issuer, "patient-app", "patient/Observation.r")
        .await;
    assert_eq!(
        s.get("/Observation/o1", &read_only).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.get("/Observation", &read_only).await.status,
        StatusCode::FORBIDDEN
    );

    // An EHR launch: fhirUser is the practitioner, the `patient` claim chooses the compartment.
    let ehr = s.issued(&issuer, "ehr-app", "patient/Observation.rs").await;
    confined_to_p1(s, &ehr).await;
}

/// A `patient/Observation.rs` token of a `[Read]` application confined to patient p1: its own
/// observation read, p2's 404, searches (GET and POST `_search`, which reaches Medplum as a
/// POST) confined to p1, creates refused.
async fn confined_to_p1(s: &Suite, token: &str) {
    assert_eq!(s.get("/Observation/o1", token).await.status, StatusCode::OK);
    assert_eq!(
        s.get("/Observation/o2", token).await.status,
        StatusCode::NOT_FOUND
    );
    let search = s.get("/Observation?code=heart%20rate", token).await;
    assert_eq!(search.status, StatusCode::OK, "{}", search.body);
    assert_eq!(ids(&search.json_or_null()), ["Observation/o1"]);
    let response = s
        .guard
        .call(
            Method::POST,
            "/Observation/_search",
            Some(token),
            &[("content-type", "application/x-www-form-urlencoded")],
            "code=heart+rate",
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let form: Value = response.json_or_null();
    assert_eq!(ids(&form), ["Observation/o1"], "{form}");
    let write = s
        .call(
            Method::POST,
            "/Observation",
            token,
            &observation("n1", "p1"),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "[Read] cannot create");
}
