//! SMART as real clients send it (issue 10 parts 1, 2, 3, 6; issue 11 class 2), end to end:
//! fhirguard in-process between the fake OpenID provider and the recording upstream of
//! `tests/support`, driven over HTTP, asserting the status, the answer and what the upstream
//! received. `explain` is run as the real binary.
//!
//! - SMART v2 scopes under an application granted `[Read]` (the v2 letters of a grant);
//! - SMART Backend Services: `system/` tokens without `fhirUser`; relative `fhirUser`;
//! - the launch context's patient (`smartLaunchPatientClaim`), also through the token cache;
//! - the client named by `client_id` (RFC 9068) or `cid` (Okta);
//! - near-miss hints in `explain` and in the audit line, never in the 401;
//! - percent-decoding that would create scopes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::support::binary::Explain;
use crate::support::stack::{Answer, Guard, Stack};
use crate::support::token::{self, now, TestKey, TokenBuilder};
use http::{Method, StatusCode};
use serde_json::Value;

const AUDIENCE: &str = "https://fhir.example.org";

/// fhirguard between a smart provider with two applications — `reader` (`[Read]`) and `writer`
/// (`[Read, Write]`) — and the recording upstream.
struct Clients(Guard);

impl std::ops::Deref for Clients {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.0.stack
    }
}

fn yaml(stack: &Stack, extra: &str) -> String {
    let applications = [
        ("reader", AUDIENCE, r#"["Read"]"#),
        ("writer", AUDIENCE, r#"["Read", "Write"]"#),
    ];
    (stack.config().with(extra))
        .smart(&stack.idp.base_url(), &applications)
        .to_string()
}

impl Clients {
    /// `extra`: top-level YAML added to the config.
    async fn start(extra: &str) -> Clients {
        let guard = Stack::builder()
            .key(TestKey::ec_p256("clients-1"))
            .serve(|stack| yaml(stack, extra))
            .await;
        Clients(guard)
    }

    /// A token of the `reader` application (named by `azp`) with `scopes`; no `fhirUser`.
    fn claims(&self, scopes: &str) -> TokenBuilder {
        token::base_claims(&self.idp.issuer(), AUDIENCE, now())
            .claim("azp", "reader")
            .claim("scp", scopes)
    }

    async fn call(&self, method: Method, target: &str, token: &str) -> Answer {
        self.0
            .handle_call(
                method,
                target,
                Some(token),
                &[("content-type", "application/fhir+json")],
                &br#"{"resourceType":"Observation","status":"final"}"#[..],
            )
            .await
    }

    async fn get(&self, target: &str, token: &str) -> Answer {
        self.call(Method::GET, target, token).await
    }

    /// The target the upstream last received.
    fn last_target(&self) -> String {
        self.upstream.last().target
    }

    fn received(&self) -> usize {
        self.upstream.requests().len()
    }
}

#[tokio::test]
async fn v2_scopes_narrow_an_application_granted_read_as_v1_scopes_do() {
    let c = Clients::start("").await;
    let rs = c
        .claims("patient/Observation.rs")
        .claim("fhirUser", "Patient/example")
        .sign(&c.key);
    let answer = c.get("/Observation?code=x", &rs).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        c.last_target(),
        "/fhir/Observation?code=x&subject=Patient/example"
    );

    // `r` reads by id but cannot search (reference §4.3).
    let r = c
        .claims("patient/Observation.r")
        .claim("fhirUser", "Patient/example")
        .sign(&c.key);
    let before = c.received();
    let answer = c.get("/Observation?code=x", &r).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("granted Read, Search, ReadById ∩ SMART scopes on Observation: ReadById"),
        "{}",
        answer.body
    );
    assert_eq!(c.received(), before, "nothing forwarded");

    // `user/Observation.cruds` under [Read, Write] creates; under [Read] it does not.
    let cruds = c
        .claims("user/Observation.cruds")
        .claim("azp", "writer")
        .claim("fhirUser", "Practitioner/7")
        .sign(&c.key);
    let answer = c.call(Method::POST, "/Observation", &cruds).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let last = c.upstream.last();
    assert_eq!(
        (last.method.as_str(), last.target.as_str()),
        ("POST", "/fhir/Observation")
    );
    let read_only = c
        .claims("user/Observation.cruds")
        .claim("fhirUser", "Practitioner/7")
        .sign(&c.key);
    let answer = c.call(Method::POST, "/Observation", &read_only).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    let answer = c.call(Method::DELETE, "/Observation/1", &cruds).await;
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "Write never covers Delete"
    );
}

#[tokio::test]
async fn backend_services_tokens_need_no_fhir_user() {
    let c = Clients::start("").await;
    for scopes in [
        "system/*.rs",
        "system/*.read",
        "system/Observation.rs system/Patient.rs",
    ] {
        let token = c.claims(scopes).sign(&c.key);
        let answer = c.get("/Patient/1", &token).await;
        assert_eq!(answer.status, StatusCode::OK, "{scopes}: {}", answer.body);
        assert_eq!(c.last_target(), "/fhir/Patient/1");
        let answer = c.get("/Observation?code=x", &token).await;
        assert_eq!(answer.status, StatusCode::OK, "{scopes}: {}", answer.body);
        assert_eq!(c.last_target(), "/fhir/Observation?code=x", "not confined");
        let last = c.upstream.last();
        assert!(last.headers.get("x-fhirguard-fhir-user").is_none());
        let answer = c.call(Method::POST, "/Observation", &token).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{scopes}");
    }
    // patient/ scopes still need one: 401 naming the rule.
    let token = c.claims("patient/Observation.rs").sign(&c.key);
    let answer = c.get("/Observation?code=x", &token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(
            "The token has patient/ scopes but no fhirUser claim (or extension_fhirUser); \
             patient/ and user/ scopes need one, system/ scopes do not"
        ),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_relative_fhir_user_confines_like_an_absolute_one() {
    let c = Clients::start(r#"publicBaseUrl: "https://fhir.example.org/r4""#).await;
    for fhir_user in ["Patient/1", "https://fhir.example.org/r4/Patient/1"] {
        let token = c
            .claims("patient/Observation.rs")
            .claim("fhirUser", fhir_user)
            .sign(&c.key);
        let answer = c.get("/Observation?status=final", &token).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{fhir_user}: {}",
            answer.body
        );
        assert_eq!(
            c.last_target(),
            "/fhir/Observation?status=final&subject=Patient/1"
        );
        let answer = c.get("/Observation?subject=Patient/2", &token).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{fhir_user}");
    }
    // An absolute fhirUser of another server is still refused (400).
    let token = c
        .claims("patient/Observation.rs")
        .claim("fhirUser", "https://other.example/Patient/1")
        .sign(&c.key);
    let answer = c.get("/Observation?status=final", &token).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
}

#[tokio::test]
async fn the_launch_patient_claim_confines_patient_scopes_when_configured() {
    let c = Clients::start("smartLaunchPatientClaim: patient").await;
    let launch = |patient: &str| {
        c.claims("patient/Observation.rs")
            .claim("fhirUser", "Practitioner/7")
            .claim("patient", patient)
            .sign(&c.key)
    };
    // Two tokens, alike but for the patient: each keeps its own (the grant is memoised per
    // verified token, and asked twice each to go through the token cache).
    for _ in 0..2 {
        for patient in ["456", "789"] {
            let answer = c.get("/Observation?status=final", &launch(patient)).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            assert_eq!(
                c.last_target(),
                format!("/fhir/Observation?status=final&subject=Patient/{patient}")
            );
        }
    }
    let token = launch("456");
    for _ in 0..2 {
        c.get("/Observation?status=final", &token).await;
        assert!(c.last_target().ends_with("subject=Patient/456"));
    }
    assert_eq!(
        c.get("/Observation?subject=Patient/789", &token)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Without the claim: fhirUser's (the Practitioner's) compartment, as before.
    let practitioner = c
        .claims("patient/Observation.rs")
        .claim("fhirUser", "Practitioner/7")
        .sign(&c.key);
    let answer = c.get("/Observation?status=final", &practitioner).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        c.last_target().contains("Practitioner/7"),
        "{}",
        c.last_target()
    );
    // A value that is no Patient id is refused; a patient/ token without fhirUser still is.
    let bad = launch("Practitioner/7");
    assert_eq!(
        c.get("/Observation?status=final", &bad).await.status,
        StatusCode::BAD_REQUEST
    );
    let no_user = c
        .claims("patient/Observation.rs")
        .claim("patient", "456")
        .sign(&c.key);
    assert_eq!(
        c.get("/Observation?status=final", &no_user).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Not configured: the claim is ignored.
    let plain = Clients::start("").await;
    let token = plain
        .claims("patient/Observation.rs")
        .claim("fhirUser", "Practitioner/7")
        .claim("patient", "456")
        .sign(&plain.key);
    let answer = plain.get("/Observation?status=final", &token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(!plain.last_target().contains("Patient/456"));
}

#[tokio::test]
async fn client_id_and_cid_name_the_client() {
    let c = Clients::start("").await;
    for claim in ["client_id", "cid"] {
        let token = c
            .claims("system/*.rs")
            .without("azp")
            .claim(claim, "reader")
            .sign(&c.key);
        let answer = c.get("/Patient/1", &token).await;
        assert_eq!(answer.status, StatusCode::OK, "{claim}: {}", answer.body);
        assert_eq!(
            c.upstream.last().headers["x-fhirguard-client-id"],
            "reader",
            "{claim}"
        );
    }
    let token = c.claims("system/*.rs").without("azp").sign(&c.key);
    let answer = c.get("/Patient/1", &token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge
            .contains("The token names no client: it has no azp, appid, client_id or cid claim"),
        "{challenge}"
    );
}

#[tokio::test]
async fn scopes_decoded_into_several_are_refused() {
    let c = Clients::start("").await;
    let writer = |scopes: &str| {
        c.claims(scopes)
            .claim("azp", "writer")
            .claim("fhirUser", "Practitioner/7")
            .sign(&c.key)
    };
    for scopes in [
        "user/Patient.read%20user/Observation.write",
        "user/Patient.read%0Auser/Observation.write",
        "user/Patient.read%0D%0Auser/Observation.write",
        "user/Patient.read%09user/Observation.write",
        "user/Patient.read%00user/Observation.write",
        "user/Patient.read%2520user/Observation.write",
        "openid%20user/Observation.write",
    ] {
        let before = c.received();
        let answer = c.call(Method::POST, "/Observation", &writer(scopes)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{scopes}: {}",
            answer.body
        );
        let outcome: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(outcome["issue"][0]["code"], "invalid");
        assert!(
            outcome["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .starts_with("Invalid SMART on FHIR scope"),
            "{}",
            answer.body
        );
        assert_eq!(c.received(), before, "{scopes}: nothing forwarded");
    }
    // Encoded constraints only narrow: `%3F` adds one, ANDed into the forwarded search.
    let constrained = writer("user/Observation.rs%3Fcategory=laboratory");
    let answer = c.get("/Observation?code=x", &constrained).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        c.last_target().contains("category=laboratory"),
        "{}",
        c.last_target()
    );
    // The Entra workaround still works.
    let entra = writer("user%2FObservation.write");
    let answer = c.call(Method::POST, "/Observation", &entra).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

/// A writer every clone shares, for capturing the log in-process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The near-miss hint goes to the audit line and not into the 401. Tracing's call-site
/// interest is process-wide, and the other tests of this binary hit the audit call sites with
/// no subscriber of theirs: the check runs in a process of its own (this binary, filtered to
/// the test below).
#[test]
fn near_miss_hints_are_logged_but_not_answered() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "smart_clients::near_miss_hints_in_a_process_of_their_own",
            "--include-ignored",
            "--test-threads=1",
        ])
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// [`near_miss_hints_are_logged_but_not_answered`], in its own process. The test runs on one
/// thread, so the subscriber set here sees the proxy's tasks.
#[tokio::test(flavor = "current_thread")]
#[ignore = "run in a process of its own by near_miss_hints_are_logged_but_not_answered"]
async fn near_miss_hints_in_a_process_of_their_own() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let c = Clients::start("").await;
    let token = token::base_claims(&c.idp.issuer(), &format!("{AUDIENCE}/"), now())
        .claim("azp", "reader")
        .claim("scp", "system/*.rs")
        .sign(&c.key);
    let answer = c.get("/Patient/1", &token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    for text in [challenge, answer.body.as_str()] {
        assert!(
            text.contains(&format!("The audience '{AUDIENCE}/' is invalid")),
            "{text}"
        );
        assert!(!text.contains("trailing"), "the hint leaked: {text}");
        assert!(!text.contains("audienceIgnoreTrailingSlash"), "{text}");
    }
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let audit: Value = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["target"] == "fhirguard::audit")
        .unwrap_or_else(|| panic!("no audit line in:\n{log}"));
    let hint = audit["fields"]["hint"].as_str().unwrap();
    assert!(
        hint.contains(&format!(
            "configured audience '{AUDIENCE}' only by a trailing '/'"
        )),
        "{audit}"
    );
    assert_eq!(audit["fields"]["status"], 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_expansion_the_client_claim_the_compartment_and_the_hint() {
    let stack = Stack::builder()
        .key(TestKey::ec_p256("clients-1"))
        .start()
        .await;
    let Stack { idp, key, .. } = &stack;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fhirguard.yaml");
    std::fs::write(&path, yaml(&stack, "smartLaunchPatientClaim: patient")).unwrap();
    let run =
        |token: String, target: &'static str| Explain::new(&path).token(&token).path(target).run();

    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("client_id", "reader")
        .claim("scp", "patient/Observation.rs")
        .claim("fhirUser", "Practitioner/7")
        .claim("patient", "456")
        .sign(key);
    let output = run(token.clone(), "/Observation?code=x").await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(0), "{stdout}");
    for expected in [
        "step 7 client: reader (named by the client_id claim)",
        "step 8 granted: Read, Search, ReadById (Read covers Search, ReadById)",
        "step 8 SMART scopes: patient/Observation.rs (context patient)",
        "step 8 compartment: Patient/456 (from the launch-context claim patient)",
        "verdict: ALLOW",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(&token), "explain printed the token");

    let near_miss = token::base_claims(&idp.issuer(), &format!("api://{AUDIENCE}"), now())
        .claim("azp", "reader")
        .claim("scp", "system/*.rs")
        .sign(key);
    let output = run(near_miss, "/Patient/1").await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(1), "{stdout}");
    assert!(stdout.contains("verdict: 401 audience"), "{stdout}");
    assert!(
        stdout.contains("hint: the token's audience differs from the configured audience"),
        "{stdout}"
    );
    assert!(stdout.contains("'api://' prefix"), "{stdout}");
}
