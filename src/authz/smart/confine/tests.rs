//! Compartment hardening (issue 11, classes 1, 8 and 9) as tables and properties: every way a
//! client could name a compartment parameter so that fhirguard and the FHIR server read it
//! differently is refused, and every confined search carries the canonical constraint.

use http::{HeaderMap, Method};
use serde_json::json;

use super::*;
use crate::authz::smart::{authorize, membership, OwnerType};
use crate::authz::Reasons;
use crate::fhir::classify;

const USER: &str = "https://fhir.example.org/Patient/123";
const BASE: &str = "https://fhir.example.org";

fn grant(scopes: &str) -> SmartGrant {
    let base = url::Url::parse(BASE).unwrap();
    SmartGrant::new(&[scopes.to_owned()], Some(USER), Some(&base)).expect("valid grant")
}

fn user() -> FhirUser {
    grant("patient/*.read").user.unwrap()
}

/// The plan for `method target` under `patient/*.*` (the type gate must pass).
fn plan(method: &str, target: &str) -> Result<Confinement, Denial> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let request = classify(&method, path, query, &HeaderMap::new()).unwrap();
    let grant = grant("patient/*.*");
    let decision = authorize(&request, query, DataActions::ALL, &grant, Reasons::Always);
    assert!(decision.allowed, "{target}: {decision}");
    confine(&request, query, DataActions::ALL, &grant)
}

fn refused(target: &str) -> String {
    match plan("GET", target) {
        Err(Denial::Forbidden(reason)) => reason,
        other => panic!("{target}: expected 403, got {other:?}"),
    }
}

#[test]
fn compartment_parameters_with_modifiers_or_foreign_values_are_refused() {
    let targets = [
        // The cases: counts of everyone but the patient.
        "/Observation?subject:not=Patient/123&_summary=count",
        "/Observation?subject:not=Patient/123&_total=accurate&_count=0",
        "/Observation?subject:not=Patient/123&code=http://loinc.org|1234-5",
        "/Encounter?patient:not=Patient/123",
        "/Patient?_id:not=123",
        // Every modifier, the type modifier of another type included.
        "/Observation?subject:missing=true",
        "/Observation?subject:missing=false",
        "/Observation?subject:exact=Patient/123",
        "/Observation?subject:identifier=http://x|1",
        "/Observation?subject:above=Patient/123",
        "/Observation?subject:below=Patient/123",
        "/Observation?subject:Group=123",
        "/Observation?subject:=Patient/123",
        "/Observation?patient:Group=123",
        "/Observation?performer:not=Patient/123",
        "/Patient?_id:missing=true",
        "/Patient?_id:Patient=123",
        // Encodings and case: the server decodes and may compare names case-insensitively.
        "/Observation?subject%3Anot=Patient/123",
        "/Observation?subject%3anot=Patient/123",
        "/Observation?SUBJECT:NOT=Patient/123",
        "/Observation?Subject:Not=Patient/123",
        "/Observation?Subject=Patient/456",
        "/Patient?_ID=456",
        "/Patient?_Id:not=123",
        // Chains on a compartment parameter.
        "/Observation?subject.name=x",
        "/Observation?subject:Patient.name=x",
        "/Observation?patient.identifier=x",
        // Values that are not exactly the patient's reference.
        "/Observation?subject=Patient/456",
        "/Observation?subject=foo/Patient/123",
        "/Observation?subject=http://other.example/Patient/123",
        "/Observation?subject=https://fhir.example.org/fhir/Patient/123",
        "/Observation?subject=Patient/123/_history/1",
        "/Observation?subject=123",
        "/Observation?subject=patient/123",
        "/Observation?subject=Patient/123%20",
        "/Observation?subject=",
        "/Observation?subject",
        "/Observation?patient=456",
        "/Observation?subject:Patient=456",
        "/Observation?subject:Patient=Patient/456",
        "/Observation?performer=Patient/456",
        "/Observation?performer=https://other.example/Practitioner/7",
        "/Patient?_id=456",
        "/Patient?_id=Patient/123",
        "/Patient?link=Patient/456",
        // Comma lists, escaped commas and repeated parameters.
        "/Observation?subject=Patient/123,Patient/456",
        "/Observation?subject=Patient/123,",
        "/Observation?subject=Patient/123%2CPatient/456",
        "/Observation?subject=Patient/123\\,Patient/456",
        "/Observation?subject=Patient/123&subject=Patient/456",
        "/Patient?_id=123,456",
        // Names the server might read differently: double encoding, Unicode folding, spaces.
        "/Observation?subject%253Anot=Patient/123",
        "/Observation?%C5%BFubject=Patient/456",
        "/Observation?subject%20=Patient/456",
        "/Observation?subject+=Patient/456",
        "/Observation?%20subject=Patient/456",
        "/Observation?subject%09:not=Patient/123",
        // The compartment path confines, but its parameters are checked the same.
        "/Patient/123/Observation?subject:not=Patient/123",
        "/Patient/123/Observation?subject=Patient/456",
        // Shared types: _has and chains may not reach compartment data.
        "/Location?_has:Encounter:location:patient=Patient/456&_summary=count",
        "/Organization?_has:Patient:organization:_id=456",
        "/Location?_HAS:Encounter:location:patient=Patient/456",
        "/Location?_Has:Location:partof:_id=x",
        "/Location?organization.name=x",
        "/?_type=Location&_has:Encounter:location:patient=Patient/456",
    ];
    for target in targets {
        let reason = refused(target);
        assert!(
            reason.contains("compartment hardening") || reason.contains("outside the compartment"),
            "{target}: the reason names no rule: {reason}"
        );
    }
}

fn forwarded(target: &str) -> String {
    match plan("GET", target) {
        Ok(Confinement::Search {
            query: Some(query), ..
        }) => query,
        other => panic!("{target}: expected a confined search, got {other:?}"),
    }
}

#[test]
fn every_search_on_a_compartment_type_carries_the_canonical_parameter() {
    let table = [
        ("/Observation", "subject=Patient/123"),
        (
            "/Observation?subject=Patient/123&_summary=count",
            "subject=Patient/123&_summary=count&subject=Patient/123",
        ),
        (
            "/Observation?_total=accurate&_count=0",
            "_total=accurate&_count=0&subject=Patient/123",
        ),
        (
            "/Observation?patient=123",
            "patient=123&subject=Patient/123",
        ),
        (
            "/Observation?subject:Patient=123",
            "subject:Patient=123&subject=Patient/123",
        ),
        (
            "/Observation?subject=https://fhir.example.org/Patient/123",
            "subject=https://fhir.example.org/Patient/123&subject=Patient/123",
        ),
        // A reference to another type cannot name a patient.
        (
            "/Observation?performer=Practitioner/7",
            "performer=Practitioner/7&subject=Patient/123",
        ),
        (
            "/Encounter?_summary=count",
            "_summary=count&patient=Patient/123",
        ),
        ("/Patient?_id=123", "_id=123&_id=123"),
        ("/Patient?name=x", "name=x&_id=123"),
        // Chains and _has on other parameters are ANDed with the canonical parameter.
        (
            "/Observation?encounter:Encounter.status=x",
            "encounter:Encounter.status=x&subject=Patient/123",
        ),
    ];
    for (target, query) in table {
        assert_eq!(forwarded(target), query, "{target}");
    }
    // Shared-type searches reaching only shared types stay as they are.
    assert_eq!(
        plan("GET", "/Location?organization:Organization.name=x"),
        Ok(Confinement::Search {
            query: None,
            proven: None
        })
    );
}

#[test]
fn history_across_resources_is_refused_and_instance_history_checks_the_resource() {
    for target in [
        "/Observation/_history",
        "/Observation/_history?_count=0",
        "/Observation/_history?_summary=count",
        "/Observation/_history?_since=2020-01-01",
        "/Patient/_history?_count=0",
        "/_history",
        "/_history?_count=0",
    ] {
        assert!(refused(target).contains("unconfinable history"), "{target}");
    }
    assert_eq!(
        plan("GET", "/Observation/9/_history?_count=0"),
        Ok(Confinement::History)
    );
    assert_eq!(
        plan("GET", "/Patient/123/_history?_count=0"),
        Ok(Confinement::Search {
            query: None,
            proven: None
        })
    );
    assert!(matches!(
        plan("GET", "/Patient/456/_history?_count=0"),
        Err(Denial::NotFound(_))
    ));
    assert_eq!(
        plan("GET", "/Location/_history?_count=0"),
        Ok(Confinement::Forward)
    );
}

#[test]
fn conditional_create_criteria_are_confined_like_searches() {
    let user = user();
    let confined = |criteria: &str| confine_condition(&user, "Observation", criteria);
    assert_eq!(
        confined("code=x").unwrap(),
        "code=x&subject=Patient/123".to_owned()
    );
    assert_eq!(
        confined("_id=o9").unwrap(),
        "_id=o9&subject=Patient/123".to_owned()
    );
    assert_eq!(confined("").unwrap(), "subject=Patient/123".to_owned());
    for criteria in [
        "subject=Patient/456",
        "patient=456&code=x",
        "subject:not=Patient/123",
        "subject%3Amissing=true",
        "_has:Observation:subject:code=x",
        "_query=x",
    ] {
        assert!(
            matches!(confined(criteria), Err(Denial::Forbidden(_))),
            "{criteria}"
        );
    }
    assert_eq!(
        confine_condition(&user, "Patient", "identifier=x|1").unwrap(),
        "identifier=x|1&_id=123".to_owned()
    );
    assert!(confine_condition(&user, "Patient", "_id=456").is_err());
}

#[test]
fn only_the_exact_reference_names_the_user() {
    let user = user();
    assert_eq!(user.owner, OwnerType::Patient);
    for named in ["Patient/123", "https://fhir.example.org/Patient/123"] {
        assert!(user.is_named_by(named), "{named}");
        assert!(
            user.is_referenced_by(&format!("{named}/_history/2")),
            "{named}"
        );
    }
    for other in [
        "Patient/1234",
        "Patient/12",
        "123",
        "foo/Patient/123",
        "http://other.example/Patient/123",
        "https://fhir.example.org/x/Patient/123",
        "https://fhir.example.orgPatient/123",
        "Patient/123/_history",
        "Patient/123/_history/1/x",
        "Practitioner/123",
        "",
    ] {
        assert!(!user.is_referenced_by(other), "{other}");
    }
    let relative_only = FhirUser::parse("Patient/123", None).unwrap();
    assert!(!relative_only.is_named_by("https://fhir.example.org/Patient/123"));
}

#[test]
fn writes_naming_another_patient_are_found() {
    let user = user();
    let foreign = [
        json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"},
               "performer": [{"reference": "Patient/456"}]}),
        json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"},
               "performer": [{"reference": "http://other.example/Patient/123"}]}),
        json!({"resourceType": "Patient", "id": "123",
               "link": [{"other": {"reference": "Patient/456"}, "type": "seealso"}]}),
        json!({"resourceType": "Procedure", "subject": {"reference": "Patient/123"},
               "performer": [{"actor": {"reference": "Patient?identifier=x|1"}}]}),
        // Anywhere in the resource, not only in compartment elements (issue 20).
        json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"},
               "focus": [{"reference": "Patient/456"}]}),
    ];
    for resource in foreign {
        assert!(
            membership::foreign_reference(&resource, &user).is_some(),
            "{resource}"
        );
    }
    let own = [
        json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"},
               "performer": [{"reference": "Practitioner/7"}, {"reference": "Patient/123"}]}),
        // References to other types, contained ones and URNs name no patient.
        json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"},
               "focus": [{"reference": "Group/Patient"}, {"reference": "#c1"},
                         {"reference": "urn:uuid:1"}],
               "extension": [{"url": "x", "valueReference": {"reference": "Observation/7"}}]}),
    ];
    for resource in own {
        assert_eq!(
            membership::foreign_reference(&resource, &user),
            None,
            "{resource}"
        );
    }
}

#[test]
fn case_variants_of_compartment_elements_are_found() {
    let user = user();
    for (resource, variant) in [
        (
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"},
                   "Performer": [{"reference": "Patient/456"}]}),
            Some("Performer"),
        ),
        (
            json!({"resourceType": "Observation",
                   "subject": {"reference": "Patient/123", "Reference": "Patient/456"}}),
            Some("Reference"),
        ),
        (
            json!({"resourceType": "Encounter", "SUBJECT": {"reference": "Patient/456"}}),
            Some("SUBJECT"),
        ),
        (
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"},
                   "valueString": "Reference"}),
            None,
        ),
    ] {
        assert_eq!(
            membership::case_variant(&resource, &user).as_deref(),
            variant,
            "{resource}"
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::fhir::query::parameters;

    const TYPES: [&str; 5] = [
        "Observation",
        "Encounter",
        "Patient",
        "Procedure",
        "CarePlan",
    ];
    const NAMES: [&str; 16] = [
        "subject",
        "patient",
        "performer",
        "_id",
        "Subject",
        "SUBJECT",
        "PATIENT",
        "_ID",
        "link",
        "code",
        "_summary",
        "_count",
        "_total",
        "subject.name",
        "patient.name",
        "status",
    ];
    const MODIFIERS: [&str; 11] = [
        "",
        "",
        "",
        ":not",
        ":missing",
        ":exact",
        ":Patient",
        ":patient",
        ":identifier",
        ":below",
        ":Group",
    ];
    const VALUES: [&str; 14] = [
        "Patient/123",
        "Patient/456",
        "123",
        "456",
        "foo/Patient/123",
        "https://fhir.example.org/Patient/123",
        "http://other.example/Patient/123",
        "Practitioner/7",
        "Patient/123,Patient/456",
        "",
        "count",
        "0",
        "accurate",
        "true",
    ];

    /// One generated parameter, its name percent-encoded or not.
    fn pair() -> impl Strategy<Value = String> {
        (
            0..NAMES.len(),
            0..MODIFIERS.len(),
            0..VALUES.len(),
            any::<bool>(),
        )
            .prop_map(|(n, m, v, encode)| {
                let name = format!("{}{}", NAMES[n], MODIFIERS[m]);
                let name = if encode {
                    name.replace(':', "%3A")
                } else {
                    name
                };
                format!("{name}={}", VALUES[v])
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// For any generated query on a compartment type, a forwarded query always carries the
        /// canonical constraint, and every compartment parameter in it is unmodified (or typed
        /// with the owner's type), unchained, and names the patient or another type only.
        #[test]
        fn forwarded_searches_always_carry_the_canonical_constraint(
            resource_type in 0..TYPES.len(),
            pairs in proptest::collection::vec(pair(), 0..5),
        ) {
            let resource_type = TYPES[resource_type];
            let query = pairs.join("&");
            let target = format!("/{resource_type}?{query}");
            let Ok(plan) = plan("GET", &target) else {
                return Ok(());
            };
            let Confinement::Search { query: Some(forwarded), .. } = plan else {
                return Err(TestCaseError::fail(format!("{target}: unconfined {plan:?}")));
            };
            let user = user();
            let canonical = canonical_parameter(&user, Some(resource_type), None).unwrap();
            let forwarded: Vec<(String, String)> = parameters(Some(&forwarded)).collect();
            prop_assert!(forwarded.contains(&canonical), "{target}: no {canonical:?}");
            let params = user.compartment_params(resource_type).unwrap();
            for (name, value) in &forwarded {
                let lowered = name.to_ascii_lowercase();
                let base = lowered.split([':', '.']).next().unwrap();
                let compartment = params.contains(&base)
                    || base == "patient"
                    || (resource_type == "Patient" && base == "_id");
                if !compartment {
                    continue;
                }
                prop_assert!(!lowered.contains('.'), "{target}: chained {name}");
                let modifier = lowered.split_once(':').map(|(_, m)| m);
                prop_assert!(
                    modifier.is_none_or(|m| m == "patient"),
                    "{target}: modifier on {name}"
                );
                for item in value.split(',') {
                    let bare_id = base == "patient" || base == "_id" || modifier.is_some();
                    prop_assert!(
                        matches!(
                            item,
                            "Patient/123" | "https://fhir.example.org/Patient/123"
                                | "Practitioner/7"
                        ) || (bare_id && item == "123"),
                        "{target}: {name}={item}"
                    );
                }
            }
        }
    }
}
