//! `authenticationConfiguration`: finding the ARM object (given directly, inside an ARM resource's
//! `properties`, or inside one resource of an ARM template; SPEC §3) and validating it with
//! Azure's rules and exact messages (reference §1.2, §6.1, §8 rule 1).

use yaml_serde::Value;

use super::arm::{expression, locate};
use super::document::{base_url, describe, Errors, Node, Object};
use super::messages;
use super::raw::{
    keys_of, RawApplication, RawAuthenticationConfiguration, RawSmartIdentityProvider,
};
use super::{Application, Authentication, Compatibility, PrimaryAuthority, SmartProvider};
use crate::actions::{DataAction, DataActions};

/// "…applications is 25" (reference §1.1: the newer configure page; the old page said 2).
const MAX_APPLICATIONS: usize = 25;
/// Azure: "up to two additional identity providers" (reference §1.1).
const AZURE_MAX_PROVIDERS: usize = 2;
/// Appended to an authority error when the authority is http:// (SPEC §5: https only).
const HTTP_HINT: &str =
    " An http:// authority is accepted only with allowHttpAuthorities: true (local testing).";

/// A smart provider with the primary's authority would make provider selection by issuer
/// ambiguous (SPEC §4 step 4).
const ALSO_PRIMARY: &str =
    "is also the primary authority; a token's issuer must select exactly one provider";

/// What the validation rules depend on.
#[derive(Debug, Clone, Copy)]
struct Rules {
    compatibility: Compatibility,
    allow_http: bool,
}

/// Validates the value of `authenticationConfiguration`.
pub(super) fn authentication(
    node: &Node<'_>,
    compatibility: Compatibility,
    allow_http: bool,
    errors: &mut Errors,
) -> Option<Authentication> {
    let rules = Rules {
        compatibility,
        allow_http,
    };
    let found = locate(node, errors)?;
    if expression(&found, errors) {
        return None;
    }
    let object = found.object(errors, keys_of::<RawAuthenticationConfiguration>())?;
    let primary = primary(&object, rules, errors);
    let smart_proxy_enabled = match object.get("smartProxyEnabled") {
        Some(node) if !expression(&node, errors) => node.bool(errors).unwrap_or(false),
        _ => false,
    };
    let providers_node = object.get("smartIdentityProviders");
    let smart_providers = providers_node
        .as_ref()
        .map(|node| smart_providers(node, rules, primary.as_ref(), errors))
        .unwrap_or_default();
    let has_providers = providers_node
        .is_some_and(|node| matches!(node.value, Value::Sequence(items) if !items.is_empty()));
    let has_primary = object.get("authority").is_some() || object.get("audience").is_some();
    if !has_primary && !has_providers {
        errors.push(
            &object.path,
            "no identity provider is configured: set authority and audience, or smartIdentityProviders",
        );
    }
    Some(Authentication {
        primary,
        smart_proxy_enabled,
        smart_providers,
    })
}

/// A required ARM string: `invalid` (Azure's message) when absent, null, blank or not a string.
fn arm_text<'a>(
    object: &Object<'a>,
    key: &str,
    invalid: &str,
    errors: &mut Errors,
) -> Option<(Node<'a>, &'a str)> {
    let Some(node) = object.get(key) else {
        errors.push(&object.key_path(key), invalid);
        return None;
    };
    if expression(&node, errors) {
        return None;
    }
    match node.value {
        Value::String(text) if !text.trim().is_empty() => Some((node.clone(), text.as_str())),
        Value::String(_) => {
            errors.push(&node.path, invalid);
            None
        }
        other => {
            let found = describe(other);
            errors.push(
                &node.path,
                format!("{invalid} Expected a string, found {found}."),
            );
            None
        }
    }
}

/// Problems with an authority URL.
enum AuthorityProblem {
    Invalid,
    HttpNotAllowed,
}

/// A fully qualified https URL (http with `allowHttpAuthorities`). Returns its normalized form
/// (lower-case scheme and host, no trailing '/') for uniqueness checks.
fn authority(text: &str, rules: Rules) -> Result<String, AuthorityProblem> {
    let url = base_url(text).map_err(|_| AuthorityProblem::Invalid)?;
    if url.scheme() == "http" && !rules.allow_http {
        return Err(AuthorityProblem::HttpNotAllowed);
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `authority` + `audience`: both or neither.
fn primary(object: &Object<'_>, rules: Rules, errors: &mut Errors) -> Option<PrimaryAuthority> {
    let (has_authority, has_audience) = (
        object.get("authority").is_some(),
        object.get("audience").is_some(),
    );
    if has_authority != has_audience {
        let (missing, given) = if has_authority {
            ("audience", "authority")
        } else {
            ("authority", "audience")
        };
        errors.push(
            &object.key_path(missing),
            format!("is required when {given} is set"),
        );
    }
    let invalid = "must be a fully qualified https URL";
    let authority_text = if has_authority {
        arm_text(object, "authority", invalid, errors).and_then(|(node, text)| {
            match authority(text, rules) {
                Ok(_) => Some(text),
                Err(AuthorityProblem::Invalid) => {
                    errors.push(&node.path, format!("'{text}' {invalid}"));
                    None
                }
                Err(AuthorityProblem::HttpNotAllowed) => {
                    errors.push(&node.path, format!("'{text}' {invalid}.{HTTP_HINT}"));
                    None
                }
            }
        })
    } else {
        None
    };
    let audience = if has_audience {
        arm_text(object, "audience", "must not be empty", errors)
    } else {
        None
    };
    Some(PrimaryAuthority {
        authority: authority_text?.to_owned(),
        audience: audience?.1.to_owned(),
    })
}

fn smart_providers(
    node: &Node<'_>,
    rules: Rules,
    primary: Option<&PrimaryAuthority>,
    errors: &mut Errors,
) -> Vec<SmartProvider> {
    if expression(node, errors) {
        return Vec::new();
    }
    let Some(items) = node.list(errors) else {
        return Vec::new();
    };
    if rules.compatibility == Compatibility::Azure && items.len() > AZURE_MAX_PROVIDERS {
        errors.push(&node.path, messages::MAX_PROVIDERS);
    }
    let primary_authority = primary.and_then(|p| authority(&p.authority, rules).ok());
    let mut authorities: Vec<String> = Vec::new();
    let mut client_ids: Vec<String> = Vec::new();
    let mut providers = Vec::with_capacity(items.len());
    for item in &items {
        let Some(object) = item.object(errors, keys_of::<RawSmartIdentityProvider>()) else {
            continue;
        };
        let authority_text = arm_text(&object, "authority", messages::AUTHORITY_INVALID, errors)
            .and_then(|(node, text)| match authority(text, rules) {
                Ok(normalized) => {
                    if authorities.contains(&normalized) {
                        errors.push(&node.path, messages::AUTHORITIES_UNIQUE);
                    } else if primary_authority.as_ref() == Some(&normalized) {
                        errors.push(&node.path, ALSO_PRIMARY);
                    }
                    authorities.push(normalized);
                    Some(text)
                }
                Err(AuthorityProblem::Invalid) => {
                    errors.push(&node.path, messages::AUTHORITY_INVALID);
                    None
                }
                Err(AuthorityProblem::HttpNotAllowed) => {
                    errors.push(
                        &node.path,
                        format!("{}{HTTP_HINT}", messages::AUTHORITY_INVALID),
                    );
                    None
                }
            });
        let applications = applications(&object, rules, &mut client_ids, errors);
        if let Some(authority) = authority_text {
            providers.push(SmartProvider {
                authority: authority.to_owned(),
                applications,
            });
        }
    }
    providers
}

fn applications(
    provider: &Object<'_>,
    rules: Rules,
    client_ids: &mut Vec<String>,
    errors: &mut Errors,
) -> Vec<Application> {
    let Some(node) = provider.get("applications") else {
        errors.push(
            &provider.key_path("applications"),
            messages::APPLICATIONS_NULL,
        );
        return Vec::new();
    };
    if expression(&node, errors) {
        return Vec::new();
    }
    let Some(items) = node.list(errors) else {
        return Vec::new();
    };
    if items.is_empty() {
        errors.push(&node.path, messages::APPLICATIONS_NULL);
    } else if items.len() > MAX_APPLICATIONS {
        errors.push(&node.path, messages::MAX_APPLICATIONS);
    }
    let mut applications = Vec::with_capacity(items.len());
    for item in &items {
        if item.value.is_null() {
            errors.push(&item.path, messages::APPLICATIONS_NULL);
            continue;
        }
        let Some(object) = item.object(errors, keys_of::<RawApplication>()) else {
            continue;
        };
        let client_id =
            arm_text(&object, "clientId", messages::CLIENT_ID_INVALID, errors).map(|(node, id)| {
                // Compared exactly with azp/appid (reference §1.1), so uniqueness is exact too.
                if client_ids.iter().any(|seen| seen == id) {
                    errors.push(&node.path, messages::CLIENT_IDS_UNIQUE);
                }
                client_ids.push(id.to_owned());
                id
            });
        let audience = arm_text(&object, "audience", messages::AUDIENCE_INVALID, errors);
        let actions = allowed_data_actions(&object, rules, errors);
        if let (Some(client_id), Some((_, audience)), Some(allowed_data_actions)) =
            (client_id, audience, actions)
        {
            applications.push(Application {
                client_id: client_id.to_owned(),
                audience: audience.to_owned(),
                allowed_data_actions,
            });
        }
    }
    applications
}

/// `allowedDataActions`: non-empty, no duplicates, each a data action of reference §3.1 or `*`
/// (`Smart` is not one; it is a role's action) — only `Read` under `compatibility: azure`.
fn allowed_data_actions(
    application: &Object<'_>,
    rules: Rules,
    errors: &mut Errors,
) -> Option<DataActions> {
    let Some(node) = application.get("allowedDataActions") else {
        errors.push(
            &application.key_path("allowedDataActions"),
            messages::ACTIONS_EMPTY,
        );
        return None;
    };
    if expression(&node, errors) {
        return None;
    }
    let Value::Sequence(_) = node.value else {
        let found = describe(node.value);
        errors.push(
            &node.path,
            format!(
                "{} Expected a list, found {found}.",
                messages::ACTIONS_INVALID
            ),
        );
        return None;
    };
    let items = node.list(errors)?;
    if items.is_empty() {
        errors.push(&node.path, messages::ACTIONS_EMPTY);
        return None;
    }
    let before = errors.0.len();
    let mut seen: Vec<DataActions> = Vec::new();
    for item in &items {
        if expression(item, errors) {
            continue;
        }
        let Some(parsed) = action(item, rules, errors) else {
            continue;
        };
        if seen.contains(&parsed) {
            errors.push(&item.path, messages::ACTIONS_DUPLICATE);
        }
        seen.push(parsed);
    }
    let all = seen.into_iter().fold(DataActions::NONE, DataActions::union);
    (errors.0.len() == before).then_some(all)
}

fn action(item: &Node<'_>, rules: Rules, errors: &mut Errors) -> Option<DataActions> {
    let Value::String(name) = item.value else {
        let found = describe(item.value);
        errors.push(
            &item.path,
            format!(
                "{} Expected a string, found {found}.",
                messages::ACTIONS_INVALID
            ),
        );
        return None;
    };
    let parsed = DataActions::parse(name).filter(|set| !set.contains(DataAction::Smart));
    let hint = match (rules.compatibility, parsed) {
        (Compatibility::Azure, Some(set)) if set == DataActions::of(&[DataAction::Read]) => {
            return parsed
        }
        (Compatibility::Azure, _) => "compatibility: azure allows only Read".to_owned(),
        (Compatibility::Open, Some(_)) => return parsed,
        (Compatibility::Open, None) => {
            let names: Vec<&str> = DataAction::ALL.iter().map(|a| a.name()).collect();
            format!("'{name}' is not one of: {}, *", names.join(", "))
        }
    };
    errors.push(&item.path, format!("{} {hint}.", messages::ACTIONS_INVALID));
    None
}
