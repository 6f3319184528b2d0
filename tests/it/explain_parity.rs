//! `explain`'s answer is the proxy's answer (issue 12), also for the request shapes whose body
//! decides: a `POST …/_search` under SMART is decided on its URL's and its form's parameters
//! together, by `explain --body` as by the proxy.

use std::io::Write as _;
use std::process::{Command, Stdio};

use bytes::Bytes;
use fhirguard::config::Config;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::idp::FakeIdp;
use crate::support::stack::start_ready;
use crate::support::token::{self, now, TestKey};
use crate::support::upstream::FakeFhir;

const AUDIENCE: &str = "https://fhir.example.org";

fn yaml(idp: &FakeIdp, upstream: &FakeFhir) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
adminListen: "127.0.0.1:0"
upstream: "{upstream}"
allowHttpAuthorities: true
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "{authority}"
      applications:
        - clientId: "reader"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read"]
"#,
        upstream = upstream.base_url("/fhir"),
        authority = idp.base_url(),
    )
}

/// `fhirguard explain` on the config file: its exit code and the status its verdict names.
fn explain(config: &str, token: &str, form: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("form");
    std::fs::write(&body, form).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirguard"))
        .args([
            "explain", "--config", config, "--token", "-", "--method", "POST",
        ])
        .args(["--path", "/Observation/_search", "--body"])
        .arg(&body)
        .args([
            "--header",
            "Content-Type: application/x-www-form-urlencoded",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fhirguard explain");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_decides_a_post_search_form_as_the_proxy_does() {
    let key = TestKey::ec_p256("parity-1");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let upstream = FakeFhir::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fhirguard.yaml");
    let text = yaml(&idp, &upstream);
    std::fs::write(&path, &text).unwrap();
    let config_path = path.to_str().unwrap().to_owned();
    let running = start_ready(Config::parse(&text).expect("config")).await;
    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("client_id", "reader")
        .claim("scp", "patient/Observation.rs")
        .claim("fhirUser", "Patient/p1")
        .sign(&key);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    // (form, the status both must give): the form's parameters decide, under the compartment.
    let cases = [
        ("code=x", StatusCode::OK),
        ("patient:missing=true", StatusCode::FORBIDDEN),
        ("subject=Patient/p2", StatusCode::FORBIDDEN),
        ("_method=DELETE", StatusCode::BAD_REQUEST),
    ];
    for (form, expected) in cases {
        let request = Request::post(format!(
            "http://{}/Observation/_search",
            running.proxy_address
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
        let response = client.request(request).await.expect("an answer");
        let served = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            served,
            expected,
            "{form}: {}",
            String::from_utf8_lossy(&body)
        );

        let (config, token, owned) = (config_path.clone(), token.clone(), form.to_owned());
        let (code, stdout) = tokio::task::spawn_blocking(move || explain(&config, &token, &owned))
            .await
            .unwrap();
        if expected.is_success() {
            assert_eq!(code, Some(0), "{form}:\n{stdout}");
            assert!(stdout.contains("verdict: ALLOW"), "{form}:\n{stdout}");
        } else {
            assert_eq!(code, Some(1), "{form}:\n{stdout}");
            let verdict = format!("verdict: {} ", expected.as_u16());
            assert!(
                stdout.contains(&verdict),
                "{form}: want {verdict}\n{stdout}"
            );
        }
    }
    running.stop().await;
}
