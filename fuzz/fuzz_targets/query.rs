//! `fhir::query`'s readers on arbitrary query strings and form bodies: `parameters`,
//! `refused_parameter` (`_method`, `access_token`), `is_credential_name` and
//! `redact_credentials` never panic; the lenient scan sees every parameter that `parameters`
//! decodes to the name `_method` or `access_token`; and a redacted query keeps every parameter
//! in place, with the value of each credential-named one `[redacted]` and the others as sent.
#![no_main]

use fhirguard::fhir::query::{
    carries_method_parameter, is_access_token_name, is_credential_name, parameters,
    redact_credentials, refused_parameter,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = carries_method_parameter(data);
    let refused = refused_parameter(data);
    for name in data.split(|b| *b == b'&' || *b == b';') {
        let name = name.split(|b| *b == b'=').next().unwrap_or_default();
        if is_access_token_name(name) {
            assert!(
                refused.is_some(),
                "{name:?} is access_token but not refused"
            );
        }
    }
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    for (name, _) in parameters(Some(query)) {
        if name.eq_ignore_ascii_case("_method") {
            assert!(
                carries_method_parameter(query),
                "{query:?} names _method but the scan missed it"
            );
        }
        if name.eq_ignore_ascii_case("access_token") {
            assert!(
                refused.is_some(),
                "{query:?} names access_token but the scan missed it"
            );
            assert!(is_credential_name(name.as_bytes()));
        }
    }
    let mut shown = String::new();
    if !redact_credentials(query, &mut shown) {
        assert!(shown.is_empty());
        return;
    }
    let sent: Vec<&str> = query.split(['&', ';']).collect();
    let kept: Vec<&str> = shown.split(['&', ';']).collect();
    assert_eq!(sent.len(), kept.len(), "{query:?} → {shown:?}");
    for (sent, kept) in sent.iter().zip(&kept) {
        let name = sent.split('=').next().unwrap_or_default();
        if is_credential_name(name.as_bytes()) {
            assert_eq!(*kept, format!("{name}=[redacted]"), "{query:?}");
        } else {
            assert_eq!(sent, kept, "{query:?}");
        }
    }
});
