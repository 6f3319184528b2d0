//! Token introspection (RFC 7662) end to end: the `fhirguard` binary between a real npm
//! `oidc-provider` issuing **opaque** access tokens (`ACCESS_TOKEN_FORMAT=opaque`,
//! `tests/interop/oidc-provider.mjs`) and the FHIR echo upstream, all on 127.0.0.1.
//!
//! What it pins: an opaque client_credentials token is introspected (client_secret_basic, the
//! secret from a file) and its answer's `azp`/`aud`/`scp`/`fhirUser` pass the smart provider's
//! checks, so the request reaches the upstream; a second request is answered from the cache (the
//! provider sees one introspection); a token revoked at the provider (RFC 7009) and a made-up one
//! are 401 `invalid_token`; an inactive answer is kept `inactiveCacheTtl` and then asked again;
//! the endpoint down is 503 with `Retry-After`; `fhirguard_introspections_total` counts by result.
//!
//! Needs Node.js, as `interop_oidc` (skipped without it outside CI); the bound on introspections
//! in flight is tested against the fake provider, without it.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::interop_oidc::{
    assert_login_outcome, ensure_node_modules, form_encode, node_available, spawn_node_with,
    start_fhirguard, wait_for_line, ChildGuard,
};
use crate::support::binary::{fhirguard_async, Explain, Ran};
use crate::support::client::{Answer, HttpClient};

const CLIENT_ID: &str = "fhir-app";
const CLIENT_SECRET: &str = "fhir-app-secret";
const RESOURCE: &str = "https://fhir.example.test";
const SCOPE: &str = "system/*.read";
const DEADLINE: Duration = Duration::from_secs(20);

/// Waits for the provider's next `{"event":"introspection"}` line.
fn next_introspection(guard: &mut ChildGuard, events: &Receiver<String>) {
    wait_for_line(
        guard,
        events,
        Instant::now() + DEADLINE,
        "introspection event",
        |line| line.contains("\"introspection\"").then_some(()),
    );
}

fn basic(id: &str, secret: &str) -> String {
    let pair = format!("{id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn post_form(client: &HttpClient, url: &str, form: String) -> Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("authorization", basic(CLIENT_ID, CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .expect("request");
    client.exchange(request).await
}

/// A client_credentials token for the FHIR resource; it must be opaque (not a JWS).
async fn opaque_token(client: &HttpClient, issuer: &str) -> String {
    let form = format!(
        "grant_type=client_credentials&resource={}&scope={}",
        form_encode(RESOURCE),
        form_encode(SCOPE)
    );
    let answer = post_form(client, &format!("{issuer}/token"), form).await;
    assert_eq!(answer.status, StatusCode::OK, "token endpoint");
    let token = answer.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert!(!token.contains('.'), "not an opaque token: {token}");
    token
}

fn assert_invalid_token(answer: &Answer, what: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}");
    let challenge = answer.header("www-authenticate").expect("challenge");
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    assert!(
        challenge.contains("The token is not active"),
        "{what}: {challenge}"
    );
    assert_login_outcome(answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_cached_and_refused_when_inactive() {
    if node_available().is_none() {
        return;
    }
    ensure_node_modules();
    // Its stdout carries a line for each introspection it answers.
    let (mut idp, greeting, events) = spawn_node_with(
        "oidc-provider (opaque)",
        "oidc-provider.mjs",
        &[("ACCESS_TOKEN_FORMAT", "opaque")],
    );
    let (mut echo, echo_greeting, _) = spawn_node_with("fhir-echo", "fhir-echo.mjs", &[]);
    let issuer = greeting["issuer"].as_str().expect("issuer").to_owned();
    let echo_port = echo_greeting["port"].as_u64().expect("echo port");
    let client = HttpClient::default();
    let accepted = opaque_token(&client, &issuer).await;
    let revoked = opaque_token(&client, &issuer).await;
    let for_outage = opaque_token(&client, &issuer).await;
    let burst = opaque_token(&client, &issuer).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("introspection-secret");
    std::fs::write(&secret, "fhirguard-secret\n").expect("secret");
    let config_path = dir.path().join("fhirguard.json");
    let config = json!({
        "listen": "127.0.0.1:0",
        "adminListen": "127.0.0.1:0",
        "upstream": format!("http://127.0.0.1:{echo_port}/fhir"),
        "allowHttpAuthorities": true,
        "introspection": {
            "authority": issuer,
            "clientId": "fhirguard",
            "clientSecretFile": secret,
            // Whole seconds: an answer kept 3 s at 10.99 ends at 13, so a repeat within 2 s finds it.
            "inactiveCacheTtl": "3s",
            // Generous: on a loaded CI machine the provider can take seconds to answer, and
            // `explain` below introspects once more in a process of its own.
            "timeout": "30s",
        },
        "authenticationConfiguration": {
            "smartIdentityProviders": [{
                "authority": issuer,
                "applications": [{
                    "clientId": CLIENT_ID,
                    "audience": RESOURCE,
                    "allowedDataActions": ["Read"],
                }],
            }],
        },
    });
    std::fs::write(&config_path, serde_json::to_vec(&config).expect("json")).expect("config");
    let (mut fhirguard, proxy, admin) = start_fhirguard(&client, &config_path).await;
    let url = format!("http://{proxy}/Observation?code=x");
    let request = |token: &str| format!("Bearer {token}");

    // Introspected, judged like a JWT's claims, forwarded.
    let answer = client
        .get_url(&url, &[("authorization", &request(&accepted))])
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "opaque token: {}\n{}",
        answer.body,
        fhirguard.stderr_text()
    );
    assert_eq!(answer.json()["url"], "/fhir/Observation?code=x");
    next_introspection(&mut idp, &events);

    // Again: from the cache, no introspection.
    let answer = client
        .get_url(&url, &[("authorization", &request(&accepted))])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "cached opaque token");

    // Eight requests at once with a new token: one introspection answers them all.
    let mut burst_requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url, header) = (client.clone(), url.clone(), request(&burst));
        burst_requests.spawn(async move {
            client
                .get_url(&url, &[("authorization", &header)])
                .await
                .status
        });
    }
    while let Some(status) = burst_requests.join_next().await {
        assert_eq!(
            status.expect("request task"),
            StatusCode::OK,
            "burst of one token"
        );
    }
    next_introspection(&mut idp, &events);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        events.try_recv().is_err(),
        "a burst of one token was introspected more than once"
    );

    // Revoked at the provider (RFC 7009): inactive, 401 invalid_token.
    let revocation = post_form(
        &client,
        &format!("{issuer}/token/revocation"),
        format!("token={}", form_encode(&revoked)),
    )
    .await;
    assert_eq!(revocation.status, StatusCode::OK, "revocation");
    let answer = client
        .get_url(&url, &[("authorization", &request(&revoked))])
        .await;
    assert_invalid_token(&answer, "revoked token");
    // The introspection seen now is the revoked token's: the cached request made none.
    next_introspection(&mut idp, &events);
    assert!(
        events.try_recv().is_err(),
        "the cached token was introspected again"
    );

    // Unknown: inactive; kept briefly, so a repeat is not introspected...
    let unknown = "bm90LWEtcmVhbC10b2tlbi1hdC1hbGw";
    let answer = client
        .get_url(&url, &[("authorization", &request(unknown))])
        .await;
    assert_invalid_token(&answer, "unknown token");
    next_introspection(&mut idp, &events);
    let answer = client
        .get_url(&url, &[("authorization", &request(unknown))])
        .await;
    assert_invalid_token(&answer, "unknown token, cached");
    assert!(
        events.try_recv().is_err(),
        "an inactive answer was not kept"
    );
    // ...and asked again once inactiveCacheTtl (3 s) has passed.
    let deadline = Instant::now() + DEADLINE;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let answer = client
            .get_url(&url, &[("authorization", &request(unknown))])
            .await;
        assert_invalid_token(&answer, "unknown token, later");
        if events.try_recv().is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the inactive answer was never asked again"
        );
    }

    let metrics = client
        .get_url(&format!("http://{admin}/metrics"), &[])
        .await;
    let metrics = metrics.body;
    for (result, count) in [("active", 2), ("inactive", 3)] {
        let series = format!(
            "fhirguard_introspections_total{{provider=\"{issuer}\",result=\"{result}\"}} {count}"
        );
        assert!(metrics.contains(&series), "no `{series}` in:\n{metrics}");
    }

    // `check --probe` reports the advertised endpoint; `explain` shows the introspection step.
    let config_arg = config_path.to_str().expect("utf-8 path");
    let args = ["check", "--config", config_arg, "--probe"].map(str::to_owned);
    let probe = Ran::from(fhirguard_async(args.to_vec(), None).await);
    assert_eq!(probe.code, Some(0), "{probe:?}");
    let probe = probe.stdout;
    assert!(
        probe.contains(&format!(
            "introspection_endpoint: {issuer}/token/introspection"
        )),
        "{probe}"
    );
    // `--token=…`: an opaque token may begin with '-', which a separate argument would make
    // look like a flag.
    let explained = Explain::new(&config_path)
        .token_joined(&accepted)
        .path("/Observation")
        .run()
        .await;
    assert_eq!(explained.code, Some(0), "{explained:?}");
    let explained = explained.stdout;
    for line in [
        "token: opaque (not a JWT), introspected at",
        "step 5 introspection: active at",
        "step 7 application: fhir-app",
        "verdict: ALLOW",
    ] {
        assert!(explained.contains(line), "no `{line}` in:\n{explained}");
    }
    assert!(!explained.contains(&accepted), "explain printed the token");
    next_introspection(&mut idp, &events);

    // The endpoint down (the provider stopped; its keys are still held): 503 + Retry-After.
    assert!(
        idp.stop(),
        "the provider had exited:\n{}",
        idp.stderr_text()
    );
    let answer = client
        .get_url(&url, &[("authorization", &request(&for_outage))])
        .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "endpoint down: {}",
        answer.body
    );
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(answer.json()["issue"][0]["code"], "transient");
    // The cached token still passes while the provider is away (until cacheTtl).
    let answer = client
        .get_url(&url, &[("authorization", &request(&accepted))])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "cached token, provider down");

    for guard in [&mut fhirguard, &mut echo] {
        let status = guard.status();
        assert!(
            guard.stop(),
            "{} had exited early ({status}):\n{}",
            guard.name,
            guard.stderr_text()
        );
    }
}

/// `introspection.maxConcurrent` bounds the calls in flight at the authorization server. With one
/// slot, an endpoint that takes 1 s and two new tokens at once, the endpoint never has two calls
/// together: one token is answered (after 1 s), the other waits for the slot, cannot be answered
/// within `timeout` (1.8 s: the slot frees at 1 s, its call would end at 2 s) and gets 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspections_in_flight_are_bounded() {
    use crate::support::stack::{Stack, AUDIENCE, ROLE};
    use crate::support::token::now;

    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "fhirguard-secret").expect("secret");
    let guard = Stack::builder()
        .serve(|stack| {
            let answer = json!({
                "active": true,
                "iss": stack.idp.issuer(),
                "aud": AUDIENCE,
                "appid": "ops-client",
                "roles": [ROLE],
                "exp": now() + 600,
            });
            stack.idp.introspect_with(answer, Duration::from_secs(1));
            let introspection = format!(
                "introspection:\n  authority: \"{}\"\n  clientId: fhirguard\n  \
                 clientSecretFile: \"{}\"\n  maxConcurrent: 1\n  timeout: 1800ms\n",
                stack.idp.base_url(),
                secret.display()
            );
            stack.yaml("[Read]", &introspection)
        })
        .await;
    let (one, two) = tokio::join!(
        guard.get("/Patient", Some("opaque-token-one")),
        guard.get("/Patient", Some("opaque-token-two")),
    );
    let mut answers: Vec<_> = [one, two]
        .iter()
        .map(|answer| {
            (
                answer.status,
                answer.header("retry-after").map(str::to_owned),
            )
        })
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        [
            (StatusCode::OK, None),
            (StatusCode::SERVICE_UNAVAILABLE, Some("5".to_owned()))
        ]
    );
    let (calls, most_in_flight) = guard.stack.idp.introspections();
    assert_eq!(
        most_in_flight, 1,
        "calls in flight at once ({calls} in all)"
    );
    let metrics = guard.metrics().await;
    for (result, count) in [("active", 1), ("error", 1)] {
        let series = format!(
            "fhirguard_introspections_total{{provider=\"{}\",result=\"{result}\"}} {count}",
            guard.stack.idp.base_url()
        );
        assert!(metrics.contains(&series), "no `{series}` in:\n{metrics}");
    }
}
