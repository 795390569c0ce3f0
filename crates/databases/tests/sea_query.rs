//! sea-query statements through every query method, on every backend: the same built
//! statements, rendered for each database, with values bound.

mod common;

use databases::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Func, Index, Order, Query, Table};
use databases::{NamedParams, params};

#[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
struct Note {
    id: i64,
    text: String,
    done: bool,
}

fn t(name: &str) -> Alias {
    Alias::new(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_statements_run_on_every_database() {
    for db in common::databases().await {
        let l = &db.label;
        db.execute(
            &Table::drop().table(t("sq_notes")).if_exists().to_owned(),
            (),
        )
        .await
        .unwrap_or_else(|e| panic!("{l}: {e}"));
        let create = Table::create()
            .table(t("sq_notes"))
            .col(
                ColumnDef::new(t("id"))
                    .big_integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .col(ColumnDef::new(t("text")).string_len(200).not_null())
            .col(
                ColumnDef::new(t("done"))
                    .boolean()
                    .not_null()
                    .default(false),
            )
            .to_owned();
        db.execute(&create, ())
            .await
            .unwrap_or_else(|e| panic!("{l}: create: {e}"));
        db.execute(
            &Index::create()
                .name("sq_notes_text")
                .table(t("sq_notes"))
                .col(t("text"))
                .to_owned(),
            (),
        )
        .await
        .unwrap_or_else(|e| panic!("{l}: index: {e}"));

        // Hostile text is a bound value, never SQL.
        let hostile = "it's'); DROP TABLE sq_notes; -- :name ? $1";
        let insert = Query::insert()
            .into_table(t("sq_notes"))
            .columns([t("text"), t("done")])
            .values_panic(["Buy milk".into(), false.into()])
            .values_panic([hostile.into(), true.into()])
            .values_panic(["Write docs".into(), false.into()])
            .to_owned();
        let result = db.execute_result(&insert, ()).await.unwrap();
        assert_eq!(result.rows_affected, 3, "{l}");

        // Select into structs.
        let select = Query::select()
            .columns([t("id"), t("text"), t("done")])
            .from(t("sq_notes"))
            .order_by(t("id"), Order::Asc)
            .to_owned();
        let notes: Vec<Note> = db
            .fetch_all(&select, ())
            .await
            .unwrap()
            .iter()
            .map(|r| r.deserialize().unwrap())
            .collect();
        assert_eq!(notes.len(), 3, "{l}");
        assert_eq!(notes[1].text, hostile, "{l}");
        assert!(notes[1].done, "{l}");

        let by_text = Query::select()
            .column(t("id"))
            .from(t("sq_notes"))
            .and_where(Expr::col(t("text")).eq(hostile))
            .to_owned();
        let id = db.fetch_val::<i64>(&by_text, (), 0).await.unwrap();
        assert_eq!(id, Some(notes[1].id), "{l}");

        // Update and delete report the rows they touched.
        let update = Query::update()
            .table(t("sq_notes"))
            .value(t("done"), true)
            .and_where(Expr::col(t("text")).like("%i%"))
            .to_owned();
        assert_eq!(
            db.execute_result(&update, ()).await.unwrap().rows_affected,
            3,
            "{l}"
        );
        let count = Query::select()
            .expr(Func::count(Expr::col(t("id"))))
            .from(t("sq_notes"))
            .and_where(Expr::col(t("done")).eq(true))
            .to_owned();
        assert_eq!(
            db.fetch_val::<i64>(&count, (), 0).await.unwrap(),
            Some(3),
            "{l}"
        );

        // Inside a transaction, on a connection, and streamed.
        let mut conn = db.connection().await.unwrap();
        let mut tx = conn.transaction().await.unwrap();
        let delete = Query::delete()
            .from_table(t("sq_notes"))
            .and_where(Expr::col(t("id")).eq(notes[0].id))
            .to_owned();
        tx.execute(&delete, ()).await.unwrap();
        let first = tx.fetch_one(&select, ()).await.unwrap().unwrap();
        assert_eq!(first.deserialize::<Note>().unwrap().id, notes[1].id, "{l}");
        tx.rollback().await.unwrap();
        let mut rows = conn.iterate(&select, ());
        let mut streamed = Vec::new();
        while let Some(row) = rows.try_next().await.unwrap() {
            streamed.push(row.deserialize::<Note>().unwrap().text);
        }
        assert_eq!(streamed, ["Buy milk", hostile, "Write docs"], "{l}");
        drop(rows);

        // A struct as named parameters for SQL text, next to the built statements.
        let note = Note {
            id: 100,
            text: "from a struct".into(),
            done: false,
        };
        conn.execute(
            "INSERT INTO sq_notes (id, text, done) VALUES (:id, :text, :done)",
            NamedParams::from_serialize(&note).unwrap(),
        )
        .await
        .unwrap();
        let back: Note = conn
            .fetch_one(
                &Query::select()
                    .columns([t("id"), t("text"), t("done")])
                    .from(t("sq_notes"))
                    .and_where(Expr::col(t("id")).eq(100))
                    .to_owned(),
                (),
            )
            .await
            .unwrap()
            .unwrap()
            .deserialize()
            .unwrap();
        assert_eq!(back, note, "{l}");

        // A statement carries its own values: extra parameters are an error, not ignored.
        let e = conn
            .fetch_all(&select, params! { "x" => 1 })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("pass ()"), "{l}: {e}");
        drop(conn);

        db.execute(&Table::drop().table(t("sq_notes")).to_owned(), ())
            .await
            .unwrap();
    }
}
