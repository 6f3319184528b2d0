//! `cors::Policy::preflight` on arbitrary preflight header lines (issue 19): never panics; a
//! preflight it accepts came from the one allowed origin, asked for one listed method, and
//! asked only for listed headers, and the answer allows exactly the configured lists. Each input
//! line is `name: value`; lines that are not a header are skipped.
#![no_main]

use std::sync::OnceLock;

use fhirguard::config::Config;
use fhirguard::cors::Policy;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = "upstream: \"http://127.0.0.1:8081/fhir\"\n\
    authenticationConfiguration:\n  authority: \"https://login.example.org/t\"\n  \
    audience: \"https://fhir.example.org\"\n\
    cors:\n  origins: [\"https://app.example.org\"]\n  headers: [Authorization, Content-Type]\n  \
    methods: [GET, POST]\n";

static POLICY: OnceLock<Policy> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let policy = POLICY.get_or_init(|| {
        let config = Config::parse(CONFIG).expect("the fuzz config is valid");
        Policy::new(config.cors.as_ref().expect("cors"))
    });
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let Ok(answer) = policy.preflight(&headers) else {
        return;
    };
    let origins: Vec<_> = headers.get_all("origin").iter().collect();
    assert_eq!(origins, ["https://app.example.org"]);
    let methods: Vec<_> = headers.get_all("access-control-request-method").iter().collect();
    assert!(methods == ["GET"] || methods == ["POST"], "{methods:?}");
    for line in headers.get_all("access-control-request-headers") {
        for name in line.to_str().expect("accepted lines are text").split(',') {
            let name = name.trim().to_ascii_lowercase();
            assert!(
                name.is_empty() || name == "authorization" || name == "content-type",
                "{name}"
            );
        }
    }
    assert_eq!(answer["access-control-allow-methods"], "GET, POST");
    assert_eq!(answer["access-control-allow-headers"], "authorization, content-type");
});
