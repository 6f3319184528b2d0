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

use crate::support::binary::Explain;
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
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "{what}: {}",
        answer.body
    );
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
                .handle_call(method.clone(), &target, bearer, headers, Bytes::new())
                .await;
            // The OSS server's message for a token in the query (reference §2.1).
            assert_invalid(
                &answer,
                "Access tokens must not be passed in the URL query string.",
                &format!("{method} {target}"),
            );
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
    let metrics = g.metrics().await;
    let invalid = |method: &str| {
        let series = format!(
            "fhirguard_requests_total{{client_id=\"anonymous\",method=\"{method}\",outcome=\"invalid\"}}"
        );
        crate::support::exposition::metric(&metrics, &series)
    };
    let queries = ACCESS_TOKEN_QUERIES.len() as f64;
    assert_eq!(invalid("GET"), Some(3.0 * queries), "{metrics}");
    assert_eq!(invalid("DELETE"), Some(queries), "{metrics}");
    assert_eq!(invalid("OPTIONS"), Some(queries), "{metrics}");
    // Names that only look like it pass, and are forwarded as sent.
    for query in [
        "name=access_token",
        "access=token",
        "access_tokens=1",
        "_access_token=1",
        "code=a%26access_token%3Dx",
    ] {
        let answer = g
            .handle_get(&format!("/Patient?{query}"), Some(&token))
            .await;
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
                .handle_call(Method::POST, target, Some(&token), &form, body.to_owned())
                .await;
            assert_invalid(&answer, "form body carries an access_token", body);
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
    let answer = g
        .handle_call(
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
                .handle_call(Method::POST, "/", Some(&token), &fhir, bundle.to_string())
                .await;
            assert_invalid(&answer, "access_token", &format!("{kind}: {query}"));
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Item 6: client-certificate headers.

/// Every client-certificate header a FHIR server or framework might read, as clients spell them
/// (HTTP/1.1 names keep their case on the wire; `_` variants too).
const CERTIFICATE_HEADERS: [&str; 17] = [
    "X-Forwarded-Client-Cert",
    "SSL-Client-Cert",
    "ssl-client-cert",
    "Client-Cert",
    "Client-Cert-Chain",
    "X-SSL-Client-Cert",
    "X-Client-Cert",
    "x-forwarded-tls-client-cert",
    "X-ARR-ClientCert",
    "X-Amzn-Mtls-Clientcert",
    "SSL-Client-Verify",
    "X-SSL-Client-Verify",
    "ssl_client_cert",
    "X_Forwarded_Client_Cert",
    "Client_Cert",
    "X_SSL_Client_Cert",
    "x_client_cert",
];

/// A self-signed certificate: its URL-encoded PEM, its SHA-256 in hex and as `x5t#S256`.
struct Certificate {
    pem: String,
    hex: String,
    x5t: String,
}

impl Certificate {
    fn new(name: &str) -> Certificate {
        use base64::Engine as _;
        use sha2::Digest as _;
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let digest = sha2::Sha256::digest(certified.cert.der());
        Certificate {
            pem: percent_encoding::utf8_percent_encode(
                &certified.cert.pem(),
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string(),
            hex: digest.iter().map(|b| format!("{b:02x}")).collect(),
            x5t: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
        }
    }
}

/// fhirguard whose certificate header is `header` (none: `""`), believed from `trusted`.
async fn behind_proxy(header: &str, trusted: &str) -> Guard {
    let extra = match header {
        "" => String::new(),
        header => format!(
            "senderConstraints:\n  clientCertificates:\n    header: {header}\n    \
             trustedProxies: [\"{trusted}\"]\n"
        ),
    };
    Stack::builder()
        .serve(move |stack| stack.yaml("[\"*\"]", &extra))
        .await
}

#[tokio::test]
async fn every_client_certificate_header_is_stripped_from_untrusted_peers() {
    let mine = Certificate::new("client");
    // The test client is 127.0.0.1: untrusted with 10.0.0.0/8, or with no header configured.
    for header in ["", "x-forwarded-client-cert", "ssl-client-cert"] {
        let g = behind_proxy(header, "10.0.0.0/8").await;
        let token = g.stack.token();
        let forged = format!("Hash={};Cert=\"{}\"", mine.hex, mine.pem);
        let headers: Vec<(&str, &str)> = CERTIFICATE_HEADERS
            .iter()
            .map(|name| (*name, forged.as_str()))
            .collect();
        let answer = g
            .call(
                Method::GET,
                "/Patient/1",
                Some(&token),
                &headers,
                Bytes::new(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{header}: {}", answer.body);
        let seen = g.stack.upstream.last();
        let left: Vec<&str> = seen
            .headers
            .keys()
            .map(http::HeaderName::as_str)
            .filter(|name| name.contains("cert") || name.contains("ssl"))
            .collect();
        assert!(left.is_empty(), "configured {header:?}: forwarded {left:?}");
        g.running.stop().await;
    }
}

#[tokio::test]
async fn a_trusted_proxy_forwards_only_the_configured_certificate_header() {
    let mine = Certificate::new("client");
    let g = behind_proxy("x-forwarded-client-cert", "127.0.0.0/8").await;
    let token = g.stack.token();
    let xfcc = format!("Hash={}", mine.hex);
    let mut headers: Vec<(&str, &str)> = CERTIFICATE_HEADERS
        .iter()
        .filter(|name| !name.eq_ignore_ascii_case("x-forwarded-client-cert"))
        .map(|name| (*name, "forged"))
        .collect();
    headers.push(("x-forwarded-client-cert", &xfcc));
    let answer = g
        .call(
            Method::GET,
            "/Patient/1",
            Some(&token),
            &headers,
            Bytes::new(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let seen = g.stack.upstream.last();
    let mut left: Vec<&str> = seen
        .headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|name| name.contains("cert") || name.contains("ssl"))
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["x-forwarded-client-cert"]);
    assert_eq!(seen.headers["x-forwarded-client-cert"], xfcc.as_str());
}

#[tokio::test]
async fn an_xfcc_element_whose_hash_and_cert_disagree_is_401() {
    let mine = Certificate::new("client");
    let other = Certificate::new("someone-else");
    let g = behind_proxy("x-forwarded-client-cert", "127.0.0.0/8").await;
    let bound = token_bound_to(&g, &mine);
    let plain = g.stack.token();
    let refused = [
        format!("Hash={};Cert=\"{}\"", mine.hex, other.pem),
        format!("Hash={};Cert=\"{}\"", other.hex, mine.pem),
        format!("Cert=\"{}\";Hash={}", other.pem, mine.hex),
        format!("hash={};cert={}", mine.hex, other.pem),
        format!("Hash={};Hash={}", mine.hex, mine.hex),
        format!("Hash={};Hash={}", mine.hex, other.hex),
        format!("Cert=\"{}\";Cert=\"{}\"", mine.pem, other.pem),
        format!("Hash={},Hash={}", mine.hex, mine.hex),
        format!("Hash={};Cert=\"not-a-pem\"", mine.hex),
    ];
    for xfcc in &refused {
        for (which, token) in [("bound", &bound), ("unbound", &plain)] {
            let answer = g
                .call(
                    Method::GET,
                    "/Patient/1",
                    Some(token),
                    &[("x-forwarded-client-cert", xfcc)],
                    Bytes::new(),
                )
                .await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{which}: {xfcc}: {}",
                answer.body
            );
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
    let accepted = [
        format!("Hash={};Cert=\"{}\"", mine.hex, mine.pem),
        format!("By=spiffe://x;Hash={};Subject=\"CN=a,O=b\"", mine.hex),
        format!("Cert=\"{}\"", mine.pem),
    ];
    for xfcc in &accepted {
        let answer = g
            .call(
                Method::GET,
                "/Patient/1",
                Some(&bound),
                &[("x-forwarded-client-cert", xfcc)],
                Bytes::new(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{xfcc}: {}", answer.body);
    }
    // Another certificate altogether is still the binding's refusal.
    let answer = g
        .call(
            Method::GET,
            "/Patient/1",
            Some(&bound),
            &[("x-forwarded-client-cert", &format!("Hash={}", other.hex))],
            Bytes::new(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
}

/// The stack's token, bound to `certificate` (RFC 8705 §3.1 `cnf.x5t#S256`).
fn token_bound_to(g: &Guard, certificate: &Certificate) -> String {
    use crate::support::stack::{AUDIENCE, ROLE};
    crate::support::token::base_claims(
        &g.stack.idp.issuer(),
        AUDIENCE,
        crate::support::token::now(),
    )
    .claim("appid", "ops-client")
    .claim("roles", json!([ROLE]))
    .claim("cnf", json!({ "x5t#S256": certificate.x5t }))
    .sign(&g.stack.key)
}

// ---------------------------------------------------------------------------------------------
// Item 7: grammar and claim edges fail closed.

const SMART_AUDIENCE: &str = "https://fhir.example.org";

/// fhirguard in front of a SMART provider whose application `reader` holds `[Read]`.
async fn smart(extra: &str) -> Guard {
    let extra = extra.to_owned();
    Stack::builder()
        .key(crate::support::token::TestKey::ec_p256("round3b-1"))
        .serve(move |stack| smart_yaml(stack, &extra))
        .await
}

fn smart_yaml(stack: &Stack, extra: &str) -> String {
    (stack.config().with(extra))
        .smart(
            &stack.idp.base_url(),
            &[("reader", SMART_AUDIENCE, r#"["Read"]"#)],
        )
        .to_string()
}

fn smart_token(g: &Guard, scopes: &str) -> crate::support::token::TokenBuilder {
    crate::support::token::base_claims(
        &g.stack.idp.issuer(),
        SMART_AUDIENCE,
        crate::support::token::now(),
    )
    .claim("azp", "reader")
    .claim("scp", scopes)
    .claim("fhirUser", "Patient/p1")
}

/// Permission strings out of `cruds` order or with a repeat, alone or next to a valid scope.
const UNPARSABLE_SCOPES: [&str; 9] = [
    "patient/Observation.sr",
    "patient/Observation.rc",
    "patient/Observation.sdurc",
    "patient/Observation.crusd",
    "patient/Observation.rsr",
    "patient/Observation.rrs",
    "patient/Observation.rs patient/Condition.sr",
    "patient/Observation.sr?category=laboratory",
    "patient/*.dc",
];

#[tokio::test]
async fn a_permission_string_out_of_cruds_order_grants_nothing() {
    let g = smart("").await;
    for scopes in UNPARSABLE_SCOPES {
        let token = smart_token(&g, scopes).sign(&g.stack.key);
        for target in ["/Observation?code=x", "/Observation/1", "/Condition?code=x"] {
            let answer = g.handle_get(target, Some(&token)).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{scopes} {target}: {}",
                answer.body
            );
            let diagnostics = answer.json()["issue"][0]["diagnostics"].to_string();
            assert!(
                diagnostics.contains("out of order") || diagnostics.contains("more than once"),
                "{scopes}: {diagnostics}"
            );
        }
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
    // In order, the same letters grant.
    let token = smart_token(&g, "patient/Observation.rs").sign(&g.stack.key);
    let answer = g.handle_get("/Observation?code=x", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reports_a_scope_that_does_not_parse() {
    let stack = Stack::builder()
        .key(crate::support::token::TestKey::ec_p256("round3b-1"))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fhirguard.yaml");
    std::fs::write(&config, smart_yaml(&stack, "")).unwrap();
    for (scopes, words) in [
        ("patient/Observation.sr", "letter 'r' is out of order"),
        (
            "patient/Observation.rsr",
            "letter 'r' appears more than once",
        ),
    ] {
        let token = crate::support::token::base_claims(
            &stack.idp.issuer(),
            SMART_AUDIENCE,
            crate::support::token::now(),
        )
        .claim("azp", "reader")
        .claim("scp", scopes)
        .claim("fhirUser", "Patient/p1")
        .sign(&stack.key);
        let output = Explain::new(&config)
            .token_arg(&token)
            .path("/Observation")
            .run()
            .await;
        let stdout = output.stdout;
        assert_eq!(output.code, Some(1), "{scopes}: {stdout}");
        assert!(stdout.contains(words), "{scopes}: {stdout}");
        assert!(stdout.contains(scopes), "names the scope: {stdout}");
    }
}

#[tokio::test]
async fn a_launch_patient_claim_that_is_not_a_non_empty_string_is_401() {
    let g = smart("smartLaunchPatientClaim: patient").await;
    let launch = |value: serde_json::Value| {
        smart_token(&g, "patient/Observation.rs")
            .claim("fhirUser", "Practitioner/7")
            .claim("patient", value)
            .sign(&g.stack.key)
    };
    for value in [
        serde_json::Value::Null,
        json!(""),
        json!(" "),
        json!(456),
        json!(0),
        json!(["456"]),
        json!([]),
        json!({"reference": "Patient/456"}),
        json!(true),
    ] {
        let answer = g
            .handle_get("/Observation?code=x", Some(&launch(value.clone())))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{value}: {}",
            answer.body
        );
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains("invalid_token"), "{value}: {challenge}");
        assert!(
            answer.body.contains("launch-context patient claim"),
            "{value}: {}",
            answer.body
        );
    }
    let seen = g.stack.upstream.requests();
    assert!(seen.is_empty(), "the upstream received {seen:?}");
    // A string is the launch patient; an absent claim is fhirUser's compartment.
    let answer = g
        .handle_get("/Observation?code=x", Some(&launch(json!("456"))))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(g.stack.upstream.last().target.contains("Patient/456"));
}

// ---------------------------------------------------------------------------------------------
// Item 5: introspection calls bounded at the authorization server.

/// Introspection calls as the endpoint counts them: a call is in flight from its request's last
/// byte until the endpoint has finished with it.
#[derive(Debug, Default)]
struct Calls {
    calls: usize,
    in_flight: usize,
    most_in_flight: usize,
}

/// An introspection endpoint on a raw socket. `work: Some(d)`: each call works `d` whatever
/// happens to its connection (as a server that does not watch it), then answers. `None`: no call
/// is ever answered, and one ends when its connection is closed.
struct Endpoint {
    url: String,
    calls: std::sync::Arc<std::sync::Mutex<Calls>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start(work: Option<std::time::Duration>) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Calls::default()));
        let counted = std::sync::Arc::clone(&calls);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_call(stream, std::sync::Arc::clone(&counted), work));
            }
        });
        Endpoint {
            url,
            calls,
            _accept: accept,
        }
    }

    /// (calls so far, in flight now, most in flight at once).
    fn counts(&self) -> (usize, usize, usize) {
        let calls = self.calls.lock().unwrap();
        (calls.calls, calls.in_flight, calls.most_in_flight)
    }
}

async fn serve_call(
    mut stream: tokio::net::TcpStream,
    calls: std::sync::Arc<std::sync::Mutex<Calls>>,
    work: Option<std::time::Duration>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    {
        let mut calls = calls.lock().unwrap();
        calls.calls += 1;
        calls.in_flight += 1;
        calls.most_in_flight = calls.most_in_flight.max(calls.in_flight);
    }
    match work {
        Some(work) => {
            tokio::time::sleep(work).await;
            calls.lock().unwrap().in_flight -= 1;
            let body = r#"{"active":false}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
        None => {
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
            calls.lock().unwrap().in_flight -= 1;
        }
    }
}

/// fhirguard introspecting opaque tokens at `endpoint`.
async fn introspecting(endpoint: &Endpoint, max_concurrent: usize, timeout: &str) -> Guard {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "fhirguard-secret").unwrap();
    let url = endpoint.url.clone();
    let timeout = timeout.to_owned();
    let guard = Stack::builder()
        .serve(move |stack| {
            let introspection = format!(
                "introspection:\n  authority: \"{}\"\n  endpoint: \"{url}\"\n  clientId: fhirguard\n  \
                 clientSecretFile: \"{}\"\n  maxConcurrent: {max_concurrent}\n  timeout: {timeout}\n",
                stack.idp.base_url(),
                secret.display()
            );
            stack.yaml("[Read]", &introspection)
        })
        .await;
    // The secret is read per call.
    std::mem::forget(dir);
    guard
}

/// `count` requests at once, each with a new opaque token; their statuses.
async fn new_tokens(g: &Guard, wave: &str, count: usize) -> Vec<StatusCode> {
    let url = g.url("/Patient");
    let requests: Vec<_> = (0..count)
        .map(|i| {
            let token = format!("opaque-{wave}-{i}-2YotnFZFEjr1zCsicMWpAA");
            let request =
                crate::support::client::request(Method::GET, &url, Some(&token), &[], Bytes::new());
            let http = g.http.clone();
            tokio::spawn(async move { http.exchange(request).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        let answer = request.await.expect("request task");
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(answer.header("retry-after"), Some("5"), "{}", answer.body);
        }
        statuses.push(answer.status);
    }
    statuses
}

async fn until_idle(endpoint: &Endpoint, within: std::time::Duration) -> std::time::Duration {
    let started = std::time::Instant::now();
    while endpoint.counts().1 > 0 {
        assert!(
            started.elapsed() < within,
            "calls still in flight: {:?}",
            endpoint.counts()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_never_has_more_than_max_concurrent_calls_in_flight() {
    use std::time::Duration;
    // Each call works 1.5 s; fhirguard waits 300 ms, so every request is 503 — but the calls it
    // gave up on keep their slots until the endpoint is done with them.
    let endpoint = Endpoint::start(Some(Duration::from_millis(1500))).await;
    let g = introspecting(&endpoint, 2, "300ms").await;
    let first = new_tokens(&g, "first", 8).await;
    assert!(
        first.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{first:?}"
    );
    // Still working on the first two: the next wave gets no call at all.
    let (calls, in_flight, _) = endpoint.counts();
    assert_eq!((calls, in_flight), (2, 2), "{:?}", endpoint.counts());
    let second = new_tokens(&g, "second", 6).await;
    assert!(
        second.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{second:?}"
    );
    assert_eq!(endpoint.counts().0, 2, "no call while both slots are held");
    // Once the endpoint has finished them, new calls go out again.
    until_idle(&endpoint, Duration::from_secs(10)).await;
    new_tokens(&g, "third", 6).await;
    until_idle(&endpoint, Duration::from_secs(10)).await;
    let (calls, _, most) = endpoint.counts();
    assert_eq!(calls, 4, "two more calls");
    assert_eq!(most, 2, "calls in flight at the endpoint at once");
    let metrics = g.metrics().await;
    let series = format!(
        "fhirguard_introspections_total{{provider=\"{}\",result=\"error\"}} 20",
        g.stack.idp.base_url()
    );
    assert!(metrics.contains(&series), "no `{series}` in:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_never_answered_is_closed_before_its_slot_is_freed() {
    use std::time::Duration;
    let endpoint = Endpoint::start(None).await;
    let g = introspecting(&endpoint, 1, "200ms").await;
    let started = std::time::Instant::now();
    assert_eq!(
        new_tokens(&g, "first", 3).await,
        [StatusCode::SERVICE_UNAVAILABLE; 3]
    );
    assert_eq!(endpoint.counts().0, 1, "one slot, one call");
    // fhirguard closes the connection after 4 timeouts (800 ms), not when the request gave up.
    until_idle(&endpoint, Duration::from_secs(10)).await;
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(700), "closed after {held:?}");
    assert_eq!(
        new_tokens(&g, "second", 1).await,
        [StatusCode::SERVICE_UNAVAILABLE]
    );
    assert_eq!(endpoint.counts().0, 2, "the freed slot takes a new call");
    until_idle(&endpoint, Duration::from_secs(10)).await;
    assert_eq!(endpoint.counts().2, 1, "never two calls at once");
}
