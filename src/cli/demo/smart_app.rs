//! The demo's browser SMART app: one page, served on an origin of its own so that every call it
//! makes to fhirguard is cross-origin, as a real SMART app's is. It discovers the provider through
//! fhirguard's `/.well-known/smart-configuration`, logs in at the development identity provider
//! (authorization code with PKCE S256, SMART App Launch 2.x §standalone launch), then sends a
//! fixed list of requests through fhirguard and shows what each got, and why: the status,
//! `WWW-Authenticate`, and the OperationOutcome. The page and its script are plain HTML and
//! JavaScript, embedded in the binary.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::body::{full, Body};

/// The page; `{{settings}}` becomes [`AppSettings`] as JSON.
const PAGE: &str = include_str!("smart_app/index.html");
/// The page's script.
const SCRIPT: &str = include_str!("smart_app/app.js");

/// What the page needs to know, handed to it as JSON inside the page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSettings {
    /// fhirguard's base URL, which the app calls.
    pub fhir_base_url: String,
    /// The app's client id at the identity provider.
    pub client_id: String,
    /// Where the identity provider sends the browser back: the page itself.
    pub redirect_uri: String,
    /// The scopes the app asks for (the development provider grants by login, not by request).
    pub scope: String,
}

/// Serves the app on `listener` until the process ends. `identity_provider` is the provider's
/// origin, which the page's Content-Security-Policy lets it call besides fhirguard.
pub fn start(listener: TcpListener, settings: &AppSettings, identity_provider: &str) {
    // `<` is escaped so the JSON cannot end the script element it sits in.
    let json = serde_json::to_string(settings)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    let page = Bytes::from(PAGE.replace("{{settings}}", &json));
    // The page calls fhirguard and the identity provider, and nothing else.
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
         connect-src {} {identity_provider}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        settings.fhir_base_url
    );
    let policy =
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"));
    crate::cli::demo::serve_forever(listener, move |request: Request<Incoming>| {
        let response = answer(&request, &page, &policy);
        async move { response }
    });
}

fn answer(request: &Request<Incoming>, page: &Bytes, policy: &HeaderValue) -> Response<Body> {
    if request.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    let (content_type, body) = match request.uri().path() {
        "/" => ("text/html; charset=utf-8", page.clone()),
        "/app.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(SCRIPT.as_bytes()),
        ),
        _ => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy.clone());
    // The page's URL carries the authorization code on the way back from the login.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
