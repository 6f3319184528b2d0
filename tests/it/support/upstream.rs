//! The one fake FHIR server, on 127.0.0.1:0. It records every request it receives (method,
//! target, headers, body, trailers) and answers in one of two ways:
//!
//! - [`FakeFhir::start`]: a canned searchset Bundle naming the target, with hop-by-hop headers a
//!   proxy must drop — for what fhirguard forwards;
//! - [`FakeFhir::store`]: a small in-memory FHIR store ([`super::fhir_store`]) answering reads,
//!   searches, history, creates, updates, patches, deletes and batches — for what fhirguard lets
//!   a client see.
//!
//! Either way an answer can be made to wait ([`FakeFhir::set_delay`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

use super::fhir_store::{Search, Store};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
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
    /// Set for [`FakeFhir::store`]: the resources it answers from.
    store: Option<Store>,
}

/// The running fake upstream.
#[derive(Debug, Clone)]
pub struct FakeFhir {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeFhir {
    /// Records and answers every request with a canned searchset Bundle.
    pub async fn start() -> FakeFhir {
        FakeFhir::serve(State::default()).await
    }

    /// An in-memory FHIR store under `/fhir` holding `seed`, searching as `search` says.
    pub async fn store(seed: Vec<Value>, search: Search) -> FakeFhir {
        FakeFhir::serve(State {
            store: Some(Store::new(seed, search)),
            ..State::default()
        })
        .await
    }

    async fn serve(state: State) -> FakeFhir {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake FHIR");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(state));
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
        self.lock().delay = Some(delay);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    /// The requests received after the first `before`.
    pub fn since(&self, before: usize) -> Vec<Recorded> {
        self.requests().split_off(before)
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }

    /// The store's log: `METHOD target` per request (a POST `_search` with its content type
    /// and form), and `  entry URL` per batch or transaction entry it answered.
    pub fn log(&self) -> Vec<String> {
        self.with_store(|store| store.log.clone())
    }

    /// Whether the store holds `type/id`.
    pub fn has(&self, key: &str) -> bool {
        self.with_store(|store| store.resources.contains_key(key))
    }

    /// The stored `type/id`, with its `meta.versionId`.
    pub fn resource(&self, key: &str) -> Option<Value> {
        self.with_store(|store| store.resources.get(key).cloned())
    }

    fn with_store<T>(&self, read: impl FnOnce(&Store) -> T) -> T {
        read(self.lock().store.as_ref().expect("a FakeFhir::store"))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake FHIR state")
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
    let (delay, stored) = {
        let mut state = state.lock().expect("fake FHIR state");
        state.requests.push(Recorded {
            method: parts.method.clone(),
            target: target.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            trailers,
        });
        let stored = state
            .store
            .as_mut()
            .map(|store| store.serve(&parts.method, &parts.uri, &parts.headers, &body));
        (state.delay, stored)
    };
    if let Some(delay) = delay {
        // The behaviour under test: a slow upstream.
        tokio::time::sleep(delay).await;
    }
    let mut response = stored.unwrap_or_else(|| canned(&target));
    if parts.headers.contains_key(http::header::ORIGIN) {
        // A FHIR server with CORS of its own, as many have: what fhirguard's `cors` replaces.
        let headers = response.headers_mut();
        for (name, value) in UPSTREAM_CORS {
            headers.insert(name, http::HeaderValue::from_static(value));
        }
    }
    Ok(response)
}

/// The CORS headers the fake answers a request carrying `Origin` with.
pub const UPSTREAM_CORS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-credentials", "true"),
    ("access-control-expose-headers", "X-Upstream-Only"),
    (
        "access-control-allow-methods",
        "GET, POST, PUT, DELETE, PATCH, OPTIONS",
    ),
];

/// A searchset Bundle naming `target`, with hop-by-hop headers (RFC 9110 §7.6.1) that must not
/// reach the client.
fn canned(target: &str) -> Response<Full<Bytes>> {
    let payload = serde_json::json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
        "link": [{ "relation": "self", "url": target }],
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/fhir+json")
        .header("connection", "keep-alive, x-upstream-hop")
        .header("x-upstream-hop", "must not reach the client")
        .header("keep-alive", "timeout=5")
        .body(Full::new(Bytes::from(payload.to_string())))
        .expect("response")
}
