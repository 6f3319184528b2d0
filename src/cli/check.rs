//! `fhirguard check --config FILE [--probe]`: the same load as `serve`, every error printed;
//! with `--probe`, each authority's discovery document and key set fetched and reported.

use std::path::Path;
use std::process::ExitCode;

use crate::auth::KeyStore;
use crate::config::Config;

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

async fn probe_all(config: &Config) -> bool {
    let store = KeyStore::new();
    let mut all_ok = true;
    for (_, authority) in config.auth.providers() {
        match store.probe(authority, config).await {
            Ok(report) => {
                println!("{authority}");
                println!("  issuer:   {}", report.issuer);
                println!("  jwks_uri: {}", report.jwks_uri);
                for key in &report.keys {
                    println!("  key:      {key}");
                }
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
    all_ok
}
