//! `audit.fhirServer`: AuditEvents sent to a FHIR server in `batch` bundles (R4 http.html#transaction:
//! one `POST AuditEvent` entry each), from a bounded queue.
//!
//! - A request only ever offers its event with `try_send`: when the queue is full the event is
//!   dropped and counted (`fhirguard_audit_events_dropped_total{reason="queue_full"}`), so a slow
//!   or absent audit server never slows, blocks or fails a request.
//! - One task sends: a batch goes when it has `batchSize` events, or `flushInterval` after its
//!   first event. A POST that fails (no connection, timeout, 429, 5xx) is retried a bounded number
//!   of times, then its events are dropped and counted (`send_failed`); an entry the server
//!   answers with a non-2xx status in its batch-response is counted `rejected`.
//! - On shutdown the task sends what the queue holds, within a bound; what is left is counted
//!   (`shutdown`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::AuditError;
use crate::config::AuditServer;
use crate::metrics::Metrics;

/// POST attempts per batch, and the pause before each retry.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];
/// The largest batch-response read (100 entries answer in a few KiB).
const MAX_RESPONSE_BYTES: usize = 4 << 20;
const FHIR_JSON: &str = "application/fhir+json";

/// The queue and the task that empties it.
#[derive(Debug)]
pub(super) struct Sink {
    queue: mpsc::Sender<Value>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Events taken from the queue and not yet settled (sent, rejected or dropped).
    in_flight: Arc<AtomicU64>,
    metrics: Metrics,
}

impl Sink {
    /// Spawns the sending task on the current Tokio runtime.
    pub(super) fn start(server: &AuditServer, metrics: Metrics) -> Result<Sink, AuditError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AuditError::NoRuntime)?;
        let poster = Poster::new(server, metrics.clone())?;
        let (queue, receiver) = mpsc::channel(server.queue_capacity.max(1));
        let (stop, stopped) = watch::channel(false);
        let in_flight = Arc::new(AtomicU64::new(0));
        let batcher = Batcher {
            queue: receiver,
            stopped,
            poster,
            batch_size: server.batch_size.max(1),
            flush_interval: server.flush_interval,
            in_flight: Arc::clone(&in_flight),
        };
        let task = runtime.spawn(batcher.run());
        Ok(Sink {
            queue,
            stop,
            task: Mutex::new(Some(task)),
            in_flight,
            metrics,
        })
    }

    /// Queues one event, or drops and counts it; never waits.
    pub(super) fn offer(&self, event: Value) {
        let reason = match self.queue.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => "queue_full",
            Err(mpsc::error::TrySendError::Closed(_)) => "shutdown",
        };
        self.dropped(reason, 1);
    }

    /// Asks the task to send what is queued and stop; waits for it at most `within`.
    pub(super) async fn shutdown(&self, within: Duration) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut task) = task else {
            return;
        };
        if timeout(within, &mut task).await.is_err() {
            // Counted before the task goes: dropping its receiver empties the queue.
            let queued = self.queue.max_capacity() - self.queue.capacity();
            task.abort();
            let _ = task.await;
            // What the task held and what the queue held will never be sent.
            let held = self.in_flight.swap(0, Ordering::Relaxed);
            let lost = held.saturating_add(u64::try_from(queued).unwrap_or(u64::MAX));
            self.dropped("shutdown", lost);
            tracing::warn!(
                lost,
                "audit.fhirServer: shutdown bound reached; unsent AuditEvents dropped"
            );
        }
    }

    fn dropped(&self, reason: &str, count: u64) {
        if count > 0 {
            self.metrics
                .audit_events_dropped
                .with_label_values(&[reason])
                .inc_by(count);
        }
    }
}

/// The task: takes batches off the queue and has them posted.
struct Batcher {
    queue: mpsc::Receiver<Value>,
    stopped: watch::Receiver<bool>,
    poster: Poster,
    batch_size: usize,
    flush_interval: Duration,
    in_flight: Arc<AtomicU64>,
}

impl Batcher {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                biased;
                _ = self.stopped.changed() => break,
                received = self.queue.recv_many(&mut batch, self.batch_size) => {
                    if received == 0 {
                        break;
                    }
                    self.hold(&batch);
                }
            }
            let deadline = Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                let room = self.batch_size - batch.len();
                tokio::select! {
                    biased;
                    _ = self.stopped.changed() => {
                        stopping = true;
                        break;
                    }
                    () = sleep_until(deadline) => break,
                    received = self.queue.recv_many(&mut batch, room) => {
                        if received == 0 {
                            break;
                        }
                        self.hold(&batch);
                    }
                }
            }
            self.deliver(&mut batch).await;
        }
        // Stopping: no new events; send what is queued, batch by batch.
        self.queue.close();
        loop {
            while batch.len() < self.batch_size {
                match self.queue.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.deliver(&mut batch).await;
        }
    }

    /// Events off the queue and not yet settled, for the count of a shutdown cut short.
    fn hold(&self, batch: &[Value]) {
        self.in_flight.store(as_u64(batch.len()), Ordering::Relaxed);
    }

    async fn deliver(&self, batch: &mut Vec<Value>) {
        let events: Vec<Value> = std::mem::take(batch);
        self.hold(&events);
        self.poster.post(events).await;
        self.in_flight.store(0, Ordering::Relaxed);
    }
}

/// Why one POST did not store the batch.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("POST {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("POST {url} did not complete within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("POST {url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("POST {url}: the answer could not be read")]
    Body { url: String },
}

impl PostError {
    /// Worth another attempt: the server may do better in a moment. Any other 4xx means it
    /// will not take this bundle.
    fn retryable(&self) -> bool {
        match self {
            PostError::Http { .. } | PostError::Timeout { .. } | PostError::Body { .. } => true,
            PostError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

/// POSTs batch bundles to the audit FHIR server and counts what became of each event.
struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The FHIR base: a batch is `POST [base]` (R4 http.html#transaction).
    url: String,
    timeout: Duration,
    metrics: Metrics,
}

impl Poster {
    /// An http/https client trusting the webpki roots, as key-set fetches do
    /// ([`crate::auth::discovery::Fetcher`]), with a body to send.
    fn new(server: &AuditServer, metrics: Metrics) -> Result<Poster, AuditError> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|error| AuditError::Client(error.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Poster {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url: server.url.as_str().to_owned(),
            timeout: server.send_timeout,
            metrics,
        })
    }

    async fn post(&self, events: Vec<Value>) {
        let count = events.len();
        let entries: Vec<Value> = events
            .into_iter()
            .map(|event| json!({"resource": event, "request": {"method": "POST", "url": "AuditEvent"}}))
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
        let body = Bytes::from(bundle.to_string());
        let mut pauses = RETRY_PAUSES.iter();
        loop {
            let error = match self.attempt(body.clone()).await {
                Ok(answer) => {
                    self.settle(&answer, count);
                    return;
                }
                Err(error) => error,
            };
            self.metrics.audit_batch_failures.inc();
            let pause = pauses.next().filter(|_| error.retryable());
            tracing::warn!(
                %error,
                events = count,
                retrying = pause.is_some(),
                "audit.fhirServer: batch not stored"
            );
            match pause {
                Some(pause) => sleep(*pause).await,
                None => {
                    let reason = if error.retryable() {
                        "send_failed"
                    } else {
                        "rejected"
                    };
                    self.dropped(reason, count);
                    return;
                }
            }
        }
    }

    async fn attempt(&self, body: Bytes) -> Result<Value, PostError> {
        let url = || self.url.clone();
        let request = Request::post(self.url.as_str())
            .header(header::CONTENT_TYPE, FHIR_JSON)
            .header(header::ACCEPT, FHIR_JSON)
            .body(Full::new(body))
            .map_err(|_| PostError::Body { url: url() })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|source| PostError::Http { url: url(), source })?;
            let status = response.status();
            if !status.is_success() {
                return Err(PostError::Status { url: url(), status });
            }
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|_| PostError::Body { url: url() })?
                .to_bytes();
            // A 2xx without a readable batch-response still stored the batch.
            Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        };
        timeout(self.timeout, exchange)
            .await
            .map_err(|_| PostError::Timeout {
                url: url(),
                timeout: self.timeout,
            })?
    }

    /// Counts a stored batch from its batch-response: one entry per event, in order, each with
    /// its own `response.status` (R4 http.html#transaction-response).
    fn settle(&self, answer: &Value, count: usize) {
        let statuses: Vec<Option<&str>> = answer["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| entry["response"]["status"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if statuses.len() != count {
            self.metrics.audit_events_sent.inc_by(as_u64(count));
            return;
        }
        let stored = statuses
            .iter()
            .filter(|status| status.is_some_and(|s| s.trim_start().starts_with('2')))
            .count();
        self.metrics.audit_events_sent.inc_by(as_u64(stored));
        if stored < count {
            tracing::warn!(
                rejected = count - stored,
                "audit.fhirServer: entries of a batch were refused"
            );
            self.dropped("rejected", count - stored);
        }
    }

    fn dropped(&self, reason: &str, count: usize) {
        self.metrics
            .audit_events_dropped
            .with_label_values(&[reason])
            .inc_by(as_u64(count));
    }
}

fn as_u64(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}
