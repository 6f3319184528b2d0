//! A recording fake FHIR server on 127.0.0.1:0: it keeps every request it receives (method,
//! target, headers, body) and answers with a small FHIR JSON body, optionally after a delay.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Trailer fields after the body, if any came.
    pub trailers: Option<HeaderMap>,
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<Recorded>,
    delay: Option<Duration>,
}

/// The running fake upstream.
#[derive(Debug, Clone)]
pub struct FakeFhir {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeFhir {
    pub async fn start() -> FakeFhir {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake FHIR");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&state), request));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeFhir { address, state }
    }

    /// The base URL with a path prefix, as configured in fhirguard.
    pub fn base_url(&self, prefix: &str) -> String {
        format!("http://{}{prefix}", self.address)
    }

    /// Makes every later answer wait this long.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = Some(delay);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let delay = {
        let mut state = state.lock().unwrap();
        state.requests.push(Recorded {
            method: parts.method.to_string(),
            target: target.clone(),
            headers: parts.headers,
            body,
            trailers,
        });
        state.delay
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let payload = serde_json::json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
        "link": [{ "relation": "self", "url": target }],
    });
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/fhir+json")
        .header("connection", "keep-alive, x-upstream-hop")
        .header("x-upstream-hop", "must not reach the client")
        .header("keep-alive", "timeout=5")
        .body(Full::new(Bytes::from(payload.to_string())))
        .expect("response");
    Ok(response)
}
