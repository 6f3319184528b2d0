//! The key-set cache ([`KeySets`], SPEC §5): per authority, the discovered `issuer`, `jwks_uri`
//! and usable signing keys, kept across config reloads. Fetched before the proxy reports ready,
//! refreshed in the background, refetched on an unknown `kid` at most once per
//! `keySets.minRefetchInterval` (single flight, so random `kid`s cannot flood an identity
//! provider), and served up to `keySets.maxStale` after the last success while the provider is
//! down. Every fetch of one authority runs under that authority's lock, and a caller that waited
//! for a fetch started after its own request reuses that fetch's result instead of fetching again.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use moka::future::Cache;
use sha2::{Digest, Sha256};
use tokio::task::{JoinHandle, JoinSet};

use super::discovery::{FetchPolicy, Fetcher, IdpConnector, KeyError, Offered};
use super::error::AuthError;
use super::keys::SigningKey;
use super::token::unix_now;
use crate::config::Config;

mod report;

pub use report::{KeySetStats, ProbeReport};

/// One provider's discovered issuer and usable keys, as last fetched successfully.
#[derive(Debug)]
pub struct ProviderKeys {
    /// The discovered `issuer`: a token's `iss` must equal it exactly (SPEC §4 step 4).
    pub issuer: String,
    /// The discovered `jwks_uri` the keys were fetched from.
    pub jwks_uri: String,
    /// The provider's `authorization_endpoint`, from discovery: for the generated
    /// `/.well-known/smart-configuration` (reference §5.2).
    pub authorization_endpoint: Option<String>,
    /// The provider's `token_endpoint`, from discovery, for the same document.
    pub token_endpoint: Option<String>,
    /// `introspection_endpoint` from discovery (RFC 8414 §2), for opaque tokens.
    pub introspection_endpoint: Option<String>,
    /// What else discovery says the provider offers (grants, scopes, PKCE, DPoP, …).
    pub offered: Offered,
    /// The set's keys a signature may be checked with (SPEC §4 step 5); the others are skipped.
    pub keys: Vec<SigningKey>,
    /// SHA-256 over `issuer`, `jwks_uri` and the JWK Set document: equal fingerprints, same
    /// keys. The verified-token cache reuses an entry only while its provider's set has the
    /// fingerprint the token was verified under, so a rotation that drops a key drops its
    /// tokens, and a refresh that changes nothing keeps them.
    pub fingerprint: [u8; 32],
    /// Unix seconds of the fetch.
    pub fetched_at: u64,
    fetched: Instant,
}

/// The `keySets` settings and `allowHttpAuthorities`, read once from a config.
#[derive(Debug, Clone, Copy)]
pub struct KeySettings {
    /// How each discovery and key-set GET is made (`allowHttpAuthorities`, `fetchTimeout`).
    pub policy: FetchPolicy,
    /// `keySets.refreshInterval`: the background refresh of a set with keys.
    pub refresh_interval: Duration,
    /// `keySets.minRefetchInterval`: an unknown `kid` refetches at most once per this.
    pub min_refetch_interval: Duration,
    /// `keySets.maxStale`: how long the last good set is served while the provider is down.
    pub max_stale: Duration,
    /// `keySets.retryInterval`: the retry of an authority without usable keys.
    pub retry_interval: Duration,
}

impl KeySettings {
    /// The settings of `config`, the configuration in force.
    pub fn of(config: &Config) -> KeySettings {
        let sets = &config.key_sets;
        KeySettings {
            policy: FetchPolicy {
                allow_http: config.allow_http_authorities,
                timeout: sets.fetch_timeout,
            },
            refresh_interval: sets.refresh_interval,
            min_refetch_interval: sets.min_refetch_interval,
            max_stale: sets.max_stale,
            retry_interval: sets.retry_interval,
        }
    }
}

/// Whatever holds the configuration in force (it changes on reload).
pub trait ConfigSource: Send + Sync + 'static {
    /// Runs `f` on the configuration in force now.
    fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R;
}

impl ConfigSource for ArcSwap<Config> {
    fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.load())
    }
}

/// Which rule allows a fetch once the authority's lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Not within `retryInterval` of the previous attempt.
    Retry,
    /// An unknown `kid`: not within `minRefetchInterval` of the previous such refetch.
    UnknownKid,
}

#[derive(Debug, Default)]
struct Status {
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
    last_forced: Option<Instant>,
    stats: KeySetStats,
}

#[derive(Debug, Default)]
struct AuthorityState {
    fetch_lock: tokio::sync::Mutex<()>,
    status: Mutex<Status>,
}

/// The long-lived key-set cache, shared by every config generation (cheap to clone).
#[derive(Debug, Clone)]
pub struct KeySets {
    inner: Arc<Inner>,
}

struct Inner {
    sets: Cache<String, Arc<ProviderKeys>>,
    /// The set [`KeySets::current`] answered last, in front of `sets`: most deployments trust
    /// one authority, and every request reads its set. It answers only under the `version` it
    /// was read at ([`Last`]).
    last: ArcSwapOption<Last>,
    /// Bumped after every change of `sets`: a `last` read under another version is not used.
    version: AtomicU64,
    authorities: Mutex<HashMap<String, Arc<AuthorityState>>>,
    fetcher: Result<Fetcher, String>,
}

/// An authority's set as `sets` held it while `version` was current.
#[derive(Debug)]
struct Last {
    version: u64,
    authority: Box<str>,
    set: Arc<ProviderKeys>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySets")
            .field("sets", &self.sets.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for KeySets {
    fn default() -> Self {
        KeySets::new()
    }
}

impl KeySets {
    /// An empty cache, with the client of discovery and key-set fetches.
    pub fn new() -> KeySets {
        KeySets {
            inner: Arc::new(Inner {
                sets: Cache::new(1024),
                last: ArcSwapOption::empty(),
                version: AtomicU64::new(0),
                authorities: Mutex::default(),
                fetcher: Fetcher::new().map_err(|error| error.to_string()),
            }),
        }
    }

    /// The connector of discovery and key-set fetches (an error when it could not be built), for
    /// other calls to the same identity providers.
    pub fn connector(&self) -> Result<IdpConnector, String> {
        self.inner
            .fetcher
            .as_ref()
            .map(|fetcher| fetcher.connector().clone())
            .map_err(Clone::clone)
    }

    fn state(&self, authority: &str) -> Arc<AuthorityState> {
        let mut map = self
            .inner
            .authorities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(authority.to_owned()).or_default())
    }

    /// The authority's last good key set, if it is younger than `max_stale`.
    pub async fn current(&self, authority: &str, max_stale: Duration) -> Option<Arc<ProviderKeys>> {
        // Read before `sets`: a set inserted after this read is never remembered as current
        // under it.
        let version = self.inner.version.load(Ordering::Acquire);
        let last = self.inner.last.load();
        let set = match &*last {
            Some(last) if last.version == version && *last.authority == *authority => {
                Arc::clone(&last.set)
            }
            _ => {
                // Boxed: kept inline, moka's lookup would be laid out (and copied) in every
                // request's future, where the slot above answers nearly all of them.
                let set = Box::pin(self.inner.sets.get(authority)).await?;
                // Only an empty or outdated slot is filled: two authorities in turn do not
                // take it from each other on every request.
                if last.as_ref().is_none_or(|last| last.version != version) {
                    self.inner.last.store(Some(Arc::new(Last {
                        version,
                        authority: authority.into(),
                        set: Arc::clone(&set),
                    })));
                }
                set
            }
        };
        (set.fetched.elapsed() <= max_stale).then_some(set)
    }

    /// The key set for a request: the cached one, else one fetch (single flight, at most one
    /// attempt per `retryInterval`), else [`AuthError::KeysUnavailable`] (503 + Retry-After).
    pub async fn keys(
        &self,
        authority: &str,
        settings: &KeySettings,
    ) -> Result<Arc<ProviderKeys>, AuthError> {
        if let Some(set) = self.current(authority, settings.max_stale).await {
            return Ok(set);
        }
        self.refresh(authority, settings, Instant::now(), Gate::Retry)
            .await;
        if let Some(set) = self.current(authority, settings.max_stale).await {
            return Ok(set);
        }
        let since = self.status(authority, |s| s.last_attempt.map(|t| t.elapsed()));
        let retry_after = settings
            .retry_interval
            .saturating_sub(since.unwrap_or_default())
            .max(Duration::from_secs(1));
        Err(AuthError::KeysUnavailable {
            authority: authority.to_owned(),
            retry_after,
        })
    }

    /// An unknown `kid`: refetch unless another refetch happened within `minRefetchInterval`.
    /// Returns the set a fetch produced (ours or one we waited for), or None.
    pub async fn refetch_for_unknown_kid(
        &self,
        authority: &str,
        settings: &KeySettings,
    ) -> Option<Arc<ProviderKeys>> {
        if self
            .refresh(authority, settings, Instant::now(), Gate::UnknownKid)
            .await
        {
            self.current(authority, settings.max_stale).await
        } else {
            None
        }
    }

    /// Single flight: true when a fetch started at or after `requested` (ours or another's).
    async fn refresh(
        &self,
        authority: &str,
        settings: &KeySettings,
        requested: Instant,
        gate: Gate,
    ) -> bool {
        let state = self.state(authority);
        let _flight = state.fetch_lock.lock().await;
        {
            let mut status = state.status.lock().unwrap_or_else(PoisonError::into_inner);
            if status.last_attempt.is_some_and(|t| t >= requested) {
                return true;
            }
            let now = Instant::now();
            match gate {
                Gate::Retry => {
                    if status
                        .last_attempt
                        .is_some_and(|t| now - t < settings.retry_interval)
                    {
                        return false;
                    }
                }
                Gate::UnknownKid => {
                    if status
                        .last_forced
                        .is_some_and(|t| now - t < settings.min_refetch_interval)
                    {
                        return false;
                    }
                    status.last_forced = Some(now);
                }
            }
            status.last_attempt = Some(now);
        }
        self.fetch_locked(authority, settings, &state).await;
        true
    }

    async fn fetch_locked(&self, authority: &str, settings: &KeySettings, state: &AuthorityState) {
        let result = match &self.inner.fetcher {
            Ok(fetcher) => fetcher.fetch(authority, settings.policy).await,
            Err(error) => Err(KeyError::Client(error.clone())),
        };
        let result = result.and_then(|(discovery, parsed)| {
            if parsed.keys.is_empty() {
                return Err(KeyError::NoUsableKeys {
                    url: discovery.jwks_uri,
                });
            }
            let fingerprint = Sha256::new()
                .chain_update(discovery.issuer.as_bytes())
                .chain_update([0])
                .chain_update(discovery.jwks_uri.as_bytes())
                .chain_update([0])
                .chain_update(parsed.digest)
                .finalize()
                .into();
            Ok(ProviderKeys {
                issuer: discovery.issuer,
                jwks_uri: discovery.jwks_uri,
                authorization_endpoint: discovery.authorization_endpoint,
                token_endpoint: discovery.token_endpoint,
                introspection_endpoint: discovery.introspection_endpoint,
                offered: discovery.offered,
                keys: parsed.keys,
                fingerprint,
                fetched_at: unix_now(),
                fetched: Instant::now(),
            })
        });
        match result {
            Ok(set) => {
                tracing::info!(authority, issuer = %set.issuer, keys = set.keys.len(), "key set fetched");
                let count = set.keys.len();
                {
                    let mut status = state.status.lock().unwrap_or_else(PoisonError::into_inner);
                    status.last_success = Some(set.fetched);
                    let stats = &mut status.stats;
                    stats.fetches_ok += 1;
                    stats.keys = count;
                    stats.last_success = Some(set.fetched_at);
                    stats.issuer = Some(set.issuer.clone());
                    stats.last_error = None;
                }
                self.inner
                    .sets
                    .insert(authority.to_owned(), Arc::new(set))
                    .await;
                self.inner.version.fetch_add(1, Ordering::Release);
            }
            Err(error) => {
                tracing::warn!(authority, error = %error, "key set fetch failed; the last good set, if any, stays in use");
                let mut status = state.status.lock().unwrap_or_else(PoisonError::into_inner);
                status.stats.fetches_error += 1;
                status.stats.last_error = Some(error.to_string());
            }
        }
    }

    fn status<R>(&self, authority: &str, f: impl FnOnce(&Status) -> R) -> R {
        let state = self.state(authority);
        let status = state.status.lock().unwrap_or_else(PoisonError::into_inner);
        f(&status)
    }

    /// Fetches every configured authority that has no usable set, concurrently. Failures are
    /// recorded (and retried by the refresher), never fatal. Sets of unchanged authorities
    /// survive a reload untouched.
    pub async fn prefetch(&self, config: &Config) {
        let settings = KeySettings::of(config);
        let mut fetches = JoinSet::new();
        for (_, authority) in config.auth.providers() {
            let (store, authority) = (self.clone(), authority.to_owned());
            fetches.spawn(async move {
                if store
                    .current(&authority, settings.max_stale)
                    .await
                    .is_none()
                {
                    store
                        .refresh(&authority, &settings, Instant::now(), Gate::Retry)
                        .await;
                }
            });
        }
        while fetches.join_next().await.is_some() {}
    }

    /// Background refresh: every `keySets.refreshInterval` per authority, and every
    /// `keySets.retryInterval` for an authority without usable keys. Reads the config in force
    /// at each round, so reloads change what is refreshed.
    pub fn spawn_refresher<S: ConfigSource>(&self, source: Arc<S>) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                let (authorities, settings) =
                    source.with_config(|c| (authorities(c), KeySettings::of(c)));
                let tick = settings
                    .refresh_interval
                    .min(settings.retry_interval)
                    .clamp(Duration::from_millis(10), Duration::from_secs(30));
                tokio::time::sleep(tick).await;
                let mut fetches = JoinSet::new();
                for authority in authorities {
                    let store = store.clone();
                    fetches.spawn(async move { store.refresh_if_due(&authority, &settings).await });
                }
                while fetches.join_next().await.is_some() {}
            }
        })
    }

    async fn refresh_if_due(&self, authority: &str, settings: &KeySettings) {
        let due = match self.current(authority, settings.max_stale).await {
            None => true,
            Some(set) => set.fetched.elapsed() >= settings.refresh_interval,
        };
        if due {
            self.refresh(authority, settings, Instant::now(), Gate::Retry)
                .await;
        }
    }
}

/// The configured authorities, owned: the refresher keeps them across a reload's swap.
fn authorities(config: &Config) -> Vec<String> {
    config.auth.providers().map(|(_, a)| a.to_owned()).collect()
}
