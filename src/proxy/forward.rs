//! Step 9 of SPEC §4: one client request's way to the upstream ([`Exchange`]): the headers
//! cleaned and fhirguard's own set (hop-by-hop, client-reserved, `Forwarded`, identity), the
//! upstream URI from the decided path and query, the answer streamed back.

use http::{HeaderValue, Request, Response};

use crate::auth::KeyStore;
use crate::body::Body;
use crate::config::Config;
use crate::error::Rejection;
use crate::metrics::Metrics;
use crate::proxy::headers::{self, Identity, RequestId};
use crate::upstream::Upstream;

/// Where the request came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's socket address: `Forwarded: for=`, and whether it is a trusted proxy.
    pub address: std::net::SocketAddr,
    /// The listener terminated TLS.
    pub https: bool,
}

/// One client request's way upstream: the configuration and upstream client of its
/// generation, and what forwarding sets on everything it sends for that request (the request
/// itself, and the reads of the stored resource made before a change).
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The request's configuration generation (`upstream.http2`, CORS, the trusted proxy).
    pub config: &'a Config,
    /// The pooled client towards the FHIR server, of the same generation.
    pub upstream: &'a Upstream,
    /// The key sets, for the discovery documents fhirguard writes.
    pub keys: &'a KeyStore,
    /// Where the upstream's latency and retries are counted.
    pub metrics: &'a Metrics,
    /// The client connection, for `Forwarded` and the client-certificate header.
    pub peer: Peer,
    /// The request's `X-Request-Id`, sent upstream too (SPEC §4, responses).
    pub request_id: &'a RequestId,
    /// The identity headers of the principal on whose behalf (`None`: anonymous).
    pub identity: Option<&'a Identity>,
}

impl Exchange<'_> {
    /// Step 9: forwards a request to `path` (normalised, relative to the FHIR base) and `query`
    /// with its headers cleaned and fhirguard's own set, and streams the answer back.
    pub async fn send(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        path: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, Rejection> {
        let headers = &mut parts.headers;
        let host = headers.remove(http::header::HOST).or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        headers::remove_hop_by_hop(headers);
        // A client-certificate header is believed, and forwarded, only from a trusted proxy,
        // and only the configured one; every other is removed.
        let believed = (self.config.sender.forwarded.as_ref())
            .filter(|forwarded| forwarded.trusts(self.peer.address.ip()))
            .map(|forwarded| forwarded.header.name());
        headers::remove_client_reserved(headers, believed.as_ref());
        headers::set_forwarded(headers, self.peer.address, self.peer.https, host);
        headers.insert(headers::REQUEST_ID, self.request_id.header());
        if let Some(identity) = self.identity {
            headers::set_identity(headers, identity);
        }
        parts.uri = self.upstream.uri(path, query)?;
        parts.version = match self.config.upstream.http2 {
            true => http::Version::HTTP_2,
            false => http::Version::HTTP_11,
        };
        let started = std::time::Instant::now();
        let request = Request::from_parts(parts, body);
        let sent = self
            .upstream
            .send(request, &self.metrics.upstream_retries)
            .await;
        self.metrics
            .upstream_duration
            .observe(started.elapsed().as_secs_f64());
        let mut response = sent?;
        headers::remove_hop_by_hop(response.headers_mut());
        if self.config.cors.is_some() {
            crate::cors::remove_upstream_cors(response.headers_mut());
        }
        Ok(response)
    }
}
