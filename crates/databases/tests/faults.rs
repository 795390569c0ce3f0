//! Faults produced for real on the shared servers without disturbing them: connections
//! killed from another session while idle in the pool.

mod common;

use std::time::{Duration, Instant};

use databases::{Backend, DatabaseOptions, ErrorKind};

/// This connection's server-side id.
async fn backend_id(conn: &mut databases::Connection) -> i64 {
    let sql = match conn.backend() {
        Backend::Postgres => "SELECT pg_backend_pid()",
        _ => "SELECT CONNECTION_ID()",
    };
    conn.fetch_val::<i64>(sql, (), 0).await.unwrap().unwrap()
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
        let id = {
            let mut conn = t.connection().await.unwrap();
            backend_id(&mut conn).await
        };
        // Kill it from a session of its own, and wait until the server has ended it.
        let killer = t.reopen(DatabaseOptions::new());
        killer.connect().await.unwrap();
        let (kill, alive) = match t.backend() {
            Backend::Postgres => (
                "SELECT pg_terminate_backend(:id)",
                "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = :id",
            ),
            _ => (
                "KILL :id",
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id",
            ),
        };
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

        let first = t.fetch_val::<i64>("SELECT 1", (), 0).await;
        match t.backend() {
            // The client sees the closed socket at once: the pool replaces the connection
            // before handing it out, and no call sees the error.
            Backend::Postgres => assert_eq!(first.unwrap(), Some(1), "{l}"),
            // mysql_async learns of it only by using it: the first call fails with a clear
            // connection-lost error and the pool discards the connection.
            _ => {
                if let Err(e) = first {
                    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{l}: {e}");
                }
            }
        }
        for _ in 0..5 {
            assert_eq!(
                t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
                Some(1),
                "{l}"
            );
        }
        let mut conn = t.connection().await.unwrap();
        assert_ne!(
            backend_id(&mut conn).await,
            id,
            "{l}: the killed session came back"
        );
        drop(conn);
        killer.disconnect().await.unwrap();
        t.disconnect().await.unwrap();
    }
}
