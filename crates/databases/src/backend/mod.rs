//! The backends. Each has the same shape: open a connection, run a bound query (execute,
//! fetch, stream, batch of rows), run transaction control statements, and queue a rollback
//! from a synchronous `Drop`.

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use crate::error::{Error, Result};
use crate::params::{Dialect, NamedParams};
use crate::record::Record;
use crate::transaction::TransactionOptions;
use crate::url::Backend;
use crate::value::Value;
use crate::{Config, ExecuteResult};
use futures_util::stream::BoxStream;

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!("enable at least one backend feature: `sqlite`, `postgres` or `mysql`");

/// Converts each value for a backend, naming the parameter (and the row, in a batch) when
/// the backend cannot take it.
#[cfg(feature = "mysql")]
pub(crate) fn convert_values<T>(
    values: Vec<Value>,
    names: &[String],
    row: Option<usize>,
    convert: impl Fn(Value) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            convert(v).map_err(|why| {
                let name = names.get(i).map_or("?", String::as_str);
                Error::new(
                    crate::ErrorKind::InvalidParameter,
                    format!("parameter ':{name}'{}: {why}", crate::params::in_row(row)),
                )
            })
        })
        .collect()
}

/// The shared column names for a result of `sql`, taken from `cache` (one per thread, see
/// the callers) when the names there are still `names` (a schema change can alter them), and
/// made and kept otherwise. A query run again then hands out the same `Arc<Columns>`, so
/// the records of its results share one set of names and the Python layer one column map
/// (it recognises the `Arc`), without copying each name for every query.
fn shared_columns<N: AsRef<str>>(
    cache: &mut crate::SqlMap<std::sync::Arc<crate::record::Columns>>,
    sql: &str,
    names: impl ExactSizeIterator<Item = N> + Clone,
) -> std::sync::Arc<crate::record::Columns> {
    /// The most queries kept per thread; past that the cache starts again.
    const LIMIT: usize = 256;
    if let Some(columns) = cache.get(sql)
        && columns.len() == names.len()
        && columns
            .names()
            .iter()
            .zip(names.clone())
            .all(|(a, b)| a == b.as_ref())
    {
        return columns.clone();
    }
    let columns = std::sync::Arc::new(crate::record::Columns::new(
        names.map(|n| n.as_ref().to_owned()).collect(),
    ));
    if cache.len() >= LIMIT {
        cache.clear();
    }
    cache.insert(sql.into(), columns.clone());
    columns
}

/// For `INSERT ... VALUES (?, ?)` (nothing after the tuple but blanks or `;`), the text up to
/// and including `VALUES ` and the tuple `(?, ?)`: `execute_many` sends such a statement with
/// many tuples. `None` for anything else, and for a tuple holding quoted text (kept simple).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn split_values_clause(sql: &str) -> Option<(&str, &str)> {
    let trimmed = sql.trim_end().trim_end_matches(';').trim_end();
    if !trimmed.get(..6)?.eq_ignore_ascii_case("insert")
        && !trimmed.get(..7)?.eq_ignore_ascii_case("replace")
    {
        return None;
    }
    if !trimmed.ends_with(')') {
        return None;
    }
    // The tuple: from the `(` matching the final `)`.
    let bytes = trimmed.as_bytes();
    let mut depth = 0i32;
    let mut open = None;
    for (i, b) in bytes.iter().enumerate().rev() {
        match b {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    open = Some(i);
                    break;
                }
            }
            b'\'' | b'"' | b'`' => return None,
            _ => {}
        }
    }
    let open = open?;
    let before = trimmed[..open].trim_end();
    let start = before.len().checked_sub(6)?;
    let keyword = before.get(start..)?;
    // The keyword itself, not the end of a name such as `f_values`.
    let word_before = before[..start]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
    if !keyword.eq_ignore_ascii_case("values") || word_before {
        return None;
    }
    Some((&trimmed[..open], &trimmed[open..]))
}

/// The values of each row of an `execute_many`, in placeholder order; errors name the row.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn bound_rows(rows: Vec<NamedParams>, names: &[String]) -> Result<Vec<Vec<Value>>> {
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| row.into_bound_row(names, Some(i)))
        .collect()
}

/// The records of a result that a producer sends in chunks, one at a time: SQLite's
/// connection thread and MySQL's reading task fill the channel.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<Record>>>,
    buffer: std::vec::IntoIter<Record>,
}

#[cfg(any(feature = "sqlite", feature = "mysql"))]
impl Chunks {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<Result<Vec<Record>>>) -> Self {
        Self {
            rx,
            buffer: Vec::new().into_iter(),
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "mysql"))]
impl futures_core::Stream for Chunks {
    type Item = Result<Record>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            if let Some(record) = self.buffer.next() {
                return Poll::Ready(Some(Ok(record)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.buffer = chunk.into_iter(),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Whether a server connection is usable: poisoned while an operation is in flight, and
/// for good when one never finished.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Default)]
pub(crate) struct Poison {
    set: std::sync::atomic::AtomicBool,
    /// The operation that left it poisoned was abandoned by its caller (its future was
    /// dropped), rather than ended by the loss of the session.
    abandoned: std::sync::atomic::AtomicBool,
    /// An operation found the server session gone (see [`InFlight::end`]).
    lost: std::sync::atomic::AtomicBool,
    /// An operation ran past `command_timeout` and a cancellation may still be on its way
    /// (see [`Timed::Unsure`]).
    unsure: std::sync::atomic::AtomicBool,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Poison {
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Poisons the connection for good: its session is lost.
    #[cfg_attr(
        not(feature = "mysql"),
        allow(
            dead_code,
            reason = "only MySQL poisons a connection outside an operation"
        )
    )]
    pub(crate) fn set(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        self.set.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether an abandoned operation poisoned it: the connection is being discarded, and
    /// the server ends its session, rolling back any transaction open there.
    pub(crate) fn abandoned(&self) -> bool {
        self.abandoned.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks, from inside an operation, that the session's state is no longer what the
    /// connection takes it to be (a transaction statement of the operation's own failed),
    /// so the connection is not used again once the operation ends.
    pub(crate) fn set_unsure(&self) {
        self.unsure.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether it is poisoned for good (abandoned, or its session lost), rather than busy
    /// with an operation in flight.
    pub(crate) fn gone(&self) -> bool {
        self.abandoned()
            || self.lost.load(std::sync::atomic::Ordering::SeqCst)
            || self.unsure.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Marks a server connection poisoned while an operation is in flight. Dropped before
/// [`InFlight::done`] (its future was dropped), the connection stays poisoned, so the pool
/// discards it, and `abandon` runs to stop the statement on the server.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) struct InFlight {
    poisoned: std::sync::Arc<Poison>,
    abandon: Option<Abandon>,
}

/// What stops the statement of an abandoned operation on the server (a cancel request, a
/// `KILL`). Made once per connection: an operation only clones the `Arc`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) type Abandon = std::sync::Arc<dyn Fn() + Send + Sync>;

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl InFlight {
    /// Starts an operation; fails on a connection that an earlier one left poisoned.
    pub(crate) fn start(poisoned: &std::sync::Arc<Poison>, abandon: &Abandon) -> Result<Self> {
        if poisoned.set.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::connection_lost(if poisoned.abandoned() {
                "this connection was abandoned in the middle of an operation (its caller was \
                 cancelled) and cannot be used again; take another from the pool (with \
                 force_rollback, disconnect and connect again)"
            } else if poisoned.unsure.load(std::sync::atomic::Ordering::SeqCst) {
                "an earlier operation left this connection in an unknown state (a statement ran \
                 past command_timeout and its cancellation may still arrive, or a transaction \
                 statement of its own failed), so it is not used again; take another from the \
                 pool (with force_rollback, disconnect and connect again)"
            } else if poisoned.gone() {
                "this connection's server session was lost during an earlier operation; take \
                 another from the pool (with force_rollback, disconnect and connect again)"
            } else {
                "this connection is busy with another operation"
            }));
        }
        Ok(Self {
            poisoned: poisoned.clone(),
            abandon: Some(abandon.clone()),
        })
    }

    /// The operation ended (well or with an error): the connection is usable again.
    pub(crate) fn done(mut self) {
        self.abandon = None;
        // Unless the operation found the connection's state unknown (see
        // [`Poison::set_unsure`]).
        if !self.poisoned.gone() {
            self.poisoned
                .set
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// [`InFlight::end`] for an operation under `command_timeout`: an unsure end (see
    /// [`Timed`]) leaves the connection poisoned for good, with nothing to stop on the
    /// server, so the pool discards it.
    pub(crate) fn end_timed(mut self, timed: Timed, session_lost: bool) {
        if timed == Timed::Unsure {
            self.poisoned
                .unsure
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.abandon = None;
        } else {
            self.end(session_lost);
        }
    }

    /// The operation ended; `session_lost` when its error says the server session is gone.
    /// That leaves the connection poisoned (with nothing to stop on the server), so the pool
    /// discards it at once, without waiting for the driver to notice the closed socket.
    pub(crate) fn end(mut self, session_lost: bool) {
        if session_lost {
            self.poisoned
                .lost
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.abandon = None;
        } else {
            self.done();
        }
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(abandon) = self.abandon.take() {
            self.poisoned
                .abandoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            abandon();
        }
    }
}

/// The starts of transactions (`BEGIN`, `START TRANSACTION`, `SAVEPOINT sp_N`) on a server
/// connection that have not gone out: they go with the connection's next statement.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Default)]
pub(crate) struct Starts {
    /// The starts not sent yet, outermost first, with their depths. Always the innermost
    /// open levels: a level goes out with every level outside it.
    pub(crate) pending: Vec<(u32, String)>,
    /// Set when a transaction's start, sent with a statement, failed: statements are refused
    /// until the transaction is rolled back, so none runs outside the transaction its caller
    /// opened.
    pub(crate) failed: bool,
}

/// Starts taken to be sent: one text the database runs statement by statement, stopping
/// at the first error.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) struct TakenStarts {
    /// The statements, joined by `; `.
    pub(crate) sql: String,
    /// How many statements `sql` holds.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) statements: usize,
    /// Whether they start the outermost level (a failure leaves no transaction open).
    pub(crate) outermost: bool,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Starts {
    /// Fails after a start that went out with a statement failed, until the rollback.
    pub(crate) fn check(&self) -> Result<()> {
        if self.failed {
            return Err(Error::transaction(
                "the transaction failed to start; roll it back before running anything else \
                 on this connection",
            ));
        }
        Ok(())
    }

    /// Queues the start of `level`; fails after a failed start, until the rollback.
    pub(crate) fn push(&mut self, level: u32, sql: String) -> Result<()> {
        self.check()?;
        self.pending.push((level, sql));
        Ok(())
    }

    /// Takes the starts not sent yet.
    pub(crate) fn take(&mut self) -> Option<TakenStarts> {
        let outermost = self.pending.first()?.0 == 1;
        let statements = self.pending.len();
        let sql = self
            .pending
            .drain(..)
            .map(|(_, sql)| sql)
            .collect::<Vec<_>>()
            .join("; ");
        Some(TakenStarts {
            sql,
            statements,
            outermost,
        })
    }

    /// Drops the starts of `level` and the levels inside it that have not gone out; true
    /// when `level`'s own start was among them (nothing was sent at that level since).
    pub(crate) fn forget(&mut self, level: u32) -> bool {
        let unsent = self.pending.iter().any(|(l, _)| *l == level);
        self.pending.retain(|(l, _)| *l < level);
        unsent
    }

    /// Whether the transaction at `level` ends without a round trip: its start never went
    /// out (and no start failed, and the connection is not `poisoned`). Forgets that start
    /// and those inside it.
    pub(crate) fn end_unsent(&mut self, level: u32, poisoned: bool) -> bool {
        !self.failed && !poisoned && self.forget(level)
    }

    /// Before running transaction control `sql`: the rollback of a transaction whose start
    /// failed clears the failure (nothing may be open on the server, and a rollback outside
    /// a transaction only warns).
    pub(crate) fn before_control(&mut self, sql: &str) {
        if self.failed && sql == "ROLLBACK" {
            self.failed = false;
            self.pending.clear();
        }
    }
}

/// The error of a transaction's start sent ahead of a statement (`cause`); `ran` when that
/// statement succeeded, outside the transaction.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn start_error(cause: Error, ran: bool) -> Error {
    let mut message = format!("could not start the transaction: {}", cause.message());
    if ran {
        message.push_str(" (the statement sent with its start ran outside it)");
    }
    let mut error = Error::new(cause.kind(), message);
    if let (Some(code), Some(db)) = (cause.code(), cause.db_message()) {
        error = error.with_db(code.to_owned(), db.to_owned());
    }
    error.with_source(cause)
}

/// Runs `fut` on `runtime` (the one a connection was opened on) without waiting for it: also
/// from a thread without a runtime, where an abandoned operation's future may be dropped.
/// A runtime that has shut down drops `fut` unrun.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn spawn_detached(
    runtime: &tokio::runtime::Handle,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    drop(runtime.spawn(fut));
}

/// How an operation under `command_timeout` left its connection.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timed {
    /// It ended within the limit, or the one cancellation sent for it stopped it: nothing
    /// else is on its way to the session.
    Clean,
    /// It ran past the limit and a cancellation it may not have consumed is on its way (it
    /// ended some other way, or more than one was sent). Arriving late, that cancellation
    /// would stop the connection's next statement instead, so the connection must not run
    /// another.
    Unsure,
}

/// Runs `op` within `limit`. Past it, `cancel` asks the server to stop the statement, and the
/// operation is awaited to its end, so the protocol stays in step; the result is then a
/// timeout error. A cancel that reaches the server before the statement does is ignored, so
/// while the operation goes on it is repeated, with growing pauses, a bounded number of
/// times. `cancelled` tells the error a cancellation produces: the connection stays usable
/// only when the one cancel sent produced it (see [`Timed`]).
///
/// `op` comes pinned by the caller: taken by value, it was stored in this function's future
/// once as the argument and again for each place it is awaited (rustc does not overlap
/// them), and the whole future copied on every call.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn with_command_timeout<T, C: Future<Output = ()>>(
    limit: Option<std::time::Duration>,
    mut op: std::pin::Pin<&mut impl Future<Output = Result<T>>>,
    mut cancel: impl FnMut() -> C,
    cancelled: impl Fn(&Error) -> bool,
) -> (Result<T>, Timed) {
    let Some(limit) = limit else {
        return (op.await, Timed::Clean);
    };
    if let Ok(result) = tokio::time::timeout(limit, op.as_mut()).await {
        return (result, Timed::Clean);
    }
    let mut pause = std::time::Duration::from_millis(20);
    let mut sent = 0;
    let mut ended = None;
    for _ in 0..8 {
        // Boxed: a cancel future is large (PostgreSQL's opens a connection, TLS included);
        // held inline it added 1.8 KB to every operation's future (a `fetch_one`: 4.7 KB
        // instead of 2.9), though only an operation that times out ever runs one.
        Box::pin(cancel()).await;
        sent += 1;
        if let Ok(result) = tokio::time::timeout(pause, op.as_mut()).await {
            ended = Some(result);
            break;
        }
        pause *= 2;
    }
    let result = match ended {
        Some(result) => result,
        None => op.await,
    };
    let consumed = sent == 1 && matches!(&result, Err(e) if cancelled(e));
    (
        Err(Error::new(
            crate::ErrorKind::Database,
            format!("the statement ran longer than command_timeout ({limit:?}) and was cancelled"),
        )),
        if consumed {
            Timed::Clean
        } else {
            Timed::Unsure
        },
    )
}

/// Whether transaction control `sql` is a rollback. A rollback runs without the command
/// timeout: cancelled, it would leave the transaction open while the caller takes it as
/// ended.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn is_rollback(sql: &str) -> bool {
    sql.starts_with("ROLLBACK")
}

/// Whether an abandoned stream keeps its connection usable (see [`RawConnection::stream`]).
pub(crate) type Keep = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// A query with its placeholders rewritten and its values picked, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct BoundQuery {
    /// Shared with the connection's cache of rewritten queries.
    pub(crate) sql: std::sync::Arc<str>,
    pub(crate) values: Vec<Value>,
    /// The parameter name of each value, for messages.
    pub(crate) names: std::sync::Arc<[String]>,
    /// True when the caller has a transaction open: the backend refuses to run the statement
    /// if the database has meanwhile ended that transaction, rather than let it autocommit.
    pub(crate) in_transaction: bool,
}

/// One open connection to some backend.
pub(crate) enum RawConnection {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteConnection),
    #[cfg(feature = "postgres")]
    Postgres(Box<postgres::PgConnection>),
    #[cfg(feature = "mysql")]
    Mysql(Box<mysql::MyConnection>),
}

/// Per-backend connection settings, resolved from the URL.
#[derive(Debug, Clone)]
pub(crate) enum BackendConfig {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteConfig),
    #[cfg(feature = "postgres")]
    Postgres(Box<postgres::PgConfig>),
    #[cfg(feature = "mysql")]
    Mysql(Box<mysql::MyConfig>),
    /// A backend this build does not have; connecting fails with a clear error.
    Missing(Backend),
}

impl BackendConfig {
    pub(crate) fn from_url(url: &crate::DatabaseUrl) -> Result<Self> {
        Ok(match url.backend() {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => Self::Sqlite(sqlite::SqliteConfig::from_url(url)?),
            #[cfg(feature = "postgres")]
            Backend::Postgres => Self::Postgres(Box::new(postgres::PgConfig::from_url(url)?)),
            #[cfg(feature = "mysql")]
            Backend::Mysql => Self::Mysql(Box::new(mysql::MyConfig::from_url(url)?)),
            #[allow(
                unreachable_patterns,
                reason = "reachable when a backend feature is off"
            )]
            other => Self::Missing(other),
        })
    }

    /// The URL options this backend understands, besides the common ones; `None` when the
    /// backend is not in this build (its options are not checked).
    pub(crate) fn options(&self) -> Option<&'static [&'static str]> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Some(sqlite::OPTIONS),
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => Some(postgres::OPTIONS),
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => Some(mysql::OPTIONS),
            Self::Missing(_) => None,
        }
    }

    /// Waits, until `deadline` at the latest, for the connections that were dropped to finish
    /// closing: SQLite closes each on its own thread.
    pub(crate) async fn closed(&self, deadline: tokio::time::Instant) {
        #[cfg(feature = "sqlite")]
        if let Self::Sqlite(c) = self {
            let _ = tokio::time::timeout_at(deadline, c.threads.ended()).await;
        }
        #[cfg(not(feature = "sqlite"))]
        let _ = deadline;
    }

    /// True for an in-memory SQLite database, which must stay one connection.
    pub(crate) fn in_memory(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.in_memory,
            _ => false,
        }
    }
}

impl RawConnection {
    /// Opens a connection for `config`.
    pub(crate) async fn open(config: &Config) -> Result<Self> {
        match &config.backend {
            #[cfg(feature = "sqlite")]
            BackendConfig::Sqlite(c) => Ok(Self::Sqlite(sqlite::SqliteConnection::open(c).await?)),
            #[cfg(feature = "postgres")]
            BackendConfig::Postgres(c) => Ok(Self::Postgres(Box::new(
                postgres::PgConnection::open(c).await?,
            ))),
            #[cfg(feature = "mysql")]
            BackendConfig::Mysql(c) => {
                Ok(Self::Mysql(Box::new(mysql::MyConnection::open(c).await?)))
            }
            BackendConfig::Missing(other) => Err(Error::config(format!(
                "this build of `databases` has no {other} backend: enable its cargo feature (`{}`)",
                match other {
                    Backend::Postgres => "postgres",
                    Backend::Mysql => "mysql",
                    Backend::Sqlite => "sqlite",
                }
            ))),
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => Dialect::Mysql,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => Backend::Mysql,
        }
    }

    pub(crate) async fn execute(&mut self, query: BoundQuery) -> Result<ExecuteResult> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.execute(query).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.execute(query).await,
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.execute(query).await,
        }
    }

    /// Runs `query.sql` once per row of parameters (`query.values` is unused).
    pub(crate) async fn execute_many(
        &mut self,
        query: BoundQuery,
        rows: Vec<NamedParams>,
    ) -> Result<u64> {
        match self {
            // SQLite binds each row from its map on the connection thread.
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.execute_many(query, rows).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => {
                let rows = bound_rows(rows, &query.names)?;
                c.execute_many(query, rows).await
            }
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => {
                let rows = bound_rows(rows, &query.names)?;
                c.execute_many(query, rows).await
            }
        }
    }

    pub(crate) async fn fetch(
        &mut self,
        query: BoundQuery,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.fetch(query, limit).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.fetch(query, limit).await,
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.fetch(query, limit).await,
        }
    }

    /// Sends a query and returns its rows as a stream that owns what it needs.
    ///
    /// `keep`, while set: the caller goes on using this connection after dropping the stream
    /// early, so the rest of the result is read and dropped (PostgreSQL, MySQL) rather than
    /// the statement stopped and the connection discarded. SQLite stops it either way,
    /// harmlessly.
    pub(crate) async fn stream(
        &mut self,
        query: BoundQuery,
        keep: Keep,
    ) -> Result<BoxStream<'static, Result<Record>>> {
        let _ = &keep;
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => Ok(c.stream(query)),
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.stream(query, keep).await,
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.stream(query, keep).await,
        }
    }

    /// Starts the outermost transaction with `sql` (`BEGIN ...`). SQLite queues it ahead of
    /// the transaction's first statement instead of waiting for it (see
    /// `SqliteConnection::begin`); PostgreSQL and MySQL send it with that statement (see
    /// `PgConnection::begin` and `MyConnection::execute`).
    pub(crate) async fn begin(&mut self, sql: String) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.begin(sql),
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.begin(sql),
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.savepoint(1, sql),
        }
    }

    /// Starts the transaction at `level` > 1 with `sql` (`SAVEPOINT sp_N`). PostgreSQL and
    /// MySQL send it with the savepoint's first statement; SQLite runs it at once.
    pub(crate) async fn savepoint(&mut self, level: u32, sql: String) -> Result<()> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.savepoint(level, sql),
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.savepoint(level, sql),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => {
                let _ = level;
                c.control(sql).await
            }
        }
    }

    /// Ends the transaction at `level` with `sql` (a commit, a release or a rollback).
    /// PostgreSQL and MySQL send nothing for a level whose start has not gone out.
    pub(crate) async fn finish(&mut self, level: u32, sql: String) -> Result<()> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.finish(level, sql).await,
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.finish(level, sql).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => {
                let _ = level;
                c.control(sql).await
            }
        }
    }

    /// Runs transaction control SQL (`BEGIN`, `SAVEPOINT sp_2`, ...).
    pub(crate) async fn control(&mut self, sql: String) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.control(sql).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.control(sql).await,
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.control(sql).await,
        }
    }

    /// Queues the rollback of the transaction at `level` (`sql`) without waiting for it: it
    /// runs before anything sent later on this connection. Returns false when the backend
    /// cannot do that; the caller then leaves the rollback pending (see
    /// `PoolConn::pending_rollback`).
    pub(crate) fn queue_rollback(&mut self, level: u32, sql: String) -> bool {
        // Each backend uses one of the two.
        let _ = (level, &sql);
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.queue(sql),
            // A level whose start has not gone out has nothing to roll back.
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.forget(level),
            // MySQL cannot send without awaiting: unless its start never went out, the
            // caller leaves the rollback pending until the connection's next statement.
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.forget(level),
        }
    }

    /// Stops the statement running now, if any. Only for an outermost transaction that is
    /// being abandoned: its rollback follows.
    pub(crate) fn interrupt(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.interrupt(),
            // An abandoned server operation cancels itself (see `InFlight` in each backend).
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            _ => {}
        }
    }

    /// Stops the statement running now if it only reads (SQLite): for a savepoint that is
    /// being abandoned, whose outer transaction must survive.
    pub(crate) fn interrupt_read(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.interrupt_read(),
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            _ => {}
        }
    }

    /// The statements that start an outermost transaction with `options`; an error for an
    /// option this database does not have.
    pub(crate) fn begin_statements(&self, options: &TransactionOptions) -> Result<Vec<String>> {
        let lacks = |what: &str| Error::transaction(format!("{} has no {what}", self.backend()));
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => {
                if options.read_only {
                    return Err(lacks(
                        "read-only transactions; open the database with ?mode=ro",
                    ));
                }
                if options.deferrable {
                    return Err(lacks("deferrable transactions"));
                }
                if options
                    .isolation
                    .is_some_and(|l| l != crate::IsolationLevel::Serializable)
                {
                    return Err(lacks(
                        "isolation levels: its transactions are always serializable",
                    ));
                }
                Ok(vec![c.begin_sql().to_owned()])
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => {
                let _ = lacks;
                let mut sql = "BEGIN".to_owned();
                if let Some(level) = options.isolation {
                    sql.push_str(" ISOLATION LEVEL ");
                    sql.push_str(level.sql());
                }
                if options.read_only {
                    sql.push_str(" READ ONLY");
                }
                if options.deferrable {
                    sql.push_str(" DEFERRABLE");
                }
                Ok(vec![sql])
            }
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => {
                if options.deferrable {
                    return Err(lacks("deferrable transactions"));
                }
                let mut statements = Vec::new();
                if let Some(level) = options.isolation {
                    // Without GLOBAL or SESSION this applies to the next transaction only.
                    statements.push(format!("SET TRANSACTION ISOLATION LEVEL {}", level.sql()));
                }
                let start = if options.read_only {
                    "START TRANSACTION READ ONLY"
                } else {
                    "START TRANSACTION"
                };
                statements.push(start.to_owned());
                Ok(statements)
            }
        }
    }

    /// Whether an earlier operation left this server connection unusable for good: its
    /// caller gave up on it, or its session was lost. The pool discards it, and the end of
    /// the session ends any transaction open there. Never on SQLite, which stops the
    /// statement and goes on.
    pub(crate) fn session_gone(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.poisoned.gone(),
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.poisoned.gone(),
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.is_broken(),
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c.is_broken(),
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.is_broken(),
        }
    }

    /// Whether the server ended this idle connection in a way the client has not seen yet.
    /// Checked when the pool hands a connection out; PostgreSQL's and SQLite's
    /// `is_broken` already cover it.
    pub(crate) fn closed_by_server(&self) -> bool {
        match self {
            #[cfg(feature = "mysql")]
            Self::Mysql(c) => c.closed_by_server(),
            #[allow(unreachable_patterns, reason = "MySQL may be the only backend built")]
            _ => false,
        }
    }
}

#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Abandon, InFlight, Poison, Starts, Timed, is_rollback, with_command_timeout};
    use crate::{Error, ErrorKind, Result};

    fn flight(poisoned: &Arc<Poison>, abandoned: &Arc<AtomicUsize>) -> InFlight {
        let abandoned = abandoned.clone();
        let abandon: Abandon = Arc::new(move || {
            abandoned.fetch_add(1, Ordering::SeqCst);
        });
        InFlight::start(poisoned, &abandon).unwrap()
    }

    fn nothing() -> Abandon {
        Arc::new(|| {})
    }

    #[test]
    fn values_clauses() {
        assert_eq!(
            super::split_values_clause("INSERT INTO t (a, b) VALUES (?, ?)"),
            Some(("INSERT INTO t (a, b) VALUES ", "(?, ?)"))
        );
        assert_eq!(
            super::split_values_clause("insert into t values(?, now());"),
            Some(("insert into t values", "(?, now())"))
        );
        assert_eq!(
            super::split_values_clause("INSERT INTO t (a) SELECT ? FROM dual"),
            None
        );
        assert_eq!(
            super::split_values_clause(
                "INSERT INTO t (a) VALUES (?) ON DUPLICATE KEY UPDATE a = a"
            ),
            None
        );
        assert_eq!(super::split_values_clause("UPDATE t SET a = ?"), None);
        assert_eq!(
            super::split_values_clause("INSERT INTO t (a) SELECT a FROM f_values(?)"),
            None
        );
        assert_eq!(
            super::split_values_clause("INSERT INTO t(a)VALUES($1::int)"),
            Some(("INSERT INTO t(a)VALUES", "($1::int)"))
        );
        assert_eq!(
            super::split_values_clause("INSERT INTO t (a) VALUES ('x', ?)"),
            None
        );
    }

    #[test]
    fn an_operation_in_flight_poisons_until_it_ends() {
        let (poisoned, abandoned) = (Arc::default(), Arc::default());
        let guard = flight(&poisoned, &abandoned);
        assert!(poisoned.is_set());
        // A second operation cannot start meanwhile.
        assert_eq!(
            InFlight::start(&poisoned, &nothing()).err().unwrap().kind(),
            ErrorKind::ConnectionLost
        );
        guard.done();
        assert!(!poisoned.is_set() && !poisoned.gone());
        assert_eq!(abandoned.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_dropped_operation_is_abandoned_and_stays_poisoned() {
        let (poisoned, abandoned) = (Arc::default(), Arc::default());
        drop(flight(&poisoned, &abandoned));
        assert!(poisoned.is_set() && poisoned.abandoned() && poisoned.gone());
        assert_eq!(abandoned.load(Ordering::SeqCst), 1);
    }

    /// A statement under `with_command_timeout` that ends `after` the `k`-th cancel, with
    /// the cancellation's error, or with success if `k` is 0.
    async fn timed(after: usize, k: usize) -> (Result<()>, Timed, usize) {
        let sent = Arc::new(AtomicUsize::new(0));
        let op = {
            let sent = sent.clone();
            async move {
                loop {
                    let n = sent.load(Ordering::SeqCst);
                    if k == 0 && n >= after {
                        return Ok(());
                    }
                    if k > 0 && n >= k {
                        return Err(Error::new(ErrorKind::Database, "stopped").with_db("57014", ""));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        };
        let cancel = || {
            sent.fetch_add(1, Ordering::SeqCst);
            async {}
        };
        let limit = Some(std::time::Duration::from_millis(5));
        let op = std::pin::pin!(op);
        let (result, how) =
            with_command_timeout(limit, op, cancel, |e| e.code() == Some("57014")).await;
        (result, how, sent.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_command_timeout_keeps_the_connection_only_when_its_cancel_was_spent() {
        // Within the limit: the statement's own result.
        let (result, how, sent) = timed(0, 0).await;
        assert!(result.is_ok() && how == Timed::Clean && sent == 0);
        // Stopped by the one cancel sent: a timeout error, and nothing left on its way.
        let (result, how, sent) = timed(0, 1).await;
        assert!(result.unwrap_err().to_string().contains("command_timeout"));
        assert_eq!((how, sent), (Timed::Clean, 1));
        // Stopped by the second: the first may still arrive.
        let (_, how, sent) = timed(0, 2).await;
        assert_eq!((how, sent), (Timed::Unsure, 2));
        // It ended on its own after the cancel was sent: that cancel may still arrive.
        let (result, how, _) = timed(1, 0).await;
        assert!(result.is_err());
        assert_eq!(how, Timed::Unsure);
    }

    #[test]
    fn an_unsure_end_poisons_for_good_and_says_why() {
        let (poisoned, abandoned) = (Arc::default(), Arc::default());
        flight(&poisoned, &abandoned).end_timed(Timed::Clean, false);
        assert!(!poisoned.is_set());
        flight(&poisoned, &abandoned).end_timed(Timed::Unsure, false);
        assert!(poisoned.is_set() && poisoned.gone() && !poisoned.abandoned());
        let e = InFlight::start(&poisoned, &nothing()).err().unwrap();
        assert!(e.to_string().contains("command_timeout"), "{e}");
        assert_eq!(abandoned.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_operation_that_found_the_state_unknown_stays_poisoned() {
        let (poisoned, abandoned) = (Arc::default(), Arc::default());
        let guard = flight(&poisoned, &abandoned);
        poisoned.set_unsure();
        guard.done();
        assert!(poisoned.is_set() && poisoned.gone() && !poisoned.abandoned());
        let e = InFlight::start(&poisoned, &nothing()).err().unwrap();
        assert!(e.to_string().contains("unknown state"), "{e}");
    }

    #[test]
    fn rollbacks_are_recognised() {
        assert!(is_rollback("ROLLBACK"));
        assert!(is_rollback(
            "ROLLBACK TO SAVEPOINT sp_2; RELEASE SAVEPOINT sp_2"
        ));
        assert!(!is_rollback("COMMIT"));
        assert!(!is_rollback("RELEASE SAVEPOINT sp_2"));
    }

    #[test]
    fn only_a_lost_session_stays_poisoned_at_the_end() {
        let (poisoned, abandoned) = (Arc::default(), Arc::default());
        flight(&poisoned, &abandoned).end(false);
        assert!(!poisoned.is_set());
        assert!(!poisoned.gone());
        flight(&poisoned, &abandoned).end(true);
        // Poisoned for good, not abandoned: the next operation says the session was lost.
        assert!(poisoned.is_set() && !poisoned.abandoned() && poisoned.gone());
        let e = InFlight::start(&poisoned, &nothing()).err().unwrap();
        assert!(e.to_string().contains("session was lost"), "{e}");
        // Nothing is left to stop on the server.
        assert_eq!(abandoned.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn starts_go_out_together_and_unsent_levels_end_without_io() {
        let mut starts = Starts::default();
        starts.push(1, "BEGIN".into()).unwrap();
        starts.push(2, "SAVEPOINT sp_2".into()).unwrap();
        let taken = starts.take().unwrap();
        assert_eq!(taken.sql, "BEGIN; SAVEPOINT sp_2");
        assert_eq!((taken.statements, taken.outermost), (2, true));
        assert!(starts.take().is_none());

        // Level 1 went out; levels 2 and 3 did not.
        starts.push(2, "SAVEPOINT sp_2".into()).unwrap();
        starts.push(3, "SAVEPOINT sp_3".into()).unwrap();
        assert!(starts.end_unsent(3, false));
        // A poisoned connection sends its end, which fails there.
        assert!(!starts.end_unsent(2, true));
        assert_eq!(starts.pending.len(), 1);
        assert!(!starts.end_unsent(1, false), "level 1 went out");
        assert!(
            starts.pending.is_empty(),
            "the levels inside it are forgotten"
        );
        let inner = {
            starts.push(2, "SAVEPOINT sp_2".into()).unwrap();
            starts.take().unwrap()
        };
        assert!(!inner.outermost);
    }

    #[test]
    fn a_failed_start_refuses_until_the_rollback() {
        let mut starts = Starts {
            failed: true,
            ..Starts::default()
        };
        assert!(starts.check().is_err());
        assert!(starts.push(1, "BEGIN".into()).is_err());
        assert!(!starts.end_unsent(1, false));
        starts.before_control("RELEASE SAVEPOINT sp_2");
        assert!(starts.failed);
        starts.before_control("ROLLBACK");
        assert!(!starts.failed);
        starts.push(1, "BEGIN".into()).unwrap();
    }
}

#[cfg(all(test, any(feature = "sqlite", feature = "mysql")))]
mod column_tests {
    #[test]
    fn a_query_run_again_shares_its_columns_until_they_change() {
        use std::sync::Arc;
        let mut cache = crate::SqlMap::default();
        let first = super::shared_columns(&mut cache, "SELECT a, b FROM t", ["a", "b"].iter());
        let again = super::shared_columns(&mut cache, "SELECT a, b FROM t", ["a", "b"].iter());
        assert!(Arc::ptr_eq(&first, &again));
        // Another query with the same names has its own.
        let other = super::shared_columns(&mut cache, "SELECT a, b FROM u", ["a", "b"].iter());
        assert!(!Arc::ptr_eq(&first, &other));
        // The table changed under the same SQL (`SELECT *`): new names, a new set.
        let renamed = super::shared_columns(&mut cache, "SELECT a, b FROM t", ["a", "c"].iter());
        assert_eq!(renamed.names(), ["a", "c"]);
        let widened =
            super::shared_columns(&mut cache, "SELECT a, b FROM t", ["a", "c", "d"].iter());
        assert_eq!(widened.names(), ["a", "c", "d"]);
        // Bounded: past 256 queries the cache starts again.
        for i in 0..300 {
            super::shared_columns(&mut cache, &format!("SELECT {i}"), ["x"].iter());
        }
        assert!(cache.len() <= 256);
    }
}
