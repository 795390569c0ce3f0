"""Failures that encode/databases 0.9 users hit, fixed here: one test group per case, on every
database. Each hang-prone case runs under ``asyncio.wait_for`` so that a regression fails
instead of hanging."""

from __future__ import annotations

import asyncio
import time
import typing

import pytest
import sqlalchemy

from conftest import slow_query
from databases import Database, ExecuteResult
from databases.exceptions import InterfaceError, ProgrammingError

metadata = sqlalchemy.MetaData()
rows_table = sqlalchemy.Table(
    "fix_rows",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("n", sqlalchemy.Integer),
    sqlalchemy.Column("tag", sqlalchemy.String(length=20)),
)

# More rows than one chunk (500), so that iterations are still reading when the loop body runs.
ROWS = 1200
HANG = 20  # seconds after which a case counts as hung


@pytest.fixture
def tables(create_tables: typing.Callable[[sqlalchemy.MetaData], None]) -> None:
    create_tables(metadata)


async def _fill(database: Database, count: int = ROWS) -> None:
    await database.execute_many(
        "INSERT INTO fix_rows (n, tag) VALUES (:n, :tag)",
        [{"n": i, "tag": "base"} for i in range(count)],
    )


def _slow_rows(url: str) -> str:
    """A query whose first row takes long: for cancelling an iteration before it starts."""
    return {
        "postgresql": "SELECT g FROM generate_series(1, 3) g, pg_sleep(30)",
        "mysql": "SELECT SLEEP(30) AS g",
        "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT x FROM c WHERE x < 0",
    }[url.split(":", 1)[0]]


# 1. Querying inside iterate() (upstream: deadlock, its issue #176).


@pytest.mark.asyncio
async def test_queries_inside_iterate(database_url: str, tables: None) -> None:
    async def run() -> None:
        async with Database(database_url) as database:
            await _fill(database)
            seen = 0
            async for row in database.iterate("SELECT id, n FROM fix_rows ORDER BY id"):
                if row["n"] % 300 == 0:
                    count = await database.fetch_val("SELECT COUNT(*) FROM fix_rows")
                    assert count == ROWS + seen // 300
                    await database.execute(
                        "INSERT INTO fix_rows (n, tag) VALUES (:n, 'inner')",
                        {"n": -row["n"]},
                    )
                seen += 1
            # The iteration read what existed when it started, all of it, in order.
            assert seen == ROWS
            assert await database.fetch_val(
                "SELECT COUNT(*) FROM fix_rows WHERE tag = 'inner'"
            ) == ROWS // 300

    await asyncio.wait_for(run(), HANG)


@pytest.mark.asyncio
async def test_queries_inside_iterate_see_the_transaction(database_url: str, tables: None) -> None:
    async def run() -> None:
        async with Database(database_url) as database:
            async with database.transaction():
                await _fill(database)
                await database.execute("INSERT INTO fix_rows (n, tag) VALUES (-1, 'early')")
                seen = 0
                async for row in database.iterate("SELECT id, n FROM fix_rows ORDER BY id"):
                    seen += 1
                    if seen in (1, 700):
                        # Same connection, same transaction: uncommitted rows are visible.
                        assert await database.fetch_val(
                            "SELECT COUNT(*) FROM fix_rows WHERE tag = 'early'"
                        ) == 1
                        # A nested iteration works too.
                        inner = [r[0] async for r in database.iterate("SELECT n FROM fix_rows WHERE n < 3 ORDER BY n")]
                        assert inner == [-1, 0, 1, 2]
                        # So does a savepoint.
                        async with database.transaction():
                            await database.execute(
                                "UPDATE fix_rows SET tag = 'touched' WHERE id = :id",
                                {"id": row["id"]},
                            )
                assert seen == ROWS + 1
                assert await database.fetch_val(
                    "SELECT COUNT(*) FROM fix_rows WHERE tag = 'touched'"
                ) == 2
            # Committed as a whole.
            assert await database.fetch_val("SELECT COUNT(*) FROM fix_rows") == ROWS + 1

    await asyncio.wait_for(run(), HANG)


@pytest.mark.asyncio
async def test_queries_inside_connection_iterate(database_url: str, tables: None) -> None:
    async def run() -> None:
        async with Database(database_url) as database:
            await _fill(database, 600)
            async with database.connection() as connection:
                total = 0
                async for row in connection.iterate("SELECT n FROM fix_rows ORDER BY n"):
                    total += row[0]
                    if row[0] == 10:
                        assert await connection.fetch_val("SELECT MAX(n) FROM fix_rows") == 599
                assert total == sum(range(600))

    await asyncio.wait_for(run(), HANG)


# 2. Leaving iterate() early (upstream: "another operation is in progress" on the next query).


@pytest.mark.asyncio
async def test_break_out_of_iterate_then_query(database_url: str, tables: None) -> None:
    async def run() -> None:
        async with Database(database_url, max_size=1) as database:
            await _fill(database)
            for _ in range(3):
                async for row in database.iterate("SELECT id FROM fix_rows ORDER BY id"):
                    break
                # The same task, and with max_size=1 the same pooled connection.
                assert await database.fetch_val("SELECT COUNT(*) FROM fix_rows") == ROWS
            async with database.transaction():
                for _ in range(3):
                    async for row in database.iterate("SELECT id FROM fix_rows ORDER BY id"):
                        if row[0] > 2:
                            break
                    await database.execute("INSERT INTO fix_rows (n, tag) VALUES (0, 'after')")
            assert await database.fetch_val(
                "SELECT COUNT(*) FROM fix_rows WHERE tag = 'after'"
            ) == 3

    await asyncio.wait_for(run(), HANG)


@pytest.mark.asyncio
async def test_exception_inside_iterate_then_query(database_url: str, tables: None) -> None:
    async def run() -> None:
        async with Database(database_url) as database:
            await _fill(database)
            async with database.connection() as connection:
                with pytest.raises(KeyError):
                    async for row in connection.iterate("SELECT id FROM fix_rows"):
                        raise KeyError(row[0])
                assert await connection.fetch_val("SELECT COUNT(*) FROM fix_rows") == ROWS
                # An explicit aclose() also stops it.
                rows = connection.iterate("SELECT id FROM fix_rows ORDER BY id")
                assert (await rows.__anext__())[0] == 1
                await rows.aclose()
                with pytest.raises(StopAsyncIteration):
                    await rows.__anext__()
                assert await connection.fetch_val("SELECT 1") == 1

    await asyncio.wait_for(run(), HANG)


@pytest.mark.asyncio
async def test_iterate_releases_the_connection_when_left(database_url: str, tables: None) -> None:
    async def run() -> None:
        async with Database(database_url, max_size=2) as database:
            await _fill(database)
            for _ in range(10):
                async for _row in database.iterate("SELECT id FROM fix_rows"):
                    break
            # Ten abandoned iterations kept nothing: both connections can be taken at once.
            async with database.connection() as a, database.connection() as b:
                assert a is b  # one task, one connection
            results = await asyncio.gather(
                *(database.fetch_val("SELECT COUNT(*) FROM fix_rows") for _ in range(4))
            )
            assert results == [ROWS] * 4

    await asyncio.wait_for(run(), HANG)


# 3. Explicit commit or rollback inside `async with database.transaction()` (upstream:
# IndexError at the block's exit, its issue #154); finishing an outer transaction while an
# inner one is open; recursion.


@pytest.mark.asyncio
async def test_explicit_finish_inside_the_block(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        async with database.transaction() as tx:
            await database.execute("INSERT INTO fix_rows (n) VALUES (1)")
            await tx.commit()
        async with database.transaction() as tx:
            await database.execute("INSERT INTO fix_rows (n) VALUES (2)")
            await tx.rollback()
        assert [r[0] for r in await database.fetch_all("SELECT n FROM fix_rows")] == [1]

        outer = await database.transaction()
        inner = await database.transaction()
        with pytest.raises(ProgrammingError, match="finish the inner one first"):
            await outer.commit()
        await inner.rollback()
        await outer.rollback()
        # Nothing left open: the connection is clean and back in the pool.
        assert await database.fetch_val("SELECT COUNT(*) FROM fix_rows") == 1

        @database.transaction()
        async def insert(depth: int) -> None:
            await database.execute("INSERT INTO fix_rows (n) VALUES (:n)", {"n": 100 + depth})
            if depth:
                await insert(depth - 1)

        await insert(3)
        assert await database.fetch_val("SELECT COUNT(*) FROM fix_rows") == 5


# 4. Affected row counts and inserted ids (upstream: none on PostgreSQL, its issue #61).


@pytest.mark.asyncio
async def test_execute_result(database_url: str, tables: None) -> None:
    postgres = database_url.startswith("postgresql")
    async with Database(database_url) as database:
        await _fill(database, 10)
        result = await database.execute_result(
            "UPDATE fix_rows SET tag = 'even' WHERE n % 2 = 0"
        )
        assert isinstance(result, ExecuteResult)
        assert result.rows_affected == 5
        result = await database.execute_result(
            rows_table.delete().where(rows_table.c.n >= 8)
        )
        assert result.rows_affected == 2

        inserted = await database.execute_result(
            "INSERT INTO fix_rows (n, tag) VALUES (42, 'new')"
        )
        assert inserted.rows_affected == 1
        new_id = await database.fetch_val("SELECT id FROM fix_rows WHERE n = 42")
        if postgres:
            assert inserted.last_insert_id is None
            returning = await database.execute_result(
                "INSERT INTO fix_rows (n) VALUES (43) RETURNING id"
            )
            assert returning.returned == new_id + 1
            assert returning.rows_affected == 1
        else:
            assert inserted.last_insert_id == new_id

        async with database.connection() as connection:
            result = await connection.execute_result(
                "DELETE FROM fix_rows WHERE tag = :tag", {"tag": "even"}
            )
            assert result.rows_affected == 4
        # execute() keeps upstream's return value.
        value = await database.execute("INSERT INTO fix_rows (n) VALUES (44)")
        if postgres:
            assert value is None
        else:
            assert value == await database.fetch_val("SELECT id FROM fix_rows WHERE n = 44")


# 5. A missing :name value (upstream's PostgreSQL path bound NULL silently).


@pytest.mark.asyncio
async def test_missing_named_value_is_an_error(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        with pytest.raises(ProgrammingError, match=":tag") as info:
            await database.execute(
                "INSERT INTO fix_rows (n, tag) VALUES (:n, :tag)", {"n": 1}
            )
        assert info.value.kind == "missing_parameter"
        with pytest.raises(ProgrammingError, match=":tag"):
            await database.execute_many(
                "INSERT INTO fix_rows (n, tag) VALUES (:n, :tag)",
                [{"n": 1, "tag": "a"}, {"n": 2}],
            )
        with pytest.raises(ProgrammingError, match=":n"):
            await database.fetch_all("SELECT * FROM fix_rows WHERE n = :n")
        # Nothing was written.
        assert await database.fetch_val("SELECT COUNT(*) FROM fix_rows") == 0


# 6. Disconnecting while other tasks hold connections (upstream: waits for them forever).


@pytest.mark.asyncio
async def test_disconnect_while_connections_are_held(database_url: str, tables: None) -> None:
    database = Database(database_url, disconnect_timeout=0.5)
    await database.connect()
    await _fill(database, 3)
    holding = asyncio.Event()
    release = asyncio.Event()
    started = asyncio.Event()

    async def holder() -> None:
        async with database.connection() as connection:
            holding.set()
            await release.wait()
            await connection.fetch_val("SELECT 1")

    async def in_flight() -> None:
        async with database.transaction():
            await database.execute("INSERT INTO fix_rows (n) VALUES (99)")
            started.set()
            await database.fetch_one(slow_query(database_url))

    held = asyncio.create_task(holder())
    running = asyncio.create_task(in_flight())
    await asyncio.wait_for(holding.wait(), HANG)
    await asyncio.wait_for(started.wait(), HANG)
    await asyncio.sleep(0.2)

    start = time.monotonic()
    await asyncio.wait_for(database.disconnect(), HANG)
    assert time.monotonic() - start < 5
    assert not database.is_connected

    # The statement in flight was stopped with a clear error.
    with pytest.raises(InterfaceError, match="disconnected"):
        await asyncio.wait_for(running, HANG)
    # The task that held an idle connection gets the same error on its next query.
    release.set()
    with pytest.raises(InterfaceError, match="disconnected"):
        await asyncio.wait_for(held, HANG)

    # Nothing half-done: the insert of the stopped transaction is not there.
    async with Database(database_url) as database:
        assert await database.fetch_val("SELECT COUNT(*) FROM fix_rows WHERE n = 99") == 0


@pytest.mark.asyncio
async def test_disconnect_waits_for_connections_that_come_back(database_url: str, tables: None) -> None:
    database = Database(database_url, disconnect_timeout=10)
    await database.connect()
    holding = asyncio.Event()

    async def short_holder() -> int:
        async with database.connection() as connection:
            holding.set()
            await asyncio.sleep(0.3)
            return await connection.fetch_val("SELECT 7")

    task = asyncio.create_task(short_holder())
    await holding.wait()
    await asyncio.wait_for(database.disconnect(), HANG)
    # The holder finished its work before disconnect went on.
    assert task.done() and task.result() == 7


# 7. Cancellation in the middle of an operation (upstream issues #340 and #460: "another
# operation is in progress", "commands out of sync").


@pytest.mark.asyncio
async def test_cancelled_iterate_leaves_the_connection_clean(database_url: str, tables: None) -> None:
    slow = _slow_rows(database_url)

    async def read_all() -> None:
        async for _row in database.iterate(slow):
            pass

    async def read_in_transaction() -> None:
        async with database.transaction():
            await database.execute("INSERT INTO fix_rows (n) VALUES (7)")
            async for _row in database.iterate(slow):
                pass

    async with Database(database_url, max_size=1) as database:
        await _fill(database, 600)
        for attempt in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(read_all(), 0.3)
            assert await asyncio.wait_for(database.fetch_val("SELECT COUNT(*) FROM fix_rows"), HANG) == 600
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(read_in_transaction(), 0.3)
            # The transaction rolled back; the next user of the one connection sees no error.
            assert await asyncio.wait_for(database.fetch_val("SELECT COUNT(*) FROM fix_rows"), HANG) == 600

        # Cancelled while the loop body runs between chunks.
        async def slow_body() -> None:
            async for _row in database.iterate("SELECT id FROM fix_rows"):
                await asyncio.sleep(0.01)

        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow_body(), 0.1)
        assert await asyncio.wait_for(database.fetch_val("SELECT 1"), HANG) == 1


@pytest.mark.asyncio
async def test_cancelled_fetch_and_transaction_leave_the_connection_clean(
    database_url: str, tables: None
) -> None:
    slow = slow_query(database_url)

    async def in_transaction() -> None:
        async with database.transaction():
            await database.execute("INSERT INTO fix_rows (n) VALUES (5)")
            await database.fetch_one(slow)

    async def in_savepoint() -> None:
        async with database.transaction():
            await database.execute("INSERT INTO fix_rows (n) VALUES (6)")
            async with database.transaction():
                await database.fetch_one(slow)

    async with Database(database_url, max_size=1) as database:
        for case in (lambda: database.fetch_one(slow), in_transaction, in_savepoint):
            for _ in range(2):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(case(), 0.3)
                assert await asyncio.wait_for(database.fetch_val("SELECT COUNT(*) FROM fix_rows"), HANG) == 0
                await database.execute("INSERT INTO fix_rows (n) VALUES (1)")
                await database.execute("DELETE FROM fix_rows")
