"""The bridge between asyncio and the Rust runtime, across event loops and threads.

Each event loop gets a socket pair that the runtime's threads write to when an operation
finishes (the loop watches it with ``add_reader``), so no runtime thread takes the GIL.
These tests check that this holds up where applications and test suites stress it: a new
loop per test (pytest-asyncio, ``asyncio.run`` in scripts), loops on several threads, and
loops that cannot watch a socket.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from conftest import slow_query
from databases import Database

pytestmark = pytest.mark.timeout(120)


async def _round_trip(url: str, queries: int) -> list:
    async with Database(url) as database:
        values = []
        for i in range(queries):
            values.append(await database.fetch_val("SELECT :i", {"i": i}))
        # Concurrent tasks too: their wakes can reach the loop in one batch.
        values += await asyncio.gather(
            *(database.fetch_val("SELECT :i", {"i": i}) for i in range(queries))
        )
        # An untyped parameter comes back as text on PostgreSQL.
        return [int(v) for v in values]


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_new_loop_per_run_leaves_no_descriptors(database_url: str) -> None:
    asyncio.run(_round_trip(database_url, 3))
    before = _open_descriptors()
    for _ in range(40):
        assert asyncio.run(_round_trip(database_url, 3)) == [0, 1, 2] * 2
    # The last loop's socket pair may live until the next loop on this thread replaces it,
    # and a MySQL connection closes its socket in the background after disconnect.
    deadline = time.monotonic() + 10
    while _open_descriptors() - before > 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_descriptors() - before <= 4


def test_loops_on_several_threads(database_url: str) -> None:
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            results[n] = asyncio.run(_round_trip(database_url, 20))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)
    assert results == {n: list(range(20)) * 2 for n in range(4)}


class _NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch file descriptors (like Windows' proactor loop)."""

    def add_reader(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("no add_reader here")


def test_a_loop_without_add_reader_still_works(database_url: str) -> None:
    loop = _NoReaderLoop()
    try:
        assert loop.run_until_complete(_round_trip(database_url, 10)) == list(range(10)) * 2
    finally:
        loop.close()


def test_a_loop_that_stops_and_resumes_gets_its_wakes(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:

        async def slow_then_value() -> object:
            database = Database(database_url)
            await database.connect()
            try:
                return int(await database.fetch_val("SELECT 7"))
            finally:
                await database.disconnect()

        task = loop.create_task(slow_then_value())
        # Run the loop in short slices, as an application embedding asyncio may: a wake
        # that arrives while the loop is stopped is picked up when it runs again.
        for _ in range(2000):
            if task.done():
                break
            loop.run_until_complete(asyncio.sleep(0.001))
        assert task.result() == 7
    finally:
        loop.close()


@pytest.mark.asyncio
async def test_an_operation_is_awaited_once(database_url: str) -> None:
    async with Database(database_url) as database:
        operation = database._native.fetch_one("SELECT 1 AS one")
        assert (await operation)[0] == 1
        with pytest.raises(RuntimeError, match="already awaited"):
            await operation


@pytest.mark.asyncio
async def test_an_operation_runs_as_a_task_of_its_own(database_url: str) -> None:
    # The compiled module's operations have send/throw/close, like a coroutine: code that
    # hands one to asyncio.create_task or gather (as with upstream's drivers) works.
    async with Database(database_url) as database:
        task = asyncio.create_task(database._native.fetch_one("SELECT 2 AS two"))
        assert "coro=<NativeDatabase.fetch_one()" in repr(task)
        assert (await task)[0] == 2
        first, second = await asyncio.gather(
            database._native.fetch_one("SELECT 3"), database._native.fetch_one("SELECT 4")
        )
        assert (first[0], second[0]) == (3, 4)


@pytest.mark.asyncio
async def test_throwing_into_an_operation_stops_it(database_url: str) -> None:
    async with Database(database_url) as database:
        steps = database._native.fetch_one(slow_query(database_url)).__await__()
        assert isinstance(next(steps), asyncio.Future)  # waiting for the slow query
        started = time.monotonic()
        with pytest.raises(KeyError, match="stop"):
            steps.throw(KeyError("stop"))
        with pytest.raises(RuntimeError, match="already awaited"):
            next(steps)
        # The abandoned statement is stopped, and the pool serves the next query at once.
        assert int(await database.fetch_val("SELECT 5")) == 5
        assert time.monotonic() - started < 10


def test_wakes_on_the_loop_thread_skip_call_soon_threadsafe(database_url: str) -> None:
    # A finished operation completes the future its task waits on directly, on the loop's
    # thread: no self-pipe write and no extra turn of the loop per await.
    loop = asyncio.new_event_loop()
    calls = 0
    original = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    async def main() -> int:
        async with Database(database_url) as database:
            await database.execute("DROP TABLE IF EXISTS wake_check")
            await database.execute("CREATE TABLE wake_check (x INTEGER)")
            loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
            suspended = 0
            for i in range(20):
                # Stepped by hand, as a task steps it, to count the suspensions. A write,
                # so that it waits even on SQLite (where a short read may run at once).
                insert = f"INSERT INTO wake_check (x) VALUES ({i})"
                steps = database._native.execute(insert).__await__()
                while True:
                    try:
                        yielded = steps.send(None)
                    except StopIteration:
                        break
                    suspended += 1
                    assert isinstance(yielded, asyncio.Future)
                    yielded._asyncio_future_blocking = False  # taken, as a task takes it
                    await yielded
            loop.call_soon_threadsafe = original  # type: ignore[method-assign]
            await database.execute("DROP TABLE wake_check")
            return suspended

    try:
        suspended = loop.run_until_complete(main())
    finally:
        loop.close()
    assert suspended >= 20
    assert calls == 0


@pytest.mark.asyncio
async def test_cancellations_at_any_point_leave_every_connection_usable(database_url: str) -> None:
    """Tasks cancelled at random points of their work (queries, nested transactions, an
    explicit rollback, an iteration) end cancelled, with no other error, and leave no
    connection busy, inside a transaction or waiting for a wake."""
    import random

    rng = random.Random(7)
    async with Database(database_url, min_size=4, max_size=4) as database:

        async def work(i: int) -> None:
            for j in range(12):
                step = (i + j) % 4
                if step == 0:
                    async with database.transaction():
                        await database.fetch_val("SELECT :v", {"v": j})
                        async with database.transaction():
                            await database.fetch_val("SELECT :v", {"v": j})
                elif step == 1:
                    transaction = await database.transaction()
                    try:
                        await database.fetch_val("SELECT :v", {"v": j})
                    except BaseException:
                        await transaction.rollback()
                        raise
                    else:
                        await transaction.commit()
                elif step == 2:
                    async for _ in database.iterate("SELECT :v AS v", {"v": j}):
                        pass
                else:
                    await database.fetch_one("SELECT :v AS v", {"v": j})

        deadline = time.monotonic() + 20
        rounds = 0
        while rounds < 40 and time.monotonic() < deadline:
            rounds += 1
            tasks = [asyncio.create_task(work(i)) for i in range(8)]
            await asyncio.sleep(rng.uniform(0, 0.004))
            for task in tasks:
                if rng.random() < 0.7:
                    task.cancel()
            done, pending = await asyncio.wait(tasks, timeout=30)
            assert not pending, "a task hung"
            for task in done:
                if not task.cancelled():
                    assert task.exception() is None, repr(task.exception())
        await _pool_answers(database, 4)


async def _pool_answers(database: Database, size: int) -> None:
    """Every one of the pool's `size` connections answers within a few seconds."""

    async def one() -> int:
        async with database.connection() as connection:
            return int(await connection.fetch_val("SELECT 1"))

    assert await asyncio.wait_for(asyncio.gather(*(one() for _ in range(size))), 10) == [1] * size


@pytest.mark.asyncio
async def test_a_connection_freed_by_python_goes_back_through_the_runtime(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # The pool discards a connection freed inside a transaction and opens another: work it
    # spawns on the runtime, from the loop's thread here, where no runtime runs.
    async with Database(database_url, min_size=2, max_size=2) as database:
        native = await database._native.acquire_begin()
        del native  # freed at once (the last reference)
        await _pool_answers(database, 2)
    assert "panicked" not in capfd.readouterr().err


@pytest.mark.asyncio
async def test_an_operation_dropped_after_its_task_finished_gives_its_result_back(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # A cancelled await whose work had already finished on the runtime (PostgreSQL runs it
    # as a task there): the connection it got, inside a transaction, is dropped with it.
    async with Database(database_url, min_size=2, max_size=2) as database:
        steps = database._native.acquire_begin().__await__()
        try:
            next(steps)
        except StopIteration as done:  # finished at once: free what it returned
            del done
        else:
            await asyncio.sleep(0.5)  # the task finishes; nobody collects its result
            steps.close()
        del steps
        await _pool_answers(database, 2)
    assert "panicked" not in capfd.readouterr().err


@pytest.mark.asyncio
async def test_a_savepoint_whose_start_was_cancelled_as_it_finished_rolls_back_with_its_outer_one(
    database_url: str,
) -> None:
    # The savepoint opens on the runtime (PostgreSQL) while its caller is being cancelled:
    # the caller never learns of it, and rolling back the outer transaction undoes it too.
    async with Database(database_url, min_size=1, max_size=1) as database:
        native = await database._native.acquire_begin()
        steps = native.begin().__await__()
        try:
            next(steps)
        except StopIteration:
            pass  # opened at once: then the caller did learn of it, and this checks less
        else:
            await asyncio.sleep(0.5)
            steps.close()
        del steps
        await native.finish_release(1, False)
        assert await database.fetch_val("SELECT 1") == 1
