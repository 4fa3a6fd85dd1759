//! A request body as a JSON value whose objects name each key once. `serde_json` keeps the last of a
//! repeated key; a proxy, a WAF or the sender's own logs may read the first, and so see another
//! recipient or delivery state than the one we act on. A repeated key is refused: 400, naming it.
//!
//! A body holds at most `MAX_VALUES` JSON values. A value takes 32 bytes or more in memory against one
//! in the text (`0,`): a 2 MiB batch of `[0,0,…]` became a tree of 32 to 64 MiB before the route's count
//! of its items refused it. The reading stops at the first value over, so a body costs a few times its
//! size at most.

use std::{cell::Cell, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Number, Value};

/// The values a body may hold: a batch of 1,000 messages, each with a dozen fields, is some 13,000.
pub const MAX_VALUES: usize = 100_000;

/// A JSON value read with every object's keys distinct.
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueKeys(pub Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let left = Cell::new(MAX_VALUES);
        OneValue(&left).deserialize(deserializer).map(UniqueKeys)
    }
}

/// Reads one value (and what it holds), each counted against the values `.0` the body has left.
#[derive(Clone, Copy)]
struct OneValue<'b>(&'b Cell<usize>);

impl OneValue<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "the body holds more than {MAX_VALUES} JSON values"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for OneValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OneValue<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        self.count()?;
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number must be finite"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("the key \"{key}\" is given twice")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(text: &str) -> Result<Value, String> {
        serde_json::from_str::<UniqueKeys>(text)
            .map(|value| value.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"to":"+905551111111","n":[1,-2,3.5,18446744073709551615,null,true,{"a":{}}],"s":"\u00e7"}"#;
        assert_eq!(read(text), Ok(serde_json::from_str::<Value>(text).unwrap()));
        assert_eq!(read("[]"), Ok(json!([])));
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_it_at_any_depth() {
        let top = read(r#"{"to":"+905551111111","to":"+905552222222","content":"x"}"#).unwrap_err();
        assert!(top.starts_with("the key \"to\" is given twice"), "{top}");
        let deep = read(r#"{"messages":[{"status":"delivered","status":"undelivered"}]}"#).unwrap_err();
        assert!(deep.starts_with("the key \"status\" is given twice"), "{deep}");
    }

    #[test]
    fn a_body_of_more_values_than_a_request_needs_is_refused_as_it_is_read() {
        let at_most = format!("[{}0]", "0,".repeat(MAX_VALUES - 2));
        assert_eq!(
            read(&at_most).map(|v| v.as_array().map(Vec::len)),
            Ok(Some(MAX_VALUES - 1))
        );
        let nested = format!("{{\"a\":[{}[0]]}}", "[0],".repeat(MAX_VALUES / 2));
        let refused = read(&nested).unwrap_err();
        assert!(
            refused.starts_with(&format!("the body holds more than {MAX_VALUES} JSON values")),
            "{refused}"
        );
    }
}
