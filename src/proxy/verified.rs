//! The verified-token cache (issue 5): a token whose signature and claims were verified once
//! is not verified again while it lives, and what requests derive from its claims (its SMART
//! grant) is kept with the verification it came from ([`Session`]). Signature checks dominate
//! authentication (RS256 and ES256 cost tens of microseconds; a hit costs one SHA-256 of the
//! token and two map lookups), and a client sends the same token for its whole lifetime.
//!
//! What makes a hit safe, and where each rule is enforced:
//!
//! - **Key**: the SHA-256 of the whole compact token ([`TokenDigest`]), never a weak hash, so no
//!   other token can be made to collide with a cached one. The token itself is not kept.
//! - **Expiry**: an entry is dropped no later than the token's `exp` (a per-entry moka
//!   [`Expiry`]); `exp` and `nbf` are still checked against the clock skew on every hit
//!   ([`crate::auth::Lifetime::check`], through [`crate::auth::revalidate`]).
//! - **Key set**: an entry records the fingerprint of the key set that verified it
//!   ([`crate::auth::ProviderKeys::fingerprint`]); a hit needs that provider's current set to have
//!   the same fingerprint, so a rotation that removes the key removes its tokens.
//! - **Configuration**: an entry records the [`crate::config::Config::fingerprint`] its claims
//!   were judged under (issuer, audience, application, groups claim); another configuration
//!   misses. A reload also empties the cache.
//! - **Authorization** is not cached: the cache returns the [`Principal`] and the caller
//!   decides the request, per request. The SMART grant kept with it is parsed from the
//!   principal's own claims only ([`Session::smart_grant`]).
//! - **Failures** are not cached: only verified tokens are inserted.
//!
//! The cache is bounded by an estimate of the bytes each entry holds ([`weight`]), 16 MiB by
//! default ([`DEFAULT_CAPACITY_BYTES`]): about 12 000 typical Entra ID tokens (~1.4 KiB each
//! with the cache's own bookkeeping), fewer when tokens carry many roles or groups. That is the
//! working set of a busy sidecar (tokens live about an hour) at a memory cost it can afford;
//! beyond it moka's TinyLFU admission keeps the tokens seen most often.

use std::fmt;
use std::mem::{size_of, size_of_val};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};

use crate::auth::{unix_now, Principal, Verified};
use crate::authz::smart::{SmartError, SmartGrant};
use crate::config::ProviderKind;
use crate::proxy::headers::Identity;

/// The default bound of the cache: 16 MiB of entries by [`weight`].
pub const DEFAULT_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;

/// What moka keeps per entry besides the key and value (hash table slot, access-order and
/// expiry-wheel nodes, their allocations). Calibrated: 100 000 typical entries grew the RSS of a
/// test process by 1 365 bytes each (x86_64, glibc, moka 0.12), which [`weight`] reproduces.
const ENTRY_OVERHEAD_BYTES: usize = 224;

/// The [`weight`] of a typical Entra ID token's entry, to size the table up front.
const TYPICAL_ENTRY_BYTES: u64 = 1800;

/// What the allocator adds to each heap allocation (header and rounding, glibc on 64-bit).
const ALLOCATION_OVERHEAD_BYTES: usize = 24;

/// The SHA-256 of a whole compact token: the cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token`, the whole compact serialisation.
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }
}

/// A digest identifies a bearer credential: it is not printed.
impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// A verified token and what requests derived from it: the cache's value.
#[derive(Debug)]
pub struct Session {
    /// The verification the token passed, with the key set and configuration it holds under.
    pub verified: Verified,
    /// The SMART grant, for the public base URL it was built with, computed on first use
    /// (boxed: most principals of a primary authority never fill it, and every cache entry
    /// carries the slot).
    smart: OnceLock<Box<(Option<url::Url>, GrantResult)>>,
    /// The identity headers sent upstream with each request, built on first use (boxed, as
    /// `smart`).
    identity: OnceLock<Box<Identity>>,
}

type GrantResult = Result<Arc<SmartGrant>, SmartError>;

impl Session {
    /// A session for a token just verified, its SMART grant not yet computed.
    pub fn new(verified: Verified) -> Session {
        Session {
            verified,
            smart: OnceLock::new(),
            identity: OnceLock::new(),
        }
    }

    /// The principal's identity headers ([`Identity::of`]), built once per session.
    pub fn identity(&self) -> &Identity {
        self.identity
            .get_or_init(|| Box::new(Identity::of(self.principal())))
    }

    /// Who the token names.
    pub fn principal(&self) -> &Arc<Principal> {
        &self.verified.principal
    }

    /// The SMART grant of the token's scopes, `fhirUser` and launch-context patient (reference
    /// §8 rules 14–16), parsed once per session and base URL. Every claim it reads is a field
    /// of the session's principal, so a cached session carries a grant built from its own
    /// token only.
    pub fn smart_grant(&self, public_base: Option<&url::Url>) -> GrantResult {
        let principal = self.principal();
        let build = || {
            SmartGrant::new(
                &principal.scopes,
                principal.fhir_user.as_deref(),
                public_base,
            )?
            .with_launch_patient(principal.launch_patient.as_deref(), public_base)
            .map(Arc::new)
        };
        let (base, grant) = &**self
            .smart
            .get_or_init(|| Box::new((public_base.cloned(), build())));
        if base.as_ref() == public_base {
            grant.clone()
        } else {
            build()
        }
    }
}

/// Cache counters since start, for `fhirguard_token_cache_{hits,misses}_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCacheStats {
    /// Requests answered from the cache (accepted, or refused because the token expired since).
    pub hits: u64,
    /// Requests that went through full verification while the cache was enabled.
    pub misses: u64,
    /// Entries held (moka's count, eventually consistent).
    pub entries: u64,
    /// Sum of the entries' [`weight`] (eventually consistent).
    pub weighted_bytes: u64,
}

/// The verified-token cache, shared by every configuration generation. Disabled (no lookups,
/// nothing counted) when built with a capacity of 0.
pub struct VerifiedCache {
    entries: Option<Cache<TokenDigest, Arc<Session>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    /// A cache holding at most `capacity_bytes` of entries by [`weight`]; 0 disables it.
    pub fn new(capacity_bytes: u64) -> VerifiedCache {
        let entries = (capacity_bytes > 0).then(|| {
            // Sized for the entries the bound holds, so a filling cache does not rehash its
            // table over and over on the request path.
            let expected_entries = capacity_bytes / TYPICAL_ENTRY_BYTES;
            Cache::builder()
                .initial_capacity(usize::try_from(expected_entries).unwrap_or(usize::MAX))
                .max_capacity(capacity_bytes)
                .weigher(|_: &TokenDigest, session: &Arc<Session>| weight(&session.verified))
                .expire_after(UntilExpiry)
                .build()
        });
        VerifiedCache {
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether the cache was built with a capacity above 0: if not, every token is verified
    /// in full and nothing is counted.
    pub fn is_enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The entry for `digest`, whatever its key set and configuration: the caller decides
    /// whether it still applies and records the outcome with [`VerifiedCache::record`].
    pub async fn get(&self, digest: &TokenDigest) -> Option<Arc<Session>> {
        self.entries.as_ref()?.get(digest).await
    }

    /// Counts a lookup: `hit` when the cache answered the request.
    pub fn record(&self, hit: bool) {
        if self.is_enabled() {
            let counter = if hit { &self.hits } else { &self.misses };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keeps a verification until the token's `exp`. A token already past `exp` at `now` (but
    /// within the clock skew) is not kept: it is verified in full each time.
    /// Returns the entry kept, if any.
    pub async fn insert(
        &self,
        digest: TokenDigest,
        session: Arc<Session>,
        now: u64,
    ) -> Option<Arc<Session>> {
        let entries = self.entries.as_ref()?;
        if session.verified.lifetime.expires_at <= now {
            return None;
        }
        entries.insert(digest, Arc::clone(&session)).await;
        Some(session)
    }

    /// Drops one entry (its key set or configuration is no longer in force).
    pub async fn remove(&self, digest: &TokenDigest) {
        if let Some(entries) = &self.entries {
            entries.invalidate(digest).await;
        }
    }

    /// Drops every entry (a new configuration is in force).
    pub fn invalidate_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }

    /// Applies moka's pending evictions and expirations now (tests, and before reading exact
    /// sizes).
    pub async fn run_pending_tasks(&self) {
        if let Some(entries) = &self.entries {
            entries.run_pending_tasks().await;
        }
    }

    /// Hits and misses since start (`fhirguard_token_cache_{hits,misses}_total`) and its size.
    pub fn stats(&self) -> TokenCacheStats {
        let (entries, weighted_bytes) = self
            .entries
            .as_ref()
            .map_or((0, 0), |e| (e.entry_count(), e.weighted_size()));
        TokenCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            weighted_bytes,
        }
    }
}

/// The estimated bytes an entry holds: the key, the value, the heap data of its strings and
/// what the allocator adds to each allocation, plus moka's per-entry bookkeeping. An estimate,
/// calibrated against RSS (`ENTRY_OVERHEAD_BYTES`), that grows with what a token carries, so
/// tokens with many groups count for more.
pub fn weight(verified: &Verified) -> u32 {
    let p = &verified.principal;
    let heap = |s: &String| {
        if s.capacity() == 0 {
            0
        } else {
            s.capacity() + ALLOCATION_OVERHEAD_BYTES
        }
    };
    let list = |list: &[String]| -> usize {
        let items: usize = list.iter().map(heap).sum();
        let spine = if list.is_empty() {
            0
        } else {
            size_of_val(list) + ALLOCATION_OVERHEAD_BYTES
        };
        items + spine
    };
    let optional = |s: &Option<String>| s.as_ref().map_or(0, heap);
    let bytes = size_of::<TokenDigest>()
        + size_of::<Session>()
        + 2 * size_of::<usize>() // the Arc's counters
        + ALLOCATION_OVERHEAD_BYTES // the Arc's allocation
        + size_of::<Principal>() + 2 * size_of::<usize>() + ALLOCATION_OVERHEAD_BYTES // its Arc
        + ENTRY_OVERHEAD_BYTES
        + heap(&p.authority)
        + heap(&p.issuer)
        + optional(&p.subject)
        + optional(&p.object_id)
        + optional(&p.client_id)
        + optional(&p.fhir_user)
        + optional(&p.launch_patient)
        + optional(&p.key_id)
        + p.confirmation.as_ref().map_or(0, |c| {
            size_of::<crate::auth::Confirmation>() + ALLOCATION_OVERHEAD_BYTES
                + optional(&c.jkt)
                + optional(&c.x5t_s256)
        })
        + list(&p.audience)
        + list(&p.scopes)
        + list(&p.roles)
        + list(&p.groups)
        + derived(p);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// What a [`Session`] comes to hold once requests used the entry: the identity headers'
/// values, and under SMART the parsed grant (about the size of the scope list again).
fn derived(p: &Principal) -> usize {
    let identity = Identity::heap_bytes(p, ALLOCATION_OVERHEAD_BYTES);
    if !matches!(p.provider, ProviderKind::Smart { .. }) {
        return identity;
    }
    identity
        + size_of::<SmartGrant>()
        + ALLOCATION_OVERHEAD_BYTES
        + size_of::<Option<url::Url>>()
        + p.scopes.iter().map(|s| s.len() + 64).sum::<usize>()
}

/// Each entry lives until its token's `exp` (wall clock), never longer.
struct UntilExpiry;

impl UntilExpiry {
    fn until_exp(session: &Session) -> Option<Duration> {
        let expires_at = session.verified.lifetime.expires_at;
        Some(Duration::from_secs(expires_at.saturating_sub(unix_now())))
    }
}

impl Expiry<TokenDigest, Arc<Session>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &TokenDigest,
        session: &Arc<Session>,
        _: Instant,
    ) -> Option<Duration> {
        UntilExpiry::until_exp(session)
    }

    fn expire_after_update(
        &self,
        _: &TokenDigest,
        session: &Arc<Session>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        UntilExpiry::until_exp(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Lifetime;

    fn now() -> u64 {
        unix_now()
    }

    fn session(subject: &str, expires_at: u64) -> Arc<Session> {
        Arc::new(Session::new(verified(subject, expires_at)))
    }

    fn verified(subject: &str, expires_at: u64) -> Verified {
        Verified {
            principal: Arc::new(Principal {
                provider: ProviderKind::Primary,
                authority: "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555"
                    .into(),
                issuer: "https://sts.windows.net/11111111-2222-3333-4444-555555555555/".into(),
                subject: Some(subject.into()),
                object_id: Some("00000000-0000-0000-0000-0000000000a1".into()),
                client_id: Some("22222222-3333-4444-5555-666666666666".into()),
                client_claim: Some("appid"),
                application: None,
                audience: vec!["https://fhir.contoso.example".into()],
                fhir_user: None,
                launch_patient: None,
                scopes: vec!["user_impersonation".into()],
                roles: vec!["FHIR Data Reader".into()],
                groups: Vec::new(),
                expires_at,
                key_id: Some("kid-1".into()),
                confirmation: None,
            }),
            lifetime: Lifetime {
                expires_at,
                not_before: None,
            },
            key_set: [1; 32],
            config: [2; 32],
        }
    }

    #[test]
    fn the_digest_is_sha256_of_the_whole_token_and_is_not_printed() {
        let digest = TokenDigest::of("abc");
        // FIPS 180-2 appendix B.1.
        assert_eq!(
            digest.0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
        assert_ne!(TokenDigest::of("abc."), digest);
        assert_eq!(format!("{digest:?}"), "TokenDigest(..)");
    }

    #[test]
    fn a_typical_entry_weighs_about_what_it_costs() {
        // 1 365 bytes of RSS per entry measured for this shape (see ENTRY_OVERHEAD_BYTES); the
        // principal has grown by its (empty) memo of derived data since, and a used entry holds
        // its identity headers' values too (about 400 bytes for this one).
        let typical = verified("subject-00000000000000000001-abcdefghijklmn", now());
        let identity = Identity::heap_bytes(&typical.principal, ALLOCATION_OVERHEAD_BYTES);
        assert!((300..600).contains(&identity), "{identity}");
        let typical = weight(&typical);
        let without_identity = typical as usize - identity;
        assert!((1250..1500).contains(&without_identity), "{typical}");
        let mut many_groups = verified("alice", now());
        Arc::make_mut(&mut many_groups.principal).groups =
            (0..200).map(|i| format!("group-{i:04}")).collect();
        assert!(weight(&many_groups) > typical + 200 * 40);
    }

    #[tokio::test]
    async fn the_byte_bound_is_honoured() {
        let one = u64::from(weight(&verified("subject-0000", now() + 3600)));
        let cache = VerifiedCache::new(one * 100);
        for i in 0..1000 {
            let subject = format!("subject-{i:04}");
            cache
                .insert(
                    TokenDigest::of(&subject),
                    session(&subject, now() + 3600),
                    now(),
                )
                .await;
        }
        cache.run_pending_tasks().await;
        let stats = cache.stats();
        assert!(stats.weighted_bytes <= one * 100, "{stats:?}");
        assert!(stats.entries <= 100, "{stats:?}");
        assert!(stats.entries > 0, "{stats:?}");
    }

    #[tokio::test]
    async fn an_entry_lives_no_longer_than_its_token() {
        let cache = VerifiedCache::new(DEFAULT_CAPACITY_BYTES);
        let digest = TokenDigest::of("t");
        // exp one second ahead: gone after it, without any lookup in between.
        cache.insert(digest, session("a", now() + 1), now()).await;
        assert!(cache.get(&digest).await.is_some());
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.get(&digest).await.is_some() {
            assert!(Instant::now() < deadline, "still cached after exp");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Already past exp (within the skew the caller allows): not kept at all.
        let late = TokenDigest::of("late");
        cache.insert(late, session("b", now() - 10), now()).await;
        assert!(cache.get(&late).await.is_none());
    }

    #[tokio::test]
    async fn a_disabled_cache_keeps_and_counts_nothing() {
        let cache = VerifiedCache::new(0);
        let digest = TokenDigest::of("t");
        cache.insert(digest, session("a", now() + 60), now()).await;
        assert!(cache.get(&digest).await.is_none());
        cache.record(false);
        assert_eq!(cache.stats(), TokenCacheStats::default());
    }
}
