//! Walking a parsed configuration document: a [`Node`] is a value and its path in the file, with
//! typed extraction that records a [`ConfigError`] instead of stopping, so one pass reports every
//! mistake (SPEC §3). Explicit `null` counts as "not set" everywhere: `key:` and `key: null` take
//! the default.

use std::time::Duration;

use yaml_serde::{Mapping, Value};

use super::ConfigError;

/// The longest duration accepted anywhere; larger values are mistakes, and would overflow
/// instant arithmetic downstream.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The errors found so far, in walk order.
#[derive(Debug, Default)]
pub(super) struct Errors(pub(super) Vec<ConfigError>);

impl Errors {
    pub(super) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }
}

/// `parent.key`, or `key` at the top level.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// What a value is, for "expected X, found Y" messages.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(_) => "a string".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(tagged) => format!("a tagged value ({})", tagged.tag),
    }
}

/// A value and where it is.
#[derive(Debug, Clone)]
pub(super) struct Node<'a> {
    pub(super) path: String,
    pub(super) value: &'a Value,
}

impl<'a> Node<'a> {
    pub(super) fn new(path: impl Into<String>, value: &'a Value) -> Node<'a> {
        Node {
            path: path.into(),
            value,
        }
    }

    fn expected(&self, errors: &mut Errors, what: &str) {
        errors.push(
            &self.path,
            format!("expected {what}, found {}", describe(self.value)),
        );
    }

    /// A mapping whose keys must all be in `keys` (from [`super::raw::keys_of`]).
    pub(super) fn object(&self, errors: &mut Errors, keys: &[&str]) -> Option<Object<'a>> {
        let object = self.map(errors)?;
        for (key, _) in object.entries(errors) {
            if !keys.contains(&key) {
                errors.push(
                    &object.key_path(key),
                    format!("unknown key '{key}'; expected one of: {}", keys.join(", ")),
                );
            }
        }
        Some(object)
    }

    /// A mapping with free-form keys (role names, group names).
    pub(super) fn map(&self, errors: &mut Errors) -> Option<Object<'a>> {
        if let Value::Mapping(map) = self.value {
            Some(Object {
                path: self.path.clone(),
                map,
            })
        } else {
            self.expected(errors, "a mapping");
            None
        }
    }

    pub(super) fn string(&self, errors: &mut Errors) -> Option<&'a str> {
        if let Value::String(text) = self.value {
            Some(text)
        } else {
            self.expected(errors, "a string");
            None
        }
    }

    /// A string that must not be empty or blank.
    pub(super) fn text(&self, errors: &mut Errors) -> Option<&'a str> {
        let text = self.string(errors)?;
        if text.trim().is_empty() {
            errors.push(&self.path, "must not be empty");
            return None;
        }
        Some(text)
    }

    pub(super) fn bool(&self, errors: &mut Errors) -> Option<bool> {
        if let Value::Bool(b) = self.value {
            Some(*b)
        } else {
            self.expected(errors, "true or false");
            None
        }
    }

    /// A whole number, at least `min`.
    pub(super) fn count(&self, errors: &mut Errors, min: u64) -> Option<usize> {
        let Value::Number(number) = self.value else {
            self.expected(errors, "a whole number");
            return None;
        };
        let Some(n) = number.as_u64() else {
            let message = if number.as_i64().is_some() {
                "must not be negative"
            } else {
                "expected a whole number"
            };
            errors.push(&self.path, message);
            return None;
        };
        if n < min {
            errors.push(&self.path, format!("must be at least {min}"));
            return None;
        }
        let Ok(n) = usize::try_from(n) else {
            errors.push(&self.path, "is too large");
            return None;
        };
        Some(n)
    }

    /// A duration: `"300ms"`, `"5s"`, `"5m"`, `"12h"`, `"1d"`, or an integer number of seconds.
    /// Zero is an error unless `zero_allowed`.
    pub(super) fn duration(&self, errors: &mut Errors, zero_allowed: bool) -> Option<Duration> {
        let parsed = match self.value {
            Value::Number(number) => match (number.as_u64(), number.as_i64()) {
                (Some(seconds), _) => Ok(Duration::from_secs(seconds)),
                (None, Some(_)) => Err("must not be negative".to_owned()),
                (None, None) => Err(
                    "expected whole seconds or a string with a unit (e.g. \"1500ms\")".to_owned(),
                ),
            },
            Value::String(text) => parse_duration(text),
            _ => {
                self.expected(
                    errors,
                    "a duration (e.g. \"5s\", \"300ms\", or whole seconds)",
                );
                return None;
            }
        };
        let checked = parsed.and_then(|duration| {
            if duration > MAX_DURATION {
                Err("is too large (at most 365d)".to_owned())
            } else if duration.is_zero() && !zero_allowed {
                Err("must be greater than zero".to_owned())
            } else {
                Ok(duration)
            }
        });
        checked
            .map_err(|message| errors.push(&self.path, message))
            .ok()
    }

    /// A list; its items carry `path[i]`.
    pub(super) fn list(&self, errors: &mut Errors) -> Option<Vec<Node<'a>>> {
        if let Value::Sequence(items) = self.value {
            Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Node::new(format!("{}[{i}]", self.path), item))
                    .collect(),
            )
        } else {
            self.expected(errors, "a list");
            None
        }
    }
}

/// `"300ms"`, `"5s"`, `"5m"`, `"12h"`, `"1d"`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "'{text}' is not a duration; use a number and a unit (300ms, 5s, 5m, 12h, 1d) \
             or whole seconds"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| invalid())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    amount
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| "is too large (at most 365d)".to_owned())
}

/// A base URL: http or https, with a host, no query, no fragment, no surrounding whitespace.
pub(super) fn base_url(text: &str) -> Result<url::Url, String> {
    if text.trim() != text {
        return Err(format!("'{text}' has surrounding whitespace"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{text}' must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{text}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{text}' must not have a query or fragment"));
    }
    Ok(url)
}

/// `url` with its path's trailing '/' removed (the root path "/" cannot be removed).
pub(super) fn without_trailing_slash(mut url: url::Url) -> url::Url {
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    url
}

/// A mapping and where it is.
#[derive(Debug, Clone)]
pub(super) struct Object<'a> {
    pub(super) path: String,
    map: &'a Mapping,
}

impl<'a> Object<'a> {
    pub(super) fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; `None` when absent or null.
    pub(super) fn get(&self, key: &str) -> Option<Node<'a>> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Node::new(self.key_path(key), value)),
        }
    }

    /// `key` as `true`/`false`; `false` when absent or wrong.
    pub(super) fn flag(&self, key: &str, errors: &mut Errors) -> bool {
        self.get(key)
            .and_then(|node| node.bool(errors))
            .unwrap_or(false)
    }

    /// `key` as a duration (`30s`, `5m`…); `default` when absent or wrong.
    pub(super) fn duration_or(
        &self,
        key: &str,
        default: Duration,
        zero_allowed: bool,
        errors: &mut Errors,
    ) -> Duration {
        self.get(key)
            .and_then(|node| node.duration(errors, zero_allowed))
            .unwrap_or(default)
    }

    /// `key` as a count of at least `min`; `default` when absent or wrong.
    pub(super) fn count_or(
        &self,
        key: &str,
        default: usize,
        min: u64,
        errors: &mut Errors,
    ) -> usize {
        self.get(key)
            .and_then(|node| node.count(errors, min))
            .unwrap_or(default)
    }

    /// Whether `key` is written at all (even as null).
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The string-keyed entries; a non-string key is an error.
    pub(super) fn entries(&self, errors: &mut Errors) -> Vec<(&'a str, Node<'a>)> {
        let mut entries = Vec::with_capacity(self.map.len());
        for (key, value) in self.map {
            if let Value::String(key) = key {
                entries.push((key.as_str(), Node::new(self.key_path(key), value)));
            } else {
                errors.push(
                    &self.path,
                    format!("keys must be strings, found {}", describe(key)),
                );
            }
        }
        entries
    }
}

/// One of `variants` (from the raw enum), case-insensitively; `None` when absent or wrong.
pub(super) fn choice(
    object: &Object<'_>,
    key: &str,
    variants: &[&'static str],
    errors: &mut Errors,
) -> Option<&'static str> {
    let node = object.get(key)?;
    let text = node.string(errors)?;
    let found = variants
        .iter()
        .find(|v| v.eq_ignore_ascii_case(text))
        .copied();
    if found.is_none() {
        errors.push(
            &node.path,
            format!(
                "unknown value '{text}'; expected one of: {}",
                variants.join(", ")
            ),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("300ms", Duration::from_millis(300)),
            ("5s", Duration::from_secs(5)),
            ("5m", Duration::from_secs(300)),
            ("12h", Duration::from_secs(43_200)),
            ("1d", Duration::from_secs(86_400)),
            ("0s", Duration::ZERO),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "-5s",
            "1.5s",
            "5sec",
            "5S",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("18446744073709551615d").is_err());
    }
}
