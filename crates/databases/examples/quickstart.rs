//! The HighScores quickstart: create a table, insert three scores with `execute_many`, read
//! them back with `fetch_all`.
//!
//! Runs on a SQLite file (`highscores.db` in the current directory) by default; set
//! `DATABASE_URL` to use another database:
//!
//! ```text
//! cargo run --example quickstart
//! DATABASE_URL=sqlite:///tmp/scores.db cargo run --example quickstart
//! ```

use databases::{Database, params};

#[tokio::main]
async fn main() -> databases::Result<()> {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite:///highscores.db".to_owned());
    let db = Database::new(url)?;
    db.connect().await?;

    db.execute(
        "CREATE TABLE IF NOT EXISTS HighScores (id INTEGER PRIMARY KEY, name VARCHAR(100), score INTEGER)",
        (),
    )
    .await?;
    // Start from an empty table so that running the example twice prints the same thing.
    db.execute("DELETE FROM HighScores", ()).await?;

    let scores = [("Daisy", 92), ("Neil", 87), ("Carol", 43)];
    db.execute_many(
        "INSERT INTO HighScores (name, score) VALUES (:name, :score)",
        scores.map(|(name, score)| params! { "name" => name, "score" => score }),
    )
    .await?;

    let rows = db
        .fetch_all("SELECT name, score FROM HighScores ORDER BY score DESC", ())
        .await?;
    for row in &rows {
        println!(
            "{:<6} {}",
            row.get::<String>("name")?,
            row.get::<i64>("score")?
        );
    }

    db.disconnect().await
}
