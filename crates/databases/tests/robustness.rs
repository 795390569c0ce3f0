//! Streaming, concurrency and cancellation: nothing hangs, nothing leaks into the pool.

mod common;

use std::time::{Duration, Instant};

use databases::{DatabaseOptions, ErrorKind, params};
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterate_over_100_000_rows() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("rb_big", "i INTEGER, label VARCHAR(20)").await;
        t.execute_many(
            "INSERT INTO rb_big (i, label) VALUES (:i, :label)",
            (0..100_000).map(|i| params! { "i" => i, "label" => format!("row {i}") }),
        )
        .await
        .unwrap();
        let mut rows = t.iterate("SELECT i, label FROM rb_big ORDER BY i", ());
        let mut n = 0i64;
        while let Some(row) = rows.try_next().await.unwrap() {
            assert_eq!(row.get::<i64>("i").unwrap(), n, "{l}");
            n += 1;
        }
        assert_eq!(n, 100_000, "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterate_does_not_load_the_whole_result() {
    for t in common::databases().await {
        let l = &t.label;
        // Two billion rows: only a stream that reads as it goes can return the first ten.
        let started = Instant::now();
        let first: Vec<i64> = tokio::time::timeout(
            Duration::from_secs(20),
            t.iterate(t.series(2_000_000_000), ())
                .take(10)
                .map(|r| r.unwrap().get::<i64>(0).unwrap())
                .collect(),
        )
        .await
        .unwrap_or_else(|_| panic!("{l}: iterate did not stream"));
        assert_eq!(first, (1..=10).collect::<Vec<_>>(), "{l}");
        // Dropping the stream stopped the query: the pool serves the next call promptly.
        let v = tokio::time::timeout(
            Duration::from_secs(20),
            t.fetch_val::<i64>("SELECT 1", (), 0),
        )
        .await
        .unwrap_or_else(|_| panic!("{l}: the abandoned stream kept running"))
        .unwrap();
        assert_eq!(v, Some(1), "{l}");
        assert!(started.elapsed() < Duration::from_secs(20), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_tasks_on_one_database() {
    for t in common::databases().await {
        let l = t.label.clone();
        t.recreate("rb_concurrent", "task INTEGER, n INTEGER").await;
        let mut tasks = Vec::new();
        for task in 0..50i64 {
            let db = t.db.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..10i64 {
                    if n % 2 == 0 {
                        let mut tx = db.transaction().await?;
                        tx.execute(
                            "INSERT INTO rb_concurrent (task, n) VALUES (:t, :n)",
                            params! { "t" => task, "n" => n },
                        )
                        .await?;
                        tx.commit().await?;
                    } else {
                        db.execute(
                            "INSERT INTO rb_concurrent (task, n) VALUES (:t, :n)",
                            params! { "t" => task, "n" => n },
                        )
                        .await?;
                    }
                    let mine: Option<i64> = db
                        .fetch_val(
                            "SELECT COUNT(*) FROM rb_concurrent WHERE task = :t",
                            params! { "t" => task },
                            0,
                        )
                        .await?;
                    assert_eq!(mine, Some(n + 1));
                }
                Ok::<_, databases::Error>(())
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .unwrap_or_else(|_| panic!("{l}: a task hung"))
                .unwrap()
                .unwrap_or_else(|e| panic!("{l}: {e}"));
        }
        assert_eq!(t.count("rb_concurrent").await, 500, "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dropped_mid_query_leaves_the_pool_clean() {
    let one = DatabaseOptions::new()
        .max_size(1)
        .min_size(1)
        .acquire_timeout(Duration::from_secs(20));
    for t in common::databases_with(&one) {
        let l = &t.label;
        t.connect().await.unwrap();
        t.recreate("rb_cancel", "x INTEGER").await;

        // Outside a transaction: the running statement is stopped, not waited for.
        let slow = t.fetch_one(t.slow_query(), ());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), slow)
                .await
                .is_err(),
            "{l}"
        );
        let started = Instant::now();
        assert_eq!(
            t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1),
            "{l}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{l}: waited {:?}",
            started.elapsed()
        );

        // Inside a transaction: the whole transaction is dropped with the future.
        let db = t.db.clone();
        let slow_sql = t.slow_query();
        let in_tx = async move {
            let mut tx = db.transaction().await?;
            tx.execute(
                "INSERT INTO rb_cancel (x) VALUES (:x)",
                params! { "x" => 1 },
            )
            .await?;
            tx.fetch_one(slow_sql, ()).await?;
            tx.commit().await
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(300), in_tx)
                .await
                .is_err(),
            "{l}"
        );

        // The pool's only connection is usable, holds no open transaction and none of the work.
        let mut conn = tokio::time::timeout(Duration::from_secs(60), t.connection())
            .await
            .unwrap_or_else(|_| panic!("{l}: the connection never came back"))
            .unwrap();
        assert!(!conn.in_transaction(), "{l}");
        assert_eq!(
            conn.fetch_val::<i64>("SELECT COUNT(*) FROM rb_cancel", (), 0)
                .await
                .unwrap(),
            Some(0),
            "{l}"
        );
        // BEGIN would fail if the server still had a transaction open on this connection.
        let tx = conn
            .transaction()
            .await
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        tx.commit().await.unwrap();
        drop(conn);

        // Dropped while waiting for BEGIN's answer, repeatedly: never a dirty connection.
        for _ in 0..50 {
            let begin = t.transaction();
            let _ = tokio::time::timeout(Duration::from_micros(1), begin).await;
        }
        let mut conn = t.connection().await.unwrap();
        assert!(!conn.in_transaction(), "{l}");
        conn.transaction().await.unwrap().commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_timeout_names_the_limit() {
    let opts = DatabaseOptions::new()
        .max_size(1)
        .acquire_timeout(Duration::from_millis(150));
    for t in common::databases_with(&opts) {
        let l = &t.label;
        t.connect().await.unwrap();
        let held = t.connection().await.unwrap();
        let started = Instant::now();
        let e = t.fetch_one("SELECT 1", ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PoolTimeout, "{l}");
        assert!(
            e.to_string().contains("at most 1 connection(s)"),
            "{l}: {e}"
        );
        assert!(started.elapsed() >= Duration::from_millis(150), "{l}");
        drop(held);
        assert_eq!(
            t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1),
            "{l}"
        );
    }
}

/// How many server sessions are running a statement that contains `marker`.
async fn running_with(t: &common::TestDb, marker: &str) -> i64 {
    let sql = match t.backend() {
        databases::Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE :pattern AND pid <> pg_backend_pid()"
        }
        _ => {
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE :pattern AND ID <> CONNECTION_ID()"
        }
    };
    t.fetch_val::<i64>(sql, params! { "pattern" => format!("%{marker}%") }, 0)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_stops_on_the_server() {
    for t in common::databases().await {
        if t.backend() == databases::Backend::Sqlite {
            continue; // an in-process statement: covered by the interrupt test above
        }
        let l = &t.label;
        for (i, how) in ["fetch", "transaction", "iterate"].iter().enumerate() {
            let marker = format!("databases_cancel_marker_{i}");
            let sql = format!("{} /* {marker} */", t.slow_query());
            let db = t.db.clone();
            let work = async move {
                match *how {
                    "fetch" => db.fetch_one(&sql, ()).await.map(drop),
                    "transaction" => {
                        let mut tx = db.transaction().await?;
                        tx.fetch_one(&sql, ()).await?;
                        tx.commit().await
                    }
                    _ => {
                        let mut rows = db.iterate(&sql, ());
                        rows.try_next().await.map(drop)
                    }
                }
            };
            let running = tokio::spawn(work);
            // Wait until the server runs it, then drop the caller.
            let started = Instant::now();
            while running_with(&t, &marker).await == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{l}: {how}: never started"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            running.abort();
            let started = Instant::now();
            while running_with(&t, &marker).await != 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{l}: {how}: the server kept running the abandoned query"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
                Some(1),
                "{l}"
            );
        }
    }
}

/// A pool opening many connections at once on a new SQLite file: each switches the file to
/// WAL, and SQLite answers a second switch in progress with `SQLITE_BUSY` at once (without
/// its busy handler, to avoid a deadlock), which used to fail `connect` now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_16_opens_on_a_new_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        let path = dir.path().join(format!("new-{i}.db"));
        let db = databases::Database::with_options(
            format!("sqlite:///{}", path.display()),
            DatabaseOptions::new().min_size(16).max_size(16),
        )
        .unwrap();
        db.connect()
            .await
            .unwrap_or_else(|e| panic!("opening new-{i}.db: {e}"));
        assert_eq!(
            db.fetch_val::<String>("PRAGMA journal_mode", (), 0)
                .await
                .unwrap()
                .as_deref(),
            Some("wal")
        );
        db.disconnect().await.unwrap();
    }
}

/// `journal_mode=keep` leaves a file's journal mode as it is: SQLite's `delete` for a new file,
/// `wal` for one that an earlier default connection switched (the mode persists in the file).
#[tokio::test]
async fn sqlite_journal_mode_keep_leaves_the_files_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.db");
    let mode = async |query: &str| {
        let db = databases::Database::new(format!("sqlite:///{}{query}", path.display())).unwrap();
        db.connect().await.unwrap();
        let mode = db
            .fetch_val::<String>("PRAGMA journal_mode", (), 0)
            .await
            .unwrap()
            .unwrap();
        db.disconnect().await.unwrap();
        mode
    };
    assert_eq!(mode("?journal_mode=keep").await, "delete");
    assert_eq!(mode("").await, "wal");
    assert_eq!(mode("?journal_mode=keep").await, "wal");
    assert_eq!(mode("?journal_mode=delete").await, "delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_on_a_plain_thread_goes_back_to_the_pool() {
    // The pool discards a connection dropped inside a transaction and opens a replacement,
    // which it spawns on a runtime: the thread that drops it here has none.
    let opts = DatabaseOptions::new()
        .min_size(2)
        .max_size(2)
        .acquire_timeout(Duration::from_secs(5));
    for t in common::databases_with(&opts) {
        let l = &t.label;
        t.connect().await.unwrap();
        let mut conn = t.connection().await.unwrap();
        conn.begin(databases::TransactionOptions::new())
            .await
            .unwrap();
        let dropped = std::thread::spawn(move || drop(conn)).join();
        assert!(dropped.is_ok(), "{l}: dropping the connection panicked");
        // Both connections serve at once: none is lost, no waiter is left asleep.
        let (a, b) = (t.connection().await, t.connection().await);
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        for conn in [&mut a, &mut b] {
            assert!(!conn.in_transaction(), "{l}");
            assert_eq!(
                conn.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
                Some(1),
                "{l}"
            );
        }
    }
    // A force_rollback database dropped without disconnect: its one connection, inside
    // the outer transaction, is discarded the same way.
    for t in common::databases_with(&opts.clone().force_rollback(true)) {
        let l = t.label.clone();
        t.connect().await.unwrap();
        t.execute("SELECT 1", ()).await.unwrap();
        let dropped = std::thread::spawn(move || drop(t)).join();
        assert!(dropped.is_ok(), "{l}: dropping the database panicked");
    }
}

/// Prepared statements still open in the session of `conn`, besides the one that asks
/// (MySQL prepares every statement; PostgreSQL with the cache off none).
async fn open_statements(conn: &mut databases::Connection) -> i64 {
    match conn.backend() {
        databases::Backend::Postgres => conn
            .fetch_val::<i64>("SELECT COUNT(*) FROM pg_prepared_statements", (), 0)
            .await
            .unwrap()
            .unwrap(),
        _ => {
            let rows = conn
                .fetch_all(
                    "SHOW SESSION STATUS WHERE Variable_name IN \
                     ('Com_stmt_prepare', 'Com_stmt_close')",
                    (),
                )
                .await
                .unwrap();
            let count = |name: &str| -> i64 {
                let row = rows
                    .iter()
                    .find(|r| r.get::<String>(0).unwrap() == name)
                    .unwrap_or_else(|| panic!("no {name} in SHOW SESSION STATUS"));
                row.get::<String>(1).unwrap().parse().unwrap()
            };
            count("Com_stmt_prepare") - count("Com_stmt_close") - 1
        }
    }
}

/// With `statement_cache=false` every statement is closed on the server after use, on
/// success and on failure: an open one lives as long as the session and counts against the
/// server's limit (MySQL's `max_prepared_stmt_count` is server-wide).
#[tokio::test]
async fn statements_are_closed_with_the_statement_cache_off() {
    for url in common::server_urls() {
        let mut options = url.options().to_vec();
        options.push(("statement_cache".to_owned(), "false".to_owned()));
        let url = url.with_options(options).unwrap();
        let db =
            databases::Database::with_options(&url, DatabaseOptions::new().min_size(1).max_size(1))
                .unwrap();
        db.connect().await.unwrap();
        let l = url.to_string();
        db.execute("DROP TABLE IF EXISTS rb_stmt", ())
            .await
            .unwrap();
        db.execute("CREATE TABLE rb_stmt (x INTEGER PRIMARY KEY)", ())
            .await
            .unwrap();
        let mut conn = db.connection().await.unwrap();
        for round in 0..3 {
            let base = round * 100;
            conn.execute(
                "INSERT INTO rb_stmt (x) VALUES (:x)",
                params! { "x" => base },
            )
            .await
            .unwrap();
            conn.execute_many(
                "INSERT INTO rb_stmt (x) VALUES (:x)",
                (1..4).map(|i| params! { "x" => base + i }),
            )
            .await
            .unwrap();
            conn.execute_many(
                "UPDATE rb_stmt SET x = x WHERE x = :x",
                (1..4).map(|i| params! { "x" => base + i }),
            )
            .await
            .unwrap();
            let all = conn
                .fetch_all(
                    "SELECT x FROM rb_stmt WHERE x >= :x",
                    params! { "x" => base },
                )
                .await
                .unwrap();
            assert_eq!(all.len(), 4, "{l}");
            conn.fetch_one(
                "SELECT x FROM rb_stmt WHERE x = :x",
                params! { "x" => base },
            )
            .await
            .unwrap()
            .unwrap();
            conn.fetch_val::<i64>("SELECT COUNT(*) FROM rb_stmt", (), 0)
                .await
                .unwrap();
            let streamed: Vec<_> = conn
                .iterate(
                    "SELECT x FROM rb_stmt WHERE x >= :x",
                    params! { "x" => base },
                )
                .collect()
                .await;
            assert_eq!(streamed.len(), 4, "{l}");
            // Failures: a duplicate key, in one statement and in a batch.
            conn.execute(
                "INSERT INTO rb_stmt (x) VALUES (:x)",
                params! { "x" => base },
            )
            .await
            .unwrap_err();
            conn.execute_many(
                "INSERT INTO rb_stmt (x) VALUES (:x)",
                [params! { "x" => base + 50 }, params! { "x" => base }],
            )
            .await
            .unwrap_err();
            conn.execute_many(
                "UPDATE rb_stmt SET x = :to WHERE x = :x",
                [params! { "x" => base + 1, "to" => base + 2 }],
            )
            .await
            .unwrap_err();
        }
        assert_eq!(open_statements(&mut conn).await, 0, "{l}");
        drop(conn);
        db.execute("DROP TABLE rb_stmt", ()).await.unwrap();
        db.disconnect().await.unwrap();
    }
}
