//! The TLS listener: PEM certificate and key from the config, h2 and HTTP/1.1 by ALPN.

use std::time::Duration;

use crate::support::stack::{Guard, HttpClient, Stack};
use crate::support::token::{self, now, TestKey};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;

/// How long a stopping fhirguard lets requests finish: these tests stop it at the end.
const GRACE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn tls_listener_serves_h2_and_http1() {
    let tls = crate::support::tls::ServerCertificate::localhost();
    let (certified, cert_file, key_file) = (&tls.certified, &tls.cert_file, &tls.key_file);

    let Guard {
        stack: Stack {
            idp, key, upstream, ..
        },
        running,
        http,
        ..
    } = Stack::builder()
        .key(TestKey::rsa("tls-1"))
        .grace(GRACE)
        .serve(|stack| {
            let tls = format!(
                r#"tls: {{ certFile: "{}", keyFile: "{}" }}"#,
                cert_file.display(),
                key_file.display(),
            );
            (stack.config().with(&tls))
                .primary(&stack.idp.base_url(), "https://fhir.example.org")
                .to_string()
        })
        .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = HttpClient::https(tls);

    let token = token::base_claims(&idp.issuer(), "https://fhir.example.org", now())
        .claim("roles", serde_json::json!(["FHIR Data Reader"]))
        .sign(&key);
    let port = running.proxy_address.port();
    let request = Request::get(format!("https://localhost:{port}/Patient/1"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = client.exchange(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.version, http::Version::HTTP_2, "ALPN chose h2");
    let seen = upstream.last();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // Plain HTTP to the TLS port is not served.
    let request = Request::get(format!("http://127.0.0.1:{port}/Patient/1"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(http.try_exchange(request).await.is_err());
    running.stop().await;
}

/// An https upstream whose certificate is trusted through `upstream.caFile`.
#[tokio::test]
async fn an_https_upstream_is_reached_with_an_extra_ca_file() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();

    // The upstream: TLS on 127.0.0.1:0, answering with the path it saw.
    let server_tls = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certified.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let body = format!("{{\"seen\":\"{}\"}}", request.uri().path());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    let g = Stack::builder()
        .key(TestKey::rsa("tls-up-1"))
        .upstream_url(format!("https://localhost:{port}/fhir"))
        .upstream_settings(&format!("caFile: \"{}\"", ca_file.display()))
        .grace(GRACE)
        .serve(|stack| {
            (stack.config())
                .primary(&stack.idp.base_url(), "https://fhir.example.org")
                .to_string()
        })
        .await;
    let Stack { idp, key, .. } = &g.stack;
    let token = token::base_claims(&idp.issuer(), "https://fhir.example.org", now())
        .claim("roles", serde_json::json!(["FHIR Data Reader"]))
        .sign(key);
    let response = g.get("/Patient/7", Some(&token)).await;
    assert_eq!(response.status, StatusCode::OK);
    let body = Bytes::from(response.body);
    assert_eq!(body, Bytes::from_static(b"{\"seen\":\"/fhir/Patient/7\"}"));
    g.running.stop().await;
}
