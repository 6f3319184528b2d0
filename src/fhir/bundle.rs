//! Batch and transaction bundles (`POST /`): the body is parsed as a FHIR JSON Bundle and each
//! entry's `request` is classified through the same [`classify`] as a direct
//! request, so an entry needs exactly what the same request sent alone would need (reference
//! §3.2: "each entry is then routed and authorized individually"). Pure: no I/O.
//!
//! Entry `request` → request: `method` is the method; `url` (relative to the FHIR base, may carry
//! a query) is prefixed with `/` and normalized by [`normalize_path`]; `ifNoneExist` becomes the
//! `If-None-Exist` header (a conditional create), `ifMatch` the `If-Match` header.
//!
//! PUT entries: the OSS server, when it cannot see the method, asks Write|Create for a resource
//! without id, Write|Update with an ETag, and Write|Create|Update otherwise (reference §3.2,
//! `UpsertResourceHandler`). fhirguard always sees the entry's method and URL and applies the
//! direct-request rules instead: `PUT T/id` needs Write|Update with or without `ifMatch` (Create
//! alone must not overwrite an existing resource), `PUT T?criteria` is a conditional update, and
//! `PUT T` without id or criteria is refused, as it is outside a bundle.
//!
//! Only JSON is read, strictly ([`super::json`]): a duplicate member name anywhere in the body —
//! an entry's `method` or `url`, or a resource's `subject` — is refused, since parsers disagree
//! on which one wins, and the upstream must store what fhirguard checked. Nested batches or
//! transactions are refused.

#[cfg(test)]
mod tests;

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::Value;

use super::json::{self, JsonError};
use super::path::{normalize_path, PathError};
use super::query::RefusedParameter;
use super::{classify, ClassifyError, FhirRequest, Interaction};

/// `Bundle.type` of a request bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BundleKind {
    /// Entries are independent: the OSS server answers a denied entry with its own 403.
    Batch,
    /// All or nothing: one denied entry fails the whole transaction.
    Transaction,
}

impl BundleKind {
    /// The `Bundle.type` code: `batch` or `transaction`.
    pub fn name(self) -> &'static str {
        match self {
            BundleKind::Batch => "batch",
            BundleKind::Transaction => "transaction",
        }
    }
}

impl fmt::Display for BundleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A classified batch or transaction: one [`FhirRequest`] per entry, in entry order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleRequest {
    /// Batch or transaction, from `Bundle.type`.
    pub kind: BundleKind,
    /// Each `entry.request`, classified as the same request sent alone.
    pub entries: Vec<FhirRequest>,
}

/// Why a bundle body was refused. Every variant becomes a 400 `invalid` OperationOutcome.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The body is not strict JSON (duplicate member names included).
    #[error("The request body is refused: {0}")]
    NotJson(JsonError),
    /// JSON, but not shaped as a Bundle (an `entry` that is not an array of objects, …).
    #[error("The request body is not a valid Bundle: {0}")]
    Malformed(serde_json::Error),
    /// `resourceType` is not `Bundle`; holds what was found.
    #[error("The request body is not a Bundle (resourceType: {0}).")]
    NotABundle(String),
    /// `Bundle.type` is another type (`document`, `collection`, …) or missing: only batches
    /// and transactions are requests.
    #[error("Bundle.type must be 'batch' or 'transaction' (found {0}).")]
    UnsupportedType(String),
    /// One entry's `request` cannot be classified.
    #[error("entry[{index}].{field}: {problem}")]
    Entry {
        /// The entry's position in `Bundle.entry`, from 0.
        index: usize,
        /// The offending element, relative to the entry (`request`, `request.url`, …).
        field: &'static str,
        /// What is wrong with it.
        problem: EntryProblem,
    },
}

/// What is wrong with one entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// The element is absent.
    #[error("is required")]
    Missing,
    /// The element is present but not a JSON string.
    #[error("must be a string")]
    NotAString,
    /// `request.method` outside the R4 `http-verb` codes (case-sensitive).
    #[error("'{0}' is not a Bundle request method (GET, HEAD, POST, PUT, PATCH, DELETE)")]
    BadMethod(String),
    /// `request.url` with a scheme or an authority: fhirguard classifies only paths under the
    /// FHIR base it guards.
    #[error("absolute URLs are not supported; use a URL relative to the FHIR base")]
    AbsoluteUrl,
    /// `ifNoneExist` or `ifMatch` that cannot become the header it stands for.
    #[error("contains characters not allowed in an HTTP header")]
    BadHeaderValue,
    /// `request.url` carries `_method`, a method override.
    #[error(
        "names a _method parameter, a method override; method tunnels are refused (request \
         hygiene: method tunnels)"
    )]
    MethodParameter,
    /// `request.url` carries an `access_token` (RFC 6750 §2.3 query credentials).
    #[error(
        "carries an access_token parameter; access tokens go in the Authorization header only, \
         never in a URL (request hygiene: credentials in URLs)"
    )]
    AccessToken,
    /// A `POST …/_search` entry with a `resource`, which a server could read as more,
    /// unchecked, search parameters.
    #[error("a search entry carries its parameters in request.url, not in a resource")]
    SearchWithResource,
    /// An entry that is itself a batch or transaction (`POST /`).
    #[error("a batch or transaction cannot be nested in another")]
    NestedBundle,
    /// `request.url`'s path is refused by the same normalization as a request's own path.
    #[error("{0}")]
    Path(PathError),
    /// The entry's method and URL are refused by [`classify`], as the same request sent alone
    /// would be.
    #[error("{0}")]
    Classify(ClassifyError),
}

/// Parses and classifies a batch or transaction body.
pub fn classify_bundle(body: &[u8]) -> Result<BundleRequest, BundleError> {
    // Strict JSON first (SPEC §7: no duplicate member names), then the Bundle's shape.
    let value = json::parse(body).map_err(BundleError::NotJson)?;
    let bundle: RawBundle = serde_json::from_value(value).map_err(BundleError::Malformed)?;
    match &bundle.resource_type {
        Some(Value::String(t)) if t == "Bundle" => {}
        other => return Err(BundleError::NotABundle(describe(other.as_ref()))),
    }
    let kind = match &bundle.kind {
        Some(Value::String(t)) if t == "batch" => BundleKind::Batch,
        Some(Value::String(t)) if t == "transaction" => BundleKind::Transaction,
        other => return Err(BundleError::UnsupportedType(describe(other.as_ref()))),
    };
    let entries = bundle
        .entry
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            classify_entry(entry).map_err(|(field, problem)| BundleError::Entry {
                index,
                field,
                problem,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BundleRequest { kind, entries })
}

/// The JSON shape fhirguard reads; every other element (`resource`, `fullUrl`, …) is skipped.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Bundle resource (a JSON object)")]
struct RawBundle {
    #[serde(rename = "resourceType")]
    resource_type: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    entry: Option<Vec<RawEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a Bundle.entry (a JSON object)")]
struct RawEntry {
    request: Option<RawRequest>,
    /// Only whether there is one: a search entry must not carry one.
    resource: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a Bundle.entry.request (a JSON object)")]
struct RawRequest {
    method: Option<Value>,
    url: Option<Value>,
    #[serde(rename = "ifNoneExist")]
    if_none_exist: Option<Value>,
    #[serde(rename = "ifMatch")]
    if_match: Option<Value>,
}

type EntryResult<T> = Result<T, (&'static str, EntryProblem)>;

fn classify_entry(entry: RawEntry) -> EntryResult<FhirRequest> {
    let request = entry.request.ok_or(("request", EntryProblem::Missing))?;
    let method_name = required_string(request.method, "request.method")?;
    let method = entry_method(&method_name).ok_or((
        "request.method",
        EntryProblem::BadMethod(method_name.clone()),
    ))?;
    let url = required_string(request.url, "request.url")?;
    if is_absolute(&url) {
        return Err(("request.url", EntryProblem::AbsoluteUrl));
    }
    if url.contains('#') {
        let problem = EntryProblem::Path(PathError::InvalidCharacter("'#'".to_owned()));
        return Err(("request.url", problem));
    }
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url.as_str(), None),
    };
    let path = normalize_path(&format!("/{path}"))
        .map_err(|error| ("request.url", EntryProblem::Path(error)))?;
    // The same hygiene rules as a request's own query (SPEC §4 step 8): no method tunnel, no
    // credential.
    match query.and_then(super::query::refused_parameter) {
        Some(RefusedParameter::Method) => {
            return Err(("request.url", EntryProblem::MethodParameter))
        }
        Some(RefusedParameter::AccessToken) => {
            return Err(("request.url", EntryProblem::AccessToken))
        }
        None => {}
    }
    let mut headers = HeaderMap::new();
    let conditional_headers = [
        (
            request.if_none_exist,
            "request.ifNoneExist",
            "if-none-exist",
        ),
        (request.if_match, "request.ifMatch", "if-match"),
    ];
    for (value, field, header) in conditional_headers {
        if let Some(value) = optional_string(value, field)? {
            let value =
                HeaderValue::from_str(&value).map_err(|_| (field, EntryProblem::BadHeaderValue))?;
            headers.insert(HeaderName::from_static(header), value);
        }
    }
    let classified = classify(&method, &path, query, &headers).map_err(|error| {
        let field = match error {
            ClassifyError::MethodNotAllowed { .. } | ClassifyError::UnsupportedMethod(_) => {
                "request.method"
            }
            _ => "request.url",
        };
        (field, EntryProblem::Classify(error))
    })?;
    if classified.interaction == Interaction::Bundle {
        return Err(("request.url", EntryProblem::NestedBundle));
    }
    // A `POST …/_search` entry's parameters are in its URL, where fhirguard reads them; a server
    // could read a resource beside them (a Parameters, say) as more parameters, unchecked.
    if method == Method::POST && classified.interaction.is_search() && entry.resource.is_some() {
        return Err(("resource", EntryProblem::SearchWithResource));
    }
    Ok(classified)
}

/// R4 `Bundle.entry.request.method` (http-verb): GET | HEAD | POST | PUT | DELETE | PATCH.
fn entry_method(name: &str) -> Option<Method> {
    Some(match name {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        _ => return None,
    })
}

/// A URL with a scheme (`https:`, `urn:`) or an authority (`//host`).
fn is_absolute(url: &str) -> bool {
    if url.starts_with("//") {
        return true;
    }
    let Some((scheme, _)) = url.split_once(':') else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn required_string(value: Option<Value>, field: &'static str) -> EntryResult<String> {
    optional_string(value, field)?.ok_or((field, EntryProblem::Missing))
}

fn optional_string(value: Option<Value>, field: &'static str) -> EntryResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err((field, EntryProblem::NotAString)),
    }
}

/// A short description of a JSON value for a message: the string itself, quoted, or its kind.
fn describe(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "missing".to_owned(),
        Some(Value::String(text)) => format!("'{}'", text.chars().take(64).collect::<String>()),
        Some(Value::Bool(_)) => "a boolean".to_owned(),
        Some(Value::Number(_)) => "a number".to_owned(),
        Some(Value::Array(_)) => "an array".to_owned(),
        Some(Value::Object(_)) => "an object".to_owned(),
    }
}
