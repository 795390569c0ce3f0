//! Serde support: deserializing a [`Record`] into a struct.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use crate::record::Record;
use crate::value::{FromValue, Value};

/// The error of record deserialization; it names the column at fault.
#[derive(Debug)]
pub(crate) struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Deserializes a record as a map from column name to value (or as a sequence, for tuples).
pub(crate) struct RecordDeserializer<'a> {
    record: &'a Record,
}

impl<'a> RecordDeserializer<'a> {
    pub(crate) fn new(record: &'a Record) -> Self {
        Self { record }
    }
}

impl<'de> Deserializer<'de> for RecordDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(RecordMap {
            record: self.record,
            next: 0,
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(ValueSeq {
            items: self.record.values().iter(),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct map struct enum identifier ignored_any
    }
}

struct RecordMap<'a> {
    record: &'a Record,
    next: usize,
}

impl<'de> MapAccess<'de> for RecordMap<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.record.columns().get(self.next) {
            None => Ok(None),
            Some(name) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(name.as_str()))
                .map(Some),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        let i = self.next;
        self.next += 1;
        seed.deserialize(ValueDeserializer(&self.record.values()[i]))
            .map_err(|e| DeError(format!("column '{}': {e}", self.record.columns()[i])))
    }
}

struct ValueSeq<'a> {
    items: std::slice::Iter<'a, Value>,
}

impl<'de> SeqAccess<'de> for ValueSeq<'de> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        self.items
            .next()
            .map(|v| seed.deserialize(ValueDeserializer(v)))
            .transpose()
    }
}

/// Deserializes one value, using the type hint to convert where SQLite stores another type
/// (`0`/`1` for booleans, text for dates and JSON).
struct ValueDeserializer<'a>(&'a Value);

impl<'de> IntoDeserializer<'de, DeError> for ValueDeserializer<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl ValueDeserializer<'_> {
    fn typed<T: FromValue>(&self) -> Result<T, DeError> {
        T::from_value(self.0).map_err(de::Error::custom)
    }

    /// A JSON document held by the value: a JSON value, or text that parses as JSON.
    fn json(&self) -> Option<Result<serde_json::Value, DeError>> {
        match self.0 {
            Value::Json(j) => Some(Ok(j.clone())),
            Value::Text(s) => Some(serde_json::from_str(s).map_err(de::Error::custom)),
            _ => None,
        }
    }
}

fn from_json<'de, V: Visitor<'de>>(
    json: serde_json::Value,
    visitor: V,
) -> Result<V::Value, DeError> {
    json.into_deserializer()
        .deserialize_any(visitor)
        .map_err(de::Error::custom)
}

macro_rules! typed_method {
    ($($method:ident => $t:ty, $visit:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(self.typed::<$t>()?)
        }
    )*};
}

impl<'de> Deserializer<'de> for ValueDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Decimal(d) => visitor.visit_string(d.to_string()),
            Value::Text(s) => visitor.visit_borrowed_str(s),
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Value::Date(d) => visitor.visit_string(d.to_string()),
            Value::Time(t) => visitor.visit_string(t.to_string()),
            Value::TimeTz(..) | Value::Interval { .. } => {
                visitor.visit_string(self.0.to_string().trim_matches('\'').to_owned())
            }
            Value::DateTime(dt) => visitor.visit_string(format!("{dt:?}")),
            Value::DateTimeTz(dt) => visitor.visit_string(dt.to_rfc3339()),
            Value::Uuid(u) => visitor.visit_string(u.to_string()),
            Value::Json(j) => from_json(j.clone(), visitor),
            Value::Array(items) => visitor.visit_seq(ValueSeq {
                items: items.iter(),
            }),
        }
    }

    typed_method! {
        deserialize_bool => bool, visit_bool;
        deserialize_i8 => i8, visit_i8;
        deserialize_i16 => i16, visit_i16;
        deserialize_i32 => i32, visit_i32;
        deserialize_i64 => i64, visit_i64;
        deserialize_u8 => u8, visit_u8;
        deserialize_u16 => u16, visit_u16;
        deserialize_u32 => u32, visit_u32;
        deserialize_u64 => u64, visit_u64;
        deserialize_f32 => f32, visit_f32;
        deserialize_f64 => f64, visit_f64;
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Bytes(b) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(b.iter().copied()))
            }
            _ => match self.json() {
                Some(json) => from_json(json?, visitor),
                None => self.deserialize_any(visitor),
            },
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.json() {
            Some(json) => from_json(json?, visitor),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Text(s) => visitor.visit_enum(de::value::BorrowedStrDeserializer::new(s)),
            Value::Json(j) => j
                .clone()
                .into_deserializer()
                .deserialize_enum("", &[], visitor)
                .map_err(de::Error::custom),
            v => Err(de::Error::custom(format!(
                "cannot convert {} to an enum",
                v.type_name()
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::Deserialize;

    use crate::{Columns, ErrorKind, Record, Value};

    fn record(pairs: &[(&str, Value)]) -> Record {
        let cols = Columns::new(pairs.iter().map(|(n, _)| (*n).to_owned()).collect());
        Record::new(
            Arc::new(cols),
            pairs.iter().map(|(_, v)| v.clone()).collect(),
        )
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Level {
        Low,
        High,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        a: Vec<i32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        id: i64,
        name: String,
        active: bool,
        score: f64,
        note: Option<String>,
        level: Level,
        data: Inner,
        raw: serde_json::Value,
        bytes: Vec<u8>,
        day: chrono::NaiveDate,
        at: chrono::NaiveDateTime,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code, reason = "only deserialized")]
    struct Everything {
        row: Option<Row>,
        tuple: Option<(i64, String)>,
        chrono: Option<chrono::DateTime<chrono::FixedOffset>>,
        uuid: Option<uuid::Uuid>,
        decimal: Option<rust_decimal::Decimal>,
        list: Option<Vec<Option<i16>>>,
        map: Option<std::collections::HashMap<String, serde_json::Value>>,
        unit: Option<()>,
        char: Option<char>,
        small: Option<u8>,
    }

    proptest::proptest! {
        /// Fuzzing: any values in a record deserialize into a struct or fail with a
        /// decode error; never a panic.
        #[test]
        fn deserializing_any_record_never_panics(
            values in proptest::collection::vec(crate::value::tests::arb_value(), 10),
        ) {
            let names = [
                "row", "tuple", "chrono", "uuid", "decimal", "list", "map", "unit", "char", "small",
            ];
            let pairs: Vec<(&str, Value)> = names.iter().copied().zip(values).collect();
            let r = record(&pairs);
            if let Err(e) = r.deserialize::<Everything>() {
                proptest::prop_assert_eq!(e.kind(), ErrorKind::Decode, "{}", e);
            }
            let _ = r.deserialize::<Row>();
            let _ = r.deserialize::<(serde_json::Value, Option<String>, f64)>();
            let _ = r.deserialize::<std::collections::BTreeMap<String, serde_json::Value>>();
        }
    }

    #[test]
    fn record_into_struct_with_sqlite_storage_types() {
        let r = record(&[
            ("id", Value::Int(1)),
            ("name", Value::Text("Daisy".into())),
            ("active", Value::Int(1)),
            ("score", Value::Int(92)),
            ("note", Value::Null),
            ("level", Value::Text("high".into())),
            ("data", Value::Text(r#"{"a": [1, 2]}"#.into())),
            ("raw", Value::Json(serde_json::json!({"k": null}))),
            ("bytes", Value::Bytes(vec![1, 2])),
            ("day", Value::Text("2024-01-31".into())),
            (
                "at",
                Value::DateTime(
                    chrono::NaiveDate::from_ymd_opt(2024, 1, 31)
                        .unwrap()
                        .and_hms_opt(10, 0, 0)
                        .unwrap(),
                ),
            ),
        ]);
        let row: Row = r.deserialize().unwrap();
        assert_eq!(row.id, 1);
        assert_eq!(row.name, "Daisy");
        assert!(row.active);
        assert!((row.score - 92.0).abs() < f64::EPSILON);
        assert_eq!(row.note, None);
        assert_eq!(row.level, Level::High);
        assert_eq!(row.data, Inner { a: vec![1, 2] });
        assert_eq!(row.raw, serde_json::json!({"k": null}));
        assert_eq!(row.bytes, vec![1, 2]);
        assert_eq!(row.day.to_string(), "2024-01-31");
        assert_eq!(row.at.to_string(), "2024-01-31 10:00:00");
        assert_eq!(Level::Low, Level::Low);
    }

    #[test]
    fn tuples_and_errors_name_the_column() {
        let r = record(&[("a", Value::Int(1)), ("b", Value::Text("x".into()))]);
        let t: (i64, String) = r.deserialize().unwrap();
        assert_eq!(t, (1, "x".to_owned()));

        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Bad {
            a: i64,
            b: i64,
        }
        let e = r.deserialize::<Bad>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert!(
            e.to_string()
                .contains("column 'b': cannot convert text to i64"),
            "{e}"
        );
    }
}
