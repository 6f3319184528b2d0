//! `fhirguard demo` end to end: start it on ephemeral ports, run every printed `curl` command
//! and check the status it promised, then stop it with SIGINT; and drive its browser SMART app
//! over HTTP as a browser does — the page, discovery through fhirguard, the login with PKCE,
//! the code exchange, and the app's requests through fhirguard, with CORS on every answer.

use crate::support::client::{request, Answer, HttpClient};
use crate::support::poll::eventually_blocking;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the demo if the test fails half-way.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fhirguard demo` on ephemeral ports; the demo and the walkthrough it printed.
fn start() -> (Demo, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirguard"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fhirguard demo");
    let stdout = child.stdout.take().expect("stdout");
    let demo = Demo(child);

    // Read the walkthrough on a thread so a silent demo fails by deadline, not by hanging.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo printed its walkthrough in time");
        let done = line.starts_with("Press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    (demo, lines)
}

/// The proxy's base URL, as printed.
fn proxy_url(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|line| line.trim().strip_prefix("proxy:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the proxy address is printed")
        .to_owned()
}

#[test]
fn demo_commands_answer_as_printed() {
    let (mut demo, lines) = start();

    let mut checked = 0;
    let mut expected = None;
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# ") {
            expected = rest
                .rsplit_once("(expect ")
                .and_then(|(_, status)| status.trim_end_matches(')').parse::<u16>().ok());
            continue;
        }
        let (Some(status), Some(command)) = (expected.take(), line.strip_prefix("curl -i ")) else {
            continue;
        };
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {command}"
            ))
            .output()
            .expect("run curl");
        let got = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert_eq!(got, status.to_string(), "command: curl -i {command}");
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} commands were printed");

    // The printed token-endpoint commands issue tokens that pass: a SMART v2 patient token and
    // a backend-services token.
    let proxy = proxy_url(&lines);
    let mut issued = 0;
    for line in lines
        .iter()
        .filter(|l| l.starts_with("curl -s -d grant_type="))
    {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{line} --max-time 10"))
            .output()
            .expect("run curl");
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the token endpoint answers JSON");
        let token = answer["access_token"].as_str().expect("access_token");
        let target = if line.contains("system/") {
            "Patient/other"
        } else {
            "Patient/example"
        };
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{proxy}/{target}"))
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "200", "{line}");
        issued += 1;
    }
    assert_eq!(issued, 2, "a patient and a backend token command");

    // SIGINT stops the demo cleanly.
    let pid = demo.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = eventually_blocking(Duration::from_secs(15), || demo.0.try_wait().expect("wait"))
        .expect("demo did not stop on SIGINT");
    assert!(status.success(), "demo exited with {status}");
}

/// The browser app's origin and page URL, from the printed "Open … in a browser" line.
fn app_url(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|line| line.strip_prefix("Open "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the app's URL is printed")
        .to_owned()
}

/// A fresh PKCE pair (RFC 7636 §4.1–4.2): a verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The hidden fields of an HTML form, unescaped.
fn hidden_fields(page: &str) -> Vec<(String, String)> {
    let attribute = |element: &str, name: &str| {
        let (_, rest) = element.split_once(&format!("{name}=\""))?;
        let (value, _) = rest.split_once('"')?;
        Some(
            value
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    page.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|element| Some((attribute(element, "name")?, attribute(element, "value")?)))
        .collect()
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(pairs);
    form.finish()
}

/// A form post, as a browser sends one.
async fn post_form(client: &HttpClient, url: &str, origin: Option<&str>, body: String) -> Answer {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    headers.extend(origin.map(|origin| ("origin", origin)));
    client
        .exchange(request(Method::POST, url, None, &headers, body))
        .await
}

/// The browser app as the test drives it: its settings and fhirguard's discovery document.
struct App {
    client: HttpClient,
    origin: String,
    fhir: String,
    client_id: String,
    redirect_uri: String,
    smart: Value,
}

impl App {
    /// The login page for a request with `challenge`, then the button for `login`: the code of
    /// the redirect to the app.
    async fn log_in(&self, login: &str, challenge: &str) -> String {
        let authorize = self.smart["authorization_endpoint"].as_str().unwrap();
        let query = form(&[
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", "launch/patient openid fhirUser patient/*.rs"),
            ("state", "the-app-state"),
            ("aud", &self.fhir),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]);
        let page = self
            .client
            .get_url(&format!("{authorize}?{query}"), &[])
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(page
            .body
            .contains(&format!("name=\"login\" value=\"{login}\"")));
        let action = page
            .body
            .split_once("<form method=\"post\" action=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(action, _)| action)
            .expect("the login page has a form");
        let action = url::Url::parse(authorize).unwrap().join(action).unwrap();
        let mut fields = hidden_fields(&page.body);
        fields.push(("login".to_owned(), login.to_owned()));
        let body = form(
            &fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        let answer = post_form(&self.client, action.as_str(), None, body).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let location = answer.header("location").expect("a redirect");
        let query = location
            .strip_prefix(&format!("{}?", self.redirect_uri))
            .unwrap_or_else(|| panic!("redirected to the app's exact redirect URI: {location}"));
        let parameters: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let value = |name: &str| {
            parameters
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(value("state").as_deref(), Some("the-app-state"));
        value("code").expect("a code")
    }

    /// The token request from the app's origin.
    async fn exchange(&self, code: &str, verifier: &str) -> Answer {
        let token_endpoint = self.smart["token_endpoint"].as_str().unwrap();
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("client_id", &self.client_id),
            ("code_verifier", verifier),
        ]);
        let answer = post_form(&self.client, token_endpoint, Some(&self.origin), body).await;
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some(self.origin.as_str()),
            "the token endpoint answers the app's origin"
        );
        answer
    }

    /// A login as `login`: the token response.
    async fn token(&self, login: &str) -> Value {
        let (verifier, challenge) = pkce();
        let code = self.log_in(login, &challenge).await;
        let answer = self.exchange(&code, &verifier).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.json()
    }

    /// A request through fhirguard from the app's origin, whose answer the browser lets the
    /// page read: CORS headers for the origin, `WWW-Authenticate` exposed.
    async fn fhir(&self, method: Method, path: &str, token: Option<&str>, body: &str) -> Answer {
        let url = format!("{}/{path}", self.fhir);
        let mut headers = vec![
            ("origin", self.origin.as_str()),
            ("accept", "application/fhir+json"),
        ];
        if !body.is_empty() {
            headers.push(("content-type", "application/fhir+json"));
        }
        let answer = self
            .client
            .exchange(request(
                method,
                &url,
                token,
                &headers,
                Bytes::from(body.to_owned()),
            ))
            .await;
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some(self.origin.as_str()),
            "{path}: {:?}",
            answer.headers
        );
        let exposed = answer
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(exposed.contains("www-authenticate"), "{path}: {exposed}");
        answer
    }
}

/// The diagnostics of an OperationOutcome answer.
fn diagnostics(answer: &Answer) -> String {
    let outcome = answer.json();
    assert_eq!(
        outcome["resourceType"], "OperationOutcome",
        "{}",
        answer.body
    );
    outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_app_logs_in_and_sees_what_fhirguard_allows_and_refuses() {
    let (demo, lines) = tokio::task::spawn_blocking(start).await.unwrap();
    let page_url = app_url(&lines);
    let fhir = proxy_url(&lines);
    let client = HttpClient::default();

    // The page: HTML, with the settings its script reads, on an origin of its own.
    let page = client.get_url(&page_url, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let settings: Value = page
        .body
        .split_once(r#"<script type="application/json" id="settings">"#)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| serde_json::from_str(json).expect("the settings are JSON"))
        .expect("the page carries its settings");
    assert_eq!(settings["fhirBaseUrl"], fhir.as_str());
    assert_eq!(settings["redirectUri"], page_url.as_str());
    let origin = page_url.trim_end_matches('/').to_owned();
    assert_ne!(origin, fhir, "the app is cross-origin to fhirguard");
    let script = client.get_url(&format!("{page_url}app.js"), &[]).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    for used in [
        "/.well-known/smart-configuration",
        "code_challenge_method: 'S256'",
        "Patient/other",
        "Observation?subject=Patient/other",
        "WWW-Authenticate",
    ] {
        assert!(script.body.contains(used), "app.js uses {used}");
    }

    // Discovery through fhirguard, from the app's origin.
    let discovery = client
        .get_url(
            &format!("{fhir}/.well-known/smart-configuration"),
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(discovery.status, StatusCode::OK);
    assert_eq!(
        discovery.header("access-control-allow-origin"),
        Some(origin.as_str())
    );
    let smart = discovery.json();
    assert!(smart["code_challenge_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("S256")));
    let app = App {
        client: client.clone(),
        origin: origin.clone(),
        fhir: fhir.clone(),
        client_id: settings["clientId"].as_str().unwrap().to_owned(),
        redirect_uri: page_url.clone(),
        smart,
    };

    // The identity provider: a wrong redirect URI is shown, not followed; PKCE is required.
    let authorize = app.smart["authorization_endpoint"].as_str().unwrap();
    let wrong = form(&[
        ("response_type", "code"),
        ("client_id", &app.client_id),
        ("redirect_uri", "http://127.0.0.1:1/"),
        ("code_challenge", &pkce().1),
        ("code_challenge_method", "S256"),
    ]);
    let refused = client.get_url(&format!("{authorize}?{wrong}"), &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.header("location").is_none());
    let plain = form(&[
        ("response_type", "code"),
        ("client_id", &app.client_id),
        ("redirect_uri", &page_url),
        ("state", "s"),
    ]);
    let refused = client.get_url(&format!("{authorize}?{plain}"), &[]).await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    let location = refused.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{page_url}?error=invalid_request&")),
        "{location}"
    );

    // A code is spent by its first exchange, and a wrong verifier spends it.
    let (verifier, challenge) = pkce();
    let code = app.log_in("patient", &challenge).await;
    let wrong_verifier = app.exchange(&code, &pkce().0).await;
    assert_eq!(wrong_verifier.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_verifier.json()["error"], "invalid_grant");
    let after = app.exchange(&code, &verifier).await;
    assert_eq!(
        after.json()["error"],
        "invalid_grant",
        "a refused code is spent"
    );
    let code = app.log_in("patient", &challenge).await;
    assert_eq!(app.exchange(&code, &verifier).await.status, StatusCode::OK);
    let reused = app.exchange(&code, &verifier).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert_eq!(reused.json()["error"], "invalid_grant");

    // The patient: their own record and observations, nothing of another patient, no write.
    let patient = app.token("patient").await;
    assert_eq!(patient["patient"], "example");
    assert!(patient["id_token"].is_string());
    let token = patient["access_token"].as_str().unwrap();
    let own = app
        .fhir(Method::GET, "Patient/example", Some(token), "")
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let observation = app
        .fhir(Method::GET, "Observation/bp-1", Some(token), "")
        .await;
    assert_eq!(observation.status, StatusCode::OK, "{}", observation.body);
    let search = app
        .fhir(
            Method::GET,
            "Observation?subject=Patient/example",
            Some(token),
            "",
        )
        .await;
    assert_eq!(search.status, StatusCode::OK, "{}", search.body);
    assert_eq!(search.json()["entry"][0]["resource"]["id"], "bp-1");
    assert_eq!(search.json()["entry"].as_array().unwrap().len(), 1);
    let other = app
        .fhir(Method::GET, "Patient/other", Some(token), "")
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    diagnostics(&other);
    let other_search = app
        .fhir(
            Method::GET,
            "Observation?subject=Patient/other",
            Some(token),
            "",
        )
        .await;
    assert_eq!(other_search.status, StatusCode::FORBIDDEN);
    assert!(diagnostics(&other_search).contains("Patient/other"));
    let write = r#"{"resourceType":"Observation","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/example"}}"#;
    let refused = app
        .fhir(Method::POST, "Observation", Some(token), write)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(diagnostics(&refused).contains("requires Write"));

    // No token, and a corrupted one: 401 with the challenge the page can read.
    let anonymous = app.fhir(Method::GET, "Patient/example", None, "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer "));
    let (head, signature) = token.rsplit_once('.').unwrap();
    let changed = if signature.as_bytes()[10] == b'A' {
        "B"
    } else {
        "A"
    };
    let corrupted = format!("{head}.{}{changed}{}", &signature[..10], &signature[11..]);
    let forged = app
        .fhir(Method::GET, "Patient/example", Some(&corrupted), "")
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(forged
        .header("www-authenticate")
        .unwrap()
        .contains(r#"error="invalid_token""#));
    diagnostics(&forged);

    // The write's preflight is answered by fhirguard for the app's origin.
    let preflight = client
        .exchange(request(
            Method::OPTIONS,
            &format!("{fhir}/Observation"),
            None,
            &[
                ("origin", &origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
            Bytes::new(),
        ))
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(origin.as_str())
    );

    // The clinician reads every patient, and may not write either.
    let clinician = app.token("clinician").await;
    assert!(clinician.get("patient").is_none());
    let token = clinician["access_token"].as_str().unwrap();
    let other = app
        .fhir(Method::GET, "Patient/other", Some(token), "")
        .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let other_search = app
        .fhir(
            Method::GET,
            "Observation?subject=Patient/other",
            Some(token),
            "",
        )
        .await;
    assert_eq!(other_search.status, StatusCode::OK);
    assert_eq!(other_search.json()["entry"][0]["resource"]["id"], "hr-1");
    let refused = app
        .fhir(Method::POST, "Observation", Some(token), write)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // Another origin gets no CORS headers from fhirguard or the identity provider.
    let elsewhere = client
        .get_url(
            &format!("{fhir}/.well-known/smart-configuration"),
            &[("origin", "http://127.0.0.1:1")],
        )
        .await;
    assert!(elsewhere.header("access-control-allow-origin").is_none());
    let issuer = app.smart["issuer"].as_str().unwrap();
    let idp_discovery = format!("{issuer}/.well-known/openid-configuration");
    let from_app = client.get_url(&idp_discovery, &[("origin", &origin)]).await;
    assert_eq!(
        from_app.header("access-control-allow-origin"),
        Some(origin.as_str())
    );
    let elsewhere = client
        .get_url(&idp_discovery, &[("origin", "http://127.0.0.1:1")])
        .await;
    assert!(elsewhere.header("access-control-allow-origin").is_none());
    drop(demo);
}
