//! Values between Python objects and [`databases::Value`].

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use databases::{NamedParams, Value};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess, PyDict,
    PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTime, PyTimeAccess, PyTuple, PyType,
    PyTzInfoAccess,
};

static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UUID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static ENUM: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The parameters of one statement, from a dict of names to values (or `None`).
pub(crate) fn params(values: Option<&Bound<'_, PyAny>>) -> PyResult<NamedParams> {
    let mut params = NamedParams::new();
    let Some(values) = values else {
        return Ok(params);
    };
    if values.is_none() {
        return Ok(params);
    }
    let dict = values.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "query values must be a dict of parameter names to values, not {}",
            type_name(values)
        ))
    })?;
    for (key, value) in dict.iter() {
        let name = key
            .cast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "parameter names must be str, not {} ({})",
                    type_name(&key),
                    key.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?
            .to_str()?
            .to_owned();
        let v = to_value(&value, &name)?;
        params.insert(name, v);
    }
    Ok(params)
}

/// The parameters of `execute_many`: one dict per row.
pub(crate) fn many_params(values: &Bound<'_, PyAny>) -> PyResult<Vec<NamedParams>> {
    let mut rows = Vec::with_capacity(values.len().unwrap_or(0));
    for item in values.try_iter()? {
        rows.push(params(Some(&item?))?);
    }
    Ok(rows)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// How deep lists may nest in a parameter: PostgreSQL arrays have at most 6 dimensions.
const MAX_ARRAY_DEPTH: usize = 6;

/// Converts one parameter value; `name` is the parameter, for messages.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Value> {
    value_of(obj, name, 0)
}

fn value_of(obj: &Bound<'_, PyAny>, name: &str, depth: usize) -> PyResult<Value> {
    let py = obj.py();
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Int(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::UInt(u));
        }
        return Err(PyOverflowError::new_err(format!(
            "parameter '{name}': the integer {} does not fit in 64 bits",
            obj.repr()?
        )));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Text(
            s.to_str()
                .map_err(|e| {
                    PyValueError::new_err(format!(
                        "parameter '{name}': the text is not valid UTF-8: {e}"
                    ))
                })?
                .to_owned(),
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        return Ok(Value::Bytes(obj.call_method0("tobytes")?.extract()?));
    }
    if let Ok(dt) = obj.cast::<PyDateTime>() {
        return datetime_value(dt, name);
    }
    if let Ok(d) = obj.cast::<PyDate>() {
        return NaiveDate::from_ymd_opt(d.get_year(), d.get_month().into(), d.get_day().into())
            .map(Value::Date)
            .ok_or_else(|| PyValueError::new_err(format!("parameter '{name}': invalid date")));
    }
    if let Ok(t) = obj.cast::<PyTime>() {
        let time = naive_time(
            t.get_hour(),
            t.get_minute(),
            t.get_second(),
            t.get_microsecond(),
            name,
        )?;
        if t.get_tzinfo().is_some() {
            let offset = offset_of(&t.call_method0("utcoffset")?, name)?;
            return Ok(Value::TimeTz(time, offset));
        }
        return Ok(Value::Time(time));
    }
    if let Ok(delta) = obj.cast::<PyDelta>() {
        return Ok(Value::Interval {
            months: 0,
            days: delta.get_days(),
            microseconds: i64::from(delta.get_seconds()) * 1_000_000
                + i64::from(delta.get_microseconds()),
        });
    }
    if obj.is_instance(DECIMAL.import(py, "decimal", "Decimal")?)? {
        return obj
            .extract::<rust_decimal::Decimal>()
            .map(Value::Decimal)
            .map_err(|_| {
                PyValueError::new_err(format!(
                    "parameter '{name}': the Decimal {} has more than 28 significant digits or is \
                 not a finite number",
                    obj.str().map(|s| s.to_string()).unwrap_or_default()
                ))
            });
    }
    if obj.is_instance(UUID.import(py, "uuid", "UUID")?)? {
        return Ok(Value::Uuid(obj.extract()?));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(Value::Json(json_of(d.as_any(), name, 0)?));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(PyValueError::new_err(format!(
                "parameter '{name}': lists nested deeper than {MAX_ARRAY_DEPTH} levels (the most \
                 array dimensions PostgreSQL has); pass deeper data as JSON (json.dumps)"
            )));
        }
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(value_of(&item?, name, depth + 1)?);
        }
        return Ok(Value::Array(items));
    }
    if obj.is_instance(ENUM.import(py, "enum", "Enum")?)? {
        return Err(PyTypeError::new_err(format!(
            "parameter '{name}': cannot bind the enum member {}; pass its .value or .name, or \
             use a SQLAlchemy Enum column",
            obj.repr()?
        )));
    }
    Err(PyTypeError::new_err(format!(
        "parameter '{name}': cannot bind a value of type {}",
        type_name(obj)
    )))
}

fn naive_time(hour: u8, minute: u8, second: u8, micro: u32, name: &str) -> PyResult<NaiveTime> {
    NaiveTime::from_hms_micro_opt(hour.into(), minute.into(), second.into(), micro)
        .ok_or_else(|| PyValueError::new_err(format!("parameter '{name}': invalid time")))
}

/// A `timedelta` UTC offset as a chrono offset.
fn offset_of(delta: &Bound<'_, PyAny>, name: &str) -> PyResult<FixedOffset> {
    let delta = delta.cast::<PyDelta>().map_err(|_| {
        PyValueError::new_err(format!(
            "parameter '{name}': the time zone gives no UTC offset"
        ))
    })?;
    let seconds = delta.get_days() * 86_400 + delta.get_seconds();
    FixedOffset::east_opt(seconds).ok_or_else(|| {
        PyValueError::new_err(format!("parameter '{name}': UTC offset out of range"))
    })
}

fn datetime_value(dt: &Bound<'_, PyDateTime>, name: &str) -> PyResult<Value> {
    let date = NaiveDate::from_ymd_opt(dt.get_year(), dt.get_month().into(), dt.get_day().into())
        .ok_or_else(|| PyValueError::new_err(format!("parameter '{name}': invalid date")))?;
    let time = naive_time(
        dt.get_hour(),
        dt.get_minute(),
        dt.get_second(),
        dt.get_microsecond(),
        name,
    )?;
    let naive = NaiveDateTime::new(date, time);
    if dt.get_tzinfo().is_none() {
        return Ok(Value::DateTime(naive));
    }
    let offset = offset_of(&dt.call_method0("utcoffset")?, name)?;
    naive
        .and_local_timezone(offset)
        .single()
        .map(Value::DateTimeTz)
        .ok_or_else(|| PyValueError::new_err(format!("parameter '{name}': invalid datetime")))
}

/// Converts a dict or list parameter to JSON.
fn json_of(obj: &Bound<'_, PyAny>, name: &str, depth: usize) -> PyResult<serde_json::Value> {
    const MAX_DEPTH: usize = databases::MAX_NESTING;
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "parameter '{name}': JSON nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(serde_json::Value::Null);
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        return Ok(serde_json::Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(i.into());
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(u.into());
        }
        return Err(PyOverflowError::new_err(format!(
            "parameter '{name}': an integer in the JSON value does not fit in 64 bits"
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(serde_json::Value::Number)
            .ok_or_else(|| {
                PyValueError::new_err(format!("parameter '{name}': JSON has no NaN or infinity"))
            });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(serde_json::Value::String(s.to_str()?.to_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .map_err(|_| {
                    PyTypeError::new_err(format!(
                        "parameter '{name}': JSON object keys must be str, not {}",
                        type_name(&k)
                    ))
                })?
                .to_str()?
                .to_owned();
            map.insert(key, json_of(&v, name, depth + 1)?);
        }
        return Ok(serde_json::Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(json_of(&item?, name, depth + 1)?);
        }
        return Ok(serde_json::Value::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "parameter '{name}': a {} cannot be stored in JSON",
        type_name(obj)
    )))
}

/// Converts a result value to the Python object the upstream drivers return for it.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match *value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, f).into_any(),
        Value::Decimal(d) => d.into_pyobject(py)?,
        Value::Text(ref s) => PyString::new(py, s).into_any(),
        Value::Bytes(ref b) => PyBytes::new(py, b).into_any(),
        Value::Date(d) => d.into_pyobject(py)?.into_any(),
        Value::Time(t) => t.into_pyobject(py)?.into_any(),
        Value::TimeTz(t, offset) => {
            let tz = offset.into_pyobject(py)?;
            let (second, micro) = seconds_and_micros(t);
            PyTime::new(
                py,
                u8::try_from(t.hour()).unwrap_or(0),
                u8::try_from(t.minute()).unwrap_or(0),
                second,
                micro,
                Some(&tz),
            )?
            .into_any()
        }
        Value::DateTime(dt) => dt.into_pyobject(py)?.into_any(),
        Value::DateTimeTz(dt) => dt.into_pyobject(py)?.into_any(),
        Value::Uuid(u) => u.into_pyobject(py)?.into_any(),
        Value::Json(ref j) => PyString::new(py, &j.to_string()).into_any(),
        Value::Interval {
            months,
            days,
            microseconds,
        } => {
            // As asyncpg does: a month counts as 30 days.
            let days =
                i64::from(months) * 30 + i64::from(days) + microseconds.div_euclid(86_400_000_000);
            let rest = microseconds.rem_euclid(86_400_000_000);
            let days = i32::try_from(days)
                .map_err(|_| PyOverflowError::new_err("interval out of range for timedelta"))?;
            let seconds = i32::try_from(rest / 1_000_000).unwrap_or(0);
            let micros = i32::try_from(rest % 1_000_000).unwrap_or(0);
            PyDelta::new(py, days, seconds, micros, true)?.into_any()
        }
        Value::Array(ref items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        _ => {
            return Err(PyTypeError::new_err(
                "the database returned a value this version cannot convert",
            ));
        }
    })
}

fn seconds_and_micros(t: NaiveTime) -> (u8, u32) {
    let nanos = t.nanosecond();
    // chrono keeps a leap second as nanoseconds past 1e9; Python has no leap seconds.
    let (second, nanos) = if nanos >= 1_000_000_000 {
        (59, 999_999_999)
    } else {
        (t.second(), nanos)
    };
    (u8::try_from(second).unwrap_or(59), nanos / 1000)
}
