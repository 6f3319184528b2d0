//! The shape of a normalized request path: which FHIR endpoint it names, before the method is
//! considered (R4 http.html §3.1.0; the table in the parent module). Validates resource types
//! (R4 list), compartment types and ids on the way.

use super::operation::Level;
use super::resource_types::is_resource_type;
use super::ClassifyError;

/// The R4 CompartmentDefinitions (hl7.org/fhir/R4/compartmentdefinition.html), sorted.
const COMPARTMENT_TYPES: [&str; 5] = [
    "Device",
    "Encounter",
    "Patient",
    "Practitioner",
    "RelatedPerson",
];

/// The endpoint a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Root,
    Metadata,
    SystemHistory,
    SystemSearch,
    Job {
        kind: &'a str,
        id: &'a str,
    },
    Operation {
        name: &'a str,
        level: OperationLevel<'a>,
    },
    Type(&'a str),
    TypeSearch(&'a str),
    TypeHistory(&'a str),
    Instance(&'a str, &'a str),
    InstanceHistory(&'a str, &'a str),
    Version(&'a str, &'a str, &'a str),
    /// `C/id/T`, `C/id/*` (`target` `None`), and with `post_search` their `/_search` forms.
    Compartment {
        owner: &'a str,
        id: &'a str,
        target: Option<&'a str>,
        post_search: bool,
    },
}

/// Where a `$operation` is invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OperationLevel<'a> {
    System,
    Type(&'a str),
    Instance(&'a str, &'a str),
}

impl<'a> OperationLevel<'a> {
    pub(super) fn operation(self) -> Level<'a> {
        match self {
            OperationLevel::System => Level::System,
            OperationLevel::Type(t) => Level::Type(t),
            OperationLevel::Instance(t, _) => Level::Instance(t),
        }
    }

    pub(super) fn resource_type(self) -> Option<&'a str> {
        match self {
            OperationLevel::System => None,
            OperationLevel::Type(t) | OperationLevel::Instance(t, _) => Some(t),
        }
    }

    pub(super) fn id(self) -> Option<&'a str> {
        match self {
            OperationLevel::Instance(_, id) => Some(id),
            OperationLevel::System | OperationLevel::Type(_) => None,
        }
    }
}

impl<'a> Route<'a> {
    /// Parses a normalized path (`/`, `/Patient/1`, …).
    pub(super) fn parse(path: &'a str) -> Result<Route<'a>, ClassifyError> {
        let unknown = || ClassifyError::UnknownRoute(path.to_owned());
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        // No route has more than four segments: five stand for any longer path (each is an
        // unknown route once its type is checked, as the fifth segment already makes it), and
        // need no allocation.
        let mut kept = [""; 5];
        let mut count = 0;
        if !trimmed.is_empty() {
            for (slot, segment) in kept.iter_mut().zip(trimmed.split('/')) {
                *slot = segment;
                count += 1;
            }
        }
        let route = match &kept[..count] {
            [] => Route::Root,
            ["metadata"] => Route::Metadata,
            ["_history"] => Route::SystemHistory,
            ["_search"] => Route::SystemSearch,
            ["_operations", kind, id] => Route::Job {
                kind,
                id: valid_id(id)?,
            },
            [op] if op.starts_with('$') => operation(op, OperationLevel::System),
            [t, rest @ ..] => {
                let t = resource_type(t)?;
                match rest {
                    [] => Route::Type(t),
                    ["_search"] => Route::TypeSearch(t),
                    ["_history"] => Route::TypeHistory(t),
                    [op] if op.starts_with('$') => operation(op, OperationLevel::Type(t)),
                    [id] => Route::Instance(t, valid_id(id)?),
                    [id, "_history"] => Route::InstanceHistory(t, valid_id(id)?),
                    [id, "_history", version] => {
                        Route::Version(t, valid_id(id)?, valid_id(version)?)
                    }
                    [id, op] if op.starts_with('$') => {
                        operation(op, OperationLevel::Instance(t, valid_id(id)?))
                    }
                    [id, target] => compartment(t, id, target, false, path)?,
                    [id, target, "_search"] => compartment(t, id, target, true, path)?,
                    _ => return Err(unknown()),
                }
            }
        };
        Ok(route)
    }
}

fn operation<'a>(segment: &'a str, level: OperationLevel<'a>) -> Route<'a> {
    Route::Operation {
        name: &segment[1..],
        level,
    }
}

fn compartment<'a>(
    owner: &'a str,
    id: &'a str,
    target: &'a str,
    post_search: bool,
    path: &str,
) -> Result<Route<'a>, ClassifyError> {
    if COMPARTMENT_TYPES.binary_search(&owner).is_err() {
        return Err(ClassifyError::UnknownRoute(path.to_owned()));
    }
    let target = match target {
        "*" => None,
        t => Some(resource_type(t)?),
    };
    Ok(Route::Compartment {
        owner,
        id: valid_id(id)?,
        target,
        post_search,
    })
}

fn resource_type(name: &str) -> Result<&str, ClassifyError> {
    if is_resource_type(name) {
        Ok(name)
    } else {
        Err(ClassifyError::UnknownResourceType(name.to_owned()))
    }
}

/// An R4 `id`: `[A-Za-z0-9\-\.]{1,64}` (hl7.org/fhir/R4/datatypes.html#id).
fn valid_id(id: &str) -> Result<&str, ClassifyError> {
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(id)
    } else {
        Err(ClassifyError::InvalidId(id.chars().take(80).collect()))
    }
}
