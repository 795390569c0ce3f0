//! [`Record`]: one result row, with column names shared by every row of the result.

use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::value::{FromValue, Value};

/// The column names of a result, shared by all its rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Columns {
    names: Vec<String>,
}

impl Columns {
    /// Column names in result order.
    pub fn new(names: Vec<String>) -> Self {
        Self { names }
    }

    /// The names in result order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the result has no columns.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The position of `name`. When two columns share a name the last one wins, as in
    /// encode/databases (`SELECT 1 AS id, 2 AS id` gives `id = 2`).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().rposition(|n| n == name)
    }
}

/// Anything that picks a column: a position (`usize`) or a name (`&str`, `String`).
pub trait ColumnIndex: fmt::Debug {
    /// The position of the column in `columns`, or an error naming it.
    fn position_in(&self, columns: &Columns) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn position_in(&self, columns: &Columns) -> Result<usize> {
        if *self < columns.len() {
            Ok(*self)
        } else {
            Err(Error::new(
                ErrorKind::ColumnNotFound,
                format!(
                    "no column at index {self}: the result has {} column(s)",
                    columns.len()
                ),
            ))
        }
    }
}

impl ColumnIndex for str {
    fn position_in(&self, columns: &Columns) -> Result<usize> {
        columns.position(self).ok_or_else(|| {
            Error::new(
                ErrorKind::ColumnNotFound,
                format!(
                    "no column named '{self}': the result has {}",
                    if columns.is_empty() {
                        "no columns".to_owned()
                    } else {
                        columns.names().join(", ")
                    }
                ),
            )
        })
    }
}

impl ColumnIndex for &str {
    fn position_in(&self, columns: &Columns) -> Result<usize> {
        (**self).position_in(columns)
    }
}

impl ColumnIndex for String {
    fn position_in(&self, columns: &Columns) -> Result<usize> {
        self.as_str().position_in(columns)
    }
}

impl ColumnIndex for &String {
    fn position_in(&self, columns: &Columns) -> Result<usize> {
        self.as_str().position_in(columns)
    }
}

/// One row of a result.
///
/// ```
/// use std::sync::Arc;
/// use databases::{Columns, Record, Value};
///
/// let columns = Arc::new(Columns::new(vec!["name".into(), "score".into()]));
/// let row = Record::new(columns, vec![Value::from("Daisy"), Value::from(92)]);
/// assert_eq!(row.get::<String>("name")?, "Daisy");
/// assert_eq!(row.get::<i64>(1)?, 92);
/// assert_eq!(row["score"], Value::Int(92));
/// assert_eq!(row.to_string(), "(name='Daisy', score=92)");
/// let err = row.get::<String>("score").unwrap_err();
/// assert_eq!(err.to_string(), "column 'score': cannot convert integer to String");
/// # Ok::<(), databases::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Record {
    columns: Arc<Columns>,
    values: Vec<Value>,
}

impl Record {
    /// A record from shared column names and its values (one per column).
    pub fn new(columns: Arc<Columns>, values: Vec<Value>) -> Self {
        debug_assert_eq!(columns.len(), values.len());
        Self { columns, values }
    }

    /// The column names.
    pub fn columns(&self) -> &[String] {
        self.columns.names()
    }

    /// The shared column list (the same `Arc` for every row of a result).
    pub fn column_list(&self) -> &Arc<Columns> {
        &self.columns
    }

    /// The values in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `(name, value)` pairs in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns
            .names()
            .iter()
            .map(String::as_str)
            .zip(self.values.iter())
    }

    /// The raw value of a column, by position or name.
    pub fn value(&self, column: impl ColumnIndex) -> Result<&Value> {
        let i = column.position_in(&self.columns)?;
        Ok(&self.values[i])
    }

    /// The value of a column converted to `T`. The error names the column and both types.
    pub fn get<T: FromValue>(&self, column: impl ColumnIndex) -> Result<T> {
        let i = column.position_in(&self.columns)?;
        T::from_value(&self.values[i]).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("column '{}': {e}", self.columns.names()[i]),
            )
            .with_source(e)
        })
    }

    /// Deserializes the record into a struct (or map) whose fields are the column names.
    ///
    /// Text columns deserialize into dates, decimals and UUIDs through their `Deserialize`
    /// implementations; integer `0`/`1` into `bool`.
    #[cfg(feature = "serde")]
    pub fn deserialize<'de, T: serde::Deserialize<'de>>(&'de self) -> Result<T> {
        T::deserialize(crate::de::RecordDeserializer::new(self))
            .map_err(|e| Error::decode(format!("cannot deserialize record: {e}")).with_source(e))
    }
}

impl<I: ColumnIndex> Index<I> for Record {
    type Output = Value;

    /// The value of a column. Panics when there is no such column; use [`Record::value`] to
    /// get an error instead.
    fn index(&self, column: I) -> &Value {
        match self.value(column) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }
}

/// `(name='Daisy', score=92)`
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value}")?;
        }
        f.write_str(")")
    }
}

/// `Record { name: Text("Daisy"), score: Int(92) }`
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Record");
        for (name, value) in self.iter() {
            d.field(name, value);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Record {
        let cols = Arc::new(Columns::new(vec!["id".into(), "name".into(), "id".into()]));
        Record::new(
            cols,
            vec![Value::Int(1), Value::Text("x".into()), Value::Int(2)],
        )
    }

    #[test]
    fn access_by_index_and_name() {
        let r = row();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], Value::Int(1));
        assert_eq!(r["name"], Value::Text("x".into()));
        // The last of two equal names wins.
        assert_eq!(r.get::<i64>("id").unwrap(), 2);
        assert_eq!(r.get::<String>(String::from("name")).unwrap(), "x");
    }

    #[test]
    fn missing_columns_are_named() {
        let r = row();
        let e = r.value("nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
        assert_eq!(
            e.to_string(),
            "no column named 'nope': the result has id, name, id"
        );
        let e = r.value(7).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no column at index 7: the result has 3 column(s)"
        );
        use crate::OptionalExtension;
        assert_eq!(r.get::<i64>("nope").optional().unwrap(), None);
    }

    #[test]
    #[should_panic(expected = "no column named 'nope'")]
    fn index_panics_with_the_message() {
        let _ = &row()["nope"];
    }

    #[test]
    fn mismatch_names_column_and_types() {
        let e = row().get::<bool>("name").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert_eq!(e.to_string(), "column 'name': cannot convert text to bool");
    }

    #[test]
    fn display_and_debug() {
        assert_eq!(row().to_string(), "(id=1, name='x', id=2)");
        assert_eq!(
            format!("{:?}", row()),
            r#"Record { id: Int(1), name: Text("x"), id: Int(2) }"#
        );
    }
}
