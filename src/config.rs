//! Configuration: the file (YAML or JSON, camelCase keys, SPEC §3) turned into a validated
//! [`Config`] that the rest of fhirguard codes against. The file is read once into a
//! [`ConfigFile`] (text + digest), and the same [`Config::from_file`] validates it at start-up, in
//! `fhirguard check` and `explain` (through [`Config::load`]), and on every reload.
//!
//! Two types describe the file (STYLE habit 2):
//!
//! - [`raw`] is the documented serde mirror of the file (`deny_unknown_fields`, a doc comment per
//!   field). It is the schema, and it is where the list of accepted keys of every object comes
//!   from.
//! - The types in this module are the validated result.
//!
//! Serde stops at the first error, but an operator must see *every* mistake at once, each with its
//! path (SPEC §3). So `validate` does not deserialize the raw structs directly: it parses the
//! text to a [`yaml_serde::Value`] and walks it in one pass — unknown keys are checked against the
//! key lists that serde derives for the raw structs ([`raw::keys_of`]), so the walker and the mirror
//! cannot drift apart — extracting each field with its own typed check and collecting every
//! [`ConfigError`]. A test asserts that every valid example also deserializes strictly into
//! [`raw::RawConfig`].
//!
//! The shared `authenticationConfiguration` rules use Azure's exact messages (reference §6.1,
//! §8 rule 1); they are listed in [`messages`].

pub mod raw;
pub mod roles;

mod arm;
mod audit;
mod authentication;
mod connections;
mod cors;
mod document;
mod file;
mod introspection;
mod schema;
mod secret;
mod sender;
mod shared;
mod validate;

pub use file::ConfigFile;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::actions::DataActions;
pub use audit::{Audit, AuditFormat, AuditServer};
pub use cors::{Allowed, Cors};
pub use introspection::Introspection;
pub use secret::SecretSource;
pub use sender::{
    CertificateHeader, ForwardedCertificate, Network, NonceSecret, NonceSettings, ReplayStore,
    SenderConstraints,
};
pub use shared::{FailureMode, LimitScope, LimitedClients, RateLimit, Redis, SharedState};

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `listen`, default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// `adminListen`, default `0.0.0.0:9090`.
    pub admin_listen: SocketAddr,
    /// `upstream` (a URL string or an object), required.
    pub upstream: Upstream,
    /// `tls: {certFile, keyFile}`; `None` serves plain HTTP.
    pub tls: Option<Tls>,
    /// `publicBaseUrl`: the FHIR base URL clients use (no trailing '/').
    pub public_base_url: Option<url::Url>,
    /// `allowHttpAuthorities`, default false.
    pub allow_http_authorities: bool,
    /// `compatibility: open|azure`, default open.
    pub compatibility: Compatibility,
    /// `clockSkew`, default 300 s (reference §8 rule 7).
    pub clock_skew: Duration,
    /// `audienceIgnoreTrailingSlash`, default false (reference §8 rule 8).
    pub audience_ignore_trailing_slash: bool,
    /// `smartLaunchPatientClaim`: the claim naming the launch context's patient; `None` = off
    /// (the compartment is `fhirUser`'s, as in Azure).
    pub smart_launch_patient_claim: Option<String>,
    /// `reportOnly`: the clients whose would-be denials are forwarded (issue 13).
    pub report_only: ReportOnly,
    /// `keySets: {...}`.
    pub key_sets: KeySets,
    /// `introspection: {...}`: the one provider whose opaque tokens are introspected (RFC 7662);
    /// `None` = every token must be a JWT.
    pub introspection: Option<Introspection>,
    /// `limits: {...}`.
    pub limits: Limits,
    /// `anonymousPaths`, default `/metadata`, `/.well-known/smart-configuration`, `/$versions`.
    pub anonymous_paths: Vec<String>,
    /// `roles: {...}`.
    pub roles: RoleMapping,
    /// `logging: {...}`.
    pub logging: Logging,
    /// `audit: {...}`: the audit line's format and an optional AuditEvent server.
    pub audit: Audit,
    /// `cors: {...}` (or the ARM `corsConfiguration`): browser apps (issue 19); `None` leaves
    /// CORS, preflights included, to the FHIR server.
    pub cors: Option<Cors>,
    /// `senderConstraints: {...}`: DPoP and certificate-bound tokens (issue 14).
    pub sender: SenderConstraints,
    /// `sharedState: {...}`: the store the replicas share (issue 22); `None`: every replica
    /// keeps its own state. Read at start-up (the connection is made once).
    pub shared_state: Option<SharedState>,
    /// `rateLimits: [...]`: per-client request rates, in order (a client takes the first that
    /// covers it); empty: none.
    pub rate_limits: Vec<RateLimit>,
    /// `shutdownGracePeriod`, default 30 s: how long in-flight requests may take to finish after
    /// SIGTERM / SIGINT. Read at start-up, like the listeners.
    pub shutdown_grace_period: Duration,
    /// `authenticationConfiguration` (the ARM object, an ARM resource or an ARM template).
    pub auth: Authentication,
    /// `workerThreads`: the runtime's worker threads; `None` (0 or absent) = one per CPU core.
    /// Read at start-up only.
    pub worker_threads: Option<NonZeroUsize>,
    /// SHA-256 of the text this configuration was parsed from ([`ConfigFile::digest`]), which
    /// is also how a reload tells a changed file from an unchanged one. The verified-token cache
    /// reuses a verification only under the fingerprint that judged it, so a reload with other
    /// rules verifies again. Changing fields of a parsed `Config` (tests) does not change it: give a
    /// changed config its own key store, or a new fingerprint.
    pub fingerprint: [u8; 32],
}

/// The FHIR server fhirguard forwards to.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// http or https; the path prefix is kept, without a trailing '/' (the root path stays "/",
    /// which a URL cannot drop; see [`Upstream::base_path`]).
    pub url: url::Url,
    /// `connectTimeout`, default 5 s.
    pub connect_timeout: Duration,
    /// `responseTimeout` (time to the response head), default 60 s.
    pub response_timeout: Duration,
    /// `caFile`: extra PEM CA bundle for an https upstream.
    pub ca_file: Option<PathBuf>,
    /// `http2`: speak h2 upstream, default false.
    pub http2: bool,
    /// `poolIdleTimeout`, default 4 s.
    pub pool_idle_timeout: Duration,
    /// `poolMaxIdlePerHost`, default 256.
    pub pool_max_idle_per_host: usize,
    /// `maxConnections`: requests in flight to the upstream at once (over HTTP/1.1, one
    /// connection each; over h2, streams); more wait for a free one, within `responseTimeout`.
    /// Default 256.
    pub max_connections: usize,
}

impl Config {
    /// Whether DPoP proofs are recorded in the shared store: `sharedState` is configured and
    /// `senderConstraints.dpop.replayStore` is not `local`.
    pub fn shared_replay(&self) -> bool {
        self.shared_state.is_some() && self.sender.replay_store != Some(ReplayStore::Local)
    }
}

impl Upstream {
    /// The path prefix to put before a FHIR path: `""` for a root upstream, `"/fhir"` otherwise.
    pub fn base_path(&self) -> &str {
        self.url.path().trim_end_matches('/')
    }
}

/// The listener's certificate (`tls`).
#[derive(Clone, Debug)]
pub struct Tls {
    /// `certFile`: PEM chain.
    pub cert_file: PathBuf,
    /// `keyFile`: PEM private key.
    pub key_file: PathBuf,
}

/// Key-set caching (SPEC §5).
#[derive(Clone, Debug)]
pub struct KeySets {
    /// `refreshInterval`: background refresh, default 1 h.
    pub refresh_interval: Duration,
    /// `minRefetchInterval`: an unknown `kid` refetches at most once per this, default 5 min.
    pub min_refetch_interval: Duration,
    /// `maxStale`: serve the last good key set this long while the IdP is down, default 24 h.
    pub max_stale: Duration,
    /// `fetchTimeout`, default 5 s.
    pub fetch_timeout: Duration,
    /// `retryInterval`: retry a provider that has no keys at all, default 10 s.
    pub retry_interval: Duration,
}

/// Request limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `headerReadTimeout`, default 10 s.
    pub header_read_timeout: Duration,
    /// `maxHeaderBytes`, default 65536.
    pub max_header_bytes: usize,
    /// `maxTokenBytes`, default 16384.
    pub max_token_bytes: usize,
    /// `maxBundleBytes`, default 10 MiB.
    pub max_bundle_bytes: usize,
    /// `bodyReadTimeout`: the whole of a buffered body must arrive within it, default 30 s.
    pub body_read_timeout: Duration,
    /// `maxBufferedBytes`: request-body bytes buffered at once across connections, default
    /// 128 MiB, never below `max_bundle_bytes`.
    pub max_buffered_bytes: usize,
}

/// How the primary authority's tokens are authorized: `roles` / `groups` claim values mapped to
/// data actions (SPEC §3, reference §3.1).
#[derive(Clone, Debug)]
pub struct RoleMapping {
    /// Role name lower-cased -> actions (built-in table merged with `roles.mappings`, or only
    /// `roles.mappings` when `roles.replaceBuiltIn: true`).
    pub roles: HashMap<String, DataActions>,
    /// `roles.groupsClaim`, e.g. "groups"; `None` = groups are not consulted.
    pub groups_claim: Option<String>,
    /// `roles.groups`: group name (as sent, e.g. sAMAccountName) lower-cased -> actions.
    pub groups: HashMap<String, DataActions>,
}

impl RoleMapping {
    /// The union of the actions of every matching role and every matching group. Names match
    /// case-insensitively, as the open-source server matches roles (reference §3.1).
    pub fn granted(&self, roles: &[String], groups: &[String]) -> DataActions {
        let by_role = roles
            .iter()
            .filter_map(|role| self.roles.get(&role.to_lowercase()));
        let by_group = groups
            .iter()
            .filter(|_| self.groups_claim.is_some())
            .filter_map(|group| self.groups.get(&group.to_lowercase()));
        by_role
            .chain(by_group)
            .fold(DataActions::NONE, |granted, actions| {
                granted.union(*actions)
            })
    }
}

/// `logging.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `json` (the default): one JSON object per line, for log collectors.
    Json,
    /// `text`: human-readable lines, for a terminal.
    Text,
}

/// `logging: {...}`.
#[derive(Clone, Debug)]
pub struct Logging {
    /// `format: json|text`, default json.
    pub format: LogFormat,
    /// `level`, default "info"; env `FHIRGUARD_LOG` overrides at runtime.
    pub level: String,
    /// `logQueryStrings`, default false (FHIR search parameters carry patient data).
    pub log_query: bool,
}

/// `compatibility`: `azure` adds the managed service's limits (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compatibility {
    /// Not set (the default): the shared rules and every data action of reference §3.1; a
    /// client may also be named by `client_id` or `cid`, and `fhirUser` is required only where
    /// the scopes need one.
    Open,
    /// `azure`: Azure's limits too: at most 2 smart identity providers, `allowedDataActions`
    /// only `Read`, the client only from `azp` or `appid`, an absolute `fhirUser` on every smart
    /// provider's token, and no `smartLaunchPatientClaim`.
    Azure,
}

/// `authenticationConfiguration` (reference §1.1).
#[derive(Clone, Debug)]
pub struct Authentication {
    /// `authority` + `audience`.
    pub primary: Option<PrimaryAuthority>,
    /// `smartProxyEnabled` (accepted and recorded; the relay is not implemented).
    pub smart_proxy_enabled: bool,
    /// `smartIdentityProviders`.
    pub smart_providers: Vec<SmartProvider>,
}

impl Authentication {
    /// Every configured provider with its authority as written: the primary first, then the
    /// smart providers in order (SPEC §4 step 4 selects among them by discovered issuer).
    pub fn providers(&self) -> impl Iterator<Item = (ProviderKind, &str)> {
        let primary = self
            .primary
            .iter()
            .map(|p| (ProviderKind::Primary, p.authority.as_str()));
        let smart = self
            .smart_providers
            .iter()
            .enumerate()
            .map(|(index, p)| (ProviderKind::Smart { index }, p.authority.as_str()));
        primary.chain(smart)
    }
}

/// `reportOnly` (issue 13): for which clients a request that authorization would refuse (403)
/// is forwarded anyway, counted and logged as a would-be denial — the safe way to roll
/// fhirguard out in front of a live FHIR server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReportOnly {
    /// Enforce for every client (the default).
    #[default]
    Off,
    /// Report only, for every client.
    All,
    /// Report only, for these client ids (as the token names its client: a smart application's
    /// `clientId`, or the `azp`/`appid`/… of a primary-authority token).
    Clients(Vec<String>),
}

impl ReportOnly {
    /// Whether a refusal of `client`'s request is reported instead of enforced.
    pub fn covers(&self, client: Option<&str>) -> bool {
        match self {
            ReportOnly::Off => false,
            ReportOnly::All => true,
            ReportOnly::Clients(ids) => client.is_some_and(|c| ids.iter().any(|id| id == c)),
        }
    }
}

/// Which configured identity provider issued a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// `authenticationConfiguration.authority`: authorized by the role mapping.
    Primary,
    /// `smartIdentityProviders[index]`: authorized by the application's `allowedDataActions`.
    Smart {
        /// Its position in `smartIdentityProviders`.
        index: usize,
    },
}

/// The primary (Entra ID) authority.
#[derive(Clone, Debug)]
pub struct PrimaryAuthority {
    /// As written; a trailing '/' is kept as written.
    pub authority: String,
    /// `authenticationConfiguration.audience`: what the token's `aud` must contain.
    pub audience: String,
}

/// One of `smartIdentityProviders`.
#[derive(Clone, Debug)]
pub struct SmartProvider {
    /// `authority`: a fully qualified https URL whose OpenID discovery names the issuer.
    pub authority: String,
    /// `applications`: the clients this provider's tokens may be issued to (1 to 25).
    pub applications: Vec<Application>,
}

/// One of a smart provider's `applications`.
#[derive(Clone, Debug)]
pub struct Application {
    /// `clientId`: compared exactly with the token's client claim (`azp`, else `appid`, …);
    /// unique across all providers.
    pub client_id: String,
    /// `audience`: what the token's `aud` must contain.
    pub audience: String,
    /// `allowedDataActions`: the most this application's tokens may do, narrowed further by
    /// their SMART scopes.
    pub allowed_data_actions: DataActions,
}

/// One configuration mistake. `path` uses the file's keys
/// (`authenticationConfiguration.smartIdentityProviders[1].applications[0].clientId`); it is
/// empty for the whole document (unreadable file, not YAML).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(path, message))]
pub struct ConfigError {
    /// Where in the file, as a key path; empty for the whole document.
    pub path: String,
    /// What is wrong: Azure's exact message for the rules it shares (see [`messages`]), else
    /// fhirguard's own.
    pub message: String,
}

impl ConfigError {
    /// A mistake at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn render(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// Every mistake in a configuration; never empty. Displays one `path: message` per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads a configuration file (YAML or JSON) once and validates what was read.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::from_file(&ConfigFile::read(path)?)
    }

    /// Validates a configuration read by [`ConfigFile::read`], reporting every error at once;
    /// the config's [`Config::fingerprint`] is the file's digest, taken from the same bytes.
    pub fn from_file(file: &ConfigFile) -> Result<Config, ConfigErrors> {
        validate::config(file.text(), file.digest())
    }

    /// Validates a configuration given as text (YAML or JSON), reporting every error at once.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        validate::config(text, file::digest(text.as_bytes()))
    }
}

/// The exact messages of Azure's configuration validation (reference §6.1), used for the rules
/// fhirguard shares with the managed service. Some errors append a hint after the message.
pub mod messages {
    /// More than 2 `smartIdentityProviders` under `compatibility: azure`.
    pub const MAX_PROVIDERS: &str = "The maximum number of SMART identity providers is 2.";
    /// A smart provider's `authority` is missing, blank, or not a fully qualified URL (https
    /// unless `allowHttpAuthorities`).
    pub const AUTHORITY_INVALID: &str =
        "One or more SMART identity provider authority values are null, empty, or invalid.";
    /// Two smart providers share an `authority`.
    pub const AUTHORITIES_UNIQUE: &str = "All SMART identity provider authorities must be unique.";
    /// More than 25 `applications` in one smart provider. Azure's troubleshooting page says 2;
    /// the newer configure page allows 25 (reference §1.1).
    pub const MAX_APPLICATIONS: &str =
        "The maximum number of SMART identity provider applications is 25.";
    /// A smart provider's `applications` is missing or empty, or holds a null.
    pub const APPLICATIONS_NULL: &str = "One or more SMART applications are null.";
    /// An application's `allowedDataActions` names a data action twice.
    pub const ACTIONS_DUPLICATE: &str =
        "One or more SMART application allowedDataActions contain duplicate elements.";
    /// An `allowedDataActions` value is not a data action (or, under `compatibility: azure`,
    /// not `Read`).
    pub const ACTIONS_INVALID: &str =
        "One or more SMART application allowedDataActions values are invalid.";
    /// An application's `allowedDataActions` is missing or empty.
    pub const ACTIONS_EMPTY: &str =
        "One or more SMART application allowedDataActions values are null or empty.";
    /// An application's `audience` is missing, blank, or not a string.
    pub const AUDIENCE_INVALID: &str =
        "One or more SMART application audience values are null, empty, or invalid.";
    /// Two applications share a `clientId`, within one provider or across providers.
    pub const CLIENT_IDS_UNIQUE: &str =
        "All SMART identity provider application client ids must be unique.";
    /// An application's `clientId` is missing, blank, or not a string.
    pub const CLIENT_ID_INVALID: &str =
        "One or more SMART application client id values are null, empty, or invalid.";
}

#[cfg(test)]
mod tests;
