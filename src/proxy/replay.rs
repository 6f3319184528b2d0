//! The DPoP proof replay cache (RFC 9449 §11.1): each accepted proof's `jti`, under the key that
//! signed it, is remembered for as long as its `iat` could still be accepted, so the same proof
//! is accepted once. Bounded (`senderConstraints.dpop.replayCacheEntries`), least recently
//! inserted out first: TinyLFU admission, moka's default, could decline a new `jti` and so let
//! its replay through.
//!
//! **Per replica**: each fhirguard process keeps its own. A proof captured and replayed within
//! its window against *another* replica behind the same load balancer is accepted there once —
//! which still needs the token, and the replay names the same method and URI (`htm`/`htu`).
//! Server nonces (RFC 9449 §8, [`crate::auth::dpop::nonce`]) do not close that gap, but bound
//! it: a proof must name a nonce of the last lifetime or two, so none can be made in advance,
//! and a short `lifetime` shortens the time in which a captured one is worth replaying.

use std::fmt;
use std::time::Duration;

use moka::future::Cache;
use moka::policy::EvictionPolicy;
use moka::Expiry;
use sha2::{Digest, Sha256};

/// The seen proofs: SHA-256 of (key thumbprint, `jti`) → how long the entry must live.
pub struct ReplayCache {
    seen: Cache<[u8; 32], Duration>,
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("entries", &self.seen.entry_count())
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
        }
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
        let mut hasher = Sha256::new();
        hasher.update(thumbprint.as_bytes());
        hasher.update([0]);
        hasher.update(jti.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        // Acceptable until `now` passes `iat + window`; one second more for the rounding.
        let live = iat
            .saturating_add(window)
            .saturating_sub(now)
            .saturating_add(1);
        self.seen
            .entry(key)
            .or_insert(Duration::from_secs(live))
            .await
            .is_fresh()
    }

    /// Proofs remembered: moka's count after its pending inserts and expiries are applied (it
    /// lags them otherwise); for the scrape, not the request path.
    pub async fn entries(&self) -> u64 {
        self.seen.run_pending_tasks().await;
        self.seen.entry_count()
    }
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
}
