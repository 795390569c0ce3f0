//! [`Connection`]: one pooled connection held by a caller.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::backend::{BoundQuery, Keep};
use crate::error::{Error, Result};
use crate::params::{IntoParams, rewrite};
use crate::pool::{Closing, Handle, Lease};
use crate::query::{Rendered, Sql};
use crate::record::{ColumnIndex, Record};
use crate::stream::RowStream;
use crate::transaction::{Transaction, TransactionOptions, TxConn};
use crate::url::Backend;
use crate::value::{FromValue, Value};

/// What a statement did, as far as the database reports it.
///
/// [`Connection::execute`] returns the value encode/databases returns; this carries all of it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ExecuteResult {
    /// Rows inserted, updated or deleted by the statement (0 for a query).
    pub rows_affected: u64,
    /// The row id of the last successful insert on this connection (SQLite, MySQL).
    pub last_insert_id: Option<i64>,
    /// The first column of the first row the statement returned (`INSERT ... RETURNING id`),
    /// or NULL.
    pub returned: Value,
}

impl ExecuteResult {
    /// What `execute` returns on `backend`: the last inserted row id on SQLite and MySQL, the
    /// first returned value on PostgreSQL.
    fn value(&self, backend: Backend) -> Value {
        match backend {
            Backend::Postgres => self.returned.clone(),
            Backend::Mysql | Backend::Sqlite => self.last_insert_id.map_or(Value::Null, Value::Int),
        }
    }
}

/// One connection taken from the pool, returned to it on drop.
///
/// Get one with [`crate::Database::connection`] to run several statements on the same
/// connection (temporary tables, session settings). A connection that is dropped inside a
/// transaction has that transaction rolled back before anyone else can use it.
pub struct Connection {
    pub(crate) handle: Handle,
    /// Counts this connection as held until dropped, and lets `disconnect` close it.
    lease: Lease,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("backend", &self.backend())
            .field("transaction_depth", &self.handle.depth)
            .finish()
    }
}

/// Runs `op` unless `disconnect` closes the connection first (`op` is then dropped, which
/// stops its statement as for any abandoned operation).
///
/// `op` comes pinned by the caller: taken by value, it was stored twice in this function's
/// future (as the argument and inside `select!`), which made a `fetch_one` future 17 KB, to
/// be copied on every call.
async fn guarded<T>(
    closing: &Closing,
    op: std::pin::Pin<&mut impl Future<Output = Result<T>>>,
) -> Result<T> {
    if closing.is_closed() {
        return Err(closing.error());
    }
    tokio::select! {
        biased;
        result = op => result,
        () = closing.closed() => Err(closing.error()),
    }
}

/// `rows`, ended by an error if `disconnect` closes the connection first.
fn guarded_stream<'a>(
    closing: Arc<Closing>,
    rows: BoxStream<'a, Result<Record>>,
) -> BoxStream<'a, Result<Record>> {
    let closed: BoxFuture<'static, ()> = {
        let closing = closing.clone();
        Box::pin(async move { closing.closed().await })
    };
    Box::pin(Guarded {
        rows: Some(rows),
        closed,
        closing,
    })
}

/// See [`guarded_stream`]. A row that is ready costs one atomic load for the check; the wait
/// for the close is polled only when the rows are not ready, so that it can wake the stream.
struct Guarded<'a> {
    /// `None` once the stream has ended.
    rows: Option<BoxStream<'a, Result<Record>>>,
    closed: BoxFuture<'static, ()>,
    closing: Arc<Closing>,
}

impl futures_core::Stream for Guarded<'_> {
    type Item = Result<Record>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        let Some(rows) = this.rows.as_mut() else {
            return Poll::Ready(None);
        };
        let closed = if this.closing.is_closed() {
            true
        } else {
            match rows.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => {
                    this.rows = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => this.closed.as_mut().poll(cx).is_ready(),
            }
        };
        if closed {
            this.rows = None;
            return Poll::Ready(Some(Err(this.closing.error())));
        }
        Poll::Pending
    }
}

impl Connection {
    pub(crate) fn new(handle: Handle, lease: Lease) -> Self {
        Self { handle, lease }
    }

    /// The handle on which `disconnect` closes this connection.
    fn closing(&self) -> Arc<Closing> {
        self.lease.closing().clone()
    }

    /// The database engine behind this connection.
    pub fn backend(&self) -> Backend {
        self.handle.raw.backend()
    }

    /// True while a transaction is open on this connection (including the outer transaction
    /// of a `force_rollback` database).
    pub fn in_transaction(&self) -> bool {
        self.handle.depth > 0
    }

    /// The backend connection, after running a rollback left pending by a dropped
    /// [`Transaction`] (on backends that cannot queue one from `Drop`).
    pub(crate) async fn raw(&mut self) -> Result<&mut crate::backend::RawConnection> {
        if let Some(sql) = self.handle.pending_rollback.take()
            && let Err(e) = self.handle.raw.control(sql).await
        {
            self.handle.broken = true;
            return Err(e);
        }
        Ok(&mut self.handle.raw)
    }

    /// Starts the outermost transaction on this connection with `sql` (see
    /// `RawConnection::begin`).
    pub(crate) async fn start_transaction(&mut self, sql: String) -> Result<()> {
        let closing = self.closing();
        guarded(&closing, pin!(async { self.raw().await?.begin(sql).await })).await
    }

    /// Starts the transaction at `level` > 1 on this connection (see
    /// `RawConnection::savepoint`).
    pub(crate) async fn savepoint(&mut self, level: u32, sql: String) -> Result<()> {
        let closing = self.closing();
        guarded(
            &closing,
            pin!(async { self.raw().await?.savepoint(level, sql).await }),
        )
        .await
    }

    /// Ends the transaction at `level` on this connection (see `RawConnection::finish`).
    pub(crate) async fn finish(&mut self, level: u32, sql: String) -> Result<()> {
        let closing = self.closing();
        guarded(
            &closing,
            pin!(async { self.raw().await?.finish(level, sql).await }),
        )
        .await
    }

    /// Rewrites the `:name` placeholders for this connection's database; no values yet.
    /// Cached per connection: a query that runs again is not scanned again.
    fn rewrite(&mut self, sql: &str) -> BoundQuery {
        const CACHED: usize = 256;
        let (sql, names) = match self.handle.rewrites.get(sql) {
            Some((rewritten, names)) => (rewritten.clone(), names.clone()),
            None => {
                let r = rewrite(sql, self.handle.raw.dialect());
                let entry: (std::sync::Arc<str>, std::sync::Arc<[String]>) =
                    (r.sql.into(), r.names.into());
                if self.handle.rewrites.len() >= CACHED {
                    self.handle.rewrites.clear();
                }
                self.handle.rewrites.insert(sql.into(), entry.clone());
                entry
            }
        };
        BoundQuery {
            sql,
            values: Vec::new(),
            names,
            in_transaction: self.in_transaction(),
        }
    }

    fn bind(&mut self, sql: impl Sql, params: impl IntoParams) -> Result<BoundQuery> {
        match sql.render(self.backend())? {
            Rendered::Named(sql) => {
                let mut query = self.rewrite(&sql);
                query.values = params.into_params()?.into_bound(&query.names)?;
                Ok(query)
            }
            Rendered::Native { sql, values } => {
                if !params.into_params()?.is_empty() {
                    return Err(Error::new(
                        crate::ErrorKind::InvalidParameter,
                        "a query-builder statement carries its own values: pass () as the \
                         parameters",
                    ));
                }
                let names: std::sync::Arc<[String]> =
                    (1..=values.len()).map(|i| i.to_string()).collect();
                for (name, value) in names.iter().zip(&values) {
                    crate::params::check_nesting(name, value, None)?;
                }
                Ok(BoundQuery {
                    sql: sql.into(),
                    names,
                    values,
                    in_transaction: self.in_transaction(),
                })
            }
        }
    }

    /// Runs a statement and returns what encode/databases returns: the last inserted row id
    /// on SQLite and MySQL, the first column of the first returned row on PostgreSQL
    /// (`INSERT ... RETURNING id`), NULL otherwise. See [`Connection::execute_result`] for the
    /// affected row count.
    pub async fn execute(&mut self, sql: impl Sql, params: impl IntoParams) -> Result<Value> {
        let backend = self.backend();
        Ok(self.execute_result(sql, params).await?.value(backend))
    }

    /// Runs a statement and returns everything the database reports about it.
    pub async fn execute_result(
        &mut self,
        sql: impl Sql,
        params: impl IntoParams,
    ) -> Result<ExecuteResult> {
        let query = self.bind(sql, params)?;
        let closing = self.closing();
        guarded(
            &closing,
            pin!(async { self.raw().await?.execute(query).await }),
        )
        .await
    }

    /// Runs one statement once per parameter set, as a single unit: if one row fails, none of
    /// them is applied. Returns the total number of rows affected.
    pub async fn execute_many<P: IntoParams>(
        &mut self,
        sql: &str,
        params: impl IntoIterator<Item = P>,
    ) -> Result<u64> {
        let query = self.rewrite(sql);
        // Each backend binds the rows where it sends them (SQLite straight from these maps,
        // on its connection thread).
        let rows = params
            .into_iter()
            .map(IntoParams::into_params)
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(0);
        }
        let closing = self.closing();
        guarded(
            &closing,
            pin!(async { self.raw().await?.execute_many(query, rows).await }),
        )
        .await
    }

    /// Runs a query and returns all its rows.
    pub async fn fetch_all(
        &mut self,
        sql: impl Sql,
        params: impl IntoParams,
    ) -> Result<Vec<Record>> {
        let query = self.bind(sql, params)?;
        let closing = self.closing();
        guarded(
            &closing,
            pin!(async { self.raw().await?.fetch(query, None).await }),
        )
        .await
    }

    /// Runs a query and returns its first row, or `None` when it returns no rows. Rows after
    /// the first are not read.
    pub async fn fetch_one(
        &mut self,
        sql: impl Sql,
        params: impl IntoParams,
    ) -> Result<Option<Record>> {
        let query = self.bind(sql, params)?;
        let closing = self.closing();
        let fetch = pin!(async { self.raw().await?.fetch(query, Some(1)).await });
        Ok(guarded(&closing, fetch).await?.pop())
    }

    /// Runs a query and returns one column of its first row, converted to `T`; `None` when it
    /// returns no rows. A NULL value needs `T = Option<_>` (or [`Value`]).
    pub async fn fetch_val<T: FromValue>(
        &mut self,
        sql: impl Sql,
        params: impl IntoParams,
        column: impl ColumnIndex,
    ) -> Result<Option<T>> {
        match self.fetch_one(sql, params).await? {
            Some(record) => record.get(column).map(Some),
            None => Ok(None),
        }
    }

    /// Streams the rows of a query without loading them all. The connection is busy until the
    /// stream ends or is dropped.
    pub fn iterate(&mut self, sql: impl Sql, params: impl IntoParams) -> RowStream<'_> {
        let query = self.bind(sql, params);
        let closing = self.closing();
        let keep = Keep::new(AtomicBool::new(true));
        let stream_keep = keep.clone();
        let open = async move { self.raw().await?.stream(query?, stream_keep).await };
        let rows = Box::pin(futures_util::stream::once(open).try_flatten());
        RowStream::new(guarded_stream(closing, rows)).keeping(keep)
    }

    /// Like [`Connection::iterate`], with the stream owning the connection.
    pub(crate) async fn into_stream(
        mut self,
        sql: impl Sql,
        params: impl IntoParams,
    ) -> Result<RowStream<'static>> {
        let query = self.bind(sql, params)?;
        let closing = self.closing();
        let inner = guarded(
            &closing,
            pin!(async {
                let keep = Keep::new(AtomicBool::new(false));
                self.raw().await?.stream(query, keep).await
            }),
        )
        .await?;
        Ok(RowStream::owning(guarded_stream(closing, inner), self))
    }

    /// Starts a transaction: `BEGIN`, or a savepoint when one is already open on this
    /// connection. It rolls back unless committed.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        Transaction::begin(TxConn::Borrowed(self), TransactionOptions::default()).await
    }

    /// Starts an outermost transaction with an isolation level or read-only mode; see
    /// [`TransactionOptions`] for what each database has.
    pub async fn transaction_with_options(
        &mut self,
        options: TransactionOptions,
    ) -> Result<Transaction<'_>> {
        Transaction::begin(TxConn::Borrowed(self), options).await
    }

    /// How many transactions are open on this connection: 0 outside one, 1 inside `BEGIN`,
    /// 2 or more inside savepoints.
    pub fn transaction_depth(&self) -> u32 {
        self.handle.depth
    }

    /// Starts a transaction without a guard and returns its depth (1 for `BEGIN`, more for
    /// a savepoint): the low-level form of [`Connection::transaction`] for callers that
    /// track transactions themselves, such as language bindings.
    ///
    /// Finish it with [`Connection::commit_depth`] or [`Connection::rollback_depth`]. Nothing
    /// rolls it back on its own, except that a connection returned to the pool inside a
    /// transaction is discarded rather than reused.
    pub async fn begin(&mut self, options: TransactionOptions) -> Result<u32> {
        let tx = Transaction::begin(TxConn::Borrowed(self), options).await?;
        Ok(tx.detach())
    }

    /// Commits the transaction that [`Connection::begin`] opened at `depth`, which must be
    /// the innermost one open.
    pub async fn commit_depth(&mut self, depth: u32) -> Result<()> {
        Transaction::resume(TxConn::Borrowed(self), depth)?
            .commit()
            .await
    }

    /// Rolls back the transaction that [`Connection::begin`] opened at `depth`, and any
    /// opened inside it that are still open (a binding whose caller was cancelled just as
    /// its `begin` of a savepoint finished never learns of that savepoint; undoing the outer
    /// transaction undoes it too).
    ///
    /// Rolling back first interrupts a statement that an abandoned caller left running on the
    /// connection (SQLite), as dropping a [`Transaction`] does: any statement for the
    /// outermost transaction, one that only reads for a savepoint.
    pub async fn rollback_depth(&mut self, depth: u32) -> Result<()> {
        if depth == 1 {
            self.handle.raw.interrupt();
        } else if depth <= self.handle.depth {
            self.handle.raw.interrupt_read();
        }
        Transaction::resume_with_inner(TxConn::Borrowed(self), depth)?
            .rollback()
            .await
    }

    /// Runs `f` in a transaction that commits when `f` returns `Ok` and rolls back when it
    /// returns `Err` (or panics, or is cancelled).
    ///
    /// ```
    /// # async fn demo(conn: &mut databases::Connection) -> databases::Result<()> {
    /// let id = conn
    ///     .transaction_with(|tx| Box::pin(async move {
    ///         tx.execute("INSERT INTO notes (text) VALUES (:t)", databases::params! { "t" => "hi" })
    ///             .await
    ///     }))
    ///     .await?;
    /// # let _ = id; Ok(()) }
    /// ```
    pub async fn transaction_with<'c, T, E, F>(&'c mut self, f: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Transaction<'c>) -> BoxFuture<'t, Result<T, E>>,
        E: From<Error>,
    {
        let tx = Transaction::begin(TxConn::Borrowed(self), TransactionOptions::default()).await?;
        tx.run(f).await
    }
}

#[cfg(test)]
mod tests {
    /// An operation's future is built and moved on every call. Passed by value through the
    /// layers that wrap it, an inner future was stored again at each of them: a `fetch_one`
    /// future (every backend built in) took 17 KB.
    #[test]
    fn operation_futures_stay_small() {
        let db = crate::Database::new("sqlite://").unwrap();
        let fetch_one = db.fetch_one("SELECT 1", ());
        let execute = db.execute("SELECT 1", ());
        let fetch_all = db.fetch_all("SELECT 1", ());
        for (what, size) in [
            ("fetch_one", std::mem::size_of_val(&fetch_one)),
            ("execute", std::mem::size_of_val(&execute)),
            ("fetch_all", std::mem::size_of_val(&fetch_all)),
        ] {
            // 2.9 KB with every backend built in.
            assert!(size <= 4 * 1024, "a {what} future takes {size} bytes");
        }
    }
}
