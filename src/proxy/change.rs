//! Changes under a `patient` context (reference §8 rule 20, compartment hardening classes 8
//! and 9): what a create, update or patch would store must stay in the compartment and name no
//! other patient; the stored resource is read first for an update, delete, patch or instance
//! history (absent or outside the compartment: 404, alike); a JSON Patch is applied to it to
//! see its result; a conditional create's `If-None-Exist` is confined like a search.

use http::header::{HeaderName, ACCEPT, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH};
use http::{HeaderValue, Request};
use serde_json::Value;

use crate::authz::smart::enforcement::{AnswerError, Enforcement};
use crate::authz::smart::{confine_condition, membership, Confinement, FhirUser};
use crate::body::empty;
use crate::error::Rejection;
use crate::fhir::patch::{apply, JSON_PATCH};
use crate::fhir::FhirRequest;
use crate::fhir::FHIR_JSON;
use crate::proxy::forward::Exchange;
use crate::proxy::smart::{buffer, json, strip_conditional_headers};

/// What a write would store must be in the compartment, name no other patient anywhere in it
/// (hardening class 9: `performer: Patient/2` beside `subject: Patient/1` writes into patient
/// 2's record; so does an extension, `focus` or a contained resource naming patient 2, in any
/// spelling a server may normalise to it), and hold no case variant of those elements.
fn check_stored(resource: &Value, what: &'static str, user: &FhirUser) -> Result<(), Enforcement> {
    if !membership::is_member(resource, user) {
        let user = user.clone();
        return Err(Enforcement::WriteOutside { what, user });
    }
    if let Some(name) = membership::case_variant(resource, user) {
        return Err(Enforcement::CaseVariant { what, name });
    }
    if let Some(other) = membership::foreign_reference(resource, user) {
        let user = user.clone();
        return Err(Enforcement::ForeignReference { what, other, user });
    }
    Ok(())
}

/// A body stored under a `patient` context (create, update): it must be a resource of the
/// request's type inside the compartment, else 403.
pub fn check_body(
    body: &[u8],
    resource_type: Option<&str>,
    user: &FhirUser,
) -> Result<(), Rejection> {
    let resource = crate::fhir::json::parse(body).map_err(Enforcement::BodyNotJson)?;
    if resource["resourceType"].as_str() != resource_type {
        return Err(Enforcement::BodyTypeMismatch.into());
    }
    Ok(check_stored(&resource, "the resource in the body", user)?)
}

/// A patch under a `patient` context (hardening class 9): only a JSON Patch (RFC 6902) is
/// evaluated — applied to `current`, the stored resource, the result must stay the same
/// resource and in the compartment. A FHIRPath Patch or any other body cannot be evaluated
/// and is refused. Returns the `If-Match` that pins the patch to the version checked.
fn check_patch(
    headers: &http::HeaderMap,
    body: &[u8],
    mut current: Value,
    user: &FhirUser,
) -> Result<Option<HeaderValue>, Rejection> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !media_type.eq_ignore_ascii_case(JSON_PATCH) {
        let media_type = media_type.to_owned();
        return Err(Enforcement::NotJsonPatch { media_type }.into());
    }
    let patch = crate::fhir::json::parse(body).map_err(Enforcement::PatchNotJson)?;
    let before = (current["resourceType"].clone(), current["id"].clone());
    let version = current["meta"]["versionId"].as_str().map(str::to_owned);
    apply(&mut current, &patch).map_err(|error| {
        let user = user.clone();
        Enforcement::PatchNotApplicable { error, user }
    })?;
    if (current["resourceType"].clone(), current["id"].clone()) != before {
        return Err(Enforcement::PatchChangesIdentity.into());
    }
    check_stored(&current, "the patched resource", user)?;
    Ok(version.and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok()))
}

/// A conditional create's `If-None-Exist` under a `patient` context (hardening class 8):
/// exactly one header, confined like a search on the type.
pub(super) fn confine_if_none_exist(
    headers: &mut http::HeaderMap,
    resource_type: &str,
    user: &FhirUser,
) -> Result<(), Rejection> {
    let mut values = headers.get_all(IF_NONE_EXIST).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Enforcement::IfNoneExistCount.into());
    };
    let criteria = value
        .to_str()
        .map_err(|_| Enforcement::IfNoneExistNotAscii)?;
    // The header may carry the type before the criteria (`Observation?code=x`); the server
    // reads only the query part.
    let criteria = criteria.split_once('?').map_or(criteria, |(_, q)| q);
    let confined = confine_condition(user, resource_type, criteria)?;
    let value = HeaderValue::from_str(&confined).map_err(|_| Enforcement::IfNoneExistInvalid)?;
    headers.insert(IF_NONE_EXIST, value);
    Ok(())
}

const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");

/// A change, patch or instance history whose stored resource must be checked first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change<'a> {
    pub(super) request: &'a FhirRequest,
    pub(super) confinement: &'a Confinement,
    /// The buffered body of a patch.
    pub(super) patch: Option<&'a [u8]>,
}

/// Carries out the checks of the stored resource a plan asks for (reference §8 rule 20,
/// hardening classes 8 and 9): an update, delete, patch or instance history must find it
/// in the compartment (absent or outside: 404, alike), and a patch's result must stay
/// there — the forwarded patch is then pinned to the version checked (`If-Match`, RFC 9110
/// §13.1.1) unless the client pinned one itself.
pub(super) async fn check_change(
    exchange: &Exchange<'_>,
    parts: &mut http::request::Parts,
    user: &FhirUser,
    change: Change<'_>,
) -> Result<(), Rejection> {
    if !change.confinement.reads_current() {
        return Ok(());
    }
    let request = change.request;
    let path = format!(
        "/{}/{}",
        request.resource_type.as_deref().unwrap_or_default(),
        request.id.as_deref().unwrap_or_default()
    );
    let current = current_resource(exchange, parts, &path, user).await?;
    let absent = || Enforcement::StoredOutside {
        request: request.to_string(),
        user: user.clone(),
    };
    match change.confinement {
        Confinement::Patch => {
            let current = current.ok_or_else(absent)?;
            let body = change.patch.unwrap_or_default();
            let pin = check_patch(&parts.headers, body, current, user)?;
            if let (Some(pin), false) = (pin, parts.headers.contains_key(IF_MATCH)) {
                parts.headers.insert(IF_MATCH, pin);
            }
        }
        // An absent resource is a 404 too, without asking the upstream: an update that
        // would create (201) or a delete of nothing (204) would otherwise tell "absent"
        // from "another patient's" (404) — an existence oracle (hardening class 8).
        _ => drop(current.ok_or_else(absent)?),
    }
    Ok(())
}

/// Before a change, a patch or an instance history under a `patient` context: the current
/// resource at `path` (`/Type/id`), read from the upstream with the caller's credentials,
/// must be in the compartment (reference §8 rule 20), else 404. `None`: it does not exist
/// (404/410). The read carries no conditional header, so its answer is the resource, never
/// a bare 304/412, and asks for JSON, which is what fhirguard reads.
async fn current_resource(
    exchange: &Exchange<'_>,
    parts: &http::request::Parts,
    path: &str,
    user: &FhirUser,
) -> Result<Option<Value>, Rejection> {
    let mut read = Request::get(parts.uri.clone())
        .body(empty())
        .map_err(|error| Enforcement::from(AnswerError::Request(error)))?;
    *read.headers_mut() = parts.headers.clone();
    for name in [CONTENT_LENGTH, CONTENT_TYPE, ACCEPT_ENCODING, IF_NONE_EXIST] {
        read.headers_mut().remove(name);
    }
    strip_conditional_headers(read.headers_mut());
    read.headers_mut()
        .insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
    let (read_parts, body) = read.into_parts();
    let response = exchange.send(read_parts, body, path, None).await?;
    let status = response.status();
    if status == http::StatusCode::NOT_FOUND || status == http::StatusCode::GONE {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(Enforcement::from(AnswerError::StoredRead(status)).into());
    }
    let limit = exchange.config.limits.max_bundle_bytes;
    let (_, bytes) = buffer(response, limit).await?;
    let resource = json(&bytes)?;
    if !membership::is_member(&resource, user) {
        let user = user.clone();
        return Err(Enforcement::AnswerOutside { user }.into());
    }
    Ok(Some(resource))
}
