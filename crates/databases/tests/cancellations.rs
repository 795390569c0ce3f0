//! 1,000 futures dropped at varied points of a fetch, a transaction and an iteration leak
//! nothing: the pool serves every connection afterwards, and the server's session count
//! returns to where it was. (A test binary of its own, so that no other test's sessions
//! are counted.)

mod common;

use std::time::{Duration, Instant};

use databases::{Backend, Database, DatabaseOptions, ErrorKind};
use futures_util::future::join_all;

async fn sessions(observer: &Database) -> i64 {
    let sql = match observer.backend() {
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid()"
        }
        _ => {
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
              AND COMMAND <> 'Daemon'"
        }
    };
    observer
        .fetch_val::<i64>(sql, (), 0)
        .await
        .unwrap()
        .unwrap()
}

/// A pool of one on `t`'s server, to count sessions with, and the count before the test's own
/// pool connects.
async fn observe(t: &common::TestDb) -> (Database, i64) {
    let observer = t.reopen(DatabaseOptions::new().min_size(1).max_size(1));
    observer.connect().await.unwrap();
    let before = sessions(&observer).await;
    (observer, before)
}

/// The tests here count the server's sessions, so they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until the server has no more sessions than `before` (the observer's own excluded).
async fn sessions_back_to(observer: &Database, before: i64, within: Duration, l: &str) {
    let deadline = Instant::now() + within;
    loop {
        let now = sessions(observer).await;
        if now <= before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{l}: {now} sessions left after {within:?}, {before} before"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_dropped_futures_leak_nothing() {
    let _serial = SERIAL.lock().await;
    let three = DatabaseOptions::new().min_size(1).max_size(3);
    for t in common::databases_with(&three) {
        let l = &t.label;
        let server = t.backend() != Backend::Sqlite;
        // One connection, so that its pool keeps no idle one besides it.
        let observer = t.reopen(DatabaseOptions::new().min_size(1).max_size(1));
        observer.connect().await.unwrap();
        let before = if server { sessions(&observer).await } else { 0 };
        t.connect().await.unwrap();
        let slow = t.slow_query();
        let started = Instant::now();
        for i in 0..1000u64 {
            let limit = Duration::from_micros(500 + (i * 7919) % 19_500);
            let db = t.db.clone();
            let work = async move {
                match i % 3 {
                    0 => db.fetch_one(slow, ()).await.map(drop),
                    1 => {
                        let mut tx = db.transaction().await?;
                        tx.execute("SELECT 1", ()).await?;
                        tx.fetch_one(slow, ()).await?;
                        tx.commit().await
                    }
                    _ => {
                        let mut rows = db.iterate(slow, ());
                        rows.try_next().await.map(drop)
                    }
                }
            };
            assert!(
                tokio::time::timeout(limit, work).await.is_err(),
                "{l}: {i} finished"
            );
        }
        eprintln!("{l}: 1,000 dropped futures in {:?}", started.elapsed());
        let values = tokio::time::timeout(
            Duration::from_secs(30),
            join_all((0..6).map(|_| t.fetch_val::<i64>("SELECT 1", (), 0))),
        )
        .await
        .unwrap_or_else(|_| panic!("{l}: the pool did not serve six calls"));
        for v in values {
            assert_eq!(v.unwrap(), Some(1), "{l}");
        }
        t.disconnect().await.unwrap();
        if server {
            sessions_back_to(&observer, before, Duration::from_secs(20), l).await;
        }
        observer.disconnect().await.unwrap();
    }
}

/// A future dropped at any point of its first 2 ms (checkout, prepare, the statement on its
/// way to the server, which ignores a cancel request that arrives before it, or just
/// started) still stops its statement: the slow query sleeps 30 s, and every session is gone
/// well before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_dropped_on_its_way_still_stops() {
    let _serial = SERIAL.lock().await;
    let two = DatabaseOptions::new().min_size(1).max_size(2);
    for t in common::databases_with(&two) {
        if t.backend() == Backend::Sqlite {
            continue; // no server, no session
        }
        let l = &t.label;
        let (observer, before) = observe(&t).await;
        t.connect().await.unwrap();
        let slow = t.slow_query();
        for i in 0..100u32 {
            // A connection ready in the pool, so that the slow statement's steps (checkout,
            // prepare, send) are what the sweep below cuts through.
            assert_eq!(
                t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
                Some(1),
                "{l}"
            );
            let mut work = std::pin::pin!(t.fetch_one(slow, ()));
            // Keep polling for 0 to 2 ms (letting the runtime move the statement along in
            // between), then drop it.
            let until = Instant::now() + Duration::from_micros(20 * u64::from(i));
            loop {
                assert!(futures_util::poll!(work.as_mut()).is_pending(), "{l}: {i}");
                if Instant::now() >= until {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        t.disconnect().await.unwrap();
        sessions_back_to(&observer, before, Duration::from_secs(20), l).await;
        observer.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_abandoned_statement_rollback_succeeds_and_commit_fails() {
    let _serial = SERIAL.lock().await;
    for t in common::databases().await {
        if t.backend() == Backend::Sqlite {
            continue; // SQLite stops the statement and keeps the connection
        }
        let l = &t.label;
        t.recreate("cx_abandoned", "x INTEGER").await;
        for commit in [false, true] {
            let mut conn = t.connection().await.unwrap();
            conn.begin(databases::TransactionOptions::new())
                .await
                .unwrap();
            conn.execute("INSERT INTO cx_abandoned (x) VALUES (1)", ())
                .await
                .unwrap();
            let abandoned = tokio::time::timeout(
                Duration::from_millis(200),
                conn.fetch_one(t.slow_query(), ()),
            )
            .await;
            assert!(abandoned.is_err(), "{l}: the slow statement finished");
            if commit {
                // The work is lost with the connection: a commit must not claim otherwise.
                let e = conn.commit_depth(1).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{l}");
            } else {
                // The transaction ends with the discarded connection: nothing to report.
                conn.rollback_depth(1).await.unwrap();
                assert!(!conn.in_transaction(), "{l}");
            }
            drop(conn);
            assert_eq!(t.count("cx_abandoned").await, 0, "{l}");
        }
    }
}

/// A transaction's first statement, which carries its start (PostgreSQL, and MySQL for a
/// write), abandoned mid-flight: the server stops it, the transaction leaves nothing, and
/// no session is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_first_write_of_a_transaction_leaves_nothing() {
    let _serial = SERIAL.lock().await;
    for t in common::databases().await {
        let slow_write = match t.backend() {
            Backend::Postgres => "INSERT INTO cx_first (x) SELECT 1 FROM pg_sleep(30)",
            Backend::Mysql => "INSERT INTO cx_first (x) SELECT SLEEP(30)",
            _ => continue, // SQLite: no server, no session
        };
        let l = &t.label;
        t.recreate("cx_first", "x INTEGER").await;
        let (observer, before) = observe(&t).await;
        let db = t.reopen(DatabaseOptions::new().min_size(1).max_size(2));
        db.connect().await.unwrap();
        let mut conn = db.connection().await.unwrap();
        conn.begin(databases::TransactionOptions::new())
            .await
            .unwrap();
        let abandoned =
            tokio::time::timeout(Duration::from_millis(300), conn.execute(slow_write, ())).await;
        assert!(abandoned.is_err(), "{l}: the slow write finished");
        conn.rollback_depth(1).await.unwrap();
        drop(conn);
        assert_eq!(
            db.fetch_val::<i64>("SELECT 7", (), 0).await.unwrap(),
            Some(7),
            "{l}"
        );
        assert_eq!(t.count("cx_first").await, 0, "{l}");
        db.disconnect().await.unwrap();
        sessions_back_to(&observer, before, Duration::from_secs(10), l).await;
        observer.disconnect().await.unwrap();
    }
}

/// A statement whose future is dropped on a thread without a runtime (a plain thread, a
/// destructor after the application's runtime is gone) still stops on the server: the
/// cancel request (PostgreSQL) or `KILL` (MySQL) runs on the runtime the connection was
/// opened on. The slow query sleeps 30 s; its session must be gone well before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_dropped_on_a_thread_without_a_runtime_still_stops() {
    let _serial = SERIAL.lock().await;
    let one = DatabaseOptions::new().min_size(1).max_size(1);
    for t in common::databases_with(&one) {
        if t.backend() == Backend::Sqlite {
            continue; // no server, no session
        }
        let l = &t.label;
        let (observer, before) = observe(&t).await;
        t.connect().await.unwrap();
        let (db, slow) = (t.db.clone(), t.slow_query());
        let mut work = Box::pin(async move { db.fetch_one(slow, ()).await.map(drop) });
        // Long enough for the statement to reach the server and start sleeping.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), work.as_mut())
                .await
                .is_err(),
            "{l}: the slow statement finished"
        );
        std::thread::spawn(move || drop(work)).join().unwrap();
        // The pool's one connection was discarded and is replaced at once.
        let value = tokio::time::timeout(
            Duration::from_secs(10),
            t.fetch_val::<i64>("SELECT 1", (), 0),
        )
        .await
        .unwrap_or_else(|_| panic!("{l}: the pool did not serve a call"));
        assert_eq!(value.unwrap(), Some(1), "{l}");
        t.disconnect().await.unwrap();
        // Without the cancel, PostgreSQL sleeps on; MariaDB notices the closed socket after
        // about 5 s.
        sessions_back_to(&observer, before, Duration::from_secs(3), l).await;
        observer.disconnect().await.unwrap();
    }
}
