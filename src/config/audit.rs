//! The `audit` block (issue 13): the format of the one audit line per decision, the identifier
//! this fhirguard gives itself in AuditEvents, and the optional FHIR server AuditEvents are also
//! sent to with the bounds of its queue. The keys are [`super::raw::RawAudit`]'s; this file
//! validates them in the same one-pass, every-error walk as the rest of the file (SPEC §3).

use std::time::Duration;

use super::document::{base_url, choice, without_trailing_slash, Errors, Node, Object};
use super::raw::{keys_of, RawAudit, RawAuditFormat};

/// Default `queueCapacity`: at ~2 KiB an event, about 20 MiB held at most while the audit
/// server is away, which rides out a minute of a busy proxy without unbounded memory.
const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default `batchSize`: one bundle of ~200 KiB, well within what FHIR servers accept in a POST.
const DEFAULT_BATCH_SIZE: usize = 100;
/// Default `flushInterval`: an event reaches the audit server within seconds when traffic is low.
const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Default `sendTimeout` of one batch POST.
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// More queued events than this is a typo, not a tuning (and would pin gigabytes).
const MAX_QUEUE_CAPACITY: usize = 1_000_000;

/// `audit: {...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    /// `format: json|fhir`, default json.
    pub format: AuditFormat,
    /// `observer`: this fhirguard's identifier in `AuditEvent.source.observer`; `None` = the host
    /// name, looked up when the auditor starts.
    pub observer: Option<String>,
    /// `fhirServer` and its queue; `None` = AuditEvents are only written as lines (when
    /// `format: fhir`).
    pub fhir_server: Option<AuditServer>,
}

impl Default for Audit {
    fn default() -> Audit {
        Audit {
            format: AuditFormat::Json,
            observer: None,
            fhir_server: None,
        }
    }
}

/// `audit.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditFormat {
    /// The `fhirguard::audit` log line, fields as documented in docs/audit.md ("Logs").
    Json,
    /// One FHIR R4 `AuditEvent` per line.
    Fhir,
}

/// `audit.fhirServer` and the bounds of the queue in front of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditServer {
    /// The FHIR base URL (no trailing '/'); batches are POSTed to it.
    pub url: url::Url,
    /// `queueCapacity`, default 10000.
    pub queue_capacity: usize,
    /// `batchSize`, default 100, at most `queue_capacity`.
    pub batch_size: usize,
    /// `flushInterval`, default 2 s.
    pub flush_interval: Duration,
    /// `sendTimeout`, default 10 s.
    pub send_timeout: Duration,
}

/// Keys that tune the queue, meaningless without `fhirServer`.
const QUEUE_KEYS: [&str; 4] = ["queueCapacity", "batchSize", "flushInterval", "sendTimeout"];

/// Validates `audit`; absent, or with mistakes (recorded in `errors`), it is the default.
pub(super) fn audit(node: Option<Node<'_>>, errors: &mut Errors) -> Audit {
    let mut audit = Audit::default();
    let Some(object) = node.and_then(|node| node.object(errors, keys_of::<RawAudit>())) else {
        return audit;
    };
    if object.get("format").is_some() {
        audit.format = match choice(&object, "format", keys_of::<RawAuditFormat>(), errors) {
            Some("fhir") => AuditFormat::Fhir,
            _ => AuditFormat::Json,
        };
    }
    audit.observer = object
        .get("observer")
        .and_then(|node| node.text(errors))
        .map(|text| text.trim().to_owned());
    match object.get("fhirServer") {
        Some(node) => audit.fhir_server = server(&node, &object, errors),
        None => {
            for key in QUEUE_KEYS.iter().filter(|key| object.get(key).is_some()) {
                errors.push(&object.key_path(key), "applies only with audit.fhirServer");
            }
        }
    }
    audit
}

fn server(node: &Node<'_>, object: &Object<'_>, errors: &mut Errors) -> Option<AuditServer> {
    let url = node.text(errors).and_then(|text| {
        base_url(text)
            .map(without_trailing_slash)
            .map_err(|message| errors.push(&node.path, message))
            .ok()
    });
    let count =
        |key: &str, default: usize, errors: &mut Errors| object.count_or(key, default, 1, errors);
    let queue_capacity = count("queueCapacity", DEFAULT_QUEUE_CAPACITY, errors);
    if queue_capacity > MAX_QUEUE_CAPACITY {
        errors.push(
            &object.key_path("queueCapacity"),
            format!("must be at most {MAX_QUEUE_CAPACITY}"),
        );
    }
    let batch_size = count("batchSize", DEFAULT_BATCH_SIZE.min(queue_capacity), errors);
    if batch_size > queue_capacity {
        errors.push(
            &object.key_path("batchSize"),
            format!("must be at most audit.queueCapacity ({queue_capacity})"),
        );
    }
    let duration = |key: &str, default: Duration, errors: &mut Errors| {
        object.duration_or(key, default, false, errors)
    };
    // Every key is checked before a bad URL gives up on the block.
    let flush_interval = duration("flushInterval", DEFAULT_FLUSH_INTERVAL, errors);
    let send_timeout = duration("sendTimeout", DEFAULT_SEND_TIMEOUT, errors);
    Some(AuditServer {
        url: url?,
        queue_capacity,
        batch_size,
        flush_interval,
        send_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\n\
        authenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  \
        audience: \"https://fhir.example.org\"\n";

    fn parse(audit: &str) -> Result<Audit, Vec<(String, String)>> {
        Config::parse(&format!("{BASE}{audit}"))
            .map(|config| config.audit)
            .map_err(|errors| errors.0.into_iter().map(|e| (e.path, e.message)).collect())
    }

    #[test]
    fn absent_is_the_json_line_without_a_server() {
        assert_eq!(parse(""), Ok(Audit::default()));
        assert_eq!(parse("audit:\n"), Ok(Audit::default()));
    }

    #[test]
    fn a_server_takes_the_queue_defaults() {
        let audit = parse(
            "audit:\n  format: fhir\n  observer: \" gw-1 \"\n  fhirServer: \"https://audit.example.org/fhir/\"\n",
        )
        .unwrap();
        assert_eq!(audit.format, AuditFormat::Fhir);
        assert_eq!(audit.observer.as_deref(), Some("gw-1"));
        let server = audit.fhir_server.unwrap();
        assert_eq!(server.url.as_str(), "https://audit.example.org/fhir");
        assert_eq!(
            (server.queue_capacity, server.batch_size),
            (10_000, 100),
            "defaults"
        );
        assert_eq!(server.flush_interval, Duration::from_secs(2));
        assert_eq!(server.send_timeout, Duration::from_secs(10));

        let audit = parse(
            "audit:\n  fhirServer: \"http://127.0.0.1:9/fhir\"\n  queueCapacity: 10\n  flushInterval: 250ms\n",
        )
        .unwrap();
        let server = audit.fhir_server.unwrap();
        assert_eq!(
            (server.queue_capacity, server.batch_size),
            (10, 10),
            "a small queue caps the default batch"
        );
        assert_eq!(server.flush_interval, Duration::from_millis(250));
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        let errors = parse(
            "audit:\n  format: xml\n  fhirServer: \"ftp://audit\"\n  queueCapacity: 0\n  \
             batchSize: -1\n  flushInterval: 0s\n  level: 3\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "audit.level",
                "audit.format",
                "audit.fhirServer",
                "audit.queueCapacity",
                "audit.batchSize",
                "audit.flushInterval"
            ],
            "{errors:#?}"
        );
        assert!(errors[0]
            .1
            .starts_with("unknown key 'level'; expected one of: format,"));
        assert_eq!(
            errors[1].1,
            "unknown value 'xml'; expected one of: json, fhir"
        );
        assert_eq!(errors[2].1, "'ftp://audit' must be an http or https URL");
    }

    #[test]
    fn queue_keys_need_a_server() {
        let errors = parse("audit:\n  batchSize: 5\n  sendTimeout: 1s\n").unwrap_err();
        assert_eq!(
            errors,
            [
                (
                    "audit.batchSize".to_owned(),
                    "applies only with audit.fhirServer".to_owned()
                ),
                (
                    "audit.sendTimeout".to_owned(),
                    "applies only with audit.fhirServer".to_owned()
                )
            ]
        );
        let errors = parse(
            "audit:\n  fhirServer: \"http://127.0.0.1:9\"\n  queueCapacity: 5\n  batchSize: 6\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [(
                "audit.batchSize".to_owned(),
                "must be at most audit.queueCapacity (5)".to_owned()
            )]
        );
    }
}
