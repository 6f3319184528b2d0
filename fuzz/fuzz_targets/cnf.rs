//! `auth::binding::confirmation` on arbitrary claim sets (a JWT's payload or an introspection
//! answer): never panics; no `cnf`, no binding; a binding read is exactly the claim's non-empty
//! `jkt` and `x5t#S256` strings, at least one of them present; any other `cnf` is refused.
#![no_main]

use fhirguard::auth::binding::confirmation;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let read = confirmation(&claims);
    let Some(cnf) = claims.get("cnf") else {
        assert_eq!(read.ok(), Some(None), "no cnf, yet not unbound");
        return;
    };
    let Ok(read) = read else {
        return;
    };
    let read = read.expect("a cnf claim read as no binding");
    let member = |name| {
        cnf.get(name)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    assert_eq!(read.jkt, member("jkt"), "{cnf}");
    assert_eq!(read.x5t_s256, member("x5t#S256"), "{cnf}");
    assert!(read.jkt.is_some() || read.x5t_s256.is_some(), "{cnf}");
});
