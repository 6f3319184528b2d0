//! `fhir::reference` and the compartment membership built on it (issue 20): never panics; a
//! reference that parses is canonical — it prints back to its text exactly, names an R4 type
//! and an R4 id — and one to a Patient always mentions Patient. Put as the `subject` (and a
//! `focus`) of an Observation: a member of Patient/1's compartment has a canonical reference
//! to Patient/1 there, and a write check never lets through a canonical Patient reference that
//! is not Patient/1, nor a spelling that is not canonical and mentions Patient or holds a `%`
//! (the fail-closed side of the normalisation).
#![no_main]

use fhirguard::authz::smart::{membership, FhirUser};
use fhirguard::fhir::reference::{mentions_type, Literal};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|text: &str| {
    if let Some(literal) = Literal::parse(text) {
        let mut printed = String::new();
        if let Some(base) = literal.base {
            printed.push_str(base);
            printed.push('/');
        }
        printed.push_str(literal.resource_type);
        printed.push('/');
        printed.push_str(literal.id);
        if let Some(version) = literal.version {
            printed.push_str("/_history/");
            printed.push_str(version);
        }
        assert_eq!(printed, text, "not exact");
        if literal.resource_type == "Patient" {
            assert!(mentions_type(text, "Patient"), "{text:?}");
        }
    }
    let base = url::Url::parse("https://fhir.example.org/r4").unwrap();
    let user = FhirUser::parse("Patient/1", Some(&base)).unwrap();
    let resource = json!({"resourceType": "Observation", "subject": {"reference": text},
                          "focus": [{"reference": text}]});
    if membership::is_member(&resource, &user) {
        let literal = Literal::parse(text).expect("a member's reference is canonical");
        assert!(user.is_literal(&literal), "{text:?}");
    }
    // A canonical reference names its own type (`Claim/Patient1` is a Claim); one that is not
    // canonical may be read as a Patient whenever it mentions one.
    let foreign = membership::foreign_reference(&resource, &user).is_some();
    let may_be_patient = match Literal::parse(text) {
        Some(literal) => literal.resource_type == "Patient",
        None => mentions_type(text, "Patient") || text.contains('%'),
    };
    if may_be_patient && !user.is_referenced_by(text) {
        assert!(foreign, "{text:?} let through");
    }
});
