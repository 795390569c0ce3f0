//! [`Awaitable`]: what every asynchronous method of the compiled module returns.
//!
//! It does what a PyO3 `async fn` coroutine does (asyncio drives it; each suspension hands the
//! task an `asyncio.Future` to wait on), with one difference: the wake. PyO3's waker always
//! completes that future through `loop.call_soon_threadsafe`, which writes to the loop's
//! self-pipe and costs the loop one more turn, even when the wake already runs on the loop's
//! thread. Ours run there (the [`crate::LoopChannel`] delivers the core's wakes to the
//! loop's thread), so the future's result is set directly; a wake from another thread still
//! goes through `call_soon_threadsafe`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use pyo3::{IntoPyObjectExt, intern};

type BoxedFuture = Pin<Box<dyn Future<Output = PyResult<Py<PyAny>>> + Send>>;

/// An operation of the compiled module, awaited from Python (`await db.fetch_one(...)`).
/// It can be awaited once; dropping it unawaited, or cancelling the task that awaits it,
/// drops the operation (which the core treats as abandoned).
#[pyclass(module = "databases._native")]
pub(crate) struct Awaitable {
    /// The method that made it (`NativeDatabase.fetch_one`), for `repr` of the task.
    qualname: &'static str,
    /// In a mutex only to make the class `Sync` (PyO3 requires it); it is taken only by the
    /// poll, which has `&mut self`.
    future: Option<Mutex<BoxedFuture>>,
}

impl Awaitable {
    /// Wraps `future`, the work of method `qualname`; its output becomes the result of the
    /// `await`.
    pub(crate) fn new<T, F>(qualname: &'static str, future: F) -> Self
    where
        F: Future<Output = PyResult<T>> + Send + 'static,
        T: for<'py> IntoPyObject<'py> + Send,
    {
        Self {
            qualname,
            future: Some(Mutex::new(Box::pin(async move {
                let value = future.await?;
                Python::attach(|py| value.into_py_any(py))
            }))),
        }
    }

    fn poll(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let Some(future) = self.future.as_mut() else {
            return Err(PyRuntimeError::new_err(
                "this databases operation was already awaited",
            ));
        };
        let waker = Arc::new(LoopWaker::new());
        let polled = future
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(waker.clone())));
        match polled {
            Poll::Ready(result) => {
                self.close();
                Err(PyStopIteration::new_err((result?,)))
            }
            Poll::Pending => waker.suspend(py),
        }
    }
}

#[pymethods]
impl Awaitable {
    /// The method's name, as a coroutine has (asyncio shows it in a task's `repr`).
    #[getter]
    fn __name__(&self) -> &'static str {
        self.qualname
            .rsplit_once('.')
            .map_or(self.qualname, |(_, name)| name)
    }

    #[getter]
    fn __qualname__(&self) -> &'static str {
        self.qualname
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.poll(py)
    }

    fn send(&mut self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.poll(py)
    }

    /// Drops the operation and raises `exc` (the awaiting task was cancelled, say).
    #[pyo3(signature = (exc, _value = None, _traceback = None))]
    fn throw(
        &mut self,
        exc: Bound<'_, PyAny>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.close();
        Err(
            if exc.is_instance_of::<pyo3::exceptions::PyBaseException>() {
                PyErr::from_value(exc)
            } else {
                // The old `throw(type)` form: an instance of the class.
                match exc.call0() {
                    Ok(instance) => PyErr::from_value(instance),
                    Err(e) => e,
                }
            },
        )
    }

    /// Drops the operation.
    fn close(&mut self) {
        self.future = None;
    }
}

/// Where a [`LoopWaker`] is.
enum State {
    /// Being polled: a wake now means "poll again at once".
    Polling { woken: bool },
    /// Suspended: the task waits for this `asyncio.Future`.
    Waiting(Py<PyAny>),
    /// Woken after it suspended.
    Done,
}

/// The waker of one poll: completes the future the task waits on.
struct LoopWaker {
    /// The event loop's thread (where the awaitable is polled).
    thread: ThreadId,
    state: Mutex<State>,
}

impl LoopWaker {
    fn new() -> Self {
        Self {
            thread: std::thread::current().id(),
            state: Mutex::new(State::Polling { woken: false }),
        }
    }

    /// After a poll that returned `Pending`: the `asyncio.Future` for the task to wait on,
    /// or `None` (the task runs the awaitable again on the loop's next turn) when the
    /// operation was woken during the poll.
    fn suspend(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Polling { woken: true }
        ) {
            return Ok(py.None());
        }
        static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let get_running_loop = GET_RUNNING_LOOP.get_or_try_init(py, || {
            py.import("asyncio")?
                .getattr("get_running_loop")
                .map(Bound::unbind)
        })?;
        let future = get_running_loop
            .call0(py)?
            .call_method0(py, intern!(py, "create_future"))?;
        future.setattr(py, intern!(py, "_asyncio_future_blocking"), true)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, State::Polling { woken: true }) {
            // Woken from another thread since the check above.
            return Ok(py.None());
        }
        *state = State::Waiting(future.clone_ref(py));
        Ok(future)
    }
}

impl Wake for LoopWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let future = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match std::mem::replace(&mut *state, State::Done) {
                State::Polling { .. } => {
                    *state = State::Polling { woken: true };
                    return;
                }
                State::Done => return,
                State::Waiting(future) => future,
            }
        };
        let here = std::thread::current().id() == self.thread;
        Python::attach(|py| {
            let result = if here {
                release_waiter(future.bind(py))
            } else {
                call_soon_threadsafe(py, future.bind(py))
            };
            if let Err(e) = result {
                // Nothing to raise into: the loop reports it as an unhandled error.
                e.write_unraisable(py, None);
            }
        });
    }
}

/// Completes `future` unless it is done already (the task was cancelled meanwhile).
fn release_waiter(future: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = future.py();
    if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
        future.call_method1(intern!(py, "set_result"), (py.None(),))?;
    }
    Ok(())
}

/// Completes `future` on its loop's thread; nothing to do if the loop is closed.
fn call_soon_threadsafe(py: Python<'_>, future: &Bound<'_, PyAny>) -> PyResult<()> {
    static RELEASE: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    let release = RELEASE.get_or_try_init(py, || {
        PyCFunction::new_closure(py, Some(c"_databases_release"), None, |args, _| {
            release_waiter(&args.get_item(0)?)
        })
        .map(Bound::unbind)
    })?;
    let event_loop = future.call_method0(intern!(py, "get_loop"))?;
    match event_loop.call_method1(intern!(py, "call_soon_threadsafe"), (release, future)) {
        Ok(_) => Ok(()),
        Err(_)
            if event_loop
                .call_method0(intern!(py, "is_closed"))?
                .is_truthy()? =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
