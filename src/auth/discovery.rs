//! OpenID Connect discovery (OIDC Discovery 1.0 §4) and the key-set fetch: one GET of
//! `<authority without one trailing '/'>/.well-known/openid-configuration` for `issuer` and
//! `jwks_uri`, then one GET of the JWK Set (reference §2.1 "Discovery", §8 rule 2). https only
//! unless `allowHttpAuthorities`; each fetch has a deadline and a response size cap, since an
//! identity provider is still a remote party.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::keys::{parse_key_set, JwkSetError, ParsedKeySet};

/// The largest discovery document or key set read (Entra's is ~10 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// How one fetch may go.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// `allowHttpAuthorities`: plain http permitted (local testing only).
    pub allow_http: bool,
    /// `keySets.fetchTimeout`: the deadline of each GET, body included.
    pub timeout: Duration,
}

/// Why an identity provider's discovery document or key set could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The discovery URL, or the discovered `jwks_uri`, does not parse.
    #[error("'{url}' is not a valid URL: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// A plain-http URL while `allowHttpAuthorities` is off (reference §8 rule 2: keys come
    /// over https only).
    #[error("'{url}' must use https (set allowHttpAuthorities only for local testing)")]
    InsecureScheme {
        /// The refused URL.
        url: String,
    },
    /// The TLS client could not be built (no usable crypto provider or roots), so no provider
    /// can be reached at all.
    #[error("cannot build the https client: {0}")]
    Client(String),
    /// The connection or the exchange failed (DNS, TCP, TLS handshake, reset).
    #[error("GET {url} failed: {source}")]
    Http {
        /// The URL fetched.
        url: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The provider answered with a status other than 200.
    #[error("GET {url} answered {status}")]
    Status {
        /// The URL fetched.
        url: String,
        /// The status it answered.
        status: StatusCode,
    },
    /// The GET, body included, outlasted `keySets.fetchTimeout`.
    #[error("GET {url} did not complete within {timeout:?}")]
    Timeout {
        /// The URL fetched.
        url: String,
        /// The deadline it missed (`keySets.fetchTimeout`).
        timeout: Duration,
    },
    /// The body broke off, or ran past [`MAX_DOCUMENT_BYTES`].
    #[error("GET {url}: the body could not be read or is larger than {limit} bytes")]
    Body {
        /// The URL fetched.
        url: String,
        /// The size cap, in bytes.
        limit: usize,
    },
    /// The discovery document is not JSON, or lacks `issuer` or `jwks_uri` (OIDC Discovery
    /// 1.0 §3).
    #[error("{url} is not an OpenID configuration: {source}")]
    Discovery {
        /// The discovery URL.
        url: String,
        /// Why the document does not deserialize.
        #[source]
        source: serde_json::Error,
    },
    /// The document at `jwks_uri` is not a JWK Set (RFC 7517 §5).
    #[error("{url}: {source}")]
    KeySet {
        /// The `jwks_uri`.
        url: String,
        /// What is wrong with the set.
        #[source]
        source: JwkSetError,
    },
    /// The JWK Set parsed but holds no key fhirguard can verify with (each one an encryption
    /// key, an unsupported `kty` or algorithm, or bad material).
    #[error("{url} holds no usable signing key")]
    NoUsableKeys {
        /// The `jwks_uri`.
        url: String,
    },
}

/// What discovery says about a provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    /// `issuer`: what a token's `iss` must equal exactly (reference §8 rule 2); it can differ
    /// from the configured authority (Entra v1 tokens name `sts.windows.net`).
    pub issuer: String,
    /// `jwks_uri`: where the provider's JWK Set is fetched.
    pub jwks_uri: String,
    /// Advertised in `/.well-known/smart-configuration` (reference §5.2), when the provider has it.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Where the client exchanges a code or credentials for a token, advertised likewise.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// RFC 8414 §2 / RFC 7662 §4: where opaque tokens are introspected, when advertised.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// What else the provider says it offers.
    #[serde(flatten)]
    pub offered: Offered,
}

/// What a provider's discovery document says it offers (RFC 8414 §2, RFC 9449 §5.1), for
/// `/.well-known/smart-configuration` and `check --probe`. Each list is `None` when not
/// advertised, or not a list of strings: a malformed optional member never fails discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Offered {
    /// The scope values the provider issues.
    #[serde(default, deserialize_with = "strings")]
    pub scopes_supported: Option<Vec<String>>,
    /// The OAuth grant types it accepts (`authorization_code`, `client_credentials`, …).
    #[serde(default, deserialize_with = "strings")]
    pub grant_types_supported: Option<Vec<String>>,
    /// The authorization-endpoint response types (`code`, …).
    #[serde(default, deserialize_with = "strings")]
    pub response_types_supported: Option<Vec<String>>,
    /// How clients may authenticate at the token endpoint (`private_key_jwt`, …).
    #[serde(default, deserialize_with = "strings")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// PKCE (RFC 7636 §4.3).
    #[serde(default, deserialize_with = "strings")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// The DPoP proof algorithms the provider accepts (RFC 9449 §5.1).
    #[serde(default, deserialize_with = "strings")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 7009 token revocation.
    #[serde(default, deserialize_with = "text")]
    pub revocation_endpoint: Option<String>,
}

/// A list of strings, or `None` for anything else.
fn strings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    let serde_json::Value::Array(items) = value else {
        return Ok(None);
    };
    Ok(items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(text) => Some(text),
            _ => None,
        })
        .collect())
}

/// A string, or `None` for anything else.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => Ok(Some(text)),
        _ => Ok(None),
    }
}

/// The discovery URL of an authority: one trailing `/` removed, then the well-known path
/// (reference §8 rule 2; a trailing slash on the authority makes no difference).
pub fn discovery_url(authority: &str) -> String {
    let base = authority.strip_suffix('/').unwrap_or(authority);
    format!("{base}/.well-known/openid-configuration")
}

/// The https (and, when allowed, http) client of identity-provider traffic: discovery and key
/// sets share its connection pool.
pub type IdpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How identity-provider connections are made (webpki roots, HTTP/1.1). Token introspection
/// keeps a pool of its own over it, so that calls held by a slow endpoint never delay key
/// fetches.
pub type IdpConnector = HttpsConnector<HttpConnector>;

/// The client for discovery and key sets.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: IdpClient,
    connector: IdpConnector,
}

impl Fetcher {
    /// A client trusting the webpki roots, speaking HTTP/1.1 (identity providers are small GETs).
    pub fn new() -> Result<Fetcher, KeyError> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|error| KeyError::Client(error.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector.clone());
        Ok(Fetcher { client, connector })
    }

    /// The connector, for the other requests to identity providers (introspection).
    pub fn connector(&self) -> &IdpConnector {
        &self.connector
    }

    /// Discovery then the key set of `authority`.
    pub async fn fetch(
        &self,
        authority: &str,
        policy: FetchPolicy,
    ) -> Result<(Discovery, ParsedKeySet), KeyError> {
        let url = discovery_url(authority);
        let body = self.get(&url, policy).await?;
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|source| KeyError::Discovery { url, source })?;
        let body = self.get(&discovery.jwks_uri, policy).await?;
        let keys = parse_key_set(&body, authority).map_err(|source| KeyError::KeySet {
            url: discovery.jwks_uri.clone(),
            source,
        })?;
        Ok((discovery, keys))
    }

    async fn get(&self, url: &str, policy: FetchPolicy) -> Result<Bytes, KeyError> {
        let parsed = url::Url::parse(url).map_err(|source| KeyError::InvalidUrl {
            url: url.to_owned(),
            source,
        })?;
        let scheme_ok =
            parsed.scheme() == "https" || (policy.allow_http && parsed.scheme() == "http");
        if !scheme_ok {
            return Err(KeyError::InsecureScheme {
                url: url.to_owned(),
            });
        }
        let request = Request::get(parsed.as_str())
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|_| KeyError::InsecureScheme {
                url: url.to_owned(),
            })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|source| KeyError::Http {
                    url: url.to_owned(),
                    source,
                })?;
            if response.status() != StatusCode::OK {
                return Err(KeyError::Status {
                    url: url.to_owned(),
                    status: response.status(),
                });
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES);
            body.collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|_| KeyError::Body {
                    url: url.to_owned(),
                    limit: MAX_DOCUMENT_BYTES,
                })
        };
        tokio::time::timeout(policy.timeout, exchange)
            .await
            .map_err(|_| KeyError::Timeout {
                url: url.to_owned(),
                timeout: policy.timeout,
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_url_drops_one_trailing_slash() {
        let cases = [
            (
                "https://login.microsoftonline.com/tid",
                "https://login.microsoftonline.com/tid/.well-known/openid-configuration",
            ),
            (
                "https://login.microsoftonline.com/tid/v2.0/",
                "https://login.microsoftonline.com/tid/v2.0/.well-known/openid-configuration",
            ),
            (
                "https://idp/realms/x//",
                "https://idp/realms/x//.well-known/openid-configuration",
            ),
        ];
        for (authority, url) in cases {
            assert_eq!(discovery_url(authority), url);
        }
    }

    #[tokio::test]
    async fn refuses_http_unless_allowed() {
        let fetcher = Fetcher::new().unwrap();
        let policy = FetchPolicy {
            allow_http: false,
            timeout: Duration::from_secs(1),
        };
        let error = fetcher
            .fetch("http://127.0.0.1:9", policy)
            .await
            .unwrap_err();
        assert!(matches!(error, KeyError::InsecureScheme { .. }), "{error}");
        let error = fetcher.fetch("not a url", policy).await.unwrap_err();
        assert!(matches!(error, KeyError::InvalidUrl { .. }), "{error}");
    }
}
