//! Is this resource in the `fhirUser`'s compartment, and does a resource to be stored name
//! anyone else? (R4 CompartmentDefinition semantics, reference §4.5; compartment hardening.)
//!
//! A resource is a member when it is the owner itself, or when the `reference` of an element one
//! of the compartment's parameters indexes — exactly that element, at the path of the
//! parameter's R4 expression (`subject`, `performer`, `participant.actor`;
//! [`crate::fhir::compartment`]) — is a canonical reference to the owner. A `reference` nested
//! deeper (an extension inside `subject`, `subject.identifier.assigner`) is not the element's
//! and does not count; neither does a spelling that is not canonical (fail closed).
//!
//! A write is checked wider: every reference anywhere in the resource (extensions, `focus`,
//! contained resources) that may name another resource of the owner's type refuses it. Pure.

use serde_json::Value;

use super::FhirUser;
use crate::fhir::compartment::is_shared_type;
use crate::fhir::reference::{mentions_type, Literal};

/// True when `resource` (a FHIR JSON resource) is in `user`'s compartment.
pub fn is_member(resource: &Value, user: &FhirUser) -> bool {
    let Some(resource_type) = resource["resourceType"].as_str() else {
        return false;
    };
    if resource_type == user.owner.name() && resource["id"].as_str() == Some(user.id.as_str()) {
        return true;
    }
    let Some(paths) = user.compartment_paths(resource_type) else {
        return false;
    };
    paths
        .iter()
        .any(|(_, path)| refers_at(resource, path, user))
}

/// True when a `Reference` at `path` (dot-separated; arrays are crossed at every step) has a
/// `reference` naming `user`.
fn refers_at(value: &Value, path: &str, user: &FhirUser) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| refers_at(item, path, user)),
        Value::Object(object) => match path.split_once('.') {
            Some((step, rest)) => object
                .get(step)
                .is_some_and(|inner| refers_at(inner, rest, user)),
            None => object
                .get(path)
                .is_some_and(|element| names_user(element, user)),
        },
        _ => false,
    }
}

/// The element's own `reference` (each one's, for a repeating element) names `user`.
fn names_user(element: &Value, user: &FhirUser) -> bool {
    match element {
        Value::Array(items) => items.iter().any(|item| names_user(item, user)),
        Value::Object(object) => object
            .get("reference")
            .and_then(Value::as_str)
            .is_some_and(|reference| user.is_referenced_by(reference)),
        _ => false,
    }
}

/// The first reference anywhere in `resource` — compartment elements, extensions, `focus`,
/// contained resources — that may name a resource of the owner's type other than `user`
/// (compartment hardening: writes name no other patient). Such a reference is:
/// - a canonical reference ([`Literal`]) to the owner's type that is not `user` (another id,
///   or `user`'s id at another server's base);
/// - a spelling that is not canonical and mentions the owner's type in any case or encoding
///   (`Patient/p2/`, `Patient//p2`, `./Patient/p2`, `patient/p2`, `%50atient/p2`, a conditional
///   `Patient?identifier=…`), or holds a `%` at all: what a server would make of it cannot be
///   told, so it fails closed;
/// - a logical reference: a `Reference` whose `type` is the owner's type and whose `reference`
///   is not `user` (`{"type": "Patient", "identifier": {…}}`, which a server may resolve);
/// - a `reference` member that is not a string.
pub fn foreign_reference(resource: &Value, user: &FhirUser) -> Option<String> {
    match resource {
        Value::Object(object) => {
            if let Some(reference) = object.get("reference") {
                let Some(text) = reference.as_str() else {
                    return Some(reference.to_string());
                };
                if is_foreign(text, user) {
                    return Some(text.to_owned());
                }
            }
            if let Some(Value::String(kind)) = object.get("type") {
                let named = object
                    .get("reference")
                    .and_then(Value::as_str)
                    .is_some_and(|r| user.is_referenced_by(r));
                let reference_like =
                    object.contains_key("identifier") || object.contains_key("reference");
                if reference_like && !named && mentions_type(kind, user.owner.name()) {
                    return Some(format!("a logical reference of type {kind}"));
                }
            }
            object
                .values()
                .find_map(|inner| foreign_reference(inner, user))
        }
        Value::Array(items) => items.iter().find_map(|item| foreign_reference(item, user)),
        _ => None,
    }
}

fn is_foreign(reference: &str, user: &FhirUser) -> bool {
    match Literal::parse(reference) {
        Some(literal) => literal.resource_type == user.owner.name() && !user.is_literal(&literal),
        // Percent-encoding is never canonical; decoded any number of times it may spell the
        // owner's type where one decoding does not.
        None => reference.contains('%') || mentions_type(reference, user.owner.name()),
    }
}

/// The first object member under `resource` whose name differs only in ASCII case from
/// `reference`, `type`, or a step of a compartment element's path (`Subject`,
/// `participant.Actor`, `performer.Reference`). fhirguard reads names exactly; a server binding
/// them case-insensitively would read such a member as the element, so a write holding one
/// cannot be checked.
pub fn case_variant(resource: &Value, user: &FhirUser) -> Option<String> {
    let paths = resource["resourceType"]
        .as_str()
        .and_then(|t| user.compartment_paths(t))
        .unwrap_or(&[]);
    let mut names: Vec<&str> = paths.iter().flat_map(|(_, p)| p.split('.')).collect();
    names.extend(["reference", "type"]);
    variant_in(resource, &names)
}

fn variant_in(value: &Value, names: &[&str]) -> Option<String> {
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
