//! JSON as fhirguard reads a body it inspects and then forwards (SPEC §7): the body must mean
//! the same to fhirguard and to the FHIR server. RFC 8259 §4 leaves the meaning of duplicate
//! member names to each parser — some keep the first, some the last (serde_json), some refuse —
//! so a body with `"subject"` twice could be checked under one patient and stored under another.
//! [`parse`] refuses duplicate member names anywhere in the document, at any depth, comparing
//! names after their escapes are decoded (`"sub\u006aect"` is `"subject"`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not JSON fhirguard will act on.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (syntax, encoding, trailing data).
    #[error("not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// The same member name twice in one object.
    #[error("duplicate JSON member name \"{0}\" (RFC 8259 §4 leaves its meaning to each parser)")]
    DuplicateMember(String),
}

/// Parses `bytes` as JSON, refusing duplicate member names at any depth.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| match duplicate_name(&error) {
            Some(name) => JsonError::DuplicateMember(name),
            None => JsonError::Syntax(error),
        })?;
    Ok(value)
}

/// The marker a duplicate carries through serde's error type, which holds only a message.
const DUPLICATE: &str = "\u{0}duplicate member:";

fn duplicate_name(error: &serde_json::Error) -> Option<String> {
    let message = error.to_string();
    let rest = message.strip_prefix(DUPLICATE)?;
    // serde_json appends " at line L column C".
    let name = rest.rsplit_once(" at line ").map_or(rest, |(name, _)| name);
    Some(name.to_owned())
}

/// A `serde_json::Value` seed whose objects refuse a second member of the same name.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom(format_args!("{DUPLICATE}{name}")));
            }
            let value = map.next_value_seed(Strict)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> Option<String> {
        match parse(text.as_bytes()) {
            Err(JsonError::DuplicateMember(name)) => Some(name),
            _ => None,
        }
    }

    #[test]
    fn well_formed_documents_parse_as_serde_json_does() {
        for text in [
            r#"{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}"#,
            r#"[1, -2, 3.5, true, null, "x", {"a": [{"a": 1}]}]"#,
            r#"{"a": {"b": 1}, "b": {"a": 2}}"#,
            r#"{"A": 1, "a": 2}"#,
        ] {
            let strict = parse(text.as_bytes()).unwrap();
            let loose: Value = serde_json::from_str(text).unwrap();
            assert_eq!(strict, loose, "{text}");
        }
    }

    #[test]
    fn duplicate_member_names_are_refused_at_any_depth() {
        let cases = [
            (r#"{"subject": 1, "subject": 2}"#, "subject"),
            (
                r#"{"resourceType":"Observation","subject":{"reference":"Patient/p2"},"subject":{"reference":"Patient/p1"}}"#,
                "subject",
            ),
            (
                r#"{"a": {"reference": "x", "reference": "y"}}"#,
                "reference",
            ),
            (
                r#"{"entry": [{"request": {"url": "a", "url": "b"}}]}"#,
                "url",
            ),
            // Escapes are decoded before names are compared.
            (r#"{"subject": 1, "sub\u006aect": 2}"#, "subject"),
            (r#"{"a\/b": 1, "a/b": 2}"#, "a/b"),
            // A name holding the words " at line " is still reported whole.
            (r#"{"x at line y": 1, "x at line y": 2}"#, "x at line y"),
        ];
        for (text, name) in cases {
            assert_eq!(duplicate(text).as_deref(), Some(name), "{text}");
        }
    }

    #[test]
    fn what_is_not_json_is_a_syntax_error() {
        for text in [
            "",
            "{",
            r#"{"a": 1,}"#,
            r#"{"a": 1} {"b": 2}"#,
            "// comment\n{}",
            r#"{"a": "\ud800"}"#,
            "\u{feff}{}",
            "{\"a\": NaN}",
        ] {
            assert!(
                matches!(parse(text.as_bytes()), Err(JsonError::Syntax(_))),
                "{text:?}"
            );
        }
    }
}
