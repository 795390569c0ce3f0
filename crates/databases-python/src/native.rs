//! The database, connection and cursor objects that the Python package wraps.

use std::sync::Arc;

use databases::{Connection, Database, IsolationLevel, NamedParams, TransactionOptions};
use futures_util::future::BoxFuture;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use tokio::sync::{Mutex, mpsc};

use crate::record::{Builder, Spec};
use crate::{convert, run, runtime};

/// Rows per chunk handed from an `iterate` query to Python.
const CHUNK_ROWS: usize = 500;

/// A connection slot: `None` once released.
type Slot = Arc<Mutex<Option<Connection>>>;

fn params_of(values: Option<Py<PyAny>>) -> PyResult<NamedParams> {
    Python::attach(|py| convert::params(values.as_ref().map(|v| v.bind(py))))
}

fn records(
    rows: Vec<databases::Record>,
    spec: Option<Py<PyAny>>,
    mysql: bool,
) -> PyResult<Py<PyList>> {
    Python::attach(|py| {
        let spec = spec.map(|s| s.into_bound(py));
        let mut builder = Builder::new(py, Spec::from_py(spec.as_ref())?, mysql);
        Ok(builder.list(rows)?.unbind())
    })
}

fn one_record(
    row: Option<databases::Record>,
    spec: Option<Py<PyAny>>,
    mysql: bool,
) -> PyResult<Py<PyAny>> {
    Python::attach(|py| match row {
        None => Ok(py.None()),
        Some(row) => {
            let spec = spec.map(|s| s.into_bound(py));
            let mut builder = Builder::new(py, Spec::from_py(spec.as_ref())?, mysql);
            Ok(builder.record(row)?.into_any().unbind())
        }
    })
}

/// `(rows_affected, last_insert_id, returned)`: what a statement did.
fn execute_result(result: databases::ExecuteResult) -> PyResult<Py<PyTuple>> {
    Python::attach(|py| {
        let returned = convert::to_py(py, result.returned)?;
        Ok((result.rows_affected, result.last_insert_id, returned)
            .into_pyobject(py)?
            .unbind())
    })
}

fn released() -> databases::Error {
    databases::Error::new(
        databases::ErrorKind::NotConnected,
        "this connection was released: acquire a new one",
    )
}

/// Where a query runs: a connection taken from the pool for just this call, or the
/// connection a Python `Connection` holds.
enum Target {
    Pool(Arc<Database>),
    Held(Slot),
}

impl Target {
    /// Runs `op` on the target's connection, one operation at a time on a held one.
    async fn run<T, F>(self, op: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Connection) -> BoxFuture<'c, databases::Result<T>>
            + Send
            + 'static,
    {
        run(async move {
            match self {
                Self::Pool(db) => op(&mut db.connection().await?).await,
                Self::Held(slot) => match slot.lock_owned().await.as_mut() {
                    Some(conn) => op(conn).await,
                    None => Err(released()),
                },
            }
        })
        .await
    }

    async fn fetch_all(
        self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
        mysql: bool,
    ) -> PyResult<Py<PyList>> {
        let params = params_of(values)?;
        let rows = self
            .run(move |c| Box::pin(async move { c.fetch_all(&sql, params).await }))
            .await?;
        records(rows, spec, mysql)
    }

    async fn fetch_one(
        self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
        mysql: bool,
    ) -> PyResult<Py<PyAny>> {
        let params = params_of(values)?;
        let row = self
            .run(move |c| Box::pin(async move { c.fetch_one(&sql, params).await }))
            .await?;
        one_record(row, spec, mysql)
    }

    async fn execute(self, sql: String, values: Option<Py<PyAny>>) -> PyResult<Py<PyTuple>> {
        let params = params_of(values)?;
        let result = self
            .run(move |c| Box::pin(async move { c.execute_result(&sql, params).await }))
            .await?;
        execute_result(result)
    }

    async fn execute_many(self, sql: String, values: Py<PyAny>) -> PyResult<u64> {
        let rows = Python::attach(|py| convert::many_params(values.bind(py)))?;
        self.run(move |c| Box::pin(async move { c.execute_many(&sql, rows).await }))
            .await
    }
}

/// A pool of connections for one database URL (the core's `Database`).
#[pyclass(frozen, module = "databases._native")]
pub(crate) struct NativeDatabase {
    db: Arc<Database>,
    mysql: bool,
}

#[pymethods]
impl NativeDatabase {
    /// Checks the URL and its options; connects nothing.
    #[new]
    fn new(url: &str) -> PyResult<Self> {
        let db = Database::new(url).map_err(crate::errors::to_py)?;
        let mysql = db.backend() == databases::Backend::Mysql;
        Ok(Self {
            db: Arc::new(db),
            mysql,
        })
    }

    /// `postgresql`, `mysql` or `sqlite`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.db.backend().name()
    }

    /// True between `connect` and `disconnect`.
    #[getter]
    fn is_connected(&self) -> bool {
        self.db.is_connected()
    }

    /// Opens the pool (and its `min_size` connections).
    async fn connect(&self) -> PyResult<()> {
        let db = self.db.clone();
        run(async move { db.connect().await }).await
    }

    /// Closes the pool.
    async fn disconnect(&self) -> PyResult<()> {
        let db = self.db.clone();
        run(async move { db.disconnect().await }).await
    }

    /// Takes a connection from the pool.
    async fn acquire(&self) -> PyResult<NativeConnection> {
        let db = self.db.clone();
        let conn = run(async move { db.connection().await }).await?;
        Ok(NativeConnection {
            slot: Arc::new(Mutex::new(Some(conn))),
            mysql: self.mysql,
        })
    }

    /// Runs a query on a pooled connection and returns all its records.
    #[pyo3(signature = (sql, values = None, spec = None))]
    async fn fetch_all(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyList>> {
        self.target().fetch_all(sql, values, spec, self.mysql).await
    }

    /// Runs a query on a pooled connection and returns its first record, or `None`.
    #[pyo3(signature = (sql, values = None, spec = None))]
    async fn fetch_one(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.target().fetch_one(sql, values, spec, self.mysql).await
    }

    /// Runs a statement on a pooled connection: `(rows_affected, last_insert_id, returned)`.
    #[pyo3(signature = (sql, values = None))]
    async fn execute(&self, sql: String, values: Option<Py<PyAny>>) -> PyResult<Py<PyTuple>> {
        self.target().execute(sql, values).await
    }

    /// Runs a statement once per parameter dict, on one pooled connection; returns the rows
    /// affected in all.
    async fn execute_many(&self, sql: String, values: Py<PyAny>) -> PyResult<u64> {
        self.target().execute_many(sql, values).await
    }
}

impl NativeDatabase {
    fn target(&self) -> Target {
        Target::Pool(self.db.clone())
    }
}

/// One connection taken from the pool, until `release`.
#[pyclass(frozen, module = "databases._native")]
pub(crate) struct NativeConnection {
    slot: Slot,
    mysql: bool,
}

fn isolation_of(name: &str) -> PyResult<IsolationLevel> {
    Ok(
        match name.to_ascii_lowercase().replace([' ', '-'], "_").as_str() {
            "serializable" => IsolationLevel::Serializable,
            "repeatable_read" => IsolationLevel::RepeatableRead,
            "read_committed" => IsolationLevel::ReadCommitted,
            "read_uncommitted" => IsolationLevel::ReadUncommitted,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "isolation must be one of 'serializable', 'repeatable_read', \
                 'read_committed', 'read_uncommitted', not {name:?}"
                )));
            }
        },
    )
}

#[pymethods]
impl NativeConnection {
    /// Runs a query and returns all its records.
    #[pyo3(signature = (sql, values = None, spec = None))]
    async fn fetch_all(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyList>> {
        self.target().fetch_all(sql, values, spec, self.mysql).await
    }

    /// Runs a query and returns its first record, or `None`.
    #[pyo3(signature = (sql, values = None, spec = None))]
    async fn fetch_one(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.target().fetch_one(sql, values, spec, self.mysql).await
    }

    /// Runs a statement: `(rows_affected, last_insert_id, returned)`.
    #[pyo3(signature = (sql, values = None))]
    async fn execute(&self, sql: String, values: Option<Py<PyAny>>) -> PyResult<Py<PyTuple>> {
        self.target().execute(sql, values).await
    }

    /// Runs a statement once per parameter dict; returns the rows affected in all.
    async fn execute_many(&self, sql: String, values: Py<PyAny>) -> PyResult<u64> {
        self.target().execute_many(sql, values).await
    }

    /// Starts a query whose records are read in chunks.
    #[pyo3(signature = (sql, values = None, spec = None))]
    fn iterate(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> PyResult<NativeCursor> {
        let params = params_of(values)?;
        let (tx, rx) = mpsc::channel::<databases::Result<Vec<databases::Record>>>(1);
        let slot = self.slot.clone();
        runtime().spawn(async move {
            let mut guard = slot.lock_owned().await;
            let Some(conn) = guard.as_mut() else {
                let _ = tx.send(Err(released())).await;
                return;
            };
            let mut rows = conn.iterate(&sql, params);
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            loop {
                match rows.try_next().await {
                    Ok(Some(row)) => {
                        chunk.push(row);
                        if chunk.len() == CHUNK_ROWS
                            && tx.send(Ok(std::mem::take(&mut chunk))).await.is_err()
                        {
                            // The reader went away: read the rest, so that the connection
                            // is left between statements rather than abandoned.
                            while let Ok(Some(_)) = rows.try_next().await {}
                            return;
                        }
                    }
                    Ok(None) => {
                        if !chunk.is_empty() {
                            let _ = tx.send(Ok(chunk)).await;
                        }
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(NativeCursor {
            rx: Arc::new(Mutex::new(rx)),
            spec,
            mysql: self.mysql,
        })
    }

    /// Starts a transaction (a savepoint inside one) and returns its depth.
    #[pyo3(signature = (isolation = None, readonly = false, deferrable = false))]
    async fn begin(
        &self,
        isolation: Option<String>,
        readonly: bool,
        deferrable: bool,
    ) -> PyResult<u32> {
        let mut options = TransactionOptions::new();
        if let Some(level) = isolation {
            options = options.isolation(isolation_of(&level)?);
        }
        if readonly {
            options = options.read_only(true);
        }
        if deferrable {
            options = options.deferrable(true);
        }
        self.target()
            .run(move |c| Box::pin(async move { c.begin(options).await }))
            .await
    }

    /// Commits the transaction at `depth` (the innermost).
    async fn commit(&self, depth: u32) -> PyResult<()> {
        self.target()
            .run(move |c| Box::pin(async move { c.commit_depth(depth).await }))
            .await
    }

    /// Rolls back the transaction at `depth` (the innermost).
    async fn rollback(&self, depth: u32) -> PyResult<()> {
        self.target()
            .run(move |c| Box::pin(async move { c.rollback_depth(depth).await }))
            .await
    }

    /// Returns the connection to the pool (once the operation in progress, if any, ends).
    async fn release(&self) -> PyResult<()> {
        let slot = self.slot.clone();
        run(async move {
            let conn = slot.lock_owned().await.take();
            drop(conn);
            Ok(())
        })
        .await
    }
}

impl NativeConnection {
    fn target(&self) -> Target {
        Target::Held(self.slot.clone())
    }
}

/// The records of an `iterate` query, read a chunk at a time.
#[pyclass(frozen, module = "databases._native")]
pub(crate) struct NativeCursor {
    rx: Arc<Mutex<mpsc::Receiver<databases::Result<Vec<databases::Record>>>>>,
    spec: Option<Py<PyAny>>,
    mysql: bool,
}

#[pymethods]
impl NativeCursor {
    /// The next chunk of records; an empty list at the end.
    async fn fetch(&self) -> PyResult<Py<PyList>> {
        let rx = self.rx.clone();
        let chunk = run(async move { Ok(rx.lock().await.recv().await) }).await?;
        let spec = Python::attach(|py| self.spec.as_ref().map(|s| s.clone_ref(py)));
        match chunk {
            Some(Ok(rows)) => records(rows, spec, self.mysql),
            Some(Err(e)) => Err(crate::errors::to_py(e)),
            None => Python::attach(|py| Ok(PyList::empty(py).unbind())),
        }
    }

    /// Stops reading: the rest of the result is read and dropped in the background, and the
    /// connection is free again once that ends.
    async fn close(&self) -> PyResult<()> {
        let rx = self.rx.clone();
        run(async move {
            rx.lock().await.close();
            Ok(())
        })
        .await
    }
}
