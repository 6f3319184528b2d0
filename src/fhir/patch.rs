//! JSON Patch (RFC 6902) applied to a FHIR JSON resource, with JSON Pointer (RFC 6901) paths,
//! so that fhirguard can see what a `PATCH` would store before the FHIR server stores it (a
//! patch under a patient context must leave the resource in the compartment). Only JSON Patch
//! is evaluated; a FHIRPath Patch (`Parameters`) is not, and callers refuse what this module
//! cannot evaluate. Pure: no I/O.

use serde_json::Value;

/// The media type of a JSON Patch document (RFC 6902 §6).
pub const JSON_PATCH: &str = "application/json-patch+json";

/// Why a patch document could not be applied. Any of these means "cannot evaluate": refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The document is not a JSON array (RFC 6902 §3).
    #[error("the JSON Patch document is not a JSON array of operations (RFC 6902 §3)")]
    NotAnArray,
    /// One operation cannot be applied; RFC 6902 §5: the whole patch then fails.
    #[error("JSON Patch operation {index}: {problem}")]
    Operation {
        /// The operation's position in the document, from 0.
        index: usize,
        /// What is wrong with it.
        problem: Problem,
    },
}

/// What is wrong with one operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `op` is not one of the six RFC 6902 operations.
    #[error("'op' must be add, remove, replace, move, copy or test (RFC 6902 §4)")]
    UnknownOp,
    /// `op`, `path` or (for `move` and `copy`) `from` is absent or not a string; holds the
    /// member's name.
    #[error("'{0}' is required and must be a string")]
    MissingMember(&'static str),
    /// An `add`, `replace` or `test` without `value`.
    #[error("'value' is required")]
    MissingValue,
    /// A pointer that is not empty and does not start with `/`, or has a bad `~` escape.
    #[error("'{0}' is not a JSON Pointer (RFC 6901 §3)")]
    BadPointer(String),
    /// The pointer names a location that does not exist in the document as patched so far.
    #[error("'{0}' does not exist in the resource")]
    NoTarget(String),
    /// A `move` into one of its own children.
    #[error("'from' is a proper prefix of 'path' (RFC 6902 §4.4)")]
    MoveIntoItself,
    /// A `test` whose value differs from the target's (RFC 6902 §4.6).
    #[error("the test failed")]
    TestFailed,
    /// The `copy` operations together exceed [`MAX_COPIED_VALUES`].
    #[error("the copies add more than {MAX_COPIED_VALUES} JSON values in all")]
    TooMuchCopied,
}

/// How many JSON values (every object, array and scalar, nested ones included) the `copy`
/// operations of one patch may add in all. A `copy` is the one operation whose result can be
/// larger than its request — copying the document into itself doubles it, and forty such
/// operations would ask for 2^40 times its size — so fhirguard bounds what it evaluates; a
/// resource is far smaller.
pub const MAX_COPIED_VALUES: usize = 100_000;

/// Applies `patch` (a parsed JSON Patch document) to `document`, all or nothing: on error the
/// document is left as it was (RFC 6902 §5).
pub fn apply(document: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let operations = patch.as_array().ok_or(PatchError::NotAnArray)?;
    let mut patched = document.clone();
    let mut copied = 0;
    for (index, operation) in operations.iter().enumerate() {
        apply_one(&mut patched, operation, &mut copied)
            .map_err(|problem| PatchError::Operation { index, problem })?;
    }
    *document = patched;
    Ok(())
}

fn apply_one(document: &mut Value, operation: &Value, copied: &mut usize) -> Result<(), Problem> {
    let member = |name: &'static str| operation[name].as_str().ok_or(Problem::MissingMember(name));
    let value = || operation.get("value").cloned().ok_or(Problem::MissingValue);
    let path = member("path")?;
    let target = pointer(path)?;
    match member("op")? {
        "add" => add(document, &target, value()?, path),
        "remove" => remove(document, &target, path).map(drop),
        "replace" => {
            let slot = get_mut(document, &target).ok_or_else(|| no_target(path))?;
            *slot = value()?;
            Ok(())
        }
        "move" => {
            let from = member("from")?;
            let source = pointer(from)?;
            if target.len() > source.len() && target.starts_with(&source) {
                return Err(Problem::MoveIntoItself);
            }
            let moved = remove(document, &source, from)?;
            add(document, &target, moved, path)
        }
        "copy" => {
            let from = member("from")?;
            let source = get(document, &pointer(from)?).ok_or_else(|| no_target(from))?;
            *copied = count_values(source, *copied).ok_or(Problem::TooMuchCopied)?;
            let value = source.clone();
            add(document, &target, value, path)
        }
        "test" => match get(document, &target) {
            Some(found) if *found == value()? => Ok(()),
            Some(_) => Err(Problem::TestFailed),
            None => Err(no_target(path)),
        },
        _ => Err(Problem::UnknownOp),
    }
}

/// `so_far` plus the number of JSON values in `value`; `None` past [`MAX_COPIED_VALUES`] (the
/// count stops there, so a huge value costs no more than the bound).
fn count_values(value: &Value, so_far: usize) -> Option<usize> {
    let mut count = so_far.checked_add(1).filter(|c| *c <= MAX_COPIED_VALUES)?;
    match value {
        Value::Array(items) => {
            for item in items {
                count = count_values(item, count)?;
            }
        }
        Value::Object(members) => {
            for member in members.values() {
                count = count_values(member, count)?;
            }
        }
        _ => {}
    }
    Some(count)
}

fn no_target(path: &str) -> Problem {
    Problem::NoTarget(path.to_owned())
}

/// The reference tokens of a JSON Pointer (RFC 6901 §3–4): `""` is the whole document, every
/// other pointer starts with `/`; `~1` is `/` and `~0` is `~`, any other `~` is an error.
fn pointer(text: &str) -> Result<Vec<String>, Problem> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bad = || Problem::BadPointer(text.to_owned());
    let rest = text.strip_prefix('/').ok_or_else(bad)?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return Err(bad()),
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token (RFC 6901 §4): digits, no leading zero.
fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    let canonical = token == "0" || !token.starts_with('0');
    (digits && canonical).then(|| token.parse().ok()).flatten()
}

fn get<'a>(document: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens
        .iter()
        .try_fold(document, |value, token| match value {
            Value::Object(object) => object.get(token),
            Value::Array(items) => items.get(index(token)?),
            _ => None,
        })
}

fn get_mut<'a>(document: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens
        .iter()
        .try_fold(document, |value, token| match value {
            Value::Object(object) => object.get_mut(token),
            Value::Array(items) => items.get_mut(index(token)?),
            _ => None,
        })
}

/// RFC 6902 §4.1: the root is replaced; an object member is set; an array element is
/// inserted at the index (`-`: appended). The parent must exist.
fn add(document: &mut Value, tokens: &[String], value: Value, path: &str) -> Result<(), Problem> {
    let Some((last, parent)) = tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    match get_mut(document, parent) {
        Some(Value::Object(object)) => {
            object.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let at = match last.as_str() {
                "-" => items.len(),
                token => index(token)
                    .filter(|at| *at <= items.len())
                    .ok_or_else(|| no_target(path))?,
            };
            items.insert(at, value);
            Ok(())
        }
        _ => Err(no_target(path)),
    }
}

/// RFC 6902 §4.2: the target must exist; the root cannot be removed.
fn remove(document: &mut Value, tokens: &[String], path: &str) -> Result<Value, Problem> {
    let (last, parent) = tokens.split_last().ok_or_else(|| no_target(path))?;
    match get_mut(document, parent) {
        Some(Value::Object(object)) => object.remove(last).ok_or_else(|| no_target(path)),
        Some(Value::Array(items)) => {
            let at = index(last)
                .filter(|at| *at < items.len())
                .ok_or_else(|| no_target(path))?;
            Ok(items.remove(at))
        }
        _ => Err(no_target(path)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patched(document: Value, patch: Value) -> Result<Value, PatchError> {
        let mut document = document;
        apply(&mut document, &patch).map(|()| document)
    }

    #[test]
    fn copies_that_would_grow_the_document_without_bound_are_refused() {
        // Each copy of the whole document into itself doubles it: 2^60 values were asked for.
        let doubling: Vec<Value> = (0..60)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
            .collect();
        let error = patched(
            json!({"resourceType": "Observation"}),
            Value::Array(doubling),
        )
        .expect_err("unbounded growth");
        assert!(matches!(
            error,
            PatchError::Operation {
                problem: Problem::TooMuchCopied,
                ..
            }
        ));
        // A few copies of a small resource are evaluated as before.
        let few = json!([{"op": "copy", "from": "", "path": "/copy"}]);
        let done = patched(json!({"resourceType": "Observation", "id": "1"}), few).unwrap();
        assert_eq!(done["copy"]["id"], "1");
    }

    #[test]
    fn operations_follow_rfc_6902() {
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/1"},
                         "performer": [{"reference": "Practitioner/7"}]});
        let replace =
            json!([{"op": "replace", "path": "/subject/reference", "value": "Patient/2"}]);
        assert_eq!(
            patched(obs.clone(), replace).unwrap()["subject"]["reference"],
            "Patient/2"
        );
        let append =
            json!([{"op": "add", "path": "/performer/-", "value": {"reference": "Patient/2"}}]);
        assert_eq!(
            patched(obs.clone(), append).unwrap()["performer"][1]["reference"],
            "Patient/2"
        );
        let insert = json!([{"op": "add", "path": "/performer/0", "value": {"reference": "X/1"}}]);
        assert_eq!(
            patched(obs.clone(), insert).unwrap()["performer"][1]["reference"],
            "Practitioner/7"
        );
        let moved = json!([
            {"op": "copy", "from": "/subject", "path": "/focus"},
            {"op": "move", "from": "/performer/0", "path": "/subject"},
            {"op": "test", "path": "/focus/reference", "value": "Patient/1"},
            {"op": "remove", "path": "/focus"},
        ]);
        let result = patched(obs.clone(), moved).unwrap();
        assert_eq!(result["subject"]["reference"], "Practitioner/7");
        assert_eq!(result["performer"], json!([]));
        assert!(result.get("focus").is_none());
        // ~1 and ~0 escapes.
        let escaped = json!([{"op": "add", "path": "/a~1b~0c", "value": 1}]);
        assert_eq!(patched(json!({}), escaped).unwrap()["a/b~c"], 1);
        // The root can be replaced whole.
        let root = json!([{"op": "replace", "path": "", "value": {"resourceType": "Patient"}}]);
        assert_eq!(patched(obs, root).unwrap()["resourceType"], "Patient");
    }

    #[test]
    fn what_cannot_be_evaluated_is_an_error_and_changes_nothing() {
        let obs = json!({"subject": {"reference": "Patient/1"}, "list": [1, 2]});
        let bad = [
            json!({"op": "add"}),
            json!([{"op": "frobnicate", "path": "/x", "value": 1}]),
            json!([{"path": "/x", "value": 1}]),
            json!([{"op": "add", "path": "/x"}]),
            json!([{"op": "add", "path": "x", "value": 1}]),
            json!([{"op": "add", "path": "/a~2", "value": 1}]),
            json!([{"op": "add", "path": "/missing/x", "value": 1}]),
            json!([{"op": "add", "path": "/list/01", "value": 1}]),
            json!([{"op": "add", "path": "/list/3", "value": 1}]),
            json!([{"op": "remove", "path": "/list/2"}]),
            json!([{"op": "remove", "path": ""}]),
            json!([{"op": "replace", "path": "/nope", "value": 1}]),
            json!([{"op": "move", "from": "/subject", "path": "/subject/x"}]),
            json!([{"op": "test", "path": "/list/0", "value": 2}]),
            json!([{"op": "replace", "path": "/subject/reference", "value": "Patient/2"},
                   {"op": "test", "path": "/nope", "value": 1}]),
        ];
        for patch in bad {
            let mut document = obs.clone();
            assert!(apply(&mut document, &patch).is_err(), "{patch}");
            assert_eq!(document, obs, "{patch}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn any_patch_text_never_panics(text in ".{0,200}", path in "[/~0-9a-z-]{0,12}") {
                let document = json!({"a": [1, {"b": 2}], "c": {"d": "e"}});
                if let Ok(patch) = serde_json::from_str::<Value>(&text) {
                    let _ = apply(&mut document.clone(), &patch);
                }
                for op in ["add", "remove", "replace", "move", "copy", "test"] {
                    let patch = json!([{"op": op, "path": path, "from": path, "value": 1}]);
                    let _ = apply(&mut document.clone(), &patch);
                }
            }
        }
    }
}
