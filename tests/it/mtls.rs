//! Certificate-bound tokens end to end (RFC 8705): a real OpenID provider (npm
//! `oidc-provider`, `features.mTLS.certificateBoundAccessTokens`) binds `mtls-app`'s token to a
//! client certificate made here (rcgen). Over fhirguard's TLS listener, which asks for an
//! optional client certificate, the token is accepted with that certificate and refused with
//! another or none. Behind a TLS-terminating proxy the certificate comes in a header, believed
//! from a trusted peer only — and removed, not forwarded, from any other.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::client::{self, HttpClient};
use crate::support::oidc::{self, RESOURCE};
use crate::support::stack::{Guard, Stack};

/// A self-signed client certificate and its key.
struct ClientCertificate {
    certified: rcgen::CertifiedKey,
}

impl ClientCertificate {
    fn new(name: &str) -> ClientCertificate {
        ClientCertificate {
            certified: rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap(),
        }
    }

    fn url_encoded_pem(&self) -> String {
        utf8_percent_encode(&self.certified.cert.pem(), NON_ALPHANUMERIC).to_string()
    }

    fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.certified.cert.der()).into()
    }
}

/// `client`'s client_credentials token; `certificate` goes to the provider in its test header.
async fn issued(
    guard: &Guard,
    issuer: &str,
    client: &str,
    certificate: Option<&ClientCertificate>,
) -> String {
    let secret = match client {
        "fhir-app" => "fhir-app-secret".to_owned(),
        other => format!("{other}-secret"),
    };
    let basic = format!("Basic {}", STANDARD.encode(format!("{client}:{secret}")));
    let pem = certificate.map(ClientCertificate::url_encoded_pem);
    let mut headers = vec![
        ("authorization", basic.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    if let Some(pem) = &pem {
        headers.push(("x-test-client-cert", pem.as_str()));
    }
    let url = format!("{issuer}/token");
    let form = "grant_type=client_credentials&scope=system%2F*.read";
    let answer = guard
        .http
        .exchange(client::request(Method::POST, &url, None, &headers, form))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "token: {}", answer.body);
    answer.json()["access_token"].as_str().unwrap().to_owned()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn config(stack: &Stack, issuer: &str, extra: &str) -> String {
    let applications = [
        ("mtls-app", RESOURCE, r#"["Read"]"#),
        ("fhir-app", RESOURCE, r#"["Read"]"#),
    ];
    (stack.config().with(extra))
        .smart(issuer, &applications)
        .to_string()
}

/// GET over TLS to fhirguard (trusting `server`), presenting `certificate` if any.
async fn tls_get(
    port: u16,
    server: &rcgen::CertifiedKey,
    certificate: Option<&ClientCertificate>,
    token: &str,
) -> (StatusCode, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let tls = match certificate {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.certified.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(
                    c.certified.key_pair.serialize_der().into(),
                ),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let url = format!("https://localhost:{port}/Observation");
    let request = client::request(Method::GET, &url, Some(token), &[], Bytes::new());
    let answer = HttpClient::https(tls).exchange(request).await;
    (answer.status, answer.challenge().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bound_tokens_over_the_tls_listener() {
    if oidc::prepared().is_none() {
        return;
    }
    let provider = tokio::task::spawn_blocking(oidc::start).await.unwrap();
    let issuer = provider.issuer.clone();
    let tls = crate::support::tls::ServerCertificate::localhost();
    let (server, cert_file, key_file) = (&tls.certified, &tls.cert_file, &tls.key_file);
    let guard = Stack::builder()
        .serve(|stack| {
            let extra = format!(
                r#"tls: {{ certFile: "{}", keyFile: "{}" }}
senderConstraints:
  clientCertificates:
    request: true"#,
                cert_file.display(),
                key_file.display(),
            );
            config(stack, &issuer, &extra)
        })
        .await;
    let mine = ClientCertificate::new("mtls-app");
    let token = issued(&guard, &issuer, "mtls-app", Some(&mine)).await;
    assert_eq!(
        claims(&token)["cnf"]["x5t#S256"],
        URL_SAFE_NO_PAD.encode(mine.sha256()),
        "the provider bound the token"
    );
    let port = guard.running.proxy_address.port();
    let (status, _) = tls_get(port, server, Some(&mine), &token).await;
    assert_eq!(status, StatusCode::OK, "with its certificate");
    let other = ClientCertificate::new("someone-else");
    let (status, challenge) = tls_get(port, server, Some(&other), &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "with another certificate");
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("invalid_token"),
        "{challenge}"
    );
    let (status, _) = tls_get(port, server, None, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "without a certificate");
    // An unbound token still works on a connection with or without a certificate.
    let plain = issued(&guard, &issuer, "fhir-app", None).await;
    assert_eq!(tls_get(port, server, None, &plain).await.0, StatusCode::OK);
    assert_eq!(
        tls_get(port, server, Some(&other), &plain).await.0,
        StatusCode::OK
    );
    let metrics = guard.metrics().await;
    for reason in ["certificate_mismatch", "certificate_missing"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}"
        );
    }
    guard.running.stop().await;
    drop(provider);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_certificates_only_from_trusted_proxies() {
    if oidc::prepared().is_none() {
        return;
    }
    let provider = tokio::task::spawn_blocking(oidc::start).await.unwrap();
    let issuer = provider.issuer.clone();
    let config = |header: &str, trusted: &str, required: &str| {
        let issuer = issuer.clone();
        let (header, trusted, required) =
            (header.to_owned(), trusted.to_owned(), required.to_owned());
        move |stack: &Stack| {
            let extra = format!(
                r#"senderConstraints:
  clientCertificates:
    header: {header}
    trustedProxies: ["{trusted}"]
    requiredFor: [{required}]"#
            );
            config(stack, &issuer, &extra)
        }
    };
    // The test client is on 127.0.0.1: a trusted proxy, sending Envoy's header.
    let trusted = Stack::builder()
        .serve(config(
            "x-forwarded-client-cert",
            "127.0.0.0/8",
            "\"fhir-app\"",
        ))
        .await;
    let mine = ClientCertificate::new("mtls-app");
    let other = ClientCertificate::new("someone-else");
    let token = issued(&trusted, &issuer, "mtls-app", Some(&mine)).await;
    let xfcc = |c: &ClientCertificate| {
        let hash: String = c.sha256().iter().map(|b| format!("{b:02x}")).collect();
        format!("By=spiffe://fhirguard;Hash={hash};Subject=\"CN=x,O=y\"")
    };
    let get = |guard: &Guard, token: &str, header: (&str, String)| {
        let url = guard.url("/Observation");
        let headers = [(header.0, header.1.as_str())];
        let request = client::request(Method::GET, &url, Some(token), &headers, Bytes::new());
        let http = guard.http.clone();
        async move { http.exchange(request).await }
    };
    let ok = get(&trusted, &token, ("x-forwarded-client-cert", xfcc(&mine))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let no = get(&trusted, &token, ("x-forwarded-client-cert", xfcc(&other))).await;
    assert_eq!(no.status, StatusCode::UNAUTHORIZED, "another certificate");
    // The Cert member (URL-encoded PEM) when there is no Hash.
    let cert_only = format!("Cert=\"{}\"", mine.url_encoded_pem());
    let ok = get(&trusted, &token, ("x-forwarded-client-cert", cert_only)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    // fhir-app must use certificate-bound tokens here: its bearer token is useless.
    let unbound = issued(&trusted, &issuer, "fhir-app", None).await;
    let refused = get(&trusted, &unbound, ("x-other", String::new())).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "requiredFor");
    trusted.running.stop().await;

    // 127.0.0.1 is not trusted here: nginx's header is ignored, and never forwarded.
    let untrusted = Stack::builder()
        .serve(config("ssl-client-cert", "10.0.0.0/8", ""))
        .await;
    let pem = ("ssl-client-cert", mine.url_encoded_pem());
    let refused = get(&untrusted, &token, pem.clone()).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "header from an untrusted peer"
    );
    let plain = issued(&untrusted, &issuer, "fhir-app", None).await;
    let forwarded = get(&untrusted, &plain, pem).await;
    assert_eq!(forwarded.status, StatusCode::OK, "{}", forwarded.body);
    let seen = untrusted.stack.upstream.last();
    assert!(
        seen.headers.get("ssl-client-cert").is_none(),
        "the header was forwarded"
    );
    untrusted.running.stop().await;
    drop(provider);
}

/// The nginx ingress format from a trusted peer.
#[test]
fn nginx_header_is_read() {
    let mine = ClientCertificate::new("x");
    let mut headers = http::HeaderMap::new();
    headers.insert("ssl-client-cert", mine.url_encoded_pem().parse().unwrap());
    let digest = fhirguard::proxy::sender::forwarded_certificate(
        fhirguard::config::CertificateHeader::SslClientCert,
        &headers,
    );
    assert_eq!(digest, Ok(Some(mine.sha256())));
}
