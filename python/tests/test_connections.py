"""Task-local connections, as upstream 0.8+: one per task, child tasks get their own."""

from __future__ import annotations

import asyncio
import gc
import typing
import weakref

import pytest
import sqlalchemy

from conftest import slow_query
from databases import Database
from databases.core import Connection, Transaction

metadata = sqlalchemy.MetaData()
items = sqlalchemy.Table(
    "conn_items",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.String(length=100)),
)


@pytest.fixture
def tables(create_tables: typing.Callable[[sqlalchemy.MetaData], None]) -> None:
    create_tables(metadata)


@pytest.mark.asyncio
async def test_same_task_reuses_its_connection(database_url: str) -> None:
    async with Database(database_url) as database:
        async with database.connection() as first:
            async with database.connection() as second:
                assert first is second
                assert first.raw_connection is second.raw_connection
            assert first._connection_counter == 1
        assert first._connection_counter == 0
        assert database._connection is None


@pytest.mark.asyncio
async def test_child_task_gets_its_own_connection(database_url: str) -> None:
    async with Database(database_url) as database:
        async with database.connection() as parent:
            child = await asyncio.create_task(_connection_of(database))
            assert child is not parent


async def _connection_of(database: Database) -> Connection:
    return database.connection()


@pytest.mark.asyncio
async def test_transaction_is_tracked_per_task(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        transaction = database.transaction()
        assert isinstance(transaction, Transaction)

        async def sibling() -> typing.Any:
            return transaction._transaction

        early = asyncio.create_task(sibling())
        await transaction.start()
        try:
            # A task created before the start does not see it; one created after inherits it.
            assert await early is None
            assert await asyncio.create_task(sibling()) is transaction._transaction
        finally:
            await transaction.rollback()


@pytest.mark.asyncio
async def test_child_task_does_not_see_parent_transaction(database_url: str, tables: None) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer: the child would wait for the parent's lock")
    async with Database(database_url) as database:
        async with database.transaction(force_rollback=True):
            await database.execute(items.insert(), {"text": "parent"})

            async def child_count() -> int:
                return await database.fetch_val("SELECT COUNT(*) FROM conn_items")

            assert await asyncio.create_task(child_count()) == 0
            assert await database.fetch_val("SELECT COUNT(*) FROM conn_items") == 1


@pytest.mark.asyncio
async def test_passing_the_connection_to_a_child_shares_the_transaction(
    database_url: str, tables: None
) -> None:
    async with Database(database_url) as database:
        async with database.transaction(force_rollback=True):
            connection = database.connection()
            await database.execute(items.insert(), {"text": "parent"})

            async def child(conn: Connection) -> int:
                await conn.execute(items.insert(), {"text": "child"})
                return await conn.fetch_val("SELECT COUNT(*) FROM conn_items")

            assert await asyncio.create_task(child(connection)) == 2
        assert await database.fetch_val("SELECT COUNT(*) FROM conn_items") == 0


@pytest.mark.asyncio
async def test_concurrent_tasks(database_url: str, tables: None) -> None:
    async with Database(database_url, max_size=4) as database:

        async def work(i: int) -> int:
            async with database.transaction():
                await database.execute(items.insert(), {"text": str(i)})
            return await database.fetch_val("SELECT COUNT(*) FROM conn_items")

        results = await asyncio.gather(*(work(i) for i in range(20)))
        assert max(results) == 20
        assert await database.fetch_val("SELECT COUNT(*) FROM conn_items") == 20


@pytest.mark.asyncio
async def test_unentered_connection_says_so(database_url: str) -> None:
    async with Database(database_url) as database:
        connection = database.connection()
        with pytest.raises(AssertionError, match="not acquired"):
            await connection.fetch_all("SELECT 1")


@pytest.mark.asyncio
async def test_cancelled_query_leaves_the_pool_clean(database_url: str) -> None:
    slow = slow_query(database_url, 5)
    async with Database(database_url, max_size=1) as database:
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(database.fetch_one(slow), timeout=0.2)
            # The one pooled connection is usable at once, outside any transaction.
            assert await database.fetch_val("SELECT 1") == 1
        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(_slow_in_transaction(database, slow), timeout=0.2)
            assert await database.fetch_val("SELECT 1") == 1


async def _slow_in_transaction(database: Database, slow: str) -> None:
    async with database.transaction():
        await database.fetch_one(slow)


@pytest.mark.asyncio
async def test_a_finished_tasks_connection_is_forgotten(database_url: str) -> None:
    """A task that took its connection object and ended without entering or leaving it
    leaves nothing behind: the task-to-connection map holds its task weakly, and the
    connection no longer holds the task (which kept both alive until disconnect)."""
    async with Database(database_url) as database:

        async def child() -> None:
            database.connection()

        task = asyncio.create_task(child())
        await task
        assert task in database._connection_map
        finished = weakref.ref(task)
        del task
        await asyncio.sleep(0)  # the loop drops its last handle on the task
        gc.collect()
        assert finished() is None
        assert len(database._connection_map) == 0
