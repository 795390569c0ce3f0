//! The connection pool (bb8) and the handle a [`crate::Connection`] holds.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::backend::RawConnection;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

/// A query rewritten for one dialect: the SQL with native placeholders, and the parameter
/// name of each placeholder.
pub(crate) type RewrittenQuery = (Arc<str>, Arc<[String]>);

/// A pooled connection and the state this crate tracks for it.
pub(crate) struct PoolConn {
    pub(crate) raw: RawConnection,
    /// How many transactions are open on it: 0 outside, 1 in `BEGIN`, 2+ in savepoints.
    pub(crate) depth: u32,
    /// Set when the connection may be in an unknown state; the pool then discards it.
    pub(crate) broken: bool,
    /// A rollback that a dropped transaction could not queue; it runs before the next
    /// statement. A connection that goes back to the pool with one is discarded instead
    /// (closing it ends the transaction on the server).
    pub(crate) pending_rollback: Option<String>,
    /// Queries already rewritten for this connection's dialect: SQL with native placeholders
    /// and the parameter name of each.
    pub(crate) rewrites: crate::SqlMap<RewrittenQuery>,
}

/// Opens connections for the pool and decides which ones may go back into it.
pub(crate) struct Manager {
    pub(crate) config: Arc<Config>,
}

impl bb8::ManageConnection for Manager {
    type Connection = PoolConn;
    type Error = Error;

    async fn connect(&self) -> Result<PoolConn> {
        Ok(PoolConn {
            raw: RawConnection::open(&self.config).await?,
            depth: 0,
            broken: false,
            pending_rollback: None,
            rewrites: crate::SqlMap::default(),
        })
    }

    async fn is_valid(&self, conn: &mut PoolConn) -> Result<()> {
        if self.has_broken(conn) || conn.raw.closed_by_server() {
            Err(Error::connection_lost("the pooled connection is broken"))
        } else {
            Ok(())
        }
    }

    /// A connection goes back into the pool only if it is alive and outside any transaction.
    fn has_broken(&self, conn: &mut PoolConn) -> bool {
        conn.broken || conn.depth != 0 || conn.pending_rollback.is_some() || conn.raw.is_broken()
    }
}

pub(crate) type Pool = bb8::Pool<Manager>;
/// A connection taken from the pool, given back when dropped: inside the runtime it was taken
/// on when the dropping thread has none (a plain thread, a destructor that runs after the
/// application's runtime is gone, a Python object freed on the event loop's thread). The
/// pool spawns the opening of a replacement for a connection it discards, and tokio's spawn
/// panics outside a runtime; the panic also skipped the pool's wake of its waiters, which
/// then waited out the acquire timeout.
pub(crate) struct Pooled {
    conn: Option<bb8::PooledConnection<'static, Manager>>,
    runtime: Option<tokio::runtime::Handle>,
}

impl Deref for Pooled {
    type Target = PoolConn;

    fn deref(&self) -> &PoolConn {
        self.conn
            .as_ref()
            .expect("a pooled connection is only taken out when it is dropped")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut PoolConn {
        self.conn
            .as_mut()
            .expect("a pooled connection is only taken out when it is dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        match &self.runtime {
            Some(runtime) if tokio::runtime::Handle::try_current().is_err() => {
                let _context = runtime.enter();
                drop(conn);
            }
            _ => drop(conn),
        }
    }
}

/// Builds the pool and opens `min_size` connections, so that a bad path or server fails here.
pub(crate) async fn build(config: Arc<Config>) -> Result<Pool> {
    let in_memory = config.backend.in_memory();
    let mut builder = bb8::Pool::builder()
        .max_size(config.max_size)
        .min_idle(Some(config.min_size))
        .connection_timeout(config.acquire_timeout)
        // A check without I/O (see `is_valid`): a connection whose server went away while
        // it was idle (PostgreSQL sees that at once) is replaced rather than handed out.
        .test_on_check_out(true)
        .retry_connection(false)
        .max_lifetime(config.pool_recycle)
        // The most recently used connection first: it is warm, and idle ones can expire.
        .queue_strategy(bb8::QueueStrategy::Lifo);
    if in_memory {
        // Closing the one connection would drop the database.
        builder = builder.idle_timeout(None).max_lifetime(None);
    }
    builder.build(Manager { config }).await
}

/// Takes a connection from the pool, waiting at most the acquire timeout.
pub(crate) async fn acquire(pool: &Pool, config: &Config) -> Result<Pooled> {
    let conn = pool.get_owned().await.map_err(|e| match e {
        bb8::RunError::User(e) => e,
        bb8::RunError::TimedOut => pool_timeout(config),
    })?;
    Ok(Pooled {
        conn: Some(conn),
        runtime: tokio::runtime::Handle::try_current().ok(),
    })
}

pub(crate) fn pool_timeout(config: &Config) -> Error {
    Error::new(
        ErrorKind::PoolTimeout,
        format!(
            "no connection became free within {:?} (the pool holds at most {} connection(s); \
             raise max_size or acquire_timeout, or release connections sooner)",
            config.acquire_timeout, config.max_size
        ),
    )
}

/// What a [`crate::Connection`] holds: its own pooled connection, or the one shared connection
/// of a `force_rollback` database.
pub(crate) enum Handle {
    Pooled(Pooled),
    Shared(tokio::sync::OwnedMutexGuard<Pooled>),
}

impl Deref for Handle {
    type Target = PoolConn;

    fn deref(&self) -> &PoolConn {
        match self {
            Self::Pooled(p) => p,
            Self::Shared(g) => g,
        }
    }
}

impl DerefMut for Handle {
    fn deref_mut(&mut self) -> &mut PoolConn {
        match self {
            Self::Pooled(p) => p,
            Self::Shared(g) => g,
        }
    }
}

/// How [`crate::Database::disconnect`] reaches the connections that callers still hold: it
/// counts them, waits for them to come back, and closes them when they do not.
#[derive(Default)]
pub(crate) struct Closing {
    /// Connections taken and not yet dropped.
    held: AtomicUsize,
    /// Set when disconnect stopped waiting: operations on held connections fail.
    closed: AtomicBool,
    /// Woken when `closed` is set (operations in flight wait on it).
    closing: Notify,
    /// Woken when `held` falls (only disconnect waits on it).
    returned: Notify,
    /// How long disconnect waited, for the error message.
    waited: Mutex<Duration>,
}

impl Closing {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Completes once the database closes its connections.
    pub(crate) async fn closed(&self) {
        wait_until(&self.closing, || self.is_closed()).await;
    }

    /// The error of an operation on a connection that disconnect closed.
    pub(crate) fn error(&self) -> Error {
        let waited = *self.waited.lock().unwrap_or_else(PoisonError::into_inner);
        Error::new(
            ErrorKind::NotConnected,
            format!(
                "the database was disconnected while this connection was in use (disconnect \
                 waited {waited:?} for it, the disconnect_timeout): connect again and retry"
            ),
        )
    }

    /// Waits up to `timeout` for every held connection to be dropped, then closes those
    /// still held; returns how many that was.
    pub(crate) async fn close(&self, timeout: Duration) -> usize {
        let all_back = wait_until(&self.returned, || self.held.load(Ordering::SeqCst) == 0);
        if tokio::time::timeout(timeout, all_back).await.is_ok() {
            return 0;
        }
        *self.waited.lock().unwrap_or_else(PoisonError::into_inner) = timeout;
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify_waiters();
        self.held.load(Ordering::SeqCst)
    }
}

/// Completes once `done()` holds, checking it again after each notification of `changed`
/// (one sent between the check and the wait is not lost).
pub(crate) async fn wait_until(changed: &Notify, done: impl Fn() -> bool) {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

/// A held connection's share in [`Closing`]: counted from creation to drop.
pub(crate) struct Lease(Arc<Closing>);

impl Lease {
    pub(crate) fn new(closing: &Arc<Closing>) -> Self {
        closing.held.fetch_add(1, Ordering::SeqCst);
        Self(closing.clone())
    }

    pub(crate) fn closing(&self) -> &Arc<Closing> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
        self.0.returned.notify_waiters();
    }
}
