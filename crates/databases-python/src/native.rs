//! The database, connection and cursor objects that the Python package wraps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use databases::{Connection, Database, IsolationLevel, NamedParams, TransactionOptions};
use futures_util::future::BoxFuture;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use tokio::sync::{Mutex, Notify, Semaphore, mpsc};

use crate::awaitable::Awaitable;
use crate::record::{Builder, Spec};
use crate::{convert, run, run_here, run_on, run_started_here, runtime};

/// Rows per chunk handed from an `iterate` query to Python.
const CHUNK_ROWS: usize = 500;

/// The connection a Python `Connection` holds, and what the operations on it signal to an
/// `iterate` that is reading from it.
struct Held {
    /// `None` once released.
    conn: Mutex<Option<Connection>>,
    /// Operations waiting for `conn`. An `iterate` in progress that sees one reads the rest
    /// of its rows into memory and lets the connection go, so that a query inside the loop
    /// runs instead of waiting for a loop that waits for it.
    waiting: AtomicUsize,
    /// Set once the connection is being given back: an `iterate` still running stops.
    releasing: AtomicBool,
    /// Woken when `waiting` or `releasing` change.
    changed: Notify,
    /// The connection's backend (where its operations are driven: [`drive_here`],
    /// [`here_now`], [`begin_here`]).
    backend: databases::Backend,
}

impl Held {
    fn new(conn: Connection) -> Self {
        Self {
            backend: conn.backend(),
            conn: Mutex::new(Some(conn)),
            waiting: AtomicUsize::default(),
            releasing: AtomicBool::default(),
            changed: Notify::default(),
        }
    }

    /// Waits for the connection, telling an `iterate` in progress that someone is waiting.
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, Option<Connection>> {
        struct Waiting<'a>(&'a Held);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(self);
        self.changed.notify_waiters();
        let guard = self.conn.lock().await;
        drop(waiting);
        guard
    }

    fn release_soon(&self) {
        self.releasing.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

type Slot = Arc<Held>;

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
        let returned = convert::to_py(py, &result.returned)?;
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

/// Whether operations on `backend` are driven from the event loop's thread ([`run_here`]):
/// - SQLite's: a short read runs there inline, other work goes to the connection's own
///   thread while the loop waits.
/// - MySQL's: mysql_async has no connection task, so the statement is written to the socket
///   from the loop's thread and the answer wakes the loop directly, one thread hop fewer than
///   a runtime task (same-run A/B: sequential `fetch_one` +10–28%, 32 tasks +5–14%).
///
/// PostgreSQL's are driven here only when no other one is in flight ([`here_now`]).
fn drive_here(backend: databases::Backend) -> bool {
    matches!(
        backend,
        databases::Backend::Sqlite | databases::Backend::Mysql
    )
}

/// PostgreSQL operations in flight in this process (see [`Busy`]).
static POSTGRES_BUSY: AtomicUsize = AtomicUsize::new(0);

/// Whether an operation on `backend` that starts now is driven from the event loop's thread:
/// where [`drive_here`] says so, and on PostgreSQL when no other PostgreSQL operation is in
/// flight. A PostgreSQL operation writes its request to the socket itself (the core flushes
/// the connection's queue when it waits), so one driven here costs no wake of a runtime
/// thread to send it; but its protocol work then runs on the loop's thread, which many
/// concurrent operations keep busy, while on the runtime it runs beside the loop (32 tasks:
/// 21-27k calls/s all driven here against 30-43k on the runtime).
fn here_now(backend: databases::Backend) -> bool {
    drive_here(backend)
        || (backend == databases::Backend::Postgres && POSTGRES_BUSY.load(Ordering::Relaxed) == 0)
}

/// The SQL of the PostgreSQL queries whose latest `fetch_all` returned at least
/// [`LargeResults::ROWS`] rows.
///
/// A `fetch_all` driven from the event loop's thread reads and decodes its rows there, where
/// the Python code that made the call and will read the rows also runs. For such a query
/// the next `fetch_all` is only started there and finished on the runtime
/// ([`run_started_here`]): 10% less time for 10,000 rows. It is not done for every query,
/// because for a short result the task costs more than it saves.
struct LargeResults;

/// See [`LargeResults`].
static LARGE_RESULTS: std::sync::LazyLock<std::sync::Mutex<LargeSet>> =
    std::sync::LazyLock::new(Default::default);

type LargeSet = std::collections::HashSet<Box<str>, foldhash::fast::RandomState>;

impl LargeResults {
    /// A result of this many rows or more is large.
    const ROWS: usize = 2_000;
    /// The most queries remembered; past that the set starts again.
    const LIMIT: usize = 256;

    fn set() -> std::sync::MutexGuard<'static, LargeSet> {
        LARGE_RESULTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the latest result of `sql` was large.
    fn has(sql: &str) -> bool {
        Self::set().contains(sql)
    }

    /// Records that a result of `sql` had `rows` rows, when that changes what is known of
    /// it (`was_large`: what [`LargeResults::has`] said before the query).
    fn note(sql: String, rows: usize, was_large: bool) {
        let large = rows >= Self::ROWS;
        if large == was_large {
            return;
        }
        let mut set = Self::set();
        if large {
            if set.len() >= Self::LIMIT {
                set.clear();
            }
            set.insert(sql.into_boxed_str());
        } else {
            set.remove(sql.as_str());
        }
    }
}

/// A `fetch_all` that gives its SQL back with the rows (for [`LargeResults::note`]).
fn fetch_all_keeping_sql(
    sql: String,
    params: NamedParams,
) -> impl for<'c> FnOnce(
    &'c mut Connection,
) -> BoxFuture<'c, databases::Result<(Vec<databases::Record>, String)>>
+ Send
+ 'static {
    move |c| Box::pin(async move { Ok((c.fetch_all(&sql, params).await?, sql)) })
}

/// Counts a PostgreSQL operation in [`POSTGRES_BUSY`] while it lives.
struct Busy(bool);

impl Busy {
    fn enter(backend: databases::Backend) -> Self {
        let postgres = backend == databases::Backend::Postgres;
        if postgres {
            POSTGRES_BUSY.fetch_add(1, Ordering::Relaxed);
        }
        Self(postgres)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0 {
            POSTGRES_BUSY.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether starting a transaction on `backend` is driven from the event loop's thread: where
/// its other operations are, and on PostgreSQL, whose `BEGIN` and `SAVEPOINT` go out with
/// the next statement. Starting one there has no I/O of its own (with an idle connection in
/// the pool, none at all), so it finishes on its first poll instead of hopping to the
/// runtime and back.
fn begin_here(backend: databases::Backend) -> bool {
    drive_here(backend) || backend == databases::Backend::Postgres
}

impl Target {
    fn backend(&self) -> databases::Backend {
        match self {
            Self::Pool(db) => db.backend(),
            Self::Held(slot) => slot.backend,
        }
    }

    /// Runs `op` on the target's connection, one operation at a time on a held one.
    async fn run<T, F>(self, op: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Connection) -> BoxFuture<'c, databases::Result<T>>
            + Send
            + 'static,
    {
        let backend = self.backend();
        let here = here_now(backend);
        let _busy = Busy::enter(backend);
        self.run_on(here, op).await
    }

    /// [`Target::run`], driven from the event loop's thread when `here`.
    async fn run_on<T, F>(self, here: bool, op: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Connection) -> BoxFuture<'c, databases::Result<T>>
            + Send
            + 'static,
    {
        run_on(here, self.on_connection(op)).await
    }

    /// `op` on the target's connection: a pooled one, or the held one when it is free.
    async fn on_connection<T, F>(self, op: F) -> databases::Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Connection) -> BoxFuture<'c, databases::Result<T>>
            + Send
            + 'static,
    {
        match self {
            Self::Pool(db) => op(&mut db.connection().await?).await,
            Self::Held(slot) => match slot.lock().await.as_mut() {
                Some(conn) => op(conn).await,
                None => Err(released()),
            },
        }
    }

    async fn fetch_all(
        self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
        mysql: bool,
    ) -> PyResult<Py<PyList>> {
        let params = params_of(values)?;
        let backend = self.backend();
        if backend != databases::Backend::Postgres {
            let rows = self
                .run(move |c| Box::pin(async move { c.fetch_all(&sql, params).await }))
                .await?;
            return records(rows, spec, mysql);
        }
        // A query whose last result was large is read on the runtime (see `LargeResults`),
        // unless `run` drives it there anyway.
        let was_large = LargeResults::has(&sql);
        let (rows, sql) = if was_large && here_now(backend) {
            let _busy = Busy::enter(backend);
            run_started_here(self.on_connection(fetch_all_keeping_sql(sql, params))).await?
        } else {
            self.run(fetch_all_keeping_sql(sql, params)).await?
        };
        LargeResults::note(sql, rows.len(), was_large);
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
    fn connect(&self) -> Awaitable {
        let db = self.db.clone();
        Awaitable::new(
            "NativeDatabase.connect",
            run(async move { db.connect().await }),
        )
    }

    /// Closes the pool.
    fn disconnect(&self) -> Awaitable {
        let db = self.db.clone();
        Awaitable::new(
            "NativeDatabase.disconnect",
            run(async move { db.disconnect().await }),
        )
    }

    /// Takes a connection from the pool.
    fn acquire(&self) -> Awaitable {
        let (db, mysql) = (self.db.clone(), self.mysql);
        let here = drive_here(db.backend());
        Awaitable::new("NativeDatabase.acquire", async move {
            let conn = run_on(here, async move { db.connection().await }).await?;
            Ok(NativeConnection {
                slot: Arc::new(Held::new(conn)),
                mysql,
            })
        })
    }

    /// Takes a connection from the pool and starts a transaction on it, in one call (one
    /// hand-over between Python and the runtime instead of two).
    #[pyo3(signature = (isolation = None, readonly = false, deferrable = false))]
    fn acquire_begin(
        &self,
        isolation: Option<String>,
        readonly: bool,
        deferrable: bool,
    ) -> PyResult<Awaitable> {
        let options = transaction_options(isolation, readonly, deferrable)?;
        let (db, mysql) = (self.db.clone(), self.mysql);
        let here = begin_here(db.backend());
        Ok(Awaitable::new("NativeDatabase.acquire_begin", async move {
            let conn = run_on(here, async move {
                let mut conn = db.connection().await?;
                conn.begin(options).await?;
                Ok(conn)
            })
            .await?;
            Ok(NativeConnection {
                slot: Arc::new(Held::new(conn)),
                mysql,
            })
        }))
    }

    /// Runs a query on a pooled connection and returns all its records.
    #[pyo3(signature = (sql, values = None, spec = None))]
    fn fetch_all(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> Awaitable {
        Awaitable::new(
            "NativeDatabase.fetch_all",
            self.target().fetch_all(sql, values, spec, self.mysql),
        )
    }

    /// Runs a query on a pooled connection and returns its first record, or `None`.
    #[pyo3(signature = (sql, values = None, spec = None))]
    fn fetch_one(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> Awaitable {
        Awaitable::new(
            "NativeDatabase.fetch_one",
            self.target().fetch_one(sql, values, spec, self.mysql),
        )
    }

    /// Runs a statement on a pooled connection: `(rows_affected, last_insert_id, returned)`.
    #[pyo3(signature = (sql, values = None))]
    fn execute(&self, sql: String, values: Option<Py<PyAny>>) -> Awaitable {
        Awaitable::new("NativeDatabase.execute", self.target().execute(sql, values))
    }

    /// Runs a statement once per parameter dict, on one pooled connection; returns the rows
    /// affected in all.
    fn execute_many(&self, sql: String, values: Py<PyAny>) -> Awaitable {
        Awaitable::new(
            "NativeDatabase.execute_many",
            self.target().execute_many(sql, values),
        )
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

/// The options of `begin` from its Python arguments.
fn transaction_options(
    isolation: Option<String>,
    readonly: bool,
    deferrable: bool,
) -> PyResult<TransactionOptions> {
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
    Ok(options)
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
    fn fetch_all(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> Awaitable {
        Awaitable::new(
            "NativeConnection.fetch_all",
            self.target().fetch_all(sql, values, spec, self.mysql),
        )
    }

    /// Runs a query and returns its first record, or `None`.
    #[pyo3(signature = (sql, values = None, spec = None))]
    fn fetch_one(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> Awaitable {
        Awaitable::new(
            "NativeConnection.fetch_one",
            self.target().fetch_one(sql, values, spec, self.mysql),
        )
    }

    /// Runs a statement: `(rows_affected, last_insert_id, returned)`.
    #[pyo3(signature = (sql, values = None))]
    fn execute(&self, sql: String, values: Option<Py<PyAny>>) -> Awaitable {
        Awaitable::new(
            "NativeConnection.execute",
            self.target().execute(sql, values),
        )
    }

    /// Runs a statement once per parameter dict; returns the rows affected in all.
    fn execute_many(&self, sql: String, values: Py<PyAny>) -> Awaitable {
        Awaitable::new(
            "NativeConnection.execute_many",
            self.target().execute_many(sql, values),
        )
    }

    /// Starts a query whose records are read in chunks (see [`NativeCursor`]).
    #[pyo3(signature = (sql, values = None, spec = None))]
    fn iterate(
        &self,
        sql: String,
        values: Option<Py<PyAny>>,
        spec: Option<Py<PyAny>>,
    ) -> PyResult<NativeCursor> {
        let params = params_of(values)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let flow = Arc::new(Flow::new());
        let slot = self.slot.clone();
        let producer_flow = flow.clone();
        runtime().spawn(async move {
            let mut guard = slot.lock().await;
            let Some(conn) = guard.as_mut() else {
                let _ = tx.send(Err(released()));
                return;
            };
            // SQLite stops a dropped statement without harm to the connection; PostgreSQL and
            // MySQL would discard it, so there the rest of an abandoned result is read instead.
            let drain = conn.backend() != databases::Backend::Sqlite;
            let rows = conn.iterate(&sql, params);
            produce(rows, &tx, &producer_flow, &slot, drain).await;
        });
        Ok(NativeCursor {
            rx: Arc::new(Mutex::new(rx)),
            flow,
            spec,
            mysql: self.mysql,
        })
    }

    /// Starts a transaction (a savepoint inside one) and returns its depth.
    #[pyo3(signature = (isolation = None, readonly = false, deferrable = false))]
    fn begin(
        &self,
        isolation: Option<String>,
        readonly: bool,
        deferrable: bool,
    ) -> PyResult<Awaitable> {
        let options = transaction_options(isolation, readonly, deferrable)?;
        Ok(Awaitable::new(
            "NativeConnection.begin",
            self.target()
                .run_on(begin_here(self.slot.backend), move |c| {
                    Box::pin(async move { c.begin(options).await })
                }),
        ))
    }

    /// Commits the transaction at `depth` (the innermost).
    fn commit(&self, depth: u32) -> Awaitable {
        Awaitable::new(
            "NativeConnection.commit",
            self.target()
                .run(move |c| Box::pin(async move { c.commit_depth(depth).await })),
        )
    }

    /// Rolls back the transaction at `depth` (the innermost).
    fn rollback(&self, depth: u32) -> Awaitable {
        Awaitable::new(
            "NativeConnection.rollback",
            self.target()
                .run(move |c| Box::pin(async move { c.rollback_depth(depth).await })),
        )
    }

    /// Commits (or rolls back) the transaction at `depth`, the outermost, and returns the
    /// connection to the pool, in one call. The connection goes back even if the commit
    /// fails (a failed outermost commit leaves no transaction open, or the pool discards it).
    fn finish_release(&self, depth: u32, commit: bool) -> Awaitable {
        let slot = self.slot.clone();
        slot.release_soon();
        let (here, busy) = (here_now(slot.backend), Busy::enter(slot.backend));
        Awaitable::new(
            "NativeConnection.finish_release",
            run_on(here, async move {
                let _busy = busy;
                let mut conn = slot.conn.lock().await.take().ok_or_else(released)?;
                if commit {
                    conn.commit_depth(depth).await
                } else {
                    conn.rollback_depth(depth).await
                }
            }),
        )
    }

    /// Returns the connection to the pool, once the operation in progress, if any, ends (an
    /// `iterate` still running is stopped).
    fn release(&self) -> Awaitable {
        let slot = self.slot.clone();
        slot.release_soon();
        Awaitable::new(
            "NativeConnection.release",
            run_on(drive_here(slot.backend), async move {
                let conn = slot.conn.lock().await.take();
                drop(conn);
                Ok(())
            }),
        )
    }

    /// Like `release`, without waiting: for code that cannot await (a finalizer).
    fn release_soon(&self) {
        let slot = self.slot.clone();
        slot.release_soon();
        runtime().spawn(async move {
            let conn = slot.conn.lock().await.take();
            drop(conn);
        });
    }
}

impl NativeConnection {
    fn target(&self) -> Target {
        Target::Held(self.slot.clone())
    }
}

/// A chunk of records, or the error that ended an `iterate`.
type Chunk = databases::Result<Vec<databases::Record>>;

/// What the reader of an `iterate` tells its producer.
struct Flow {
    /// Chunks the reader asked for and the producer has not read yet.
    credits: Semaphore,
    /// The reader is gone: stop.
    stop: AtomicU8,
    /// Woken when `stop` is set.
    changed: Notify,
}

/// Values of [`Flow::stop`].
const GOING: u8 = 0;
/// The reader left the loop (`break`, an error): the connection must stay usable.
const LEFT: u8 = 1;
/// The reader was cancelled: the statement is stopped, as any cancelled operation.
const CANCELLED: u8 = 2;

impl Flow {
    fn new() -> Self {
        Self {
            // The first chunk is read at once.
            credits: Semaphore::new(1),
            stop: AtomicU8::new(GOING),
            changed: Notify::new(),
        }
    }

    fn stop(&self, how: u8) {
        let _ = self
            .stop
            .compare_exchange(GOING, how, Ordering::SeqCst, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// What the producer of an `iterate` does next.
enum Turn {
    /// The reader wants a chunk.
    Read,
    /// Another operation waits for the connection: read everything now, into memory.
    Spill,
    /// The reader is gone; the value of [`Flow::stop`].
    Stop(u8),
    /// The connection is being given back under a reader that is still there.
    Release,
}

async fn next_turn(flow: &Flow, held: &Held) -> Turn {
    loop {
        let flow_changed = flow.changed.notified();
        let held_changed = held.changed.notified();
        tokio::pin!(flow_changed, held_changed);
        flow_changed.as_mut().enable();
        held_changed.as_mut().enable();
        if let Some(turn) = pending_turn(flow, held) {
            return turn;
        }
        if held.waiting.load(Ordering::SeqCst) > 0 {
            return Turn::Spill;
        }
        tokio::select! {
            () = &mut flow_changed => {}
            () = &mut held_changed => {}
            permit = flow.credits.acquire() => {
                if let Ok(permit) = permit {
                    permit.forget();
                }
                return Turn::Read;
            }
        }
    }
}

/// A stop or release that ends the production at once.
fn pending_turn(flow: &Flow, held: &Held) -> Option<Turn> {
    match flow.stop.load(Ordering::SeqCst) {
        GOING if held.releasing.load(Ordering::SeqCst) => Some(Turn::Release),
        GOING => None,
        how => Some(Turn::Stop(how)),
    }
}

/// Reads `rows` in chunks for the reader of an `iterate`, as fast as it asks for them, and
/// all at once if another operation waits for the connection. A reader that leaves has the
/// rest of the rows read and dropped when `drain` is set (the connection stays usable), and
/// the statement stopped otherwise; a cancelled reader, or a release, always stops it.
async fn produce(
    mut rows: databases::RowStream<'_>,
    tx: &mpsc::UnboundedSender<Chunk>,
    flow: &Flow,
    held: &Held,
    drain: bool,
) {
    let mut spilling = false;
    loop {
        let turn = if spilling {
            pending_turn(flow, held).unwrap_or(Turn::Spill)
        } else {
            next_turn(flow, held).await
        };
        match turn {
            Turn::Read => {}
            Turn::Spill => spilling = true,
            Turn::Stop(how) => {
                let stopped = how == CANCELLED || !drain || {
                    let rest = async { while let Ok(Some(_)) = rows.try_next().await {} };
                    tokio::select! {
                        () = rest => false,
                        () = interrupted(flow, held, drain) => true,
                    }
                };
                if stopped {
                    rows.cancel();
                }
                return;
            }
            Turn::Release => {
                rows.cancel();
                let _ = tx.send(Err(databases::Error::new(
                    databases::ErrorKind::NotConnected,
                    "the connection was released while its rows were being read: \
                     read them inside the `async with` block that holds the connection",
                )));
                return;
            }
        }
        let read = {
            let read = async {
                let mut chunk = Vec::with_capacity(CHUNK_ROWS);
                loop {
                    match rows.try_next().await {
                        Ok(Some(row)) => {
                            chunk.push(row);
                            if chunk.len() == CHUNK_ROWS {
                                return Ok((chunk, false));
                            }
                        }
                        Ok(None) => return Ok((chunk, true)),
                        Err(e) => return Err(e),
                    }
                }
            };
            tokio::select! {
                biased;
                read = read => Some(read),
                // Cancelled or released while the server works: stop the statement now.
                () = interrupted(flow, held, drain) => None,
            }
        };
        let Some(read) = read else {
            rows.cancel();
            return;
        };
        let (chunk, end) = match read {
            Ok(read) => read,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
            flow.stop(LEFT);
        }
        if end {
            return;
        }
    }
}

/// Completes when an `iterate` must stop at once, even in the middle of reading: its reader
/// was cancelled, or left when `drain` is off, or the connection is being given back.
async fn interrupted(flow: &Flow, held: &Held, drain: bool) {
    loop {
        let flow_changed = flow.changed.notified();
        let held_changed = held.changed.notified();
        tokio::pin!(flow_changed, held_changed);
        flow_changed.as_mut().enable();
        held_changed.as_mut().enable();
        let stop = flow.stop.load(Ordering::SeqCst);
        if stop == CANCELLED || (stop == LEFT && !drain) || held.releasing.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            () = &mut flow_changed => {}
            () = &mut held_changed => {}
        }
    }
}

/// The records of an `iterate` query, read a chunk at a time.
///
/// The query runs on a tokio task that holds the connection and reads one chunk ahead of the
/// reader. Another operation on the same connection (a query inside the loop) makes it read
/// the rest of the rows into memory and let the connection go. Closing the cursor, or
/// dropping it, stops the query.
#[pyclass(frozen, module = "databases._native")]
pub(crate) struct NativeCursor {
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Chunk>>>,
    flow: Arc<Flow>,
    spec: Option<Py<PyAny>>,
    mysql: bool,
}

#[pymethods]
impl NativeCursor {
    /// The next chunk of records; an empty list at the end.
    fn fetch(&self, py: Python<'_>) -> Awaitable {
        let rx = self.rx.clone();
        self.flow.credits.add_permits(1);
        let spec = self.spec.as_ref().map(|s| s.clone_ref(py));
        let mysql = self.mysql;
        Awaitable::new("NativeCursor.fetch", async move {
            // Only waits for the reading task's next message: driven from the loop's thread.
            let chunk = run_here(async move { Ok(rx.lock().await.recv().await) }).await?;
            match chunk {
                Some(Ok(rows)) => records(rows, spec, mysql),
                Some(Err(e)) => Err(crate::errors::to_py(e)),
                None => Python::attach(|py| Ok(PyList::empty(py).unbind())),
            }
        })
    }

    /// Stops reading, keeping the connection usable: on PostgreSQL and MySQL the rest of the
    /// result is read and dropped in the background, and the connection is free once that
    /// ends. Does nothing after the end.
    fn close(&self) {
        self.flow.stop(LEFT);
    }

    /// Stops reading because the reader was cancelled: the statement is stopped as for any
    /// cancelled operation (on PostgreSQL and MySQL the connection is then discarded).
    fn cancel(&self) {
        self.flow.stop(CANCELLED);
    }
}

impl Drop for NativeCursor {
    fn drop(&mut self) {
        self.flow.stop(LEFT);
    }
}
