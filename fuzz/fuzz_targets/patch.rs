//! `fhir::patch::apply`: the input is a JSON document and a JSON Patch separated by a NUL byte
//! (which JSON text cannot hold). Never panics; all or nothing (RFC 6902 §5): on an error the
//! document is left as it was.
#![no_main]

use fhirguard::fhir::{json, patch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let (Ok(document), Ok(operations)) =
        (json::parse(&data[..split]), json::parse(&data[split + 1..]))
    else {
        return;
    };
    let mut patched = document.clone();
    if patch::apply(&mut patched, &operations).is_err() {
        assert_eq!(patched, document, "a failed patch changed the document");
    }
});
