//! Every query method, on every backend.

mod common;

use databases::{ErrorKind, NamedParams, Record, Value, params};
use futures_util::StreamExt;

#[tokio::test]
async fn execute_returns_last_insert_id_and_fetches_read_back() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate(
            "api_notes",
            &format!("{}, text VARCHAR(100), done BOOLEAN", t.id_column()),
        )
        .await;

        // PostgreSQL returns what RETURNING gives; the others the last inserted id.
        let insert = match t.backend() {
            databases::Backend::Postgres => {
                "INSERT INTO api_notes (text, done) VALUES (:text, :done) RETURNING id"
            }
            _ => "INSERT INTO api_notes (text, done) VALUES (:text, :done)",
        };
        let first = t
            .execute(insert, params! { "text" => "one", "done" => false })
            .await
            .unwrap();
        let second = t
            .execute(insert, params! { "text" => "two", "done" => true })
            .await
            .unwrap();
        assert_eq!(
            (first.clone(), second),
            (Value::Int(1), Value::Int(2)),
            "{l}"
        );

        let rows = t
            .fetch_all("SELECT id, text, done FROM api_notes ORDER BY id", ())
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{l}");
        assert_eq!(rows[0].columns(), ["id", "text", "done"], "{l}");
        assert_eq!(rows[0].get::<i64>("id").unwrap(), 1, "{l}");
        assert_eq!(rows[1].get::<String>(1).unwrap(), "two", "{l}");
        assert!(rows[1].get::<bool>("done").unwrap(), "{l}");
        // All rows of a result share one column list.
        assert!(
            std::sync::Arc::ptr_eq(rows[0].column_list(), rows[1].column_list()),
            "{l}"
        );

        let one = t
            .fetch_one(
                "SELECT text FROM api_notes WHERE id = :id",
                params! { "id" => 2 },
            )
            .await
            .unwrap();
        assert_eq!(one.unwrap().get::<String>("text").unwrap(), "two", "{l}");
        let none = t
            .fetch_one(
                "SELECT text FROM api_notes WHERE id = :id",
                params! { "id" => 99 },
            )
            .await
            .unwrap();
        assert!(none.is_none(), "{l}");
    }
}

#[tokio::test]
async fn fetch_val_by_index_and_name_and_missing_row() {
    for t in common::databases().await {
        let l = &t.label;
        let v: Option<i64> = t.fetch_val("SELECT 1 AS a, 2 AS b", (), 1).await.unwrap();
        assert_eq!(v, Some(2), "{l}");
        let v: Option<i64> = t.fetch_val("SELECT 1 AS a, 2 AS b", (), "a").await.unwrap();
        assert_eq!(v, Some(1), "{l}");
        t.recreate("api_empty", "x INTEGER").await;
        let v: Option<i64> = t.fetch_val("SELECT x FROM api_empty", (), 0).await.unwrap();
        assert_eq!(v, None, "no row gives None on {l}");
        let v: Option<Option<i64>> = t.fetch_val("SELECT NULL AS x", (), 0).await.unwrap();
        assert_eq!(v, Some(None), "a NULL value needs Option on {l}");
        let e = t
            .fetch_val::<i64>("SELECT NULL AS x", (), 0)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{l}");
        assert_eq!(
            e.to_string(),
            "column 'x': cannot convert NULL to i64",
            "{l}"
        );
    }
}

#[tokio::test]
async fn named_parameters_repeat_and_extra_values_are_ignored() {
    for t in common::databases().await {
        let l = &t.label;
        let row = t
            .fetch_one(
                "SELECT CAST(:a AS INTEGER) AS x, :b AS y, CAST(:a AS INTEGER) AS z",
                params! { "a" => 5, "b" => "s", "unused" => 1.5 },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.get::<i64>("x").unwrap(), 5, "{l}");
        assert_eq!(row.get::<String>("y").unwrap(), "s", "{l}");
        assert_eq!(row.get::<i64>("z").unwrap(), 5, "{l}");
        // Colons inside strings and comments are not parameters.
        let v: Option<String> = t
            .fetch_val("SELECT ':not_a_param' AS s -- :nor_this\n", (), 0)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some(":not_a_param"), "{l}");
        // Every way of passing parameters.
        let mut m = std::collections::HashMap::new();
        m.insert("a", 1);
        assert_eq!(
            t.fetch_val::<i64>("SELECT CAST(:a AS INTEGER)", m, 0)
                .await
                .unwrap(),
            Some(1),
            "{l}"
        );
        assert_eq!(
            t.fetch_val::<i64>("SELECT CAST(:a AS INTEGER)", [("a", 2)], 0)
                .await
                .unwrap(),
            Some(2),
            "{l}"
        );
        assert_eq!(
            t.fetch_val::<i64>("SELECT CAST(:a AS INTEGER)", vec![("a".to_owned(), 3)], 0)
                .await
                .unwrap(),
            Some(3),
            "{l}"
        );
        let p = NamedParams::new().with("a", 4);
        assert_eq!(
            t.fetch_val::<i64>("SELECT CAST(:a AS INTEGER)", &p, 0)
                .await
                .unwrap(),
            Some(4),
            "{l}"
        );
    }
}

#[tokio::test]
async fn execute_many_inserts_all_rows_or_none() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("api_many", "name VARCHAR(20) PRIMARY KEY, score INTEGER")
            .await;
        let rows = [("Daisy", 92), ("Neil", 87), ("Carol", 43)]
            .map(|(n, s)| params! { "name" => n, "score" => s });
        let affected = t
            .execute_many(
                "INSERT INTO api_many (name, score) VALUES (:name, :score)",
                rows,
            )
            .await
            .unwrap();
        assert_eq!(affected, 3, "{l}");
        assert_eq!(t.count("api_many").await, 3, "{l}");

        // The third row violates the primary key: none of the batch stays.
        let bad = [("Ann", 1), ("Bob", 2), ("Daisy", 3)]
            .map(|(n, s)| params! { "name" => n, "score" => s });
        let e = t
            .execute_many(
                "INSERT INTO api_many (name, score) VALUES (:name, :score)",
                bad,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{l}");
        assert_eq!(t.count("api_many").await, 3, "{l}");

        // A missing value names the parameter; nothing runs.
        let e = t
            .execute_many(
                "INSERT INTO api_many (name, score) VALUES (:name, :score)",
                [params! { "name" => "x" }],
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter, "{l}");
        assert!(e.to_string().contains(":score"), "{l}: {e}");
        assert_eq!(
            t.execute_many(
                "INSERT INTO api_many (name) VALUES (:name)",
                Vec::<NamedParams>::new()
            )
            .await
            .unwrap(),
            0,
            "{l}"
        );
    }
}

#[tokio::test]
async fn execute_many_keeps_every_row_across_batches() {
    // More rows than one multi-row INSERT holds (1,000 on the servers), with a name used
    // twice in the tuple, once inside an expression.
    for t in common::databases().await {
        let l = &t.label;
        t.recreate(
            "api_batches",
            "id INTEGER PRIMARY KEY, name VARCHAR(20), twice INTEGER, score DOUBLE PRECISION",
        )
        .await;
        let insert = "INSERT INTO api_batches (id, name, twice, score) \
                      VALUES (:id, :name, :id * 2, :score)";
        let rows = (0..2_345).map(|i: i64| {
            #[allow(clippy::cast_precision_loss, reason = "small")]
            let score = i as f64 / 2.0;
            params! { "id" => i, "name" => format!("n{i}"), "score" => score }
        });
        assert_eq!(t.execute_many(insert, rows).await.unwrap(), 2_345, "{l}");
        let all = t
            .fetch_all(
                "SELECT id, name, twice, score FROM api_batches ORDER BY id",
                (),
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 2_345, "{l}");
        for (i, row) in (0..).zip(&all) {
            let (id, name, twice, score): (i64, String, i64, f64) = (
                row.get(0).unwrap(),
                row.get(1).unwrap(),
                row.get(2).unwrap(),
                row.get(3).unwrap(),
            );
            #[allow(clippy::cast_precision_loss, reason = "small")]
            let expected = (i, format!("n{i}"), 2 * i, i as f64 / 2.0);
            assert_eq!((id, name, twice, score), expected, "{l}");
        }

        // A duplicate key in the last batch: no row of any batch stays.
        t.execute("DELETE FROM api_batches", ()).await.unwrap();
        let rows = (0..2_100).map(|i: i64| {
            let id = if i == 2_050 { 7 } else { i };
            params! { "id" => id, "name" => "x", "score" => 1.0 }
        });
        let e = t.execute_many(insert, rows).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{l}: {e}");
        assert_eq!(t.count("api_batches").await, 0, "{l}");
    }
}

#[tokio::test]
async fn execute_many_keeps_every_row_of_large_values() {
    // 400 rows of 1,500 bytes: 600 KB, more than one statement carries (MySQL and MariaDB
    // get about 32 KB each), in fewer rows than one multi-row INSERT holds.
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("api_wide", "id INTEGER PRIMARY KEY, body TEXT")
            .await;
        let insert = "INSERT INTO api_wide (id, body) VALUES (:id, :body)";
        let body = |i: i64| format!("{i:04}{}", "é".repeat(748));
        let rows = (0..400).map(|i: i64| params! { "id" => i, "body" => body(i) });
        assert_eq!(t.execute_many(insert, rows).await.unwrap(), 400, "{l}");
        let all = t
            .fetch_all("SELECT id, body FROM api_wide ORDER BY id", ())
            .await
            .unwrap();
        assert_eq!(all.len(), 400, "{l}");
        for (i, row) in (0..).zip(&all) {
            assert_eq!(row.get::<i64>(0).unwrap(), i, "{l}");
            assert_eq!(row.get::<String>(1).unwrap(), body(i), "{l}: row {i}");
        }

        // Generated keys: the rows of one call get consecutive ids, as one INSERT per row
        // gives them, however many statements carry the rows.
        t.recreate("api_wide_ids", &format!("{}, body TEXT", t.id_column()))
            .await;
        let rows = (0..400).map(|i: i64| params! { "body" => body(i) });
        t.execute_many("INSERT INTO api_wide_ids (body) VALUES (:body)", rows)
            .await
            .unwrap();
        let ids = t
            .fetch_one(
                "SELECT MIN(id) AS low, MAX(id) AS high, COUNT(*) AS n FROM api_wide_ids",
                (),
            )
            .await
            .unwrap()
            .unwrap();
        let (low, high, n): (i64, i64, i64) = (
            ids.get("low").unwrap(),
            ids.get("high").unwrap(),
            ids.get("n").unwrap(),
        );
        assert_eq!((n, high - low + 1), (400, 400), "{l}: ids {low}..{high}");
        t.execute("INSERT INTO api_wide_ids (body) VALUES ('next')", ())
            .await
            .unwrap();
        let next: Option<i64> = t
            .fetch_val("SELECT id FROM api_wide_ids WHERE body = 'next'", (), 0)
            .await
            .unwrap();
        assert_eq!(next, Some(high + 1), "{l}");

        // A duplicate key in the last row: the statements before it are rolled back too.
        t.execute("DELETE FROM api_wide", ()).await.unwrap();
        let rows = (0..400).map(|i: i64| {
            let id = if i == 399 { 3 } else { i };
            params! { "id" => id, "body" => body(i) }
        });
        let e = t.execute_many(insert, rows).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{l}: {e}");
        assert_eq!(t.count("api_wide").await, 0, "{l}");
    }
}

#[tokio::test]
async fn execute_result_reports_affected_rows() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("api_affected", "x INTEGER").await;
        t.execute_many(
            "INSERT INTO api_affected (x) VALUES (:x)",
            (0..5).map(|x| params! { "x" => x }),
        )
        .await
        .unwrap();
        let r = t
            .execute_result(
                "UPDATE api_affected SET x = x + 10 WHERE x >= :min",
                params! { "min" => 2 },
            )
            .await
            .unwrap();
        assert_eq!(r.rows_affected, 3, "{l}");
        let r = t
            .execute_result("DELETE FROM api_affected", ())
            .await
            .unwrap();
        assert_eq!(r.rows_affected, 5, "{l}");
    }
}

#[tokio::test]
async fn iterate_streams_rows_in_order() {
    for t in common::databases().await {
        let l = &t.label;
        let mut rows = t.iterate(t.series(1000), ());
        let mut expected = 1;
        while let Some(row) = rows.try_next().await.unwrap() {
            assert_eq!(row.get::<i64>(0).unwrap(), expected, "{l}");
            expected += 1;
        }
        assert_eq!(expected, 1001, "{l}");
        // Errors arrive through the stream.
        let first = t
            .iterate("SELECT * FROM no_such_table", ())
            .next()
            .await
            .unwrap();
        assert!(first.is_err(), "{l}");
        let first = t.iterate("SELECT :missing", ()).next().await.unwrap();
        assert_eq!(
            first.unwrap_err().kind(),
            ErrorKind::MissingParameter,
            "{l}"
        );
    }
}

#[tokio::test]
async fn connection_keeps_session_state() {
    for t in common::databases().await {
        let l = &t.label;
        let mut conn = t.connection().await.unwrap();
        assert!(!conn.in_transaction(), "{l}");
        assert_eq!(conn.backend(), t.backend(), "{l}");
        conn.execute("CREATE TEMPORARY TABLE api_temp (x INTEGER)", ())
            .await
            .unwrap();
        conn.execute("INSERT INTO api_temp (x) VALUES (:x)", params! { "x" => 7 })
            .await
            .unwrap();
        let v: Option<i64> = conn
            .fetch_val("SELECT x FROM api_temp", (), 0)
            .await
            .unwrap();
        assert_eq!(v, Some(7), "{l}");
        let all = conn.fetch_all("SELECT x FROM api_temp", ()).await.unwrap();
        assert_eq!(all.len(), 1, "{l}");
        let streamed: Vec<Record> = conn
            .iterate("SELECT x FROM api_temp", ())
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(streamed, all, "{l}");
        conn.execute_many(
            "INSERT INTO api_temp (x) VALUES (:x)",
            [params! { "x" => 8 }],
        )
        .await
        .unwrap();
        assert_eq!(
            conn.fetch_all("SELECT x FROM api_temp", ())
                .await
                .unwrap()
                .len(),
            2,
            "{l}"
        );
    }
}

#[tokio::test]
async fn connect_and_disconnect_are_idempotent() {
    for t in common::databases_with(&databases::DatabaseOptions::new()) {
        let l = &t.label;
        assert!(!t.is_connected(), "{l}");
        let e = t.fetch_one("SELECT 1", ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{l}");
        assert!(
            e.to_string()
                .ends_with("is not connected: call connect() first"),
            "{l}: {e}"
        );
        t.connect().await.unwrap();
        t.connect().await.unwrap();
        assert!(t.is_connected(), "{l}");
        assert_eq!(
            t.fetch_val::<i64>("SELECT 1", (), 0).await.unwrap(),
            Some(1),
            "{l}"
        );
        t.disconnect().await.unwrap();
        t.disconnect().await.unwrap();
        assert!(!t.is_connected(), "{l}");
        // And again.
        t.connect().await.unwrap();
        assert_eq!(
            t.fetch_val::<i64>("SELECT 2", (), 0).await.unwrap(),
            Some(2),
            "{l}"
        );
        t.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn record_display_and_typed_access() {
    for t in common::databases().await {
        let l = &t.label;
        let row = t
            .fetch_one("SELECT 1 AS id, 'Daisy' AS name", ())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.to_string(), "(id=1, name='Daisy')", "{l}");
        assert_eq!(
            format!("{row:?}"),
            r#"Record { id: Int(1), name: Text("Daisy") }"#,
            "{l}"
        );
        let e = row.get::<i64>("name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "column 'name': cannot convert text to i64",
            "{l}"
        );
        let e = row.get::<i64>("nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ColumnNotFound, "{l}");
        assert_eq!(
            e.to_string(),
            "no column named 'nope': the result has id, name",
            "{l}"
        );
    }
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn structs_in_and_out() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Score {
        name: String,
        score: i64,
        active: bool,
    }
    for t in common::databases().await {
        let l = &t.label;
        t.recreate(
            "api_structs",
            "name VARCHAR(20), score INTEGER, active BOOLEAN",
        )
        .await;
        let daisy = Score {
            name: "Daisy".into(),
            score: 92,
            active: true,
        };
        t.execute(
            "INSERT INTO api_structs (name, score, active) VALUES (:name, :score, :active)",
            NamedParams::from_serialize(&daisy).unwrap(),
        )
        .await
        .unwrap();
        let row = t
            .fetch_one("SELECT name, score, active FROM api_structs", ())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.deserialize::<Score>().unwrap(), daisy, "{l}");
    }
}

#[tokio::test]
async fn pool_state_counts_held_and_idle_connections() {
    let options = databases::DatabaseOptions::new().min_size(1).max_size(3);
    for t in common::databases_with(&options) {
        let l = &t.label;
        assert_eq!(t.pool_state(), None, "{l}: not connected");
        t.connect().await.unwrap();
        let a = t.connection().await.unwrap();
        let b = t.connection().await.unwrap();
        let state = t.pool_state().unwrap();
        assert!(state.connections >= 2, "{l}: {state:?}");
        assert_eq!(state.connections - state.idle, 2, "{l}: {state:?}");
        drop((a, b));
        tokio::task::yield_now().await;
        let state = t.pool_state().unwrap();
        assert_eq!(state.idle, state.connections, "{l}: {state:?}");
        assert!(state.connections <= 3, "{l}: {state:?}");
        t.disconnect().await.unwrap();
        assert_eq!(t.pool_state(), None, "{l}: disconnected");
    }
}
