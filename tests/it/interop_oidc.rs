//! Interop with a real OpenID provider: the `fhirguard` binary between npm `oidc-provider` (v9,
//! `tests/interop/oidc-provider.mjs`) and a FHIR echo upstream (`tests/interop/fhir-echo.mjs`),
//! all on 127.0.0.1.
//!
//! What it pins: a client_credentials JWT access token from a configured smart identity provider
//! (RFC 8707 resource indicator as `aud`, `azp`, `scp`, `fhirUser`, RS256 with `kid`) is accepted
//! and the request reaches the upstream under its path prefix (SPEC §4 steps 4–9); a token of the
//! same shape from a second, unconfigured provider is refused with 401 `invalid_token`
//! (SPEC §4 step 4, RFC 6750 §3.1); no token is 401 without `error` (RFC 6750 §3.1).
//!
//! Needs Node.js and `npm ci --prefix tests/interop` (.ci/run does it; this test runs it too when
//! `tests/interop/node_modules` is missing). Without `node` the test is skipped, except under CI
//! (env `CI` set), where a missing Node.js or a failed install fails the test.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::support::client::{Answer, HttpClient};

const CLIENT_ID: &str = "fhir-app";
const CLIENT_SECRET: &str = "fhir-app-secret";
/// The resource indicator the provider issues JWT access tokens for; their `aud`.
const RESOURCE: &str = "https://fhir.example.test";
/// A `system/` scope: no `fhirUser` compartment applies (reference §4.5).
const SCOPE: &str = "system/*.read";
const START_DEADLINE: Duration = Duration::from_secs(20);
const NPM_CI_DEADLINE: Duration = Duration::from_secs(300);

/// A child process that is killed (and reaped) when dropped, so a failing assertion never leaves
/// it running. Its stdin is a pipe: the Node scripts also exit when it closes.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    pub(crate) name: &'static str,
    child: Child,
    /// Every stderr line so far, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ChildGuard {
    /// Starts `command` with piped stdio; stderr lines are collected, and also sent to `lines`.
    pub(crate) fn spawn(
        name: &'static str,
        command: &mut Command,
    ) -> (ChildGuard, Receiver<String>, Receiver<String>) {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let collected = Arc::new(Mutex::new(Vec::new()));
        let stdout_lines = forward_lines(stdout, None);
        let stderr_lines = forward_lines(stderr, Some(Arc::clone(&collected)));
        let guard = ChildGuard {
            name,
            child,
            stderr: collected,
        };
        (guard, stdout_lines, stderr_lines)
    }

    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr buffer").join("\n")
    }

    /// "running" or how it ended, for failure messages.
    pub(crate) fn status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "running".to_owned(),
            Ok(Some(status)) => format!("exited, {status}"),
            Err(error) => format!("unknown ({error})"),
        }
    }

    /// Closes its stdin (the Node scripts then stop by themselves, closing what they started,
    /// such as a browser) and waits up to `grace` for it to exit; kills it after that. Its exit
    /// status, when it exited by itself.
    pub(crate) fn close_stdin_and_wait(&mut self, grace: Duration) -> Option<ExitStatus> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        None
    }

    /// Kills the process and waits for it; true when it was still running (it should be).
    pub(crate) fn stop(&mut self) -> bool {
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = self.child.kill();
        let _ = self.child.wait();
        running
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads `pipe` line by line on a thread until EOF (so the child never blocks on a full pipe),
/// sending each line to the returned receiver and keeping a copy in `keep`.
fn forward_lines(
    pipe: impl Read + Send + 'static,
    keep: Option<Arc<Mutex<Vec<String>>>>,
) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(keep) = &keep {
                keep.lock().expect("line buffer").push(line.clone());
            }
            // The receiver may be gone; the pipe is still drained.
            let _ = sender.send(line);
        }
    });
    receiver
}

/// Waits for the first line that `accept` maps to `Some`, until `deadline`.
pub(crate) fn wait_for_line<T>(
    guard: &mut ChildGuard,
    lines: &Receiver<String>,
    deadline: Instant,
    what: &str,
    mut accept: impl FnMut(&str) -> Option<T>,
) -> T {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(found) = accept(&line) {
                    return found;
                }
            }
            Err(error) => {
                let status = guard.status();
                panic!(
                    "{}: no {what} ({error}; process {status}); stderr:\n{}",
                    guard.name,
                    guard.stderr_text()
                );
            }
        }
    }
}

pub(crate) fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// `Some(())` when Node.js can run; `None` (skip) only outside CI.
pub(crate) fn node_available() -> Option<()> {
    let in_ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => Some(()),
        result => {
            assert!(
                !in_ci,
                "CI is set but `node --version` failed ({result:?}): the interop test needs Node.js"
            );
            eprintln!("skipping interop_oidc: `node` is not installed (this test needs Node.js)");
            None
        }
    }
}

/// Installs the locked Node dependencies when `node_modules` is missing.
pub(crate) fn ensure_node_modules() {
    npm_ci_when_missing(&interop_dir(), "oidc-provider");
}

/// `npm ci` in `dir` (bounded by a deadline) when its `node_modules` lacks `package`. One
/// install at a time in this test binary: suites running in parallel share `tests/interop` and
/// `tests/medplum`, and two `npm ci` in one directory leave a broken `node_modules` behind.
pub(crate) fn npm_ci_when_missing(dir: &Path, package: &str) {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
    if dir
        .join("node_modules")
        .join(package)
        .join("package.json")
        .is_file()
    {
        return;
    }
    let name = dir.display();
    let mut npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("{name}/node_modules is missing and npm cannot start: {error}")
        });
    let deadline = Instant::now() + NPM_CI_DEADLINE;
    let status = loop {
        if let Some(status) = npm.try_wait().expect("npm ci status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = npm.kill();
            let _ = npm.wait();
            panic!("`npm ci` in {name} took longer than {NPM_CI_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "`npm ci` in {name} failed: {status}");
}

/// Starts one of the Node scripts and returns it with its one-line JSON greeting.
fn spawn_node(name: &'static str, script: &str) -> (ChildGuard, Value) {
    let (guard, greeting, _stdout) = spawn_node_with(name, script, &[]);
    (guard, greeting)
}

/// Starts one of the Node scripts with `env` set; returns it with its one-line JSON greeting
/// and the rest of its stdout.
pub(crate) fn spawn_node_with(
    name: &'static str,
    script: &str,
    env: &[(&str, &str)],
) -> (ChildGuard, Value, Receiver<String>) {
    spawn_node_in(&interop_dir(), name, script, env)
}

/// Starts the Node script `script` of `dir` with `env` set; returns it with its one-line JSON
/// greeting and the rest of its stdout.
pub(crate) fn spawn_node_in(
    dir: &Path,
    name: &'static str,
    script: &str,
    env: &[(&str, &str)],
) -> (ChildGuard, Value, Receiver<String>) {
    let mut command = Command::new("node");
    command.arg(script).arg("0").current_dir(dir);
    command.envs(env.iter().copied());
    let (mut guard, stdout, _stderr) = ChildGuard::spawn(name, &mut command);
    let greeting = wait_for_line(
        &mut guard,
        &stdout,
        Instant::now() + START_DEADLINE,
        "JSON greeting on stdout",
        |line| serde_json::from_str::<Value>(line).ok(),
    );
    (guard, greeting, stdout)
}

/// Discovery, then a client_credentials grant with a resource indicator (RFC 8707) and a scope;
/// returns the access token.
async fn client_credentials_token(client: &HttpClient, issuer: &str) -> String {
    let discovery = client
        .get_url(&format!("{issuer}/.well-known/openid-configuration"), &[])
        .await;
    assert_eq!(discovery.status, StatusCode::OK, "discovery at {issuer}");
    let discovery = discovery.json();
    assert_eq!(discovery["issuer"], issuer);
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .expect("token_endpoint");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let form = format!(
        "grant_type=client_credentials&resource={}&scope={}",
        form_encode(RESOURCE),
        form_encode(SCOPE)
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri(token_endpoint)
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .expect("token request");
    let answer = client.exchange(request).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "token endpoint: {}",
        answer.body
    );
    let token = answer.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert_token_shape(&token, issuer);
    token
}

pub(crate) fn form_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The provider must really issue what the smart-provider path checks (SPEC §4 steps 5–7), or
/// the proxy assertions below would test the wrong thing.
fn assert_token_shape(token: &str, issuer: &str) {
    let part = |index: usize| -> Value {
        let segment = token.split('.').nth(index).expect("JWT segment");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .expect("base64url segment");
        serde_json::from_slice(&bytes).expect("JSON segment")
    };
    let (header, claims) = (part(0), part(1));
    assert_eq!(header["alg"], "RS256", "header {header}");
    assert!(header["kid"].is_string(), "header {header}");
    assert_eq!(claims["iss"], issuer, "claims {claims}");
    assert_eq!(claims["aud"], RESOURCE, "claims {claims}");
    assert_eq!(claims["azp"], CLIENT_ID, "claims {claims}");
    assert_eq!(claims["scp"], SCOPE, "claims {claims}");
    assert_eq!(claims["fhirUser"], "https://fhir.example.test/Patient/123");
    assert!(claims["exp"].is_u64(), "claims {claims}");
}

/// A 401 body is an `OperationOutcome` with `code: login`, identified by the response's
/// `X-Request-Id` (SPEC §4, responses).
pub(crate) fn assert_login_outcome(answer: &Answer) {
    let outcome = answer.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    assert_eq!(outcome["issue"][0]["severity"], "error", "{outcome}");
    assert_eq!(outcome["issue"][0]["code"], "login", "{outcome}");
    let request_id = answer.header("x-request-id").expect("X-Request-Id");
    assert_eq!(outcome["id"], request_id, "{outcome}");
}

/// The `address` of fhirguard's `{"message":"listening","listener":<which>}` log line.
pub(crate) fn listening_address(line: &str, which: &str) -> Option<String> {
    let event: Value = serde_json::from_str(line).ok()?;
    (event["message"] == "listening" && event["listener"] == which)
        .then(|| event["address"].as_str().map(str::to_owned))
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_openid_provider_tokens_pass_and_foreign_tokens_fail() {
    if node_available().is_none() {
        return;
    }
    ensure_node_modules();

    let (mut idp_a, greeting_a) = spawn_node("oidc-provider A", "oidc-provider.mjs");
    let (mut idp_b, greeting_b) = spawn_node("oidc-provider B", "oidc-provider.mjs");
    let (mut echo, greeting_echo) = spawn_node("fhir-echo", "fhir-echo.mjs");
    let issuer_a = greeting_a["issuer"].as_str().expect("issuer A").to_owned();
    let issuer_b = greeting_b["issuer"].as_str().expect("issuer B").to_owned();
    let echo_port = greeting_echo["port"].as_u64().expect("echo port");

    let client = HttpClient::default();
    let token_a = client_credentials_token(&client, &issuer_a).await;
    let token_b = client_credentials_token(&client, &issuer_b).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("fhirguard.json");
    let config = json!({
        "listen": "127.0.0.1:0",
        "adminListen": "127.0.0.1:0",
        "upstream": format!("http://127.0.0.1:{echo_port}/fhir"),
        "allowHttpAuthorities": true,
        "authenticationConfiguration": {
            "smartIdentityProviders": [{
                "authority": issuer_a,
                "applications": [{
                    "clientId": CLIENT_ID,
                    "audience": RESOURCE,
                    "allowedDataActions": ["Read"],
                }],
            }],
        },
    });
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(&config).expect("config JSON"),
    )
    .expect("write config");

    // Ready means every provider's keys are held (SPEC §6), i.e. A's discovery and JWKS worked.
    let (mut fhirguard, proxy, _admin) = start_fhirguard(&client, &config_path).await;

    // smart-configuration claims what this provider offers, from its own discovery (issue 19).
    let answer = client
        .get_url(
            &format!("http://{proxy}/.well-known/smart-configuration"),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let document = answer.json();
    assert_eq!(document["issuer"], issuer_a.as_str());
    assert_eq!(document["token_endpoint"], format!("{issuer_a}/token"));
    let listed = |key: &str| -> Vec<String> {
        serde_json::from_value(document[key].clone())
            .unwrap_or_else(|_| panic!("{key}: {document}"))
    };
    let capabilities = listed("capabilities");
    // Secret clients only (client_secret_basic / _post); no launch patient claim configured.
    assert!(
        capabilities.contains(&"client-confidential-symmetric".to_owned()),
        "{document}"
    );
    for absent in [
        "client-public",
        "client-confidential-asymmetric",
        "launch-ehr",
    ] {
        assert!(
            !capabilities.contains(&absent.to_owned()),
            "{absent}: {document}"
        );
    }
    assert!(listed("grant_types_supported").contains(&"client_credentials".to_owned()));
    // DPoP is on at this provider: the algorithms both it and fhirguard accept.
    let dpop = listed("dpop_signing_alg_values_supported");
    assert!(dpop.contains(&"ES256".to_owned()), "{document}");
    assert!(dpop
        .iter()
        .all(|alg| fhirguard::auth::dpop::PROOF_ALGORITHMS_TEXT.contains(alg.as_str())));
    assert!(document["introspection_endpoint"].is_string(), "{document}");

    // Token A: forwarded under the upstream's path prefix, hop-by-hop headers dropped.
    let bearer_a = format!("Bearer {token_a}");
    let answer = client
        .get_url(
            &format!("http://{proxy}/Observation?code=x"),
            &[
                ("authorization", &bearer_a),
                ("connection", "x-hop-test"),
                ("x-hop-test", "must-not-reach-upstream"),
            ],
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "token A: {}\nfhirguard stderr:\n{}",
        answer.body,
        fhirguard.stderr_text()
    );
    let echoed = answer.json();
    assert_eq!(echoed["method"], "GET", "echo {echoed}");
    assert_eq!(echoed["url"], "/fhir/Observation?code=x", "echo {echoed}");
    let upstream_headers = echoed["headers"].as_object().expect("echoed headers");
    assert!(
        upstream_headers.contains_key("x-forwarded-for"),
        "upstream got no x-forwarded-for: {echoed}"
    );
    // RFC 9110 §7.6.1: Connection and the headers it names are not forwarded.
    for hop in [
        "connection",
        "x-hop-test",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !upstream_headers.contains_key(hop),
            "hop-by-hop header {hop} reached the upstream: {echoed}"
        );
    }
    assert!(
        answer
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/fhir+json")),
        "content-type {:?}",
        answer.header("content-type")
    );
    assert!(answer.header("x-request-id").is_some(), "no X-Request-Id");

    // Token B: same shape, same client id and audience, but an issuer nobody configured.
    let bearer_b = format!("Bearer {token_b}");
    let answer = client
        .get_url(
            &format!("http://{proxy}/Observation?code=x"),
            &[("authorization", &bearer_b)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "token B");
    let challenge = answer
        .header("www-authenticate")
        .expect("WWW-Authenticate on 401");
    assert!(challenge.starts_with("Bearer"), "challenge {challenge}");
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "challenge {challenge}"
    );
    assert!(
        !challenge.contains(&token_b),
        "the token is echoed: {challenge}"
    );
    assert_login_outcome(&answer);

    // No token: 401 without an error code (RFC 6750 §3.1).
    let answer = client
        .get_url(&format!("http://{proxy}/Observation?code=x"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "no token");
    let challenge = answer
        .header("www-authenticate")
        .expect("WWW-Authenticate on 401");
    assert!(challenge.starts_with("Bearer"), "challenge {challenge}");
    assert!(!challenge.contains("error="), "challenge {challenge}");
    assert_login_outcome(&answer);

    // Every child was still running (none crashed under the test) and is stopped now.
    for guard in [&mut fhirguard, &mut echo, &mut idp_b, &mut idp_a] {
        assert!(
            guard.stop(),
            "{} had exited early:\n{}",
            guard.name,
            guard.stderr_text()
        );
    }
}

#[test]
fn listening_lines_are_recognised() {
    let line = r#"{"timestamp":"t","level":"INFO","message":"listening","listener":"proxy","address":"127.0.0.1:4321","tls":false,"target":"fhirguard::app"}"#;
    assert_eq!(
        listening_address(line, "proxy").as_deref(),
        Some("127.0.0.1:4321")
    );
    assert_eq!(listening_address(line, "admin"), None);
    assert_eq!(listening_address("not json", "proxy"), None);
    let other = r#"{"message":"ready","listener":"proxy","address":"127.0.0.1:1"}"#;
    assert_eq!(listening_address(other, "proxy"), None);
}

/// Starts fhirguard on `config`; returns it with the proxy and admin addresses once ready.
pub(crate) async fn start_fhirguard(
    client: &HttpClient,
    config: &Path,
) -> (ChildGuard, String, String) {
    let (mut fhirguard, _stdout, stderr) = ChildGuard::spawn(
        "fhirguard",
        Command::new(env!("CARGO_BIN_EXE_fhirguard"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("FHIRGUARD_LOG")
            .env_remove("FHIRGUARD_CONFIG"),
    );
    let deadline = Instant::now() + START_DEADLINE;
    let (mut proxy, mut admin) = (None, None);
    while proxy.is_none() || admin.is_none() {
        let (which, address) = wait_for_line(
            &mut fhirguard,
            &stderr,
            deadline,
            "listening lines",
            |line| {
                ["proxy", "admin"]
                    .into_iter()
                    .find_map(|which| listening_address(line, which).map(|a| (which, a)))
            },
        );
        if which == "proxy" {
            proxy = Some(address);
        } else {
            admin = Some(address);
        }
    }
    let (proxy, admin) = (proxy.expect("proxy"), admin.expect("admin"));
    while client
        .get_url(&format!("http://{admin}/readyz"), &[])
        .await
        .status
        != StatusCode::OK
    {
        assert!(
            Instant::now() < deadline,
            "not ready:\n{}",
            fhirguard.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (fhirguard, proxy, admin)
}
