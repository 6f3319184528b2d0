//! The client towards the FHIR server: a pooled hyper client (http and https through rustls,
//! optional extra CA file, optional h2), the upstream URI built from the configured base and
//! the normalised path, bodies streamed both ways, failures told apart (502 / 504), and a
//! request sent again when the upstream closed or refused what it was sent on (`retry`). It
//! knows nothing of requests' decisions: [`crate::proxy::forward`] sends through it.

mod pool;
mod retry;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntCounterVec;
use tokio::sync::Semaphore;

use crate::body::{stream, Body};
use crate::config::Upstream as UpstreamConfig;
use pool::Pool;
use retry::{Replay, Retry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub use retry::KeptBody;

/// Why forwarding a request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    /// The upstream refused the connection or broke it (502); the error chain, described.
    #[error("the FHIR server is unreachable: {0}")]
    Unavailable(String),
    /// The upstream did not answer within `upstream.responseTimeout` (504).
    #[error("the FHIR server did not answer within {0:?}")]
    Timeout(Duration),
    /// The path and query decided on make no upstream URI (502).
    #[error("the FHIR server is unreachable: invalid upstream path: {0}")]
    Path(http::uri::InvalidUri),
    /// The base URL and the decided path make no valid URI together (502).
    #[error("the FHIR server is unreachable: invalid upstream URI: {0}")]
    Uri(http::uri::InvalidUriParts),
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `upstream.caFile` could not be read.
    #[error("cannot read the upstream CA file {path}: {source}")]
    CaFile {
        /// The file as configured.
        path: String,
        /// The read error.
        source: io::Error,
    },
    /// `upstream.caFile` is not PEM.
    #[error("{path} is not valid PEM: {source}")]
    CaPem {
        /// The file as configured.
        path: String,
        /// What the PEM reader found wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// `upstream.caFile` holds no certificate rustls accepts as a trust anchor.
    #[error("the upstream CA file {0} holds no usable certificate")]
    NoCertificate(String),
    /// rustls refused the client configuration (protocol versions, provider).
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
    /// `upstream.url` cannot be used as the client's base (e.g. no host).
    #[error("the upstream URL {0}")]
    Url(String),
}

/// The pooled client towards the FHIR server.
#[derive(Debug)]
pub struct Upstream {
    transport: Transport,
    response_timeout: Duration,
    /// The base URL's scheme, authority and path prefix, parsed once.
    base: Base,
}

/// HTTP/1.1 through fhirguard's own pool; h2 (one multiplexed connection) through hyper's
/// pooled client, with the same bound on requests in flight. Once a GOAWAY has arrived, hyper
/// hands back every request still queued for that connection unsent, and its pooled client
/// sends them on a new connection (`retry_canceled_requests`, on by default).
#[derive(Debug)]
enum Transport {
    Http1(Pool),
    Http2 {
        client: Client<HttpsConnector<HttpConnector>, Body>,
        slots: Arc<Semaphore>,
    },
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
    fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, UpstreamFailure> {
        let prefix = &self.prefix;
        let mut target =
            String::with_capacity(prefix.len() + path.len() + 1 + query.map_or(0, str::len));
        target.push_str(prefix);
        target.push_str(if path.is_empty() { "/" } else { path });
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        let path_and_query =
            PathAndQuery::from_maybe_shared(Bytes::from(target)).map_err(UpstreamFailure::Path)?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(UpstreamFailure::Uri)
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
        let base = Base::of(&config.url)?;
        let transport = if config.http2 {
            let mut client = Client::builder(TokioExecutor::new());
            client
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(config.pool_idle_timeout)
                .pool_max_idle_per_host(config.pool_max_idle_per_host)
                .http2_only(true);
            Transport::Http2 {
                client: client.build(builder.enable_http2().wrap_connector(http)),
                slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            }
        } else {
            let origin = Uri::builder()
                .scheme(base.scheme.clone())
                .authority(base.authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|e| UpstreamError::Url(format!("{}: {e}", config.url)))?;
            let host = HeaderValue::from_str(base.authority.as_str())
                .map_err(|e| UpstreamError::Url(format!("{}: {e}", config.url)))?;
            Transport::Http1(Pool::new(
                builder.enable_http1().wrap_connector(http),
                origin,
                host,
                config.max_connections,
                config.pool_max_idle_per_host,
                config.pool_idle_timeout,
            ))
        };
        Ok(Upstream {
            transport,
            response_timeout: config.response_timeout,
            base,
        })
    }

    /// The upstream URI for a normalised FHIR path and its query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, UpstreamFailure> {
        self.base.uri(path, query)
    }

    /// Sends the request and returns the upstream's response head with its body still streaming.
    /// The wait for a free connection (`maxConnections`) counts towards `responseTimeout`, and
    /// so does a second attempt (`retry`), counted in `retries` by its reason.
    pub async fn send(
        &self,
        request: Request<Body>,
        retries: &IntCounterVec,
    ) -> Result<Response<Body>, UpstreamFailure> {
        let sent = tokio::time::timeout(self.response_timeout, async {
            match &self.transport {
                Transport::Http1(pool) => match pool.send(request, retries).await {
                    Ok(response) => Ok(response.map(stream)),
                    Err(error) => Err(failure(&error)),
                },
                // Boxed: its retry stays out of the HTTP/1.1 path's future and code.
                Transport::Http2 { client, slots } => {
                    Box::pin(send_h2(client, slots, request, retries)).await
                }
            }
        })
        .await;
        match sent {
            Err(_) | Ok(Err(Failure::TimedOut)) => {
                Err(UpstreamFailure::Timeout(self.response_timeout))
            }
            Ok(Err(Failure::Unavailable(cause))) => Err(UpstreamFailure::Unavailable(cause)),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Sends on the h2 connection within the bound on streams in flight, and once more on a refused
/// stream. Any stream may be refused (a GOAWAY can come at any time), so every request that
/// could be sent again is copied first.
async fn send_h2(
    client: &Client<HttpsConnector<HttpConnector>, Body>,
    slots: &Semaphore,
    request: Request<Body>,
    retries: &IntCounterVec,
) -> Result<Response<Body>, Failure> {
    let _slot = slots.acquire().await.expect("never closed");
    let copy = Replay::of(&request, true);
    let mut answer = client.request(request).await;
    if let Some(copy) = copy {
        if matches!(&answer, Err(error) if retry::refused_stream(error)) {
            retries
                .with_label_values(&[Retry::RefusedStream.label()])
                .inc();
            drop(answer);
            answer = client.request(copy.into_request()).await;
        }
    }
    match answer {
        Ok(response) => Ok(response.map(stream)),
        Err(error) => Err(failure(&error)),
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
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|source| UpstreamError::CaPem {
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

/// How sending failed.
enum Failure {
    TimedOut,
    Unavailable(String),
}

fn failure(error: &(dyn std::error::Error + 'static)) -> Failure {
    if timed_out(error) {
        Failure::TimedOut
    } else {
        Failure::Unavailable(describe(error))
    }
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
