//! Issue 11, request hygiene before any decision: method tunnels (class 3), CORS preflights with
//! a body (4), identity-header lookalikes and `Forwarded` / `X-Real-IP` (6), `Host` against
//! `:authority` (10), and slow clients (11: the first-head deadline from accept, the body read
//! timeout, the buffered-bytes budget). fhirguard runs in-process between the fake identity
//! provider and the recording fake FHIR server; each test pins the status, the OperationOutcome,
//! what the upstream received (or that it received nothing), and the metrics. The slow-client
//! tests use raw sockets on 127.0.0.1 and short limits, and assert that fhirguard closes the
//! connection within the bound.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::support::binary::Explain;
use crate::support::client::{self, Answer};
use crate::support::exposition::{metric, sum};
use crate::support::poll::eventually;
use crate::support::stack::{Guard, HttpClient, Stack};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body::Frame;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// fhirguard between the fake identity provider and the fake FHIR server, with a token.
struct Hygiene {
    guard: Guard,
    token: String,
}

impl std::ops::Deref for Hygiene {
    type Target = Guard;

    fn deref(&self) -> &Guard {
        &self.guard
    }
}

impl Hygiene {
    /// `extra`: top-level YAML (limits, tls). The role grants every data action.
    async fn start(extra: &str) -> Hygiene {
        let guard = Stack::builder()
            .serve(|stack| stack.yaml("[\"*\"]", extra))
            .await;
        let token = guard.stack.token();
        Hygiene { guard, token }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    async fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series).unwrap_or_else(|| panic!("no {series}"))
    }

    fn upstream_saw_nothing(&self) {
        let seen = self.stack.upstream.requests();
        assert!(seen.is_empty(), "the upstream received {seen:?}");
    }
}

/// A 400 OperationOutcome (`invalid`) whose diagnostics name `rule`.
fn assert_refused(reply: &Answer, rule: &str) {
    assert_outcome(reply, StatusCode::BAD_REQUEST, "invalid", rule);
}

/// fhirguard's refusal ([`Answer::assert_outcome`]) with `status`, `code` and diagnostics
/// holding `words`.
fn assert_outcome(reply: &Answer, status: StatusCode, code: &str, words: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    reply.assert_outcome(code);
    let diagnostics = reply.diagnostics();
    assert!(
        diagnostics.contains(words),
        "{diagnostics:?} lacks {words:?}"
    );
}

/// Sends one request with any body type, HTTP/1.1 or (with `h2`) HTTP/2 prior knowledge.
async fn exchange<B>(request: Request<B>, h2: bool) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    client::exchange_once(request, h2).await
}

fn empty(method: &str, url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    with_body(method, url, headers, "")
}

fn with_body(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// A body of unknown length: chunked over HTTP/1.1, DATA frames without `content-length` over
/// HTTP/2. `None` sends no data at all (a chunked empty body over HTTP/1.1).
#[derive(Debug)]
struct Unsized(Option<Bytes>);

impl http_body::Body for Unsized {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
}

fn streamed(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&'static str>,
) -> Request<Unsized> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Unsized(body.map(|b| Bytes::from_static(b.as_bytes()))))
        .unwrap()
}

/// The headers of a CORS preflight.
const PREFLIGHT: [(&str, &str); 2] = [
    ("origin", "https://app.example.org"),
    ("access-control-request-method", "GET"),
];

/// A CORS preflight's headers plus `extra`.
fn preflight_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    PREFLIGHT.iter().chain(extra).copied().collect()
}

// ---------------------------------------------------------------------------------------------
// Class 3: method tunnels.

const OVERRIDE_HEADERS: [&str; 6] = [
    "X-HTTP-Method-Override",
    "x-method-override",
    "X-HTTP-METHOD",
    "X_HTTP_Method_Override",
    "x_method_override",
    "X-HTTP_Method",
];

#[tokio::test]
async fn method_override_headers_are_400_on_every_path_before_the_anonymous_step() {
    let g = Hygiene::start("").await;
    let bearer = g.bearer();
    let bearer = bearer.as_str();
    for name in OVERRIDE_HEADERS {
        for value in ["DELETE", ""] {
            let cases = [
                // Authenticated, a method the token may use.
                empty(
                    "GET",
                    &g.url("/Patient/1"),
                    &[("authorization", bearer), (name, value)],
                ),
                with_body(
                    "POST",
                    &g.url("/Patient/_search"),
                    &[
                        ("authorization", bearer),
                        ("content-type", "application/x-www-form-urlencoded"),
                        (name, value),
                    ],
                    "name=x",
                ),
                // Anonymous: no token, an anonymous path, a preflight.
                empty("GET", &g.url("/metadata"), &[(name, value)]),
                empty("HEAD", &g.url("/$versions"), &[(name, value)]),
                empty(
                    "OPTIONS",
                    &g.url("/Patient"),
                    &preflight_with(&[(name, value)]),
                ),
                // No token at all on a protected path: 400 before 401.
                empty("GET", &g.url("/Patient/1"), &[(name, value)]),
            ];
            for request in cases {
                let target = format!("{} {}", request.method(), request.uri());
                let reply = exchange(request, false).await;
                if target.starts_with("HEAD") {
                    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name}: {target}");
                    continue;
                }
                assert_refused(&reply, "request hygiene: method tunnels");
                let diagnostics = reply.diagnostics();
                assert!(
                    diagnostics.contains(&name.to_ascii_lowercase()),
                    "{name}: {diagnostics}"
                );
            }
        }
    }
    // Over HTTP/2 too.
    let reply = exchange(
        empty(
            "GET",
            &g.url("/metadata"),
            &[("x-http-method-override", "PUT")],
        ),
        true,
    )
    .await;
    assert_refused(&reply, "request hygiene: method tunnels");
    g.upstream_saw_nothing();
    let text = g.metrics().await;
    let requests = |outcome| {
        sum(
            &text,
            "fhirguard_requests_total",
            &[("method", "GET"), ("outcome", outcome)],
        )
    };
    assert!(requests("invalid") >= 20.0);
    assert_eq!(
        requests("anonymous"),
        0.0,
        "no tunnelled request passed as anonymous"
    );
}

#[tokio::test]
async fn method_parameters_in_the_query_are_400_in_every_spelling() {
    let g = Hygiene::start("").await;
    let bearer = g.bearer();
    let bearer = bearer.as_str();
    let spellings = [
        "_method=DELETE",
        "_METHOD=DELETE",
        "%5Fmethod=DELETE",
        "%5fMethod=PUT",
        "_%6Dethod=DELETE",
        "name=x&_method=DELETE",
        "name=x;_method=DELETE",
        "_method",
        "_method=",
        "_method%5B%5D=DELETE",
        "+_method=DELETE",
        ".method=DELETE",
    ];
    for query in spellings {
        for (path, headers) in [
            ("/Patient", vec![("authorization", bearer)]),
            ("/metadata", vec![]),
            ("/Patient", PREFLIGHT.to_vec()),
        ] {
            let method = if headers.len() == 2 { "OPTIONS" } else { "GET" };
            let reply = exchange(
                empty(method, &g.url(&format!("{path}?{query}")), &headers),
                false,
            )
            .await;
            assert_refused(&reply, "names a _method parameter");
        }
    }
    g.upstream_saw_nothing();
    // Lookalikes that are not the parameter pass.
    for query in [
        "name=_method",
        "x_method=1",
        "_methods=1",
        "code=a%26_method",
    ] {
        let reply = exchange(
            empty(
                "GET",
                &g.url(&format!("/Patient?{query}")),
                &[("authorization", bearer)],
            ),
            false,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        assert_eq!(
            g.stack.upstream.last().target,
            format!("/fhir/Patient?{query}")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Class 4: a CORS preflight forwards no body.

#[tokio::test]
async fn a_preflight_with_a_body_is_400_and_one_without_is_forwarded_without_one() {
    let g = Hygiene::start("").await;
    let url = g.url("/Patient");
    let refused = [
        exchange(with_body("OPTIONS", &url, &PREFLIGHT, "abc"), false).await,
        exchange(with_body("OPTIONS", &url, &PREFLIGHT, "abc"), true).await,
        // Chunked, with data and empty: any Transfer-Encoding is a body.
        exchange(streamed("OPTIONS", &url, &PREFLIGHT, Some("abc")), false).await,
        exchange(streamed("OPTIONS", &url, &PREFLIGHT, None), false).await,
        // HTTP/2 DATA without content-length: the stream stays open after the headers.
        exchange(streamed("OPTIONS", &url, &PREFLIGHT, Some("abc")), true).await,
    ];
    for reply in refused {
        assert_refused(&reply, "request hygiene: preflight bodies");
    }
    g.upstream_saw_nothing();

    for h2 in [false, true] {
        let reply = exchange(empty("OPTIONS", &url, &PREFLIGHT), h2).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let seen = g.stack.upstream.last();
        assert_eq!(
            (seen.method.as_str(), seen.target.as_str()),
            ("OPTIONS", "/fhir/Patient")
        );
        assert!(seen.body.is_empty());
        assert!(!seen.headers.contains_key("authorization"));
    }
    let explicit_zero = exchange(
        empty("OPTIONS", &url, &preflight_with(&[("content-length", "0")])),
        false,
    )
    .await;
    assert_eq!(
        explicit_zero.status,
        StatusCode::OK,
        "{}",
        explicit_zero.body
    );
    assert_eq!(g.stack.upstream.requests().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Class 6: identity-header lookalikes, `Forwarded`, `X-Real-IP`.

/// Routing overrides (`X-Original-URL` and kin) would let a server run another path or method
/// than the one fhirguard authorized, or build its links on a forged scheme or port: they never
/// reach the upstream, on any path, in any case, over either protocol.
#[tokio::test]
async fn routing_override_headers_never_reach_the_upstream() {
    let g = Hygiene::start("").await;
    let bearer = g.bearer();
    let overrides = [
        ("X-Original-URL", "/Patient/2"),
        ("x-rewrite-url", "/Patient/2"),
        ("X-ORIGINAL-URI", "/Patient/2"),
        ("X-Forwarded-Uri", "/Patient/2"),
        ("X-Forwarded-Path", "/Patient/2"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Original-Method", "DELETE"),
        ("X-Forwarded-Port", "8443"),
        ("X-Forwarded-Scheme", "https"),
        ("X-Forwarded-Server", "evil.example.org"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Url-Scheme", "https"),
    ];
    for (path, token) in [("/Patient/1", Some(bearer.as_str())), ("/metadata", None)] {
        let mut headers: Vec<(&str, &str)> = overrides.to_vec();
        if let Some(bearer) = token {
            headers.push(("authorization", bearer));
        }
        for h2 in [false, true] {
            let reply = exchange(empty("GET", &g.url(path), &headers), h2).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            let seen = g.stack.upstream.last();
            for (name, _) in overrides {
                assert!(
                    !seen.headers.contains_key(name),
                    "{path} (h2: {h2}): {name} reached the upstream"
                );
            }
            assert!(seen.target.ends_with(path), "{}", seen.target);
        }
    }
}

#[tokio::test]
async fn underscored_and_forged_identity_headers_never_reach_the_upstream() {
    let g = Hygiene::start("").await;
    let bearer = g.bearer();
    let bearer = bearer.as_str();
    let forged = [
        ("X_Fhirguard_Client_Id", "writer"),
        ("x_fhirguard_subject", "admin"),
        ("X-Fhirguard_Fhir-User", "Practitioner/1"),
        ("x-fhirguard-issuer", "https://evil.example.org"),
        ("X-Fhirguard-Client-Id", "writer"),
        ("X_Forwarded_For", "10.6.6.6"),
        ("x_forwarded_host", "evil.example.org"),
        ("X_Real_IP", "10.6.6.6"),
        ("Custom_Header", "1"),
    ];
    let normal = [
        ("accept", "application/fhir+json"),
        ("prefer", "return=representation"),
        ("if-none-match", "W/\"3\""),
        ("x-custom-header", "kept"),
    ];
    for (path, token) in [("/Patient/1", Some(bearer)), ("/metadata", None)] {
        let mut headers: Vec<(&str, &str)> = forged.iter().chain(&normal).copied().collect();
        if let Some(bearer) = token {
            headers.push(("authorization", bearer));
        }
        for h2 in [false, true] {
            let reply = exchange(empty("GET", &g.url(path), &headers), h2).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            let seen = g.stack.upstream.last();
            let underscored: Vec<&str> = seen
                .headers
                .keys()
                .map(http::HeaderName::as_str)
                .filter(|name| name.contains('_'))
                .collect();
            assert!(
                underscored.is_empty(),
                "{path}: {underscored:?} reached the upstream"
            );
            for (name, value) in normal {
                assert_eq!(seen.headers[name], value, "{path}: {name}");
            }
            let identity = |name: &str| {
                seen.headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            match token {
                Some(_) => {
                    assert_eq!(
                        identity("x-fhirguard-client-id").as_deref(),
                        Some("ops-client")
                    );
                    assert_eq!(
                        seen.headers.get_all("x-fhirguard-client-id").iter().count(),
                        1
                    );
                    assert_eq!(identity("x-fhirguard-issuer"), Some(g.stack.idp.issuer()));
                }
                None => {
                    for name in [
                        "x-fhirguard-client-id",
                        "x-fhirguard-subject",
                        "x-fhirguard-issuer",
                    ] {
                        assert_eq!(identity(name), None, "{path}: {name}");
                    }
                }
            }
            assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
            assert!(!seen.headers.contains_key("x-real-ip"));
        }
    }
}

/// A body of fixed frames: data, then trailers.
#[derive(Debug)]
struct Framed(std::collections::VecDeque<Frame<Bytes>>);

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[tokio::test]
async fn trailer_fields_never_reach_the_upstream() {
    // An HTTP/2 upstream: hyper would forward trailers there (over HTTP/1.1 it sends none,
    // the `Trailer` header being hop-by-hop).
    let Guard { stack, running, .. } = Stack::builder()
        .upstream_settings("http2: true")
        .serve(|stack| stack.yaml("[\"*\"]", ""))
        .await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-fhirguard-client-id", "writer".parse().unwrap());
    trailers.insert("x-trailing", "1".parse().unwrap());
    let body = Framed(
        [
            Frame::data(Bytes::from_static(b"{\"resourceType\":\"Patient\"}")),
            Frame::trailers(trailers),
        ]
        .into(),
    );
    let request = Request::post(format!("http://{}/Patient", running.proxy_address))
        .header("authorization", format!("Bearer {}", stack.token()))
        .header("content-type", "application/fhir+json")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let reply = exchange(request, true).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = stack.upstream.last();
    assert_eq!(
        seen.body,
        Bytes::from_static(b"{\"resourceType\":\"Patient\"}")
    );
    assert_eq!(seen.trailers, None, "trailers reached the upstream");
    assert_eq!(seen.headers["x-fhirguard-client-id"], "ops-client");
}

#[tokio::test]
async fn forwarded_and_x_real_ip_cannot_be_forged() {
    let g = Hygiene::start("").await;
    let bearer = g.bearer();
    let bearer = bearer.as_str();
    let host = g.running.proxy_address.to_string();
    let reply = exchange(
        empty(
            "GET",
            &g.url("/Patient/1"),
            &[
                ("authorization", bearer),
                ("forwarded", "for=10.6.6.6;host=evil.example.org"),
                ("x-real-ip", "10.6.6.6"),
                ("x-forwarded-for", "10.5.5.5"),
            ],
        ),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = g.stack.upstream.last();
    // The last element is fhirguard's, as the last X-Forwarded-For address is.
    assert_eq!(
        seen.headers["forwarded"],
        format!("for=10.6.6.6;host=evil.example.org, for=127.0.0.1;proto=http;host=\"{host}\"")
    );
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-for"], "10.5.5.5, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-host"], host.as_str());
}

// ---------------------------------------------------------------------------------------------
// Class 10: `Host` and the request's authority must agree.

#[tokio::test]
async fn an_h2_authority_and_a_host_that_disagree_are_400() {
    let g = Hygiene::start("").await;
    let bearer = g.bearer();
    let bearer = bearer.as_str();
    let url = g.url("/Patient/1");
    for host in ["evil.example.org", "127.0.0.1", "127.0.0.1:1", ""] {
        for auth in [Some(bearer), None] {
            let mut headers = vec![("host", host)];
            headers.extend(auth.map(|b| ("authorization", b)));
            let reply = exchange(empty("GET", &url, &headers), true).await;
            assert_refused(&reply, "request hygiene: ambiguous authority");
        }
        // The anonymous path and a preflight too.
        let reply = exchange(empty("GET", &g.url("/metadata"), &[("host", host)]), true).await;
        assert_refused(&reply, "RFC 9113 §8.3.1");
        let reply = exchange(
            empty(
                "OPTIONS",
                &g.url("/Patient"),
                &preflight_with(&[("host", host)]),
            ),
            true,
        )
        .await;
        assert_refused(&reply, "ambiguous authority");
    }
    g.upstream_saw_nothing();
    // Agreeing (ASCII case aside), or no Host at all: forwarded, X-Forwarded-Host the authority.
    let authority = g.running.proxy_address.to_string();
    for headers in [vec![("host", authority.as_str())], vec![]] {
        let mut headers = headers;
        headers.push(("authorization", bearer));
        let reply = exchange(empty("GET", &url, &headers), true).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            g.stack.upstream.last().headers["x-forwarded-host"],
            authority.as_str()
        );
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it (at most 10 s).
async fn raw_exchange(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_http1_absolute_target_or_a_second_host_that_disagree_are_400() {
    let g = Hygiene::start("").await;
    let address = g.running.proxy_address;
    let token = &g.token;
    let refused = [
        format!("GET http://evil.example.org/metadata HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{address}/Patient/1 HTTP/1.1\r\nHost: evil.example.org\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        format!("GET /metadata HTTP/1.1\r\nHost: {address}\r\nHost: evil.example.org\r\nConnection: close\r\n\r\n"),
        format!("GET /Patient/1 HTTP/1.1\r\nHost: {address}\r\nhost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    ];
    for request in &refused {
        let answer = raw_exchange(address, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{request}\n{answer}");
        assert!(answer.contains("ambiguous authority"), "{answer}");
    }
    g.upstream_saw_nothing();
    let agreeing = format!(
        "GET http://{address}/Patient/1 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(address, agreeing.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// Class 11: slow clients.

/// Connects, writes `sent` and nothing more, and returns how long fhirguard kept the connection
/// open; panics when it is still open after `bound`.
async fn held_open(address: SocketAddr, sent: &[u8], bound: Duration) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let mut sink = Vec::new();
    // EOF or a reset: either way fhirguard closed it. Whatever it sent first (h2 SETTINGS) is
    // read and dropped.
    let closed = tokio::time::timeout(bound, stream.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "a connection that sent {:?} was still open after {bound:?}",
        String::from_utf8_lossy(sent)
    );
    started.elapsed()
}

/// The HTTP/2 client preface (RFC 9113 §3.4) and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn connections_without_a_first_request_head_are_closed_within_the_deadline() {
    let g = Hygiene::start("limits: { headerReadTimeout: 1s }").await;
    let address = g.running.proxy_address;
    let slow: [&[u8]; 5] = [
        b"",
        b"PRI * HTTP/2.0\r\n",
        H2_PREFACE,
        b"GET /metadata HTTP/1.1\r\nHost: x\r\n",
        b"G",
    ];
    let bound = Duration::from_secs(4);
    // All at once: each has its own deadline from its own accept. The admin listener too.
    let admin = tokio::spawn(held_open(g.running.admin_address, b"", bound));
    let closes = slow.map(|sent| tokio::spawn(held_open(address, sent, bound)));
    let mut kept = Vec::new();
    for close in closes {
        kept.push(close.await.unwrap());
    }
    for (sent, kept) in slow.iter().zip(&kept) {
        assert!(
            *kept >= Duration::from_millis(900),
            "{:?} closed after {kept:?}, before the deadline",
            String::from_utf8_lossy(sent)
        );
    }
    assert!(admin.await.unwrap() >= Duration::from_millis(900));
    g.upstream_saw_nothing();
    let text = g.metrics().await;
    assert_eq!(
        metric(&text, "fhirguard_head_timeouts_total{listener=\"proxy\"}"),
        Some(slow.len() as f64)
    );
    assert_eq!(
        metric(&text, "fhirguard_head_timeouts_total{listener=\"admin\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_tls_handshake_never_finished_is_closed_within_the_deadline() {
    let tls = crate::support::tls::ServerCertificate::localhost();
    let (cert_file, key_file) = (&tls.cert_file, &tls.key_file);
    let g = Hygiene::start(&format!(
        "limits: {{ headerReadTimeout: 1s }}\ntls: {{ certFile: \"{}\", keyFile: \"{}\" }}",
        cert_file.display(),
        key_file.display()
    ))
    .await;
    let address = g.running.proxy_address;
    // A TLS record header announcing a 512-byte ClientHello, and four bytes of it.
    let partial_hello: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc";
    let bound = Duration::from_secs(4);
    for sent in [&b""[..], partial_hello] {
        let kept = held_open(address, sent, bound).await;
        assert!(kept >= Duration::from_millis(900), "closed after {kept:?}");
    }
    assert_eq!(
        g.metric("fhirguard_head_timeouts_total{listener=\"proxy\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn an_h2_connection_that_sent_its_first_request_outlives_the_deadline() {
    let g = Hygiene::start("limits: { headerReadTimeout: 1s }").await;
    let client = HttpClient::h2();
    let bearer = g.bearer();
    let bearer = bearer.as_str();
    let get = || empty("GET", &g.url("/Patient/1"), &[("authorization", bearer)]);
    let first = client.exchange(get()).await;
    assert_eq!(first.status, StatusCode::OK);
    // The deadline applies to the first head only: past it, the same connection still serves.
    // The behaviour under test: the connection stays idle past the 1 s deadline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = client.exchange(get()).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(g.stack.upstream.requests().len(), 2);
    assert_eq!(
        g.metric("fhirguard_head_timeouts_total{listener=\"proxy\"}")
            .await,
        0.0
    );
}

/// A batch bundle's head announcing `length` bytes, with `Connection: close`.
fn bundle_head(address: SocketAddr, token: &str, length: usize) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn a_stalled_bundle_body_is_408_within_the_body_read_timeout() {
    let g = Hygiene::start("limits: { bodyReadTimeout: 1s }").await;
    let address = g.running.proxy_address;
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(bundle_head(address, &g.token, 1000).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"{\"resource").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("fhirguard answers and closes within the bound")
        .unwrap();
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(answer.contains("limits.bodyReadTimeout"), "{answer}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "answered after {elapsed:?}"
    );
    g.upstream_saw_nothing();
    let text = g.metrics().await;
    assert_eq!(
        metric(&text, "fhirguard_body_read_timeouts_total"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "fhirguard_buffered_request_bytes"), Some(0.0));
    assert_eq!(
        sum(
            &text,
            "fhirguard_requests_total",
            &[("method", "POST"), ("outcome", "invalid")]
        ),
        1.0
    );
}

#[tokio::test]
async fn the_buffered_bytes_budget_is_shared_across_connections_and_503_beyond_it() {
    let g = Hygiene::start(
        "limits: { bodyReadTimeout: 3s, maxBundleBytes: 1000, maxBufferedBytes: 1000 }",
    )
    .await;
    let address = g.running.proxy_address;
    // A: announces 1000 bytes, sends 600, stalls, holding them.
    let mut stalled = TcpStream::connect(address).await.unwrap();
    stalled
        .write_all(bundle_head(address, &g.token, 1000).as_bytes())
        .await
        .unwrap();
    stalled.write_all(&[b' '; 600]).await.unwrap();
    eventually(
        "the 600 bytes are counted",
        Duration::from_millis(2500),
        || async { g.metric("fhirguard_buffered_request_bytes").await == 600.0 },
    )
    .await;
    // B: a whole 600-byte bundle would pass the budget: 503 with Retry-After, at once.
    let mut request = bundle_head(address, &g.token, 600).into_bytes();
    request.extend_from_slice(&[b' '; 600]);
    let started = Instant::now();
    let answer = raw_exchange(address, &request).await;
    // Refused at once, not after A's 3 s.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "B waited for A"
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("\"code\":\"transient\""), "{answer}");
    assert!(answer.contains("limits.maxBufferedBytes"), "{answer}");
    // A runs out of time and gives its bytes back.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), stalled.read_to_end(&mut rest))
        .await
        .expect("A is answered")
        .unwrap();
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"));
    g.upstream_saw_nothing();
    let text = g.metrics().await;
    assert_eq!(
        metric(&text, "fhirguard_buffer_full_refusals_total"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "fhirguard_buffered_request_bytes"), Some(0.0));
    assert_eq!(
        sum(
            &text,
            "fhirguard_requests_total",
            &[("method", "POST"), ("outcome", "unavailable")]
        ),
        1.0
    );
    // With the budget free again, a bundle is read and decided (an empty batch here).
    let body = br#"{"resourceType":"Bundle","type":"batch","entry":[]}"#;
    let mut request = bundle_head(address, &g.token, body.len()).into_bytes();
    request.extend_from_slice(body);
    let answer = raw_exchange(address, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// `fhirguard explain` names the rule.

#[tokio::test]
async fn explain_names_the_hygiene_rule_that_refused() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, stack.yaml("[\"*\"]", "")).unwrap();
    let token = stack.token();
    let run = |path: &str, method: &str, headers: &[&str]| {
        let mut explain = Explain::new(&file)
            .token_arg(&token)
            .method(method)
            .path(path);
        for header in headers {
            explain = explain.header(header);
        }
        explain.run()
    };
    let refusals = [
        (
            "/Patient?%5Fmethod=DELETE",
            "GET",
            &[][..],
            "400 method_tunnel",
            "request hygiene: method tunnels",
        ),
        (
            "/Patient/1",
            "GET",
            &["X_HTTP_Method_Override: DELETE"][..],
            "400 method_tunnel",
            "x_http_method_override",
        ),
        (
            "/metadata",
            "GET",
            &["x-method-override:"][..],
            "400 method_tunnel",
            "request hygiene: method tunnels",
        ),
        (
            "/Patient",
            "OPTIONS",
            &[
                "Origin: https://app.example.org",
                "Access-Control-Request-Method: GET",
                "Transfer-Encoding: chunked",
            ][..],
            "400 preflight_body",
            "request hygiene: preflight bodies",
        ),
        (
            "http://fhir.example.org/Patient/1",
            "GET",
            &["Host: evil.example.org"][..],
            "400 ambiguous_authority",
            "RFC 9113 §8.3.1",
        ),
    ];
    for (path, method, headers, verdict, rule) in refusals {
        let output = run(path, method, headers).await;
        let stdout = output.stdout;
        assert_eq!(output.code, Some(1), "{path} {headers:?}: {stdout}");
        assert!(stdout.contains(&format!("verdict: {verdict}")), "{stdout}");
        assert!(stdout.contains(rule), "{stdout}");
    }
    let allowed = run("/Patient?name=_method", "GET", &["X-Custom: 1"]).await;
    assert_eq!(allowed.code, Some(0), "{}", allowed.stdout);
    let bad = run("/Patient", "GET", &["no colon"]).await;
    assert_eq!(bad.code, Some(64));
}

/// A body fhirguard decides on (a bundle, a `_search` form) is read as the upstream will read
/// it: an encoded one (gzip, br, …) would be judged on other bytes than the upstream decodes,
/// so it is refused before anything is forwarded; `identity` is no encoding.
#[tokio::test]
async fn encoded_bodies_fhirguard_must_read_are_400() {
    let g = Hygiene::start("").await;
    let bearer = g.bearer();
    let bundle = r#"{"resourceType":"Bundle","type":"batch","entry":[]}"#;
    for (target, body) in [("/", bundle), ("/Patient/_search", "name=x")] {
        for encoding in ["gzip", "br", "deflate", "identity, gzip", "GZIP"] {
            let headers = [
                ("authorization", bearer.as_str()),
                ("content-encoding", encoding),
                ("content-type", "application/fhir+json"),
            ];
            let headers = if target == "/" {
                headers
            } else {
                [
                    headers[0],
                    headers[1],
                    ("content-type", "application/x-www-form-urlencoded"),
                ]
            };
            let reply = exchange(with_body("POST", &g.url(target), &headers, body), false).await;
            assert_outcome(
                &reply,
                StatusCode::BAD_REQUEST,
                "invalid",
                "Content-Encoding",
            );
        }
    }
    g.upstream_saw_nothing();
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-encoding", "identity"),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let reply = exchange(
        with_body("POST", &g.url("/Patient/_search"), &headers, "name=x"),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
