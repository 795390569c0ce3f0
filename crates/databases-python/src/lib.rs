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
//! Every operation returns an `Awaitable` (in `awaitable`), which asyncio drives as it drives a
//! coroutine (a PyO3 `async fn` would do the same, but completes each wait through
//! `call_soon_threadsafe`, a self-pipe write and one more turn of the loop). On
//! MySQL/MariaDB and SQLite the core's future is polled on the loop's own thread, inside the
//! runtime's context (see `drive_here` in `native`); on PostgreSQL too when no other
//! PostgreSQL operation is in flight, else the work runs as a task on a shared tokio runtime
//! and the coroutine awaits its `JoinHandle` (see `here_now`). Either way, each
//! await that does not finish at once costs one wake of the event loop. That wake never takes
//! the GIL on the tokio thread: it queues the coroutine's waker for the loop and writes a
//! byte to a socket the loop watches (`add_reader`), and the loop's thread, which holds the
//! GIL anyway, runs the wakers (see `LoopChannel`). Taking the GIL from a tokio thread
//! would wake the loop's thread twice (its selector, then the GIL's hand-over) and create
//! a Python thread state each time. When the awaiting Python task is cancelled the
//! awaitable drops its operation, which aborts the tokio task; the core then treats it as
//! abandoned (it stops the statement and keeps the connection out of the pool, or brings it
//! back clean).

mod awaitable;
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

/// Wakes for one event loop, delivered without touching Python on the waking thread: a
/// queue of coroutine wakers and a socket pair whose read end the loop watches. The first
/// waker queued writes a byte; the loop then calls [`LoopChannel::drain`] on its own thread,
/// which runs every queued waker there.
#[cfg(unix)]
struct LoopChannel {
    queue: std::sync::Mutex<Vec<Waker>>,
    signal: std::os::unix::net::UnixStream,
    watched: std::os::unix::net::UnixStream,
}

#[cfg(unix)]
impl LoopChannel {
    /// A channel whose read end `event_loop` watches.
    fn register(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Self>> {
        use std::os::fd::AsRawFd;
        let (signal, watched) = std::os::unix::net::UnixStream::pair()?;
        signal.set_nonblocking(true)?;
        watched.set_nonblocking(true)?;
        let channel = Arc::new(Self {
            queue: std::sync::Mutex::new(Vec::new()),
            signal,
            watched,
        });
        let drained = channel.clone();
        let drain = pyo3::types::PyCFunction::new_closure(
            py,
            Some(c"_databases_wake"),
            None,
            move |_args, _kwargs| drained.drain(),
        )?;
        event_loop.call_method1("add_reader", (channel.watched.as_raw_fd(), drain))?;
        Ok(channel)
    }

    /// Queues `waker` for the loop's thread (called on any thread).
    fn send(&self, waker: Waker) {
        use std::io::Write;
        let first = {
            let mut queue = self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.push(waker);
            queue.len() == 1
        };
        if first {
            // A full socket (WouldBlock) already holds a byte the loop has yet to read.
            let _ = (&self.signal).write(&[1]);
        }
    }

    /// Runs the queued wakers (on the loop's thread). The bytes are read before the queue
    /// is taken, so a waker queued meanwhile is either taken now or signalled anew.
    fn drain(&self) {
        use std::io::Read;
        let mut bytes = [0_u8; 64];
        while matches!((&self.watched).read(&mut bytes), Ok(n) if n == bytes.len()) {}
        let wakers = std::mem::take(
            &mut *self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for waker in wakers {
            waker.wake();
        }
    }
}

/// An event loop and its channel (`None`: the loop cannot watch a socket, and wakes go the
/// slow way).
#[cfg(unix)]
type LoopEntry = (Py<PyAny>, Option<Arc<LoopChannel>>);

#[cfg(unix)]
thread_local! {
    /// The event loops seen on this thread.
    static CHANNELS: std::cell::RefCell<Vec<LoopEntry>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The channel of the event loop running on this thread, registered on first use.
#[cfg(unix)]
fn loop_channel(py: Python<'_>) -> Option<Arc<LoopChannel>> {
    static GET_RUNNING_LOOP: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let get_running_loop = GET_RUNNING_LOOP
        .get_or_try_init(py, || {
            py.import("asyncio")?
                .getattr("get_running_loop")
                .map(Bound::unbind)
        })
        .ok()?;
    let event_loop = get_running_loop.call0(py).ok()?;
    CHANNELS.with_borrow_mut(|channels| {
        if let Some((_, channel)) = channels.iter().find(|(l, _)| l.is(&event_loop)) {
            return channel.clone();
        }
        // A new loop: forget the closed ones (a channel ends with its last waker).
        channels.retain(|(l, _)| {
            !l.call_method0(py, "is_closed")
                .and_then(|closed| closed.extract::<bool>(py))
                .unwrap_or(true)
        });
        let channel = LoopChannel::register(py, event_loop.bind(py)).ok();
        channels.push((event_loop, channel.clone()));
        channel
    })
}

#[cfg(not(unix))]
struct LoopChannel;

#[cfg(not(unix))]
impl LoopChannel {
    fn send(&self, waker: Waker) {
        waker.wake();
    }
}

#[cfg(not(unix))]
fn loop_channel(_py: Python<'_>) -> Option<Arc<LoopChannel>> {
    None
}

/// The waker handed to the core's futures. It passes the coroutine's waker to the loop's
/// [`LoopChannel`], or, where the loop has none, wakes it here (which takes the GIL) unless
/// the interpreter is shutting down. A late wake from a stale waker left in some channel is
/// then harmless.
struct Forward {
    waker: std::sync::Mutex<Option<Waker>>,
    channel: Option<Arc<LoopChannel>>,
}

impl Forward {
    /// A forwarder to the event loop running on this thread.
    fn new() -> Arc<Self> {
        Arc::new(Self {
            waker: std::sync::Mutex::new(None),
            channel: Python::attach(loop_channel),
        })
    }

    /// Keeps the waker of the coroutine's latest poll.
    fn remember(&self, waker: &Waker) {
        let mut slot = self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(waker) = waker else {
            return;
        };
        if let Some(channel) = &self.channel {
            channel.send(waker);
            return;
        }
        WAKING.fetch_add(1, Ordering::SeqCst);
        if !FINALIZING.load(Ordering::SeqCst) {
            waker.wake();
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
        self.forward.remember(cx.waker());
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

/// A core future polled on the event loop's thread itself (inside the runtime's context,
/// so that its timers, sockets and spawned tasks belong to [`runtime`]) with a [`Forward`]
/// waker. Nothing hops to a tokio thread to start it: a statement is written to its socket
/// (MySQL), handed to SQLite's thread or run inline (a short SQLite read) during the first
/// poll, and the answer wakes the loop directly. Dropped with the coroutine (a cancelled
/// task), it drops the future inside the runtime's context, and the core treats the
/// operation as abandoned.
struct Driven<F> {
    future: Option<Pin<Box<F>>>,
    forward: Arc<Forward>,
}

impl<F: Future> Future for Driven<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.forward.remember(cx.waker());
        let waker = Waker::from(self.forward.clone());
        let _context = runtime().enter();
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending; // not reached: a finished coroutine is not polled again
        };
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        if poll.is_ready() {
            self.future = None;
        }
        poll
    }
}

impl<F> Drop for Driven<F> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            let _context = runtime().enter();
            drop(future);
        }
    }
}

/// Runs `fut` as a task on [`runtime`]; the result's core error becomes the matching Python
/// exception. For work that is mostly CPU in the core (server protocols, decoding), which
/// then runs beside the event loop rather than on its thread.
async fn run<T: Send + 'static>(
    fut: impl Future<Output = databases::Result<T>> + Send + 'static,
) -> PyResult<T> {
    Spawned {
        handle: runtime().spawn(fut),
        forward: Forward::new(),
    }
    .await?
    .map_err(errors::to_py)
}

/// Runs `fut` on the event loop's thread (see [`Driven`]); the result's core error becomes the
/// matching Python exception. For work that mostly waits: on SQLite's connection thread, on
/// a MySQL socket, or for a message from a task.
///
/// Only where the loop has a [`LoopChannel`]. Without one, a wake takes the GIL on the waking
/// thread, and wakers run under locks: bb8 wakes a waiting checkout while holding its pool's
/// lock, which the loop's thread, polling with the GIL held, may be waiting for (a deadlock,
/// seen in `test_a_loop_without_add_reader_still_works`). The work then runs as a task, as
/// [`run`] does.
async fn run_here<T: Send + 'static>(
    fut: impl Future<Output = databases::Result<T>> + Send + 'static,
) -> PyResult<T> {
    let forward = Forward::new();
    if forward.channel.is_none() {
        return Spawned {
            handle: runtime().spawn(fut),
            forward,
        }
        .await?
        .map_err(errors::to_py);
    }
    Driven {
        future: Some(Box::pin(fut)),
        forward,
    }
    .await
    .map_err(errors::to_py)
}

/// Starts `fut` on the event loop's thread and lets [`runtime`] finish it. The first poll
/// runs here, inside the runtime's context, and writes a statement to its socket without
/// waking a runtime thread; if the future is not done by then it becomes a task, so that
/// reading and decoding what comes back run beside the loop instead of on its thread (a
/// PostgreSQL result of 10,000 rows: 10% less time). For a short result the task costs
/// more than it saves (a 1-row result: 3-6 us more), so this is for results known to be
/// large.
async fn run_started_here<T: Send + 'static>(
    fut: impl Future<Output = databases::Result<T>> + Send + 'static,
) -> PyResult<T> {
    let forward = Forward::new();
    let mut fut = Box::pin(fut);
    // Without a loop channel nothing is polled on the loop's thread (see `run_here`).
    if forward.channel.is_some() {
        let _context = runtime().enter();
        // Nothing is lost to the no-op waker: a task is polled once it is spawned.
        if let Poll::Ready(result) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return result.map_err(errors::to_py);
        }
    }
    Spawned {
        handle: runtime().spawn(fut),
        forward,
    }
    .await?
    .map_err(errors::to_py)
}

/// [`run_here`] when `here`, else [`run`].
async fn run_on<T: Send + 'static>(
    here: bool,
    fut: impl Future<Output = databases::Result<T>> + Send + 'static,
) -> PyResult<T> {
    if here {
        run_here(fut).await
    } else {
        run(fut).await
    }
}

/// The compiled module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<native::NativeDatabase>()?;
    m.add_class::<native::NativeConnection>()?;
    m.add_class::<native::NativeCursor>()?;
    m.add_class::<awaitable::Awaitable>()?;
    m.add_class::<record::Record>()?;
    errors::register(m)?;
    let shutdown = wrap_pyfunction!(_shutdown, m)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (shutdown,))?;
    Ok(())
}
