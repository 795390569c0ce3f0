//! [`Transaction`]: `BEGIN` / `SAVEPOINT sp_N`, commit, rollback, rollback on drop.

use std::ops::{Deref, DerefMut};

use futures_util::future::BoxFuture;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// How a transaction isolates itself from concurrent ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// May see other transactions' uncommitted changes (MySQL; PostgreSQL treats it as
    /// read committed).
    ReadUncommitted,
    /// Each statement sees what was committed before it started.
    ReadCommitted,
    /// The whole transaction sees one snapshot.
    RepeatableRead,
    /// As if transactions ran one after another.
    Serializable,
}

impl IsolationLevel {
    #[cfg_attr(
        not(any(feature = "postgres", feature = "mysql")),
        allow(dead_code, reason = "SQLite has no isolation levels to name")
    )]
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Self::ReadUncommitted => "READ UNCOMMITTED",
            Self::ReadCommitted => "READ COMMITTED",
            Self::RepeatableRead => "REPEATABLE READ",
            Self::Serializable => "SERIALIZABLE",
        }
    }
}

/// Options for an outermost transaction, on the databases that have them.
///
/// | option | PostgreSQL | MySQL / MariaDB | SQLite |
/// |---|---|---|---|
/// | isolation level | all four | all four | serializable only (what SQLite always is) |
/// | read only | yes | yes | no (open the database with `?mode=ro`) |
/// | deferrable | yes (with serializable, read only) | no | no |
///
/// Asking for something a database does not have is an error, not silently ignored; so is
/// giving options to a nested transaction (a savepoint), which has none of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TransactionOptions {
    pub(crate) isolation: Option<IsolationLevel>,
    pub(crate) read_only: bool,
    pub(crate) deferrable: bool,
}

impl TransactionOptions {
    /// The database's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the isolation level.
    #[must_use]
    pub fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = Some(level);
        self
    }

    /// Makes the transaction read only: writes fail.
    #[must_use]
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// PostgreSQL's `DEFERRABLE` (for serializable, read-only transactions).
    #[must_use]
    pub fn deferrable(mut self, on: bool) -> Self {
        self.deferrable = on;
        self
    }
}

/// The connection a transaction runs on: its own, or one borrowed from a [`Connection`] or an
/// outer [`Transaction`].
pub(crate) enum TxConn<'c> {
    Owned(Connection),
    Borrowed(&'c mut Connection),
}

/// An open transaction.
///
/// The outermost transaction on a connection is `BEGIN ... COMMIT`; a transaction started
/// inside it (with [`Connection::transaction`], reached through `Deref`) is a
/// savepoint, so rolling back the inner one keeps the outer one's work.
///
/// It dereferences to [`Connection`], so every query method works on it.
///
/// On every backend the outermost `BEGIN` (`START TRANSACTION` on MySQL) goes to the database
/// with the transaction's first statement, so a failure to start the transaction is that
/// statement's error, and a transaction that runs nothing sends nothing. PostgreSQL and MySQL
/// start a savepoint the same way. On SQLite and PostgreSQL the start costs no round trip of
/// its own; on MySQL neither does it when the first statement is a write (`INSERT`,
/// `REPLACE`, `UPDATE`, `DELETE`) whose values can be written into the SQL text.
///
/// ## Note
///
/// A transaction **rolls back unless committed**: dropping it without calling
/// [`Transaction::commit`] (an early `return`, a `?`, a panic, a cancelled future) rolls it
/// back. The rollback is queued on the connection before it can be used again, so the next
/// user never sees the transaction's work or an open transaction.
pub struct Transaction<'c> {
    conn: TxConn<'c>,
    /// 1 for `BEGIN`, n > 1 for savepoint `sp_n`.
    level: u32,
    /// Set once committed or rolled back; otherwise `Drop` rolls back.
    done: bool,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

fn rollback_sql(level: u32) -> String {
    if level == 1 {
        "ROLLBACK".to_owned()
    } else {
        format!("ROLLBACK TO SAVEPOINT sp_{level}; RELEASE SAVEPOINT sp_{level}")
    }
}

impl<'c> Transaction<'c> {
    pub(crate) async fn begin(conn: TxConn<'c>, options: TransactionOptions) -> Result<Self> {
        let mut tx = Self {
            conn,
            level: 0,
            done: true,
        };
        let c = tx.connection_mut();
        let level = c.handle.depth + 1;
        let statements = if level == 1 {
            c.handle.raw.begin_statements(&options)?
        } else if options != TransactionOptions::default() {
            return Err(Error::transaction(
                "isolation level, read only and deferrable apply to the outermost transaction; \
                 a nested one is a savepoint inside it",
            ));
        } else {
            vec![format!("SAVEPOINT sp_{level}")]
        };
        // Count the transaction before sending BEGIN: if this future is dropped while BEGIN
        // runs, `Drop` queues the rollback behind it.
        c.handle.depth = level;
        tx.level = level;
        tx.done = false;
        for sql in statements {
            let c = tx.connection_mut();
            let sent = if level == 1 {
                c.start_transaction(sql).await
            } else {
                c.savepoint(level, sql).await
            };
            if let Err(e) = sent {
                tx.done = true;
                tx.connection_mut().handle.depth = level - 1;
                return Err(e);
            }
        }
        Ok(tx)
    }

    /// Gives up the guard: the transaction stays open on the connection, and the caller
    /// finishes it by depth (see [`Connection::begin`]).
    pub(crate) fn detach(mut self) -> u32 {
        self.done = true;
        self.level
    }

    /// Takes up a transaction that [`Transaction::detach`] left open at `level`, which must be
    /// the innermost one open on the connection.
    pub(crate) fn resume(conn: TxConn<'c>, level: u32) -> Result<Self> {
        let mut tx = Self::resume_with_inner(conn, level)?;
        if let Err(e) = tx.check_innermost() {
            // Refused: the transaction stays open, as it was.
            tx.done = true;
            return Err(e);
        }
        Ok(tx)
    }

    /// Like [`Transaction::resume`], for a rollback, which may undo transactions still open
    /// inside this one along with it.
    pub(crate) fn resume_with_inner(conn: TxConn<'c>, level: u32) -> Result<Self> {
        let mut tx = Self {
            conn,
            level,
            done: true,
        };
        let open = tx.connection().handle.depth;
        if level == 0 || level > open {
            return Err(Error::transaction(format!(
                "no transaction is open at depth {level} (the connection has {open} open)"
            )));
        }
        tx.done = false;
        Ok(tx)
    }

    fn connection_mut(&mut self) -> &mut Connection {
        match &mut self.conn {
            TxConn::Owned(c) => c,
            TxConn::Borrowed(c) => c,
        }
    }

    fn connection(&self) -> &Connection {
        match &self.conn {
            TxConn::Owned(c) => c,
            TxConn::Borrowed(c) => c,
        }
    }

    /// 1 for the outermost transaction on the connection, 2 or more for a savepoint.
    pub fn depth(&self) -> u32 {
        self.level
    }

    fn check_innermost(&self) -> Result<()> {
        let open = self.connection().handle.depth;
        if open == self.level {
            Ok(())
        } else {
            Err(Error::transaction(format!(
                "cannot finish the transaction at depth {} while the one at depth {open} is open",
                self.level
            )))
        }
    }

    /// Makes the transaction's work permanent (`COMMIT`, or `RELEASE SAVEPOINT` for a nested
    /// one). Once this returns `Ok` on the outermost transaction, the work is durable. If it
    /// fails, the transaction is rolled back.
    pub async fn commit(mut self) -> Result<()> {
        self.check_innermost()?;
        let sql = if self.level == 1 {
            "COMMIT".to_owned()
        } else {
            format!("RELEASE SAVEPOINT sp_{}", self.level)
        };
        // On error `done` stays false and `Drop` rolls back.
        let level = self.level;
        self.connection_mut().finish(level, sql).await?;
        self.finish();
        Ok(())
    }

    /// Undoes the transaction's work (`ROLLBACK`, or `ROLLBACK TO SAVEPOINT` for a nested
    /// one, which keeps the outer transaction's work), and that of any transaction still
    /// open inside it (only possible if one was leaked with `std::mem::forget`).
    ///
    /// On a server connection that an earlier operation left unusable (its caller was
    /// cancelled, or the server session was lost: killed, restarted, the network gone),
    /// there is nothing to send: the pool discards the connection, and the end of its
    /// session rolls back what was open there. The rollback then succeeds without a round
    /// trip (a commit there fails: the work is lost). A rollback that finds the session
    /// gone itself succeeds too.
    pub async fn rollback(mut self) -> Result<()> {
        if self.connection().handle.raw.session_gone() {
            self.connection_mut().handle.broken = true;
            self.finish();
            return Ok(());
        }
        let (level, sql) = (self.level, rollback_sql(self.level));
        let mut result = self.connection_mut().finish(level, sql).await;
        if result.is_err() {
            // The connection's state is unknown: keep it out of the pool.
            self.connection_mut().handle.broken = true;
            if self.connection().handle.raw.session_gone() {
                // The rollback found the session gone: so is the transaction.
                result = Ok(());
            }
        }
        self.finish();
        result
    }

    fn finish(&mut self) {
        self.done = true;
        let level = self.level;
        self.connection_mut().handle.depth = level - 1;
    }

    /// Runs `f` in this transaction: commits when it returns `Ok`, rolls back on `Err`.
    pub(crate) async fn run<T, E, F>(mut self, f: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Transaction<'c>) -> BoxFuture<'t, Result<T, E>>,
        E: From<Error>,
    {
        match f(&mut self).await {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = self.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a failed transaction body also failed");
                }
                Err(e)
            }
        }
    }
}

impl Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection()
    }
}

impl DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection_mut()
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let level = self.level;
        let conn = self.connection_mut();
        if level == 1 {
            // Everything on this connection is being rolled back: a statement still running
            // for the abandoned caller need not finish first.
            conn.handle.raw.interrupt();
        } else {
            // For a savepoint, only a statement that reads: on SQLite an interrupted write
            // aborts the outer transaction too.
            conn.handle.raw.interrupt_read();
        }
        let sql = rollback_sql(level);
        if !conn.handle.raw.queue_rollback(level, sql.clone()) {
            // Runs before the connection's next statement; a rollback of an outer level
            // replaces one of an inner level, which it covers.
            conn.handle.pending_rollback = Some(sql);
        }
        conn.handle.depth = level - 1;
    }
}
