//! A proof's claims set (RFC 9449 §4.2), read in one pass into the members §4.3 checks —
//! `jti`, `htm`, `htu`, `iat`, `ath`, `nonce` — borrowed from the decoded payload where the JSON
//! has no escapes; every other member is skipped unread. Each member reads as a `serde_json::Map`
//! would give it: the last of a repeated name wins, a member of another JSON type reads as
//! absent (the nonce as empty), and `iat` is a NumericDate (RFC 7519 §2: an integer, or a
//! non-negative number whose fraction is dropped).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The members of a proof's claims that fhirguard reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Claims<'a> {
    pub(super) jti: Option<Cow<'a, str>>,
    pub(super) htm: Option<Cow<'a, str>>,
    pub(super) htu: Option<Cow<'a, str>>,
    pub(super) ath: Option<Cow<'a, str>>,
    /// Unix seconds; `None` when absent or not a NumericDate.
    pub(super) iat: Option<u64>,
    /// Present: the string, or empty when it is not one (never a valid nonce).
    pub(super) nonce: Option<Cow<'a, str>>,
}

impl<'a> Claims<'a> {
    /// The claims of a decoded payload; `None` when it is not one JSON object.
    pub(super) fn parse(payload: &'a [u8]) -> Option<Claims<'a>> {
        serde_json::from_slice(payload).ok()
    }
}

impl<'de> Deserialize<'de> for Claims<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims<'de>, A::Error> {
        let mut claims = Claims::default();
        // JSON member names are strings: a name of another kind is no claim's.
        while let Some(name) = map.next_key::<Member>()? {
            match name.text().as_deref().unwrap_or_default() {
                "jti" => claims.jti = map.next_value::<Member>()?.text(),
                "htm" => claims.htm = map.next_value::<Member>()?.text(),
                "htu" => claims.htu = map.next_value::<Member>()?.text(),
                "ath" => claims.ath = map.next_value::<Member>()?.text(),
                "iat" => claims.iat = map.next_value::<Member>()?.numeric_date(),
                "nonce" => {
                    let nonce = map.next_value::<Member>()?.text();
                    claims.nonce = Some(nonce.unwrap_or_default());
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(claims)
    }
}

/// One JSON value, as much of it as a claim needs.
enum Member<'a> {
    Text(Cow<'a, str>),
    /// `Value::as_u64`, else `Value::as_f64` when not negative, truncated.
    Number(Option<u64>),
    Other,
}

impl<'a> Member<'a> {
    fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Member::Text(text) => Some(text),
            Member::Number(_) | Member::Other => None,
        }
    }

    fn numeric_date(self) -> Option<u64> {
        match self {
            Member::Number(seconds) => seconds,
            Member::Text(_) | Member::Other => None,
        }
    }
}

impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Member<'de>, E> {
        Ok(Member::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Member<'de>, E> {
        Ok(Member::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Member<'de>, E> {
        Ok(Member::Text(Cow::Owned(text)))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Member<'de>, E> {
        Ok(Member::Number(Some(number)))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Member<'de>, E> {
        Ok(Member::Number(u64::try_from(number).ok()))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Member<'de>, E> {
        // `as` saturates, as the `Value` reading did.
        Ok(Member::Number((number >= 0.0).then_some(number as u64)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Member<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Member::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Member<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Member::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// The claims as the `serde_json::Map` reading gives them.
    fn by_map(payload: &str) -> Option<Claims<'static>> {
        let map: Map<String, Value> = serde_json::from_str(payload).ok()?;
        let text = |name: &str| {
            map.get(name)
                .and_then(Value::as_str)
                .map(|s| Cow::Owned(s.to_owned()))
        };
        Some(Claims {
            jti: text("jti"),
            htm: text("htm"),
            htu: text("htu"),
            ath: text("ath"),
            iat: map.get("iat").and_then(|iat| {
                iat.as_u64()
                    .or_else(|| iat.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            }),
            nonce: map
                .get("nonce")
                .map(|nonce| Cow::Owned(nonce.as_str().unwrap_or_default().to_owned())),
        })
    }

    #[test]
    fn reads_as_a_json_map_would() {
        for payload in [
            r#"{"jti":"j","htm":"GET","htu":"https://a/b","iat":1800000000,"ath":"x"}"#,
            r#"{"jti":"j","jti":"k","iat":1,"iat":"late"}"#,
            r#"{"jti":7,"htm":null,"htu":["x"],"ath":{"a":[1,{"b":2}]},"iat":-5}"#,
            r#"{"iat":1.9e9,"nonce":5}"#,
            r#"{"iat":1.5,"nonce":"n","x":{"jti":"inner"}}"#,
            r#"{"iat":1e400}"#,
            r#"{"iat":-0.0,"j\u0074i":"esc\"aped","nonce":null}"#,
            r#"{"iat":18446744073709551616}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"jti":"j"} x"#,
            r#"{"jti":"j""#,
            r#""jti""#,
            r#"{"iat":true,"htm":false}"#,
        ] {
            let ours = Claims::parse(payload.as_bytes());
            assert_eq!(ours, by_map(payload), "{payload}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let claims = Claims::parse(br#"{"jti":"abc","htu":"a\/b"}"#).unwrap();
        assert!(matches!(claims.jti, Some(Cow::Borrowed("abc"))));
        assert_eq!(claims.htu.as_deref(), Some("a/b"));
    }
}
