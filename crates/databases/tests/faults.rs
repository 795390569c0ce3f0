//! Faults produced for real on the shared servers without disturbing them: connections
//! killed from another session while idle in the pool and while running a statement.

mod common;

use std::time::{Duration, Instant};

use databases::{Backend, DatabaseOptions, ErrorKind};
use futures_util::StreamExt;

/// This connection's server-side id.
async fn backend_id(conn: &mut databases::Connection) -> i64 {
    let sql = match conn.backend() {
        Backend::Postgres => "SELECT pg_backend_pid()",
        _ => "SELECT CONNECTION_ID()",
    };
    conn.fetch_val::<i64>(sql, (), 0).await.unwrap().unwrap()
}

/// The statement that ends a session, and the one that counts it among the live ones.
fn kill_sql(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Postgres => (
            "SELECT pg_terminate_backend(:id)",
            "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = :id",
        ),
        _ => (
            "KILL :id",
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id",
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_idle_is_replaced() {
    let one = DatabaseOptions::new().min_size(1).max_size(1);
    for t in common::databases_with(&one) {
        if t.backend() == Backend::Sqlite {
            continue; // an embedded database has no server session to kill
        }
        let l = &t.label;
        t.connect().await.unwrap();
        let killer = t.reopen(DatabaseOptions::new());
        killer.connect().await.unwrap();
        let (kill, alive) = kill_sql(t.backend());
        // The connection's last operation before it went back: a query, or an `iterate`
        // read to its end (MySQL hands the connection to a task of its own for that).
        for last in ["query", "iterate"] {
            let l = &format!("{l} (last operation: {last})");
            let id = {
                let mut conn = t.connection().await.unwrap();
                let id = backend_id(&mut conn).await;
                if last == "iterate" {
                    let mut rows = conn.iterate(t.series(3), ());
                    while let Some(row) = rows.next().await {
                        row.unwrap();
                    }
                }
                id
            };
            kill_and_wait(&killer, kill, alive, id, l).await;

            // The pool sees, before handing the connection out, that the server closed it:
            // no call sees the error.
            next_calls_succeed(&t).await;
            let mut conn = t.connection().await.unwrap();
            assert_ne!(
                backend_id(&mut conn).await,
                id,
                "{l}: the killed session came back"
            );
        }
        killer.disconnect().await.unwrap();
        t.disconnect().await.unwrap();
    }
}

/// Kills session `id` from `killer`'s, and waits until the server has ended it.
async fn kill_and_wait(killer: &databases::Database, kill: &str, alive: &str, id: i64, l: &str) {
    killer
        .execute(kill, databases::params! { "id" => id })
        .await
        .unwrap();
    let started = Instant::now();
    while killer
        .fetch_val::<i64>(alive, databases::params! { "id" => id }, 0)
        .await
        .unwrap()
        != Some(0)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{l}: never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Five calls in a row succeed, none of them seeing a killed session's error.
async fn next_calls_succeed(t: &common::TestDb) {
    for _ in 0..5 {
        assert_eq!(
            t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1),
            "{}",
            t.label
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_in_use() {
    let one = DatabaseOptions::new().min_size(1).max_size(1);
    for t in common::databases_with(&one) {
        if t.backend() == Backend::Sqlite {
            continue; // an embedded database has no server session to kill
        }
        let l = &t.label;
        t.connect().await.unwrap();
        t.recreate("fault_killed", "x INTEGER").await;
        let killer = t.reopen(DatabaseOptions::new());
        killer.connect().await.unwrap();
        let (kill, _) = kill_sql(t.backend());

        // A statement in flight: only it fails, with a connection-lost error.
        let mut conn = t.connection().await.unwrap();
        let id = backend_id(&mut conn).await;
        let sql = t.slow_query();
        let slow = tokio::spawn(async move {
            let r = conn.fetch_all(sql, ()).await.map(|_| ());
            (conn, r)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        killer
            .execute(kill, databases::params! { "id" => id })
            .await
            .unwrap();
        let (conn, result) = tokio::time::timeout(Duration::from_secs(10), slow)
            .await
            .expect("the killed statement hung")
            .unwrap();
        let e = result.expect_err("the killed statement succeeded");
        assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{l}: {e}");
        drop(conn);
        next_calls_succeed(&t).await;

        // Inside a transaction: its work is gone with the session.
        let mut conn = t.connection().await.unwrap();
        let mut tx = killed_in_transaction(&mut conn, &killer, 1, l).await;
        let e = tx
            .execute("INSERT INTO fault_killed VALUES (2)", ())
            .await
            .expect_err("a statement on a killed session succeeded");
        assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{l}: {e}");
        // The next statement is refused at once, and says why.
        let e = tx
            .execute("INSERT INTO fault_killed VALUES (3)", ())
            .await
            .expect_err("a statement on a killed session succeeded");
        assert!(e.to_string().contains("session was lost"), "{l}: {e}");
        assert!(
            tx.commit().await.is_err(),
            "{l}: commit on a killed session"
        );
        drop(conn);

        // Rolled back instead: the session's end already did it, so the rollback succeeds
        // with nothing to send (a transaction's error path needs no second error).
        let mut conn = t.connection().await.unwrap();
        let mut tx = killed_in_transaction(&mut conn, &killer, 4, l).await;
        let e = tx
            .execute("INSERT INTO fault_killed VALUES (5)", ())
            .await
            .expect_err("a statement on a killed session succeeded");
        assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{l}: {e}");
        tx.rollback().await.unwrap();
        drop(conn);

        // A rollback that is the first to find the session gone succeeds as well.
        let mut conn = t.connection().await.unwrap();
        let tx = killed_in_transaction(&mut conn, &killer, 6, l).await;
        tx.rollback().await.unwrap();
        drop(conn);
        next_calls_succeed(&t).await;
        assert_eq!(t.count("fault_killed").await, 0, "{l}");
        t.execute("DROP TABLE fault_killed", ()).await.unwrap();
        killer.disconnect().await.unwrap();
        t.disconnect().await.unwrap();
    }
}

/// Opens a transaction on `conn`, inserts `x` in it, then has `killer` end the session and
/// waits until the server has.
async fn killed_in_transaction<'c>(
    conn: &'c mut databases::Connection,
    killer: &databases::Database,
    x: i64,
    l: &str,
) -> databases::Transaction<'c> {
    let id = backend_id(conn).await;
    let (kill, alive) = kill_sql(conn.backend());
    let mut tx = conn.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO fault_killed VALUES (:x)",
        databases::params! { "x" => x },
    )
    .await
    .unwrap();
    kill_and_wait(killer, kill, alive, id, l).await;
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_command_timeout_is_stopped_and_the_connection_goes_on() {
    for t in common::databases_with(&DatabaseOptions::new()) {
        if t.backend() == Backend::Sqlite {
            continue; // no command_timeout: a cancelled operation interrupts the statement
        }
        let l = &t.label;
        let mut options = t.url().options().to_vec();
        options.push(("command_timeout".into(), "0.3".into()));
        let db = databases::Database::new(t.url().with_options(options).unwrap()).unwrap();
        db.connect().await.unwrap();
        db.execute("DROP TABLE IF EXISTS fault_timeout", ())
            .await
            .unwrap();
        db.execute("CREATE TABLE fault_timeout (x INTEGER)", ())
            .await
            .unwrap();
        let mut conn = db.connection().await.unwrap();
        let id = backend_id(&mut conn).await;
        let started = Instant::now();
        let e = conn.fetch_all(t.slow_query(), ()).await.unwrap_err();
        assert!(e.to_string().contains("command_timeout"), "{l}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{l}: not stopped"
        );
        // The cancellation was spent on the statement: the same session goes on.
        assert_eq!(backend_id(&mut conn).await, id, "{l}");

        // In a transaction: the statement fails; the rollback is not subject to the timeout
        // and leaves the session outside any transaction.
        let mut tx = conn.transaction().await.unwrap();
        tx.execute("INSERT INTO fault_timeout VALUES (1)", ())
            .await
            .unwrap();
        let e = tx.fetch_all(t.slow_query(), ()).await.unwrap_err();
        assert!(e.to_string().contains("command_timeout"), "{l}: {e}");
        tx.rollback().await.unwrap();
        let mut tx = conn.transaction().await.unwrap();
        tx.execute("INSERT INTO fault_timeout VALUES (2)", ())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        drop(conn);
        let stored: Vec<i64> = db
            .fetch_all("SELECT x FROM fault_timeout", ())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<i64>(0).unwrap())
            .collect();
        assert_eq!(stored, [2], "{l}");
        db.execute("DROP TABLE fault_timeout", ()).await.unwrap();
        db.disconnect().await.unwrap();
    }
}
