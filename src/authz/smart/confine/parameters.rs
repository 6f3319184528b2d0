//! The compartment parameter rules of a `patient` context (docs/smart.md, "Compartment hardening"):
//! which parameter names are plain enough to read the same at fhirguard and at the FHIR
//! server, which compartment parameters a client may send and with which values, the canonical
//! parameter fhirguard appends to every search on a compartment type, what `_has` and chains
//! may reach from a shared type, and the same rules for a conditional create's criteria. Pure.

use super::{append, chain_targets, Denial};
use crate::authz::smart::{FhirUser, OwnerType};
use crate::fhir::compartment::is_shared_type;
use crate::fhir::query::parameters;
use crate::fhir::resource_types::is_resource_type;

/// The rule a compartment refusal names, so that the audit line and `fhirguard explain` say
/// which one refused (docs/smart.md, "Compartment hardening").
pub(super) const RULE: &str = "compartment hardening";

/// Parameter names must read the same to fhirguard and to the FHIR server: printable ASCII
/// without `%` (left after decoding, a second decoding would change it) or whitespace, so
/// that no encoding, Unicode case folding or trimming turns one into a compartment parameter
/// fhirguard did not see.
pub(super) fn check_names(query: Option<&str>) -> Result<(), Denial> {
    for (name, _) in parameters(query) {
        let plain = name.bytes().all(|b| b.is_ascii_graphic() && b != b'%');
        if !plain || name.is_empty() {
            return Err(Denial::Forbidden(format!(
                "the search parameter name '{}' is refused under a patient context ({RULE}: \
                 parameter names must be plain ASCII, without '%' or whitespace)",
                name.escape_default()
            )));
        }
    }
    Ok(())
}

/// A search on a shared type answers with shared data, but `_has` and chains can make its
/// matches (and its `total`) depend on other patients' resources
/// (`Location?_has:Encounter:location:patient=Patient/2`): under a patient context they may
/// reach shared types only, each named (`organization:Organization.name`).
pub(super) fn check_shared_reach(query: Option<&str>) -> Result<(), Denial> {
    for (name, value) in parameters(query) {
        let has = name.to_ascii_lowercase().starts_with("_has:");
        if !(has || name.contains('.')) {
            continue;
        }
        // `_HAS:…` is read as `_has` by a server comparing names case-insensitively, but its
        // targets cannot be read from it: refused like an unnamed type.
        let variant = has && !name.starts_with("_has:");
        let unreadable = variant.then_some(None);
        if let Some(target) = unreadable.or_else(|| {
            chain_targets(&name)
                .into_iter()
                .find(|t| !t.as_deref().is_some_and(is_shared_type))
        }) {
            let what = target.unwrap_or_else(|| "a type it does not name".to_owned());
            return Err(Denial::Forbidden(format!(
                "'{name}={value}' reaches {what} from a shared type ({RULE}: under a patient \
                 context _has and chains on shared types may reach only shared types)"
            )));
        }
    }
    Ok(())
}

/// A search parameter name as FHIR reads it, lower-cased: `base[:modifier][.chain]`.
struct ParameterName {
    base: String,
    modifier: Option<String>,
    chained: bool,
}

impl ParameterName {
    fn parse(name: &str) -> ParameterName {
        // Names are compared case-insensitively: the reference server binds them so.
        let lowered = name.trim().to_ascii_lowercase();
        let (head, chained) = match lowered.split_once('.') {
            Some((head, _)) => (head, true),
            None => (lowered.as_str(), false),
        };
        let (base, modifier) = match head.split_once(':') {
            Some((base, modifier)) => (base, Some(modifier.to_owned())),
            None => (head, None),
        };
        ParameterName {
            base: base.to_owned(),
            modifier,
            chained,
        }
    }
}

/// For a search on a compartment type (hardening class 1): every compartment parameter the
/// client sent (`subject`, `patient`, …, and `_id` on the owner's own type) must take no
/// modifier but the owner's type (`subject:Patient`), no chain, and values that cannot widen:
/// exactly the user's reference, or a relative reference to another type (`Practitioner/7`).
/// Returns fhirguard's own canonical parameter, which is ALWAYS appended (FHIR ANDs repeated
/// parameters): `patient`/`subject`/… = `Patient/<id>`, or `_id=<id>` on the owner's type.
pub(super) fn canonical_parameter(
    user: &FhirUser,
    resource_type: Option<&str>,
    query: Option<&str>,
) -> Result<(String, String), Denial> {
    let resource_type = resource_type.unwrap_or_default();
    let own_type = resource_type == user.owner.name();
    let params: &[&str] = user.compartment_params(resource_type).unwrap_or(&[]);
    let owner = user.owner.name().to_ascii_lowercase();
    for (name, value) in parameters(query) {
        let parsed = ParameterName::parse(&name);
        let is_id = own_type && parsed.base == "_id";
        // `patient` always targets a Patient (Observation.patient = subject:Patient).
        let names_patient = user.owner == OwnerType::Patient && parsed.base == "patient";
        if !(is_id || names_patient || params.contains(&parsed.base.as_str())) {
            continue;
        }
        let refuse = |why: &str| {
            Denial::Forbidden(format!(
                "'{name}={value}' is refused under the patient context of {user} ({RULE}: \
                 compartment parameters are exact — {why})"
            ))
        };
        if parsed.chained {
            return Err(refuse("a compartment parameter cannot be chained"));
        }
        let typed = match parsed.modifier.as_deref() {
            None => false,
            Some(m) if m == owner && !is_id => true,
            Some(_) => return Err(refuse("a compartment parameter takes no modifier")),
        };
        for item in value.split(',') {
            let exact = if is_id {
                item == user.id
            } else if typed || names_patient {
                item == user.id || user.is_named_by(item)
            } else {
                user.is_named_by(item) || other_type(item, user)
            };
            if !exact {
                return Err(refuse(&format!(
                    "'{item}' is not {user} (relative, or absolute at publicBaseUrl)"
                )));
            }
        }
    }
    if own_type {
        return Ok(("_id".to_owned(), user.id.clone()));
    }
    let preferred = [
        "patient",
        "subject",
        "beneficiary",
        "practitioner",
        "performer",
    ];
    let chosen = preferred
        .iter()
        .find(|p| params.contains(p))
        .or(params.first())
        .copied()
        .ok_or_else(|| {
            Denial::Forbidden(format!(
                "{resource_type} has no compartment parameter for {user} ({RULE})"
            ))
        })?;
    Ok((chosen.to_owned(), user.reference()))
}

/// A relative reference `Type/id` to a known type other than the owner's: it cannot name
/// another patient.
fn other_type(item: &str, user: &FhirUser) -> bool {
    item.split_once('/').is_some_and(|(t, id)| {
        t != user.owner.name()
            && is_resource_type(t)
            && !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    })
}

/// A conditional create's `If-None-Exist` criteria under a patient context (hardening class
/// 8): checked like a search on the type and given the canonical compartment parameter, so
/// the server's answer (created, or the existing match) can only reveal the patient's own
/// resources. Returns the criteria to forward.
pub fn confine_condition(
    user: &FhirUser,
    resource_type: &str,
    criteria: &str,
) -> Result<String, Denial> {
    let query = Some(criteria);
    check_names(query)?;
    if parameters(query).any(|(name, _)| name == "_query" || name.starts_with("_has:")) {
        return Err(Denial::Forbidden(format!(
            "If-None-Exist: {criteria} is refused under a patient context ({RULE}: conditional \
             criteria take no _query or _has)"
        )));
    }
    let pair = canonical_parameter(user, Some(resource_type), query)?;
    Ok(append(query, &[pair]))
}
