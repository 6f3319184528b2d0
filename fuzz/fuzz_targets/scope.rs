//! `authz::scope::parse_scopes` on arbitrary scope claims (one claim per line, as a token's
//! `scp` array would carry them): never panics, nor do the questions asked of a parsed set.
#![no_main]

use fhirguard::actions::DataAction;
use fhirguard::authz::scope::parse_scopes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let claims: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let Ok(set) = parse_scopes(&claims) else {
        return;
    };
    let _ = set.context();
    let _ = set.actions_for_type(None);
    let _ = set.actions_for_type(Some("Patient"));
    let _ = set.unconstrained_actions_for_type(Some("Observation"));
    for action in DataAction::ALL {
        let _ = set.granted_types(action);
    }
    for scope in set.scopes() {
        let _ = scope.actions();
        let _ = scope.is_constrained();
    }
});
