//! Every error kind, with its message, on every backend.

mod common;

use databases::{Database, DatabaseOptions, ErrorKind, Value, params};

#[tokio::test]
async fn bad_urls_and_options() {
    let e = Database::new("oracle://scott:tiger@host/db").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Url);
    assert_eq!(
        e.to_string(),
        "unknown database URL scheme 'oracle': expected one of postgresql, postgres, mysql, sqlite"
    );
    assert!(!e.to_string().contains("tiger"));

    let e = Database::new("postgresql://u:hunter2@host:99999/db").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Url);
    assert_eq!(
        e.to_string(),
        "database URL port '99999' is not a number from 0 to 65535"
    );

    let e = Database::new("sqlite:///x.db?max_size=lots").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(
        e.to_string(),
        "invalid value 'lots' for option 'max_size': expected a whole number from 0 to 4294967295"
    );

    let e = Database::with_options(
        "sqlite:///x.db",
        DatabaseOptions::new().min_size(3).max_size(2),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(
        e.to_string(),
        "option 'min_size' (3) is larger than 'max_size' (2)"
    );
}

#[tokio::test]
async fn connect_failure_names_the_database() {
    let db = Database::new("sqlite:////no/such/directory/x.db").unwrap();
    let e = db.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(
        e.to_string()
            .starts_with("could not open SQLite database '/no/such/directory/x.db':"),
        "{e}"
    );
    assert!(!db.is_connected());
}

#[cfg(not(feature = "mysql"))]
#[tokio::test]
async fn backends_not_in_this_build_fail_clearly_at_connect() {
    let db = Database::new("mysql://app:secret@127.0.0.1:1/app").unwrap();
    let e = db.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("no mysql backend"), "{e}");
    assert!(!e.to_string().contains("secret"));
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_naming_it() {
    // Port 1 on loopback: nothing listens there.
    let db = Database::new("postgresql://app:secret@127.0.0.1:1/app?connect_timeout=5").unwrap();
    let e = db.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(
        e.to_string()
            .starts_with("could not connect to PostgreSQL at 127.0.0.1:1: "),
        "{e}"
    );
    assert!(!e.to_string().contains("secret"));
    assert!(!db.is_connected());
}

#[tokio::test]
async fn constraint_violations_have_portable_kinds() {
    for t in common::databases().await {
        let l = &t.label;
        // The child refers to the parent: drop it first on servers that kept both.
        t.execute("DROP TABLE IF EXISTS err_child", ())
            .await
            .unwrap();
        t.recreate("err_parent", "id INTEGER PRIMARY KEY").await;
        t.recreate(
            "err_child",
            "id INTEGER PRIMARY KEY, parent INTEGER REFERENCES err_parent (id), \
             name VARCHAR(10) NOT NULL, qty INTEGER CHECK (qty > 0)",
        )
        .await;
        t.execute("INSERT INTO err_parent (id) VALUES (1)", ())
            .await
            .unwrap();
        let ins =
            "INSERT INTO err_child (id, parent, name, qty) VALUES (:id, :parent, :name, :qty)";
        let row = |id: i64, parent: i64, name: Option<&str>, qty: i64| {
            params! { "id" => id, "parent" => parent, "name" => name, "qty" => qty }
        };
        t.execute(ins, row(1, 1, Some("a"), 1)).await.unwrap();

        let e = t.execute(ins, row(1, 1, Some("b"), 1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{l}: {e}");
        assert!(e.is_unique_violation());
        assert!(e.code().is_some() && e.db_message().is_some(), "{l}");
        assert!(
            e.to_string().starts_with("unique constraint violated: "),
            "{l}: {e}"
        );

        let e = t.execute(ins, row(2, 1, None, 1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotNullViolation, "{l}: {e}");
        assert!(
            e.to_string().contains("name"),
            "the message names the column on {l}: {e}"
        );

        let e = t.execute(ins, row(3, 1, Some("c"), 0)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CheckViolation, "{l}: {e}");

        // SQLite checks foreign keys only when asked to.
        let fk_url = if t.backend() == databases::Backend::Sqlite {
            t.url().with_options([("foreign_keys", "true")]).unwrap()
        } else {
            t.url().clone()
        };
        let db = Database::new(&fk_url).unwrap();
        db.connect().await.unwrap();
        let e = db.execute(ins, row(4, 99, Some("d"), 1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ForeignKeyViolation, "{l}: {e}");
        assert!(e.is_foreign_key_violation());
        db.disconnect().await.unwrap();

        assert_eq!(
            t.count("err_child").await,
            1,
            "failed statements changed nothing on {l}"
        );
    }
}

#[tokio::test]
async fn syntax_and_other_database_errors() {
    for t in common::databases().await {
        let l = &t.label;
        let e = t.execute("SELEC 1", ()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Syntax, "{l}: {e}");
        assert!(e.to_string().starts_with("syntax error: "), "{l}: {e}");
        let e = t
            .fetch_all("SELECT * FROM err_no_such_table", ())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Database, "{l}: {e}");
        assert!(e.to_string().contains("err_no_such_table"), "{l}: {e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the driver error is kept on {l}"
        );
    }
}

#[tokio::test]
async fn parameter_errors_name_the_parameter() {
    for t in common::databases().await {
        let l = &t.label;
        let e = t
            .fetch_one("SELECT :id, :name", params! { "id" => 1, "nmae" => "typo" })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter, "{l}");
        assert_eq!(
            e.to_string(),
            "no value for query parameter ':name' (values given: id, nmae)",
            "{l}"
        );

        // In a batch, the error names the row, and no row is applied.
        t.recreate("err_batch", "id INTEGER PRIMARY KEY, name VARCHAR(10)")
            .await;
        let e = t
            .execute_many(
                "INSERT INTO err_batch (id, name) VALUES (:id, :name)",
                [
                    params! { "id" => 1, "name" => "a" },
                    params! { "id" => 2, "name" => "b" },
                    params! { "id" => 3 },
                ],
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter, "{l}");
        assert_eq!(
            e.to_string(),
            "no value for query parameter ':name' in row 2 (values given: id)",
            "{l}"
        );
        let count: Option<i64> = t
            .fetch_val("SELECT COUNT(*) FROM err_batch", (), 0)
            .await
            .unwrap();
        assert_eq!(count, Some(0), "{l}");

        if t.backend() == databases::Backend::Sqlite {
            let e = t
                .fetch_one("SELECT :big", params! { "big" => u64::MAX })
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{l}");
            assert!(
                e.to_string()
                    .starts_with("parameter ':big': 18446744073709551615 is larger"),
                "{l}: {e}"
            );
            let e = t.fetch_one("SELECT ?", ()).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{l}");
            assert!(
                e.to_string().contains("write parameters as :name"),
                "{l}: {e}"
            );
        }
    }
}

#[tokio::test]
async fn decode_and_column_errors_name_the_column() {
    for t in common::databases().await {
        let l = &t.label;
        let row = t
            .fetch_one("SELECT 'abc' AS word, 300 AS n", ())
            .await
            .unwrap()
            .unwrap();
        let e = row.get::<u8>("n").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{l}");
        assert_eq!(
            e.to_string(),
            "column 'n': cannot convert integer to u8 (300 is out of range)",
            "{l}"
        );
        let e = row.get::<chrono::NaiveDate>("word").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{l}");
        assert!(
            e.to_string()
                .starts_with("column 'word': cannot convert text to NaiveDate ("),
            "{l}: {e}"
        );
        let e = row.value(5).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ColumnNotFound, "{l}");
        assert_eq!(
            row.value("word").unwrap(),
            &Value::Text("abc".into()),
            "{l}"
        );
        let e = t
            .fetch_val::<i64>("SELECT 1 AS a", (), "b")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ColumnNotFound, "{l}");
        assert_eq!(
            e.to_string(),
            "no column named 'b': the result has a",
            "{l}"
        );
    }
}

#[tokio::test]
async fn errors_inside_a_transaction_keep_it_usable() {
    for t in common::databases().await {
        let l = &t.label;
        t.recreate("err_tx", "id INTEGER PRIMARY KEY").await;
        let mut tx = t.transaction().await.unwrap();
        tx.execute("INSERT INTO err_tx (id) VALUES (1)", ())
            .await
            .unwrap();
        // A failing statement inside a savepoint rolls back only the savepoint's work.
        {
            let mut sp = tx.transaction().await.unwrap();
            sp.execute("INSERT INTO err_tx (id) VALUES (2)", ())
                .await
                .unwrap();
            let e = sp
                .execute("INSERT INTO err_tx (id) VALUES (1)", ())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{l}");
            sp.rollback().await.unwrap();
        }
        tx.execute("INSERT INTO err_tx (id) VALUES (3)", ())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let ids: Vec<i64> = t
            .fetch_all("SELECT id FROM err_tx ORDER BY id", ())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0).unwrap())
            .collect();
        assert_eq!(ids, [1, 3], "{l}");
    }
}

#[tokio::test]
async fn passwords_never_show() {
    let db = Database::new("postgresql://app:hunter2@127.0.0.1:1/app?min_size=1").unwrap();
    for shown in [
        format!("{db:?}"),
        format!("{:?}", db.url()),
        db.url().to_string(),
        db.fetch_one("SELECT 1", ()).await.unwrap_err().to_string(),
        db.connect().await.unwrap_err().to_string(),
        Database::new("postgresql://app:hunter2@127.0.0.1:x/app")
            .unwrap_err()
            .to_string(),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    assert!(format!("{db:?}").contains("app:********@127.0.0.1:1"));
}
