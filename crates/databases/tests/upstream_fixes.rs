//! The Rust face of the cases that encode/databases users hit (see the Python suite's
//! `test_upstream_fixes.py`): leaving an iteration early, queries next to an iteration,
//! cancelled reads in savepoints, affected row counts, and a bounded `disconnect`.

mod common;

use std::time::{Duration, Instant};

use databases::{DatabaseOptions, ErrorKind, params};

const HANG: Duration = Duration::from_secs(20);

async fn fill(t: &common::TestDb, table: &str, rows: i64) {
    t.recreate(table, "n INTEGER").await;
    t.execute_many(
        &format!("INSERT INTO {table} (n) VALUES (:n)"),
        (0..rows).map(|n| params! { "n" => n }),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_early_leaves_its_connection_usable() {
    for t in common::databases().await {
        let l = &t.label;
        fill(&t, "fx_rows", 3000).await;
        let work = async {
            let mut conn = t.connection().await?;
            let mut tx = conn.transaction().await?;
            tx.execute("INSERT INTO fx_rows (n) VALUES (-1)", ())
                .await?;
            for _ in 0..3 {
                let mut rows = tx.iterate("SELECT n FROM fx_rows ORDER BY n", ());
                let first = rows.try_next().await?.expect("a row");
                assert_eq!(first.get::<i64>(0)?, -1, "{l}");
                // `break`: the stream is dropped with most of its rows unread.
            }
            // The same connection, inside the same transaction, answers at once.
            let count = tx
                .fetch_val::<i64>("SELECT COUNT(*) FROM fx_rows", (), 0)
                .await?;
            assert_eq!(count, Some(3001), "{l}");
            tx.commit().await?;
            Ok::<(), databases::Error>(())
        };
        tokio::time::timeout(HANG, work)
            .await
            .unwrap_or_else(|_| panic!("{l}: hung"))
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(t.count("fx_rows").await, 3001, "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_stops_its_statement() {
    for t in common::databases().await {
        let l = &t.label;
        let mut conn = t.connection().await.unwrap();
        let mut rows = conn.iterate(t.slow_query(), ());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rows.try_next())
                .await
                .is_err(),
            "{l}"
        );
        let started = Instant::now();
        rows.cancel();
        drop(conn);
        // The statement stopped: the pool serves the next call without waiting for it.
        let v = tokio::time::timeout(HANG, t.fetch_val::<i64>("SELECT 1", (), 0))
            .await
            .unwrap_or_else(|_| panic!("{l}: hung"))
            .unwrap();
        assert_eq!(v, Some(1), "{l}");
        assert!(started.elapsed() < Duration::from_secs(10), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_next_to_a_database_iteration() {
    for t in common::databases().await {
        let l = &t.label;
        fill(&t, "fx_next", 1200).await;
        let work = async {
            let mut rows = t.iterate("SELECT n FROM fx_next ORDER BY n", ());
            let mut seen = 0i64;
            while let Some(row) = rows.try_next().await? {
                let n = row.get::<i64>(0)?;
                if n % 400 == 0 {
                    // A query on the database (not the stream's connection) inside the loop.
                    t.execute("INSERT INTO fx_next (n) VALUES (:n)", params! { "n" => -n })
                        .await?;
                }
                seen += 1;
            }
            assert_eq!(seen, 1200, "{l}");
            Ok::<(), databases::Error>(())
        };
        tokio::time::timeout(HANG, work)
            .await
            .unwrap_or_else(|_| panic!("{l}: hung"))
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(t.count("fx_next").await, 1203, "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_read_in_a_savepoint_keeps_the_transaction() {
    for t in common::databases().await {
        if t.backend() != databases::Backend::Sqlite {
            // On the servers a cancelled statement retires its connection (see robustness.rs).
            continue;
        }
        let l = &t.label;
        fill(&t, "fx_sp", 3).await;
        let mut conn = t.connection().await.unwrap();
        let mut tx = conn.transaction().await.unwrap();
        tx.execute("INSERT INTO fx_sp (n) VALUES (10)", ())
            .await
            .unwrap();
        {
            let mut sp = tx.transaction().await.unwrap();
            let slow = sp.fetch_one(t.slow_query(), ());
            assert!(
                tokio::time::timeout(Duration::from_millis(200), slow)
                    .await
                    .is_err(),
                "{l}"
            );
        }
        // The running read was interrupted, the savepoint rolled back, the outer work kept.
        let count = tokio::time::timeout(
            HANG,
            tx.fetch_val::<i64>("SELECT COUNT(*) FROM fx_sp", (), 0),
        )
        .await
        .unwrap_or_else(|_| panic!("{l}: the abandoned read kept running"))
        .unwrap();
        assert_eq!(count, Some(4), "{l}");
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affected_rows_and_inserted_ids() {
    for t in common::databases().await {
        let l = &t.label;
        fill(&t, "fx_count", 10).await;
        let r = t
            .execute_result("UPDATE fx_count SET n = n + 100 WHERE n < 4", ())
            .await
            .unwrap();
        assert_eq!(r.rows_affected, 4, "{l}");
        let r = t
            .execute_result("DELETE FROM fx_count WHERE n >= 100", ())
            .await
            .unwrap();
        assert_eq!(r.rows_affected, 4, "{l}");
        t.recreate("fx_ids", &format!("{}, v INTEGER", t.id_column()))
            .await;
        let sql = if t.backend() == databases::Backend::Postgres {
            "INSERT INTO fx_ids (v) VALUES (1) RETURNING id"
        } else {
            "INSERT INTO fx_ids (v) VALUES (1)"
        };
        let r = t.execute_result(sql, ()).await.unwrap();
        assert_eq!(r.rows_affected, 1, "{l}");
        match t.backend() {
            databases::Backend::Postgres => {
                assert_eq!(r.returned, databases::Value::Int(1), "{l}");
            }
            _ => assert_eq!(r.last_insert_id, Some(1), "{l}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_is_bounded_and_held_connections_get_a_clear_error() {
    let opts = DatabaseOptions::new().disconnect_timeout(Duration::from_millis(300));
    for t in common::databases_with(&opts) {
        let l = &t.label;
        t.connect().await.unwrap();
        let mut idle = t.connection().await.unwrap();
        // A stream with rows left to read when disconnect closes its connection.
        let mut streaming = t.connection().await.unwrap();
        let mut rows = streaming.iterate(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) \
             SELECT n FROM s",
            (),
        );
        assert!(rows.try_next().await.unwrap().is_some(), "{l}");
        let db = t.db.clone();
        let slow = t.slow_query();
        let busy = tokio::spawn(async move {
            let mut conn = db.connection().await?;
            conn.fetch_one(slow, ()).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;

        let started = Instant::now();
        tokio::time::timeout(HANG, t.disconnect())
            .await
            .unwrap_or_else(|_| panic!("{l}: disconnect hung"))
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{l}");
        assert!(started.elapsed() >= Duration::from_millis(300), "{l}");

        let e = tokio::time::timeout(HANG, busy)
            .await
            .unwrap_or_else(|_| panic!("{l}: the running statement was not stopped"))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{l}: {e}");
        assert!(e.to_string().contains("disconnect_timeout"), "{l}: {e}");
        let e = idle.fetch_one("SELECT 1", ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{l}: {e}");
        drop(idle);
        // The stream ends with the same error, even with rows already buffered, and then
        // ends.
        let e = rows.try_next().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{l}: {e}");
        assert!(rows.try_next().await.unwrap().is_none(), "{l}");
        drop(rows);
        drop(streaming);
        let e = t.fetch_one("SELECT 1", ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{l}: {e}");

        // Connecting again works as usual.
        t.connect().await.unwrap();
        assert_eq!(
            t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1),
            "{l}"
        );
        t.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_waits_for_connections_given_back_in_time() {
    for t in common::databases().await {
        let l = &t.label;
        let mut conn = t.connection().await.unwrap();
        let user = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let v = conn.fetch_val::<i64>("SELECT 7", (), 0).await;
            drop(conn);
            v
        });
        let started = Instant::now();
        tokio::time::timeout(HANG, t.disconnect())
            .await
            .unwrap_or_else(|_| panic!("{l}: disconnect hung"))
            .unwrap();
        // Disconnect waited for the holder, whose work went through.
        assert!(started.elapsed() >= Duration::from_millis(250), "{l}");
        assert_eq!(user.await.unwrap().unwrap(), Some(7), "{l}");
    }
}
