//! The ARM shapes around `authenticationConfiguration` (SPEC §3): people paste what they deploy
//! to Azure — the object itself, a whole `Microsoft.HealthcareApis/workspaces/fhirservices`
//! resource, or a template — so the object is found inside `properties`, or inside the one
//! resource of a template that holds it. The resource's and template's other keys are Azure's
//! and are ignored. ARM template expressions are recognised and refused: only Azure can evaluate
//! them.

use yaml_serde::Value;

use super::document::{join, Errors, Node, Object};
use super::raw::{keys_of, RawAuthenticationConfiguration};

/// The ARM object itself: `node`, or `node.properties.authenticationConfiguration` (an ARM
/// resource), or that of the one resource of `node.resources` that has it (an ARM template).
pub(super) fn locate<'a>(node: &Node<'a>, errors: &mut Errors) -> Option<Node<'a>> {
    if expression(node, errors) {
        return None;
    }
    let object = node.map(errors)?;
    if let Some(resources) = object.get("resources") {
        return from_template(&object, &resources, errors);
    }
    if object.has("properties") {
        return from_resource(&object, errors);
    }
    Some(node.clone())
}

fn from_resource<'a>(resource: &Object<'a>, errors: &mut Errors) -> Option<Node<'a>> {
    for key in keys_of::<RawAuthenticationConfiguration>() {
        if resource.has(key) {
            errors.push(
                &resource.key_path(key),
                format!("'{key}' belongs inside properties.authenticationConfiguration"),
            );
        }
    }
    let properties = resource.get("properties");
    let found = properties
        .as_ref()
        .and_then(|node| node.map(errors))
        .and_then(|properties| properties.get("authenticationConfiguration"));
    if found.is_none() && properties.is_some_and(|p| p.value.is_mapping()) {
        errors.push(
            &join(
                &resource.key_path("properties"),
                "authenticationConfiguration",
            ),
            "is required (the ARM resource must hold properties.authenticationConfiguration)",
        );
    }
    found
}

fn from_template<'a>(
    template: &Object<'a>,
    resources: &Node<'a>,
    errors: &mut Errors,
) -> Option<Node<'a>> {
    let mut found = Vec::new();
    collect_resources(resources, &mut found);
    let mut found: Vec<Node<'a>> = found
        .iter()
        .filter_map(|properties| properties.get("authenticationConfiguration"))
        .collect();
    match found.len() {
        1 => found.pop(),
        0 => {
            errors.push(
                &template.key_path("resources"),
                "no resource holds properties.authenticationConfiguration",
            );
            None
        }
        _ => {
            let paths: Vec<&str> = found.iter().map(|node| node.path.as_str()).collect();
            errors.push(
                &template.key_path("resources"),
                format!(
                    "exactly one resource may hold properties.authenticationConfiguration; found {}",
                    paths.join(", ")
                ),
            );
            None
        }
    }
}

/// The `properties` of every resource under `resources` (child resources included) that holds
/// an `authenticationConfiguration`.
fn collect_resources<'a>(resources: &Node<'a>, found: &mut Vec<Object<'a>>) {
    let Value::Sequence(items) = resources.value else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let resource = Node::new(format!("{}[{i}]", resources.path), item);
        let mut ignored = Errors::default();
        let Some(object) = resource.map(&mut ignored) else {
            continue;
        };
        let properties = object.get("properties").and_then(|p| p.map(&mut ignored));
        if let Some(properties) = properties.filter(|p| p.has("authenticationConfiguration")) {
            found.push(properties);
        }
        if let Some(children) = object.get("resources") {
            collect_resources(&children, found);
        }
    }
}

/// The ARM `corsConfiguration` (issue 19) beside the `authenticationConfiguration` that
/// [`locate`] finds: in the resource's `properties`, or in those of the one template resource
/// that holds it. `None` for the bare ARM object, which has no `properties`. Mistakes in the
/// shape around it are [`locate`]'s to report.
pub(super) fn cors_configuration<'a>(node: &Node<'a>) -> Option<Node<'a>> {
    let mut ignored = Errors::default();
    let object = node.map(&mut ignored)?;
    if let Some(resources) = object.get("resources") {
        let mut found = Vec::new();
        collect_resources(&resources, &mut found);
        return match found.as_slice() {
            [properties] => properties.get("corsConfiguration"),
            _ => None,
        };
    }
    let properties = object.get("properties")?.map(&mut ignored)?;
    properties.get("corsConfiguration")
}

/// An ARM template expression (`[parameters('x')]`; `[[` escapes a literal '['), which only
/// Azure can evaluate.
pub(super) fn expression(node: &Node<'_>, errors: &mut Errors) -> bool {
    let Value::String(text) = node.value else {
        return false;
    };
    let is_expression = text.starts_with('[') && text.ends_with(']') && !text.starts_with("[[");
    if is_expression {
        errors.push(
            &node.path,
            format!(
                "'{text}' is an ARM template expression; resolve expressions first \
                 (fhirguard reads values, it does not evaluate templates)"
            ),
        );
    }
    is_expression
}
