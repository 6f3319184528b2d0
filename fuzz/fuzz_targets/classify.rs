//! `fhir::classify` as the proxy calls it: a method, a path run through `normalize_path` first,
//! a query, and no headers. Never panics. The first byte picks the method; the rest is the
//! request target, split at its first `?`.
#![no_main]

use fhirguard::fhir::{classify, path::normalize_path};
use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 8] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
];

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let method = &METHODS[usize::from(*first) % METHODS.len()];
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Ok(path) = normalize_path(path) else {
        return;
    };
    let _ = classify(method, &path, query, &HeaderMap::new());
});
