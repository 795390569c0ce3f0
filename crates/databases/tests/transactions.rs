//! Transactions, savepoints and force_rollback, on every backend.

mod common;

use databases::{DatabaseOptions, Error, ErrorKind, params};

const INSERT: &str = "INSERT INTO {t} (x) VALUES (:x)";

fn insert(table: &str) -> String {
    INSERT.replace("{t}", table)
}

#[tokio::test]
async fn commit_keeps_and_rollback_discards() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_basic", "x INTEGER").await;
        let mut tx = t.transaction().await.unwrap();
        assert_eq!(tx.depth(), 1, "{l}");
        assert!(tx.in_transaction(), "{l}");
        tx.execute(&insert("tx_basic"), params! { "x" => 1 })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(t.count("tx_basic").await, 1, "{l}");

        let mut tx = t.transaction().await.unwrap();
        tx.execute(&insert("tx_basic"), params! { "x" => 2 })
            .await
            .unwrap();
        // Inside the transaction the row is visible ...
        assert_eq!(
            tx.fetch_val::<i64>("SELECT COUNT(*) FROM tx_basic", (), 0)
                .await
                .unwrap(),
            Some(2),
            "{l}"
        );
        tx.rollback().await.unwrap();
        // ... and gone after the rollback.
        assert_eq!(t.count("tx_basic").await, 1, "{l}");
    }
}

#[tokio::test]
async fn dropping_a_transaction_rolls_it_back() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_drop", "x INTEGER").await;
        {
            let mut tx = t.transaction().await.unwrap();
            tx.execute(&insert("tx_drop"), params! { "x" => 1 })
                .await
                .unwrap();
        }
        assert_eq!(t.count("tx_drop").await, 0, "{l}");
        // On a held connection the connection leaves the transaction too.
        let mut conn = t.connection().await.unwrap();
        {
            let mut tx = conn.transaction().await.unwrap();
            tx.execute(&insert("tx_drop"), params! { "x" => 2 })
                .await
                .unwrap();
        }
        assert!(!conn.in_transaction(), "{l}");
        assert_eq!(
            conn.fetch_val::<i64>("SELECT COUNT(*) FROM tx_drop", (), 0)
                .await
                .unwrap(),
            Some(0),
            "{l}"
        );
        // And a new transaction can start at once.
        conn.transaction().await.unwrap().commit().await.unwrap();
    }
}

#[tokio::test]
async fn nested_rollback_keeps_the_outer_work() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_nested", "x INTEGER").await;
        let mut outer = t.transaction().await.unwrap();
        outer
            .execute(&insert("tx_nested"), params! { "x" => 1 })
            .await
            .unwrap();
        {
            let mut inner = outer.transaction().await.unwrap();
            assert_eq!(inner.depth(), 2, "{l}");
            inner
                .execute(&insert("tx_nested"), params! { "x" => 2 })
                .await
                .unwrap();
            {
                let mut innermost = inner.transaction().await.unwrap();
                assert_eq!(innermost.depth(), 3, "{l}");
                innermost
                    .execute(&insert("tx_nested"), params! { "x" => 3 })
                    .await
                    .unwrap();
                innermost.commit().await.unwrap();
            }
            inner.rollback().await.unwrap();
        }
        {
            let mut dropped = outer.transaction().await.unwrap();
            dropped
                .execute(&insert("tx_nested"), params! { "x" => 4 })
                .await
                .unwrap();
        }
        let mut kept = outer.transaction().await.unwrap();
        kept.execute(&insert("tx_nested"), params! { "x" => 5 })
            .await
            .unwrap();
        kept.commit().await.unwrap();
        outer.commit().await.unwrap();
        let rows = t
            .fetch_all("SELECT x FROM tx_nested ORDER BY x", ())
            .await
            .unwrap();
        let xs: Vec<i64> = rows.iter().map(|r| r.get(0).unwrap()).collect();
        assert_eq!(xs, [1, 5], "{l}");
    }
}

#[tokio::test]
async fn closure_form_commits_on_ok_and_rolls_back_on_err() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_closure", "x INTEGER").await;
        let sql = insert("tx_closure");
        let n = t
            .transaction_with(|tx| {
                let sql = sql.clone();
                Box::pin(async move {
                    tx.execute(&sql, params! { "x" => 1 }).await?;
                    tx.execute(&sql, params! { "x" => 2 }).await?;
                    Ok::<_, Error>(2)
                })
            })
            .await
            .unwrap();
        assert_eq!(n, 2, "{l}");
        assert_eq!(t.count("tx_closure").await, 2, "{l}");

        // A database error inside the body rolls back everything the body did.
        let e = t
            .transaction_with(|tx| {
                let sql = sql.clone();
                Box::pin(async move {
                    tx.execute(&sql, params! { "x" => 3 }).await?;
                    tx.execute("INSERT INTO no_such_table VALUES (1)", ())
                        .await?;
                    Ok::<_, Error>(())
                })
            })
            .await
            .unwrap_err();
        assert!(e.kind().is_database(), "{l}: {e}");
        assert_eq!(t.count("tx_closure").await, 2, "{l}");

        // So does an application error, with the caller's own error type.
        #[derive(Debug)]
        #[allow(dead_code, reason = "the Db payload is only matched")]
        enum AppError {
            Db(Error),
            TooBig,
        }
        impl From<Error> for AppError {
            fn from(e: Error) -> Self {
                AppError::Db(e)
            }
        }
        let e = t
            .transaction_with(|tx| {
                let sql = sql.clone();
                Box::pin(async move {
                    tx.execute(&sql, params! { "x" => 100 }).await?;
                    Err::<(), _>(AppError::TooBig)
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(e, AppError::TooBig), "{l}");
        assert!(!matches!(e, AppError::Db(_)), "{l}");
        assert_eq!(t.count("tx_closure").await, 2, "{l}");

        // On a connection, nested in a transaction: a savepoint.
        let mut conn = t.connection().await.unwrap();
        let mut outer = conn.transaction().await.unwrap();
        outer.execute(&sql, params! { "x" => 10 }).await.unwrap();
        let r: Result<(), Error> = outer
            .transaction_with(|inner| {
                let sql = sql.clone();
                Box::pin(async move {
                    inner.execute(&sql, params! { "x" => 11 }).await?;
                    Err(Error::new(ErrorKind::Database, "stop"))
                })
            })
            .await;
        assert!(r.is_err(), "{l}");
        outer.commit().await.unwrap();
        drop(conn);
        assert_eq!(
            t.count("tx_closure").await,
            3,
            "only the outer row was added on {l}"
        );
    }
}

#[tokio::test]
async fn rolling_back_an_outer_transaction_undoes_the_ones_open_inside_it() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_inner_open", "x INTEGER").await;
        let mut conn = t.connection().await.unwrap();
        for depth in 1..=2 {
            let options = databases::TransactionOptions::new();
            assert_eq!(conn.begin(options).await.unwrap(), depth, "{l}");
            conn.execute(&insert("tx_inner_open"), params! { "x" => depth })
                .await
                .unwrap();
        }
        // Committing the outer one while the inner one is open is refused, and changes
        // nothing...
        let e = conn.commit_depth(1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transaction, "{l}");
        assert_eq!(conn.transaction_depth(), 2, "{l}");
        // ...rolling it back undoes both.
        conn.rollback_depth(1).await.unwrap();
        assert_eq!(conn.transaction_depth(), 0, "{l}");
        drop(conn);
        assert_eq!(t.count("tx_inner_open").await, 0, "{l}");
    }
}

#[tokio::test]
async fn finishing_an_outer_transaction_while_an_inner_one_is_open_is_refused() {
    for t in common::databases().await {
        let l = &t.label;
        let mut outer = t.transaction().await.unwrap();
        let inner = outer.transaction().await.unwrap();
        // The borrow checker prevents this in safe code unless the inner one is leaked.
        std::mem::forget(inner);
        let e = outer.commit().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transaction, "{l}");
        assert_eq!(
            e.to_string(),
            "cannot finish the transaction at depth 1 while the one at depth 2 is open",
            "{l}"
        );
        // Dropping the refused outer transaction rolls everything back; the connection is clean.
        assert_eq!(
            t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1),
            "{l}"
        );
    }
}

#[tokio::test]
async fn force_rollback_leaves_no_data_behind() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_force", "x INTEGER").await;
        t.execute(&insert("tx_force"), params! { "x" => 1 })
            .await
            .unwrap();
        t.disconnect().await.unwrap();

        let db = t.reopen(DatabaseOptions::new().force_rollback(true));
        assert!(db.is_force_rollback(), "{l}");
        db.connect().await.unwrap();
        db.execute(&insert("tx_force"), params! { "x" => 2 })
            .await
            .unwrap();
        {
            let conn = db.connection().await.unwrap();
            assert!(conn.in_transaction(), "{l}");
        }
        // A committed transaction is a savepoint inside the outer one.
        let mut tx = db.transaction().await.unwrap();
        assert_eq!(tx.depth(), 2, "{l}");
        tx.execute(&insert("tx_force"), params! { "x" => 3 })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // A rolled-back one only undoes itself.
        let mut tx = db.transaction().await.unwrap();
        tx.execute(&insert("tx_force"), params! { "x" => 4 })
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let xs: Vec<i64> = db
            .fetch_all("SELECT x FROM tx_force ORDER BY x", ())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0).unwrap())
            .collect();
        assert_eq!(xs, [1, 2, 3], "{l}");
        db.disconnect().await.unwrap();

        // Everything since connect is gone.
        t.connect().await.unwrap();
        assert_eq!(t.count("tx_force").await, 1, "{l}");

        // Reconnecting works and starts a fresh outer transaction.
        db.connect().await.unwrap();
        db.execute(&insert("tx_force"), params! { "x" => 5 })
            .await
            .unwrap();
        db.disconnect().await.unwrap();
        assert_eq!(t.count("tx_force").await, 1, "{l}");
    }
}

#[tokio::test]
async fn force_rollback_from_the_url() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_force_url", "x INTEGER").await;
        let url = t.url().with_options([("force_rollback", "true")]).unwrap();
        let db = databases::Database::new(&url).unwrap();
        db.connect().await.unwrap();
        db.execute(&insert("tx_force_url"), params! { "x" => 1 })
            .await
            .unwrap();
        db.disconnect().await.unwrap();
        assert_eq!(t.count("tx_force_url").await, 0, "{l}");
    }
}

#[tokio::test]
async fn force_rollback_disconnect_closes_a_held_connection_after_the_timeout() {
    for t in common::databases_with(
        &DatabaseOptions::new()
            .force_rollback(true)
            .acquire_timeout(std::time::Duration::from_millis(200))
            .disconnect_timeout(std::time::Duration::from_millis(200)),
    ) {
        let l = &t.label;
        let plain = t.reopen(DatabaseOptions::new());
        plain.connect().await.unwrap();
        plain
            .execute("DROP TABLE IF EXISTS tx_held", ())
            .await
            .unwrap();
        plain
            .execute("CREATE TABLE tx_held (x INTEGER)", ())
            .await
            .unwrap();
        t.connect().await.unwrap();
        let mut held = t.connection().await.unwrap();
        held.execute(&insert("tx_held"), params! { "x" => 1 })
            .await
            .unwrap();
        // The one shared connection is held: another caller waits, then times out.
        let e = t.fetch_one("SELECT 1", ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PoolTimeout, "{l}");
        // Disconnect waits for it up to disconnect_timeout, then closes it.
        let started = std::time::Instant::now();
        t.disconnect().await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{l}");
        assert!(!t.is_connected(), "{l}");
        let e = held.fetch_one("SELECT 1", ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{l}: {e}");
        drop(held);
        // Nothing of the force_rollback transaction was committed.
        assert_eq!(
            plain
                .fetch_val::<i64>("SELECT COUNT(*) FROM tx_held", (), 0)
                .await
                .unwrap(),
            Some(0),
            "{l}"
        );
        plain.execute("DROP TABLE tx_held", ()).await.unwrap();
        plain.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn isolation_and_read_only_where_the_database_has_them() {
    use databases::{Backend, IsolationLevel, TransactionOptions};
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_options", "x INTEGER").await;
        let serializable = TransactionOptions::new().isolation(IsolationLevel::Serializable);
        // Every database has serializable transactions.
        let mut tx = t.transaction_with_options(serializable).await.unwrap();
        tx.execute(&insert("tx_options"), params! { "x" => 1 })
            .await
            .unwrap();
        if t.backend() == Backend::Postgres {
            let level: Option<String> = tx
                .fetch_val("SHOW transaction_isolation", (), 0)
                .await
                .unwrap();
            assert_eq!(level.as_deref(), Some("serializable"), "{l}");
        }
        tx.commit().await.unwrap();
        assert_eq!(t.count("tx_options").await, 1, "{l}");

        let read_only = TransactionOptions::new().read_only(true);
        let committed = TransactionOptions::new().isolation(IsolationLevel::ReadCommitted);
        match t.backend() {
            Backend::Sqlite => {
                for options in [
                    read_only,
                    committed,
                    TransactionOptions::new().deferrable(true),
                ] {
                    let e = t.transaction_with_options(options).await.unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::Transaction, "{l}");
                    assert!(e.to_string().starts_with("sqlite has no "), "{l}: {e}");
                }
            }
            _ => {
                let mut tx = t.transaction_with_options(read_only).await.unwrap();
                assert_eq!(
                    tx.fetch_val::<i64>("SELECT COUNT(*) FROM tx_options", (), 0)
                        .await
                        .unwrap(),
                    Some(1),
                    "{l}"
                );
                let e = tx
                    .execute(&insert("tx_options"), params! { "x" => 2 })
                    .await
                    .unwrap_err();
                assert!(e.kind().is_database(), "{l}: {e}");
                drop(tx);
                let mut tx = t.transaction_with_options(committed).await.unwrap();
                tx.execute(&insert("tx_options"), params! { "x" => 3 })
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                assert_eq!(t.count("tx_options").await, 2, "{l}");
            }
        }
        // A savepoint has no options of its own.
        let mut outer = t.transaction().await.unwrap();
        let e = outer
            .transaction_with_options(serializable)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transaction, "{l}");
        // The refusal left the outer transaction as it was.
        assert_eq!(outer.depth(), 1, "{l}");
        outer
            .execute(&insert("tx_options"), params! { "x" => 9 })
            .await
            .unwrap();
        let inner = outer.transaction().await.unwrap();
        assert_eq!(inner.depth(), 2, "{l}");
        inner.commit().await.unwrap();
        outer.rollback().await.unwrap();
        assert_eq!(
            t.count("tx_options").await,
            if t.backend() == Backend::Sqlite { 1 } else { 2 },
            "{l}"
        );
    }
}

#[tokio::test]
async fn guardless_transactions_by_depth() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_depth", "x INTEGER").await;
        let mut conn = t.connection().await.unwrap();
        assert_eq!(conn.transaction_depth(), 0, "{l}");
        let outer = conn
            .begin(databases::TransactionOptions::new())
            .await
            .unwrap();
        assert_eq!(outer, 1, "{l}");
        conn.execute(&insert("tx_depth"), params! { "x" => 1 })
            .await
            .unwrap();
        let inner = conn
            .begin(databases::TransactionOptions::new())
            .await
            .unwrap();
        assert_eq!(inner, 2, "{l}");
        conn.execute(&insert("tx_depth"), params! { "x" => 2 })
            .await
            .unwrap();
        // Only the innermost may finish, and only an open depth.
        let e = conn.commit_depth(outer).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transaction, "{l}");
        let e = conn.rollback_depth(3).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transaction, "{l}");
        conn.rollback_depth(inner).await.unwrap();
        assert_eq!(conn.transaction_depth(), 1, "{l}");
        conn.commit_depth(outer).await.unwrap();
        assert_eq!(conn.transaction_depth(), 0, "{l}");
        drop(conn);
        assert_eq!(t.count("tx_depth").await, 1, "{l}");
    }
}

const LEVELS: u32 = 4;

/// One level of `an_error_rolls_back_exactly_its_own_level`: a row before and after the
/// level inside it, and a unique violation at the failing level after its inner levels
/// committed. A failed level's transaction is dropped, which rolls it back.
fn level(
    conn: &mut databases::Connection,
    n: u32,
    failing: Option<u32>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + '_>> {
    Box::pin(async move {
        let insert = "INSERT INTO tx_levels (id) VALUES (:id)";
        let mut tx = conn.transaction().await?;
        tx.execute(insert, params! { "id" => n * 10 }).await?;
        if n < LEVELS
            && let Err(e) = level(&mut tx, n + 1, failing).await
        {
            assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{e}");
            assert_eq!(failing, Some(n + 1));
        }
        if failing == Some(n) {
            tx.execute(insert, params! { "id" => n * 10 }).await?;
        }
        tx.execute(insert, params! { "id" => n * 10 + 1 }).await?;
        tx.commit().await
    })
}

#[tokio::test]
async fn an_error_rolls_back_exactly_its_own_level() {
    for t in common::databases().await {
        let l = &t.label;
        for failing in [None, Some(1), Some(2), Some(3), Some(4)] {
            t.recreate("tx_levels", "id INTEGER PRIMARY KEY").await;
            let mut conn = t.connection().await.unwrap();
            match level(&mut conn, 1, failing).await {
                Ok(()) => assert_ne!(failing, Some(1), "{l}"),
                Err(e) => {
                    assert_eq!(failing, Some(1), "{l}: {e}");
                    assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{l}");
                }
            }
            assert!(!conn.in_transaction(), "{l}");
            drop(conn);
            let kept = failing.map_or(LEVELS, |f| f - 1);
            let expected: Vec<i64> = (1..=i64::from(kept))
                .flat_map(|n| [n * 10, n * 10 + 1])
                .collect();
            let ids: Vec<i64> = t
                .fetch_all("SELECT id FROM tx_levels ORDER BY id", ())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0).unwrap())
                .collect();
            assert_eq!(ids, expected, "{l}: failing at {failing:?}");
        }
    }
}

/// The server's view of one PostgreSQL session: `idle`, `idle in transaction`, ...
async fn session_state(db: &databases::Database, pid: i64) -> String {
    session_column(db, pid, "state").await
}

/// The last statement one PostgreSQL session ran.
async fn last_query(db: &databases::Database, pid: i64) -> String {
    session_column(db, pid, "query").await
}

async fn session_column(db: &databases::Database, pid: i64, column: &str) -> String {
    db.fetch_val::<String>(
        &format!("SELECT {column} FROM pg_stat_activity WHERE pid = :pid"),
        params! { "pid" => pid },
        0,
    )
    .await
    .unwrap()
    .expect("the session is listed")
}

#[tokio::test]
async fn postgres_sends_begin_with_the_first_statement() {
    for t in common::databases().await {
        if t.backend() != databases::Backend::Postgres {
            continue;
        }
        let mut conn = t.connection().await.unwrap();
        let pid = conn
            .fetch_val::<i64>("SELECT pg_backend_pid()", (), 0)
            .await
            .unwrap()
            .unwrap();
        let mut tx = conn.transaction().await.unwrap();
        // Nothing has gone out: the server has no transaction yet.
        assert_eq!(session_state(&t, pid).await, "idle");
        let started: i64 = tx.fetch_val("SELECT 1", (), 0).await.unwrap().unwrap();
        assert_eq!(started, 1);
        assert_eq!(session_state(&t, pid).await, "idle in transaction");
        tx.commit().await.unwrap();
        assert_eq!(session_state(&t, pid).await, "idle");

        // A savepoint goes out with its first statement too, and one that ran nothing sends
        // nothing at all: the session's last statement stays the outer one's.
        let mut tx = conn.transaction().await.unwrap();
        tx.execute("SELECT 11", ()).await.unwrap();
        tx.transaction().await.unwrap().commit().await.unwrap();
        tx.transaction().await.unwrap().rollback().await.unwrap();
        drop(tx.transaction().await.unwrap());
        let mut inner = tx.transaction().await.unwrap();
        drop(inner.transaction().await.unwrap());
        inner.rollback().await.unwrap();
        assert_eq!(last_query(&t, pid).await, "SELECT 11");
        // A savepoint and the one inside it start with the statement that runs in it.
        let mut inner = tx.transaction().await.unwrap();
        let mut innermost = inner.transaction().await.unwrap();
        assert_eq!(innermost.depth(), 3);
        innermost.execute("SELECT 12", ()).await.unwrap();
        innermost.commit().await.unwrap();
        assert_eq!(last_query(&t, pid).await, "RELEASE SAVEPOINT sp_3");
        inner.rollback().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(session_state(&t, pid).await, "idle");

        // A transaction that sent nothing ends without a round trip, by commit, rollback or
        // drop, and its connection goes back to the pool (it is not discarded).
        conn.transaction().await.unwrap().commit().await.unwrap();
        conn.transaction().await.unwrap().rollback().await.unwrap();
        drop(conn.transaction().await.unwrap());
        assert!(!conn.in_transaction());
        assert_eq!(session_state(&t, pid).await, "idle");
        drop(conn);
        let db = t.reopen(DatabaseOptions::new().min_size(1).max_size(1));
        db.connect().await.unwrap();
        let first = db
            .fetch_val::<i64>("SELECT pg_backend_pid()", (), 0)
            .await
            .unwrap();
        drop(db.transaction().await.unwrap());
        let after = db
            .fetch_val::<i64>("SELECT pg_backend_pid()", (), 0)
            .await
            .unwrap();
        assert_eq!(first, after, "the connection was kept");
        db.disconnect().await.unwrap();
    }
}

/// A connected pool of one connection to `url`.
async fn connected_pool_of_one(url: &databases::DatabaseUrl) -> databases::Database {
    let db = databases::Database::with_options(url, DatabaseOptions::new().min_size(1).max_size(1))
        .unwrap();
    db.connect().await.unwrap();
    db
}

/// A PostgreSQL statement reaches the server during its operation's first poll: the
/// operation writes it itself, without waiting for the runtime to run the connection's task.
/// Here that task cannot run (the test blocks the runtime's only thread), yet the server runs
/// the statement.
#[test]
fn postgres_an_operation_writes_its_statement_itself() {
    for url in common::server_urls() {
        if url.backend() != databases::Backend::Postgres {
            continue;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let db = connected_pool_of_one(&url).await;
            let mut conn = db.connection().await.unwrap();
            let pid = conn
                .fetch_val::<i64>("SELECT pg_backend_pid()", (), 0)
                .await
                .unwrap()
                .unwrap();
            let sleep = "SELECT pg_sleep(0.3)";
            conn.execute(sleep, ()).await.unwrap(); // prepared: one request left to send
            let mut work = Box::pin(conn.execute(sleep, ()));
            assert!(futures_util::poll!(work.as_mut()).is_pending());
            // Watched from another thread while this one is blocked.
            let watcher_url = url.clone();
            let seen = std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(async {
                    let observer = connected_pool_of_one(&watcher_url).await;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
                    while std::time::Instant::now() < deadline {
                        let state = observer
                            .fetch_val::<String>(
                                "SELECT state FROM pg_stat_activity WHERE pid = :pid \
                                 AND query = 'SELECT pg_sleep(0.3)'",
                                params! { "pid" => pid },
                                0,
                            )
                            .await
                            .unwrap();
                        if state.as_deref() == Some("active") {
                            return true;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    false
                })
            })
            .join()
            .unwrap();
            assert!(seen, "the statement did not reach the server");
            work.await.unwrap();
            drop(conn);
            db.disconnect().await.unwrap();
        });
    }
}

/// Opens a transaction with raw SQL, unknown to the crate, and aborts it with an error: the
/// next `BEGIN` on the session fails.
async fn abort_a_raw_transaction(conn: &mut databases::Connection) {
    conn.execute("BEGIN", ()).await.unwrap();
    conn.execute("SELECT 1 / 0", ()).await.unwrap_err();
}

#[tokio::test]
async fn postgres_a_failed_begin_refuses_statements_until_the_rollback() {
    for t in common::databases().await {
        if t.backend() != databases::Backend::Postgres {
            continue;
        }
        let mut conn = t.connection().await.unwrap();
        // Prepared (and cached) while the session is healthy.
        conn.execute("SELECT 1", ()).await.unwrap();
        abort_a_raw_transaction(&mut conn).await;
        let mut tx = conn.transaction().await.unwrap();
        let err = tx.execute("SELECT 1", ()).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("could not start the transaction: "),
            "{err}"
        );
        assert!(!err.to_string().contains("ran outside"), "{err}");
        let refused = tx.fetch_all("SELECT 1", ()).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Transaction, "{refused}");
        assert!(refused.to_string().contains("roll it back"), "{refused}");
        // The rollback ends what was open on the server, and the connection is clean again.
        tx.rollback().await.unwrap();
        assert_eq!(
            conn.fetch_val::<i64>("SELECT 2", (), 0).await.unwrap(),
            Some(2)
        );
        let mut tx = conn.transaction().await.unwrap();
        tx.execute("SELECT 1", ()).await.unwrap();
        tx.commit().await.unwrap();
        // The same with a statement not prepared yet, whose prepare carries the BEGIN.
        abort_a_raw_transaction(&mut conn).await;
        let mut tx = conn.transaction().await.unwrap();
        let err = tx.execute("SELECT 4 AS unprepared", ()).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("could not start the transaction: "),
            "{err}"
        );
        tx.rollback().await.unwrap();
        // A failed BEGIN's transaction cannot commit.
        abort_a_raw_transaction(&mut conn).await;
        let mut tx = conn.transaction().await.unwrap();
        tx.execute("SELECT 1", ()).await.unwrap_err();
        let refused = tx.commit().await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Transaction, "{refused}");
        // Its drop rolled it back before the next statement.
        assert_eq!(
            conn.fetch_val::<i64>("SELECT 3", (), 0).await.unwrap(),
            Some(3)
        );
        assert!(!conn.in_transaction());
    }
}

/// A session status counter of the connection it is read on (MariaDB and MySQL).
async fn session_status(conn: &mut databases::Connection, name: &str) -> i64 {
    let text: String = conn
        .fetch_val(
            "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
             WHERE VARIABLE_NAME = :name",
            params! { "name" => name.to_uppercase() },
            0,
        )
        .await
        .unwrap()
        .expect("the counter exists");
    text.parse().unwrap()
}

#[tokio::test]
async fn mysql_sends_start_transaction_with_the_first_write() {
    use databases::Value;
    for t in common::databases().await {
        if t.backend() != databases::Backend::Mysql {
            continue;
        }
        t.recreate(
            "tx_inline",
            "id INTEGER PRIMARY KEY AUTO_INCREMENT, k INTEGER, i BIGINT, u BIGINT UNSIGNED, \
             f DOUBLE, s TEXT, b BLOB, d DATETIME(6), tm TIME(6), j JSON",
        )
        .await;
        let insert = "INSERT INTO tx_inline (k, i, u, f, s, b, d, tm, j) \
                      VALUES (:k, :i, :u, :f, :s, :b, :d, :tm, :j)";
        let date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let rows: Vec<[Value; 8]> = vec![
            [
                Value::Int(i64::MIN),
                Value::UInt(u64::MAX),
                Value::Float(-1.5),
                Value::Text("it's -- a '?' ;".into()),
                Value::Bytes(b"plain".to_vec()),
                Value::DateTime(date.and_hms_micro_opt(23, 59, 58, 123_456).unwrap()),
                Value::Time(chrono::NaiveTime::from_hms_micro_opt(1, 2, 3, 4).unwrap()),
                Value::Json(serde_json::json!({"a": [1, "b"]})),
            ],
            [
                Value::Int(-1),
                Value::UInt(0),
                Value::Float(0.1),
                Value::Text("ünïcödé ✓ \"x\"".into()),
                Value::Bytes(vec![0xff, 0, 1]),
                Value::Date(date),
                Value::Null,
                Value::Json(serde_json::json!("with \"escapes\"")),
            ],
            [
                Value::Int(i64::MAX),
                Value::Null,
                Value::Float(1e300),
                Value::Text("back\\slash and \0 nul".into()),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ],
            [
                Value::Bool(true),
                Value::Int(7),
                Value::Float(-2.5e-300),
                Value::Text(String::new()),
                Value::Bytes(Vec::new()),
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        ];
        let mut conn = t.connection().await.unwrap();
        let columns = ["i", "u", "f", "s", "b", "d", "tm", "j"];
        for (n, row) in rows.iter().enumerate() {
            let params = |k: usize| {
                let mut p = params! { "k" => i64::try_from(k).unwrap() };
                for (c, v) in columns.iter().zip(row) {
                    p = p.with(*c, v.clone());
                }
                p
            };
            // Bound to the prepared statement, outside a transaction ...
            conn.execute(insert, params(2 * n)).await.unwrap();
            // ... and as the first statement of one, sent with its START TRANSACTION.
            let mut tx = conn.transaction().await.unwrap();
            tx.execute(insert, params(2 * n + 1)).await.unwrap();
            tx.commit().await.unwrap();
        }
        let stored = conn
            .fetch_all(
                "SELECT i, u, f, s, b, d, tm, j FROM tx_inline ORDER BY k",
                (),
            )
            .await
            .unwrap();
        assert_eq!(stored.len(), 2 * rows.len());
        for pair in stored.chunks(2) {
            assert_eq!(pair[0].values(), pair[1].values(), "the same values stored");
        }

        // The write runs inside the transaction sent with it: a rollback undoes it, and a
        // savepoint's first write runs inside the savepoint.
        let count = "SELECT COUNT(*) FROM tx_inline";
        let before = conn.fetch_val::<i64>(count, (), 0).await.unwrap();
        let mut tx = conn.transaction().await.unwrap();
        tx.execute("DELETE FROM tx_inline", ()).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(conn.fetch_val::<i64>(count, (), 0).await.unwrap(), before);
        let mut tx = conn.transaction().await.unwrap();
        let mut inner = tx.transaction().await.unwrap();
        inner
            .execute("UPDATE tx_inline SET s = :s", params! { "s" => "changed" })
            .await
            .unwrap();
        inner.rollback().await.unwrap();
        let id = tx
            .execute(
                "INSERT INTO tx_inline (k, s) VALUES (:k, 'what?')",
                params! { "k" => 100 },
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let changed: i64 = conn
            .fetch_val("SELECT COUNT(*) FROM tx_inline WHERE s = 'changed'", (), 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed, 0, "the savepoint's update was rolled back");
        let s: String = conn
            .fetch_val(
                "SELECT s FROM tx_inline WHERE id = :id",
                params! { "id" => id.clone() },
                0,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s, "what?", "execute returned the inserted id");

        // A first write that the server refuses still ran inside the transaction it
        // started: the transaction goes on, and its rollback undoes what came after.
        let mut tx = conn.transaction().await.unwrap();
        let err = tx
            .execute(
                "INSERT INTO tx_inline (id, k) VALUES (:id, 300)",
                params! { "id" => id },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UniqueViolation, "{err}");
        tx.execute("INSERT INTO tx_inline (k) VALUES (301)", ())
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let after: i64 = conn
            .fetch_val("SELECT COUNT(*) FROM tx_inline WHERE k >= 300", (), 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after, 0, "the second write ran inside the transaction");

        // One START TRANSACTION per transaction that ran something, none for one that ran
        // nothing; the first write goes as text with it (no prepared execution).
        let begins = session_status(&mut conn, "Com_begin").await;
        let executes = session_status(&mut conn, "Com_stmt_execute").await;
        let mut tx = conn.transaction().await.unwrap();
        tx.execute(insert, params! { "k" => 200 }.with("i", 1))
            .await
            .unwrap_err();
        tx.rollback().await.unwrap();
        let mut tx = conn.transaction().await.unwrap();
        let mut inner = tx.transaction().await.unwrap();
        inner
            .execute("DELETE FROM tx_inline WHERE k = :k", params! { "k" => 100 })
            .await
            .unwrap();
        inner.commit().await.unwrap();
        tx.commit().await.unwrap();
        conn.transaction().await.unwrap().commit().await.unwrap();
        conn.transaction().await.unwrap().rollback().await.unwrap();
        drop(conn.transaction().await.unwrap());
        assert!(!conn.in_transaction());
        assert_eq!(session_status(&mut conn, "Com_begin").await, begins + 1);
        // The two reads of the counters are the only prepared executions in between.
        assert_eq!(
            session_status(&mut conn, "Com_stmt_execute").await,
            executes + 2
        );
    }
}

#[tokio::test]
async fn mysql_a_failed_start_refuses_statements_until_the_rollback() {
    use databases::{IsolationLevel, TransactionOptions};
    for t in common::databases().await {
        if t.backend() != databases::Backend::Mysql {
            continue;
        }
        t.recreate("tx_inline_failed", "x INTEGER").await;
        let insert = insert("tx_inline_failed");
        let mut conn = t.connection().await.unwrap();
        // A transaction opened with raw SQL, unknown to the crate: changing the isolation
        // level of the next one fails inside it.
        conn.execute("START TRANSACTION", ()).await.unwrap();
        let options = TransactionOptions::new().isolation(IsolationLevel::ReadCommitted);
        let mut tx = conn.transaction_with_options(options).await.unwrap();
        let err = tx.execute(&insert, params! { "x" => 1 }).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("could not start the transaction: "),
            "{err}"
        );
        let refused = tx.fetch_all("SELECT 1", ()).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Transaction, "{refused}");
        assert!(refused.to_string().contains("roll it back"), "{refused}");
        tx.rollback().await.unwrap();
        // Nothing ran outside a transaction, and the connection is clean again.
        assert_eq!(t.count("tx_inline_failed").await, 0);
        let mut tx = conn.transaction().await.unwrap();
        tx.execute(&insert, params! { "x" => 2 }).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(t.count("tx_inline_failed").await, 1);
    }
}

#[tokio::test]
async fn execute_many_as_a_transactions_first_statement() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("tx_many_first", "name VARCHAR(20) PRIMARY KEY")
            .await;
        let insert = "INSERT INTO tx_many_first (name) VALUES (:name)";
        let rows = |names: &[&'static str]| -> Vec<databases::NamedParams> {
            names.iter().map(|n| params! { "name" => *n }).collect()
        };
        let mut conn = t.connection().await.unwrap();
        // Inside the transaction it starts: the rollback undoes it.
        let mut tx = conn.transaction().await.unwrap();
        let mut inner = tx.transaction().await.unwrap();
        assert_eq!(
            inner.execute_many(insert, rows(&["a", "b"])).await.unwrap(),
            2,
            "{l}"
        );
        inner.commit().await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(t.count("tx_many_first").await, 0, "{l}");
        // A batch that fails leaves nothing of itself, and the transaction goes on.
        let mut tx = conn.transaction().await.unwrap();
        let e = tx
            .execute_many(insert, rows(&["a", "b", "a"]))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{l}: {e}");
        tx.execute(insert, params! { "name" => "c" }).await.unwrap();
        tx.commit().await.unwrap();
        let names: Vec<String> = conn
            .fetch_all("SELECT name FROM tx_many_first", ())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0).unwrap())
            .collect();
        assert_eq!(names, ["c"], "{l}");
    }
}
