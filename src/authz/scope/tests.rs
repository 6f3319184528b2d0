//! Tests of scope semantics: access → actions (reference §4.3), the type gate and narrowing
//! (reference §4.7), canonical printing.

use super::*;
use DataAction::{Create, Delete, Export, HardDelete, Read, ReadById, Search, Update, Write};

fn set(scopes: &str) -> ScopeSet {
    parse_scopes(&[scopes.to_owned()]).expect("valid scopes")
}

#[test]
fn access_levels_map_to_reference_actions() {
    let v2 = |c, r, u, d, s| Access::V2 { c, r, u, d, s };
    let table = [
        (Access::V1Read, DataActions::of(&[Read, Export, Search])),
        (
            Access::V1Write,
            DataActions::of(&[Write, Create, Update, Delete]),
        ),
        (
            Access::V1All,
            DataActions::of(&[Read, Write, Export, Search, Create, Update, Delete]),
        ),
        (
            v2(true, false, false, false, false),
            DataActions::of(&[Create]),
        ),
        (
            v2(false, true, false, false, false),
            DataActions::of(&[ReadById]),
        ),
        (
            v2(false, false, true, false, false),
            DataActions::of(&[Update]),
        ),
        (
            v2(false, false, false, true, false),
            DataActions::of(&[Delete]),
        ),
        (
            v2(false, false, false, false, true),
            DataActions::of(&[Search, Export]),
        ),
        (
            v2(true, true, true, true, true),
            DataActions::of(&[Create, ReadById, Update, Delete, Search, Export]),
        ),
    ];
    for (access, expected) in table {
        assert_eq!(access.actions(), expected, "{access}");
        assert!(!access.actions().contains(HardDelete));
    }
}

#[test]
fn type_gate_unions_matching_scopes() {
    let scopes = set("patient/Observation.rs patient/Condition.c patient/*.r");
    assert_eq!(
        scopes.actions_for_type(Some("Observation")),
        DataActions::of(&[ReadById, Search, Export])
    );
    assert_eq!(
        scopes.actions_for_type(Some("Condition")),
        DataActions::of(&[Create, ReadById])
    );
    assert_eq!(
        scopes.actions_for_type(Some("Patient")),
        DataActions::of(&[ReadById])
    );
    assert_eq!(
        scopes.actions_for_type(None),
        DataActions::of(&[ReadById, Search, Export, Create])
    );
}

#[test]
fn type_gate_without_wildcard_denies_other_types() {
    let scopes = set("patient/Observation.read");
    assert!(scopes.actions_for_type(Some("Condition")).is_empty());
    assert!(scopes.actions_for_type(Some("observation")).is_empty());
    assert!(ScopeSet::default().actions_for_type(None).is_empty());
}

#[test]
fn granted_types_per_action() {
    let scopes = set("user/Observation.rs user/Condition.c user/Encounter.s user/Observation.s");
    assert_eq!(
        scopes.granted_types(Search),
        Some(vec!["Encounter".to_owned(), "Observation".to_owned()])
    );
    assert_eq!(
        scopes.granted_types(Create),
        Some(vec!["Condition".to_owned()])
    );
    assert_eq!(scopes.granted_types(Delete), Some(vec![]));
    assert_eq!(set("system/*.read").granted_types(Search), None);
    assert_eq!(set("system/all.write").granted_types(Search), Some(vec![]));
}

#[test]
fn constraints_are_per_scope_alternatives() {
    let scopes = set("patient/Observation.rs?category=laboratory&status=final \
         patient/Observation.s?category=vital-signs patient/Observation.c");
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        scopes.constraints_for("Observation", Search),
        vec![
            vec![pair("category", "laboratory"), pair("status", "final")],
            vec![pair("category", "vital-signs")],
        ]
    );
    // The unconstrained create scope does not lift the search constraints.
    assert_eq!(scopes.constraints_for("Observation", Create), vec![vec![]]);
    assert!(scopes.constraints_for("Condition", Search).is_empty());
}

#[test]
fn unconstrained_wildcard_lifts_constraints() {
    let scopes = set("patient/Observation.rs?category=laboratory patient/*.rs");
    let alternatives = scopes.constraints_for("Observation", Search);
    assert_eq!(alternatives.len(), 2);
    assert!(alternatives.iter().any(Vec::is_empty));
    let constrained_star = set("patient/*.rs?_security=R");
    assert_eq!(
        constrained_star.constraints_for("Condition", ReadById),
        vec![vec![("_security".to_owned(), "R".to_owned())]]
    );
}

#[test]
fn unconstrained_actions_ignore_constrained_scopes() {
    let scopes = set("system/Patient.rs?active=true system/Observation.rs");
    assert!(scopes
        .unconstrained_actions_for_type(Some("Patient"))
        .is_empty());
    assert_eq!(
        scopes.unconstrained_actions_for_type(Some("Observation")),
        DataActions::of(&[ReadById, Search, Export])
    );
    assert_eq!(
        scopes.actions_for_type(Some("Patient")),
        DataActions::of(&[ReadById, Search, Export])
    );
}

#[test]
fn context_and_emptiness() {
    assert_eq!(set("openid fhirUser").context(), None);
    assert!(set("openid fhirUser").is_empty());
    assert_eq!(set("system/*.read").context(), Some(Context::System));
    assert!(!set("user/Patient.r").is_empty());
}

#[test]
fn display_is_canonical() {
    let table = [
        ("patient.all.read", "patient/*.read"),
        ("system%2fPatient.all", "system/Patient.*"),
        (
            "user$Observation.rs?code=http://loinc.org|1234-5",
            "user/Observation.rs?code=http://loinc.org|1234-5",
        ),
        (
            "patient/Observation.cud?code=a%7Cb",
            "patient/Observation.cud?code=a|b",
        ),
        (
            "user/Patient.r user/Patient.s",
            "user/Patient.r user/Patient.s",
        ),
    ];
    for (input, canonical) in table {
        let scopes = set(input);
        assert_eq!(scopes.to_string(), canonical, "{input}");
        assert_eq!(set(canonical), scopes, "{input}");
    }
    // Double encoding is refused (issue 11): `%2525` would decode to a value holding `%`.
    assert!(matches!(
        parse_scopes(&["patient/Observation.rs?code=a%2525b".to_owned()]),
        Err(ScopeError::DoubleEncoded(_))
    ));
}
