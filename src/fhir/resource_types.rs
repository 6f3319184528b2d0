//! The FHIR R4 (4.0.1) resource types, as data: the names a request path, a SMART scope or a
//! bundle entry may use (hl7.org/fhir/R4/resourcelist.html). Anything else is not a resource type
//! and is answered 404 before it reaches the upstream. Pure data, no I/O.

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
        let index = RESOURCE_TYPES.binary_search(&name).ok()?;
        u8::try_from(index).ok().map(ResourceType)
    }

    /// The type's R4 name (`Observation`).
    pub fn name(self) -> &'static str {
        RESOURCE_TYPES[usize::from(self.0)]
    }
}

/// True for an R4 resource type name. Case-sensitive, as FHIR type names are.
pub fn is_resource_type(name: &str) -> bool {
    RESOURCE_TYPES.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
