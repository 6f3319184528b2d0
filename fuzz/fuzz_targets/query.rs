//! `fhir::query::parameters` and `carries_method_parameter` on arbitrary query strings and form
//! bodies: never panic, and the lenient `_method` scan sees every parameter that `parameters`
//! decodes to the name `_method`.
#![no_main]

use fhirguard::fhir::query::{carries_method_parameter, parameters};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = carries_method_parameter(data);
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let tunnel = parameters(Some(query)).any(|(name, _)| name.eq_ignore_ascii_case("_method"));
    if tunnel {
        assert!(
            carries_method_parameter(query),
            "{query:?} names _method but the scan missed it"
        );
    }
});
