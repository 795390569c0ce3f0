//! Benchmarks `databases` against the driver underneath it (tokio-postgres, mysql_async,
//! rusqlite) and sqlx, in one process, on the same server and data.
//!
//! ```text
//! BENCH_DATABASE_URLS="$(scripts/services)" cargo run --release -p databases-bench
//! ```
//!
//! Takes its URLs from `BENCH_DATABASE_URLS`, else `TEST_DATABASE_URLS`; SQLite always runs
//! (on a file in a temporary directory). Each figure is the best of eight runs of the
//! workload, runs of ours and of the raw driver alternating; the ratio is our time over the
//! raw driver's (1.00 = as fast, below 1 = faster).
//!
//! Built with `--features mimalloc` (`BENCH_MIMALLOC=1 scripts/bench`), the whole process
//! allocates with mimalloc instead of the system allocator, for ours and the raw drivers
//! alike.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use databases::{Backend, Database, DatabaseOptions, DatabaseUrl, NamedParams, Value, params};
use tokio_postgres::types::ToSql;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator this build uses, for the report's header.
const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "the system allocator"
};

const KEYS: i64 = 10_000;
const POOL: u32 = 10;
const TASKS: usize = 32;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T = ()> = Result<T, BoxError>;

/// One workload's figures for each implementation.
struct Row {
    workload: &'static str,
    unit: &'static str,
    ours: f64,
    raw: f64,
    sqlx: Option<f64>,
}

/// How many times each workload runs on each side; the best time counts.
const ROUNDS: usize = 8;

/// The workloads, in report order.
const SEQUENTIAL: usize = 0;
const FETCH_ALL: usize = 1;
const EXECUTE_MANY: usize = 2;
const TRANSACTIONS: usize = 3;
const CONCURRENT: usize = 4;
const WORKLOADS: usize = 5;

/// One side of the comparison: `run(w)` runs workload `w` once (its whole loop) and returns
/// its wall time.
trait Workloads {
    async fn run(&mut self, w: usize) -> Res<Duration>;
}

/// The wall time of `f`.
async fn timed(f: impl Future<Output = Res>) -> Res<Duration> {
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed())
}

/// Runs each workload `ROUNDS` times on both sides, one run of ours next to one run of
/// theirs (who goes first alternates), and keeps each side's best time. Drift on a busy
/// machine (the servers share it; load comes and goes within seconds) then reaches both
/// sides alike instead of favouring whichever ran in the quiet moment.
async fn compare(
    ours: &mut impl Workloads,
    raw: &mut impl Workloads,
) -> Res<([Duration; WORKLOADS], [Duration; WORKLOADS])> {
    let mut best = ([Duration::MAX; WORKLOADS], [Duration::MAX; WORKLOADS]);
    for w in 0..WORKLOADS {
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                best.0[w] = best.0[w].min(ours.run(w).await?);
                best.1[w] = best.1[w].min(raw.run(w).await?);
            } else {
                best.1[w] = best.1[w].min(raw.run(w).await?);
                best.0[w] = best.0[w].min(ours.run(w).await?);
            }
        }
    }
    Ok(best)
}

fn per_second(count: usize, took: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "counts are small")]
    let count = count as f64;
    count / took.as_secs_f64()
}

/// The workloads, sized per backend (SQLite is in process and much faster per call).
#[derive(Clone, Copy)]
struct Sizes {
    sequential: usize,
    fetch_rounds: usize,
    many_rows: usize,
    transactions: usize,
    concurrent_each: usize,
}

/// Runs `task(t)` for each of the `TASKS` concurrent tasks, each spawned on the runtime, and
/// waits for them all.
async fn in_tasks<F, Fut>(task: F) -> Res
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Res> + Send + 'static,
{
    let tasks: Vec<_> = (0..TASKS).map(|t| tokio::spawn(task(t))).collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn sizes(backend: Backend) -> Sizes {
    match backend {
        Backend::Sqlite => Sizes {
            sequential: 20_000,
            fetch_rounds: 20,
            many_rows: 5_000,
            transactions: 1_000,
            concurrent_each: 500,
        },
        _ => Sizes {
            sequential: 2_000,
            fetch_rounds: 10,
            many_rows: 5_000,
            transactions: 1_000,
            concurrent_each: 100,
        },
    }
}

fn key(i: usize) -> i64 {
    #[allow(clippy::cast_possible_wrap, reason = "i is small")]
    let i = i as i64;
    i * 7919 % KEYS + 1
}

async fn prepare_data(db: &Database) -> Res {
    let backend = db.backend();
    db.execute("DROP TABLE IF EXISTS bench_read", ()).await?;
    db.execute("DROP TABLE IF EXISTS bench_write", ()).await?;
    let (bool_type, ts_type, id_auto) = match backend {
        Backend::Postgres => ("BOOLEAN", "TIMESTAMP", "SERIAL PRIMARY KEY"),
        Backend::Mysql => ("BOOLEAN", "DATETIME", "INTEGER PRIMARY KEY AUTO_INCREMENT"),
        _ => ("BOOLEAN", "TIMESTAMP", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    };
    db.execute(
        &format!(
            "CREATE TABLE bench_read (id INTEGER PRIMARY KEY, name VARCHAR(50), score DOUBLE PRECISION, \
             active {bool_type}, created {ts_type})"
        ),
        (),
    )
    .await?;
    db.execute(
        &format!(
            "CREATE TABLE bench_write (id {id_auto}, name VARCHAR(50), score DOUBLE PRECISION)"
        ),
        (),
    )
    .await?;
    let base = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    db.execute_many(
        "INSERT INTO bench_read (id, name, score, active, created) VALUES (:id, :name, :score, :active, :created)",
        (1..=KEYS).map(|i| {
            #[allow(clippy::cast_precision_loss, reason = "small ids")]
            let score = i as f64 * 0.5;
            params! {
                "id" => i, "name" => format!("name {i}"), "score" => score,
                "active" => i % 2 == 0, "created" => base + chrono::Duration::seconds(i),
            }
        }),
    )
    .await?;
    Ok(())
}

// ---------- ours ----------

struct Ours {
    db: Database,
    s: Sizes,
}

impl Workloads for Ours {
    async fn run(&mut self, w: usize) -> Res<Duration> {
        let (db, s) = (&self.db, self.s);
        let one = "SELECT id, name, score, active, created FROM bench_read WHERE id = :id";
        let all = "SELECT id, name, score, active, created FROM bench_read";
        match w {
            SEQUENTIAL => {
                timed(async {
                    for i in 0..s.sequential {
                        let row = db
                            .fetch_one(one, params! { "id" => key(i) })
                            .await?
                            .ok_or("no row")?;
                        let _: i64 = row.get(0)?;
                    }
                    Ok(())
                })
                .await
            }
            FETCH_ALL => {
                timed(async {
                    for _ in 0..s.fetch_rounds {
                        let rows = db.fetch_all(all, ()).await?;
                        let mut sum = 0.0;
                        for row in &rows {
                            sum += row.get::<f64>(2)?;
                        }
                        assert!(rows.len() == usize::try_from(KEYS)? && sum > 0.0);
                    }
                    Ok(())
                })
                .await
            }
            EXECUTE_MANY => {
                timed(async {
                    db.execute("DELETE FROM bench_write", ()).await?;
                    #[allow(clippy::cast_precision_loss, reason = "small")]
                    let rows: Vec<NamedParams> = (0..s.many_rows)
                        .map(|i| params! { "name" => format!("n{i}"), "score" => i as f64 })
                        .collect();
                    db.execute_many(
                        "INSERT INTO bench_write (name, score) VALUES (:name, :score)",
                        rows,
                    )
                    .await?;
                    Ok(())
                })
                .await
            }
            TRANSACTIONS => {
                timed(async {
                    for i in 0..s.transactions {
                        let mut tx = db.transaction().await?;
                        tx.execute(
                            "INSERT INTO bench_write (name, score) VALUES (:name, :score)",
                            params! {
                                "name" => "tx",
                                "score" => Value::Float(f64::from(u32::try_from(i)?)),
                            },
                        )
                        .await?;
                        tx.commit().await?;
                    }
                    Ok(())
                })
                .await
            }
            _ => {
                timed(in_tasks(|t| {
                    let db = db.clone();
                    async move {
                        for i in 0..s.concurrent_each {
                            let row = db
                                .fetch_one(one, params! { "id" => key(t * 1000 + i) })
                                .await?
                                .ok_or("no row")?;
                            let _: i64 = row.get(0)?;
                        }
                        Ok::<_, BoxError>(())
                    }
                }))
                .await
            }
        }
    }
}

// ---------- tokio-postgres ----------

type PgClient = Arc<(tokio_postgres::Client, tokio_postgres::Statement)>;

/// The raw tokio-postgres client, its statements prepared once, and ten more clients for
/// the 32 tasks.
struct RawPostgres {
    client: tokio_postgres::Client,
    one: tokio_postgres::Statement,
    all: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
    /// Ten clients, each with `one` prepared, shared by the 32 tasks as a pool of ten would
    /// be.
    clients: Vec<PgClient>,
    /// The same clients as a minimal pool: each used by one task at a time.
    free: Arc<tokio::sync::Mutex<Vec<PgClient>>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// The best time of the 32 tasks on the minimal pool (run after each shared-client run).
    checked_out: Duration,
    s: Sizes,
}

fn read_pg_row(row: &tokio_postgres::Row) {
    let _: (i32, String, f64, bool, NaiveDateTime) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
}

impl RawPostgres {
    async fn connect(url: &DatabaseUrl) -> Res<tokio_postgres::Client> {
        let (client, conn) =
            tokio_postgres::connect(&pg_conninfo(url), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn new(url: &DatabaseUrl, s: Sizes) -> Res<Self> {
        let client = Self::connect(url).await?;
        let one = "SELECT id, name, score, active, created FROM bench_read WHERE id = $1";
        let (one_stmt, all, insert) = (
            client.prepare(one).await?,
            client
                .prepare("SELECT id, name, score, active, created FROM bench_read")
                .await?,
            client
                .prepare("INSERT INTO bench_write (name, score) VALUES ($1, $2)")
                .await?,
        );
        let mut clients = Vec::new();
        for _ in 0..POOL {
            let c = Self::connect(url).await?;
            let stmt = c.prepare(one).await?;
            clients.push(Arc::new((c, stmt)));
        }
        Ok(Self {
            client,
            one: one_stmt,
            all,
            insert,
            free: Arc::new(tokio::sync::Mutex::new(clients.clone())),
            clients,
            permits: Arc::new(tokio::sync::Semaphore::new(usize::try_from(POOL)?)),
            checked_out: Duration::MAX,
            s,
        })
    }

    /// The 32 tasks, each taking a client from the minimal pool for every query.
    async fn checked_out_run(&self) -> Res<Duration> {
        let s = self.s;
        timed(in_tasks(|t| {
            let (free, permits) = (self.free.clone(), self.permits.clone());
            async move {
                for i in 0..s.concurrent_each {
                    let id = i32::try_from(key(t * 1000 + i))?;
                    let _permit = permits.acquire().await?;
                    let pair = free.lock().await.pop().ok_or("no free client")?;
                    let row = pair.0.query_one(&pair.1, &[&id]).await;
                    free.lock().await.push(pair);
                    read_pg_row(&row?);
                }
                Ok::<_, BoxError>(())
            }
        }))
        .await
    }
}

impl Workloads for RawPostgres {
    async fn run(&mut self, w: usize) -> Res<Duration> {
        let s = self.s;
        let c = &self.client;
        match w {
            SEQUENTIAL => {
                timed(async {
                    for i in 0..s.sequential {
                        let id = i32::try_from(key(i))?;
                        read_pg_row(&c.query_one(&self.one, &[&id]).await?);
                    }
                    Ok(())
                })
                .await
            }
            FETCH_ALL => {
                timed(async {
                    for _ in 0..s.fetch_rounds {
                        let rows = c.query(&self.all, &[]).await?;
                        rows.iter().for_each(read_pg_row);
                    }
                    Ok(())
                })
                .await
            }
            EXECUTE_MANY => {
                timed(async {
                    c.batch_execute("DELETE FROM bench_write").await?;
                    c.batch_execute("BEGIN").await?;
                    let names: Vec<String> = (0..s.many_rows).map(|i| format!("n{i}")).collect();
                    #[allow(clippy::cast_precision_loss, reason = "small")]
                    let scores: Vec<f64> = (0..s.many_rows).map(|i| i as f64).collect();
                    // Pipelined: every INSERT is sent before the first answer is awaited.
                    futures_util::future::try_join_all(names.iter().zip(&scores).map(|(n, sc)| {
                        c.execute_raw(
                            &self.insert,
                            [n as &(dyn ToSql + Sync), sc as &(dyn ToSql + Sync)],
                        )
                    }))
                    .await?;
                    c.batch_execute("COMMIT").await?;
                    Ok(())
                })
                .await
            }
            TRANSACTIONS => {
                let start = Instant::now();
                for i in 0..s.transactions {
                    let tx = self.client.transaction().await?;
                    tx.execute(&self.insert, &[&"tx", &f64::from(u32::try_from(i)?)])
                        .await?;
                    tx.commit().await?;
                }
                Ok(start.elapsed())
            }
            _ => {
                let shared = timed(in_tasks(|t| {
                    let pair = self.clients[t % self.clients.len()].clone();
                    async move {
                        for i in 0..s.concurrent_each {
                            let id = i32::try_from(key(t * 1000 + i))?;
                            // The whole row decoded, as in the sequential loop and as ours
                            // does.
                            read_pg_row(&pair.0.query_one(&pair.1, &[&id]).await?);
                        }
                        Ok::<_, BoxError>(())
                    }
                }))
                .await?;
                let checked_out = self.checked_out_run().await?;
                self.checked_out = self.checked_out.min(checked_out);
                Ok(shared)
            }
        }
    }
}

fn pg_conninfo(url: &DatabaseUrl) -> String {
    let mut s = format!(
        "host={} port={} dbname={} user={}",
        url.hostname().unwrap_or("localhost"),
        url.port().unwrap_or(5432),
        url.database(),
        url.username().as_deref().unwrap_or("postgres")
    );
    if let Some(p) = url.password() {
        s.push_str(&format!(" password={p}"));
    }
    s
}

// ---------- mysql_async ----------

fn my_opts(url: &DatabaseUrl) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(url.hostname().unwrap_or("localhost"))
        .tcp_port(url.port().unwrap_or(3306))
        .user(url.username().map(|u| u.into_owned()))
        .pass(url.password().map(|p| p.into_owned()))
        .db_name(Some(url.database().into_owned()))
        .prefer_socket(false)
        .into()
}

/// Reads a row into typed values, as the other raw runs (and ours) do: the date through
/// chrono, as this build of mysql_async has no chrono conversions of its own.
fn read_mysql_row(row: mysql_async::Row) -> Res {
    let (_, _, _, _, created): (i64, String, f64, bool, mysql_async::Value) =
        mysql_async::from_row_opt(row).map_err(|e| e.to_string())?;
    let mysql_async::Value::Date(y, mo, d, h, mi, s, us) = created else {
        return Err("created is not a date".into());
    };
    let _: NaiveDateTime = chrono::NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
        .and_then(|date| date.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
        .ok_or("invalid date")?;
    Ok(())
}

/// One raw mysql_async connection, and the driver's own pool of ten for the 32 tasks.
struct RawMysql {
    conn: mysql_async::Conn,
    pool: mysql_async::Pool,
    s: Sizes,
}

impl RawMysql {
    async fn new(url: &DatabaseUrl, s: Sizes) -> Res<Self> {
        let conn = mysql_async::Conn::new(my_opts(url)).await?;
        let pool = mysql_async::Pool::new(
            mysql_async::OptsBuilder::from_opts(my_opts(url)).pool_opts(
                mysql_async::PoolOpts::default()
                    .with_constraints(mysql_async::PoolConstraints::new(1, 10).unwrap()),
            ),
        );
        Ok(Self { conn, pool, s })
    }

    async fn close(self) -> Res {
        self.conn.disconnect().await?;
        self.pool.disconnect().await?;
        Ok(())
    }
}

impl Workloads for RawMysql {
    async fn run(&mut self, w: usize) -> Res<Duration> {
        use mysql_async::prelude::Queryable;
        let one = "SELECT id, name, score, active, created FROM bench_read WHERE id = ?";
        let all = "SELECT id, name, score, active, created FROM bench_read";
        let insert = "INSERT INTO bench_write (name, score) VALUES (?, ?)";
        let (c, s) = (&mut self.conn, self.s);
        let start = Instant::now();
        match w {
            SEQUENTIAL => {
                for i in 0..s.sequential {
                    let row: mysql_async::Row =
                        c.exec_first(one, (key(i),)).await?.ok_or("no row")?;
                    read_mysql_row(row)?;
                }
            }
            FETCH_ALL => {
                for _ in 0..s.fetch_rounds {
                    let rows: Vec<mysql_async::Row> = c.exec(all, ()).await?;
                    rows.into_iter().try_for_each(read_mysql_row)?;
                }
            }
            EXECUTE_MANY => {
                // Timed with the DELETE before it, as every other client's execute_many is.
                c.query_drop("DELETE FROM bench_write").await?;
                c.query_drop("START TRANSACTION").await?;
                #[allow(clippy::cast_precision_loss, reason = "small")]
                c.exec_batch(
                    insert,
                    (0..s.many_rows).map(|i| (format!("n{i}"), i as f64)),
                )
                .await?;
                c.query_drop("COMMIT").await?;
            }
            TRANSACTIONS => {
                for i in 0..s.transactions {
                    let mut tx = c.start_transaction(mysql_async::TxOpts::default()).await?;
                    tx.exec_drop(insert, ("tx", f64::from(u32::try_from(i)?)))
                        .await?;
                    tx.commit().await?;
                }
            }
            _ => {
                let pool = &self.pool;
                in_tasks(|t| {
                    let pool = pool.clone();
                    async move {
                        for i in 0..s.concurrent_each {
                            let mut conn = pool.get_conn().await?;
                            let row: mysql_async::Row = conn
                                .exec_first(one, (key(t * 1000 + i),))
                                .await?
                                .ok_or("no row")?;
                            read_mysql_row(row)?;
                        }
                        Ok::<_, BoxError>(())
                    }
                })
                .await?;
            }
        }
        Ok(start.elapsed())
    }
}

// ---------- rusqlite ----------

type SqliteConn = Arc<Mutex<rusqlite::Connection>>;

/// Raw rusqlite connections, called the way async code must: on the blocking pool, never on
/// a runtime worker.
struct RawSqlite {
    conn: SqliteConn,
    /// Ten connections for the 32 tasks.
    pool: Vec<SqliteConn>,
    s: Sizes,
}

const SQLITE_ONE: &str = "SELECT id, name, score, active, created FROM bench_read WHERE id = ?1";

fn read_sqlite_row(r: &rusqlite::Row) -> rusqlite::Result<()> {
    let _: (i64, String, f64, bool, String) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    Ok(())
}

impl RawSqlite {
    fn new(path: &str, s: Sizes) -> Res<Self> {
        let open = || -> Res<SqliteConn> {
            let c = rusqlite::Connection::open(path)?;
            c.busy_timeout(Duration::from_secs(5))?;
            c.query_row("PRAGMA journal_mode = wal", [], |_| Ok(()))?;
            Ok(Arc::new(Mutex::new(c)))
        };
        Ok(Self {
            conn: open()?,
            pool: (0..POOL).map(|_| open()).collect::<Res<_>>()?,
            s,
        })
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn call(&self, f: impl FnOnce(&mut rusqlite::Connection) -> Res + Send + 'static) -> Res {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap())).await?
    }
}

impl Workloads for RawSqlite {
    async fn run(&mut self, w: usize) -> Res<Duration> {
        let s = self.s;
        let start = Instant::now();
        match w {
            SEQUENTIAL => {
                for i in 0..s.sequential {
                    self.call(move |c| {
                        Ok(c.prepare_cached(SQLITE_ONE)?
                            .query_row([key(i)], read_sqlite_row)?)
                    })
                    .await?;
                }
            }
            FETCH_ALL => {
                for _ in 0..s.fetch_rounds {
                    let conn = self.conn.clone();
                    // Collected, as fetch_all does, and handed back to the caller, which
                    // reads one field of each row and drops them: what our run and the other
                    // raw drivers' runs do with the rows.
                    type Row5 = (i64, String, f64, bool, String);
                    let rows = tokio::task::spawn_blocking(move || -> Res<Vec<Row5>> {
                        let c = conn.lock().unwrap();
                        let mut stmt = c.prepare_cached(
                            "SELECT id, name, score, active, created FROM bench_read",
                        )?;
                        let rows = stmt
                            .query_map([], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                            })?
                            .collect::<rusqlite::Result<_>>()?;
                        Ok(rows)
                    })
                    .await??;
                    let sum: f64 = rows.iter().map(|r| r.2).sum();
                    assert!(rows.len() == 10_000 && sum > 0.0);
                }
            }
            EXECUTE_MANY => {
                self.call(move |c| {
                    c.execute("DELETE FROM bench_write", [])?;
                    let tx = c.transaction()?;
                    {
                        let mut stmt = tx.prepare_cached(
                            "INSERT INTO bench_write (name, score) VALUES (?1, ?2)",
                        )?;
                        for i in 0..s.many_rows {
                            #[allow(clippy::cast_precision_loss, reason = "small")]
                            stmt.execute(rusqlite::params![format!("n{i}"), i as f64])?;
                        }
                    }
                    tx.commit()?;
                    Ok(())
                })
                .await?;
            }
            TRANSACTIONS => {
                for i in 0..s.transactions {
                    self.call(move |c| {
                        let tx =
                            c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        tx.prepare_cached("INSERT INTO bench_write (name, score) VALUES (?1, ?2)")?
                            .execute(rusqlite::params!["tx", f64::from(u32::try_from(i)?)])?;
                        tx.commit()?;
                        Ok(())
                    })
                    .await?;
                }
            }
            _ => {
                let pool = &self.pool;
                in_tasks(|t| {
                    let conn = pool[t % pool.len()].clone();
                    async move {
                        for i in 0..s.concurrent_each {
                            let conn = conn.clone();
                            tokio::task::spawn_blocking(move || -> Res {
                                Ok(conn
                                    .lock()
                                    .unwrap()
                                    .prepare_cached(SQLITE_ONE)?
                                    .query_row([key(t * 1000 + i)], read_sqlite_row)?)
                            })
                            .await??;
                        }
                        Ok::<_, BoxError>(())
                    }
                })
                .await?;
            }
        }
        Ok(start.elapsed())
    }
}

// ---------- sqlx (a child process: see benches/sqlx) ----------

/// Builds and runs `benches/sqlx` on `url` with the same sizes; it prints five durations.
fn run_sqlx(url: &DatabaseUrl, s: Sizes) -> Res<Option<[Duration; 5]>> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../sqlx/Cargo.toml");
    let output =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args([
                "run",
                "--quiet",
                "--release",
                "--manifest-path",
                manifest,
                "--",
            ])
            .arg(url.as_str())
            .args(
                [
                    s.sequential,
                    s.fetch_rounds,
                    s.many_rows,
                    s.transactions,
                    s.concurrent_each,
                    TASKS,
                    POOL as usize,
                ]
                .map(|n| n.to_string()),
            )
            .stderr(std::process::Stdio::inherit())
            .output()?;
    if !output.status.success() {
        eprintln!("sqlx run failed for {url}; its column is left out");
        return Ok(None);
    }
    let text = String::from_utf8(output.stdout)?;
    let secs: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let secs: [f64; 5] = secs
        .try_into()
        .map_err(|_| "sqlx run printed the wrong number of figures")?;
    Ok(Some(secs.map(Duration::from_secs_f64)))
}

fn report(label: &str, rows: &[Row]) {
    println!("\n## {label}\n");
    println!("| workload | unit | databases | raw driver | time vs raw | sqlx | time vs sqlx |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let (sqlx, vs_sqlx) = match r.sqlx {
            Some(x) => (format!("{x:.0}"), format!("{:.2}", x / r.ours)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {sqlx} | {vs_sqlx} |",
            r.workload,
            r.unit,
            r.ours,
            r.raw,
            r.raw / r.ours
        );
    }
}

fn rows_from(
    s: Sizes,
    ours: [Duration; 5],
    raw: [Duration; 5],
    sqlx: Option<[Duration; 5]>,
) -> Vec<Row> {
    let counts = [
        ("fetch_one by key, sequential", "rows/s", s.sequential),
        (
            "fetch_all 10,000 rows x 5 columns",
            "rows/s",
            s.fetch_rounds * 10_000,
        ),
        ("execute_many 5,000 rows", "rows/s", s.many_rows),
        ("single-insert transactions", "tx/s", s.transactions),
        (
            "32 tasks fetch_one by key, pool 10",
            "rows/s",
            TASKS * s.concurrent_each,
        ),
    ];
    counts
        .iter()
        .enumerate()
        .map(|(i, (workload, unit, n))| Row {
            workload,
            unit,
            ours: per_second(*n, ours[i]),
            raw: per_second(*n, raw[i]),
            sqlx: sqlx.map(|x| per_second(*n, x[i])),
        })
        .collect()
}

#[tokio::main]
async fn main() -> Res {
    let list = std::env::var("BENCH_DATABASE_URLS")
        .or_else(|_| std::env::var("TEST_DATABASE_URLS"))
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("databases-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite_path = dir.join("bench.db");
    let mut urls = vec![DatabaseUrl::parse(&format!(
        "sqlite:///{}",
        sqlite_path.display()
    ))?];
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut url = DatabaseUrl::parse(raw)?;
        // The raw driver and sqlx run without TLS here: compare on the same transport.
        if url.backend() == Backend::Postgres
            && url.option("ssl").is_none()
            && url.option("sslmode").is_none()
        {
            let mut options = url.options().to_vec();
            options.push(("sslmode".to_owned(), "disable".to_owned()));
            url = url.with_options(options)?;
        }
        if url.backend() != Backend::Sqlite {
            urls.push(url);
        }
    }
    println!("# databases benchmark");
    println!(
        "Figures: best of {ROUNDS} runs of each workload (ours and the raw driver alternating run by run), per second (higher is better); {ALLOCATOR_NAME}."
    );
    println!("Ratios: our time / their time (1.00 = as fast, below 1.00 = we are faster).");
    for url in urls {
        let backend = url.backend();
        let s = sizes(backend);
        let db =
            Database::with_options(&url, DatabaseOptions::new().min_size(POOL).max_size(POOL))?;
        db.connect().await?;
        prepare_data(&db).await?;
        let mut mine = Ours { db: db.clone(), s };
        let mut raw_checked_out = Duration::MAX;
        let (raw_name, (ours, raw)) = match backend {
            Backend::Postgres => {
                let mut raw = RawPostgres::new(&url, s).await?;
                let result = compare(&mut mine, &mut raw).await?;
                raw_checked_out = raw.checked_out;
                ("tokio-postgres", result)
            }
            Backend::Mysql => {
                let mut raw = RawMysql::new(&url, s).await?;
                let result = compare(&mut mine, &mut raw).await?;
                raw.close().await?;
                ("mysql_async", result)
            }
            _ => {
                let mut raw = RawSqlite::new(&sqlite_path.to_string_lossy(), s)?;
                (
                    "rusqlite on spawn_blocking",
                    compare(&mut mine, &mut raw).await?,
                )
            }
        };
        let sqlx = match backend {
            Backend::Postgres | Backend::Mysql => run_sqlx(&url, s)?,
            _ => None,
        };
        db.execute("DROP TABLE IF EXISTS bench_read", ()).await?;
        db.execute("DROP TABLE IF EXISTS bench_write", ()).await?;
        db.disconnect().await?;
        report(
            &format!("{backend} (raw driver: {raw_name})"),
            &rows_from(s, ours, raw, sqlx),
        );
        if raw_checked_out != Duration::MAX {
            // The raw 32-task run shares each client among several tasks, whose queries
            // tokio-postgres pipelines on one connection; a pool cannot, since a connection
            // may carry a transaction or session state. This is the raw driver used that way.
            let n = TASKS * s.concurrent_each;
            println!(
                "\n32 tasks with each raw client used by one task at a time (a minimal pool of {POOL}): \
                 {:.0} rows/s; our time against it: {:.2}.",
                per_second(n, raw_checked_out),
                ours[CONCURRENT].as_secs_f64() / raw_checked_out.as_secs_f64()
            );
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
