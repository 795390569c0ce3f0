//! Test databases: a fresh SQLite file for every test, plus every URL in `TEST_DATABASE_URLS`
//! (comma-separated) whose backend this build has.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::ops::Deref;

use databases::{Backend, Database, DatabaseOptions, DatabaseUrl};

pub struct TestDb {
    pub db: Database,
    /// The URL, password obscured, for assertion messages.
    pub label: String,
    url: DatabaseUrl,
    /// Keeps a SQLite file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
}

impl Deref for TestDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

#[allow(
    clippy::match_like_matches_macro,
    reason = "one arm per backend reads better"
)]
fn built(backend: Backend) -> bool {
    match backend {
        Backend::Sqlite => cfg!(feature = "sqlite"),
        Backend::Postgres => cfg!(feature = "postgres"),
        Backend::Mysql => cfg!(feature = "mysql"),
        _ => false,
    }
}

/// The server URLs from `TEST_DATABASE_URLS` that this build can use.
pub fn server_urls() -> Vec<DatabaseUrl> {
    let Ok(list) = std::env::var("TEST_DATABASE_URLS") else {
        eprintln!("TEST_DATABASE_URLS is not set: only SQLite runs");
        return Vec::new();
    };
    let mut urls = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let url = DatabaseUrl::parse(raw)
            .unwrap_or_else(|e| panic!("bad URL in TEST_DATABASE_URLS: {e}"));
        if url.backend() == Backend::Sqlite {
            continue; // SQLite always runs on a fresh file
        }
        if built(url.backend()) {
            urls.push(url);
        } else {
            eprintln!(
                "skipping {url}: this build has no {} backend",
                url.backend()
            );
        }
    }
    urls
}

/// Unconnected databases for every backend, with `options`.
pub fn databases_with(options: &DatabaseOptions) -> Vec<TestDb> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("test.db");
    let sqlite = DatabaseUrl::parse(&format!("sqlite:///{}", path.display())).unwrap();
    let mut out = vec![TestDb {
        db: Database::with_options(&sqlite, options.clone()).unwrap(),
        label: sqlite.to_string(),
        url: sqlite,
        _dir: Some(dir),
    }];
    for url in server_urls() {
        out.push(TestDb {
            db: Database::with_options(&url, options.clone()).unwrap(),
            label: url.to_string(),
            url,
            _dir: None,
        });
    }
    out
}

/// Connected databases for every backend.
pub async fn databases() -> Vec<TestDb> {
    let mut out = databases_with(&DatabaseOptions::new());
    for t in &mut out {
        t.db.connect()
            .await
            .unwrap_or_else(|e| panic!("{}: connect: {e}", t.label));
    }
    out
}

impl TestDb {
    /// A connected database on `url` (a server's).
    pub async fn open(url: DatabaseUrl) -> Self {
        let db = Database::with_options(&url, DatabaseOptions::new()).unwrap();
        db.connect()
            .await
            .unwrap_or_else(|e| panic!("{url}: connect: {e}"));
        Self {
            db,
            label: url.to_string(),
            url,
            _dir: None,
        }
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Another `Database` on the same database, with other options.
    pub fn reopen(&self, options: DatabaseOptions) -> Database {
        Database::with_options(&self.url, options).unwrap()
    }

    /// An auto-incrementing integer primary key column in this backend's dialect.
    pub fn id_column(&self) -> &'static str {
        match self.db.backend() {
            Backend::Postgres => "id SERIAL PRIMARY KEY",
            Backend::Mysql => "id INTEGER PRIMARY KEY AUTO_INCREMENT",
            _ => "id INTEGER PRIMARY KEY AUTOINCREMENT",
        }
    }

    /// Drops `table` if it exists and creates it with `columns`.
    pub async fn recreate(&self, table: &str, columns: &str) {
        self.db
            .execute(&format!("DROP TABLE IF EXISTS {table}"), ())
            .await
            .unwrap_or_else(|e| panic!("{}: drop {table}: {e}", self.label));
        self.db
            .execute(&format!("CREATE TABLE {table} ({columns})"), ())
            .await
            .unwrap_or_else(|e| panic!("{}: create {table}: {e}", self.label));
    }

    /// `SELECT COUNT(*) FROM table`.
    pub async fn count(&self, table: &str) -> i64 {
        self.db
            .fetch_val::<i64>(&format!("SELECT COUNT(*) FROM {table}"), (), 0)
            .await
            .unwrap_or_else(|e| panic!("{}: count {table}: {e}", self.label))
            .expect("COUNT(*) returns a row")
    }

    /// A query that runs for a long time (seconds or more) and returns one row.
    pub fn slow_query(&self) -> &'static str {
        match self.db.backend() {
            Backend::Postgres => "SELECT pg_sleep(30)",
            Backend::Mysql => "SELECT SLEEP(30)",
            _ => {
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000000) \
                 SELECT COUNT(*) FROM n"
            }
        }
    }

    /// A query returning the integers 1..=n, streamed by the server.
    pub fn series(&self, n: u64) -> String {
        match self.db.backend() {
            // In the select list (not FROM) the series streams instead of being materialized.
            Backend::Postgres => format!("SELECT generate_series(1, {n}) AS i"),
            _ => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT i FROM n"
            ),
        }
    }
}
