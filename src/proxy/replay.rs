//! The DPoP proof replay cache (RFC 9449 §11.1): each accepted proof's `jti`, under the key that
//! signed it, is remembered for as long as its `iat` could still be accepted, so the same proof
//! is accepted once. Bounded (`senderConstraints.dpop.replayCacheEntries`), least recently
//! inserted out first: TinyLFU admission, moka's default, could decline a new `jti` and so let
//! its replay through.
//!
//! With `sharedState` (and `senderConstraints.dpop.replayStore` not `local`), each proof is
//! first recorded in the shared store (`SET NX` for the same lifetime, [`ReplayCache::check`]),
//! so a proof is accepted once across every replica; it is recorded here as well, so while the
//! store is down (`failureMode: open`) this replica still refuses what it has seen.
//!
//! **Per replica** otherwise: each fhirguard process keeps its own. A proof captured and replayed within
//! its window against *another* replica behind the same load balancer is accepted there once —
//! which still needs the token, and the replay names the same method and URI (`htm`/`htu`).
//! Server nonces (RFC 9449 §8, [`crate::auth::dpop::nonce`]) do not close that gap, but bound
//! it: a proof must name a nonce of the last lifetime or two, so none can be made in advance,
//! and a short `lifetime` shortens the time in which a captured one is worth replaying.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use moka::Expiry;

use crate::auth::dpop::ProofKeys;
use crate::config::FailureMode;
use crate::shared::{SharedStore, StoreError};

/// The store key kind of proof ids (`<keyPrefix>dpop:<hex>`).
const KIND: &str = "dpop";
/// The `use` index of replay fallbacks ([`crate::metrics::FALLBACK_USES`]).
const FALLBACK_USE: usize = 0;

/// The seen proofs: SHA-256 of (key thumbprint, `jti`) → how long the entry must live.
pub struct ReplayCache {
    seen: Cache<[u8; 32], Duration>,
    /// The store the replicas share, when `sharedState` is configured.
    shared: Option<Arc<SharedStore>>,
    /// The keys of the proof headers seen lately, so that a client's next proof under the same
    /// header is not parsed again ([`crate::auth::dpop::key`]).
    keys: ProofKeys,
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("entries", &self.seen.entry_count())
            .field("keys", &self.keys)
            .finish()
    }
}

/// Each entry lives as long as its value says.
struct UntilStale;

impl Expiry<[u8; 32], Duration> for UntilStale {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Duration,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(*value)
    }
}

impl ReplayCache {
    /// A cache of at most `capacity` proofs.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: Cache::builder()
                .max_capacity(u64::try_from(capacity).unwrap_or(u64::MAX))
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(UntilStale)
                .build(),
            shared: None,
            keys: ProofKeys::new(),
        }
    }

    /// The proof keys remembered by their headers' text, for [`crate::auth::dpop::verify_with`].
    pub fn keys(&self) -> &ProofKeys {
        &self.keys
    }

    /// This cache, recording proofs in `store` first when asked ([`ReplayCache::check`]).
    pub fn sharing(mut self, store: Option<Arc<SharedStore>>) -> ReplayCache {
        self.shared = store;
        self
    }

    /// Records a proof as [`ReplayCache::first_use`] does, in the shared store first when
    /// `shared` (`Config::shared_replay`) and a store is configured. `Err`: the store did not
    /// answer and `failureMode` is `closed`; with `open` this replica's cache decides, and the
    /// fallback is counted and logged.
    pub async fn check(
        &self,
        shared: bool,
        thumbprint: &str,
        jti: &str,
        iat: u64,
        now: u64,
        window: u64,
    ) -> Result<bool, StoreError> {
        let (key, live) = entry(thumbprint, jti, iat, now, window);
        if let (true, Some(store)) = (shared, &self.shared) {
            let id = crate::shared::hex_id(&key);
            match store.claim(KIND, &id, live).await {
                Ok(false) => return Ok(false),
                Ok(true) => {}
                Err(error) if store.failure_mode() == FailureMode::Closed => return Err(error),
                Err(error) => {
                    store.metrics().record_fallback(FALLBACK_USE);
                    tracing::debug!(%error, "DPoP proof checked against this replica's cache only");
                }
            }
        }
        Ok(self.record(key, live).await)
    }

    /// Records a proof; false when the same key already used this `jti` within the window.
    /// `iat` and `now` in Unix seconds; `window`: how far `iat` may be from `now`.
    pub async fn first_use(
        &self,
        thumbprint: &str,
        jti: &str,
        iat: u64,
        now: u64,
        window: u64,
    ) -> bool {
        let (key, live) = entry(thumbprint, jti, iat, now, window);
        self.record(key, live).await
    }

    async fn record(&self, key: [u8; 32], live: Duration) -> bool {
        self.seen.entry(key).or_insert(live).await.is_fresh()
    }

    /// Proofs remembered: moka's count after its pending inserts and expiries are applied (it
    /// lags them otherwise); for the scrape, not the request path.
    pub async fn entries(&self) -> u64 {
        self.seen.run_pending_tasks().await;
        self.seen.entry_count()
    }
}

/// The key of a proof (SHA-256 of the key thumbprint and `jti`) and how long to keep it.
fn entry(thumbprint: &str, jti: &str, iat: u64, now: u64, window: u64) -> ([u8; 32], Duration) {
    let mut hasher = digest::Context::new(&digest::SHA256);
    hasher.update(thumbprint.as_bytes());
    hasher.update(&[0]);
    hasher.update(jti.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(hasher.finish().as_ref());
    // Acceptable until `now` passes `iat + window`; one second more for the rounding.
    let live = iat
        .saturating_add(window)
        .saturating_sub(now)
        .saturating_add(1);
    (key, Duration::from_secs(live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_proof_is_accepted_once_per_key() {
        let cache = ReplayCache::new(100);
        assert!(cache.first_use("k1", "j1", 1000, 1000, 300).await);
        assert!(!cache.first_use("k1", "j1", 1000, 1001, 300).await);
        // Another key's jti is its own.
        assert!(cache.first_use("k2", "j1", 1000, 1001, 300).await);
        assert!(cache.first_use("k1", "j2", 1000, 1001, 300).await);
        assert_eq!(cache.entries().await, 3);
    }

    /// A proof verified with its key from the memo ([`crate::auth::dpop::key`]) is still
    /// accepted once: the memo skips the header's parse, not the replay check.
    #[tokio::test]
    async fn a_replayed_jti_is_refused_on_the_memo_path() {
        use crate::auth::dpop::tests::memo::check_with;
        use crate::auth::dpop::tests::{claims, ProofKey, NOW};

        let key = ProofKey::new();
        let cache = ReplayCache::new(100);
        let proof = key.sign(&key.header(), &claims());
        let mut fresh = Vec::new();
        for _ in 0..2 {
            let verified = check_with(&proof, cache.keys()).unwrap();
            let (thumbprint, jti) = (&verified.thumbprint, &verified.jti);
            fresh.push(
                cache
                    .first_use(thumbprint, jti, verified.issued_at, NOW, 300)
                    .await,
            );
        }
        assert_eq!(cache.keys().len(), 1);
        assert_eq!(fresh, [true, false]);
    }
}
