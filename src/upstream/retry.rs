//! When a request may go to the upstream a second time, and what it goes with.
//!
//! - **Not written**: a pooled connection found closed before the request was written to it
//!   (hyper hands the request back) — sent again on another connection, whatever the method.
//! - **Written, no answer**: a reused HTTP/1.1 connection that the upstream closed after the
//!   request was written but before a response head arrived — the race with its idle timeout.
//!   Sent again once, on a new connection, only for idempotent methods (GET, HEAD, OPTIONS, PUT,
//!   DELETE: RFC 9110 §9.2.2); never a POST or PATCH.
//! - **Refused stream**: an HTTP/2 stream the upstream did not process — reset with
//!   `REFUSED_STREAM` (RFC 9113 §8.7) or above a GOAWAY's last-stream-id (§6.8) — sent again
//!   once, on another connection, whatever the method.
//!
//! Once written, a request can only be sent again from a copy ([`Replay`]): its head, and a body
//! that is empty or that fhirguard holds whole ([`KeptBody`]). A body streamed from the client
//! is gone once written, so such a request is never sent twice.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::body::{empty, full, Body};

/// Why a request was sent again: the `reason` of `fhirguard_upstream_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// The reused connection was closed before the request was written.
    Unsent,
    /// The reused connection was closed after an idempotent request was written, before any
    /// response.
    Closed,
    /// The HTTP/2 upstream refused the stream.
    RefusedStream,
}

impl Retry {
    /// Its label, one of [`crate::metrics::UPSTREAM_RETRY_REASONS`].
    pub(super) fn label(self) -> &'static str {
        match self {
            Retry::Unsent => "unsent",
            Retry::Closed => "closed",
            Retry::RefusedStream => "refused_stream",
        }
    }
}

/// A request body fhirguard holds whole (a bundle, a form or a checked write it read), carried
/// in the request's extensions so that the request can be sent again after being written.
#[derive(Debug, Clone)]
pub struct KeptBody(pub Bytes);

/// A copy of a request, to send it again.
#[derive(Debug)]
pub(super) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    /// A copy of `request` if it may be sent again once written: its method is idempotent, or
    /// `any_method` (a refused stream was not processed), and its body is empty or kept.
    pub(super) fn of(request: &Request<Body>, any_method: bool) -> Option<Replay> {
        if !any_method && !idempotent(request.method()) {
            return None;
        }
        let body = if http_body::Body::is_end_stream(request.body()) {
            Bytes::new()
        } else {
            request.extensions().get::<KeptBody>()?.0.clone()
        };
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            body,
        })
    }

    /// The request to send again.
    pub(super) fn into_request(self) -> Request<Body> {
        let body = match self.body.is_empty() {
            true => empty(),
            false => full(self.body),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// RFC 9110 §9.2.2: the methods whose effect is the same however often they are sent (TRACE,
/// never forwarded, aside).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// The connection ended before a response head arrived: hyper's "connection closed before
/// message completed", or the peer's reset (a request written onto a connection the upstream
/// had closed is answered by a TCP reset).
pub(super) fn closed_before_response(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
        }
        source = current.source();
    }
    false
}

/// The HTTP/2 upstream did not process the stream: it reset it with `REFUSED_STREAM` (RFC 9113
/// §8.7), or its GOAWAY named a last-stream-id below it (§6.8; h2 gives only those streams, and
/// streams opened after it, the GOAWAY as their error — a stream at or below it that dies later
/// ends with an I/O error instead).
pub(super) fn refused_stream(error: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = current.source();
    }
    false
}

/// `Keep-Alive` (RFC 2068 §19.7.1.1; hop-by-hop, so removed before the client sees it).
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// What a margin is taken off an announced keep-alive timeout: the announcement is in whole
/// seconds, and the upstream's timer started when it wrote the answer, before fhirguard read it.
const KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);

/// The keep-alive timeout the upstream announced with an answer (`Keep-Alive: timeout=N`), in
/// seconds.
pub(super) fn keep_alive(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get(&KEEP_ALIVE)?.to_str().ok()?;
    value.split(',').find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        match name.trim().eq_ignore_ascii_case("timeout") {
            true => value.trim().trim_matches('"').parse().ok(),
            false => None,
        }
    })
}

/// How long a connection may be reused after an answer that announced a keep-alive timeout of
/// `seconds`: that less one second, or less half of it when under two seconds (0: not at all).
pub(super) fn reuse_within(seconds: u32) -> Duration {
    let announced = Duration::from_secs(seconds.into());
    announced - KEEP_ALIVE_MARGIN.min(announced / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("keep-alive", value.parse().unwrap());
        headers
    }

    #[test]
    fn keep_alive_timeouts_lose_a_margin() {
        let cases = [
            ("timeout=5", Some(4_000)),
            ("timeout=5, max=1000", Some(4_000)),
            ("max=100, Timeout = 20", Some(19_000)),
            ("timeout=\"2\"", Some(1_000)),
            ("timeout=1", Some(500)),
            ("timeout=0", Some(0)),
            ("max=5", None),
            ("timeout=soon", None),
        ];
        for (value, millis) in cases {
            assert_eq!(
                keep_alive(&headers(value)).map(reuse_within),
                millis.map(Duration::from_millis),
                "{value}"
            );
        }
        assert_eq!(keep_alive(&HeaderMap::new()), None);
    }

    #[test]
    fn only_idempotent_requests_with_a_held_body_are_copied() {
        let request =
            |method: Method, body: Body| Request::builder().method(method).body(body).unwrap();
        assert!(Replay::of(&request(Method::GET, empty()), false).is_some());
        assert!(Replay::of(&request(Method::DELETE, empty()), false).is_some());
        assert!(Replay::of(&request(Method::POST, empty()), false).is_none());
        assert!(Replay::of(&request(Method::PATCH, empty()), false).is_none());
        assert!(Replay::of(&request(Method::POST, empty()), true).is_some());
        // A body not kept cannot be sent twice, whatever the method.
        assert!(Replay::of(&request(Method::PUT, full("{}")), false).is_none());
        assert!(Replay::of(&request(Method::POST, full("{}")), true).is_none());
        let mut kept = request(Method::PUT, full("{}"));
        kept.extensions_mut()
            .insert(KeptBody(Bytes::from_static(b"{}")));
        kept.headers_mut().insert("x-nonce", "1".parse().unwrap());
        let again = Replay::of(&kept, false).unwrap().into_request();
        assert_eq!(again.method(), Method::PUT);
        assert_eq!(again.headers()["x-nonce"], "1");
        assert_eq!(http_body::Body::size_hint(again.body()).exact(), Some(2));
    }
}
