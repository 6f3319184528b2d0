//! What the proxy keeps of introspection answers (RFC 7662), beside the verified-token cache
//! ([`crate::proxy::verified`]) and keyed the same way (the token's SHA-256, [`TokenDigest`]).
//! RFC 7662 §4 lets a resource server cache answers, trading freshness (a revocation is seen
//! only when the entry ends) for load on the authorization server. The rules (`keep_until`):
//!
//! - an **active** token judged acceptable is kept until its `exp`, and at most
//!   `introspection.cacheTtl` (default 5 min): the longest a revocation can go unseen;
//! - a **refused** token (inactive, or active but failing steps 6–7) is kept
//!   `introspection.inactiveCacheTtl` (default 10 s), so a flood of one revoked or made-up token
//!   costs the authorization server one call per period; 0 keeps nothing;
//! - **no answer** (endpoint down, 503) is never kept: the next request asks again.
//!
//! An entry answers only under the configuration that judged it, and an active one has its
//! lifetime checked again against the clock skew on every hit. The per-connection memo of the
//! JWT path is not used: it would outlive `cacheTtl`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

use super::verified::{weight, Session, TokenDigest};
use crate::auth::{introspection, unix_now, AuthError, KeyStore, Verified};
use crate::config::{Config, Introspection};

/// What a refusal's entry weighs (the key, the error's strings, moka's bookkeeping).
const REFUSAL_WEIGHT: u32 = 512;

/// One kept answer.
#[derive(Debug, Clone)]
struct Kept {
    /// Unix seconds: the entry ends here ([`keep_until`]).
    until: u64,
    /// [`Config::fingerprint`] of the configuration that judged it.
    config: [u8; 32],
    answer: Result<Arc<Session>, AuthError>,
}

/// The introspection-answer cache, shared by every configuration generation. Disabled (every
/// opaque token is introspected) when built with a capacity of 0.
pub struct IntrospectionCache {
    entries: Option<Cache<TokenDigest, Kept>>,
}

impl fmt::Debug for IntrospectionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionCache")
            .field("entries", &self.entries.as_ref().map(Cache::entry_count))
            .finish()
    }
}

impl IntrospectionCache {
    /// A cache of at most `capacity_bytes` of entries by weight; 0 disables it.
    pub fn new(capacity_bytes: u64) -> IntrospectionCache {
        let entries = (capacity_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity_bytes)
                .weigher(|_: &TokenDigest, kept: &Kept| match &kept.answer {
                    Ok(session) => weight(&session.verified),
                    Err(_) => REFUSAL_WEIGHT,
                })
                .expire_after(UntilKept)
                .build()
        });
        IntrospectionCache { entries }
    }

    /// Drops every entry (a new configuration is in force).
    pub fn invalidate_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }
}

/// Steps 4–7 for an opaque token: a kept answer when one applies, else one introspection.
/// Requests that arrive with the same token while it is being introspected wait for that one
/// answer instead of asking again (a burst of one token, honest or not, costs the
/// authorization server one call).
pub async fn authenticate(
    cache: &IntrospectionCache,
    store: &KeyStore,
    config: &Config,
    token: &str,
    now: u64,
) -> Result<Arc<Session>, AuthError> {
    let Some(entries) = &cache.entries else {
        return introspect(store, config, token, now).await;
    };
    let digest = TokenDigest::of(token);
    if let Some(kept) = entries.get(&digest).await {
        if let Some(answer) = kept.answer_for(config, now) {
            return answer;
        }
        entries.invalidate(&digest).await;
    }
    // One caller of the same token runs this; the others wait for what it keeps.
    let mut mine = None;
    let kept = entries
        .optionally_get_with(digest, async {
            let answer = introspect(store, config, token, now).await;
            let kept = config.introspection.as_ref().and_then(|settings| {
                let outcome = answer.as_ref().map(|session| &session.verified);
                keep_until(outcome, settings, now).map(|until| Kept {
                    until,
                    config: config.fingerprint,
                    answer: answer.clone(),
                })
            });
            mine = Some(answer);
            kept
        })
        .await;
    match (mine, kept.and_then(|kept| kept.answer_for(config, now))) {
        (Some(answer), _) | (None, Some(answer)) => answer,
        // Another request's answer was not kept (the endpoint did not answer) or was judged
        // under another configuration: ask for this one.
        (None, None) => introspect(store, config, token, now).await,
    }
}

/// One introspection, its answer as a session.
async fn introspect(
    store: &KeyStore,
    config: &Config,
    token: &str,
    now: u64,
) -> Result<Arc<Session>, AuthError> {
    introspection::introspect(store, config, token, now)
        .await
        .map(|verified| Arc::new(Session::new(verified)))
}

impl Kept {
    /// The kept answer, when it applies to a request judged under `config` at `now`: the same
    /// configuration, the entry not ended, and an active token's lifetime checked again.
    fn answer_for(self, config: &Config, now: u64) -> Option<Result<Arc<Session>, AuthError>> {
        if self.config != config.fingerprint || now >= self.until {
            return None;
        }
        Some(self.answer.and_then(|session| {
            let principal = session.principal();
            session
                .verified
                .lifetime
                .check(now, config.clock_skew.as_secs(), &principal.authority)
                .map(|()| session)
        }))
    }
}

/// Until when (Unix seconds) an introspection outcome is kept; `None`: not at all. See the
/// module's rules.
fn keep_until(
    outcome: Result<&Verified, &AuthError>,
    settings: &Introspection,
    now: u64,
) -> Option<u64> {
    let until = match outcome {
        Ok(verified) => verified
            .lifetime
            .expires_at
            .min(now.saturating_add(settings.cache_ttl.as_secs())),
        Err(error) if error.is_unavailable() => return None,
        Err(_) => now.saturating_add(settings.inactive_cache_ttl.as_secs()),
    };
    (until > now).then_some(until)
}

/// Each entry lives until its [`Kept::until`] (wall clock).
struct UntilKept;

impl Expiry<TokenDigest, Kept> for UntilKept {
    fn expire_after_create(&self, _: &TokenDigest, kept: &Kept, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(kept.until.saturating_sub(unix_now())))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::auth::{Lifetime, Principal};
    use crate::config::{ProviderKind, SecretSource};

    fn settings(cache_ttl: u64, inactive_cache_ttl: u64) -> Introspection {
        Introspection {
            authority: "https://idp".into(),
            endpoint: None,
            client_id: "fhirguard".into(),
            client_secret: SecretSource::File(PathBuf::from("/dev/null")),
            cache_ttl: Duration::from_secs(cache_ttl),
            inactive_cache_ttl: Duration::from_secs(inactive_cache_ttl),
            timeout: Duration::from_secs(5),
            max_concurrent: 64,
        }
    }

    fn verified(expires_at: u64) -> Verified {
        let principal = Principal {
            provider: ProviderKind::Primary,
            authority: "https://idp".into(),
            issuer: "https://idp".into(),
            subject: None,
            object_id: None,
            client_id: None,
            client_claim: None,
            application: None,
            audience: Vec::new(),
            fhir_user: None,
            launch_patient: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            groups: Vec::new(),
            expires_at,
            key_id: None,
            confirmation: None,
        };
        Verified {
            principal: Arc::new(principal),
            lifetime: Lifetime {
                expires_at,
                not_before: None,
            },
            key_set: [0; 32],
            config: [0; 32],
        }
    }

    #[test]
    fn active_answers_are_kept_until_exp_and_at_most_the_ttl() {
        let now = 1_000;
        let ttl = settings(300, 10);
        // exp beyond the TTL: the TTL bounds it (a revocation is seen within cacheTtl).
        assert_eq!(keep_until(Ok(&verified(5_000)), &ttl, now), Some(1_300));
        // exp sooner: never past exp.
        assert_eq!(keep_until(Ok(&verified(1_060)), &ttl, now), Some(1_060));
        // Already at exp (accepted within the clock skew): not kept.
        assert_eq!(keep_until(Ok(&verified(1_000)), &ttl, now), None);
    }

    #[test]
    fn refusals_are_kept_briefly_and_outages_never() {
        let now = 1_000;
        let inactive = AuthError::Inactive {
            authority: "https://idp".into(),
        };
        let audience = AuthError::MissingScope {
            authority: "https://idp".into(),
        };
        let down = AuthError::IntrospectionUnavailable {
            authority: "https://idp".into(),
            retry_after: Duration::from_secs(5),
        };
        let ttl = settings(300, 10);
        assert_eq!(keep_until(Err(&inactive), &ttl, now), Some(1_010));
        assert_eq!(keep_until(Err(&audience), &ttl, now), Some(1_010));
        assert_eq!(keep_until(Err(&down), &ttl, now), None);
        // inactiveCacheTtl: 0 keeps nothing.
        assert_eq!(keep_until(Err(&inactive), &settings(300, 0), now), None);
    }
}
