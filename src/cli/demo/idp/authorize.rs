//! The development identity provider's authorization-code grant, for the demo's browser app:
//! RFC 6749 §4.1 for one public client, with PKCE S256 required (RFC 7636) and the redirect URI
//! matched exactly (RFC 9700 §2.1). The login page asks for no password, only who the person
//! is — a patient or a clinician — and the code it issues is single-use and lives
//! `CODE_LIFETIME`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::body::{full, Body};

/// How long a code waits for its exchange. RFC 6749 §4.1.2 recommends at most ten minutes; the
/// app exchanges its code as soon as the page loads.
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// Codes waiting at once; beyond this a login is refused until some are redeemed or expire.
const MAX_PENDING: usize = 256;

/// The login page, with `{{client}}`, `{{fields}}` and `{{choices}}` to fill in.
const LOGIN_PAGE: &str = include_str!("login.html");

/// The one client registered for the authorization-code grant: the demo's browser app.
#[derive(Debug, Clone)]
pub struct BrowserClient {
    /// Its client id. A public client: it has no secret (RFC 6749 §2.1), hence PKCE.
    pub client_id: String,
    /// Its one redirect URI, matched exactly.
    pub redirect_uri: String,
    /// The app's origin, for which the provider answers CORS.
    pub origin: String,
}

/// Who the person logs in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The demo patient, `Patient/example`, with a standalone patient launch.
    Patient,
    /// A clinician, `Practitioner/demo-clinician`, who may read every patient.
    Clinician,
}

impl Login {
    const ALL: [Login; 2] = [Login::Patient, Login::Clinician];

    fn name(self) -> &'static str {
        match self {
            Login::Patient => "patient",
            Login::Clinician => "clinician",
        }
    }

    /// The scopes the provider grants, whatever the app asked for: a development provider
    /// has no consent screen.
    pub fn scope(self) -> &'static str {
        match self {
            Login::Patient => "launch/patient openid fhirUser patient/*.rs",
            Login::Clinician => "openid fhirUser user/*.rs",
        }
    }

    /// The `fhirUser` claim (SMART App Launch 2.x §scopes for requesting identity data).
    pub fn fhir_user(self) -> &'static str {
        match self {
            Login::Patient => "Patient/example",
            Login::Clinician => "Practitioner/demo-clinician",
        }
    }

    /// The launch context's patient, sent in the token response and as the access token's
    /// `patient` claim (SMART App Launch 2.x §launch context, `launch/patient`).
    pub fn patient(self) -> Option<&'static str> {
        match self {
            Login::Patient => Some("example"),
            Login::Clinician => None,
        }
    }
}

/// Form or query parameters. One sent more than once counts as absent (RFC 6749 §3.1: "request
/// and response parameters MUST NOT be included more than once").
#[derive(Debug)]
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    pub(super) fn parse(bytes: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value),
            _ => None,
        }
    }
}

/// Why an authorization request is refused (RFC 6749 §4.1.2.1).
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// An unknown client or redirect URI: shown to the person, never redirected to.
    Shown(&'static str),
    /// Anything else: sent back to the app's redirect URI.
    Redirected {
        error: &'static str,
        description: &'static str,
    },
}

/// Checks an authorization request; its code challenge when it may go on.
fn check<'a>(form: &'a Form, client: &BrowserClient) -> Result<&'a str, Refusal> {
    if form.get("client_id") != Some(client.client_id.as_str()) {
        return Err(Refusal::Shown("unknown client_id"));
    }
    if form.get("redirect_uri") != Some(client.redirect_uri.as_str()) {
        return Err(Refusal::Shown(
            "redirect_uri is not the one registered for this client",
        ));
    }
    if form.get("response_type") != Some("code") {
        return Err(Refusal::Redirected {
            error: "unsupported_response_type",
            description: "only response_type=code is supported",
        });
    }
    if form.get("code_challenge_method") != Some("S256") {
        return Err(Refusal::Redirected {
            error: "invalid_request",
            description: "PKCE is required, with code_challenge_method=S256",
        });
    }
    // A SHA-256 hash, base64url without padding (RFC 7636 §4.2).
    match form.get("code_challenge") {
        Some(challenge) if challenge.len() == 43 && URL_SAFE_NO_PAD.decode(challenge).is_ok() => {
            Ok(challenge)
        }
        _ => Err(Refusal::Redirected {
            error: "invalid_request",
            description: "code_challenge must be the base64url SHA-256 of the code_verifier",
        }),
    }
}

/// `GET /authorize`: the login page for a valid request, else the refusal.
pub(super) fn login_page(query: &[u8], client: &BrowserClient) -> Response<Body> {
    let form = Form::parse(query);
    if let Err(refusal) = check(&form, client) {
        return refuse(refusal, &form, client);
    }
    // The request travels on in hidden fields and is checked again when the form comes back.
    let fields: String = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .filter_map(|name| form.get(name).map(|value| (name, value)))
    .map(|(name, value)| {
        format!(
            "  <input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape(value)
        )
    })
    .collect();
    let choices: String = Login::ALL
        .iter()
        .map(|login| {
            let context = login
                .patient()
                .map(|p| format!(", launch context <code>patient={p}</code>"))
                .unwrap_or_default();
            format!(
                "  <button type=\"submit\" name=\"login\" value=\"{name}\">A {name} \
                 (<code>{user}</code>): <code>{scope}</code>{context}</button>\n",
                name = login.name(),
                user = login.fhir_user(),
                scope = login.scope(),
            )
        })
        .collect();
    let page = LOGIN_PAGE
        .replace("{{client}}", &escape(&client.client_id))
        .replace("{{fields}}", &fields)
        .replace("{{choices}}", &choices);
    html(StatusCode::OK, page)
}

/// `POST /authorize`: the login form. A valid request with a choice is redirected to the app
/// with a fresh code and the app's `state`.
pub(super) fn login(
    form: &[u8],
    client: &BrowserClient,
    codes: &Codes,
    now: Instant,
) -> Response<Body> {
    let form = Form::parse(form);
    let challenge = match check(&form, client) {
        Ok(challenge) => challenge,
        Err(refusal) => return refuse(refusal, &form, client),
    };
    let chosen = form
        .get("login")
        .and_then(|name| Login::ALL.into_iter().find(|l| l.name() == name));
    let Some(login) = chosen else {
        let refusal = Refusal::Redirected {
            error: "access_denied",
            description: "no login was chosen",
        };
        return refuse(refusal, &form, client);
    };
    let Some(code) = codes.issue(challenge, login, now) else {
        let refusal = Refusal::Redirected {
            error: "temporarily_unavailable",
            description: "too many logins are waiting for their token",
        };
        return refuse(refusal, &form, client);
    };
    redirect(client, &[("code", &code)], form.get("state"))
}

fn refuse(refusal: Refusal, form: &Form, client: &BrowserClient) -> Response<Body> {
    match refusal {
        Refusal::Shown(why) => html(
            StatusCode::BAD_REQUEST,
            format!(
                "<!doctype html><title>Login refused</title><h1>Login refused</h1><p>{}</p>",
                escape(why)
            ),
        ),
        Refusal::Redirected { error, description } => redirect(
            client,
            &[("error", error), ("error_description", description)],
            form.get("state"),
        ),
    }
}

/// A 303 to the app's redirect URI with `parameters` and `state` (RFC 9700 §4.12: 303, so the
/// browser does not post the login form to the app).
fn redirect(
    client: &BrowserClient,
    parameters: &[(&str, &str)],
    state: Option<&str>,
) -> Response<Body> {
    let mut location = url::form_urlencoded::Serializer::new(String::new());
    location.extend_pairs(parameters);
    if let Some(state) = state {
        location.append_pair("state", state);
    }
    let location = format!("{}?{}", client.redirect_uri, location.finish());
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut response = Response::new(full(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A login page must not be framed by another site (clickjacking, RFC 6749 §10.13).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Codes issued and not yet redeemed.
#[derive(Debug, Default)]
pub(super) struct Codes(Mutex<HashMap<String, Pending>>);

#[derive(Debug)]
struct Pending {
    code_challenge: String,
    login: Login,
    issued: Instant,
}

/// Why a code is not exchanged for a token (RFC 6749 §5.2): `error` and its description.
pub(super) type TokenRefusal = (&'static str, &'static str);

impl Codes {
    /// A fresh code for `login`, bound to `code_challenge`; `None` when too many are waiting.
    fn issue(&self, code_challenge: &str, login: Login, now: Instant) -> Option<String> {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| now.duration_since(p.issued) < CODE_LIFETIME);
        if pending.len() >= MAX_PENDING {
            return None;
        }
        let mut bytes = [0_u8; 32];
        SystemRandom::new().fill(&mut bytes).ok()?;
        let code = URL_SAFE_NO_PAD.encode(bytes);
        let entry = Pending {
            code_challenge: code_challenge.to_owned(),
            login,
            issued: now,
        };
        pending.insert(code.clone(), entry);
        Some(code)
    }

    /// The token request of the authorization-code grant (RFC 6749 §4.1.3, RFC 7636 §4.5–4.6):
    /// the login its code was issued for.
    pub(super) fn redeem(
        &self,
        form: &Form,
        client: &BrowserClient,
        now: Instant,
    ) -> Result<Login, TokenRefusal> {
        if form.get("client_id") != Some(client.client_id.as_str()) {
            return Err(("invalid_client", "unknown client_id"));
        }
        let code = form
            .get("code")
            .ok_or(("invalid_request", "code is missing"))?;
        // Removed before anything else is checked: a code is spent by its first use, right or
        // wrong (RFC 6749 §4.1.2).
        let pending = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(code)
            .ok_or(("invalid_grant", "the code is unknown or already used"))?;
        if now.duration_since(pending.issued) >= CODE_LIFETIME {
            return Err(("invalid_grant", "the code has expired"));
        }
        if form.get("redirect_uri") != Some(client.redirect_uri.as_str()) {
            return Err((
                "invalid_grant",
                "redirect_uri is not the one of the authorization request",
            ));
        }
        let verifier = form
            .get("code_verifier")
            .ok_or(("invalid_request", "code_verifier is missing"))?;
        if !is_verifier(verifier) {
            return Err((
                "invalid_request",
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        if challenge(verifier) != pending.code_challenge {
            return Err((
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            ));
        }
        Ok(pending.login)
    }
}

/// RFC 7636 §4.1: `code-verifier = 43*128unreserved`.
fn is_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// RFC 7636 §4.2, S256: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests;
