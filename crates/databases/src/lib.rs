//! Simple, fast async access to SQL databases, configured by one URL.
//!
//! ```
//! use databases::{Database, params};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> databases::Result<()> {
//!     let db = Database::new("sqlite://")?; // an in-memory SQLite database
//!     db.connect().await?;
//!     db.execute("CREATE TABLE scores (name TEXT, score INTEGER)", ()).await?;
//!     db.execute_many(
//!         "INSERT INTO scores (name, score) VALUES (:name, :score)",
//!         [("Daisy", 92), ("Neil", 87), ("Carol", 43)]
//!             .map(|(name, score)| params! { "name" => name, "score" => score }),
//!     )
//!     .await?;
//!     for row in db.fetch_all("SELECT name, score FROM scores ORDER BY score DESC", ()).await? {
//!         println!("{}: {}", row.get::<String>("name")?, row.get::<i64>("score")?);
//!     }
//!     let mut tx = db.transaction().await?;
//!     tx.execute("DELETE FROM scores WHERE score < :min", params! { "min" => 50 }).await?;
//!     tx.commit().await?;
//!     db.disconnect().await
//! }
//! ```
//!
//! # What it does
//!
//! - One [`Database`] per URL: `postgresql://`, `mysql://`, `sqlite:///app.db`, `sqlite://`
//!   (in memory), with pool options in the query string
//!   (`?min_size=1&max_size=10&acquire_timeout=30`). See [`DatabaseUrl`] and
//!   [`DatabaseOptions`].
//! - Raw SQL with `:name` parameters on every database, rewritten to the database's own
//!   placeholders; values are always bound, never put into the SQL text. See [`params!`] and
//!   [`NamedParams`].
//! - [`Database::fetch_all`], [`Database::fetch_one`], [`Database::fetch_val`],
//!   [`Database::execute`], [`Database::execute_many`] and [`Database::iterate`], a stream that
//!   never holds more than a few hundred rows.
//! - [`Transaction`]s that nest through savepoints and roll back unless committed, plus a
//!   closure form, [`Database::transaction_with`].
//! - `force_rollback`: every call runs in one transaction that `disconnect` rolls back, for
//!   tests.
//! - One [`Error`] type with a portable [`ErrorKind`] (unique violation, pool timeout, missing
//!   parameter, ...).
//!
//! # SQLite
//!
//! Each connection runs on its own thread, so SQLite never blocks the async runtime. A file
//! database gets a pool of connections in WAL mode with a 5 second busy timeout; transactions
//! start with `BEGIN IMMEDIATE` so that concurrent writers wait for each other instead of
//! failing. An in-memory database is one connection shared by every caller. URL options:
//! `busy_timeout` (seconds), `journal_mode`, `synchronous`, `foreign_keys`, `mode`
//! (`ro`, `rw`, `rwc`, `memory`), `cache` (`shared`, `private`) and `transaction_mode`
//! (`deferred`, `immediate`, `exclusive`).
//!
//! Rows come back with SQLite's storage classes (integer, real, text, blob); ask for the type
//! you stored with [`Record::get`]: `row.get::<chrono::NaiveDate>("day")` parses the text.
//!
//! # PostgreSQL
//!
//! `postgresql://user:password@host:5432/db` (also `postgres://` and any `+driver` suffix).
//! Statements are prepared once per connection and cached; parameters take the type the
//! server declares for them, so an integer bound to a `numeric` or `float8` placeholder
//! works. URL options: `sslmode` (`disable`, `prefer` (the default, as libpq), `require`,
//! `verify-ca`, `verify-full`), `ssl=true|false`, `sslrootcert`, `statement_cache=false`
//! (for PgBouncer in transaction mode), `application_name`, `connect_timeout` and
//! `command_timeout` (seconds), and `host=/run/postgresql` for a unix socket. `execute`
//! returns the first column of the first row the statement returns (`RETURNING id`).
//!
//! Types decoded: bool, int2/4/8, oid, float4/8, numeric ([`Value::Decimal`], or its exact text
//! beyond 28 digits), text, varchar, char, name, citext, enums (text), bytea, date, time,
//! timetz, timestamp, timestamptz, interval, uuid, json, jsonb, domains, and arrays of these
//! (nested for more dimensions). Any other type is an error naming the column and the type.
//!
//! # MySQL and MariaDB
//!
//! `mysql://user:password@host:3306/db` (any `+driver` suffix). The binary protocol with a
//! statement cache per connection. URL options: `ssl=true|false`, `sslmode`
//! (`disable`, `require`, `verify-ca`, `verify-full`), `ssl_ca`, `unix_socket`, `charset`,
//! `statement_cache`, `connect_timeout` and `command_timeout`. `execute` returns the last
//! inserted id. `TIME` values beyond one day (or negative) come back as
//! [`Value::Interval`]; zero dates as NULL; a [`Value::DateTimeTz`] parameter is sent as
//! its UTC time. `execute_many` uses MariaDB's bulk execution (one round trip), and on MySQL
//! turns `INSERT ... VALUES (...)` into multi-row inserts.
//!
//! # Cancellation
//!
//! Dropping a future mid-call never hands a connection in an unknown state to the next user.
//! On SQLite, work that has not started is skipped, a statement running outside a transaction
//! is interrupted, and a dropped [`Transaction`] queues its rollback before the connection can
//! be reused. On PostgreSQL and MySQL the server is told to stop the statement (a cancel
//! request, `KILL QUERY`) and the connection is discarded; a dropped transaction's rollback
//! runs before the connection's next statement, or the connection is closed (which ends the
//! transaction on the server).
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | the SQLite backend (rusqlite with the bundled SQLite) |
//! | `serde` | no | [`Record::deserialize`] into structs, [`NamedParams::from_serialize`] from structs |
//! | `postgres` | no | the PostgreSQL backend (tokio-postgres; TLS with rustls and ring) |
//! | `mysql` | no | the MySQL / MariaDB backend (mysql_async; TLS with rustls and ring) |

mod backend;
mod config;
mod connection;
mod database;
#[cfg(feature = "serde")]
mod de;
mod error;
mod params;
mod pool;
mod query;
mod record;
#[cfg(feature = "sea-query")]
#[cfg_attr(docsrs, doc(cfg(feature = "sea-query")))]
pub mod sea;
mod stream;
mod transaction;
mod url;
mod value;

pub(crate) use config::Config;
pub use config::DatabaseOptions;
pub use connection::{Connection, ExecuteResult};
pub use database::{Database, IntoDatabaseUrl};
pub use error::{Error, ErrorKind, OptionalExtension, Result};
pub use params::{Dialect, IntoParams, NamedParams, Rewritten, rewrite};
pub use query::{Rendered, Sql};
pub use record::{ColumnIndex, Columns, Record};
pub use stream::RowStream;
pub use transaction::{IsolationLevel, Transaction, TransactionOptions};
pub use url::{Backend, DatabaseUrl};
pub use value::{FromValue, Value, ValueError};

/// The README's code runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// Re-exported so that users can name the types in [`Value`] without extra dependencies.
pub use chrono;
/// Re-exported: the decimal type of [`Value::Decimal`].
pub use rust_decimal;
/// The sea-query crate this one renders statements of (feature `sea-query`).
#[cfg(feature = "sea-query")]
pub use sea_query;
/// Re-exported: the JSON type of [`Value::Json`].
pub use serde_json;
/// Re-exported: the UUID type of [`Value::Uuid`].
pub use uuid;
