//! Sessions: what the proxy keeps about a token between requests, so that a token is not judged
//! in full on every request. Authentication itself ([`crate::auth`]) keeps no such state. Two
//! caches sit side by side in [`TokenCache`], keyed alike (the token's SHA-256, [`TokenDigest`])
//! but kept by their own rules, and neither knows the other:
//!
//! - [`crate::proxy::verified`]: JWTs whose signature and claims were verified, until their
//!   `exp`, with what requests derive from them ([`Session`]: the SMART grant);
//! - [`crate::proxy::introspected`]: introspection answers of opaque tokens (RFC 7662), until
//!   their `exp` and at most `introspection.cacheTtl`.
//!
//! [`authenticate`] picks the one a token's shape calls for. Before the JWT cache it asks the
//! client connection's [`ConnectionMemo`]: a client sends the same token on every request of a
//! keep-alive connection.

use std::fmt;
use std::sync::{Arc, Mutex};

use http::header::AUTHORIZATION;
use http::HeaderMap;

use super::introspected::{self, IntrospectionCache};
use super::verified::VerifiedCache;
pub use super::verified::{Session, TokenCacheStats, TokenDigest, DEFAULT_CAPACITY_BYTES};
use crate::auth::{self, AuthError, KeyStore, Scheme};
use crate::config::Config;

/// SPEC §4 steps 4–7 for one token (`now` in Unix seconds), answered from `cache` when the
/// token was verified before under the same key set and configuration (the lifetime is checked
/// again either way), and from the connection's last token before that.
pub async fn authenticate(
    cache: &TokenCache,
    store: &KeyStore,
    config: &Config,
    token: &str,
    now: u64,
    memo: Option<&ConnectionMemo>,
) -> Result<Arc<Session>, AuthError> {
    // RFC 7662: with introspection configured, a token not shaped like a JWS is opaque. The
    // test is a byte count, and without introspection it is not even made.
    if config.introspection.is_some() && !auth::introspection::looks_like_jwt(token) {
        let introspected =
            introspected::authenticate(&cache.introspected, store, config, token, now);
        return Box::pin(introspected).await;
    }
    let cache = &cache.verified;
    if !cache.is_enabled() {
        let verified = Box::pin(auth::verify(store, config, token, now)).await?;
        return Ok(Arc::new(Session::new(verified)));
    }
    if let Some(remembered) = memo.and_then(|memo| memo.get(token)) {
        if let Some(answer) = reuse(cache, store, config, remembered, now).await {
            return answer;
        }
    }
    let digest = TokenDigest::of(token);
    if let Some(cached) = cache.get(&digest).await {
        if let Some(answer) = reuse(cache, store, config, Arc::clone(&cached), now).await {
            if let Some(memo) = memo {
                memo.set(token, Some(cached));
            }
            return answer;
        }
        cache.remove(&digest).await;
    }
    cache.record(false);
    // The miss path's futures are boxed: kept inline, they would make every request's future
    // (and the copies made of it) several times larger than a hit needs.
    let verified = Box::pin(auth::verify(store, config, token, now)).await?;
    let session = Arc::new(Session::new(verified));
    let kept = Box::pin(cache.insert(digest, Arc::clone(&session), now)).await;
    if let Some(memo) = memo {
        memo.set(token, kept);
    }
    Ok(session)
}

/// Steps 3–7 answered by the connection's memo alone: when the request's one `Authorization`
/// header is exactly `Bearer <token>` or `DPoP <token>` for the token the connection presented
/// last (so [`auth::access_token`] would read that token from it, as it did then), and the kept
/// session answers as a cache entry would (`reuse`). `None`: read the header and authenticate
/// in full ([`authenticate`]), for which this was only a shortcut.
pub async fn recall(
    cache: &TokenCache,
    store: &KeyStore,
    config: &Config,
    headers: &HeaderMap,
    now: u64,
    memo: &ConnectionMemo,
) -> Option<Recalled> {
    if !cache.verified.is_enabled() {
        return None;
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token, session) = memo.recall(value.as_bytes())?;
    let answer = reuse(&cache.verified, store, config, session, now).await?;
    Some(Recalled {
        scheme,
        token,
        answer,
    })
}

/// What [`recall`] answered: the header's scheme and token, and the kept session (or the
/// refusal of an expired token).
#[derive(Debug)]
pub struct Recalled {
    /// The scheme the header named.
    pub scheme: Scheme,
    /// The token, as the connection presented it before (byte for byte the header's).
    pub token: Arc<str>,
    /// The kept session, or the refusal its lifetime check gave.
    pub answer: Result<Arc<Session>, AuthError>,
}

/// A kept session answers when [`auth::revalidate`] says its verification still applies, and
/// then counts as a hit of `cache`, accepted or refused.
async fn reuse(
    cache: &VerifiedCache,
    store: &KeyStore,
    config: &Config,
    kept: Arc<Session>,
    now: u64,
) -> Option<Result<Arc<Session>, AuthError>> {
    let checked = auth::revalidate(store, config, &kept.verified, now).await?;
    cache.record(true);
    Some(checked.map(|()| kept))
}

/// The last token a client connection presented, with its session. A client sends the same
/// token on every request of a keep-alive connection: comparing it byte for byte with the last
/// one costs less than hashing it for the cache. The entry answers only as a cache entry would
/// (`reuse`: same configuration, same key set, lifetime checked).
#[derive(Debug, Default)]
pub struct ConnectionMemo(Mutex<Option<(Arc<str>, Arc<Session>)>>);

impl ConnectionMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Arc<str>, Arc<Session>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, token: &str) -> Option<Arc<Session>> {
        match &*self.lock() {
            Some((last, session)) if **last == *token => Some(Arc::clone(session)),
            _ => None,
        }
    }

    /// The scheme, token and session when `header` is exactly `Bearer ` or `DPoP ` followed by
    /// the last token: the spelling clients send. Any other spelling of the same token (`bearer`,
    /// two spaces) is read in full, and answered the same way.
    fn recall(&self, header: &[u8]) -> Option<(Scheme, Arc<str>, Arc<Session>)> {
        let guard = self.lock();
        let (last, session) = guard.as_ref()?;
        let (scheme, token) = match header {
            [b'B', b'e', b'a', b'r', b'e', b'r', b' ', token @ ..] => (Scheme::Bearer, token),
            [b'D', b'P', b'o', b'P', b' ', token @ ..] => (Scheme::Dpop, token),
            _ => return None,
        };
        (token == last.as_bytes()).then(|| (scheme, Arc::clone(last), Arc::clone(session)))
    }

    fn set(&self, token: &str, session: Option<Arc<Session>>) {
        *self.lock() = session.map(|session| (Arc::from(token), session));
    }
}

/// What the proxy keeps of tokens, shared by every configuration generation: the two caches,
/// side by side.
pub struct TokenCache {
    /// Verified JWTs ([`crate::proxy::verified`]).
    verified: VerifiedCache,
    /// Introspection answers of opaque tokens (RFC 7662), kept by their own rules.
    introspected: IntrospectionCache,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(DEFAULT_CAPACITY_BYTES)
    }
}

impl TokenCache {
    /// Caches holding at most `capacity_bytes` of verified tokens, and a quarter of that of
    /// introspection answers (opaque tokens are the exception among a sidecar's clients); 0
    /// disables both.
    pub fn new(capacity_bytes: u64) -> TokenCache {
        TokenCache {
            verified: VerifiedCache::new(capacity_bytes),
            introspected: IntrospectionCache::new(capacity_bytes / 4),
        }
    }

    /// Drops every entry of both (a new configuration is in force).
    pub fn invalidate_all(&self) {
        self.verified.invalidate_all();
        self.introspected.invalidate_all();
    }

    /// Applies the verified-token cache's pending evictions and expirations now (tests, and
    /// before reading exact sizes).
    pub async fn run_pending_tasks(&self) {
        self.verified.run_pending_tasks().await;
    }

    /// The verified-token cache's counters.
    pub fn stats(&self) -> TokenCacheStats {
        self.verified.stats()
    }
}
