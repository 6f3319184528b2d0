//! The one harness: fhirguard between its fakes. [`Stack::builder`] starts a fake primary
//! authority (one signing key), optionally a second, SMART provider, and the fake FHIR server
//! (recording, or an in-memory store) — or points fhirguard at a real upstream instead;
//! [`StackBuilder::serve`] also starts fhirguard in-process on the YAML a suite writes for them
//! (from a file it watches, when asked), once it reports ready unless told not to wait. Suites
//! that start fhirguard several times on one stack call [`start_ready`] themselves; suites that
//! run the binary as a process, or real third-party peers, still take the shared client
//! ([`super::client`]), readiness polling and token minting.
//!
//! [`Stack::yaml`] and [`Stack::token`] give primary-authority tokens authorized by a
//! `roles.mappings` entry, so what a test grants is decided by the config it writes, not by
//! SMART scope rules.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fhirguard::app::{self, Running, StartOptions};
use fhirguard::config::Config;
use http::Method;
use serde_json::{json, Value};

pub use super::client::{Answer, HttpClient};

use super::client::request;
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

    /// A config on 127.0.0.1:0 whose role [`ROLE`] grants `actions` (e.g. `"[Read]"`);
    /// `extra` is appended as top-level YAML.
    pub fn yaml(&self, actions: &str, extra: &str) -> String {
        format!(
            r#"listen: "127.0.0.1:0"
adminListen: "127.0.0.1:0"
upstream: {upstream}
allowHttpAuthorities: true
roles:
  mappings:
    {ROLE}: {actions}
{extra}
authenticationConfiguration:
  authority: "{authority}"
  audience: "{AUDIENCE}"
"#,
            upstream = self.upstream_yaml(),
            authority = self.idp.base_url(),
        )
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
