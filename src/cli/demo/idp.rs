//! The demo's development identity provider: OpenID discovery, a JWKS with one ES256 key
//! generated at start, a token endpoint (client credentials, no secret — development only), and
//! the authorization-code grant with PKCE for the demo's browser app ([`authorize`]), whose
//! origin gets CORS answers.

pub mod authorize;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::{full, Body};
use authorize::{BrowserClient, Codes, Form, Login};

/// How long the tokens of the demo provider live.
const TOKEN_LIFETIME: i64 = 3600;

/// Why the development identity provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoIdpError {
    /// The P-256 signing key of its tokens could not be generated.
    #[error("cannot generate the signing key")]
    KeyGeneration,
    /// The listener it was handed has no local address to name as its issuer.
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
}

/// A running development identity provider.
#[derive(Debug, Clone)]
pub struct DevIdp {
    /// `http://127.0.0.1:<port>`: the issuer and the base of every endpoint.
    pub issuer: String,
    signer: Arc<Signer>,
    browser: Arc<BrowserClient>,
    codes: Arc<Codes>,
}

struct Signer {
    kid: String,
    key: EncodingKey,
    jwks: Value,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevIdp {
    /// Generates a key and serves discovery, JWKS, the authorization endpoint for `browser`
    /// and the token endpoint on `listener`.
    pub fn start(listener: TcpListener, browser: BrowserClient) -> Result<DevIdp, DemoIdpError> {
        let address: SocketAddr = listener.local_addr()?;
        let idp = DevIdp {
            issuer: format!("http://{address}"),
            signer: Arc::new(Signer::generate()?),
            browser: Arc::new(browser),
            codes: Arc::default(),
        };
        let served = idp.clone();
        crate::cli::demo::serve_forever(listener, move |request| {
            let idp = served.clone();
            async move { idp.answer(request).await }
        });
        Ok(idp)
    }

    /// Signs `claims` as an access token (ES256, with this provider's `kid`, RFC 9068 `typ`).
    pub fn mint(&self, claims: &Value) -> String {
        self.sign(claims, "at+jwt")
    }

    fn sign(&self, claims: &Value, typ: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.signer.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.signer.key).unwrap_or_default()
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        // The browser app calls discovery and the token endpoint from its own origin.
        let from_app = request
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|origin| origin.as_bytes() == self.browser.origin.as_bytes());
        let mut response = self.route(request).await;
        let headers = response.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let (true, Ok(origin)) = (from_app, HeaderValue::from_str(&self.browser.origin)) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let query = request.uri().query().unwrap_or_default().to_owned();
        match (method, request.uri().path()) {
            (Method::GET, "/.well-known/openid-configuration") => {
                json_response(StatusCode::OK, &self.discovery())
            }
            (Method::GET, "/jwks") => json_response(StatusCode::OK, &self.signer.jwks),
            (Method::GET, "/authorize") => authorize::login_page(query.as_bytes(), &self.browser),
            (Method::POST, "/authorize") => {
                let form = read(request).await;
                authorize::login(&form, &self.browser, &self.codes, Instant::now())
            }
            (Method::POST, "/token") => {
                let form = read(request).await;
                self.token(&Form::parse(&form))
            }
            // A form post needs no preflight, but an app may send one (Fetch standard §3.2.3).
            (Method::OPTIONS, "/token") => {
                let mut response = Response::new(full(""));
                *response.status_mut() = StatusCode::NO_CONTENT;
                let headers = response.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("POST"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("Content-Type, Accept"),
                );
                response
            }
            _ => json_response(StatusCode::NOT_FOUND, &json!({ "error": "not_found" })),
        }
    }

    /// OpenID Connect Discovery 1.0 §3, with RFC 8414's PKCE member.
    fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks", self.issuer),
            "token_endpoint": format!("{}/token", self.issuer),
            "authorization_endpoint": format!("{}/authorize", self.issuer),
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "fhirUser", "launch/patient", "patient/*.rs", "user/*.rs"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The token endpoint: `client_credentials` (any client, any scope: development only) or
    /// `authorization_code` for the browser app.
    fn token(&self, form: &Form) -> Response<Body> {
        match form.get("grant_type") {
            Some("client_credentials") => self.client_credentials(form),
            Some("authorization_code") => {
                match self.codes.redeem(form, &self.browser, Instant::now()) {
                    Ok(login) => self.browser_token(login),
                    Err((error, description)) => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({ "error": error, "error_description": description }),
                    ),
                }
            }
            _ => json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "unsupported_grant_type" }),
            ),
        }
    }

    /// `grant_type=client_credentials&client_id=…&scope=…`: a token for that client.
    fn client_credentials(&self, form: &Form) -> Response<Body> {
        let Some(client_id) = form.get("client_id") else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "invalid_client" }),
            );
        };
        let scope = form.get("scope").unwrap_or("patient/*.read");
        let claims = crate::cli::demo::claims(&self.issuer, client_id, scope, TOKEN_LIFETIME);
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": self.mint(&claims),
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "scope": scope,
            }),
        )
    }

    /// The browser app's tokens after a login: an access token with the claims fhirguard checks
    /// (`azp`, `aud`, `scp`, `fhirUser`, the launch `patient`), and an ID token naming the user
    /// (OpenID Connect Core §3.1.3.3; SMART App Launch 2.x §token response).
    fn browser_token(&self, login: Login) -> Response<Body> {
        let client_id = &self.browser.client_id;
        let scope = login.scope();
        let mut access = crate::cli::demo::claims(&self.issuer, client_id, scope, TOKEN_LIFETIME);
        access["sub"] = json!(login.fhir_user());
        access["fhirUser"] = json!(login.fhir_user());
        let identity = json!({
            "iss": self.issuer,
            "sub": login.fhir_user(),
            "aud": client_id,
            "iat": access["iat"],
            "exp": access["exp"],
            "fhirUser": login.fhir_user(),
        });
        let mut answer = json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "scope": scope,
        });
        if let Some(patient) = login.patient() {
            access["patient"] = json!(patient);
            answer["patient"] = json!(patient);
        }
        answer["access_token"] = json!(self.mint(&access));
        answer["id_token"] = json!(self.sign(&identity, "JWT"));
        json_response(StatusCode::OK, &answer)
    }
}

async fn read(request: Request<Incoming>) -> Bytes {
    match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

impl Signer {
    fn generate() -> Result<Signer, DemoIdpError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| DemoIdpError::KeyGeneration)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| DemoIdpError::KeyGeneration)?;
        // The public key is the uncompressed point 0x04 || X || Y (SEC 1 §2.3.3).
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err(DemoIdpError::KeyGeneration);
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let kid = format!("demo-{}", &x[..8]);
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid, "x": x, "y": y,
        }]});
        Ok(Signer {
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwks,
        })
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Token answers must not be cached (RFC 6749 §5.1); nothing here needs to be.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
