//! Raw document → [`Config`] in one pass that collects every error with its path (SPEC §3,
//! STYLE habit 2). Each section takes its default when absent; a section with mistakes records
//! them and falls back to its default so the walk can go on and find the rest.

use std::time::Duration;

use yaml_serde::Value;

use super::connections::{key_sets, limits, socket_address, tls, upstream, worker_threads};
use super::document::{base_url, choice, without_trailing_slash, Errors, Node, Object};
use super::raw::{keys_of, RawCompatibility, RawConfig, RawLogFormat, RawLogging};
use super::{
    authentication, roles, Compatibility, Config, ConfigError, ConfigErrors, LogFormat, Logging,
    ReportOnly,
};

/// Defaults of the top-level keys (see `config/*.yaml`).
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Kubernetes' default `terminationGracePeriodSeconds` is also 30 s, so a pod must give more
/// (the manifests in deploy/ give 40 s) for the drain to finish before SIGKILL.
const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(30);
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
    let allow_http_authorities = root.flag("allowHttpAuthorities", errors);
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
        clock_skew: root.duration_or("clockSkew", DEFAULT_CLOCK_SKEW, true, errors),
        audience_ignore_trailing_slash: root.flag("audienceIgnoreTrailingSlash", errors),
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
        shutdown_grace_period: root.duration_or(
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
    logging.log_query = object.flag("logQueryStrings", errors);
    logging
}
