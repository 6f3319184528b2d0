//! Request hygiene, checked before any decision (SPEC §4 step 1 and §7): a request that
//! fhirguard and the FHIR server could read differently is refused with 400 before the anonymous
//! step, so anonymous paths and CORS preflights are held to it too.
//!
//! - **Method tunnels**: `X-HTTP-Method-Override`, `X-Method-Override`, `X-HTTP-Method` (any
//!   case, any value, empty included, and spelt with `_` for `-`, which CGI-style servers read
//!   alike), and a `_method` query parameter ([`refused_parameter`]). The upstream might
//!   run the tunnelled method instead of the one authorized.
//! - **Credentials in the URL**: an `access_token` query parameter, whatever its value (RFC 6750
//!   §5.3, RFC 9700 §2.4.1): the upstream or a framework might take it as the bearer token, and
//!   URLs end up in access logs. Refused before the anonymous step, so it is never forwarded.
//! - **Preflight bodies**: a CORS preflight is answered without a token, so it must not carry
//!   anything for the upstream to act on: no `Transfer-Encoding` (even a chunked empty body), no
//!   `Content-Length` but 0 ([`preflight_has_body`] adds the HTTP/2 case, a stream left open).
//! - **Ambiguous authority**: more than one `Host` (RFC 9112 §3.2), or a `Host` that differs from
//!   the request target's authority — HTTP/2's `:authority` (RFC 9113 §8.3.1: malformed) or an
//!   HTTP/1.1 absolute-form target (RFC 9112 §3.2.2). `X-Forwarded-Host` is then unambiguous.
//!
//! The whole check is one pass over the header lines and, when there is a query, one over its
//! parameter names, without allocating: it runs on every request.

use std::fmt;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Method, Uri};

use crate::fhir::query::{refused_parameter, RefusedParameter};

/// Headers some servers and frameworks honour to run another method than the request line's.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

/// Why a request is refused before any decision (400, `invalid`). Each message names its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeRequest {
    /// A method-override header, named as received.
    #[error(
        "The {0} header is a method override; method tunnels are refused on every path \
         (request hygiene: method tunnels)."
    )]
    MethodOverrideHeader(HeaderName),
    /// A `_method` parameter, in the query string or in a `POST …/_search` form body.
    #[error(
        "The {0} names a _method parameter, a method override; method tunnels are refused on \
         every path (request hygiene: method tunnels)."
    )]
    MethodParameter(ParameterPlace),
    /// An `access_token` parameter, in the query string or in a `POST …/_search` form body.
    /// In the query, the OSS server's exact message for a token there (reference §2.1).
    #[error("{}", credential_message(*.0))]
    CredentialParameter(ParameterPlace),
    /// A CORS preflight with a body.
    #[error(
        "A CORS preflight must not carry a body (a Content-Length other than 0, a \
         Transfer-Encoding, or an open HTTP/2 stream) (request hygiene: preflight bodies)."
    )]
    PreflightBody,
    /// More than one `Host` header.
    #[error(
        "The request has more than one Host header (RFC 9112 §3.2) \
         (request hygiene: ambiguous authority)."
    )]
    DuplicateHost,
    /// A `Host` header that names another authority than the request target.
    #[error(
        "The Host header differs from the request's authority (:authority or the absolute \
         request target, RFC 9113 §8.3.1) (request hygiene: ambiguous authority)."
    )]
    AuthorityMismatch,
}

impl UnsafeRequest {
    /// A bounded label for logs and metrics: the rule that refused.
    pub fn reason(&self) -> &'static str {
        match self {
            UnsafeRequest::MethodOverrideHeader(_) | UnsafeRequest::MethodParameter(_) => {
                "method_tunnel"
            }
            UnsafeRequest::CredentialParameter(_) => "token_in_url",
            UnsafeRequest::PreflightBody => "preflight_body",
            UnsafeRequest::DuplicateHost | UnsafeRequest::AuthorityMismatch => {
                "ambiguous_authority"
            }
        }
    }
}

fn credential_message(place: ParameterPlace) -> &'static str {
    match place {
        // The OSS server's exact message for a token in the query (reference §2.1), as
        // `auth::UrlPart::Query` gives it for a JWT-shaped one.
        ParameterPlace::Query => "Access tokens must not be passed in the URL query string.",
        ParameterPlace::FormBody => {
            "Access tokens must not be passed in a form body: the form body carries an \
             access_token parameter; send the token in the Authorization header (request \
             hygiene: credentials in URLs)."
        }
    }
}

/// Where a refused parameter (`_method`, `access_token`) was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterPlace {
    /// The URL's query string.
    Query,
    /// An `application/x-www-form-urlencoded` body (`POST …/_search`).
    FormBody,
}

impl fmt::Display for ParameterPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParameterPlace::Query => "query string",
            ParameterPlace::FormBody => "form body",
        })
    }
}

/// A CORS preflight (Fetch standard §3.2.2): `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. Answered without a token (SPEC §4 step 1).
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Every hygiene rule that the request head can decide, in one pass over its header lines.
pub fn check(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), UnsafeRequest> {
    let preflight = is_preflight(method, headers);
    let authority = uri.authority().map(|a| a.as_str().as_bytes());
    let mut hosts = 0_usize;
    for (name, value) in headers {
        if is_method_override(name) {
            return Err(UnsafeRequest::MethodOverrideHeader(name.clone()));
        }
        if *name == HOST {
            hosts += 1;
            if hosts > 1 {
                return Err(UnsafeRequest::DuplicateHost);
            }
            if authority.is_some_and(|a| !a.eq_ignore_ascii_case(value.as_bytes())) {
                return Err(UnsafeRequest::AuthorityMismatch);
            }
        }
        if preflight && (*name == TRANSFER_ENCODING || (*name == CONTENT_LENGTH && !zero(value))) {
            return Err(UnsafeRequest::PreflightBody);
        }
    }
    match uri.query().map(refused_parameter) {
        Some(Some(refused)) => Err(UnsafeRequest::parameter(refused, ParameterPlace::Query)),
        Some(None) | None => Ok(()),
    }
}

/// The hygiene rule a `POST …/_search` form body breaks, if any: the same parameters as a
/// query string's.
pub fn check_form(form: &[u8]) -> Result<(), UnsafeRequest> {
    match refused_parameter(form) {
        Some(refused) => Err(UnsafeRequest::parameter(refused, ParameterPlace::FormBody)),
        None => Ok(()),
    }
}

impl UnsafeRequest {
    fn parameter(refused: RefusedParameter, place: ParameterPlace) -> UnsafeRequest {
        match refused {
            RefusedParameter::Method => UnsafeRequest::MethodParameter(place),
            RefusedParameter::AccessToken => UnsafeRequest::CredentialParameter(place),
        }
    }
}

/// The preflight rule once the body is at hand: an HTTP/2 stream not ended with its headers
/// carries a body even without `Content-Length`; so does an HTTP/1.1 body still to be read.
pub fn preflight_has_body(body_ended: bool) -> Result<(), UnsafeRequest> {
    match body_ended {
        true => Ok(()),
        false => Err(UnsafeRequest::PreflightBody),
    }
}

/// `X-HTTP-Method-Override` and kin, with `_` read as `-`. Header names arrive lower-cased.
fn is_method_override(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    METHOD_OVERRIDE_HEADERS.iter().any(|known| {
        known.len() == name.len()
            && known
                .bytes()
                .zip(name)
                .all(|(k, n)| k == *n || (k == b'-' && *n == b'_'))
    })
}

/// A `Content-Length` of zero (`0`, or `00`…).
fn zero(value: &http::HeaderValue) -> bool {
    let digits = value.as_bytes().trim_ascii();
    !digits.is_empty() && digits.iter().all(|b| *b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (
            Method::from_bytes(method.as_bytes()).unwrap(),
            target.parse().unwrap(),
            map,
        )
    }

    fn verdict(method: &str, target: &str, headers: &[(&str, &str)]) -> Result<(), UnsafeRequest> {
        let (method, uri, headers) = request(method, target, headers);
        check(&method, &uri, &headers)
    }

    #[test]
    fn method_override_headers_in_every_spelling() {
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method-override",
            "X-Method-Override",
            "X-HTTP-Method",
            "x_http_method_override",
            "X_HTTP-Method_Override",
            "x_method_override",
            "X_HTTP_METHOD",
        ] {
            for value in ["DELETE", "", "GET"] {
                let refused = verdict("GET", "/metadata", &[(name, value)]);
                assert!(
                    matches!(refused, Err(UnsafeRequest::MethodOverrideHeader(_))),
                    "{name}: {value:?}"
                );
                assert_eq!(refused.unwrap_err().reason(), "method_tunnel");
            }
        }
        for name in [
            "x-http-method-overrides",
            "x-method",
            "x-http-methodoverride",
        ] {
            assert_eq!(
                verdict("GET", "/Patient", &[(name, "DELETE")]),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn method_parameters_are_refused_in_the_query() {
        assert_eq!(
            verdict("GET", "/Patient?%5Fmethod=DELETE", &[]),
            Err(UnsafeRequest::MethodParameter(ParameterPlace::Query))
        );
        assert_eq!(verdict("GET", "/Patient?name=method", &[]), Ok(()));
    }

    #[test]
    fn access_tokens_are_refused_in_the_query_and_the_form() {
        for target in [
            "/Patient?access_token=opaque",
            "/metadata?access_token=",
            "/Patient?_count=1&access%5Ftoken=x",
        ] {
            let refused = verdict("GET", target, &[]);
            assert_eq!(
                refused,
                Err(UnsafeRequest::CredentialParameter(ParameterPlace::Query)),
                "{target}"
            );
            assert_eq!(refused.unwrap_err().reason(), "token_in_url");
        }
        assert_eq!(verdict("GET", "/Patient?name=access_token", &[]), Ok(()));
        assert_eq!(
            check_form(b"family=x&access_token=y"),
            Err(UnsafeRequest::CredentialParameter(ParameterPlace::FormBody))
        );
        assert_eq!(
            check_form(b"_method=DELETE"),
            Err(UnsafeRequest::MethodParameter(ParameterPlace::FormBody))
        );
        assert_eq!(check_form(b"family=access_token"), Ok(()));
    }

    #[test]
    fn preflights_carry_no_body() {
        let preflight = [
            ("origin", "https://app.example.org"),
            ("access-control-request-method", "GET"),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut headers = preflight.to_vec();
            headers.push(extra);
            verdict("OPTIONS", "/Patient", &headers)
        };
        assert_eq!(verdict("OPTIONS", "/Patient", &preflight), Ok(()));
        assert_eq!(with(("content-length", "0")), Ok(()));
        for extra in [
            ("content-length", "12"),
            ("content-length", "01"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "identity"),
        ] {
            assert_eq!(with(extra), Err(UnsafeRequest::PreflightBody), "{extra:?}");
        }
        // Not a preflight: the body rules of the request itself apply later.
        assert_eq!(
            verdict("OPTIONS", "/Patient", &[("content-length", "12")]),
            Ok(())
        );
        assert_eq!(preflight_has_body(true), Ok(()));
        assert_eq!(preflight_has_body(false), Err(UnsafeRequest::PreflightBody));
    }

    #[test]
    fn host_and_authority_must_agree() {
        assert_eq!(
            verdict("GET", "/Patient", &[("host", "fhir.example.org")]),
            Ok(())
        );
        assert_eq!(
            verdict(
                "GET",
                "http://fhir.example.org/Patient",
                &[("host", "FHIR.example.org")]
            ),
            Ok(())
        );
        assert_eq!(
            verdict("GET", "http://fhir.example.org/Patient", &[]),
            Ok(())
        );
        for host in ["evil.example.org", "fhir.example.org:8080", ""] {
            assert_eq!(
                verdict("GET", "http://fhir.example.org/Patient", &[("host", host)]),
                Err(UnsafeRequest::AuthorityMismatch),
                "{host}"
            );
        }
        assert_eq!(
            verdict("GET", "/Patient", &[("host", "a"), ("host", "a")]),
            Err(UnsafeRequest::DuplicateHost)
        );
    }
}
