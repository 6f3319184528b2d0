//! DPoP end to end (RFC 9449): a real OpenID provider (npm `oidc-provider`, DPoP on) issues a
//! DPoP-bound access token (`cnf.jkt`) to a client_credentials request that carries a proof;
//! the test makes each request's proof itself, with a P-256 key, as a client does. Accepted
//! with a fresh proof (again after the token is cached: the proof is still checked); refused
//! (401, `WWW-Authenticate: DPoP …`) for a replayed proof, another `htu`, another `htm`, a stale
//! `iat`, a proof by another key, no proof, and the bound token sent as Bearer (§7.2). A client
//! that must use DPoP (`senderConstraints.dpop.requiredFor`) is refused with a bearer token.
//! With server nonces required (§8), a proof without one is answered 401 `use_dpop_nonce` and a
//! `DPoP-Nonce`, the retry with it is accepted (and told the nonce to use next), a forged one is
//! refused. The replay cache's gauge counts the proofs accepted.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::client::{self, Answer};
use crate::support::exposition::{metric, sum};
use crate::support::oidc::{self, RESOURCE};
use crate::support::stack::{Guard, Stack};

/// An ES256 DPoP key: the signing key and the public JWK, as a client holds them.
pub(crate) struct ProofKey {
    signing: EncodingKey,
    jwk: Value,
}

static JTI: AtomicU64 = AtomicU64::new(0);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl ProofKey {
    pub(crate) fn new() -> ProofKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw();
        let (x, y) = raw[1..].split_at(32);
        ProofKey {
            signing: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
        }
    }

    /// RFC 7638 thumbprint: the token's `cnf.jkt`.
    pub(crate) fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            self.jwk["x"], self.jwk["y"]
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// A proof for `htm htu` issued at `iat`, with `ath` for `token` (RFC 9449 §4.2).
    pub(crate) fn proof_at(&self, htm: &str, htu: &str, token: Option<&str>, iat: u64) -> String {
        self.proof_with(htm, htu, token, iat, None)
    }

    /// A proof as [`ProofKey::proof_at`], with the server's `nonce` when given (§8).
    fn proof_with(
        &self,
        htm: &str,
        htu: &str,
        token: Option<&str>,
        iat: u64,
        nonce: Option<&str>,
    ) -> String {
        let jti = format!("jti-{}-{}", unix_now(), JTI.fetch_add(1, Ordering::Relaxed));
        let mut claims = json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat});
        if let Some(token) = token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.signing, Algorithm::ES256).unwrap();
        format!("{input}.{signature}")
    }

    pub(crate) fn proof(&self, htm: &str, htu: &str, token: Option<&str>) -> String {
        self.proof_at(htm, htu, token, unix_now())
    }

    /// This key with a `kid` in its `jwk` (not part of the thumbprint, RFC 7638 §3.2).
    fn with_kid(&self, kid: &str) -> ProofKey {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        ProofKey {
            signing: self.signing.clone(),
            jwk,
        }
    }

    /// This key's `jwk` with `signer`'s private key: proofs that name this key, not its own.
    fn signed_by(&self, signer: &ProofKey) -> ProofKey {
        ProofKey {
            signing: signer.signing.clone(),
            jwk: self.jwk.clone(),
        }
    }
}

/// A client_credentials token of `client` (secret `<client>-secret`, or fhir-app's), DPoP-bound
/// to `key` when given; returns the token endpoint's JSON answer.
async fn issued(guard: &Guard, issuer: &str, client: &str, key: Option<&ProofKey>) -> Value {
    let secret = match client {
        "fhir-app" => "fhir-app-secret".to_owned(),
        other => format!("{other}-secret"),
    };
    let basic = format!("Basic {}", STANDARD.encode(format!("{client}:{secret}")));
    let url = format!("{issuer}/token");
    let proof = key.map(|key| key.proof("POST", &url, None));
    let mut headers = vec![
        ("authorization", basic.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    if let Some(proof) = &proof {
        headers.push(("dpop", proof.as_str()));
    }
    let form = "grant_type=client_credentials&scope=system%2F*.read";
    let request = client::request(Method::POST, &url, None, &headers, form);
    let answer = guard.http.exchange(request).await;
    assert_eq!(answer.status, StatusCode::OK, "token: {}", answer.body);
    answer.json()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn send(guard: &Guard, method: Method, target: &str, headers: &[(&str, &str)]) -> Answer {
    let url = guard.url(target);
    let request = client::request(method, &url, None, headers, Bytes::new());
    guard.http.exchange(request).await
}

/// fhirguard in front of the real provider's two clients, `fhir-app` and `backend-app` (both
/// read-only), with `dpop` as `senderConstraints.dpop`.
async fn serve(issuer: &str, dpop: &str) -> Guard {
    Stack::builder()
        .serve(|stack| {
            let applications = [
                ("fhir-app", RESOURCE, r#"["Read"]"#),
                ("backend-app", RESOURCE, r#"["Read"]"#),
            ];
            (stack
                .config()
                .with(&format!("senderConstraints:\n  dpop: {dpop}")))
            .smart(issuer, &applications)
            .to_string()
        })
        .await
}

/// A 401 with a DPoP challenge carrying `error` and the algorithms (RFC 9449 §7.1).
fn assert_dpop_challenge(answer: &Answer, error: &str, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        answer.body
    );
    let challenge = answer.header("www-authenticate").expect("a challenge");
    assert!(challenge.starts_with("DPoP "), "{what}: {challenge}");
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{what}: {challenge}"
    );
    assert!(challenge.contains("algs=\"ES256 "), "{what}: {challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_tokens_of_a_real_provider() {
    if oidc::prepared().is_none() {
        return;
    }
    let provider = tokio::task::spawn_blocking(oidc::start).await.unwrap();
    let issuer = provider.issuer.clone();
    let dpop = r#"{ requiredFor: ["backend-app"] }"#;
    let guard = serve(&issuer, dpop).await;
    let g = &guard;
    let key = ProofKey::new();
    let answer = issued(g, &issuer, "fhir-app", Some(&key)).await;
    assert_eq!(answer["token_type"], "DPoP", "{answer}");
    let token = answer["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        claims(&token)["cnf"]["jkt"],
        key.thumbprint(),
        "the provider bound the token"
    );
    let htu = g.url("/Observation");
    let dpop_token = format!("DPoP {token}");
    let with_proof = |proof: &str| {
        [
            ("authorization", dpop_token.clone()),
            ("dpop", proof.to_owned()),
        ]
    };
    let call = |proof: String, method: Method, target: &'static str| {
        let headers = with_proof(&proof);
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            send(g, method, target, &headers).await
        }
    };

    // A fresh proof: accepted (the query is not part of htu, §4.3 item 9).
    let proof = key.proof("GET", &htu, Some(&token));
    let ok = call(proof.clone(), Method::GET, "/Observation?code=x").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    // The same proof again: a replay (§11.1).
    let replayed = call(proof, Method::GET, "/Observation?code=x").await;
    assert_dpop_challenge(&replayed, "invalid_dpop_proof", "replayed proof");
    // The token is cached now; a fresh proof is still needed and enough.
    let again = call(
        key.proof("GET", &htu, Some(&token)),
        Method::GET,
        "/Observation",
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);

    let other_path = g.url("/Patient");
    let cases = [
        ("wrong htu", key.proof("GET", &other_path, Some(&token))),
        ("wrong htm", key.proof("POST", &htu, Some(&token))),
        (
            "stale iat",
            key.proof_at("GET", &htu, Some(&token), unix_now() - 3600),
        ),
        (
            "other key",
            ProofKey::new().proof("GET", &htu, Some(&token)),
        ),
        (
            "ath of another token",
            key.proof("GET", &htu, Some("another")),
        ),
    ];
    for (what, proof) in cases {
        let answer = call(proof, Method::GET, "/Observation").await;
        assert_dpop_challenge(&answer, "invalid_dpop_proof", what);
    }
    let no_proof = send(
        g,
        Method::GET,
        "/Observation",
        &[("authorization", &dpop_token)],
    )
    .await;
    assert_dpop_challenge(&no_proof, "invalid_dpop_proof", "no proof");
    // §7.2: the bound token as a bearer token.
    let bearer = format!("Bearer {token}");
    let as_bearer = send(
        g,
        Method::GET,
        "/Observation",
        &[("authorization", &bearer)],
    )
    .await;
    assert_dpop_challenge(&as_bearer, "invalid_token", "bound token as Bearer");

    // A client that must use DPoP: its bearer token is useless, its bound token works.
    let unbound = issued(g, &issuer, "backend-app", None).await;
    assert_eq!(unbound["token_type"], "Bearer");
    let stolen = format!("Bearer {}", unbound["access_token"].as_str().unwrap());
    let refused = send(
        g,
        Method::GET,
        "/Observation",
        &[("authorization", &stolen)],
    )
    .await;
    assert_dpop_challenge(&refused, "invalid_token", "bearer token of a DPoP client");
    let backend_key = ProofKey::new();
    let bound = issued(g, &issuer, "backend-app", Some(&backend_key)).await;
    let bound = bound["access_token"].as_str().unwrap().to_owned();
    let proof = backend_key.proof("GET", &htu, Some(&bound));
    let authorization = format!("DPoP {bound}");
    let headers = [
        ("authorization", authorization.as_str()),
        ("dpop", proof.as_str()),
    ];
    let accepted = send(g, Method::GET, "/Observation", &headers).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);

    // Refusals are counted by bounded reasons.
    let metrics = g.metrics().await;
    for reason in [
        "dpop_proof_replayed",
        "dpop_proof_htu",
        "dpop_proof_htm",
        "dpop_proof_iat",
        "dpop_key_mismatch",
        "dpop_proof_ath",
        "dpop_proof_missing",
        "dpop_bound_as_bearer",
        "dpop_required",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "no auth failure counted as {reason}"
        );
    }
    drop(provider);
}

/// `explain` runs the same proof checks as the proxy, and shows the proof and the binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_checks_a_dpop_proof() {
    use crate::support::binary::Explain;
    use crate::support::idp::FakeIdp;
    use crate::support::token::{self, now, TestKey};

    let key = TestKey::ec_p256("explain-dpop");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::cli::config_file(&dir, &idp);
    let proof_key = ProofKey::new();
    let token = token::base_claims(&idp.issuer(), "https://fhir.example.org", now())
        .claim("azp", "reader")
        .claim("scp", "system/*.read")
        .claim("cnf", json!({"jkt": proof_key.thumbprint()}))
        .sign(&key);
    let explain = |headers: Vec<String>| {
        let mut explain = Explain::new(&config)
            .token(&token)
            .method("GET")
            .path("/Observation");
        for header in &headers {
            explain = explain.header(header);
        }
        explain.run()
    };
    let host = "Host: fhir.test".to_owned();
    let proof = proof_key.proof("GET", "http://fhir.test/Observation", Some(&token));
    let output = explain(vec![host.clone(), format!("DPoP: {proof}")]).await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(0), "{stdout}");
    for expected in [
        "dpop proof (unverified): typ=\"dpop+jwt\" alg=\"ES256\"",
        "ath=matches the token",
        "step 7 binding: DPoP key jkt=",
        "verdict: ALLOW",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Without the proof, the bound token is a bearer token: refused (RFC 9449 §7.2).
    let output = explain(vec![host.clone()]).await;
    let stdout = output.stdout;
    assert!(
        stdout.contains("verdict: 401 dpop_bound_as_bearer"),
        "{stdout}"
    );

    // With nonces required (§8) and a secret file, the nonce step shows; a nonce made with the
    // file's secret, as the proxy would hand it out, passes.
    let secret = dir.path().join("nonce-secret");
    std::fs::write(&secret, [9u8; 40]).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "senderConstraints:\n  dpop:\n    nonce: {{required: true, secretFile: \"{}\"}}\n",
        secret.display()
    ));
    std::fs::write(&config, text).unwrap();
    let htu = "http://fhir.test/Observation";
    let proof = proof_key.proof("GET", htu, Some(&token));
    let output = explain(vec![host.clone(), format!("DPoP: {proof}")]).await;
    let stdout = output.stdout;
    assert_ne!(output.code, Some(0), "{stdout}");
    for expected in [
        "step 7 dpop nonce: required (lifetime 300s, secret secretFile): The DPoP proof has no \
         nonce → 401 use_dpop_nonce (dpop_nonce_missing)",
        "verdict: 401 dpop_nonce_missing",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let nonce = fhirguard::auth::dpop::nonce::Nonces::new(&[9u8; 40], 300).current(now());
    let nonce = nonce.to_str().unwrap();
    let proof = proof_key.proof_with("GET", htu, Some(&token), now(), Some(nonce));
    let output = explain(vec![host, format!("DPoP: {proof}")]).await;
    let stdout = output.stdout;
    assert_eq!(output.code, Some(0), "{stdout}");
    assert!(
        stdout.contains("step 7 dpop nonce: required (lifetime 300s, secret secretFile): valid"),
        "{stdout}"
    );
}

/// RFC 9449 §8–9 against the real provider's DPoP-bound token, with nonces required and a
/// shared secret file: the first proof has no nonce (401 `use_dpop_nonce`, `DPoP-Nonce`), the
/// retry with that nonce is accepted and answered with the nonce to use next, a forged nonce is
/// refused with a fresh one. A bearer client's request is untouched: no nonce, no challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_with_a_real_provider() {
    if oidc::prepared().is_none() {
        return;
    }
    let provider = tokio::task::spawn_blocking(oidc::start).await.unwrap();
    let issuer = provider.issuer.clone();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("dpop-nonce-secret");
    std::fs::write(&secret, [0x5a; 32]).unwrap();
    let dpop = format!(
        "{{ nonce: {{ required: true, lifetime: 5m, secretFile: \"{}\" }} }}",
        secret.display()
    );
    let guard = serve(&issuer, &dpop).await;
    let g = &guard;
    let key = ProofKey::new();
    let token = issued(g, &issuer, "fhir-app", Some(&key)).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let htu = g.url("/Observation");
    let authorization = format!("DPoP {token}");
    let with_nonce = |nonce: Option<&str>| {
        let proof = key.proof_with("GET", &htu, Some(&token), unix_now(), nonce);
        let authorization = authorization.clone();
        async move {
            let headers = [
                ("authorization", authorization.as_str()),
                ("dpop", proof.as_str()),
            ];
            send(g, Method::GET, "/Observation", &headers).await
        }
    };

    // §9: no nonce yet → 401 use_dpop_nonce, with the nonce to use.
    let first = with_nonce(None).await;
    assert_dpop_challenge(&first, "use_dpop_nonce", "a proof without a nonce");
    let challenge = first.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error_description=\"The DPoP proof has no nonce; retry with"),
        "{challenge}"
    );
    let nonce = first.header("dpop-nonce").expect("a DPoP-Nonce").to_owned();
    assert_eq!(nonce.len(), 32, "{nonce}");
    assert_eq!(
        first.json()["issue"][0]["code"],
        "login",
        "an OperationOutcome: {}",
        first.body
    );

    // The retry with it: accepted, and told the nonce to use next (§8.2).
    let retry = with_nonce(Some(&nonce)).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    let next = retry.header("dpop-nonce").expect("a DPoP-Nonce on success");
    let again = with_nonce(Some(next)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(again.header("dpop-nonce").is_some());

    // A nonce with one character of its MAC changed: refused, with a fresh one.
    let last = if nonce.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &nonce[..nonce.len() - 1]);
    let refused = with_nonce(Some(&forged)).await;
    assert_dpop_challenge(&refused, "use_dpop_nonce", "a forged nonce");
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .contains("was not issued by this server"));
    assert_eq!(refused.header("dpop-nonce"), Some(nonce.as_str()));
    // A nonce that is no nonce at all: the same.
    let garbage = with_nonce(Some("not-a-nonce")).await;
    assert_dpop_challenge(&garbage, "use_dpop_nonce", "a garbage nonce");

    // A bearer token of a client without DPoP: no nonce handed out, no challenge.
    let bearer = issued(g, &issuer, "backend-app", None).await;
    let bearer = format!("Bearer {}", bearer["access_token"].as_str().unwrap());
    let plain = send(
        g,
        Method::GET,
        "/Observation",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    assert_eq!(plain.header("dpop-nonce"), None);

    let metrics = g.metrics().await;
    let failures = |reason: &str| {
        sum(
            &metrics,
            "fhirguard_auth_failures_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(failures("dpop_nonce_missing"), 1.0);
    assert_eq!(failures("dpop_nonce_invalid"), 2.0);
    // Only the accepted proofs are remembered: a proof refused for its nonce keeps its jti.
    assert_eq!(
        metric(&metrics, "fhirguard_dpop_replay_cache_entries"),
        Some(2.0)
    );
    drop(provider);
}

/// A token of the stack's own provider for `ops-client`, bound to `key` (`cnf.jkt`).
fn bound_token(g: &Guard, key: &ProofKey) -> String {
    use crate::support::stack::{AUDIENCE, ROLE};
    use crate::support::token::{self, now};

    token::base_claims(&g.stack.idp.issuer(), AUDIENCE, now())
        .claim("appid", "ops-client")
        .claim("roles", json!([ROLE]))
        .claim("cnf", json!({"jkt": key.thumbprint()}))
        .sign(&g.stack.key)
}

/// `GET /Patient` with the DPoP-bound `token` and `proof`.
async fn read_patients(g: &Guard, token: &str, proof: String) -> Answer {
    let authorization = format!("DPoP {token}");
    let headers = [
        ("authorization", authorization.as_str()),
        ("dpop", proof.as_str()),
    ];
    send(g, Method::GET, "/Patient", &headers).await
}

/// `fhirguard_dpop_replay_cache_entries` reads the proofs accepted, set at scrape time; a
/// refused replay is counted under `dpop_proof_replayed` and adds no entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_cache_gauge_counts_accepted_proofs() {
    let guard = Stack::builder()
        .serve(|stack| stack.yaml("[Read]", ""))
        .await;
    let g = &guard;
    let empty = g.metrics().await;
    assert_eq!(
        metric(&empty, "fhirguard_dpop_replay_cache_entries"),
        Some(0.0)
    );
    let key = ProofKey::new();
    let token = bound_token(g, &key);
    let htu = g.url("/Patient");
    let call = |proof: String| read_patients(g, &token, proof);
    const ACCEPTED: usize = 5;
    let mut first = None;
    for _ in 0..ACCEPTED {
        let proof = key.proof("GET", &htu, Some(&token));
        let answer = call(proof.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        // Nonces are off: nothing is handed out.
        assert_eq!(answer.header("dpop-nonce"), None);
        first.get_or_insert(proof);
    }
    let replayed = call(first.unwrap()).await;
    assert_dpop_challenge(&replayed, "invalid_dpop_proof", "a replayed proof");
    let metrics = g.metrics().await;
    assert_eq!(
        metric(&metrics, "fhirguard_dpop_replay_cache_entries"),
        Some(ACCEPTED as f64)
    );
    assert_eq!(
        sum(
            &metrics,
            "fhirguard_auth_failures_total",
            &[("reason", "dpop_proof_replayed")]
        ),
        1.0
    );
}

/// fhirguard remembers a proof header's key by the header's exact text, once a proof under it
/// verified: a later proof under that header still needs the key's signature, its own `jti`,
/// and a key the token names — another key under the same `kid` is another header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_proof_key_is_no_shortcut() {
    let guard = Stack::builder()
        .serve(|stack| stack.yaml("[Read]", ""))
        .await;
    let g = &guard;
    let key = ProofKey::new().with_kid("client-key-1");
    let token = bound_token(g, &key);
    let htu = g.url("/Patient");
    let call = |proof: String| read_patients(g, &token, proof);
    let first = key.proof("GET", &htu, Some(&token));
    let answer = call(first.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The key's header, remembered now, over a proof another key signed.
    let intruder = ProofKey::new();
    let forged = key.signed_by(&intruder).proof("GET", &htu, Some(&token));
    let answer = call(forged).await;
    assert_dpop_challenge(
        &answer,
        "invalid_dpop_proof",
        "a remembered header, another signer",
    );
    // Another key under the same kid: its own thumbprint, not the token's cnf.jkt.
    let same_kid = intruder
        .with_kid("client-key-1")
        .proof("GET", &htu, Some(&token));
    let answer = call(same_kid).await;
    assert_dpop_challenge(&answer, "invalid_dpop_proof", "another key, the same kid");
    // The first proof again: a replay, though its header is remembered.
    let answer = call(first).await;
    assert_dpop_challenge(&answer, "invalid_dpop_proof", "a replayed proof");
    // Still checked per proof: the claims.
    let answer = call(key.proof("GET", &g.url("/Observation"), Some(&token))).await;
    assert_dpop_challenge(&answer, "invalid_dpop_proof", "another htu");
    let answer = call(key.proof("GET", &htu, Some(&token))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let metrics = g.metrics().await;
    for reason in [
        "dpop_proof_signature",
        "dpop_key_mismatch",
        "dpop_proof_replayed",
        "dpop_proof_htu",
    ] {
        let counted = sum(
            &metrics,
            "fhirguard_auth_failures_total",
            &[("reason", reason)],
        );
        assert_eq!(counted, 1.0, "{reason}");
    }
    assert_eq!(
        metric(&metrics, "fhirguard_dpop_replay_cache_entries"),
        Some(2.0)
    );
}
