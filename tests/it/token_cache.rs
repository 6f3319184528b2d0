//! The verified-token cache (issue 5) against a fake OpenID provider: a repeated token is
//! verified once; a hit still checks the lifetime; a key-set change and another configuration
//! miss; the memory bound holds; the counters reach `/metrics`.

use std::time::Duration;

use crate::support::idp::{config_yaml, FakeIdp};
use crate::support::stack::Stack;
use crate::support::token::{self, now, TestKey};
use std::sync::Arc;

use fhirguard::auth::{self, AuthError, KeySettings, KeyStore, Principal};
use fhirguard::config::Config;
use fhirguard::proxy::session::{self, ConnectionMemo, TokenCache, TokenCacheStats};
use http::StatusCode;
use serde_json::json;

const AUDIENCE: &str = "https://fhir.example.org";

/// A primary authority served by `idp`; refetches for unknown `kid`s are rare (1 h) unless
/// forced, as in production.
fn config(idp: &FakeIdp) -> Config {
    let mut config =
        Config::parse(&config_yaml(Some((&idp.base_url(), AUDIENCE)), &[])).expect("config");
    config.key_sets.min_refetch_interval = Duration::from_secs(3600);
    config
}

fn valid(idp: &FakeIdp, key: &TestKey) -> String {
    token::base_claims(&idp.issuer(), AUDIENCE, now()).sign(key)
}

/// The key sets and the proxy's verified-token cache, as the proxy holds them.
struct Store {
    keys: KeyStore,
    tokens: TokenCache,
}

impl Store {
    fn new() -> Store {
        Store::with_token_cache_bytes(session::DEFAULT_CAPACITY_BYTES)
    }

    fn with_token_cache_bytes(capacity: u64) -> Store {
        Store {
            keys: KeyStore::new(),
            tokens: TokenCache::new(capacity),
        }
    }

    fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }
}

impl std::ops::Deref for Store {
    type Target = KeyStore;

    fn deref(&self) -> &KeyStore {
        &self.keys
    }
}

async fn authenticate(
    store: &Store,
    config: &Config,
    token: &str,
    now: u64,
) -> Result<Arc<Principal>, AuthError> {
    authenticate_on(store, config, token, now, None).await
}

async fn authenticate_on(
    store: &Store,
    config: &Config,
    token: &str,
    now: u64,
    memo: Option<&ConnectionMemo>,
) -> Result<Arc<Principal>, AuthError> {
    session::authenticate(&store.tokens, &store.keys, config, token, now, memo)
        .await
        .map(|session| Arc::clone(session.principal()))
}

fn counts(store: &Store) -> (u64, u64) {
    let TokenCacheStats { hits, misses, .. } = store.token_cache().stats();
    (hits, misses)
}

#[tokio::test]
async fn a_repeated_token_is_verified_once() {
    let key = TestKey::rsa("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let (config, store) = (config(&idp), Store::new());
    let token = valid(&idp, &key);
    let first = authenticate(&store, &config, &token, now())
        .await
        .expect("verified");
    for _ in 0..3 {
        let again = authenticate(&store, &config, &token, now())
            .await
            .expect("cached");
        assert_eq!(again, first);
    }
    assert_eq!(counts(&store), (3, 1));

    // Another token of the same client is its own entry.
    let other = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("jti", "2")
        .sign(&key);
    authenticate(&store, &config, &other, now())
        .await
        .expect("verified");
    assert_eq!(counts(&store), (3, 2));
}

#[tokio::test]
async fn refused_tokens_are_not_cached() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let (config, store) = (config(&idp), Store::new());
    let wrong_audience = token::base_claims(&idp.issuer(), "https://other", now()).sign(&key);
    for _ in 0..2 {
        let error = authenticate(&store, &config, &wrong_audience, now())
            .await
            .expect_err("refused");
        assert_eq!(error.reason(), "audience");
    }
    assert_eq!(counts(&store), (0, 2));
    store.token_cache().run_pending_tasks().await;
    assert_eq!(store.token_cache().stats().entries, 0);
}

#[tokio::test]
async fn a_cached_token_that_has_expired_since_is_refused() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let (config, store) = (config(&idp), Store::new());
    let issued = now();
    let token = token::base_claims(&idp.issuer(), AUDIENCE, issued)
        .claim("exp", issued + 600)
        .sign(&key);
    authenticate(&store, &config, &token, issued)
        .await
        .expect("verified");

    // Within the clock skew (300 s) after exp: still accepted, from the cache.
    authenticate(&store, &config, &token, issued + 600 + 299)
        .await
        .expect("within the skew");
    // Past it: refused by the hit itself, with the full path's error.
    let error = authenticate(&store, &config, &token, issued + 600 + 301)
        .await
        .expect_err("expired");
    assert_eq!(
        error,
        AuthError::Expired {
            authority: idp.base_url(),
            exp: issued + 600
        }
    );
    assert_eq!(counts(&store), (2, 1));
}

#[tokio::test]
async fn a_key_set_change_that_removes_the_key_drops_its_tokens() {
    let old = TestKey::ec_p256("old");
    let idp = FakeIdp::with_keys(vec![old.jwk()]).await;
    let (config, store) = (config(&idp), Store::new());
    let settings = KeySettings::of(&config);
    let token = valid(&idp, &old);
    authenticate(&store, &config, &token, now())
        .await
        .expect("verified");

    // A refresh that changes nothing keeps the entry.
    assert!(store
        .refetch_for_unknown_kid(&idp.base_url(), &settings)
        .await
        .is_some());
    authenticate(&store, &config, &token, now())
        .await
        .expect("cached");
    assert_eq!(counts(&store), (1, 1));

    // The provider rotates "old" out; the store learns it from its next fetch (a background
    // refresh; here the store's own refetch, which the test config otherwise rate-limits).
    let new = TestKey::ec_p256("new");
    idp.set_keys(vec![new.jwk()]);
    let mut config = config;
    config.key_sets.min_refetch_interval = Duration::ZERO;
    let refreshed = store
        .refetch_for_unknown_kid(&idp.base_url(), &KeySettings::of(&config))
        .await
        .expect("refetched");
    assert_eq!(refreshed.keys.len(), 1);
    config.key_sets.min_refetch_interval = Duration::from_secs(3600);

    let error = authenticate(&store, &config, &token, now())
        .await
        .expect_err("the key is gone");
    assert_eq!(error.reason(), "unknown_kid");
    assert_eq!(counts(&store), (1, 2));
    authenticate(&store, &config, &valid(&idp, &new), now())
        .await
        .expect("the new key verifies");
}

/// A connection's last token answers as a cache hit would, under the same rules.
#[tokio::test]
async fn a_connections_last_token_follows_the_cache_rules() {
    let old = TestKey::ec_p256("old");
    let idp = FakeIdp::with_keys(vec![old.jwk()]).await;
    let (mut config, store) = (config(&idp), Store::new());
    let memo = ConnectionMemo::default();
    let issued = now();
    let token = token::base_claims(&idp.issuer(), AUDIENCE, issued)
        .claim("exp", issued + 600)
        .sign(&old);
    let first = authenticate_on(&store, &config, &token, issued, Some(&memo))
        .await
        .expect("verified");
    for _ in 0..3 {
        let again = authenticate_on(&store, &config, &token, issued, Some(&memo))
            .await
            .expect("remembered");
        assert!(
            std::sync::Arc::ptr_eq(&again, &first),
            "the same verification"
        );
    }
    assert_eq!(counts(&store), (3, 1), "answered as cache hits");

    // Another token on the same connection is looked up (and verified) on its own.
    let other = token::base_claims(&idp.issuer(), AUDIENCE, issued)
        .claim("jti", "2")
        .claim("exp", issued + 600)
        .sign(&old);
    let second = authenticate_on(&store, &config, &other, issued, Some(&memo))
        .await
        .expect("verified");
    assert!(!std::sync::Arc::ptr_eq(&second, &first));
    assert_eq!(counts(&store), (3, 2));

    // Its lifetime is still checked on every request.
    let error = authenticate_on(&store, &config, &other, issued + 600 + 301, Some(&memo))
        .await
        .expect_err("expired");
    assert_eq!(error.reason(), "expired");

    // A key set without its key: the remembered verification no longer applies; verified
    // again, and refused.
    let new = TestKey::ec_p256("new");
    idp.set_keys(vec![new.jwk()]);
    config.key_sets.min_refetch_interval = Duration::ZERO;
    store
        .refetch_for_unknown_kid(&idp.base_url(), &KeySettings::of(&config))
        .await
        .expect("refetched");
    let error = authenticate_on(&store, &config, &other, issued, Some(&memo))
        .await
        .expect_err("the key is gone");
    assert_eq!(error.reason(), "unknown_kid");
}

#[tokio::test]
async fn another_configuration_misses() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let store = Store::new();
    let first = config(&idp);
    // The next generation: same provider, another groups claim (the Principal would differ).
    let yaml = format!(
        "{}roles:\n  groupsClaim: groups\n",
        config_yaml(Some((&idp.base_url(), AUDIENCE)), &[])
    );
    let second = Config::parse(&yaml).expect("config");
    assert_ne!(first.fingerprint, second.fingerprint);

    let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
        .claim("groups", json!(["readers"]))
        .sign(&key);
    let before = authenticate(&store, &first, &token, now())
        .await
        .expect("verified");
    assert!(before.groups.is_empty());
    let after = authenticate(&store, &second, &token, now())
        .await
        .expect("verified again");
    assert_eq!(after.groups, ["readers"]);
    assert_eq!(counts(&store), (0, 2));
    // The same text parsed again is the same configuration.
    let reparsed = Config::parse(&yaml).expect("config");
    authenticate(&store, &reparsed, &token, now())
        .await
        .expect("cached");
    assert_eq!(counts(&store), (1, 2));
}

#[tokio::test]
async fn the_memory_bound_holds() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let capacity = 16 * 1024;
    let (config, store) = (config(&idp), Store::with_token_cache_bytes(capacity));
    for i in 0..200 {
        let token = token::base_claims(&idp.issuer(), AUDIENCE, now())
            .claim("jti", i)
            .sign(&key);
        authenticate(&store, &config, &token, now())
            .await
            .expect("verified");
    }
    let cache = store.token_cache();
    cache.run_pending_tasks().await;
    let stats = cache.stats();
    assert!(stats.weighted_bytes <= capacity, "{stats:?}");
    assert!((1..200).contains(&stats.entries), "{stats:?}");
}

#[tokio::test]
async fn without_a_cache_every_token_is_verified_in_full() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let (config, store) = (config(&idp), Store::with_token_cache_bytes(0));
    let token = valid(&idp, &key);
    for _ in 0..2 {
        authenticate(&store, &config, &token, now())
            .await
            .expect("verified");
    }
    assert_eq!(store.token_cache().stats(), TokenCacheStats::default());
}

#[tokio::test]
async fn the_counters_are_exported() {
    let g = Stack::builder()
        .key(TestKey::ec_p256("k"))
        .serve(|stack| {
            (stack.config())
                .primary(&stack.idp.base_url(), AUDIENCE)
                .to_string()
        })
        .await;
    let token = token::base_claims(&g.stack.idp.issuer(), AUDIENCE, now())
        .claim("roles", json!(["FHIR Data Reader"]))
        .sign(&g.stack.key);
    for _ in 0..3 {
        let response = g.get("/Patient/1", Some(&token)).await;
        assert_eq!(response.status, StatusCode::OK);
    }
    let text = g.metrics().await;
    assert!(
        text.lines()
            .any(|l| l == "fhirguard_token_cache_hits_total 2"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "fhirguard_token_cache_misses_total 1"),
        "{text}"
    );
    g.running.stop().await;
}

/// The connection memo's shortcut (`session::recall`) answers only for the header the
/// connection presented last, spelt exactly `Bearer <token>` or `DPoP <token>`, alone, under
/// the configuration that judged it, with the token cache on; it counts as a cache hit and
/// still checks the lifetime.
#[tokio::test]
async fn only_the_same_header_byte_for_byte_is_recalled() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let (config, store) = (config(&idp), Store::new());
    let memo = ConnectionMemo::default();
    let issued = now();
    let token = token::base_claims(&idp.issuer(), AUDIENCE, issued)
        .claim("exp", issued + 600)
        .sign(&key);
    let first = authenticate_on(&store, &config, &token, issued, Some(&memo))
        .await
        .expect("verified");
    let headers = |values: &[String]| {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    };
    let recall = |config: &Config, headers: http::HeaderMap, at: u64| {
        let (store, memo) = (&store, &memo);
        let config = config.clone();
        async move { session::recall(&store.tokens, &store.keys, &config, &headers, at, memo).await }
    };

    for (value, scheme) in [
        (format!("Bearer {token}"), auth::Scheme::Bearer),
        (format!("DPoP {token}"), auth::Scheme::Dpop),
    ] {
        let recalled = recall(&config, headers(&[value]), issued).await;
        let recalled = recalled.expect("recalled");
        assert_eq!(recalled.scheme, scheme);
        assert_eq!(&*recalled.token, token.as_str());
        let session = recalled.answer.expect("still valid");
        assert!(Arc::ptr_eq(session.principal(), &first), "the kept session");
    }
    assert_eq!(counts(&store), (2, 1), "recalls count as cache hits");

    // Another spelling, another token, two headers or none: read in full instead.
    let unlike = [
        vec![format!("bearer {token}")],
        vec![format!("Bearer  {token}")],
        vec![format!("Bearer {token} ")],
        vec![format!("Bearer {token}x")],
        vec![format!("Bearer {}", &token[..token.len() - 1])],
        vec![format!("Basic {token}")],
        vec![format!("Bearer {token}"), format!("Bearer {token}")],
        vec![],
    ];
    for values in unlike {
        let recalled = recall(&config, headers(&values), issued).await;
        assert!(recalled.is_none(), "{values:?} was recalled");
    }
    assert_eq!(counts(&store), (2, 1));

    // The lifetime is checked; another configuration or a disabled cache never recalls.
    let canonical = || headers(&[format!("Bearer {token}")]);
    let expired = recall(&config, canonical(), issued + 600 + 301).await;
    let error = expired.expect("recalled").answer.expect_err("expired");
    assert_eq!(error.reason(), "expired");
    let mut other = config.clone();
    other.fingerprint = [7; 32];
    assert!(recall(&other, canonical(), issued).await.is_none());
    let uncached = Store::with_token_cache_bytes(0);
    let headers = canonical();
    let recalled = session::recall(
        &uncached.tokens,
        &uncached.keys,
        &config,
        &headers,
        issued,
        &memo,
    );
    assert!(recalled.await.is_none());
}

/// Over one keep-alive connection: after a good request, a second `Authorization` header, a
/// changed token or another spelling is judged as on a new connection, whatever the memo holds.
#[tokio::test]
async fn a_kept_connection_gets_no_shortcut_for_another_header() {
    let g = Stack::builder()
        .serve(|stack| stack.yaml("[\"*\"]", ""))
        .await;
    let token = g.stack.token();
    let address = g.running.proxy_address;
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let cases = [
        (vec![format!("Bearer {token}")], 200),
        (
            vec![format!("Bearer {token}"), format!("Bearer {token}")],
            401,
        ),
        (vec![format!("Bearer {token}")], 200),
        (vec![format!("Bearer {token}x")], 401),
        (vec![format!("bearer   {token}")], 200),
        (vec![format!("Bearer {token}")], 200),
        (vec![], 401),
        (vec![format!("Bearer {token}")], 200),
    ];
    for (values, status) in &cases {
        let mut head = format!("GET /Patient/1 HTTP/1.1\r\nHost: {address}\r\n");
        for value in values {
            head.push_str(&format!("Authorization: {value}\r\n"));
        }
        head.push_str("\r\n");
        let (answered, _) = keep_alive_exchange(&mut stream, head.as_bytes()).await;
        assert_eq!(answered, *status, "{values:?}");
    }
    // One connection throughout, and only the accepted requests reached the upstream.
    assert_eq!(g.stack.upstream.requests().len(), 5);
    g.running.stop().await;
}

/// Writes `request` on `stream` and reads one answer: its status and body (by its
/// `Content-Length`), leaving the connection open.
async fn keep_alive_exchange(stream: &mut tokio::net::TcpStream, request: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.expect("write");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(
            read > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
    let status = head[9..12].parse().expect("a status");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().expect("a length"));
    while received.len() < head_end + length {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "closed mid-body");
        received.extend_from_slice(&chunk[..read]);
    }
    (status, received[head_end..head_end + length].to_vec())
}
