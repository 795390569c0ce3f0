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
/// The rows of a result share blocks of values, 256 rows to a block: reading 10,000 rows
/// allocates 40 blocks, not 10,000 vectors, and cloning a record only counts a reference.
/// Holding a row therefore keeps the values of the other rows of its block;
/// [`Record::into_values`] copies a row out when only that row should stay.
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
#[derive(Clone)]
pub struct Record {
    block: Arc<Block>,
    /// The position of this row's first value in the block.
    start: usize,
}

/// The column names and the values of one or more rows, row after row.
#[derive(Debug)]
struct Block {
    columns: Arc<Columns>,
    values: Vec<Value>,
}

/// Emptied blocks kept for the next results (see [`Spare`]).
static SPARE: std::sync::Mutex<Spare> = std::sync::Mutex::new(Spare::new(SPARE_VALUES));

/// The most values the spare buffers hold together (4 MiB with 32-byte values).
const SPARE_VALUES: usize = 1 << 17;

/// The buffers of dropped full blocks, emptied, for the next results to fill.
///
/// A large result is built on the thread that reads it (SQLite's connection thread, a
/// runtime thread) and freed on the caller's. glibc's allocator hands the memory of such a
/// result back to the system when the caller frees it, and the next result faults it in
/// again, page by page: fetching 10,000 rows of 5 columns over and over took ~460 page faults
/// and 1.0 ms more per result than with the buffers reused (`perf stat -e page-faults`).
/// Kept buffers stay allocated instead, at most `limit` values' worth; past that the oldest
/// are freed.
struct Spare {
    /// Oldest first.
    blocks: std::collections::VecDeque<Vec<Value>>,
    /// The capacity of `blocks`, in values.
    values: usize,
    limit: usize,
}

impl Spare {
    const fn new(limit: usize) -> Self {
        Self {
            blocks: std::collections::VecDeque::new(),
            values: 0,
            limit,
        }
    }

    /// An empty buffer of `capacity` values, if one is kept (the newest).
    fn take(&mut self, capacity: usize) -> Option<Vec<Value>> {
        let i = self.blocks.iter().rposition(|b| b.capacity() == capacity)?;
        self.values -= capacity;
        self.blocks.remove(i)
    }

    /// Keeps `buffer`, emptied, and frees the oldest buffers beyond the limit.
    fn keep(&mut self, mut buffer: Vec<Value>) {
        buffer.clear();
        if buffer.capacity() > self.limit {
            return;
        }
        self.values += buffer.capacity();
        self.blocks.push_back(buffer);
        while self.values > self.limit {
            let oldest = self.blocks.pop_front().expect("the values are counted");
            self.values -= oldest.capacity();
        }
    }
}

/// The spare buffers, locked (for a few instructions; nothing panics while it is held).
fn spare() -> std::sync::MutexGuard<'static, Spare> {
    SPARE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Block {
    fn drop(&mut self) {
        // Only full-size blocks come back: those are the sizes the next results ask for.
        let capacity = self.values.capacity();
        if capacity != 0 && capacity == BLOCK_ROWS * self.columns.len() {
            let mut values = std::mem::take(&mut self.values);
            // The values are dropped outside the lock.
            values.clear();
            spare().keep(values);
        }
    }
}

/// Rows per block: a result's values are stored in blocks of this many rows.
pub(crate) const BLOCK_ROWS: usize = 256;

/// Collects the rows of one result into blocks of [`BLOCK_ROWS`] rows, then hands out its
/// records.
///
/// A row is pushed by [`Rows::push`], whose closure appends exactly one value per column.
/// Blocks of a fixed size spare a large result the copies of one ever-growing vector, and a
/// record kept alone keeps at most its block's rows.
pub(crate) struct Rows {
    columns: Arc<Columns>,
    /// The values of the block being filled.
    values: Vec<Value>,
    /// The rows in `values`.
    rows: usize,
    /// The records of the blocks already full.
    done: Vec<Record>,
    /// The capacity of a full block, known once the first one is full.
    block_values: usize,
}

impl Rows {
    /// An empty result with these columns.
    pub(crate) fn new(columns: Arc<Columns>) -> Self {
        Self {
            columns,
            values: Vec::new(),
            rows: 0,
            done: Vec::new(),
            block_values: 0,
        }
    }

    /// The number of rows pushed.
    pub(crate) fn len(&self) -> usize {
        self.done.len() + self.rows
    }

    /// True before the first row.
    // Only the chunked streams (SQLite, MySQL) use it.
    #[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a row: `fill` appends its values in column order. When `fill` fails, or appends
    /// a value count other than the column count, the partial row is removed and an error
    /// returned.
    pub(crate) fn push(&mut self, fill: impl FnOnce(&mut Vec<Value>) -> Result<()>) -> Result<()> {
        if self.values.capacity() == 0 && self.block_values != 0 {
            // A new block after a full one: sized like it, once.
            let spare = spare().take(self.block_values);
            self.values = spare.unwrap_or_else(|| Vec::with_capacity(self.block_values));
        }
        let before = self.values.len();
        let filled = fill(&mut self.values).and_then(|()| {
            let count = self.values.len() - before;
            if count == self.columns.len() {
                Ok(())
            } else {
                Err(Error::decode(format!(
                    "the database sent a row of {count} value(s) for {} column(s)",
                    self.columns.len()
                )))
            }
        });
        if filled.is_err() {
            self.values.truncate(before);
        } else {
            self.rows += 1;
            if self.rows == BLOCK_ROWS {
                self.block_values = self.values.len();
                self.seal();
            }
        }
        filled
    }

    /// Ends the block being filled: its records join `done`.
    fn seal(&mut self) {
        if self.rows == 0 {
            return;
        }
        let width = self.columns.len();
        let block = Arc::new(Block {
            columns: self.columns.clone(),
            values: std::mem::take(&mut self.values),
        });
        self.done.extend((0..self.rows).map(|i| Record {
            block: block.clone(),
            start: i * width,
        }));
        self.rows = 0;
    }

    /// The records, in the order their rows were pushed.
    pub(crate) fn into_records(mut self) -> Vec<Record> {
        self.seal();
        self.done
    }

    /// Takes the records collected so far and leaves an empty result with the same columns
    /// (for results handed out in chunks).
    // Only the chunked streams (SQLite, MySQL) use it.
    #[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
    pub(crate) fn take(&mut self) -> Vec<Record> {
        self.seal();
        std::mem::take(&mut self.done)
    }
}

impl Record {
    /// A record from shared column names and its values (one per column).
    ///
    /// # Panics
    /// When the number of values differs from the number of columns.
    pub fn new(columns: Arc<Columns>, values: Vec<Value>) -> Self {
        assert_eq!(
            columns.len(),
            values.len(),
            "a record needs one value per column"
        );
        Self {
            block: Arc::new(Block { columns, values }),
            start: 0,
        }
    }

    /// The column names.
    pub fn columns(&self) -> &[String] {
        self.block.columns.names()
    }

    /// The shared column list (the same `Arc` for every row of a result).
    pub fn column_list(&self) -> &Arc<Columns> {
        &self.block.columns
    }

    /// The values in column order.
    pub fn values(&self) -> &[Value] {
        &self.block.values[self.start..self.start + self.block.columns.len()]
    }

    /// Takes the values out. A record that is the last one left of its result gives its
    /// values up without a copy; otherwise they are cloned.
    pub fn into_values(self) -> Vec<Value> {
        let (start, width) = (self.start, self.block.columns.len());
        match Arc::try_unwrap(self.block) {
            Ok(mut block) if block.values.len() == width => std::mem::take(&mut block.values),
            Ok(mut block) => block.values.drain(start..start + width).collect(),
            Err(shared) => shared.values[start..start + width].to_vec(),
        }
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.block.columns.len()
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.block.columns.is_empty()
    }

    /// `(name, value)` pairs in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns()
            .iter()
            .map(String::as_str)
            .zip(self.values().iter())
    }

    /// The raw value of a column, by position or name.
    pub fn value(&self, column: impl ColumnIndex) -> Result<&Value> {
        let i = column.position_in(&self.block.columns)?;
        Ok(&self.values()[i])
    }

    /// The value of a column converted to `T`. The error names the column and both types.
    pub fn get<T: FromValue>(&self, column: impl ColumnIndex) -> Result<T> {
        let i = column.position_in(&self.block.columns)?;
        T::from_value(&self.values()[i]).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("column '{}': {e}", self.columns()[i]),
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

/// Records are equal when their column names and values are.
impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.columns() == other.columns() && self.values() == other.values()
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

    /// A result of `rows` rows of `width` integer columns, each row holding its number.
    fn result(width: usize, rows: usize) -> Vec<Record> {
        let names = (0..width).map(|i| format!("c{i}")).collect();
        let mut out = Rows::new(Arc::new(Columns::new(names)));
        for r in 0..rows {
            let r = i64::try_from(r).unwrap();
            out.push(|values| {
                values.extend(std::iter::repeat_n(Value::Int(r), width));
                Ok(())
            })
            .unwrap();
        }
        out.into_records()
    }

    #[test]
    fn the_buffers_of_dropped_full_blocks_are_filled_again_with_only_their_new_rows() {
        // A width no other test uses, so no other result takes these buffers.
        let width = 13;
        let full = BLOCK_ROWS * width;
        let kept = || {
            spare()
                .blocks
                .iter()
                .filter(|b| b.capacity() == full)
                .count()
        };
        let first = result(width, 3 * BLOCK_ROWS);
        let before = kept();
        // Three full blocks (the first grew to the full size, row by row).
        drop(first);
        assert_eq!(kept(), before + 3);
        // The first block grows again; the two after it are spare ones.
        let second = result(width, 2 * BLOCK_ROWS + 5);
        assert_eq!(kept(), before + 1);
        assert_eq!(second.len(), 2 * BLOCK_ROWS + 5);
        for (r, record) in second.iter().enumerate() {
            let r = i64::try_from(r).unwrap();
            assert!(
                record.values().iter().all(|v| *v == Value::Int(r)),
                "row {r}"
            );
        }
        // The last block holds its 5 rows and nothing left from the earlier result.
        assert_eq!(second[2 * BLOCK_ROWS].block.values.len(), 5 * width);
    }

    #[test]
    fn spare_buffers_stay_within_their_limit_and_the_newest_are_kept() {
        let mut spare = Spare::new(1000);
        let buffer = |capacity: usize, value: i64| {
            let mut b = Vec::with_capacity(capacity);
            b.push(Value::Int(value));
            b
        };
        spare.keep(buffer(400, 1));
        spare.keep(buffer(400, 2));
        // Too large to keep at all.
        spare.keep(buffer(1001, 3));
        assert_eq!(spare.values, 800);
        // The oldest goes.
        spare.keep(buffer(300, 4));
        assert_eq!(spare.values, 700);
        assert_eq!(spare.blocks.len(), 2);
        assert!(spare.blocks.iter().all(Vec::is_empty));
        assert!(spare.take(1001).is_none());
        let taken = spare.take(400).unwrap();
        assert!(taken.is_empty() && taken.capacity() == 400);
        assert!(spare.take(400).is_none());
        assert_eq!(spare.values, 300);
    }

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

    fn two_columns() -> Arc<Columns> {
        Arc::new(Columns::new(vec!["id".into(), "name".into()]))
    }

    /// Pushes a row that must be accepted.
    fn push_row<const N: usize>(rows: &mut Rows, values: [Value; N]) {
        rows.push(|v| {
            v.extend(values);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn rows_share_one_block_and_keep_their_order() {
        let mut rows = Rows::new(two_columns());
        for i in 0..3 {
            push_row(&mut rows, [Value::Int(i), Value::Text(format!("n{i}"))]);
        }
        assert_eq!(rows.len(), 3);
        let records = rows.into_records();
        assert_eq!(records.len(), 3);
        for (i, r) in (0..).zip(&records) {
            assert_eq!(r.values(), [Value::Int(i), Value::Text(format!("n{i}"))]);
            assert_eq!(r.get::<String>("name").unwrap(), format!("n{i}"));
            assert!(Arc::ptr_eq(&r.block, &records[0].block));
        }
        assert_eq!(records[1].to_string(), "(id=1, name='n1')");
        // Equality looks at names and values, not at which block holds them.
        assert_eq!(
            records[2],
            Record::new(two_columns(), vec![Value::Int(2), Value::Text("n2".into())])
        );
        assert_ne!(records[0], records[1]);
    }

    #[test]
    fn large_results_use_blocks_of_256_rows() {
        let mut rows = Rows::new(two_columns());
        for i in 0..600 {
            push_row(&mut rows, [Value::Int(i), Value::Text(format!("n{i}"))]);
            assert_eq!(rows.len(), usize::try_from(i + 1).unwrap());
        }
        let records = rows.into_records();
        assert_eq!(records.len(), 600);
        for (i, r) in (0..).zip(&records) {
            assert_eq!(r.values(), [Value::Int(i), Value::Text(format!("n{i}"))]);
        }
        let same = |a: usize, b: usize| Arc::ptr_eq(&records[a].block, &records[b].block);
        assert!(same(0, 255) && same(256, 511) && same(512, 599));
        assert!(!same(255, 256) && !same(511, 512));
        // Full blocks after the first are allocated at their exact size.
        assert_eq!(records[256].block.values.capacity(), 2 * BLOCK_ROWS);
        assert_eq!(records[512].block.values.len(), 2 * 88);
    }

    #[test]
    fn into_values_copies_only_a_shared_row() {
        let mut rows = Rows::new(two_columns());
        for i in 0..2 {
            push_row(&mut rows, [Value::Int(i), Value::Null]);
        }
        let mut records = rows.into_records();
        let second = records.pop().unwrap();
        let first = records.pop().unwrap();
        let kept = first.clone();
        // Shared: cloned out, the block stays for `kept`.
        assert_eq!(second.into_values(), [Value::Int(1), Value::Null]);
        assert_eq!(first.into_values(), [Value::Int(0), Value::Null]);
        // The last record of a two-row block takes its row out.
        assert_eq!(kept.into_values(), [Value::Int(0), Value::Null]);
        // A one-row record gives its vector up without a copy.
        let single = Record::new(two_columns(), vec![Value::Int(5), Value::Int(6)]);
        let at = single.values().as_ptr();
        let values = single.into_values();
        assert_eq!(values.as_ptr(), at);
    }

    #[test]
    fn a_failed_row_leaves_nothing_behind() {
        let mut rows = Rows::new(two_columns());
        let e = rows
            .push(|v| {
                v.push(Value::Int(1));
                Err(Error::decode("bad second column"))
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "bad second column");
        assert!(rows.is_empty());
        push_row(&mut rows, [Value::Int(2), Value::Int(3)]);
        let records = rows.into_records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].values(), [Value::Int(2), Value::Int(3)]);
    }

    #[test]
    fn chunks_are_taken_and_the_rest_goes_on() {
        let mut rows = Rows::new(two_columns());
        let push = |rows: &mut Rows, i: i64| {
            push_row(rows, [Value::Int(i), Value::Int(-i)]);
        };
        push(&mut rows, 1);
        push(&mut rows, 2);
        let first = rows.take();
        assert!(rows.is_empty());
        push(&mut rows, 3);
        let rest = rows.into_records();
        let ids: Vec<i64> = first
            .iter()
            .chain(&rest)
            .map(|r| r.get("id").unwrap())
            .collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(rest[0].columns(), ["id", "name"]);
    }

    #[test]
    fn rows_without_columns_are_counted() {
        let mut rows = Rows::new(Arc::new(Columns::default()));
        rows.push(|_| Ok(())).unwrap();
        rows.push(|_| Ok(())).unwrap();
        let records = rows.into_records();
        assert_eq!(records.len(), 2);
        assert!(records[1].is_empty());
        assert_eq!(records[1].to_string(), "()");
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused() {
        let mut rows = Rows::new(two_columns());
        for width in [1, 3] {
            let e = rows
                .push(|v| {
                    v.extend((0..width).map(Value::Int));
                    Ok(())
                })
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode);
            assert_eq!(
                e.to_string(),
                format!("the database sent a row of {width} value(s) for 2 column(s)")
            );
        }
        assert!(rows.is_empty());
        assert!(rows.into_records().is_empty());
    }

    #[test]
    #[should_panic(expected = "a record needs one value per column")]
    fn a_record_needs_a_value_per_column() {
        let _ = Record::new(two_columns(), vec![Value::Int(1)]);
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
