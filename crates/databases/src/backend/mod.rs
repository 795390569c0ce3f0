//! The backends. Each has the same shape: open a connection, run a bound query (execute,
//! fetch, stream, batch of rows), run transaction control statements, and queue a rollback
//! from a synchronous `Drop`.

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use crate::error::{Error, Result};
use crate::params::Dialect;
use crate::record::Record;
use crate::url::Backend;
use crate::value::Value;
use crate::{Config, ExecuteResult};
use futures_util::stream::BoxStream;

#[cfg(not(feature = "sqlite"))]
compile_error!("enable at least one backend feature: `sqlite`");

/// A query with its placeholders rewritten and its values picked, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct BoundQuery {
    pub(crate) sql: String,
    pub(crate) values: Vec<Value>,
    /// The parameter name of each value, for messages.
    pub(crate) names: Vec<String>,
    /// True when the caller has a transaction open: the backend refuses to run the statement
    /// if the database has meanwhile ended that transaction, rather than let it autocommit.
    pub(crate) in_transaction: bool,
}

/// One open connection to some backend.
pub(crate) enum RawConnection {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteConnection),
}

impl RawConnection {
    /// Opens a connection for `config`.
    pub(crate) async fn open(config: &Config) -> Result<Self> {
        match config.url.backend() {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => Ok(Self::Sqlite(
                sqlite::SqliteConnection::open(&config.sqlite).await?,
            )),
            #[allow(
                unreachable_patterns,
                reason = "reachable when a backend feature is off"
            )]
            other => Err(Error::config(format!(
                "this build of `databases` has no {other} backend: it is not implemented yet \
                 (only sqlite is)"
            ))),
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    pub(crate) async fn execute(&mut self, query: BoundQuery) -> Result<ExecuteResult> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.execute(query).await,
        }
    }

    /// Runs `query.sql` once per row of values (`query.values` is unused).
    pub(crate) async fn execute_many(
        &mut self,
        query: BoundQuery,
        rows: Vec<Vec<Value>>,
    ) -> Result<u64> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.execute_many(query, rows).await,
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
        }
    }

    pub(crate) fn stream(&mut self, query: BoundQuery) -> BoxStream<'static, Result<Record>> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.stream(query),
        }
    }

    /// Runs transaction control SQL (`BEGIN`, `SAVEPOINT sp_2`, ...).
    pub(crate) async fn control(&mut self, sql: String) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.control(sql).await,
        }
    }

    /// Queues rollback SQL without waiting for it: it runs before anything sent later on this
    /// connection. Returns false when the backend cannot do that; the caller then marks the
    /// connection broken so that the pool discards it.
    pub(crate) fn queue_rollback(&mut self, sql: String) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.queue(sql),
        }
    }

    /// Stops the statement running now, if any. Only for an outermost transaction that is
    /// being abandoned: its rollback follows.
    pub(crate) fn interrupt(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.interrupt(),
        }
    }

    /// The statement that starts an outermost transaction.
    pub(crate) fn begin_sql(&self) -> &str {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.begin_sql(),
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(c) => c.is_broken(),
        }
    }
}
