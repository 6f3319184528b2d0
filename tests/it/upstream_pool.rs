//! The upstream connection pool, seen from a raw HTTP/1.1 upstream that counts what it gets:
//! keep-alive reuse, the `maxConnections` bound, the wait for a free connection counting towards
//! `responseTimeout`, idle connections the upstream closed, and bodiless answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::poll::eventually;
use crate::support::stack::{Guard, HttpClient, Stack};
use fhirguard::app::Running;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &str = r#"{"resourceType":"Patient","id":"1"}"#;

/// What the raw upstream saw.
#[derive(Debug, Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Each request's request line and `Host` header.
    heads: Mutex<Vec<(String, String)>>,
    /// Milliseconds each answer waits.
    delay_ms: AtomicU64,
    /// Milliseconds after an answer at which the upstream closes the idle connection (0: never).
    close_idle_after_ms: AtomicU64,
    /// Idle connections the upstream closed.
    idle_closed: AtomicUsize,
}

/// A keep-alive HTTP/1.1 server that answers every request with [`BODY`].
struct RawUpstream {
    address: SocketAddr,
    seen: Arc<Seen>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        RawUpstream { address, seen }
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Seen>) {
    let mut buffer = Vec::new();
    loop {
        // One request head (the proxied requests here carry no body).
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let idle_close = seen.close_idle_after_ms.load(Ordering::SeqCst);
            let read = if idle_close > 0
                && buffer.is_empty()
                && seen.requests.load(Ordering::SeqCst) > 0
            {
                match tokio::time::timeout(
                    Duration::from_millis(idle_close),
                    stream.read(&mut chunk),
                )
                .await
                {
                    Ok(read) => read,
                    Err(_idle) => {
                        // Close the idle keep-alive connection.
                        seen.idle_closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            } else {
                stream.read(&mut chunk).await
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        let line = head.lines().next().unwrap_or_default().to_owned();
        let host = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("host: ")
                    .or_else(|| l.strip_prefix("Host: "))
            })
            .unwrap_or_default()
            .to_owned();
        seen.heads.lock().unwrap().push((line.clone(), host));
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = seen.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            // The behaviour under test: a slow upstream.
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
        let body = if line.starts_with("HEAD ") { "" } else { BODY };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n{body}",
            BODY.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// fhirguard in front of `upstream`, with `settings` (if any) added to the `upstream` object.
async fn proxy(upstream: &RawUpstream, settings: &str) -> Guard {
    let mut builder = Stack::builder().upstream_url(format!("http://{}/fhir", upstream.address));
    if !settings.is_empty() {
        builder = builder.upstream_settings(settings);
    }
    builder.serve(|stack| stack.yaml("[Read]", "")).await
}

/// A GET with `token` sent from a task of its own, so that several are in flight at once.
fn spawn_get(
    running: &Running,
    target: &'static str,
    token: &str,
) -> tokio::task::JoinHandle<Result<(StatusCode, String), String>> {
    let (address, token) = (running.proxy_address, token.to_owned());
    tokio::spawn(async move {
        HttpClient::default()
            .get(address, target, Some(&token))
            .await
    })
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let upstream = RawUpstream::start().await;
    let Guard { stack, running, .. } = proxy(&upstream, "").await;
    let client = HttpClient::default();
    let token = stack.token();
    for _ in 0..10 {
        let (status, body) = client
            .get(
                running.proxy_address,
                "/Patient/1?_elements=id",
                Some(&token),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, BODY);
    }
    assert_eq!(upstream.requests(), 10);
    assert_eq!(upstream.connections(), 1, "kept alive and reused");
    let heads = upstream.seen.heads.lock().unwrap().clone();
    let authority = upstream.address.to_string();
    for (line, host) in heads {
        // Origin form, with the prefix and the query; Host is the upstream's authority.
        assert_eq!(line, "GET /fhir/Patient/1?_elements=id HTTP/1.1");
        assert_eq!(host, authority);
    }
    running.stop().await;
}

#[tokio::test]
async fn max_connections_bounds_the_requests_in_flight() {
    let upstream = RawUpstream::start().await;
    upstream.seen.delay_ms.store(150, Ordering::SeqCst);
    let Guard { stack, running, .. } = proxy(&upstream, "maxConnections: 2").await;
    let token = stack.token();
    let calls: Vec<_> = (0..8)
        .map(|_| spawn_get(&running, "/Patient/1", &token))
        .collect();
    for call in calls {
        let (status, body) = call.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(upstream.requests(), 8);
    assert_eq!(upstream.seen.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(
        upstream.connections() <= 2,
        "{} connections",
        upstream.connections()
    );
    running.stop().await;
}

#[tokio::test]
async fn waiting_for_a_connection_counts_towards_the_response_timeout() {
    let upstream = RawUpstream::start().await;
    upstream.seen.delay_ms.store(500, Ordering::SeqCst);
    let Guard { stack, running, .. } =
        proxy(&upstream, "maxConnections: 1, responseTimeout: 800ms").await;
    let token = stack.token();
    let first = spawn_get(&running, "/Patient/1", &token);
    eventually(
        "the first request holds the one connection",
        Duration::from_secs(5),
        || async { upstream.requests() == 1 },
    )
    .await;
    // Waits ~400 ms for the one connection, then 500 ms for the answer: over 800 ms.
    let (status, body) = HttpClient::default()
        .get(running.proxy_address, "/Patient/2", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("OperationOutcome"), "{body}");
    let (status, body) = first.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(upstream.seen.max_in_flight.load(Ordering::SeqCst), 1);
    running.stop().await;
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    let upstream = RawUpstream::start().await;
    upstream
        .seen
        .close_idle_after_ms
        .store(50, Ordering::SeqCst);
    let Guard { stack, running, .. } = proxy(&upstream, "").await;
    let client = HttpClient::default();
    let token = stack.token();
    for round in 0..3 {
        let (status, body) = client
            .get(running.proxy_address, "/Patient/1", Some(&token))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        // The upstream drops the idle connection meanwhile.
        eventually(
            "the upstream closed the idle connection",
            Duration::from_secs(5),
            || async { upstream.seen.idle_closed.load(Ordering::SeqCst) > round },
        )
        .await;
    }
    assert_eq!(upstream.requests(), 3);
    assert_eq!(upstream.connections(), 3, "a new connection each round");
    running.stop().await;
}

#[tokio::test]
async fn a_bodiless_answer_frees_its_connection_at_once() {
    let upstream = RawUpstream::start().await;
    let Guard { stack, running, .. } = proxy(&upstream, "maxConnections: 1").await;
    let client = HttpClient::default();
    let token = stack.token();
    let (status, body) = client
        .call("HEAD", running.proxy_address, "/Patient/1", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "");
    let (status, body) = client
        .get(running.proxy_address, "/Patient/1", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, BODY);
    assert_eq!(
        upstream.connections(),
        1,
        "the HEAD's connection was reused"
    );
    running.stop().await;
}
