//! Authentication (SPEC §4 steps 2–7): where a token may come from ([`bearer`]), which identity
//! provider issued it, whether its signature, lifetime, audience and client hold, and who it
//! names ([`Principal`]). Keys come only from each provider's OpenID discovery ([`discovery`])
//! through the long-lived cache ([`jwks::KeySets`]); opaque tokens go to the provider's
//! introspection endpoint ([`introspection`]). The [`KeyStore`] keeps the two side by side, so
//! that neither imports the other.
//!
//! The order is the SPEC's and the first failure decides: decode without trusting → provider
//! whose *discovered* issuer equals `iss` → algorithm allow-list → key by `kid` → signature →
//! `exp`/`nbf` → audience and (smart providers) application, scopes and `fhirUser`.
//!
//! Authentication holds no state of its own beyond key sets: [`verify`] returns a [`Verified`]
//! (who the token names, under which key set and configuration) and [`revalidate`] says
//! whether such a result still applies; the proxy's session cache
//! ([`crate::proxy::session`]) keeps them between requests.

pub mod bearer;
pub mod binding;
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
pub use discovery::KeyError;
pub use error::{AuthError, FhirUserRule};
use introspection::Introspector;
pub use jwks::{ConfigSource, KeySetStats, KeySets, KeySettings, ProbeReport, ProviderKeys};
pub use keys::SigningKey;

use crate::authz::scope::{parse_scopes, Context};
use crate::config::{Compatibility, Config, ProviderKind};
use error::echo;
use keys::allowed_algorithm;
pub use token::ClaimSet;
use token::{audience_matches, check_lifetime, is_fhir_user_reference, UnverifiedToken};
pub use token::{unix_now, Lifetime};

/// How many token audiences an `error_description` lists (it goes into a response header).
const MAX_ECHOED_AUDIENCES: usize = 5;

/// Who a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
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

/// Steps 6–7 over a token's claims, whoever vouched for them: a JWT whose signature step 5
/// verified, or an active introspection answer (RFC 7662 §2.2, [`introspection`]). Both paths
/// share these rules, so an opaque token is judged exactly as a JWT with the same claims.
fn judge_claims(
    config: &Config,
    selected: &Selected,
    issuer: &str,
    claims: &ClaimSet,
    now: u64,
    key_id: Option<String>,
) -> Result<(Principal, Lifetime), AuthError> {
    let authority = selected.authority.as_str();
    // Step 6: lifetime.
    let lifetime = check_lifetime(claims, now, config.clock_skew.as_secs(), authority)?;
    // Step 7: audience, and for a smart provider the application, scopes and fhirUser.
    let client = first_string_claim(claims, client_claims(config.compatibility))?;
    let fhir_user =
        first_string_claim(claims, &["fhirUser", "extension_fhirUser"])?.map(|(value, _)| value);
    let judged = Claims {
        audience: claims.strings("aud"),
        client,
        fhir_user,
        scopes: claims.scopes(),
    };
    let application = check_claims(config, selected, &judged)?;
    let launch_patient = match config.smart_launch_patient_claim.as_deref() {
        Some(claim) => launch_patient(claims, claim)?,
        None => None,
    };
    let groups = config
        .roles
        .groups_claim
        .as_deref()
        .map(|claim| claims.strings(claim))
        .unwrap_or_default();
    let principal = Principal {
        provider: selected.kind,
        authority: selected.authority.clone(),
        issuer: issuer.to_owned(),
        subject: claims.string("sub").map(str::to_owned),
        object_id: claims.string("oid").map(str::to_owned),
        client_id: client.map(|(value, _)| value.to_owned()),
        client_claim: client.map(|(_, claim)| claim),
        application,
        audience: judged.audience,
        fhir_user: fhir_user.map(str::to_owned),
        launch_patient,
        scopes: judged.scopes,
        roles: claims.strings("roles"),
        groups,
        expires_at: lifetime.expires_at,
        key_id,
        // RFC 9449 §6 / RFC 8705 §3.1 (and RFC 7662 §2.2 for an introspection answer): the
        // token's binding, checked on every request it is used.
        confirmation: binding::confirmation(&claims.0)?.map(Box::new),
    };
    Ok((principal, lifetime))
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

/// The claims step 7 judges.
#[derive(Debug)]
struct Claims<'t> {
    /// `aud`, string or array.
    audience: Vec<String>,
    /// The client claim's value and name ([`client_claims`]).
    client: Option<(&'t str, &'static str)>,
    fhir_user: Option<&'t str>,
    scopes: Vec<String>,
}

/// Step 7: the audience; for a smart provider also the application named by the client claim,
/// its audience, the presence of scopes and the `fhirUser` rules. Returns the application's
/// index (`None` for the primary authority).
fn check_claims(
    config: &Config,
    selected: &Selected,
    claims: &Claims<'_>,
) -> Result<Option<usize>, AuthError> {
    let authority = selected.authority.as_str();
    let ProviderKind::Smart { index } = selected.kind else {
        let expected = config
            .auth
            .primary
            .as_ref()
            .map_or("", |p| p.audience.as_str());
        check_audience(config, &claims.audience, expected, authority)?;
        return Ok(None);
    };
    let provider = &config.auth.smart_providers[index];
    let unknown = || AuthError::UnknownClient {
        authority: authority.to_owned(),
        client: claims.client.map(|(value, claim)| (echo(value), claim)),
        looked_in: client_claims_text(config.compatibility),
    };
    let (app_index, app) = claims
        .client
        .and_then(|(value, _)| {
            provider
                .applications
                .iter()
                .enumerate()
                .find(|(_, a)| a.client_id == value)
        })
        .ok_or_else(unknown)?;
    check_audience(config, &claims.audience, &app.audience, authority)?;
    if claims.scopes.is_empty() {
        return Err(AuthError::MissingScope {
            authority: authority.to_owned(),
        });
    }
    check_fhir_user(
        config.compatibility,
        claims.fhir_user,
        &claims.scopes,
        authority,
    )?;
    Ok(Some(app_index))
}

/// The claims that name a token's client, in order; the first present one decides (SPEC §4
/// step 7). Entra ID sends `azp` (v2.0) or `appid` (v1.0); a standard JWT access token
/// (RFC 9068 §2.2) sends `client_id`; Okta sends `cid`. `compatibility: azure` looks only where
/// Azure does (reference §2.3 rule 3).
pub fn client_claims(compatibility: Compatibility) -> &'static [&'static str] {
    match compatibility {
        Compatibility::Azure => &["azp", "appid"],
        Compatibility::Open => &["azp", "appid", "client_id", "cid"],
    }
}

/// The first of `names` the token has, with its name. Present but not a string is malformed:
/// a claim that names the client or the user is never skipped for a later one, since another
/// reader of the token (the FHIR server) may take it where fhirguard would not.
fn first_string_claim<'t>(
    token: &'t ClaimSet,
    names: &[&'static str],
) -> Result<Option<(&'t str, &'static str)>, AuthError> {
    let Some((name, value)) = names
        .iter()
        .find_map(|name| token.get(name).map(|value| (*name, value)))
    else {
        return Ok(None);
    };
    match value {
        serde_json::Value::String(text) => Ok(Some((text.as_str(), name))),
        _ => Err(AuthError::Malformed {
            detail: "a client or fhirUser claim is not a string",
        }),
    }
}

fn client_claims_text(compatibility: Compatibility) -> &'static str {
    match compatibility {
        Compatibility::Azure => "azp or appid",
        Compatibility::Open => "azp, appid, client_id or cid",
    }
}

/// `aud` must contain `expected` (reference §8 rules 8, 9); a near miss is kept as a hint.
fn check_audience(
    config: &Config,
    audience: &[String],
    expected: &str,
    authority: &str,
) -> Result<(), AuthError> {
    if audience_matches(audience, expected, config.audience_ignore_trailing_slash) {
        return Ok(());
    }
    Err(AuthError::Audience {
        authority: authority.to_owned(),
        audiences: audience
            .iter()
            .take(MAX_ECHOED_AUDIENCES)
            .map(|a| echo(a))
            .collect(),
        hint: near_miss::audience(audience, expected),
    })
}

/// The `fhirUser` rules of a smart provider's token (SPEC §4 step 7, reference §4.5). Under
/// `compatibility: azure`, Azure's: always required, an absolute URL. Otherwise it is required
/// only when the clinical scopes are `patient/` or `user/` ones (SMART Backend Services tokens,
/// `system/`, name no user), and may be relative; when present it must be a resource
/// reference. Which types it may name, and its base against `publicBaseUrl`, are checked with
/// the grant ([`SmartGrant::new`]), as are malformed scopes (400).
fn check_fhir_user(
    compatibility: Compatibility,
    fhir_user: Option<&str>,
    scopes: &[String],
    authority: &str,
) -> Result<(), AuthError> {
    let azure = compatibility == Compatibility::Azure;
    let Some(value) = fhir_user else {
        let required_by = if azure {
            Some(FhirUserRule::Azure)
        } else {
            match parse_scopes(scopes).map(|set| set.context()) {
                Ok(Some(context @ (Context::Patient | Context::User))) => {
                    Some(FhirUserRule::Scopes(context))
                }
                _ => None,
            }
        };
        return match required_by {
            Some(required_by) => Err(AuthError::MissingFhirUser {
                authority: authority.to_owned(),
                required_by,
            }),
            None => Ok(()),
        };
    };
    if is_fhir_user_reference(value, azure) {
        return Ok(());
    }
    Err(AuthError::BadFhirUser {
        authority: authority.to_owned(),
        value: echo(value),
        absolute_only: azure,
    })
}

/// The launch context's patient from the configured claim: absent, or a non-empty string. A
/// claim that is present but is anything else — `null`, an empty (or all-whitespace) string, a
/// number, an array, an object — is a malformed token (401), never "no launch context": a
/// `null` read as absent would fall back to `fhirUser`'s compartment, which the launch was
/// meant to narrow.
fn launch_patient(token: &ClaimSet, claim: &str) -> Result<Option<String>, AuthError> {
    match token.get(claim) {
        None => Ok(None),
        Some(serde_json::Value::String(value)) if !value.trim().is_empty() => {
            Ok(Some(value.clone()))
        }
        Some(_) => Err(AuthError::Malformed {
            detail: "the launch-context patient claim is present but not a non-empty string",
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// compatibility, scopes, fhirUser → Ok, or the rule that required it (`None`: malformed).
    type Row = (
        Compatibility,
        &'static str,
        Option<&'static str>,
        Result<(), Option<FhirUserRule>>,
    );

    /// The `fhirUser` rules per context and per `compatibility` (SPEC §4 step 7).
    #[test]
    fn fhir_user_rules_per_context_and_compatibility() {
        use Compatibility::{Azure, Open};
        let scopes = |s: &str| vec![s.to_owned()];
        let missing = |rule| Err(Some(rule));
        let absolute = Some("https://fhir.example.org/Patient/1");
        let relative = Some("Practitioner/7");
        let table: &[Row] = &[
            (
                Open,
                "patient/*.read",
                None,
                missing(FhirUserRule::Scopes(Context::Patient)),
            ),
            (
                Open,
                "user/*.rs",
                None,
                missing(FhirUserRule::Scopes(Context::User)),
            ),
            (Open, "system/*.rs", None, Ok(())),
            (Open, "openid", None, Ok(())),
            (Open, "patient/*.read", relative, Ok(())),
            (Open, "patient/*.read", absolute, Ok(())),
            (Open, "system/*.rs", relative, Ok(())),
            (Open, "system/*.rs", Some("urn:x"), Err(None)),
            (Azure, "system/*.rs", None, missing(FhirUserRule::Azure)),
            (Azure, "patient/*.read", None, missing(FhirUserRule::Azure)),
            (Azure, "patient/*.read", relative, Err(None)),
            (Azure, "patient/*.read", absolute, Ok(())),
        ];
        for (compatibility, claim, fhir_user, expected) in table {
            let got =
                check_fhir_user(*compatibility, *fhir_user, &scopes(claim), "a").map_err(|error| {
                    match error {
                        AuthError::MissingFhirUser { required_by, .. } => Some(required_by),
                        AuthError::BadFhirUser { absolute_only, .. } => {
                            assert_eq!(absolute_only, *compatibility == Azure);
                            None
                        }
                        other => panic!("{other:?}"),
                    }
                });
            assert_eq!(&got, expected, "{compatibility:?} {claim} {fhir_user:?}");
        }
    }

    #[test]
    fn client_claims_per_compatibility() {
        assert_eq!(client_claims(Compatibility::Azure), ["azp", "appid"]);
        assert_eq!(
            client_claims(Compatibility::Open),
            ["azp", "appid", "client_id", "cid"]
        );
    }
}
