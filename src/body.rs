//! The body type of every response fhirguard sends: either a streamed upstream body or a small
//! buffer of its own, boxed so both fit one type. And reading a request body into memory for
//! inspection ([`read_inspected`]) under the size, time and [`BodyBuffers`] budget limits.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use prometheus::{IntCounter, IntGauge};

use crate::config::Limits;

/// Errors a streamed body can raise.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// Boxes a streamed body (hyper's `Incoming`) without buffering it.
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// What a client's request body may be: hyper's `Incoming` when served, any body in tests and
/// tools that drive [`crate::proxy::Proxy::handle`] without a socket.
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + Unpin + 'static
{
}

/// Boxes a client's streamed request body, ended before its trailers. Trailer fields come after
/// the head fhirguard cleaned (an `X-Fhirguard-*` identity header could ride there), fhirguard
/// reads none and no FHIR interaction defines any, so none is forwarded. (Over HTTP/1.1 hyper
/// already sends none, since the `Trailer` header is removed as hop-by-hop; over HTTP/2 it would.)
pub fn stream_request<B: RequestBody>(body: B) -> Body {
    stream(WithoutTrailers(body))
}

/// A request body that ends where its trailers would begin.
#[derive(Debug)]
struct WithoutTrailers<B>(B);

impl<B: RequestBody> http_body::Body for WithoutTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => Poll::Ready(None),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// The request-body bytes fhirguard holds in memory at once, across all connections, against
/// `limits.maxBufferedBytes` (issue 11: a bundle whose `Content-Length` never arrives must not
/// pin its buffer, and many of them must not exhaust memory). One per proxy; the limit comes
/// from the configuration in force at each call, so a reload changes it.
#[derive(Debug)]
pub struct BodyBuffers {
    held: AtomicUsize,
    /// `fhirguard_buffered_request_bytes`
    gauge: IntGauge,
    /// `fhirguard_buffer_full_refusals_total`
    refusals: IntCounter,
    /// `fhirguard_body_read_timeouts_total`
    timeouts: IntCounter,
}

/// Holding one more chunk would pass `limits.maxBufferedBytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the buffered-bytes budget of {limit} bytes is spent")]
pub struct BudgetSpent {
    /// `limits.maxBufferedBytes` at the time.
    pub limit: usize,
}

impl BodyBuffers {
    /// The budget, reporting to these metrics.
    pub fn new(gauge: IntGauge, refusals: IntCounter, timeouts: IntCounter) -> BodyBuffers {
        BodyBuffers {
            held: AtomicUsize::new(0),
            gauge,
            refusals,
            timeouts,
        }
    }

    /// An empty reservation for one request; it costs nothing until it grows.
    pub fn reserve(&self) -> Reservation<'_> {
        Reservation {
            buffers: self,
            bytes: 0,
        }
    }

    /// Bytes held right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// The bytes one request holds; released when dropped (when the request is done with them).
#[derive(Debug)]
pub struct Reservation<'a> {
    buffers: &'a BodyBuffers,
    bytes: usize,
}

impl Reservation<'_> {
    /// Counts `more` bytes, unless all requests together would then hold more than `limit`.
    pub fn grow(&mut self, more: usize, limit: usize) -> Result<(), BudgetSpent> {
        let buffers = self.buffers;
        let grown = buffers
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|total| *total <= limit)
            });
        if grown.is_err() {
            buffers.refusals.inc();
            return Err(BudgetSpent { limit });
        }
        self.bytes += more;
        buffers.gauge.add(i64::try_from(more).unwrap_or(i64::MAX));
        Ok(())
    }

    /// The budget this reservation counts against.
    pub fn buffers(&self) -> &BodyBuffers {
        self.buffers
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.buffers.held.fetch_sub(self.bytes, Ordering::AcqRel);
            self.buffers
                .gauge
                .sub(i64::try_from(self.bytes).unwrap_or(i64::MAX));
        }
    }
}

/// Why a body could not be read into memory ([`read_inspected`]); [`crate::error`] gives each its
/// answer (413, 408, 503, 400).
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The body (or its `Content-Length`) is over `limits.maxBundleBytes`: 413.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// `limits.maxBundleBytes`.
        limit: usize,
    },
    /// The whole body did not arrive within `limits.bodyReadTimeout` (this duration) of the
    /// first read: 408, and the connection is closed.
    #[error("the request body did not arrive within {0:?} (limits.bodyReadTimeout)")]
    Timeout(Duration),
    /// All requests together already hold `limits.maxBufferedBytes`: 503, retry later.
    #[error(
        "fhirguard holds as many buffered request bodies as limits.maxBufferedBytes ({} \
         bytes) allows; retry later",
        .0.limit
    )]
    Spent(#[from] BudgetSpent),
    /// The client's stream failed mid-body (a reset connection, bad chunked framing): 400.
    #[error("the request body could not be read: {0}")]
    Read(#[source] BoxError),
    /// A body fhirguard reads to decide must be read as the upstream will read it: one with a
    /// `Content-Encoding` other than `identity` (gzip, deflate, br, …) would be judged on bytes
    /// the upstream decodes into something else (400).
    #[error(
        "fhirguard reads this request body to decide on it, so it must not carry a \
         Content-Encoding (send it uncompressed)."
    )]
    Encoded,
}

/// Refuses a `Content-Encoding` other than `identity` ([`BufferError::Encoded`]).
fn check_unencoded(headers: &http::HeaderMap) -> Result<(), BufferError> {
    let encoded = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    match encoded {
        true => Err(BufferError::Encoded),
        false => Ok(()),
    }
}

/// Reads the body of a request fhirguard decides on into memory, within the limits below; it
/// must not be encoded (a `Content-Encoding` other than `identity` is refused, 400).
pub async fn read_inspected<B: RequestBody>(
    body: B,
    headers: &http::HeaderMap,
    limits: &Limits,
    held: &mut Reservation<'_>,
) -> Result<Bytes, BufferError> {
    check_unencoded(headers)?;
    read_limited(body, limits, held).await
}

/// Reads a request body into memory for inspection (SPEC §7): at most
/// `limits.maxBundleBytes` (a larger `Content-Length` is refused before reading), all of it
/// within `limits.bodyReadTimeout` of the first read (so a `Content-Length` never delivered
/// cannot pin the buffer), each chunk counted in `held` against `limits.maxBufferedBytes`
/// across all connections. For bundles, `POST …/_search` form bodies and SMART write checks
/// alike; nothing else is buffered.
async fn read_limited<B: RequestBody>(
    body: B,
    limits: &Limits,
    held: &mut Reservation<'_>,
) -> Result<Bytes, BufferError> {
    let limit = limits.max_bundle_bytes;
    if http_body::Body::size_hint(&body).lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(BufferError::TooLarge { limit });
    }
    let timeout = limits.body_read_timeout;
    match tokio::time::timeout(timeout, collect(body, limits, &mut *held)).await {
        Ok(read) => read,
        Err(_) => {
            held.buffers().timeouts.inc();
            Err(BufferError::Timeout(timeout))
        }
    }
}

/// The chunks of a body, each counted before it is kept.
async fn collect<B: RequestBody>(
    mut body: B,
    limits: &Limits,
    held: &mut Reservation<'_>,
) -> Result<Bytes, BufferError> {
    let limit = limits.max_bundle_bytes;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length = 0_usize;
    while let Some(frame) = body.frame().await {
        // Trailers carry nothing fhirguard inspects.
        let Ok(chunk) = frame.map_err(|e| BufferError::Read(e.into()))?.into_data() else {
            continue;
        };
        length += chunk.len();
        if length > limit {
            return Err(BufferError::TooLarge { limit });
        }
        held.grow(chunk.len(), limits.max_buffered_bytes)?;
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers() -> BodyBuffers {
        BodyBuffers::new(
            IntGauge::new("g", "g").unwrap(),
            IntCounter::new("r", "r").unwrap(),
            IntCounter::new("t", "t").unwrap(),
        )
    }

    #[test]
    fn reservations_share_one_budget_and_give_it_back() {
        let buffers = buffers();
        let mut first = buffers.reserve();
        let mut second = buffers.reserve();
        assert_eq!(first.grow(60, 100), Ok(()));
        assert_eq!(second.grow(41, 100), Err(BudgetSpent { limit: 100 }));
        assert_eq!(second.grow(40, 100), Ok(()));
        assert_eq!((buffers.held(), buffers.gauge.get()), (100, 100));
        assert_eq!(buffers.refusals.get(), 1);
        drop(first);
        assert_eq!(second.grow(60, 100), Ok(()));
        drop(second);
        assert_eq!((buffers.held(), buffers.gauge.get()), (0, 0));
        assert_eq!(
            buffers.reserve().grow(usize::MAX, usize::MAX),
            Ok(()),
            "a lone reservation up to the limit"
        );
        assert_eq!(buffers.held(), 0, "released on drop");
    }
}
