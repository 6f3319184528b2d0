//! The one harness: fhirguard between its fakes. [`Stack::builder`] starts a fake primary
//! authority (one signing key), optionally a second, SMART provider, and the fake FHIR server
//! (recording, or an in-memory store); [`StackBuilder::serve`] also starts fhirguard in-process on
//! the YAML a suite writes for them, once it reports ready. Suites that start fhirguard several
//! times, from a file, or as a process take the [`Stack`] and call [`start_ready`] /
//! [`start_ready_with`] themselves. Also here: a plain HTTP client.
//!
//! [`Stack::yaml`] and [`Stack::token`] give primary-authority tokens authorized by a
//! `roles.mappings` entry, so what a test grants is decided by the config it writes, not by
//! SMART scope rules.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fhirguard::app::{self, Running, StartOptions};
use fhirguard::config::Config;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::fhir_store::Search;
use super::idp::FakeIdp;
use super::poll::eventually;
use super::token::{self, now, TestKey};
use super::upstream::FakeFhir;

/// The audience of the primary authority's tokens.
pub const AUDIENCE: &str = "https://fhir.example.org";
/// The role the tokens carry; each config maps it to data actions.
pub const ROLE: &str = "ops-tester";

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
    pub upstream: FakeFhir,
}

/// What [`Stack::builder`] starts.
#[derive(Debug)]
pub struct StackBuilder {
    key: Option<TestKey>,
    smart: Option<TestKey>,
    store: Option<(Vec<Value>, Search)>,
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

    /// Starts the fakes.
    pub async fn start(self) -> Stack {
        let key = self.key.unwrap_or_else(|| TestKey::rsa("ops-1"));
        let idp = FakeIdp::with_keys(vec![key.jwk()]).await;
        let smart = match self.smart {
            Some(key) => Some(Provider::start(key).await),
            None => None,
        };
        let upstream = match self.store {
            Some((seed, search)) => FakeFhir::store(seed, search).await,
            None => FakeFhir::start().await,
        };
        Stack {
            idp,
            key,
            smart,
            upstream,
        }
    }

    /// Starts the fakes, then fhirguard in-process on the YAML `config` writes for them, once
    /// it reports ready.
    pub async fn serve(self, config: impl FnOnce(&Stack) -> String) -> Guard {
        let stack = self.start().await;
        let yaml = config(&stack);
        let running = start_ready(Config::parse(&yaml).expect("the suite's config")).await;
        Guard {
            stack,
            running,
            http: HttpClient::default(),
        }
    }
}

/// fhirguard running in-process between a [`Stack`]'s fakes.
#[derive(Debug)]
pub struct Guard {
    pub stack: Stack,
    pub running: Running,
    pub http: HttpClient,
}

impl Guard {
    /// `http://<proxy address><target>`.
    pub fn url(&self, target: &str) -> String {
        format!("http://{}{target}", self.running.proxy_address)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http.metrics(self.running.admin_address).await
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            key: None,
            smart: None,
            store: None,
        }
    }

    /// The default stack: a primary authority and the recording upstream.
    pub async fn start() -> Stack {
        Stack::builder().start().await
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
upstream: "{upstream}"
allowHttpAuthorities: true
roles:
  mappings:
    {ROLE}: {actions}
{extra}
authenticationConfiguration:
  authority: "{authority}"
  audience: "{AUDIENCE}"
"#,
            upstream = self.upstream.base_url("/fhir"),
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
        grace: Duration::from_secs(5),
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

/// fhirguard in-process on `config`, not waiting for it to be ready: for tests of what it does
/// before (an identity provider down at start).
pub async fn start_unready(config: Config) -> Running {
    let options = StartOptions {
        config_path: None,
        grace: Duration::from_secs(5),
    };
    app::start(config, options).await.expect("fhirguard starts")
}

/// An HTTP/1.1 client with a connection pool and a per-request deadline.
#[derive(Debug, Clone)]
pub struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl Default for HttpClient {
    fn default() -> HttpClient {
        HttpClient(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl HttpClient {
    /// Sends `method` to `http://{address}{target}`, with the bearer token if any; the status
    /// and body, or why there is no answer within 20 s.
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
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{address}{target}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.0.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(20), exchange)
            .await
            .map_err(|_| format!("no answer from {address}{target} within 20 s"))?
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

    /// Waits until the admin listener reports ready.
    pub async fn wait_ready(&self, admin: SocketAddr) {
        eventually(
            "fhirguard reports ready",
            Duration::from_secs(20),
            || async move {
                matches!(
                    self.get(admin, "/readyz", None).await,
                    Ok((StatusCode::OK, _))
                )
            },
        )
        .await;
    }
}
