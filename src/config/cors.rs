//! The `cors` block (issue 19): which browser origins may call the FHIR API through fhirguard,
//! in the shape and with the names of Azure's `corsConfiguration` (`origins`, `headers`,
//! `methods`, `maxAge`, `allowCredentials`). The keys are [`super::raw::RawCors`]'s; this file
//! validates them in the same one-pass, every-error walk as the rest of the file (SPEC §3).
//! The ARM spelling `properties.corsConfiguration` is found beside
//! `properties.authenticationConfiguration` by [`super::arm`].
//!
//! Present, even with no origin, fhirguard owns CORS: it answers every preflight itself and
//! replaces the upstream's `Access-Control-*` headers. Absent, preflights go to the FHIR server.

use http::{HeaderName, Method};

use super::document::{Errors, Node, Object};
use super::raw::{keys_of, RawCors};

/// Default `maxAge`: ten minutes of cached preflights (Chromium caps it at two hours).
const DEFAULT_MAX_AGE: u32 = 600;
/// Azure's upper bound of `corsConfiguration.maxAge`.
const MAX_MAX_AGE: u64 = 99_999;
/// The methods a FHIR API is called with (R4 http.html), the ones `methods` may list.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// `cors: {...}`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// `origins`: exact origins, serialised as browsers send them (Fetch §3.2.5: scheme, host
    /// lower-cased, port only when not the scheme's default), or any origin (`*`).
    pub origins: Allowed<String>,
    /// `headers`: lower-cased request header names, or any (`*`).
    pub headers: Allowed<HeaderName>,
    /// `methods`: upper-case methods, or any (`*`).
    pub methods: Allowed<Method>,
    /// `maxAge` in seconds, default 600.
    pub max_age: u32,
    /// `allowCredentials`, default false; never with `origins: ["*"]`.
    pub allow_credentials: bool,
}

/// A list from the configuration, or `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed<T> {
    /// `["*"]`.
    Any,
    /// Only these values, normalized as the field says (an empty list allows none).
    Listed(Vec<T>),
}

impl<T: PartialEq> Allowed<T> {
    /// Whether a request's origin, header or method is allowed.
    pub fn contains(&self, item: &T) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Listed(items) => items.contains(item),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Allowed::Listed(items) if items.is_empty())
    }
}

/// Validates `cors` (or the ARM `corsConfiguration`); `None` when absent or wrong (the mistakes
/// are in `errors`).
pub(super) fn cors(node: Option<Node<'_>>, errors: &mut Errors) -> Option<Cors> {
    let object = node?.object(errors, keys_of::<RawCors>())?;
    let before = errors.0.len();
    let origins = list(&object, "origins", errors, origin);
    let headers = list(&object, "headers", errors, header);
    let methods = list(&object, "methods", errors, method);
    let max_age =
        object
            .get("maxAge")
            .map_or(DEFAULT_MAX_AGE, |node| match node.count(errors, 0) {
                Some(seconds) if seconds as u64 > MAX_MAX_AGE => {
                    errors.push(&node.path, format!("must be at most {MAX_MAX_AGE} seconds"));
                    DEFAULT_MAX_AGE
                }
                Some(seconds) => u32::try_from(seconds).unwrap_or(DEFAULT_MAX_AGE),
                None => DEFAULT_MAX_AGE,
            });
    let allow_credentials = object.flag("allowCredentials", errors);
    if allow_credentials && origins == Allowed::Any {
        errors.push(
            &object.key_path("allowCredentials"),
            "cannot be true with origins [\"*\"]: the Fetch standard forbids credentials for \
             any origin; list the origins",
        );
    }
    // An origin is allowed but a browser could not send a token, or call at all.
    if !origins.is_empty() {
        if methods.is_empty() {
            errors.push(
                &object.key_path("methods"),
                "lists no method, so no preflight from an allowed origin can pass; list the \
                 methods (or \"*\")",
            );
        }
        if headers.is_empty() {
            errors.push(
                &object.key_path("headers"),
                "lists no header, so a browser app cannot send its Authorization header; list \
                 the headers (or \"*\")",
            );
        }
    }
    (errors.0.len() == before).then_some(Cors {
        origins,
        headers,
        methods,
        max_age,
        allow_credentials,
    })
}

/// `key`: a list of items each checked by `item`, or `["*"]` alone; absent is the empty list.
fn list<T: PartialEq>(
    object: &Object<'_>,
    key: &str,
    errors: &mut Errors,
    item: fn(&str) -> Result<T, String>,
) -> Allowed<T> {
    let Some(items) = object.get(key).and_then(|node| node.list(errors)) else {
        return Allowed::Listed(Vec::new());
    };
    let mut listed = Vec::with_capacity(items.len());
    let mut any = false;
    for node in &items {
        let Some(text) = node.string(errors) else {
            continue;
        };
        if text == "*" {
            any = true;
            if items.len() > 1 {
                errors.push(
                    &node.path,
                    "\"*\" stands alone: it already allows every value",
                );
            }
            continue;
        }
        match item(text) {
            Ok(value) if listed.contains(&value) => {
                errors.push(&node.path, format!("'{text}' is listed twice"));
            }
            Ok(value) => listed.push(value),
            Err(message) => errors.push(&node.path, message),
        }
    }
    match any {
        true => Allowed::Any,
        false => Allowed::Listed(listed),
    }
}

/// An origin exactly as a browser sends it in `Origin` (RFC 6454 §6.1): `scheme://host[:port]`,
/// nothing more. `null` (sandboxed frames, `file:` pages) is refused: any page can claim it.
fn origin(text: &str) -> Result<String, String> {
    if text.eq_ignore_ascii_case("null") {
        return Err(
            "'null' is the origin of sandboxed frames and local files, which any page can \
             claim; it cannot be allowed"
                .to_owned(),
        );
    }
    let url = url::Url::parse(text).map_err(|e| format!("'{text}' is not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{text}' must be an http or https origin"));
    }
    let origin = url.origin().ascii_serialization();
    let bare = text.strip_suffix('/').unwrap_or(text);
    let extra = !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || bare.len() != text.len();
    if extra {
        return Err(format!(
            "'{text}' is not an origin: write only scheme://host[:port] ('{origin}')"
        ));
    }
    Ok(origin)
}

fn header(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("'{text}' is not a header name"))
}

fn method(text: &str) -> Result<Method, String> {
    let upper = text.trim().to_ascii_uppercase();
    match METHODS.contains(&upper.as_str()) {
        true => Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string()),
        false => Err(format!(
            "unknown method '{text}'; expected \"*\" or some of: {}",
            METHODS.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\n\
        authenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  \
        audience: \"https://fhir.example.org\"\n";

    fn parse(cors: &str) -> Result<Option<Cors>, Vec<(String, String)>> {
        Config::parse(&format!("{BASE}{cors}"))
            .map(|config| config.cors)
            .map_err(|errors| errors.0.into_iter().map(|e| (e.path, e.message)).collect())
    }

    #[test]
    fn absent_leaves_cors_to_the_upstream() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("cors:\n"), Ok(None));
    }

    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        let cors = parse(
            "cors:\n  origins: [\"https://App.Example.org\", \"https://app.example.org:8443\", \
             \"http://127.0.0.1:5173\", \"https://b.example.org:443\"]\n  headers: [\"*\"]\n  \
             methods: [get, POST]\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            cors.origins,
            Allowed::Listed(vec![
                "https://app.example.org".to_owned(),
                "https://app.example.org:8443".to_owned(),
                "http://127.0.0.1:5173".to_owned(),
                "https://b.example.org".to_owned(),
            ])
        );
        assert_eq!(cors.headers, Allowed::Any);
        assert_eq!(
            cors.methods,
            Allowed::Listed(vec![Method::GET, Method::POST])
        );
        assert_eq!((cors.max_age, cors.allow_credentials), (600, false));
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        let errors = parse(
            "cors:\n  origins: [\"*\", \"https://a.example.org/\", \"null\", \"ftp://x\", \
             \"https://u@a.example.org\", \"https://a.example.org/app\"]\n  headers: [\"bad header\", \
             Authorization, authorization]\n  methods: [GTE]\n  maxAge: 100000\n  \
             allowCredentials: true\n  exposeHeaders: []\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "cors.exposeHeaders",
                "cors.origins[0]",
                "cors.origins[1]",
                "cors.origins[2]",
                "cors.origins[3]",
                "cors.origins[4]",
                "cors.origins[5]",
                "cors.headers[0]",
                "cors.headers[2]",
                "cors.methods[0]",
                "cors.maxAge",
                "cors.allowCredentials",
                "cors.methods",
            ],
            "{errors:#?}"
        );
        assert_eq!(
            errors[2].1,
            "'https://a.example.org/' is not an origin: write only scheme://host[:port] \
             ('https://a.example.org')"
        );
        assert_eq!(errors[8].1, "'authorization' is listed twice");
        assert!(errors[11].1.contains("Fetch standard forbids"));
    }

    #[test]
    fn credentials_need_listed_origins() {
        let errors = parse(
            "cors:\n  origins: [\"*\"]\n  headers: [\"*\"]\n  methods: [\"*\"]\n  \
             allowCredentials: true\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "cors.allowCredentials");
        let cors = parse(
            "cors:\n  origins: [\"https://a.example.org\"]\n  headers: [\"*\"]\n  \
             methods: [\"*\"]\n  maxAge: 0\n  allowCredentials: true\n",
        )
        .unwrap()
        .unwrap();
        assert!(cors.allow_credentials);
        assert_eq!(cors.max_age, 0);
    }

    #[test]
    fn no_origin_is_cors_owned_and_closed() {
        // Azure's export of a service without CORS: every list empty, maxAge null.
        let cors = parse(
            "cors:\n  origins: []\n  headers: []\n  methods: []\n  maxAge: null\n  \
             allowCredentials: false\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(cors.origins, Allowed::Listed(Vec::new()));
        let errors = parse("cors:\n  origins: [\"https://a.example.org\"]\n").unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, ["cors.methods", "cors.headers"]);
    }
}
