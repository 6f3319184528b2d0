//! `authz::scope::parse_scopes` on arbitrary scope claims (one claim per line, as a token's
//! `scp` array would carry them): never panics, nor do the questions asked of a parsed set; and
//! in a claim that parses, every v2 permission string is in `cruds` order (SMART 2.x §3.2: an
//! out-of-order one never parses).
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
    // Every clinical token of a claim that parsed was written in cruds order.
    for token in claims.iter().flat_map(|claim| claim.split_whitespace()) {
        let Some(letters) = v2_letters(token) else {
            continue;
        };
        let places: Vec<usize> = letters
            .bytes()
            .filter_map(|b| b"cruds".iter().position(|l| *l == b))
            .collect();
        assert!(
            places.windows(2).all(|w| w[0] < w[1]),
            "{token:?} parsed with letters out of cruds order"
        );
    }
});

/// The permission letters of an unencoded `context/Type.letters[?…]` token, if it has only
/// cruds letters there.
fn v2_letters(token: &str) -> Option<&str> {
    let rest = ["patient", "user", "system"]
        .iter()
        .find_map(|context| token.strip_prefix(context))?;
    let rest = rest.strip_prefix(['/', '$', '.'])?;
    let (_, access) = rest.split_once('.')?;
    let access = access.split('?').next()?;
    (!access.is_empty() && access.bytes().all(|b| b"cruds".contains(&b))).then_some(access)
}
