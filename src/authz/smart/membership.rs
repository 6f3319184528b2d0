//! Is this resource in the `fhirUser`'s compartment? (R4 CompartmentDefinition semantics,
//! reference §4.5.) A resource is a member when it is the owner itself, or when one of the
//! compartment's search parameters for its type refers to the owner. fhirguard has no FHIRPath
//! engine, so each search parameter is read as the top-level element(s) it indexes — the
//! parameter name in camelCase, plus the few R4 names that differ (`patient` indexes `subject`
//! on Condition, Encounter, …; `actor` is `participant.actor` on Appointment) — and every
//! `reference` string found under those elements counts. Pure.

use serde_json::Value;

use super::FhirUser;
use crate::fhir::compartment::is_shared_type;

/// True when `resource` (a FHIR JSON resource) is in `user`'s compartment.
pub fn is_member(resource: &Value, user: &FhirUser) -> bool {
    let Some(resource_type) = resource["resourceType"].as_str() else {
        return false;
    };
    if resource_type == user.owner.name() && resource["id"].as_str() == Some(user.id.as_str()) {
        return true;
    }
    let Some(params) = user.compartment_params(resource_type) else {
        return false;
    };
    params
        .iter()
        .flat_map(|param| elements(param))
        .any(|element| refers_to(&resource[element.as_str()], user))
}

/// The first reference under `resource`'s compartment elements that names a resource of the
/// owner's type other than `user` (`performer: Patient/2` beside `subject: Patient/1`, a
/// Patient's `link` to another patient). Storing such a resource writes into that other
/// patient's compartment too (hardening: writes stay in the compartment).
pub fn foreign_reference<'a>(resource: &'a Value, user: &FhirUser) -> Option<&'a str> {
    let params = user.compartment_params(resource["resourceType"].as_str()?)?;
    params
        .iter()
        .flat_map(|param| elements(param))
        .find_map(|element| foreign_in(&resource[element.as_str()], user))
}

/// The first object member under `resource` whose name differs only in ASCII case from
/// `reference` or from a compartment element of its type (`Subject`, `performer.Reference`).
/// fhirguard reads names exactly; a server binding them case-insensitively would read such a
/// member as the compartment element, so a write holding one cannot be checked.
pub fn case_variant(resource: &Value, user: &FhirUser) -> Option<String> {
    let params = resource["resourceType"]
        .as_str()
        .and_then(|t| user.compartment_params(t))
        .unwrap_or(&[]);
    let mut names: Vec<String> = params.iter().flat_map(|param| elements(param)).collect();
    names.push("reference".to_owned());
    variant_in(resource, &names)
}

fn variant_in(value: &Value, names: &[String]) -> Option<String> {
    match value {
        Value::Object(object) => object.iter().find_map(|(key, inner)| {
            let variant = names
                .iter()
                .any(|name| key != name && key.eq_ignore_ascii_case(name));
            if variant {
                return Some(key.clone());
            }
            variant_in(inner, names)
        }),
        Value::Array(items) => items.iter().find_map(|item| variant_in(item, names)),
        _ => None,
    }
}

/// True when a resource may be shown under a `patient` context: a shared type, or a member.
pub fn is_visible(resource: &Value, user: &FhirUser) -> bool {
    resource["resourceType"]
        .as_str()
        .is_some_and(|t| t == "OperationOutcome" || is_shared_type(t))
        || is_member(resource, user)
}

/// Removes from a searchset or history Bundle every entry the caller may not see: entries whose
/// resource fails `keep` and entries without a resource (deleted history entries). Returns how
/// many were removed; `total` is dropped when any was, since it would count them.
pub fn filter_bundle(bundle: &mut Value, keep: impl Fn(&Value) -> bool) -> usize {
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = entries.len();
    entries.retain(|entry| entry.get("resource").is_some_and(&keep));
    let removed = before - entries.len();
    if removed > 0 {
        if let Some(object) = bundle.as_object_mut() {
            object.remove("total");
        }
    }
    removed
}

/// The top-level elements a compartment search parameter indexes.
fn elements(param: &str) -> Vec<String> {
    let mut names = vec![camel_case(param)];
    let aliases: &[&str] = match param {
        "patient" => &["subject"],
        "actor" => &["participant"],
        "source" => &["informationSource"],
        "performer-actor" => &["performer"],
        "practitioner" => &["participant"],
        "principalinvestigator" => &["principalInvestigator"],
        "agent" => &["agent"],
        _ => &[],
    };
    names.extend(aliases.iter().map(|a| (*a).to_owned()));
    names
}

fn camel_case(param: &str) -> String {
    let mut out = String::with_capacity(param.len());
    let mut upper = false;
    for c in param.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The first `reference` string under `value` naming another resource of the owner's type.
fn foreign_in<'a>(value: &'a Value, user: &FhirUser) -> Option<&'a str> {
    match value {
        Value::Object(object) => {
            object
                .iter()
                .find_map(|(key, inner)| match (key.as_str(), inner) {
                    ("reference", Value::String(reference)) => (user.names_owner_type(reference)
                        && !user.is_referenced_by(reference))
                    .then_some(reference.as_str()),
                    _ => foreign_in(inner, user),
                })
        }
        Value::Array(items) => items.iter().find_map(|item| foreign_in(item, user)),
        _ => None,
    }
}

/// True when any `reference` string under `value` (nested objects and arrays included) points
/// at `user`.
fn refers_to(value: &Value, user: &FhirUser) -> bool {
    match value {
        Value::Object(object) => object
            .iter()
            .any(|(key, inner)| match (key.as_str(), inner) {
                ("reference", Value::String(reference)) => user.is_referenced_by(reference),
                _ => refers_to(inner, user),
            }),
        Value::Array(items) => items.iter().any(|item| refers_to(item, user)),
        _ => false,
    }
}
