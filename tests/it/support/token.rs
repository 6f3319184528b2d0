//! Token minting for tests: signing keys generated at test time with aws-lc-rs (RSA 2048,
//! ECDSA P-256 and P-384; nothing committed), their public JWKs, and a builder that signs any
//! header and claims, including what fhirguard must refuse (`alg: none`, HMAC, `jku`). Claim
//! presets reproduce the token shapes of Entra ID v1 and v2, ADFS, Azure AD B2C and
//! Keycloak/Okta (reference §2.2, §2.3).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};

/// The current Unix time.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A private signing key with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    /// The algorithm tokens are signed with by default.
    pub alg: Algorithm,
    encoding: EncodingKey,
    public_der: Vec<u8>,
    jwk: Value,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl TestKey {
    /// A fresh RSA 2048 key; tokens default to RS256.
    pub fn rsa(kid: &str) -> TestKey {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
        // jsonwebtoken wants PKCS#1 DER for RSA; its PEM reader unwraps PKCS#8 for us.
        let pem = pem("PRIVATE KEY", pkcs8.as_ref());
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA PEM");
        let public_der = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
            .expect("SPKI")
            .as_ref()
            .to_vec();
        TestKey::finish(kid, Algorithm::RS256, encoding, public_der)
    }

    /// A fresh ECDSA P-256 key (ES256).
    pub fn ec_p256(kid: &str) -> TestKey {
        TestKey::ec(kid, Algorithm::ES256)
    }

    /// A fresh ECDSA P-384 key (ES384).
    pub fn ec_p384(kid: &str) -> TestKey {
        TestKey::ec(kid, Algorithm::ES384)
    }

    fn ec(kid: &str, alg: Algorithm) -> TestKey {
        let signing = if alg == Algorithm::ES256 {
            &ECDSA_P256_SHA256_FIXED_SIGNING
        } else {
            &ECDSA_P384_SHA384_FIXED_SIGNING
        };
        let pair = EcdsaKeyPair::generate(signing).expect("EC key generation");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8");
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let public_der = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
            .expect("SPKI")
            .as_ref()
            .to_vec();
        TestKey::finish(kid, alg, encoding, public_der)
    }

    fn finish(kid: &str, alg: Algorithm, encoding: EncodingKey, public_der: Vec<u8>) -> TestKey {
        let jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
        let mut jwk = serde_json::to_value(jwk).expect("JWK JSON");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        TestKey {
            kid: kid.to_owned(),
            alg,
            encoding,
            public_der,
            jwk,
        }
    }

    /// The same key under another default algorithm (e.g. PS256 for an RSA key); the JWK's
    /// `alg` follows.
    pub fn with_alg(mut self, alg: Algorithm) -> TestKey {
        self.alg = alg;
        self.jwk["alg"] = serde_json::to_value(alg).expect("alg");
        self
    }

    /// The same key material under another `kid`.
    pub fn with_kid(mut self, kid: &str) -> TestKey {
        self.kid = kid.to_owned();
        self.jwk["kid"] = json!(kid);
        self
    }

    /// The public JWK (`kty`, `n`/`e` or `crv`/`x`/`y`, `kid`, `use: sig`, `alg`).
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The public JWK without `alg` (as Entra publishes its keys).
    pub fn jwk_without_alg(&self) -> Value {
        let mut jwk = self.jwk.clone();
        jwk.as_object_mut().expect("object").remove("alg");
        jwk
    }

    /// The public key as SubjectPublicKeyInfo PEM: the classic "HMAC with the public key" secret.
    pub fn public_key_pem(&self) -> String {
        pem("PUBLIC KEY", &self.public_der)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Any header and claims, signed any way.
#[derive(Debug, Clone, Default)]
pub struct TokenBuilder {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    no_kid: bool,
}

impl TokenBuilder {
    pub fn new() -> TokenBuilder {
        TokenBuilder::default()
    }

    /// Sets a claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> TokenBuilder {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without(mut self, name: &str) -> TokenBuilder {
        self.claims.remove(name);
        self
    }

    /// Sets a header parameter (`alg` and `kid` here win over the key's).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> TokenBuilder {
        self.header.insert(name.to_owned(), value.into());
        self
    }

    /// No `kid` header at all.
    pub fn no_kid(mut self) -> TokenBuilder {
        self.no_kid = true;
        self
    }

    /// The claims as they stand.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    fn encode(&self, alg: &str, kid: Option<&str>) -> String {
        let mut header = Map::new();
        header.insert("typ".into(), json!("JWT"));
        header.insert("alg".into(), json!(alg));
        if let (Some(kid), false) = (kid, self.no_kid) {
            header.insert("kid".into(), json!(kid));
        }
        header.extend(self.header.clone());
        if self.no_kid {
            header.remove("kid");
        }
        let h = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
        let c = URL_SAFE_NO_PAD.encode(Value::Object(self.claims.clone()).to_string());
        format!("{h}.{c}")
    }

    /// Signed with `key` under its algorithm (or the header's `alg`, if one was set and valid).
    pub fn sign(&self, key: &TestKey) -> String {
        let alg = self
            .header
            .get("alg")
            .and_then(|a| serde_json::from_value::<Algorithm>(a.clone()).ok())
            .unwrap_or(key.alg);
        let name = serde_json::to_value(alg).expect("alg");
        let input = self.encode(name.as_str().expect("alg name"), Some(&key.kid));
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, alg).expect("sign");
        format!("{input}.{signature}")
    }

    /// HS256 over `secret` (e.g. a provider's public key): must always be refused.
    pub fn sign_hmac(&self, secret: &[u8], kid: Option<&str>) -> String {
        let input = self.encode("HS256", kid);
        let key = EncodingKey::from_secret(secret);
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).expect("sign");
        format!("{input}.{signature}")
    }

    /// Any `alg` name with a meaningless signature: for checks that come before verification.
    pub fn forged(&self, alg: &str, kid: Option<&str>) -> String {
        format!("{}.c2lnbmF0dXJl", self.encode(alg, kid))
    }

    /// `alg: none`, empty signature (RFC 7519 §6.1): must always be refused.
    pub fn unsigned(&self, kid: Option<&str>) -> String {
        format!("{}.", self.encode("none", kid))
    }
}

/// `iss`, `aud`, `iat`/`nbf`/`exp` (valid for an hour) and `sub`: the claims every shape has.
pub fn base_claims(issuer: &str, audience: &str, now: u64) -> TokenBuilder {
    TokenBuilder::new()
        .claim("iss", issuer)
        .claim("aud", audience)
        .claim("iat", now)
        .claim("nbf", now)
        .claim("exp", now + 3600)
        .claim("sub", "subject-1")
}

/// The Entra ID v1 issuer of a tenant (trailing slash included, reference §2.2).
pub fn entra_v1_issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

/// The Entra ID v2 issuer of a tenant.
pub fn entra_v2_issuer(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/v2.0")
}

/// An Entra v1 access token: `appid`, `scp` as one string, `roles` array, `ver: 1.0`.
pub fn entra_v1(tenant: &str, audience: &str, client: &str, now: u64) -> TokenBuilder {
    base_claims(&entra_v1_issuer(tenant), audience, now)
        .claim("ver", "1.0")
        .claim("tid", tenant)
        .claim("oid", "00000000-0000-0000-0000-0000000000a1")
        .claim("appid", client)
        .claim("appidacr", "1")
        .claim("scp", "user_impersonation")
        .claim("roles", json!(["FHIR Data Reader", "fhirDataContributor"]))
        .claim("upn", "user@contoso.example")
}

/// An Entra v2 access token: `azp`, `aud` usually the resource's client id, `ver: 2.0`.
pub fn entra_v2(tenant: &str, audience: &str, client: &str, now: u64) -> TokenBuilder {
    base_claims(&entra_v2_issuer(tenant), audience, now)
        .claim("ver", "2.0")
        .claim("tid", tenant)
        .claim("oid", "00000000-0000-0000-0000-0000000000a2")
        .claim("azp", client)
        .claim("azpacr", "1")
        .claim("scp", "patient.Observation.read patient.Patient.read")
        .claim("roles", json!(["FHIR Data Reader"]))
}

/// An ADFS access token: `appid`, `scp`, `upn`, `unique_name`, no `tid`.
pub fn adfs(issuer: &str, audience: &str, client: &str, now: u64) -> TokenBuilder {
    base_claims(issuer, audience, now)
        .claim("appid", client)
        .claim("scp", "openid user_impersonation")
        .claim("auth_time", now)
        .claim(
            "authmethod",
            "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport",
        )
        .claim("upn", "user@contoso.example")
        .claim("unique_name", "CONTOSO\\user")
        .claim("ver", "1.0")
}

/// An Azure AD B2C access token for a smart provider: `aud` is the API's client-id GUID, `azp`
/// the calling app, `scp`, `tfp`, and `extension_fhirUser` from a custom attribute.
pub fn b2c(
    issuer: &str,
    audience_guid: &str,
    client: &str,
    fhir_user: &str,
    now: u64,
) -> TokenBuilder {
    base_claims(issuer, audience_guid, now)
        .claim("ver", "1.0")
        .claim("azp", client)
        .claim("scp", "patient.all.read")
        .claim("tfp", "B2C_1_signupsignin")
        .claim("extension_fhirUser", fhir_user)
}

/// A Keycloak/Okta access token: `azp`, `scope` as one string, `aud` array, `fhirUser`.
pub fn keycloak(
    issuer: &str,
    audience: &str,
    client: &str,
    fhir_user: &str,
    now: u64,
) -> TokenBuilder {
    base_claims(issuer, audience, now)
        .claim("aud", json!(["account", audience]))
        .claim("typ", "Bearer")
        .claim("azp", client)
        .claim("scope", "openid profile patient/*.read launch/patient")
        .claim("fhirUser", fhir_user)
        .claim("realm_access", json!({ "roles": ["offline_access"] }))
}
