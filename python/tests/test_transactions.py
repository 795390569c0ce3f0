"""Transactions on every backend: context manager, await, decorator, savepoints,
force_rollback, options, and misuse."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import typing

import pytest
import sqlalchemy

from databases import (
    Database,
    DatabaseError,
    DatabaseURL,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)

metadata = sqlalchemy.MetaData()
notes = sqlalchemy.Table(
    "tx_notes",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.String(length=100)),
)


@pytest.fixture
def tables(create_tables: typing.Callable[[sqlalchemy.MetaData], None]) -> None:
    create_tables(metadata)


async def count(database: Database) -> int:
    return await database.fetch_val("SELECT COUNT(*) FROM tx_notes")


@pytest.mark.asyncio
async def test_context_manager_commits_and_rolls_back(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        async with database.transaction():
            await database.execute(notes.insert(), {"text": "kept"})
        assert await count(database) == 1

        with pytest.raises(RuntimeError, match="boom"):
            async with database.transaction():
                await database.execute(notes.insert(), {"text": "lost"})
                raise RuntimeError("boom")
        assert await count(database) == 1

        async with database.transaction(force_rollback=True):
            await database.execute(notes.insert(), {"text": "lost"})
        assert await count(database) == 1


@pytest.mark.asyncio
async def test_await_then_commit_or_rollback(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        tx = await database.transaction()
        await database.execute(notes.insert(), {"text": "a"})
        await tx.rollback()
        assert await count(database) == 0

        tx = await database.transaction()
        await database.execute(notes.insert(), {"text": "b"})
        await tx.commit()
        assert await count(database) == 1

        with pytest.raises(ProgrammingError, match="not open"):
            await tx.commit()


@pytest.mark.asyncio
async def test_decorator(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:

        @database.transaction()
        async def insert(text: str, fail: bool = False) -> None:
            await database.execute(notes.insert(), {"text": text})
            if fail:
                raise ValueError(text)

        await insert("ok")
        with pytest.raises(ValueError):
            await insert("bad", fail=True)
        assert [r.text for r in await database.fetch_all(notes.select())] == ["ok"]


@pytest.mark.asyncio
async def test_nested_transactions_are_savepoints(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        async with database.transaction():
            await database.execute(notes.insert(), {"text": "outer"})
            with pytest.raises(RuntimeError):
                async with database.transaction():
                    await database.execute(notes.insert(), {"text": "inner"})
                    raise RuntimeError()
            async with database.transaction():
                await database.execute(notes.insert(), {"text": "inner2"})
            async with database.transaction(force_rollback=True):
                await database.execute(notes.insert(), {"text": "inner3"})
        texts = sorted(r.text for r in await database.fetch_all(notes.select()))
        assert texts == ["inner2", "outer"]


@pytest.mark.asyncio
async def test_explicit_finish_inside_the_block(database_url: str, tables: None) -> None:
    # Upstream raised IndexError at the block's exit (its issue #154).
    async with Database(database_url) as database:
        async with database.transaction() as tx:
            await database.execute(notes.insert(), {"text": "a"})
            await tx.rollback()
        async with database.transaction() as tx:
            await database.execute(notes.insert(), {"text": "b"})
            await tx.commit()
        assert [r.text for r in await database.fetch_all(notes.select())] == ["b"]


@pytest.mark.asyncio
async def test_out_of_order_commit_is_a_clear_error(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        outer = await database.transaction()
        inner = await database.transaction()
        with pytest.raises(ProgrammingError, match="inner one first"):
            await outer.commit()
        await inner.rollback()
        await outer.rollback()
        assert await count(database) == 0


@pytest.mark.asyncio
async def test_recursive_decorated_function(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:

        @database.transaction()
        async def insert(depth: int) -> None:
            await database.execute(notes.insert(), {"text": f"depth {depth}"})
            if depth < 3:
                await insert(depth + 1)

        await insert(1)
        assert await count(database) == 3


@pytest.mark.asyncio
async def test_connection_transaction_and_raw_connection(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        async with database.connection() as connection:
            raw = connection.raw_connection
            assert raw is connection.raw_connection
            async with connection.transaction():
                await connection.execute(notes.insert(), {"text": "x"})
                assert await connection.fetch_val("SELECT COUNT(*) FROM tx_notes") == 1
        assert await count(database) == 1


@pytest.mark.asyncio
async def test_force_rollback_database(database_url: str, tables: None) -> None:
    async with Database(database_url, force_rollback=True) as database:
        await database.execute(notes.insert(), {"text": "gone"})
        async with database.transaction():
            await database.execute(notes.insert(), {"text": "gone too"})
        assert await count(database) == 2
    async with Database(database_url) as database:
        assert await count(database) == 0


@pytest.mark.asyncio
async def test_force_rollback_contextmanager(database_url: str, tables: None) -> None:
    database = Database(database_url)
    with database.force_rollback():
        async with database:
            await database.execute(notes.insert(), {"text": "gone"})
            assert await count(database) == 1
    async with database:
        assert await count(database) == 0


@pytest.mark.asyncio
async def test_force_rollback_is_shared_by_child_tasks(database_url: str, tables: None) -> None:
    async with Database(database_url, force_rollback=True) as database:

        async def insert(i: int) -> None:
            await database.execute(notes.insert(), {"text": str(i)})

        await asyncio.gather(*(insert(i) for i in range(5)))
        assert await count(database) == 5


@pytest.mark.asyncio
async def test_isolation_options(database_url: str, tables: None) -> None:
    dialect = DatabaseURL(database_url).dialect
    async with Database(database_url) as database:
        async with database.transaction(isolation="serializable"):
            await database.execute(notes.insert(), {"text": "s"})
        if dialect == "sqlite":
            with pytest.raises(NotSupportedError):
                async with database.transaction(isolation="read_committed"):
                    pass
            with pytest.raises(NotSupportedError):
                async with database.transaction(readonly=True):
                    pass
        else:
            async with database.transaction(isolation="repeatable_read", readonly=True):
                assert await count(database) == 1
            with pytest.raises(DatabaseError, match="(?i)read.only"):
                async with database.transaction(readonly=True):
                    await database.execute(notes.insert(), {"text": "no"})
        if dialect == "postgresql":
            async with database.transaction(
                isolation="serializable", readonly=True, deferrable=True
            ):
                assert await count(database) == 1
        with pytest.raises(TypeError, match="bogus"):
            database.transaction(bogus=True)
        with pytest.raises(ValueError, match="isolation"):
            async with database.transaction(isolation="chaotic"):
                pass
        assert await count(database) == 1


@pytest.mark.asyncio
async def test_failed_statement_in_transaction_rolls_back_cleanly(
    database_url: str, tables: None
) -> None:
    async with Database(database_url) as database:
        with pytest.raises(Exception):
            async with database.transaction():
                await database.execute(notes.insert(), {"text": "a"})
                await database.execute("SELECT * FROM no_such_table")
        assert await count(database) == 0
        # The connection that ran it is fine for the next user.
        assert await database.fetch_val("SELECT 1") == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("failing", [None, 1, 2, 3, 4])
async def test_an_error_rolls_back_exactly_its_own_level(
    database_url: str, tables: None, failing: int | None
) -> None:
    """Four nested levels, each writing a row before and after the level inside it. The
    failing level hits a unique violation after its inner levels committed: its work and
    theirs roll back, the levels outside it catch the error and carry on."""
    depth = 4
    async with Database(database_url) as database:

        async def level(n: int) -> None:
            async with database.transaction():
                await database.execute(notes.insert(), {"id": n * 10, "text": f"{n} before"})
                if n < depth:
                    try:
                        await level(n + 1)
                    except IntegrityError:
                        assert n + 1 == failing
                if n == failing:
                    await database.execute(notes.insert(), {"id": n * 10, "text": "again"})
                await database.execute(notes.insert(), {"id": n * 10 + 1, "text": f"{n} after"})

        try:
            await level(1)
        except IntegrityError:
            assert failing == 1
        kept = failing - 1 if failing else depth
        expected = sorted(i for n in range(1, kept + 1) for i in (n * 10, n * 10 + 1))
        ids = [r[0] for r in await database.fetch_all("SELECT id FROM tx_notes ORDER BY id")]
        assert ids == expected
        assert await database.fetch_val("SELECT 1") == 1


@contextlib.contextmanager
def _sqlite_write_lock(path: typing.Any) -> typing.Iterator[None]:
    """Holds the write lock of the SQLite file at ``path`` in another process until the
    block ends: two copies of SQLite in one process (Python's sqlite3 and ours) do not see
    each other's locks."""
    holder = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
        "c.execute('COMMIT')\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "locked\n"
        yield
    finally:
        other.communicate(timeout=10)
    assert other.returncode == 0


@pytest.mark.asyncio
async def test_sqlite_begin_that_times_out_fails_its_transaction(tmp_path: typing.Any) -> None:
    """SQLite sends BEGIN with the transaction's first statement. When another writer holds
    the lock past the busy timeout, that statement raises, no statement of the transaction
    runs outside it, and the connection works once the lock is gone."""
    from databases import OperationalError

    path = tmp_path / "locked.db"
    async with Database(f"sqlite:///{path}?busy_timeout=0.05") as database:
        await database.execute("CREATE TABLE t (x INTEGER)")
        with _sqlite_write_lock(path):
            with pytest.raises(OperationalError, match="the transaction did not start: BEGIN"):
                async with database.transaction():
                    await database.execute("INSERT INTO t (x) VALUES (1)")
            tx = await database.transaction()
            for x in (2, 3):
                with pytest.raises(OperationalError, match="did not start"):
                    await database.execute("INSERT INTO t (x) VALUES (:x)", {"x": x})
            await tx.rollback()
        assert await database.fetch_val("SELECT count(*) FROM t") == 0
        async with database.transaction():
            await database.execute("INSERT INTO t (x) VALUES (4)")
        assert await database.fetch_val("SELECT count(*) FROM t") == 1


@pytest.mark.asyncio
async def test_sqlite_cancelled_write_stops_waiting_for_a_lock(tmp_path: typing.Any) -> None:
    """A write cancelled (``asyncio.wait_for``) while it waits for another process's lock
    frees its connection at once, not when the lock goes or the busy timeout runs out; the
    same for a transaction cancelled while its BEGIN waits."""
    path = tmp_path / "locked.db"
    async with Database(f"sqlite:///{path}?busy_timeout=30") as database:
        await database.execute("CREATE TABLE t (x INTEGER)")
        async with database.connection() as connection:
            with _sqlite_write_lock(path):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(connection.execute("INSERT INTO t (x) VALUES (1)"), 0.1)
                started = time.monotonic()
                assert await asyncio.wait_for(connection.fetch_val("SELECT 1"), 5) == 1
                assert time.monotonic() - started < 1

                async def in_transaction() -> None:
                    async with connection.transaction():
                        await connection.execute("INSERT INTO t (x) VALUES (2)")

                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(in_transaction(), 0.1)
                started = time.monotonic()
                assert await asyncio.wait_for(connection.fetch_val("SELECT 1"), 5) == 1
                assert time.monotonic() - started < 1
            assert await connection.fetch_val("SELECT count(*) FROM t") == 0
            async with connection.transaction():
                await connection.execute("INSERT INTO t (x) VALUES (3)")
            assert await connection.fetch_val("SELECT count(*) FROM t") == 1


@pytest.mark.asyncio
async def test_postgres_sends_begin_with_the_first_statement(database_url: str) -> None:
    """The server sees no transaction until its first statement; a failed BEGIN is that
    statement's error, and the block's rollback leaves the connection clean."""
    if DatabaseURL(database_url).dialect != "postgresql":
        pytest.skip("PostgreSQL only: its sessions' states are visible in pg_stat_activity")
    async with Database(database_url, min_size=1, max_size=1) as database, Database(
        database_url
    ) as observer:

        async def state(pid: int) -> str:
            query = "SELECT state FROM pg_stat_activity WHERE pid = :pid"
            return await observer.fetch_val(query, {"pid": pid})

        pid = await database.fetch_val("SELECT pg_backend_pid()")
        async with database.transaction():
            assert await state(pid) == "idle"
            assert await database.fetch_val("SELECT pg_backend_pid()") == pid
            assert await state(pid) == "idle in transaction"
        assert await state(pid) == "idle"
        async with database.transaction():
            pass
        assert await database.fetch_val("SELECT pg_backend_pid()") == pid

        async with database.connection() as conn:
            # A transaction opened with raw SQL and aborted, unknown to the library: the
            # next BEGIN fails there.
            await conn.execute("BEGIN")
            with pytest.raises(DatabaseError):
                await conn.execute("SELECT 1 / 0")
            with pytest.raises(DatabaseError, match="could not start the transaction"):
                async with conn.transaction():
                    try:
                        await conn.fetch_val("SELECT pg_backend_pid()")
                    finally:
                        with pytest.raises(ProgrammingError, match="roll it back"):
                            await conn.fetch_val("SELECT pg_backend_pid()")
            assert await conn.fetch_val("SELECT pg_backend_pid()") == pid
            assert await state(pid) == "idle"


@pytest.mark.asyncio
async def test_mysql_sends_start_transaction_with_the_first_write(database_url: str) -> None:
    """A transaction's first write goes with its START TRANSACTION, its values written
    into the text: they are stored as the bound parameters of the same statement outside a
    transaction are, and the write is undone with the transaction."""
    if DatabaseURL(database_url).dialect != "mysql":
        pytest.skip("MySQL only: the start goes with the first write there")
    import datetime
    import decimal

    async with Database(database_url) as database:
        await database.execute("DROP TABLE IF EXISTS tx_inline_py")
        await database.execute(
            "CREATE TABLE tx_inline_py (k INTEGER, i BIGINT, f DOUBLE, d DECIMAL(20, 6), "
            "s TEXT, b BLOB, t DATETIME(6), ok BOOLEAN)"
        )
        insert = (
            "INSERT INTO tx_inline_py (k, i, f, d, s, b, t, ok) "
            "VALUES (:k, :i, :f, :d, :s, :b, :t, :ok)"
        )
        when = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)
        rows = [
            dict(i=-(2**63), f=0.1, d=decimal.Decimal("-12345.678901"), s="it's '?' -- ;",
                 b=b"\xff\x00", t=when, ok=True),
            dict(i=2**63 - 1, f=-1e300, d=None, s="back\\slash ünï", b=b"abc", t=None, ok=False),
            dict(i=None, f=None, d=decimal.Decimal("0"), s="", b=None,
                 t=datetime.datetime(1970, 1, 1), ok=None),
        ]
        for n, row in enumerate(rows):
            await database.execute(insert, {"k": 2 * n, **row})
            async with database.transaction():
                await database.execute(insert, {"k": 2 * n + 1, **row})
        stored = await database.fetch_all(
            "SELECT i, f, d, s, b, t, ok FROM tx_inline_py ORDER BY k"
        )
        assert len(stored) == 2 * len(rows)
        for outside, inside in zip(stored[::2], stored[1::2]):
            assert tuple(outside) == tuple(inside)

        with pytest.raises(RuntimeError, match="undo"):
            async with database.transaction():
                await database.execute("DELETE FROM tx_inline_py")
                raise RuntimeError("undo")
        assert await database.fetch_val("SELECT COUNT(*) FROM tx_inline_py") == 2 * len(rows)
        await database.execute("DROP TABLE tx_inline_py")
