//! The `introspection` block: which configured provider issues opaque access tokens, where its
//! RFC 7662 introspection endpoint is, how fhirguard authenticates to it (client_secret_basic,
//! RFC 7662 §2.1, with the secret kept outside the file) and how long answers are kept. The keys
//! are [`super::raw::RawIntrospection`]'s, validated in the same every-error walk (SPEC §3).
//!
//! One provider only: an opaque token names no issuer, so with two introspecting providers
//! fhirguard would have to send every token to each of them — handing one authorization
//! server's bearer tokens to another. With one, the choice is the configuration's.

use std::time::Duration;

use super::document::{base_url, Errors, Node, Object};
use super::raw::{keys_of, RawIntrospection};
use super::secret::{secret_source, SecretSource};
use super::Authentication;

/// Default `cacheTtl`: a revocation takes effect within five minutes at most.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Default `inactiveCacheTtl`: short, since a token may become active only by being issued,
/// never by being revoked; long enough that a flood of one bad token costs one call per 10 s.
const DEFAULT_INACTIVE_CACHE_TTL: Duration = Duration::from_secs(10);
/// Default `timeout`, as `keySets.fetchTimeout`'s.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `maxConcurrent`: more than a healthy endpoint needs at thousands of new tokens a
/// second (each call takes milliseconds), few enough to shield it from a flood.
const DEFAULT_MAX_CONCURRENT: usize = 64;
/// The largest `maxConcurrent` accepted.
const MAX_CONCURRENT_LIMIT: usize = 4096;

/// `introspection: {...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// `authority`: a configured provider's authority, as written there.
    pub authority: String,
    /// `endpoint`; `None` = the provider's discovered `introspection_endpoint`.
    pub endpoint: Option<url::Url>,
    /// `clientId`.
    pub client_id: String,
    /// `clientSecretFile` or `clientSecretEnv`.
    pub client_secret: SecretSource,
    /// `cacheTtl`, default 5 min.
    pub cache_ttl: Duration,
    /// `inactiveCacheTtl`, default 10 s; zero = not kept.
    pub inactive_cache_ttl: Duration,
    /// `timeout`, default 5 s.
    pub timeout: Duration,
    /// `maxConcurrent`, default 64.
    pub max_concurrent: usize,
}

/// Validates `introspection` against the providers of `auth`; `None` when absent or wrong
/// (mistakes recorded in `errors`).
pub(super) fn introspection(
    node: Option<Node<'_>>,
    auth: Option<&Authentication>,
    allow_http: bool,
    errors: &mut Errors,
) -> Option<Introspection> {
    let object = node?.object(errors, keys_of::<RawIntrospection>())?;
    let authority = required_text(&object, "authority", errors);
    if let (Some(authority), Some(auth)) = (authority, auth) {
        if !auth.providers().any(|(_, a)| a == authority) {
            errors.push(
                &object.key_path("authority"),
                format!(
                    "'{authority}' is not a configured provider's authority (write it exactly as \
                     in authenticationConfiguration)"
                ),
            );
        }
    }
    let endpoint = object.get("endpoint").and_then(|node| {
        let text = node.text(errors)?;
        let url = base_url(text)
            .map_err(|message| errors.push(&node.path, message))
            .ok()?;
        if url.scheme() == "http" && !allow_http {
            errors.push(
                &node.path,
                format!("'{text}' must use https (http only with allowHttpAuthorities: true)"),
            );
            return None;
        }
        Some(url)
    });
    let client_id = required_text(&object, "clientId", errors);
    let client_secret = secret(&object, errors);
    let duration = |key: &str, default: Duration, zero: bool, errors: &mut Errors| {
        object.duration_or(key, default, zero, errors)
    };
    let cache_ttl = duration("cacheTtl", DEFAULT_CACHE_TTL, false, errors);
    let inactive_cache_ttl = duration("inactiveCacheTtl", DEFAULT_INACTIVE_CACHE_TTL, true, errors);
    let timeout = duration("timeout", DEFAULT_TIMEOUT, false, errors);
    let max_concurrent = object
        .get("maxConcurrent")
        .and_then(|node| node.count(errors, 1))
        .map_or(DEFAULT_MAX_CONCURRENT, |count| {
            if count > MAX_CONCURRENT_LIMIT {
                errors.push(
                    &object.key_path("maxConcurrent"),
                    format!("must be at most {MAX_CONCURRENT_LIMIT}"),
                );
            }
            count.min(MAX_CONCURRENT_LIMIT)
        });
    Some(Introspection {
        authority: authority?.to_owned(),
        endpoint,
        client_id: client_id?.to_owned(),
        client_secret: client_secret?,
        cache_ttl,
        inactive_cache_ttl,
        timeout,
        max_concurrent,
    })
}

fn required_text<'a>(object: &Object<'a>, key: &str, errors: &mut Errors) -> Option<&'a str> {
    let Some(node) = object.get(key) else {
        errors.push(&object.key_path(key), "is required");
        return None;
    };
    node.text(errors)
}

/// Exactly one of `clientSecretFile` and `clientSecretEnv`.
fn secret(object: &Object<'_>, errors: &mut Errors) -> Option<SecretSource> {
    let (file, env) = ("clientSecretFile", "clientSecretEnv");
    if object.get(file).is_none() && object.get(env).is_none() {
        errors.push(
            &object.path,
            "clientSecretFile or clientSecretEnv is required (the secret itself never goes \
             in the configuration)",
        );
        return None;
    }
    secret_source(object, file, env, errors)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn config(introspection: &str) -> Result<Config, String> {
        let text = format!(
            "upstream: http://fhir:8080\nallowHttpAuthorities: true\n\
             authenticationConfiguration:\n  authority: https://idp.example.org\n  audience: api\n\
             introspection:\n{introspection}"
        );
        Config::parse(&text).map_err(|errors| errors.to_string())
    }

    #[test]
    fn a_valid_block_with_its_defaults() {
        let parsed = config(
            "  authority: https://idp.example.org\n  clientId: fg\n  clientSecretEnv: SECRET\n",
        )
        .unwrap();
        let settings = parsed.introspection.unwrap();
        assert_eq!(settings.client_secret, SecretSource::Env("SECRET".into()));
        assert_eq!(settings.endpoint, None);
        assert_eq!(settings.cache_ttl, DEFAULT_CACHE_TTL);
        assert_eq!(settings.inactive_cache_ttl, DEFAULT_INACTIVE_CACHE_TTL);
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.max_concurrent, DEFAULT_MAX_CONCURRENT);
    }

    #[test]
    fn every_mistake_is_reported() {
        let cases = [
            (
                "  authority: https://other\n  clientId: fg\n  clientSecretEnv: S\n",
                "introspection.authority: 'https://other' is not a configured provider",
            ),
            (
                "  authority: https://idp.example.org\n  clientId: fg\n",
                "clientSecretFile or clientSecretEnv is required",
            ),
            (
                "  authority: https://idp.example.org\n  clientId: fg\n  clientSecretEnv: S\n  \
                 clientSecretFile: /s\n",
                "not both",
            ),
            (
                "  authority: https://idp.example.org\n  clientSecret: s\n  clientId: fg\n",
                "clientSecret",
            ),
            (
                "  authority: https://idp.example.org\n  clientSecretEnv: S\n",
                "introspection.clientId: is required",
            ),
            (
                "  authority: https://idp.example.org\n  clientId: fg\n  clientSecretEnv: S\n  \
                 endpoint: ftp://x\n",
                "introspection.endpoint",
            ),
            (
                "  authority: https://idp.example.org\n  clientId: fg\n  clientSecretEnv: S\n  \
                 maxConcurrent: 0\n",
                "introspection.maxConcurrent: must be at least 1",
            ),
            (
                "  authority: https://idp.example.org\n  clientId: fg\n  clientSecretEnv: S\n  \
                 maxConcurrent: 5000\n",
                "introspection.maxConcurrent: must be at most 4096",
            ),
        ];
        for (block, expected) in cases {
            let error = config(block).unwrap_err();
            assert!(error.contains(expected), "{block}: {error}");
        }
    }
}
