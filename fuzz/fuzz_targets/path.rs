//! `fhir::path::normalize_path`: never panics; an accepted path is canonical — normalizing it
//! again gives it back, and no empty, `.` or `..` segment or encoded separator survives in it.
#![no_main]

use fhirguard::fhir::path::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let Ok(once) = normalize_path(raw) else {
        return;
    };
    assert_eq!(
        normalize_path(&once).as_ref(),
        Ok(&once),
        "not idempotent: {raw:?} -> {once:?}"
    );
    assert!(once.starts_with('/'), "{raw:?} -> {once:?}");
    for needle in ["//", "/./", "/../", "%2F", "%2f", "%5C", "%5c"] {
        assert!(!once.contains(needle), "{raw:?} -> {once:?} holds {needle}");
    }
    if once != "/" {
        assert!(
            once[1..].split('/').all(|s| !matches!(s, "" | "." | "..")),
            "{raw:?} -> {once:?} keeps an empty or dot segment"
        );
    }
});
