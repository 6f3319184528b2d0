//! A fake OpenID provider on 127.0.0.1:0: `/.well-known/openid-configuration` (issuer
//! configurable, by default its own base URL) and `/jwks`. Keys can be added or replaced,
//! the provider can answer 500 or stop listening (connection refused) and come back on the
//! same port, and it counts the discovery and key-set requests it serves. With
//! [`FakeIdp::introspect_with`] it also has an RFC 7662 endpoint, `/introspect`, that gives one
//! answer to every token after a delay and records how many calls it had in flight at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Default)]
struct State {
    issuer: Option<String>,
    keys: Vec<Value>,
    /// Answer every request with this status instead.
    failing: Option<StatusCode>,
    discovery_fetches: usize,
    jwks_fetches: usize,
    /// `/introspect`'s answer and how long it takes.
    introspection: Option<(Value, Duration)>,
    introspections: usize,
    introspections_in_flight: usize,
    introspections_most_in_flight: usize,
}

/// A running fake identity provider.
#[derive(Debug)]
pub struct FakeIdp {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Option<JoinHandle<()>>,
}

impl FakeIdp {
    /// Starts serving with no keys.
    pub async fn start() -> FakeIdp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake IdP");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State::default()));
        let server = Some(tokio::spawn(serve(listener, Arc::clone(&state), address)));
        FakeIdp {
            address,
            state,
            server,
        }
    }

    /// Starts serving `keys` (public JWKs).
    pub async fn with_keys(keys: Vec<Value>) -> FakeIdp {
        let idp = FakeIdp::start().await;
        idp.set_keys(keys);
        idp
    }

    /// `http://127.0.0.1:<port>`: the authority to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The issuer discovery announces.
    pub fn issuer(&self) -> String {
        self.lock()
            .issuer
            .clone()
            .unwrap_or_else(|| self.base_url())
    }

    /// Announces another issuer (e.g. `https://sts.windows.net/<tid>/` to mimic Entra).
    pub fn set_issuer(&self, issuer: &str) {
        self.lock().issuer = Some(issuer.to_owned());
    }

    /// Replaces the key set.
    pub fn set_keys(&self, keys: Vec<Value>) {
        self.lock().keys = keys;
    }

    /// Adds a key to the set (rotation: new key published next to the old one).
    pub fn add_key(&self, key: Value) {
        self.lock().keys.push(key);
    }

    /// Answer every request with `status` (e.g. 500) until [`FakeIdp::heal`].
    pub fn fail_with(&self, status: StatusCode) {
        self.lock().failing = Some(status);
    }

    /// Serve normally again.
    pub fn heal(&self) {
        self.lock().failing = None;
    }

    /// Stops listening and drops open connections: connections are refused.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port after [`FakeIdp::stop`].
    pub async fn restart(&mut self) {
        self.stop();
        // The aborted task drops its listener when the runtime next polls it: retry briefly.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if tokio::time::Instant::now() > deadline => {
                    panic!("rebind fake IdP: {error}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        self.server = Some(tokio::spawn(serve(
            listener,
            Arc::clone(&self.state),
            self.address,
        )));
    }

    /// Answers every introspection request with `answer` after `delay` (and advertises the
    /// endpoint in discovery).
    pub fn introspect_with(&self, answer: Value, delay: Duration) {
        self.lock().introspection = Some((answer, delay));
    }

    /// Introspection requests received, and the most that were in flight at once.
    pub fn introspections(&self) -> (usize, usize) {
        let state = self.lock();
        (state.introspections, state.introspections_most_in_flight)
    }

    /// Discovery documents served (failures included).
    pub fn discovery_fetches(&self) -> usize {
        self.lock().discovery_fetches
    }

    /// Key sets served (failures included).
    pub fn jwks_fetches(&self) -> usize {
        self.lock().jwks_fetches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake IdP state")
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts until aborted; aborting drops the connection tasks too.
async fn serve(listener: TcpListener, state: Arc<Mutex<State>>, address: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move {
                    if request.uri().path() == "/introspect" {
                        return Ok::<_, Infallible>(introspect(&state).await);
                    }
                    Ok::<_, Infallible>(answer(&state, &request, address))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// `/introspect`: the configured answer after its delay, counting the calls in flight.
async fn introspect(state: &Mutex<State>) -> Response<Full<Bytes>> {
    let configured = {
        let mut state = state.lock().expect("fake IdP state");
        state.introspections += 1;
        state.introspections_in_flight += 1;
        state.introspections_most_in_flight = state
            .introspections_most_in_flight
            .max(state.introspections_in_flight);
        state.introspection.clone()
    };
    let Some((answer, delay)) = configured else {
        state
            .lock()
            .expect("fake IdP state")
            .introspections_in_flight -= 1;
        return respond(StatusCode::NOT_FOUND, Bytes::new());
    };
    tokio::time::sleep(delay).await;
    state
        .lock()
        .expect("fake IdP state")
        .introspections_in_flight -= 1;
    respond(StatusCode::OK, Bytes::from(answer.to_string()))
}

fn answer(
    state: &Mutex<State>,
    request: &Request<Incoming>,
    address: SocketAddr,
) -> Response<Full<Bytes>> {
    let mut state = state.lock().expect("fake IdP state");
    let base = format!("http://{address}");
    let body = match request.uri().path() {
        "/.well-known/openid-configuration" => {
            state.discovery_fetches += 1;
            let issuer = state.issuer.clone().unwrap_or_else(|| base.clone());
            let mut document = json!({
                "issuer": issuer,
                "jwks_uri": format!("{base}/jwks"),
                "authorization_endpoint": format!("{base}/authorize"),
                "token_endpoint": format!("{base}/token"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            });
            if state.introspection.is_some() {
                document["introspection_endpoint"] = json!(format!("{base}/introspect"));
            }
            document
        }
        "/jwks" => {
            state.jwks_fetches += 1;
            json!({ "keys": state.keys })
        }
        _ => return respond(StatusCode::NOT_FOUND, Bytes::new()),
    };
    if let Some(status) = state.failing {
        return respond(status, Bytes::from_static(b"{\"error\":\"down\"}"));
    }
    respond(StatusCode::OK, Bytes::from(body.to_string()))
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The YAML of a config whose identity providers are `primary` (`(authority, audience)`) and
/// `smart` (`(authority, [(clientId, audience)])`, each application `allowedDataActions: [Read]`),
/// with http authorities allowed, for `Config::parse`.
pub fn config_yaml(primary: Option<(&str, &str)>, smart: &[(&str, &[(&str, &str)])]) -> String {
    let mut yaml =
        String::from("upstream: \"http://127.0.0.1:1/fhir\"\nallowHttpAuthorities: true\n");
    yaml.push_str("authenticationConfiguration:\n");
    if let Some((authority, audience)) = primary {
        yaml.push_str(&format!(
            "  authority: \"{authority}\"\n  audience: \"{audience}\"\n"
        ));
    }
    if !smart.is_empty() {
        yaml.push_str("  smartIdentityProviders:\n");
        for (authority, apps) in smart {
            yaml.push_str(&format!(
                "    - authority: \"{authority}\"\n      applications:\n"
            ));
            for (client, audience) in *apps {
                yaml.push_str(&format!(
                    "        - clientId: \"{client}\"\n          audience: \"{audience}\"\n          allowedDataActions: [\"Read\"]\n"
                ));
            }
        }
    }
    yaml
}
