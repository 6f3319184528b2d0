//! The upstream connection lifecycle (issue 24), over real sockets: an HTTP/1.1 upstream that
//! closes idle keep-alive connections after its timeout — and drops, unanswered, a request that
//! arrives while it is closing one — with and without announcing it (`Keep-Alive: timeout=N`);
//! an HTTP/2 upstream that refuses streams; and Debian's nginx over h2c, which sends GOAWAY after
//! 1,000 requests on a connection ([`nginx`]). Every request carries a nonce and every upstream
//! records the nonce of each request it read, so a request sent twice would show.
//!
//! The idle gaps between requests are the behaviour under test, so they are real waits; each is
//! at least 100 ms away from the edge of the window it aims at.

mod nginx;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::exposition::metric;
use crate::support::stack::{Guard, Stack};

const BODY: &str = r#"{"resourceType":"Patient","id":"1"}"#;
const NONCE: &str = "x-test-nonce";

/// What the upstreams read: each request's method and nonce, in order.
#[derive(Debug, Default)]
struct Log {
    requests: Mutex<Vec<(String, String)>>,
    connections: AtomicUsize,
    /// Requests dropped unread because they arrived while their connection was being closed.
    raced: AtomicUsize,
}

impl Log {
    fn record(&self, method: &str, nonce: &str) {
        let mut requests = self.requests.lock().unwrap();
        requests.push((method.to_owned(), nonce.to_owned()));
    }

    /// How often each nonce was read.
    fn nonces(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, nonce) in self.requests.lock().unwrap().iter() {
            *counts.entry(nonce.clone()).or_default() += 1;
        }
        counts
    }
}

/// How the HTTP/1.1 upstream treats an idle keep-alive connection.
#[derive(Debug, Clone, Copy)]
struct Closing {
    /// Closed once idle this long.
    idle_timeout: Duration,
    /// A request arriving on a connection idle at least this long (and less than
    /// `idle_timeout`) finds it closing: the upstream closes it without reading the request,
    /// as a server whose idle timer fired a moment before the request came in.
    closing_from: Duration,
    /// `Keep-Alive: timeout=N` on every answer.
    announce: Option<u64>,
}

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1 that closes idle connections ([`Closing`]).
struct ClosingUpstream {
    address: SocketAddr,
    log: Arc<Log>,
}

impl ClosingUpstream {
    async fn start(closing: Closing) -> ClosingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_closing(stream, closing, Arc::clone(&shared)));
            }
        });
        ClosingUpstream { address, log }
    }
}

async fn serve_closing(mut stream: TcpStream, closing: Closing, log: Arc<Log>) {
    let mut buffer = Vec::new();
    // When the last answer was written (none yet: a new connection is not idle).
    let mut idle_since: Option<Instant> = None;
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 8192];
            let read = match idle_since {
                Some(since) if buffer.is_empty() => {
                    let left = closing.idle_timeout.saturating_sub(since.elapsed());
                    let Ok(read) = tokio::time::timeout(left, stream.read(&mut chunk)).await else {
                        return; // idle too long: closed
                    };
                    let arrived = matches!(read, Ok(n) if n > 0);
                    if arrived && since.elapsed() >= closing.closing_from {
                        log.raced.fetch_add(1, Ordering::SeqCst);
                        return; // closing as the request came in: never read
                    }
                    read
                }
                _ => stream.read(&mut chunk).await,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        assert!(header("transfer-encoding").is_none(), "{head}");
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        while buffer.len() < length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..length);
        let method = head.split(' ').next().unwrap_or_default();
        log.record(method, &header(NONCE).unwrap_or_default());
        let keep_alive = closing
            .announce
            .map(|n| format!("keep-alive: timeout={n}\r\n"))
            .unwrap_or_default();
        let body = if method == "HEAD" { "" } else { BODY };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\n{keep_alive}content-length: {}\r\n\r\n{body}",
            BODY.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        idle_since = Some(Instant::now());
    }
}

/// fhirguard, with every data action granted, in front of the upstream at `address`.
async fn proxy(address: SocketAddr, settings: &str) -> Guard {
    let mut builder = Stack::builder().upstream_url(format!("http://{address}/fhir"));
    if !settings.is_empty() {
        builder = builder.upstream_settings(settings);
    }
    builder.serve(|stack| stack.yaml("[\"*\"]", "")).await
}

/// One request through fhirguard, carrying `nonce`: its status.
async fn send(guard: &Guard, token: &str, method: &Method, nonce: &str) -> StatusCode {
    let (target, body) = match *method {
        Method::POST => ("/Patient", BODY),
        Method::GET | Method::HEAD => ("/Patient/1", ""),
        _ => ("/Patient/1", if *method == Method::PUT { BODY } else { "" }),
    };
    let headers = [(NONCE, nonce), ("content-type", "application/fhir+json")];
    let answer = guard
        .call(
            method.clone(),
            target,
            Some(token),
            &headers,
            Bytes::from(body),
        )
        .await;
    answer.status
}

/// `methods[i % len]` after a wait of `gaps[i]` each: every status, by nonce.
async fn sequence(
    guard: &Guard,
    token: &str,
    name: &str,
    methods: &[Method],
    gaps: &[u64],
) -> Vec<(String, Method, StatusCode)> {
    let mut statuses = Vec::new();
    for (i, gap) in gaps.iter().enumerate() {
        // The behaviour under test: the connection's idle time.
        tokio::time::sleep(Duration::from_millis(*gap)).await;
        let method = &methods[i % methods.len()];
        let nonce = format!("{name}-{i}");
        let status = send(guard, token, method, &nonce).await;
        statuses.push((nonce, method.clone(), status));
    }
    statuses
}

/// `tasks` sequences at once.
async fn concurrently(
    guard: &Arc<Guard>,
    token: &str,
    tasks: usize,
    methods: &'static [Method],
    gaps: &'static [u64],
) -> Vec<(String, Method, StatusCode)> {
    let calls: Vec<_> = (0..tasks)
        .map(|task| {
            let (guard, token) = (Arc::clone(guard), token.to_owned());
            tokio::spawn(async move {
                let name = format!("task{task}");
                // Staggered, so that the tasks' connections idle for different times.
                let methods: Vec<Method> =
                    methods.iter().cycle().skip(task).take(4).cloned().collect();
                let gaps: Vec<u64> = gaps.iter().map(|gap| gap + 37 * task as u64).collect();
                sequence(&guard, &token, &name, &methods, &gaps).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.extend(call.await.unwrap());
    }
    statuses
}

fn retries(text: &str, reason: &str) -> f64 {
    let series = format!("fhirguard_upstream_retries_total{{reason=\"{reason}\"}}");
    metric(text, &series).unwrap_or_else(|| panic!("{series} in {text}"))
}

/// Every request answered 200 was read once, and none other was read at all.
fn read_once_each(log: &Log, statuses: &[(String, Method, StatusCode)]) {
    let nonces = log.nonces();
    for (nonce, method, status) in statuses {
        let read = nonces.get(nonce).copied().unwrap_or(0);
        match *status {
            StatusCode::OK => assert_eq!(read, 1, "{method} {nonce} read {read} times"),
            _ => assert_eq!(read, 0, "{method} {nonce} ({status}) read {read} times"),
        }
    }
    assert!(
        nonces.values().all(|n| *n == 1),
        "a nonce read twice: {nonces:?}"
    );
}

/// Without an announcement fhirguard keeps connections longer than the upstream (the default
/// 4 s against 600 ms), so GETs meet connections being closed: each is sent again, once, on a
/// new connection, and none fails — one after another and several at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_survive_an_upstream_closing_idle_connections_unannounced() {
    let upstream = ClosingUpstream::start(Closing {
        idle_timeout: Duration::from_millis(600),
        closing_from: Duration::from_millis(200),
        announce: None,
    })
    .await;
    let guard = Arc::new(proxy(upstream.address, "").await);
    let token = guard.stack.token();
    // In the closing window (200–600 ms): 300, 450, 320, 500, 400; idle-closed: 750.
    let gaps = [0, 300, 100, 450, 750, 320, 50, 500, 400];
    let mut statuses = sequence(&guard, &token, "seq", &[Method::GET], &gaps).await;
    static GET: [Method; 1] = [Method::GET];
    statuses.extend(concurrently(&guard, &token, 4, &GET, &[310, 80, 460, 380, 700, 420]).await);
    for (nonce, _, status) in &statuses {
        assert_eq!(*status, StatusCode::OK, "{nonce}");
    }
    read_once_each(&upstream.log, &statuses);
    let raced = upstream.log.raced.load(Ordering::SeqCst);
    assert!(raced >= 5, "the sequence met the closing window: {raced}");
    let text = guard.metrics().await;
    assert_eq!(
        retries(&text, "closed"),
        raced as f64,
        "one retry per dropped GET"
    );
    assert_eq!(retries(&text, "refused_stream"), 0.0);
    Arc::into_inner(guard).unwrap().running.stop().await;
}

/// A write that met a closing connection is not sent again: a POST (never), a PUT whose body was
/// streamed (not kept). Each gets 502 and the upstream never read it. A DELETE, which has no
/// body, is sent again.
#[tokio::test]
async fn writes_that_met_a_closing_connection_are_not_sent_twice() {
    let upstream = ClosingUpstream::start(Closing {
        idle_timeout: Duration::from_millis(900),
        closing_from: Duration::from_millis(200),
        announce: None,
    })
    .await;
    let guard = proxy(upstream.address, "").await;
    let token = guard.stack.token();
    // Each write comes 450 ms after a GET that opened a new connection (the write before it
    // failed on the only one): in the closing window.
    let methods = [
        Method::GET,
        Method::POST,
        Method::GET,
        Method::PUT,
        Method::GET,
        Method::DELETE,
    ];
    let gaps = [0, 450, 0, 450, 0, 450];
    let statuses = sequence(&guard, &token, "w", &methods, &gaps).await;
    let (ok, bad_gateway) = (StatusCode::OK, StatusCode::BAD_GATEWAY);
    let expected = [ok, bad_gateway, ok, bad_gateway, ok, ok];
    for ((nonce, method, status), expected) in statuses.iter().zip(expected) {
        assert_eq!(*status, expected, "{method} {nonce}");
    }
    read_once_each(&upstream.log, &statuses);
    assert_eq!(upstream.log.raced.load(Ordering::SeqCst), 3);
    let text = guard.metrics().await;
    assert_eq!(retries(&text, "closed"), 1.0, "the DELETE alone");
    guard.running.stop().await;
}

/// With `Keep-Alive: timeout=1` announced, fhirguard reuses a connection for 500 ms at most
/// (the announcement less its margin): no request of any method meets a closing connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_keep_alive_timeout_means_no_failed_request_of_any_method() {
    let upstream = ClosingUpstream::start(Closing {
        idle_timeout: Duration::from_secs(1),
        closing_from: Duration::from_millis(700),
        announce: Some(1),
    })
    .await;
    let guard = Arc::new(proxy(upstream.address, "").await);
    let token = guard.stack.token();
    static METHODS: [Method; 4] = [Method::POST, Method::GET, Method::PUT, Method::DELETE];
    // Reused (< 400 ms), left for a new connection (600–1000 ms, the upstream's closing window
    // among them), and closed by the upstream (> 1 s).
    let gaps = [0, 300, 800, 650, 900, 200, 1100, 750, 850];
    let mut statuses = sequence(&guard, &token, "seq", &METHODS, &gaps).await;
    statuses.extend(concurrently(&guard, &token, 3, &METHODS, &[780, 250, 880, 690]).await);
    for (nonce, method, status) in &statuses {
        assert_eq!(*status, StatusCode::OK, "{method} {nonce}");
    }
    read_once_each(&upstream.log, &statuses);
    assert_eq!(upstream.log.raced.load(Ordering::SeqCst), 0);
    let text = guard.metrics().await;
    assert_eq!(retries(&text, "closed"), 0.0, "nothing to send again");
    Arc::into_inner(guard).unwrap().running.stop().await;
}

/// An HTTP/2 upstream that resets every other stream with `REFUSED_STREAM` (RFC 9113 §8.7): the
/// refused request is sent again whatever its method — a POST too — when its body is empty; a
/// POST whose body was streamed is not (502), and was never read.
#[tokio::test]
async fn refused_h2_streams_are_sent_again_whatever_the_method() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let log = Arc::new(Log::default());
    let shared = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_refusing(stream, Arc::clone(&shared)));
        }
    });
    let guard = proxy(address, "http2: true").await;
    let token = guard.stack.token();
    let mut statuses = Vec::new();
    for (i, method) in [Method::GET, Method::DELETE, Method::GET, Method::HEAD]
        .into_iter()
        .enumerate()
    {
        let nonce = format!("h2-{i}");
        statuses.push((
            nonce.clone(),
            method.clone(),
            send(&guard, &token, &method, &nonce).await,
        ));
    }
    // A POST without a body: sent again.
    let headers = [(NONCE, "h2-empty")];
    let empty = guard
        .call(
            Method::POST,
            "/Patient",
            Some(&token),
            &headers,
            Bytes::new(),
        )
        .await;
    statuses.push(("h2-empty".into(), Method::POST, empty.status));
    // A create, its body streamed from the client: refused, and not sent again.
    statuses.push((
        "h2-create".into(),
        Method::POST,
        send(&guard, &token, &Method::POST, "h2-create").await,
    ));
    let expected = [200, 200, 200, 200, 200, 502];
    for ((nonce, method, status), expected) in statuses.iter().zip(expected) {
        assert_eq!(status.as_u16(), expected, "{method} {nonce}");
    }
    read_once_each(&log, &statuses);
    let text = guard.metrics().await;
    assert_eq!(retries(&text, "refused_stream"), 5.0);
    assert_eq!(retries(&text, "closed"), 0.0);
    guard.running.stop().await;
}

/// Refuses every other stream, answers the rest with [`BODY`] after reading their body.
async fn serve_refusing(stream: TcpStream, log: Arc<Log>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else {
        return;
    };
    let mut streams = 0_usize;
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        streams += 1;
        if streams % 2 == 1 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let (head, mut body) = request.into_parts();
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
            }
            let nonce = head.headers.get(NONCE).and_then(|v| v.to_str().ok());
            log.record(head.method.as_str(), nonce.unwrap_or_default());
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "application/fhir+json")
                .body(())
                .unwrap();
            let head_only = head.method == Method::HEAD;
            if let Ok(mut send) = respond.send_response(response, head_only) {
                if !head_only {
                    let _ = send.send_data(Bytes::from_static(BODY.as_bytes()), true);
                }
            }
        });
    }
}
