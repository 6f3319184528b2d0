//! One decision as a FHIR R4 `AuditEvent` (hl7.org/fhir/R4/auditevent.html) in the shape of IHE
//! Basic Audit Log Patterns (BALP, profiles.ihe.net/ITI/BALP: the Read, Query, Create, Update
//! and Delete profiles and the OAuth access-token-use pattern). Pure: a record in, JSON out.
//!
//! - `type` is DICOM/HL7 `rest`; `subtype` the FHIR restful interaction; `action` C/R/U/D/E.
//! - `outcome` follows the status sent: 0 below 400, 4 for 4xx (the client was refused or asked
//!   for something absent), 8 for 5xx. `outcomeDesc` says why.
//! - `agent`: the client application (the token's client id, its network address), the server
//!   the client addressed, and the user (`fhirUser` as a reference, `sub` as an identifier) as
//!   the requestor. The roles follow BALP: for a read the client is the destination of the data
//!   (DICOM 110152) and the server the source (110153); for a query, create, update or delete,
//!   the other way round — BALP keeps the DICOM convention that the request's parameters flow
//!   from client to server.
//! - `source.observer` is this fhirguard.
//! - `entity`: the `X-Request-Id`, the resource (`Type/id`), the patient when the request names
//!   one, and the query — base64, as BALP's Query profile records "exactly what was requested" —
//!   only when the caller passes one (`logging.logQueryStrings`).
//!
//! Never the token: nothing here reads a header, and the path and query are shown only as
//! [`super::AuditRecord::shown`] leaves them.

use std::time::UNIX_EPOCH;

use base64::Engine as _;
use http::Method;
use serde_json::{json, Map, Value};

use super::{AuditRecord, Outcome};
use crate::auth::error::rfc3339;
use crate::fhir::bundle::BundleKind;
use crate::fhir::{FhirRequest, Interaction};

/// hl7.org/fhir/R4/codesystem-audit-event-type.html
const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
/// hl7.org/fhir/R4/codesystem-restful-interaction.html
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
/// DICOM PS3.16 CID 402 (audit participant role ID).
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// HL7 v3 ParticipationType: IRCP, AUT (BALP UserAgentTypes / DataSources value sets).
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// hl7.org/fhir/R4/codesystem-security-source-type.html
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
/// hl7.org/fhir/R4/codesystem-audit-entity-type.html
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
/// hl7.org/fhir/R4/codesystem-object-role.html
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
/// BALP's own entity type for the `X-Request-Id` (BALP CodeSystem BasicAuditEntityType).
const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";

/// Who writes the event and which server the client addressed.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// `audit.observer`, else the host name.
    pub observer: &'a str,
    /// The FHIR base the client addressed (`publicBaseUrl`, else the upstream).
    pub server: &'a str,
}

/// The AuditEvent for one decision.
pub fn audit_event(record: &AuditRecord<'_>, source: &Source<'_>) -> Value {
    let kind = Kind::of(record);
    let mut event = Map::new();
    event.insert("resourceType".into(), json!("AuditEvent"));
    event.insert(
        "type".into(),
        json!({"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"}),
    );
    if let Some(code) = kind.subtype {
        event.insert(
            "subtype".into(),
            json!([{"system": RESTFUL_INTERACTION, "code": code, "display": code}]),
        );
    }
    event.insert("action".into(), json!(kind.action));
    event.insert("recorded".into(), json!(instant(record.time)));
    let (code, description) = outcome(record);
    event.insert("outcome".into(), json!(code));
    if let Some(description) = description {
        event.insert("outcomeDesc".into(), json!(description));
    }
    event.insert("agent".into(), Value::Array(agents(record, source, &kind)));
    event.insert(
        "source".into(),
        json!({
            "observer": {"identifier": {"value": source.observer}, "display": source.observer},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        }),
    );
    event.insert("entity".into(), Value::Array(entities(record)));
    Value::Object(event)
}

/// What the request did, in AuditEvent terms.
struct Kind {
    /// The restful-interaction code; `None` when the request was refused before it was
    /// classified, or is a bundle whose body was never read.
    subtype: Option<&'static str>,
    /// hl7.org/fhir/R4/valueset-audit-event-action.html
    action: &'static str,
    /// The data flows to the client (a read): BALP's Read roles rather than its Query roles.
    to_client: bool,
    /// The user changes data: BALP's DataSources user type (AUT) rather than IRCP.
    writes: bool,
}

impl Kind {
    fn of(record: &AuditRecord<'_>) -> Kind {
        let Some(request) = record.request else {
            return Kind::of_method(record.method);
        };
        // BALP Read: read, vread (action R). Query: search-* (action E). Create C, Update U
        // (update and patch), Delete D. History of one resource reads it; history of a type or
        // the system is a query. Conditional interactions keep their base code, as the
        // restful-interaction code system has none of their own.
        let (subtype, action) = match request.interaction {
            Interaction::Capabilities => (Some("capabilities"), "R"),
            Interaction::Read => (Some("read"), "R"),
            Interaction::Vread => (Some("vread"), "R"),
            Interaction::HistoryInstance => (Some("history-instance"), "R"),
            Interaction::SearchType => (Some("search-type"), "E"),
            Interaction::SearchSystem => (Some("search-system"), "E"),
            Interaction::SearchCompartment => (Some("search"), "E"),
            Interaction::HistoryType => (Some("history-type"), "E"),
            Interaction::HistorySystem => (Some("history-system"), "E"),
            Interaction::Create | Interaction::ConditionalCreate => (Some("create"), "C"),
            Interaction::Update | Interaction::ConditionalUpdate => (Some("update"), "U"),
            Interaction::Patch | Interaction::ConditionalPatch => (Some("patch"), "U"),
            Interaction::Delete | Interaction::ConditionalDelete => (Some("delete"), "D"),
            Interaction::Bundle => (record.bundle.map(bundle_code), "E"),
            Interaction::Operation | Interaction::OperationStatus => (Some("operation"), "E"),
        };
        Kind {
            subtype,
            action,
            to_client: action == "R",
            writes: matches!(action, "C" | "U" | "D"),
        }
    }

    /// A request refused before classification: the method is all there is to go on.
    fn of_method(method: &Method) -> Kind {
        let action = match *method {
            Method::GET | Method::HEAD => "R",
            Method::PUT | Method::PATCH => "U",
            Method::DELETE => "D",
            _ => "E",
        };
        Kind {
            subtype: None,
            action,
            to_client: action == "R",
            writes: matches!(action, "U" | "D"),
        }
    }
}

fn bundle_code(kind: BundleKind) -> &'static str {
    match kind {
        BundleKind::Batch => "batch",
        BundleKind::Transaction => "transaction",
    }
}

/// `outcome` (hl7.org/fhir/R4/valueset-audit-event-outcome.html) and `outcomeDesc`.
fn outcome(record: &AuditRecord<'_>) -> (&'static str, Option<String>) {
    let status = record.status;
    let code = match status {
        ..=399 => "0",
        400..=499 => "4",
        _ => "8",
    };
    let upstream = (status >= 400).then(|| format!("the FHIR server answered {status}"));
    let description = match record.outcome {
        Outcome::Allowed | Outcome::Anonymous => upstream,
        Outcome::Refused { reason: "", .. } => Some(format!("refused: {status}")),
        Outcome::Refused { reason, .. } => Some(reason.to_owned()),
        Outcome::WouldBeRefused {
            status: would_be,
            reason,
            ..
        } => {
            let mut text = format!("report only: would have been refused with {would_be}");
            if !reason.is_empty() {
                text.push_str(": ");
                text.push_str(reason);
            }
            if let Some(upstream) = upstream {
                text.push_str("; ");
                text.push_str(&upstream);
            }
            Some(text)
        }
    };
    (code, description)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn agents(record: &AuditRecord<'_>, source: &Source<'_>, kind: &Kind) -> Vec<Value> {
    let (client_role, server_role) = if kind.to_client {
        (
            coding(DICOM, "110152", "Destination Role ID"),
            coding(DICOM, "110153", "Source Role ID"),
        )
    } else {
        (
            coding(DICOM, "110153", "Source Role ID"),
            coding(DICOM, "110152", "Destination Role ID"),
        )
    };
    let principal = record.principal;
    let user = principal.and_then(|p| {
        let mut who = Map::new();
        if let Some(fhir_user) = &p.fhir_user {
            who.insert("reference".into(), json!(fhir_user));
        }
        if let Some(subject) = &p.subject {
            who.insert(
                "identifier".into(),
                json!({"system": p.issuer, "value": subject}),
            );
        }
        (!who.is_empty()).then_some(Value::Object(who))
    });

    let mut client = Map::new();
    client.insert("type".into(), json!({"coding": [client_role]}));
    let who = match principal {
        Some(p) => match &p.client_id {
            Some(client_id) => json!({"identifier": {"system": p.issuer, "value": client_id}}),
            None => json!({"display": "unidentified client"}),
        },
        None => json!({"display": "anonymous"}),
    };
    client.insert("who".into(), who);
    // The application is the requestor only when no user is named (client credentials).
    client.insert("requestor".into(), json!(user.is_none()));
    if let Some(peer) = record.peer {
        // R4 network-type 2: an IP address.
        client.insert(
            "network".into(),
            json!({"address": peer.ip().to_string(), "type": "2"}),
        );
    }
    let mut agents = vec![Value::Object(client)];

    agents.push(json!({
        "type": {"coding": [server_role]},
        "who": {"identifier": {"value": source.server}},
        "requestor": false,
        // R4 network-type 5: a URI.
        "network": {"address": source.server, "type": "5"},
    }));

    if let Some(who) = user {
        let user_type = if kind.writes {
            coding(PARTICIPATION_TYPE, "AUT", "author (originator)")
        } else {
            coding(PARTICIPATION_TYPE, "IRCP", "information recipient")
        };
        agents.push(json!({
            "type": {"coding": [user_type]},
            "who": who,
            "requestor": true,
        }));
    }
    agents
}

fn entities(record: &AuditRecord<'_>) -> Vec<Value> {
    let mut entities = vec![json!({
        "what": {"identifier": {"value": record.request_id}},
        "type": coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id"),
    })];
    if let Some(request) = record.request {
        if let Some(what) = resource(request) {
            entities.push(json!({
                "what": what,
                "type": coding(ENTITY_TYPE, "2", "System Object"),
                "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
            }));
        }
        if let Some(patient) = patient(request) {
            entities.push(json!({
                "what": {"reference": patient},
                "type": coding(ENTITY_TYPE, "1", "Person"),
                "role": coding(OBJECT_ROLE, "1", "Patient"),
            }));
        }
    }
    if let Some(query) = record.query.filter(|q| !q.is_empty()) {
        entities.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "query": base64::engine::general_purpose::STANDARD.encode(query),
        }));
    }
    entities
}

/// The resource acted on: `Type/id` (with `/_history/vid` for a vread), or just the type for a
/// type-level interaction.
fn resource(request: &FhirRequest) -> Option<Value> {
    let resource_type = request.resource_type.as_deref()?;
    if request.compartment.is_some() {
        // `Patient/1/Observation`: the type searched; the patient is its own entity.
        return Some(json!({"type": resource_type}));
    }
    Some(match (&request.id, &request.version) {
        (Some(id), Some(version)) => {
            json!({"reference": format!("{resource_type}/{id}/_history/{version}")})
        }
        (Some(id), None) => json!({"reference": format!("{resource_type}/{id}")}),
        (None, _) => json!({"type": resource_type}),
    })
}

/// The patient the request names (BALP Patient* profiles): a Patient compartment's owner, or the
/// Patient acted on.
fn patient(request: &FhirRequest) -> Option<String> {
    if let Some((owner_type, owner_id)) = &request.compartment {
        return (owner_type == "Patient").then(|| format!("Patient/{owner_id}"));
    }
    match (request.resource_type.as_deref(), &request.id) {
        (Some("Patient"), Some(id)) => Some(format!("Patient/{id}")),
        _ => None,
    }
}

/// An R4 `instant`: UTC, to the millisecond.
fn instant(time: std::time::SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = rfc3339(since.as_secs());
    let whole = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{whole}.{:03}Z", since.subsec_millis())
}

#[cfg(test)]
mod tests;
