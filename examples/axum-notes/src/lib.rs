//! A notes HTTP API on axum, backed by a [`databases::Database`] held in the router's state.
//!
//! | route | does |
//! |---|---|
//! | `GET /notes` | every note, oldest first |
//! | `GET /notes/{id}` | one note, or 404 |
//! | `POST /notes` `{"text": ..., "completed": false}` | creates a note in a transaction, 201 with it |
//! | `DELETE /notes/{id}` | 204, or 404 |
//!
//! The table is created with sea-query at startup, so the same code runs on SQLite,
//! PostgreSQL and MySQL/MariaDB. `main.rs` reads `DATABASE_URL` (SQLite file `notes.db` by
//! default) and `BIND` (`127.0.0.1:3000`), and shuts down cleanly on Ctrl-C or SIGTERM:
//! requests in progress finish, then the pool closes.

use std::future::Future;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use databases::sea_query::{Alias, ColumnDef, Table};
use databases::{Backend, Database, ErrorKind, Value, params};
use serde::{Deserialize, Serialize};

/// The database URL when `DATABASE_URL` is not set: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:///notes.db";

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Its key.
    pub id: i64,
    /// What it says.
    pub text: String,
    /// Whether it is done.
    pub completed: bool,
}

/// The body of `POST /notes`.
#[derive(Debug, Deserialize, Serialize)]
pub struct NewNote {
    /// What it says (1 to 200 characters).
    pub text: String,
    /// Whether it is done already.
    #[serde(default)]
    pub completed: bool,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The pool; cloning a `Database` clones a handle to it.
    pub db: Database,
}

/// The database URL from `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`].
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Creates the `notes` table unless it exists, in the connected database's dialect.
pub async fn create_schema(db: &Database) -> databases::Result<()> {
    let table = Table::create()
        .table(Alias::new("notes"))
        .if_not_exists()
        .col(
            ColumnDef::new(Alias::new("id"))
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(
            ColumnDef::new(Alias::new("text"))
                .string_len(200)
                .not_null(),
        )
        .col(
            ColumnDef::new(Alias::new("completed"))
                .boolean()
                .not_null()
                .default(false),
        )
        .to_owned();
    db.execute(&table, ()).await?;
    Ok(())
}

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/notes", get(list_notes).post(create_note))
        .route("/notes/{id}", get(get_note).delete(delete_note))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in progress
/// finish and closes the database's pool.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: Database,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(AppState { db: db.clone() });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    db.disconnect().await.map_err(std::io::Error::other)?;
    Ok(())
}

/// An error as an HTTP response: 404 for a missing note, 422 for bad input, 503 when the
/// database is unreachable, 500 otherwise (details go to the log, not to the client).
#[derive(Debug)]
pub enum ApiError {
    /// No note has this id.
    NotFound(i64),
    /// The request's data is not acceptable.
    Invalid(String),
    /// The database failed.
    Database(databases::Error),
}

impl From<databases::Error> for ApiError {
    fn from(e: databases::Error) -> Self {
        Self::Database(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NotFound(id) => (StatusCode::NOT_FOUND, format!("no note with id {id}")),
            Self::Invalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, why),
            Self::Database(e) => {
                eprintln!("database error: {e}");
                match e.kind() {
                    ErrorKind::Connect
                    | ErrorKind::ConnectionLost
                    | ErrorKind::PoolTimeout
                    | ErrorKind::NotConnected => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the database is unavailable".to_owned(),
                    ),
                    _ => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error".to_owned(),
                    ),
                }
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

async fn list_notes(State(state): State<AppState>) -> Result<Json<Vec<Note>>, ApiError> {
    let rows = state
        .db
        .fetch_all("SELECT id, text, completed FROM notes ORDER BY id", ())
        .await?;
    let notes = rows
        .iter()
        .map(|r| r.deserialize::<Note>())
        .collect::<databases::Result<Vec<_>>>()?;
    Ok(Json(notes))
}

async fn get_note(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Note>, ApiError> {
    let row = state
        .db
        .fetch_one(
            "SELECT id, text, completed FROM notes WHERE id = :id",
            params! { "id" => id },
        )
        .await?
        .ok_or(ApiError::NotFound(id))?;
    Ok(Json(row.deserialize()?))
}

async fn create_note(
    State(state): State<AppState>,
    Json(new): Json<NewNote>,
) -> Result<(StatusCode, Json<Note>), ApiError> {
    let length = new.text.chars().count();
    if !(1..=200).contains(&length) {
        return Err(ApiError::Invalid(format!(
            "text must have 1 to 200 characters, not {length}"
        )));
    }
    // The insert and the read-back run in one transaction: the note returned is the one
    // stored, and nothing is left behind if either fails.
    let mut tx = state.db.transaction().await?;
    // PostgreSQL reports the new id through RETURNING; SQLite and MySQL as the insert id.
    let returning = if tx.backend() == Backend::Postgres {
        " RETURNING id"
    } else {
        ""
    };
    let inserted = tx
        .execute_result(
            &format!("INSERT INTO notes (text, completed) VALUES (:text, :completed){returning}"),
            params! { "text" => new.text.as_str(), "completed" => new.completed },
        )
        .await?;
    let id = match inserted.returned {
        Value::Int(id) => id,
        _ => inserted.last_insert_id.ok_or_else(|| {
            ApiError::Invalid("the database reported no id for the new note".into())
        })?,
    };
    let note: Note = tx
        .fetch_one(
            "SELECT id, text, completed FROM notes WHERE id = :id",
            params! { "id" => id },
        )
        .await?
        .ok_or(ApiError::NotFound(id))?
        .deserialize()?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn delete_note(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let deleted = state
        .db
        .execute_result("DELETE FROM notes WHERE id = :id", params! { "id" => id })
        .await?
        .rows_affected;
    if deleted == 0 {
        return Err(ApiError::NotFound(id));
    }
    Ok(StatusCode::NO_CONTENT)
}
