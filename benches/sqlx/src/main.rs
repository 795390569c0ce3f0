//! sqlx's side of the databases benchmark. `databases-bench` prepares the data, runs this with
//! a URL and the workload sizes, and reads back five durations in seconds (one per workload,
//! best of three rounds), in the order it prints its own figures.
//!
//! ```text
//! databases-bench-sqlx URL SEQUENTIAL FETCH_ROUNDS MANY_ROWS TRANSACTIONS CONCURRENT_EACH TASKS POOL
//! ```

use std::time::{Duration, Instant};

use sqlx::Row as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T = ()> = Result<T, BoxError>;

const KEYS: i64 = 10_000;

fn key(i: usize) -> i32 {
    i32::try_from(i64::try_from(i).unwrap_or(0) * 7919 % KEYS + 1).unwrap_or(1)
}

async fn best<F, Fut>(mut f: F) -> Res<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Res>,
{
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        f().await?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

struct Sizes {
    sequential: usize,
    fetch_rounds: usize,
    many_rows: usize,
    transactions: usize,
    concurrent_each: usize,
    tasks: usize,
}

macro_rules! workloads {
    ($pool:expr, $s:expr, $one:expr, $insert:expr) => {{
        let pool = $pool;
        let s = $s;
        let one: &'static str = $one;
        let insert: &'static str = $insert;
        let all = "SELECT id, name, score, active, created FROM bench_read";
        let pool_ref = &pool;
        let sequential = best(|| async {
            for i in 0..s.sequential {
                let row = sqlx::query(one).bind(key(i)).fetch_one(pool_ref).await?;
                let _: f64 = row.try_get(2)?;
            }
            Ok(())
        })
        .await?;
        let fetch = best(|| async {
            for _ in 0..s.fetch_rounds {
                let rows = sqlx::query(all).fetch_all(pool_ref).await?;
                for row in &rows {
                    let _: (f64, String) = (row.try_get(2)?, row.try_get(1)?);
                }
            }
            Ok(())
        })
        .await?;
        let many = best(|| async {
            sqlx::query("DELETE FROM bench_write")
                .execute(pool_ref)
                .await?;
            let mut tx = pool_ref.begin().await?;
            for i in 0..s.many_rows {
                #[allow(clippy::cast_precision_loss)]
                sqlx::query(insert)
                    .bind(format!("n{i}"))
                    .bind(i as f64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await?;
        let transactions = best(|| async {
            for i in 0..s.transactions {
                let mut tx = pool_ref.begin().await?;
                #[allow(clippy::cast_precision_loss)]
                sqlx::query(insert)
                    .bind("tx")
                    .bind(i as f64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok(())
        })
        .await?;
        let concurrent = best(|| async {
            let tasks: Vec<_> = (0..s.tasks)
                .map(|t| {
                    let pool = pool_ref.clone();
                    let each = s.concurrent_each;
                    tokio::spawn(async move {
                        for i in 0..each {
                            let row = sqlx::query(one)
                                .bind(key(t * 1000 + i))
                                .fetch_one(&pool)
                                .await?;
                            let _: f64 = row.try_get(2)?;
                        }
                        Ok::<_, BoxError>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            Ok(())
        })
        .await?;
        [sequential, fetch, many, transactions, concurrent]
    }};
}

#[tokio::main]
async fn main() -> Res {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, numbers @ ..] = args.as_slice() else {
        return Err("usage: databases-bench-sqlx URL SEQUENTIAL FETCH_ROUNDS MANY_ROWS TRANSACTIONS CONCURRENT_EACH TASKS POOL".into());
    };
    let n: Vec<usize> = numbers
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [
        sequential,
        fetch_rounds,
        many_rows,
        transactions,
        concurrent_each,
        tasks,
        pool_size,
    ] = n[..]
    else {
        return Err("expected seven numbers after the URL".into());
    };
    let s = Sizes {
        sequential,
        fetch_rounds,
        many_rows,
        transactions,
        concurrent_each,
        tasks,
    };
    let pool_size = u32::try_from(pool_size)?;
    let times = if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(pool_size)
            .connect(url)
            .await?;
        workloads!(
            pool,
            &s,
            "SELECT id, name, score, active, created FROM bench_read WHERE id = $1",
            "INSERT INTO bench_write (name, score) VALUES ($1, $2)"
        )
    } else {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(pool_size)
            .connect(url)
            .await?;
        workloads!(
            pool,
            &s,
            "SELECT id, name, score, active, created FROM bench_read WHERE id = ?",
            "INSERT INTO bench_write (name, score) VALUES (?, ?)"
        )
    };
    let line: Vec<String> = times
        .iter()
        .map(|d| format!("{:.6}", d.as_secs_f64()))
        .collect();
    println!("{}", line.join(" "));
    Ok(())
}
