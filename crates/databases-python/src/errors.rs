//! The PEP 249 exception classes and the mapping from the core's errors onto them.

use databases::ErrorKind;
use pyo3::prelude::*;
use pyo3::types::PyType;

pyo3::create_exception!(
    databases.exceptions,
    Error,
    pyo3::exceptions::PyException,
    "Base class of every error this package raises about the database or its use (PEP 249)."
);
pyo3::create_exception!(
    databases.exceptions,
    InterfaceError,
    Error,
    "The library was used wrongly or is configured wrongly: a bad URL or option, a query before connect()."
);
pyo3::create_exception!(
    databases.exceptions,
    DatabaseError,
    Error,
    "An error reported by the database."
);
pyo3::create_exception!(
    databases.exceptions,
    DataError,
    DatabaseError,
    "A value could not be stored or converted: out of range, wrong type, invalid text."
);
pyo3::create_exception!(
    databases.exceptions,
    OperationalError,
    DatabaseError,
    "The database could not do its work: connection lost, pool timeout, lock timeout, deadlock."
);
pyo3::create_exception!(
    databases.exceptions,
    IntegrityError,
    DatabaseError,
    "A constraint rejected the statement: unique, foreign key, not null, check."
);
pyo3::create_exception!(
    databases.exceptions,
    InternalError,
    DatabaseError,
    "The database reported an internal error or an invalid transaction state."
);
pyo3::create_exception!(
    databases.exceptions,
    ProgrammingError,
    DatabaseError,
    "The SQL is wrong: a syntax error, an unknown table or column, a missing parameter."
);
pyo3::create_exception!(
    databases.exceptions,
    NotSupportedError,
    DatabaseError,
    "The database does not have the feature that was asked for."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("InterfaceError", py.get_type::<InterfaceError>())?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("OperationalError", py.get_type::<OperationalError>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add("ProgrammingError", py.get_type::<ProgrammingError>())?;
    m.add("NotSupportedError", py.get_type::<NotSupportedError>())?;
    Ok(())
}

/// The snake_case name of an error kind, as the exception's `kind` attribute gives it.
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Url => "url",
        ErrorKind::Config => "config",
        ErrorKind::Connect => "connect",
        ErrorKind::ConnectionLost => "connection_lost",
        ErrorKind::PoolTimeout => "pool_timeout",
        ErrorKind::NotConnected => "not_connected",
        ErrorKind::UniqueViolation => "unique_violation",
        ErrorKind::ForeignKeyViolation => "foreign_key_violation",
        ErrorKind::NotNullViolation => "not_null_violation",
        ErrorKind::CheckViolation => "check_violation",
        ErrorKind::Syntax => "syntax",
        ErrorKind::Database => "database",
        ErrorKind::MissingParameter => "missing_parameter",
        ErrorKind::InvalidParameter => "invalid_parameter",
        ErrorKind::ColumnNotFound => "column_not_found",
        ErrorKind::Decode => "decode",
        ErrorKind::Transaction => "transaction",
        _ => "other",
    }
}

/// PostgreSQL codes are five-character SQLSTATEs; MySQL error numbers and SQLite result
/// codes have at most four digits.
fn is_sqlstate(code: &str) -> bool {
    code.len() == 5
}

/// The class for an error the database reported without a more precise kind, from its code:
/// a PostgreSQL SQLSTATE (five characters), a MySQL error number, or a SQLite result code.
fn class_for_code<'py>(py: Python<'py>, code: Option<&str>) -> Bound<'py, PyType> {
    let Some(code) = code else {
        return py.get_type::<DatabaseError>();
    };
    if is_sqlstate(code) {
        // PostgreSQL SQLSTATE classes.
        return match &code[..2] {
            "22" => py.get_type::<DataError>(),
            "23" => py.get_type::<IntegrityError>(),
            "42" | "26" | "34" | "3D" | "3F" => py.get_type::<ProgrammingError>(),
            "0A" => py.get_type::<NotSupportedError>(),
            "XX" | "25" | "2D" | "P0" => py.get_type::<InternalError>(),
            "08" | "40" | "53" | "54" | "55" | "57" | "58" | "F0" | "HV" => {
                py.get_type::<OperationalError>()
            }
            _ => py.get_type::<DatabaseError>(),
        };
    }
    match code.parse::<u32>() {
        // MySQL / MariaDB error numbers.
        Ok(1264 | 1265 | 1292 | 1366 | 1367 | 1406 | 1416 | 1690 | 3140) => {
            py.get_type::<DataError>()
        }
        Ok(1022 | 1048 | 1062 | 1169 | 1216 | 1217 | 1451 | 1452 | 1557 | 1586 | 3819 | 4025) => {
            py.get_type::<IntegrityError>()
        }
        Ok(1044 | 1049 | 1054 | 1064 | 1109 | 1110 | 1146 | 1149 | 1166 | 1176) => {
            py.get_type::<ProgrammingError>()
        }
        Ok(1235) => py.get_type::<NotSupportedError>(),
        Ok(n) if n >= 1000 => py.get_type::<OperationalError>(),
        // SQLite (extended) result codes: the primary code is the low byte.
        Ok(n) => match n & 0xff {
            19 => py.get_type::<IntegrityError>(),
            18 | 20 | 25 => py.get_type::<DataError>(),
            2 => py.get_type::<InternalError>(),
            _ => py.get_type::<OperationalError>(),
        },
        Err(_) => py.get_type::<DatabaseError>(),
    }
}

fn class_for<'py>(py: Python<'py>, e: &databases::Error) -> Bound<'py, PyType> {
    match e.kind() {
        ErrorKind::Url | ErrorKind::Config | ErrorKind::NotConnected => {
            py.get_type::<InterfaceError>()
        }
        ErrorKind::Connect | ErrorKind::ConnectionLost | ErrorKind::PoolTimeout => {
            py.get_type::<OperationalError>()
        }
        ErrorKind::UniqueViolation
        | ErrorKind::ForeignKeyViolation
        | ErrorKind::NotNullViolation
        | ErrorKind::CheckViolation => py.get_type::<IntegrityError>(),
        ErrorKind::Syntax | ErrorKind::MissingParameter | ErrorKind::ColumnNotFound => {
            py.get_type::<ProgrammingError>()
        }
        ErrorKind::InvalidParameter | ErrorKind::Decode => py.get_type::<DataError>(),
        ErrorKind::Transaction if e.message().contains(" has no ") => {
            py.get_type::<NotSupportedError>()
        }
        ErrorKind::Transaction => py.get_type::<ProgrammingError>(),
        _ => class_for_code(py, e.code()),
    }
}

/// Builds the Python exception for a core error: the class follows the error's kind (or
/// its database code), and `kind`, `code`, `sqlstate` and `db_message` carry the details.
pub(crate) fn to_py(e: databases::Error) -> PyErr {
    Python::attach(|py| {
        let class = class_for(py, &e);
        let built = (|| -> PyResult<PyErr> {
            let exc = class.call1((e.message(),))?;
            exc.setattr("kind", kind_name(e.kind()))?;
            exc.setattr("code", e.code())?;
            exc.setattr("sqlstate", e.code().filter(|c| is_sqlstate(c)))?;
            exc.setattr("db_message", e.db_message())?;
            Ok(PyErr::from_value(exc))
        })();
        built.unwrap_or_else(|err| err)
    })
}
