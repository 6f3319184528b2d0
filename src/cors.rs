//! CORS for browser apps (issue 19; Fetch standard §3.2, "CORS protocol"), once `cors` is
//! configured: a [`Policy`] answers preflights ([`Policy::preflight`]) and puts the CORS headers
//! on every answer to an allowed origin ([`Policy::decorate`]), fhirguard's own refusals
//! included, so a browser app can read a 401's `WWW-Authenticate` and tell an expired token
//! from a refused request.
//!
//! A policy is built once per configuration generation: every header value that does not
//! depend on the request is made here, not per request. Comparisons are exact: an `Origin` is
//! allowed only when it is byte for byte one of the configured origins, serialised as browsers
//! send them, and a request with two `Origin` headers is no allowed origin's.
//!
//! `*` in `headers` or `methods` answers a preflight with the method and headers it asked for,
//! never a literal `*`: for credentialed requests `*` is not a wildcard, and in
//! `Access-Control-Allow-Headers` it never covers `Authorization` (Fetch §3.2.3).

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{Allowed, Cors};

/// The response headers a browser app may read beyond the CORS-safelisted ones: the challenge
/// of a 401, where a create put its resource, versions for conditional updates, the request id
/// to quote to support, the DPoP nonce to use next, and when to retry a 503.
pub const EXPOSED_HEADERS: &str = "WWW-Authenticate, Location, Content-Location, ETag, \
     Last-Modified, X-Request-ID, DPoP-Nonce, Retry-After";

/// Why a preflight is refused: answered 403 without any CORS header, so the browser blocks the
/// request it announced. Messages name the rule, never the configured lists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsRefusal {
    /// No `Origin`, several, or one not in `cors.origins`.
    #[error("The CORS preflight's Origin is not one of cors.origins.")]
    Origin,
    /// `Access-Control-Request-Method` is missing, repeated, or not in `cors.methods`.
    #[error("The CORS preflight asks for a method that cors.methods does not allow.")]
    Method,
    /// A name of `Access-Control-Request-Headers` is not in `cors.headers`; it holds that name
    /// (at most 64 characters).
    #[error("The CORS preflight asks for a header that cors.headers does not allow: {0}.")]
    Header(String),
}

impl CorsRefusal {
    /// A bounded label for logs and `explain`.
    pub fn reason(&self) -> &'static str {
        match self {
            CorsRefusal::Origin => "cors_origin",
            CorsRefusal::Method => "cors_method",
            CorsRefusal::Header(_) => "cors_header",
        }
    }
}

/// The configured CORS rules with their header values made.
#[derive(Debug, Clone)]
pub struct Policy {
    origins: Allowed<String>,
    methods: Allowed<Method>,
    headers: Allowed<HeaderName>,
    credentials: bool,
    /// `Access-Control-Allow-Methods` for listed methods.
    allow_methods: Option<HeaderValue>,
    /// `Access-Control-Allow-Headers` for listed headers.
    allow_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    exposed: HeaderValue,
}

impl Policy {
    /// The rules of a validated `cors` block, with the `Access-Control-*` values that do not
    /// depend on the request made once.
    pub fn new(cors: &Cors) -> Policy {
        let joined = |items: Vec<&str>| HeaderValue::from_str(&items.join(", ")).ok();
        let allow_methods = match &cors.methods {
            Allowed::Listed(methods) => joined(methods.iter().map(Method::as_str).collect()),
            Allowed::Any => None,
        };
        let allow_headers = match &cors.headers {
            Allowed::Listed(headers) => joined(headers.iter().map(HeaderName::as_str).collect()),
            Allowed::Any => None,
        };
        Policy {
            origins: cors.origins.clone(),
            methods: cors.methods.clone(),
            headers: cors.headers.clone(),
            credentials: cors.allow_credentials,
            allow_methods,
            allow_headers,
            max_age: HeaderValue::from(cors.max_age),
            exposed: HeaderValue::from_static(EXPOSED_HEADERS),
        }
    }

    /// The request's `Origin` when it is exactly one allowed origin.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut origins = headers.get_all(ORIGIN).iter();
        let origin = origins.next()?;
        if origins.next().is_some() {
            return None;
        }
        let allowed = match &self.origins {
            Allowed::Any => true,
            Allowed::Listed(listed) => listed.iter().any(|o| o.as_bytes() == origin.as_bytes()),
        };
        allowed.then(|| origin.clone())
    }

    /// A preflight's own headers (`Access-Control-Allow-Methods`, `-Allow-Headers`,
    /// `-Max-Age`), or why it is refused. [`Policy::decorate`] adds the origin's.
    pub fn preflight(&self, request: &HeaderMap) -> Result<HeaderMap, CorsRefusal> {
        self.allowed_origin(request).ok_or(CorsRefusal::Origin)?;
        let mut methods = request.get_all(ACCESS_CONTROL_REQUEST_METHOD).iter();
        let method = match (methods.next(), methods.next()) {
            (Some(method), None) => Method::from_bytes(method.as_bytes()).ok(),
            _ => None,
        }
        .filter(|method| self.methods.contains(method))
        .ok_or(CorsRefusal::Method)?;
        let requested = self.requested_headers(request)?;

        let mut answer = HeaderMap::with_capacity(3);
        let allow_methods = match &self.allow_methods {
            Some(listed) => listed.clone(),
            None => HeaderValue::from_str(method.as_str()).map_err(|_| CorsRefusal::Method)?,
        };
        answer.insert(ACCESS_CONTROL_ALLOW_METHODS, allow_methods);
        let allow_headers = match &self.allow_headers {
            Some(listed) => Some(listed.clone()),
            None if requested.is_empty() => None,
            None => HeaderValue::from_str(&requested.join(", ")).ok(),
        };
        if let Some(allow_headers) = allow_headers {
            answer.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        }
        answer.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(answer)
    }

    /// The names in `Access-Control-Request-Headers` (every line, comma-separated), each
    /// allowed, lower-cased.
    fn requested_headers(&self, request: &HeaderMap) -> Result<Vec<String>, CorsRefusal> {
        let mut names = Vec::new();
        for line in request.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let text = line.to_str().map_err(|_| refused_header("(not text)"))?;
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let parsed = HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .filter(|parsed| self.headers.contains(parsed))
                    .ok_or_else(|| refused_header(name))?;
                names.push(parsed.as_str().to_owned());
            }
        }
        Ok(names)
    }

    /// Makes `response` fhirguard's CORS answer to a request whose allowed origin is `origin`
    /// (`None`: no origin, or not an allowed one). Every answer varies by `Origin`; an allowed
    /// origin's also gets `Access-Control-Allow-Origin`, `-Allow-Credentials` when configured,
    /// and `-Expose-Headers`. The upstream's own `Access-Control-*` headers are already gone
    /// ([`remove_upstream_cors`]).
    pub fn decorate(&self, origin: Option<HeaderValue>, response: &mut HeaderMap) {
        add_vary_origin(response);
        let Some(origin) = origin else {
            return;
        };
        let allow_origin = match (&self.origins, self.credentials) {
            (Allowed::Any, false) => HeaderValue::from_static("*"),
            _ => origin,
        };
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            response.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, self.exposed.clone());
    }
}

fn refused_header(name: &str) -> CorsRefusal {
    let shown: String = name.chars().take(64).collect();
    CorsRefusal::Header(shown)
}

/// `Vary: Origin`, added to what the response varies by already (unless `*`, or named).
fn add_vary_origin(headers: &mut HeaderMap) {
    let named = headers.get_all(VARY).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .map(str::trim)
                .any(|v| v == "*" || v.eq_ignore_ascii_case("origin"))
        })
    });
    if !named {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// Removes the upstream's `Access-Control-*` headers: with `cors` configured fhirguard's are
/// the only ones, never merged with the FHIR server's into a contradiction.
pub fn remove_upstream_cors(headers: &mut HeaderMap) {
    let found = headers
        .keys()
        .any(|name| name.as_str().starts_with("access-control-"));
    if found {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Marks fhirguard's answer to a refused preflight (a response extension): it carries no CORS
/// header at all, so [`Policy::decorate`] is not applied.
#[derive(Debug, Clone, Copy)]
pub struct Withheld;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\n\
        authenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  \
        audience: \"https://fhir.example.org\"\n";
    const APP: &str = "https://app.example.org";

    fn policy(cors: &str) -> Policy {
        let config = Config::parse(&format!("{BASE}cors:\n{cors}")).expect("valid");
        Policy::new(config.cors.as_ref().expect("cors"))
    }

    fn request(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn text(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn listed_values_are_answered_as_configured() {
        let policy = policy(&format!(
            "  origins: [\"{APP}\"]\n  headers: [Authorization, Content-Type, DPoP]\n  \
             methods: [GET, POST]\n  maxAge: 30\n"
        ));
        let answer = policy
            .preflight(&request(&[
                ("origin", APP),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
            ]))
            .unwrap();
        assert_eq!(
            text(&answer, ACCESS_CONTROL_ALLOW_METHODS),
            Some("GET, POST")
        );
        assert_eq!(
            text(&answer, ACCESS_CONTROL_ALLOW_HEADERS),
            Some("authorization, content-type, dpop")
        );
        assert_eq!(text(&answer, ACCESS_CONTROL_MAX_AGE), Some("30"));
    }

    #[test]
    fn a_star_echoes_what_was_asked() {
        let policy = policy(&format!(
            "  origins: [\"{APP}\"]\n  headers: [\"*\"]\n  methods: [\"*\"]\n  \
             allowCredentials: true\n"
        ));
        let answer = policy
            .preflight(&request(&[
                ("origin", APP),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", "Authorization, If-Match"),
                ("access-control-request-headers", "prefer"),
            ]))
            .unwrap();
        assert_eq!(text(&answer, ACCESS_CONTROL_ALLOW_METHODS), Some("DELETE"));
        // Never a literal `*`: it would not cover Authorization.
        assert_eq!(
            text(&answer, ACCESS_CONTROL_ALLOW_HEADERS),
            Some("authorization, if-match, prefer")
        );
        let mut response = HeaderMap::new();
        policy.decorate(Some(HeaderValue::from_static(APP)), &mut response);
        assert_eq!(text(&response, ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(
            text(&response, ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert_eq!(text(&response, VARY), Some("Origin"));
    }

    #[test]
    fn refusals_name_their_rule() {
        let policy = policy(&format!(
            "  origins: [\"{APP}\"]\n  headers: [Authorization]\n  methods: [GET]\n"
        ));
        let cases: [(&[(&str, &str)], CorsRefusal); 7] = [
            (
                &[
                    ("origin", "https://evil.example.org"),
                    ("access-control-request-method", "GET"),
                ],
                CorsRefusal::Origin,
            ),
            // Origins compare exactly, as browsers serialise them.
            (
                &[
                    ("origin", "https://APP.example.org"),
                    ("access-control-request-method", "GET"),
                ],
                CorsRefusal::Origin,
            ),
            (
                &[
                    ("origin", "https://app.example.org."),
                    ("access-control-request-method", "GET"),
                ],
                CorsRefusal::Origin,
            ),
            (
                &[
                    ("origin", APP),
                    ("origin", APP),
                    ("access-control-request-method", "GET"),
                ],
                CorsRefusal::Origin,
            ),
            (
                &[("origin", APP), ("access-control-request-method", "POST")],
                CorsRefusal::Method,
            ),
            (
                &[
                    ("origin", APP),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-method", "GET"),
                ],
                CorsRefusal::Method,
            ),
            (
                &[
                    ("origin", APP),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "authorization, x-evil"),
                ],
                CorsRefusal::Header("x-evil".to_owned()),
            ),
        ];
        for (lines, refusal) in cases {
            assert_eq!(policy.preflight(&request(lines)), Err(refusal), "{lines:?}");
        }
    }

    #[test]
    fn any_origin_without_credentials_is_a_star() {
        let policy = policy("  origins: [\"*\"]\n  headers: [\"*\"]\n  methods: [\"*\"]\n");
        let origin = policy.allowed_origin(&request(&[("origin", "https://x.example")]));
        let mut response = request(&[("vary", "Accept")]);
        policy.decorate(origin, &mut response);
        assert_eq!(text(&response, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        let vary: Vec<&str> = response
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(vary, ["Accept", "Origin"]);
        assert!(text(&response, ACCESS_CONTROL_EXPOSE_HEADERS)
            .unwrap()
            .contains("WWW-Authenticate"));
    }

    #[test]
    fn upstream_cors_headers_are_removed() {
        let mut response = request(&[
            ("access-control-allow-origin", "*"),
            ("Access-Control-Allow-Credentials", "true"),
            ("access-control-expose-headers", "x-secret"),
            ("content-type", "application/fhir+json"),
        ]);
        remove_upstream_cors(&mut response);
        let names: Vec<&str> = response.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }
}
