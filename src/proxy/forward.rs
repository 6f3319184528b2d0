//! Forwarding to the FHIR server: a pooled hyper client (http and https through rustls, optional
//! extra CA file, optional h2), the upstream URI built from the configured base and the
//! normalised path, bodies streamed both ways, and failures mapped to 502 / 504.

use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Upstream as UpstreamConfig;
use crate::error::Rejection;
use crate::proxy::body::{stream, Body};

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read the upstream CA file {path}: {source}")]
    CaFile { path: String, source: io::Error },
    #[error("the upstream CA file {0} holds no usable certificate")]
    NoCertificate(String),
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the upstream URL {0}")]
    Url(String),
}

/// The pooled client towards the FHIR server.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    response_timeout: Duration,
    /// The base URL's scheme, authority and path prefix, parsed once.
    base: Base,
}

/// What every upstream URI starts with.
#[derive(Debug, Clone)]
struct Base {
    scheme: Scheme,
    authority: Authority,
    /// The path prefix without a trailing '/': `""` or `"/fhir"`.
    prefix: String,
}

impl Base {
    fn of(url: &url::Url) -> Result<Base, UpstreamError> {
        let invalid = |what: &str| UpstreamError::Url(format!("{url}: {what}"));
        let scheme = Scheme::try_from(url.scheme()).map_err(|e| invalid(&e.to_string()))?;
        let host = url.host_str().ok_or_else(|| invalid("no host"))?;
        let authority = match url.port() {
            Some(port) => Authority::try_from(format!("{host}:{port}")),
            None => Authority::try_from(host),
        }
        .map_err(|e| invalid(&e.to_string()))?;
        Ok(Base {
            scheme,
            authority,
            prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The upstream URI for a normalised FHIR path: the base, then the path and the query
    /// exactly as the decision saw them.
    fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Rejection> {
        let prefix = &self.prefix;
        let mut target =
            String::with_capacity(prefix.len() + path.len() + 1 + query.map_or(0, str::len));
        target.push_str(prefix);
        target.push_str(if path.is_empty() { "/" } else { path });
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        let path_and_query = PathAndQuery::from_maybe_shared(Bytes::from(target))
            .map_err(|e| Rejection::UpstreamUnavailable(format!("invalid upstream path: {e}")))?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts)
            .map_err(|e| Rejection::UpstreamUnavailable(format!("invalid upstream URI: {e}")))
    }
}

impl Upstream {
    /// Builds the client from the `upstream` settings.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));

        let tls = client_tls(config.ca_file.as_deref())?;
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if config.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };

        let mut client = Client::builder(TokioExecutor::new());
        client
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .http2_only(config.http2);
        Ok(Upstream {
            client: client.build(connector),
            response_timeout: config.response_timeout,
            base: Base::of(&config.url)?,
        })
    }

    /// The upstream URI for a normalised FHIR path and its query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Rejection> {
        self.base.uri(path, query)
    }

    /// Sends the request and returns the upstream's response head with its body still streaming.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, Rejection> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_elapsed) => Err(Rejection::UpstreamTimeout(self.response_timeout)),
            Ok(Err(error)) if timed_out(&error) => {
                Err(Rejection::UpstreamTimeout(self.response_timeout))
            }
            Ok(Err(error)) => Err(Rejection::UpstreamUnavailable(describe(&error))),
            Ok(Ok(response)) => Ok(response.map(stream)),
        }
    }
}

fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
            path: shown.clone(),
            source,
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|source| UpstreamError::CaFile {
                path: shown.clone(),
                source,
            })?;
            roots.add(cert)?;
            added += 1;
        }
        if added == 0 {
            return Err(UpstreamError::NoCertificate(shown));
        }
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Ok(rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = current.source();
    }
    false
}

/// The innermost cause, which is what an operator needs ("Connection refused (os error 111)").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_keeps_the_prefix_and_query() {
        let base = |url: &str| Base::of(&url::Url::parse(url).unwrap()).unwrap();
        let uri = base("http://127.0.0.1:8081/fhir")
            .uri("/Patient/1", Some("_format=json"))
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:8081/fhir/Patient/1?_format=json"
        );
        let root = base("http://127.0.0.1:8081/fhir/").uri("/", None).unwrap();
        assert_eq!(root.to_string(), "http://127.0.0.1:8081/fhir/");
        let uri = base("https://fhir.example.org")
            .uri("/metadata", None)
            .unwrap();
        assert_eq!(uri.to_string(), "https://fhir.example.org/metadata");
    }
}
