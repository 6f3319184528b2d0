//! The sections about connections: the listeners' addresses and TLS, the upstream and its
//! pool, the key-set fetches, the request limits and the worker threads. Each section takes its
//! default when absent and records its mistakes with their paths (see `validate`).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use yaml_serde::Value;

use super::document::{base_url, without_trailing_slash, Errors, Node, Object};
use super::raw::{keys_of, RawKeySets, RawLimits, RawTls, RawUpstreamObject};
use super::{KeySets, Limits, Tls, Upstream};

/// More worker threads than this is a typo, not a tuning.
const MAX_WORKER_THREADS: usize = 1024;

/// `listen` / `adminListen`: an `ip:port`; `default` when absent.
pub(super) fn socket_address(
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

/// `upstream`: the FHIR server's base URL, or an object with it (`url`) and the pool's settings.
pub(super) fn upstream(root: &Object<'_>, errors: &mut Errors) -> Option<Upstream> {
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
        // Below the idle keep-alive timeouts FHIR servers default to (docs/operations.md, "Upstream
        // connections"): Node's and Apache httpd's 5 s are the shortest.
        pool_idle_timeout: Duration::from_secs(4),
        pool_max_idle_per_host: 256,
        max_connections: 256,
    };
    if let Some(object) = settings {
        upstream.connect_timeout =
            object.duration_or("connectTimeout", upstream.connect_timeout, false, errors);
        upstream.response_timeout =
            object.duration_or("responseTimeout", upstream.response_timeout, false, errors);
        upstream.pool_idle_timeout =
            object.duration_or("poolIdleTimeout", upstream.pool_idle_timeout, false, errors);
        upstream.pool_max_idle_per_host = object.count_or(
            "poolMaxIdlePerHost",
            upstream.pool_max_idle_per_host,
            0,
            errors,
        );
        upstream.max_connections =
            object.count_or("maxConnections", upstream.max_connections, 1, errors);
        upstream.http2 = object.flag("http2", errors);
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
pub(super) fn worker_threads(root: &Object<'_>, errors: &mut Errors) -> Option<NonZeroUsize> {
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

/// `tls`: the listener's certificate and key files, both required.
pub(super) fn tls(node: &Node<'_>, errors: &mut Errors) -> Option<Tls> {
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

/// `keySets`: when key sets are refreshed, refetched for an unknown `kid`, and kept when stale.
pub(super) fn key_sets(node: Option<Node<'_>>, errors: &mut Errors) -> KeySets {
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
    let mut get = |key, default| object.duration_or(key, default, false, errors);
    KeySets {
        refresh_interval: get("refreshInterval", defaults.refresh_interval),
        min_refetch_interval: get("minRefetchInterval", defaults.min_refetch_interval),
        max_stale: get("maxStale", defaults.max_stale),
        fetch_timeout: get("fetchTimeout", defaults.fetch_timeout),
        retry_interval: get("retryInterval", defaults.retry_interval),
    }
}

/// `limits`: header and body sizes and read timeouts; one largest bundle must fit the buffer budget.
pub(super) fn limits(node: Option<Node<'_>>, errors: &mut Errors) -> Limits {
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
        header_read_timeout: object.duration_or(
            "headerReadTimeout",
            defaults.header_read_timeout,
            false,
            errors,
        ),
        max_header_bytes: object.count_or("maxHeaderBytes", defaults.max_header_bytes, 1, errors),
        max_token_bytes: object.count_or("maxTokenBytes", defaults.max_token_bytes, 1, errors),
        max_bundle_bytes: object.count_or("maxBundleBytes", defaults.max_bundle_bytes, 1, errors),
        body_read_timeout: object.duration_or(
            "bodyReadTimeout",
            defaults.body_read_timeout,
            false,
            errors,
        ),
        max_buffered_bytes: object.count_or(
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
