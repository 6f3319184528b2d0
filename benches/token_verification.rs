//! Token verification (issue 5 part 3): the time `auth::authenticate` takes for one Entra ID v1
//! access token (SPEC §4 steps 4–7), signed RS256 (RSA 2048) and ES256 (P-256).
//!
//! - `cold`: the full path every time — decode, provider by issuer, key by `kid`, signature,
//!   lifetime, audience, `Principal` — with the verified-token cache disabled
//!   (`TokenCache::new(0)`). This is what a cache miss costs, less the cache's
//!   own lookup and insert.
//! - `cached`: the same token again through the default cache: SHA-256 of the token, two map
//!   lookups (entry, provider key set), the lifetime check, the shared `Principal`. (Serving
//!   first compares the token with its connection's last one, which skips the SHA-256 and the
//!   entry lookup; this bench measures the cache itself.)
//! - `digest`: the SHA-256 of the token alone (part of every lookup).
//!
//! The key store is filled once, before measuring, from an in-process fake OpenID provider on
//! 127.0.0.1 (`tests/it/support/idp.rs`); nothing is fetched while measuring.
//!
//! Run: `cargo bench --bench token_verification` (quick: append
//! `-- --warm-up-time 1 --measurement-time 3`).
//!
//! Last results (2026-12-01; Intel Xeon, 2 vCPUs, otherwise idle; release profile; criterion
//! medians of a quick run, so read ±10 %):
//!
//! | token | cold | cached | cached / cold |
//! |---|---|---|---|
//! | RS256 | 17.2 µs | 0.97 µs | 0.056 (18× faster) |
//! | ES256 | 53.4 µs | 0.80 µs | 0.015 (67× faster) |
//!
//! `digest` (SHA-256, SHA-NI): 0.57 µs for the RS256 token, 0.41 µs for the shorter ES256 one —
//! over half of a hit. Cold verification uses keys parsed once per algorithm when the key set
//! is read (`auth::keys`), not rebuilt per call. Earlier (2026-11-22, AMD EPYC, before that
//! and before the shared `Principal`): RS256 22.3 µs cold / 1.82 µs cached, ES256 80.7 µs /
//! 1.51 µs.

use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fhirguard::auth::KeyStore;
use fhirguard::config::Config;
use fhirguard::proxy::session::{self, TokenCache, TokenDigest};
use tokio::runtime::Runtime;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/idp.rs"]
mod idp;
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/token.rs"]
mod token;

use idp::{config_yaml, FakeIdp};
use token::TestKey;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const AUDIENCE: &str = "https://fhir.contoso.example";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fake provider announcing Entra's v1 issuer, its config, a key store already holding the
/// provider's keys, and a verified-token cache of `cache_bytes`.
fn setup(
    runtime: &Runtime,
    key: &TestKey,
    cache_bytes: u64,
) -> (FakeIdp, Config, KeyStore, TokenCache) {
    runtime.block_on(async {
        let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
        idp.set_issuer(&token::entra_v1_issuer(TENANT));
        let config =
            Config::parse(&config_yaml(Some((&idp.base_url(), AUDIENCE)), &[])).expect("config");
        let store = KeyStore::new();
        store.prefetch(&config).await;
        assert!(store.is_ready(&config), "the fake provider's keys");
        (idp, config, store, TokenCache::new(cache_bytes))
    })
}

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("token_verification");
    for key in [TestKey::rsa("rsa-1"), TestKey::ec_p256("ec-1")] {
        let alg = format!("{:?}", key.alg);
        let text = token::entra_v1(TENANT, AUDIENCE, "client-1", now()).sign(&key);
        for (name, cache_bytes) in [("cold", 0), ("cached", session::DEFAULT_CAPACITY_BYTES)] {
            let (_idp, config, store, tokens) = setup(&runtime, &key, cache_bytes);
            let check = || async {
                session::authenticate(&tokens, &store, &config, &text, now(), None)
                    .await
                    .expect("valid token")
            };
            // Warm the cache (and fail early on a setup mistake).
            runtime.block_on(check());
            group.bench_function(BenchmarkId::new(name, &alg), |b| {
                b.to_async(&runtime).iter(check);
            });
        }
        group.bench_function(BenchmarkId::new("digest", &alg), |b| {
            b.iter(|| TokenDigest::of(std::hint::black_box(&text)));
        });
    }
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
