//! The end-to-end suite: fhirguard in-process on 127.0.0.1:0 between a fake OpenID provider and
//! a recording fake FHIR server. Each test pins status, headers, body, and what the upstream
//! received.

use std::time::Duration;

use crate::support::client::{self, Answer};
use crate::support::idp::FakeIdp;
use crate::support::stack::{Guard, HttpClient, Provider, Stack, StackBuilder};
use crate::support::token::{self, now, TestKey, TokenBuilder};
use crate::support::upstream::FakeFhir;
use bytes::Bytes;
use fhirguard::app::Running;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

const AUDIENCE: &str = "https://fhir.example.org";
const SMART_AUDIENCE: &str = "https://fhir.example.org/smart";
const FHIR_USER: &str = "https://fhir.example.org/Patient/123";

/// fhirguard between a primary authority, a smart identity provider and a fake FHIR server.
struct Harness {
    primary: FakeIdp,
    primary_key: TestKey,
    smart: FakeIdp,
    smart_key: TestKey,
    upstream: FakeFhir,
    running: Running,
    http: HttpClient,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with("", |stack| stack).await
    }

    /// `extra` is added to the generated YAML (top-level keys); `upstream` chooses the upstream
    /// (by default the fake FHIR server under `/fhir`) and its settings.
    async fn start_with(
        extra: &str,
        upstream: impl FnOnce(StackBuilder) -> StackBuilder,
    ) -> Harness {
        let Guard {
            stack:
                Stack {
                    idp: primary,
                    key: primary_key,
                    smart,
                    upstream,
                    ..
                },
            running,
            http,
            ..
        } = upstream(
            Stack::builder()
                .key(TestKey::rsa("primary-1"))
                .smart(TestKey::ec_p256("smart-1")),
        )
        .serve(|stack| {
            let applications = [
                ("reader", SMART_AUDIENCE, r#"["Read"]"#),
                ("writer", SMART_AUDIENCE, r#"["*"]"#),
            ];
            (stack.config().with(extra))
                .primary(&stack.idp.base_url(), AUDIENCE)
                .smart(&stack.smart().idp.base_url(), &applications)
                .to_string()
        })
        .await;
        let Provider {
            idp: smart,
            key: smart_key,
        } = smart.expect("a smart provider");
        Harness {
            primary,
            primary_key,
            smart,
            smart_key,
            upstream,
            running,
            http,
        }
    }

    /// A primary-authority token with these roles.
    fn primary_token(&self, roles: &[&str]) -> String {
        token::base_claims(&self.primary.issuer(), AUDIENCE, now())
            .claim("appid", "backend-service")
            .claim("roles", json!(roles))
            .sign(&self.primary_key)
    }

    /// Claims of a valid smart-provider token for `client`.
    fn smart_claims(&self, client: &str) -> TokenBuilder {
        token::base_claims(&self.smart.issuer(), SMART_AUDIENCE, now())
            .claim("azp", client)
            // system/ scopes: these tests are about the token and the forwarding; SMART
            // narrowing and compartments are tested in tests/it/smart.rs.
            .claim("scp", "system/*.*")
            .claim("fhirUser", FHIR_USER)
    }

    fn smart_token(&self, client: &str) -> String {
        self.smart_claims(client).sign(&self.smart_key)
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        self.http.exchange(request).await
    }

    async fn call(&self, method: Method, target: &str, token: Option<&str>, body: &str) -> Answer {
        let url = format!("http://{}{target}", self.running.proxy_address);
        self.send(client::request(method, &url, token, &[], body.to_owned()))
            .await
    }

    async fn get(&self, target: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, target, token, "").await
    }

    async fn admin(&self, path: &str) -> Answer {
        let url = format!("http://{}{path}", self.running.admin_address);
        self.http.get_url(&url, &[]).await
    }
}

/// A 401 `invalid_token` refusal whose challenge names `description`.
fn assert_invalid_token(answer: &Answer, description: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    answer.assert_outcome("login");
    let challenge = answer.challenge();
    assert!(
        challenge.starts_with("Bearer authorization_uri=\""),
        "{challenge}"
    );
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(description),
        "challenge {challenge:?} lacks {description:?}"
    );
}

#[tokio::test]
async fn a_valid_token_is_forwarded_with_path_prefix_query_and_body_intact() {
    let h = Harness::start().await;
    let token = h.smart_token("writer");
    let body = r#"{"resourceType":"Observation","status":"final"}"#;
    let request = Request::post(format!(
        "http://{}/Observation?_format=json&note=a%20b",
        h.running.proxy_address
    ))
    .header("authorization", format!("Bearer {token}"))
    .header("content-type", "application/fhir+json")
    .header("connection", "x-hop-secret")
    .header("x-hop-secret", "must not be forwarded")
    .header("proxy-authorization", "Basic Zm9vOmJhcg==")
    .header("x-fhirguard-subject", "forged-admin")
    .header("x-request-id", "req-42")
    .body(Full::new(Bytes::from(body)))
    .unwrap();
    let answer = h.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers["x-request-id"], "req-42");
    assert!(
        !answer.headers.contains_key("x-upstream-hop"),
        "hop-by-hop header leaked back"
    );
    assert!(!answer.headers.contains_key("keep-alive"));

    let seen = h.upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/fhir/Observation?_format=json&note=a%20b");
    assert_eq!(seen.body, Bytes::from(body));
    assert!(!seen.headers.contains_key("x-hop-secret"));
    assert!(!seen.headers.contains_key("proxy-authorization"));
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        h.running.proxy_address.to_string().as_str()
    );
    assert_eq!(seen.headers["x-fhirguard-subject"], "subject-1");
    assert_eq!(seen.headers["x-fhirguard-client-id"], "writer");
    assert_eq!(seen.headers["x-fhirguard-fhir-user"], FHIR_USER);
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {token}").as_str()
    );
}

#[tokio::test]
async fn a_request_id_is_generated_when_none_is_sent() {
    let h = Harness::start().await;
    let answer = h.get("/Patient/1", Some(&h.smart_token("reader"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let id = answer.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(h.upstream.last().headers["x-request-id"], id);
}

#[tokio::test]
async fn no_token_is_401_without_an_error() {
    let h = Harness::start().await;
    let answer = h.get("/Patient/1", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    answer.assert_outcome("login");
    assert_eq!(
        answer.challenge(),
        format!(
            "Bearer authorization_uri=\"{}\", resource_id=\"{AUDIENCE}\", realm=\"{AUDIENCE}\"",
            h.primary.base_url()
        )
    );
    assert!(h.upstream.requests().is_empty());
}

#[tokio::test]
async fn each_token_rule_refuses_with_its_description() {
    let h = Harness::start().await;
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed",
            "not.a.jwt".to_owned(),
            "The token is malformed",
        ),
        (
            "unknown issuer",
            token::base_claims("https://evil.example", AUDIENCE, t).sign(&h.primary_key),
            "is not a configured identity provider",
        ),
        (
            "alg none",
            token::base_claims(&h.primary.issuer(), AUDIENCE, t).unsigned(Some("primary-1")),
            "The algorithm 'none' is not allowed",
        ),
        (
            "HS256 with the public key as secret",
            token::base_claims(&h.primary.issuer(), AUDIENCE, t)
                .sign_hmac(h.primary_key.public_key_pem().as_bytes(), Some("primary-1")),
            "The algorithm 'HS256' is not allowed",
        ),
        (
            "expired",
            token::base_claims(&h.primary.issuer(), AUDIENCE, t)
                .claim("nbf", t - 7200)
                .claim("exp", t - 3600)
                .sign(&h.primary_key),
            "The token expired at",
        ),
        (
            "not yet valid",
            token::base_claims(&h.primary.issuer(), AUDIENCE, t)
                .claim("nbf", t + 3600)
                .sign(&h.primary_key),
            "The token is not valid before",
        ),
        (
            "no exp",
            token::base_claims(&h.primary.issuer(), AUDIENCE, t)
                .without("exp")
                .sign(&h.primary_key),
            "The token has no expiration",
        ),
        (
            "wrong audience",
            token::base_claims(&h.primary.issuer(), "https://other.example", t)
                .sign(&h.primary_key),
            "The audience 'https://other.example' is invalid",
        ),
        (
            "unknown client",
            h.smart_claims("stranger").sign(&h.smart_key),
            "The client 'stranger' (claim azp) is not a configured application",
        ),
        (
            "smart audience of another app",
            h.smart_claims("reader")
                .claim("aud", AUDIENCE)
                .sign(&h.smart_key),
            "is invalid",
        ),
        (
            "missing scp",
            h.smart_claims("reader").without("scp").sign(&h.smart_key),
            "The token has no scp or scope claim",
        ),
        (
            "missing fhirUser under patient/ scopes",
            h.smart_claims("reader")
                .claim("scp", "patient/*.read")
                .without("fhirUser")
                .sign(&h.smart_key),
            "The token has patient/ scopes but no fhirUser claim",
        ),
        (
            "fhirUser not a resource URL",
            h.smart_claims("reader")
                .claim("fhirUser", "alice")
                .sign(&h.smart_key),
            "The fhirUser claim 'alice'",
        ),
        (
            "unknown kid",
            token::base_claims(&h.primary.issuer(), AUDIENCE, t)
                .sign(&TestKey::rsa("not-published")),
            "The signature key 'not-published' was not found",
        ),
        (
            "bad signature",
            token::base_claims(&h.primary.issuer(), AUDIENCE, t).sign(&TestKey::rsa("primary-1")),
            "The signature is invalid",
        ),
    ];
    for (name, token, description) in cases {
        let answer = h.get("/Patient/1", Some(&token)).await;
        assert!(
            answer.challenge().contains(description),
            "{name}: challenge {:?} lacks {description:?}",
            answer.challenge()
        );
        assert_invalid_token(&answer, description);
        assert!(
            !answer.challenge().contains(&token),
            "{name}: the token was echoed"
        );
    }
    assert!(
        h.upstream.requests().is_empty(),
        "a refused token reached the upstream"
    );
}

#[tokio::test]
async fn malformed_authorization_headers_are_refused() {
    let h = Harness::start().await;
    for value in [
        "Basic Zm9vOmJhcg==",
        "Bearer",
        "Bearer a b",
        "Bearer tok\"en",
    ] {
        let request = Request::get(format!("http://{}/Patient/1", h.running.proxy_address))
            .header("authorization", value)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = h.send(request).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{value}");
        assert!(
            answer.challenge().contains("error=\"invalid_token\""),
            "{value}"
        );
    }
    let token = h.smart_token("reader");
    let request = Request::get(format!("http://{}/Patient/1", h.running.proxy_address))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h.send(request).await.status, StatusCode::UNAUTHORIZED);
    assert!(h.upstream.requests().is_empty());
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let h = Harness::start().await;
    let request = Request::get(format!("http://{}/Patient/1", h.running.proxy_address))
        .header(
            "authorization",
            format!("bEARER {}", h.smart_token("reader")),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h.send(request).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_in_the_url_is_400() {
    let h = Harness::start().await;
    let token = h.smart_token("reader");
    let answer = h.get(&format!("/Patient?access_token={token}"), None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    answer.assert_outcome("invalid");
    assert_eq!(
        answer.json_or_null()["issue"][0]["diagnostics"],
        "Access tokens must not be passed in the URL query string."
    );
    let answer = h.get(&format!("/Patient/{token}"), Some(&token)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(h.upstream.requests().is_empty());
}

#[tokio::test]
async fn paths_are_normalised_and_encoded_slashes_refused() {
    let h = Harness::start().await;
    let token = h.smart_token("reader");
    let answer = h.get("/Patient%2F1", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    answer.assert_outcome("invalid");
    let answer = h.get("/../admin", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(h.upstream.requests().is_empty());

    let answer = h.get("//Patient/./1/", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(h.upstream.last().target, "/fhir/Patient/1");
}

#[tokio::test]
async fn method_tunnels_are_refused() {
    let h = Harness::start().await;
    let request = Request::post(format!("http://{}/Patient/1", h.running.proxy_address))
        .header(
            "authorization",
            format!("Bearer {}", h.smart_token("writer")),
        )
        .header("x-http-method-override", "DELETE")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = h.send(request).await;
    assert!(answer.status.is_client_error(), "{}", answer.status);
    assert_ne!(answer.status, StatusCode::NOT_FOUND);
    assert!(h.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_read_only_application_cannot_write_or_delete() {
    let h = Harness::start().await;
    let reader = h.smart_token("reader");
    for (method, target) in [
        (Method::DELETE, "/Patient/1"),
        (Method::PUT, "/Patient/1"),
        (Method::POST, "/Patient"),
        (Method::PATCH, "/Patient/1"),
    ] {
        let answer = h.call(method.clone(), target, Some(&reader), "{}").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {target}");
        answer.assert_outcome("forbidden");
        assert!(answer.challenge().is_empty(), "403 carries no challenge");
    }
    assert!(h.upstream.requests().is_empty());
    // POST _search is a search, allowed under Read; it stays a POST upstream, its parameters
    // (the URL's and the form's) in the form body, none in the URL.
    let answer = h
        .call(
            Method::POST,
            "/Patient/_search?gender=f",
            Some(&reader),
            "name=x",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let seen = h.upstream.last();
    assert_eq!(seen.method, "POST");
    assert!(seen.target.ends_with("/Patient/_search"), "{}", seen.target);
    assert_eq!(&seen.body[..], b"gender=f&name=x");
    assert_eq!(
        seen.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(seen.headers["content-length"], "15");
    // A method tunnel in the form is refused on every path, and so is a body that is not a form.
    let forwarded = h.upstream.requests().len();
    for form in [
        "_method=DELETE",
        "name=x&%5Fmethod=PUT",
        "_METHOD=",
        "+_method=DELETE",
    ] {
        let answer = h
            .call(Method::POST, "/Patient/_search", Some(&reader), form)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{form}");
        answer.assert_outcome("invalid");
    }
    assert_eq!(h.upstream.requests().len(), forwarded);
}

#[tokio::test]
async fn primary_tokens_are_authorized_by_the_role_mapping() {
    let h = Harness::start().await;
    let reader = h.primary_token(&["FHIR Data Reader"]);
    assert_eq!(
        h.get("/Observation?code=x", Some(&reader)).await.status,
        StatusCode::OK
    );
    let answer = h
        .call(Method::DELETE, "/Observation/1", Some(&reader), "")
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // FHIR Data Writer may delete, but not hard-delete.
    let writer = h.primary_token(&["fhir data writer"]);
    let answer = h
        .call(Method::DELETE, "/Observation/1", Some(&writer), "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = h
        .call(
            Method::DELETE,
            "/Observation/1?hardDelete=true",
            Some(&writer),
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = h
        .call(
            Method::DELETE,
            "/Observation/1/$purge-history",
            Some(&writer),
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    let nobody = h.primary_token(&[]);
    assert_eq!(
        h.get("/Patient/1", Some(&nobody)).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn bundles_are_allowed_only_when_every_entry_is() {
    let h = Harness::start().await;
    let reader = h.smart_token("reader");
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "request": { "method": "GET", "url": "Patient/1" } },
            { "resource": { "resourceType": "Patient" }, "request": { "method": "POST", "url": "Patient" } },
        ],
    })
    .to_string();
    let answer = h.call(Method::POST, "/", Some(&reader), &transaction).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(
        h.upstream.requests().is_empty(),
        "nothing of a refused bundle is forwarded"
    );

    let reads = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            { "request": { "method": "GET", "url": "Patient/1" } },
            { "request": { "method": "GET", "url": "Observation?subject=Patient/1" } },
        ],
    })
    .to_string();
    let answer = h.call(Method::POST, "/", Some(&reader), &reads).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let seen = h.upstream.last();
    assert_eq!(seen.target, "/fhir/");
    assert_eq!(seen.body, Bytes::from(reads));

    let answer = h.call(Method::POST, "/", Some(&reader), "not json").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    answer.assert_outcome("invalid");
}

#[tokio::test]
async fn a_bundle_over_the_limit_is_413() {
    let h = Harness::start_with("limits: { maxBundleBytes: 1024 }", |stack| stack).await;
    let big = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [{ "request": { "method": "GET", "url": "Patient/1" }, "fullUrl": "x".repeat(4096) }],
    })
    .to_string();
    let answer = h
        .call(Method::POST, "/", Some(&h.smart_token("reader")), &big)
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    answer.assert_outcome("too-costly");
    assert!(h.upstream.requests().is_empty());
}

#[tokio::test]
async fn anonymous_paths_pass_without_a_token() {
    let h = Harness::start().await;
    let answer = h.get("/metadata", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(h.upstream.last().target, "/fhir/metadata");
    assert!(!h
        .upstream
        .last()
        .headers
        .contains_key("x-fhirguard-subject"));
    // Only GET/HEAD are anonymous.
    let answer = h.call(Method::POST, "/metadata", None, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    let h = Harness::start().await;
    let before = h.smart.jwks_fetches();
    let rotated = TestKey::ec_p256("smart-2");
    h.smart.add_key(rotated.jwk());
    let token = h.smart_claims("reader").sign(&rotated);
    let answer = h.get("/Patient/1", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(h.smart.jwks_fetches(), before + 1);
    // Known now: no further fetch.
    assert_eq!(
        h.get("/Patient/1", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(h.smart.jwks_fetches(), before + 1);
}

#[tokio::test]
async fn random_kids_do_not_flood_the_identity_provider() {
    let h = Harness::start().await;
    let before = h.smart.jwks_fetches() + h.smart.discovery_fetches();
    let mut refused = 0;
    for i in 0..1000 {
        let key = h
            .smart_claims("reader")
            .header("kid", format!("random-{i}"));
        let token = key.forged("ES256", Some(&format!("random-{i}")));
        let answer = h.get("/Patient/1", Some(&token)).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            refused += 1;
        }
    }
    assert_eq!(refused, 1000);
    let fetches = h.smart.jwks_fetches() + h.smart.discovery_fetches() - before;
    assert!(fetches <= 2, "{fetches} fetches for 1,000 random kids");
    assert!(h.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_token_for_one_provider_signed_with_anothers_key_is_401() {
    let h = Harness::start().await;
    // Claims of the smart provider, signed with the primary's key (and its kid).
    let token = h.smart_claims("reader").sign(&h.primary_key);
    let answer = h.get("/Patient/1", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.challenge().contains("error=\"invalid_token\""));
    // And with a kid the smart provider does publish.
    let token = h.smart_claims("reader").sign(&TestKey::ec_p256("smart-1"));
    let answer = h.get("/Patient/1", Some(&token)).await;
    assert_invalid_token(&answer, "The signature is invalid");
}

#[tokio::test]
async fn an_identity_provider_down_at_start_gives_503_then_recovers() {
    let Guard {
        stack:
            Stack {
                mut idp,
                key,
                upstream,
                ..
            },
        running,
        http,
        ..
    } = Stack::builder()
        .key(TestKey::rsa("late-1"))
        .primary_down()
        .unready()
        .serve(|stack| {
            (stack.config())
                .with(r#"keySets: { retryInterval: "100ms", fetchTimeout: "1s" }"#)
                .primary(&stack.idp.base_url(), AUDIENCE)
                .to_string()
        })
        .await;
    let get = |address: std::net::SocketAddr, path: &'static str, token: Option<String>| {
        let http = http.clone();
        async move {
            let url = format!("http://{address}{path}");
            let request = client::request(Method::GET, &url, token.as_deref(), &[], Bytes::new());
            http.exchange(request).await
        }
    };
    let token = token::base_claims(&idp.base_url(), AUDIENCE, now())
        .claim("roles", json!(["FHIR Data Reader"]))
        .sign(&key);

    let answer = get(running.proxy_address, "/Patient/1", Some(token.clone())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    answer.assert_outcome("transient");
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(
        get(running.admin_address, "/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(running.admin_address, "/healthz", None).await.status,
        StatusCode::OK
    );
    assert!(upstream.requests().is_empty());

    idp.restart().await;
    http.wait_ready(running.admin_address).await;
    let answer = get(running.proxy_address, "/Patient/1", Some(token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let h = Harness::start_with("", |stack| {
        stack.upstream_url(format!("http://{address}/fhir"))
    })
    .await;
    let answer = h.get("/Patient/1", Some(&h.smart_token("reader"))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    answer.assert_outcome("exception");
}

#[tokio::test]
async fn a_slow_upstream_is_504() {
    let h = Harness::start_with("", |stack| {
        stack.upstream_settings("responseTimeout: \"300ms\"")
    })
    .await;
    h.upstream.set_delay(Duration::from_secs(3));
    let answer = h.get("/Patient/1", Some(&h.smart_token("reader"))).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    answer.assert_outcome("timeout");
    assert_eq!(
        h.upstream.requests().len(),
        1,
        "the request reached the slow upstream"
    );
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let h = Harness::start_with("limits: { maxHeaderBytes: 8192 }", |stack| stack).await;
    let request = Request::get(format!("http://{}/Patient/1", h.running.proxy_address))
        .header("x-padding", "a".repeat(20_000))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = h.send(request).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(h.upstream.requests().is_empty());
}

#[tokio::test]
async fn h2_with_prior_knowledge_is_served() {
    let h = Harness::start().await;
    let request = Request::get(format!("http://{}/Patient/1", h.running.proxy_address))
        .header(
            "authorization",
            format!("Bearer {}", h.smart_token("reader")),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = HttpClient::h2().exchange(request).await;
    assert_eq!(response.version, http::Version::HTTP_2);
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(h.upstream.last().target, "/fhir/Patient/1");
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let h = Harness::start().await;
    let reader = h.smart_token("reader");
    for _ in 0..3 {
        assert_eq!(
            h.get("/Patient/1", Some(&reader)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        h.get("/Patient/1", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let expired = h
        .smart_claims("reader")
        .claim("nbf", now() - 7200)
        .claim("exp", now() - 3600)
        .sign(&h.smart_key);
    assert_eq!(
        h.get("/Patient/1", Some(&expired)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.call(Method::DELETE, "/Patient/1", Some(&reader), "")
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let text = h.admin("/metrics").await.body;
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("fhirguard_requests_total{client_id=\"reader\",method=\"GET\",outcome=\"allowed\"}"),
        3.0
    );
    assert_eq!(
        value("fhirguard_requests_total{client_id=\"anonymous\",method=\"GET\",outcome=\"unauthenticated\"}"),
        2.0
    );
    assert_eq!(
        value("fhirguard_requests_total{client_id=\"reader\",method=\"DELETE\",outcome=\"forbidden\"}"),
        1.0
    );
    let smart = h.smart.base_url();
    assert_eq!(
        value(&format!(
            "fhirguard_auth_failures_total{{provider=\"{smart}\",reason=\"expired\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!("fhirguard_key_set_keys{{provider=\"{smart}\"}}")),
        1.0
    );
    assert!(
        value(&format!(
            "fhirguard_key_set_fetches_total{{provider=\"{smart}\",result=\"ok\"}}"
        )) >= 1.0
    );
    assert_eq!(value("fhirguard_in_flight_requests"), 0.0);
    assert_eq!(value("fhirguard_upstream_duration_seconds_count"), 3.0);
    assert_eq!(value("fhirguard_config_generation"), 1.0);
}
