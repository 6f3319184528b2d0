//! The I/O half of SMART enforcement: carrying out a [`Confinement`] planned by
//! [`crate::authz::smart`] — checking a request body, reading the current resource first,
//! checking or filtering the upstream's answer — plus answering a batch entry by entry and the
//! discovery documents (`/.well-known/smart-configuration`, the `/metadata` security block,
//! reference §5.2–5.3). Everything buffered is bounded by `limits.maxBundleBytes`.

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::auth::{KeyStore, Principal, ProviderKeys};
use crate::authz::actions::DataActions;
use crate::authz::smart::{
    confine_condition, membership, visible, Confinement, FhirUser, SmartGrant,
};
use crate::authz::BundleDecision;
use crate::config::Config;
use crate::error::{Rejection, FHIR_JSON};
use crate::fhir::patch::{apply, JSON_PATCH};
use crate::fhir::FhirRequest;
use crate::proxy::body::{empty, full, Body};
use crate::proxy::{Generation, Proxy, Target};

/// Buffers a response body (at most `limit` bytes).
pub(super) async fn buffer(
    response: Response<Body>,
    limit: usize,
) -> Result<(http::response::Parts, Bytes), Rejection> {
    let (parts, mut body) = response.into_parts();
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| Rejection::Unverifiable(error.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(Rejection::Unverifiable(format!(
                    "the answer is larger than {limit} bytes"
                )));
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

/// Parses a FHIR JSON body fhirguard has to look into.
pub(super) fn json(body: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(body)
        .map_err(|error| Rejection::Unverifiable(format!("not FHIR JSON: {error}")))
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
        return Err(Rejection::NotFound(format!(
            "the upstream answered {status}, which fhirguard cannot check against the \
             compartment of {user} (compartment hardening: conditional reads)"
        )));
    }
    if !status.is_success() {
        return Ok(response);
    }
    let (parts, bytes) = buffer(response, limit).await?;
    if !membership::is_member(&json(&bytes)?, user) {
        return Err(Rejection::NotFound(format!(
            "the resource is outside the compartment of {user}"
        )));
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

/// A search or history answer: entries the grant may not see are removed (reference §4.7,
/// ADR-2607 "included resources are compartment-checked").
pub(super) async fn filter_search(
    response: Response<Body>,
    grant: &SmartGrant,
    granted: DataActions,
    limit: usize,
) -> Result<Response<Body>, Rejection> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, bytes) = buffer(response, limit).await?;
    let mut bundle = json(&bytes)?;
    if bundle["resourceType"] != "Bundle" {
        // `$everything` and friends answer with a Bundle; anything else is one resource.
        if visible(grant, granted, &bundle) {
            return Ok(rebuild(parts, bytes));
        }
        return Err(Rejection::NotFound(
            "the answer is outside the grant".to_owned(),
        ));
    }
    let removed = membership::filter_bundle(&mut bundle, |r| visible(grant, granted, r));
    if removed == 0 {
        return Ok(rebuild(parts, bytes));
    }
    Ok(rebuild(parts, Bytes::from(bundle.to_string())))
}

/// A body stored under a `patient` context (create, update): it must be a resource of the
/// request's type inside the compartment, else 403.
pub(super) fn check_body(
    body: &[u8],
    resource_type: Option<&str>,
    user: &FhirUser,
) -> Result<(), Rejection> {
    let resource: Value = serde_json::from_slice(body)
        .map_err(|error| Rejection::Invalid(format!("The request body is not JSON: {error}")))?;
    if resource["resourceType"].as_str() != resource_type {
        return Err(Rejection::Invalid(
            "The resource type in the body does not match the URL.".to_owned(),
        ));
    }
    check_stored(&resource, "the resource in the body", user)
}

/// What a write would store must be in the compartment and name no other patient in its
/// compartment elements (hardening class 9: `performer: Patient/2` beside `subject: Patient/1`
/// writes into patient 2's record).
fn check_stored(resource: &Value, what: &str, user: &FhirUser) -> Result<(), Rejection> {
    if !membership::is_member(resource, user) {
        return Err(Rejection::Forbidden(format!(
            "{what} is outside the compartment of {user} (compartment hardening: writes stay \
             in the compartment)"
        )));
    }
    if let Some(other) = membership::foreign_reference(resource, user) {
        return Err(Rejection::Forbidden(format!(
            "{what} names {other}, another compartment than {user} (compartment hardening: \
             writes stay in the compartment)"
        )));
    }
    Ok(())
}

/// A patch under a `patient` context (hardening class 9): only a JSON Patch (RFC 6902) is
/// evaluated — applied to `current`, the stored resource, the result must stay the same
/// resource and in the compartment. A FHIRPath Patch or any other body cannot be evaluated
/// and is refused. Returns the `If-Match` that pins the patch to the version checked.
pub(super) fn check_patch(
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
        return Err(Rejection::Forbidden(format!(
            "a patch under a patient context must be a JSON Patch ({JSON_PATCH}); fhirguard \
             cannot evaluate '{media_type}' (compartment hardening: patches stay in the \
             compartment)"
        )));
    }
    let patch: Value = serde_json::from_slice(body)
        .map_err(|error| Rejection::Invalid(format!("The JSON Patch is not JSON: {error}")))?;
    let before = (current["resourceType"].clone(), current["id"].clone());
    let version = current["meta"]["versionId"].as_str().map(str::to_owned);
    apply(&mut current, &patch).map_err(|error| {
        Rejection::Forbidden(format!(
            "{error}; fhirguard cannot show the patched resource stays in the compartment of \
             {user} (compartment hardening: patches stay in the compartment)"
        ))
    })?;
    if (current["resourceType"].clone(), current["id"].clone()) != before {
        return Err(Rejection::Forbidden(
            "the patch changes the resource's type or id (compartment hardening: patches \
             stay in the compartment)"
                .to_owned(),
        ));
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
        return Err(Rejection::Invalid(
            "A conditional create takes exactly one If-None-Exist header.".to_owned(),
        ));
    };
    let criteria = value
        .to_str()
        .map_err(|_| Rejection::Invalid("The If-None-Exist header is not ASCII.".to_owned()))?;
    // The header may carry the type before the criteria (`Observation?code=x`); the server
    // reads only the query part.
    let criteria = criteria.split_once('?').map_or(criteria, |(_, q)| q);
    let confined = confine_condition(user, resource_type, criteria)?;
    let value = HeaderValue::from_str(&confined)
        .map_err(|_| Rejection::Invalid("The If-None-Exist header is not valid.".to_owned()))?;
    headers.insert(IF_NONE_EXIST, value);
    Ok(())
}

const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");

/// The bundle to forward: only the allowed entries, in order, each entry URL carrying its
/// planned query. `None` when that is the body as sent.
pub(super) fn forwarded_bundle(
    body: &[u8],
    decision: &BundleDecision,
    plans: &[Confinement],
) -> Option<Bytes> {
    let rewrites = plans.iter().any(|plan| planned_query(plan).is_some());
    if decision.denied_entries().next().is_none() && !rewrites {
        return None;
    }
    let mut bundle: Value = serde_json::from_slice(body).ok()?;
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
        kept.push(entry);
    }
    *entries = kept;
    Some(Bytes::from(bundle.to_string()))
}

fn planned_query(plan: &Confinement) -> Option<&str> {
    match plan {
        Confinement::Rewrite { query } | Confinement::Search { query: Some(query) } => Some(query),
        _ => None,
    }
}

/// True when some entry's answer must be checked or filtered.
pub(super) fn bundle_needs_check(plans: &[Confinement]) -> bool {
    plans
        .iter()
        .any(|plan| matches!(plan, Confinement::Read | Confinement::Search { .. }))
}

/// Checks the upstream's batch- or transaction-response entry by entry: a read outside the
/// compartment becomes a 404 entry, a search's Bundle is filtered like a search answer.
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
                let outside = grant.compartment().is_some_and(|user| {
                    entry
                        .get("resource")
                        .is_some_and(|r| !membership::is_member(r, user))
                });
                if outside {
                    *entry = json!({ "response": { "status": "404 Not Found" } });
                }
            }
            Confinement::Search { .. } => {
                if let Some(bundle) = entry.get_mut("resource") {
                    membership::filter_bundle(bundle, |r| visible(grant, granted, r));
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
            json!({
                "response": {
                    "status": "403 Forbidden",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "id": request_id,
                        "issue": [{
                            "severity": "error",
                            "code": "forbidden",
                            "diagnostics": format!("Authorization failed. {}", entry.reason),
                        }],
                    },
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

/// Turns `POST …/_search` with a form body into `GET …?query&form` (R4 http.html#search: both
/// forms are the same search).
pub(super) fn reroute_search(
    parts: &mut http::request::Parts,
    form: &[u8],
) -> Result<(), Rejection> {
    let form = std::str::from_utf8(form)
        .map_err(|_| Rejection::Invalid("The _search form body is not UTF-8.".to_owned()))?;
    let path = parts.uri.path();
    let path = path.strip_suffix("/_search").unwrap_or(path);
    let path = if path.is_empty() { "/" } else { path };
    let query: Vec<&str> = [parts.uri.query().unwrap_or_default(), form.trim()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect();
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    };
    parts.uri = target.parse().map_err(|_| {
        Rejection::Invalid("The _search form body is not a valid query.".to_owned())
    })?;
    parts.method = Method::GET;
    for name in [CONTENT_LENGTH, CONTENT_TYPE] {
        parts.headers.remove(name);
    }
    Ok(())
}

/// The SMART capabilities fhirguard's providers support (reference §5.2).
const CAPABILITIES: [&str; 10] = [
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "authorize-post",
    "launch-standalone",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "permission-v2",
    "sso-openid-connect",
];

/// The OAuth endpoints of the provider that discovery documents advertise: the first smart
/// identity provider, else the primary authority (reference §5.2); `issuer` and `jwks_uri` from
/// its discovery document when fetched, else the Entra pattern.
struct Endpoints {
    authorize: String,
    token: String,
    issuer: String,
    jwks_uri: String,
}

async fn endpoints(config: &Config, keys: &KeyStore) -> Option<Endpoints> {
    let authority = config
        .auth
        .smart_providers
        .first()
        .map(|p| p.authority.as_str())
        .or(config.auth.primary.as_ref().map(|p| p.authority.as_str()))?;
    let trimmed = authority.trim_end_matches('/');
    let discovered = keys.current(authority, config.key_sets.max_stale).await;
    // Endpoints come from the provider's discovery document; the Entra pattern is the fallback
    // while discovery has not been fetched (reference §5.2, OSS `OidcDiscoveryService`).
    let discovered_endpoint = |pick: fn(&ProviderKeys) -> Option<&String>| {
        discovered.as_ref().and_then(|k| pick(k).cloned())
    };
    Some(Endpoints {
        authorize: discovered_endpoint(|k| k.authorization_endpoint.as_ref())
            .unwrap_or_else(|| format!("{trimmed}/oauth2/v2.0/authorize")),
        token: discovered_endpoint(|k| k.token_endpoint.as_ref())
            .unwrap_or_else(|| format!("{trimmed}/oauth2/v2.0/token")),
        issuer: discovered
            .as_ref()
            .map_or_else(|| format!("{trimmed}/v2.0"), |k| k.issuer.clone()),
        jwks_uri: discovered.as_ref().map_or_else(
            || format!("{trimmed}/discovery/v2.0/keys"),
            |k| k.jwks_uri.clone(),
        ),
    })
}

/// `/.well-known/smart-configuration`, generated from the configured providers (reference §5.2).
pub(super) async fn smart_configuration(config: &Config, keys: &KeyStore) -> Response<Body> {
    let Some(endpoints) = endpoints(config, keys).await else {
        return fhir_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": "no identity provider is configured" }),
        );
    };
    let document = json!({
        "issuer": endpoints.issuer,
        "jwks_uri": endpoints.jwks_uri,
        "authorization_endpoint": endpoints.authorize,
        "token_endpoint": endpoints.token,
        "capabilities": CAPABILITIES,
        "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_jwt", "none"],
        "response_types_supported": ["code"],
    });
    let mut response = fhir_response(StatusCode::OK, &document);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `/metadata`: the upstream's CapabilityStatement with a `rest[].security` block added where it
/// has none (reference §5.3). Anything that is not a JSON CapabilityStatement passes unchanged.
pub(super) async fn add_security(
    response: Response<Body>,
    config: &Config,
    keys: &KeyStore,
) -> Result<Response<Body>, Rejection> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, bytes) = buffer(response, config.limits.max_bundle_bytes).await?;
    let Ok(mut statement) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(rebuild(parts, bytes));
    };
    let Some(endpoints) = endpoints(config, keys).await else {
        return Ok(rebuild(parts, bytes));
    };
    let mut extensions = vec![json!({
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [
            { "url": "token", "valueUri": endpoints.token },
            { "url": "authorize", "valueUri": endpoints.authorize },
        ],
    })];
    extensions.extend(CAPABILITIES.iter().map(|code| {
        json!({
            "url": "http://hl7.org/fhir/smart-app-launch/StructureDefinition/capabilities",
            "valueCode": code,
        })
    }));
    let security = json!({
        "service": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "OAuth",
        }]}],
        "extension": extensions,
    });
    let mut changed = false;
    if statement["resourceType"] == "CapabilityStatement" {
        if let Some(rest) = statement.get_mut("rest").and_then(Value::as_array_mut) {
            for entry in rest.iter_mut().filter(|r| r.get("security").is_none()) {
                if let Some(object) = entry.as_object_mut() {
                    object.insert("security".to_owned(), security.clone());
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return Ok(rebuild(parts, bytes));
    }
    Ok(rebuild(parts, Bytes::from(statement.to_string())))
}

/// A change, patch or instance history whose stored resource must be checked first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change<'a> {
    pub(super) request: &'a FhirRequest,
    pub(super) confinement: &'a Confinement,
    /// The buffered body of a patch.
    pub(super) patch: Option<&'a [u8]>,
}

impl Proxy {
    /// Carries out the checks of the stored resource a plan asks for (reference §8 rule 20,
    /// hardening classes 8 and 9): an update, delete, patch or instance history must find it
    /// in the compartment (absent or outside: 404, alike), and a patch's result
    /// must stay there — the forwarded patch is then pinned to the version checked (`If-Match`,
    /// RFC 9110 §13.1.1) unless the client pinned one itself.
    pub(super) async fn check_change(
        &self,
        generation: &Generation,
        parts: &mut http::request::Parts,
        target: Target<'_>,
        principal: Option<&Principal>,
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
        let target = Target {
            path: &path,
            ..target
        };
        let current = self
            .current_resource(generation, parts, target, principal, user)
            .await?;
        let absent = || {
            Rejection::NotFound(format!(
                "{request}: the resource is not in the compartment of {user}"
            ))
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
    /// (404/410). The read
    /// carries no conditional header, so its answer is the resource, never a bare 304/412.
    pub(super) async fn current_resource(
        &self,
        generation: &Generation,
        parts: &http::request::Parts,
        target: Target<'_>,
        principal: Option<&Principal>,
        user: &FhirUser,
    ) -> Result<Option<Value>, Rejection> {
        let mut read = Request::get(parts.uri.clone())
            .body(empty())
            .map_err(|error| Rejection::Unverifiable(error.to_string()))?;
        *read.headers_mut() = parts.headers.clone();
        for name in [CONTENT_LENGTH, CONTENT_TYPE, ACCEPT_ENCODING, IF_NONE_EXIST] {
            read.headers_mut().remove(name);
        }
        strip_conditional_headers(read.headers_mut());
        let (read_parts, body) = read.into_parts();
        let target = Target {
            query: None,
            ..target
        };
        let response = self
            .forward(generation, read_parts, body, target, principal)
            .await?;
        let status = response.status();
        if status == http::StatusCode::NOT_FOUND || status == http::StatusCode::GONE {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Rejection::Unverifiable(format!(
                "reading the current resource answered {status}"
            )));
        }
        let limit = generation.config.limits.max_bundle_bytes;
        let (_, bytes) = buffer(response, limit).await?;
        let resource = json(&bytes)?;
        if !membership::is_member(&resource, user) {
            return Err(Rejection::NotFound(format!(
                "the resource is outside the compartment of {user}"
            )));
        }
        Ok(Some(resource))
    }
}
