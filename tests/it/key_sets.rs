//! The key-set cache against a fake OpenID provider (SPEC §5): rotation with one refetch, the
//! unknown-`kid` rate limit, single flight, identity provider down at start and after a good
//! fetch, `maxStale`, fail-closed provider selection, probe, counters.

use std::sync::Arc;
use std::time::Duration;

use crate::support::idp::{config_yaml, FakeIdp};
use crate::support::poll::eventually;
use crate::support::token::{self, now, TestKey};
use arc_swap::ArcSwap;
use fhirguard::auth::{authenticate, AuthError, KeyError, KeyStore};
use fhirguard::config::Config;
use http::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

const AUDIENCE: &str = "https://fhir.example.org";

/// Primary authority `authorities[0]`, the others smart providers; short retries, long refresh.
fn config(authorities: &[String]) -> Config {
    let apps: Vec<[(String, &str); 1]> = (1..authorities.len())
        .map(|i| [(format!("app-{i}"), AUDIENCE)])
        .collect();
    let app_refs: Vec<[(&str, &str); 1]> = apps.iter().map(|[(c, a)]| [(c.as_str(), *a)]).collect();
    let smart: Vec<(&str, &[(&str, &str)])> = authorities[1..]
        .iter()
        .zip(&app_refs)
        .map(|(authority, apps)| (authority.as_str(), &apps[..]))
        .collect();
    let yaml = config_yaml(Some((&authorities[0], AUDIENCE)), &smart);
    let mut config = Config::parse(&yaml).expect("test config");
    let sets = &mut config.key_sets;
    sets.retry_interval = Duration::from_millis(50);
    sets.refresh_interval = Duration::from_secs(3600);
    sets.min_refetch_interval = Duration::from_secs(3600);
    sets.max_stale = Duration::from_secs(3600);
    sets.fetch_timeout = Duration::from_secs(2);
    config
}

/// How long a test waits for the key store to change state.
const DEADLINE: Duration = Duration::from_secs(10);

fn valid(idp: &FakeIdp, key: &TestKey) -> String {
    token::base_claims(&idp.issuer(), AUDIENCE, now()).sign(key)
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_exactly_one_refetch() {
    let old = TestKey::ec_p256("old");
    let idp = FakeIdp::with_keys(vec![old.jwk()]).await;
    let (config, store) = (config(&[idp.base_url()]), KeyStore::new());
    store.prefetch(&config).await;
    assert_eq!(idp.jwks_fetches(), 1);

    let new = TestKey::ec_p256("new");
    idp.add_key(new.jwk());
    authenticate(&store, &config, &valid(&idp, &new), now())
        .await
        .expect("new kid accepted");
    assert_eq!(idp.jwks_fetches(), 2);
    authenticate(&store, &config, &valid(&idp, &new), now())
        .await
        .expect("cached");
    authenticate(&store, &config, &valid(&idp, &old), now())
        .await
        .expect("old kid still published");
    // Another unknown kid right away: no refetch within minRefetchInterval.
    let error = authenticate(&store, &config, &valid(&idp, &TestKey::ec_p256("x")), now()).await;
    assert!(
        matches!(error, Err(AuthError::UnknownKid { .. })),
        "{error:?}"
    );
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_thousand_random_kids_cause_a_bounded_number_of_fetches() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let (config, store) = (Arc::new(config(&[idp.base_url()])), KeyStore::new());
    store.prefetch(&config).await;
    let mut requests = JoinSet::new();
    for _ in 0..1000 {
        let kid = format!("random-{}", rand::random::<u64>());
        let token = token::base_claims(&idp.issuer(), AUDIENCE, now()).forged("ES256", Some(&kid));
        let (store, config) = (store.clone(), Arc::clone(&config));
        requests.spawn(async move { authenticate(&store, &config, &token, now()).await });
    }
    while let Some(result) = requests.join_next().await {
        let error = result.expect("task").expect_err("unknown kid");
        assert_eq!(error.reason(), "unknown_kid");
    }
    assert!(
        idp.jwks_fetches() <= 2,
        "{} key-set fetches",
        idp.jwks_fetches()
    );
}

#[tokio::test]
async fn concurrent_cold_misses_cause_one_fetch() {
    let key = TestKey::ec_p256("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let mut config = config(&[idp.base_url()]);
    // One fetch must serve all 50: on a machine busy with the rest of the suite a 2 s fetch
    // can time out, and a failed fetch is retried by design.
    config.key_sets.fetch_timeout = Duration::from_secs(30);
    let (config, store) = (Arc::new(config), KeyStore::new());
    let mut requests = JoinSet::new();
    for _ in 0..50 {
        let (store, config, token) = (store.clone(), Arc::clone(&config), valid(&idp, &key));
        requests.spawn(async move { authenticate(&store, &config, &token, now()).await });
    }
    while let Some(result) = requests.join_next().await {
        result.expect("task").expect("accepted");
    }
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 1));
}

#[tokio::test]
async fn an_identity_provider_down_at_start_gives_503_until_the_retry_succeeds() {
    let key = TestKey::rsa("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    idp.fail_with(StatusCode::INTERNAL_SERVER_ERROR);
    let config = config(&[idp.base_url()]);
    let store = KeyStore::new();
    store.prefetch(&config).await;
    assert!(!store.is_ready(&config));

    let error = authenticate(&store, &config, &valid(&idp, &key), now())
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(error
        .retry_after()
        .is_some_and(|d| d >= Duration::from_secs(1)));
    assert_eq!(error.reason(), "keys_unavailable");
    assert!(store
        .authority_stats(&idp.base_url())
        .last_error
        .unwrap()
        .contains("500"));

    let source = Arc::new(ArcSwap::from_pointee(config.clone()));
    let refresher = store.spawn_refresher(Arc::clone(&source));
    idp.heal();
    eventually("ready", DEADLINE, || async { store.is_ready(&config) }).await;
    authenticate(&store, &config, &valid(&idp, &key), now())
        .await
        .expect("accepted");
    refresher.abort();
}

#[tokio::test]
async fn keys_are_served_while_the_identity_provider_is_down_up_to_max_stale() {
    let key = TestKey::ec_p384("k");
    let mut idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let mut config = config(&[idp.base_url()]);
    config.key_sets.refresh_interval = Duration::from_millis(20);
    let store = KeyStore::new();
    store.prefetch(&config).await;
    let source = Arc::new(ArcSwap::from_pointee(config.clone()));
    let refresher = store.spawn_refresher(Arc::clone(&source));

    idp.stop();
    let authority = idp.base_url();
    eventually("a failed refresh", DEADLINE, || async {
        store.authority_stats(&authority).fetches_error >= 2
    })
    .await;
    authenticate(&store, &config, &valid(&idp, &key), now())
        .await
        .expect("last good set served");
    assert!(store.is_ready(&config));

    // Past maxStale the old set is no longer trusted.
    config.key_sets.max_stale = Duration::from_millis(1);
    source.store(Arc::new(config.clone()));
    eventually("the held set is past maxStale", DEADLINE, || async {
        !store.is_ready(&config)
    })
    .await;
    assert!(!store.is_ready(&config));
    let error = authenticate(&store, &config, &valid(&idp, &key), now())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, AuthError::KeysUnavailable { authority: a, .. } if *a == authority),
        "{error:?}"
    );

    config.key_sets.max_stale = Duration::from_secs(3600);
    source.store(Arc::new(config.clone()));
    idp.restart().await;
    eventually("ready again", DEADLINE, || async {
        store.is_ready(&config)
    })
    .await;
    refresher.abort();
}

#[tokio::test]
async fn an_unknown_issuer_fails_closed_while_a_provider_has_no_keys() {
    let key = TestKey::rsa("k");
    let good = FakeIdp::with_keys(vec![key.jwk()]).await;
    let down = FakeIdp::with_keys(vec![key.jwk()]).await;
    down.fail_with(StatusCode::SERVICE_UNAVAILABLE);
    let config = config(&[good.base_url(), down.base_url()]);
    let store = KeyStore::new();
    store.prefetch(&config).await;
    let token = token::base_claims("https://elsewhere.example", AUDIENCE, now()).sign(&key);

    let error = authenticate(&store, &config, &token, now())
        .await
        .unwrap_err();
    assert_eq!(error.provider(), Some(down.base_url().as_str()));
    assert!(error.is_unavailable());
    authenticate(&store, &config, &valid(&good, &key), now())
        .await
        .expect("the good provider works");

    down.heal();
    eventually(
        "unknown issuer once every provider is known",
        DEADLINE,
        || async {
            matches!(
                authenticate(&store, &config, &token, now()).await,
                Err(AuthError::UnknownIssuer { .. })
            )
        },
    )
    .await;
}

#[tokio::test]
async fn http_authorities_need_allow_http() {
    let key = TestKey::rsa("k");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let mut config = config(&[idp.base_url()]);
    config.allow_http_authorities = false;
    let store = KeyStore::new();
    store.prefetch(&config).await;
    assert!(!store.is_ready(&config));
    assert_eq!(idp.discovery_fetches(), 0);
    assert!(store
        .authority_stats(&idp.base_url())
        .last_error
        .unwrap()
        .contains("https"));
}

#[tokio::test]
async fn probe_reports_issuer_jwks_uri_and_usable_keys() {
    let key = TestKey::rsa("rsa").with_alg(jsonwebtoken::Algorithm::PS384);
    let idp = FakeIdp::with_keys(vec![
        key.jwk(),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
    ])
    .await;
    idp.set_issuer("https://issuer.example/");
    let config = config(&[format!("{}/", idp.base_url())]);
    let report = KeyStore::new()
        .probe(&config.auth.primary.as_ref().unwrap().authority, &config)
        .await
        .unwrap();
    assert_eq!(report.issuer, "https://issuer.example/");
    assert_eq!(report.jwks_uri, format!("{}/jwks", idp.base_url()));
    let keys: Vec<String> = report.keys.iter().map(ToString::to_string).collect();
    assert_eq!(keys, ["kid=rsa kty=RSA alg=PS384"]);
    assert_eq!(report.skipped.len(), 1);

    idp.fail_with(StatusCode::NOT_FOUND);
    let error = KeyStore::new()
        .probe(&idp.base_url(), &config)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            KeyError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn fetches_are_counted() {
    let key = TestKey::rsa("k");
    let idp = FakeIdp::with_keys(vec![key.jwk(), TestKey::ec_p256("e").jwk()]).await;
    let config = config(&[idp.base_url()]);
    let store = KeyStore::new();
    let before = now();
    store.prefetch(&config).await;
    let stats = store.authority_stats(&idp.base_url());
    assert_eq!(
        (stats.fetches_ok, stats.fetches_error, stats.keys),
        (1, 0, 2)
    );
    assert!(stats.last_success.is_some_and(|t| t >= before));
    assert_eq!(stats.issuer, Some(idp.issuer()));
    assert_eq!(store.stats(), [stats]);
}
