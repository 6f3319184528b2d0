//! The one HTTP client of the suites: HTTP/1.1 (or HTTP/2 with prior knowledge) with a connection
//! pool, a deadline on every exchange, and an [`Answer`] holding what a test looks at — status,
//! headers, body. [`exchange_once`] sends a request whose body is not a plain buffer (streamed
//! frames, trailers) on a connection of its own.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::poll::eventually;

/// How long an exchange may take, answer and body, before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The parts of a response a test looks at.
#[derive(Debug)]
pub struct Answer {
    pub version: Version,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// A response's head and its whole body.
    pub fn of(head: http::response::Parts, body: &[u8]) -> Answer {
        Answer {
            version: head.version,
            status: head.status,
            headers: head.headers,
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// The body as JSON, or `null` when it is not (an empty 304, a plain-text refusal).
    pub fn json_or_null(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The first issue's `diagnostics` of an OperationOutcome body; empty when there is none.
    pub fn diagnostics(&self) -> String {
        let body = self.json_or_null();
        let diagnostics = body["issue"][0]["diagnostics"].as_str();
        diagnostics.unwrap_or_default().to_owned()
    }

    /// The `WWW-Authenticate` challenge; empty when there is none.
    pub fn challenge(&self) -> &str {
        self.header("www-authenticate").unwrap_or_default()
    }

    /// Asserts fhirguard's refusal: an OperationOutcome (`application/fhir+json`) whose first
    /// issue is an error of `code`, and whose id is the request id.
    pub fn assert_outcome(&self, code: &str) {
        let body = self.json_or_null();
        assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
        assert_eq!(body["issue"][0]["code"], code, "{body}");
        assert_eq!(body["issue"][0]["severity"], "error");
        let id = self.headers["x-request-id"].to_str().unwrap();
        assert_eq!(body["id"], id);
        assert_eq!(self.headers["content-type"], "application/fhir+json");
    }

    /// A header's value, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A request to `url`: `method`, the bearer `token` if any, then `headers`, with `body`.
pub fn request(
    method: Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(body.into()))
        .expect("a valid request")
}

/// An HTTP client with a connection pool and a per-exchange deadline; over TLS with
/// [`HttpClient::https`].
#[derive(Debug, Clone)]
pub struct HttpClient<C = HttpConnector>(Client<C, Full<Bytes>>);

impl Default for HttpClient {
    fn default() -> HttpClient {
        HttpClient(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl HttpClient {
    /// A client speaking HTTP/2 with prior knowledge (no upgrade).
    pub fn h2() -> HttpClient {
        HttpClient(
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        )
    }

    /// A client of `https://` URLs only, with `tls` (its roots, its client certificate), HTTP/1.1
    /// or HTTP/2 as ALPN chooses.
    pub fn https(tls: rustls::ClientConfig) -> HttpClient<HttpsConnector<HttpConnector>> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .build();
        HttpClient(Client::builder(TokioExecutor::new()).build(connector))
    }
}

impl<C: Connect + Clone + Send + Sync + 'static> HttpClient<C> {
    /// Sends `request`; panics when there is no complete answer within [`DEADLINE`].
    pub async fn exchange(&self, request: Request<Full<Bytes>>) -> Answer {
        let uri = request.uri().clone();
        let answer = tokio::time::timeout(DEADLINE, read(self.0.request(request))).await;
        answer
            .unwrap_or_else(|_| panic!("{uri}: no answer within {DEADLINE:?}"))
            .unwrap_or_else(|error| panic!("{uri}: {error}"))
    }

    /// Sends `request`; the answer, or why there is none within [`DEADLINE`].
    pub async fn try_exchange(&self, request: Request<Full<Bytes>>) -> Result<Answer, String> {
        let uri = request.uri().clone();
        tokio::time::timeout(DEADLINE, read(self.0.request(request)))
            .await
            .map_err(|_| format!("no answer from {uri} within {DEADLINE:?}"))?
    }

    /// `GET url` with `headers`.
    pub async fn get_url(&self, url: &str, headers: &[(&str, &str)]) -> Answer {
        self.exchange(request(Method::GET, url, None, headers, Bytes::new()))
            .await
    }

    /// Sends `method` to `http://{address}{target}`, with the bearer token if any; the status
    /// and body, or why there is no answer within [`DEADLINE`].
    pub async fn call(
        &self,
        method: &str,
        address: SocketAddr,
        target: &str,
        token: Option<&str>,
    ) -> Result<(StatusCode, String), String> {
        let authorization = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        self.send(method, address, target, &headers).await
    }

    /// Like [`HttpClient::call`], with any headers.
    pub async fn send(
        &self,
        method: &str,
        address: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, String), String> {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let url = format!("http://{address}{target}");
        let answer = self
            .try_exchange(request(method, &url, None, headers, Bytes::new()))
            .await?;
        Ok((answer.status, answer.body))
    }

    pub async fn get(
        &self,
        address: SocketAddr,
        target: &str,
        token: Option<&str>,
    ) -> Result<(StatusCode, String), String> {
        self.call("GET", address, target, token).await
    }

    /// The `/metrics` text of an admin listener.
    pub async fn metrics(&self, admin: SocketAddr) -> String {
        let (status, body) = self.get(admin, "/metrics", None).await.expect("/metrics");
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until the admin listener reports ready: the config is loaded and every identity
    /// provider's keys are held.
    pub async fn wait_ready(&self, admin: SocketAddr) {
        eventually("fhirguard reports ready", DEADLINE, || async move {
            matches!(
                self.get(admin, "/readyz", None).await,
                Ok((StatusCode::OK, _))
            )
        })
        .await;
    }
}

/// Sends one request with any body type — streamed frames, trailers — on a connection of its
/// own, HTTP/1.1 or (with `h2`) HTTP/2 prior knowledge; panics without an answer within
/// [`DEADLINE`].
pub async fn exchange_once<B>(request: Request<B>, h2: bool) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let client: Client<HttpConnector, B> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    let uri = request.uri().clone();
    tokio::time::timeout(DEADLINE, read(client.request(request)))
        .await
        .unwrap_or_else(|_| panic!("{uri}: no answer within {DEADLINE:?}"))
        .unwrap_or_else(|error| panic!("{uri}: {error}"))
}

/// The answer of a response future, its body read whole.
async fn read<F, E>(response: F) -> Result<Answer, String>
where
    F: std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, E>>,
    E: std::fmt::Display,
{
    let response = response.await.map_err(|error| error.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok(Answer::of(parts, &body))
}
