//! Browser apps (issue 19): with `cors` configured fhirguard answers preflights itself, never
//! forwarding them, and every answer to an allowed origin — its own refusals of every status and
//! the upstream's answers — carries its CORS headers, the upstream's own replaced. Without
//! `cors`, preflights go to the FHIR server as before. Driven over HTTP against the recording
//! upstream, which answers a request with `Origin` with CORS headers of its own
//! ([`UPSTREAM_CORS`]).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::support::binary::Explain;
use crate::support::client::Answer;
use crate::support::poll::eventually;
use crate::support::stack::{Guard, Stack};
use crate::support::upstream::UPSTREAM_CORS;

const APP: &str = "https://app.example.org";
const OTHER: &str = "https://other.example.org";

/// Listed headers and methods, credentials allowed.
const LISTED: &str = r#"cors:
  origins: ["https://app.example.org", "http://127.0.0.1:5173"]
  headers: [Authorization, DPoP, Content-Type, Prefer, If-Match, If-None-Exist]
  methods: [GET, POST, PUT, DELETE]
  maxAge: 1200
  allowCredentials: true
"#;

async fn serve(extra: &'static str) -> Guard {
    Stack::builder()
        .serve(move |stack| stack.yaml("[Read]", extra))
        .await
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Vec<(String, String)> {
    let mut lines = vec![
        ("origin".to_owned(), origin.to_owned()),
        (
            "access-control-request-method".to_owned(),
            method.to_owned(),
        ),
    ];
    if let Some(headers) = headers {
        lines.push((
            "access-control-request-headers".to_owned(),
            headers.to_owned(),
        ));
    }
    lines
}

async fn options(guard: &Guard, target: &str, lines: &[(String, String)]) -> Answer {
    let lines: Vec<(&str, &str)> = lines
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    guard
        .call(Method::OPTIONS, target, None, &lines, Bytes::new())
        .await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("text"))
}

fn cors_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect()
}

/// The headers every answer to `APP` carries under [`LISTED`], each exactly once.
fn assert_cors_for_app(answer: &Answer, what: &str) {
    let headers = &answer.headers;
    let origins: Vec<_> = headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(origins, [APP], "{what}: {headers:?}");
    assert_eq!(
        header(headers, "access-control-allow-credentials"),
        Some("true"),
        "{what}"
    );
    let exposed = header(headers, "access-control-expose-headers").expect(what);
    for name in [
        "WWW-Authenticate",
        "Location",
        "Content-Location",
        "ETag",
        "Last-Modified",
        "X-Request-ID",
        "DPoP-Nonce",
    ] {
        assert!(exposed.contains(name), "{what}: {name} not in {exposed}");
    }
    assert_eq!(
        headers
            .get_all("access-control-expose-headers")
            .iter()
            .count(),
        1,
        "{what}"
    );
    let vary: Vec<_> = headers.get_all("vary").iter().collect();
    assert!(vary.iter().any(|v| *v == "Origin"), "{what}: {vary:?}");
}

#[tokio::test]
async fn a_preflight_is_answered_without_a_token_and_never_forwarded() {
    let guard = serve(LISTED).await;
    let before = guard.stack.upstream.count();
    let answer = options(
        &guard,
        "/Observation?patient=1",
        &preflight(APP, "PUT", Some("authorization, content-type, if-match")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert!(answer.body.is_empty());
    assert_cors_for_app(&answer, "preflight");
    let headers = &answer.headers;
    assert_eq!(
        header(headers, "access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE")
    );
    assert_eq!(
        header(headers, "access-control-allow-headers"),
        Some("authorization, dpop, content-type, prefer, if-match, if-none-exist")
    );
    assert_eq!(header(headers, "access-control-max-age"), Some("1200"));
    // The second listed origin, a loopback development server with its port.
    let answer = options(
        &guard,
        "/Patient",
        &preflight("http://127.0.0.1:5173", "GET", None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        header(&answer.headers, "access-control-allow-origin"),
        Some("http://127.0.0.1:5173")
    );
    assert_eq!(
        guard.stack.upstream.count(),
        before,
        "no preflight is forwarded"
    );
    let metrics = guard.metrics().await;
    assert!(
        metrics.contains(
            "fhirguard_requests_total{client_id=\"anonymous\",method=\"OPTIONS\",outcome=\"anonymous\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_star_allows_the_headers_browser_apps_send() {
    let guard = serve(
        "cors:\n  origins: [\"https://app.example.org\"]\n  headers: [\"*\"]\n  methods: [\"*\"]\n",
    )
    .await;
    let asked = "authorization, dpop, content-type, prefer, if-match, if-none-exist";
    let answer = options(
        &guard,
        "/Observation",
        &preflight(APP, "PATCH", Some(asked)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    // The request's own list, not `*`, which would not cover Authorization.
    assert_eq!(
        header(&answer.headers, "access-control-allow-headers"),
        Some(asked)
    );
    assert_eq!(
        header(&answer.headers, "access-control-allow-methods"),
        Some("PATCH")
    );
    assert_eq!(
        header(&answer.headers, "access-control-max-age"),
        Some("600")
    );
    assert_eq!(
        header(&answer.headers, "access-control-allow-origin"),
        Some(APP)
    );
    assert_eq!(
        header(&answer.headers, "access-control-allow-credentials"),
        None
    );
}

#[tokio::test]
async fn a_refused_preflight_gets_403_without_cors_headers() {
    let guard = serve(LISTED).await;
    let before = guard.stack.upstream.count();
    let cases = [
        (preflight(OTHER, "GET", None), "cors.origins"),
        // Origins compare exactly as browsers send them.
        (
            preflight("https://APP.example.org", "GET", None),
            "cors.origins",
        ),
        (
            preflight("https://app.example.org:443", "GET", None),
            "cors.origins",
        ),
        (preflight("null", "GET", None), "cors.origins"),
        (preflight(APP, "PATCH", None), "cors.methods"),
        (preflight(APP, "get", None), "cors.methods"),
        (
            preflight(APP, "GET", Some("authorization, x-debug")),
            "cors.headers",
        ),
        (
            [
                preflight(APP, "GET", None),
                vec![("origin".to_owned(), APP.to_owned())],
            ]
            .concat(),
            "cors.origins",
        ),
    ];
    for (lines, rule) in cases {
        let answer = options(&guard, "/Patient", &lines).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{lines:?}: {}",
            answer.body
        );
        assert_eq!(cors_headers(&answer.headers), [], "{lines:?}");
        let outcome = answer.json();
        assert_eq!(outcome["issue"][0]["code"], "forbidden");
        let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diagnostics.contains(rule), "{lines:?}: {diagnostics}");
    }
    assert_eq!(
        guard.stack.upstream.count(),
        before,
        "no preflight is forwarded"
    );
}

#[tokio::test]
async fn a_preflight_with_a_body_is_400_that_the_app_can_read() {
    let guard = serve(LISTED).await;
    let lines: Vec<(&str, &str)> = vec![
        ("origin", APP),
        ("access-control-request-method", "POST"),
        ("content-type", "application/fhir+json"),
    ];
    let answer = guard
        .call(Method::OPTIONS, "/Patient", None, &lines, "{}")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(answer.body.contains("preflight"), "{}", answer.body);
    assert_cors_for_app(&answer, "preflight with a body");
}

/// A request (method, target, token, extra headers) and the status it gets.
type Case<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    &'a [(&'a str, &'a str)],
    StatusCode,
);

#[tokio::test]
async fn every_answer_to_an_allowed_origin_carries_the_cors_headers() {
    let guard = serve(LISTED).await;
    let token = guard.stack.token();
    let expired = guard.stack.expired_token();
    let cases: [Case<'_>; 7] = [
        (Method::GET, "/Patient/1", Some(&token), &[], StatusCode::OK),
        (
            Method::GET,
            "/Patient/1",
            None,
            &[],
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/Patient/1",
            Some(&expired),
            &[],
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::DELETE,
            "/Patient/1",
            Some(&token),
            &[],
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/Nonsense/1",
            Some(&token),
            &[],
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/Patient/1",
            Some(&token),
            &[("x-http-method-override", "DELETE")],
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/.well-known/smart-configuration",
            None,
            &[],
            StatusCode::OK,
        ),
    ];
    for (method, target, token, extra, status) in cases {
        let mut lines = vec![("origin", APP)];
        lines.extend_from_slice(extra);
        let answer = guard
            .call(method.clone(), target, token, &lines, Bytes::new())
            .await;
        let what = format!("{method} {target} {extra:?}");
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_cors_for_app(&answer, &what);
        if status == StatusCode::UNAUTHORIZED {
            assert!(header(&answer.headers, "www-authenticate")
                .unwrap()
                .starts_with("Bearer "));
        }
        // The upstream's own CORS headers are replaced, never merged.
        if status == StatusCode::OK && target == "/Patient/1" {
            assert_eq!(guard.stack.upstream.last().headers["origin"], APP);
            let headers = cors_headers(&answer.headers);
            assert!(
                !headers
                    .iter()
                    .any(|(_, v)| v == "X-Upstream-Only" || v == "*"),
                "{headers:?}"
            );
            assert_eq!(
                header(&answer.headers, "access-control-allow-methods"),
                None
            );
        }
    }

    // Another origin, or none, gets no CORS header, the upstream's included; every answer
    // varies by Origin, so a cache never serves one origin's answer to another.
    for origin in [Some(OTHER), None] {
        let lines: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
        for token in [Some(token.as_str()), None] {
            let answer = guard
                .call(Method::GET, "/Patient/1", token, &lines, Bytes::new())
                .await;
            assert_eq!(cors_headers(&answer.headers), [], "{origin:?} {token:?}");
            let vary: Vec<_> = answer.headers.get_all("vary").iter().collect();
            assert!(vary.iter().any(|v| *v == "Origin"), "{vary:?}");
        }
    }
}

#[tokio::test]
async fn without_cors_preflights_go_to_the_fhir_server() {
    let guard = serve("").await;
    let before = guard.stack.upstream.count();
    let answer = options(
        &guard,
        "/Patient",
        &preflight(OTHER, "GET", Some("authorization")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let forwarded = guard.stack.upstream.since(before);
    assert_eq!(forwarded.len(), 1, "the preflight is forwarded");
    assert_eq!(forwarded[0].method, Method::OPTIONS);
    assert_eq!(forwarded[0].headers["origin"], OTHER);
    // The FHIR server's CORS headers pass through as it sent them.
    let expected: Vec<(String, String)> = UPSTREAM_CORS
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    let mut found = cors_headers(&answer.headers);
    found.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn a_reload_changes_the_allowed_origins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let guard = Stack::builder()
        .config_file(path.clone())
        .serve(|stack| stack.yaml("[Read]", LISTED))
        .await;
    assert_eq!(
        options(&guard, "/Patient", &preflight(OTHER, "GET", None))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let moved = LISTED.replace(APP, OTHER);
    std::fs::write(&path, guard.stack.yaml("[Read]", &moved)).expect("edit");
    eventually(
        "the new origins are applied",
        Duration::from_secs(10),
        || async {
            options(&guard, "/Patient", &preflight(OTHER, "GET", None))
                .await
                .status
                == StatusCode::NO_CONTENT
        },
    )
    .await;
    let answer = options(&guard, "/Patient", &preflight(APP, "GET", None)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // Removing the block hands preflights back to the FHIR server.
    std::fs::write(&path, guard.stack.yaml("[Read]", "")).expect("edit");
    eventually(
        "cors removed: preflights are forwarded",
        Duration::from_secs(10),
        || async {
            options(&guard, "/Patient", &preflight(APP, "GET", None))
                .await
                .status
                == StatusCode::OK
        },
    )
    .await;
}

#[tokio::test]
async fn explain_tells_how_a_preflight_is_answered() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, stack.yaml("[Read]", LISTED)).expect("write config");
    let token = stack.token();
    let run = |origin: &str, method: &str| {
        Explain::new(&file)
            .token_arg(&token)
            .method("OPTIONS")
            .path("/Patient")
            .header(&format!("Origin: {origin}"))
            .header(&format!("Access-Control-Request-Method: {method}"))
            .run()
    };
    let allowed = run(APP, "GET").await;
    let stdout = allowed.stdout;
    assert_eq!(allowed.code, Some(0), "{stdout}");
    assert!(
        stdout.contains("verdict: ALLOW — a CORS preflight, answered by fhirguard (204)"),
        "{stdout}"
    );
    for (origin, method, reason) in [
        (OTHER, "GET", "403 cors_origin"),
        (APP, "PATCH", "403 cors_method"),
    ] {
        let refused = run(origin, method).await;
        let stdout = refused.stdout;
        assert_eq!(refused.code, Some(1), "{stdout}");
        assert!(stdout.contains(&format!("verdict: {reason}")), "{stdout}");
    }
}
