//! What the key sets tell about themselves: readiness (`/readyz`), per-authority counters
//! (metrics) and the uncached probe of `fhirguard check --probe`.

use std::sync::PoisonError;

use super::{KeySets, KeySettings};
use crate::auth::discovery::KeyError;
use crate::auth::keys::SigningKey;
use crate::config::Config;

/// Per-authority fetch counters, for metrics and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySetStats {
    /// The configured authority these counters are for.
    pub authority: String,
    /// Its discovered `issuer`, once a fetch has succeeded.
    pub issuer: Option<String>,
    /// Successful discovery + key-set fetches (`fhirguard_key_set_fetches_total{result="ok"}`).
    pub fetches_ok: u64,
    /// Failed fetches (`result="error"`).
    pub fetches_error: u64,
    /// Usable keys in the last good set.
    pub keys: usize,
    /// Unix seconds of the last successful fetch.
    pub last_success: Option<u64>,
    /// Why the last fetch failed; cleared by the next success.
    pub last_error: Option<String>,
}

/// What `fhirguard check --probe` prints for one authority.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The discovered `issuer`.
    pub issuer: String,
    /// The discovered `jwks_uri`.
    pub jwks_uri: String,
    /// `introspection_endpoint`, when the provider advertises one (RFC 8414 §2).
    pub introspection_endpoint: Option<String>,
    /// The set's usable signing keys.
    pub keys: Vec<SigningKey>,
    /// Keys of the set that were skipped, as `"kid: reason"`.
    pub skipped: Vec<String>,
    /// `dpop_signing_alg_values_supported` (RFC 9449 §5.1); `None`: not advertised.
    pub dpop_algorithms: Option<Vec<String>>,
}

impl KeySets {
    /// True when every configured authority holds a usable, non-stale key set (`/readyz`).
    pub fn is_ready(&self, config: &Config) -> bool {
        let max_stale = config.key_sets.max_stale;
        config.auth.providers().all(|(_, authority)| {
            self.status(authority, |s| {
                s.stats.keys > 0 && s.last_success.is_some_and(|t| t.elapsed() <= max_stale)
            })
        })
    }

    /// Counters of one authority.
    pub fn authority_stats(&self, authority: &str) -> KeySetStats {
        let mut stats = self.status(authority, |s| s.stats.clone());
        stats.authority = authority.to_owned();
        stats
    }

    /// Counters of every authority this store has seen.
    pub fn stats(&self) -> Vec<KeySetStats> {
        let names: Vec<String> = {
            let map = self
                .inner
                .authorities
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.keys().cloned().collect()
        };
        let mut all: Vec<_> = names.iter().map(|a| self.authority_stats(a)).collect();
        all.sort_by(|a, b| a.authority.cmp(&b.authority));
        all
    }

    /// One uncached discovery + key-set fetch, reporting every key (`fhirguard check --probe`).
    pub async fn probe(&self, authority: &str, config: &Config) -> Result<ProbeReport, KeyError> {
        let fetcher = self
            .inner
            .fetcher
            .as_ref()
            .map_err(|e| KeyError::Client(e.clone()))?;
        let (discovery, parsed) = fetcher
            .fetch(authority, KeySettings::of(config).policy)
            .await?;
        Ok(ProbeReport {
            issuer: discovery.issuer,
            jwks_uri: discovery.jwks_uri,
            introspection_endpoint: discovery.introspection_endpoint,
            keys: parsed.keys,
            skipped: parsed.skipped,
            dpop_algorithms: discovery.offered.dpop_signing_alg_values_supported,
        })
    }
}
