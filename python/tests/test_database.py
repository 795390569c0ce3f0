"""The Database API on every backend: lifecycle, raw SQL and SQLAlchemy Core queries."""

from __future__ import annotations

import contextlib
import datetime
import typing

import pytest
import sqlalchemy

from databases import Database, DatabaseURL, InterfaceError, Record

metadata = sqlalchemy.MetaData()

notes = sqlalchemy.Table(
    "notes",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.String(length=100)),
    sqlalchemy.Column("completed", sqlalchemy.Boolean),
)

articles = sqlalchemy.Table(
    "articles",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("title", sqlalchemy.String(length=100)),
    sqlalchemy.Column("published", sqlalchemy.DateTime),
)


@pytest.fixture
def tables(create_tables: typing.Callable[[sqlalchemy.MetaData], None]) -> None:
    create_tables(metadata)


@pytest.mark.asyncio
async def test_connect_and_disconnect_are_idempotent(database_url: str) -> None:
    database = Database(database_url)
    assert not database.is_connected
    await database.connect()
    await database.connect()
    assert database.is_connected
    await database.disconnect()
    await database.disconnect()
    assert not database.is_connected
    # And it connects again.
    async with database:
        assert database.is_connected
        assert await database.fetch_val("SELECT 1") == 1
    assert not database.is_connected


@pytest.mark.asyncio
async def test_url_attribute_and_driver_suffixes(database_url: str) -> None:
    suffix = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "mysql": "asyncmy"}
    url = DatabaseURL(database_url)
    with_driver = url.replace(driver=suffix[url.dialect])
    database = Database(with_driver)
    assert database.url == with_driver
    assert isinstance(database.url, DatabaseURL)
    async with database:
        assert await database.fetch_val("SELECT 7") == 7
    if url.dialect == "postgresql":
        async with Database(url.replace(driver="aiopg")) as db:
            assert await db.fetch_val("SELECT 8") == 8
    if url.dialect == "mysql":
        async with Database(url.replace(driver="aiomysql")) as db:
            assert await db.fetch_val("SELECT 9") == 9


@pytest.mark.asyncio
async def test_query_before_connect_says_so(database_url: str) -> None:
    database = Database(database_url)
    with pytest.raises(InterfaceError, match="connect"):
        await database.fetch_all("SELECT 1")


@pytest.mark.asyncio
async def test_raw_queries(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        query = "INSERT INTO notes(text, completed) VALUES (:text, :completed)"
        values = {"text": "example1", "completed": True}
        await database.execute(query, values)

        query = "INSERT INTO notes(text, completed) VALUES (:text, :completed)"
        values_list = [
            {"text": "example2", "completed": False},
            {"text": "example3", "completed": True},
        ]
        assert await database.execute_many(query, values_list) is None

        results = await database.fetch_all("SELECT * FROM notes ORDER BY id")
        assert len(results) == 3
        assert results[0]["text"] == "example1"
        assert results[0]["completed"]
        assert results[1]["text"] == "example2"
        assert not results[1]["completed"]
        assert results[2]["text"] == "example3"

        result = await database.fetch_one("SELECT * FROM notes WHERE id = :id", {"id": 2})
        assert result is not None
        assert result["text"] == "example2"
        assert await database.fetch_one("SELECT * FROM notes WHERE id = -1") is None

        assert await database.fetch_val("SELECT text FROM notes ORDER BY id") == "example1"
        assert (
            await database.fetch_val("SELECT id, text FROM notes ORDER BY id", column=1)
            == "example1"
        )
        assert (
            await database.fetch_val("SELECT id, text FROM notes ORDER BY id", column="text")
            == "example1"
        )
        assert await database.fetch_val("SELECT text FROM notes WHERE id = -1") is None

        iterated = [r["text"] async for r in database.iterate("SELECT * FROM notes ORDER BY id")]
        assert iterated == ["example1", "example2", "example3"]


@pytest.mark.asyncio
async def test_core_queries(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        await database.execute(notes.insert(), {"text": "example1", "completed": True})
        await database.execute_many(
            notes.insert(),
            [{"text": "example2", "completed": False}, {"text": "example3", "completed": True}],
        )
        results = await database.fetch_all(notes.select().order_by(notes.c.id))
        assert [r["text"] for r in results] == ["example1", "example2", "example3"]
        assert results[0]["completed"] is True
        assert results[1]["completed"] is False
        assert results[0][notes.c.text] == "example1"
        assert results[0]._mapping["completed"] is True

        row = await database.fetch_one(notes.select().where(notes.c.text == "example2"))
        assert row is not None and row.text == "example2" and row.completed is False

        assert await database.fetch_val(
            sqlalchemy.select(notes.c.text).where(notes.c.id == row.id)
        ) == "example2"
        assert await database.fetch_val(notes.select(), column=notes.c.text) == "example1"
        count = await database.fetch_val(sqlalchemy.select(sqlalchemy.func.count()).select_from(notes))
        assert count == 3

        some = await database.fetch_all(
            notes.select().where(notes.c.id.in_([1, 3])).order_by(notes.c.id)
        )
        assert [r.id for r in some] == [1, 3]
        assert await database.fetch_all(notes.select().where(notes.c.id.in_([]))) == []

        await database.execute(notes.update().where(notes.c.id == 1).values(text="changed"))
        assert await database.fetch_val(
            sqlalchemy.select(notes.c.text).where(notes.c.id == 1)
        ) == "changed"
        await database.execute(notes.delete().where(notes.c.id == 2))
        texts = [r.text async for r in database.iterate(notes.select().order_by(notes.c.id))]
        assert texts == ["changed", "example3"]

        # A repeated statement shape with other values (served by the compilation cache).
        for i in (1, 3):
            row = await database.fetch_one(notes.select().where(notes.c.id == i))
            assert row is not None and row.id == i


@pytest.mark.asyncio
async def test_text_clause_with_typed_columns(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        when = datetime.datetime(2024, 1, 2, 3, 4, 5)
        await database.execute(articles.insert(), {"title": "t", "published": when})
        query = sqlalchemy.text("SELECT title, published FROM articles").columns(
            title=sqlalchemy.String, published=sqlalchemy.DateTime
        )
        row = await database.fetch_one(query)
        assert row is not None
        assert row["published"] == when
        bound = sqlalchemy.text("SELECT title FROM articles WHERE title = :t").bindparams(t="t")
        assert await database.fetch_val(bound) == "t"


@pytest.mark.asyncio
async def test_execute_return_values(database_url: str, tables: None) -> None:
    dialect = DatabaseURL(database_url).dialect
    async with Database(database_url) as database:
        # A Core insert returns the new primary key on every backend.
        pk = await database.execute(notes.insert(), {"text": "a", "completed": False})
        assert pk == 1
        pk = await database.execute(notes.insert(), {"text": "b", "completed": False})
        assert pk == 2
        updated = await database.execute(
            "UPDATE notes SET completed = :c WHERE completed = :was", {"c": True, "was": False}
        )
        deleted = await database.execute("DELETE FROM notes WHERE id = :id", {"id": -5})
        if dialect == "postgresql":
            # Upstream's asyncpg path returns the first column of a returned row, else None.
            assert updated is None and deleted is None
            returned = await database.execute(
                "INSERT INTO notes (text, completed) VALUES (:t, false) RETURNING id", {"t": "c"}
            )
            assert returned == 3
        else:
            # SQLite and MySQL: the last row id, or the affected row count without one.
            assert updated == 2
            assert deleted == 0
            raw = await database.execute(
                "INSERT INTO notes (text, completed) VALUES (:t, :c)", {"t": "c", "c": False}
            )
            assert raw == 3


@pytest.mark.asyncio
async def test_records_are_mappings(database_url: str) -> None:
    import collections.abc

    async with Database(database_url) as database:
        row = await database.fetch_one("SELECT 1 AS id, 'Daisy' AS name, 92 AS score")
        assert row is not None
        assert isinstance(row, Record)
        assert isinstance(row, collections.abc.Mapping)
        assert list(row.keys()) == ["id", "name", "score"]
        assert list(row.values()) == [1, "Daisy", 92]
        assert list(row.items()) == [("id", 1), ("name", "Daisy"), ("score", 92)]
        assert list(row) == ["id", "name", "score"]
        assert len(row) == 3
        assert "name" in row and "missing" not in row
        assert dict(row) == {"id": 1, "name": "Daisy", "score": 92}
        assert dict(row._mapping) == {"id": 1, "name": "Daisy", "score": 92}
        assert row._mapping["name"] == "Daisy"
        assert row[0] == 1 and row[-1] == 92 and row[1:] == ("Daisy", 92)
        # Iteration gives the names, reversed() the values, as on upstream's record.
        assert list(reversed(row)) == [92, "Daisy", 1]
        assert row.name == "Daisy"
        assert row.get("score") == 92 and row.get("nope", 5) == 5
        assert repr(row) == "<Record id=1 name='Daisy' score=92>"
        with pytest.raises(KeyError):
            row["missing"]
        with pytest.raises(IndexError):
            row[3]
        with pytest.raises(AttributeError, match="missing"):
            row.missing  # noqa: B018

        duplicated = await database.fetch_one("SELECT 1 AS id, 2 AS id")
        assert duplicated is not None
        assert list(duplicated.keys()) == ["id", "id"]
        assert list(duplicated.values()) == [1, 2]
        assert duplicated["id"] == 2


@pytest.mark.asyncio
async def test_database_url_options_and_keywords(database_url: str) -> None:
    async with Database(database_url, min_size=1, max_size=3) as database:
        assert await database.fetch_val("SELECT 1") == 1
    url = DatabaseURL(database_url)
    sep = "&" if url.options else "?"
    async with Database(f"{database_url}{sep}max_size=2&acquire_timeout=5") as database:
        assert await database.fetch_val("SELECT 2") == 2
    with pytest.raises(InterfaceError, match="bogus"):
        Database(database_url, bogus=1)


@pytest.mark.asyncio
async def test_large_results_keep_every_row(database_url: str) -> None:
    """Rows are stored in blocks of 256, core values and Python conversions alike: a result
    spanning several blocks keeps every row in order, and a row kept alone stays right."""
    query = (
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 600) "
        "SELECT n, n * 2 AS d, 'row ' || CAST(n AS CHAR(10)) AS label FROM s"
    )
    if database_url.startswith("mysql"):
        query = query.replace("'row ' || CAST(n AS CHAR(10))", "CONCAT('row ', n)")
    async with Database(database_url) as database:
        rows = await database.fetch_all(query)
        assert [(r["n"], r[1], r.label) for r in rows] == [
            (i, 2 * i, f"row {i}") for i in range(1, 601)
        ]
        kept = rows[300]
        del rows
        assert (kept["n"], kept["d"], kept["label"]) == (301, 602, "row 301")
        assert dict(kept) == {"n": 301, "d": 602, "label": "row 301"}
        seen = [r["n"] async for r in database.iterate(query)]
        assert seen == list(range(1, 601))


@pytest.mark.asyncio
async def test_records_are_not_tracked_by_the_cyclic_gc(database_url: str, tables: None) -> None:
    """A record of plain values holds nothing that could refer back to it, so it is not
    tracked: a large result's allocations set off collections, which would otherwise visit
    every row."""
    import gc

    async with Database(database_url) as database:
        await database.execute(notes.insert(), {"id": 1, "text": "x", "completed": True})
        rows = await database.fetch_all("SELECT id, text FROM notes")
        core = await database.fetch_one(notes.select())
        streamed = [row async for row in database.iterate(notes.select())]
        assert core is not None and core["completed"] is True
        assert [tuple(r.values()) for r in rows] == [(1, "x")]
        for record in [*rows, core, *streamed]:
            assert not gc.is_tracked(record)


@pytest.mark.asyncio
async def test_records_release_their_values_and_outlive_their_list(
    database_url: str, tables: None
) -> None:
    """Records of one result share their converted values' storage: a record kept alone
    still reads its own row once the list is gone, and the values are released with the
    last record that holds them."""
    import sys

    async with Database(database_url) as database:
        await database.execute_many(
            "INSERT INTO notes (id, text, completed) VALUES (:id, :text, :completed)",
            [{"id": i, "text": f"note {i}", "completed": i % 2 == 0} for i in range(1, 601)],
        )
        rows = await database.fetch_all("SELECT id, text FROM notes ORDER BY id")
        text = rows[300]["text"]
        assert rows[300]["text"] is text  # converted once, then kept
        held = sys.getrefcount(text)
        kept = rows[599]
        del rows
        assert sys.getrefcount(text) == held - 1
        assert (kept["id"], kept["text"], len(kept)) == (600, "note 600", 2)
        assert text == "note 301"


@pytest.mark.asyncio
async def test_large_results_read_again_and_cancelled(database_url: str, tables: None) -> None:
    """A query whose result was large is read differently the next time on PostgreSQL
    (started on the loop's thread, finished by a runtime task): the rows are the same,
    inside a transaction too, and a read cut off at any point leaves the connection
    usable."""
    import asyncio

    rows = [{"id": i, "text": f"note {i}", "completed": i % 3 == 0} for i in range(1, 3001)]
    query = "SELECT id, text, completed FROM notes ORDER BY id"
    expected = [(r["id"], r["text"], r["completed"]) for r in rows]
    async with Database(database_url, min_size=1, max_size=1) as database:
        await database.execute_many(
            "INSERT INTO notes (id, text, completed) VALUES (:id, :text, :completed)", rows
        )
        for _ in range(3):
            got = await database.fetch_all(query)
            assert [(r["id"], r["text"], r["completed"]) for r in got] == expected
        for timeout in [0.0, 0.0002, 0.0005, 0.001, 0.002, 0.005]:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(database.fetch_all(query), timeout)
            assert await asyncio.wait_for(database.fetch_val("SELECT 1"), 10) == 1
        async with database.transaction(force_rollback=True):
            await database.execute("DELETE FROM notes WHERE id > 2000")
            got = await database.fetch_all(query)
            assert [(r["id"], r["text"], r["completed"]) for r in got] == expected[:2000]
            async with database.connection() as connection:
                assert len(await connection.fetch_all(query)) == 2000
        assert len(await database.fetch_all(query)) == 3000
        # The query's result is small now, and read as a small one again.
        await database.execute("DELETE FROM notes WHERE id > 10")
        for _ in range(2):
            got = await database.fetch_all(query)
            assert [(r["id"], r["text"], r["completed"]) for r in got] == expected[:10]


@pytest.mark.asyncio
async def test_a_sqlite_file_shared_with_pythons_sqlite3(tmp_path: typing.Any) -> None:
    """The pattern of upstream's own suite: a synchronous SQLAlchemy engine (Python's
    ``sqlite3``, which keeps its connection open in its pool) creates and drops the tables
    around each test while ``Database`` works on the same file. Our SQLite is a second copy
    of the library in the process, and the two cannot share a WAL file, so a file keeps its
    own journal mode unless the URL asks for one (it broke within two rounds when every
    connection switched the file to WAL)."""
    path = tmp_path / "shared.db"
    metadata = sqlalchemy.MetaData()
    table = sqlalchemy.Table(
        "shared_notes",
        metadata,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("text", sqlalchemy.String(length=20)),
    )
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        for round in range(20):
            metadata.create_all(engine)
            async with Database(f"sqlite:///{path}") as database:
                await database.execute(table.insert(), {"text": f"round {round}"})
                assert [r["text"] for r in await database.fetch_all(table.select())] == [
                    f"round {round}"
                ]
                assert await database.fetch_val("PRAGMA journal_mode") == "delete"
            metadata.drop_all(engine)
    finally:
        engine.dispose()
    # WAL on request, and a file in WAL mode stays in it.
    async with Database(f"sqlite:///{path}?journal_mode=wal") as database:
        assert await database.fetch_val("PRAGMA journal_mode") == "wal"
    async with Database(f"sqlite:///{path}") as database:
        assert await database.fetch_val("PRAGMA journal_mode") == "wal"
