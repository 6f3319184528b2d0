//! HTTP/1.1 connections to the upstream, kept alive and reused.
//!
//! - At most `maxConnections` requests are in flight at once, one connection each; a request
//!   beyond that waits for a free slot (within `responseTimeout`, which the caller applies). So
//!   thousands of client connections never become thousands of upstream connections, and the
//!   memory of a burst stays bounded.
//! - A connection goes back to the pool when its response body has been read to the end (or
//!   had none); a response dropped half-read closes it, since its remaining bytes would be
//!   read as the next response.
//! - Idle connections are reused newest first (warm, least likely closed by the upstream) and
//!   dropped after `poolIdleTimeout`, or sooner when the upstream announced a shorter keep-alive
//!   (`Keep-Alive: timeout=N`, less a margin: [`retry::keep_alive`]), or beyond
//!   `poolMaxIdlePerHost`.
//! - A reused connection that turns out closed before the request was written (the upstream
//!   ended an idle keep-alive) is replaced by another and the request sent again. One the
//!   upstream closed after the request was written, before answering, is replaced by a new one
//!   and an idempotent request with a body fhirguard holds sent again, once ([`super::retry`]);
//!   a POST or PATCH that was written is never sent twice.
//!
//! Compared with a general-purpose pooled client this is one lock, no per-request task and no
//! per-request hashing of the pool key, which shows on the hot path (benches/README.md).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use prometheus::IntCounterVec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::retry::{self, Replay, Retry};
use crate::body::{Body, BoxError};

/// How long a connection must have been idle before a request sent on it is copied, so that it
/// can be sent again should the upstream close the connection before answering. An upstream
/// closes an idle keep-alive after its timeout, seconds at the least; a connection reused sooner
/// is busy, and copying every request's head would cost the busy path (`benches/README.md`).
const AT_RISK_AFTER: Duration = Duration::from_millis(100);

/// The connections to one upstream origin.
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority`, what the connector dials.
    origin: Uri,
    /// The `Host` header every request carries (the upstream's authority).
    host: HeaderValue,
    slots: Arc<Semaphore>,
    idle: Arc<Idle>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .field("free_slots", &self.slots.available_permits())
            .field("idle", &self.idle.len())
            .finish_non_exhaustive()
    }
}

/// Idle connections, oldest first.
struct Idle {
    connections: Mutex<VecDeque<Parked>>,
    max: usize,
    timeout: Duration,
}

/// An idle connection: since when, and for how long it may be reused.
struct Parked {
    sender: SendRequest<Body>,
    since: Instant,
    keep: Duration,
}

impl Idle {
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Parked>> {
        // A panic while holding the lock leaves a plain list of connections: still usable.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest idle connection that is still open and young enough, and how long it idled.
    fn take(&self) -> Option<(SendRequest<Body>, Duration)> {
        let now = Instant::now();
        let mut connections = self.lock();
        while let Some(parked) = connections.pop_back() {
            let idle = now.saturating_duration_since(parked.since);
            if idle < parked.keep && !parked.sender.is_closed() {
                return Some((parked.sender, idle));
            }
        }
        None
    }

    /// Parks a connection for `poolIdleTimeout`, or for `announced` when shorter.
    fn put(&self, sender: SendRequest<Body>, announced: Option<Duration>) {
        let keep = announced.map_or(self.timeout, |keep| keep.min(self.timeout));
        if sender.is_closed() || self.max == 0 || keep.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut connections = self.lock();
        while connections
            .front()
            .is_some_and(|parked| now.saturating_duration_since(parked.since) >= parked.keep)
        {
            connections.pop_front();
        }
        if connections.len() >= self.max {
            connections.pop_front();
        }
        connections.push_back(Parked {
            sender,
            since: now,
            keep,
        });
    }
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub(super) enum PoolError {
    #[error("{0}")]
    Connect(BoxError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl Pool {
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: Uri,
        host: HeaderValue,
        max_connections: usize,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            connector,
            origin,
            host,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            idle: Arc::new(Idle {
                connections: Mutex::new(VecDeque::new()),
                max: max_idle,
                timeout: idle_timeout,
            }),
        }
    }

    /// Sends a request whose URI is absolute (the upstream's) on a pooled connection, waiting
    /// for a free slot first, and again as [`super::retry`] says (each time counted in
    /// `retries`). The response body gives the connection back when read to its end.
    pub(super) async fn send(
        &self,
        request: Request<Body>,
        retries: &IntCounterVec,
    ) -> Result<Response<PooledBody>, PoolError> {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(HOST, self.host.clone());
        // HTTP/1.1 to an origin server: the origin form of the target (RFC 9112 §3.2.1).
        parts.uri = parts
            .uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        let mut request = Request::from_parts(parts, body);
        // Once a written request has been sent again, it goes out on a new connection only.
        let mut sent_again = false;
        loop {
            let idle = match sent_again {
                false => self.ready_idle().await,
                true => None,
            };
            let (mut sender, idled) = match idle {
                Some((sender, idled)) => (sender, Some(idled)),
                // Boxed: connecting is the rare path, and its future is large.
                None => (Box::pin(self.connect()).await?, None),
            };
            let reused = idled.is_some();
            // Boxed: held across the send, and rarely made.
            let copy = match idled {
                Some(idled) if idled >= AT_RISK_AFTER && !sent_again => {
                    Replay::of(&request, false).map(Box::new)
                }
                _ => None,
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let mut back = Some(Back {
                        sender,
                        keep_alive: retry::keep_alive(&parts.headers).map(retry::reuse_within),
                        idle: Arc::clone(&self.idle),
                        _permit: permit,
                    });
                    if body.is_end_stream() {
                        // No body (HEAD, 204, 304, Content-Length: 0): free for reuse now.
                        if let Some(back) = back.take() {
                            back.release();
                        }
                    }
                    return Ok(Response::from_parts(parts, PooledBody { body, back }));
                }
                Err(mut error) => {
                    let unsent = error.take_message();
                    let error = error.into_error();
                    request = match (unsent, copy) {
                        // Not written: the reused connection was already closing. Send it again
                        // on another (a new one failing is reported as is).
                        (Some(unsent), _) if reused => {
                            retries.with_label_values(&[Retry::Unsent.label()]).inc();
                            unsent
                        }
                        // Written, and the upstream closed the connection without answering.
                        (None, Some(copy)) if retry::closed_before_response(&error) => {
                            retries.with_label_values(&[Retry::Closed.label()]).inc();
                            sent_again = true;
                            copy.into_request()
                        }
                        _ => return Err(error.into()),
                    };
                }
            }
        }
    }

    /// An idle connection ready for a request, skipping closed ones, and how long it idled.
    async fn ready_idle(&self) -> Option<(SendRequest<Body>, Duration)> {
        loop {
            let (mut sender, idled) = self.idle.take()?;
            // Ready at once unless its previous response is still being wound up.
            if sender.ready().await.is_ok() {
                return Some((sender, idled));
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A connection on loan to one response, with its slot.
struct Back {
    sender: SendRequest<Body>,
    /// How long the response's `Keep-Alive` header lets the connection be reused
    /// ([`retry::reuse_within`]).
    keep_alive: Option<Duration>,
    idle: Arc<Idle>,
    _permit: OwnedSemaphorePermit,
}

impl Back {
    /// The response was read to its end: the connection can serve the next request.
    fn release(self) {
        self.idle.put(self.sender, self.keep_alive);
        // The slot is freed as `_permit` drops here.
    }
}

/// An upstream response body that returns its connection to the pool once read to the end.
pub(super) struct PooledBody {
    body: Incoming,
    back: Option<Back>,
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.body.is_end_stream() => {}
            // An error: the connection is not reused (dropping it closes it).
            Some(Err(_)) => this.back = None,
            _ => {
                if let Some(back) = this.back.take() {
                    back.release();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            if self.body.is_end_stream() {
                back.release();
            }
        }
    }
}
