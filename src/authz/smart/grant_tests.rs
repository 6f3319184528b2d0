//! The rule "grants cover the v2 letters" of docs/smart.md, as a grant × scope → allowed
//! interactions table (issue 10 part 1), one test per row:
//! the application's `allowedDataActions` (or roles), widened as [`DataActions::implied`] does
//! in `granted_actions`, ∩ the scope actions for the type, against the reference §3.2
//! requirement of each interaction. Then the `SmartGrant` rules for `fhirUser` per context and
//! the launch-context patient.

use http::{HeaderMap, Method};

use super::*;
use crate::actions::DataAction::{self, Delete, Export, Read, ReadById, Write};
use crate::fhir::classify;

const USER: &str = "Practitioner/7";

/// The interactions a row names, as `(name, method, target)`.
const INTERACTIONS: &[(&str, &str, &str)] = &[
    ("read", "GET", "/Observation/1"),
    ("search", "GET", "/Observation?code=x"),
    ("post-search", "POST", "/Observation/_search"),
    ("create", "POST", "/Observation"),
    ("update", "PUT", "/Observation/1"),
    ("patch", "PATCH", "/Observation/1"),
    ("delete", "DELETE", "/Observation/1"),
    ("hard-delete", "DELETE", "/Observation/1?hardDelete=true"),
    ("read-patient", "GET", "/Patient/1"),
    ("export", "GET", "/$export"),
];

/// The verdict for one interaction under `granted` (as configured) and `scopes`.
fn allowed(granted: &[DataAction], scopes: &str, interaction: &str) -> bool {
    let (_, method, target) = INTERACTIONS
        .iter()
        .find(|(name, ..)| *name == interaction)
        .unwrap_or_else(|| panic!("unknown interaction {interaction}"));
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (*target, None),
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let request = classify(&method, path, query, &HeaderMap::new()).unwrap();
    let grant = SmartGrant::new(&[scopes.to_owned()], Some(USER), None).expect("valid grant");
    let granted = DataActions::of(granted).implied();
    authorize(&request, query, granted, &grant, Reasons::Always).allowed
}

/// A table row: under `granted` and `scopes`, exactly the `allowed` interactions of those named
/// pass, and the `refused` ones do not.
fn row(granted: &[DataAction], scopes: &str, allow: &[&str], refuse: &[&str]) {
    for interaction in allow {
        assert!(
            allowed(granted, scopes, interaction),
            "{granted:?} × {scopes}: {interaction} must be allowed"
        );
    }
    for interaction in refuse {
        assert!(
            !allowed(granted, scopes, interaction),
            "{granted:?} × {scopes}: {interaction} must be refused"
        );
    }
}

#[test]
fn read_with_v2_rs_reads_and_searches() {
    row(
        &[Read],
        "patient/Observation.rs",
        &["read", "search", "post-search"],
        &["create", "update", "delete", "read-patient"],
    );
}

#[test]
fn read_with_v2_r_reads_but_cannot_search() {
    row(
        &[Read],
        "patient/Observation.r",
        &["read"],
        &["search", "post-search"],
    );
}

#[test]
fn read_with_v2_s_searches_but_cannot_read() {
    row(&[Read], "patient/Observation.s", &["search"], &["read"]);
}

#[test]
fn read_with_v1_read_reads_and_searches() {
    row(
        &[Read],
        "patient/Observation.read",
        &["read", "search"],
        &["create"],
    );
}

#[test]
fn read_with_v2_cruds_only_reads_and_searches() {
    row(
        &[Read],
        "user/Observation.cruds",
        &["read", "search"],
        &["create", "update", "patch", "delete"],
    );
}

#[test]
fn read_write_with_v2_cruds_creates_and_updates_but_does_not_delete() {
    row(
        &[Read, Write],
        "user/Observation.cruds",
        &["read", "search", "create", "update", "patch"],
        &["delete", "hard-delete"],
    );
}

#[test]
fn read_write_delete_with_v2_cruds_deletes_but_never_hard_deletes() {
    row(
        &[Read, Write, Delete],
        "user/Observation.cruds",
        &["read", "search", "create", "update", "patch", "delete"],
        &["hard-delete"],
    );
}

#[test]
fn write_with_v2_cu_creates_and_updates_but_does_not_read() {
    row(
        &[Write],
        "user/Observation.cu",
        &["create", "update", "patch"],
        &["read", "search", "delete"],
    );
}

#[test]
fn read_write_with_v1_write_writes_but_does_not_delete() {
    row(
        &[Read, Write],
        "user/Observation.write",
        &["create", "update", "patch"],
        &["read", "search", "delete"],
    );
}

#[test]
fn read_with_system_rs_reads_every_type_but_cannot_export() {
    row(
        &[Read],
        "system/*.rs",
        &["read", "search", "read-patient"],
        &["export", "create"],
    );
}

#[test]
fn read_export_with_system_rs_exports() {
    row(
        &[Read, Export],
        "system/*.rs",
        &["export", "read", "search"],
        &["create"],
    );
}

#[test]
fn an_explicit_v2_grant_is_not_widened() {
    row(
        &[ReadById],
        "patient/Observation.rs",
        &["read"],
        &["search"],
    );
}

#[test]
fn fhir_user_is_required_for_patient_and_user_contexts_only() {
    let grant =
        |scopes: &str, user: Option<&str>| SmartGrant::new(&[scopes.to_owned()], user, None);
    for scopes in ["patient/*.read", "user/Observation.rs"] {
        assert_eq!(
            grant(scopes, None),
            Err(SmartError::MissingFhirUser),
            "{scopes}"
        );
        assert!(grant(scopes, Some("Practitioner/fhir-system-client")).is_ok());
        assert!(grant(scopes, Some("https://fhir.example.org/Patient/1")).is_ok());
        assert!(matches!(
            grant(scopes, Some("RelatedPerson/1")),
            Err(SmartError::FhirUserType(_))
        ));
    }
    // SMART Backend Services: no user, and a fhirUser carried anyway is not used.
    for user in [None, Some("Practitioner/7"), Some("Device/x")] {
        let system = grant("system/*.rs", user).expect("system/ needs no fhirUser");
        assert_eq!(system.user, None);
        assert_eq!(system.compartment(), None);
    }
    assert_eq!(grant("openid", None).map(|g| g.user), Ok(None));
}

#[test]
fn fhir_user_may_be_relative_and_an_absolute_one_is_checked_against_the_base() {
    let base = url::Url::parse("https://fhir.example.org/r4").unwrap();
    let parse = |claim: &str| FhirUser::parse(claim, Some(&base));
    let practitioner = FhirUser {
        owner: OwnerType::Practitioner,
        id: "fhir-system-client".to_owned(),
        base: Some("https://fhir.example.org/r4".to_owned()),
    };
    assert_eq!(parse("Practitioner/fhir-system-client"), Ok(practitioner));
    assert!(parse("https://fhir.example.org/r4/Patient/1").is_ok());
    assert!(matches!(
        parse("https://other.example/Patient/1"),
        Err(SmartError::FhirUserBase(..))
    ));
    assert!(matches!(
        parse("https://fhir.example.org/Patient/1"),
        Err(SmartError::FhirUserBase(..))
    ));
    for shape in [
        "x/Patient/1",
        "//evil.example/Patient/1",
        "https://Patient/1",
        "ftp://fhir.example.org/r4/Patient/1",
        "https://fhir.example.org/r4/Patient/1?x=1",
        "Patient/1/_history/2",
        "Patient",
        "",
    ] {
        assert!(
            matches!(parse(shape), Err(SmartError::FhirUserShape(_))),
            "{shape}: {:?}",
            parse(shape)
        );
    }
    // Without publicBaseUrl any absolute base is accepted, as the open-source server does.
    assert!(FhirUser::parse("https://other.example/Patient/1", None).is_ok());
    let message = SmartError::FhirUserShape("x".into()).to_string();
    assert!(message.contains("relative (Practitioner/7)"), "{message}");
}

#[test]
fn the_launch_patient_confines_patient_scopes_only() {
    let grant = |scopes: &str, patient: Option<&str>| {
        SmartGrant::new(&[scopes.to_owned()], Some(USER), None)
            .and_then(|g| g.with_launch_patient(patient, None))
    };
    let patient = |id: &str| FhirUser {
        owner: OwnerType::Patient,
        id: id.to_owned(),
        base: None,
    };
    // An EHR launch: the Practitioner opens patient 456's record.
    let launched = grant("patient/Observation.rs", Some("456")).unwrap();
    assert_eq!(launched.compartment(), Some(&patient("456")));
    assert_eq!(
        grant("patient/*.read", Some("Patient/456"))
            .unwrap()
            .compartment(),
        Some(&patient("456"))
    );
    // Without the claim, fhirUser's compartment, as before.
    let practitioner = grant("patient/*.read", None).unwrap();
    assert_eq!(
        practitioner.compartment().map(FhirUser::reference),
        Some(USER.to_owned())
    );
    // user/ and system/ contexts are not confined by it.
    assert_eq!(
        grant("user/*.read", Some("456")).unwrap().compartment(),
        None
    );
    assert_eq!(
        grant("system/*.read", Some("456")).unwrap().compartment(),
        None
    );
    // A value that is not a Patient id is refused.
    for bad in ["", "Practitioner/1", "456/x", "a b", "Patient/"] {
        assert!(
            matches!(
                grant("patient/*.read", Some(bad)),
                Err(SmartError::LaunchPatient(_))
            ),
            "{bad}"
        );
    }
    // fhirUser stays required under patient/, launch patient or not.
    assert_eq!(
        SmartGrant::new(&["patient/*.read".to_owned()], None, None),
        Err(SmartError::MissingFhirUser)
    );
}
