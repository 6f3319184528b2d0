//! Every key path a raw configuration struct accepts, read from its serde derive. A derived
//! `Deserialize` announces its field names when it asks for a struct (the list
//! `fhirguard::config::raw::keys_of` returns, which the unknown-key check uses); this walk also
//! follows each field into its own type — through `Option`, lists (`name[].field`) and nested
//! structs — by deserializing the root again along one path of fields per step. Maps, enums,
//! `untagged` enums and scalars are leaves.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess};
use serde::de::{DeserializeOwned, Visitor};

/// The key paths of `T`, `.`-separated, with `[]` after a list's name.
pub(super) fn paths<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    walk::<T>(&mut Vec::new(), "", &mut found);
    found
}

/// Adds the keys below the node that `plan` (field indices from the root) leads to.
fn walk<T: DeserializeOwned>(plan: &mut Vec<usize>, prefix: &str, found: &mut BTreeSet<String>) {
    let Node::Struct(fields) = visit::<T>(plan).node else {
        return;
    };
    for (index, field) in fields.iter().enumerate() {
        let path = format!("{prefix}{field}");
        found.insert(path.clone());
        plan.push(index);
        let list = visit::<T>(plan).lists.contains(&plan.len());
        let below = if list {
            format!("{path}[].")
        } else {
            format!("{path}.")
        };
        walk::<T>(plan, &below, found);
        plan.pop();
    }
}

/// What a node turned out to be, and the depths at which a list was entered on the way.
#[derive(Default)]
struct Visit {
    node: Node,
    lists: Vec<usize>,
}

#[derive(Default)]
enum Node {
    #[default]
    Leaf,
    Struct(&'static [&'static str]),
}

fn visit<T: DeserializeOwned>(plan: &[usize]) -> Visit {
    let mut seen = Visit::default();
    // The walk always ends with `Stop`; what it saw is in `seen`.
    let _ = T::deserialize(Walker {
        plan,
        depth: 0,
        seen: &mut seen,
    });
    seen
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("key walk")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Stop {
        Stop
    }
}

/// Deserializes nothing: follows `plan` one field per struct, then records the node it reached.
struct Walker<'a> {
    plan: &'a [usize],
    depth: usize,
    seen: &'a mut Visit,
}

impl<'de> Deserializer<'de> for Walker<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.seen.lists.push(self.depth);
        visitor.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.plan.split_first() {
            None => {
                self.seen.node = Node::Struct(fields);
                Err(Stop)
            }
            Some((&index, rest)) => visitor.visit_map(OneField {
                key: Some(fields[index]),
                value: Walker {
                    plan: rest,
                    depth: self.depth + 1,
                    seen: self.seen,
                },
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

/// A map of one key, the field the plan follows, whose value is walked further.
struct OneField<'a> {
    key: Option<&'static str>,
    value: Walker<'a>,
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        let Some(key) = self.key.take() else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Stop> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let value = Walker {
            plan: self.value.plan,
            depth: self.value.depth,
            seen: &mut *self.value.seen,
        };
        seed.deserialize(value)
    }
}

/// A list of one element, walked with the same plan.
struct OneElement<'a>(Option<Walker<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(walker) => seed.deserialize(walker).map(Some),
            None => Ok(None),
        }
    }
}
