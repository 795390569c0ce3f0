"""Faults produced for real on the shared servers without disturbing them: a pooled
connection killed from another session while idle."""

from __future__ import annotations

import asyncio
import time

import pytest

from databases import Database
from databases.exceptions import OperationalError


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
        try:
            assert await database.fetch_val("SELECT 1") == 1
        except OperationalError as e:
            # PostgreSQL's client sees the closed socket while idle and the pool replaces
            # the connection; MySQL's learns of it on first use, once.
            assert not postgres, e
            assert e.kind == "connection_lost"
        for _ in range(5):
            assert await database.fetch_val("SELECT 1") == 1
        assert await database.fetch_val(id_sql) != victim


def _slow(url: str) -> str:
    return {
        "postgresql": "SELECT pg_sleep(5)",
        "mysql": "SELECT SLEEP(5)",
        "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT count(*) FROM c",
    }[url.split(":", 1)[0]]


async def _server_connections(database: Database, url: str, marker: str) -> int:
    if url.startswith("postgresql"):
        sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = :m"
        return int(await database.fetch_val(sql, {"m": marker}))
    return int(
        await database.fetch_val(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
        )
    )


@pytest.mark.asyncio
async def test_a_thousand_cancellations_leak_nothing(database_url: str) -> None:
    """1,000 tasks cancelled at random points of a fetch, a transaction or an iteration:
    afterwards the pool serves every connection and the server holds no extra session."""
    import random

    rng = random.Random(7)
    slow = _slow(database_url)
    postgres = database_url.startswith("postgresql")
    marker = "databases_cancel_leak_test"
    url = database_url
    if postgres:
        url += ("&" if "?" in url else "?") + f"application_name={marker}"

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
        before = 0 if database_url.startswith("sqlite") else await _server_connections(
            observer, database_url, marker
        )
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
            while (now := await _server_connections(observer, database_url, marker)) > before:
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
