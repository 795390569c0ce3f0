//! [`Database`]: connect / disconnect, queries, transactions.

use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;

use crate::config::{Config, DatabaseOptions};
use crate::connection::{Connection, ExecuteResult};
use crate::error::{Error, ErrorKind, Result};
use crate::params::IntoParams;
use crate::pool::{self, Closing, Handle, Lease, Pool, Pooled};
use crate::query::{Rendered, Sql};
use crate::record::{ColumnIndex, Record};
use crate::stream::RowStream;
use crate::transaction::{Transaction, TransactionOptions, TxConn};
use crate::url::{Backend, DatabaseUrl};
use crate::value::{FromValue, Value};

/// Anything that names a database: a URL string or a parsed [`DatabaseUrl`].
pub trait IntoDatabaseUrl {
    /// Parses (or clones) the URL.
    fn into_database_url(self) -> Result<DatabaseUrl>;
}

impl IntoDatabaseUrl for &str {
    fn into_database_url(self) -> Result<DatabaseUrl> {
        DatabaseUrl::parse(self)
    }
}

impl IntoDatabaseUrl for String {
    fn into_database_url(self) -> Result<DatabaseUrl> {
        DatabaseUrl::parse(&self)
    }
}

impl IntoDatabaseUrl for &String {
    fn into_database_url(self) -> Result<DatabaseUrl> {
        DatabaseUrl::parse(self)
    }
}

impl IntoDatabaseUrl for DatabaseUrl {
    fn into_database_url(self) -> Result<DatabaseUrl> {
        Ok(self)
    }
}

impl IntoDatabaseUrl for &DatabaseUrl {
    fn into_database_url(self) -> Result<DatabaseUrl> {
        Ok(self.clone())
    }
}

/// A database, configured by one URL: a pool of connections once connected.
///
/// Cloning is cheap and every clone shares the same pool, so keep one in your application
/// state.
///
/// Every query method takes a connection from the pool for the call and puts it back
/// afterwards. To run several statements on one connection use [`Database::connection`]; to
/// run them atomically use [`Database::transaction`] or [`Database::transaction_with`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> databases::Result<()> {
/// use databases::{Database, params};
///
/// let db = Database::new("sqlite://")?; // in memory
/// db.connect().await?;
/// db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)", ()).await?;
/// let id = db.execute("INSERT INTO notes (text) VALUES (:text)", params! { "text" => "hi" }).await?;
/// assert_eq!(id, databases::Value::Int(1));
/// let text: Option<String> = db.fetch_val("SELECT text FROM notes WHERE id = :id", params! { "id" => 1 }, 0).await?;
/// assert_eq!(text.as_deref(), Some("hi"));
/// db.disconnect().await?;
/// # Ok(()) }
/// ```
///
/// ## `force_rollback`
///
/// With [`DatabaseOptions::force_rollback`] (or `?force_rollback=true`), `connect` takes one
/// connection and opens a transaction on it; every call shares that connection, transactions
/// become savepoints, and `disconnect` rolls everything back. Calls wait for each other: a
/// caller that holds the connection (a [`Connection`] or [`Transaction`] still alive) makes
/// the others wait up to the acquire timeout.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    state: Mutex<Option<Arc<Connected>>>,
    /// Serializes `connect` and `disconnect`.
    lifecycle: tokio::sync::Mutex<()>,
}

/// A snapshot of a connected [`Database`]'s pool, from [`Database::pool_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolState {
    /// Open connections, in use or idle (at most `max_size`).
    pub connections: u32,
    /// Open connections that nobody holds.
    pub idle: u32,
}

struct Connected {
    pool: Pool,
    /// The one connection of a `force_rollback` database, inside its outer transaction.
    global: Option<Arc<tokio::sync::Mutex<Pooled>>>,
    /// The connections callers hold, for `disconnect`.
    closing: Arc<Closing>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.inner.config.url)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Database {
    /// A database for `url`, with options from the URL's query string and defaults.
    /// Nothing is opened until [`Database::connect`].
    pub fn new(url: impl IntoDatabaseUrl) -> Result<Self> {
        Self::with_options(url, DatabaseOptions::new())
    }

    /// A database for `url`; `options` win over the URL's query options.
    pub fn with_options(url: impl IntoDatabaseUrl, options: DatabaseOptions) -> Result<Self> {
        let config = Config::new(url.into_database_url()?, &options)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                state: Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The URL this database was configured with.
    pub fn url(&self) -> &DatabaseUrl {
        &self.inner.config.url
    }

    /// The database engine.
    pub fn backend(&self) -> Backend {
        self.inner.config.url.backend()
    }

    /// True between a successful [`Database::connect`] and [`Database::disconnect`].
    pub fn is_connected(&self) -> bool {
        self.state().is_some()
    }

    /// True when every call runs inside one transaction that `disconnect` rolls back.
    pub fn is_force_rollback(&self) -> bool {
        self.inner.config.force_rollback
    }

    /// How many connections the pool holds right now, and how many of them are idle; `None`
    /// when not connected. For health endpoints and leak checks.
    pub fn pool_state(&self) -> Option<PoolState> {
        let connected = self.state().clone()?;
        let state = connected.pool.state();
        Some(PoolState {
            connections: state.connections,
            idle: state.idle_connections,
        })
    }

    fn state(&self) -> MutexGuard<'_, Option<Arc<Connected>>> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the pool (and `min_size` connections). Calling it again while connected does
    /// nothing.
    pub async fn connect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.is_connected() {
            tracing::debug!("already connected, skipping connection");
            return Ok(());
        }
        let config = &self.inner.config;
        let pool = pool::build(config.clone()).await?;
        let global = if config.force_rollback {
            let mut conn = pool::acquire(&pool, config).await?;
            for sql in conn.raw.begin_statements(&TransactionOptions::default())? {
                conn.raw.control(sql).await?;
            }
            conn.depth = 1;
            Some(Arc::new(tokio::sync::Mutex::new(conn)))
        } else {
            None
        };
        *self.state() = Some(Arc::new(Connected {
            pool,
            global,
            closing: Arc::default(),
        }));
        tracing::info!(url = %config.url, "connected to database");
        Ok(())
    }

    /// Closes the pool; with `force_rollback`, rolls back everything done since `connect`.
    /// Calling it while disconnected does nothing.
    ///
    /// New calls fail with [`ErrorKind::NotConnected`] at once. Connections that callers
    /// still hold get up to `disconnect_timeout` (10 s by default; see
    /// [`DatabaseOptions::disconnect_timeout`]) to be dropped; then they are closed: the
    /// statement running on one is stopped, and every operation on them fails with
    /// [`ErrorKind::NotConnected`]. So `disconnect` never waits longer than that.
    pub async fn disconnect(&self) -> Result<()> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let Some(connected) = self.state().take() else {
            tracing::debug!("already disconnected, skipping disconnection");
            return Ok(());
        };
        let timeout = self.inner.config.disconnect_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let closed = connected.closing.close(timeout).await;
        if closed > 0 {
            tracing::warn!(
                url = %self.inner.config.url,
                connections = closed,
                ?timeout,
                "disconnect closed connections that were still in use"
            );
        }
        let mut result = Ok(());
        if let Some(global) = &connected.global {
            match global.clone().try_lock_owned() {
                Ok(mut conn) => {
                    result = conn.raw.control("ROLLBACK".to_owned()).await;
                    conn.depth = 0;
                    if result.is_err() {
                        conn.broken = true;
                    }
                }
                Err(_) => tracing::warn!(
                    "the force_rollback connection is still held: its transaction rolls back \
                     when its holder drops it"
                ),
            }
        }
        drop(connected);
        // SQLite connections close on their own threads: the file is closed when this returns
        // (unless a caller still holds a connection past the timeout).
        self.inner.config.backend.closed(deadline).await;
        tracing::info!(url = %self.inner.config.url, "disconnected from database");
        result
    }

    fn connected(&self) -> Result<Arc<Connected>> {
        self.state().clone().ok_or_else(|| {
            Error::new(
                ErrorKind::NotConnected,
                format!(
                    "database {} is not connected: call connect() first",
                    self.inner.config.url
                ),
            )
        })
    }

    /// Takes a connection from the pool (the shared one with `force_rollback`), waiting at
    /// most the acquire timeout.
    pub async fn connection(&self) -> Result<Connection> {
        let connected = self.connected()?;
        let config = &self.inner.config;
        let handle = match &connected.global {
            Some(global) => {
                let guard = tokio::time::timeout(
                    config.acquire_timeout,
                    global.clone().lock_owned(),
                )
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::PoolTimeout,
                        format!(
                            "the force_rollback connection stayed in use for {:?}: a Connection or \
                                 Transaction from this database is still alive",
                            config.acquire_timeout
                        ),
                    )
                })?;
                Handle::Shared(guard)
            }
            None => Handle::Pooled(pool::acquire(&connected.pool, config).await?),
        };
        Ok(Connection::new(handle, Lease::new(&connected.closing)))
    }

    /// Runs a statement; see [`Connection::execute`].
    pub async fn execute(&self, sql: impl Sql, params: impl IntoParams) -> Result<Value> {
        self.connection().await?.execute(sql, params).await
    }

    /// Runs a statement and returns what the database reports; see
    /// [`Connection::execute_result`].
    pub async fn execute_result(
        &self,
        sql: impl Sql,
        params: impl IntoParams,
    ) -> Result<ExecuteResult> {
        self.connection().await?.execute_result(sql, params).await
    }

    /// Runs a statement once per parameter set, all or nothing; see
    /// [`Connection::execute_many`].
    pub async fn execute_many<P: IntoParams>(
        &self,
        sql: &str,
        params: impl IntoIterator<Item = P>,
    ) -> Result<u64> {
        self.connection().await?.execute_many(sql, params).await
    }

    /// All rows of a query.
    pub async fn fetch_all(&self, sql: impl Sql, params: impl IntoParams) -> Result<Vec<Record>> {
        self.connection().await?.fetch_all(sql, params).await
    }

    /// The first row of a query, `None` when there is none.
    pub async fn fetch_one(
        &self,
        sql: impl Sql,
        params: impl IntoParams,
    ) -> Result<Option<Record>> {
        self.connection().await?.fetch_one(sql, params).await
    }

    /// One column (by index or name) of the first row, `None` when there is no row.
    pub async fn fetch_val<T: FromValue>(
        &self,
        sql: impl Sql,
        params: impl IntoParams,
        column: impl ColumnIndex,
    ) -> Result<Option<T>> {
        self.connection()
            .await?
            .fetch_val(sql, params, column)
            .await
    }

    /// Streams the rows of a query. The stream takes a connection on its first poll and
    /// releases it when the rows run out or the stream is dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> databases::Result<()> {
    /// let db = databases::Database::new("sqlite://")?;
    /// db.connect().await?;
    /// let mut rows = db.iterate("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) SELECT i FROM n", ());
    /// let mut sum = 0;
    /// while let Some(row) = rows.try_next().await? {
    ///     sum += row.get::<i64>(0)?;
    /// }
    /// assert_eq!(sum, 500_500);
    /// # Ok(()) }
    /// ```
    pub fn iterate(&self, sql: impl Sql, params: impl IntoParams) -> RowStream<'static> {
        let db = self.clone();
        let sql = sql.render(self.backend()).map(Rendered::into_owned);
        let params = params.into_params();
        let open = async move {
            let (sql, params) = (sql?, params?);
            let conn = db.connection().await?;
            conn.into_stream(&sql, params).await
        };
        RowStream::new(Box::pin(futures_util::stream::once(open).try_flatten()))
    }

    /// Starts a transaction on a connection of its own. It rolls back unless committed.
    pub async fn transaction(&self) -> Result<Transaction<'static>> {
        self.transaction_with_options(TransactionOptions::default())
            .await
    }

    /// Starts a transaction with an isolation level or read-only mode; see
    /// [`TransactionOptions`] for what each database has.
    pub async fn transaction_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<Transaction<'static>> {
        let conn = self.connection().await?;
        Transaction::begin(TxConn::Owned(conn), options).await
    }

    /// Runs `f` in a transaction that commits on `Ok` and rolls back on `Err`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> databases::Result<()> {
    /// use databases::{Database, Error, params};
    ///
    /// let db = Database::new("sqlite://")?;
    /// db.connect().await?;
    /// db.execute("CREATE TABLE t (x INTEGER)", ()).await?;
    /// let result: Result<(), Error> = db
    ///     .transaction_with(|tx| Box::pin(async move {
    ///         tx.execute("INSERT INTO t VALUES (:x)", params! { "x" => 1 }).await?;
    ///         tx.execute("INSERT INTO nowhere VALUES (1)", ()).await?; // fails
    ///         Ok(())
    ///     }))
    ///     .await;
    /// assert!(result.is_err());
    /// let count: Option<i64> = db.fetch_val("SELECT COUNT(*) FROM t", (), 0).await?;
    /// assert_eq!(count, Some(0)); // rolled back
    /// # Ok(()) }
    /// ```
    pub async fn transaction_with<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Transaction<'static>) -> BoxFuture<'t, Result<T, E>>,
        E: From<Error>,
    {
        let tx = self.transaction().await?;
        tx.run(f).await
    }
}
