//! `databases._native`: the compiled part of the `databases` Python package.
//!
//! It holds only what must be fast or must talk to the Rust core: converting values between
//! Python and [`databases::Value`], building records, the PEP 249 exceptions, and the
//! awaitables that run the core's operations on a tokio runtime. Everything about the
//! upstream-compatible API (task-local connections, the transaction stack, SQLAlchemy
//! compilation) lives in the Python package (`python/databases`).
//!
//! ## The async bridge
//!
//! Every operation is a PyO3 `async fn`: asyncio drives the returned coroutine itself. The
//! work runs as a task on a shared tokio runtime and the coroutine awaits its `JoinHandle`,
//! so each await costs one wake from a tokio thread to the event loop. When the awaiting
//! Python task is cancelled the coroutine is dropped, which aborts the tokio task; the core
//! then treats the operation as abandoned (it stops the statement on the server and keeps
//! the connection out of the pool).

mod convert;
mod errors;
mod native;
mod record;

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use pyo3::prelude::*;

/// The tokio runtime that runs every operation, built on first use.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("databases-io")
            .enable_all()
            .build()
            .expect("the tokio runtime for databases could not start")
    })
}

/// A task on [`runtime`] that is aborted when the awaiting coroutine is dropped.
struct Spawned<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Spawned<T> {
    type Output = PyResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "the databases worker task failed: {e}"
                ))
            })
        })
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` on the runtime; the result's core error becomes the matching Python exception.
async fn run<T: Send + 'static>(
    fut: impl Future<Output = databases::Result<T>> + Send + 'static,
) -> PyResult<T> {
    Spawned(runtime().spawn(fut)).await?.map_err(errors::to_py)
}

/// The compiled module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<native::NativeDatabase>()?;
    m.add_class::<native::NativeConnection>()?;
    m.add_class::<native::NativeCursor>()?;
    m.add_class::<record::Record>()?;
    errors::register(m)?;
    Ok(())
}
