//! Authentication (SPEC §4 steps 2–7): where a token may come from ([`bearer`]), which identity
//! provider issued it, whether its signature, lifetime, audience and client hold, and who it
//! names ([`Principal`]). Keys come only from each provider's OpenID discovery ([`discovery`])
//! through the long-lived cache ([`jwks::KeySets`]); opaque tokens go to the provider's
//! introspection endpoint ([`introspection`]). The [`KeyStore`] keeps the two side by side, so
//! that neither imports the other.
//!
//! The order is the SPEC's and the first failure decides: decode without trusting → provider
//! whose *discovered* issuer equals `iss` → algorithm allow-list → key by `kid` → signature →
//! `exp`/`nbf` → audience and (smart providers) application, scopes and `fhirUser` (the last
//! two steps in [`claims`], shared with introspected tokens).
//!
//! Authentication holds no state of its own beyond key sets: [`verify`] returns a [`Verified`]
//! (who the token names, under which key set and configuration) and [`revalidate`] says
//! whether such a result still applies; the proxy's session cache
//! ([`crate::proxy::session`]) keeps them between requests.

pub mod bearer;
pub mod binding;
pub mod claims;
pub mod discovery;
pub mod dpop;
pub mod error;
pub mod introspection;
pub mod jwks;
pub mod keys;
pub mod near_miss;
mod shared_answers;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use tokio::task::JoinHandle;

pub use bearer::{access_token, bearer_token, jwt_in_url, Scheme, UrlPart};
pub use binding::{Confirmation, SenderError};
pub use claims::client_claims;
use claims::judge_claims;
pub use discovery::KeyError;
pub use error::{AuthError, FhirUserRule};
use introspection::Introspector;
pub use jwks::{ConfigSource, KeySetStats, KeySets, KeySettings, ProbeReport, ProviderKeys};
pub use keys::SigningKey;

use crate::config::{Config, ProviderKind};
use error::echo;
use keys::allowed_algorithm;
pub use token::ClaimSet;
use token::UnverifiedToken;
pub use token::{unix_now, Lifetime};

/// Who a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Which configured provider issued the token: the primary authority (authorized by role
    /// assignments) or a smart provider (authorized by the application's data actions).
    pub provider: ProviderKind,
    /// The provider's authority, as configured.
    pub authority: String,
    /// `iss` (equal to the provider's discovered issuer).
    pub issuer: String,
    /// `sub`.
    pub subject: Option<String>,
    /// `oid` (Entra object id), when present.
    pub object_id: Option<String>,
    /// The client the token names ([`client_claims`]: `azp`, else `appid`, else — outside
    /// `compatibility: azure` — `client_id`, else `cid`); for a smart provider, the matched
    /// application's `clientId`.
    pub client_id: Option<String>,
    /// The claim that named the client (`azp`, `appid`, `client_id`, `cid`).
    pub client_claim: Option<&'static str>,
    /// Smart provider: the index of the matched application in `applications`.
    pub application: Option<usize>,
    /// `aud`, string or array.
    pub audience: Vec<String>,
    /// `fhirUser`, else `extension_fhirUser`.
    pub fhir_user: Option<String>,
    /// The launch context's patient: the value of the claim `smartLaunchPatientClaim` names,
    /// when configured and present.
    pub launch_patient: Option<String>,
    /// `scp` and `scope`, split on whitespace.
    pub scopes: Vec<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// The claim named by `roles.groupsClaim`, if configured.
    pub groups: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// The `kid` of the key that verified the token.
    pub key_id: Option<String>,
    /// `cnf`: the key or certificate the token is bound to (RFC 9449 §6.1, RFC 8705 §3.1),
    /// checked on every request ([`crate::proxy::sender`]). Boxed: most tokens have none.
    pub confirmation: Option<Box<Confirmation>>,
}

#[cfg(test)]
impl Principal {
    /// A principal for unit tests: `client_id` of `provider` (named by `azp`), with no scopes,
    /// roles or groups; tests set what they need with struct update syntax.
    pub(crate) fn for_tests(provider: ProviderKind, client_id: &str) -> Principal {
        Principal {
            provider,
            authority: "https://idp.example.org".into(),
            issuer: "https://idp.example.org".into(),
            subject: None,
            object_id: None,
            client_id: Some(client_id.into()),
            client_claim: Some("azp"),
            application: None,
            audience: vec!["https://fhir.example.org".into()],
            fhir_user: None,
            launch_patient: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            groups: Vec::new(),
            expires_at: 0,
            key_id: None,
            confirmation: None,
        }
    }
}

/// A configured provider chosen by issuer, with its key set.
struct Selected {
    kind: ProviderKind,
    authority: String,
    keys: Arc<ProviderKeys>,
}

/// What one verification established, and under which key set and configuration: enough for
/// [`revalidate`] to tell, later, whether it still applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Shared with every request a kept result answers: no copy of the claims.
    pub principal: Arc<Principal>,
    /// `exp` and `nbf`, checked again on every reuse.
    pub lifetime: Lifetime,
    /// [`ProviderKeys::fingerprint`] of the set whose key verified the signature.
    pub key_set: [u8; 32],
    /// [`Config::fingerprint`] of the configuration that judged the claims.
    pub config: [u8; 32],
}

/// What authentication keeps of the identity providers across configuration generations (cheap
/// to clone): their key sets and, beside them, the client of RFC 7662 introspection requests,
/// which shares the key sets' connector.
#[derive(Debug, Clone)]
pub struct KeyStore {
    sets: KeySets,
    introspector: Introspector,
}

impl Default for KeyStore {
    fn default() -> Self {
        KeyStore::new()
    }
}

impl KeyStore {
    /// Empty key sets, and an introspection client over their connector.
    pub fn new() -> KeyStore {
        let sets = KeySets::new();
        let introspector = Introspector::new(sets.connector());
        KeyStore { sets, introspector }
    }

    /// The introspection client and its counters ([`introspection`]).
    pub fn introspector(&self) -> &Introspector {
        &self.introspector
    }

    /// [`KeySets::current`]: the authority's last good key set, if younger than `max_stale`.
    pub async fn current(&self, authority: &str, max_stale: Duration) -> Option<Arc<ProviderKeys>> {
        self.sets.current(authority, max_stale).await
    }

    /// [`KeySets::keys`]: the key set for a request, cached or fetched (else 503).
    pub async fn keys(
        &self,
        authority: &str,
        settings: &KeySettings,
    ) -> Result<Arc<ProviderKeys>, AuthError> {
        self.sets.keys(authority, settings).await
    }

    /// [`KeySets::refetch_for_unknown_kid`]: an unknown `kid` refetches, rate-limited.
    pub async fn refetch_for_unknown_kid(
        &self,
        authority: &str,
        settings: &KeySettings,
    ) -> Option<Arc<ProviderKeys>> {
        self.sets.refetch_for_unknown_kid(authority, settings).await
    }

    /// [`KeySets::prefetch`]: fetches every configured authority without a usable set.
    pub async fn prefetch(&self, config: &Config) {
        self.sets.prefetch(config).await;
    }

    /// [`KeySets::is_ready`]: every configured authority holds a usable set (`/readyz`).
    pub fn is_ready(&self, config: &Config) -> bool {
        self.sets.is_ready(config)
    }

    /// [`KeySets::authority_stats`]: the counters of one authority.
    pub fn authority_stats(&self, authority: &str) -> KeySetStats {
        self.sets.authority_stats(authority)
    }

    /// [`KeySets::stats`]: the counters of every authority seen.
    pub fn stats(&self) -> Vec<KeySetStats> {
        self.sets.stats()
    }

    /// [`KeySets::probe`]: one uncached discovery and key-set fetch (`fhirguard check --probe`).
    pub async fn probe(&self, authority: &str, config: &Config) -> Result<ProbeReport, KeyError> {
        self.sets.probe(authority, config).await
    }

    /// [`KeySets::spawn_refresher`]: the background refresh of the key sets.
    pub fn spawn_refresher<S: ConfigSource>(&self, source: Arc<S>) -> JoinHandle<()> {
        self.sets.spawn_refresher(source)
    }
}

/// SPEC §4 steps 4–7 for one token, in full; `now` in Unix seconds.
pub async fn authenticate(
    store: &KeyStore,
    config: &Config,
    token: &str,
    now: u64,
) -> Result<Arc<Principal>, AuthError> {
    verify(store, config, token, now).await.map(|v| v.principal)
}

/// A kept verification still applies when the configuration that judged it is in force and
/// its provider's current key set is the one that verified it; then only the lifetime is
/// checked again. `None`: verify in full.
pub async fn revalidate(
    store: &KeyStore,
    config: &Config,
    kept: &Verified,
    now: u64,
) -> Option<Result<(), AuthError>> {
    if kept.config != config.fingerprint {
        return None;
    }
    let authority = kept.principal.authority.as_str();
    let keys = store.current(authority, config.key_sets.max_stale).await?;
    if keys.fingerprint != kept.key_set {
        return None;
    }
    Some(
        kept.lifetime
            .check(now, config.clock_skew.as_secs(), authority),
    )
}

/// The full verification of SPEC §4 steps 4–7.
pub async fn verify(
    store: &KeyStore,
    config: &Config,
    token: &str,
    now: u64,
) -> Result<Verified, AuthError> {
    // Step 4: decode without trusting; the provider whose discovered issuer is `iss`.
    let token = UnverifiedToken::parse(token)?;
    let issuer = token.string("iss").ok_or(AuthError::MissingIssuer)?;
    let settings = KeySettings::of(config);
    let selected = select_provider(store, config, &settings, issuer).await?;
    // Step 5: algorithm allow-list, key by kid from this provider only, signature.
    let (key, key_set) = verify_signature(store, &settings, &selected, &token, issuer).await?;
    // Steps 6–7: lifetime, audience, client, scopes, fhirUser.
    let (principal, lifetime) =
        judge_claims(config, &selected, issuer, &token.claims, now, key.kid)?;
    Ok(Verified {
        principal: Arc::new(principal),
        lifetime,
        key_set,
        config: config.fingerprint,
    })
}

/// Step 5: the algorithm on the allow-list, the key by `kid` from the selected provider's set
/// only (refetched once for an unknown `kid`, rate-limited), and the signature. Returns the key
/// and the fingerprint of the set it came from.
async fn verify_signature(
    store: &KeyStore,
    settings: &KeySettings,
    selected: &Selected,
    token: &UnverifiedToken<'_>,
    issuer: &str,
) -> Result<(SigningKey, [u8; 32]), AuthError> {
    let authority = selected.authority.as_str();
    let alg = allowed_algorithm(&token.header.alg).ok_or_else(|| AuthError::Algorithm {
        authority: authority.to_owned(),
        alg: echo(&token.header.alg),
    })?;
    let kid = token.header.kid.as_deref();
    let (key, key_set) = match find_key(&selected.keys, kid, alg, authority)? {
        Some(key) => (key, selected.keys.fingerprint),
        None => {
            let refreshed = store.refetch_for_unknown_kid(authority, settings).await;
            // A refreshed set that announces another issuer is no longer this token's provider.
            refreshed
                .as_deref()
                .filter(|keys| keys.issuer == issuer)
                .and_then(|keys| {
                    find_key(keys, kid, alg, authority)
                        .map(|key| key.map(|key| (key, keys.fingerprint)))
                        .transpose()
                })
                .transpose()?
                .ok_or_else(|| AuthError::UnknownKid {
                    authority: authority.to_owned(),
                    kid: kid.map(echo),
                })?
        }
    };
    if !token.verify(&key, alg) {
        return Err(AuthError::Signature {
            authority: authority.to_owned(),
        });
    }
    Ok((key, key_set))
}

/// The provider whose discovered `issuer` equals `iss` exactly (reference §8 rules 4, 5). When
/// none matches while some provider has no key set, the token may be that provider's: fail
/// closed with 503 rather than call it unknown.
async fn select_provider(
    store: &KeyStore,
    config: &Config,
    settings: &KeySettings,
    issuer: &str,
) -> Result<Selected, AuthError> {
    let mut missing = Vec::new();
    let mut others = Vec::new();
    for (kind, authority) in config.auth.providers() {
        match store.current(authority, settings.max_stale).await {
            Some(keys) if keys.issuer == issuer => return Ok(selected(kind, authority, keys)),
            Some(keys) => others.push(keys),
            None => missing.push((kind, authority)),
        }
    }
    let mut unavailable = None;
    for (kind, authority) in missing {
        match store.keys(authority, settings).await {
            Ok(keys) if keys.issuer == issuer => return Ok(selected(kind, authority, keys)),
            Ok(keys) => others.push(keys),
            Err(error) => {
                unavailable.get_or_insert(error);
            }
        }
    }
    Err(unavailable.unwrap_or_else(|| AuthError::UnknownIssuer {
        issuer: echo(issuer),
        hint: near_miss::issuer(issuer, others.iter().map(|keys| keys.issuer.as_str())),
    }))
}

fn selected(kind: ProviderKind, authority: &str, keys: Arc<ProviderKeys>) -> Selected {
    Selected {
        kind,
        authority: authority.to_owned(),
        keys,
    }
}

/// The key for `kid` and `alg`: by `kid` when the token names one; without a `kid` only when
/// exactly one key fits `alg`. `Ok(None)`: not in this set (a refetch may help).
fn find_key(
    keys: &ProviderKeys,
    kid: Option<&str>,
    alg: Algorithm,
    authority: &str,
) -> Result<Option<SigningKey>, AuthError> {
    let Some(kid) = kid else {
        let mut fitting = keys.keys.iter().filter(|k| k.fits(alg));
        return Ok(match (fitting.next(), fitting.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        });
    };
    let mut named = keys
        .keys
        .iter()
        .filter(|k| k.kid.as_deref() == Some(kid))
        .peekable();
    if named.peek().is_none() {
        return Ok(None);
    }
    named
        .find(|k| k.fits(alg))
        .cloned()
        .map(Some)
        .ok_or_else(|| AuthError::AlgorithmMismatch {
            authority: authority.to_owned(),
            alg: keys::algorithm_name(alg).to_owned(),
            kid: echo(kid),
        })
}
