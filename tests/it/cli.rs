//! The command line: `check` (every error, exit codes, `--probe`), `serve` on a bad config, and
//! `explain` agreeing with the proxy's verdicts.

use crate::support::binary::{fhirguard, fhirguard_async, Explain};
use crate::support::idp::FakeIdp;
use crate::support::token::{self, now, TestKey};
use serde_json::json;

const BROKEN: &str = r#"
upstream: "ftp://fhir"
listn: "0.0.0.0:8080"
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "https://idp.example.org"
      applications:
        - clientId: ""
          audience: "https://fhir.example.org"
          allowedDataActions: ["Read", "Read"]
"#;

#[test]
fn check_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, BROKEN).unwrap();
    let output = fhirguard(&["check", "--config", file.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "listn",
        "upstream",
        "smartIdentityProviders[0].applications[0].clientId: One or more SMART application client id values are null, empty, or invalid.",
        "One or more SMART application allowedDataActions contain duplicate elements.",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }

    let output = fhirguard(&["serve", "--config", file.to_str().unwrap()], None);
    assert_eq!(
        output.status.code(),
        Some(64),
        "serve exits 64 on a bad config"
    );
}

#[test]
fn check_accepts_every_example_config() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        let output = fhirguard(&["check", "--config", path.to_str().unwrap()], None);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}: {stdout}", path.display());
        // What `cors` does is shown (issue 19).
        let cors = match path.ends_with("arm-resource.json") {
            true => {
                "cors: fhirguard answers preflights; origins https://portal.contoso.com; \
                     methods DELETE, GET, OPTIONS, PATCH, POST, PUT; headers *; maxAge 1440 s; \
                     credentials not allowed"
            }
            false => "cors: not configured; CORS preflights are forwarded to the FHIR server",
        };
        assert!(stdout.contains(cors), "{}: {stdout}", path.display());
    }
}

/// A config with one smart provider served by `idp`.
pub(crate) fn config_file(dir: &tempfile::TempDir, idp: &FakeIdp) -> String {
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
upstream: "http://127.0.0.1:9/fhir"
allowHttpAuthorities: true
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "{}"
      applications:
        - clientId: "reader"
          audience: "https://fhir.example.org"
          allowedDataActions: ["Read"]
"#,
            idp.base_url()
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_reports_issuer_and_keys() {
    let key = TestKey::rsa("probe-key-1");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, &idp);
    let output = fhirguard_async(
        vec!["check".into(), "--config".into(), config, "--probe".into()],
        None,
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("issuer:   {}", idp.issuer())),
        "{stdout}"
    );
    assert!(stdout.contains("jwks_uri:"), "{stdout}");
    assert!(stdout.contains("probe-key-1"), "{stdout}");
    // The fake provider advertises no DPoP algorithms (RFC 9449 §5.1).
    assert!(stdout.contains("dpop:     not advertised"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_the_steps_and_the_proxys_verdict() {
    let key = TestKey::ec_p256("explain-1");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, &idp);
    let token = token::base_claims(&idp.issuer(), "https://fhir.example.org", now())
        .claim("azp", "reader")
        .claim("scp", "patient/*.read")
        .claim("fhirUser", "https://fhir.example.org/Patient/1")
        .sign(&key);
    let explain = |method: &str, path: &str| Explain::new(&config).method(method).path(path);

    let output = explain("GET", "/Observation?code=x")
        .token(&token)
        .run()
        .await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(0), "{stdout}");
    for expected in [
        "step 4 provider: smartIdentityProviders[0]",
        "verified with key explain-1",
        "step 7 application: reader",
        "requires Read | Search",
        "verdict: ALLOW",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(&token), "explain printed the token");

    let output = explain("DELETE", "/Observation/1")
        .token(&token)
        .run()
        .await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(1), "{stdout}");
    assert!(stdout.contains("verdict: 403 forbidden"), "{stdout}");

    let expired = token::base_claims(&idp.issuer(), "https://fhir.example.org", now())
        .claim("azp", "reader")
        .claim("nbf", now() - 7200)
        .claim("exp", now() - 3600)
        .sign(&key);
    let output = explain("GET", "/Patient/1").token(&expired).run().await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(1), "{stdout}");
    assert!(stdout.contains("verdict: 401 expired"), "{stdout}");

    let bundle = dir.path().join("bundle.json");
    std::fs::write(
        &bundle,
        json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
            { "request": { "method": "GET", "url": "Patient/1" } },
            { "resource": { "resourceType": "Patient" }, "request": { "method": "POST", "url": "Patient" } },
        ]})
        .to_string(),
    )
    .unwrap();
    let output = explain("POST", "/").body(&bundle).token(&token).run().await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(1), "{stdout}");
    assert!(stdout.contains("step 8 entry[1]"), "{stdout}");
    assert!(stdout.contains("verdict: 403"), "{stdout}");
}
