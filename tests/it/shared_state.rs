//! Many replicas (issue 22): two fhirguard instances, in-process, sharing one real
//! `redis-server` ([`RedisServer`], started by each test on a free loopback port). A DPoP proof
//! accepted by one replica is refused by the other; a cluster rate limit holds across both
//! together, answered 429 with `Retry-After` and the IETF `RateLimit` fields; with the store
//! killed mid-run, `failureMode: open` keeps serving (no failed request, the fallbacks counted)
//! and `closed` answers 503, and both recover when the store returns; a `rediss://` store is
//! reached through the test CA.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fhirguard::app::Running;
use fhirguard::config::Config;
use http::{Method, StatusCode};
use serde_json::json;

use crate::dpop::ProofKey;
use crate::support::binary::fhirguard_async;
use crate::support::client::{self, Answer, HttpClient};
use crate::support::exposition::sum;
use crate::support::poll::eventually;
use crate::support::redis::RedisServer;
use crate::support::stack::{start_ready, Stack, AUDIENCE, ROLE};
use crate::support::token::{base_claims, now};

/// The FHIR base URL clients use, the same at both replicas (a load balancer's): the `htu` of
/// every proof.
const BASE: &str = "https://fhir.example.org";

/// Two replicas on one stack and one store.
struct Replicas {
    stack: Stack,
    a: Running,
    b: Running,
    http: HttpClient,
}

impl Replicas {
    /// Both replicas on `shared` (more top-level YAML: `sharedState`, `rateLimits`, …).
    async fn start(stack: Stack, shared: &str) -> Replicas {
        let extra = format!("publicBaseUrl: \"{BASE}\"\n{shared}");
        let yaml = stack.yaml("[Read]", &extra);
        let config = || Config::parse(&yaml).expect("a valid config");
        let a = start_ready(config()).await;
        let b = start_ready(config()).await;
        Replicas {
            stack,
            a,
            b,
            http: HttpClient::default(),
        }
    }

    /// A token of `client` carrying the role, bound to `key` when given (`cnf.jkt`).
    fn token(&self, client: &str, key: Option<&ProofKey>) -> String {
        let mut claims = base_claims(&self.stack.idp.issuer(), AUDIENCE, now())
            .claim("appid", client)
            .claim("roles", json!([ROLE]));
        if let Some(key) = key {
            claims = claims.claim("cnf", json!({"jkt": key.thumbprint()}));
        }
        claims.sign(&self.stack.key)
    }

    /// `GET /Patient` at `replica` with `headers`.
    async fn get(&self, replica: &Running, headers: &[(&str, &str)]) -> Answer {
        let url = format!("http://{}/Patient", replica.proxy_address);
        let request = client::request(Method::GET, &url, None, headers, Bytes::new());
        self.http.exchange(request).await
    }

    /// `GET /Patient` at `replica` with a bearer token.
    async fn bearer(&self, replica: &Running, token: &str) -> Answer {
        let authorization = format!("Bearer {token}");
        self.get(replica, &[("authorization", &authorization)])
            .await
    }

    /// `GET /Patient` at `replica` with a DPoP-bound token and `proof`.
    async fn dpop(&self, replica: &Running, token: &str, proof: &str) -> Answer {
        let authorization = format!("DPoP {token}");
        self.get(
            replica,
            &[("authorization", &authorization), ("dpop", proof)],
        )
        .await
    }

    async fn metrics(&self, replica: &Running) -> String {
        self.http.metrics(replica.admin_address).await
    }

    /// A metric summed over both replicas.
    async fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum(&self.metrics(&self.a).await, name, labels)
            + sum(&self.metrics(&self.b).await, name, labels)
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

fn shared_state(redis: &RedisServer, failure_mode: &str) -> String {
    format!(
        "sharedState:\n  failureMode: {failure_mode}\n  redis: {{url: \"{}\", timeout: 250ms}}\n",
        redis.url()
    )
}

#[tokio::test]
async fn a_dpop_proof_accepted_by_one_replica_is_refused_by_the_other() {
    let redis = RedisServer::start();
    let replicas = Replicas::start(Stack::start().await, &shared_state(&redis, "open")).await;
    let key = ProofKey::new();
    let token = replicas.token("ops-client", Some(&key));
    let proof = key.proof("GET", &format!("{BASE}/Patient"), Some(&token));

    let first = replicas.dpop(&replicas.a, &token, &proof).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let replayed = replicas.dpop(&replicas.b, &token, &proof).await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
    let challenge = replayed.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("invalid_dpop_proof"), "{challenge}");
    assert!(challenge.contains("already used"), "{challenge}");
    // A fresh proof is accepted by the other replica.
    let fresh = key.proof("GET", &format!("{BASE}/Patient"), Some(&token));
    let answer = replicas.dpop(&replicas.b, &token, &fresh).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // Three proofs recorded in the store, one refused there; no fallback.
    let ok = [("operation", "dpop_replay"), ("result", "ok")];
    assert_eq!(
        replicas
            .total("fhirguard_shared_state_calls_total", &ok)
            .await,
        3.0
    );
    let failed = [("operation", "dpop_replay"), ("result", "error")];
    assert_eq!(
        replicas
            .total("fhirguard_shared_state_calls_total", &failed)
            .await,
        0.0
    );
    let fallbacks = replicas
        .total("fhirguard_shared_state_fallbacks_total", &[])
        .await;
    assert_eq!(fallbacks, 0.0);
    let metrics = replicas.metrics(&replicas.b).await;
    assert!(
        sum(
            &metrics,
            "fhirguard_shared_state_call_duration_seconds_count",
            &ok[..1]
        ) >= 2.0,
        "{metrics}"
    );
    replicas.stop().await;
}

/// `replayStore: local` keeps the per-replica cache even with a store: the replay is accepted
/// by the other replica (the gap the shared store closes).
#[tokio::test]
async fn a_local_replay_store_is_per_replica() {
    let redis = RedisServer::start();
    let shared = format!(
        "{}senderConstraints: {{dpop: {{replayStore: local}}}}\n",
        shared_state(&redis, "open")
    );
    let replicas = Replicas::start(Stack::start().await, &shared).await;
    let key = ProofKey::new();
    let token = replicas.token("ops-client", Some(&key));
    let proof = key.proof("GET", &format!("{BASE}/Patient"), Some(&token));
    for replica in [&replicas.a, &replicas.b] {
        let answer = replicas.dpop(replica, &token, &proof).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let again = replicas.dpop(&replicas.a, &token, &proof).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);
    let calls = replicas
        .total("fhirguard_shared_state_calls_total", &[])
        .await;
    assert_eq!(calls, 0.0);
    replicas.stop().await;
}

/// A cluster limit of burst 4 (1 request per second after it) holds across both replicas
/// together: of 8 requests alternating between them, 4 pass. A try that took a second or more
/// (a refill could have let a fifth through) is repeated with a fresh client.
#[tokio::test]
async fn a_cluster_limit_holds_across_both_replicas() {
    let redis = RedisServer::start();
    let shared = format!(
        "{}rateLimits:\n  - {{clientIds: all, requestsPerSecond: 1, burst: 4, scope: cluster}}\n",
        shared_state(&redis, "closed")
    );
    let replicas = Replicas::start(Stack::start().await, &shared).await;
    let mut checked = false;
    for attempt in 0..3 {
        let token = replicas.token(&format!("bulk-{attempt}"), None);
        let started = Instant::now();
        let mut answers = Vec::new();
        for i in 0..8 {
            let replica = [&replicas.a, &replicas.b][i % 2];
            answers.push(replicas.bearer(replica, &token).await);
        }
        if started.elapsed() >= Duration::from_millis(900) {
            continue;
        }
        let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
        assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
        let throttled = &answers[4];
        let retry_after: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=4).contains(&retry_after), "{retry_after}");
        assert_eq!(
            throttled.header("ratelimit-policy"),
            Some("\"client\";q=4;w=4")
        );
        assert_eq!(
            throttled.header("ratelimit"),
            Some(format!("\"client\";r=0;t={retry_after}").as_str())
        );
        let outcome = throttled.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "throttled");
        checked = true;
        break;
    }
    assert!(checked, "no try finished within a second");
    let throttled = [("scope", "cluster"), ("result", "throttled")];
    let counted = replicas
        .total("fhirguard_rate_limited_total", &throttled)
        .await;
    assert_eq!(counted, 4.0);
    let outcome = [("outcome", "throttled")];
    assert_eq!(
        replicas.total("fhirguard_requests_total", &outcome).await,
        4.0
    );
    replicas.stop().await;
}

/// `failureMode: open`: with the store killed, both replicas keep serving — DPoP proofs checked
/// against each replica's own cache, the cluster limit counted per replica — with no failed
/// request, and every fallback counted. When the store returns, they use it again.
#[tokio::test]
async fn with_the_store_killed_open_keeps_serving_and_counts_fallbacks() {
    let mut redis = RedisServer::start();
    let shared = format!(
        "{}rateLimits:\n  - {{clientIds: all, requestsPerSecond: 1000, burst: 1000, scope: cluster}}\n",
        shared_state(&redis, "open")
    );
    let replicas = Replicas::start(Stack::start().await, &shared).await;
    let key = ProofKey::new();
    let token = replicas.token("ops-client", Some(&key));
    let htu = format!("{BASE}/Patient");
    for replica in [&replicas.a, &replicas.b] {
        let answer = replicas
            .dpop(replica, &token, &key.proof("GET", &htu, Some(&token)))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    redis.kill();
    let mut failed = 0;
    for i in 0..6 {
        let replica = [&replicas.a, &replicas.b][i % 2];
        let proof = key.proof("GET", &htu, Some(&token));
        let answer = replicas.dpop(replica, &token, &proof).await;
        failed += usize::from(answer.status != StatusCode::OK);
        // The replica's own cache still refuses a replay to it.
        if i == 0 {
            let replayed = replicas.dpop(replica, &token, &proof).await;
            assert_eq!(
                replayed.status,
                StatusCode::UNAUTHORIZED,
                "{}",
                replayed.body
            );
        }
    }
    assert_eq!(failed, 0, "requests failed while the store was down");
    let replay = [("use", "dpop_replay")];
    let limit = [("use", "rate_limit")];
    // Each request fell back twice: its proof and its limit (the replay refused above once).
    assert_eq!(
        replicas
            .total("fhirguard_shared_state_fallbacks_total", &replay)
            .await,
        7.0
    );
    assert_eq!(
        replicas
            .total("fhirguard_shared_state_fallbacks_total", &limit)
            .await,
        6.0
    );

    redis.restart();
    let ok = [("operation", "dpop_replay"), ("result", "ok")];
    let before = replicas
        .total("fhirguard_shared_state_calls_total", &ok)
        .await;
    eventually(
        "both replicas use the store again",
        Duration::from_secs(30),
        || async {
            for replica in [&replicas.a, &replicas.b] {
                let answer = replicas
                    .dpop(replica, &token, &key.proof("GET", &htu, Some(&token)))
                    .await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            }
            let metrics = (
                replicas.metrics(&replicas.a).await,
                replicas.metrics(&replicas.b).await,
            );
            sum(&metrics.0, "fhirguard_shared_state_calls_total", &ok)
                + sum(&metrics.1, "fhirguard_shared_state_calls_total", &ok)
                >= before + 2.0
                && sum(&metrics.0, "fhirguard_shared_state_calls_total", &ok) > 1.0
                && sum(&metrics.1, "fhirguard_shared_state_calls_total", &ok) > 1.0
        },
    )
    .await;
    // Shared again: a proof accepted by A is refused by B.
    let proof = key.proof("GET", &htu, Some(&token));
    let accepted = replicas.dpop(&replicas.a, &token, &proof).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    let replayed = replicas.dpop(&replicas.b, &token, &proof).await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
    replicas.stop().await;
}

/// `failureMode: closed`: with the store killed, a request that needs it — a client under a
/// cluster limit, a DPoP proof to record — is refused 503 with `Retry-After` (a request that does
/// not still passes); when the store returns, requests pass again.
#[tokio::test]
async fn with_the_store_killed_closed_answers_503_until_it_returns() {
    let mut redis = RedisServer::start();
    let shared = format!(
        "{}rateLimits:\n  - {{clientIds: [bulk], requestsPerSecond: 1000, burst: 1000, scope: cluster}}\n",
        shared_state(&redis, "closed")
    );
    let replicas = Replicas::start(Stack::start().await, &shared).await;
    let bulk = replicas.token("bulk", None);
    let other = replicas.token("other-app", None);
    assert_eq!(
        replicas.bearer(&replicas.a, &bulk).await.status,
        StatusCode::OK
    );

    redis.kill();
    for replica in [&replicas.a, &replicas.b] {
        let answer = replicas.bearer(replica, &bulk).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.body
        );
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(answer.json()["issue"][0]["code"], "transient");
        let unlimited = replicas.bearer(replica, &other).await;
        assert_eq!(unlimited.status, StatusCode::OK, "{}", unlimited.body);
    }
    // A DPoP proof cannot be recorded either: 503, and no authentication failure counted.
    let key = ProofKey::new();
    let token = replicas.token("dpop-app", Some(&key));
    let proof = key.proof("GET", &format!("{BASE}/Patient"), Some(&token));
    let answer = replicas.dpop(&replicas.a, &token, &proof).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.header("retry-after"), Some("1"));
    let failures = replicas.total("fhirguard_auth_failures_total", &[]).await;
    assert_eq!(failures, 0.0);
    let unavailable = [("outcome", "unavailable")];
    assert_eq!(
        replicas
            .total("fhirguard_requests_total", &unavailable)
            .await,
        3.0
    );
    assert_eq!(
        replicas
            .total("fhirguard_shared_state_fallbacks_total", &[])
            .await,
        0.0
    );

    redis.restart();
    eventually(
        "both replicas serve again",
        Duration::from_secs(30),
        || async {
            let a = replicas.bearer(&replicas.a, &bulk).await.status;
            let b = replicas.bearer(&replicas.b, &bulk).await.status;
            a == StatusCode::OK && b == StatusCode::OK
        },
    )
    .await;
    replicas.stop().await;
}

/// A `rediss://` store is reached over TLS, trusting `caFile` (the test CA); a replayed proof is
/// refused through it.
#[tokio::test]
async fn a_rediss_store_is_reached_through_the_test_ca() {
    let redis = RedisServer::start_tls();
    let shared = format!(
        "sharedState:\n  failureMode: closed\n  redis: {{url: \"{}\", caFile: \"{}\", timeout: 2s}}\n",
        redis.url(),
        redis.ca_file().display()
    );
    let replicas = Replicas::start(Stack::start().await, &shared).await;
    let key = ProofKey::new();
    let token = replicas.token("ops-client", Some(&key));
    let proof = key.proof("GET", &format!("{BASE}/Patient"), Some(&token));
    let first = replicas.dpop(&replicas.a, &token, &proof).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let replayed = replicas.dpop(&replicas.b, &token, &proof).await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
    let ok = [("operation", "dpop_replay"), ("result", "ok")];
    assert_eq!(
        replicas
            .total("fhirguard_shared_state_calls_total", &ok)
            .await,
        2.0
    );
    replicas.stop().await;
}

/// `sharedState.introspection: true`: one opaque token used at both replicas is introspected
/// once — the second replica takes the first one's answer from the store (and counts no
/// introspection of its own); without it, each replica introspects.
#[tokio::test]
async fn one_opaque_token_is_introspected_once_for_both_replicas() {
    for (share, expected) in [(true, 1), (false, 2)] {
        let redis = RedisServer::start();
        let stack = Stack::start().await;
        let answer = json!({
            "active": true,
            "iss": stack.idp.issuer(),
            "aud": AUDIENCE,
            "appid": "ops-client",
            "roles": [ROLE],
            "exp": now() + 600,
        });
        stack.idp.introspect_with(answer, Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "fhirguard-secret").unwrap();
        let shared = format!(
            "sharedState:\n  introspection: {share}\n  redis: {{url: \"{}\"}}\n\
             introspection:\n  authority: \"{}\"\n  clientId: fhirguard\n  \
             clientSecretFile: \"{}\"\n",
            redis.url(),
            stack.idp.base_url(),
            secret.display()
        );
        let replicas = Replicas::start(stack, &shared).await;
        for replica in [&replicas.a, &replicas.b, &replicas.a, &replicas.b] {
            let answer = replicas.bearer(replica, "an-opaque-token").await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        }
        let (calls, _) = replicas.stack.idp.introspections();
        assert_eq!(calls, expected, "introspections with sharing {share}");
        let active = [("result", "active")];
        let counted = replicas
            .total("fhirguard_introspections_total", &active)
            .await;
        assert_eq!(counted, expected as f64);
        let get = [("operation", "introspection_get"), ("result", "ok")];
        let gets = replicas
            .total("fhirguard_shared_state_calls_total", &get)
            .await;
        assert_eq!(gets, if share { 2.0 } else { 0.0 });
        replicas.stop().await;
    }
}

/// `fhirguard check` names the shared state; `check --probe` pings the store: 0 while it
/// answers, 1 (naming it) when it does not.
#[tokio::test]
async fn check_probe_pings_the_store() {
    let mut redis = RedisServer::start();
    let stack = Stack::start().await;
    let yaml = stack.yaml("[Read]", &shared_state(&redis, "closed"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    // The probe also asks this test's identity provider: the binary runs off the runtime.
    let check = |probe: bool| {
        let mut args = vec!["check".to_owned(), "--config".to_owned()];
        args.push(path.to_str().expect("a UTF-8 path").to_owned());
        if probe {
            args.push("--probe".to_owned());
        }
        async move {
            let output = fhirguard_async(args, None).await;
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            (output.status.code(), stdout)
        }
    };
    let (code, stdout) = check(false).await;
    assert_eq!(code, Some(0), "{stdout}");
    let line = format!(
        "sharedState: {} (failureMode closed, DPoP replay shared, introspection answers not \
         shared); rateLimits: 0",
        redis.url()
    );
    assert!(stdout.contains(&line), "{stdout}");
    let address = redis.address;
    let (code, stdout) = check(true).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("sharedState: {address} answers")),
        "{stdout}"
    );
    redis.kill();
    let (code, stdout) = check(true).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("sharedState: {address} does not answer")),
        "{stdout}"
    );
}
