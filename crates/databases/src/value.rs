//! [`Value`]: what goes in as a parameter and comes out of a row, and the conversions from and to
//! Rust types ([`From`] into a value, [`FromValue`] out of one).

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// One SQL value.
///
/// Rows come back with the value the database stored: SQLite, which has no date or decimal
/// storage class, returns [`Value::Text`] for a `DATE` column, and [`FromValue`] parses it when a
/// typed value is asked for (`record.get::<NaiveDate>("day")`).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Value {
    /// SQL `NULL`.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX` or from an unsigned column (MySQL).
    UInt(u64),
    /// A double precision float.
    Float(f64),
    /// An exact decimal number.
    Decimal(Decimal),
    /// Text.
    Text(String),
    /// Binary data.
    Bytes(Vec<u8>),
    /// A calendar date.
    Date(NaiveDate),
    /// A time of day.
    Time(NaiveTime),
    /// A time of day with a UTC offset (PostgreSQL `timetz`).
    TimeTz(NaiveTime, FixedOffset),
    /// A date and time without a time zone.
    DateTime(NaiveDateTime),
    /// A date and time with a UTC offset.
    DateTimeTz(DateTime<FixedOffset>),
    /// A UUID.
    Uuid(Uuid),
    /// A JSON document.
    Json(serde_json::Value),
    /// A time span (PostgreSQL `interval`): months, days and microseconds are kept apart
    /// because their lengths vary.
    Interval {
        /// Whole months.
        months: i32,
        /// Whole days.
        days: i32,
        /// Microseconds.
        microseconds: i64,
    },
    /// A one-dimensional array (PostgreSQL).
    Array(Vec<Value>),
}

/// How deeply arrays and JSON arrays and objects may nest in a parameter (a scalar is 0,
/// `[1]` is 1). Deeper values are refused with
/// [`ErrorKind::InvalidParameter`](crate::ErrorKind::InvalidParameter) before anything runs:
/// serde_json reads JSON back only this deep, and the encoders, which recurse, stay far from
/// the end of a thread's stack.
pub const MAX_NESTING: usize = 128;

impl Value {
    /// Whether arrays and JSON containers nest deeper than `limit` in this value. Counted
    /// without recursion, so any depth is safe to check.
    pub(crate) fn nests_deeper_than(&self, limit: usize) -> bool {
        use serde_json::Value as J;
        enum Node<'a> {
            Value(&'a Value),
            Json(&'a J),
        }
        if !matches!(
            self,
            Value::Array(_) | Value::Json(J::Array(_) | J::Object(_))
        ) {
            return false;
        }
        let mut stack = vec![(Node::Value(self), 0_usize)];
        while let Some((node, depth)) = stack.pop() {
            if depth > limit {
                return true;
            }
            match node {
                Node::Value(Value::Array(items)) => {
                    stack.extend(items.iter().map(|v| (Node::Value(v), depth + 1)));
                }
                Node::Value(Value::Json(j)) => stack.push((Node::Json(j), depth)),
                Node::Json(J::Array(items)) => {
                    stack.extend(items.iter().map(|j| (Node::Json(j), depth + 1)));
                }
                Node::Json(J::Object(map)) => {
                    stack.extend(map.values().map(|j| (Node::Json(j), depth + 1)));
                }
                _ => {}
            }
        }
        false
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The name of the variant's SQL type, for messages: `integer`, `text`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Bool(_) => "boolean",
            Self::Int(_) => "integer",
            Self::UInt(_) => "unsigned integer",
            Self::Float(_) => "float",
            Self::Decimal(_) => "decimal",
            Self::Text(_) => "text",
            Self::Bytes(_) => "bytes",
            Self::Date(_) => "date",
            Self::Time(_) => "time",
            Self::TimeTz(..) => "time with time zone",
            Self::DateTime(_) => "datetime",
            Self::DateTimeTz(_) => "datetime with time zone",
            Self::Uuid(_) => "uuid",
            Self::Json(_) => "json",
            Self::Interval { .. } => "interval",
            Self::Array(_) => "array",
        }
    }

    /// Converts to `T`, naming both types on mismatch.
    pub fn get<T: FromValue>(&self) -> Result<T, ValueError> {
        T::from_value(self)
    }

    /// Builds an array value from any iterator of values.
    pub fn array<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Self {
        Self::Array(items.into_iter().map(Into::into).collect())
    }
}

/// Shows the value as SQL-like text: `NULL`, `42`, `'text'`, `x'00ff'`, `'2024-01-31'`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::UInt(u) => write!(f, "{u}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Decimal(d) => write!(f, "{d}"),
            Self::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Self::Bytes(b) => {
                f.write_str("x'")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
            Self::Date(d) => write!(f, "'{d}'"),
            Self::Time(t) => write!(f, "'{t}'"),
            Self::TimeTz(t, offset) => write!(f, "'{t}{offset}'"),
            Self::DateTime(dt) => write!(f, "'{dt}'"),
            Self::DateTimeTz(dt) => write!(f, "'{dt}'"),
            Self::Uuid(u) => write!(f, "'{u}'"),
            Self::Json(j) => write!(f, "'{j}'"),
            Self::Interval {
                months,
                days,
                microseconds,
            } => write!(f, "'{months} mons {days} days {microseconds} us'"),
            Self::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

macro_rules! from_into {
    ($($t:ty => $variant:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v $(as $cast)?)
            }
        }
    )*};
}

from_into!(
    bool => Bool,
    i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int,
    u8 => Int as i64, u16 => Int as i64, u32 => Int as i64, u64 => UInt,
    f32 => Float as f64, f64 => Float,
    Decimal => Decimal, String => Text, Vec<u8> => Bytes,
    NaiveDate => Date, NaiveTime => Time, NaiveDateTime => DateTime,
    DateTime<FixedOffset> => DateTimeTz, Uuid => Uuid, serde_json::Value => Json,
);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Value::DateTimeTz(v.fixed_offset())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<&Value> for Value {
    fn from(v: &Value) -> Self {
        v.clone()
    }
}

/// A value that could not be converted to the requested type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The Rust type that was asked for.
    pub expected: &'static str,
    /// The SQL type of the value found.
    pub found: &'static str,
    /// Why the conversion failed when the types alone do not say it (a parse error, a range).
    pub detail: Option<String>,
}

impl ValueError {
    fn new(expected: &'static str, found: &Value) -> Self {
        Self {
            expected,
            found: found.type_name(),
            detail: None,
        }
    }

    fn with_detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot convert {} to {}", self.found, self.expected)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValueError {}

/// Conversion out of a [`Value`] into a Rust type.
///
/// Integers convert between widths when the value fits; text converts to dates, times,
/// datetimes, decimals, UUIDs and JSON by parsing; integers `0`/`1` convert to `bool` (SQLite
/// stores booleans that way). `NULL` converts only into `Option<T>` and [`Value`].
pub trait FromValue: Sized {
    /// The Rust type's name, for messages.
    const TYPE_NAME: &'static str;

    /// Converts the value, or says why it cannot.
    fn from_value(value: &Value) -> Result<Self, ValueError>;
}

impl FromValue for Value {
    const TYPE_NAME: &'static str = "Value";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const TYPE_NAME: &'static str = T::TYPE_NAME;

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl FromValue for bool {
    const TYPE_NAME: &'static str = "bool";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::Int(0) | Value::UInt(0) => Ok(false),
            Value::Int(1) | Value::UInt(1) => Ok(true),
            Value::Int(_) | Value::UInt(_) => {
                Err(ValueError::new(Self::TYPE_NAME, value)
                    .with_detail("only 0 and 1 are booleans"))
            }
            v => Err(ValueError::new(Self::TYPE_NAME, v)),
        }
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            const TYPE_NAME: &'static str = stringify!($t);

            fn from_value(value: &Value) -> Result<Self, ValueError> {
                let out_of_range = |v: &dyn fmt::Display| {
                    ValueError::new(Self::TYPE_NAME, value)
                        .with_detail(format!("{v} is out of range"))
                };
                match value {
                    Value::Int(i) => <$t>::try_from(*i).map_err(|_| out_of_range(i)),
                    Value::UInt(u) => <$t>::try_from(*u).map_err(|_| out_of_range(u)),
                    Value::Bool(b) => Ok(<$t>::from(*b)),
                    v => Err(ValueError::new(Self::TYPE_NAME, v)),
                }
            }
        }
    )*};
}

int_from_value!(i8, i16, i32, i64, u8, u16, u32, u64, i128, u128);

impl FromValue for f64 {
    const TYPE_NAME: &'static str = "f64";

    #[allow(
        clippy::cast_precision_loss,
        reason = "asking for a float accepts rounding"
    )]
    fn from_value(value: &Value) -> Result<Self, ValueError> {
        use rust_decimal::prelude::ToPrimitive;
        match value {
            Value::Float(x) => Ok(*x),
            Value::Int(i) => Ok(*i as f64),
            Value::UInt(u) => Ok(*u as f64),
            Value::Decimal(d) => d
                .to_f64()
                .ok_or_else(|| ValueError::new(Self::TYPE_NAME, value)),
            Value::Text(s) => s
                .trim()
                .parse()
                .map_err(|e| ValueError::new(Self::TYPE_NAME, value).with_detail(e)),
            v => Err(ValueError::new(Self::TYPE_NAME, v)),
        }
    }
}

impl FromValue for f32 {
    const TYPE_NAME: &'static str = "f32";

    #[allow(
        clippy::cast_possible_truncation,
        reason = "asking for f32 accepts rounding"
    )]
    fn from_value(value: &Value) -> Result<Self, ValueError> {
        f64::from_value(value)
            .map(|x| x as f32)
            .map_err(|e| ValueError {
                expected: Self::TYPE_NAME,
                ..e
            })
    }
}

impl FromValue for Decimal {
    const TYPE_NAME: &'static str = "Decimal";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Decimal(d) => Ok(*d),
            Value::Int(i) => Ok(Decimal::from(*i)),
            Value::UInt(u) => Ok(Decimal::from(*u)),
            Value::Float(x) => Decimal::try_from(*x)
                .map_err(|e| ValueError::new(Self::TYPE_NAME, value).with_detail(e)),
            Value::Text(s) => {
                let s = s.trim();
                s.parse::<Decimal>()
                    .or_else(|_| Decimal::from_scientific(s))
                    .map_err(|e| ValueError::new(Self::TYPE_NAME, value).with_detail(e))
            }
            v => Err(ValueError::new(Self::TYPE_NAME, v)),
        }
    }
}

impl FromValue for String {
    const TYPE_NAME: &'static str = "String";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            v => Err(ValueError::new(Self::TYPE_NAME, v)),
        }
    }
}

impl FromValue for Vec<u8> {
    const TYPE_NAME: &'static str = "Vec<u8>";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Bytes(b) => Ok(b.clone()),
            v => Err(ValueError::new(Self::TYPE_NAME, v)),
        }
    }
}

impl FromValue for Vec<Value> {
    const TYPE_NAME: &'static str = "Vec<Value>";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Array(items) => Ok(items.clone()),
            v => Err(ValueError::new(Self::TYPE_NAME, v)),
        }
    }
}

fn parse_text<T>(
    value: &Value,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ValueError> {
    match value {
        Value::Text(s) => {
            parse(s.trim()).map_err(|e| ValueError::new(expected, value).with_detail(e))
        }
        v => Err(ValueError::new(expected, v)),
    }
}

impl FromValue for NaiveDate {
    const TYPE_NAME: &'static str = "NaiveDate";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Date(d) => Ok(*d),
            v => parse_text(v, Self::TYPE_NAME, |s| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| e.to_string())
            }),
        }
    }
}

impl FromValue for NaiveTime {
    const TYPE_NAME: &'static str = "NaiveTime";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Time(t) => Ok(*t),
            v => parse_text(v, Self::TYPE_NAME, |s| {
                NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
                    .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
                    .map_err(|e| e.to_string())
            }),
        }
    }
}

/// Parses the datetime forms SQLite users store: `2024-01-31 10:00:00[.ffffff]`, with `T` or a
/// space between date and time, or a bare date (midnight).
fn parse_naive_datetime(s: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN)))
        .map_err(|e| e.to_string())
}

impl FromValue for NaiveDateTime {
    const TYPE_NAME: &'static str = "NaiveDateTime";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::DateTime(dt) => Ok(*dt),
            Value::Date(d) => Ok(d.and_time(NaiveTime::MIN)),
            v => parse_text(v, Self::TYPE_NAME, parse_naive_datetime),
        }
    }
}

impl FromValue for DateTime<FixedOffset> {
    const TYPE_NAME: &'static str = "DateTime<FixedOffset>";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::DateTimeTz(dt) => Ok(*dt),
            v => parse_text(v, Self::TYPE_NAME, |s| {
                DateTime::parse_from_rfc3339(s)
                    .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z"))
                    .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
                    .map_err(|e| e.to_string())
            }),
        }
    }
}

impl FromValue for DateTime<Utc> {
    const TYPE_NAME: &'static str = "DateTime<Utc>";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        DateTime::<FixedOffset>::from_value(value)
            .map(|dt| dt.with_timezone(&Utc))
            .map_err(|e| ValueError {
                expected: Self::TYPE_NAME,
                ..e
            })
    }
}

impl FromValue for Uuid {
    const TYPE_NAME: &'static str = "Uuid";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Uuid(u) => Ok(*u),
            Value::Bytes(b) => Uuid::from_slice(b)
                .map_err(|e| ValueError::new(Self::TYPE_NAME, value).with_detail(e)),
            v => parse_text(v, Self::TYPE_NAME, |s| {
                Uuid::parse_str(s).map_err(|e| e.to_string())
            }),
        }
    }
}

impl FromValue for serde_json::Value {
    const TYPE_NAME: &'static str = "serde_json::Value";

    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::Json(j) => Ok(j.clone()),
            v => parse_text(v, Self::TYPE_NAME, |s| {
                serde_json::from_str(s).map_err(|e| e.to_string())
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Any value the backends can produce, nested arrays included.
    pub(crate) fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let json = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ]
        .prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        use chrono::Datelike;
        let date = (NaiveDate::MIN.num_days_from_ce()..=NaiveDate::MAX.num_days_from_ce())
            .prop_map(|d| NaiveDate::from_num_days_from_ce_opt(d).expect("in range"));
        let time = (0_u32..86_400, 0_u32..1_000_000_000).prop_map(|(s, n)| {
            NaiveTime::from_num_seconds_from_midnight_opt(s, n).expect("in range")
        });
        let offset =
            (-86_399_i32..86_400).prop_map(|o| FixedOffset::east_opt(o).expect("within a day"));
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<f64>().prop_map(Value::Float),
            (any::<i64>(), 0_u32..=28).prop_map(|(m, s)| Value::Decimal(Decimal::new(m, s))),
            // Text that parses as something half the time.
            prop_oneof![
                "\\PC{0,12}",
                "-?[0-9]{1,25}(\\.[0-9]{0,30})?",
                "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}( [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\\.[0-9]{1,9})?)?([+-][0-9]{2}(:[0-9]{2})?)?",
                "[0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{1,12})?)?",
                "(true|false|yes|no|on|off|t|f|1|0|TRUE)",
                "[0-9a-f-]{32,36}",
                "[\\[\\]{}\"0-9,:a-z ]{0,12}",
            ]
            .prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
            date.clone().prop_map(Value::Date),
            time.clone().prop_map(Value::Time),
            (time.clone(), offset.clone()).prop_map(|(t, o)| Value::TimeTz(t, o)),
            (date.clone(), time.clone()).prop_map(|(d, t)| Value::DateTime(d.and_time(t))),
            (date, time, offset).prop_filter_map("a datetime in range", |(d, t, o)| {
                d.and_time(t).and_local_timezone(o).single().map(Value::DateTimeTz)
            }),
            any::<u128>().prop_map(|u| Value::Uuid(Uuid::from_u128(u))),
            json.prop_map(Value::Json),
            (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, microseconds)| {
                Value::Interval { months, days, microseconds }
            }),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }

    /// Converts into every `FromValue` type; each must answer, never panic.
    fn convert_every_way(v: &Value) {
        fn try_as<T: FromValue>(v: &Value) {
            if let Err(e) = T::from_value(v) {
                // The message names the target type.
                assert!(e.to_string().contains(T::TYPE_NAME), "{e}");
            }
            let _ = Option::<T>::from_value(v);
        }
        try_as::<Value>(v);
        try_as::<bool>(v);
        try_as::<i8>(v);
        try_as::<i16>(v);
        try_as::<i32>(v);
        try_as::<i64>(v);
        try_as::<u8>(v);
        try_as::<u16>(v);
        try_as::<u32>(v);
        try_as::<u64>(v);
        try_as::<i128>(v);
        try_as::<u128>(v);
        try_as::<f32>(v);
        try_as::<f64>(v);
        try_as::<Decimal>(v);
        try_as::<String>(v);
        try_as::<Vec<u8>>(v);
        try_as::<Vec<Value>>(v);
        try_as::<NaiveDate>(v);
        try_as::<NaiveTime>(v);
        try_as::<NaiveDateTime>(v);
        try_as::<DateTime<FixedOffset>>(v);
        try_as::<DateTime<chrono::Utc>>(v);
        try_as::<Uuid>(v);
        try_as::<serde_json::Value>(v);
    }

    proptest::proptest! {
        /// Fuzzing the decoding of values into Rust types.
        #[test]
        fn converting_any_value_never_panics(v in arb_value()) {
            convert_every_way(&v);
            let _ = v.nests_deeper_than(2);
            let _ = format!("{v:?}");
        }
    }

    #[test]
    fn nesting_is_counted_without_recursion() {
        let mut v = Value::Json(serde_json::Value::Null);
        assert!(!v.nests_deeper_than(0));
        let mut j = serde_json::Value::Null;
        for _ in 0..10 {
            j = serde_json::json!({ "a": [j] });
        }
        v = Value::Json(j);
        assert!(!v.nests_deeper_than(20));
        assert!(v.nests_deeper_than(19));
        let array = Value::Array(vec![Value::Int(1), Value::Array(vec![v])]);
        assert!(!array.nests_deeper_than(22));
        assert!(array.nests_deeper_than(21));
        assert!(!Value::Text("[[[[".into()).nests_deeper_than(0));
    }

    #[test]
    fn from_rust_types() {
        assert_eq!(Value::from(7i32), Value::Int(7));
        assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
        assert_eq!(Value::from(1.5f32), Value::Float(1.5));
        assert_eq!(Value::from("a"), Value::Text("a".into()));
        assert_eq!(Value::from(&b"\x00\x01"[..]), Value::Bytes(vec![0, 1]));
        assert_eq!(Value::from(None::<i64>), Value::Null);
        assert_eq!(Value::from(Some(true)), Value::Bool(true));
        assert_eq!(
            Value::array([1, 2]),
            Value::Array(vec![Value::Int(1), Value::Int(2)])
        );
        let utc = DateTime::parse_from_rfc3339("2024-01-31T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(matches!(Value::from(utc), Value::DateTimeTz(_)));
    }

    #[test]
    fn integers_convert_within_range() {
        assert_eq!(Value::Int(5).get::<u8>(), Ok(5));
        assert_eq!(Value::UInt(u64::MAX).get::<u64>(), Ok(u64::MAX));
        let e = Value::Int(300).get::<u8>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot convert integer to u8 (300 is out of range)"
        );
        let e = Value::Int(-1).get::<u64>().unwrap_err();
        assert!(e.to_string().contains("out of range"));
        assert_eq!(
            Value::Text("5".into()).get::<i64>().unwrap_err().found,
            "text"
        );
    }

    #[test]
    fn null_only_into_option() {
        assert_eq!(Value::Null.get::<Option<i64>>(), Ok(None));
        assert_eq!(Value::Int(3).get::<Option<i64>>(), Ok(Some(3)));
        let e = Value::Null.get::<i64>().unwrap_err();
        assert_eq!(e.to_string(), "cannot convert NULL to i64");
    }

    #[test]
    fn booleans_from_sqlite_integers() {
        assert_eq!(Value::Int(1).get::<bool>(), Ok(true));
        assert_eq!(Value::Int(0).get::<bool>(), Ok(false));
        assert!(Value::Int(2).get::<bool>().is_err());
    }

    #[test]
    fn text_parses_to_temporal_decimal_uuid_json() {
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(
            t("2024-01-31").get::<NaiveDate>().unwrap().to_string(),
            "2024-01-31"
        );
        assert_eq!(
            t("10:30:05.25").get::<NaiveTime>().unwrap().to_string(),
            "10:30:05.250"
        );
        assert_eq!(
            t("2024-01-31 10:30:00.000001")
                .get::<NaiveDateTime>()
                .unwrap()
                .to_string(),
            "2024-01-31 10:30:00.000001"
        );
        assert_eq!(
            t("2024-01-31T10:30:00")
                .get::<NaiveDateTime>()
                .unwrap()
                .to_string(),
            "2024-01-31 10:30:00"
        );
        assert_eq!(
            t("2024-01-31 10:30:00+02:00")
                .get::<DateTime<Utc>>()
                .unwrap()
                .to_rfc3339(),
            "2024-01-31T08:30:00+00:00"
        );
        assert_eq!(t("12.50").get::<Decimal>().unwrap().to_string(), "12.50");
        assert_eq!(
            t("67e55044-10b1-426f-9247-bb680e5fe0c8")
                .get::<Uuid>()
                .unwrap()
                .to_string(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        assert_eq!(
            t(r#"{"a": [1, 2]}"#).get::<serde_json::Value>().unwrap(),
            serde_json::json!({"a": [1, 2]})
        );
        let e = t("not a date").get::<NaiveDate>().unwrap_err();
        assert_eq!(e.expected, "NaiveDate");
        assert!(e.detail.is_some());
    }

    #[test]
    fn floats_and_decimals() {
        assert_eq!(Value::Int(2).get::<f64>(), Ok(2.0));
        assert_eq!(Value::Float(0.5).get::<f32>(), Ok(0.5));
        assert!(Value::Float(f64::NAN).get::<f64>().unwrap().is_nan());
        assert_eq!(Value::Int(3).get::<Decimal>(), Ok(Decimal::from(3)));
        assert!(Value::Float(f64::INFINITY).get::<Decimal>().is_err());
    }

    #[test]
    fn display_is_sql_like() {
        assert_eq!(Value::Null.to_string(), "NULL");
        assert_eq!(Value::Text("it's".into()).to_string(), "'it''s'");
        assert_eq!(Value::Bytes(vec![0, 255]).to_string(), "x'00ff'");
        assert_eq!(Value::array([1, 2]).to_string(), "[1, 2]");
    }
}
