//! The raw configuration file: a serde mirror of every key fhirguard accepts, camelCase, with
//! `deny_unknown_fields` and a doc comment per field (STYLE habit 2). This is the schema.
//!
//! Validation does not deserialize these structs directly — serde would stop at the first error
//! — but walks the parsed document with the key lists serde derives from them ([`keys_of`]), so
//! the accepted keys are defined here and only here. Strict deserialization into [`RawConfig`]
//! must succeed for every valid file; a test keeps the two paths in agreement.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::schema::{keys_of, RawDuration};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    /// Proxy listener address, `host:port`. Default `0.0.0.0:8080`.
    pub listen: Option<String>,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`; never proxied). Default `0.0.0.0:9090`.
    pub admin_listen: Option<String>,
    /// The FHIR server's base URL, or an object with the URL and connection settings. Required.
    pub upstream: RawUpstream,
    /// Serve TLS on `listen` with this certificate. Absent: plain HTTP.
    pub tls: Option<RawTls>,
    /// The FHIR base URL clients use (for `fhirUser` checks and generated documents).
    pub public_base_url: Option<String>,
    /// Permit `http://` authorities (local testing only). Default false.
    pub allow_http_authorities: Option<bool>,
    /// `open` (default) or `azure` (the managed service's stricter limits).
    pub compatibility: Option<RawCompatibility>,
    /// Tolerance for `exp` / `nbf`. Default 300 s.
    pub clock_skew: Option<RawDuration>,
    /// Accept `aud` that differs from the audience by one trailing '/'. Default false.
    pub audience_ignore_trailing_slash: Option<bool>,
    /// The access-token claim holding the SMART launch context's patient id (`patient`, as
    /// Keycloak's and Okta's SMART set-ups and most EHRs send it). When set and present, `patient/`
    /// scopes are confined to that patient's compartment instead of `fhirUser`'s. Absent: off.
    /// Not with `compatibility: azure`.
    pub smart_launch_patient_claim: Option<String>,
    /// Report-only mode (issue 13): `true` for every client, or a list of client ids. For those
    /// clients a request that authorization would refuse (403) is forwarded anyway and counted
    /// and logged as a would-be denial. Authentication, request hygiene, limits and SMART's
    /// compartment checks are never relaxed. Absent or `false`: enforce.
    pub report_only: Option<RawReportOnly>,
    /// Key-set caching.
    pub key_sets: Option<RawKeySets>,
    /// Token introspection (RFC 7662) of opaque access tokens by one configured provider.
    pub introspection: Option<RawIntrospection>,
    /// Request limits.
    pub limits: Option<RawLimits>,
    /// Paths (relative to the FHIR base) served without a token, GET/HEAD only.
    pub anonymous_paths: Option<Vec<String>>,
    /// Role and group mapping for the primary authority's tokens.
    pub roles: Option<RawRoles>,
    /// Log output.
    pub logging: Option<RawLogging>,
    /// Audit output: the audit line's format, and an optional FHIR server for AuditEvents.
    pub audit: Option<RawAudit>,
    /// DPoP (RFC 9449) and certificate-bound tokens (RFC 8705): which clients must use them,
    /// the replay cache, client certificates on the TLS listener or from a trusted proxy.
    pub sender_constraints: Option<super::sender::RawSenderConstraints>,
    /// Browser apps (CORS), in the shape of Azure's `corsConfiguration` (issue 19). Present,
    /// fhirguard answers every CORS preflight itself and puts the CORS headers on every answer to
    /// an allowed origin, its own refusals included; absent, preflights go to the FHIR server.
    /// An ARM resource or template pasted as `authenticationConfiguration` may carry it as
    /// `properties.corsConfiguration` instead.
    pub cors: Option<RawCors>,
    /// How long in-flight requests may take to finish after SIGTERM / SIGINT; the listeners stop
    /// accepting at once. Default 30 s. Read at start-up (a reload does not change it).
    pub shutdown_grace_period: Option<RawDuration>,
    /// State the replicas share (issue 22): a Redis/Valkey store for DPoP `jti` replay,
    /// introspection answers and cluster-wide rate limits, and what happens when it is down.
    pub shared_state: Option<super::shared::RawSharedState>,
    /// Per-client request rates (issue 22): an exceeded limit is answered 429 with
    /// `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` headers. Reloadable.
    pub rate_limits: Option<Vec<super::shared::RawRateLimit>>,
    /// Runtime worker threads; 0 or absent = one per CPU core. Read at start-up only.
    pub worker_threads: Option<u64>,
    /// The Azure `authenticationConfiguration`: the ARM object itself, an ARM resource holding
    /// `properties.authenticationConfiguration`, or an ARM template whose `resources` hold one.
    pub authentication_configuration: RawAuthenticationSource,
}

/// `cors` (Azure's `corsConfiguration`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins (`scheme://host[:port]`) allowed to call, or `["*"]` for any. Empty or
    /// absent: no origin (fhirguard still answers preflights, refusing them).
    pub origins: Option<Vec<String>>,
    /// Request headers a browser may send (`Authorization`, `DPoP`, `Content-Type`, `Prefer`,
    /// `If-Match`, `If-None-Exist`, …), or `["*"]` for any.
    pub headers: Option<Vec<String>>,
    /// Methods a browser may use, or `["*"]` for any.
    pub methods: Option<Vec<String>>,
    /// How long a browser may cache a preflight's answer, in seconds (0–99999). Default 600.
    pub max_age: Option<u64>,
    /// Allow credentialed requests (`Access-Control-Allow-Credentials: true`); not with
    /// `origins: ["*"]`. Default false.
    pub allow_credentials: Option<bool>,
}

/// `reportOnly`: every client, or the listed client ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawReportOnly {
    /// `reportOnly: true` (every client) or `false` (enforce for all).
    All(bool),
    /// `reportOnly: [clientId, …]`: only these clients.
    Clients(Vec<String>),
}

/// `upstream`: a URL string or an object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUpstream {
    /// Just the base URL.
    Url(String),
    /// The base URL and connection settings.
    Object(RawUpstreamObject),
}

/// `upstream` as an object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawUpstreamObject {
    /// The FHIR base URL (http or https, no query or fragment). Required.
    pub url: String,
    /// TCP (+ TLS) connect timeout. Default 5 s.
    pub connect_timeout: Option<RawDuration>,
    /// Time until the response head arrives. Default 60 s.
    pub response_timeout: Option<RawDuration>,
    /// Extra PEM CA bundle trusted for an https upstream.
    pub ca_file: Option<String>,
    /// Speak HTTP/2 to the upstream. Default false.
    pub http2: Option<bool>,
    /// How long an idle pooled connection is kept (less when the upstream announces a shorter
    /// `Keep-Alive: timeout`). Default 4 s, below the FHIR servers' own idle timeouts.
    pub pool_idle_timeout: Option<RawDuration>,
    /// Idle connections kept per upstream host. Default 256.
    pub pool_max_idle_per_host: Option<u64>,
    /// Requests in flight to the upstream at once (HTTP/1.1: one connection each). Default 256.
    pub max_connections: Option<u64>,
}

/// `tls`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain. Required.
    pub cert_file: String,
    /// PEM private key. Required.
    pub key_file: String,
}

/// `compatibility`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawCompatibility {
    /// The open-source server's data actions (reference §3.1).
    Open,
    /// Azure's limits: at most 2 smart providers, `allowedDataActions` only `Read`.
    Azure,
}

/// `keySets`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawKeySets {
    /// Background refresh of every key set. Default 1 h.
    pub refresh_interval: Option<RawDuration>,
    /// An unknown `kid` refetches a key set at most once per this. Default 5 min.
    pub min_refetch_interval: Option<RawDuration>,
    /// Serve the last good key set this long while the identity provider is down. Default 24 h.
    pub max_stale: Option<RawDuration>,
    /// Timeout of one discovery or key-set fetch. Default 5 s.
    pub fetch_timeout: Option<RawDuration>,
    /// Retry interval for a provider that has no keys at all. Default 10 s.
    pub retry_interval: Option<RawDuration>,
}

/// `introspection`: opaque access tokens (not a JWT) are sent to this provider's introspection
/// endpoint (RFC 7662 §2) and judged by its answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawIntrospection {
    /// The provider that issues opaque tokens: a configured authority, exactly as written in
    /// `authenticationConfiguration`. Required.
    pub authority: String,
    /// The introspection endpoint. Default: the provider's discovered `introspection_endpoint`.
    pub endpoint: Option<String>,
    /// fhirguard's client id at the provider (client_secret_basic, RFC 7662 §2.1). Required.
    pub client_id: String,
    /// A file holding the client secret (trailing newline ignored). Exactly one of this and
    /// `clientSecretEnv`; the secret itself never goes in the configuration.
    pub client_secret_file: Option<String>,
    /// The environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// How long an active answer is kept, at most (never past the token's `exp`). Default 5 min.
    pub cache_ttl: Option<RawDuration>,
    /// How long an inactive answer is kept, to absorb floods of a revoked or made-up token;
    /// 0 = not kept. Default 10 s.
    pub inactive_cache_ttl: Option<RawDuration>,
    /// Deadline of one introspection request, body included, waiting for a free slot
    /// (`maxConcurrent`) included. Default 5 s.
    pub timeout: Option<RawDuration>,
    /// Introspection requests in flight at once, at most; more wait for a slot within `timeout`,
    /// then get 503. Bounds the load fhirguard can put on the authorization server (a flood of
    /// made-up tokens is one introspection each). Default 64.
    pub max_concurrent: Option<u64>,
}

/// `limits`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLimits {
    /// Time allowed to read a request's headers. Default 10 s.
    pub header_read_timeout: Option<RawDuration>,
    /// Largest request header section. Default 65536.
    pub max_header_bytes: Option<u64>,
    /// Largest bearer token. Default 16384.
    pub max_token_bytes: Option<u64>,
    /// Largest batch/transaction bundle buffered for inspection (413 beyond). Default 10 MiB.
    pub max_bundle_bytes: Option<u64>,
    /// Time allowed to read a body fhirguard buffers, from its first byte to its last (408
    /// beyond). Default 30 s.
    pub body_read_timeout: Option<RawDuration>,
    /// Bytes of request bodies buffered at once across all connections (503 with Retry-After
    /// beyond). At least `maxBundleBytes`. Default 128 MiB.
    pub max_buffered_bytes: Option<u64>,
}

/// `roles`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRoles {
    /// Use only `mappings`, not the built-in role table. Default false.
    pub replace_built_in: Option<bool>,
    /// Role name (case-insensitive) -> data actions; overrides a built-in role of the same name.
    pub mappings: Option<BTreeMap<String, Vec<String>>>,
    /// The claim holding group names. Default `groups` when `groups` is set, else unused.
    pub groups_claim: Option<String>,
    /// Group name (case-insensitive) -> data actions.
    pub groups: Option<BTreeMap<String, Vec<String>>>,
}

/// `logging`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLogging {
    /// `json` (default) or `text`.
    pub format: Option<RawLogFormat>,
    /// Level or filter directives. Default `info`; env `FHIRGUARD_LOG` overrides.
    pub level: Option<String>,
    /// Put query strings in logs (they carry patient data). Default false.
    pub log_query_strings: Option<bool>,
}

/// `logging.format`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// `audit`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAudit {
    /// `json` (default: the audit line as it always was) or `fhir` (one R4 `AuditEvent` per line).
    pub format: Option<RawAuditFormat>,
    /// The identifier of this fhirguard in `AuditEvent.source.observer`. Default: the host name.
    pub observer: Option<String>,
    /// A FHIR base URL (http or https) that AuditEvents are also sent to, in batch bundles.
    pub fhir_server: Option<String>,
    /// Events held while the FHIR server is slow or down; more are dropped and counted. Default
    /// 10000. Only with `fhirServer`.
    pub queue_capacity: Option<u64>,
    /// Events per batch bundle, at most `queueCapacity`. Default 100. Only with `fhirServer`.
    pub batch_size: Option<u64>,
    /// A batch is sent at the latest this long after its first event. Default 2 s. Only with
    /// `fhirServer`.
    pub flush_interval: Option<RawDuration>,
    /// Deadline of one POST of a batch, body included. Default 10 s. Only with `fhirServer`.
    pub send_timeout: Option<RawDuration>,
}

/// `audit.format`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAuditFormat {
    /// The `fhirguard::audit` log line with its fields.
    Json,
    /// One FHIR R4 `AuditEvent` (IHE BALP shape) per line.
    Fhir,
}

/// Where `authenticationConfiguration` comes from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawAuthenticationSource {
    /// An ARM template: exactly one of `resources` holds `properties.authenticationConfiguration`.
    Template(RawArmTemplate),
    /// An ARM resource (`Microsoft.HealthcareApis/workspaces/fhirservices`).
    Resource(RawArmResource),
    /// The ARM `authenticationConfiguration` object itself.
    Direct(RawAuthenticationConfiguration),
}

/// An ARM template. Its other keys (`$schema`, `parameters`, …) are Azure's and are ignored.
#[derive(Debug, Deserialize)]
pub struct RawArmTemplate {
    /// The template's resources (child `resources` are searched too).
    pub resources: Vec<yaml_serde::Value>,
}

/// An ARM resource. Its other keys (`type`, `apiVersion`, `name`, `location`, `kind`,
/// `identity`, `tags`, `dependsOn`) are Azure's and are ignored.
#[derive(Debug, Deserialize)]
pub struct RawArmResource {
    /// The resource's properties.
    pub properties: RawArmProperties,
}

/// An ARM resource's `properties`; keys other than `authenticationConfiguration` and
/// `corsConfiguration` are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawArmProperties {
    /// The object fhirguard reads.
    pub authentication_configuration: RawAuthenticationConfiguration,
    /// The service's CORS settings, read as top-level `cors` is (not with it).
    pub cors_configuration: Option<RawCors>,
}

/// The ARM `authenticationConfiguration` object (reference §1.1). Unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAuthenticationConfiguration {
    /// Primary (Entra ID) authority, a fully qualified https URL. Requires `audience`.
    pub authority: Option<String>,
    /// The `aud` the primary authority's tokens must carry. Requires `authority`.
    pub audience: Option<String>,
    /// Azure's legacy SMART proxy relay; recorded, not implemented. Default false.
    pub smart_proxy_enabled: Option<bool>,
    /// Further OpenID Connect providers (Azure: at most 2).
    pub smart_identity_providers: Option<Vec<RawSmartIdentityProvider>>,
}

/// One of `smartIdentityProviders`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSmartIdentityProvider {
    /// The provider's authority; `/.well-known/openid-configuration` is appended to discover it.
    pub authority: String,
    /// 1..25 applications.
    pub applications: Vec<RawApplication>,
}

/// One of a provider's `applications`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawApplication {
    /// Matched exactly against the token's `azp` (else `appid`).
    pub client_id: String,
    /// Matched exactly against the token's `aud`.
    pub audience: String,
    /// What the application's tokens may do (reference §3.1; Azure: only `Read`).
    pub allowed_data_actions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_serde_derive() {
        assert_eq!(
            keys_of::<RawApplication>(),
            ["clientId", "audience", "allowedDataActions"]
        );
        assert_eq!(keys_of::<RawCompatibility>(), ["open", "azure"]);
        assert!(keys_of::<RawConfig>().contains(&"authenticationConfiguration"));
    }
}
