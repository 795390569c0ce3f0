"""Faults produced for real on the shared servers without disturbing them: a pooled
connection killed from another session while idle, and a storm of cancelled operations."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
import typing

import pytest

from conftest import server_sessions, slow_query, with_marker
from databases import Database
from databases.exceptions import IntegrityError, OperationalError


@pytest.mark.asyncio
async def test_a_connection_killed_while_idle_is_replaced(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("an embedded database has no server session to kill")
    postgres = database_url.startswith("postgresql")
    id_sql = "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
    kill = "SELECT pg_terminate_backend(:id)" if postgres else "KILL :id"
    alive = (
        "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = :id"
        if postgres
        else "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id"
    )
    async with Database(database_url, min_size=1, max_size=1) as database, Database(
        database_url
    ) as killer:
        victim = await database.fetch_val(id_sql)
        await killer.execute(kill, {"id": victim})
        started = time.monotonic()
        while await killer.fetch_val(alive, {"id": victim}) != 0:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        # The pool sees, before handing it out, that the server closed the connection.
        for _ in range(5):
            assert await database.fetch_val("SELECT 1") == 1
        assert await database.fetch_val(id_sql) != victim


@pytest.mark.asyncio
async def test_a_connection_killed_while_in_use(database_url: str) -> None:
    """Only the statement in flight fails, with a connection-lost error; the pool discards
    the connection and the next call succeeds."""
    if database_url.startswith("sqlite"):
        pytest.skip("an embedded database has no server session to kill")
    postgres = database_url.startswith("postgresql")
    id_sql = "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
    kill = "SELECT pg_terminate_backend(:id)" if postgres else "KILL :id"
    async with Database(database_url, min_size=1, max_size=1) as database, Database(
        database_url
    ) as killer:
        victim = await database.fetch_val(id_sql)
        slow = asyncio.create_task(database.fetch_val(slow_query(database_url, 5)))
        await asyncio.sleep(0.3)
        await killer.execute(kill, {"id": victim})
        with pytest.raises(OperationalError) as info:
            await asyncio.wait_for(slow, 10)
        assert info.value.kind == "connection_lost", info.value
        for _ in range(5):
            assert await database.fetch_val("SELECT 1") == 1
        assert await database.fetch_val(id_sql) != victim
        # Inside a transaction: the transaction's work is gone, and so is the transaction.
        await database.execute("DROP TABLE IF EXISTS fault_killed")
        await database.execute("CREATE TABLE fault_killed (x INTEGER)")
        async with database.connection() as connection:
            victim = await connection.fetch_val(id_sql)
            tx = await connection.transaction()
            await connection.execute("INSERT INTO fault_killed VALUES (1)")
            slow = asyncio.create_task(connection.fetch_val(slow_query(database_url, 5)))
            await asyncio.sleep(0.3)
            await killer.execute(kill, {"id": victim})
            with pytest.raises(OperationalError):
                await asyncio.wait_for(slow, 10)
            # Nothing is left to undo: the end of the session rolled the transaction back.
            await tx.rollback()
        assert await database.fetch_val("SELECT COUNT(*) FROM fault_killed") == 0
        await database.execute("DROP TABLE fault_killed")


@pytest.mark.asyncio
async def test_a_thousand_cancellations_leak_nothing(database_url: str) -> None:
    """1,000 tasks cancelled at random points of a fetch, a transaction or an iteration:
    afterwards the pool serves every connection and the server holds no extra session."""
    import random

    rng = random.Random(7)
    slow = slow_query(database_url, 5)
    postgres = database_url.startswith("postgresql")
    marker = "databases_cancel_leak_test"
    url = with_marker(database_url, marker)

    async def in_transaction(database: Database) -> None:
        async with database.transaction():
            await database.execute("SELECT 1")
            await database.fetch_one(slow)

    async def iterating(database: Database) -> None:
        async for _ in database.iterate(slow):
            pass

    # One connection only: a pool keeps min_size connections idle besides the one in use,
    # and on MySQL the count below can exclude only the session it runs on.
    async with Database(database_url, min_size=1, max_size=1) as observer:
        before = await server_sessions(observer, database_url, marker)
        async with Database(url, min_size=1, max_size=3) as database:
            cases = [lambda: database.fetch_one(slow), lambda: in_transaction(database),
                     lambda: iterating(database)]
            started = time.monotonic()
            for i in range(1000):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(cases[i % 3](), rng.uniform(0.0005, 0.02))
            elapsed = time.monotonic() - started
            print(f"\n{database_url.split(':')[0]}: 1,000 cancellations in {elapsed:.1f} s")
            # Every connection of the pool is usable at once, outside any transaction.
            values = await asyncio.wait_for(
                asyncio.gather(*(database.fetch_val("SELECT 1") for _ in range(6))), 30
            )
            assert values == [1] * 6
        if not database_url.startswith("sqlite"):
            # The server ends the discarded sessions: back to where it was.
            deadline = time.monotonic() + 20
            while (now := await server_sessions(observer, database_url, marker)) > before:
                if time.monotonic() > deadline:
                    detail = await observer.fetch_all(
                        "SELECT * FROM pg_stat_activity WHERE application_name = :m"
                        if postgres
                        else "SELECT * FROM information_schema.PROCESSLIST "
                        "WHERE ID <> CONNECTION_ID()",
                        {"m": marker} if postgres else None,
                    )
                    raise AssertionError(
                        f"{now} sessions left, {before} before: {[dict(r) for r in detail]}"
                    )
                await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_pool_exhaustion(database_url: str) -> None:
    """With every connection busy in other tasks, a caller waits for the acquire timeout and
    gets an error naming the limit; calls nested on one task never wait for a second
    connection."""
    async with Database(database_url, max_size=2, acquire_timeout=0.3) as database:
        done = asyncio.Event()

        async def hold() -> None:
            async with database.connection() as connection:
                await connection.fetch_val("SELECT 1")
                await done.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(OperationalError) as info:
            await database.fetch_val("SELECT 1")
        assert time.monotonic() - started >= 0.25
        assert info.value.kind == "pool_timeout"
        assert "at most 2 connection" in str(info.value)
        done.set()
        await asyncio.gather(*holders)
        assert await database.fetch_val("SELECT 1") == 1

    # A pool of one: everything nested on one task shares the task's connection.
    async with Database(database_url, max_size=1, acquire_timeout=5) as database:

        async def nested() -> None:
            async with database.transaction():
                assert await database.fetch_val("SELECT 1") == 1
                async with database.connection() as connection:
                    async with connection.transaction():
                        assert await connection.fetch_val("SELECT 2") == 2
                        async with database.transaction():
                            async for row in database.iterate("SELECT 3"):
                                assert row[0] == 3
                                assert await database.fetch_val("SELECT 4") == 4

        await asyncio.wait_for(nested(), 10)


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["fetch", "transaction", "iterate"])
async def test_a_cancelled_query_stops_on_the_server(database_url: str, how: str) -> None:
    """A task cancelled by ``wait_for`` in the middle of a long query: the server stops
    running the query, and the connection serves the next call."""
    if database_url.startswith("sqlite"):
        pytest.skip("an in-process statement: covered by the SQLite interrupt tests")
    marker = f"databases_py_cancel_{how}"
    slow = slow_query(database_url) + f" /* {marker} */"
    running_sql = (
        "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE :p AND pid <> pg_backend_pid()"
        if database_url.startswith("postgresql")
        else "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE INFO LIKE :p AND ID <> CONNECTION_ID()"
    )
    # The pattern must not match the monitoring query itself: split the marker.
    pattern = {"p": f"%{marker[:8]}%{marker[8:]}%"}

    async with Database(database_url, max_size=2) as database, Database(
        database_url, max_size=1
    ) as monitor:

        async def work() -> None:
            if how == "fetch":
                await database.fetch_one(slow)
            elif how == "transaction":
                async with database.transaction():
                    await database.fetch_one(slow)
            else:
                async for _ in database.iterate(slow):
                    pass

        task = asyncio.create_task(work())
        deadline = time.monotonic() + 10
        while await monitor.fetch_val(running_sql, pattern) == 0:
            assert time.monotonic() < deadline, "the query never started"
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 10
        while await monitor.fetch_val(running_sql, pattern) != 0:
            assert time.monotonic() < deadline, "the server kept running the abandoned query"
            await asyncio.sleep(0.02)
        for _ in range(3):
            assert await asyncio.wait_for(database.fetch_val("SELECT 1"), 10) == 1


async def _storm(database: Database, table: str, seed: int) -> tuple[set, set]:
    """24 tasks run transactions (with a savepoint rolled back), transactions whose second
    statement fails, reads left early and plain inserts, each cut off by a timeout drawn
    at random (most of them shorter than the operation). Returns the ids that must be
    stored and those that must not."""
    must: set = set()
    must_not: set = set()
    ids = iter(range(seed * 100_000, (seed + 1) * 100_000))
    insert = f"INSERT INTO {table} (id) VALUES (:id)"

    async def one(task: int) -> None:
        r = random.Random(seed * 100 + task)
        for _ in range(150):
            kind = r.randrange(4)
            a, b = next(ids), next(ids)
            timeout = r.choice([0.0001, 0.0005, 0.001, 0.003, 0.01, 5.0])
            reached_end = False

            async def work() -> None:
                nonlocal reached_end
                if kind == 0:
                    async with database.transaction():
                        await database.execute(insert, {"id": a})
                        with contextlib.suppress(LookupError):
                            async with database.transaction():
                                await database.execute(insert, {"id": b})
                                raise LookupError("roll the savepoint back")
                        reached_end = True
                elif kind == 1:
                    with pytest.raises(IntegrityError):
                        async with database.transaction():
                            await database.execute(insert, {"id": a})
                            await database.execute(insert, {"id": a})
                elif kind == 2:
                    seen = 0
                    async for _ in database.iterate(f"SELECT id FROM {table}"):
                        seen += 1
                        if seen == 20:
                            break
                else:
                    await database.execute(insert, {"id": a})

            try:
                # Any other error (a statement that was not cut off failing) fails the test.
                await asyncio.wait_for(work(), timeout)
            except asyncio.TimeoutError:
                # Cut off: a transaction that did not reach its end must leave nothing;
                # one cut off during its COMMIT, or a plain insert, may or may not be there.
                if kind == 0:
                    must_not.add(b)
                    if not reached_end:
                        must_not.add(a)
                elif kind == 1:
                    must_not.add(a)
            else:
                if kind == 0:
                    must.add(a)
                    must_not.add(b)
                elif kind == 1:
                    must_not.add(a)
                elif kind == 3:
                    must.add(a)

    await asyncio.gather(*(one(t) for t in range(24)))
    return must, must_not


@pytest.mark.asyncio
async def test_a_storm_of_cancellations_leaves_every_connection_clean(database_url: str) -> None:
    # Found by this test: on SQLite, an operation cancelled while it waited for a lock
    # made the next statement on its connection fail at once with "database is locked".
    table = "cancel_storm"
    # SQLite: the default pool, whose connections open as the tasks need them.
    sizes = {} if database_url.startswith("sqlite") else {"min_size": 4, "max_size": 4}
    async with Database(database_url, **sizes) as database:
        await database.execute(f"DROP TABLE IF EXISTS {table}")
        await database.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        try:
            for seed in (1, 2, 3):
                must, must_not = await _storm(database, table, seed)
                stored = {r[0] for r in await database.fetch_all(f"SELECT id FROM {table}")}
                assert not must - stored, f"seed {seed}: returned, not stored"
                assert not stored & must_not, f"seed {seed}: stored, must not be"
                await asyncio.sleep(0.3)
                await _assert_no_open_transaction(database, database_url)
        finally:
            await database.execute(f"DROP TABLE IF EXISTS {table}")


async def _assert_no_open_transaction(database: Database, url: str) -> None:
    if url.startswith("sqlite"):
        # Any connection inside a transaction would hold a lock on the file.
        path = url.split("///", 1)[1]
        other = sqlite3.connect(path, timeout=0)
        try:
            other.execute("BEGIN EXCLUSIVE")
            other.rollback()
        finally:
            other.close()
        return
    # Each of the pool's four connections: on PostgreSQL a transaction left open would have
    # started at least 0.3 s ago.
    check = (
        "SELECT statement_timestamp() - now() < interval '0.2 seconds'"
        if url.startswith("postgresql")
        else "SELECT @@in_transaction = 0"
    )
    assert all(await _each_connection(database, check))


@pytest.mark.asyncio
async def test_sessions_killed_under_load_lose_no_commit(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by this test: on MySQL a connection whose last operation was an `iterate` went
    # back to the pool unchecked, so one killed while idle was handed out dead; and a
    # transaction rolled back after its session was lost logged a second error.
    if database_url.startswith("sqlite"):
        pytest.skip("an embedded database has no server session to kill")
    postgres = database_url.startswith("postgresql")
    table = "kill_storm"
    own_id = "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
    # Only sessions of this test's pool are killed (their ids are collected as it runs).
    live = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'kill_storm'"
        if postgres
        else "SELECT ID FROM information_schema.PROCESSLIST"
    )
    kill = "SELECT pg_terminate_backend(:id)" if postgres else "KILL :id"
    async with Database(
        with_marker(database_url, "kill_storm"), min_size=4, max_size=4
    ) as database, Database(database_url, min_size=1, max_size=1) as killer:
        await database.execute(f"DROP TABLE IF EXISTS {table}")
        await database.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        ours: set = set()
        stored_ok: set = set()
        done = False

        async def kill_some() -> int:
            r, kills = random.Random(7), 0
            while not done:
                await asyncio.sleep(r.choice([0.005, 0.01, 0.03]))
                victims = [row[0] for row in await killer.fetch_all(live) if row[0] in ours]
                if victims:
                    await killer.execute(kill, {"id": r.choice(victims)})
                    kills += 1
            return kills

        async def work(task: int) -> None:
            r = random.Random(task)
            for i in range(40):
                a = task * 1000 + 2 * i
                try:
                    choice = r.randrange(3)
                    if choice == 0:
                        async with database.transaction():
                            await database.execute(f"INSERT INTO {table} VALUES (:a)", {"a": a})
                            await database.execute(
                                f"INSERT INTO {table} VALUES (:a)", {"a": a + 1}
                            )
                        stored_ok.update([a, a + 1])
                    elif choice == 1:
                        ours.add(await database.fetch_val(own_id))
                    else:
                        async for _ in database.iterate(f"SELECT id FROM {table}"):
                            pass
                except OperationalError as e:
                    # The connection-lost kind, and nothing else.
                    assert e.kind == "connection_lost", e

        killing = asyncio.create_task(kill_some())
        await asyncio.wait_for(asyncio.gather(*(work(t) for t in range(16))), 60)
        done = True
        assert await killing > 0
        stored = {r[0] for r in await killer.fetch_all(f"SELECT id FROM {table}")}
        assert not stored_ok - stored, "a commit that returned is missing"
        # Every transaction kept both rows or neither.
        assert all((x ^ 1) in stored for x in stored)
        await asyncio.sleep(0.3)
        # The pool serves again: each of its connections, at once.
        assert await _each_connection(database, "SELECT 1") == [1] * 4
        await killer.execute(f"DROP TABLE {table}")
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


async def _each_connection(database: Database, sql: str) -> list:
    """The value `sql` returns on each of the pool's four connections, held at once so
    that none is handed out twice."""
    held = asyncio.Event()
    arrived = 0

    async def one() -> typing.Any:
        nonlocal arrived
        async with database.connection() as connection:
            value = await connection.fetch_val(sql)
            arrived += 1
            if arrived == 4:
                held.set()
            await asyncio.wait_for(held.wait(), 10)
            return value

    return list(await asyncio.gather(*(one() for _ in range(4))))


@pytest.mark.asyncio
async def test_a_cancelled_statement_under_force_rollback(database_url: str) -> None:
    # MySQL commits DDL, so the table can outlive the test's transaction there.
    async with Database(database_url) as database:
        await database.execute("DROP TABLE IF EXISTS fr_cancelled")
    async with Database(database_url, force_rollback=True) as database:
        await database.execute("CREATE TABLE fr_cancelled (x INTEGER)")
        await database.execute("INSERT INTO fr_cancelled VALUES (1)")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(database.fetch_val(slow_query(database_url, 5)), 0.3)
        if database_url.startswith("sqlite"):
            # The read was stopped; the test's transaction goes on.
            assert await database.fetch_val("SELECT COUNT(*) FROM fr_cancelled") == 1
            return
        # The shared connection's session is gone, and the message says what to do.
        with pytest.raises(OperationalError) as info:
            await database.fetch_val("SELECT COUNT(*) FROM fr_cancelled")
        assert info.value.kind == "connection_lost"
        assert "disconnect and connect again" in str(info.value)
        await database.disconnect()
        await database.connect()
        # A new session, in a new transaction.
        assert await database.fetch_val("SELECT 1") == 1
    async with Database(database_url) as database:
        await database.execute("DROP TABLE IF EXISTS fr_cancelled")
