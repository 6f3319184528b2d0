//! Introspection answers shared by the replicas (`sharedState.introspection`, issue 22): before
//! POSTing a token to the introspection endpoint, a replica looks for an answer another one got,
//! in the shared store under `<keyPrefix>introspection:<SHA-256 of the authority and the token>`
//! — never the token itself. A new answer is put there for as long as the local cache would keep
//! it ([`crate::proxy::introspected`]'s rules): an active one until its `exp` and at most
//! `cacheTtl`, an inactive one `inactiveCacheTtl` (0: not shared). Each replica still judges the
//! answer itself (steps 6–7), under its own configuration. The store is an economy here, not a
//! guarantee: when it does not answer, the replica introspects itself whatever `failureMode`
//! says (counted as a fallback).

use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::introspection::Introspector;
use crate::config::Introspection;

/// The store key kind of introspection answers.
const KIND: &str = "introspection";
/// The `use` index of introspection fallbacks ([`crate::metrics::FALLBACK_USES`]).
const FALLBACK_USE: usize = 2;

impl Introspector {
    /// The introspection answer for `token`: another replica's, when shared and kept, else one
    /// POST to `endpoint` (then shared). The flag says whether it came from the store (such an
    /// answer is not counted as an introspection).
    pub(super) async fn answer(
        &self,
        endpoint: &str,
        settings: &Introspection,
        authority: &str,
        token: &str,
        now: u64,
    ) -> Result<(Map<String, Value>, bool), String> {
        let Some(store) = self.shared.get() else {
            return Ok((self.post(endpoint, settings, token).await?, false));
        };
        let id = token_id(authority, token);
        match store.get(KIND, &id).await {
            Ok(Some(bytes)) => {
                if let Ok(answer) = serde_json::from_slice::<Map<String, Value>>(&bytes) {
                    return Ok((answer, true));
                }
            }
            Ok(None) => {}
            Err(error) => {
                store.metrics().record_fallback(FALLBACK_USE);
                tracing::debug!(%error, "introspecting without the shared answers");
                return Ok((self.post(endpoint, settings, token).await?, false));
            }
        }
        let answer = self.post(endpoint, settings, token).await?;
        if let Some(ttl) = shared_for(&answer, settings, now) {
            let bytes = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(error) = store.set(KIND, &id, &bytes, ttl).await {
                store.metrics().record_fallback(FALLBACK_USE);
                tracing::debug!(%error, "introspection answer not shared");
            }
        }
        Ok((answer, false))
    }
}

/// How long an answer is shared: an active one until its `exp`, at most `cacheTtl`; an inactive
/// one `inactiveCacheTtl`. `None`: not at all (expired, or a zero lifetime).
fn shared_for(answer: &Map<String, Value>, settings: &Introspection, now: u64) -> Option<Duration> {
    let ttl = match answer.get("active") {
        Some(Value::Bool(true)) => {
            let left = answer
                .get("exp")
                .and_then(Value::as_u64)
                .map_or(settings.cache_ttl, |exp| {
                    Duration::from_secs(exp.saturating_sub(now))
                });
            left.min(settings.cache_ttl)
        }
        _ => settings.inactive_cache_ttl,
    };
    (!ttl.is_zero()).then_some(ttl)
}

/// The store id of a token's answer: SHA-256 of the authority and the token, in hex.
fn token_id(authority: &str, token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(authority.as_bytes())
        .chain_update([0])
        .chain_update(token.as_bytes())
        .finalize();
    crate::shared::hex_id(&digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;
    use serde_json::json;

    fn settings() -> Introspection {
        Introspection {
            authority: "https://idp".into(),
            endpoint: None,
            client_id: "fg".into(),
            client_secret: SecretSource::Env("S".into()),
            cache_ttl: Duration::from_secs(300),
            inactive_cache_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            max_concurrent: 1,
        }
    }

    #[test]
    fn answers_are_shared_as_long_as_the_local_cache_keeps_them() {
        let object = |value: Value| value.as_object().unwrap().clone();
        let s = settings();
        let active = |exp: u64| object(json!({"active": true, "exp": exp}));
        assert_eq!(
            shared_for(&active(1060), &s, 1000),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            shared_for(&active(9000), &s, 1000),
            Some(Duration::from_secs(300))
        );
        assert_eq!(shared_for(&active(900), &s, 1000), None);
        let inactive = object(json!({"active": false}));
        assert_eq!(
            shared_for(&inactive, &s, 1000),
            Some(Duration::from_secs(10))
        );
        let never = Introspection {
            inactive_cache_ttl: Duration::ZERO,
            ..settings()
        };
        assert_eq!(shared_for(&inactive, &never, 1000), None);
        // The id names neither the token nor the authority, and differs per authority.
        let id = token_id("https://idp", "opaque-secret");
        assert_eq!(id.len(), 64);
        assert!(!id.contains("opaque"));
        assert_ne!(id, token_id("https://other", "opaque-secret"));
    }
}
