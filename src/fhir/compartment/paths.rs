//! Where each compartment search parameter points inside a resource: the element path of its R4
//! (4.0.1) SearchParameter expression, ending at the `Reference` whose own `reference` decides
//! membership (`Observation.subject`, `Appointment.participant.actor`,
//! `Procedure.performer.actor`). `.where(resolve() is Patient)` filters are dropped: the
//! reference must name the compartment's owner, so its type is checked anyway. A parameter
//! with several expressions (`AuditEvent.patient`) has one row per path. Pure data.
//!
//! Source: the R4 search parameter registry (hl7.org/fhir/R4/searchparameter-registry.html),
//! for the parameters the CompartmentDefinitions in [`super`] list.

/// `(type, [(parameter, path)])` for the R4 Patient CompartmentDefinition, sorted by type.
pub(super) const PATIENT: &[(&str, &[(&str, &str)])] = &[
    ("Account", &[("subject", "subject")]),
    ("AdverseEvent", &[("subject", "subject")]),
    (
        "AllergyIntolerance",
        &[
            ("patient", "patient"),
            ("recorder", "recorder"),
            ("asserter", "asserter"),
        ],
    ),
    ("Appointment", &[("actor", "participant.actor")]),
    ("AppointmentResponse", &[("actor", "actor")]),
    (
        "AuditEvent",
        &[("patient", "agent.who"), ("patient", "entity.what")],
    ),
    ("Basic", &[("patient", "subject"), ("author", "author")]),
    ("BodyStructure", &[("patient", "patient")]),
    (
        "CarePlan",
        &[
            ("patient", "subject"),
            ("performer", "activity.detail.performer"),
        ],
    ),
    (
        "CareTeam",
        &[
            ("patient", "subject"),
            ("participant", "participant.member"),
        ],
    ),
    ("ChargeItem", &[("subject", "subject")]),
    ("Claim", &[("patient", "patient"), ("payee", "payee.party")]),
    ("ClaimResponse", &[("patient", "patient")]),
    ("ClinicalImpression", &[("subject", "subject")]),
    (
        "Communication",
        &[
            ("subject", "subject"),
            ("sender", "sender"),
            ("recipient", "recipient"),
        ],
    ),
    (
        "CommunicationRequest",
        &[
            ("subject", "subject"),
            ("sender", "sender"),
            ("recipient", "recipient"),
            ("requester", "requester"),
        ],
    ),
    (
        "Composition",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("attester", "attester.party"),
        ],
    ),
    (
        "Condition",
        &[("patient", "subject"), ("asserter", "asserter")],
    ),
    ("Consent", &[("patient", "patient")]),
    (
        "Coverage",
        &[
            ("policy-holder", "policyHolder"),
            ("subscriber", "subscriber"),
            ("beneficiary", "beneficiary"),
            ("payor", "payor"),
        ],
    ),
    ("CoverageEligibilityRequest", &[("patient", "patient")]),
    ("CoverageEligibilityResponse", &[("patient", "patient")]),
    ("DetectedIssue", &[("patient", "patient")]),
    (
        "DeviceRequest",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    ("DeviceUseStatement", &[("subject", "subject")]),
    ("DiagnosticReport", &[("subject", "subject")]),
    (
        "DocumentManifest",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("recipient", "recipient"),
        ],
    ),
    (
        "DocumentReference",
        &[("subject", "subject"), ("author", "author")],
    ),
    ("Encounter", &[("patient", "subject")]),
    ("EnrollmentRequest", &[("subject", "candidate")]),
    ("EpisodeOfCare", &[("patient", "patient")]),
    (
        "ExplanationOfBenefit",
        &[("patient", "patient"), ("payee", "payee.party")],
    ),
    ("FamilyMemberHistory", &[("patient", "patient")]),
    ("Flag", &[("patient", "subject")]),
    ("Goal", &[("patient", "subject")]),
    ("Group", &[("member", "member.entity")]),
    ("ImagingStudy", &[("patient", "subject")]),
    ("Immunization", &[("patient", "patient")]),
    ("ImmunizationEvaluation", &[("patient", "patient")]),
    ("ImmunizationRecommendation", &[("patient", "patient")]),
    (
        "Invoice",
        &[
            ("subject", "subject"),
            ("patient", "subject"),
            ("recipient", "recipient"),
        ],
    ),
    ("List", &[("subject", "subject"), ("source", "source")]),
    ("MeasureReport", &[("patient", "subject")]),
    ("Media", &[("subject", "subject")]),
    (
        "MedicationAdministration",
        &[
            ("patient", "subject"),
            ("performer", "performer.actor"),
            ("subject", "subject"),
        ],
    ),
    (
        "MedicationDispense",
        &[
            ("subject", "subject"),
            ("patient", "subject"),
            ("receiver", "receiver"),
        ],
    ),
    ("MedicationRequest", &[("subject", "subject")]),
    ("MedicationStatement", &[("subject", "subject")]),
    ("MolecularSequence", &[("patient", "patient")]),
    ("NutritionOrder", &[("patient", "patient")]),
    (
        "Observation",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    ("Patient", &[("link", "link.other")]),
    ("Person", &[("patient", "link.target")]),
    (
        "Procedure",
        &[("patient", "subject"), ("performer", "performer.actor")],
    ),
    ("Provenance", &[("patient", "target")]),
    (
        "QuestionnaireResponse",
        &[("subject", "subject"), ("author", "author")],
    ),
    ("RelatedPerson", &[("patient", "patient")]),
    (
        "RequestGroup",
        &[
            ("subject", "subject"),
            ("participant", "action.participant"),
        ],
    ),
    ("ResearchSubject", &[("individual", "individual")]),
    ("RiskAssessment", &[("subject", "subject")]),
    ("Schedule", &[("actor", "actor")]),
    (
        "ServiceRequest",
        &[("subject", "subject"), ("performer", "performer")],
    ),
    ("Specimen", &[("subject", "subject")]),
    ("SupplyDelivery", &[("patient", "patient")]),
    ("SupplyRequest", &[("subject", "deliverFor")]),
    ("VisionPrescription", &[("patient", "patient")]),
];

/// `(type, [(parameter, path)])` for the R4 Practitioner CompartmentDefinition, sorted by type.
pub(super) const PRACTITIONER: &[(&str, &[(&str, &str)])] = &[
    ("Account", &[("subject", "subject")]),
    ("AdverseEvent", &[("recorder", "recorder")]),
    (
        "AllergyIntolerance",
        &[("recorder", "recorder"), ("asserter", "asserter")],
    ),
    ("Appointment", &[("actor", "participant.actor")]),
    ("AppointmentResponse", &[("actor", "actor")]),
    ("AuditEvent", &[("agent", "agent.who")]),
    ("Basic", &[("author", "author")]),
    ("CarePlan", &[("performer", "activity.detail.performer")]),
    ("CareTeam", &[("participant", "participant.member")]),
    (
        "ChargeItem",
        &[
            ("enterer", "enterer"),
            ("performer-actor", "performer.actor"),
        ],
    ),
    (
        "Claim",
        &[
            ("enterer", "enterer"),
            ("provider", "provider"),
            ("payee", "payee.party"),
            ("care-team", "careTeam.provider"),
        ],
    ),
    ("ClaimResponse", &[("requestor", "requestor")]),
    ("ClinicalImpression", &[("assessor", "assessor")]),
    (
        "Communication",
        &[("sender", "sender"), ("recipient", "recipient")],
    ),
    (
        "CommunicationRequest",
        &[
            ("sender", "sender"),
            ("recipient", "recipient"),
            ("requester", "requester"),
        ],
    ),
    (
        "Composition",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("attester", "attester.party"),
        ],
    ),
    ("Condition", &[("asserter", "asserter")]),
    (
        "CoverageEligibilityRequest",
        &[("enterer", "enterer"), ("provider", "provider")],
    ),
    ("CoverageEligibilityResponse", &[("requestor", "requestor")]),
    ("DetectedIssue", &[("author", "author")]),
    (
        "DeviceRequest",
        &[("requester", "requester"), ("performer", "performer")],
    ),
    ("DiagnosticReport", &[("performer", "performer")]),
    (
        "DocumentManifest",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("recipient", "recipient"),
        ],
    ),
    (
        "DocumentReference",
        &[
            ("subject", "subject"),
            ("author", "author"),
            ("authenticator", "authenticator"),
        ],
    ),
    (
        "Encounter",
        &[
            ("practitioner", "participant.individual"),
            ("participant", "participant.individual"),
        ],
    ),
    ("EpisodeOfCare", &[("care-manager", "careManager")]),
    (
        "ExplanationOfBenefit",
        &[
            ("enterer", "enterer"),
            ("provider", "provider"),
            ("payee", "payee.party"),
            ("care-team", "careTeam.provider"),
        ],
    ),
    ("Flag", &[("author", "author")]),
    ("Group", &[("member", "member.entity")]),
    ("Immunization", &[("performer", "performer.actor")]),
    ("Invoice", &[("participant", "participant.actor")]),
    ("Linkage", &[("author", "author")]),
    ("List", &[("source", "source")]),
    ("Media", &[("subject", "subject"), ("operator", "operator")]),
    (
        "MedicationAdministration",
        &[("performer", "performer.actor")],
    ),
    (
        "MedicationDispense",
        &[("performer", "performer.actor"), ("receiver", "receiver")],
    ),
    ("MedicationRequest", &[("requester", "requester")]),
    ("MedicationStatement", &[("source", "informationSource")]),
    (
        "MessageHeader",
        &[
            ("receiver", "destination.receiver"),
            ("author", "author"),
            ("responsible", "responsible"),
            ("enterer", "enterer"),
        ],
    ),
    ("NutritionOrder", &[("provider", "orderer")]),
    ("Observation", &[("performer", "performer")]),
    (
        "Patient",
        &[("general-practitioner", "generalPractitioner")],
    ),
    ("PaymentNotice", &[("provider", "provider")]),
    ("PaymentReconciliation", &[("requestor", "requestor")]),
    ("Person", &[("practitioner", "link.target")]),
    ("PractitionerRole", &[("practitioner", "practitioner")]),
    ("Procedure", &[("performer", "performer.actor")]),
    ("Provenance", &[("agent", "agent.who")]),
    (
        "QuestionnaireResponse",
        &[("author", "author"), ("source", "source")],
    ),
    (
        "RequestGroup",
        &[("participant", "action.participant"), ("author", "author")],
    ),
    (
        "ResearchStudy",
        &[("principalinvestigator", "principalInvestigator")],
    ),
    ("RiskAssessment", &[("performer", "performer")]),
    ("Schedule", &[("actor", "actor")]),
    (
        "ServiceRequest",
        &[("performer", "performer"), ("requester", "requester")],
    ),
    ("Specimen", &[("collector", "collection.collector")]),
    (
        "SupplyDelivery",
        &[("supplier", "supplier"), ("receiver", "receiver")],
    ),
    ("SupplyRequest", &[("requester", "requester")]),
    ("VisionPrescription", &[("prescriber", "prescriber")]),
];
