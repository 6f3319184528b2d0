//! Verifying tokens without a running fhirguard: a config naming the fake providers, a primary
//! authority with its key and an empty key store, and [`check`] — `authenticate` at the current
//! time — for the suites that call the library directly (`auth`, `token_shapes`).

use std::sync::Arc;

use fhirguard::auth::{authenticate, AuthError, KeyStore, Principal};
use fhirguard::config::Config;

use super::idp::{config_yaml, FakeIdp};
use super::token::{now, TestKey};

/// The audience of the primary authority's tokens.
pub const AUDIENCE: &str = "https://fhir.example.org";

/// A config with a primary authority (audience [`AUDIENCE`]) and/or smart providers
/// (`(authority, [(clientId, audience)])`).
pub fn config(primary: Option<&str>, smart: &[(&str, &[(&str, &str)])]) -> Config {
    let yaml = config_yaml(primary.map(|authority| (authority, AUDIENCE)), smart);
    Config::parse(&yaml).expect("test config")
}

/// A primary authority served by a fake IdP holding one RSA key.
pub async fn primary() -> (FakeIdp, TestKey, KeyStore, Config) {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
    let config = config(Some(&idp.base_url()), &[]);
    (idp, key, KeyStore::new(), config)
}

/// `token` authenticated against `config` now.
pub async fn check(
    store: &KeyStore,
    config: &Config,
    token: &str,
) -> Result<Arc<Principal>, AuthError> {
    authenticate(store, config, token, now()).await
}
