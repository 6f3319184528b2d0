//! `fhir::json::parse` (SPEC §7): strict JSON agrees with serde_json on every document it
//! accepts, and accepts every document serde_json accepts that has no duplicate member names.
#![no_main]

use std::collections::HashSet;
use std::fmt;

use fhirguard::fhir::json::{self, JsonError};
use libfuzzer_sys::fuzz_target;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let loose = serde_json::from_slice::<Value>(data);
    match json::parse(data) {
        Ok(strict) => {
            let loose = loose.expect("strict parse accepted what serde_json refuses");
            assert_eq!(strict, loose, "strict and serde_json read different values");
            assert_eq!(
                has_duplicates(data),
                Some(false),
                "accepted a duplicate name"
            );
        }
        // A duplicate is reported where it is met, possibly before a syntax error further on;
        // either way the document is refused. What must never happen is a document serde_json
        // reads, free of duplicates, refused as holding one.
        Err(JsonError::DuplicateMember(name)) if loose.is_ok() => {
            assert_eq!(
                has_duplicates(data),
                Some(true),
                "refused a duplicate {name:?} that is not there"
            );
        }
        Err(JsonError::DuplicateMember(_)) => {}
        Err(JsonError::Syntax(error)) => {
            assert!(
                loose.is_err(),
                "strict parse refused what serde_json reads: {error}"
            );
        }
    }
});

/// An independent reading: does any object hold one name twice? `None` when not JSON.
fn has_duplicates(data: &[u8]) -> Option<bool> {
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    let found = Duplicates.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(found)
}

struct Duplicates;

impl<'de> DeserializeSeed<'de> for Duplicates {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Duplicates {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(inner) = seq.next_element_seed(Duplicates)? {
            found |= inner;
        }
        Ok(found)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut names = HashSet::new();
        let mut found = false;
        while let Some(name) = map.next_key::<String>()? {
            found |= !names.insert(name);
            found |= map.next_value_seed(Duplicates)?;
        }
        Ok(found)
    }
}
