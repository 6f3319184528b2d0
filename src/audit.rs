//! The audit trail: one record per decision (SPEC §6), written as the `fhirguard::audit` log line
//! (`audit.format: json`, the default) or as a FHIR R4 `AuditEvent` in the IHE Basic Audit Log
//! Patterns shape (`audit.format: fhir`, [`event`]), and — with `audit.fhirServer` — also sent in
//! batch bundles to a FHIR server from a bounded queue that never holds up a request (`sink`).
//!
//! The request pipeline fills an [`AuditRecord`] once the response head is known and hands it to
//! [`Auditor::record`]. This module owns everything after that: what is shown (the query only when
//! `logging.logQueryStrings` is on, and never a token: a path or query that holds one is
//! redacted, and so is the value of a parameter named as a credential), the two line formats, and the queue. It never fails or blocks a request.

pub mod event;
mod sink;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::Method;

use crate::auth::{self, Principal};
use crate::config::{AuditFormat, Config};
use crate::fhir::bundle::BundleKind;
use crate::fhir::query::redact_credentials;
use crate::fhir::FhirRequest;
use crate::metrics::Metrics;
pub use event::{audit_event, Source};
use sink::Sink;

/// The tracing target of the audit line (docs/audit.md, "Logs").
pub const TARGET: &str = "fhirguard::audit";

/// What a line shows instead of a path or query that holds a token (SPEC §7).
pub const REDACTED: &str = "[redacted: holds a token]";

/// How the request ended, as the audit trail tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Forwarded: authorization allowed it.
    Allowed,
    /// Forwarded without a token (an anonymous path, a CORS preflight).
    Anonymous,
    /// Refused by fhirguard (or failed upstream). `outcome` is the label of
    /// `fhirguard_requests_total` (`unauthenticated`, `forbidden`, `invalid`, `unavailable`,
    /// `upstream_error`); the status is [`AuditRecord::status`].
    Refused {
        /// The `fhirguard_requests_total` outcome label.
        outcome: &'static str,
        /// Why, in words: the refusal's message.
        reason: &'a str,
    },
    /// `reportOnly` (issue 13): authorization would have refused it with `status` and `reason`,
    /// but it was forwarded; [`AuditRecord::status`] is the upstream's answer. `outcome` is the
    /// `fhirguard_requests_total` label the pipeline counts it under.
    WouldBeRefused {
        /// The `fhirguard_requests_total` outcome label.
        outcome: &'static str,
        /// The status enforcement would have answered.
        status: u16,
        /// Why, in words: the message the refusal would have carried.
        reason: &'a str,
    },
}

impl Outcome<'_> {
    /// The `outcome` field of the json line, as in `fhirguard_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Anonymous => "anonymous",
            Outcome::Refused { outcome, .. } | Outcome::WouldBeRefused { outcome, .. } => outcome,
        }
    }

    /// Why it was (or would have been) refused; empty when it was simply forwarded.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Allowed | Outcome::Anonymous => "",
            Outcome::Refused { reason, .. } | Outcome::WouldBeRefused { reason, .. } => reason,
        }
    }
}

/// Everything the audit trail says about one decision; borrowed from the pipeline's own values.
#[derive(Clone, Copy, Debug)]
pub struct AuditRecord<'a> {
    /// The `X-Request-Id` sent back to the client.
    pub request_id: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The request path as received (redacted here when it holds a token).
    pub path: &'a str,
    /// The query string as received (for a POST `_search`, its form). Written only when
    /// `logging.logQueryStrings` is on, and redacted when it holds a token: the auditor decides,
    /// the pipeline need not.
    pub query: Option<&'a str>,
    /// The classified FHIR request, when classification was reached.
    pub request: Option<&'a FhirRequest>,
    /// `POST /`: whether the bundle was a batch or a transaction, once its body was read.
    pub bundle: Option<BundleKind>,
    /// Forwarded, refused, or forwarded in report-only mode though it would have been refused.
    pub outcome: Outcome<'a>,
    /// The status sent to the client.
    pub status: u16,
    /// A near miss behind a refused token ([`auth::near_miss`]); empty otherwise. The json line
    /// shows it; the AuditEvent does not (it is advice to the operator, not an event).
    pub hint: &'a str,
    /// The accepted token's principal, when authentication succeeded.
    pub principal: Option<&'a Principal>,
    /// The client's address, as the connection shows it.
    pub peer: Option<SocketAddr>,
    /// When the decision was recorded (the response head was ready).
    pub time: SystemTime,
    /// From the request head to the response head.
    pub latency: Duration,
}

impl AuditRecord<'_> {
    /// The record as it may be shown: the query only when `log_query`, a path or query that
    /// holds a token replaced by [`REDACTED`], and the value of any query parameter whose name
    /// says it is a credential (`access_token`, `client_secret`, `password`, …) replaced by
    /// `[redacted]`, the redacted query written into `scratch`. A token in the URL is refused
    /// (step 2, request hygiene), but the refused URL must not carry it into the audit trail
    /// either (SPEC §7).
    pub fn shown<'b>(&'b self, log_query: bool, scratch: &'b mut String) -> AuditRecord<'b> {
        let path = if auth::jwt_in_url(self.path, None).is_some() {
            REDACTED
        } else {
            self.path
        };
        let query = self.query.filter(|_| log_query).map(|query| {
            if auth::jwt_in_url("", Some(query)).is_some() {
                REDACTED
            } else if redact_credentials(query, scratch) {
                scratch.as_str()
            } else {
                query
            }
        });
        AuditRecord {
            path,
            query,
            ..*self
        }
    }
}

/// Where `audit.format: fhir` lines go.
#[derive(Clone, Debug)]
pub enum Lines {
    /// Standard error, where the log lines go (docs/audit.md, "Logs"), when the `fhirguard::audit`
    /// target is enabled at `info`: `FHIRGUARD_LOG` silences both formats alike.
    Stderr,
    /// Kept in memory, always (tests, tools).
    Memory(Arc<Mutex<Vec<String>>>),
}

/// Why the auditor could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The TLS client for `audit.fhirServer` could not be built (no usable crypto provider or
    /// roots).
    #[error("cannot build the HTTP client for audit.fhirServer: {0}")]
    Client(String),
    /// `audit.fhirServer` is set but the auditor was built outside a Tokio runtime, which the
    /// sending task needs.
    #[error("audit.fhirServer needs a Tokio runtime to send from")]
    NoRuntime,
}

/// Writes the audit trail. One per process: the queue to `audit.fhirServer` is fixed when it
/// starts; `audit.format` and `logging.logQueryStrings` are read from the configuration each
/// record is written under, so they follow reloads.
#[derive(Debug)]
pub struct Auditor {
    /// `AuditEvent.source.observer`: `audit.observer`, else the host name.
    observer: String,
    sink: Option<Sink>,
    lines: Lines,
}

impl Auditor {
    /// An auditor for `config.audit`. With `audit.fhirServer` it spawns the task that sends the
    /// batches, so it must be called within a Tokio runtime.
    pub fn start(config: &Config, metrics: &Metrics) -> Result<Auditor, AuditError> {
        let observer = config.audit.observer.clone().unwrap_or_else(host_name);
        let sink = match &config.audit.fhir_server {
            Some(server) => Some(Sink::start(server, metrics.clone())?),
            None => None,
        };
        Ok(Auditor {
            observer,
            sink,
            lines: Lines::Stderr,
        })
    }

    /// Whether anything would be written or sent for a decision: the pipeline keeps what a
    /// record borrows (the path, the classified request) only then.
    pub fn is_active(&self) -> bool {
        self.sink.is_some() || matches!(self.lines, Lines::Memory(_)) || line_enabled()
    }

    /// The same auditor writing its `fhir` lines to `lines`.
    pub fn with_lines(self, lines: Lines) -> Auditor {
        Auditor { lines, ..self }
    }

    /// Writes one decision: the json line or the AuditEvent line per `config.audit.format`, and
    /// queues the AuditEvent for `audit.fhirServer` when there is one. Never blocks: a full
    /// queue drops the event and counts it.
    pub fn record(&self, config: &Config, record: &AuditRecord<'_>) {
        let mut scratch = String::new();
        let record = record.shown(config.logging.log_query, &mut scratch);
        let fhir_line = config.audit.format == AuditFormat::Fhir
            && match &self.lines {
                Lines::Stderr => line_enabled(),
                Lines::Memory(_) => true,
            };
        if config.audit.format == AuditFormat::Json {
            json_line(&record);
        }
        if !fhir_line && self.sink.is_none() {
            return;
        }
        let server = config
            .public_base_url
            .as_ref()
            .unwrap_or(&config.upstream.url);
        let source = Source {
            observer: &self.observer,
            server: server.as_str(),
        };
        let event = audit_event(&record, &source);
        if fhir_line {
            self.write(&event);
        }
        if let Some(sink) = &self.sink {
            sink.offer(event);
        }
    }

    /// Stops the queue and sends what it holds, giving up after `within`; what could not be
    /// sent by then is counted as dropped (`shutdown`). Records written after this are dropped
    /// and counted too.
    pub async fn shutdown(&self, within: Duration) {
        if let Some(sink) = &self.sink {
            sink.shutdown(within).await;
        }
    }

    fn write(&self, event: &serde_json::Value) {
        let mut line = event.to_string();
        match &self.lines {
            Lines::Stderr => {
                line.push('\n');
                // One write of the whole line, as the log writer does, so lines never interleave.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Lines::Memory(lines) => lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line),
        }
    }
}

/// Whether audit lines are written at the configured log level.
pub fn line_enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// The json audit line (docs/audit.md, "Logs"): its fields are an interface, kept as they were.
fn json_line(record: &AuditRecord<'_>) {
    let principal = record.principal;
    tracing::info!(
        target: TARGET,
        request_id = record.request_id,
        method = record.method.as_str(),
        path = record.path,
        query = record.query.unwrap_or(""),
        status = record.status,
        outcome = record.outcome.label(),
        would_be_status = match record.outcome {
            Outcome::WouldBeRefused { status, .. } => status,
            Outcome::Allowed | Outcome::Anonymous | Outcome::Refused { .. } => 0,
        },
        reason = record.outcome.reason(),
        hint = record.hint,
        provider = principal.map(|p| p.authority.as_str()).unwrap_or(""),
        client_id = principal.and_then(|p| p.client_id.as_deref()).unwrap_or(""),
        subject = principal.and_then(|p| p.subject.as_deref()).unwrap_or(""),
        fhir_user = principal.and_then(|p| p.fhir_user.as_deref()).unwrap_or(""),
        latency_ms = record.latency.as_secs_f64() * 1000.0,
        "decision"
    );
}

/// This host's name, for `AuditEvent.source.observer` when `audit.observer` is not set: `HOSTNAME`
/// (the pod name on Kubernetes), else the kernel's, else "fhirguard".
fn host_name() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env
        .or_else(from_kernel)
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "fhirguard".to_owned())
}

#[cfg(test)]
mod tests;
