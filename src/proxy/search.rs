//! A `POST …/_search`'s parameters (R4 http.html#search): the form read and joined with the
//! URL's query, for deciding and for SMART's rewrite, and the form body the search is forwarded
//! with.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;

use crate::authz::smart::enforcement::Enforcement;
use crate::body::{full, Body};
use crate::error::Rejection;
use crate::hygiene::{ParameterPlace, UnsafeRequest};

/// The parameters of a `POST …/_search`: the URL's query and the form body, joined (R4
/// http.html#search: both carry the search's parameters, and the server reads them together).
/// The form must be UTF-8 `application/x-www-form-urlencoded` (a body sent without a content
/// type is read, and forwarded, as one), and may not tunnel a method
/// (`_method`). The search stays a POST upstream with this as its body ([`search_body`]).
pub(super) fn search_form(parts: &http::request::Parts, form: &[u8]) -> Result<String, Rejection> {
    let form = std::str::from_utf8(form)
        .map_err(|_| Enforcement::FormNotUtf8)?
        .trim();
    if !form.is_empty() && !is_form(parts.headers.get(CONTENT_TYPE)) {
        return Err(Enforcement::FormNotUrlencoded.into());
    }
    if crate::fhir::query::carries_method_parameter(form) {
        return Err(UnsafeRequest::MethodParameter(ParameterPlace::FormBody).into());
    }
    let joined = [parts.uri.query().unwrap_or_default(), form]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    // Decided as a query string, so it must be one (RFC 3986 §3.4).
    if http::uri::PathAndQuery::try_from(format!("/?{joined}")).is_err() {
        return Err(Enforcement::FormNotQuery.into());
    }
    Ok(joined)
}

fn is_form(content_type: Option<&HeaderValue>) -> bool {
    content_type.is_none_or(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
    })
}

/// The form body a `POST …/_search` is forwarded with: every parameter the client sent plus
/// whatever fhirguard added, none of them in the URL, where access logs keep them.
pub(super) fn search_body(headers: &mut http::HeaderMap, parameters: &str) -> Body {
    headers.remove(CONTENT_LENGTH);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    full(Bytes::copy_from_slice(parameters.as_bytes()))
}
