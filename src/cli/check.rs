//! `fhirguard check --config FILE [--probe]`: the same load as `serve`, every error printed;
//! with `--probe`, each authority's discovery document and key set fetched and reported, and
//! the `sharedState` store pinged.

use std::path::Path;
use std::process::ExitCode;

use crate::auth::KeyStore;
use crate::config::{Allowed, Config, Cors};
use crate::shared::SharedStore;

/// Validates the file; exit 0 when valid (and every probe succeeded), 1 otherwise.
pub fn check(path: &Path, probe: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            println!("{}: {} error(s)", path.display(), errors.0.len());
            println!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}: valid", path.display());
    println!("{}", cors_line(config.cors.as_ref()));
    println!("{}", shared_line(&config));
    if !probe {
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if runtime.block_on(probe_all(&config)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `cors` does, in one line (issue 19).
fn cors_line(cors: Option<&Cors>) -> String {
    let Some(cors) = cors else {
        return "cors: not configured; CORS preflights are forwarded to the FHIR server".to_owned();
    };
    fn listed<T>(allowed: &Allowed<T>, show: fn(&T) -> &str) -> String {
        match allowed {
            Allowed::Any => "*".to_owned(),
            Allowed::Listed(items) if items.is_empty() => "none".to_owned(),
            Allowed::Listed(items) => items.iter().map(show).collect::<Vec<_>>().join(", "),
        }
    }
    format!(
        "cors: fhirguard answers preflights; origins {}; methods {}; headers {}; maxAge {} s; \
         credentials {}",
        listed(&cors.origins, String::as_str),
        listed(&cors.methods, http::Method::as_str),
        listed(&cors.headers, http::HeaderName::as_str),
        cors.max_age,
        if cors.allow_credentials {
            "allowed"
        } else {
            "not allowed"
        },
    )
}

/// What `sharedState` and `rateLimits` say, in one line (issue 22). The URL is shown without
/// its user name.
fn shared_line(config: &Config) -> String {
    let limits = config.rate_limits.len();
    let Some(shared) = &config.shared_state else {
        return format!(
            "sharedState: not configured (every replica keeps its own state); rateLimits: {limits}"
        );
    };
    let mut url = shared.redis.url.clone();
    let _ = url.set_username("");
    format!(
        "sharedState: {url} (failureMode {}, DPoP replay {}, introspection answers {}); \
         rateLimits: {limits}",
        shared.failure_mode.label(),
        if config.shared_replay() {
            "shared"
        } else {
            "local"
        },
        if shared.introspection {
            "shared"
        } else {
            "not shared"
        },
    )
}

/// The DPoP proof algorithms a provider advertises, and which of them fhirguard verifies
/// (RFC 9449 §5.1; fhirguard's list is [`crate::auth::dpop::PROOF_ALGORITHMS_TEXT`]).
fn dpop_line(advertised: Option<&[String]>) -> String {
    let Some(advertised) = advertised else {
        return "not advertised (no dpop_signing_alg_values_supported)".to_owned();
    };
    let verified: Vec<&str> = crate::auth::dpop::PROOF_ALGORITHMS_TEXT
        .split(' ')
        .collect();
    let others: Vec<&str> = advertised
        .iter()
        .map(String::as_str)
        .filter(|alg| !verified.contains(alg))
        .collect();
    let mut line = format!("proof algorithms {}", advertised.join(" "));
    if !others.is_empty() {
        line.push_str(&format!(
            " (fhirguard does not verify {})",
            others.join(" ")
        ));
    }
    line
}

async fn probe_all(config: &Config) -> bool {
    let store = KeyStore::new();
    let mut all_ok = true;
    for (_, authority) in config.auth.providers() {
        match store.probe(authority, config).await {
            Ok(report) => {
                println!("{authority}");
                println!("  issuer:   {}", report.issuer);
                println!("  jwks_uri: {}", report.jwks_uri);
                // RFC 8414 §2: whether opaque tokens of this provider could be introspected.
                let introspects = config
                    .introspection
                    .as_ref()
                    .is_some_and(|settings| settings.authority == authority);
                match (&report.introspection_endpoint, introspects) {
                    (Some(endpoint), _) => println!("  introspection_endpoint: {endpoint}"),
                    (None, true)
                        if config
                            .introspection
                            .as_ref()
                            .is_some_and(|s| s.endpoint.is_some()) =>
                    {
                        println!("  introspection_endpoint: not advertised (introspection.endpoint is set)");
                    }
                    (None, true) => {
                        println!("  introspection_endpoint: not advertised, and introspection.endpoint is not set");
                        all_ok = false;
                    }
                    (None, false) => println!("  introspection_endpoint: not advertised"),
                }
                for key in &report.keys {
                    println!("  key:      {key}");
                }
                println!(
                    "  dpop:     {}",
                    dpop_line(report.dpop_algorithms.as_deref())
                );
                if report.keys.is_empty() {
                    println!("  no usable signing key");
                    all_ok = false;
                }
            }
            Err(error) => {
                println!("{authority}");
                println!("  error: {error}");
                all_ok = false;
            }
        }
    }
    if let Some(settings) = &config.shared_state {
        let metrics = crate::metrics::Metrics::new();
        let url = &settings.redis.url;
        let pinged = match SharedStore::new(settings, metrics.shared.clone()) {
            Ok(store) => store.ping().await.map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match pinged {
            Ok(()) => println!("sharedState: {}:{} answers", host(url), port(url)),
            Err(error) => {
                println!(
                    "sharedState: {}:{} does not answer: {error}",
                    host(url),
                    port(url)
                );
                all_ok = false;
            }
        }
    }
    all_ok
}

fn host(url: &url::Url) -> &str {
    url.host_str().unwrap_or_default()
}

fn port(url: &url::Url) -> u16 {
    url.port().unwrap_or(6379)
}

#[cfg(test)]
mod tests {
    use super::dpop_line;

    #[test]
    fn dpop_algorithms_are_reported_with_those_fhirguard_does_not_verify() {
        assert_eq!(
            dpop_line(None),
            "not advertised (no dpop_signing_alg_values_supported)"
        );
        let advertised = ["ES256".to_owned(), "Ed25519".to_owned()];
        assert_eq!(
            dpop_line(Some(&advertised)),
            "proof algorithms ES256 Ed25519 (fhirguard does not verify Ed25519)"
        );
    }
}
