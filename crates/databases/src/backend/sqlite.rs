//! SQLite through rusqlite and the bundled SQLite.
//!
//! Every connection lives on its own OS thread and receives work over a channel, so SQLite is
//! never called on a tokio worker. Work runs in the order it was sent; a queued rollback (from
//! a dropped transaction) therefore runs before anything the next user of the connection sends.
//!
//! A caller that goes away before its work starts (a dropped future) has the work skipped. If
//! it goes away while its statement runs outside a transaction, or while a statement that
//! only reads runs inside one, the statement is interrupted (SQLite undoes it as a whole).
//! A write inside a transaction is left to finish (interrupting it would end the whole
//! transaction), and the transaction's own rollback follows. A statement waiting for another
//! connection's lock stops waiting when it would be interrupted, and so does a queued `BEGIN`
//! of a dropped transaction (see [`wait_for_lock`]).
//!
//! A query that only reads (a read-only statement that returns columns) may instead run
//! inline, on the caller's own thread, when nothing is queued for the connection: two thread
//! wakes cost more than a short read. It runs with a time budget ([`INLINE_BUDGET`],
//! enforced by SQLite's progress handler) and without waiting on locks; a read that runs out
//! of budget or meets a lock is abandoned (a read leaves nothing behind) and sent to the
//! connection thread as usual.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{InterruptHandle, OpenFlags};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::ExecuteResult;
use crate::config::{parse_bool, parse_choice, parse_seconds};
use crate::error::{Error, ErrorKind, Result};
use crate::params::NamedParams;
use crate::record::{Columns, Record, Rows};
use crate::url::DatabaseUrl;
use crate::value::Value;

use super::BoundQuery;

/// URL options the SQLite backend understands (besides the common ones).
pub(crate) const OPTIONS: &[&str] = &[
    "busy_timeout",
    "cache",
    "foreign_keys",
    "journal_mode",
    "mode",
    "synchronous",
    "transaction_mode",
];

/// Rows per message from the connection thread to an `iterate` stream.
const CHUNK_ROWS: usize = 256;
/// Messages buffered ahead of the consumer: at most `CHUNK_ROWS * (CHUNK_BUFFER + 1)` rows
/// are in memory at once.
const CHUNK_BUFFER: usize = 2;
const STATEMENT_CACHE: usize = 256;
/// How long a read may run inline on the caller's thread before it is abandoned and sent to
/// the connection thread. Long enough for point lookups and small result sets, short enough
/// not to stall an event loop.
pub(crate) const INLINE_BUDGET: Duration = Duration::from_micros(250);
/// Virtual machine instructions between two checks of the inline budget.
const PROGRESS_OPS: i32 = 1_000;
/// After a read ran out of its inline budget, the number of its next runs sent straight to
/// the connection thread (each inline attempt of a long read costs the whole budget).
const SLOW_READ_SKIPS: u16 = 64;

thread_local! {
    /// While a read runs inline on this thread: when its budget ends.
    static INLINE_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Pauses between two attempts to take a lock another connection holds: short at first, then
/// [`LOCK_POLL`] until the busy timeout ends.
const LOCK_PAUSES: [Duration; 4] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
];
/// The longest pause while waiting for a lock: a caller that gives up is noticed within it.
const LOCK_POLL: Duration = Duration::from_millis(10);

thread_local! {
    /// On a connection thread: when the current wait for a lock began.
    static LOCK_WAIT_START: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// SQLite's busy handler, called while another connection holds a lock the statement needs;
/// `true` tries again after a pause. It replaces `busy_timeout`'s handler, which sleeps
/// through `sqlite3_interrupt`: this one stops waiting as soon as the statement's caller has
/// given up (see [`Shared::give_up`]). An inline read never waits: it goes to the connection
/// thread instead, where the wait lasts up to the busy timeout.
fn wait_for_lock(attempts: i32) -> bool {
    if INLINE_DEADLINE.get().is_some() {
        return false;
    }
    let Some(shared) = SHARED.with(|s| s.borrow().clone()) else {
        return false;
    };
    if shared.current.load(Ordering::SeqCst) <= shared.give_up.load(Ordering::SeqCst) {
        shared.refused.store(true, Ordering::SeqCst);
        return false;
    }
    let now = Instant::now();
    let started = match LOCK_WAIT_START.get() {
        Some(started) if attempts > 0 => started,
        _ => {
            LOCK_WAIT_START.set(Some(now));
            now
        }
    };
    let left = shared.busy_timeout.saturating_sub(now - started);
    if left.is_zero() {
        shared.refused.store(true, Ordering::SeqCst);
        return false;
    }
    let pause = usize::try_from(attempts)
        .ok()
        .and_then(|i| LOCK_PAUSES.get(i).copied())
        .unwrap_or(LOCK_POLL);
    std::thread::sleep(pause.min(left));
    true
}

/// SQLite's progress handler: stops an inline read whose budget is spent, and, on a
/// connection thread, a statement whose caller has given up (see [`Shared::give_up`]).
///
/// The second is what makes giving up reliable: `sqlite3_interrupt` only reaches a statement
/// that is already running, and SQLite forgets it when a statement starts with none
/// running, so an interrupt sent between the job's start and its first step was lost (an
/// endless query then ran on, and the connection never came back).
fn inline_budget_spent() -> bool {
    if let Some(deadline) = INLINE_DEADLINE.get() {
        return Instant::now() >= deadline;
    }
    SHARED.with(|s| {
        s.borrow().as_ref().is_some_and(|shared| {
            shared.running.load(Ordering::SeqCst) != 0
                && shared.current.load(Ordering::SeqCst) <= shared.give_up.load(Ordering::SeqCst)
        })
    })
}

/// How to open SQLite connections, resolved from the URL.
#[derive(Debug, Clone)]
pub(crate) struct SqliteConfig {
    /// True when the database lives in memory (`sqlite://`, `sqlite:///:memory:`,
    /// `?mode=memory`): one connection then serves every caller.
    pub(crate) in_memory: bool,
    /// The file name, or a `file:` URI when `uri` is set.
    target: String,
    uri: bool,
    read_only: bool,
    busy_timeout: Duration,
    journal_mode: Option<String>,
    synchronous: Option<String>,
    foreign_keys: Option<bool>,
    begin: String,
    /// The connection threads of this database still running (shared by its clones).
    pub(crate) threads: Arc<Threads>,
}

/// Counts the connection threads of one database that are still running, so that
/// `disconnect` can wait until their connections have closed: then the file is closed and
/// its WAL checkpointed, and another program (or another copy of SQLite in this process,
/// such as Python's `sqlite3`) may use it.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    running: AtomicUsize,
    ended: tokio::sync::Notify,
}

impl Threads {
    /// Completes when no connection thread is running.
    pub(crate) async fn ended(&self) {
        crate::pool::wait_until(&self.ended, || self.running.load(Ordering::SeqCst) == 0).await;
    }
}

/// Held by a connection thread until its very end, after its connection has closed.
struct ThreadRunning(Arc<Threads>);

impl ThreadRunning {
    fn start(threads: &Arc<Threads>) -> Self {
        threads.running.fetch_add(1, Ordering::SeqCst);
        Self(threads.clone())
    }
}

impl Drop for ThreadRunning {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

impl SqliteConfig {
    pub(crate) fn from_url(url: &DatabaseUrl) -> Result<Self> {
        let database = url.database().into_owned();
        let mode = url
            .option("mode")
            .map(|v| parse_choice("mode", v, &["ro", "rw", "rwc", "memory"]))
            .transpose()?;
        let cache = url
            .option("cache")
            .map(|v| parse_choice("cache", v, &["shared", "private"]))
            .transpose()?;
        let busy_timeout = url
            .option("busy_timeout")
            .map(|v| parse_seconds("busy_timeout", v))
            .transpose()?
            .unwrap_or(Duration::from_secs(5));
        let journal_mode = url
            .option("journal_mode")
            .map(|v| {
                parse_choice(
                    "journal_mode",
                    v,
                    &[
                        "delete", "truncate", "persist", "memory", "wal", "off", "keep",
                    ],
                )
            })
            .transpose()?;
        let synchronous = url
            .option("synchronous")
            .map(|v| parse_choice("synchronous", v, &["off", "normal", "full", "extra"]))
            .transpose()?;
        let foreign_keys = url
            .option("foreign_keys")
            .map(|v| parse_bool("foreign_keys", v))
            .transpose()?;
        let begin = match url
            .option("transaction_mode")
            .map(|v| {
                parse_choice(
                    "transaction_mode",
                    v,
                    &["deferred", "immediate", "exclusive"],
                )
            })
            .transpose()?
            .as_deref()
        {
            Some("deferred") => "BEGIN DEFERRED",
            Some("exclusive") => "BEGIN EXCLUSIVE",
            _ => "BEGIN IMMEDIATE",
        }
        .to_owned();

        let is_uri_name = database.starts_with("file:");
        let in_memory = database.is_empty()
            || database == ":memory:"
            || mode.as_deref() == Some("memory")
            || (is_uri_name && database.contains(":memory:"));
        let uri = is_uri_name || mode.is_some() || cache.is_some();
        let target = if uri {
            let mut t = if is_uri_name {
                database.clone()
            } else if database.is_empty() || database == ":memory:" {
                "file::memory:".to_owned()
            } else {
                format!(
                    "file:{}",
                    database
                        .replace('%', "%25")
                        .replace('?', "%3f")
                        .replace('#', "%23")
                )
            };
            let mut sep = if t.contains('?') { '&' } else { '?' };
            for (key, value) in [("mode", &mode), ("cache", &cache)] {
                if let Some(v) = value {
                    t.push(sep);
                    t.push_str(key);
                    t.push('=');
                    t.push_str(v);
                    sep = '&';
                }
            }
            t
        } else if in_memory {
            ":memory:".to_owned()
        } else {
            database
        };
        Ok(Self {
            in_memory,
            target,
            uri,
            read_only: mode.as_deref() == Some("ro"),
            busy_timeout,
            journal_mode,
            synchronous,
            foreign_keys,
            begin,
            threads: Arc::default(),
        })
    }

    fn open(&self) -> Result<rusqlite::Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.uri {
            flags |= OpenFlags::SQLITE_OPEN_URI;
        }
        let opened =
            rusqlite::Connection::open_with_flags(&self.target, flags).and_then(|mut conn| {
                conn.busy_timeout(self.busy_timeout)?;
                conn.progress_handler(PROGRESS_OPS, Some(inline_budget_spent))?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                // `keep` leaves the file's own mode (which persists in a WAL file, and is
                // `delete` for a new one).
                let journal = match self.journal_mode.as_deref() {
                    Some("keep") => None,
                    Some(j) => Some(j),
                    None if !self.in_memory && !self.read_only => Some("wal"),
                    None => None,
                };
                if let Some(j) = journal {
                    set_journal_mode(&conn, j, self.busy_timeout)?;
                }
                if let Some(s) = &self.synchronous {
                    conn.execute_batch(&format!("PRAGMA synchronous = {s}"))?;
                }
                if let Some(fk) = self.foreign_keys {
                    conn.execute_batch(&format!(
                        "PRAGMA foreign_keys = {}",
                        if fk { "ON" } else { "OFF" }
                    ))?;
                }
                Ok(conn)
            });
        opened.map_err(|e| {
            Error::new(
                ErrorKind::Connect,
                format!("could not open SQLite database '{}': {e}", self.target),
            )
            .with_source(e)
        })
    }
}

/// Sets the journal mode, retrying for up to `patience` while another connection is busy.
///
/// Switching a file to WAL needs its exclusive lock. When several connections open at once
/// (a pool's `min_size` on a new file), SQLite answers all but one with `SQLITE_BUSY` at
/// once, without calling the busy handler (which could deadlock there), so `busy_timeout`
/// does not help. Runs on the connection's own thread, where sleeping is fine.
fn set_journal_mode(
    conn: &rusqlite::Connection,
    mode: &str,
    patience: Duration,
) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |_| Ok(())) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

type Work = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

struct Job {
    /// 0 for work that must never be interrupted (queued rollbacks).
    id: u64,
    /// The job's place in the order of sending, from 1 (see [`Shared::give_up`]).
    seq: u64,
    work: Work,
    /// The work takes itself off [`Shared::queued`] before it replies, so that a caller
    /// woken by the reply finds nothing queued; otherwise the thread does it afterwards.
    counts_itself: bool,
}

/// State the connection thread shares with the async side.
struct Shared {
    /// The id of the job running now, 0 when idle.
    running: AtomicU64,
    /// The `seq` of the job running now (or of the last one).
    current: AtomicU64,
    /// Jobs up to this `seq` stop waiting for locks: their callers gave up (a cancelled
    /// operation, an abandoned transaction). A later job, such as the rollback that follows,
    /// waits as usual.
    give_up: AtomicU64,
    /// How long a statement waits for a lock (the URL's `busy_timeout`).
    busy_timeout: Duration,
    /// Set when [`wait_for_lock`] said no. SQLite then calls no busy handler on this
    /// connection until its count of calls is reset, which happens when a statement starts
    /// running or finishes preparing, not before a prepare: the next job's statement, if it
    /// had to read the schema first, failed at once with "database is locked" instead of
    /// waiting. Installing the handler again resets the count; the thread does it before
    /// the next job.
    refused: AtomicBool,
    /// Whether the connection was outside any transaction when the running job started.
    autocommit: AtomicBool,
    alive: AtomicBool,
    /// Whether the running job's statement only reads: interrupting it never ends the
    /// transaction around it, so it may be interrupted inside one.
    read_only: AtomicBool,
    /// Jobs sent and not yet finished. A read runs inline only when this is 0, so it never
    /// overtakes queued work (such as the rollback of a dropped transaction).
    queued: AtomicUsize,
    interrupt: InterruptHandle,
    /// Why the transaction's `BEGIN`, which is not waited for (see
    /// [`SqliteConnection::begin`]), failed: kept, and reported by everything the transaction
    /// runs, until the transaction ends (`COMMIT` or `ROLLBACK`) or the next `BEGIN`.
    failed_begin: Mutex<Option<FailedBegin>>,
}

/// A `BEGIN` that failed: enough of its error to report it again, as often as asked.
struct FailedBegin {
    kind: ErrorKind,
    message: String,
    /// SQLite's result code and message, which decide the Python exception class.
    db: Option<(String, String)>,
}

impl Shared {
    /// The error for work of a transaction whose `BEGIN` failed, if it did.
    fn failed_begin(&self) -> Option<Error> {
        let failed = self.failed_begin.lock().ok()?;
        failed.as_ref().map(|f| {
            let e = Error::new(
                f.kind,
                format!("the transaction did not start: {}", f.message),
            );
            match &f.db {
                Some((code, message)) => e.with_db(code.clone(), message.clone()),
                None => e,
            }
        })
    }

    fn set_failed_begin(&self, failed: Option<FailedBegin>) {
        if let Ok(mut slot) = self.failed_begin.lock() {
            *slot = failed;
        }
    }
}

/// On a connection thread, the transaction-ending effect of control SQL on a `BEGIN` that
/// failed: `COMMIT` reports it, `ROLLBACK` has nothing to undo, and either ends it; any other
/// statement (a savepoint) reports it and leaves it.
fn end_of_failed_begin(shared: &Shared, sql: &str) -> Option<Result<()>> {
    let error = shared.failed_begin()?;
    match sql {
        "ROLLBACK" => {
            shared.set_failed_begin(None);
            Some(Ok(()))
        }
        "COMMIT" => {
            shared.set_failed_begin(None);
            Some(Err(error))
        }
        _ => Some(Err(error)),
    }
}

thread_local! {
    /// On a connection thread, its [`Shared`]: `prepare` records there whether the statement
    /// it prepared only reads.
    static SHARED: std::cell::RefCell<Option<Arc<Shared>>> = const { std::cell::RefCell::new(None) };
}

/// One SQLite connection on its own thread.
pub(crate) struct SqliteConnection {
    sender: tokio_mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
    next_id: u64,
    /// Jobs sent so far: the `seq` of the last one.
    sent: u64,
    begin: String,
    /// What inline reads need (boxed: the connection types share one enum).
    inline: Box<Inline>,
}

/// The state behind inline reads (see the module docs).
struct Inline {
    /// The connection, locked by its thread for each job and by an inline read. The thread
    /// holds the only strong reference, so the connection always closes there (closing may
    /// checkpoint the WAL, which is disk work).
    conn: std::sync::Weak<Mutex<rusqlite::Connection>>,
    /// Reads that ran out of their inline budget, with how many more runs skip the attempt.
    slow_reads: crate::SqlMap<u16>,
}

/// Marks the connection dead when the thread ends, even by a panic.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

impl SqliteConnection {
    pub(crate) async fn open(config: &SqliteConfig) -> Result<Self> {
        // tokio's channel parks the thread at once when idle (std's spins and yields first,
        // which delays the woken caller when both share a core).
        let (sender, mut receiver) = tokio_mpsc::unbounded_channel::<Job>();
        type Opened = (Arc<Shared>, std::sync::Weak<Mutex<rusqlite::Connection>>);
        let (opened_tx, opened_rx) = oneshot::channel::<Result<Opened>>();
        let thread_config = config.clone();
        // Counted before the thread starts, so that a disconnect right after waits for it.
        let running = ThreadRunning::start(&config.threads);
        std::thread::Builder::new()
            .name("databases-sqlite".to_owned())
            .spawn(move || {
                // Declared first, so dropped last: after the connection has closed.
                let _running = running;
                let conn = match thread_config.open() {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let shared = Arc::new(Shared {
                    running: AtomicU64::new(0),
                    current: AtomicU64::new(0),
                    give_up: AtomicU64::new(0),
                    busy_timeout: thread_config.busy_timeout,
                    refused: AtomicBool::new(false),
                    autocommit: AtomicBool::new(true),
                    alive: AtomicBool::new(true),
                    read_only: AtomicBool::new(false),
                    queued: AtomicUsize::new(0),
                    interrupt: conn.get_interrupt_handle(),
                    failed_begin: Mutex::new(None),
                });
                SHARED.with(|s| *s.borrow_mut() = Some(shared.clone()));
                let mut conn = conn;
                if let Err(e) = conn.busy_handler(Some(wait_for_lock)) {
                    let _ = opened_tx.send(Err(map_error(e)));
                    return;
                }
                let conn = Arc::new(Mutex::new(conn));
                let _alive = AliveGuard(shared.clone());
                if opened_tx
                    .send(Ok((shared.clone(), Arc::downgrade(&conn))))
                    .is_err()
                {
                    return;
                }
                while let Some(job) = receiver.blocking_recv() {
                    {
                        // Poisoned by a panic during an inline read on another thread:
                        // the connection's state is unknown, so the thread ends (a panic in a
                        // job here unwinds the thread itself).
                        let Ok(mut conn) = conn.lock() else { return };
                        if shared.refused.swap(false, Ordering::SeqCst) {
                            // Cannot fail: it only stores the handler.
                            let _ = conn.busy_handler(Some(wait_for_lock));
                        }
                        shared
                            .autocommit
                            .store(conn.is_autocommit(), Ordering::SeqCst);
                        shared.read_only.store(false, Ordering::SeqCst);
                        shared.current.store(job.seq, Ordering::SeqCst);
                        shared.running.store(job.id, Ordering::SeqCst);
                        (job.work)(&mut conn);
                        shared.running.store(0, Ordering::SeqCst);
                    }
                    if !job.counts_itself {
                        shared.queued.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Connect,
                    format!("could not start a SQLite thread: {e}"),
                )
                .with_source(e)
            })?;
        let (shared, conn) = opened_rx.await.map_err(|_| {
            Error::new(
                ErrorKind::Connect,
                "the SQLite thread stopped while opening the database",
            )
        })??;
        Ok(Self {
            sender,
            shared,
            next_id: 0,
            sent: 0,
            begin: config.begin.clone(),
            inline: Box::new(Inline {
                conn,
                slow_reads: crate::SqlMap::default(),
            }),
        })
    }

    pub(crate) fn begin_sql(&self) -> &str {
        &self.begin
    }

    pub(crate) fn is_broken(&self) -> bool {
        !self.shared.alive.load(Ordering::SeqCst)
    }

    fn send(&mut self, work: Work, interruptible: bool, counts_itself: bool) -> Result<u64> {
        let id = if interruptible {
            self.next_id += 1;
            self.next_id
        } else {
            0
        };
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        self.sent += 1;
        let job = Job {
            id,
            seq: self.sent,
            work,
            counts_itself,
        };
        if self.sender.send(job).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::connection_lost(
                "the SQLite connection thread has stopped",
            ));
        }
        Ok(id)
    }

    /// Runs `f` on the connection thread and waits for its result.
    async fn call<R, F>(&mut self, f: F) -> Result<R>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.call_then_drop(move |conn| (f(conn), ())).await
    }

    /// Like [`SqliteConnection::call`], for work that also returns what it no longer needs:
    /// that is dropped on the connection thread after the reply, while the caller goes on.
    async fn call_then_drop<R, G, F>(&mut self, f: F) -> Result<R>
    where
        F: FnOnce(&mut rusqlite::Connection) -> (Result<R>, G) + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        let id = self.send(
            Box::new(move |conn| {
                // The caller went away before the work started: skip it.
                let done = (!tx.is_closed()).then(|| f(conn));
                shared.queued.fetch_sub(1, Ordering::SeqCst);
                if let Some((result, garbage)) = done {
                    let _ = tx.send(result);
                    drop(garbage);
                }
            }),
            true,
            true,
        )?;
        let guard = InterruptOnDrop::new(&self.shared, id, self.sent);
        // Declared after the guard, so dropped before it when the caller goes away: a job
        // that has not started yet then sees its caller gone and is skipped, and one that
        // has is stopped by the guard.
        let rx = rx;
        let result = rx.await;
        guard.disarm();
        result.map_err(|_| {
            // The reply was dropped unsent: the job never finished, so the thread is gone.
            self.shared.alive.store(false, Ordering::SeqCst);
            Error::connection_lost("the SQLite connection thread has stopped")
        })?
    }

    pub(crate) async fn execute(&mut self, query: BoundQuery) -> Result<ExecuteResult> {
        self.call(move |conn| {
            check_transaction(conn, query.in_transaction)?;
            run_statement(conn, &query)
        })
        .await
    }

    /// Binds each row straight from its map on the connection thread: the caller's thread
    /// does nothing per row.
    pub(crate) async fn execute_many(
        &mut self,
        query: BoundQuery,
        rows: Vec<NamedParams>,
    ) -> Result<u64> {
        // The rows are freed after the reply (5,000 rows take a while to free).
        self.call_then_drop(move |conn| (insert_rows(conn, &query, &rows), rows))
            .await
    }

    pub(crate) async fn fetch(
        &mut self,
        query: BoundQuery,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        if let Some(done) = self.fetch_inline(&query, limit) {
            return done;
        }
        self.call(move |conn| {
            check_transaction(conn, query.in_transaction)?;
            let mut stmt = prepare(conn, &query)?;
            read_rows(&mut stmt, &query.sql, limit, map_error)
        })
        .await
    }

    /// Runs a read on the caller's thread when nothing is queued for the connection, within
    /// [`INLINE_BUDGET`] and without waiting on locks. `None`: it must go to the connection
    /// thread (it writes, a job is queued, it ran out of budget or met a lock).
    fn fetch_inline(
        &mut self,
        query: &BoundQuery,
        limit: Option<usize>,
    ) -> Option<Result<Vec<Record>>> {
        if self.shared.queued.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let sql = &*query.sql;
        // A transaction whose BEGIN failed: the connection thread reports it.
        if query.in_transaction && self.shared.failed_begin().is_some() {
            return None;
        }
        if let Some(skips) = self.inline.slow_reads.get_mut(sql) {
            if *skips > 0 {
                *skips -= 1;
                return None;
            }
            self.inline.slow_reads.remove(sql);
        }
        let conn = self.inline.conn.upgrade()?;
        // With nothing queued, the thread holds the lock at most for the last instructions
        // of a job that has already replied.
        let mut conn = conn.lock().ok()?;
        // Our busy handler answers an inline read's first meeting with a lock at once
        // (SQLITE_BUSY). Set again in case the application replaced it (`PRAGMA
        // busy_timeout`), which would let the read wait here.
        conn.busy_handler(Some(wait_for_lock)).ok()?;
        INLINE_DEADLINE.set(Some(Instant::now() + INLINE_BUDGET));
        let result = read_inline(&conn, query, limit);
        INLINE_DEADLINE.set(None);
        match result {
            Ok(rows) => {
                #[cfg(test)]
                if rows.is_some() {
                    tests::INLINE_READS.set(tests::INLINE_READS.get() + 1);
                }
                rows.map(Ok)
            }
            Err(InlineError::OutOfTime) => {
                if self.inline.slow_reads.len() >= STATEMENT_CACHE {
                    self.inline.slow_reads.clear();
                }
                self.inline.slow_reads.insert(sql.into(), SLOW_READ_SKIPS);
                None
            }
            Err(InlineError::Locked) => {
                // Our handler said no (see `Shared::refused`); the read goes to the thread.
                self.shared.refused.store(true, Ordering::SeqCst);
                None
            }
            Err(InlineError::Failed(e)) => Some(Err(e)),
        }
    }

    pub(crate) fn stream(&mut self, query: BoundQuery) -> BoxStream<'static, Result<Record>> {
        let (tx, rx) = tokio_mpsc::channel::<Result<Vec<Record>>>(CHUNK_BUFFER);
        let sent = self.send(
            Box::new(move |conn| {
                if tx.is_closed() {
                    return;
                }
                let produce = || -> Result<()> {
                    check_transaction(conn, query.in_transaction)?;
                    let mut stmt = prepare(conn, &query)?;
                    let columns = columns_of(&stmt, &query.sql);
                    let width = columns.len();
                    let mut rows = stmt.raw_query();
                    let mut chunk = Rows::new(columns);
                    while let Some(row) = rows.next().map_err(map_error)? {
                        chunk.push(|values| read_row(row, width, values))?;
                        if chunk.len() == CHUNK_ROWS {
                            let full = chunk.take();
                            if tx.blocking_send(Ok(full)).is_err() {
                                return Ok(()); // the stream was dropped
                            }
                        }
                    }
                    if !chunk.is_empty() {
                        let _ = tx.blocking_send(Ok(chunk.into_records()));
                    }
                    Ok(())
                };
                if let Err(e) = produce() {
                    let _ = tx.blocking_send(Err(e));
                }
            }),
            true,
            false,
        );
        let seq = self.sent;
        match sent {
            Ok(id) => Box::pin(SqliteRows {
                chunks: super::Chunks::new(rx),
                guard: Some(InterruptOnDrop::new(&self.shared, id, seq)),
            }),
            Err(e) => Box::pin(futures_util::stream::once(async { Err(e) })),
        }
    }

    /// Interrupts the statement running now, if any, and ends the waits for locks of
    /// everything sent so far (a queued `BEGIN` included): the transaction is being abandoned.
    pub(crate) fn interrupt(&self) {
        self.shared.give_up.fetch_max(self.sent, Ordering::SeqCst);
        if self.shared.running.load(Ordering::SeqCst) != 0 {
            self.shared.interrupt.interrupt();
        }
    }

    /// Interrupts the statement running now if it only reads (so the transaction around it
    /// is unaffected).
    pub(crate) fn interrupt_read(&self) {
        if self.shared.running.load(Ordering::SeqCst) != 0
            && self.shared.read_only.load(Ordering::SeqCst)
        {
            self.shared.interrupt.interrupt();
        }
    }

    pub(crate) async fn control(&mut self, sql: String) -> Result<()> {
        let shared = self.shared.clone();
        self.call(move |conn| {
            if conn.is_autocommit()
                && let Some(done) = end_of_failed_begin(&shared, &sql)
            {
                return done;
            }
            conn.execute_batch(&sql).map_err(map_error)
        })
        .await
    }

    /// Starts the outermost transaction without waiting: `sql` (`BEGIN IMMEDIATE`) is queued
    /// ahead of the transaction's first statement, which saves a round trip to the connection
    /// thread. If it fails, every statement of the transaction and its `COMMIT` report why
    /// (a statement that belongs to a transaction never runs on a connection outside one),
    /// and its `ROLLBACK` succeeds with nothing to undo.
    pub(crate) fn begin(&mut self, sql: String) -> Result<()> {
        let shared = self.shared.clone();
        self.send(
            Box::new(move |conn| {
                let failed =
                    conn.execute_batch(&sql)
                        .map_err(map_error)
                        .err()
                        .map(|e| FailedBegin {
                            kind: e.kind(),
                            message: format!("{sql} failed: {e}"),
                            db: e.code().map(|code| {
                                (code.to_owned(), e.db_message().unwrap_or("").to_owned())
                            }),
                        });
                shared.set_failed_begin(failed);
            }),
            false,
            false,
        )
        .map(|_| ())
    }

    /// Queues `sql` to run after everything sent before it; its errors are ignored (a rollback
    /// of a transaction that SQLite already ended fails harmlessly).
    pub(crate) fn queue(&mut self, sql: String) -> bool {
        let shared = self.shared.clone();
        self.send(
            Box::new(move |conn| {
                if conn.is_autocommit() && end_of_failed_begin(&shared, &sql).is_some() {
                    return;
                }
                let _ = conn.execute_batch(&sql);
            }),
            false,
            false,
        )
        .is_ok()
    }
}

/// Interrupts the job `id` if its caller goes away while it runs outside a transaction.
struct InterruptOnDrop {
    shared: Arc<Shared>,
    id: u64,
    seq: u64,
}

impl InterruptOnDrop {
    fn new(shared: &Arc<Shared>, id: u64, seq: u64) -> Self {
        Self {
            shared: shared.clone(),
            id,
            seq,
        }
    }

    fn disarm(mut self) {
        self.id = 0;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        let s = &self.shared;
        if self.id != 0
            && s.running.load(Ordering::SeqCst) == self.id
            && (s.autocommit.load(Ordering::SeqCst) || s.read_only.load(Ordering::SeqCst))
        {
            s.give_up.fetch_max(self.seq, Ordering::SeqCst);
            s.interrupt.interrupt();
        }
    }
}

/// The rows of an `iterate`, arriving in chunks from the connection thread; the statement is
/// interrupted if the stream is dropped before its end.
struct SqliteRows {
    chunks: super::Chunks,
    guard: Option<InterruptOnDrop>,
}

impl futures_core::Stream for SqliteRows {
    type Item = Result<Record>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let next = std::pin::Pin::new(&mut self.chunks).poll_next(cx);
        if let Poll::Ready(None) = next
            && let Some(g) = self.guard.take()
        {
            g.disarm();
        }
        next
    }
}

/// The work of `execute_many`: every row through one prepared statement, inside one
/// savepoint (all rows or none, and one sync to disk).
fn insert_rows(
    conn: &rusqlite::Connection,
    query: &BoundQuery,
    rows: &[NamedParams],
) -> Result<u64> {
    check_transaction(conn, query.in_transaction)?;
    conn.execute_batch("SAVEPOINT databases_execute_many")
        .map_err(map_error)?;
    let run = || -> Result<u64> {
        let mut stmt = conn.prepare_cached(&query.sql).map_err(map_error)?;
        let mut total = 0;
        for (i, row) in rows.iter().enumerate() {
            bind_row(&mut stmt, &query.names, row, i)?;
            total += step_to_end(conn, &mut stmt)?.rows_affected;
        }
        Ok(total)
    };
    match run() {
        Ok(total) => {
            conn.execute_batch("RELEASE databases_execute_many")
                .map_err(map_error)?;
            Ok(total)
        }
        Err(e) => {
            let _ = conn.execute_batch(
                "ROLLBACK TO databases_execute_many; RELEASE databases_execute_many",
            );
            Err(e)
        }
    }
}

/// Refuses to run a statement meant for a transaction that SQLite has already ended (SQLite
/// rolls back by itself after some errors, such as an interrupted write or a full disk), or
/// that never started (its queued `BEGIN` failed, whose error is then the one returned):
/// running it would silently autocommit.
fn check_transaction(conn: &rusqlite::Connection, in_transaction: bool) -> Result<()> {
    if in_transaction && conn.is_autocommit() {
        // On the connection thread: the transaction's BEGIN may have failed.
        let failed = SHARED.with(|s| s.borrow().as_ref().and_then(|s| s.failed_begin()));
        Err(failed.unwrap_or_else(|| {
            Error::transaction(
                "the transaction was already rolled back by SQLite after an earlier error; \
                 roll it back and start a new one",
            )
        }))
    } else {
        Ok(())
    }
}

/// Why an inline read did not finish.
enum InlineError {
    /// Its budget ran out (SQLite interrupted it): it must run on the connection thread.
    OutOfTime,
    /// It met a lock, which it must wait for on the connection thread.
    Locked,
    /// It failed, and would fail the same way on the connection thread.
    Failed(Error),
}

impl From<Error> for InlineError {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

impl From<rusqlite::Error> for InlineError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::OperationInterrupted) => Self::OutOfTime,
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Self::Locked
            }
            _ => Self::Failed(map_error(e)),
        }
    }
}

/// The inline part of [`SqliteConnection::fetch_inline`]: `Ok(None)` when the statement
/// writes.
fn read_inline(
    conn: &rusqlite::Connection,
    query: &BoundQuery,
    limit: Option<usize>,
) -> std::result::Result<Option<Vec<Record>>, InlineError> {
    check_transaction(conn, query.in_transaction)?;
    let mut stmt = conn.prepare_cached(&query.sql)?;
    // SQLite also calls BEGIN, COMMIT, SAVEPOINT, ATTACH and setting pragmas read-only (they
    // leave the file's content alone), but a COMMIT syncs to disk and ATTACH opens a file.
    // Those return no columns; a query does.
    if !stmt.readonly() || stmt.column_count() == 0 {
        return Ok(None);
    }
    bind(&mut stmt, query)?;
    read_rows(&mut stmt, &query.sql, limit, InlineError::from).map(Some)
}

/// Reads a bound statement's records, at most `limit`. SQLite's errors while stepping go
/// through `step_error`: an inline read tells an interruption from a failure there.
fn read_rows<E: From<Error>>(
    stmt: &mut rusqlite::Statement<'_>,
    sql: &str,
    limit: Option<usize>,
    step_error: impl Fn(rusqlite::Error) -> E,
) -> std::result::Result<Vec<Record>, E> {
    let columns = columns_of(stmt, sql);
    let width = columns.len();
    let mut rows = stmt.raw_query();
    let mut out = Rows::new(columns);
    while let Some(row) = rows.next().map_err(&step_error)? {
        out.push(|values| read_row(row, width, values))?;
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out.into_records())
}

fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    query: &BoundQuery,
) -> Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(&query.sql).map_err(map_error)?;
    bind(&mut stmt, query)?;
    let read_only = stmt.readonly();
    SHARED.with(|s| {
        if let Some(shared) = s.borrow().as_ref() {
            shared.read_only.store(read_only, Ordering::SeqCst);
        }
    });
    Ok(stmt)
}

/// Binds a query's values to its statement.
fn bind(stmt: &mut rusqlite::Statement<'_>, query: &BoundQuery) -> Result<()> {
    check_count(stmt, query.values.len())?;
    for (i, value) in query.values.iter().enumerate() {
        let name = query.names.get(i).map_or("?", String::as_str);
        bind_value(stmt, i, name, value, None)?;
    }
    Ok(())
}

/// Binds row `row` of an `execute_many`, straight from its map.
fn bind_row(
    stmt: &mut rusqlite::Statement<'_>,
    names: &[String],
    params: &NamedParams,
    row: usize,
) -> Result<()> {
    check_count(stmt, names.len())?;
    for (i, name) in names.iter().enumerate() {
        let value = params.value_for(name, Some(row))?;
        bind_value(stmt, i, name, value, Some(row))?;
    }
    Ok(())
}

/// Refuses a number of values that differs from the statement's placeholders (SQL that
/// carries its own `?` or `?NNN` placeholders besides the `:name` ones).
fn check_count(stmt: &rusqlite::Statement<'_>, given: usize) -> Result<()> {
    let expected = stmt.parameter_count();
    if expected == given {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidParameter,
        format!(
            "the statement has {expected} parameter placeholder(s) but {given} value(s) were \
             bound; write parameters as :name"
        ),
    ))
}

/// Binds one value to placeholder `i` (from 0), naming the parameter (and the row of an
/// `execute_many`) when SQLite cannot hold it.
fn bind_value(
    stmt: &mut rusqlite::Statement<'_>,
    i: usize,
    name: &str,
    value: &Value,
    row: Option<usize>,
) -> Result<()> {
    let value = to_sqlite(value).map_err(|why| {
        Error::new(
            ErrorKind::InvalidParameter,
            format!("parameter ':{name}'{}: {why}", crate::params::in_row(row)),
        )
    })?;
    stmt.raw_bind_parameter(i + 1, value).map_err(map_error)
}

/// The column names of a statement, shared by its results (see `shared_columns`).
fn columns_of(stmt: &rusqlite::Statement<'_>, sql: &str) -> Arc<Columns> {
    thread_local! {
        static CACHE: std::cell::RefCell<crate::SqlMap<Arc<Columns>>> =
            std::cell::RefCell::default();
    }
    // Every index below the count has a name.
    let names = (0..stmt.column_count()).map(|i| stmt.column_name(i).unwrap_or_default());
    CACHE.with_borrow_mut(|cache| super::shared_columns(cache, sql, names))
}

/// Runs a statement to its end; the first column of its first row (for `RETURNING`) is kept.
fn run_statement(conn: &rusqlite::Connection, query: &BoundQuery) -> Result<ExecuteResult> {
    let mut stmt = prepare(conn, query)?;
    let mut result = step_to_end(conn, &mut stmt)?;
    if !inserts(&query.sql) {
        // `last_insert_rowid` is per connection: after an UPDATE it still names an earlier
        // INSERT's row, which is not this statement's.
        result.last_insert_id = None;
    }
    Ok(result)
}

/// True when the statement's first keyword is INSERT or REPLACE (comments and blanks skipped).
fn inserts(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
        } else {
            break;
        }
    }
    let word = &rest[..rest.bytes().take_while(u8::is_ascii_alphabetic).count()];
    word.eq_ignore_ascii_case("INSERT") || word.eq_ignore_ascii_case("REPLACE")
}

/// Steps a bound statement to its end; the first column of its first row (for `RETURNING`)
/// is kept.
fn step_to_end(
    conn: &rusqlite::Connection,
    stmt: &mut rusqlite::Statement<'_>,
) -> Result<ExecuteResult> {
    let readonly = stmt.readonly();
    let has_columns = stmt.column_count() > 0;
    let mut rows = stmt.raw_query();
    let mut returned = Value::Null;
    let mut first = true;
    while let Some(row) = rows.next().map_err(map_error)? {
        if first && has_columns {
            returned = read_value(row, 0)?;
        }
        first = false;
    }
    drop(rows);
    Ok(ExecuteResult {
        rows_affected: if readonly { 0 } else { conn.changes() },
        last_insert_id: Some(conn.last_insert_rowid()),
        returned,
    })
}

/// Appends the `width` values of `row` to `values`.
fn read_row(row: &rusqlite::Row<'_>, width: usize, values: &mut Vec<Value>) -> Result<()> {
    let start = values.len();
    // Filled with NULLs first, then overwritten in place (see `set_value`).
    values.extend(std::iter::repeat_with(|| Value::Null).take(width));
    for (i, slot) in values[start..].iter_mut().enumerate() {
        // The large error is built only on failure.
        match row.get_ref(i) {
            Ok(v) if set_value(v, slot) => {}
            Ok(_) => return Err(not_utf8(row, i)),
            Err(e) => return Err(map_error(e)),
        }
    }
    Ok(())
}

fn read_value(row: &rusqlite::Row<'_>, i: usize) -> Result<Value> {
    let mut value = Value::Null;
    if !set_value(row.get_ref(i).map_err(map_error)?, &mut value) {
        return Err(not_utf8(row, i));
    }
    Ok(value)
}

/// Writes the value of a column into `slot`; `false` (and `slot` unchanged) for text that
/// is not UTF-8.
///
/// Each arm writes its value into the slot: a value returned or pushed instead went through
/// a stack temporary, and copying it from there stalled on the narrower stores that had
/// just built it (`perf annotate` put most of the row loop's time on that load).
#[inline]
fn set_value(v: ValueRef<'_>, slot: &mut Value) -> bool {
    match v {
        ValueRef::Null => *slot = Value::Null,
        ValueRef::Integer(v) => *slot = Value::Int(v),
        ValueRef::Real(v) => *slot = Value::Float(v),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => *slot = Value::Text(text.to_owned()),
            Err(_) => return false,
        },
        ValueRef::Blob(bytes) => *slot = Value::Bytes(bytes.to_vec()),
    }
    true
}

#[cold]
fn not_utf8(row: &rusqlite::Row<'_>, i: usize) -> Error {
    let why = match row.get_ref(i) {
        Ok(ValueRef::Text(bytes)) => std::str::from_utf8(bytes)
            .err()
            .map_or_else(String::new, |e| format!(" ({e})")),
        _ => String::new(),
    };
    Error::decode(format!(
        "column '{}' holds text that is not valid UTF-8{why}; read it as bytes with CAST(... AS BLOB)",
        row.as_ref().column_name(i).unwrap_or("?")
    ))
}

/// The form SQLite stores a value in: text, blob, integer and real values are bound where
/// they are, without a copy on our side.
fn to_sqlite(v: &Value) -> std::result::Result<ToSqlOutput<'_>, String> {
    let owned = |v: SqlValue| Ok(ToSqlOutput::Owned(v));
    let text = |s: String| Ok(ToSqlOutput::Owned(SqlValue::Text(s)));
    match v {
        Value::Null => Ok(ToSqlOutput::Borrowed(ValueRef::Null)),
        Value::Bool(b) => owned(SqlValue::Integer(i64::from(*b))),
        Value::Int(i) => owned(SqlValue::Integer(*i)),
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) => owned(SqlValue::Integer(i)),
            Err(_) => Err(format!(
                "{u} is larger than SQLite's largest integer ({})",
                i64::MAX
            )),
        },
        Value::Float(f) if f.is_nan() => {
            Err("SQLite cannot store NaN (it would become NULL)".to_owned())
        }
        Value::Float(f) => owned(SqlValue::Real(*f)),
        Value::Decimal(d) => text(d.to_string()),
        Value::Text(s) => Ok(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))),
        Value::Bytes(b) => Ok(ToSqlOutput::Borrowed(ValueRef::Blob(b))),
        // Display gives the same text as the strftime patterns "%Y-%m-%d", "%H:%M:%S%.f" and
        // "%Y-%m-%d %H:%M:%S%.f", without parsing a pattern for every value.
        Value::Date(d) => text(d.to_string()),
        Value::Time(t) => text(t.to_string()),
        Value::TimeTz(t, offset) => text(format!("{t}{offset}")),
        Value::DateTime(dt) => text(dt.to_string()),
        Value::DateTimeTz(dt) => text(format!("{} {}{}", dt.date_naive(), dt.time(), dt.offset())),
        Value::Uuid(u) => text(u.hyphenated().to_string()),
        Value::Json(j) => text(j.to_string()),
        Value::Array(_) => Err("SQLite has no array type; pass the array as JSON".to_owned()),
        Value::Interval { .. } => {
            Err("SQLite has no interval type; pass a number of seconds or text".to_owned())
        }
    }
}

/// Maps a rusqlite error onto the portable kinds. SQLite reports syntax errors with the generic
/// `SQLITE_ERROR` code, so those are recognised by the engine's message.
fn map_error(e: rusqlite::Error) -> Error {
    use rusqlite::ffi;
    let (code, extended, msg) = match &e {
        rusqlite::Error::SqliteFailure(err, msg) => (
            err.code,
            err.extended_code,
            msg.clone().unwrap_or_else(|| err.to_string()),
        ),
        rusqlite::Error::SqlInputError { error, msg, .. } => {
            (error.code, error.extended_code, msg.clone())
        }
        _ => {
            let message = e.to_string();
            return Error::new(ErrorKind::Database, message).with_source(e);
        }
    };
    let kind = match extended {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            ErrorKind::UniqueViolation
        }
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
        ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
        ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
        _ if code == rusqlite::ErrorCode::Unknown
            && (msg.contains("syntax error")
                || msg.starts_with("incomplete input")
                || msg.starts_with("unrecognized token")) =>
        {
            ErrorKind::Syntax
        }
        _ => ErrorKind::Database,
    };
    Error::new(kind, format!("{kind}: {msg}"))
        .with_db(extended.to_string(), msg)
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Fuzzing: any bytes stored as text or as a blob, and any number, read back as a
        /// value or as an error naming the column; never a panic.
        #[test]
        fn reading_any_stored_value_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            int in proptest::prelude::any::<i64>(),
            real in proptest::prelude::any::<f64>(),
        ) {
            let db = rusqlite::Connection::open_in_memory().unwrap();
            let mut stmt = db
                .prepare("SELECT CAST(?1 AS TEXT) AS fuzzed, ?1, ?2, ?3, CAST(?2 AS TEXT)")
                .unwrap();
            let mut rows = stmt
                .query(rusqlite::params![bytes, int, real])
                .unwrap();
            let row = rows.next().unwrap().unwrap();
            match read_value(row, 0) {
                Ok(Value::Text(t)) => proptest::prop_assert_eq!(t.as_bytes(), &bytes[..]),
                Ok(other) => proptest::prop_assert!(false, "{:?}", other),
                Err(e) => proptest::prop_assert!(e.to_string().contains("'fuzzed'"), "{}", e),
            }
            let all = (0..5)
                .map(|i| if i == 0 { Value::Null } else { read_value(row, i).unwrap() })
                .collect::<Vec<_>>();
            proptest::prop_assert_eq!(&all[1], &Value::Bytes(bytes.clone()));
            proptest::prop_assert_eq!(&all[2], &Value::Int(int));
            if real.is_nan() {
                // SQLite stores NaN as NULL.
                proptest::prop_assert_eq!(&all[3], &Value::Null);
            } else {
                proptest::prop_assert_eq!(&all[3], &Value::Float(real));
            }
            proptest::prop_assert_eq!(&all[4], &Value::Text(int.to_string()));
        }
    }

    fn config(url: &str) -> SqliteConfig {
        SqliteConfig::from_url(&DatabaseUrl::parse(url).unwrap()).unwrap()
    }

    thread_local! {
        /// Reads this thread ran inline (tests only).
        pub(super) static INLINE_READS: Cell<u64> = const { Cell::new(0) };
    }

    fn query(sql: &str, in_transaction: bool) -> BoundQuery {
        BoundQuery {
            sql: sql.into(),
            values: Vec::new(),
            names: Vec::new().into(),
            in_transaction,
        }
    }

    /// Runs `sql` through `fetch` outside a transaction and returns every record.
    async fn read(conn: &mut SqliteConnection, sql: &str) -> Vec<Record> {
        conn.fetch(query(sql, false), None).await.unwrap()
    }

    #[tokio::test]
    async fn short_reads_run_inline_and_the_rest_on_the_thread() {
        let mut conn = SqliteConnection::open(&config("sqlite://")).await.unwrap();
        let start = INLINE_READS.get();
        let rows = conn
            .fetch(query("SELECT 1, 'a'", false), Some(1))
            .await
            .unwrap();
        assert_eq!(rows[0][1], Value::Text("a".into()));
        assert_eq!(INLINE_READS.get(), start + 1, "a one-row read runs inline");

        // Far longer than the budget: given up inline, finished on the connection thread.
        let rows = conn
            .fetch(
                query(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000) \
                     SELECT count(*), sum(x) FROM c",
                    false,
                ),
                None,
            )
            .await
            .unwrap();
        assert_eq!(rows[0][0], Value::Int(1_000_000));
        assert_eq!(rows[0][1], Value::Int(500_000_500_000));
        assert_eq!(
            INLINE_READS.get(),
            start + 1,
            "the long read ran on the thread"
        );
        assert_eq!(
            conn.inline.slow_reads.values().copied().collect::<Vec<_>>(),
            [SLOW_READ_SKIPS],
            "the long read is remembered, so its next runs skip the inline attempt"
        );

        // A statement that writes never runs inline, even through fetch.
        conn.control("CREATE TABLE t (x INTEGER)".to_owned())
            .await
            .unwrap();
        let rows = read(&mut conn, "INSERT INTO t VALUES (7) RETURNING x").await;
        assert_eq!(rows[0][0], Value::Int(7));
        assert_eq!(INLINE_READS.get(), start + 1);
        // Nor does transaction control, which SQLite calls read-only too (COMMIT syncs to
        // disk).
        for sql in ["BEGIN", "COMMIT", "PRAGMA foreign_keys = ON"] {
            assert!(read(&mut conn, sql).await.is_empty());
        }
        assert_eq!(INLINE_READS.get(), start + 1);
        let rows = read(&mut conn, "SELECT x FROM t").await;
        assert_eq!(rows[0][0], Value::Int(7));
        assert_eq!(INLINE_READS.get(), start + 2);
    }

    #[tokio::test]
    async fn an_inline_read_never_overtakes_a_queued_rollback() {
        let mut conn = SqliteConnection::open(&config("sqlite://")).await.unwrap();
        conn.control("CREATE TABLE t (x INTEGER)".to_owned())
            .await
            .unwrap();
        for _ in 0..50 {
            conn.control("BEGIN".to_owned()).await.unwrap();
            conn.execute(query("INSERT INTO t VALUES (1)", true))
                .await
                .unwrap();
            // What a dropped transaction does: the rollback is queued, not awaited.
            assert!(conn.queue("ROLLBACK".to_owned()));
            let rows = read(&mut conn, "SELECT count(*) FROM t").await;
            assert_eq!(
                rows[0][0],
                Value::Int(0),
                "the read saw the rolled-back row"
            );
        }
    }

    /// Holds an exclusive lock on `path` from another connection for `hold`; returns when
    /// the lock is taken.
    fn lock_for(path: &std::path::Path, hold: Duration) -> std::thread::JoinHandle<()> {
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let path = path.to_owned();
        let locker = std::thread::spawn(move || {
            let other = rusqlite::Connection::open(path).unwrap();
            other.execute_batch("BEGIN EXCLUSIVE").unwrap();
            taken_tx.send(()).unwrap();
            std::thread::sleep(hold);
            other.execute_batch("COMMIT").unwrap();
        });
        taken_rx.recv().unwrap();
        locker
    }

    #[tokio::test]
    async fn a_read_that_meets_a_lock_waits_on_the_thread_and_the_busy_timeout_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        // The rollback journal, where a writer's exclusive lock blocks readers too.
        let url = format!("sqlite:///{}?journal_mode=delete", path.display());
        let mut conn = SqliteConnection::open(&config(&url)).await.unwrap();
        conn.control("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)".to_owned())
            .await
            .unwrap();
        let start = INLINE_READS.get();
        let count = query("SELECT count(*) FROM t", false);
        assert_eq!(
            conn.fetch(count.clone(), None).await.unwrap()[0][0],
            Value::Int(1)
        );
        assert_eq!(INLINE_READS.get(), start + 1);

        let hold = Duration::from_millis(300);
        let locker = lock_for(&path, hold);
        let began = Instant::now();
        let rows = conn.fetch(count.clone(), None).await.unwrap();
        assert_eq!(rows[0][0], Value::Int(1));
        assert!(
            began.elapsed() >= hold - Duration::from_millis(50),
            "the read waited for the lock"
        );
        assert_eq!(
            INLINE_READS.get(),
            start + 1,
            "the locked read ran on the thread"
        );
        locker.join().unwrap();

        // An inline read leaves the busy timeout as it found it: a write still waits.
        assert_eq!(
            conn.fetch(count.clone(), None).await.unwrap()[0][0],
            Value::Int(1)
        );
        assert_eq!(INLINE_READS.get(), start + 2);
        let locker = lock_for(&path, hold);
        conn.execute(query("INSERT INTO t VALUES (2)", false))
            .await
            .unwrap();
        locker.join().unwrap();
        assert_eq!(conn.fetch(count, None).await.unwrap()[0][0], Value::Int(2));
    }

    #[tokio::test]
    async fn a_lock_wait_given_up_leaves_the_next_statement_its_wait() {
        // After our busy handler says no, SQLite calls no busy handler on the connection
        // until a statement starts running or finishes preparing. A next statement that
        // must read the schema while preparing then failed at once with "database is
        // locked", although the lock went away well within its busy timeout.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refused.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let url = format!(
            "sqlite:///{}?journal_mode=keep&busy_timeout=0.2",
            path.display()
        );
        // A new connection that leaves the journal mode alone (no pragma when it opens): its
        // first statement that names a table reads the schema while it is prepared.
        let mut conn = SqliteConnection::open(&config(&url)).await.unwrap();

        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let other = path.clone();
        let locker = std::thread::spawn(move || {
            let other = rusqlite::Connection::open(other).unwrap();
            other.execute_batch("BEGIN EXCLUSIVE").unwrap();
            taken_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            other.execute_batch("COMMIT").unwrap();
        });
        taken_rx.recv().unwrap();
        // Prepared without the schema; waits out the busy timeout, then the handler says no.
        let e = conn
            .control("BEGIN IMMEDIATE".to_owned())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("5"), "{e}");

        // The lock goes 100 ms into the next statement's wait of up to 200 ms.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            release_tx.send(()).unwrap();
        });
        let began = Instant::now();
        conn.execute(query("INSERT INTO t VALUES (1)", false))
            .await
            .unwrap();
        assert!(began.elapsed() >= Duration::from_millis(50), "it waited");
        releaser.join().unwrap();
        locker.join().unwrap();
        assert_eq!(
            read(&mut conn, "SELECT count(*) FROM t").await[0][0],
            Value::Int(1)
        );
    }

    #[tokio::test]
    async fn a_begin_that_fails_fails_the_whole_transaction_and_nothing_runs_outside_it() {
        use crate::{Database, params};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("begin.db");
        let url = format!("sqlite:///{}?busy_timeout=0.05", path.display());
        let db = Database::new(&url).unwrap();
        db.connect().await.unwrap();
        db.execute("CREATE TABLE t (x INTEGER)", ()).await.unwrap();
        let count = async || -> i64 {
            let n = db.fetch_val("SELECT count(*) FROM t", (), 0).await.unwrap();
            n.unwrap()
        };
        let insert = "INSERT INTO t (x) VALUES (:x)";

        // Another connection holds the write lock for longer than the busy timeout, so
        // BEGIN IMMEDIATE fails; the transaction learns it at its first statement.
        let locker = lock_for(&path, Duration::from_millis(600));
        let mut tx = db.transaction().await.unwrap();
        for x in 0..2 {
            let e = tx.execute(insert, params! { "x" => x }).await.unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("the transaction did not start: BEGIN IMMEDIATE failed: "),
                "{e}"
            );
            // SQLite's code stays (SQLITE_BUSY, 5): it picks the Python exception class.
            assert_eq!(e.code(), Some("5"), "{e}");
        }
        let e = tx.fetch_all("SELECT x FROM t", ()).await.unwrap_err();
        assert!(e.to_string().contains("did not start"), "{e}");
        // A nested transaction would start a transaction of its own with SAVEPOINT.
        let e = tx.transaction().await.unwrap_err();
        assert!(e.to_string().contains("did not start"), "{e}");
        let e = tx.commit().await.unwrap_err();
        assert!(e.to_string().contains("did not start"), "{e}");

        // Rolled back: nothing to undo, and the connection goes on.
        let tx = db.transaction().await.unwrap();
        tx.rollback().await.unwrap();
        // Dropped: the same.
        let mut tx = db.transaction().await.unwrap();
        assert!(tx.execute(insert, params! { "x" => 9 }).await.is_err());
        drop(tx);
        locker.join().unwrap();
        assert_eq!(count().await, 0, "no statement ran outside its transaction");

        // With the lock gone, transactions work again on the same connection.
        let mut tx = db.transaction().await.unwrap();
        tx.execute(insert, params! { "x" => 1 }).await.unwrap();
        tx.commit().await.unwrap();
        let tx = db.transaction().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count().await, 1);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_stops_waiting_for_a_lock() {
        use crate::{Database, params};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wait.db");
        // A busy timeout far longer than the test: only giving up ends the waits early.
        let url = format!("sqlite:///{}?busy_timeout=30", path.display());
        let db = Database::new(&url).unwrap();
        db.connect().await.unwrap();
        let mut conn = db.connection().await.unwrap();
        conn.execute("CREATE TABLE t (x INTEGER)", ())
            .await
            .unwrap();
        let insert = "INSERT INTO t (x) VALUES (:x)";
        let hold = Duration::from_secs(3);
        // The connection answers at once, though the other connection still holds the lock.
        async fn answers_at_once(conn: &mut crate::Connection) {
            let began = Instant::now();
            let one: Option<i64> = conn.fetch_val("SELECT 1", (), 0).await.unwrap();
            assert_eq!(one, Some(1));
            let waited = began.elapsed();
            assert!(waited < Duration::from_secs(1), "waited {waited:?}");
        }

        // A write outside a transaction, cancelled while it waits for another connection's
        // lock: the connection is free again at once, not when the lock goes.
        let locker = lock_for(&path, hold);
        let wait = tokio::time::timeout(
            Duration::from_millis(100),
            conn.execute(insert, params! { "x" => 1 }),
        );
        assert!(wait.await.is_err(), "the write waited for the lock");
        answers_at_once(&mut conn).await;
        locker.join().unwrap();

        // An abandoned transaction whose queued BEGIN waits for the lock: the same.
        let locker = lock_for(&path, hold);
        {
            let mut tx = conn.transaction().await.unwrap();
            let wait = tokio::time::timeout(
                Duration::from_millis(100),
                tx.execute(insert, params! { "x" => 2 }),
            );
            assert!(wait.await.is_err(), "the transaction waited for the lock");
        }
        answers_at_once(&mut conn).await;
        locker.join().unwrap();

        // Neither write happened, and the connection works as before, waits included.
        let count = "SELECT count(*) FROM t";
        let n: Option<i64> = conn.fetch_val(count, (), 0).await.unwrap();
        assert_eq!(n, Some(0));
        let locker = lock_for(&path, Duration::from_millis(300));
        let mut tx = conn.transaction().await.unwrap();
        tx.execute(insert, params! { "x" => 3 }).await.unwrap();
        tx.commit().await.unwrap();
        locker.join().unwrap();
        let n: Option<i64> = conn.fetch_val(count, (), 0).await.unwrap();
        assert_eq!(n, Some(1));
    }

    #[test]
    fn inserts_finds_the_first_keyword() {
        assert!(inserts("INSERT INTO t VALUES (1)"));
        assert!(inserts("  -- note\n /* x */ replace into t values (1)"));
        assert!(!inserts("UPDATE t SET a = 1"));
        assert!(!inserts("/* insert */ DELETE FROM t"));
        assert!(!inserts(""));
        assert!(!inserts("insertion_log_trim()"));
        assert!(inserts("Insert/**/INTO t VALUES (1)"));
    }

    /// The files under `dir` that this process has open.
    #[cfg(target_os = "linux")]
    fn open_files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn disconnect_returns_once_the_file_is_closed() {
        use crate::{Database, params};
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let path = dir_path.join("closed.db");
        let db = Database::new(format!("sqlite:///{}", path.display())).unwrap();
        for round in 0..20 {
            db.connect().await.unwrap();
            db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)", ())
                .await
                .unwrap();
            // Several pooled connections, each with the file and its WAL open.
            let writes =
                (0..4).map(|x| db.execute("INSERT INTO t VALUES (:x)", params! { "x" => x }));
            futures_util::future::try_join_all(writes).await.unwrap();
            assert!(!open_files_under(&dir_path).is_empty());
            db.disconnect().await.unwrap();
            let open = open_files_under(&dir_path);
            assert!(open.is_empty(), "round {round}: still open: {open:?}");
        }
        let other = rusqlite::Connection::open(&path).unwrap();
        let n: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 80);
    }

    #[tokio::test]
    async fn a_caller_that_gave_up_before_the_first_step_still_stops_its_statement() {
        let mut conn = SqliteConnection::open(&config("sqlite://")).await.unwrap();
        // The caller gives up after its job started and before its statement ran: an
        // interrupt sent then is lost (SQLite clears it when a statement starts with none
        // running), so only the progress handler can stop the endless query.
        let shared = conn.shared.clone();
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                       SELECT count(*) FROM c";
        let run = conn.call(move |c| {
            let seq = shared.current.load(Ordering::SeqCst);
            shared.give_up.fetch_max(seq, Ordering::SeqCst);
            shared.interrupt.interrupt();
            c.query_row(endless, [], |r| r.get::<_, i64>(0))
                .map_err(map_error)
        });
        let e = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the statement ran on after its caller gave up")
            .unwrap_err();
        assert!(e.to_string().contains("interrupt"), "{e}");
        // The connection serves the next caller.
        conn.control("SELECT 1".to_owned()).await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_connection_thread_is_connection_lost_and_broken() {
        let mut conn = SqliteConnection::open(&config("sqlite://")).await.unwrap();
        assert!(!conn.is_broken());
        // Simulate the thread dying (a bug in a job): the panic ends the thread.
        let _ = conn.call(|_| -> Result<()> { panic!("worker died") }).await;
        let e = conn.control("SELECT 1".to_owned()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionLost);
        assert_eq!(e.to_string(), "the SQLite connection thread has stopped");
        assert!(conn.is_broken());
        assert!(!conn.queue("ROLLBACK".to_owned()));
    }

    #[tokio::test]
    async fn a_statement_never_autocommits_when_its_transaction_is_gone() {
        let mut conn = SqliteConnection::open(&config("sqlite://")).await.unwrap();
        conn.control("CREATE TABLE t (x INTEGER)".to_owned())
            .await
            .unwrap();
        let query = BoundQuery {
            sql: "INSERT INTO t VALUES (1)".into(),
            values: Vec::new(),
            names: Vec::new().into(),
            in_transaction: true,
        };
        // The caller believes a transaction is open, but SQLite has none.
        let e = conn.execute(query).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transaction);
        let rows = conn
            .fetch(
                BoundQuery {
                    sql: "SELECT COUNT(*) FROM t".into(),
                    values: Vec::new(),
                    names: Vec::new().into(),
                    in_transaction: false,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(rows[0][0], Value::Int(0));
    }

    #[test]
    fn targets_from_urls() {
        let c = config("sqlite://");
        assert!(c.in_memory);
        assert_eq!(c.target, ":memory:");
        let c = config("sqlite:///:memory:");
        assert!(c.in_memory);
        let c = config("sqlite:///app.db");
        assert!(!c.in_memory);
        assert_eq!(c.target, "app.db");
        assert_eq!(c.begin, "BEGIN IMMEDIATE");
        let c = config("sqlite:////tmp/a.db?mode=ro&transaction_mode=deferred");
        assert_eq!(c.target, "file:/tmp/a.db?mode=ro");
        assert!(c.uri && c.read_only);
        assert_eq!(c.begin, "BEGIN DEFERRED");
        let c = config("sqlite:///file::memory:?cache=shared");
        assert!(c.in_memory);
        assert_eq!(c.target, "file::memory:?cache=shared");
        let c = config("sqlite:///x.db?busy_timeout=0.25");
        assert_eq!(c.busy_timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_options_are_named() {
        let e = SqliteConfig::from_url(
            &DatabaseUrl::parse("sqlite:///x.db?journal_mode=fast").unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value 'fast' for option 'journal_mode': expected one of delete, truncate, persist, memory, wal, off, keep"
        );
    }

    #[test]
    fn values_sqlite_cannot_hold_are_named() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT ?, ?").unwrap();
        let query = BoundQuery {
            sql: "SELECT ?, ?".into(),
            values: vec![Value::Int(1), Value::UInt(u64::MAX)],
            names: vec!["a".to_owned(), "big".to_owned()].into(),
            in_transaction: false,
        };
        let e = bind(&mut stmt, &query).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameter);
        assert!(
            e.to_string()
                .starts_with("parameter ':big': 18446744073709551615 is larger"),
            "{e}"
        );
        let names = ["x".to_owned(), "y".to_owned()];
        let row = crate::params! { "x" => 1, "y" => f64::NAN };
        let e = bind_row(&mut stmt, &names, &row, 3).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("parameter ':y' in row 3: SQLite cannot store NaN"),
            "{e}"
        );
        let row = crate::params! { "x" => Value::array([1]), "y" => 2 };
        let e = bind_row(&mut stmt, &names, &row, 0).unwrap_err();
        assert!(e.to_string().contains("no array type"), "{e}");
        let row = crate::params! { "x" => 1 };
        let e = bind_row(&mut stmt, &names, &row, 7).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter);
        assert_eq!(
            e.to_string(),
            "no value for query parameter ':y' in row 7 (values given: x)"
        );
        let e = bind_row(&mut stmt, &names[..1], &row, 0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the statement has 2 parameter placeholder(s) but 1 value(s)"),
            "{e}"
        );
    }

    #[test]
    fn text_and_bytes_are_bound_where_they_are() {
        let text = Value::Text("héllo".into());
        let bytes = Value::Bytes(vec![0, 1, 2]);
        assert_eq!(
            to_sqlite(&text),
            Ok(ToSqlOutput::Borrowed(ValueRef::Text("héllo".as_bytes())))
        );
        assert_eq!(
            to_sqlite(&bytes),
            Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&[0, 1, 2])))
        );
        assert_eq!(
            to_sqlite(&Value::Null),
            Ok(ToSqlOutput::Borrowed(ValueRef::Null))
        );
    }

    #[test]
    fn storage_forms_of_typed_values() {
        use chrono::NaiveDate;
        let d = NaiveDate::from_ymd_opt(2024, 1, 31).unwrap();
        let dt = d.and_hms_micro_opt(10, 0, 0, 5).unwrap();
        assert_eq!(
            to_sqlite(&Value::Date(d)),
            Ok(ToSqlOutput::Owned(SqlValue::Text("2024-01-31".into())))
        );
        assert_eq!(
            to_sqlite(&Value::DateTime(dt)),
            Ok(ToSqlOutput::Owned(SqlValue::Text(
                "2024-01-31 10:00:00.000005".into()
            )))
        );
        assert_eq!(
            to_sqlite(&Value::Bool(true)),
            Ok(ToSqlOutput::Owned(SqlValue::Integer(1)))
        );
        assert_eq!(
            to_sqlite(&Value::Json(serde_json::json!({"a": 1}))),
            Ok(ToSqlOutput::Owned(SqlValue::Text(r#"{"a":1}"#.into())))
        );
    }
}
