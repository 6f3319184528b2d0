//! What every part of the raw configuration mirror shares: [`keys_of`], which turns a raw
//! struct's serde derive into the list of keys the validator accepts, and [`RawDuration`]. The
//! raw mirror of the whole file is [`super::raw`]; blocks whose raw structs live beside their
//! validators (`sender`, `shared`) take these from here, so no two files of `config` import each
//! other.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration: a string with a unit (`300ms`, `5s`, `5m`, `12h`, `1d`) or an integer number of
/// seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Whole seconds.
    Seconds(u64),
    /// A number and a unit.
    Text(String),
}

/// The keys serde accepts for the struct `T` (its renamed field names), or the variant names of
/// the enum `T`. This is how the validator's known-key lists come from the raw mirror.
pub fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    // The capture always ends with `Stop`; the keys were recorded on the way.
    let _ = T::deserialize(KeyCapture { keys: &mut keys });
    keys
}

/// A deserializer that records the field (or variant) names a derived `Deserialize` announces.
struct KeyCapture<'a> {
    keys: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("key capture")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Stop {
        Stop
    }
}

impl<'de> Deserializer<'de> for KeyCapture<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.keys = fields;
        Err(Stop)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.keys = variants;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}
