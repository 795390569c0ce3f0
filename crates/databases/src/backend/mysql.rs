//! MySQL and MariaDB through mysql_async, on its binary (prepared statement) protocol.
//!
//! Connections are plain `mysql_async::Conn`s in our pool (no reset round trip when one is
//! returned); statements are cached per connection, or with `?statement_cache=false`
//! prepared for each use and closed after it. `execute_many` runs inside one
//! transaction or savepoint: an `INSERT ... VALUES (...)` becomes multi-row inserts of up to
//! 1,000 rows and about 32 KB each; other statements run in bulk executions of about 32 KB
//! on MariaDB and once per row on MySQL.
//!
//! A transaction's start (`START TRANSACTION`, `SAVEPOINT sp_N`) waits for its first
//! statement. A write whose values can be written into the text goes with it as one
//! multi-statement query, one round trip (see `inline`); anything else sends the start first.
//!
//! Cancellation: as on PostgreSQL, an operation whose future is dropped poisons the
//! connection (the pool discards it) and a `KILL CONNECTION` from a separate connection ends
//! its session on the server, which stops the statement. A `command_timeout` sends
//! `KILL QUERY` instead and keeps the connection when that is what stopped the statement.
//! `iterate` runs the query in a task that owns the connection and hands it back when the
//! rows are done.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use futures_util::stream::BoxStream;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Params, SslOpts, Statement, Value as MyValue};
use rust_decimal::Decimal;
use tokio::sync::mpsc;

use crate::ExecuteResult;
use crate::config::{parse_bool, parse_choice, parse_seconds};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{Columns, Record, Rows};
use crate::url::DatabaseUrl;
use crate::value::Value;

use super::{BoundQuery, InFlight, Starts, TakenStarts, start_error};

/// URL options the MySQL backend understands (besides the common ones).
pub(crate) const OPTIONS: &[&str] = &[
    "charset",
    "command_timeout",
    "connect_timeout",
    "ssl",
    "ssl_ca",
    "sslmode",
    "statement_cache",
    "unix_socket",
];

/// Rows per multi-row INSERT in `execute_many`.
const BATCH_ROWS: usize = 1000;
/// The most bytes of values (as the protocol carries them) in one statement of
/// `execute_many`. The server reads a statement into its connection's buffer, keeps that
/// buffer at its largest size, and writes results through it: after a 400 KB statement,
/// MariaDB sent a 10,000-row result as one 400 KB burst instead of 16 KB pieces, and reading
/// it took 35-45% longer for the rest of the connection's life (4.6 -> 6.0-6.8 ms). After
/// a 64 KB statement still ~6% longer; after 32 KB or 16 KB no longer than the run-to-run
/// spread (3 runs of each, best of 20 reads).
const BATCH_BYTES: usize = 32 * 1024;
/// MySQL's limit on placeholders in one statement.
const MAX_PLACEHOLDERS: usize = 65_535;
const STATEMENT_CACHE: usize = 256;
/// Rows per message from an `iterate` task.
const CHUNK_ROWS: usize = 256;

/// How to open MySQL connections, resolved from the URL.
#[derive(Clone)]
pub(crate) struct MyConfig {
    opts: Opts,
    connect_timeout: Duration,
    command_timeout: Option<Duration>,
    target: String,
    /// Whether connections use TLS (the liveness probe reads the socket under it).
    tls: bool,
}

impl std::fmt::Debug for MyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MyConfig")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl MyConfig {
    pub(crate) fn from_url(url: &DatabaseUrl) -> Result<Self> {
        let user = url
            .username()
            .map(|u| u.into_owned())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".to_owned());
        let database = url.database();
        let host = url.hostname().unwrap_or("localhost").to_owned();
        let port = url.port().unwrap_or(3306);
        let socket = url.option("unix_socket").map(str::to_owned);
        let target = socket.clone().unwrap_or_else(|| format!("{host}:{port}"));
        let mut builder = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(user))
            .pass(url.password().map(|p| p.into_owned()))
            .db_name((!database.is_empty()).then(|| database.into_owned()))
            .prefer_socket(false)
            .socket(socket.clone())
            .tcp_nodelay(true)
            // Rows matched, not only rows changed, as PostgreSQL and SQLite count them.
            .client_found_rows(true);
        let cache = url
            .option("statement_cache")
            .map(|v| parse_bool("statement_cache", v))
            .transpose()?
            .unwrap_or(true);
        builder = builder.stmt_cache_size(if cache { STATEMENT_CACHE } else { 0 });
        if let Some(charset) = url.option("charset") {
            if charset.is_empty()
                || !charset
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(Error::config(format!(
                    "invalid value '{}' for option 'charset': expected a character set name such as utf8mb4",
                    charset.escape_debug()
                )));
            }
            builder = builder.init(vec![format!("SET NAMES {charset}")]);
        }
        let mut mode = match url.option("ssl") {
            None => "disable".to_owned(),
            Some(v) => {
                if parse_bool("ssl", v)? {
                    "require".to_owned()
                } else {
                    "disable".to_owned()
                }
            }
        };
        if let Some(m) = url.option("sslmode") {
            mode = parse_choice(
                "sslmode",
                m,
                &["disable", "require", "verify-ca", "verify-full"],
            )?;
        }
        let ca = url.option("ssl_ca");
        if mode != "disable" {
            let mut ssl = SslOpts::default();
            if let Some(path) = ca {
                ssl = ssl.with_root_certs(vec![std::path::PathBuf::from(path).into()]);
            }
            ssl = match mode.as_str() {
                // Encrypt without authenticating, unless a CA was given.
                "require" if ca.is_none() => ssl.with_danger_accept_invalid_certs(true),
                "require" | "verify-ca" => ssl.with_danger_skip_domain_validation(true),
                _ => ssl,
            };
            builder = builder.ssl_opts(ssl);
        }
        let connect_timeout = url
            .option("connect_timeout")
            .map(|v| parse_seconds("connect_timeout", v))
            .transpose()?
            .unwrap_or(Duration::from_secs(30));
        let command_timeout = url
            .option("command_timeout")
            .map(|v| parse_seconds("command_timeout", v))
            .transpose()?;
        Ok(Self {
            opts: builder.into(),
            connect_timeout,
            command_timeout,
            target,
            tls: mode != "disable",
        })
    }
}

/// One MySQL connection.
pub(crate) struct MyConnection {
    /// `None` while an `iterate` task owns the connection; it comes back through `returned`.
    conn: Option<Conn>,
    returned: Arc<Mutex<Option<Conn>>>,
    id: u32,
    opts: Opts,
    /// Kills the session of an abandoned operation, on the runtime the connection was
    /// opened on.
    abandon: super::Abandon,
    command_timeout: Option<Duration>,
    pub(super) poisoned: Arc<super::Poison>,
    /// Set while an `iterate` task owns the connection: completes when it gave it back (or
    /// gave up on it).
    streaming: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Tells, without I/O, whether the server closed the connection while it sat idle.
    probe: Option<probe::Socket>,
    /// Transaction starts not sent yet: they go with the next statement.
    starts: Starts,
}

async fn connect(opts: &Opts, timeout: Duration, target: &str) -> Result<Conn> {
    let failed = |why: String| {
        Error::new(
            ErrorKind::Connect,
            format!("could not connect to MySQL at {target}: {why}"),
        )
    };
    match tokio::time::timeout(timeout, Conn::new(opts.clone())).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(failed(describe(&e)).with_source(e)),
        Err(_) => Err(failed(format!("no answer within {timeout:?}"))),
    }
}

/// Ends session `id`, whose operation was abandoned, from a connection of its own: its
/// statement stops and an open transaction rolls back. The whole session, not just the
/// query, because a `KILL QUERY` that arrives before the statement does is ignored, and the
/// pool discards the poisoned connection anyway.
fn kill_session(runtime: &tokio::runtime::Handle, opts: Opts, id: u32) {
    super::spawn_detached(runtime, async move {
        if let Ok(mut conn) = Conn::new(opts).await {
            let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
            let _ = conn.disconnect().await;
        }
    });
}

impl MyConnection {
    pub(crate) async fn open(config: &MyConfig) -> Result<Self> {
        let mut conn = connect(&config.opts, config.connect_timeout, &config.target).await?;
        let probe = probe::Socket::find(&mut conn, &config.opts, config.tls).await;
        let abandon: super::Abandon = {
            let (runtime, opts, id) = (
                tokio::runtime::Handle::current(),
                config.opts.clone(),
                conn.id(),
            );
            Arc::new(move || kill_session(&runtime, opts.clone(), id))
        };
        Ok(Self {
            abandon,
            id: conn.id(),
            conn: Some(conn),
            returned: Arc::new(Mutex::new(None)),
            opts: config.opts.clone(),
            command_timeout: config.command_timeout,
            poisoned: Arc::default(),
            streaming: None,
            probe,
            starts: Starts::default(),
        })
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.poisoned.is_set()
            || (self.conn.is_none()
                && self
                    .returned
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_none())
    }

    /// Whether the server closed this idle connection (a restart, `KILL`, `wait_timeout`),
    /// which the client otherwise hears of only when its next statement fails. One
    /// non-blocking `recv`, no round trip; asked when the pool hands the connection out.
    pub(crate) fn closed_by_server(&self) -> bool {
        // Idle: in hand, or given back by an `iterate` that read its whole result (the probe
        // would take the rows of one still reading for bytes nobody asked for). A connection
        // whose last operation was an `iterate` went back to the pool in the second state,
        // and a server that closed it then went unnoticed.
        let idle = self.conn.is_some()
            || self
                .returned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some();
        idle && self.probe.as_ref().is_some_and(probe::Socket::closed)
    }

    /// Marks the start of an operation and gives the connection; fails on a poisoned one.
    /// If the operation is abandoned, its statement is killed.
    async fn start(&mut self) -> Result<(InFlight, &mut Conn)> {
        self.settle().await;
        let guard = InFlight::start(&self.poisoned, &self.abandon)?;
        if self.conn.is_none() {
            self.conn = self
                .returned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
        match self.conn.as_mut() {
            Some(conn) => Ok((guard, conn)),
            None => {
                guard.done();
                self.poisoned.set();
                Err(Error::connection_lost(
                    "the MySQL connection was lost while streaming rows",
                ))
            }
        }
    }

    /// Waits until an abandoned `iterate` task, still reading the rest of its result, has
    /// given the connection back (or given up on it). Cancel-safe: dropped while waiting, the
    /// next operation waits again.
    async fn settle(&mut self) {
        if let Some(streaming) = self.streaming.as_mut() {
            let _ = streaming.await;
            self.streaming = None;
        }
    }

    /// Runs one operation: poisons the connection while it is in flight and applies the
    /// command timeout (which kills the statement, then awaits the operation's own end).
    async fn run<T>(&mut self, op: impl AsyncFnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let limit = self.command_timeout;
        self.run_within(limit, op).await
    }

    /// [`MyConnection::run`] with `limit` for the command timeout.
    async fn run_within<T>(
        &mut self,
        limit: Option<Duration>,
        op: impl AsyncFnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        let (opts, id) = (self.opts.clone(), self.id);
        let (guard, conn) = self.start().await?;
        let kill = || {
            let opts = opts.clone();
            async move {
                if let Ok(mut killer) = Conn::new(opts).await {
                    let _ = killer.query_drop(format!("KILL QUERY {id}")).await;
                    let _ = killer.disconnect().await;
                }
            }
        };
        // ER_QUERY_INTERRUPTED: what a `KILL QUERY` makes of the statement.
        // Pinned here, and only referred to below (see `with_command_timeout`).
        let operation = std::pin::pin!(op(conn));
        let (result, timed) =
            super::with_command_timeout(limit, operation, kill, |e| e.code() == Some("1317")).await;
        guard.end_timed(timed, matches!(&result, Err(e) if ends_connection(e)));
        result
    }

    pub(crate) async fn execute(&mut self, query: BoundQuery) -> Result<ExecuteResult> {
        self.starts.check()?;
        if !self.starts.pending.is_empty() {
            if let Some(text) = inline(&query)? {
                // The transaction's start and the statement in one round trip.
                let starts = self.take_starts().await.expect("pending starts");
                let (affected, last_id) = self.run_after_starts(starts, text).await?;
                return Ok(ExecuteResult {
                    rows_affected: affected,
                    last_insert_id: Some(i64::try_from(last_id).unwrap_or(i64::MAX)),
                    returned: Value::Null,
                });
            }
            self.send_starts().await?;
        }
        let params = to_params(query.values, &query.names, None)?;
        let sql = query.sql;
        self.run(async move |conn| {
            let stmt = prepare(conn, &sql).await?;
            let done = async {
                let mut result = conn.exec_iter(&stmt, params).await.map_err(map_error)?;
                let columns = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
                let mut returned = Value::Null;
                if let Some(row) = result.next().await.map_err(map_error)?
                    && let Some(first) = row.unwrap().into_iter().next()
                {
                    returned = decode(first, &columns[0])?;
                }
                while result.next().await.map_err(map_error)?.is_some() {}
                let rows_affected = result.affected_rows();
                let last_insert_id = result.last_insert_id().unwrap_or(0);
                result.drop_result().await.map_err(map_error)?;
                Ok(ExecuteResult {
                    rows_affected,
                    last_insert_id: Some(i64::try_from(last_insert_id).unwrap_or(i64::MAX)),
                    returned,
                })
            }
            .await;
            done_with(conn, stmt, done).await
        })
        .await
    }

    pub(crate) async fn execute_many(
        &mut self,
        query: BoundQuery,
        rows: Vec<Vec<Value>>,
    ) -> Result<u64> {
        let rows = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| to_values(row, &query.names, Some(i)))
            .collect::<Result<Vec<_>>>()?;
        let (open, close, undo) = if query.in_transaction {
            (
                "SAVEPOINT databases_execute_many",
                "RELEASE SAVEPOINT databases_execute_many",
                "ROLLBACK TO SAVEPOINT databases_execute_many",
            )
        } else {
            ("START TRANSACTION", "COMMIT", "ROLLBACK")
        };
        // Transaction starts not sent yet go with the savepoint, in one round trip.
        self.starts.check()?;
        let starts = self.take_starts().await;
        let outermost = starts.as_ref().is_some_and(|s| s.outermost);
        let mut start_failed = false;
        let failed = &mut start_failed;
        let sql = query.sql;
        // A transaction statement of our own that fails leaves the session's transaction
        // state unknown (a command timeout's `KILL QUERY` can stop a `COMMIT`): the
        // connection is not used again.
        let poisoned = self.poisoned.clone();
        let unsure = move |e| {
            poisoned.set_unsure();
            map_error(e)
        };
        let result = self
            .run(async move |conn| {
                match &starts {
                    Some(starts) => {
                        after_starts(conn, starts, open, failed).await?;
                    }
                    None => conn.query_drop(open).await.map_err(map_error)?,
                }
                let result = insert_many(conn, &sql, rows).await;
                match result {
                    Ok(n) => {
                        conn.query_drop(close).await.map_err(&unsure)?;
                        Ok(n)
                    }
                    Err(e) => {
                        conn.query_drop(undo).await.map_err(&unsure)?;
                        if query.in_transaction {
                            conn.query_drop("RELEASE SAVEPOINT databases_execute_many")
                                .await
                                .map_err(&unsure)?;
                        }
                        Err(e)
                    }
                }
            })
            .await;
        if start_failed {
            self.starts.failed |= outermost;
        }
        result
    }

    pub(crate) async fn fetch(
        &mut self,
        query: BoundQuery,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        self.send_starts().await?;
        let params = to_params(query.values, &query.names, None)?;
        let sql = query.sql;
        self.run(async move |conn| {
            let stmt = prepare(conn, &sql).await?;
            let done = async {
                let mut result = conn.exec_iter(&stmt, params).await.map_err(map_error)?;
                let meta = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
                let columns = columns_of(&sql, &meta);
                let mut out = Rows::new(columns);
                // Rows past the limit are read and dropped: the connection must end idle.
                while let Some(row) = result.next().await.map_err(map_error)? {
                    if limit.is_none_or(|l| out.len() < l) {
                        out.push(|values| decode_row(row.unwrap(), &meta, values))?;
                    }
                }
                result.drop_result().await.map_err(map_error)?;
                Ok(out.into_records())
            }
            .await;
            done_with(conn, stmt, done).await
        })
        .await
    }

    /// Hands the connection to a task that runs the query and sends its rows in chunks; the
    /// task returns the connection when the rows are done.
    pub(crate) async fn stream(
        &mut self,
        query: BoundQuery,
        keep: super::Keep,
    ) -> Result<BoxStream<'static, Result<Record>>> {
        self.send_starts().await?;
        let params = to_params(query.values, &query.names, None)?;
        let (guard, _) = self.start().await?;
        let Some(mut conn) = self.conn.take() else {
            return Err(Error::connection_lost("the MySQL connection is gone"));
        };
        let returned = self.returned.clone();
        let (tx, rx) = mpsc::channel::<Result<Vec<Record>>>(2);
        let sql = query.sql;
        let (streamed, streaming) = tokio::sync::oneshot::channel::<()>();
        self.streaming = Some(streaming);
        tokio::spawn(async move {
            // Dropped when this task ends, which lets the connection's next operation start.
            let _streamed = streamed;
            let produce = async {
                let stmt = prepare(&mut conn, &sql).await?;
                // The last chunk once the result is fully read; `None` when the stream was
                // dropped before (the connection is then dropped, its statements with it).
                let read = async {
                    let mut result = conn.exec_iter(&stmt, params).await.map_err(map_error)?;
                    let meta = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
                    let columns = columns_of(&sql, &meta);
                    let mut chunk = Rows::new(columns);
                    while let Some(row) = result.next().await.map_err(map_error)? {
                        chunk.push(|values| decode_row(row.unwrap(), &meta, values))?;
                        if chunk.len() == CHUNK_ROWS {
                            let full = chunk.take();
                            if tx.send(Ok(full)).await.is_err() {
                                // The stream was dropped.
                                if !keep.load(Ordering::SeqCst) {
                                    return Ok(None);
                                }
                                result.drop_result().await.map_err(map_error)?;
                                return Ok(Some(chunk));
                            }
                        }
                    }
                    result.drop_result().await.map_err(map_error)?;
                    Ok(Some(chunk))
                }
                .await;
                let read = match read {
                    Ok(None) => return Ok(false),
                    Ok(Some(chunk)) => Ok(chunk),
                    Err(e) => Err(e),
                };
                let chunk = done_with(&mut conn, stmt, read).await?;
                // The result is fully read: the connection goes back even if nobody takes
                // the last chunk.
                if !chunk.is_empty() {
                    let _ = tx.send(Ok(chunk.into_records())).await;
                }
                Ok(true)
            };
            // Stop as soon as the stream is dropped, even while the server is still working.
            // (Unless the caller keeps the connection: then the rest is read and dropped.)
            let produced = {
                let mut produce = std::pin::pin!(produce);
                let closed = std::pin::pin!(tx.closed());
                match futures_util::future::select(produce.as_mut(), closed).await {
                    futures_util::future::Either::Left((result, _)) => Some(result),
                    futures_util::future::Either::Right(_) if keep.load(Ordering::SeqCst) => {
                        Some(produce.await)
                    }
                    futures_util::future::Either::Right(_) => None,
                }
            };
            match produced {
                Some(Ok(true)) => {
                    // Give the connection back before the stream can see its end.
                    *returned
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn);
                    guard.done();
                }
                Some(Err(e)) => {
                    if ends_connection(&e) {
                        // The session is gone: the connection stays poisoned, discarded.
                        guard.end(true);
                    } else {
                        *returned
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn);
                        guard.done();
                    }
                    let _ = tx.send(Err(e)).await;
                }
                // Abandoned mid-result: the guard kills the query and the connection is dropped.
                Some(Ok(false)) | None => drop(guard),
            }
        });
        Ok(Box::pin(super::Chunks::new(rx)))
    }

    /// Runs transaction control `sql` (after the starts not sent yet, in the same round
    /// trip).
    pub(crate) async fn control(&mut self, sql: String) -> Result<()> {
        self.starts.before_control(&sql);
        if let Some(starts) = self.take_starts().await {
            self.run_after_starts(starts, sql).await?;
            return Ok(());
        }
        let limit = self.command_timeout.filter(|_| !super::is_rollback(&sql));
        self.run_within(limit, async move |conn| {
            conn.query_drop(sql).await.map_err(map_error)
        })
        .await
    }

    /// Starts the transaction at `level` with `sql` (`START TRANSACTION`, or `SAVEPOINT sp_N`
    /// inside one): with the next statement, which, when it is a write that can be sent as
    /// text, goes in the same round trip.
    pub(crate) fn savepoint(&mut self, level: u32, sql: String) -> Result<()> {
        self.starts.push(level, sql)
    }

    /// Forgets the start of `level` and of the levels inside it if they have not gone out;
    /// true when `level`'s had not (nothing to roll back on the server).
    pub(crate) fn forget(&mut self, level: u32) -> bool {
        self.starts.forget(level)
    }

    /// Ends the transaction at `level` with `sql` (a commit, a release or a rollback); with
    /// no round trip when its start never went out.
    pub(crate) async fn finish(&mut self, level: u32, sql: String) -> Result<()> {
        if self.starts.end_unsent(level, self.poisoned.is_set()) {
            return Ok(());
        }
        self.control(sql).await
    }

    /// Takes the transaction starts not sent yet, for an operation about to `run`. First
    /// waits as `run` would (`settle`): past that wait, `run` marks the operation in flight
    /// before it awaits anything, so starts taken here are sent, or the connection is
    /// discarded; none is lost to a cancellation in between.
    async fn take_starts(&mut self) -> Option<TakenStarts> {
        self.settle().await;
        self.starts.take()
    }

    /// Sends the transaction starts not sent yet, in one round trip of their own: before a
    /// statement that cannot carry them.
    async fn send_starts(&mut self) -> Result<()> {
        self.starts.check()?;
        let Some(starts) = self.take_starts().await else {
            return Ok(());
        };
        let outermost = starts.outermost;
        let sql = starts.sql;
        let sent = self
            .run(async move |conn| conn.query_drop(sql).await.map_err(map_error))
            .await;
        sent.map_err(|e| {
            self.starts.failed |= outermost;
            start_error(e, false)
        })
    }

    /// Runs `sql` after `starts` as one text query (one round trip) and returns the affected
    /// rows and last insert id of `sql`'s first statement. MySQL stops at the first error,
    /// so after a failed start `sql` did not run.
    async fn run_after_starts(&mut self, starts: TakenStarts, sql: String) -> Result<(u64, u64)> {
        let outermost = starts.outermost;
        let mut start_failed = false;
        let failed = &mut start_failed;
        let limit = self.command_timeout.filter(|_| !super::is_rollback(&sql));
        let result = self
            .run_within(limit, async move |conn| {
                after_starts(conn, &starts, &sql, failed).await
            })
            .await;
        if start_failed {
            self.starts.failed |= outermost;
        }
        result
    }
}

/// Runs `sql` after `starts` as one text query (one round trip) and returns the affected
/// rows and last insert id of `sql`'s first statement. MySQL stops at the first error, so
/// after a failed start (which sets `start_failed`) `sql` did not run.
async fn after_starts(
    conn: &mut Conn,
    starts: &TakenStarts,
    sql: &str,
    start_failed: &mut bool,
) -> Result<(u64, u64)> {
    let text = format!("{}; {sql}", starts.sql);
    let mut result = match conn.query_iter(text).await {
        Ok(result) => result,
        Err(e) => {
            *start_failed = true;
            return Err(start_error(map_error(e), false));
        }
    };
    // `result` holds the answer to statement `read` (the first is read with the query);
    // each `next` past the end of an answer reads the next one.
    let mut read = 0;
    while read < starts.statements {
        match result.next().await {
            Ok(Some(_)) => {}
            Ok(None) => read += 1,
            Err(e) if read + 1 < starts.statements => {
                *start_failed = true;
                return Err(start_error(map_error(e), false));
            }
            Err(e) => return Err(map_error(e)),
        }
    }
    let done = (result.affected_rows(), result.last_insert_id().unwrap_or(0));
    result.drop_result().await.map_err(map_error)?;
    Ok(done)
}

/// Inserts `rows` with `sql`: as multi-row `INSERT ... VALUES` statements when `sql` is one,
/// else in batches of rows (MariaDB) or one execution per row. Returns the rows affected.
///
/// Multi-row statements on MariaDB too, rather than its batches of parameter rows
/// (COM_STMT_BULK_EXECUTE): InnoDB reserves auto-increment values for a batch in doubling
/// blocks, as for a row count it does not know in advance, and drops what a batch left
/// unused, so a second batch of the same call started past a gap (1,149 rows took ids
/// 1-1,149, the next ones started at 2,048). A multi-row statement reserves what it needs,
/// so the rows of one call get consecutive ids, as one `INSERT` per row gives them.
async fn insert_many(conn: &mut Conn, sql: &str, rows: Vec<Vec<MyValue>>) -> Result<u64> {
    let width = rows.first().map_or(0, Vec::len);
    let Some((head, tuple)) = super::split_values_clause(sql).filter(|_| width > 0) else {
        let stmt = prepare(conn, sql).await?;
        let done = async {
            let mut total = 0;
            // MariaDB (10 and up; MySQL has no 10.x) executes a prepared statement for a
            // batch of parameter rows in one round trip, which exec_batch uses.
            if conn.server_version().0 >= 10 && width > 0 {
                for batch in batches(rows, usize::MAX, 0, 1) {
                    conn.exec_batch(&stmt, batch.into_iter().map(Params::Positional))
                        .await
                        .map_err(map_error)?;
                    total += conn.affected_rows();
                }
                return Ok(total);
            }
            for (i, row) in rows.into_iter().enumerate() {
                conn.exec_drop(&stmt, Params::Positional(row))
                    .await
                    .map_err(|e| with_row(map_error(e), i))?;
                total += conn.affected_rows();
            }
            Ok(total)
        }
        .await;
        return done_with(conn, stmt, done).await;
    };
    let per_batch = BATCH_ROWS.min(MAX_PLACEHOLDERS / width).max(1);
    let mut total = 0;
    // Batches of a multiple of 64 rows (when more follow), so that rows of similar sizes
    // make statements of the same text, which are prepared once.
    for batch in batches(rows, per_batch, tuple.len() + 2, 64) {
        let mut statement = String::with_capacity(head.len() + batch.len() * (tuple.len() + 2));
        statement.push_str(head);
        for i in 0..batch.len() {
            if i > 0 {
                statement.push_str(", ");
            }
            statement.push_str(tuple);
        }
        let values: Vec<MyValue> = batch.into_iter().flatten().collect();
        let stmt = prepare(conn, &statement).await?;
        let done = conn
            .exec_drop(&stmt, Params::Positional(values))
            .await
            .map_err(map_error);
        done_with(conn, stmt, done).await?;
        total += conn.affected_rows();
    }
    Ok(total)
}

/// The prepared statement for `sql`: from the connection's statement cache, or, with the
/// cache off (`statement_cache=false`), prepared for this use. Either way it goes to
/// [`done_with`] once its result has been read.
async fn prepare(conn: &mut Conn, sql: &str) -> Result<Statement> {
    conn.prep(sql).await.map_err(map_error)
}

/// Ends the use of `stmt`, whose outcome was `result`. With the statement cache off it is
/// closed on the server: mysql_async keeps no statement then, and one left open would live
/// as long as the session, counting against the server-wide `max_prepared_stmt_count`.
/// (A cached statement is closed when the cache drops it.)
async fn done_with<T>(conn: &mut Conn, stmt: Statement, result: Result<T>) -> Result<T> {
    if conn.opts().stmt_cache_size() > 0 {
        return result;
    }
    let closed = conn.close(stmt).await.map_err(map_error);
    // The statement's own error comes first.
    let value = result?;
    closed?;
    Ok(value)
}

/// Splits `rows` into batches of at most `max_rows` rows and about [`BATCH_BYTES`] bytes
/// (each row counted as its values' size plus `row_overhead`; a row larger than that goes
/// alone). A batch shorter than `max_rows` with rows after it is cut to a multiple of
/// `multiple` rows when it holds more than that.
fn batches(
    rows: Vec<Vec<MyValue>>,
    max_rows: usize,
    row_overhead: usize,
    multiple: usize,
) -> impl Iterator<Item = Vec<Vec<MyValue>>> {
    let sizes: Vec<usize> = rows
        .iter()
        .map(|row| row_overhead + row.iter().map(encoded_len).sum::<usize>())
        .collect();
    let mut lengths = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let (mut n, mut bytes) = (0, 0);
        while let Some(&size) = sizes.get(start + n) {
            if n > 0 && (n == max_rows || bytes + size > BATCH_BYTES) {
                break;
            }
            bytes += size;
            n += 1;
        }
        if start + n < sizes.len() && n < max_rows && n > multiple {
            n -= n % multiple;
        }
        lengths.push(n);
        start += n;
    }
    let mut rows = rows.into_iter();
    lengths
        .into_iter()
        .map(move |n| rows.by_ref().take(n).collect())
}

/// An upper bound of the bytes `value` takes as a parameter in the binary protocol (its
/// type and NULL flag included).
fn encoded_len(value: &MyValue) -> usize {
    3 + match value {
        MyValue::NULL => 0,
        // A length-encoded length is at most 9 bytes.
        MyValue::Bytes(b) => 9 + b.len(),
        MyValue::Int(_) | MyValue::UInt(_) | MyValue::Double(_) => 8,
        MyValue::Float(_) => 4,
        MyValue::Date(..) => 12,
        MyValue::Time(..) => 13,
    }
}

fn with_row(e: Error, row: usize) -> Error {
    let message = format!("row {row}: {e}");
    Error::new(e.kind(), message).with_source(e)
}

/// The column names of a result of `sql`, shared by its results (see `shared_columns`).
fn columns_of(sql: &str, meta: &[Column]) -> Arc<Columns> {
    thread_local! {
        static CACHE: std::cell::RefCell<crate::SqlMap<Arc<Columns>>> =
            std::cell::RefCell::default();
    }
    CACHE.with_borrow_mut(|cache| {
        super::shared_columns(cache, sql, meta.iter().map(Column::name_str))
    })
}

/// Appends the decoded `values` of a row to `out`.
fn decode_row(values: Vec<MyValue>, meta: &[Column], out: &mut Vec<Value>) -> Result<()> {
    for (v, c) in values.into_iter().zip(meta) {
        // Pushed in place; the large error is built only on failure.
        match decode_value(v, c) {
            Ok(v) => out.push(v),
            Err(why) => return Err(decode_error(c, &why)),
        }
    }
    Ok(())
}

fn decode(value: MyValue, column: &Column) -> Result<Value> {
    decode_value(value, column).map_err(|why| decode_error(column, &why))
}

#[cold]
fn decode_error(column: &Column, why: &str) -> Error {
    Error::decode(format!("column '{}': {why}", column.name_str()))
}

/// A value, or why it cannot be decoded (small, so that results move cheaply).
fn decode_value(value: MyValue, column: &Column) -> std::result::Result<Value, Box<str>> {
    let bad = |why: String| why.into_boxed_str();
    Ok(match value {
        MyValue::NULL => Value::Null,
        MyValue::Int(i) => Value::Int(i),
        MyValue::UInt(u) => i64::try_from(u).map_or(Value::UInt(u), Value::Int),
        // Through the shortest text form, so that FLOAT 1.1 reads as 1.1.
        MyValue::Float(f) => Value::Float(f.to_string().parse().unwrap_or(f64::from(f))),
        MyValue::Double(d) => Value::Float(d),
        MyValue::Bytes(bytes) => match column.column_type() {
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                let text = String::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
                Decimal::from_str_exact(&text).map_or(Value::Text(text), Value::Decimal)
            }
            ColumnType::MYSQL_TYPE_JSON => Value::Json(
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?,
            ),
            ColumnType::MYSQL_TYPE_BIT | ColumnType::MYSQL_TYPE_GEOMETRY => Value::Bytes(bytes),
            _ if column.character_set() == 63 => Value::Bytes(bytes),
            _ => Value::Text(
                String::from_utf8(bytes)
                    .map_err(|e| bad(format!("text that is not valid UTF-8 ({e})")))?,
            ),
        },
        MyValue::Date(0, 0, 0, 0, 0, 0, 0) => Value::Null, // MySQL's "zero date"
        MyValue::Date(y, mo, d, h, mi, s, us) => {
            let date = NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d))
                .ok_or_else(|| bad(format!("invalid date {y:04}-{mo:02}-{d:02}")))?;
            if column.column_type() == ColumnType::MYSQL_TYPE_DATE {
                Value::Date(date)
            } else {
                let time =
                    NaiveTime::from_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)
                        .ok_or_else(|| bad("invalid time of day".to_owned()))?;
                Value::DateTime(date.and_time(time))
            }
        }
        MyValue::Time(negative, days, h, mi, s, us) => {
            if !negative && days == 0 {
                Value::Time(
                    NaiveTime::from_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)
                        .ok_or_else(|| bad("invalid time".to_owned()))?,
                )
            } else {
                // A duration beyond one day or below zero (MySQL TIME spans ±838 hours).
                let micros = ((i64::from(h) * 60 + i64::from(mi)) * 60 + i64::from(s)) * 1_000_000
                    + i64::from(us);
                let days = i32::try_from(days).map_err(|_| bad("time out of range".to_owned()))?;
                let (days, micros) = if negative {
                    (-days, -micros)
                } else {
                    (days, micros)
                };
                Value::Interval {
                    months: 0,
                    days,
                    microseconds: micros,
                }
            }
        }
    })
}

fn to_params(values: Vec<Value>, names: &[String], row: Option<usize>) -> Result<Params> {
    let values = to_values(values, names, row)?;
    Ok(if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values)
    })
}

fn to_values(values: Vec<Value>, names: &[String], row: Option<usize>) -> Result<Vec<MyValue>> {
    super::convert_values(values, names, row, to_mysql)
}

/// `query` with its values written into the text, when that is sure to mean what the
/// prepared statement would: a single `INSERT`, `REPLACE`, `UPDATE` or `DELETE` without
/// `RETURNING` (so no rows come back), and values that need no backslash escapes, whose
/// meaning depends on the server's `sql_mode`. `None` otherwise.
fn inline(query: &BoundQuery) -> Result<Option<String>> {
    let sql = &*query.sql;
    let verb = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    if !["INSERT", "REPLACE", "UPDATE", "DELETE"]
        .iter()
        .any(|v| verb.eq_ignore_ascii_case(v))
        || sql.to_ascii_uppercase().contains("RETURNING")
    {
        return Ok(None);
    }
    let Some(at) = crate::params::mysql_placeholders(sql) else {
        return Ok(None);
    };
    if at.len() != query.values.len() {
        return Ok(None);
    }
    let values = to_values(query.values.clone(), &query.names, None)?;
    let mut text = String::with_capacity(sql.len() + 16 * values.len());
    let mut from = 0;
    for (&at, value) in at.iter().zip(&values) {
        let Some(literal) = literal(value) else {
            return Ok(None);
        };
        text.push_str(&sql[from..at]);
        text.push_str(&literal);
        from = at + 1;
    }
    text.push_str(&sql[from..]);
    Ok(Some(text))
}

/// A value as an SQL literal of the same meaning as the bound parameter, or `None` when no
/// literal is (a string with backslashes or NUL, or bytes that are not UTF-8).
fn literal(value: &MyValue) -> Option<String> {
    Some(match value {
        MyValue::NULL => "NULL".to_owned(),
        // In parentheses, so that `x-?` cannot become a `--` comment.
        MyValue::Int(i) if *i < 0 => format!("({i})"),
        MyValue::Int(i) => i.to_string(),
        MyValue::UInt(u) => u.to_string(),
        // An exponent makes it a DOUBLE literal, as the parameter is.
        MyValue::Double(d) if d.is_finite() => format!("({d:e})"),
        MyValue::Double(_) | MyValue::Float(_) => return None,
        MyValue::Bytes(bytes) => {
            let text = std::str::from_utf8(bytes).ok()?;
            if text.contains(['\\', '\0']) {
                return None;
            }
            format!("'{}'", text.replace('\'', "''"))
        }
        MyValue::Date(..) | MyValue::Time(..) => value.as_sql(false),
    })
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "chrono's fields are within the MySQL field ranges"
)]
fn datetime(dt: NaiveDateTime) -> Result<MyValue, String> {
    let year = u16::try_from(dt.year())
        .map_err(|_| format!("year {} is outside MySQL's range", dt.year()))?;
    Ok(MyValue::Date(
        year,
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
        dt.nanosecond() / 1000,
    ))
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "chrono's fields are within the MySQL field ranges"
)]
fn to_mysql(v: Value) -> Result<MyValue, String> {
    Ok(match v {
        Value::Null => MyValue::NULL,
        Value::Bool(b) => MyValue::Int(i64::from(b)),
        Value::Int(i) => MyValue::Int(i),
        Value::UInt(u) => MyValue::UInt(u),
        Value::Float(f) if !f.is_finite() => return Err(format!("MySQL cannot store {f}")),
        Value::Float(f) => MyValue::Double(f),
        Value::Decimal(d) => MyValue::Bytes(d.to_string().into_bytes()),
        Value::Text(s) => MyValue::Bytes(s.into_bytes()),
        Value::Bytes(b) => MyValue::Bytes(b),
        Value::Date(d) => datetime(d.and_time(NaiveTime::MIN))?,
        Value::Time(t) => MyValue::Time(
            false,
            0,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond() / 1000,
        ),
        Value::DateTime(dt) => datetime(dt)?,
        // MySQL stores no offset: send the instant in UTC.
        Value::DateTimeTz(dt) => datetime(dt.naive_utc())?,
        Value::Uuid(u) => MyValue::Bytes(u.hyphenated().to_string().into_bytes()),
        Value::Json(j) => MyValue::Bytes(j.to_string().into_bytes()),
        Value::Interval {
            months: 0,
            days,
            microseconds,
        } => {
            let total = i128::from(days) * 86_400_000_000 + i128::from(microseconds);
            let negative = total < 0;
            let total = total.unsigned_abs();
            let us = (total % 1_000_000) as u32;
            let secs = total / 1_000_000;
            MyValue::Time(
                negative,
                u32::try_from(secs / 86_400).map_err(|_| "interval too long".to_owned())?,
                ((secs / 3600) % 24) as u8,
                ((secs / 60) % 60) as u8,
                (secs % 60) as u8,
                us,
            )
        }
        Value::Interval { .. } => {
            return Err("MySQL has no interval of months; pass days".to_owned());
        }
        Value::TimeTz(..) => return Err("MySQL has no time-with-time-zone type".to_owned()),
        Value::Array(_) => return Err("MySQL has no array type; pass the array as JSON".to_owned()),
    })
}

fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// True for errors after which the server has closed the connection, or may have: it must
/// not be used again. The connection was lost, or the server refused a packet (larger than
/// `max_allowed_packet`, or out of order), which it answers by closing the connection.
fn ends_connection(e: &Error) -> bool {
    e.kind() == ErrorKind::ConnectionLost
        || matches!(
            e.code(),
            Some("1153" | "1154" | "1155" | "1156" | "1157" | "1158" | "1159" | "1160" | "1161")
        )
}

fn map_error(e: mysql_async::Error) -> Error {
    match &e {
        mysql_async::Error::Server(s) => {
            let kind = match s.code {
                1062 | 1586 => ErrorKind::UniqueViolation,
                1216 | 1217 | 1451 | 1452 => ErrorKind::ForeignKeyViolation,
                1048 | 1364 => ErrorKind::NotNullViolation,
                3819 | 4025 => ErrorKind::CheckViolation,
                1064 | 1149 => ErrorKind::Syntax,
                1053 | 1927 => ErrorKind::ConnectionLost,
                _ => ErrorKind::Database,
            };
            let message = format!("{kind}: {}", s.message);
            let db_message = s.message.clone();
            Error::new(kind, message)
                .with_db(s.code.to_string(), db_message)
                .with_source(e)
        }
        mysql_async::Error::Io(_)
        | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
            Error::connection_lost(format!("the MySQL connection was lost: {e}")).with_source(e)
        }
        _ => {
            let message = format!("MySQL error: {e}");
            Error::new(ErrorKind::Database, message).with_source(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column types the server sends, for the decoding fuzz test.
    const FUZZED: &[ColumnType] = &[
        ColumnType::MYSQL_TYPE_TINY,
        ColumnType::MYSQL_TYPE_LONGLONG,
        ColumnType::MYSQL_TYPE_FLOAT,
        ColumnType::MYSQL_TYPE_DOUBLE,
        ColumnType::MYSQL_TYPE_NEWDECIMAL,
        ColumnType::MYSQL_TYPE_DECIMAL,
        ColumnType::MYSQL_TYPE_VAR_STRING,
        ColumnType::MYSQL_TYPE_BLOB,
        ColumnType::MYSQL_TYPE_JSON,
        ColumnType::MYSQL_TYPE_BIT,
        ColumnType::MYSQL_TYPE_DATE,
        ColumnType::MYSQL_TYPE_DATETIME,
        ColumnType::MYSQL_TYPE_TIMESTAMP,
        ColumnType::MYSQL_TYPE_TIME,
        ColumnType::MYSQL_TYPE_YEAR,
        ColumnType::MYSQL_TYPE_ENUM,
        ColumnType::MYSQL_TYPE_SET,
        ColumnType::MYSQL_TYPE_GEOMETRY,
    ];

    fn arb_mysql_value() -> impl proptest::strategy::Strategy<Value = MyValue> {
        use proptest::prelude::*;
        prop_oneof![
            Just(MyValue::NULL),
            any::<i64>().prop_map(MyValue::Int),
            any::<u64>().prop_map(MyValue::UInt),
            any::<f32>().prop_map(MyValue::Float),
            any::<f64>().prop_map(MyValue::Double),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(MyValue::Bytes),
            "-?[0-9]{0,40}(\\.[0-9]{0,40})?".prop_map(|s| MyValue::Bytes(s.into_bytes())),
            "[\\[\\]{}\"0-9,:a-z ]{0,16}".prop_map(|s| MyValue::Bytes(s.into_bytes())),
            any::<(u16, u8, u8, u8, u8, u8, u32)>()
                .prop_map(|(y, mo, d, h, mi, s, us)| MyValue::Date(y, mo, d, h, mi, s, us)),
            any::<(bool, u32, u8, u8, u8, u32)>()
                .prop_map(|(n, d, h, mi, s, us)| MyValue::Time(n, d, h, mi, s, us)),
        ]
    }

    proptest::proptest! {
        /// Fuzzing: any value the protocol can carry, under any column type and character
        /// set, decodes to a value or an error naming the column; never a panic.
        #[test]
        fn decoding_any_value_never_panics(
            value in arb_mysql_value(),
            ty in proptest::sample::select(FUZZED),
            binary in proptest::prelude::any::<bool>(),
        ) {
            let column = Column::new(ty)
                .with_name(b"fuzzed")
                .with_character_set(if binary { 63 } else { 45 });
            if let Err(e) = decode(value, &column) {
                proptest::prop_assert!(e.to_string().contains("'fuzzed'"), "{}", e);
            }
        }
    }

    #[test]
    fn lost_connections_and_refused_packets_end_the_connection() {
        assert!(ends_connection(&Error::connection_lost("gone")));
        assert!(ends_connection(
            &Error::new(ErrorKind::Database, "packet").with_db("1153", "too big")
        ));
        assert!(!ends_connection(
            &Error::new(ErrorKind::UniqueViolation, "dup").with_db("1062", "dup")
        ));
    }

    #[test]
    fn options_from_urls() {
        let c = MyConfig::from_url(
            &DatabaseUrl::parse("mysql://root@127.0.0.1:3307/db?charset=utf8mb4").unwrap(),
        )
        .unwrap();
        assert_eq!(c.target, "127.0.0.1:3307");
        assert_eq!(c.opts.init(), ["SET NAMES utf8mb4"]);
        let c = MyConfig::from_url(
            &DatabaseUrl::parse("mysql://u@/db?unix_socket=/run/mysqld/mysqld.sock").unwrap(),
        )
        .unwrap();
        assert_eq!(c.target, "/run/mysqld/mysqld.sock");
        let e =
            MyConfig::from_url(&DatabaseUrl::parse("mysql://u@h/db?charset=utf8;DROP").unwrap())
                .unwrap_err();
        assert!(e.to_string().contains("'charset'"), "{e}");
        let c =
            MyConfig::from_url(&DatabaseUrl::parse("mysql://u@h/db?ssl=true").unwrap()).unwrap();
        assert!(c.opts.ssl_opts().is_some());
    }

    #[test]
    fn execute_many_batches_are_bounded_in_rows_and_bytes() {
        let row = |text: usize| vec![MyValue::Int(1), MyValue::Bytes(vec![b'x'; text])];
        let rows = |n: usize, text: usize| (0..n).map(|_| row(text)).collect::<Vec<_>>();
        // The lengths of the batches, for (max_rows, row_overhead, multiple).
        let lengths = |rows: Vec<Vec<MyValue>>, (max_rows, overhead, multiple)| {
            batches(rows, max_rows, overhead, multiple)
                .map(|b| b.len())
                .collect::<Vec<_>>()
        };
        let unbounded = (usize::MAX, 0, 1);
        // 100-byte rows: 11 + 12 + 100 = 123 bytes each, 266 to a 32 KiB batch.
        assert_eq!(
            lengths(rows(1_200, 100), unbounded),
            [266, 266, 266, 266, 136]
        );
        // The row limit when it comes first, and the statement text counted per row.
        assert_eq!(lengths(rows(2_500, 0), (1_000, 0, 1)), [1_000, 1_000, 500]);
        assert_eq!(
            lengths(rows(1_000, 0), (1_000, 200, 1)),
            [146, 146, 146, 146, 146, 146, 124]
        );
        // A row larger than a batch goes alone; nothing is lost or reordered.
        let mixed = vec![row(10), row(BATCH_BYTES), row(10), row(10)];
        let flat: Vec<_> = batches(mixed.clone(), usize::MAX, 0, 1).flatten().collect();
        assert_eq!(flat, mixed);
        assert_eq!(lengths(mixed, unbounded), [1, 1, 2]);
        assert_eq!(lengths(Vec::new(), unbounded), Vec::<usize>::new());
        // Cut to multiples of 64 rows when more follow: 266 -> 256, the rest after it; not
        // the last batch, nor one at the row limit, nor one of 64 rows or fewer.
        assert_eq!(
            lengths(rows(1_200, 100), (usize::MAX, 0, 64)),
            [256, 256, 256, 256, 176]
        );
        assert_eq!(lengths(rows(2_100, 0), (1_000, 0, 64)), [1_000, 1_000, 100]);
        assert_eq!(
            lengths(vec![row(20_000), row(20_000), row(1)], (10, 0, 64)),
            [1, 2]
        );
    }

    #[test]
    fn intervals_become_mysql_times() {
        assert_eq!(
            to_mysql(Value::Interval {
                months: 0,
                days: -1,
                microseconds: -3_600_000_001
            })
            .unwrap(),
            MyValue::Time(true, 1, 1, 0, 0, 1)
        );
        assert!(to_mysql(Value::Float(f64::NAN)).is_err());
    }
}

/// The liveness probe behind `MyConnection::is_broken`.
///
/// mysql_async keeps its socket private and notices that the server closed a connection only
/// when a statement fails on it. mysql_async's own pool checks the socket for end-of-file or
/// unexpected bytes before handing a connection out; ours does the same from a duplicate of
/// the socket: it is found once, when the connection opens, among the process's descriptors
/// by the local port that the server reports for the session, and duplicated with
/// `pidfd_getfd` (Linux 5.6). Where any step fails (another OS, a unix socket, a proxy that
/// reports another address, a sandbox that refuses the call) there is no probe, and a dead
/// idle connection is found by the statement that fails on it, as before.
mod probe {
    #[cfg(target_os = "linux")]
    use rustix::fd::OwnedFd;

    /// A duplicate of a connection's TCP socket.
    pub(super) struct Socket {
        #[cfg(target_os = "linux")]
        fd: OwnedFd,
        /// Under TLS, pending bytes may be a record the TLS layer has not read yet.
        #[cfg(target_os = "linux")]
        tls: bool,
    }

    impl Socket {
        #[cfg(target_os = "linux")]
        pub(super) async fn find(
            conn: &mut mysql_async::Conn,
            opts: &mysql_async::Opts,
            tls: bool,
        ) -> Option<Self> {
            use mysql_async::prelude::Queryable;

            if opts.socket().is_some() {
                return None;
            }
            // The session's client address as the server sees it: `host:port`.
            let host: Option<String> = conn
                .query_first(
                    "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
                )
                .await
                .ok()
                .flatten();
            let local_port: u16 = host?.rsplit_once(':')?.1.parse().ok()?;
            Self::by_ports(local_port, opts.tcp_port(), tls)
        }

        /// A duplicate of this process's TCP socket from `local_port` to `server_port`.
        #[cfg(target_os = "linux")]
        pub(super) fn by_ports(local_port: u16, server_port: u16, tls: bool) -> Option<Self> {
            use rustix::process::{PidfdFlags, PidfdGetfdFlags};
            use std::net::SocketAddr;

            let me =
                rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty()).ok()?;
            let port_of = |addr: rustix::net::SocketAddrAny| {
                SocketAddr::try_from(addr).ok().map(|a| a.port())
            };
            for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
                let Some(n) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if !std::fs::read_link(entry.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                {
                    continue;
                }
                let Ok(fd) = rustix::process::pidfd_getfd(&me, n, PidfdGetfdFlags::empty()) else {
                    continue;
                };
                let local = rustix::net::getsockname(&fd).ok().and_then(port_of);
                let peer = rustix::net::getpeername(&fd)
                    .ok()
                    .flatten()
                    .and_then(port_of);
                if local == Some(local_port) && peer == Some(server_port) {
                    return Some(Self { fd, tls });
                }
            }
            None
        }

        #[cfg(not(target_os = "linux"))]
        pub(super) async fn find(
            _: &mut mysql_async::Conn,
            _: &mysql_async::Opts,
            _: bool,
        ) -> Option<Self> {
            None
        }

        /// Whether the server closed the connection (end of file, reset) or sent bytes that
        /// nothing asked for (the error packet of a `KILL`).
        pub(super) fn closed(&self) -> bool {
            #[cfg(target_os = "linux")]
            {
                use rustix::io::Errno;
                use rustix::net::RecvFlags;
                let mut byte = [0_u8; 1];
                match rustix::net::recv(&self.fd, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT)
                {
                    Ok((0, _)) => true,
                    Ok(_) => !self.tls,
                    Err(e) => e != Errno::AGAIN && e != Errno::INTR,
                }
            }
            #[cfg(not(target_os = "linux"))]
            false
        }
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        use super::Socket;
        use std::io::Write;
        use std::net::{TcpListener, TcpStream};

        fn pair() -> (TcpStream, TcpStream) {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            (client, server)
        }

        fn probe(client: &TcpStream, tls: bool) -> Socket {
            let local = client.local_addr().unwrap().port();
            let server = client.peer_addr().unwrap().port();
            Socket::by_ports(local, server, tls).expect("the socket is found")
        }

        fn settle() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }

        #[test]
        fn an_open_idle_socket_is_alive() {
            let (client, _server) = pair();
            let p = probe(&client, false);
            assert!(!p.closed());
            assert!(!p.closed(), "the check reads nothing");
        }

        #[test]
        fn a_socket_the_server_closed_is_dead() {
            let (client, server) = pair();
            let p = probe(&client, true);
            drop(server);
            settle();
            assert!(p.closed());
        }

        #[test]
        fn unasked_bytes_mean_dead_except_under_tls() {
            let (client, mut server) = pair();
            server.write_all(b"x").unwrap();
            settle();
            assert!(probe(&client, false).closed());
            assert!(!probe(&client, true).closed());
        }

        #[test]
        fn an_unknown_port_finds_nothing() {
            let (client, _server) = pair();
            let local = client.local_addr().unwrap().port();
            assert!(Socket::by_ports(local, 1, false).is_none());
        }
    }
}
