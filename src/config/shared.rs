//! The `sharedState` and `rateLimits` blocks (issue 22, SPEC §6 "Many replicas"): the
//! Redis/Valkey store that replicas share (DPoP `jti` replay, introspection answers,
//! cluster-wide rate limits), what a request does when it is down (`failureMode`), and the
//! per-client request rates. Validated in the same one-pass, every-error walk as the rest of
//! the file (SPEC §3); the keys are [`RawSharedState`]'s, [`RawRedis`]'s and [`RawRateLimit`]'s.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::document::{choice, Errors, Node};
use super::schema::{keys_of, RawDuration};
use super::secret::secret_source;
use super::secret::SecretSource;

/// Default `redis.keyPrefix`: every key fhirguard writes starts with it.
const DEFAULT_KEY_PREFIX: &str = "fhirguard:";
/// Default `redis.timeout`: a store call that takes longer counts as the store being down. A
/// request waits at most this long for it, so it is short.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// The largest `requestsPerSecond` and `burst`: far above any one client's fair share of a FHIR
/// server, low enough that the GCRA's microsecond arithmetic cannot overflow.
const MAX_RATE: u64 = 1_000_000;

/// `sharedState`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSharedState {
    /// The Redis or Valkey server the replicas share. Required. Read at start-up: a reload does
    /// not reconnect.
    pub redis: RawRedis,
    /// What a request does when the store does not answer within `redis.timeout`: `open` (the
    /// default) falls back to this replica's own state (its replay cache, its own rate limiter),
    /// counted in `fhirguard_shared_state_fallbacks_total` and logged; `closed` refuses the
    /// request (503 with `Retry-After`).
    pub failure_mode: Option<RawFailureMode>,
    /// Keep introspection answers (RFC 7662) in the store, under a SHA-256 of the token (never
    /// the token), so one replica's answer serves them all. Default false.
    pub introspection: Option<bool>,
}

/// `sharedState.redis`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port[/db]` or `rediss://host:port[/db]` (TLS, through rustls). A user name
    /// may be given in the URL; a password may not (use `passwordFile` or `passwordEnv`).
    pub url: String,
    /// A PEM CA bundle that a `rediss://` server's certificate must chain to. Absent: the
    /// system's roots.
    pub ca_file: Option<String>,
    /// Every key fhirguard writes starts with this. Default `fhirguard:`.
    pub key_prefix: Option<String>,
    /// How long a request waits for one store call before the store counts as down. Default
    /// 250ms.
    pub timeout: Option<RawDuration>,
    /// A file holding the password (AUTH), read at start-up; trailing line breaks are dropped.
    pub password_file: Option<String>,
    /// An environment variable holding the password, read at start-up.
    pub password_env: Option<String>,
}

/// `sharedState.failureMode`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RawFailureMode {
    /// `open`: fall back to this replica's own state.
    Open,
    /// `closed`: refuse the request (503).
    Closed,
}

/// One entry of `rateLimits`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRateLimit {
    /// The client ids (as the token names its client) this limit applies to, or `all`. Each
    /// client gets its own allowance; a client takes the first entry that names it.
    pub client_ids: RawClients,
    /// The sustained rate each client may make requests at.
    pub requests_per_second: u64,
    /// How many requests a client may make at once after being idle. Default
    /// `requestsPerSecond`.
    pub burst: Option<u64>,
    /// `replica` (the default): each replica counts on its own; `cluster`: the replicas count
    /// together in `sharedState` (one store round trip per request).
    pub scope: Option<RawScope>,
}

/// `rateLimits[].clientIds`: a list, or `all`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawClients {
    /// A string, which must be `all`: every client.
    All(String),
    /// These client ids.
    Listed(Vec<String>),
}

/// `rateLimits[].scope`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RawScope {
    /// `replica`: each replica counts on its own.
    Replica,
    /// `cluster`: the replicas count together in `sharedState`.
    Cluster,
}

/// The validated `sharedState`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedState {
    /// `redis`: the store's address, TLS roots, key prefix, timeout and password.
    pub redis: Redis,
    /// `failureMode`, default `open`.
    pub failure_mode: FailureMode,
    /// `introspection`: share introspection answers.
    pub introspection: bool,
}

/// `sharedState.redis`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redis {
    /// `url`, without a password.
    pub url: url::Url,
    /// `caFile`.
    pub ca_file: Option<PathBuf>,
    /// `keyPrefix`.
    pub key_prefix: String,
    /// `timeout`.
    pub timeout: Duration,
    /// `passwordFile` or `passwordEnv`; `None`: no AUTH (or the URL's user name only).
    pub password: Option<SecretSource>,
}

impl Redis {
    /// Whether the connection is TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.scheme() == "rediss"
    }
}

/// `sharedState.failureMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureMode {
    /// The replica's own state stands in; counted and logged.
    Open,
    /// The request is refused (503).
    Closed,
}

impl FailureMode {
    /// As the file writes it.
    pub fn label(self) -> &'static str {
        match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// Which clients a rate limit covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitedClients {
    /// `clientIds: all`: every client, each with its own allowance.
    All,
    /// `clientIds: [...]`: these client ids, as the token names its client.
    Listed(Vec<String>),
}

/// Where a rate limit's allowance is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// `replica`: in this replica's memory, so N replicas allow up to N times the rate.
    Replica,
    /// `cluster`: in the `sharedState` store, one round trip per request.
    Cluster,
}

impl LimitScope {
    /// The `scope` label of the rate-limit metrics.
    pub fn label(self) -> &'static str {
        match self {
            LimitScope::Replica => "replica",
            LimitScope::Cluster => "cluster",
        }
    }
}

/// One validated `rateLimits` entry: a GCRA of `requests_per_second` with `burst`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// `clientIds`: whom it covers.
    pub clients: LimitedClients,
    /// `requestsPerSecond`: the sustained rate per client.
    pub requests_per_second: u64,
    /// `burst`: requests at once after idling; default `requestsPerSecond`.
    pub burst: u64,
    /// `scope`: where the allowance is counted; default `replica`.
    pub scope: LimitScope,
}

impl RateLimit {
    /// Whether this limit covers `client`.
    pub fn covers(&self, client: &str) -> bool {
        match &self.clients {
            LimitedClients::All => true,
            LimitedClients::Listed(ids) => ids.iter().any(|id| id == client),
        }
    }
}

/// Validates `sharedState`; `None` when absent or wrong (mistakes recorded in `errors`).
pub(super) fn shared_state(node: Option<Node<'_>>, errors: &mut Errors) -> Option<SharedState> {
    let object = node?.object(errors, keys_of::<RawSharedState>())?;
    let failure_mode = match choice(&object, "failureMode", keys_of::<RawFailureMode>(), errors) {
        Some("closed") => FailureMode::Closed,
        _ => FailureMode::Open,
    };
    let introspection = object.flag("introspection", errors);
    let redis = match object.get("redis") {
        Some(node) => redis(&node, errors),
        None => {
            errors.push(&object.key_path("redis"), "is required");
            None
        }
    };
    Some(SharedState {
        redis: redis?,
        failure_mode,
        introspection,
    })
}

fn redis(node: &Node<'_>, errors: &mut Errors) -> Option<Redis> {
    let object = node.object(errors, keys_of::<RawRedis>())?;
    let url = match object.get("url") {
        Some(node) => node.text(errors).and_then(|text| {
            redis_url(text)
                .map_err(|message| errors.push(&node.path, message))
                .ok()
        }),
        None => {
            errors.push(&object.key_path("url"), "is required");
            None
        }
    };
    let ca_file = object.get("caFile").and_then(|node| {
        let path = node.text(errors)?;
        if url.as_ref().is_some_and(|url| url.scheme() != "rediss") {
            errors.push(&node.path, "applies only to a rediss:// url");
        }
        Some(PathBuf::from(path))
    });
    let key_prefix = object
        .get("keyPrefix")
        .and_then(|node| node.string(errors))
        .unwrap_or(DEFAULT_KEY_PREFIX)
        .to_owned();
    let timeout = object.duration_or("timeout", DEFAULT_TIMEOUT, false, errors);
    let password = secret_source(&object, "passwordFile", "passwordEnv", errors);
    Some(Redis {
        url: url?,
        ca_file,
        key_prefix,
        timeout,
        password,
    })
}

/// A `redis://` or `rediss://` URL with a host and no password.
fn redis_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!("'{text}' must be a redis:// or rediss:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{text}' names no host"));
    }
    if url.password().is_some() {
        // Not echoed: the text holds the password.
        return Err(
            "must not hold a password (use passwordFile or passwordEnv: a secret never goes in \
             the configuration)"
                .to_owned(),
        );
    }
    Ok(url)
}

/// Validates `rateLimits`; a `cluster` limit needs `sharedState`.
pub(super) fn rate_limits(
    node: Option<Node<'_>>,
    shared: bool,
    errors: &mut Errors,
) -> Vec<RateLimit> {
    let Some(items) = node.and_then(|node| node.list(errors)) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| rate_limit(item, shared, errors))
        .collect()
}

fn rate_limit(node: &Node<'_>, shared: bool, errors: &mut Errors) -> Option<RateLimit> {
    let object = node.object(errors, keys_of::<RawRateLimit>())?;
    let clients = match object.get("clientIds") {
        Some(node) => limited_clients(&node, errors),
        None => {
            errors.push(
                &object.key_path("clientIds"),
                "is required (a list, or all)",
            );
            None
        }
    };
    let rate = |key: &str, errors: &mut Errors| {
        let node = object.get(key)?;
        let count = node.count(errors, 1)?;
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        if count > MAX_RATE {
            errors.push(&node.path, format!("must be at most {MAX_RATE}"));
            return None;
        }
        Some(count)
    };
    let requests_per_second = match object.get("requestsPerSecond") {
        Some(_) => rate("requestsPerSecond", errors),
        None => {
            errors.push(&object.key_path("requestsPerSecond"), "is required");
            None
        }
    };
    let burst = rate("burst", errors);
    let scope = match choice(&object, "scope", keys_of::<RawScope>(), errors) {
        Some("cluster") => {
            if !shared {
                errors.push(
                    &object.key_path("scope"),
                    "cluster needs sharedState (the replicas count together in its store)",
                );
            }
            LimitScope::Cluster
        }
        _ => LimitScope::Replica,
    };
    let requests_per_second = requests_per_second?;
    Some(RateLimit {
        clients: clients?,
        requests_per_second,
        burst: burst.unwrap_or(requests_per_second),
        scope,
    })
}

fn limited_clients(node: &Node<'_>, errors: &mut Errors) -> Option<LimitedClients> {
    if let yaml_serde::Value::String(text) = node.value {
        if text.trim().eq_ignore_ascii_case("all") {
            return Some(LimitedClients::All);
        }
        errors.push(
            &node.path,
            format!("'{text}': expected a list of client ids, or all"),
        );
        return None;
    }
    let items = node.list(errors)?;
    let ids: Vec<String> = items
        .iter()
        .filter_map(|item| item.text(errors).map(|id| id.trim().to_owned()))
        .collect();
    if ids.is_empty() {
        errors.push(&node.path, "must name at least one client id (or be all)");
        return None;
    }
    Some(LimitedClients::Listed(ids))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn config(extra: &str) -> Result<Config, String> {
        let text = format!(
            "upstream: http://fhir:8080\n\
             authenticationConfiguration:\n  authority: https://idp.example.org\n  audience: api\n\
             {extra}"
        );
        Config::parse(&text).map_err(|errors| errors.to_string())
    }

    #[test]
    fn a_valid_block_with_its_defaults() {
        let parsed = config(
            "sharedState:\n  redis: {url: \"redis://valkey:6379/2\"}\n\
             rateLimits:\n  - {clientIds: all, requestsPerSecond: 10}\n  \
             - {clientIds: [bulk], requestsPerSecond: 2, burst: 5, scope: cluster}\n",
        )
        .unwrap();
        let shared = parsed.shared_state.unwrap();
        assert_eq!(shared.redis.url.as_str(), "redis://valkey:6379/2");
        assert_eq!(shared.redis.key_prefix, "fhirguard:");
        assert_eq!(shared.redis.timeout, DEFAULT_TIMEOUT);
        assert_eq!(shared.redis.password, None);
        assert_eq!(shared.failure_mode, FailureMode::Open);
        assert!(!shared.introspection);
        assert_eq!(
            parsed.rate_limits,
            [
                RateLimit {
                    clients: LimitedClients::All,
                    requests_per_second: 10,
                    burst: 10,
                    scope: LimitScope::Replica,
                },
                RateLimit {
                    clients: LimitedClients::Listed(vec!["bulk".into()]),
                    requests_per_second: 2,
                    burst: 5,
                    scope: LimitScope::Cluster,
                },
            ]
        );
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_its_path() {
        let error = config(
            "sharedState:\n  failureMode: ajar\n  redis:\n    url: \"redis://:hunter2@valkey\"\n    \
             passwordFile: /p\n    passwordEnv: P\n    timeout: 0s\n    caFile: /ca.pem\n    \
             user: x\n\
             rateLimits:\n  - {clientIds: some, requestsPerSecond: 0, scope: planet}\n  \
             - {clientIds: [], burst: 2000000}\n",
        )
        .unwrap_err();
        let expected = [
            "sharedState.failureMode: unknown value 'ajar'; expected one of: open, closed",
            "sharedState.redis.user: unknown key 'user'",
            "sharedState.redis.url: must not hold a password",
            "sharedState.redis.timeout: must be greater than zero",
            "sharedState.redis.passwordEnv: give either passwordFile or passwordEnv, not both",
            "rateLimits[0].clientIds: 'some': expected a list of client ids, or all",
            "rateLimits[0].requestsPerSecond: must be at least 1",
            "rateLimits[0].scope: unknown value 'planet'; expected one of: replica, cluster",
            "rateLimits[1].clientIds: must name at least one client id (or be all)",
            "rateLimits[1].requestsPerSecond: is required",
            "rateLimits[1].burst: must be at most 1000000",
        ];
        for line in expected {
            assert!(error.contains(line), "missing {line:?} in:\n{error}");
        }
        assert!(!error.contains("hunter2"), "{error}");
        let error = config(
            "sharedState:\n  redis: {url: \"redis://valkey\", caFile: /ca.pem}\n\
             rateLimits:\n  - {clientIds: all, requestsPerSecond: 1}\n",
        )
        .unwrap_err();
        assert!(
            error.contains("sharedState.redis.caFile: applies only to a rediss:// url"),
            "{error}"
        );
        let error =
            config("rateLimits:\n  - {clientIds: all, requestsPerSecond: 1, scope: cluster}\n")
                .unwrap_err();
        assert!(
            error.contains("rateLimits[0].scope: cluster needs sharedState"),
            "{error}"
        );
        let error = config("sharedState: {redis: {url: \"http://valkey\"}}\n").unwrap_err();
        assert!(
            error.contains("must be a redis:// or rediss:// URL"),
            "{error}"
        );
        let error = config("sharedState: {failureMode: open}\n").unwrap_err();
        assert!(error.contains("sharedState.redis: is required"), "{error}");
    }
}
