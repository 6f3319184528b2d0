//! The demo's in-memory FHIR stand-in: read, search (by `_id`, `patient` and `subject`; other
//! parameters are ignored), create, update and delete over a map, seeded with two patients and
//! an observation of each. Enough to watch fhirguard decide; not a FHIR server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::{full, Body};

/// The base path the stand-in serves under, as a FHIR server behind a prefix would.
pub const BASE_PATH: &str = "/fhir";

type Store = Arc<Mutex<BTreeMap<(String, String), Value>>>;

/// Serves the stand-in on `listener` until the process ends.
pub fn start(listener: TcpListener) {
    let store: Store = Arc::new(Mutex::new(seed()));
    crate::cli::demo::serve_forever(listener, move |request| {
        let store = Arc::clone(&store);
        async move { answer(store, request).await }
    });
}

fn seed() -> BTreeMap<(String, String), Value> {
    let mut store = BTreeMap::new();
    store.insert(
        ("Patient".to_owned(), "example".to_owned()),
        json!({ "resourceType": "Patient", "id": "example", "name": [{ "family": "Chalmers", "given": ["Peter"] }] }),
    );
    store.insert(
        ("Patient".to_owned(), "other".to_owned()),
        json!({ "resourceType": "Patient", "id": "other", "name": [{ "family": "Doe", "given": ["Jane"] }] }),
    );
    store.insert(
        ("Observation".to_owned(), "bp-1".to_owned()),
        json!({ "resourceType": "Observation", "id": "bp-1", "status": "final",
                "code": { "text": "Blood pressure" }, "subject": { "reference": "Patient/example" } }),
    );
    store.insert(
        ("Observation".to_owned(), "hr-1".to_owned()),
        json!({ "resourceType": "Observation", "id": "hr-1", "status": "final",
                "code": { "text": "Heart rate" }, "subject": { "reference": "Patient/other" } }),
    );
    store
}

async fn answer(store: Store, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let Some(relative) = path.strip_prefix(BASE_PATH) else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "outside the FHIR base");
    };
    let segments: Vec<String> = relative
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut store = store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match (method, segments.as_slice()) {
        (Method::GET, [metadata]) if metadata == "metadata" => fhir_json(
            StatusCode::OK,
            &json!({ "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                     "fhirVersion": "4.0.1", "format": ["json"] }),
        ),
        (Method::GET, [kind]) => {
            let entries: Vec<Value> = store
                .iter()
                .filter(|((t, _), resource)| t == kind && matches(resource, &query))
                .map(|(_, resource)| json!({ "resource": resource }))
                .collect();
            fhir_json(
                StatusCode::OK,
                &json!({ "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries }),
            )
        }
        (Method::GET, [kind, id]) => match store.get(&(kind.clone(), id.clone())) {
            Some(resource) => fhir_json(StatusCode::OK, resource),
            None => outcome(StatusCode::NOT_FOUND, "not-found", "no such resource"),
        },
        (Method::POST, [kind]) => {
            let Ok(mut resource) = serde_json::from_slice::<Value>(&body) else {
                return outcome(StatusCode::BAD_REQUEST, "invalid", "the body is not JSON");
            };
            let id = format!("{}", store.len() + 1);
            resource["id"] = json!(id);
            resource["resourceType"] = json!(kind);
            store.insert((kind.clone(), id), resource.clone());
            fhir_json(StatusCode::CREATED, &resource)
        }
        (Method::PUT, [kind, id]) => {
            let Ok(mut resource) = serde_json::from_slice::<Value>(&body) else {
                return outcome(StatusCode::BAD_REQUEST, "invalid", "the body is not JSON");
            };
            resource["id"] = json!(id);
            store.insert((kind.clone(), id.clone()), resource.clone());
            fhir_json(StatusCode::OK, &resource)
        }
        (Method::DELETE, [kind, id]) => {
            store.remove(&(kind.clone(), id.clone()));
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => outcome(
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
            "not supported by the demo stand-in",
        ),
    }
}

/// Whether `resource` matches the search's `_id`, `patient` and `subject` parameters, ANDed,
/// each a comma-separated list of alternatives (FHIR R4 search §2.21.1.3.2).
fn matches(resource: &Value, query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).all(|(name, values)| {
        let mut values = values.split(',');
        match name.as_ref() {
            "_id" => values.any(|id| resource["id"] == id),
            "patient" | "subject" => {
                let reference = resource["subject"]["reference"]
                    .as_str()
                    .unwrap_or_default();
                values.any(|value| {
                    reference == value || reference.strip_prefix("Patient/") == Some(value)
                })
            }
            _ => true,
        }
    })
}

fn fhir_json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/fhir+json"),
    );
    response
}

fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response<Body> {
    fhir_json(
        status,
        &json!({ "resourceType": "OperationOutcome",
                 "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }] }),
    )
}
