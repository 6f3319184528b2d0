//! The I/O half of SMART enforcement's checks of answers: checking or filtering the upstream's
//! answer to a read, search or bundle planned by [`crate::authz::smart`] (a [`Confinement`]), and
//! answering a batch entry by entry. The discovery documents are `proxy::documents`'s, the
//! checks of what a change would store `proxy::change`'s, the order of it all `proxy::plan`'s
//! (each of them uses this file). Everything buffered is bounded by `limits.maxBundleBytes`.

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::actions::DataActions;
use crate::authz::smart::{membership, visible, Confinement, FhirUser, SmartGrant};
use crate::authz::BundleDecision;
use crate::body::{full, Body};
use crate::error::Rejection;
use crate::fhir::json as fhir_json;
use crate::fhir::resource_types::ResourceType;
use crate::fhir::FHIR_JSON;

use crate::authz::smart::enforcement::{AnswerError, Enforcement};

/// Buffers a response body (at most `limit` bytes).
pub(super) async fn buffer(
    response: Response<Body>,
    limit: usize,
) -> Result<(http::response::Parts, Bytes), Rejection> {
    let (parts, mut body) = response.into_parts();
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| Enforcement::from(AnswerError::Read(error)))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(Enforcement::from(AnswerError::TooLarge { limit }).into());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok((parts, bytes.freeze()))
}

/// A response rebuilt around a new body.
pub(super) fn rebuild(mut parts: http::response::Parts, body: Bytes) -> Response<Body> {
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, full(body))
}

/// Parses a FHIR JSON answer fhirguard has to look into, as strictly as a request body: an
/// answer whose members fhirguard and the client could read differently is not passed on.
pub(super) fn json(body: &[u8]) -> Result<Value, Rejection> {
    fhir_json::parse(body).map_err(|error| Enforcement::from(AnswerError::NotJson(error)).into())
}

/// A read or vread under a `patient` context: a resource outside the compartment is answered
/// with 404 (reference §4.7). Non-success answers pass unchanged, but for those that would
/// confirm a resource without showing it (304 Not Modified, 412 Precondition Failed): the
/// conditional headers that ask for them are stripped before forwarding
/// ([`strip_conditional_headers`]), and should one come anyway it is a 404 (hardening class 5).
pub(super) async fn check_read(
    response: Response<Body>,
    user: &FhirUser,
    limit: usize,
) -> Result<Response<Body>, Rejection> {
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED || status == StatusCode::PRECONDITION_FAILED {
        let user = user.clone();
        return Err(Enforcement::ConditionalAnswer { status, user }.into());
    }
    if !status.is_success() {
        return Ok(response);
    }
    let (parts, bytes) = buffer(response, limit).await?;
    if !membership::is_member(&json(&bytes)?, user) {
        let user = user.clone();
        return Err(Enforcement::AnswerOutside { user }.into());
    }
    Ok(rebuild(parts, bytes))
}

/// The conditional-request headers (RFC 9110 §13.1) and `Range`: on a request whose answer
/// fhirguard checks, a 304, 412 or 206 would answer before (or instead of) the resource it
/// must see — "it exists, at this version" about a resource outside the compartment.
const CONDITIONAL_HEADERS: [HeaderName; 6] = [
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
    RANGE,
];

/// Strips [`CONDITIONAL_HEADERS`] from a checked read (hardening class 5).
pub(super) fn strip_conditional_headers(headers: &mut http::HeaderMap) {
    for name in CONDITIONAL_HEADERS {
        headers.remove(name);
    }
}

/// A search carrying a SMART v2 constraint (issue 20): the server must apply every parameter
/// or refuse, never drop one it does not know (FHIR R4 search.html#errors, `Prefer:
/// handling=strict`; RFC 7240) — a lenient server that ignored the constraint would answer
/// with the very resources it excludes. The client's other preferences are kept, its own
/// `handling` replaced.
pub(super) fn require_strict_handling(headers: &mut http::HeaderMap) {
    let mut kept: Vec<String> = headers
        .get_all(PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|preference| {
            let name = preference.split(['=', ';']).next().unwrap_or_default();
            !preference.is_empty() && !name.trim().eq_ignore_ascii_case("handling")
        })
        .map(str::to_owned)
        .collect();
    kept.push("handling=strict".to_owned());
    headers.remove(PREFER);
    if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
        headers.insert(PREFER, value);
    } else {
        headers.insert(PREFER, HeaderValue::from_static("handling=strict"));
    }
}

/// `Prefer` (RFC 7240).
pub(super) const PREFER: HeaderName = HeaderName::from_static("prefer");

/// A search or history answer: entries the grant may not see are removed (reference §4.7,
/// ADR-2607 "included resources are compartment-checked"; issue 20: of a type read only under
/// v2 constraints, only the `proven` type's matches).
pub(super) async fn filter_search(
    response: Response<Body>,
    grant: &SmartGrant,
    granted: DataActions,
    proven: Option<&str>,
    limit: usize,
) -> Result<Response<Body>, Rejection> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, bytes) = buffer(response, limit).await?;
    let mut bundle = json(&bytes)?;
    if bundle["resourceType"] != "Bundle" {
        // `$everything` and friends answer with a Bundle; anything else is one resource.
        if visible(grant, granted, &bundle, proven) {
            return Ok(rebuild(parts, bytes));
        }
        return Err(Enforcement::AnswerOutsideGrant.into());
    }
    let removed = membership::filter_bundle(&mut bundle, |r| visible(grant, granted, r, proven));
    if removed == 0 {
        return Ok(rebuild(parts, bytes));
    }
    Ok(rebuild(parts, Bytes::from(bundle.to_string())))
}

/// The bundle to forward: only the allowed entries, in order, each entry URL carrying its
/// planned query, and the entries whose answer fhirguard checks without their conditions
/// (`ifNoneMatch`, `ifModifiedSince`, `ifMatch`), as a checked read alone goes without its
/// conditional headers (hardening class 5). `None` when that is the body as sent.
pub(super) fn forwarded_bundle(
    body: &[u8],
    decision: &BundleDecision,
    plans: &[Confinement],
) -> Option<Bytes> {
    let rewrites = plans
        .iter()
        .any(|plan| planned_query(plan).is_some() || *plan == Confinement::Read);
    if decision.denied_entries().next().is_none() && !rewrites {
        return None;
    }
    let mut bundle = fhir_json::parse(body).ok()?;
    let entries = bundle.get_mut("entry")?.as_array_mut()?;
    let mut kept = Vec::with_capacity(entries.len());
    for (index, mut entry) in entries.drain(..).enumerate() {
        if !decision.entries.get(index).is_some_and(|d| d.allowed) {
            continue;
        }
        if let Some(query) = plans.get(index).and_then(planned_query) {
            let url = entry["request"]["url"].as_str().unwrap_or_default();
            let path = url.split_once('?').map_or(url, |(path, _)| path).to_owned();
            entry["request"]["url"] = Value::String(format!("{path}?{query}"));
        }
        let checked = plans
            .get(index)
            .is_some_and(|plan| matches!(plan, Confinement::Read | Confinement::Search { .. }));
        if let (true, Some(request)) = (checked, entry["request"].as_object_mut()) {
            for condition in ["ifNoneMatch", "ifModifiedSince", "ifMatch"] {
                request.remove(condition);
            }
        }
        kept.push(entry);
    }
    *entries = kept;
    Some(Bytes::from(bundle.to_string()))
}

fn planned_query(plan: &Confinement) -> Option<&str> {
    match plan {
        Confinement::Rewrite { query }
        | Confinement::Search {
            query: Some(query), ..
        } => Some(query),
        _ => None,
    }
}

/// True when some entry's answer must be checked, filtered or cut.
pub(super) fn bundle_needs_check(plans: &[Confinement]) -> bool {
    plans.iter().any(|plan| {
        matches!(
            plan,
            Confinement::Read | Confinement::Search { .. } | Confinement::Minimal
        )
    })
}

/// The answer to a patch whose resource the grant does not read without constraints
/// ([`crate::authz::smart::hides_answer`]): a success keeps its status and headers (`ETag`,
/// `Location`, `Last-Modified`) but not the resource; anything else (an OperationOutcome)
/// passes as it came.
pub(super) fn without_resource(response: Response<Body>) -> Response<Body> {
    if !response.status().is_success() {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut minimal = rebuild(parts, Bytes::new());
    minimal.headers_mut().remove(CONTENT_TYPE);
    minimal
}

/// Checks the upstream's batch- or transaction-response entry by entry: a read outside the
/// compartment, or answered without a resource, becomes a 404 entry, a search's Bundle is
/// filtered like a search answer, and a patch the grant cannot read loses its resource.
pub(super) fn check_bundle_answer(
    answer: &mut Value,
    decision: &BundleDecision,
    plans: &[Confinement],
    grant: &SmartGrant,
    granted: DataActions,
) {
    let Some(entries) = answer.get_mut("entry").and_then(Value::as_array_mut) else {
        return;
    };
    let forwarded = decision
        .entries
        .iter()
        .zip(plans)
        .filter(|(decided, _)| decided.allowed)
        .map(|(_, plan)| plan);
    for (entry, plan) in entries.iter_mut().zip(forwarded) {
        match plan {
            Confinement::Read => {
                // No resource to check (a `304 Not Modified` or `412` answer to the entry's
                // `ifNoneMatch`/`ifModifiedSince`/`ifMatch`, a 404, a 410) is a 404 too:
                // "not modified" would confirm another patient's resource (hardening class 5).
                let outside = grant.compartment().is_some_and(|user| {
                    entry
                        .get("resource")
                        .is_none_or(|r| !membership::is_member(r, user))
                });
                if outside {
                    *entry = json!({ "response": { "status": "404 Not Found" } });
                }
            }
            Confinement::Search { proven, .. } => {
                if let Some(bundle) = entry.get_mut("resource") {
                    let proven = proven.map(ResourceType::name);
                    membership::filter_bundle(bundle, |r| visible(grant, granted, r, proven));
                }
            }
            Confinement::Minimal => {
                // The patched resource, which the grant does not read without constraints.
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("resource");
                }
            }
            Confinement::Forward
            | Confinement::Rewrite { .. }
            | Confinement::Write { .. }
            | Confinement::Patch
            | Confinement::History => {}
        }
    }
}

/// The batch-response: the upstream's answers for the forwarded entries and a 403
/// OperationOutcome for each denied one, in the original order (reference §3.2, BundleHandler).
/// `upstream` is `None` when no entry was forwarded.
pub(super) fn batch_response(
    decision: &BundleDecision,
    upstream: Option<Value>,
    request_id: &str,
) -> Value {
    let mut answered = upstream
        .as_ref()
        .and_then(|b| b["entry"].as_array())
        .cloned()
        .unwrap_or_default()
        .into_iter();
    let entries: Vec<Value> = decision
        .entries
        .iter()
        .map(|entry| {
            if entry.allowed {
                return answered.next().unwrap_or_else(|| json!({}));
            }
            // Answered through the one error mapping, as the request alone would be.
            let refusal = Rejection::Denied(Box::new(entry.clone()));
            let status = refusal.status();
            json!({
                "response": {
                    "status": format!(
                        "{} {}",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or_default()
                    ),
                    "outcome": refusal.outcome_resource(request_id),
                },
            })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "batch-response", "entry": entries })
}

/// A FHIR JSON response fhirguard writes itself.
pub(super) fn fhir_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A constrained search asks for strict handling whatever the client preferred; its other
    /// preferences stay.
    #[test]
    fn strict_handling_replaces_the_clients_handling() {
        for (sent, forwarded) in [
            (vec![], "handling=strict"),
            (vec!["handling=lenient"], "handling=strict"),
            (vec!["HANDLING = lenient"], "handling=strict"),
            (
                vec!["return=representation, handling=lenient"],
                "return=representation, handling=strict",
            ),
            (
                vec!["respond-async", "handling=lenient;x=1"],
                "respond-async, handling=strict",
            ),
            (vec!["handlingx=1"], "handlingx=1, handling=strict"),
        ] {
            let mut headers = http::HeaderMap::new();
            for value in &sent {
                headers.append(PREFER, HeaderValue::from_static(value));
            }
            require_strict_handling(&mut headers);
            let values: Vec<&HeaderValue> = headers.get_all(PREFER).iter().collect();
            assert_eq!(values, [forwarded], "{sent:?}");
        }
    }
}
