//! Per-client rate limits (`rateLimits`, issue 22): each client covered by an entry gets its
//! own allowance of `requestsPerSecond` with `burst`, counted by a GCRA — per replica with
//! `governor`'s keyed limiter, or across the cluster with one call to the shared store's GCRA
//! script ([`crate::shared::SharedStore::gcra`]). A request over its allowance is refused 429
//! ([`Throttled`]) with `Retry-After` and the `RateLimit` / `RateLimit-Policy` fields of the IETF
//! httpapi draft (draft-ietf-httpapi-ratelimit-headers). When the store does not answer, a
//! cluster limit falls back per `sharedState.failureMode`: `open` counts on this replica's own
//! limiter, `closed` refuses (503).
//!
//! Built per configuration generation, so a reload applies new limits (and starts the
//! replica-scope allowances afresh).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderValue;

use crate::config::{FailureMode, LimitScope, RateLimit};
use crate::shared::{SharedStore, StoreError};

/// The store key kind of cluster-scope allowances (`<keyPrefix>ratelimit:<entry>:<client>`).
const KIND: &str = "ratelimit";
/// The `use` index of rate-limit fallbacks ([`crate::metrics::FALLBACK_USES`]).
const FALLBACK_USE: usize = 1;
/// The key of a principal without a client id, under an `all` entry.
static NO_CLIENT: String = String::new();

/// The limits of one configuration generation.
pub struct RateLimiter {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// One `rateLimits` entry and this replica's allowances under it.
struct Entry {
    limit: RateLimit,
    /// The store kind of its cluster allowances (`ratelimit:<index>`).
    kind: String,
    /// The replica's allowances: the limit itself with `scope: replica`, the stand-in for the
    /// cluster's while the store is down with `scope: cluster`.
    local: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// `RateLimit-Policy`'s value.
    policy: HeaderValue,
}

/// A request over its client's allowance: answered 429.
#[derive(Debug, thiserror::Error)]
#[error(
    "The client is over its rate limit of {requests_per_second} requests per second (burst \
     {burst}); retry after {retry_after} s"
)]
pub struct Throttled {
    /// The matched `rateLimits` entry's `requestsPerSecond`.
    pub requests_per_second: u64,
    /// Its `burst`.
    pub burst: u64,
    /// Its `scope`: whether this replica alone or the cluster counted the allowance.
    pub scope: LimitScope,
    /// Whole seconds until a request would be allowed (at least 1).
    pub retry_after: u64,
    /// `RateLimit-Policy`.
    pub policy: HeaderValue,
}

impl Throttled {
    /// The `RateLimit` field: none remaining, `t` seconds until one is.
    pub fn rate_limit(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("\"client\";r=0;t={}", self.retry_after))
            .unwrap_or(HeaderValue::from_static("\"client\";r=0"))
    }
}

impl RateLimiter {
    /// The limiter of `limits`; `None` when there are none, so a request without limits pays
    /// one branch.
    pub fn new(limits: &[RateLimit]) -> Option<RateLimiter> {
        if limits.is_empty() {
            return None;
        }
        let entries = limits
            .iter()
            .enumerate()
            .map(|(index, limit)| Entry::new(index, limit))
            .collect();
        Some(RateLimiter { entries })
    }

    /// Counts one request of `client` (the token's client id) against the first entry that
    /// covers it. `Ok(None)`: allowed, or no entry covers it. `Err`: a cluster entry's store did
    /// not answer and `failureMode` is `closed`.
    #[allow(clippy::ptr_arg)] // the governor's key type: a lookup without an allocation
    pub async fn check(
        &self,
        client: Option<&String>,
        store: Option<&SharedStore>,
    ) -> Result<Option<Throttled>, StoreError> {
        let key = client.unwrap_or(&NO_CLIENT);
        let Some(entry) = self.entries.iter().find(|entry| match client {
            Some(client) => entry.limit.covers(client),
            None => entry.limit.clients == crate::config::LimitedClients::All,
        }) else {
            return Ok(None);
        };
        match (entry.limit.scope, store) {
            (LimitScope::Cluster, Some(store)) => {
                let cell = store
                    .gcra(
                        &entry.kind,
                        key,
                        entry.limit.requests_per_second,
                        entry.limit.burst,
                    )
                    .await;
                match cell {
                    Ok(cell) if cell.allowed => Ok(None),
                    Ok(cell) => Ok(Some(entry.throttled(cell.retry_after))),
                    Err(error) if store.failure_mode() == FailureMode::Closed => Err(error),
                    Err(error) => {
                        store.metrics().record_fallback(FALLBACK_USE);
                        tracing::debug!(%error, "rate limit counted on this replica only");
                        Ok(entry.local(key))
                    }
                }
            }
            _ => Ok(entry.local(key)),
        }
    }
}

impl Entry {
    fn new(index: usize, limit: &RateLimit) -> Entry {
        let rate = limit.requests_per_second.max(1);
        let burst = u32::try_from(limit.burst).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_nanos((1_000_000_000 / rate).max(1));
        let quota = Quota::with_period(period)
            .unwrap_or(Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        // draft-ietf-httpapi-ratelimit-headers: quota `q` per window `w` seconds; the burst
        // refills in burst/rate seconds.
        let window = limit.burst.div_ceil(rate).max(1);
        let policy = format!("\"client\";q={};w={window}", limit.burst);
        Entry {
            limit: limit.clone(),
            kind: format!("{KIND}:{index}"),
            local: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            policy: HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        }
    }

    /// One request of `key` on this replica's allowance.
    fn local(&self, key: &String) -> Option<Throttled> {
        match self.local.check_key(key) {
            Ok(()) => None,
            Err(not_until) => Some(self.throttled(not_until.wait_time_from(self.clock.now()))),
        }
    }

    fn throttled(&self, wait: Duration) -> Throttled {
        // Whole seconds, rounded up: a client that waits that long is allowed.
        let retry_after = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0))
            .max(1);
        Throttled {
            requests_per_second: self.limit.requests_per_second,
            burst: self.limit.burst,
            scope: self.limit.scope,
            retry_after,
            policy: self.policy.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitedClients;

    fn limit(clients: LimitedClients, rate: u64, burst: u64) -> RateLimit {
        RateLimit {
            clients,
            requests_per_second: rate,
            burst,
            scope: LimitScope::Replica,
        }
    }

    /// A burst is allowed and the next request refused, per client; a client no entry covers is
    /// never limited. (Rates of one request per 1000 s: no refill happens during the test.)
    #[tokio::test]
    async fn each_client_has_its_own_allowance() {
        let limiter = RateLimiter::new(&[
            limit(LimitedClients::Listed(vec!["bulk".into()]), 1, 2),
            limit(LimitedClients::All, 1, 3),
        ])
        .unwrap();
        let bulk = "bulk".to_owned();
        let app = "app".to_owned();
        for _ in 0..2 {
            assert!(limiter.check(Some(&bulk), None).await.unwrap().is_none());
        }
        let throttled = limiter.check(Some(&bulk), None).await.unwrap().unwrap();
        assert_eq!((throttled.burst, throttled.retry_after), (2, 1));
        assert_eq!(throttled.policy, "\"client\";q=2;w=2");
        assert_eq!(throttled.rate_limit(), "\"client\";r=0;t=1");
        for _ in 0..3 {
            assert!(limiter.check(Some(&app), None).await.unwrap().is_none());
        }
        assert!(limiter.check(Some(&app), None).await.unwrap().is_some());
        // Tokens without a client id share the `all` entry's one allowance.
        for _ in 0..3 {
            assert!(limiter.check(None, None).await.unwrap().is_none());
        }
        assert!(limiter.check(None, None).await.unwrap().is_some());
        let listed =
            RateLimiter::new(&[limit(LimitedClients::Listed(vec!["x".into()]), 1, 1)]).unwrap();
        for _ in 0..5 {
            assert!(listed.check(Some(&app), None).await.unwrap().is_none());
            assert!(listed.check(None, None).await.unwrap().is_none());
        }
        assert!(RateLimiter::new(&[]).is_none());
    }
}
