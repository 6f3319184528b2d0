//! The demo's development identity provider: OpenID discovery, a JWKS with one ES256 key
//! generated at start, and a token endpoint (client credentials, no secret — development only).

use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::{full, Body};

/// Why the development identity provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoIdpError {
    #[error("cannot generate the signing key")]
    KeyGeneration,
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
}

/// A running development identity provider.
#[derive(Debug, Clone)]
pub struct DevIdp {
    pub issuer: String,
    signer: Arc<Signer>,
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
    /// Generates a key and serves discovery, JWKS and the token endpoint on `listener`.
    pub fn start(listener: TcpListener) -> Result<DevIdp, DemoIdpError> {
        let address: SocketAddr = listener.local_addr()?;
        let issuer = format!("http://{address}");
        let signer = Arc::new(Signer::generate()?);
        let idp = DevIdp { issuer, signer };
        let served = idp.clone();
        crate::cli::demo::serve_forever(listener, move |request| {
            let idp = served.clone();
            async move { idp.answer(request).await }
        });
        Ok(idp)
    }

    /// Signs `claims` (ES256, with this provider's `kid`).
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.signer.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        jsonwebtoken::encode(&header, claims, &self.signer.key).unwrap_or_default()
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method().clone(), request.uri().path()) {
            (Method::GET, "/.well-known/openid-configuration") => json_response(
                StatusCode::OK,
                &json!({
                    "issuer": self.issuer,
                    "jwks_uri": format!("{}/jwks", self.issuer),
                    "token_endpoint": format!("{}/token", self.issuer),
                    "authorization_endpoint": format!("{}/authorize", self.issuer),
                    "grant_types_supported": ["client_credentials"],
                    "id_token_signing_alg_values_supported": ["ES256"],
                }),
            ),
            (Method::GET, "/jwks") => json_response(StatusCode::OK, &self.signer.jwks),
            (Method::POST, "/token") => {
                let body = match request.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                self.token(&body)
            }
            _ => json_response(StatusCode::NOT_FOUND, &json!({ "error": "not_found" })),
        }
    }

    /// `grant_type=client_credentials&client_id=…&scope=…`: a token for that client.
    fn token(&self, form: &[u8]) -> Response<Body> {
        let fields: Vec<(String, String)> =
            url::form_urlencoded::parse(form).into_owned().collect();
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if field("grant_type").as_deref() != Some("client_credentials") {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "unsupported_grant_type" }),
            );
        }
        let Some(client_id) = field("client_id") else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "invalid_client" }),
            );
        };
        let scope = field("scope").unwrap_or_else(|| "patient/*.read".to_owned());
        let claims = crate::cli::demo::claims(&self.issuer, &client_id, &scope, 3600);
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": self.mint(&claims),
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": scope,
            }),
        )
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
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
