//! The ceiling for fhirguard's stack in the load harness (`benches/load/run.sh`): a reverse
//! proxy with no authentication, on the same pieces fhirguard is built from (tokio, hyper,
//! hyper-util's auto server and pooled client, rustls with aws-lc-rs, mimalloc) and fhirguard's
//! own listener settings and TLS set-up (`server::connection_builder`, `server::tls_acceptor`),
//! and nothing else: no decision, no header hygiene, no metrics, no limits.
//!
//! ```text
//! bare_proxy LISTEN UPSTREAM_BASE [CERT_PEM KEY_PEM]
//! bare_proxy 127.0.0.1:18086 http://127.0.0.1:18081/fhir /tmp/cert.pem /tmp/key.pem
//! ```
//!
//! A request for `/Patient/1` goes to `UPSTREAM_BASE/Patient/1` (HTTP/1.1, kept alive); with a
//! certificate and key the listener speaks TLS and offers h2 and http/1.1 by ALPN. One worker
//! thread when the process may run on one core (as fhirguard does), else one per core.
//!
//! With `BARE_CONTRACT_HEADERS=1` it also sends upstream the headers fhirguard's contract adds
//! (SPEC §4: `X-Forwarded-*`, `X-Request-Id`, the four identity headers), with values of the
//! load harness's lengths: what those headers cost the proxy and the upstream, without the
//! rest of fhirguard.

use std::convert::Infallible;
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use http::{HeaderName, HeaderValue};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;

use fhirguard::config::{Limits, Tls};
use fhirguard::server;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Incoming>;

/// The headers fhirguard adds to a request of the load harness, with values as long as those it
/// sends. Made at compile time, as fhirguard's header names are: only the inserts are counted.
const CONTRACT_HEADERS: [(HeaderName, HeaderValue); 8] = {
    const fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
        (
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    }
    [
        header("x-forwarded-for", "127.0.0.1"),
        header("x-forwarded-proto", "http"),
        header("x-forwarded-host", "127.0.0.1:18180"),
        header("x-request-id", "b4b4542b-9b45-c5ae-85fb-9f5443b06cf8"),
        header("x-fhirguard-client-id", "bench-app"),
        header("x-fhirguard-subject", "bench-user-0"),
        header("x-fhirguard-fhir-user", "https://fhir.bench.test/Patient/1"),
        header("x-fhirguard-issuer", "http://127.0.0.1:18182"),
    ]
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 && args.len() != 5 {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM_BASE [CERT_PEM KEY_PEM]");
        std::process::exit(2);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    runtime.block_on(run(&args));
}

async fn run(args: &[String]) {
    let listener = TcpListener::bind(&args[1]).await.expect("bind");
    let base: Arc<str> = args[2].trim_end_matches('/').into();
    let contract = std::env::var_os("BARE_CONTRACT_HEADERS").is_some_and(|v| v == "1");
    let tls = (args.len() == 5).then(|| {
        let files = Tls {
            cert_file: args[3].clone().into(),
            key_file: args[4].clone().into(),
        };
        server::tls_acceptor(&files, false).expect("certificate and key")
    });
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let upstream: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(http);
    // fhirguard's listener settings, with its default limits.
    let builder = server::connection_builder(&Limits {
        header_read_timeout: Duration::from_secs(10),
        max_header_bytes: 65536,
        max_token_bytes: 16384,
        max_bundle_bytes: 10 << 20,
        body_read_timeout: Duration::from_secs(30),
        max_buffered_bytes: 128 << 20,
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (upstream, base, tls, builder) = (
            upstream.clone(),
            Arc::clone(&base),
            tls.clone(),
            builder.clone(),
        );
        let service = service_fn(move |request| {
            forward(upstream.clone(), Arc::clone(&base), contract, request)
        });
        tokio::spawn(async move {
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        });
    }
}

async fn forward(
    upstream: Upstream,
    base: Arc<str>,
    contract: bool,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    parts.uri = Uri::try_from(format!("{base}{path}")).expect("upstream URI");
    parts.version = http::Version::HTTP_11;
    parts.headers.remove(http::header::HOST);
    if contract {
        for (name, value) in CONTRACT_HEADERS {
            parts.headers.insert(name, value);
        }
    }
    match upstream.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response),
        Err(error) => panic!("upstream: {error}"),
    }
}
