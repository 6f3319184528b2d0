//! The answer's format when fhirguard must read it (compartment-checked reads, filtered
//! searches and histories, checked bundles): fhirguard reads FHIR JSON only, so the upstream is
//! asked for JSON, and a client that accepts nothing fhirguard can read gets 406 with an
//! `OperationOutcome` saying why — never a 502 after the fact (FHIR R4 http.html#mime-type:
//! `_format` overrides `Accept`).

use http::header::{HeaderValue, ACCEPT};
use http::HeaderMap;

use super::query::parameters;
use super::FHIR_JSON;

/// A checked answer in a format fhirguard cannot read (406).
#[derive(Debug, thiserror::Error)]
pub enum NotAcceptable {
    /// `_format` names a non-JSON format (`xml`, `ttl`, …); holds the value.
    #[error(
        "_format={0}: this answer is checked against the caller's SMART grant, and fhirguard \
         reads only FHIR JSON; use _format=json"
    )]
    Format(String),
    /// No `_format`, and no `Accept` value admits JSON.
    #[error(
        "Accept names no JSON type: this answer is checked against the caller's SMART grant, \
         and fhirguard reads only FHIR JSON; accept application/fhir+json"
    )]
    Accept,
}

/// Refuses a request whose `_format` or `Accept` asks for something other than JSON; otherwise
/// sets `Accept: application/fhir+json` for the upstream.
pub fn json_only(query: Option<&str>, headers: &mut HeaderMap) -> Result<(), NotAcceptable> {
    let mut format = false;
    for (name, value) in parameters(query) {
        if name.trim().eq_ignore_ascii_case("_format") {
            if !is_json(&value) {
                return Err(NotAcceptable::Format(value));
            }
            format = true;
        }
    }
    // `_format` overrides `Accept` (R4 http.html#mime-type).
    let mut accepts = headers.get_all(ACCEPT).iter().peekable();
    if !format && accepts.peek().is_some() && !accepts.any(accepts_json) {
        return Err(NotAcceptable::Accept);
    }
    headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
    Ok(())
}

/// A `_format` value naming JSON: `json`, `application/json`, `application/fhir+json`,
/// `text/json`, with or without parameters (`;fhirVersion=4.0`).
fn is_json(value: &str) -> bool {
    let media = value.split(';').next().unwrap_or_default().trim();
    [
        "json",
        "application/json",
        "application/fhir+json",
        "text/json",
    ]
    .iter()
    .any(|json| media.eq_ignore_ascii_case(json))
}

/// True when one `Accept` header value admits JSON: a JSON type or a wildcard, with `q` > 0.
fn accepts_json(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .or_else(|| p.trim().strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused
            && (media == "*/*" || media.eq_ignore_ascii_case("application/*") || is_json(media))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(query: Option<&str>, accept: &[&str]) -> Result<HeaderMap, NotAcceptable> {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        json_only(query, &mut headers).map(|()| headers)
    }

    #[test]
    fn json_requests_pass_and_ask_the_upstream_for_fhir_json() {
        for (query, accept) in [
            (None, &[][..]),
            (Some("_format=json"), &[][..]),
            (
                Some("_format=application/fhir%2Bjson"),
                &["application/fhir+xml"][..],
            ),
            (Some("_FORMAT=application/json;fhirVersion=4.0"), &[][..]),
            (None, &["application/fhir+json"][..]),
            (
                None,
                &["application/fhir+xml;q=0.9, application/json;q=0.1"][..],
            ),
            (None, &["*/*"][..]),
            (None, &["application/*"][..]),
            (None, &["text/html", "application/json"][..]),
        ] {
            let headers =
                judge(query, accept).unwrap_or_else(|e| panic!("{query:?} {accept:?}: {e}"));
            assert_eq!(headers.get_all(ACCEPT).iter().count(), 1);
            assert_eq!(headers[ACCEPT], FHIR_JSON);
        }
    }

    #[test]
    fn other_formats_are_406() {
        for (query, accept) in [
            (Some("_format=xml"), &[][..]),
            (Some("_format=application/fhir%2Bxml"), &[][..]),
            (Some("_format=json&_format=xml"), &[][..]),
            (Some("_format=ttl"), &["application/json"][..]),
            (Some("_format="), &[][..]),
            (Some("_format=html"), &[][..]),
            (None, &["application/fhir+xml"][..]),
            (None, &["application/xml, text/xml"][..]),
            (None, &["application/json;q=0, application/xml"][..]),
            (None, &["*/*;q=0"][..]),
        ] {
            let refused = judge(query, accept).expect_err(&format!("{query:?} {accept:?}"));
            // `_format` decides when given; `Accept` otherwise.
            let expected = match query {
                Some(_) => matches!(refused, NotAcceptable::Format(_)),
                None => matches!(refused, NotAcceptable::Accept),
            };
            assert!(expected, "{query:?} {accept:?}: {refused}");
        }
    }
}
