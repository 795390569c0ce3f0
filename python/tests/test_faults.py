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
