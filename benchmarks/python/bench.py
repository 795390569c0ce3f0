"""One implementation's run of the Python benchmark workloads on one database.

    python bench.py --impl ours|upstream|raw --url URL [--memory iterate|fetch_all]

``ours`` and ``upstream`` both import ``databases`` (this package, or encode/databases
0.9.0 from the registry), so each runs in its own virtual environment; ``raw`` uses the
driver underneath upstream (asyncpg, asyncmy, aiosqlite). Prints one JSON object: the
workloads' figures, or with ``--memory`` the peak memory of one workload (run in a process
of its own so that peaks do not mix). ``run`` drives it; see the README.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
import typing
from urllib.parse import urlsplit

ROWS = 10_000  # rows of the fetch_all / iterate table
FETCH_ONE_CALLS = 2_000
MANY_ROWS = 5_000
TRANSACTIONS = 1_000
TASKS, PER_TASK, POOL = 32, 100, 10
ITERATE_MEMORY_ROWS = 1_000_000
FETCH_ALL_MEMORY_ROWS = 100_000
# Python work between two calls of the "with work between calls" workload, as a request
# handler does some: long enough for the threads that waited on the database to fall asleep.
PAUSE_SECONDS = 50e-6
REPEAT = 5  # each timed workload runs this often; the best run counts
# Short workloads run this many times inside one timed run, so that a run lasts long enough
# (tens of milliseconds) for scheduling noise to matter less.
INNER = {"fetch_all": 5, "iterate": 5}

SELECT_ONE = "SELECT id, name, value, flag, created FROM bench_rows WHERE id = :id"
SELECT_ALL = "SELECT id, name, value, flag, created FROM bench_rows"
INSERT = "INSERT INTO bench_insert (name, value, flag, created) VALUES (:name, :value, :flag, :created)"
START = datetime.datetime(2024, 1, 1)


def dialect(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    return "postgresql" if scheme in ("postgres", "postgresql") else scheme


def series(kind: str, n: int) -> str:
    """A generated result of n rows with the five columns (int, text, float, bool, timestamp)."""
    if kind == "postgresql":
        return (
            "SELECT g AS id, 'name ' || g AS name, (g * 1.5)::float8 AS value, (g & 1) = 0 AS flag, "
            "timestamp '2024-01-01' + g * interval '1 second' AS created "
            f"FROM generate_series(1, {n}) g"
        )
    if kind == "mysql":
        # Not a recursive CTE: MySQL and MariaDB cap recursion (at 1,000 by default) and
        # MariaDB then truncates the result quietly. Six tables of digits give a million rows.
        digits = "SELECT 0 n UNION ALL " + " UNION ALL ".join(f"SELECT {i}" for i in range(1, 10))
        return (
            f"WITH d(n) AS ({digits}), "
            "s(g) AS (SELECT 1 + a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n "
            "+ 100000 * h.n FROM d a, d b, d c, d e, d f, d h) "
            "SELECT g AS id, CONCAT('name ', g) AS name, CAST(g * 1.5 AS DOUBLE) AS value, "
            "(g & 1) = 0 AS flag, TIMESTAMP('2024-01-01') + INTERVAL g SECOND AS created "
            f"FROM s WHERE g <= {n}"
        )
    return (
        f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) "
        "SELECT g AS id, 'name ' || g AS name, g * 1.5 AS value, (g & 1) = 0 AS flag, "
        "datetime('2024-01-01', '+' || g || ' seconds') AS created FROM s"
    )


def ddl(kind: str) -> list[str]:
    if kind == "postgresql":
        key, text, real, boolean, ts = "SERIAL PRIMARY KEY", "VARCHAR(50)", "DOUBLE PRECISION", "BOOLEAN", "TIMESTAMP"
    elif kind == "mysql":
        key, text, real, boolean, ts = "INTEGER PRIMARY KEY AUTO_INCREMENT", "VARCHAR(50)", "DOUBLE", "BOOLEAN", "DATETIME"
    else:
        key, text, real, boolean, ts = "INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "REAL", "BOOLEAN", "TIMESTAMP"
    columns = f"(id {key}, name {text}, value {real}, flag {boolean}, created {ts})"
    return [
        "DROP TABLE IF EXISTS bench_rows",
        "DROP TABLE IF EXISTS bench_insert",
        f"CREATE TABLE bench_rows {columns}",
        f"CREATE TABLE bench_insert {columns}",
    ]


def row_values(i: int) -> dict:
    return {
        "name": f"name {i}",
        "value": i * 1.5,
        "flag": i % 2 == 0,
        "created": START + datetime.timedelta(seconds=i),
    }


class Timer:
    def __init__(self) -> None:
        self.results: dict[str, dict] = {}

    async def run(self, name: str, count: int, unit: str, work: typing.Callable[[], typing.Awaitable[None]]) -> None:
        best = float("inf")
        inner = INNER.get(name, 1)
        for _ in range(REPEAT):
            start = time.perf_counter()
            for _ in range(inner):
                await work()
            best = min(best, (time.perf_counter() - start) / inner)
        self.results[name] = {"per_second": count / best, "unit": unit, "seconds": best, "count": count}
        print(f"  {name}: {count / best:,.0f} {unit}/s", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# encode/databases' API: this package or upstream.


class DatabasesImpl:
    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = dialect(url)

    async def open(self) -> None:
        import sqlalchemy
        from databases import Database

        options = {} if self.kind == "sqlite" else {"min_size": POOL, "max_size": POOL}
        self.db = Database(self.url, **options)
        await self.db.connect()
        metadata = sqlalchemy.MetaData()
        self.table = sqlalchemy.Table(
            "bench_rows",
            metadata,
            sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
            sqlalchemy.Column("name", sqlalchemy.String(50)),
            sqlalchemy.Column("value", sqlalchemy.Float),
            sqlalchemy.Column("flag", sqlalchemy.Boolean),
            sqlalchemy.Column("created", sqlalchemy.DateTime),
        )

    async def close(self) -> None:
        await self.db.disconnect()

    async def setup(self) -> None:
        for sql in ddl(self.kind):
            await self.db.execute(sql)
        rows = [row_values(i) for i in range(1, ROWS + 1)]
        await self.db.execute_many(INSERT.replace("bench_insert", "bench_rows"), rows)

    async def fetch_one(self, i: int) -> typing.Any:
        row = await self.db.fetch_one(SELECT_ONE, {"id": i})
        return row["value"]

    async def fetch_one_core(self, i: int) -> typing.Any:
        row = await self.db.fetch_one(self.table.select().where(self.table.c.id == i))
        return row["value"]

    async def fetch_all(self, sql: str = SELECT_ALL) -> float:
        total = 0.0
        for row in await self.db.fetch_all(sql):
            total += row["value"]
        return total

    async def iterate(self, sql: str = SELECT_ALL) -> float:
        total = 0.0
        async for row in self.db.iterate(sql):
            total += row["value"]
        return total

    async def execute_many(self, rows: list[dict]) -> None:
        await self.db.execute("DELETE FROM bench_insert")
        await self.db.execute_many(INSERT, rows)

    async def transactions(self, rows: list[dict]) -> None:
        for values in rows:
            async with self.db.transaction():
                await self.db.execute(INSERT, values)


# ---------------------------------------------------------------------------------------------
# The raw drivers.


def _positional(sql: str, style: str) -> tuple[str, list[str]]:
    """`:name` SQL in the driver's placeholder style, and the names in order."""
    import re

    names: list[str] = []

    def sub(match: re.Match) -> str:
        names.append(match.group(1))
        return {"dollar": f"${len(names)}", "format": "%s", "qmark": "?"}[style]

    return re.sub(r":(\w+)", sub, sql), names


class AsyncpgImpl:
    def __init__(self, url: str) -> None:
        self.url = url.replace("postgresql+asyncpg", "postgresql").split("?", 1)[0]

    async def open(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.url, min_size=POOL, max_size=POOL, ssl=False)
        self.select_one, _ = _positional(SELECT_ONE, "dollar")
        self.insert, self.insert_names = _positional(INSERT, "dollar")

    async def close(self) -> None:
        await self.pool.close()

    async def fetch_one(self, i: int) -> typing.Any:
        row = await self.pool.fetchrow(self.select_one, i)
        return row["value"]

    async def fetch_all(self, sql: str = SELECT_ALL) -> float:
        return sum(row["value"] for row in await self.pool.fetch(sql))

    async def iterate(self, sql: str = SELECT_ALL) -> float:
        total = 0.0
        async with self.pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(sql, prefetch=500):
                total += row["value"]
        return total

    async def execute_many(self, rows: list[dict]) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM bench_insert")
            await conn.executemany(self.insert, [tuple(r[n] for n in self.insert_names) for r in rows])

    async def transactions(self, rows: list[dict]) -> None:
        for values in rows:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(self.insert, *(values[n] for n in self.insert_names))


class AsyncmyImpl:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.options = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": parts.username or "root",
            "password": parts.password or "",
            "db": parts.path.lstrip("/"),
        }

    async def open(self) -> None:
        import asyncmy

        self.pool = await asyncmy.create_pool(minsize=POOL, maxsize=POOL, autocommit=True, **self.options)
        self.select_one, _ = _positional(SELECT_ONE, "format")
        self.insert, self.insert_names = _positional(INSERT, "format")

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()

    async def fetch_one(self, i: int) -> typing.Any:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(self.select_one, (i,))
            return (await cur.fetchone())[2]

    async def fetch_all(self, sql: str = SELECT_ALL) -> float:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql)
            return sum(row[2] for row in await cur.fetchall())

    async def iterate(self, sql: str = SELECT_ALL) -> float:
        from asyncmy.cursors import SSCursor

        total = 0.0
        async with self.pool.acquire() as conn, conn.cursor(SSCursor) as cur:
            await cur.execute(sql)
            while True:
                rows = await cur.fetchmany(500)
                if not rows:
                    break
                for row in rows:
                    total += row[2]
        return total

    async def execute_many(self, rows: list[dict]) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("DELETE FROM bench_insert")
            await cur.executemany(self.insert, [tuple(r[n] for n in self.insert_names) for r in rows])

    async def transactions(self, rows: list[dict]) -> None:
        for values in rows:
            async with self.pool.acquire() as conn:
                await conn.begin()
                async with conn.cursor() as cur:
                    await cur.execute(self.insert, tuple(values[n] for n in self.insert_names))
                await conn.commit()


class AiosqliteImpl:
    def __init__(self, url: str) -> None:
        self.path = urlsplit(url).path[1:]

    async def open(self) -> None:
        import aiosqlite

        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        self.select_one, _ = _positional(SELECT_ONE, "qmark")
        self.insert, self.insert_names = _positional(INSERT, "qmark")

    async def close(self) -> None:
        await self.db.close()

    async def fetch_one(self, i: int) -> typing.Any:
        async with self.db.execute(self.select_one, (i,)) as cur:
            return (await cur.fetchone())[2]

    async def fetch_all(self, sql: str = SELECT_ALL) -> float:
        async with self.db.execute(sql) as cur:
            return sum(row[2] for row in await cur.fetchall())

    async def iterate(self, sql: str = SELECT_ALL) -> float:
        total = 0.0
        async with self.db.execute(sql) as cur:
            async for row in cur:
                total += row[2]
        return total

    async def execute_many(self, rows: list[dict]) -> None:
        await self.db.execute("DELETE FROM bench_insert")
        await self.db.execute("BEGIN")
        await self.db.executemany(self.insert, [tuple(r[n] for n in self.insert_names) for r in rows])
        await self.db.execute("COMMIT")

    async def transactions(self, rows: list[dict]) -> None:
        for values in rows:
            await self.db.execute("BEGIN")
            await self.db.execute(self.insert, tuple(values[n] for n in self.insert_names))
            await self.db.execute("COMMIT")


def implementation(name: str, url: str) -> typing.Any:
    if name in ("ours", "upstream"):
        return DatabasesImpl(url)
    return {"postgresql": AsyncpgImpl, "mysql": AsyncmyImpl, "sqlite": AiosqliteImpl}[dialect(url)](url)


# ---------------------------------------------------------------------------------------------


async def workloads(impl: typing.Any, timer: Timer) -> None:
    ids = [(i * 7919) % ROWS + 1 for i in range(FETCH_ONE_CALLS)]

    async def fetch_one() -> None:
        for i in ids:
            await impl.fetch_one(i)

    await timer.run("fetch_one", FETCH_ONE_CALLS, "calls", fetch_one)

    def work() -> None:
        end = time.perf_counter() + PAUSE_SECONDS
        while time.perf_counter() < end:
            pass

    async def fetch_one_paused() -> None:
        for i in ids:
            await impl.fetch_one(i)
            work()

    await timer.run("fetch_one_paused", FETCH_ONE_CALLS, "calls", fetch_one_paused)

    if hasattr(impl, "fetch_one_core"):

        async def fetch_one_core() -> None:
            for i in ids:
                await impl.fetch_one_core(i)

        await timer.run("fetch_one_core", FETCH_ONE_CALLS, "calls", fetch_one_core)

    async def fetch_all() -> None:
        assert await impl.fetch_all() > 0

    await timer.run("fetch_all", ROWS, "rows", fetch_all)

    async def iterate() -> None:
        assert await impl.iterate() > 0

    await timer.run("iterate", ROWS, "rows", iterate)

    rows = [row_values(i) for i in range(MANY_ROWS)]
    await timer.run("execute_many", MANY_ROWS, "rows", lambda: impl.execute_many(rows))

    tx_rows = [row_values(i) for i in range(TRANSACTIONS)]
    await timer.run("transactions", TRANSACTIONS, "transactions", lambda: impl.transactions(tx_rows))

    async def one_task(offset: int) -> None:
        for k in range(PER_TASK):
            await impl.fetch_one((offset * PER_TASK + k) % ROWS + 1)

    async def concurrent() -> None:
        await asyncio.gather(*(one_task(t) for t in range(TASKS)))

    await timer.run("concurrent_fetch_one", TASKS * PER_TASK, "calls", concurrent)


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


async def memory(impl: typing.Any, which: str, kind: str) -> dict:
    """Peak resident memory added by one workload, from a reset high-water mark."""
    rows = ITERATE_MEMORY_ROWS if which == "iterate" else FETCH_ALL_MEMORY_ROWS
    sql = series(kind, rows)
    # A short run first, so that lazily created objects (statement caches, compiled
    # processors) do not count as the workload's.
    await getattr(impl, which)(series(kind, 1000))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    assert await getattr(impl, which)(sql) > 0
    peak = _status("VmHWM")
    return {"rows": rows, "peak_bytes": peak - before, "bytes_per_row": (peak - before) / rows}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "upstream", "raw"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--memory", choices=["iterate", "fetch_all"])
    parser.add_argument("--setup", action="store_true", help="create and fill the tables")
    args = parser.parse_args()
    kind = dialect(args.url)
    impl = implementation(args.impl, args.url)
    await impl.open()
    try:
        if args.setup:
            await impl.setup()
            print(json.dumps({"setup": True}))
        elif args.memory:
            print(json.dumps(await memory(impl, args.memory, kind)))
        else:
            timer = Timer()
            await workloads(impl, timer)
            print(json.dumps(timer.results))
    finally:
        await impl.close()


if __name__ == "__main__":
    asyncio.run(main())
