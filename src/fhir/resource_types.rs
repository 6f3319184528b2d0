//! The FHIR R4 (4.0.1) resource types, as data: the names a request path, a SMART scope or a
//! bundle entry may use (hl7.org/fhir/R4/resourcelist.html). Anything else is not a resource type
//! and is answered 404 before it reaches the upstream. Pure data, no I/O.

use std::sync::LazyLock;

/// Every concrete R4 resource type (146, including `Binary`, `Bundle` and `Parameters`), sorted (byte order) for binary search. The abstract
/// `Resource` and `DomainResource` are not in the list: they cannot be requested.
pub const RESOURCE_TYPES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
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
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// An R4 resource type, held as its place in the R4 list: one byte, so that the plans that
/// carry one stay small (every request's plan is moved through the pipeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResourceType(u8);

impl ResourceType {
    /// The R4 type named exactly `name` (case-sensitive).
    pub fn parse(name: &str) -> Option<ResourceType> {
        static TYPES: LazyLock<NameSet> = LazyLock::new(|| NameSet::new(&RESOURCE_TYPES));
        let index = TYPES.index_of(name)?;
        u8::try_from(index).ok().map(ResourceType)
    }

    /// The type's R4 name (`Observation`).
    pub fn name(self) -> &'static str {
        RESOURCE_TYPES[usize::from(self.0)]
    }
}

/// True for an R4 resource type name. Case-sensitive, as FHIR type names are.
pub fn is_resource_type(name: &str) -> bool {
    ResourceType::parse(name).is_some()
}

/// A fixed list of names, looked up by an FNV-1a hash of the name into an open-addressing
/// table four times the list's size: a few instructions a byte and, nearly always, one string
/// comparison. A binary search makes about eight, and every request asks for one or two of its
/// type names (the path's, and under SMART whether it is a shared type).
#[derive(Debug)]
pub struct NameSet {
    /// `(index in the list, name)` by hash, linear probing; `None`: free.
    slots: Box<[Option<(usize, &'static str)>]>,
}

impl NameSet {
    /// The set of `names` (distinct).
    pub fn new(names: &[&'static str]) -> NameSet {
        let size = (names.len() * 4).next_power_of_two();
        let mut slots = vec![None; size].into_boxed_slice();
        for (index, &name) in names.iter().enumerate() {
            let mut at = fnv1a(name) & (size - 1);
            while slots[at].is_some() {
                at = (at + 1) & (size - 1);
            }
            slots[at] = Some((index, name));
        }
        NameSet { slots }
    }

    /// The position of `name` in the list, if it is in it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut at = fnv1a(name) & mask;
        loop {
            match self.slots[at] {
                None => return None,
                Some((index, held)) if held == name => return Some(index),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    /// Whether `name` is in the list.
    pub fn contains(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }
}

/// FNV-1a (64-bit) of `text`'s bytes, as an index.
fn fnv1a(text: &str) -> usize {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // The low bits index the table; folding the high ones in spreads names that differ late.
    (hash ^ (hash >> 32)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashed set answers as the sorted list's binary search does, for every name and for
    /// near misses.
    #[test]
    fn the_name_set_answers_as_the_list() {
        let set = NameSet::new(&RESOURCE_TYPES);
        for (index, name) in RESOURCE_TYPES.iter().enumerate() {
            assert_eq!(set.index_of(name), Some(index), "{name}");
            for near in [
                name.to_lowercase(),
                name.to_uppercase(),
                format!("{name}s"),
                name[..name.len() - 1].to_owned(),
                format!(" {name}"),
            ] {
                assert_eq!(
                    set.contains(&near),
                    RESOURCE_TYPES.binary_search(&near.as_str()).is_ok(),
                    "{near}"
                );
            }
        }
        for other in [
            "",
            "Resource",
            "DomainResource",
            "metadata",
            "_history",
            "$everything",
        ] {
            assert!(!is_resource_type(other), "{other}");
        }
    }

    #[test]
    fn every_type_fits_a_resource_type() {
        for name in RESOURCE_TYPES {
            assert_eq!(
                ResourceType::parse(name).map(ResourceType::name),
                Some(name)
            );
        }
        assert_eq!(ResourceType::parse("observation"), None);
    }

    #[test]
    fn sorted_and_unique() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn lookup() {
        for name in [
            "Account",
            "Patient",
            "VisionPrescription",
            "Bundle",
            "Parameters",
        ] {
            assert!(is_resource_type(name), "{name}");
        }
        for name in [
            "",
            "patient",
            "Resource",
            "DomainResource",
            "metadata",
            "_history",
            "*",
        ] {
            assert!(!is_resource_type(name), "{name}");
        }
    }
}
