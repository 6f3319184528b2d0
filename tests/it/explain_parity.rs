//! `explain`'s answer is the proxy's answer (issue 12), also for the request shapes whose body
//! decides: a `POST …/_search` under SMART is decided on its URL's and its form's parameters
//! together, by `explain --body` as by the proxy.

use http::{Method, StatusCode};

use crate::support::binary::Explain;
use crate::support::stack::Stack;
use crate::support::token::{self, now, TestKey};

const AUDIENCE: &str = "https://fhir.example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_decides_a_post_search_form_as_the_proxy_does() {
    let g = Stack::builder()
        .key(TestKey::ec_p256("parity-1"))
        .serve(|stack| {
            (stack.config())
                .smart(
                    &stack.idp.base_url(),
                    &[("reader", AUDIENCE, r#"["Read"]"#)],
                )
                .to_string()
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fhirguard.yaml");
    std::fs::write(&path, &g.yaml).unwrap();
    let token = token::base_claims(&g.stack.idp.issuer(), AUDIENCE, now())
        .claim("client_id", "reader")
        .claim("scp", "patient/Observation.rs")
        .claim("fhirUser", "Patient/p1")
        .sign(&g.stack.key);
    let form_type = [("content-type", "application/x-www-form-urlencoded")];

    // (form, the status both must give): the form's parameters decide, under the compartment.
    let cases = [
        ("code=x", StatusCode::OK),
        ("patient:missing=true", StatusCode::FORBIDDEN),
        ("subject=Patient/p2", StatusCode::FORBIDDEN),
        ("_method=DELETE", StatusCode::BAD_REQUEST),
    ];
    for (index, (form, expected)) in cases.into_iter().enumerate() {
        let target = "/Observation/_search";
        let served = g
            .handle_call(Method::POST, target, Some(&token), &form_type, form)
            .await;
        assert_eq!(served.status, expected, "{form}: {}", served.body);

        let body = dir.path().join(format!("form-{index}"));
        std::fs::write(&body, form).unwrap();
        let explained = Explain::new(&path)
            .token(&token)
            .method("POST")
            .path(target)
            .body(&body)
            .header("Content-Type: application/x-www-form-urlencoded")
            .run()
            .await;
        let (code, stdout) = (explained.code, explained.stdout);
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
}
