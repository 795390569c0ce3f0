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
//!   (in memory), with pool options in the query string. See [URLs and options](#urls-and-options).
//! - Raw SQL with `:name` parameters on every database, rewritten to the database's own
//!   placeholders; values are always bound, never put into the SQL text. See [`params!`] and
//!   [`NamedParams`]. With the `sea-query` feature, [sea-query statements](sea) too.
//! - [`Database::fetch_all`], [`Database::fetch_one`], [`Database::fetch_val`],
//!   [`Database::execute`], [`Database::execute_result`], [`Database::execute_many`] and
//!   [`Database::iterate`], a stream that never holds more than a few hundred rows. The same
//!   methods exist on a [`Connection`] and a [`Transaction`].
//! - [`Transaction`]s that nest through savepoints and roll back unless committed.
//! - `force_rollback` for tests, typed rows with serde, one [`Error`] type with a portable
//!   [`ErrorKind`].
//!
//! # URLs and options
//!
//! A URL names the database and carries its options in the query string; the same options
//! can be set in code with [`DatabaseOptions`] (which win over the URL's). An option a
//! database does not know is an error naming it, never silently ignored.
//!
//! | option | databases | meaning | default |
//! |---|---|---|---|
//! | `min_size`, `max_size` | all | connections the pool keeps open / opens at most | 1, 10 (1 and 1 in memory) |
//! | `acquire_timeout` | all | seconds to wait for a free connection, then [`ErrorKind::PoolTimeout`] | 30 |
//! | `pool_recycle` | all | seconds after which a connection is replaced | never |
//! | `disconnect_timeout` | all | seconds [`Database::disconnect`] waits for held connections | 10 |
//! | `force_rollback` | all | `true`: see [force_rollback](#force_rollback-for-tests) | `false` |
//! | `ssl`, `sslmode`, `sslrootcert` / `ssl_ca` | PostgreSQL, MySQL | TLS (rustls) | `prefer` on PostgreSQL |
//! | `statement_cache` | PostgreSQL, MySQL | `false` for PgBouncer in transaction mode | `true` |
//! | `connect_timeout`, `command_timeout` | PostgreSQL, MySQL | seconds to connect / to run one statement | |
//! | `application_name`, `host=/socket/dir` | PostgreSQL | | |
//! | `charset`, `unix_socket` | MySQL | | |
//! | `busy_timeout`, `journal_mode`, `synchronous`, `foreign_keys`, `mode`, `cache`, `transaction_mode` | SQLite | per-connection settings (`journal_mode=keep` leaves the file's own) | 5 s, `wal` for files |
//!
//! Each backend's own section below has the details.
//!
//! # Values and types
//!
//! Parameters and columns are [`Value`]s; [`Record::get`] converts a column to any type with
//! a [`FromValue`] impl (`i64`, `String`, `chrono` types, `Option<T>` for NULL, ...), and
//! parameters accept the same Rust types through `Into<Value>`.
//!
//! | [`Value`] | Rust | SQLite (stored as) | PostgreSQL | MySQL / MariaDB |
//! |---|---|---|---|---|
//! | `Null` | `Option::None` | NULL | NULL | NULL |
//! | `Bool` | `bool` | INTEGER 0/1 | boolean | TINYINT(1), BOOLEAN |
//! | `Int` | `i8`..`i64`, `u8`..`u32` | INTEGER | int2, int4, int8, oid | TINYINT..BIGINT, YEAR, BIT |
//! | `UInt` | `u64` | INTEGER up to `i64::MAX` | numeric | BIGINT UNSIGNED |
//! | `Float` | `f32`, `f64` | REAL | float4, float8 | FLOAT, DOUBLE |
//! | `Decimal` | [`rust_decimal::Decimal`] | TEXT | numeric (exact text beyond 28 digits) | DECIMAL |
//! | `Text` | `String`, `&str` | TEXT | text, varchar, char, name, citext, enums | CHAR, VARCHAR, TEXT, ENUM, SET |
//! | `Bytes` | `Vec<u8>`, `&[u8]` | BLOB | bytea | BINARY, VARBINARY, BLOB |
//! | `Date` | `chrono::NaiveDate` | TEXT `2024-01-31` | date | DATE |
//! | `Time` | `chrono::NaiveTime` | TEXT | time | TIME (within a day) |
//! | `TimeTz` | | TEXT | timetz | |
//! | `DateTime` | `chrono::NaiveDateTime` | TEXT | timestamp | DATETIME, TIMESTAMP |
//! | `DateTimeTz` | `chrono::DateTime<FixedOffset \| Utc>` | TEXT with offset | timestamptz | sent as UTC |
//! | `Uuid` | [`uuid::Uuid`] | TEXT (hyphenated) | uuid | CHAR(36) / BINARY(16) |
//! | `Json` | [`serde_json::Value`] | TEXT | json, jsonb | JSON |
//! | `Interval` | | | interval | TIME beyond a day |
//! | `Array` | `Vec<T>` | | one-dimensional arrays | |
//!
//! SQLite returns its storage classes (integer, real, text, blob); ask for the type you
//! stored and [`Record::get`] converts (`row.get::<chrono::NaiveDate>("day")` parses the text).
//! A type no conversion covers is an error naming the column and the type, never a panic.
//!
//! # Transactions and savepoints
//!
//! [`Database::transaction`] takes a connection and runs `BEGIN`; [`Connection::transaction`]
//! does so on a connection you hold, and a transaction started inside another one is a
//! savepoint. Each rolls back unless [`Transaction::commit`] is called, also when it is
//! dropped by an early return, a `?` or a panic. [`Database::transaction_with`] runs a
//! closure and commits when it returns `Ok`. [`TransactionOptions`] sets the isolation level
//! and read-only mode where the database has them. An error inside a transaction leaves it
//! usable: roll back to a savepoint, or the whole transaction, and go on.
//!
//! ```
//! # async fn demo(db: &databases::Database) -> databases::Result<()> {
//! let mut tx = db.transaction().await?;
//! tx.execute("INSERT INTO notes (text) VALUES ('kept')", ()).await?;
//! {
//!     let mut inner = tx.transaction().await?; // SAVEPOINT
//!     inner.execute("INSERT INTO notes (text) VALUES ('undone')", ()).await?;
//!     inner.rollback().await?; // ROLLBACK TO SAVEPOINT
//! }
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! # force_rollback for tests
//!
//! With `force_rollback=true` (URL) or [`DatabaseOptions::force_rollback`], `connect` opens
//! one connection and a transaction on it; every call shares that connection, transactions
//! become savepoints, and `disconnect` rolls everything back. A test suite can then write
//! freely and leave the database as it found it.
//!
//! ```
//! # async fn demo() -> databases::Result<()> {
//! let db = databases::Database::new("sqlite:///test.db?force_rollback=true")?;
//! db.connect().await?;
//! db.execute("INSERT INTO notes (text) VALUES ('temporary')", ()).await?;
//! db.disconnect().await?; // the insert is rolled back
//! # Ok(()) }
//! ```
//!
//! # Streaming with iterate
//!
//! [`Database::iterate`] and [`Connection::iterate`] return a [`RowStream`] that reads rows
//! as they arrive, a few hundred at a time, so a million-row result never sits in memory.
//! A stream from the `Database` holds a pooled connection of its own: queries inside the loop
//! go to other connections. A stream from a `Connection` borrows it, so the compiler rules
//! out a query on that connection while the stream is alive (a runtime deadlock in other
//! libraries). Dropping a stream early stops its statement (`Database`), or reads and drops
//! the rest so the connection stays usable (`Connection`; see [`RowStream::cancel`] to stop
//! instead).
//!
//! # Query builder
//!
//! With the `sea-query` feature every query method also takes a sea-query statement
//! (select, insert, update, delete, create table and the other schema statements), rendered
//! for the connected database with its values bound. See the [`sea`] module.
//!
//! # Typed rows
//!
//! With the `serde` feature, [`Record::deserialize`] turns a row into any `Deserialize`
//! struct (by column name), and [`NamedParams::from_serialize`] turns a `Serialize` struct
//! into named parameters. Both work with query-builder statements too.
//!
//! # Errors
//!
//! Every call returns [`Result`], whose [`Error`] has a [`kind`](Error::kind) that means the
//! same on every database, a message in the database's own words, and, for errors the
//! database reported, its code ([`Error::code`]: the SQLSTATE on PostgreSQL, the error number
//! on MySQL, the extended result code on SQLite) and message ([`Error::db_message`]).
//!
//! | [`ErrorKind`] | when |
//! |---|---|
//! | `Url`, `Config` | a malformed URL, an unknown scheme or option, a bad option value |
//! | `Connect`, `ConnectionLost` | a connection could not be opened, or went away |
//! | `PoolTimeout` | no connection became free within `acquire_timeout` (the message names `max_size`) |
//! | `NotConnected` | a call before `connect`, after `disconnect`, or on a connection `disconnect` closed |
//! | `UniqueViolation`, `ForeignKeyViolation`, `NotNullViolation`, `CheckViolation` | a constraint rejected the statement |
//! | `Syntax`, `Database` | the database rejected the SQL, or failed otherwise |
//! | `MissingParameter`, `InvalidParameter` | a `:name` without a value, a value the database cannot take |
//! | `ColumnNotFound`, `Decode` | reading a record: no such column, or a value of another type |
//! | `Transaction` | a transaction used out of order |
//!
//! Passwords never appear in messages: URLs are shown with the password masked.
//!
//! # SQLite
//!
//! Each connection runs on its own thread, so writes and long reads never block the async
//! runtime. A short read runs inline on the caller's thread when nothing is queued for the
//! connection, which saves two thread wakes: it has a budget of 250 µs and never waits on a
//! lock; past either it goes to the connection's thread as usual. A file
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
//! (for PgBouncer in transaction mode: each statement then goes unprepared, in one round
//! trip, its values in text form for the server to read as the types it needs),
//! `application_name`, `connect_timeout` and
//! `command_timeout` (seconds), and `host=/run/postgresql` for a unix socket. `execute`
//! returns the first column of the first row the statement returns (`RETURNING id`).
//! `execute_many` turns `INSERT ... VALUES (...)` (nothing after the tuple) into multi-row
//! inserts of up to 1,000 rows, and sends any other statement once per row, pipelined; both
//! in one round trip's worth of messages. A `FOR EACH STATEMENT` trigger on the table then
//! fires once per multi-row insert, not once per row.
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
//! its UTC time. `execute_many` turns `INSERT ... VALUES (...)` into multi-row inserts of at
//! most about 32 KB each, and sends other statements with MariaDB's bulk execution. A transaction's
//! `START TRANSACTION` goes with its first statement; when that is an `INSERT`, `REPLACE`,
//! `UPDATE` or `DELETE` whose values can be written into the SQL, in the same round trip, as
//! one text query.
//!
//! # Cancellation
//!
//! Dropping a future mid-call never hands a connection in an unknown state to the next user.
//! On SQLite, work that has not started is skipped, a statement running outside a transaction
//! (or one that only reads, inside one) is interrupted, a wait for another connection's lock
//! ends, and a dropped [`Transaction`] queues its rollback before the connection can be
//! reused. On PostgreSQL and MySQL the server is told to stop the statement (a cancel
//! request, `KILL QUERY`) and the connection is discarded; a dropped transaction's rollback
//! runs before the connection's next statement, or the connection is closed (which ends the
//! transaction on the server). A stream from [`Connection::iterate`] is the exception: see
//! [Streaming with iterate](#streaming-with-iterate).
//!
//! [`Database::disconnect`] waits up to `disconnect_timeout` for connections that callers
//! still hold, then closes them: a statement running on one stops, and its holder gets
//! [`ErrorKind::NotConnected`] instead of a hang.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | the SQLite backend (rusqlite with the bundled SQLite) |
//! | `serde` | no | [`Record::deserialize`] into structs, [`NamedParams::from_serialize`] from structs |
//! | `postgres` | no | the PostgreSQL backend (tokio-postgres; TLS with rustls and ring) |
//! | `mysql` | no | the MySQL / MariaDB backend (mysql_async; TLS with rustls and ring) |
//! | `sea-query` | no | query methods take [sea-query](https://docs.rs/sea-query) statements; see [`sea`] |

// The core has no unsafe code, and must keep it that way (the workspace only denies it, so
// that the Python binding can allow it where PyO3 has no safe API).
#![forbid(unsafe_code)]

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

/// A per-connection cache keyed by SQL text. Looked up on every statement: hashed with
/// foldhash (seeded per map) rather than SipHash, which took ~300 instructions a statement
/// for the two lookups of a PostgreSQL query.
pub(crate) type SqlMap<V> = std::collections::HashMap<Box<str>, V, foldhash::fast::RandomState>;
pub use config::DatabaseOptions;
pub use connection::{Connection, ExecuteResult};
pub use database::{Database, IntoDatabaseUrl, PoolState};
pub use error::{Error, ErrorKind, OptionalExtension, Result};
pub use params::{Dialect, IntoParams, NamedParams, Rewritten, rewrite};
pub use query::{Rendered, Sql};
pub use record::{ColumnIndex, Columns, Record};
pub use stream::RowStream;
pub use transaction::{IsolationLevel, Transaction, TransactionOptions};
pub use url::{Backend, DatabaseUrl};
pub use value::{FromValue, MAX_NESTING, Value, ValueError};

/// The README's code runs as a doctest (it uses the `sea-query` feature; the test command
/// runs with all features).
#[cfg(all(doctest, feature = "sea-query"))]
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
