//! `Record`: one result row, read by column name, position or SQLAlchemy column.

use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};

use chrono::Timelike;
use databases::Columns;
use pyo3::PyTraverseError;
use pyo3::exceptions::{PyAttributeError, PyIndexError, PyKeyError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PySlice, PyString, PyTuple};

use crate::convert;

/// What the rows of one result share: the column names, how to find a column, and how to
/// turn a value into Python.
pub(crate) struct Meta {
    /// The column names in order (duplicates kept).
    keys: Py<PyTuple>,
    /// Name to position; for a duplicated name the last column wins.
    index: Py<PyDict>,
    /// `str(column)` of SQLAlchemy columns (`"table.col"`) to position, for compiled queries.
    extra: Option<Py<PyDict>>,
    /// A SQLAlchemy result processor per column, or `None`.
    processors: Vec<Option<Py<PyAny>>>,
    /// MySQL `TIME` comes back as a `timedelta`, as the MySQL drivers return it (it is a
    /// duration of up to 838 hours, not a time of day).
    time_as_delta: bool,
}

/// A result row. It is a read-only mapping from column names to values that also takes a
/// column position (`row[0]`), a SQLAlchemy column (`row[notes.c.text]`) and attribute access
/// (`row.text`).
///
/// It keeps the core's values and makes the Python object of a column when it is first
/// read (then keeps that), as upstream applies its result processors on access: a row
/// costs its Rust values until read, and a field never read is never converted.
#[pyclass(frozen, mapping, module = "databases", name = "Record")]
pub(crate) struct Record {
    /// The rows this record was made with, which hold its values.
    chunk: Arc<Chunk>,
    /// This record's row in `chunk`.
    row: usize,
}

/// Up to [`CACHE_ROWS`] records of one result, which share one reference count: the core
/// records, what the rows share, and the converted values.
struct Chunk {
    rows: Vec<databases::Record>,
    meta: Arc<Meta>,
    /// The converted values, `width` per row: a record's are
    /// `cache[row * width..(row + 1) * width]`, and no other record reads or shows the GC
    /// those.
    cache: Box<[Slot]>,
    width: usize,
}

/// A converted value: empty until the field is first read, then set once and read with one
/// atomic load. (`OnceLock::set` goes through std's `Once`, 3% of a Python `fetch_all`
/// loop that reads one field of each row; this takes one compare-and-swap.)
struct Slot(AtomicPtr<pyo3::ffi::PyObject>);

#[allow(
    unsafe_code,
    reason = "a slot owns a reference to a Python object through a raw pointer"
)]
impl Slot {
    const fn new() -> Self {
        Self(AtomicPtr::new(ptr::null_mut()))
    }

    /// A held pointer (or null) as the `Py` it owns, without giving up that reference.
    ///
    /// # Safety
    /// `p` is null or a strong reference owned by a slot.
    unsafe fn owned(p: *mut pyo3::ffi::PyObject) -> ManuallyDrop<Option<Py<PyAny>>> {
        // `Py<T>` is `repr(transparent)` over a `NonNull<PyObject>`, so `Option<Py<_>>` is a
        // nullable pointer.
        ManuallyDrop::new(ptr::NonNull::new(p).map(|p| {
            // SAFETY: `p` is a live object (the caller's contract).
            unsafe { std::mem::transmute::<ptr::NonNull<pyo3::ffi::PyObject>, Py<PyAny>>(p) }
        }))
    }

    /// The value, if set.
    fn get<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here is a reference this slot owns until it is dropped.
        (!p.is_null()).then(|| unsafe { Bound::from_borrowed_ptr(py, p) })
    }

    /// Keeps `value` unless a value is already set; gives the value kept, and whether it is
    /// `value`.
    fn set<'py>(&self, value: Bound<'py, PyAny>) -> (Bound<'py, PyAny>, bool) {
        let py = value.py();
        let p = value.clone().into_ptr();
        match self
            .0
            .compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => (value, true),
            Err(held) => {
                // SAFETY: `p` is the reference made above, which the slot did not take;
                // `held` is one the slot owns.
                drop(unsafe { Bound::from_owned_ptr(py, p) });
                (unsafe { Bound::from_borrowed_ptr(py, held) }, false)
            }
        }
    }

    /// Shows the GC the value, if set.
    fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: what the slot holds is null or a reference it owns; it is lent, not dropped.
        let held = unsafe { Self::owned(self.0.load(Ordering::Acquire)) };
        visit.call(held.as_ref())
    }
}

#[allow(unsafe_code, reason = "gives up the reference a slot owns")]
impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: null or a reference this slot owns, given up once here (`Py`'s drop
        // releases it, or queues the release when the interpreter is not attached).
        drop(ManuallyDrop::into_inner(unsafe {
            Self::owned(*self.0.get_mut())
        }));
    }
}

impl Chunk {
    fn new(rows: Vec<databases::Record>, meta: Arc<Meta>) -> Arc<Self> {
        let width = rows.first().map_or(0, databases::Record::len);
        let cache = (0..rows.len() * width).map(|_| Slot::new()).collect();
        Arc::new(Self {
            rows,
            meta,
            cache,
            width,
        })
    }
}

/// How a compiled query's results are processed: one result processor (or `None`) per
/// column, and the column map for SQLAlchemy column keys.
pub(crate) struct Spec<'py> {
    processors: Option<Bound<'py, PyTuple>>,
    extra: Option<Bound<'py, PyDict>>,
    /// The spec itself: a compiled query's is one object for all its calls.
    object: Option<Bound<'py, PyAny>>,
}

impl<'py> Spec<'py> {
    /// Reads `(processors, column_map)` or `None`.
    pub(crate) fn from_py(spec: Option<&Bound<'py, PyAny>>) -> PyResult<Self> {
        let Some(spec) = spec.filter(|s| !s.is_none()) else {
            return Ok(Self {
                processors: None,
                extra: None,
                object: None,
            });
        };
        let (processors, extra): (Option<Bound<'py, PyTuple>>, Option<Bound<'py, PyDict>>) =
            spec.extract()?;
        Ok(Self {
            processors,
            extra,
            object: Some(spec.clone()),
        })
    }
}

/// How many column maps [`RECENT_METAS`] keeps.
const RECENT: usize = 16;

/// A column map made for one result, kept for the next results of the same query.
struct Recent {
    /// Held weakly, which keeps the address from being reused while the entry exists, so a
    /// pointer comparison identifies the columns.
    columns: std::sync::Weak<Columns>,
    /// The spec the map was made with, compared by identity.
    spec: Option<Py<PyAny>>,
    time_as_delta: bool,
    meta: Arc<Meta>,
}

thread_local! {
    /// The column maps of this thread's latest results, newest first. A query run again
    /// returns records with the same shared columns (cached with its statement), and its
    /// records reuse the map instead of a new key tuple and index dict for every call
    /// (a SQLite `fetch_one` from Python: 7.9 -> 7.5 us; through SQLAlchemy Core, whose
    /// maps also carry the column keys, 25.5 -> 24 us).
    static RECENT_METAS: std::cell::RefCell<std::collections::VecDeque<Recent>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// Records per [`Chunk`] in a list of records (the core's blocks hold 256 rows too).
const CACHE_ROWS: usize = 256;

/// Builds the Python records of a result in one pass.
pub(crate) struct Builder<'py> {
    py: Python<'py>,
    processors: Vec<Option<Bound<'py, PyAny>>>,
    extra: Option<Py<PyDict>>,
    spec: Option<Bound<'py, PyAny>>,
    meta: Option<(Arc<Columns>, Arc<Meta>)>,
    time_as_delta: bool,
}

impl<'py> Builder<'py> {
    pub(crate) fn new(py: Python<'py>, spec: Spec<'py>, time_as_delta: bool) -> Self {
        let processors = spec
            .processors
            .map(|p| {
                p.iter()
                    .map(|f| if f.is_none() { None } else { Some(f) })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            py,
            processors,
            extra: spec.extra.map(Bound::unbind),
            spec: spec.object,
            meta: None,
            time_as_delta,
        }
    }

    fn meta_for(&mut self, columns: &Arc<Columns>) -> PyResult<Arc<Meta>> {
        if let Some((cols, meta)) = &self.meta
            && (Arc::ptr_eq(cols, columns) || cols.names() == columns.names())
        {
            return Ok(meta.clone());
        }
        let meta = match self.recent(columns) {
            Some(meta) => meta,
            None => {
                let meta = self.new_meta(columns)?;
                self.remember(columns, &meta);
                meta
            }
        };
        self.meta = Some((columns.clone(), meta.clone()));
        Ok(meta)
    }

    /// The map made for an earlier result with these columns and this spec, if kept.
    fn recent(&self, columns: &Arc<Columns>) -> Option<Arc<Meta>> {
        RECENT_METAS.with_borrow_mut(|recent| {
            let i = recent.iter().position(|r| {
                ptr::eq(r.columns.as_ptr(), Arc::as_ptr(columns))
                    && r.time_as_delta == self.time_as_delta
                    && match (&r.spec, &self.spec) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.is(b),
                        _ => false,
                    }
            })?;
            if i != 0 {
                let entry = recent.remove(i)?;
                recent.push_front(entry);
            }
            recent.front().map(|r| r.meta.clone())
        })
    }

    /// Keeps `meta` for the next results with these columns and this spec.
    fn remember(&self, columns: &Arc<Columns>, meta: &Arc<Meta>) {
        let entry = Recent {
            columns: Arc::downgrade(columns),
            spec: self.spec.as_ref().map(|s| s.clone().unbind()),
            time_as_delta: self.time_as_delta,
            meta: meta.clone(),
        };
        let oldest = RECENT_METAS.with_borrow_mut(|recent| {
            recent.push_front(entry);
            (recent.len() > RECENT).then(|| recent.pop_back())
        });
        // Dropped outside the borrow: releasing its Python objects may run Python code.
        drop(oldest);
    }

    /// A new column map for a result with these columns.
    fn new_meta(&self, columns: &Arc<Columns>) -> PyResult<Arc<Meta>> {
        let py = self.py;
        let keys = PyTuple::new(py, columns.names())?;
        let index = PyDict::new(py);
        for (i, name) in columns.names().iter().enumerate() {
            index.set_item(name, i)?;
        }
        let meta = Arc::new(Meta {
            keys: keys.unbind(),
            index: index.unbind(),
            extra: self.extra.as_ref().map(|e| e.clone_ref(py)),
            processors: self
                .processors
                .iter()
                .map(|p| p.as_ref().map(|p| p.clone().unbind()))
                .collect(),
            time_as_delta: self.time_as_delta,
        });
        Ok(meta)
    }

    /// Wraps one core record; its values are converted when read.
    pub(crate) fn record(&mut self, record: databases::Record) -> PyResult<Bound<'py, Record>> {
        let meta = self.meta_for(record.column_list())?;
        self.wrap(&Chunk::new(vec![record], meta), 0)
    }

    fn wrap(&self, chunk: &Arc<Chunk>, row: usize) -> PyResult<Bound<'py, Record>> {
        let record = Bound::new(
            self.py,
            Record {
                chunk: chunk.clone(),
                row,
            },
        )?;
        // PyO3 makes every class a GC type, tracked by the cyclic GC. A new record holds no
        // Python object that could lead back to it (its values are Rust values until read),
        // so it starts untracked, as CPython does with a tuple of atoms: otherwise every
        // collection that a large result's allocations set off visits every record. It is
        // tracked once it keeps a value that could (see `Record::value`).
        #[allow(unsafe_code, reason = "PyO3 has no safe API to untrack an object")]
        // SAFETY: `record` is a live object of a GC type, created tracked just above; PyO3's
        // dealloc untracks an object only if it is tracked.
        unsafe {
            pyo3::ffi::PyObject_GC_UnTrack(record.as_ptr().cast());
        }
        Ok(record)
    }

    /// Converts all the records of a result into a list. They are wrapped in chunks of up to
    /// [`CACHE_ROWS`] rows that share one reference count and one allocation for their
    /// converted values (a record kept alone keeps its chunk's rows alive, as a core record
    /// keeps its block's).
    pub(crate) fn list(&mut self, records: Vec<databases::Record>) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::with_capacity(records.len());
        let mut records = records.into_iter().peekable();
        while let Some(first) = records.next() {
            let columns = first.column_list().clone();
            let mut rows = Vec::with_capacity(CACHE_ROWS.min(records.len() + 1));
            rows.push(first);
            // Records of one result share their columns; a list that mixes results is
            // wrapped a run of the same columns at a time.
            while rows.len() < CACHE_ROWS
                && let Some(next) = records.next_if(|r| Arc::ptr_eq(r.column_list(), &columns))
            {
                rows.push(next);
            }
            let chunk = Chunk::new(rows, self.meta_for(&columns)?);
            for row in 0..chunk.rows.len() {
                out.push(self.wrap(&chunk, row)?);
            }
        }
        PyList::new(self.py, out)
    }
}

impl Record {
    /// The Python value of column `i` (made on first use, then kept).
    fn value<'py>(slf: &Bound<'py, Self>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let chunk = &*this.chunk;
        // The shared cache holds other records' values past this one's.
        if i >= chunk.width {
            return Err(PyIndexError::new_err(format!(
                "record index {i} out of range"
            )));
        }
        let slot = &chunk.cache[this.row * chunk.width + i];
        if let Some(cached) = slot.get(py) {
            return Ok(cached);
        }
        // Converted without holding a lock (`PyOnceLock::get_or_try_init` would let go of the
        // interpreter and take it back around every conversion, so that Python code in a
        // result processor never waits on a lock another thread holds): two threads reading
        // the same new field both convert it, and the first one stored wins.
        let v = match chunk.rows[this.row].values()[i] {
            databases::Value::Time(t) if chunk.meta.time_as_delta => convert::to_py(
                py,
                &databases::Value::Interval {
                    months: 0,
                    days: 0,
                    microseconds: i64::from(t.num_seconds_from_midnight()) * 1_000_000
                        + i64::from(t.nanosecond() / 1000),
                },
            )?,
            ref other => convert::to_py(py, other)?,
        };
        let v = match chunk.meta.processors.get(i) {
            Some(Some(process)) if !v.is_none() => process.bind(py).call1((v,))?,
            _ => v,
        };
        let (v, stored) = slot.set(v);
        if stored {
            track_if_needed(slf, &v);
        }
        Ok(v)
    }

    /// Every value, in column order.
    fn tuple<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let values = (0..slf.get().chunk.width)
            .map(|i| Self::value(slf, i))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(slf.py(), values)
    }

    /// The position of the column `key` names, if any.
    fn position(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        if key.is_instance_of::<PyString>() {
            if let Some(i) = self.chunk.meta.index.bind(py).get_item(key)? {
                return Ok(Some(i.extract()?));
            }
        } else if let Ok(i) = key.cast::<PyInt>() {
            let len = self.chunk.meta.keys.bind(py).len();
            let Ok(i) = i.extract::<i64>() else {
                return Ok(None);
            };
            let i = if i < 0 {
                i64::try_from(len).ok().and_then(|l| l.checked_add(i))
            } else {
                Some(i)
            };
            return Ok(i.and_then(|i| usize::try_from(i).ok()).filter(|&i| i < len));
        }
        if let Some(extra) = &self.chunk.meta.extra {
            let extra = extra.bind(py);
            if let Ok(Some(i)) = extra.get_item(key) {
                return Ok(Some(i.extract()?));
            }
            if let Some(i) = extra.get_item(key.str()?)? {
                return Ok(Some(i.extract()?));
            }
        }
        Ok(None)
    }

    fn pairs<'py>(slf: &Bound<'py, Self>) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        let keys = slf.get().chunk.meta.keys.bind(slf.py());
        let values = Self::tuple(slf)?;
        Ok(keys.iter().zip(values.iter()).collect())
    }
}

/// Has the cyclic GC track `record` once it keeps `value`, an object that could refer back
/// to it (a list or dict from a JSON or array column, an object from a result processor).
/// The GC then sees the value through `__traverse__`, and a cycle through the record (a
/// JSON object that the record is stored into) is collected.
fn track_if_needed(record: &Bound<'_, Record>, value: &Bound<'_, PyAny>) {
    #[allow(
        unsafe_code,
        reason = "PyO3 has no safe API to ask about or start tracking"
    )]
    // SAFETY: both are live objects and the interpreter is held; `PyObject_IS_GC` only reads
    // the value's type; the record is of a GC type and is tracked only if it is not yet.
    unsafe {
        if pyo3::ffi::PyObject_IS_GC(value.as_ptr()) != 0
            && pyo3::ffi::PyObject_GC_IsTracked(record.as_ptr()) == 0
        {
            pyo3::ffi::PyObject_GC_Track(record.as_ptr().cast());
        }
    }
}

#[pymethods]
impl Record {
    /// Shows the GC the values this record has converted and keeps (only those: the rest of
    /// its block belongs to other records). Called only once the record is tracked.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let width = self.chunk.width;
        for slot in &self.chunk.cache[self.row * width..(self.row + 1) * width] {
            slot.visit(&visit)?;
        }
        Ok(())
    }

    fn __getitem__<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if key.is_instance_of::<PySlice>() {
            return Self::tuple(slf)?.as_any().get_item(key);
        }
        match this.position(py, key)? {
            Some(i) => Self::value(slf, i),
            None if key.is_instance_of::<PyInt>() => Err(PyIndexError::new_err(format!(
                "record index {key} out of range: the record has {} column(s)",
                this.chunk.meta.keys.bind(py).len()
            ))),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __getattr__<'py>(
        slf: &Bound<'py, Self>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        match this.chunk.meta.index.bind(py).get_item(name)? {
            Some(i) => Self::value(slf, i.extract()?),
            None => Err(PyAttributeError::new_err(format!(
                "the record has no column '{name}' (its columns: {})",
                this.chunk
                    .meta
                    .keys
                    .bind(py)
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn __len__(&self) -> usize {
        self.chunk.width
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self
            .chunk
            .meta
            .keys
            .bind(py)
            .as_any()
            .try_iter()?
            .into_any())
    }

    /// The values in reverse column order: what `reversed()` gives on upstream's record, a
    /// `Sequence` whose `__reversed__` reads `record[i]` from the last index down.
    fn __reversed__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let values = Self::tuple(slf)?;
        let reversed: Vec<_> = values.iter().rev().collect();
        Ok(PyList::new(slf.py(), reversed)?
            .into_any()
            .try_iter()?
            .into_any())
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(key.is_instance_of::<PyString>() && self.chunk.meta.index.bind(py).contains(key)?)
    }

    /// The column names, in order.
    fn keys<'py>(&self, py: Python<'py>) -> Bound<'py, PyTuple> {
        self.chunk.meta.keys.bind(py).clone()
    }

    /// The values, in column order.
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        Self::tuple(slf)
    }

    /// `(name, value)` pairs, in column order.
    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(slf.py(), Self::pairs(slf)?)
    }

    /// The value of column `key`, or `default` when there is no such column.
    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        match slf.get().position(py, key)? {
            Some(i) => Self::value(slf, i),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// The record itself: it is already a mapping (SQLAlchemy's `Row._mapping`).
    #[getter(_mapping)]
    fn mapping(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The values as a tuple (SQLAlchemy's `Row._tuple()`).
    fn _tuple<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        Self::tuple(slf)
    }

    /// A dict of the columns (for a duplicated name, the last column).
    fn _asdict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(slf.py());
        for (k, v) in Self::pairs(slf)? {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let mut out = String::from("<Record");
        for (k, v) in Self::pairs(slf)? {
            out.push(' ');
            out.push_str(&k.str()?.to_cow()?);
            out.push('=');
            out.push_str(&v.repr()?.to_cow()?);
        }
        out.push('>');
        Ok(out)
    }

    fn __eq__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = slf.py();
        if let Ok(other) = other.cast::<Record>() {
            return Ok(slf.get().chunk.meta.keys.bind(py).eq(other
                .get()
                .chunk
                .meta
                .keys
                .bind(py))?
                && Self::tuple(slf)?.eq(Self::tuple(other)?)?);
        }
        if let Ok(other) = other.cast::<PyDict>() {
            return Self::_asdict(slf)?.eq(other);
        }
        Ok(false)
    }

    fn __ne__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(!Self::__eq__(slf, other)?)
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        // Pickles as the dict of its columns.
        let d = Self::_asdict(slf)?;
        (py.get_type::<PyDict>(), (d,))
            .into_pyobject(py)
            .map(Bound::into_any)
    }
}
