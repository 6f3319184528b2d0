//! Roles: the built-in table of role names → data actions (Azure's built-in FHIR roles and the
//! open-source server's default `roles.json`, reference §3.1), and the `roles` section that adds to
//! or replaces it. The primary authority's tokens are authorized through this mapping (SPEC §3).

use std::collections::HashMap;

use super::document::{Errors, Node};
use super::raw::{keys_of, RawRoles};
use super::RoleMapping;
use crate::actions::{DataAction, DataActions};

/// The built-in role table, names as written (matching is case-insensitive).
pub fn built_in_roles() -> [(&'static str, DataActions); 15] {
    use DataAction::{
        BulkOperator, ConvertData, Delete, EditProfileDefinitions, Export, HardDelete, Import,
        Read, ReadById, Reindex, ResourceValidate, Search, SearchParameter, Smart, Write,
    };
    let all = DataActions::ALL;
    [
        // Reference §3.1, Azure built-in roles: "FHIR Data Reader | read".
        ("FHIR Data Reader", DataActions::of(&[Read])),
        // §3.1: "read, write, delete, export, resourceValidate, reindex, convertData,
        // editProfileDefinitions, import (no hardDelete)".
        (
            "FHIR Data Writer",
            DataActions::of(&[
                Read,
                Write,
                Delete,
                Export,
                ResourceValidate,
                Reindex,
                ConvertData,
                EditProfileDefinitions,
                Import,
            ]),
        ),
        // §3.1: "FHIR Data Exporter | read, export".
        ("FHIR Data Exporter", DataActions::of(&[Read, Export])),
        // §3.1: "FHIR Data Converter | convertData".
        ("FHIR Data Converter", DataActions::of(&[ConvertData])),
        // §3.1: "FHIR Data Contributor | `*` minus `smart/action`" (`*` never includes Smart).
        ("FHIR Data Contributor", all),
        // §3.1: "FHIR SMART User | read, readById/action, search/action, smart/action".
        (
            "FHIR SMART User",
            DataActions::of(&[Read, ReadById, Search, Smart]),
        ),
        // §3.1: "Search Parameter Manager | read, write, reindex, searchparameter".
        (
            "Search Parameter Manager",
            DataActions::of(&[Read, Write, Reindex, SearchParameter]),
        ),
        // §3.1: "FHIR Data Bulk Operator | bulkOperator, read, write, delete, hardDelete, export,
        // import, reindex".
        (
            "FHIR Data Bulk Operator",
            DataActions::of(&[
                BulkOperator,
                Read,
                Write,
                Delete,
                HardDelete,
                Export,
                Import,
                Reindex,
            ]),
        ),
        // §3.1, OSS default roles.json: "globalReader(read, resourceValidate)".
        ("globalReader", DataActions::of(&[Read, ResourceValidate])),
        // §3.1: "globalExporter(read, export)".
        ("globalExporter", DataActions::of(&[Read, Export])),
        // §3.1: "globalConverter(read, convertData)".
        ("globalConverter", DataActions::of(&[Read, ConvertData])),
        // §3.1: "globalImporter(read, import)".
        ("globalImporter", DataActions::of(&[Read, Import])),
        // §3.1: "globalWriter(* minus hardDelete, editProfileDefinitions)".
        (
            "globalWriter",
            all.without(HardDelete).without(EditProfileDefinitions),
        ),
        // §3.1: "globalAdmin(*)".
        ("globalAdmin", all),
        // §3.1: "smartUser(*, smart)".
        ("smartUser", all.with(Smart)),
    ]
}

/// Validates `roles` and builds the mapping: the built-in table (unless `replaceBuiltIn`) with
/// `mappings` laid over it, and `groups` when a groups claim is in use.
pub(super) fn role_mapping(node: Option<Node<'_>>, errors: &mut Errors) -> RoleMapping {
    let mut mapping = RoleMapping {
        roles: built_in(),
        groups_claim: None,
        groups: HashMap::new(),
    };
    let Some(object) = node.and_then(|node| node.object(errors, keys_of::<RawRoles>())) else {
        return mapping;
    };
    let replace = object.get("replaceBuiltIn").and_then(|n| n.bool(errors));
    if replace == Some(true) {
        mapping.roles.clear();
    }
    if let Some(mappings) = object.get("mappings") {
        // A mapping overrides the built-in role of the same (case-insensitive) name.
        mapping.roles.extend(named_actions(&mappings, errors));
    }
    if let Some(groups) = object.get("groups") {
        mapping.groups = named_actions(&groups, errors);
    }
    mapping.groups_claim = match object.get("groupsClaim") {
        Some(node) => node.text(errors).map(str::to_owned),
        None if !mapping.groups.is_empty() => Some("groups".to_owned()),
        None => None,
    };
    mapping
}

fn built_in() -> HashMap<String, DataActions> {
    built_in_roles()
        .into_iter()
        .map(|(name, actions)| (name.to_lowercase(), actions))
        .collect()
}

/// `{name: [actions]}` with names lower-cased. An empty list grants nothing — the way to switch
/// off one built-in role.
fn named_actions(node: &Node<'_>, errors: &mut Errors) -> HashMap<String, DataActions> {
    let mut named = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let Some(object) = node.map(errors) else {
        return named;
    };
    for (name, value) in object.entries(errors) {
        let key = name.trim().to_lowercase();
        if key.is_empty() {
            errors.push(&value.path, "the name must not be empty");
            continue;
        }
        if !seen.insert(key.clone()) {
            errors.push(
                &value.path,
                format!("duplicate name '{name}' (names are case-insensitive)"),
            );
            continue;
        }
        let actions = if value.value.is_null() {
            Some(DataActions::NONE)
        } else {
            role_actions(&value, errors)
        };
        if let Some(actions) = actions {
            named.insert(key, actions);
        }
    }
    named
}

/// A role's data actions: names of reference §3.1 (including `smart`) or `*`, no duplicates.
fn role_actions(node: &Node<'_>, errors: &mut Errors) -> Option<DataActions> {
    let items = node.list(errors)?;
    let mut granted = DataActions::NONE;
    let mut seen = Vec::with_capacity(items.len());
    let mut valid = true;
    for item in &items {
        let Some(name) = item.string(errors) else {
            valid = false;
            continue;
        };
        let Some(actions) = DataActions::parse(name) else {
            let names: Vec<&str> = DataAction::ALL
                .iter()
                .chain([&DataAction::Smart])
                .map(|a| a.name())
                .collect();
            errors.push(
                &item.path,
                format!(
                    "'{name}' is not a data action; expected one of: {}, *",
                    names.join(", ")
                ),
            );
            valid = false;
            continue;
        };
        if seen.contains(&actions) {
            errors.push(&item.path, format!("duplicate data action '{name}'"));
            valid = false;
        }
        seen.push(actions);
        granted = granted.union(actions);
    }
    valid.then_some(granted)
}
