//! The notes API as a program: `DATABASE_URL` (default: the SQLite file `notes.db`) and
//! `BIND` (default `127.0.0.1:3000`). Prints the address it listens on, and stops cleanly on
//! Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run -p axum-notes
//! curl -X POST localhost:3000/notes -H 'content-type: application/json' -d '{"text":"hi"}'
//! ```

use axum_notes::{create_schema, database_url, serve};
use databases::Database;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Database::new(database_url())?;
    db.connect().await?;
    create_schema(&db).await?;
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, db, shutdown_signal()).await?;
    println!("stopped");
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
