//! Raw document → [`Config`] in one pass that collects every error with its path (SPEC §3,
//! STYLE habit 2). Each section takes its default when absent; a section with mistakes records
//! them and falls back to its default so the walk can go on and find the rest.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use yaml_serde::Value;

use super::document::{base_url, choice, without_trailing_slash, Errors, Node, Object};
use super::raw::{
    keys_of, RawCompatibility, RawConfig, RawKeySets, RawLimits, RawLogFormat, RawLogging, RawTls,
    RawUpstreamObject,
};
use super::{
    authentication, roles, Compatibility, Config, ConfigError, ConfigErrors, KeySets, Limits,
    LogFormat, Logging, ReportOnly, Tls, Upstream,
};

/// Defaults of the top-level keys (see `config/*.yaml`).
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Kubernetes' default `terminationGracePeriodSeconds` is also 30 s, so a pod must give more
/// (the manifests in deploy/ give 40 s) for the drain to finish before SIGKILL.
const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// More worker threads than this is a typo, not a tuning.
const MAX_WORKER_THREADS: usize = 1024;
/// Reference §8 rule 22 and SPEC §4 step 1.
const DEFAULT_ANONYMOUS_PATHS: [&str; 3] = [
    "/metadata",
    "/.well-known/smart-configuration",
    "/$versions",
];

/// Parses and validates a whole configuration. `fingerprint` is the digest of `text`, taken by
/// the caller from the bytes it read (see [`super::ConfigFile`]).
pub(super) fn config(text: &str, fingerprint: [u8; 32]) -> Result<Config, ConfigErrors> {
    let document = parse_document(text).map_err(|error| ConfigErrors(vec![error]))?;
    let mut errors = Errors::default();
    let config = walk(&document, &mut errors);
    match config {
        Some(mut config) if errors.0.is_empty() => {
            config.fingerprint = fingerprint;
            Ok(config)
        }
        _ => {
            if errors.0.is_empty() {
                errors.push("", "invalid configuration");
            }
            Err(ConfigErrors(errors.0))
        }
    }
}

/// YAML, or JSON (tried first when the text looks like JSON, for its clearer errors; JSON is
/// also valid YAML, so YAML is the fallback).
fn parse_document(text: &str) -> Result<Value, ConfigError> {
    let mut json_error = None;
    if text.trim_start().starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(json) => {
                return yaml_serde::to_value(json)
                    .map_err(|e| ConfigError::new("", format!("not a valid document: {e}")))
            }
            Err(error) => json_error = Some(error),
        }
    }
    yaml_serde::from_str::<Value>(text).map_err(|yaml_error| {
        let message = match json_error {
            Some(json_error) => format!("not valid JSON: {json_error}"),
            None => format!("not valid YAML: {yaml_error}"),
        };
        ConfigError::new("", message)
    })
}

fn walk(document: &Value, errors: &mut Errors) -> Option<Config> {
    if document.is_null() {
        errors.push(
            "",
            "the configuration is empty; upstream and authenticationConfiguration are required",
        );
        return None;
    }
    let root = Node::new("", document).object(errors, keys_of::<RawConfig>())?;

    let listen = socket_address(&root, "listen", DEFAULT_LISTEN, errors);
    let admin_listen = socket_address(&root, "adminListen", DEFAULT_ADMIN_LISTEN, errors);
    if listen == admin_listen && listen.port() != 0 {
        errors.push("adminListen", format!("must differ from listen ({listen})"));
    }
    let upstream = upstream(&root, errors);
    let allow_http_authorities = flag(&root, "allowHttpAuthorities", errors);
    let compatibility = compatibility(&root, errors);
    let worker_threads = worker_threads(&root, errors);
    let auth = match root.get("authenticationConfiguration") {
        Some(node) => {
            authentication::authentication(&node, compatibility, allow_http_authorities, errors)
        }
        None => {
            errors.push("authenticationConfiguration", "is required");
            None
        }
    };
    let config = Config {
        listen,
        admin_listen,
        upstream: upstream?,
        tls: root.get("tls").and_then(|node| tls(&node, errors)),
        public_base_url: root.get("publicBaseUrl").and_then(|node| {
            let text = node.text(errors)?;
            base_url(text)
                .map(without_trailing_slash)
                .map_err(|message| errors.push(&node.path, message))
                .ok()
        }),
        allow_http_authorities,
        compatibility,
        clock_skew: duration(&root, "clockSkew", DEFAULT_CLOCK_SKEW, true, errors),
        audience_ignore_trailing_slash: flag(&root, "audienceIgnoreTrailingSlash", errors),
        smart_launch_patient_claim: launch_patient_claim(&root, compatibility, errors),
        report_only: report_only(&root, errors),
        key_sets: key_sets(root.get("keySets"), errors),
        introspection: super::introspection::introspection(
            root.get("introspection"),
            auth.as_ref(),
            allow_http_authorities,
            errors,
        ),
        limits: limits(root.get("limits"), errors),
        anonymous_paths: anonymous_paths(&root, errors),
        roles: roles::role_mapping(root.get("roles"), errors),
        logging: logging(root.get("logging"), errors),
        audit: super::audit::audit(root.get("audit"), errors),
        cors: cors(&root, errors),
        sender: super::sender::sender_constraints(
            root.get("senderConstraints"),
            root.has("tls"),
            errors,
        ),
        shared_state: super::shared::shared_state(root.get("sharedState"), errors),
        rate_limits: super::shared::rate_limits(
            root.get("rateLimits"),
            root.has("sharedState"),
            errors,
        ),
        // Zero is allowed: stop at once, cutting requests in flight.
        shutdown_grace_period: duration(
            &root,
            "shutdownGracePeriod",
            DEFAULT_SHUTDOWN_GRACE_PERIOD,
            true,
            errors,
        ),
        auth: auth?,
        worker_threads,
        fingerprint: [0; 32],
    };
    if config.sender.replay_store == Some(super::ReplayStore::Shared) && !root.has("sharedState") {
        errors.push(
            "senderConstraints.dpop.replayStore",
            "shared needs sharedState (the store the replicas record proofs in)",
        );
    }
    Some(config)
}

/// `cors`, or the ARM `properties.corsConfiguration` beside `authenticationConfiguration`; not
/// both, which could disagree.
fn cors(root: &Object<'_>, errors: &mut Errors) -> Option<super::Cors> {
    let arm = root
        .get("authenticationConfiguration")
        .and_then(|node| super::arm::cors_configuration(&node));
    match (root.get("cors"), arm) {
        (Some(_), Some(arm)) => {
            errors.push(
                &arm.path,
                "is given as well as the top-level cors; keep one of them",
            );
            None
        }
        (own, arm) => super::cors::cors(own.or(arm), errors),
    }
}

fn socket_address(
    object: &Object<'_>,
    key: &str,
    default: &str,
    errors: &mut Errors,
) -> SocketAddr {
    let fallback = default
        .parse()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let Some(node) = object.get(key) else {
        return fallback;
    };
    let Some(text) = node.string(errors) else {
        return fallback;
    };
    text.parse().unwrap_or_else(|_| {
        errors.push(
            &node.path,
            format!("'{text}' is not a socket address (ip:port, e.g. {default})"),
        );
        fallback
    })
}

fn flag(object: &Object<'_>, key: &str, errors: &mut Errors) -> bool {
    object
        .get(key)
        .and_then(|node| node.bool(errors))
        .unwrap_or(false)
}

fn duration(
    object: &Object<'_>,
    key: &str,
    default: Duration,
    zero_allowed: bool,
    errors: &mut Errors,
) -> Duration {
    object
        .get(key)
        .and_then(|node| node.duration(errors, zero_allowed))
        .unwrap_or(default)
}

fn count(object: &Object<'_>, key: &str, default: usize, min: u64, errors: &mut Errors) -> usize {
    object
        .get(key)
        .and_then(|node| node.count(errors, min))
        .unwrap_or(default)
}

/// `smartLaunchPatientClaim`: a claim name. Azure confines `patient/` scopes to `fhirUser` and
/// never to a launch-context claim (reference §4.5), so `compatibility: azure` refuses it.
fn launch_patient_claim(
    root: &Object<'_>,
    compatibility: Compatibility,
    errors: &mut Errors,
) -> Option<String> {
    let node = root.get("smartLaunchPatientClaim")?;
    let name = node.text(errors)?;
    if compatibility == Compatibility::Azure {
        errors.push(
            &node.path,
            "is not available with compatibility: azure, which confines patient/ scopes to \
             fhirUser's compartment",
        );
        return None;
    }
    Some(name.trim().to_owned())
}

/// `reportOnly`: `true`/`false`, or a non-empty list of client ids.
fn report_only(root: &Object<'_>, errors: &mut Errors) -> ReportOnly {
    let Some(node) = root.get("reportOnly") else {
        return ReportOnly::Off;
    };
    if let yaml_serde::Value::Bool(all) = node.value {
        return if *all {
            ReportOnly::All
        } else {
            ReportOnly::Off
        };
    }
    let Some(items) = node.list(errors) else {
        return ReportOnly::Off;
    };
    if items.is_empty() {
        errors.push(
            &node.path,
            "lists no client id; use false to enforce for every client",
        );
    }
    let ids = items
        .iter()
        .filter_map(|item| item.text(errors).map(|id| id.trim().to_owned()))
        .collect();
    ReportOnly::Clients(ids)
}

fn compatibility(root: &Object<'_>, errors: &mut Errors) -> Compatibility {
    match choice(root, "compatibility", keys_of::<RawCompatibility>(), errors) {
        Some("azure") => Compatibility::Azure,
        _ => Compatibility::Open,
    }
}

/// `upstream`: a URL string, or `{url, connectTimeout, …}`. The URL's path loses its trailing '/'.
fn upstream(root: &Object<'_>, errors: &mut Errors) -> Option<Upstream> {
    let Some(node) = root.get("upstream") else {
        errors.push("upstream", "is required (the FHIR server's base URL)");
        return None;
    };
    let (url_node, settings) = match node.value {
        Value::Mapping(_) => {
            let object = node.object(errors, keys_of::<RawUpstreamObject>())?;
            let Some(url_node) = object.get("url") else {
                errors.push(
                    &object.key_path("url"),
                    "is required (the FHIR server's base URL)",
                );
                return None;
            };
            (url_node, Some(object))
        }
        _ => (node, None),
    };
    let text = url_node.text(errors)?;
    let url = base_url(text)
        .map(without_trailing_slash)
        .map_err(|message| errors.push(&url_node.path, message))
        .ok();
    let mut upstream = Upstream {
        url: url?,
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(60),
        ca_file: None,
        http2: false,
        // Below the idle keep-alive timeouts FHIR servers default to (README, "Upstream
        // connections"): Node's and Apache httpd's 5 s are the shortest.
        pool_idle_timeout: Duration::from_secs(4),
        pool_max_idle_per_host: 256,
        max_connections: 256,
    };
    if let Some(object) = settings {
        upstream.connect_timeout = duration(
            &object,
            "connectTimeout",
            upstream.connect_timeout,
            false,
            errors,
        );
        upstream.response_timeout = duration(
            &object,
            "responseTimeout",
            upstream.response_timeout,
            false,
            errors,
        );
        upstream.pool_idle_timeout = duration(
            &object,
            "poolIdleTimeout",
            upstream.pool_idle_timeout,
            false,
            errors,
        );
        upstream.pool_max_idle_per_host = count(
            &object,
            "poolMaxIdlePerHost",
            upstream.pool_max_idle_per_host,
            0,
            errors,
        );
        upstream.max_connections = count(
            &object,
            "maxConnections",
            upstream.max_connections,
            1,
            errors,
        );
        upstream.http2 = flag(&object, "http2", errors);
        if let Some(ca) = object.get("caFile") {
            if upstream.url.scheme() != "https" {
                errors.push(&ca.path, "applies only to an https upstream");
            }
            upstream.ca_file = ca.text(errors).map(PathBuf::from);
        }
    }
    Some(upstream)
}

/// `workerThreads`: 0 or absent means one per CPU core (tokio's default).
fn worker_threads(root: &Object<'_>, errors: &mut Errors) -> Option<NonZeroUsize> {
    let node = root.get("workerThreads")?;
    let threads = node.count(errors, 0)?;
    if threads > MAX_WORKER_THREADS {
        errors.push(
            &node.path,
            format!("must be at most {MAX_WORKER_THREADS} (0 = one per CPU core)"),
        );
        return None;
    }
    NonZeroUsize::new(threads)
}

fn tls(node: &Node<'_>, errors: &mut Errors) -> Option<Tls> {
    let object = node.object(errors, keys_of::<RawTls>())?;
    let mut file = |key: &str| {
        let Some(node) = object.get(key) else {
            errors.push(&object.key_path(key), "is required");
            return None;
        };
        node.text(errors).map(PathBuf::from)
    };
    let cert_file = file("certFile");
    let key_file = file("keyFile");
    Some(Tls {
        cert_file: cert_file?,
        key_file: key_file?,
    })
}

fn key_sets(node: Option<Node<'_>>, errors: &mut Errors) -> KeySets {
    let defaults = KeySets {
        refresh_interval: Duration::from_secs(3600),
        min_refetch_interval: Duration::from_secs(300),
        max_stale: Duration::from_secs(24 * 3600),
        fetch_timeout: Duration::from_secs(5),
        retry_interval: Duration::from_secs(10),
    };
    let Some(object) = node.and_then(|node| node.object(errors, keys_of::<RawKeySets>())) else {
        return defaults;
    };
    let mut get = |key, default| duration(&object, key, default, false, errors);
    KeySets {
        refresh_interval: get("refreshInterval", defaults.refresh_interval),
        min_refetch_interval: get("minRefetchInterval", defaults.min_refetch_interval),
        max_stale: get("maxStale", defaults.max_stale),
        fetch_timeout: get("fetchTimeout", defaults.fetch_timeout),
        retry_interval: get("retryInterval", defaults.retry_interval),
    }
}

fn limits(node: Option<Node<'_>>, errors: &mut Errors) -> Limits {
    let defaults = Limits {
        header_read_timeout: Duration::from_secs(10),
        max_header_bytes: 65_536,
        max_token_bytes: 16_384,
        max_bundle_bytes: 10 * 1024 * 1024,
        body_read_timeout: Duration::from_secs(30),
        max_buffered_bytes: 128 * 1024 * 1024,
    };
    let Some(object) = node.and_then(|node| node.object(errors, keys_of::<RawLimits>())) else {
        return defaults;
    };
    let limits = Limits {
        header_read_timeout: duration(
            &object,
            "headerReadTimeout",
            defaults.header_read_timeout,
            false,
            errors,
        ),
        max_header_bytes: count(
            &object,
            "maxHeaderBytes",
            defaults.max_header_bytes,
            1,
            errors,
        ),
        max_token_bytes: count(
            &object,
            "maxTokenBytes",
            defaults.max_token_bytes,
            1,
            errors,
        ),
        max_bundle_bytes: count(
            &object,
            "maxBundleBytes",
            defaults.max_bundle_bytes,
            1,
            errors,
        ),
        body_read_timeout: duration(
            &object,
            "bodyReadTimeout",
            defaults.body_read_timeout,
            false,
            errors,
        ),
        max_buffered_bytes: count(
            &object,
            "maxBufferedBytes",
            defaults.max_buffered_bytes,
            1,
            errors,
        ),
    };
    // One bundle of the largest size must fit the budget, or it could never be read.
    if limits.max_buffered_bytes < limits.max_bundle_bytes {
        let (key, message) = match object.get("maxBufferedBytes") {
            Some(node) => (
                node.path,
                format!(
                    "must be at least limits.maxBundleBytes ({})",
                    limits.max_bundle_bytes
                ),
            ),
            None => (
                object.key_path("maxBundleBytes"),
                format!(
                    "must be at most limits.maxBufferedBytes ({})",
                    limits.max_buffered_bytes
                ),
            ),
        };
        errors.push(&key, message);
    }
    limits
}

/// Paths relative to the FHIR base, each starting with '/'.
fn anonymous_paths(root: &Object<'_>, errors: &mut Errors) -> Vec<String> {
    let Some(items) = root
        .get("anonymousPaths")
        .and_then(|node| node.list(errors))
    else {
        return DEFAULT_ANONYMOUS_PATHS.map(String::from).to_vec();
    };
    let mut paths = Vec::with_capacity(items.len());
    for item in items {
        let Some(path) = item.text(errors) else {
            continue;
        };
        if !path.starts_with('/') || path.contains(['?', '#']) {
            errors.push(
                &item.path,
                format!("'{path}' must be a path starting with '/', without a query"),
            );
        } else {
            paths.push(path.to_owned());
        }
    }
    paths
}

fn logging(node: Option<Node<'_>>, errors: &mut Errors) -> Logging {
    let mut logging = Logging {
        format: LogFormat::Json,
        level: "info".into(),
        log_query: false,
    };
    let Some(object) = node.and_then(|node| node.object(errors, keys_of::<RawLogging>())) else {
        return logging;
    };
    if choice(&object, "format", keys_of::<RawLogFormat>(), errors) == Some("text") {
        logging.format = LogFormat::Text;
    }
    if let Some(level) = object.get("level").and_then(|node| node.text(errors)) {
        level.clone_into(&mut logging.level);
    }
    logging.log_query = flag(&object, "logQueryStrings", errors);
    logging
}
