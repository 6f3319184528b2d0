//! The demo's browser SMART app, driven over HTTP as a browser drives it: the page and its
//! settings, discovery through fhirguard, the login page with PKCE S256, the code exchange (a
//! wrong verifier and a reused code refused), and the app's requests through fhirguard as the
//! patient and as the clinician, with CORS headers for the app's origin on every answer.

use super::{proxy_url, start, Demo};
use crate::support::client::{request, Answer, HttpClient};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

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

/// The browser app as the test drives it: its page, its settings and fhirguard's discovery
/// document, fetched from a running demo (stopped when the app is dropped).
struct App {
    _demo: Demo,
    page: Answer,
    client: HttpClient,
    origin: String,
    fhir: String,
    client_id: String,
    redirect_uri: String,
    smart: Value,
}

impl App {
    /// Starts the demo and opens the app: its page, then discovery through fhirguard from the
    /// app's origin, as the page's script does.
    async fn open() -> App {
        let (demo, lines) = tokio::task::spawn_blocking(start).await.unwrap();
        let page_url = app_url(&lines);
        let fhir = proxy_url(&lines);
        let client = HttpClient::default();
        let page = client.get_url(&page_url, &[]).await;
        assert_eq!(page.status, StatusCode::OK);
        let settings: Value = page
            .body
            .split_once(r#"<script type="application/json" id="settings">"#)
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(json, _)| serde_json::from_str(json).expect("the settings are JSON"))
            .expect("the page carries its settings");
        assert_eq!(
            settings["fhirBaseUrl"],
            fhir.as_str(),
            "the page calls fhirguard"
        );
        let origin = page_url.trim_end_matches('/').to_owned();
        let discovery = client
            .get_url(
                &format!("{fhir}/.well-known/smart-configuration"),
                &[("origin", &origin)],
            )
            .await;
        assert_eq!(discovery.status, StatusCode::OK);
        assert_eq!(
            discovery.header("access-control-allow-origin"),
            Some(origin.as_str()),
            "fhirguard answers the app's origin"
        );
        App {
            _demo: demo,
            client,
            origin,
            fhir,
            client_id: settings["clientId"].as_str().unwrap().to_owned(),
            redirect_uri: settings["redirectUri"].as_str().unwrap().to_owned(),
            smart: discovery.json(),
            page,
        }
    }

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

const WRITE: &str = r#"{"resourceType":"Observation","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/example"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_on_its_own_origin_and_discovers_through_fhirguard() {
    let app = App::open().await;
    assert!(app
        .page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_ne!(app.origin, app.fhir, "the app is cross-origin to fhirguard");
    assert_eq!(app.redirect_uri, format!("{}/", app.origin));
    let script = app
        .client
        .get_url(&format!("{}/app.js", app.origin), &[])
        .await;
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
    // The page may call fhirguard and the identity provider, and nothing else.
    let policy = app.page.header("content-security-policy").unwrap();
    let issuer = app.smart["issuer"].as_str().unwrap();
    assert!(
        policy.contains(&format!("connect-src {} {issuer};", app.fhir)),
        "{policy}"
    );

    // Discovery names the demo provider, which offers PKCE S256 and answers the app's origin.
    assert!(app.smart["code_challenge_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("S256")));
    let idp_discovery = format!("{issuer}/.well-known/openid-configuration");
    let from_app = app
        .client
        .get_url(&idp_discovery, &[("origin", &app.origin)])
        .await;
    assert_eq!(
        from_app.header("access-control-allow-origin"),
        Some(app.origin.as_str())
    );

    // Another origin gets no CORS headers, from fhirguard or from the provider.
    for url in [
        format!("{}/.well-known/smart-configuration", app.fhir),
        idp_discovery,
    ] {
        let elsewhere = app
            .client
            .get_url(&url, &[("origin", "http://127.0.0.1:1")])
            .await;
        assert!(
            elsewhere.header("access-control-allow-origin").is_none(),
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_needs_pkce_and_the_exact_redirect_uri_and_a_code_works_once() {
    let app = App::open().await;
    // A wrong redirect URI is shown, not followed (RFC 6749 §4.1.2.1); PKCE is required.
    let authorize = app.smart["authorization_endpoint"].as_str().unwrap();
    let wrong = form(&[
        ("response_type", "code"),
        ("client_id", &app.client_id),
        ("redirect_uri", "http://127.0.0.1:1/"),
        ("code_challenge", &pkce().1),
        ("code_challenge_method", "S256"),
    ]);
    let refused = app
        .client
        .get_url(&format!("{authorize}?{wrong}"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.header("location").is_none());
    let plain = form(&[
        ("response_type", "code"),
        ("client_id", &app.client_id),
        ("redirect_uri", &app.redirect_uri),
        ("state", "s"),
    ]);
    let refused = app
        .client
        .get_url(&format!("{authorize}?{plain}"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    let location = refused.header("location").unwrap();
    let expected = format!("{}?error=invalid_request&", app.redirect_uri);
    assert!(location.starts_with(&expected), "{location}");

    // A wrong verifier is refused and spends the code.
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

    // The right verifier gets tokens, once.
    let code = app.log_in("patient", &challenge).await;
    let tokens = app.exchange(&code, &verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let tokens = tokens.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["patient"], "example");
    assert!(tokens["id_token"].is_string());
    let reused = app.exchange(&code, &verifier).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert_eq!(reused.json()["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_reads_their_own_record_and_sees_why_the_rest_is_refused() {
    let app = App::open().await;
    let tokens = app.token("patient").await;
    let token = tokens["access_token"].as_str().unwrap();

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
    let entries = search.json()["entry"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["resource"]["id"], "bp-1");

    let other = app
        .fhir(Method::GET, "Patient/other", Some(token), "")
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    diagnostics(&other);
    let other_observation = app
        .fhir(Method::GET, "Observation/hr-1", Some(token), "")
        .await;
    assert_eq!(other_observation.status, StatusCode::NOT_FOUND);
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
    let write = app
        .fhir(Method::POST, "Observation", Some(token), WRITE)
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    assert!(diagnostics(&write).contains("requires Write"));

    // No token, and a corrupted one: 401 with the challenge the page can read.
    let anonymous = app.fhir(Method::GET, "Patient/example", None, "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let challenge = anonymous.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    diagnostics(&anonymous);
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let changed = if signature.as_bytes()[10] == b'A' {
        "B"
    } else {
        "A"
    };
    let corrupted = format!("{signed}.{}{changed}{}", &signature[..10], &signature[11..]);
    let forged = app
        .fhir(Method::GET, "Patient/example", Some(&corrupted), "")
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let challenge = forged.header("www-authenticate").unwrap();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    diagnostics(&forged);

    // The write's preflight is answered by fhirguard for the app's origin.
    let preflight = app
        .client
        .exchange(request(
            Method::OPTIONS,
            &format!("{}/Observation", app.fhir),
            None,
            &[
                ("origin", &app.origin),
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
        Some(app.origin.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clinician_reads_every_patient_and_cannot_write_either() {
    let app = App::open().await;
    let tokens = app.token("clinician").await;
    assert!(tokens.get("patient").is_none());
    let token = tokens["access_token"].as_str().unwrap();
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
    let entries = other_search.json()["entry"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["resource"]["id"], "hr-1");
    let write = app
        .fhir(Method::POST, "Observation", Some(token), WRITE)
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    assert!(diagnostics(&write).contains("requires Write"));
}
