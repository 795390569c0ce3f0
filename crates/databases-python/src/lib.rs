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
//! then treats the operation as abandoned (it stops the statement and keeps the connection
//! out of the pool, or brings it back clean).

mod convert;
mod errors;
mod native;
mod record;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

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

/// Set when the interpreter starts to shut down (an `atexit` hook): from then on no thread
/// of ours may wake an event loop, which would enter an interpreter that is going away.
static FINALIZING: AtomicBool = AtomicBool::new(false);

/// Wakes in progress on our threads.
static WAKING: AtomicUsize = AtomicUsize::new(0);

/// Called at interpreter exit: stops further wakes and lets a wake in progress finish (it
/// may need the GIL, so it is released while waiting, at most a second).
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    FINALIZING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while WAKING.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
}

/// The waker handed to the core's futures: it forwards to the coroutine's waker (which wakes
/// the event loop) unless the interpreter is shutting down. A late wake from a stale waker
/// left in some channel is then harmless.
struct Forward(std::sync::Mutex<Option<Waker>>);

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        WAKING.fetch_add(1, Ordering::SeqCst);
        if !FINALIZING.load(Ordering::SeqCst) {
            let waker = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        WAKING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A task on [`runtime`], awaited through a [`Forward`] waker and aborted when the awaiting
/// coroutine is dropped.
struct Spawned<T> {
    handle: tokio::task::JoinHandle<T>,
    forward: Arc<Forward>,
}

impl<T> Future for Spawned<T> {
    type Output = PyResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut slot = self
                .forward
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        let waker = Waker::from(self.forward.clone());
        Pin::new(&mut self.handle)
            .poll(&mut Context::from_waker(&waker))
            .map(|joined| {
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
        self.handle.abort();
    }
}

/// Runs `fut` on the runtime; the result's core error becomes the matching Python exception.
async fn run<T: Send + 'static>(
    fut: impl Future<Output = databases::Result<T>> + Send + 'static,
) -> PyResult<T> {
    Spawned {
        handle: runtime().spawn(fut),
        forward: Arc::new(Forward(std::sync::Mutex::new(None))),
    }
    .await?
    .map_err(errors::to_py)
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
    let shutdown = wrap_pyfunction!(_shutdown, m)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (shutdown,))?;
    Ok(())
}
