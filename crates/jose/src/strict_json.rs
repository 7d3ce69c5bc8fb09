//! JSON read the way a JOSE header or a JWT claim set must be: a member
//! name that appears twice in one object, at any depth, is refused.
//!
//! RFC 7515 §5.2 lets a parser either refuse duplicate member names or keep
//! the last one, and serde_json keeps the last one silently. Two readers
//! that choose differently see one signed token as two different tokens
//! (one checks `"sub": "a"`, the other acts on `"sub": "admin"`), so RFC
//! 8725 practice is to refuse. Names are compared after JSON unescaping, so
//! `"s\u0075b"` is `sub`. The parsing is serde_json's; only the building of
//! objects differs from `serde_json::Value`'s.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as JSON, refusing any object with a repeated member name.
pub(crate) fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|strict| strict.0)
}

/// A JSON value with no repeated member names.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom("a member name appears twice in one object"));
            }
            let Strict(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serde_json_reads_when_no_name_repeats() {
        let text =
            br#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "s\u0075b": "\u00e9", "n": 18446744073709551615}"#;
        assert_eq!(from_slice(text).unwrap(), serde_json::from_slice::<Value>(text).unwrap());
    }

    #[test]
    fn a_repeated_name_is_refused_at_any_depth_and_however_escaped() {
        for text in [
            r#"{"sub": "a", "sub": "b"}"#,
            r#"{"sub": "a", "s\u0075b": "a"}"#,
            r#"{"act": {"sub": "a", "sub": "b"}}"#,
            r#"{"aud": [1, {"x": 1, "x": 1}]}"#,
            r#"[{"k": 1, "k": 2}]"#,
        ] {
            assert!(from_slice(text.as_bytes()).is_err(), "{text}");
        }
        // The same name in sibling objects is no repetition.
        assert!(from_slice(br#"{"a": {"k": 1}, "b": {"k": 2}}"#).is_ok());
    }
}
