//! 1,000 futures dropped at varied points of a fetch, a transaction and an iteration leak
//! nothing: the pool serves every connection afterwards, and the server's session count
//! returns to where it was. A storm of cancelled transactions, savepoints, iterations and
//! inserts in 16 tasks keeps every commit that returned, stores nothing of what was cut off
//! or rolled back, and leaves no connection inside a transaction. (A test binary of its own,
//! so that no other test's sessions are counted.)

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

/// A small deterministic generator for the storm below (xorshift).
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one task of the storm learned: ids that must be stored, and ids that must not.
#[derive(Default)]
struct Outcome {
    must: Vec<i64>,
    must_not: Vec<i64>,
}

/// One task of the storm: 100 operations, each cut off by a timeout drawn at random (most
/// shorter than the operation): transactions with a savepoint dropped or rolled back,
/// transactions dropped after an error, iterations dropped early (outside and inside a
/// transaction), plain inserts, and a held connection's transaction followed by a statement
/// outside it.
async fn storm_task(db: Database, task: u64) -> Outcome {
    let mut draw = Draw(0x9E37_79B9_7F4A_7C15 ^ (task + 1));
    let mut out = Outcome::default();
    let insert = "INSERT INTO storm (id) VALUES (:id)";
    for round in 0..100 {
        let id = |k: i64| i64::try_from(task).unwrap() * 10_000 + round * 3 + k;
        let (a, b) = (id(0), id(1));
        let kind = draw.below(6);
        let limit = Duration::from_micros(
            [100, 500, 1_000, 3_000, 10_000, 5_000_000][usize::try_from(draw.below(6)).unwrap()],
        );
        let mut reached_end = false;
        let work = async {
            match kind {
                0 => {
                    let mut tx = db.transaction().await?;
                    tx.execute(insert, databases::params! { "id" => a }).await?;
                    {
                        let mut inner = tx.transaction().await?;
                        inner
                            .execute(insert, databases::params! { "id" => b })
                            .await?;
                        // Dropped (rolled back) or rolled back explicitly.
                        if round % 2 == 0 {
                            inner.rollback().await?;
                        }
                    }
                    reached_end = true;
                    tx.commit().await
                }
                1 => {
                    let mut tx = db.transaction().await?;
                    tx.execute(insert, databases::params! { "id" => a }).await?;
                    let e = tx
                        .execute(insert, databases::params! { "id" => a })
                        .await
                        .expect_err("a duplicate key was stored");
                    assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{e}");
                    Ok(()) // dropped: rolled back
                }
                2 => {
                    let mut rows = db.iterate("SELECT id FROM storm", ());
                    for _ in 0..20 {
                        if rows.try_next().await?.is_none() {
                            break;
                        }
                    }
                    Ok(())
                }
                3 => db
                    .execute(insert, databases::params! { "id" => a })
                    .await
                    .map(drop),
                4 => {
                    // An iteration left early inside a transaction: the rest of its rows
                    // are read and dropped before the next statement.
                    let mut tx = db.transaction().await?;
                    {
                        let mut rows = tx.iterate("SELECT id FROM storm", ());
                        for _ in 0..20 {
                            if rows.try_next().await?.is_none() {
                                break;
                            }
                        }
                    }
                    tx.execute(insert, databases::params! { "id" => a }).await?;
                    reached_end = true;
                    tx.commit().await
                }
                _ => {
                    let mut conn = db.connection().await?;
                    let mut tx = conn.transaction().await?;
                    tx.execute(insert, databases::params! { "id" => a }).await?;
                    tx.commit().await?;
                    reached_end = true;
                    conn.execute(insert, databases::params! { "id" => b })
                        .await
                        .map(drop)
                }
            }
        };
        let finished = match tokio::time::timeout(limit, work).await {
            Ok(result) => {
                // Only a cut-off operation may fail (a dropped future is not an error).
                result.unwrap_or_else(|e| panic!("task {task}, round {round}, kind {kind}: {e}"));
                true
            }
            Err(_) => false,
        };
        match (kind, finished) {
            (0, true) => {
                out.must.push(a);
                out.must_not.push(b);
            }
            (0, false) => {
                out.must_not.push(b);
                if !reached_end {
                    out.must_not.push(a);
                }
            }
            (1, _) => out.must_not.push(a),
            (4, false) if !reached_end => out.must_not.push(a),
            (3 | 4, true) => out.must.push(a),
            (5, true) => out.must.extend([a, b]),
            (5, false) if reached_end => out.must.push(a),
            _ => {}
        }
    }
    out
}

/// Every pooled connection at once is outside any transaction: on a server, each says so;
/// on SQLite, another connection takes the file's exclusive lock at once.
async fn no_transaction_left(t: &common::TestDb, pool: u32) {
    let l = &t.label;
    if t.backend() == Backend::Sqlite {
        let url = t
            .url()
            .with_options([("busy_timeout", "0"), ("transaction_mode", "exclusive")]);
        let other = Database::new(url.unwrap()).unwrap();
        other.connect().await.unwrap();
        let tx = other.transaction().await.unwrap();
        tx.rollback().await.unwrap_or_else(|e| panic!("{l}: {e}"));
        other.disconnect().await.unwrap();
        return;
    }
    // On PostgreSQL, a transaction left open would have started at least 300 ms ago.
    let check = match t.backend() {
        Backend::Postgres => "SELECT statement_timestamp() - now() < interval '0.2 seconds'",
        _ => "SELECT @@in_transaction = 0",
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..pool {
        let mut conn = t.connection().await.unwrap();
        let clean: bool = conn.fetch_val(check, (), 0).await.unwrap().unwrap();
        assert!(clean, "{l}: a pooled connection is inside a transaction");
        held.push(conn);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_cancellations_keeps_every_commit_and_no_open_transaction() {
    let _serial = SERIAL.lock().await;
    let four = DatabaseOptions::new().min_size(4).max_size(4);
    for t in common::databases_with(&four) {
        let l = &t.label;
        t.connect().await.unwrap();
        t.recreate("storm", "id BIGINT PRIMARY KEY").await;
        let tasks = (0..16).map(|task| tokio::spawn(storm_task(t.db.clone(), task)));
        let outcomes = tokio::time::timeout(Duration::from_secs(120), join_all(tasks))
            .await
            .unwrap_or_else(|_| panic!("{l}: the storm hung"));
        let stored: std::collections::HashSet<i64> = t
            .fetch_all("SELECT id FROM storm", ())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<i64>(0).unwrap())
            .collect();
        for outcome in outcomes {
            let outcome = outcome.unwrap();
            for id in outcome.must {
                assert!(stored.contains(&id), "{l}: {id} returned but is not stored");
            }
            for id in outcome.must_not {
                assert!(!stored.contains(&id), "{l}: {id} is stored but must not be");
            }
        }
        no_transaction_left(&t, 4).await;
        t.execute("DROP TABLE storm", ()).await.unwrap();
        t.disconnect().await.unwrap();
    }
}
