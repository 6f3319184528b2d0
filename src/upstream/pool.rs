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
//!   dropped after `poolIdleTimeout` or beyond `poolMaxIdlePerHost`.
//! - A reused connection that turns out closed before the request was written (the upstream
//!   ended an idle keep-alive) is replaced by a new one and the request sent again; once written,
//!   a request is never sent twice.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::body::{Body, BoxError};

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
    connections: Mutex<VecDeque<(SendRequest<Body>, Instant)>>,
    max: usize,
    timeout: Duration,
}

impl Idle {
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(SendRequest<Body>, Instant)>> {
        // A panic while holding the lock leaves a plain list of connections: still usable.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest idle connection that is still open and young enough.
    fn take(&self) -> Option<SendRequest<Body>> {
        let mut connections = self.lock();
        while let Some((sender, since)) = connections.pop_back() {
            if since.elapsed() < self.timeout && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<Body>) {
        if sender.is_closed() || self.max == 0 {
            return;
        }
        let now = Instant::now();
        let mut connections = self.lock();
        while connections
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.timeout)
        {
            connections.pop_front();
        }
        if connections.len() >= self.max {
            connections.pop_front();
        }
        connections.push_back((sender, now));
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
    /// for a free slot first. The response body gives the connection back when read to its end.
    pub(super) async fn send(
        &self,
        request: Request<Body>,
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
        loop {
            let (mut sender, reused) = match self.ready_idle().await {
                Some(sender) => (sender, true),
                // Boxed: connecting is the rare path, and its future is large.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let mut back = Some(Back {
                        sender,
                        idle: Arc::clone(&self.idle),
                        _permit: permit,
                    });
                    let (parts, body) = response.into_parts();
                    if body.is_end_stream() {
                        // No body (HEAD, 204, 304, Content-Length: 0): free for reuse now.
                        if let Some(back) = back.take() {
                            back.release();
                        }
                    }
                    return Ok(Response::from_parts(parts, PooledBody { body, back }));
                }
                Err(mut error) => match error.take_message() {
                    // Not written: the reused connection was already closing. Send it again
                    // on a new connection (a new one failing is reported as is).
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }

    /// An idle connection ready for a request, skipping closed ones.
    async fn ready_idle(&self) -> Option<SendRequest<Body>> {
        loop {
            let mut sender = self.idle.take()?;
            // Ready at once unless its previous response is still being wound up.
            if sender.ready().await.is_ok() {
                return Some(sender);
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
    idle: Arc<Idle>,
    _permit: OwnedSemaphorePermit,
}

impl Back {
    /// The response was read to its end: the connection can serve the next request.
    fn release(self) {
        self.idle.put(self.sender);
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
