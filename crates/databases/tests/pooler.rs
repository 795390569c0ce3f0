//! PostgreSQL through PgBouncer in transaction mode, which hands each transaction (and each
//! statement outside one) whichever server session is free: with `statement_cache=false`
//! nothing may depend on a statement prepared in an earlier round trip. The PgBouncer is
//! the test's own, on another loopback port, in front of the PostgreSQL server of
//! `TEST_DATABASE_URLS`, and is stopped afterwards. Skipped (with a message) where there is
//! no PostgreSQL URL or no `pgbouncer` program.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use databases::{Backend, Database, DatabaseOptions, DatabaseUrl, params};
use futures_util::StreamExt;

/// The `pgbouncer` program, if installed.
fn pgbouncer() -> Option<PathBuf> {
    let packaged = PathBuf::from("/usr/sbin/pgbouncer");
    if packaged.exists() {
        return Some(packaged);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("pgbouncer"))
        .find(|p| p.exists())
}

/// A PgBouncer process of the test's own; killed when dropped.
struct Bouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Bouncer {
    /// Starts one in transaction mode with two server sessions in front of `server`.
    fn start(program: &PathBuf, server: &DatabaseUrl) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // PgBouncer refuses to run as root: it then runs as `postgres`, which must read this.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let user = server.username().unwrap_or_default().into_owned();
        let password = server
            .password()
            .map(|p| format!(" password={p}"))
            .unwrap_or_default();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 test = host={host} port={server_port} dbname={db} user={user}{password}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = 2\n\
                 ignore_startup_parameters = extra_float_digits,options\n",
                host = server.hostname().unwrap_or("127.0.0.1"),
                server_port = server.port().unwrap_or(5432),
                db = server.database(),
                users = dir.path().join("users.txt").display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        let mut command = Command::new(program);
        if root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer starts");
        let mut bouncer = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                panic!("pgbouncer exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_cache_off_works_through_pgbouncer_in_transaction_mode() {
    let Some(server) = common::server_urls()
        .into_iter()
        .find(|u| u.backend() == Backend::Postgres)
    else {
        eprintln!("skipping: no PostgreSQL URL in TEST_DATABASE_URLS");
        return;
    };
    let Some(program) = pgbouncer() else {
        eprintln!("skipping: pgbouncer is not installed");
        return;
    };
    let bouncer = Bouncer::start(&program, &server);
    let user = server.username().unwrap_or_default();
    let url = format!(
        "postgresql://{user}@127.0.0.1:{}/test?statement_cache=false&sslmode=disable",
        bouncer.port
    );
    // More connections than PgBouncer's two server sessions: they take turns on them.
    let db = Database::with_options(url.as_str(), DatabaseOptions::new().max_size(6)).unwrap();
    db.connect().await.unwrap();
    db.execute("DROP TABLE IF EXISTS pooler_t", ())
        .await
        .unwrap();
    db.execute(
        "CREATE TABLE pooler_t (id SERIAL PRIMARY KEY, task INTEGER, n INTEGER, \
         score DOUBLE PRECISION, label TEXT, at TIMESTAMPTZ, tags TEXT[])",
        (),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for task in 0..6_i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20_i64 {
                // Values the server reads as the column's type: an integer into a float
                // column, text into a timestamp and an array.
                db.execute(
                    "INSERT INTO pooler_t (task, n, score, label, at, tags) \
                     VALUES (:task, :n, :score, :label, :at, :tags)",
                    params! {
                        "task" => task, "n" => n, "score" => n, "label" => format!("t{task} \"n\" {n}"),
                        "at" => "2024-01-31 10:00:00+02", "tags" => databases::Value::array(["a,b", "c\\d"]),
                    },
                )
                .await?;
                let row = db
                    .fetch_one(
                        "SELECT n, score, label, at, tags FROM pooler_t WHERE task = :task AND n = :n",
                        params! { "task" => task, "n" => n },
                    )
                    .await?
                    .ok_or("no row")?;
                assert_eq!(row.get::<i64>("n")?, n);
                assert!((row.get::<f64>("score")? - n as f64).abs() < f64::EPSILON);
                assert_eq!(row.get::<String>("label")?, format!("t{task} \"n\" {n}"));
                assert_eq!(
                    row.get::<chrono::DateTime<chrono::Utc>>("at")?.to_rfc3339(),
                    "2024-01-31T08:00:00+00:00"
                );
                assert_eq!(
                    row.get::<Vec<databases::Value>>("tags")?,
                    [databases::Value::from("a,b"), databases::Value::from("c\\d")]
                );
                // A transaction, nested, and execute_many inside it.
                let mut conn = db.connection().await?;
                let mut tx = conn.transaction().await?;
                tx.execute(
                    "UPDATE pooler_t SET score = score + :d WHERE task = :task AND n = :n",
                    params! { "d" => 0.5, "task" => task, "n" => n },
                )
                .await?;
                tx.execute_many(
                    "INSERT INTO pooler_t (task, n) VALUES (:task, :n)",
                    (1000..1003).map(|i| params! { "task" => task, "n" => n * 10_000 + i }),
                )
                .await?;
                tx.commit().await?;
                drop(conn);
                let all: Vec<_> = db
                    .iterate(
                        "SELECT n FROM pooler_t WHERE task = :task AND n >= :from",
                        params! { "task" => task, "from" => n * 10_000 + 1000 },
                    )
                    .collect()
                    .await;
                let all = all.into_iter().collect::<Result<Vec<_>, _>>()?;
                assert_eq!(all.len(), 3, "task {task} n {n}");
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("a task hung")
            .unwrap()
            .unwrap_or_else(|e| panic!("through PgBouncer: {e}"));
    }
    assert_eq!(
        db.fetch_val::<i64>("SELECT COUNT(*) FROM pooler_t", (), 0)
            .await
            .unwrap(),
        Some(6 * 20 * 4)
    );
    db.execute("DROP TABLE pooler_t", ()).await.unwrap();
    db.disconnect().await.unwrap();
}
