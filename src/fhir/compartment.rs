//! FHIR R4 compartments as data: which resource types belong to a Patient's (or a
//! Practitioner's) compartment and through which search parameters, and which types are shared
//! reference data outside every compartment. The authorizer uses these tables to confine
//! `patient/` and `user/` SMART contexts to the `fhirUser`'s compartment (reference §4.5, §4.7,
//! §8 rules 18–20). Pure data, no I/O.
//!
//! Source: the R4 (4.0.1) CompartmentDefinitions `patient` and `practitioner`
//! (hl7.org/fhir/R4/compartmentdefinition-patient.html, …-practitioner.html), as shipped by the
//! open-source FHIR server in `compartment.json`. Each row lists the reference search parameters
//! that put a resource of that type in the compartment: the resource is a member when any of
//! them refers to the compartment's owner. Types the definitions list without parameters are
//! never members and are left out.
//!
//! The owner itself (`Patient/<id>`, `Practitioner/<id>`; `{def}` in the definitions) is a member
//! by identity; its row lists only the other parameters (`link` for Patient; Practitioner has no
//! row of its own in the practitioner table).
//!
//! Where each parameter points inside a resource (the element whose own `reference` decides
//! membership) is in `paths`.

use std::sync::LazyLock;

use crate::fhir::resource_types::NameSet;

mod paths;

/// Rows of the R4 Patient CompartmentDefinition, sorted by type.
const PATIENT: &[(&str, &[&str])] = &[
    ("Account", &["subject"]),
    ("AdverseEvent", &["subject"]),
    ("AllergyIntolerance", &["patient", "recorder", "asserter"]),
    ("Appointment", &["actor"]),
    ("AppointmentResponse", &["actor"]),
    ("AuditEvent", &["patient"]),
    ("Basic", &["patient", "author"]),
    ("BodyStructure", &["patient"]),
    ("CarePlan", &["patient", "performer"]),
    ("CareTeam", &["patient", "participant"]),
    ("ChargeItem", &["subject"]),
    ("Claim", &["patient", "payee"]),
    ("ClaimResponse", &["patient"]),
    ("ClinicalImpression", &["subject"]),
    ("Communication", &["subject", "sender", "recipient"]),
    (
        "CommunicationRequest",
        &["subject", "sender", "recipient", "requester"],
    ),
    ("Composition", &["subject", "author", "attester"]),
    ("Condition", &["patient", "asserter"]),
    ("Consent", &["patient"]),
    (
        "Coverage",
        &["policy-holder", "subscriber", "beneficiary", "payor"],
    ),
    ("CoverageEligibilityRequest", &["patient"]),
    ("CoverageEligibilityResponse", &["patient"]),
    ("DetectedIssue", &["patient"]),
    ("DeviceRequest", &["subject", "performer"]),
    ("DeviceUseStatement", &["subject"]),
    ("DiagnosticReport", &["subject"]),
    ("DocumentManifest", &["subject", "author", "recipient"]),
    ("DocumentReference", &["subject", "author"]),
    ("Encounter", &["patient"]),
    ("EnrollmentRequest", &["subject"]),
    ("EpisodeOfCare", &["patient"]),
    ("ExplanationOfBenefit", &["patient", "payee"]),
    ("FamilyMemberHistory", &["patient"]),
    ("Flag", &["patient"]),
    ("Goal", &["patient"]),
    ("Group", &["member"]),
    ("ImagingStudy", &["patient"]),
    ("Immunization", &["patient"]),
    ("ImmunizationEvaluation", &["patient"]),
    ("ImmunizationRecommendation", &["patient"]),
    ("Invoice", &["subject", "patient", "recipient"]),
    ("List", &["subject", "source"]),
    ("MeasureReport", &["patient"]),
    ("Media", &["subject"]),
    (
        "MedicationAdministration",
        &["patient", "performer", "subject"],
    ),
    ("MedicationDispense", &["subject", "patient", "receiver"]),
    ("MedicationRequest", &["subject"]),
    ("MedicationStatement", &["subject"]),
    ("MolecularSequence", &["patient"]),
    ("NutritionOrder", &["patient"]),
    ("Observation", &["subject", "performer"]),
    ("Patient", &["link"]),
    ("Person", &["patient"]),
    ("Procedure", &["patient", "performer"]),
    ("Provenance", &["patient"]),
    ("QuestionnaireResponse", &["subject", "author"]),
    ("RelatedPerson", &["patient"]),
    ("RequestGroup", &["subject", "participant"]),
    ("ResearchSubject", &["individual"]),
    ("RiskAssessment", &["subject"]),
    ("Schedule", &["actor"]),
    ("ServiceRequest", &["subject", "performer"]),
    ("Specimen", &["subject"]),
    ("SupplyDelivery", &["patient"]),
    ("SupplyRequest", &["subject"]),
    ("VisionPrescription", &["patient"]),
];

/// Rows of the R4 Practitioner CompartmentDefinition, sorted by type.
const PRACTITIONER: &[(&str, &[&str])] = &[
    ("Account", &["subject"]),
    ("AdverseEvent", &["recorder"]),
    ("AllergyIntolerance", &["recorder", "asserter"]),
    ("Appointment", &["actor"]),
    ("AppointmentResponse", &["actor"]),
    ("AuditEvent", &["agent"]),
    ("Basic", &["author"]),
    ("CarePlan", &["performer"]),
    ("CareTeam", &["participant"]),
    ("ChargeItem", &["enterer", "performer-actor"]),
    ("Claim", &["enterer", "provider", "payee", "care-team"]),
    ("ClaimResponse", &["requestor"]),
    ("ClinicalImpression", &["assessor"]),
    ("Communication", &["sender", "recipient"]),
    (
        "CommunicationRequest",
        &["sender", "recipient", "requester"],
    ),
    ("Composition", &["subject", "author", "attester"]),
    ("Condition", &["asserter"]),
    ("CoverageEligibilityRequest", &["enterer", "provider"]),
    ("CoverageEligibilityResponse", &["requestor"]),
    ("DetectedIssue", &["author"]),
    ("DeviceRequest", &["requester", "performer"]),
    ("DiagnosticReport", &["performer"]),
    ("DocumentManifest", &["subject", "author", "recipient"]),
    ("DocumentReference", &["subject", "author", "authenticator"]),
    ("Encounter", &["practitioner", "participant"]),
    ("EpisodeOfCare", &["care-manager"]),
    (
        "ExplanationOfBenefit",
        &["enterer", "provider", "payee", "care-team"],
    ),
    ("Flag", &["author"]),
    ("Group", &["member"]),
    ("Immunization", &["performer"]),
    ("Invoice", &["participant"]),
    ("Linkage", &["author"]),
    ("List", &["source"]),
    ("Media", &["subject", "operator"]),
    ("MedicationAdministration", &["performer"]),
    ("MedicationDispense", &["performer", "receiver"]),
    ("MedicationRequest", &["requester"]),
    ("MedicationStatement", &["source"]),
    (
        "MessageHeader",
        &["receiver", "author", "responsible", "enterer"],
    ),
    ("NutritionOrder", &["provider"]),
    ("Observation", &["performer"]),
    ("Patient", &["general-practitioner"]),
    ("PaymentNotice", &["provider"]),
    ("PaymentReconciliation", &["requestor"]),
    ("Person", &["practitioner"]),
    ("PractitionerRole", &["practitioner"]),
    ("Procedure", &["performer"]),
    ("Provenance", &["agent"]),
    ("QuestionnaireResponse", &["author", "source"]),
    ("RequestGroup", &["participant", "author"]),
    ("ResearchStudy", &["principalinvestigator"]),
    ("RiskAssessment", &["performer"]),
    ("Schedule", &["actor"]),
    ("ServiceRequest", &["performer", "requester"]),
    ("Specimen", &["collector"]),
    ("SupplyDelivery", &["supplier", "receiver"]),
    ("SupplyRequest", &["requester"]),
    ("VisionPrescription", &["prescriber"]),
];

/// Types readable under a compartment-confined context without a compartment check, subject
/// to the scopes like any other type. Sorted.
///
/// - The reference server's "universal" types: Location, Organization, Practitioner,
///   Medication, Device (reference §4.5, `SmartCompartmentSearchRewriter`).
/// - Directory data that describes who provides care, not who receives it: PractitionerRole,
///   HealthcareService, Endpoint, OrganizationAffiliation, InsurancePlan, Slot (a patient app
///   books appointments against slots; Schedule is a compartment type and stays confined).
/// - Definitional resources, which never carry a patient: conformance and terminology
///   (CapabilityStatement, StructureDefinition, ValueSet, CodeSystem, …), knowledge artifacts
///   (PlanDefinition, Questionnaire, Library, Measure, …) and product definitions
///   (MedicationKnowledge, MedicinalProduct*, Substance*, DeviceDefinition, …).
///
/// Deliberately absent, so denied under a patient or practitioner context: non-member types
/// that may hold patient data without a compartment link (Binary, Bundle, Task, Contract,
/// Linkage, MessageHeader, Subscription, GuidanceResponse, BiologicallyDerivedProduct,
/// ResearchStudy, VerificationResult, …).
const SHARED: &[&str] = &[
    "ActivityDefinition",
    "CapabilityStatement",
    "CatalogEntry",
    "ChargeItemDefinition",
    "CodeSystem",
    "CompartmentDefinition",
    "ConceptMap",
    "Device",
    "DeviceDefinition",
    "EffectEvidenceSynthesis",
    "Endpoint",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "GraphDefinition",
    "HealthcareService",
    "ImplementationGuide",
    "InsurancePlan",
    "Library",
    "Location",
    "Measure",
    "Medication",
    "MedicationKnowledge",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "NamingSystem",
    "ObservationDefinition",
    "OperationDefinition",
    "Organization",
    "OrganizationAffiliation",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Questionnaire",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "RiskEvidenceSynthesis",
    "SearchParameter",
    "Slot",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "TerminologyCapabilities",
    "ValueSet",
];

/// The search parameters linking `resource_type` to a patient (R4 Patient
/// CompartmentDefinition); `None` when the type is never in a patient compartment.
/// `Patient` gives `["link"]`: the patient's own resource is a member by identity.
pub fn patient_compartment_params(resource_type: &str) -> Option<&'static [&'static str]> {
    lookup(PATIENT, resource_type)
}

/// The search parameters linking `resource_type` to a practitioner (R4 Practitioner
/// CompartmentDefinition); `None` when the type is never in a practitioner compartment. The
/// practitioner's own resource is a member by identity.
pub fn practitioner_compartment_params(resource_type: &str) -> Option<&'static [&'static str]> {
    lookup(PRACTITIONER, resource_type)
}

/// Every type that can be in a patient compartment, in alphabetical order.
pub fn patient_compartment_types() -> impl Iterator<Item = &'static str> {
    PATIENT.iter().map(|(name, _)| *name)
}

/// Every type that can be in a practitioner compartment, in alphabetical order.
pub fn practitioner_compartment_types() -> impl Iterator<Item = &'static str> {
    PRACTITIONER.iter().map(|(name, _)| *name)
}

/// True for shared reference types, readable per the scopes without a compartment check
/// (reference §4.5 universal types, extended as documented on the table).
pub fn is_shared_type(resource_type: &str) -> bool {
    static SET: LazyLock<NameSet> = LazyLock::new(|| NameSet::new(SHARED));
    SET.contains(resource_type)
}

/// The element paths of the Patient compartment's parameters for `resource_type`:
/// `(parameter, path)`, the path dot-separated and ending at a `Reference`
/// (`participant.actor`). `None` when the type is never in a patient compartment.
pub fn patient_compartment_paths(
    resource_type: &str,
) -> Option<&'static [(&'static str, &'static str)]> {
    lookup(paths::PATIENT, resource_type)
}

/// The element paths of the Practitioner compartment's parameters, as
/// [`patient_compartment_paths`].
pub fn practitioner_compartment_paths(
    resource_type: &str,
) -> Option<&'static [(&'static str, &'static str)]> {
    lookup(paths::PRACTITIONER, resource_type)
}

fn lookup<T>(
    table: &'static [(&'static str, &'static [T])],
    resource_type: &str,
) -> Option<&'static [T]> {
    table
        .binary_search_by(|(name, _)| (*name).cmp(resource_type))
        .ok()
        .map(|index| table[index].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::resource_types::is_resource_type;

    fn names<T>(table: &[(&'static str, T)]) -> Vec<&'static str> {
        table.iter().map(|(name, _)| *name).collect()
    }

    #[test]
    fn tables_are_sorted_unique_r4_types() {
        for list in [names(PATIENT), names(PRACTITIONER), SHARED.to_vec()] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
            for name in list {
                assert!(is_resource_type(name), "{name}");
            }
        }
        for (name, params) in PATIENT.iter().chain(PRACTITIONER) {
            assert!(!params.is_empty(), "{name}");
        }
    }

    /// Every compartment parameter has a path, and every path belongs to a listed parameter:
    /// the path tables are the CompartmentDefinitions' rows, element by element.
    #[test]
    fn paths_cover_exactly_the_compartment_parameters() {
        for (params, paths) in [
            (PATIENT, paths::PATIENT),
            (PRACTITIONER, paths::PRACTITIONER),
        ] {
            assert_eq!(names(params), names(paths));
            for ((name, params), (_, paths)) in params.iter().zip(paths) {
                let mut from_paths: Vec<&str> = paths.iter().map(|(param, _)| *param).collect();
                from_paths.sort_unstable();
                from_paths.dedup();
                let mut listed = params.to_vec();
                listed.sort_unstable();
                assert_eq!(listed, from_paths, "{name}");
                for (_, path) in *paths {
                    assert!(
                        path.split('.').all(|step| !step.is_empty()
                            && step.bytes().all(|b| b.is_ascii_alphabetic())
                            && step.as_bytes()[0].is_ascii_lowercase()),
                        "{name}: {path}"
                    );
                }
            }
        }
        assert_eq!(
            patient_compartment_paths("Appointment"),
            Some(&[("actor", "participant.actor")][..])
        );
        assert_eq!(
            patient_compartment_paths("Encounter"),
            Some(&[("patient", "subject")][..])
        );
    }

    #[test]
    fn shared_types_are_never_compartment_members() {
        for name in SHARED {
            assert_eq!(patient_compartment_params(name), None, "{name}");
        }
        // Practitioner-compartment members that are also shared reference data.
        let shared_in_practitioner: Vec<&str> = practitioner_compartment_types()
            .filter(|name| is_shared_type(name))
            .collect();
        assert_eq!(shared_in_practitioner, ["PractitionerRole"]);
    }

    #[test]
    fn patient_compartment_rows() {
        let table: &[(&str, Option<&[&str]>)] = &[
            ("Observation", Some(&["subject", "performer"])),
            ("Encounter", Some(&["patient"])),
            ("Condition", Some(&["patient", "asserter"])),
            (
                "AllergyIntolerance",
                Some(&["patient", "recorder", "asserter"]),
            ),
            ("MedicationRequest", Some(&["subject"])),
            ("Patient", Some(&["link"])),
            ("ResearchSubject", Some(&["individual"])),
            (
                "Coverage",
                Some(&["policy-holder", "subscriber", "beneficiary", "payor"]),
            ),
            ("Practitioner", None),
            ("Task", None),
            ("Binary", None),
            ("observation", None),
            ("", None),
        ];
        for (name, expected) in table {
            assert_eq!(patient_compartment_params(name), *expected, "{name}");
        }
        assert_eq!(patient_compartment_types().count(), 66);
    }

    #[test]
    fn practitioner_compartment_rows() {
        assert_eq!(
            practitioner_compartment_params("Encounter"),
            Some(&["practitioner", "participant"][..])
        );
        assert_eq!(
            practitioner_compartment_params("Patient"),
            Some(&["general-practitioner"][..])
        );
        assert_eq!(
            practitioner_compartment_params("Observation"),
            Some(&["performer"][..])
        );
        assert_eq!(practitioner_compartment_params("Practitioner"), None);
        assert_eq!(practitioner_compartment_types().count(), 58);
    }

    #[test]
    fn shared_types() {
        for name in [
            "Location",
            "Organization",
            "Practitioner",
            "Medication",
            "Device",
        ] {
            assert!(is_shared_type(name), "{name}");
        }
        for name in [
            "Patient",
            "Observation",
            "Binary",
            "Task",
            "Bundle",
            "location",
        ] {
            assert!(!is_shared_type(name), "{name}");
        }
    }
}
