//! Tables drawn from reference §3.2 and §4: scopes × interaction × verdict, the confinement plan
//! for a patient context, `fhirUser` parsing, `$export` and compartment membership.

use http::{HeaderMap, Method};
use serde_json::json;

use super::*;
use crate::actions::DataAction;
use crate::fhir::classify;
use crate::fhir::resource_types::ResourceType;

const USER: &str = "https://fhir.example.org/Patient/123";

fn request(method: &str, target: &str) -> (FhirRequest, Option<String>) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let classified = classify(&method, path, query.as_deref(), &HeaderMap::new()).unwrap();
    (classified, query)
}

fn grant(scopes: &str) -> SmartGrant {
    let base = url::Url::parse("https://fhir.example.org").unwrap();
    SmartGrant::new(&[scopes.to_owned()], Some(USER), Some(&base)).expect("valid grant")
}

fn verdict(scopes: &str, granted: DataActions, method: &str, target: &str) -> bool {
    let (request, query) = request(method, target);
    authorize(
        &request,
        query.as_deref(),
        granted,
        &grant(scopes),
        Reasons::Always,
    )
    .allowed
}

#[test]
fn scope_interaction_verdicts() {
    let all = DataActions::ALL;
    let read_role = DataActions::of(&[DataAction::Read]);
    #[rustfmt::skip]
    let table: &[(&str, DataActions, &str, &str, bool)] = &[
        // v1 read: read and search, never write.
        ("patient/Observation.read", all, "GET", "/Observation/1", true),
        ("patient/Observation.read", all, "GET", "/Observation?code=x", true),
        ("patient/Observation.read", all, "POST", "/Observation", false),
        ("patient/Observation.read", all, "GET", "/Condition/1", false),
        // v1 write includes delete; * never hard delete.
        ("patient/Observation.write", all, "DELETE", "/Observation/1", true),
        ("patient/Observation.*", all, "DELETE", "/Observation/1?hardDelete=true", false),
        // v2: r is read by id only, s is search only.
        ("patient/Observation.r", all, "GET", "/Observation/1", true),
        ("patient/Observation.r", all, "GET", "/Observation?code=x", false),
        ("patient/Observation.s", all, "GET", "/Observation?code=x", true),
        ("patient/Observation.s", all, "GET", "/Observation/1", false),
        ("patient/Observation.rs", all, "POST", "/Observation/_search", true),
        ("patient/Observation.c", all, "POST", "/Observation", true),
        ("patient/Observation.c", all, "PUT", "/Observation/1", false),
        ("patient/Observation.u", all, "PUT", "/Observation/1", true),
        ("patient/Observation.u", all, "PATCH", "/Observation/1", true),
        ("patient/Observation.d", all, "DELETE", "/Observation/1", true),
        // Wildcards and separators.
        ("patient/*.read", all, "GET", "/Encounter/1", true),
        ("patient.all.read", all, "GET", "/Encounter/1", true),
        ("patient$Observation.rs", all, "GET", "/Observation/1", true),
        // Scopes only narrow the roles / allowedDataActions.
        ("system/*.*", read_role, "POST", "/Observation", false),
        ("system/*.*", read_role, "GET", "/Observation/1", true),
        // Type-less: the union of the scopes.
        ("system/Observation.read", all, "GET", "/?_type=Observation", true),
        ("system/Observation.c", all, "GET", "/", false),
        // No clinical scope: nothing.
        ("openid fhirUser launch/patient", all, "GET", "/Observation/1", false),
        // $member-match is always denied under SMART.
        ("system/*.*", all, "POST", "/Patient/$member-match", false),
    ];
    for (scopes, granted, method, target, allowed) in table {
        assert_eq!(
            verdict(scopes, *granted, method, target),
            *allowed,
            "{scopes} {method} {target}"
        );
    }
}

#[test]
fn export_counts_only_unconstrained_system_scopes() {
    let all = DataActions::ALL;
    #[rustfmt::skip]
    let table: &[(&str, &str, bool)] = &[
        ("system/*.read", "/$export", true),
        ("system/*.rs", "/$export", true),
        ("system/*.r", "/$export", false),
        ("patient/*.read", "/$export", false),
        ("user/*.read", "/Patient/$export", false),
        ("system/Observation.read", "/Patient/$export", false),
        ("system/Patient.read", "/Patient/$export", true),
        ("system/Patient.read", "/Group/g/$export", false),
        ("system/Patient.read system/Group.read", "/Group/g/$export", true),
        ("system/Observation.read", "/$export?_type=Observation", true),
        ("system/Observation.read", "/$export?_type=Observation,Patient", false),
        ("system/Observation.rs?category=lab", "/$export?_type=Observation", false),
        ("system/Observation.read", "/$export", true),
    ];
    for (scopes, target, allowed) in table {
        assert_eq!(
            verdict(scopes, all, "GET", target),
            *allowed,
            "{scopes} {target}"
        );
    }
    let (request, query) = request("GET", "/$export");
    let plan = confine(
        &request,
        query.as_deref(),
        all,
        &grant("system/Observation.read"),
    );
    assert_eq!(
        plan,
        Ok(Confinement::Rewrite {
            query: "_type=Observation".to_owned()
        })
    );
}

fn plan(scopes: &str, method: &str, target: &str) -> Result<Confinement, Denial> {
    let (request, query) = request(method, target);
    let grant = grant(scopes);
    let decision = authorize(
        &request,
        query.as_deref(),
        DataActions::ALL,
        &grant,
        Reasons::Always,
    );
    assert!(decision.allowed, "{method} {target}: {decision}");
    confine(&request, query.as_deref(), DataActions::ALL, &grant)
}

fn search(query: &str) -> Result<Confinement, Denial> {
    Ok(Confinement::Search {
        query: Some(query.to_owned()),
        proven: None,
    })
}

fn forbidden(result: &Result<Confinement, Denial>) -> bool {
    matches!(result, Err(Denial::Forbidden(_)))
}

#[test]
fn patient_context_searches_are_confined() {
    let s = "patient/*.read";
    assert_eq!(
        plan(s, "GET", "/Observation?code=x"),
        search("code=x&subject=Patient/123")
    );
    // The canonical compartment parameter is always appended, also beside the client's own.
    assert_eq!(
        plan(s, "GET", "/Observation?subject=Patient/123"),
        search("subject=Patient/123&subject=Patient/123")
    );
    assert_eq!(
        plan(
            s,
            "GET",
            "/Observation?patient=https://fhir.example.org/Patient/123"
        ),
        search("patient=https://fhir.example.org/Patient/123&subject=Patient/123")
    );
    assert!(forbidden(&plan(
        s,
        "GET",
        "/Observation?subject=Patient/456"
    )));
    assert!(forbidden(&plan(
        s,
        "GET",
        "/Observation?subject=Patient/123,Patient/456"
    )));
    assert_eq!(plan(s, "GET", "/Encounter"), search("patient=Patient/123"));
    assert_eq!(plan(s, "GET", "/Patient?name=x"), search("name=x&_id=123"));
    assert!(forbidden(&plan(s, "GET", "/Patient?_id=456")));
    // Shared types: searched freely, the answer is still filtered.
    assert_eq!(
        plan(s, "GET", "/Location?name=x"),
        Ok(Confinement::Search {
            query: None,
            proven: None
        })
    );
    // Compartment searches only for the own compartment.
    assert_eq!(
        plan(s, "GET", "/Patient/123/Observation"),
        Ok(Confinement::Search {
            query: None,
            proven: None
        })
    );
    assert!(forbidden(&plan(s, "GET", "/Patient/456/Observation")));
    // Non-member, non-shared types are out of reach.
    assert!(forbidden(&plan(s, "GET", "/Task?status=ready")));
    // System searches: shared types only.
    assert!(forbidden(&plan(s, "GET", "/?_type=Observation")));
    assert!(forbidden(&plan(s, "GET", "/")));
    assert_eq!(
        plan(s, "GET", "/?_type=Location"),
        Ok(Confinement::Search {
            query: None,
            proven: None
        })
    );
}

#[test]
fn patient_context_reads_and_writes_are_confined() {
    let s = "patient/*.*";
    assert_eq!(plan(s, "GET", "/Observation/9"), Ok(Confinement::Read));
    assert_eq!(
        plan(s, "GET", "/Observation/9/_history/2"),
        Ok(Confinement::Read)
    );
    assert_eq!(plan(s, "GET", "/Patient/123"), Ok(Confinement::Forward));
    assert!(matches!(
        plan(s, "GET", "/Patient/456"),
        Err(Denial::NotFound(_))
    ));
    assert_eq!(plan(s, "GET", "/Organization/1"), Ok(Confinement::Forward));
    assert!(forbidden(&plan(s, "GET", "/Binary/1")));
    let write = |body, current| Ok(Confinement::Write { body, current });
    assert_eq!(plan(s, "POST", "/Observation"), write(true, false));
    assert_eq!(plan(s, "PUT", "/Observation/9"), write(true, true));
    assert_eq!(plan(s, "PATCH", "/Observation/9"), Ok(Confinement::Patch));
    assert_eq!(plan(s, "DELETE", "/Observation/9"), write(false, true));
    assert!(forbidden(&plan(s, "DELETE", "/Observation?code=x")));
    assert!(forbidden(&plan(s, "PUT", "/Organization/1")));
    assert_eq!(
        plan(s, "GET", "/Observation/9/_history"),
        Ok(Confinement::History)
    );
    assert_eq!(
        plan(s, "GET", "/Patient/123/$everything"),
        Ok(Confinement::Search {
            query: None,
            proven: None
        })
    );
    assert!(forbidden(&plan(s, "GET", "/Patient/456/$everything")));
}

#[test]
fn includes_and_chains_reach_only_granted_types() {
    let s = "patient/Observation.rs patient/Patient.rs";
    assert!(plan(
        s,
        "GET",
        "/Observation?_include=Observation:subject:Patient"
    )
    .is_ok());
    assert!(forbidden(&plan(
        s,
        "GET",
        "/Observation?_include=Observation:performer:Practitioner"
    )));
    assert!(forbidden(&plan(
        s,
        "GET",
        "/Observation?_include=Observation:subject"
    )));
    assert!(forbidden(&plan(
        s,
        "GET",
        "/Patient?_revinclude=Encounter:subject"
    )));
    assert!(plan(s, "GET", "/Patient?_revinclude=Observation:subject").is_ok());
    // Names in any case: a case-insensitive server reads `_INCLUDE` as `_include`.
    for query in [
        "/Observation?_INCLUDE=Observation:performer:Practitioner",
        "/Observation?_Include:iterate=Observation:performer:Practitioner",
        "/Patient?_REVINCLUDE=Encounter:subject",
        "/Patient?_HAS:Condition:patient:code=x",
        "/Patient?_has:Observation:patient:_HAS:Condition:subject:code=x",
    ] {
        assert!(
            forbidden(&plan("user/Observation.rs user/Patient.rs", "GET", query)),
            "{query}"
        );
    }
    assert!(forbidden(&plan(
        s,
        "GET",
        "/Observation?encounter:Encounter.status=x"
    )));
    assert!(forbidden(&plan(
        s,
        "GET",
        "/Patient?_has:Condition:patient:code=x"
    )));
    // `*` scopes reach any type.
    assert!(plan(
        "system/*.read",
        "GET",
        "/Observation?_include=Observation:subject"
    )
    .is_ok());
}

#[test]
fn v2_constraints_are_anded_into_searches() {
    let s = "system/Observation.rs?category=laboratory";
    // Searched with the constraint ANDed, and the answer filtered: only the searched type's
    // matches are proven (issue 20).
    let proven = ResourceType::parse("Observation");
    assert_eq!(
        plan(s, "GET", "/Observation?code=x"),
        Ok(Confinement::Search {
            query: Some("code=x&category=laboratory".to_owned()),
            proven,
        })
    );
    assert_eq!(
        plan(s, "GET", "/Observation?category=laboratory"),
        Ok(Confinement::Search {
            query: None,
            proven
        })
    );
    assert!(matches!(
        plan(
            s,
            "GET",
            "/Observation?_include=Observation:subject:Patient"
        ),
        Err(Denial::Invalid(_))
    ));
    // A read by id cannot be checked against constraints.
    let (read, _) = request("GET", "/Observation/1");
    let constrained = grant("system/Observation.rs?category=laboratory");
    assert!(matches!(
        confine(&read, None, DataActions::ALL, &constrained),
        Err(Denial::Forbidden(_))
    ));
    // An unconstrained scope on the type lifts the constraint.
    assert_eq!(
        plan(&format!("{s} system/Observation.rs"), "GET", "/Observation"),
        Ok(Confinement::Forward)
    );
}

#[test]
fn type_less_searches_are_narrowed_to_scope_types() {
    let s = "system/Observation.rs system/Patient.rs";
    assert_eq!(
        plan(s, "GET", "/"),
        Ok(Confinement::Rewrite {
            query: "_type=Observation,Patient".to_owned()
        })
    );
    assert_eq!(plan(s, "GET", "/?_type=Patient"), Ok(Confinement::Forward));
    assert!(forbidden(&plan(s, "GET", "/?_type=Patient,Encounter")));
    assert_eq!(plan("system/*.read", "GET", "/"), Ok(Confinement::Forward));
    // Answers of any type are filtered to the scope types.
    let filtered = Ok(Confinement::Search {
        query: None,
        proven: None,
    });
    assert_eq!(plan(s, "GET", "/_history"), filtered);
    assert_eq!(plan("user/*.read", "GET", "/Patient/1/*"), filtered);
    assert_eq!(
        plan("user/*.read", "GET", "/Patient/1/$everything"),
        filtered
    );
}

#[test]
fn fhir_user_claims() {
    let base = url::Url::parse("https://fhir.example.org").unwrap();
    let ok = |claim: &str| FhirUser::parse(claim, Some(&base));
    assert_eq!(
        ok(USER),
        Ok(FhirUser {
            owner: OwnerType::Patient,
            id: "123".to_owned(),
            base: Some("https://fhir.example.org".to_owned()),
        })
    );
    assert!(ok("Practitioner/7").is_ok());
    assert!(matches!(
        ok("https://other.example/Patient/123"),
        Err(SmartError::FhirUserBase(..))
    ));
    assert!(matches!(
        ok("https://fhir.example.org/RelatedPerson/1"),
        Err(SmartError::FhirUserType(_))
    ));
    assert!(matches!(ok("Patient/"), Err(SmartError::FhirUserShape(_))));
    assert_eq!(
        SmartGrant::new(&["patient/*.read".to_owned()], None, None),
        Err(SmartError::MissingFhirUser)
    );
    // system/ needs no fhirUser; a bad one is then ignored.
    assert!(SmartGrant::new(&["system/*.read".to_owned()], Some("alice"), None).is_ok());
    assert!(matches!(
        SmartGrant::new(&["patient/*.read user/*.read".to_owned()], Some(USER), None),
        Err(SmartError::Scope(_))
    ));
}

#[test]
fn compartment_membership() {
    let base = url::Url::parse("https://fhir.example.org").unwrap();
    let user = FhirUser::parse(USER, Some(&base)).unwrap();
    let table = [
        (json!({"resourceType": "Patient", "id": "123"}), true),
        (json!({"resourceType": "Patient", "id": "456"}), false),
        (
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/123"}}),
            true,
        ),
        (
            json!({"resourceType": "Observation", "subject": {"reference": "https://fhir.example.org/Patient/123/_history/1"}}),
            true,
        ),
        // Another server's Patient/123 is not this patient.
        (
            json!({"resourceType": "Observation", "subject": {"reference": "https://x/Patient/123/_history/1"}}),
            false,
        ),
        (
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/1234"}}),
            false,
        ),
        (
            json!({"resourceType": "Observation", "focus": [{"reference": "Patient/123"}]}),
            false,
        ),
        (
            json!({"resourceType": "Encounter", "subject": {"reference": "Patient/123"}}),
            true,
        ),
        (
            json!({"resourceType": "Appointment", "participant": [{"actor": {"reference": "Patient/123"}}]}),
            true,
        ),
        (
            json!({"resourceType": "Coverage", "policyHolder": {"reference": "Patient/123"}}),
            true,
        ),
        (
            json!({"resourceType": "Task", "for": {"reference": "Patient/123"}}),
            false,
        ),
        (json!({"resourceType": "Bundle"}), false),
    ];
    for (resource, member) in table {
        assert_eq!(
            membership::is_member(&resource, &user),
            member,
            "{resource}"
        );
    }
    let mut bundle = json!({"resourceType": "Bundle", "total": 3, "entry": [
        {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/123"}}},
        {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/456"}}},
        {"resource": {"resourceType": "Location", "id": "l"}},
        {"request": {"method": "DELETE"}},
    ]});
    let grant = grant("patient/*.read");
    let removed =
        membership::filter_bundle(&mut bundle, |r| visible(&grant, DataActions::ALL, r, None));
    assert_eq!(removed, 2);
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 2);
    assert!(bundle.get("total").is_none());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    const SCOPES: [&str; 6] = [
        "patient/*.read",
        "patient/Observation.rs patient/Patient.r",
        "user/*.cruds",
        "system/Observation.rs?category=laboratory",
        "system/*.read",
        "patient/Observation.crs?code=x",
    ];
    const PATHS: [&str; 8] = [
        "/Observation",
        "/Patient/123/Observation",
        "/",
        "/Patient",
        "/Observation/1",
        "/Patient/123/$everything",
        "/_history",
        "/$export",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any query on any route under any grant: a plan or a denial, never a panic; and a
        /// rewritten query keeps the client's parameters as a prefix (it only ever adds).
        #[test]
        fn confinement_never_panics_and_only_adds(
            scopes in 0..SCOPES.len(),
            path in 0..PATHS.len(),
            query in "[a-z_:.&=,/A-Z0-9%*-]{0,40}",
        ) {
            let grant = SmartGrant::new(&[SCOPES[scopes].to_owned()], Some(USER), None).unwrap();
            let query = (!query.is_empty()).then_some(query);
            let Ok(request) = classify(&Method::GET, PATHS[path], query.as_deref(), &HeaderMap::new())
            else {
                return Ok(());
            };
            let decision = authorize(&request, query.as_deref(), DataActions::ALL, &grant, Reasons::Always);
            if decision.allowed {
                match confine(&request, query.as_deref(), DataActions::ALL, &grant) {
                    Ok(Confinement::Rewrite { query: rewritten })
                    | Ok(Confinement::Search { query: Some(rewritten), .. }) => {
                        prop_assert!(rewritten.starts_with(query.as_deref().unwrap_or_default()));
                    }
                    Ok(_) | Err(_) => {}
                }
            }
        }

        #[test]
        fn membership_never_panics(text in ".{0,200}") {
            let user = FhirUser::parse(USER, None).unwrap();
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                let _ = membership::is_member(&value, &user);
            }
            let _ = FhirUser::parse(&text, None);
        }
    }
}
