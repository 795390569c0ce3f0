//! Hostile and broken input on every database: values are bound, never interpolated; bad
//! values get a typed error and change nothing; the connection stays usable. Secrets stay
//! out of errors, `Debug` output and logs. A bounded load of 200 tasks on a pool of 10.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use databases::{Backend, Database, DatabaseOptions, ErrorKind, Value, params};

const HOSTILE: &[&str] = &[
    "'",
    "''",
    "\"",
    "'; DROP TABLE bad_values; --",
    "1'; DELETE FROM bad_values WHERE '1'='1",
    "/* comment */",
    "-- comment",
    "# comment",
    ":t",
    ":id, :n",
    "$1",
    "?",
    "%s",
    "\\",
    "\\'",
    "é ü 日本語 🚀",
    "a\tb\nc\rd",
    "",
    "\u{202e} reversed",
];

/// The tests share the `bad_values` table on the shared servers, and the log test needs the
/// only subscriber while it runs: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const COLUMNS: &str = "id BIGINT PRIMARY KEY, t TEXT, n BIGINT, r DOUBLE PRECISION";

#[tokio::test]
async fn hostile_strings_round_trip() {
    let _serial = SERIAL.lock().await;
    for db in common::databases().await {
        let l = &db.label;
        db.recreate("bad_values", COLUMNS).await;
        let insert = "INSERT INTO bad_values (id, t) VALUES (:id, :t)";
        for (i, text) in (1_i64..).zip(HOSTILE) {
            db.execute(insert, params! { "id" => i, "t" => *text })
                .await
                .unwrap_or_else(|e| panic!("{l}: {text:?}: {e}"));
        }
        db.execute_many(
            insert,
            (1_i64..)
                .zip(HOSTILE)
                .map(|(i, text)| params! { "id" => 1000 + i, "t" => *text }),
        )
        .await
        .unwrap();
        for (i, text) in (1_i64..).zip(HOSTILE) {
            for id in [i, 1000 + i] {
                let got: Option<String> = db
                    .fetch_val(
                        "SELECT t FROM bad_values WHERE id = :id",
                        params! { "id" => id },
                        0,
                    )
                    .await
                    .unwrap();
                assert_eq!(got.as_deref(), Some(*text), "{l}: id {id}");
            }
            // As a filter value too.
            let ids: Vec<i64> = db
                .fetch_all(
                    "SELECT id FROM bad_values WHERE t = :t ORDER BY id",
                    params! { "t" => *text },
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0).unwrap())
                .collect();
            assert!(
                ids.contains(&i) && ids.contains(&(1000 + i)),
                "{l}: {text:?}: {ids:?}"
            );
        }
        let rows = i64::try_from(2 * HOSTILE.len()).unwrap();
        assert_eq!(db.count("bad_values").await, rows, "{l}");
    }
}

/// Runs an insert that may be refused: if it fails, the error is typed and nothing was
/// written. Returns whether it was stored.
async fn refused_or_stored(
    db: &common::TestDb,
    what: &str,
    sql: &str,
    params: databases::NamedParams,
) -> bool {
    let before = db.count("bad_values").await;
    match db.execute(sql, params).await {
        Ok(_) => true,
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::InvalidParameter | ErrorKind::Database),
                "{}: {what}: unexpected kind {:?}: {e}",
                db.label,
                e.kind()
            );
            assert_eq!(db.count("bad_values").await, before, "{}: {what}", db.label);
            false
        }
    }
}

#[tokio::test]
async fn bad_values_get_typed_errors_and_change_nothing() {
    let _serial = SERIAL.lock().await;
    for db in common::databases().await {
        let l = &db.label;
        let postgres = db.backend() == Backend::Postgres;
        db.recreate("bad_values", COLUMNS).await;
        db.execute("INSERT INTO bad_values (id, t) VALUES (1, 'kept')", ())
            .await
            .unwrap();
        let set_n = "INSERT INTO bad_values (id, n) VALUES (2, :n)";

        // Out of range for the column (BIGINT), or for every integer type.
        for n in [Value::UInt(u64::MAX), Value::UInt(1 << 63)] {
            assert!(
                !refused_or_stored(&db, &format!("{n:?}"), set_n, params! { "n" => n.clone() })
                    .await,
                "{l}: {n:?} was stored in a BIGINT column"
            );
        }
        // Values of the wrong type for the column.
        for v in [
            Value::Text("not a number".into()),
            Value::Bytes(vec![1, 2, 3]),
            Value::Json(serde_json::json!({"a": 1})),
        ] {
            let stored =
                refused_or_stored(&db, &format!("{v:?}"), set_n, params! { "n" => v.clone() })
                    .await;
            // SQLite stores any value in any column; the others refuse.
            assert!(!stored || db.backend() == Backend::Sqlite, "{l}: {v:?}");
            db.execute("DELETE FROM bad_values WHERE id = 2", ())
                .await
                .unwrap();
        }
        // A missing parameter, and a misspelled one.
        let e = db.execute(set_n, ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter, "{l}");
        assert!(e.to_string().contains("':n'"), "{l}: {e}");
        let e = db.execute(set_n, params! { "m" => 1 }).await.unwrap_err();
        assert!(e.to_string().contains("':n'"), "{l}: {e}");
        assert_eq!(db.count("bad_values").await, 1, "{l}");

        // NaN and infinities: stored exactly where the database has them.
        for (i, r) in (10_i64..).zip([f64::NAN, f64::INFINITY, f64::NEG_INFINITY]) {
            let sql = "INSERT INTO bad_values (id, r) VALUES (:id, :r)";
            if refused_or_stored(&db, &format!("{r}"), sql, params! { "id" => i, "r" => r }).await {
                let got: Option<f64> = db
                    .fetch_val(
                        "SELECT r FROM bad_values WHERE id = :id",
                        params! { "id" => i },
                        0,
                    )
                    .await
                    .unwrap();
                let got = got.expect("stored, not NULL");
                assert!(
                    got == r || (got.is_nan() && r.is_nan()),
                    "{l}: {r} came back as {got}"
                );
            } else {
                assert!(!postgres, "{l}: PostgreSQL stores {r}");
            }
        }

        // A NUL character, and bytes that are not UTF-8, where text is expected.
        for (i, v) in (20_i64..).zip([Value::Text("a\0b".into()), Value::Bytes(vec![0xff, 0xfe])]) {
            let sql = "INSERT INTO bad_values (id, t) VALUES (:id, :t)";
            if refused_or_stored(
                &db,
                &format!("{v:?}"),
                sql,
                params! { "id" => i, "t" => v.clone() },
            )
            .await
            {
                let got: Value = db
                    .fetch_val(
                        "SELECT t FROM bad_values WHERE id = :id",
                        params! { "id" => i },
                        0,
                    )
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(got, v, "{l}");
            }
        }

        // JSON nested deeper than the limit, as a parameter: refused before anything runs.
        let sql = "INSERT INTO bad_values (id, t) VALUES (30, :t)";
        let mut deep = serde_json::Value::Null;
        for _ in 0..databases::MAX_NESTING + 1 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        let e = db
            .execute(sql, params! { "t" => Value::Json(deep) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{l}: {e}");
        assert!(
            e.to_string().contains("':t'") && e.to_string().contains("nested"),
            "{l}: {e}"
        );
        // At the limit it is bound (and stored, where the column takes it).
        let mut deep = serde_json::Value::Null;
        for _ in 0..databases::MAX_NESTING {
            deep = serde_json::Value::Array(vec![deep]);
        }
        let stored = refused_or_stored(
            &db,
            "deep JSON",
            sql,
            params! { "t" => Value::Json(deep.clone()) },
        )
        .await;
        assert!(stored, "{l}: JSON at the nesting limit was refused");
        let got: Option<String> = db
            .fetch_val("SELECT t FROM bad_values WHERE id = 30", (), 0)
            .await
            .unwrap();
        assert_eq!(got, Some(deep.to_string()), "{l}");

        // The connection is fine after all of that.
        let kept: Option<String> = db
            .fetch_val("SELECT t FROM bad_values WHERE id = 1", (), 0)
            .await
            .unwrap();
        assert_eq!(kept.as_deref(), Some("kept"), "{l}");
    }
}

#[tokio::test]
async fn deep_json_from_the_database_is_an_error_naming_the_column() {
    for db in common::databases().await {
        if db.backend() != Backend::Postgres {
            continue; // MySQL's JSON stops at 100 levels; SQLite's JSON is text
        }
        let l = &db.label;
        let sql = "SELECT (repeat('[', 1000) || repeat(']', 1000))::jsonb AS deep";
        // Deeper than serde_json reads: a decode error naming the column, not a crash.
        let e = db.fetch_one(sql, ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{l}: {e}");
        assert!(e.to_string().contains("deep"), "{l}: {e}");
        assert_eq!(
            db.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1)
        );
    }
}

#[tokio::test]
async fn sixteen_mib_values() {
    let _serial = SERIAL.lock().await;
    let big = "x".repeat(16 << 20);
    for db in common::databases().await {
        let l = &db.label;
        db.recreate("bad_values", COLUMNS).await;
        let sql = "INSERT INTO bad_values (id, t) VALUES (1, :t)";
        match db.execute(sql, params! { "t" => big.as_str() }).await {
            Ok(_) => {
                let got: Option<String> = db
                    .fetch_val("SELECT t FROM bad_values WHERE id = 1", (), 0)
                    .await
                    .unwrap();
                assert!(
                    got.as_deref() == Some(big.as_str()),
                    "{l}: changed on the way"
                );
            }
            Err(e) => {
                // MariaDB's default max_allowed_packet is 16 MiB, which the statement
                // exceeds; the server closes the connection and the pool discards it.
                assert_eq!(db.backend(), Backend::Mysql, "{l}: {e}");
                assert_eq!(db.count("bad_values").await, 0, "{l}");
            }
        }
        assert_eq!(
            db.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1),
            "{l}"
        );
    }
}

/// Log lines, as a `tracing` subscriber writes them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn passwords_stay_out_of_errors_debug_and_logs() {
    let _serial = SERIAL.lock().await;
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret = "s3cr3t-P%40ss"; // "s3cr3t-P@ss", URL-encoded
    let plain = "s3cr3t-P@ss";
    let mut urls = vec![format!(
        "postgresql://someone:{secret}@127.0.0.1:9/nothing?connect_timeout=2"
    )];
    // A wrong password on each real server: its error must not echo the password either.
    for url in common::server_urls() {
        let host = url.hostname().unwrap_or("127.0.0.1").to_owned();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let scheme = url.as_str().split("://").next().unwrap().to_owned();
        urls.push(format!("{scheme}://nobody_here:{secret}@{host}{port}/test"));
    }
    for url in urls {
        let db = Database::new(&url).unwrap();
        let mut shown = vec![
            format!("{db:?}"),
            format!("{:?}", db.url()),
            db.url().to_string(),
        ];
        let e = db.connect().await.unwrap_err();
        shown.push(e.to_string());
        shown.push(format!("{e:?}"));
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            shown.push(s.to_string());
            source = s.source();
        }
        for text in shown {
            assert!(!text.contains(plain) && !text.contains(secret), "{text}");
        }
    }
    // A database that connects logs its URL: masked.
    let ok = common::databases().await;
    for db in &ok {
        db.disconnect().await.unwrap();
    }
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("connected to database"), "{logged}");
    assert!(
        !logged.contains(plain) && !logged.contains(secret),
        "{logged}"
    );
}

/// This process's resident memory in bytes (0 where /proc is missing).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// 1.5 seconds of 200 tasks reading rows and updating them in transactions: the number of
/// operations done and the rate.
async fn load_round(db: &Database) -> databases::Result<(u64, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let started = Instant::now();
    let tasks: Vec<_> = (0..200_i64)
        .map(|k| {
            let (db, done) = (db.clone(), done.clone());
            tokio::spawn(async move {
                let id = k % 100 + 1;
                while Instant::now() < deadline {
                    if k % 10 == 0 {
                        let mut conn = db.connection().await?;
                        let mut tx = conn.transaction().await?;
                        tx.execute(
                            "UPDATE bad_values SET n = n + 1 WHERE id = :id",
                            params! { "id" => id },
                        )
                        .await?;
                        tx.commit().await?;
                    } else {
                        let row = db
                            .fetch_one(
                                "SELECT id, t FROM bad_values WHERE id = :id",
                                params! { "id" => id },
                            )
                            .await?
                            .expect("the row exists");
                        assert_eq!(row.get::<i64>(0)?, id);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, databases::Error>(())
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a task hung")
            .expect("a task panicked")?;
    }
    let done = done.load(Ordering::Relaxed);
    Ok((done, done as f64 / started.elapsed().as_secs_f64()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_of_200_tasks_on_a_pool_of_10() {
    let _serial = SERIAL.lock().await;
    let options = DatabaseOptions::new()
        .min_size(1)
        .max_size(10)
        .acquire_timeout(Duration::from_secs(30));
    for t in common::databases_with(&options) {
        let l = t.label.clone();
        t.connect().await.unwrap();
        t.recreate("bad_values", COLUMNS).await;
        t.execute_many(
            "INSERT INTO bad_values (id, t, n) VALUES (:id, :t, :n)",
            (1_i64..=100).map(|i| params! { "id" => i, "t" => format!("row {i}"), "n" => i }),
        )
        .await
        .unwrap();
        // Two bounded rounds: memory after the second is no higher than after the first,
        // beyond noise.
        let first = load_round(&t.db)
            .await
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        let warm = rss();
        let (done, rate) = load_round(&t.db)
            .await
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        let grown = rss().saturating_sub(warm);
        eprintln!(
            "{l}: {rate:.0} operations/s with 200 tasks on a pool of 10; memory +{:.1} MiB \
             over the second round",
            grown as f64 / f64::from(1 << 20)
        );
        assert!(first.0 >= 200 && done >= 200, "{l}");
        assert!(
            grown < 16 << 20,
            "{l}: memory grew {grown} bytes under load"
        );
        let state = t.pool_state().expect("connected");
        assert!(state.connections <= 10, "{l}: {state:?}");
        // Every connection came back.
        assert_eq!(state.idle, state.connections, "{l}: {state:?}");
        t.disconnect().await.unwrap();
    }
}
