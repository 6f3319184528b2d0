//! `fhir::bundle::classify_bundle` on arbitrary bodies: never panics; an accepted bundle is
//! strict JSON (no duplicate member names).
#![no_main]

use fhirguard::fhir::{bundle::classify_bundle, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if classify_bundle(body).is_ok() {
        assert!(
            json::parse(body).is_ok(),
            "a bundle accepted but not strict JSON"
        );
    }
});
