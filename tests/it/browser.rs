//! A real browser (issue 19 part 6): Debian's `chromium`, driven by npm `puppeteer-core`, runs a
//! SMART app built on the official JavaScript client (npm `fhirclient` 2.6, its browser bundle),
//! served from its own loopback origin, against fhirguard in front of a real FHIR server
//! (Medplum's `FhirRouter`, `tests/medplum/fhir-server.mjs`) and a real OpenID provider (npm
//! `oidc-provider` v9, `tests/browser/oidc-provider.mjs`).
//!
//! The app does a standalone launch: fhirclient discovers the endpoints at fhirguard's
//! `/.well-known/smart-configuration` (a CORS request from the app's origin), finds PKCE S256
//! there and sends the authorization request with a code challenge; the browser signs in at the
//! provider's login page and allows the consent page; fhirclient redeems the code at the token
//! endpoint (CORS again, answered by the provider for the app's origin). Then, through fhirguard,
//! the page reads its patient's Observations (200, only patient p1's), is refused another
//! patient's search (403) and read (404) with statuses (and `X-Request-ID`) it can read, and
//! reads 401 with `WWW-Authenticate: Bearer error="invalid_token"` for a corrupted token and,
//! after waiting for it, for its expired token (fhirguard's `clockSkew: 0s`). The same request with the same valid
//! token from an origin `cors.origins` does not list is blocked by the browser at the preflight,
//! and succeeds from the app's origin.
//!
//! Everything the test asserts comes from the browser: `tests/browser/drive.mjs` prints one line
//! of JSON with what the page read (`tests/browser/app/app.js`), the requests chromium made for
//! discovery and authorization, and its console messages; the provider prints the authorization
//! requests it received. All on 127.0.0.1; every child process is stopped at the end, and each
//! stops by itself when its stdin closes (the driver closes chromium then).
//!
//! Needs Node.js, chromium (`/usr/bin/chromium`, or the executable named by env `CHROMIUM`), and
//! the npm packages of `tests/browser` and `tests/medplum` (`.ci/run` installs them all; this
//! test runs `npm ci` when a `node_modules` is missing). Without Node.js or chromium the test is
//! skipped, except under CI (env `CI` set), where that fails it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::interop_oidc::{self, npm_ci_when_missing, spawn_node_in, wait_for_line, ChildGuard};
use crate::medplum;
use crate::support::client::{self, HttpClient};
use crate::support::stack::Stack;
use http::Method;
use serde_json::{json, Value};

/// The SMART app's client id at the provider and in fhirguard's config.
const CLIENT_ID: &str = "browser-app";
/// The resource indicator the provider issues access tokens for: their `aud`.
const RESOURCE: &str = "https://fhir.example.test/browser";
/// The provider's account for patient p1 (`tests/browser/oidc-provider.mjs`).
const LOGIN: &str = "alice";
const PASSWORD: &str = "alice-password";
/// How long the access tokens live: long enough for every read before the page waits for the
/// token to expire, short enough that the wait is bearable.
const TOKEN_TTL_SECONDS: u64 = 20;
/// The driver's own deadline for the whole run (every step also has its own timeout).
const DRIVER_DEADLINE: Duration = Duration::from_secs(150);
/// How long the test waits for the driver's report: its deadline plus its start and shutdown.
const REPORT_DEADLINE: Duration = Duration::from_secs(180);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The chromium executable: env `CHROMIUM`, else `chromium` on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
}

/// The chromium executable when Node.js and chromium can run and the npm packages are installed
/// (installing them when missing); `None` (skip) only outside CI.
fn prepared() -> Option<PathBuf> {
    let in_ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    interop_oidc::node_available()?;
    let Some(chromium) = chromium() else {
        assert!(
            !in_ci,
            "CI is set but there is no chromium (install the Debian package, or set CHROMIUM)"
        );
        eprintln!(
            "skipping the browser suite: chromium is not installed (apt-get install chromium)"
        );
        return None;
    };
    let version = Command::new(&chromium).arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            !in_ci,
            "CI is set but `{} --version` failed: {version:?}",
            chromium.display()
        );
        eprintln!(
            "skipping the browser suite: `{} --version` failed",
            chromium.display()
        );
        return None;
    }
    npm_ci_when_missing(&browser_dir(), "puppeteer-core");
    npm_ci_when_missing(&browser_dir(), "fhirclient");
    medplum::prepared()?;
    Some(chromium)
}

fn observation(id: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": { "text": "heart rate" },
        "subject": { "reference": format!("Patient/{patient}") },
    })
}

/// Two patients with an observation each, written straight to the FHIR server.
async fn seed(http: &HttpClient, upstream: &str) {
    for resource in [
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]}),
        json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}]}),
        observation("o1", "p1"),
        observation("o2", "p2"),
    ] {
        let url = format!(
            "{upstream}/{}/{}",
            resource["resourceType"].as_str().expect("type"),
            resource["id"].as_str().expect("id")
        );
        let headers = [("content-type", "application/fhir+json")];
        let request = client::request(Method::PUT, &url, None, &headers, resource.to_string());
        let answer = http.exchange(request).await;
        assert!(answer.status.is_success(), "seed {url}: {}", answer.body);
    }
}

/// The `WWW-Authenticate` of `answer`, a 401 `invalid_token` the page read (`case` names it).
fn invalid_token(case: &str, answer: &Value, context: &dyn Fn() -> String) -> String {
    assert_eq!(answer["status"], 401, "{case}\n{}", context());
    let challenge = answer["wwwAuthenticate"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: WWW-Authenticate not readable\n{}", context()));
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
        "{case}: {challenge}"
    );
    challenge.to_owned()
}

/// Every line received so far, without waiting.
fn drain(lines: &Receiver<String>) -> Vec<String> {
    lines.try_iter().collect()
}

/// The authorization requests the provider received, from its `{"event":"authorize"}` lines.
fn authorize_requests(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "authorize")
        .map(|event| event["query"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_app_in_a_real_browser() {
    let Some(chromium) = prepared() else {
        return;
    };
    let dir = browser_dir();

    let (_medplum, medplum_port) = tokio::task::spawn_blocking(medplum::start_medplum)
        .await
        .expect("Medplum starts");
    let upstream = format!("http://127.0.0.1:{medplum_port}/fhir");
    let http = HttpClient::default();
    seed(&http, &upstream).await;

    let (mut app, greeting, _) = spawn_node_in(&dir, "app server", "app-server.mjs", &[]);
    let app_origin = greeting["origin"].as_str().expect("origin").to_owned();
    let foreign_origin = greeting["foreignOrigin"]
        .as_str()
        .expect("foreignOrigin")
        .to_owned();

    let ttl = TOKEN_TTL_SECONDS.to_string();
    let (mut provider, greeting, provider_events) = spawn_node_in(
        &dir,
        "oidc-provider",
        "oidc-provider.mjs",
        &[
            ("APP_ORIGIN", &app_origin),
            ("CLIENT_ID", CLIENT_ID),
            ("RESOURCE", RESOURCE),
            ("ACCESS_TOKEN_TTL", &ttl),
        ],
    );
    let issuer = greeting["issuer"].as_str().expect("issuer").to_owned();

    // fhirguard in front of Medplum, trusting the provider, CORS for the app's origin only.
    let guard = Stack::builder()
        .upstream_url(upstream.clone())
        .serve(|stack| {
            let extra = format!(
                r#"clockSkew: 0s
smartLaunchPatientClaim: patient
cors:
  origins: ["{app_origin}"]
  headers: ["*"]
  methods: ["*"]
  maxAge: 600
  allowCredentials: false"#
            );
            (stack.config().with(&extra))
                .smart(&issuer, &[(CLIENT_ID, RESOURCE, r#"["Read"]"#)])
                .to_string()
        })
        .await;
    let fhir_base = guard.url("");

    // The browser run: one line of JSON from the driver.
    let deadline = DRIVER_DEADLINE.as_secs().to_string();
    let chromium = chromium.to_string_lossy().into_owned();
    let env = [
        ("CHROMIUM", chromium.as_str()),
        ("APP_ORIGIN", app_origin.as_str()),
        ("FOREIGN_ORIGIN", foreign_origin.as_str()),
        ("FHIR_BASE", fhir_base.as_str()),
        ("CLIENT_ID", CLIENT_ID),
        ("LOGIN", LOGIN),
        ("PASSWORD", PASSWORD),
        ("DEADLINE_SECONDS", deadline.as_str()),
    ];
    let started = Instant::now();
    let (mut driver, report) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move || {
            let mut command = Command::new("node");
            command.arg("drive.mjs").current_dir(&dir).envs(env);
            let (mut driver, stdout, _stderr) = ChildGuard::spawn("drive.mjs", &mut command);
            let report = wait_for_line(
                &mut driver,
                &stdout,
                Instant::now() + REPORT_DEADLINE,
                "report on stdout",
                |line| serde_json::from_str::<Value>(line).ok(),
            );
            (driver, report)
        }
    })
    .await
    .expect("the driver runs");
    let exit = tokio::task::block_in_place(|| driver.close_stdin_and_wait(Duration::from_secs(15)));
    eprintln!("browser run: {:?}", started.elapsed());

    let events = drain(&provider_events);
    let context = || {
        format!(
            "report:\n{}\ndriver stderr:\n{}\nprovider stdout:\n{}\nprovider stderr:\n{}",
            serde_json::to_string_pretty(&report).unwrap_or_default(),
            driver.stderr_text(),
            events.join("\n"),
            provider.stderr_text(),
        )
    };
    assert!(
        report["error"].is_null(),
        "the browser run failed\n{}",
        context()
    );
    assert!(
        exit.is_some_and(|status| status.success()),
        "the driver did not exit cleanly ({exit:?})\n{}",
        context()
    );
    let page = &report["app"];

    // Discovery went through fhirguard's smart-configuration, readable from the app's origin,
    // and was enough: no fallback to /metadata.
    let discovery_url = format!("{fhir_base}/.well-known/smart-configuration");
    let requests = report["network"].as_array().expect("network");
    let discovery: Vec<&Value> = requests
        .iter()
        .filter(|r| r["url"] == discovery_url.as_str())
        .collect();
    assert!(
        discovery
            .iter()
            .any(|r| r["status"] == 200 && r["accessControlAllowOrigin"] == app_origin.as_str()),
        "discovery at fhirguard, with CORS for {app_origin}\n{}",
        context()
    );
    assert!(
        !requests
            .iter()
            .any(|r| r["url"].as_str().is_some_and(|u| u.contains("/metadata"))),
        "fhirclient fell back to /metadata\n{}",
        context()
    );
    assert_eq!(page["discovery"]["serverUrl"], fhir_base.as_str());
    assert_eq!(page["discovery"]["authorizeUri"], format!("{issuer}/auth"));
    assert_eq!(page["discovery"]["tokenUri"], format!("{issuer}/token"));
    assert!(
        page["discovery"]["codeChallengeMethods"]
            .as_array()
            .is_some_and(|methods| methods.iter().any(|m| m == "S256")),
        "{}",
        context()
    );
    assert_eq!(page["discovery"]["codeVerifier"], true, "{}", context());

    // The authorization request, as the provider received it: PKCE S256, SMART's `aud`.
    let authorize = authorize_requests(&events);
    assert_eq!(authorize.len(), 1, "{}", context());
    let authorize = &authorize[0];
    assert_eq!(authorize["code_challenge_method"], "S256", "{}", context());
    assert_eq!(
        authorize["code_challenge"].as_str().map(str::len),
        Some(43),
        "a base64url SHA-256: {authorize}"
    );
    assert_eq!(authorize["client_id"], CLIENT_ID);
    assert_eq!(authorize["aud"], fhir_base.as_str());
    assert_eq!(
        authorize["redirect_uri"],
        format!("{app_origin}/index.html")
    );

    // The browser signed in and consented at the provider's pages, and came back to the app.
    let launch = &report["launch"];
    let interaction = format!("{issuer}/interaction/");
    for step in ["loginPage", "consentPage"] {
        assert!(
            launch[step]
                .as_str()
                .is_some_and(|url| url.starts_with(&interaction)),
            "{step}\n{}",
            context()
        );
    }
    assert!(
        launch["consentScopes"]
            .as_array()
            .is_some_and(|scopes| scopes.iter().any(|s| s == "patient/Observation.rs")),
        "{}",
        context()
    );
    assert_eq!(launch["appPage"], format!("{app_origin}/index.html"));

    // The token and the launch context are patient p1's.
    assert_eq!(page["context"]["patient"], "p1", "{}", context());
    assert_eq!(page["context"]["tokenResponsePatient"], "p1");
    let claims = &page["claims"];
    assert_eq!(claims["iss"], issuer.as_str(), "{claims}");
    assert_eq!(claims["aud"], RESOURCE, "{claims}");
    assert_eq!(claims["azp"], CLIENT_ID, "{claims}");
    assert_eq!(claims["scp"], "patient/Observation.rs", "{claims}");
    assert_eq!(claims["fhirUser"], "Patient/p1", "{claims}");
    assert_eq!(claims["patient"], "p1", "{claims}");
    let exp = claims["exp"].as_f64().expect("exp");

    // Its own observations: 200, confined to p1.
    assert_eq!(page["ownSearch"]["status"], 200, "{}", context());
    assert_eq!(
        page["ownSearch"]["ids"],
        json!(["Observation/o1"]),
        "{}",
        context()
    );
    assert_eq!(page["ownSearch"]["subjects"], json!(["Patient/p1"]));
    assert_eq!(page["ownRead"]["status"], 200, "{}", context());
    assert_eq!(page["ownRead"]["id"], "Observation/o1");

    // Another patient's: statuses the page can read, and the request id fhirguard names in its
    // OperationOutcome (an exposed header).
    assert_eq!(page["otherSearch"]["status"], 403, "{}", context());
    assert_eq!(page["otherRead"]["status"], 404, "{}", context());
    for case in ["otherSearch", "otherRead", "corrupted"] {
        assert!(
            page[case]["exposedHeaders"]
                .as_array()
                .is_some_and(|names| names.iter().any(|n| n == "x-request-id")),
            "{case}: X-Request-ID not readable\n{}",
            context()
        );
    }

    // A corrupted token: 401 and the challenge, readable by the page.
    invalid_token("corrupted", &page["corrupted"], &context);
    // Those reads were made with a token still valid.
    let reads_done = page["readsDoneAt"].as_f64().expect("readsDoneAt");
    assert!(
        reads_done < exp,
        "the reads ended at {reads_done}, after exp {exp}"
    );

    // Another origin: the browser blocks the request at its preflight; the app's origin, with
    // the same token at the same moment, is answered.
    let foreign = &report["foreign"];
    assert!(
        foreign["at"].as_f64().is_some_and(|at| at < exp),
        "the token had expired\n{}",
        context()
    );
    assert_eq!(foreign["fromAppOrigin"]["status"], 200, "{}", context());
    assert!(
        foreign["fromForeignOrigin"]["status"].is_null(),
        "{}",
        context()
    );
    assert!(
        foreign["fromForeignOrigin"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("TypeError")),
        "{}",
        context()
    );
    let blocked_preflight = report["console"].as_array().is_some_and(|messages| {
        messages.iter().any(|m| {
            m["page"] == "foreign"
                && m["text"].as_str().is_some_and(|text| {
                    text.contains("blocked by CORS policy") && text.contains("preflight")
                })
        })
    });
    assert!(
        blocked_preflight,
        "chromium names the preflight\n{}",
        context()
    );

    // The expired token, read again once expired: 401, refused as expired, readable by the page.
    let expired = &report["expired"];
    assert!(
        expired["at"].as_f64().is_some_and(|at| at > exp),
        "{}",
        context()
    );
    let challenge = invalid_token("expired", expired, &context);
    assert!(challenge.contains("expired"), "{challenge}");

    // Every peer still ran (none crashed under the test) and is stopped now.
    for peer in [&mut provider, &mut app] {
        assert!(
            peer.stop(),
            "{} had exited early:\n{}",
            peer.name,
            peer.stderr_text()
        );
    }
}
