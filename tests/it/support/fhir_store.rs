//! The in-memory FHIR store behind [`super::upstream::FakeFhir::store`]: `type/id` → resource
//! (each write bumps `meta.versionId`, answered as a weak ETag), served under `/fhir`. It answers
//! `metadata`, reads (with `If-None-Match` / `If-Match`), searches by GET and by POST `_search`,
//! type, instance and system history, creates, updates, JSON patches, deletes, and batches or
//! transactions entry by entry, and logs what it was asked.

use std::collections::BTreeMap;

use bytes::Bytes;
use fhirguard::fhir::patch;
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::Full;
use serde_json::{json, Value};

/// The base URL references in a `subject` / `patient` search value may carry.
const BASE: &str = "https://fhir.example.org";

/// What a search answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Every resource of the type, ignoring every parameter: what a client sees of a
    /// compartment is then fhirguard's filtering alone.
    AllOfType,
    /// The compartment parameters fhirguard adds (`subject`, `patient`, `_id`, unmodified)
    /// applied as a server would, ANDed, every other parameter ignored; `_summary=count` and
    /// `_count=0` answer the total without entries — the shape that leaks counts.
    CompartmentParameters,
}

#[derive(Debug)]
pub(super) struct Store {
    pub(super) resources: BTreeMap<String, Value>,
    pub(super) log: Vec<String>,
    search: Search,
}

impl Store {
    pub(super) fn new(seed: Vec<Value>, search: Search) -> Store {
        let mut store = Store {
            resources: BTreeMap::new(),
            log: Vec::new(),
            search,
        };
        for resource in seed {
            store.put(resource);
        }
        store
    }

    /// Answers one request (already recorded by the caller) and logs it.
    pub(super) fn serve(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let target = uri.path_and_query().map_or("", |pq| pq.as_str());
        let path = uri.path().trim_start_matches("/fhir");
        let query = uri.query().unwrap_or_default();
        if *method == Method::POST && path.ends_with("/_search") {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let form = String::from_utf8_lossy(body);
            self.log
                .push(format!("POST {target} [{content_type}] {form}"));
        } else {
            self.log.push(format!("{method} {target}"));
        }
        let (status, answer) = self.answer(method, path, query, headers, body);
        let mut response = Response::builder()
            .status(status)
            .header("content-type", "application/fhir+json");
        if let Some(version) = answer["meta"]["versionId"].as_str() {
            response = response.header("etag", format!("W/\"{version}\""));
        }
        let body = if status == StatusCode::NOT_MODIFIED {
            Bytes::new()
        } else {
            Bytes::from(answer.to_string())
        };
        response.body(Full::new(body)).expect("response")
    }

    /// Stores `resource` as its next version.
    fn put(&mut self, mut resource: Value) -> Value {
        let key = format!(
            "{}/{}",
            resource["resourceType"].as_str().expect("resourceType"),
            resource["id"].as_str().expect("id")
        );
        let version = self
            .resources
            .get(&key)
            .and_then(|r| r["meta"]["versionId"].as_str()?.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        resource["meta"] = json!({ "versionId": version.to_string() });
        self.resources.insert(key, resource.clone());
        resource
    }

    /// A Bundle of `entries` whose `total` counts them all.
    fn bundle(&self, kind: &str, entries: Vec<Value>, query: &str) -> Value {
        let total = entries.len();
        let count_only = self.search == Search::CompartmentParameters
            && query
                .split('&')
                .any(|p| p == "_summary=count" || p == "_count=0");
        let entries: Vec<Value> = if count_only { Vec::new() } else { entries };
        json!({"resourceType": "Bundle", "type": kind, "total": total, "entry": entries})
    }

    fn matches(&self, resource: &Value, query: &str) -> bool {
        self.search == Search::AllOfType
            || query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .all(|(name, value)| match name {
                    "subject" | "patient" => {
                        let wanted = value.strip_prefix(&format!("{BASE}/")).unwrap_or(value);
                        let wanted = match wanted.contains('/') {
                            true => wanted.to_owned(),
                            false => format!("Patient/{wanted}"),
                        };
                        resource["subject"]["reference"] == wanted.as_str()
                    }
                    "_id" => resource["id"] == value,
                    _ => true,
                })
    }

    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["metadata"]) => (
                StatusCode::OK,
                json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server"}]}),
            ),
            ("GET", [t, "_history"]) | ("GET", [t @ "_history"]) => {
                let entries: Vec<Value> = self
                    .resources
                    .values()
                    .filter(|r| *t == "_history" || r["resourceType"] == *t)
                    .map(|r| json!({"resource": r}))
                    .collect();
                (StatusCode::OK, self.bundle("history", entries, query))
            }
            ("GET", [t, id, "_history"]) => match self.resources.get(&format!("{t}/{id}")) {
                Some(resource) => {
                    let versions = resource["meta"]["versionId"]
                        .as_str()
                        .and_then(|v| v.parse::<u32>().ok())
                        .expect("versionId");
                    let entries = vec![json!({"resource": resource})];
                    let mut history = self.bundle("history", entries, query);
                    history["total"] = json!(versions);
                    (StatusCode::OK, history)
                }
                None => outcome(StatusCode::NOT_FOUND),
            },
            ("GET", [t, id] | [t, id, "_history", _]) => {
                let Some(resource) = self.resources.get(&format!("{t}/{id}")) else {
                    return outcome(StatusCode::NOT_FOUND);
                };
                let etag = format!("W/\"{}\"", resource["meta"]["versionId"].as_str().unwrap());
                if header("if-none-match").is_some_and(|v| v == etag || v == "*") {
                    return (StatusCode::NOT_MODIFIED, resource.clone());
                }
                if header("if-match").is_some_and(|v| v != etag) {
                    return outcome(StatusCode::PRECONDITION_FAILED);
                }
                (StatusCode::OK, resource.clone())
            }
            ("GET", [t]) | ("GET", [_, _, t]) | ("POST", [t, "_search"]) => {
                let form = std::str::from_utf8(body).unwrap_or_default();
                let query = format!("{query}&{form}");
                let entries: Vec<Value> = self
                    .resources
                    .values()
                    .filter(|r| r["resourceType"] == *t && self.matches(r, &query))
                    .map(|r| json!({"resource": r, "search": {"mode": "match"}}))
                    .collect();
                (StatusCode::OK, self.bundle("searchset", entries, &query))
            }
            ("POST", []) => self.batch(body),
            ("POST", [_]) | ("PUT", [_, _]) => {
                let mut resource: Value = serde_json::from_slice(body).expect("a JSON resource");
                if resource.get("id").is_none() {
                    resource["id"] = json!(format!("new{}", self.resources.len()));
                }
                (StatusCode::CREATED, self.put(resource))
            }
            ("PATCH", [t, id]) => {
                let Some(mut resource) = self.resources.get(&format!("{t}/{id}")).cloned() else {
                    return outcome(StatusCode::NOT_FOUND);
                };
                let etag = format!("W/\"{}\"", resource["meta"]["versionId"].as_str().unwrap());
                if header("if-match").is_some_and(|v| v != etag) {
                    return outcome(StatusCode::PRECONDITION_FAILED);
                }
                let operations: Value = serde_json::from_slice(body).expect("a JSON patch");
                match patch::apply(&mut resource, &operations) {
                    Ok(()) => (StatusCode::OK, self.put(resource)),
                    Err(_) => outcome(StatusCode::UNPROCESSABLE_ENTITY),
                }
            }
            ("DELETE", [t, id]) => {
                self.resources.remove(&format!("{t}/{id}"));
                (StatusCode::NO_CONTENT, json!({}))
            }
            _ => outcome(StatusCode::BAD_REQUEST),
        }
    }

    /// A batch or transaction: each entry answered as its own request (conditional headers
    /// from `ifNoneMatch` / `ifMatch`), in a `batch-response`.
    fn batch(&mut self, body: &[u8]) -> (StatusCode, Value) {
        let request: Value = serde_json::from_slice(body).expect("a JSON Bundle");
        let mut entries = Vec::new();
        for entry in request["entry"].as_array().expect("entries") {
            let url = entry["request"]["url"].as_str().expect("url").to_owned();
            self.log.push(format!("  entry {url}"));
            let method = entry["request"]["method"].as_str().expect("method");
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let (path, query) = url.split_once('?').unwrap_or((&url, ""));
            let mut headers = HeaderMap::new();
            for (member, header) in [("ifNoneMatch", "if-none-match"), ("ifMatch", "if-match")] {
                if let Some(value) = entry["request"][member].as_str() {
                    headers.insert(header, value.parse().expect("a header value"));
                }
            }
            let (status, resource) = self.answer(
                &method,
                &format!("/{path}"),
                query,
                &headers,
                entry["resource"].to_string().as_bytes(),
            );
            let mut answered = json!({"response": {"status": status.to_string(), "location": url}});
            if status != StatusCode::NOT_MODIFIED {
                answered["resource"] = resource;
            }
            if let Some(version) = answered["resource"]["meta"]["versionId"].as_str() {
                answered["response"]["etag"] = json!(format!("W/\"{version}\""));
            }
            entries.push(answered);
        }
        (
            StatusCode::OK,
            json!({"resourceType": "Bundle", "type": "batch-response", "entry": entries}),
        )
    }
}

fn outcome(status: StatusCode) -> (StatusCode, Value) {
    (status, json!({"resourceType": "OperationOutcome"}))
}
