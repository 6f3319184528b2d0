//! The one harness: fhirguard between its fakes. [`Stack::builder`] starts a fake primary
//! authority (one signing key), optionally a second, SMART provider, and the fake FHIR server
//! (recording, or an in-memory store) — or points fhirguard at a real upstream instead;
//! [`StackBuilder::serve`] also starts fhirguard in-process on the YAML a suite writes for them
//! (from a file it watches, when asked), once it reports ready unless told not to wait. Suites
//! that start fhirguard several times on one stack call [`start_ready`] themselves; suites that
//! run the binary as a process, or real third-party peers, still take the shared client
//! ([`super::client`]), readiness polling and token minting.
//!
//! [`Guard::handle`] drives a request through fhirguard's `Proxy::handle` in-process, with no
//! socket between the test and fhirguard: the table-driven suites (SMART, compartment
//! hardening) go that way, and what is about the wire (hygiene on raw bytes, h2, TLS, timeouts,
//! the upstream's connections) takes [`Guard::call`] over TCP. The fakes stay real loopback
//! servers either way: the suites assert what they received.
//!
//! [`Stack::config`] opens every suite's config the same way ([`super::config::ConfigYaml`]);
//! [`Stack::yaml`] and [`Stack::token`] give primary-authority tokens authorized by a
//! `roles.mappings` entry, so what a test grants is decided by the config it writes, not by
//! SMART scope rules.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fhirguard::app::{self, Running, StartOptions};
use fhirguard::config::Config;
use fhirguard::proxy::Peer;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

pub use super::client::{Answer, HttpClient};

use super::client::{request, DEADLINE};
use super::config::ConfigYaml;
use super::fhir_store::Search;
use super::idp::FakeIdp;
use super::token::{self, now, TestKey};
use super::upstream::FakeFhir;

/// The audience of the primary authority's tokens.
pub const AUDIENCE: &str = "https://fhir.example.org";
/// The role the tokens carry; each config maps it to data actions.
pub const ROLE: &str = "ops-tester";
/// How long a stopping fhirguard lets requests in flight finish, unless a suite says otherwise.
const GRACE: Duration = Duration::from_secs(5);
/// The client of the requests [`Guard::handle`] drives: a loopback address, plain HTTP.
const LOOPBACK_PEER: Peer = Peer {
    address: SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50_000),
    https: false,
};

/// A fake identity provider with the key it signs with.
#[derive(Debug)]
pub struct Provider {
    pub idp: FakeIdp,
    pub key: TestKey,
}

impl Provider {
    pub async fn start(key: TestKey) -> Provider {
        let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
        Provider { idp, key }
    }
}

/// The fakes fhirguard sits between.
#[derive(Debug)]
pub struct Stack {
    /// The primary authority.
    pub idp: FakeIdp,
    pub key: TestKey,
    /// A second provider, when [`StackBuilder::smart`] asked for one.
    pub smart: Option<Provider>,
    /// The fake FHIR server (receiving nothing when [`StackBuilder::upstream_url`] names another).
    pub upstream: FakeFhir,
    /// The upstream's URL when it is not the fake.
    upstream_url: Option<String>,
    /// More keys of the `upstream` object ([`StackBuilder::upstream_settings`]).
    upstream_settings: Option<String>,
}

/// What [`Stack::builder`] starts, and how [`StackBuilder::serve`] starts fhirguard.
#[derive(Debug)]
pub struct StackBuilder {
    key: Option<TestKey>,
    smart: Option<TestKey>,
    store: Option<(Vec<Value>, Search)>,
    upstream_url: Option<String>,
    upstream_settings: Option<String>,
    config_file: Option<PathBuf>,
    grace: Duration,
    ready: bool,
    primary_down: bool,
}

impl StackBuilder {
    /// The primary authority's signing key (by default a fresh RSA key, `kid` `ops-1`).
    pub fn key(mut self, key: TestKey) -> StackBuilder {
        self.key = Some(key);
        self
    }

    /// Also a second provider, signing with `key`.
    pub fn smart(mut self, key: TestKey) -> StackBuilder {
        self.smart = Some(key);
        self
    }

    /// The upstream is the in-memory FHIR store holding `seed` (by default the recording fake).
    pub fn store(mut self, seed: Vec<Value>, search: Search) -> StackBuilder {
        self.store = Some((seed, search));
        self
    }

    /// fhirguard forwards to `url` (a real FHIR server, a raw upstream) instead of the fake.
    pub fn upstream_url(mut self, url: impl Into<String>) -> StackBuilder {
        self.upstream_url = Some(url.into());
        self
    }

    /// More keys of the `upstream` object, as flow YAML: `responseTimeout: "300ms"`.
    pub fn upstream_settings(mut self, settings: &str) -> StackBuilder {
        self.upstream_settings = Some(settings.to_owned());
        self
    }

    /// [`StackBuilder::serve`] writes the config to `path` (through it, if it is a symlink) and
    /// fhirguard loads it from there and watches it for reloads.
    pub fn config_file(mut self, path: PathBuf) -> StackBuilder {
        self.config_file = Some(path);
        self
    }

    /// How long a stopping fhirguard lets requests in flight finish (by default 5 s).
    pub fn grace(mut self, grace: Duration) -> StackBuilder {
        self.grace = grace;
        self
    }

    /// The primary authority stops listening before fhirguard starts (connection refused);
    /// `stack.idp.restart()` brings it back on the same port.
    pub fn primary_down(mut self) -> StackBuilder {
        self.primary_down = true;
        self
    }

    /// [`StackBuilder::serve`] returns once fhirguard listens, not waiting for it to be ready:
    /// for tests of what it does before (an identity provider down at start).
    pub fn unready(mut self) -> StackBuilder {
        self.ready = false;
        self
    }

    /// Starts the fakes.
    pub async fn start(self) -> Stack {
        self.start_fakes().await.0
    }

    async fn start_fakes(self) -> (Stack, Start) {
        let key = self.key.unwrap_or_else(|| TestKey::rsa("ops-1"));
        let mut idp = FakeIdp::with_keys(vec![key.jwk()]).await;
        if self.primary_down {
            idp.stop();
        }
        let smart = match self.smart {
            Some(key) => Some(Provider::start(key).await),
            None => None,
        };
        let upstream = match self.store {
            Some((seed, search)) => FakeFhir::store(seed, search).await,
            None => FakeFhir::start().await,
        };
        let stack = Stack {
            idp,
            key,
            smart,
            upstream,
            upstream_url: self.upstream_url,
            upstream_settings: self.upstream_settings,
        };
        let start = Start {
            config_file: self.config_file,
            grace: self.grace,
            ready: self.ready,
        };
        (stack, start)
    }

    /// Starts the fakes, then fhirguard in-process on the YAML `config` writes for them, once
    /// it reports ready (unless [`StackBuilder::unready`]).
    pub async fn serve(self, config: impl FnOnce(&Stack) -> String) -> Guard {
        let (stack, start) = self.start_fakes().await;
        let yaml = config(&stack);
        let running = start.run(&yaml).await;
        Guard {
            stack,
            running,
            http: HttpClient::default(),
            yaml,
        }
    }
}

/// How [`StackBuilder::serve`] starts fhirguard.
#[derive(Debug)]
struct Start {
    config_file: Option<PathBuf>,
    grace: Duration,
    ready: bool,
}

impl Start {
    async fn run(self, yaml: &str) -> Running {
        let config = match &self.config_file {
            Some(path) => {
                std::fs::write(path, yaml)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                Config::load(path).expect("the suite's config file")
            }
            None => Config::parse(yaml).expect("the suite's config"),
        };
        let options = StartOptions {
            config_path: self.config_file,
            grace: self.grace,
        };
        if self.ready {
            start_ready_with(config, options).await
        } else {
            app::start(config, options).await.expect("fhirguard starts")
        }
    }
}

/// fhirguard running in-process between a [`Stack`]'s fakes.
#[derive(Debug)]
pub struct Guard {
    pub stack: Stack,
    pub running: Running,
    pub http: HttpClient,
    /// The config it started on.
    pub yaml: String,
}

impl Guard {
    /// `http://<proxy address><target>`.
    pub fn url(&self, target: &str) -> String {
        format!("http://{}{target}", self.running.proxy_address)
    }

    /// `method target` through fhirguard, with the bearer `token` if any, `headers` and `body`.
    pub async fn call(
        &self,
        method: Method,
        target: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let url = self.url(target);
        self.http
            .exchange(request(method, &url, token, headers, body))
            .await
    }

    /// `GET target` through fhirguard, with the bearer `token` if any.
    pub async fn get(&self, target: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, target, token, &[], Bytes::new())
            .await
    }

    /// Drives `request` through `Proxy::handle` in-process: no socket, no connection (so no
    /// per-connection token memo), from a loopback peer over plain HTTP. The request reaches
    /// fhirguard as the pooled client would send it over HTTP/1.1 and the listener hand it on:
    /// an origin-form target, `Host` from the URL when not set, `Content-Length` for a body
    /// that is not empty. Like the listener, it drops the body of an answer to `HEAD`.
    pub async fn handle(&self, request: Request<Full<Bytes>>) -> Answer {
        let (mut parts, body) = request.into_parts();
        if let Some(authority) = parts.uri.authority() {
            let host = HeaderValue::from_str(authority.as_str()).expect("a valid host");
            parts.headers.entry(HOST).or_insert(host);
        }
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |target| target.as_str());
        parts.uri = Uri::try_from(target).expect("an origin-form target");
        let length = body.size_hint().exact().unwrap_or(0);
        if length > 0
            && !parts.headers.contains_key(CONTENT_LENGTH)
            && !parts.headers.contains_key(TRANSFER_ENCODING)
        {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
        let head = parts.method == Method::HEAD;
        let uri = parts.uri.clone();
        let handled = Arc::clone(&self.running.proxy).handle(
            Request::from_parts(parts, body),
            LOOPBACK_PEER,
            None,
        );
        let response = tokio::time::timeout(DEADLINE, handled)
            .await
            .unwrap_or_else(|_| panic!("{uri}: no answer within {DEADLINE:?}"));
        let (parts, body) = response.into_parts();
        let body = if head {
            Bytes::new()
        } else {
            let collected = tokio::time::timeout(DEADLINE, body.collect()).await;
            collected
                .unwrap_or_else(|_| panic!("{uri}: no whole body within {DEADLINE:?}"))
                .unwrap_or_else(|error| panic!("{uri}: {error}"))
                .to_bytes()
        };
        Answer::of(parts, &body)
    }

    /// [`Guard::call`] without a socket ([`Guard::handle`]).
    pub async fn handle_call(
        &self,
        method: Method,
        target: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let url = self.url(target);
        self.handle(request(method, &url, token, headers, body))
            .await
    }

    /// [`Guard::get`] without a socket ([`Guard::handle`]).
    pub async fn handle_get(&self, target: &str, token: Option<&str>) -> Answer {
        self.handle_call(Method::GET, target, token, &[], Bytes::new())
            .await
    }

    /// `GET path` on the admin listener.
    pub async fn admin(&self, path: &str) -> Answer {
        let url = format!("http://{}{path}", self.running.admin_address);
        self.http.get_url(&url, &[]).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http.metrics(self.running.admin_address).await
    }

    /// Waits until fhirguard reports ready.
    pub async fn wait_ready(&self) {
        self.http.wait_ready(self.running.admin_address).await;
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            key: None,
            smart: None,
            store: None,
            upstream_url: None,
            upstream_settings: None,
            config_file: None,
            grace: GRACE,
            ready: true,
            primary_down: false,
        }
    }

    /// The default stack: a primary authority and the recording upstream.
    pub async fn start() -> Stack {
        Stack::builder().start().await
    }

    /// The upstream's URL: the one [`StackBuilder::upstream_url`] named, or the fake's `/fhir`.
    pub fn upstream_url(&self) -> String {
        self.upstream_url
            .clone()
            .unwrap_or_else(|| self.upstream.base_url("/fhir"))
    }

    /// The YAML value of the `upstream` key: its URL, in an object with the settings if any.
    pub fn upstream_yaml(&self) -> String {
        let url = self.upstream_url();
        match &self.upstream_settings {
            Some(settings) => format!("{{ url: \"{url}\", {settings} }}"),
            None => format!("\"{url}\""),
        }
    }

    /// The second provider.
    pub fn smart(&self) -> &Provider {
        self.smart.as_ref().expect("a stack built with .smart(key)")
    }

    /// The opening of a config for this stack: both listeners on 127.0.0.1:0, its upstream,
    /// plain-HTTP authorities allowed; a suite adds its keys and identity providers.
    pub fn config(&self) -> ConfigYaml {
        ConfigYaml::new(self.upstream_yaml())
    }

    /// A config on 127.0.0.1:0 whose role [`ROLE`] grants `actions` (e.g. `"[Read]"`);
    /// `extra` is appended as top-level YAML.
    pub fn yaml(&self, actions: &str, extra: &str) -> String {
        self.config()
            .with(&format!("roles:\n  mappings:\n    {ROLE}: {actions}"))
            .with(extra)
            .primary(&self.idp.base_url(), AUDIENCE)
            .to_string()
    }

    /// A valid token carrying [`ROLE`].
    pub fn token(&self) -> String {
        token::base_claims(&self.idp.issuer(), AUDIENCE, now())
            .claim("appid", "ops-client")
            .claim("roles", json!([ROLE]))
            .sign(&self.key)
    }

    /// A well-signed token that expired an hour ago: always 401.
    pub fn expired_token(&self) -> String {
        token::base_claims(&self.idp.issuer(), AUDIENCE, now())
            .claim("appid", "ops-client")
            .claim("roles", json!([ROLE]))
            .claim("nbf", now() - 7200)
            .claim("exp", now() - 3600)
            .sign(&self.key)
    }
}

/// fhirguard in-process on `config` (no config file to watch), once it reports ready.
pub async fn start_ready(config: Config) -> Running {
    let options = StartOptions {
        config_path: None,
        grace: GRACE,
    };
    start_ready_with(config, options).await
}

/// fhirguard in-process on `config` with `options`, once `/readyz` answers 200: the config is
/// loaded and every identity provider's keys are held.
pub async fn start_ready_with(config: Config, options: StartOptions) -> Running {
    let running = app::start(config, options).await.expect("fhirguard starts");
    HttpClient::default()
        .wait_ready(running.admin_address)
        .await;
    running
}
