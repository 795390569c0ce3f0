//! The notes service on a loopback port, driven over HTTP by a real client, on SQLite and on
//! every server in `TEST_DATABASE_URLS`; and the program itself, started and stopped with a
//! signal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum_notes::{NewNote, Note, create_schema, serve};
use databases::Database;
use reqwest::StatusCode;

const LIMIT: Duration = Duration::from_secs(30);

/// A SQLite file in `dir`, then each server URL of `TEST_DATABASE_URLS`.
fn urls(dir: &std::path::Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite:///{}", dir.join("notes.db").display())];
    match std::env::var("TEST_DATABASE_URLS") {
        Ok(list) => urls.extend(
            list.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty() && !u.starts_with("sqlite"))
                .map(str::to_owned),
        ),
        Err(_) => eprintln!("TEST_DATABASE_URLS is not set: the notes service runs on SQLite only"),
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_http_on_every_database() {
    let dir = tempfile::tempdir().unwrap();
    for url in urls(dir.path()) {
        tokio::time::timeout(LIMIT, exercise(&url))
            .await
            .unwrap_or_else(|_| panic!("{url}: timed out"));
    }
}

async fn exercise(url: &str) {
    let db = Database::new(url).unwrap();
    db.connect().await.unwrap();
    db.execute("DROP TABLE IF EXISTS notes", ()).await.unwrap();
    create_schema(&db).await.unwrap();
    // Twice: creating the schema again leaves it as it is.
    create_schema(&db).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, db.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    // Create two notes.
    let mut created = Vec::new();
    for (text, completed) in [("Buy milk", false), ("Ship it — ünïcode 🚀", true)] {
        let response = http
            .post(format!("{base}/notes"))
            .json(&NewNote {
                text: text.to_owned(),
                completed,
            })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{url}");
        let note: Note = response.json().await.unwrap();
        assert_eq!(
            (note.text.as_str(), note.completed),
            (text, completed),
            "{url}"
        );
        created.push(note);
    }

    // List and get.
    let listed: Vec<Note> = http
        .get(format!("{base}/notes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, created, "{url}");
    let one: Note = http
        .get(format!("{base}/notes/{}", created[1].id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one, created[1], "{url}");
    let missing = http
        .get(format!("{base}/notes/999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{url}");

    // Bad input changes nothing.
    let empty = http
        .post(format!("{base}/notes"))
        .json(&serde_json::json!({ "text": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
    let garbage = http
        .post(format!("{base}/notes"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(garbage.status().is_client_error(), "{url}");
    let hostile = "'); DROP TABLE notes; --";
    let response = http
        .post(format!("{base}/notes"))
        .json(&serde_json::json!({ "text": hostile }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{url}");
    let stored: Note = response.json().await.unwrap();
    assert_eq!(stored.text, hostile, "{url}");

    // Delete, then delete again.
    for note in [&created[0], &stored] {
        let deleted = http
            .delete(format!("{base}/notes/{}", note.id))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT, "{url}");
    }
    let again = http
        .delete(format!("{base}/notes/{}", created[0].id))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "{url}");
    let left: Vec<Note> = http
        .get(format!("{base}/notes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(left, vec![created[1].clone()], "{url}");

    // Clean shutdown: the server stops and closes the pool.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!db.is_connected(), "{url}");
    assert!(
        http.get(format!("{base}/notes")).send().await.is_err(),
        "{url}: still serving after shutdown"
    );

    db.connect().await.unwrap();
    db.execute("DROP TABLE notes", ()).await.unwrap();
    db.disconnect().await.unwrap();
}

#[test]
fn the_program_defaults_to_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum-notes"))
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let note: Note = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/notes"))
            .json(&serde_json::json!({ "text": "from the program" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(note.text, "from the program");
    // The default database is the SQLite file notes.db in the working directory.
    assert!(dir.path().join("notes.db").exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("the program did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest:?}");
}
