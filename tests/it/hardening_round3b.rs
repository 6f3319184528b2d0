//! Issue 20, items 4 to 8: no credential in a URL (an `access_token` parameter in a query, a
//! `_search` form or a bundle entry's URL is 400 and never forwarded), introspection calls bounded
//! at the authorization server, client-certificate headers from untrusted peers, SMART v2
//! permission strings and the launch `patient` claim. fhirguard runs in-process between the fake
//! identity provider and the recording fake FHIR server; each test pins the status, the
//! OperationOutcome and what the upstream received. The log side of item 4 (nothing logged, names
//! that say "credential" redacted) and item 8 (text logs without colour off a terminal) run the
//! real binary in `tests/it/ops.rs`.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use crate::support::client::Answer;
use crate::support::stack::{Guard, Stack};

/// fhirguard granting every data action, between the fake IdP and the fake FHIR server.
async fn every_action() -> (Guard, String) {
    let guard = Stack::builder()
        .serve(|stack| stack.yaml("[\"*\"]", ""))
        .await;
    let token = guard.stack.token();
    (guard, token)
}

/// A 400 OperationOutcome (`invalid`) whose diagnostics hold `words`.
fn assert_invalid(answer: &Answer, words: &str, what: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}: {}", answer.body);
    let outcome = answer.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
    assert_eq!(outcome["issue"][0]["code"], "invalid", "{what}");
    let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap_or("");
    assert!(diagnostics.contains(words), "{what}: {diagnostics}");
}

// ---------------------------------------------------------------------------------------------
// Item 4: no credential in a URL, ever.

/// Spellings of the parameter, each with a value of another shape.
const ACCESS_TOKEN_QUERIES: [&str; 18] = [
    "access_token=opaque-2YotnFZFEjr1zCsicMWpAA",
    "access_token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    "access_token=",
    "access_token",
    "access_token=a&access_token=b",
    "name=x&access_token=opaque",
    "name=x;access_token=opaque",
    "ACCESS_TOKEN=opaque",
    "Access_Token=opaque",
    "access%5Ftoken=opaque",
    "%61ccess_token=opaque",
    "access.token=opaque",
    "access-token=opaque",
    "access+token=opaque",
    "accessToken=opaque",
    "access_token[]=opaque",
    "access_token%5B%5D=opaque",
    "%20access_token=opaque",
];

#[tokio::test]
async fn an_access_token_in_the_query_is_400_on_every_path_and_never_forwarded() {
    let (g, token) = every_action().await;
    let preflight = [
        ("origin", "https://app.example.org"),
        ("access-control-request-method", "GET"),
    ];
    for query in ACCESS_TOKEN_QUERIES {
        // With a valid bearer token, anonymously (`/metadata`), and as a CORS preflight: the
        // rule is checked before the anonymous step.
        let cases = [
            (Method::GET, "/Patient", Some(token.as_str()), &[][..]),
            (Method::GET, "/Patient/1", Some(token.as_str()), &[][..]),
            (Method::DELETE, "/Patient", Some(token.as_str()), &[][..]),
            (Method::GET, "/metadata", None, &[][..]),
            (Method::OPTIONS, "/Patient", None, &preflight[..]),
        ];
        for (method, path, bearer, headers) in cases {
            let target = format!("{path}?{query}");
            let answer = g
                .call(method.clone(), &target, bearer, headers, Bytes::new())
                .await;
            assert_invalid(&answer, "access_token", &format!("{method} {target}"));
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
    let metrics = g.metrics().await;
    assert!(
        metrics.contains("reason=\"token_in_url\""),
        "refusals counted under token_in_url:\n{metrics}"
    );
    // Names that only look like it pass, and are forwarded as sent.
    for query in [
        "name=access_token",
        "access=token",
        "access_tokens=1",
        "_access_token=1",
        "code=a%26access_token%3Dx",
    ] {
        let answer = g.get(&format!("/Patient?{query}"), Some(&token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
        assert_eq!(
            g.stack.upstream.last().target,
            format!("/fhir/Patient?{query}")
        );
    }
}

#[tokio::test]
async fn an_access_token_in_a_search_form_is_400_and_never_forwarded() {
    let (g, token) = every_action().await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for body in ACCESS_TOKEN_QUERIES {
        for target in ["/Patient/_search", "/_search", "/Patient/_search?name=x"] {
            let answer = g
                .call(Method::POST, target, Some(&token), &form, body.to_owned())
                .await;
            assert_invalid(&answer, "form body carries an access_token", body);
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
    let answer = g
        .call(
            Method::POST,
            "/Patient/_search",
            Some(&token),
            &form,
            "name=access_token",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(g.stack.upstream.last().body, "name=access_token");
}

#[tokio::test]
async fn an_access_token_in_a_bundle_entry_url_is_400_and_never_forwarded() {
    let (g, token) = every_action().await;
    let fhir = [("content-type", "application/fhir+json")];
    for query in ACCESS_TOKEN_QUERIES {
        for kind in ["batch", "transaction"] {
            let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
                {"request": {"method": "GET", "url": "Patient/1"}},
                {"request": {"method": "GET", "url": format!("Patient?{query}")}},
            ]});
            let answer = g
                .call(Method::POST, "/", Some(&token), &fhir, bundle.to_string())
                .await;
            assert_invalid(&answer, "access_token", &format!("{kind}: {query}"));
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
}
