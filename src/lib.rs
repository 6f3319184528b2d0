//! fhirguard: an authorization sidecar for FHIR servers.
pub mod authz;
