//! Servers of the test's own, restarted and killed: a PostgreSQL cluster and a MariaDB data
//! directory on other loopback ports, created by `scripts/scratch-server` and removed
//! afterwards; the shared servers are never touched.
//!
//! A server whose programs are not installed here (or cannot run as a non-root user) is
//! skipped with a message. SQLite's "server" is the process itself: a writer process of the
//! test's own is killed instead.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use databases::{Database, DatabaseOptions, DatabaseUrl, ErrorKind};

/// scratch-server's exit status for "this server cannot run here".
const SKIP: i32 = 77;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/scratch-server")
}

/// Runs `scratch-server <command> <dir>` and checks that it succeeded.
fn scratch(command: &str, dir: &std::path::Path) {
    let out = Command::new(script())
        .arg(command)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("scratch-server runs");
    assert!(
        out.status.success(),
        "scratch-server {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch server, removed on drop.
struct Server {
    dir: tempfile::TempDir,
    url: DatabaseUrl,
    kind: &'static str,
}

impl Server {
    /// Creates and starts one, or `None` (with a message) where it cannot run here.
    fn start(kind: &'static str) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("databases-{kind}-"))
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new(script())
            .args(["create", kind])
            .arg(dir.path())
            .arg(port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("scratch-server runs");
        if out.status.code() == Some(SKIP) {
            eprintln!(
                "skipping the {kind} restart tests: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        assert!(
            out.status.success(),
            "scratch-server create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = DatabaseUrl::parse(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
        scratch("start", dir.path());
        Some(Self { dir, url, kind })
    }

    /// Runs a scratch-server command off the async runtime.
    async fn control(&self, command: &'static str) {
        let dir = self.dir.path().to_owned();
        tokio::task::spawn_blocking(move || scratch(command, &dir))
            .await
            .unwrap();
    }

    fn sleep_sql(&self) -> &'static str {
        match self.kind {
            "postgres" => "SELECT pg_sleep(30)",
            _ => "SELECT SLEEP(30)",
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("remove")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output();
    }
}

const KINDS: [&str; 2] = ["postgres", "mariadb"];

/// Inserts `x` into table `d` in a transaction of its own and commits it.
async fn commit_row(db: &Database, x: i64) {
    let mut conn = db.connection().await.unwrap();
    let mut tx = conn.transaction().await.unwrap();
    tx.execute("INSERT INTO d VALUES (:x)", databases::params! { "x" => x })
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// The rows of table `d`, in order.
async fn stored_rows(db: &Database) -> Vec<i64> {
    db.fetch_all("SELECT x FROM d ORDER BY x", ())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64>(0).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_under_an_open_pool() {
    for kind in KINDS {
        let Some(server) = Server::start(kind) else {
            continue;
        };
        let db =
            Database::with_options(&server.url, DatabaseOptions::new().min_size(2).max_size(2))
                .unwrap();
        db.connect().await.unwrap();
        db.execute("CREATE TABLE t (x INTEGER)", ()).await.unwrap();
        db.execute("INSERT INTO t VALUES (1)", ()).await.unwrap();

        // The statement in flight while the server restarts fails with a connection error.
        let slow = {
            let (db, sql) = (db.clone(), server.sleep_sql());
            tokio::spawn(async move { db.fetch_all(sql, ()).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.control("restart").await;
        let e = tokio::time::timeout(Duration::from_secs(30), slow)
            .await
            .expect("the interrupted statement hung")
            .unwrap()
            .expect_err("a statement survived the restart");
        assert!(
            matches!(e.kind(), ErrorKind::ConnectionLost | ErrorKind::Database),
            "{kind}: {e}"
        );

        // The idle connection died with the server: the pool replaces it, and no later call
        // sees an error, without reconnecting the Database.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let n = db.fetch_val::<i64>("SELECT COUNT(*) FROM t", (), 0).await;
            assert_eq!(n.unwrap(), Some(1), "{kind}");
        }
        db.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_sigkill() {
    for kind in KINDS {
        let Some(server) = Server::start(kind) else {
            continue;
        };
        let db = Database::with_options(&server.url, DatabaseOptions::new().max_size(2)).unwrap();
        db.connect().await.unwrap();
        db.execute("CREATE TABLE d (x INTEGER PRIMARY KEY)", ())
            .await
            .unwrap();
        let mut committed = Vec::new();
        for i in 0..200_i64 {
            commit_row(&db, i).await;
            committed.push(i); // the commit returned
        }
        // One more, killed mid-transaction: it must not appear.
        {
            let mut conn = db.connection().await.unwrap();
            let mut tx = conn.transaction().await.unwrap();
            tx.execute("INSERT INTO d VALUES (-1)", ()).await.unwrap();
            server.control("kill").await;
            let e = tx.commit().await.expect_err("a commit on a killed server");
            assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{kind}: {e}");
        }
        db.disconnect().await.unwrap();

        server.control("start").await;
        let db = Database::with_options(&server.url, DatabaseOptions::new()).unwrap();
        db.connect().await.unwrap();
        assert_eq!(stored_rows(&db).await, committed, "{kind}");
        db.disconnect().await.unwrap();
    }
}

/// Set in the environment of the writer process that
/// `sqlite_commits_survive_sigkill_of_the_process` starts and kills.
const WRITER: &str = "DATABASES_SQLITE_WRITER";

/// The writer process: commits one row per transaction forever, reporting each commit that
/// returned. Started (and killed) by the test below; ignored in a normal run.
#[tokio::test]
#[ignore = "the writer process of sqlite_commits_survive_sigkill_of_the_process"]
async fn sqlite_writer_process() {
    use std::io::Write;
    let path = std::env::var(WRITER).expect("started by the durability test");
    let db = Database::new(format!("sqlite:///{path}").as_str()).unwrap();
    db.connect().await.unwrap();
    db.execute("CREATE TABLE IF NOT EXISTS d (x INTEGER PRIMARY KEY)", ())
        .await
        .unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0_i64.. {
        commit_row(&db, i).await;
        writeln!(out, "committed {i}").unwrap();
        out.flush().unwrap();
    }
}

/// SQLite's server is the process itself: a writer killed with SIGKILL after commits
/// returned leaves every one of them in the file, which opens cleanly.
#[tokio::test]
async fn sqlite_commits_survive_sigkill_of_the_process() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable.db");
    let mut writer = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_writer_process",
            "--ignored",
            "--nocapture",
        ])
        .env(WRITER, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(writer.stdout.take().unwrap());
    let committed_in =
        |line: &str| -> Option<i64> { line.trim().strip_prefix("committed ")?.parse().ok() };
    let mut committed = Vec::new();
    let started = std::time::Instant::now();
    let mut line = String::new();
    while committed.len() < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer is too slow"
        );
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the writer stopped early");
        }
        committed.extend(committed_in(&line));
    }
    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    committed.extend(rest.lines().filter_map(committed_in));

    let db = Database::new(format!("sqlite:///{}", path.display()).as_str()).unwrap();
    db.connect().await.unwrap();
    let check: Option<String> = db.fetch_val("PRAGMA integrity_check", (), 0).await.unwrap();
    assert_eq!(check.as_deref(), Some("ok"));
    let rows = stored_rows(&db).await;
    // Every reported commit is there; at most one more committed before its report.
    assert_eq!(rows[..committed.len()], committed[..]);
    assert!(
        rows.len() - committed.len() <= 1,
        "{} rows, {} reported",
        rows.len(),
        committed.len()
    );
    db.disconnect().await.unwrap();
}
