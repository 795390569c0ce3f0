"""Hostile and broken input on every database: values are bound, never interpolated; bad
values get a clear, typed error and change nothing; the connection stays usable; and a load
of 200 tasks on a pool of 10 runs without errors or leaks."""

from __future__ import annotations

import asyncio
import math
import time
import typing

import pytest
import sqlalchemy

from conftest import server_sessions, with_marker
from databases import Database
from databases.exceptions import DatabaseError, InterfaceError

metadata = sqlalchemy.MetaData()
values_table = sqlalchemy.Table(
    "bad_values",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.Text),
    sqlalchemy.Column("number", sqlalchemy.BigInteger),
    sqlalchemy.Column("real", sqlalchemy.Float(precision=53)),
)

HOSTILE = [
    "'",
    "''",
    '"',
    "'; DROP TABLE bad_values; --",
    "1'; DELETE FROM bad_values WHERE '1'='1",
    "/* comment */",
    "-- comment",
    "# comment",
    ":text",
    ":id, :number",
    "$1",
    "?",
    "%s",
    "%(text)s",
    "\\",
    "\\'",
    "\\x00-looking",
    "é ü 日本語 🚀",
    "a\tb\nc\rd",
    "",
    " " * 1000,
    "\u202e reversed",
]

# Errors a bad value may get: ours (a DatabaseError or InterfaceError subclass), or Python's
# own for values that cannot be a parameter at all.
BAD_VALUE_ERRORS = (DatabaseError, InterfaceError, ValueError, OverflowError, TypeError)


@pytest.fixture
def tables(create_tables: typing.Callable[[sqlalchemy.MetaData], None]) -> None:
    create_tables(metadata)


async def _count(database: Database) -> int:
    return typing.cast(int, await database.fetch_val("SELECT COUNT(*) FROM bad_values"))


@pytest.mark.asyncio
async def test_hostile_strings_round_trip(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        for i, text in enumerate(HOSTILE, 1):
            await database.execute(
                "INSERT INTO bad_values (id, text) VALUES (:id, :text)", {"id": i, "text": text}
            )
        await database.execute_many(
            "INSERT INTO bad_values (id, text) VALUES (:id, :text)",
            [{"id": 1000 + i, "text": text} for i, text in enumerate(HOSTILE, 1)],
        )
        for i, text in enumerate(HOSTILE, 1):
            for key in (i, 1000 + i):
                got = await database.fetch_val(
                    "SELECT text FROM bad_values WHERE id = :id", {"id": key}
                )
                assert got == text, (key, text, got)
            # As a filter value too. (MySQL compares with trailing spaces ignored, so a
            # string of spaces also matches the empty string there.)
            rows = await database.fetch_all(
                values_table.select().where(values_table.c.text == text)
            )
            assert {i, 1000 + i} <= {row["id"] for row in rows}, text
        assert await _count(database) == 2 * len(HOSTILE)


@pytest.mark.asyncio
async def test_bad_values_get_clear_errors_and_change_nothing(
    database_url: str, tables: None
) -> None:
    postgres = database_url.startswith("postgresql")
    async with Database(database_url) as database:
        await database.execute("INSERT INTO bad_values (id, text) VALUES (1, 'kept')")

        # Out-of-range integers.
        for number in (2**64, -(2**63) - 1, 10**30):
            with pytest.raises(BAD_VALUE_ERRORS):
                await database.execute(
                    "INSERT INTO bad_values (id, number) VALUES (2, :n)", {"n": number}
                )
        # Wrong types for the parameter.
        for value in (object(), {1, 2}, lambda: 1):
            with pytest.raises(TypeError, match="parameter 'n'"):
                await database.execute(
                    "INSERT INTO bad_values (id, number) VALUES (2, :n)", {"n": value}
                )
        # Data nested past any limit: an error, not a crash.
        deep: list = []
        for _ in range(100_000):
            deep = [deep]
        with pytest.raises(ValueError, match="nested deeper"):
            await database.execute("INSERT INTO bad_values (id, text) VALUES (2, :t)", {"t": deep})
        nested: dict = {}
        for _ in range(10_000):
            nested = {"a": nested}
        with pytest.raises(ValueError, match="nested deeper"):
            await database.execute(
                "INSERT INTO bad_values (id, text) VALUES (2, :t)", {"t": nested}
            )
        assert await _count(database) == 1

        # NaN and infinities: stored exactly where the database has them, else an error.
        for i, value in enumerate((math.nan, math.inf, -math.inf)):
            try:
                await database.execute(
                    "INSERT INTO bad_values (id, real) VALUES (:id, :r)", {"id": 10 + i, "r": value}
                )
            except BAD_VALUE_ERRORS:
                assert not postgres, "PostgreSQL stores NaN and infinities"
                continue
            got = await database.fetch_val(
                "SELECT real FROM bad_values WHERE id = :id", {"id": 10 + i}
            )
            assert (math.isnan(got) and math.isnan(value)) or got == value

        # NUL characters and invalid UTF-8 where text is expected.
        for i, value in enumerate(("a\x00b", b"\xff\xfe\xfd")):
            before = await _count(database)
            try:
                await database.execute(
                    "INSERT INTO bad_values (id, text) VALUES (:id, :t)", {"id": 20 + i, "t": value}
                )
            except BAD_VALUE_ERRORS:
                assert await _count(database) == before
                continue
            got = await database.fetch_val(
                "SELECT text FROM bad_values WHERE id = :id", {"id": 20 + i}
            )
            # Stored as given (SQLite keeps bytes as a blob even in a TEXT column).
            assert got == value, (value, got)

        # The connection is fine after all of that.
        assert await database.fetch_val(
            "SELECT text FROM bad_values WHERE id = 1"
        ) == "kept"


@pytest.mark.asyncio
async def test_16_mib_values(database_url: str, tables: None) -> None:
    big = "x" * (16 * 2**20)
    async with Database(database_url) as database:
        try:
            await database.execute(
                "INSERT INTO bad_values (id, text) VALUES (1, :t)", {"t": big}
            )
        except DatabaseError as e:
            # MariaDB's default max_allowed_packet is 16 MiB, which the statement exceeds;
            # the server answers by closing the connection, which the pool then discards.
            assert database_url.startswith("mysql"), e
            assert await _count(database) == 0
        else:
            got = await database.fetch_val("SELECT text FROM bad_values WHERE id = 1")
            assert got == big
        # Either way the pool still answers.
        assert await database.fetch_val("SELECT 1") == 1


@pytest.mark.asyncio
async def test_passwords_never_shown(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-P%40ss"  # URL-encoded "s3cr3t-P@ss"
    plain = "s3cr3t-P@ss"
    if database_url.startswith("sqlite"):
        url = f"postgresql://someone:{secret}@127.0.0.1:9/nothing?connect_timeout=2"
    else:
        scheme, rest = database_url.split("://", 1)
        host = rest.split("@", 1)[-1]
        # A wrong password on a real server: the server's error must not echo it.
        url = f"{scheme}://nobody_here:{secret}@{host}"
    caplog.set_level("DEBUG")
    database = Database(url)
    # str(database.url) is the URL as given, password included, as upstream's is: code
    # passes it on (to SQLAlchemy's create_engine, to Alembic). Everything else masks it.
    shown = [repr(database), repr(database.url), database.url.obscure_password]
    with pytest.raises(DatabaseError) as info:
        await database.connect()
    shown += [str(info.value), repr(info.value), str(info.value.args)]
    shown += [r.getMessage() for r in caplog.records]
    for text in shown:
        assert plain not in text and secret not in text, text


def _rss() -> int:
    """This process's resident memory, in bytes (Linux), or 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.asyncio
async def test_load_200_tasks_on_a_pool_of_10(database_url: str, tables: None) -> None:
    """Two bounded rounds of 200 tasks (reads, and updates in transactions) on a pool of
    10: no errors; memory after the second round no higher than after the first, beyond
    noise; afterwards the server holds no session of the pool's beyond its 10."""
    seconds = 1.5  # of load, per round
    marker = "databases_load_test"
    async with Database(database_url, min_size=1, max_size=1) as observer:
        before = await server_sessions(observer, database_url, marker)
        async with Database(
            with_marker(database_url, marker), min_size=1, max_size=10, acquire_timeout=30
        ) as database:
            await database.execute_many(
                "INSERT INTO bad_values (id, text, number) VALUES (:id, :t, :n)",
                [{"id": i, "t": f"row {i}", "n": i} for i in range(1, 101)],
            )

            async def load() -> tuple[int, float]:
                done = 0
                deadline = time.monotonic() + seconds

                async def worker(k: int) -> None:
                    nonlocal done
                    while time.monotonic() < deadline:
                        if k % 10 == 0:
                            async with database.transaction():
                                await database.execute(
                                    "UPDATE bad_values SET number = number + 1 WHERE id = :id",
                                    {"id": k % 100 + 1},
                                )
                        else:
                            row = await database.fetch_one(
                                "SELECT id, text FROM bad_values WHERE id = :id",
                                {"id": k % 100 + 1},
                            )
                            assert row is not None and row["id"] == k % 100 + 1
                        done += 1

                started = time.monotonic()
                await asyncio.wait_for(
                    asyncio.gather(*(worker(k) for k in range(200))), seconds + 60
                )
                return done, time.monotonic() - started

            first, _ = await load()
            warm = _rss()
            done, elapsed = await load()
            grown = _rss() - warm
            print(
                f"\n{database_url.split(':')[0]}: {done / elapsed:,.0f} operations/s with 200 "
                f"tasks; memory {grown / 2**20:+.1f} MiB over the second round"
            )
            assert first >= 200 and done >= 200
            assert grown < 16 * 2**20, f"memory grew {grown / 2**20:.1f} MiB under load"
            assert await server_sessions(observer, database_url, marker) - before <= 10
        # Disconnected: the server ends every session of the pool.
        deadline = time.monotonic() + 20
        while await server_sessions(observer, database_url, marker) > before:
            assert time.monotonic() < deadline, "sessions left after disconnect"
            await asyncio.sleep(0.1)
