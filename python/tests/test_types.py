"""Column types through SQLAlchemy Core, as upstream returns them, and raw values."""

from __future__ import annotations

import concurrent.futures
import datetime
import decimal
import enum
import gc
import time
import typing
import uuid
import weakref

import pytest
import sqlalchemy

from databases import Database, DatabaseURL


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.Enum):
    SMALL = 1
    LARGE = 2


class Shout(sqlalchemy.TypeDecorator):
    """A custom type: stored as is, read back with an exclamation mark."""

    impl = sqlalchemy.String(50)
    cache_ok = True

    def process_result_value(self, value: typing.Any, dialect: typing.Any) -> typing.Any:
        return None if value is None else value + "!"


class DayNumber(sqlalchemy.TypeDecorator):
    """A date stored as its ordinal."""

    impl = sqlalchemy.Integer
    cache_ok = True

    def process_bind_param(self, value: typing.Any, dialect: typing.Any) -> typing.Any:
        return None if value is None else value.toordinal()

    def process_result_value(self, value: typing.Any, dialect: typing.Any) -> typing.Any:
        return None if value is None else datetime.date.fromordinal(value)


metadata = sqlalchemy.MetaData()
typed = sqlalchemy.Table(
    "typed",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("flag", sqlalchemy.Boolean),
    sqlalchemy.Column("data", sqlalchemy.JSON),
    sqlalchemy.Column("color", sqlalchemy.Enum(Color)),
    sqlalchemy.Column("size", sqlalchemy.Enum(Size)),
    sqlalchemy.Column("created", sqlalchemy.DateTime),
    sqlalchemy.Column("day", sqlalchemy.Date),
    sqlalchemy.Column("at", sqlalchemy.Time),
    sqlalchemy.Column("amount", sqlalchemy.Numeric(30, 20)),
    sqlalchemy.Column("ratio", sqlalchemy.Float),
    sqlalchemy.Column("blob", sqlalchemy.LargeBinary),
    sqlalchemy.Column("shout", Shout),
    sqlalchemy.Column("daynum", DayNumber),
    sqlalchemy.Column("key", sqlalchemy.Uuid),
)


@pytest.fixture
def tables(create_tables: typing.Callable[[sqlalchemy.MetaData], None]) -> None:
    create_tables(metadata)


VALUES = {
    "flag": True,
    "data": {"text": "hello", "list": [1, 2, None], "nested": {"a": 1.5}},
    "color": Color.GREEN,
    "size": Size.LARGE,
    "created": datetime.datetime(2024, 2, 29, 23, 59, 58),
    "day": datetime.date(1999, 12, 31),
    "at": datetime.time(13, 14, 15),
    "amount": decimal.Decimal("12345.12345678901234567890"),
    "ratio": 0.25,
    "blob": b"\x00\x01\xffbytes",
    "shout": "hey",
    "daynum": datetime.date(2020, 5, 17),
    "key": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


@pytest.mark.asyncio
async def test_core_types_round_trip(database_url: str, tables: None) -> None:
    dialect = DatabaseURL(database_url).dialect
    async with Database(database_url) as database:
        await database.execute(typed.insert(), VALUES)
        await database.execute(typed.insert(), {k: None for k in VALUES})
        rows = await database.fetch_all(typed.select().order_by(typed.c.id))
        row = rows[0]
        for name, expected in VALUES.items():
            got = row[name]
            if name == "shout":
                continue
            if name == "amount" and dialect == "sqlite":
                # SQLite keeps numerics as floats (upstream's tests use approx there too).
                assert float(got) == pytest.approx(float(expected))
                continue
            assert got == expected, name
            assert type(got) is type(expected), name
        assert row["flag"] is True
        assert row.color is Color.GREEN
        assert row.shout == "hey!"
        assert all(rows[1][name] is None for name in VALUES)

        # The same through iterate, and fetch_val on a typed column.
        async for streamed in database.iterate(typed.select().where(typed.c.id == 1)):
            assert streamed["data"] == VALUES["data"]
        assert await database.fetch_val(sqlalchemy.select(typed.c.color)) is Color.GREEN

        # Where clauses bind through the same processors.
        found = await database.fetch_one(
            typed.select().where(typed.c.color == Color.GREEN).where(typed.c.flag == True)  # noqa: E712
        )
        assert found is not None and found.id == 1
        json_list = [1, "two", {"three": 3}]
        await database.execute(typed.update().where(typed.c.id == 2).values(data=json_list))
        assert await database.fetch_val(
            sqlalchemy.select(typed.c.data).where(typed.c.id == 2)
        ) == json_list


@pytest.mark.asyncio
async def test_raw_parameters_and_values(database_url: str) -> None:
    dialect = DatabaseURL(database_url).dialect
    async with Database(database_url) as database:
        casts = {
            "postgresql": "SELECT CAST(:i AS BIGINT) AS i, CAST(:f AS DOUBLE PRECISION) AS f, "
            "CAST(:t AS TEXT) AS t, CAST(:b AS BYTEA) AS b, CAST(:n AS BIGINT) AS n",
            "mysql": "SELECT :i AS i, :f AS f, :t AS t, :b AS b, :n AS n",
            "sqlite": "SELECT :i AS i, :f AS f, :t AS t, :b AS b, :n AS n",
        }[dialect]
        if dialect == "mysql":
            # MariaDB echoes a bytes parameter with the connection's text charset.
            casts = casts.replace(":b AS b", "CAST(:b AS BINARY) AS b")
        row = await database.fetch_one(
            casts,
            {
                "i": -(2**63),
                "f": 1.5,
                "t": "naïve ☃ 'quoted' ; DROP TABLE x; -- :name",
                "b": b"\x00\xff",
                "n": None,
            },
        )
        assert row is not None
        assert row["i"] == -(2**63)
        assert row["f"] == 1.5
        assert row["t"] == "naïve ☃ 'quoted' ; DROP TABLE x; -- :name"
        assert row["b"] == b"\x00\xff"
        assert row["n"] is None


@pytest.mark.asyncio
async def test_unsupported_parameter_types_name_the_parameter(database_url: str) -> None:
    async with Database(database_url) as database:
        with pytest.raises(TypeError, match="parameter 'x'.*object"):
            await database.fetch_one("SELECT :x", {"x": object()})
        with pytest.raises(OverflowError, match="parameter 'big'"):
            await database.fetch_one("SELECT :big", {"big": 2**70})
        with pytest.raises(TypeError, match="enum member"):
            await database.fetch_one("SELECT :c", {"c": Color.RED})


class Counted(sqlalchemy.TypeDecorator):
    """Counts how often its result processor runs."""

    impl = sqlalchemy.String(20)
    cache_ok = True
    calls = 0

    def process_result_value(self, value: typing.Any, dialect: typing.Any) -> typing.Any:
        Counted.calls += 1
        return value.upper() if value is not None else value


counted_metadata = sqlalchemy.MetaData()
counted = sqlalchemy.Table(
    "counted_values",
    counted_metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("a", Counted()),
    sqlalchemy.Column("b", Counted()),
)


@pytest.mark.asyncio
async def test_values_are_converted_once_when_first_read(
    database_url: str, create_tables: typing.Callable[[sqlalchemy.MetaData], None]
) -> None:
    create_tables(counted_metadata)
    async with Database(database_url) as database:
        await database.execute(counted.insert().values(id=1, a="x", b="y"))
        Counted.calls = 0
        row = await database.fetch_one(counted.select())
        assert row is not None
        # Nothing is converted until read, as upstream applies processors on access.
        assert Counted.calls == 0
        assert row["a"] == "X"
        assert row["a"] is row[1] is row.a
        assert Counted.calls == 1
        assert row.values() == (1, "X", "Y")
        assert dict(row) == {"id": 1, "a": "X", "b": "Y"}
        assert Counted.calls == 2


class Slow(sqlalchemy.TypeDecorator):
    """A result processor that lets go of the interpreter while it works."""

    impl = sqlalchemy.String(20)
    cache_ok = True

    def process_result_value(self, value: typing.Any, dialect: typing.Any) -> typing.Any:
        time.sleep(0.02)
        return [value]


def _one_column_table(
    name: str, column_type: sqlalchemy.types.TypeEngine
) -> tuple[sqlalchemy.MetaData, sqlalchemy.Table]:
    """A table of an integer key and one column ``a`` of ``column_type``."""
    metadata = sqlalchemy.MetaData()
    table = sqlalchemy.Table(
        name,
        metadata,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("a", column_type),
    )
    return metadata, table


slow_metadata, slow = _one_column_table("slow_values", Slow())


@pytest.mark.asyncio
async def test_threads_reading_a_new_field_at_once_get_one_value(
    database_url: str, create_tables: typing.Callable[[sqlalchemy.MetaData], None]
) -> None:
    """Threads that read the same field for the first time at once, while its processor
    sleeps, all get the one value that is kept (no thread waits on another)."""
    create_tables(slow_metadata)
    async with Database(database_url) as database:
        await database.execute(slow.insert().values(id=1, a="x"))
        row = await database.fetch_one(slow.select())
        assert row is not None
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            seen = list(pool.map(lambda _: row["a"], range(4)))
        assert seen[0] == ["x"]
        assert all(value is row["a"] for value in seen)


class Holder:
    """What a result processor returns, and what code may store the row itself into."""

    def __init__(self, value: typing.Any) -> None:
        self.value = value
        self.row: typing.Any = None


class Held(sqlalchemy.TypeDecorator):
    impl = sqlalchemy.String(20)
    cache_ok = True

    def process_result_value(self, value: typing.Any, dialect: typing.Any) -> typing.Any:
        return Holder(value)


held_metadata, held = _one_column_table("held_values", Held())


@pytest.mark.asyncio
async def test_column_maps_are_reused_per_query_and_processors_follow_the_query(
    database_url: str, create_tables: typing.Callable[[sqlalchemy.MetaData], None]
) -> None:
    """Records of a query run again reuse its column map. A raw query with the same SQL
    text as a compiled one shares its columns in the core, but not its map: only the
    compiled query's records apply its result processors."""
    create_tables(held_metadata)
    async with Database(database_url) as database:
        await database.execute(held.insert().values(id=1, a="x"))
        compiled = held.select().order_by(held.c.id)
        assert database._compiler is not None
        sql = database._compiler.compile(compiled)[0]
        first, again = [await database.fetch_all(sql) for _ in range(2)]
        assert first[0].keys() is again[0].keys() == ("id", "a")
        for _ in range(2):
            core = await database.fetch_one(compiled)
            raw = await database.fetch_one(sql)
            assert core is not None and raw is not None
            assert isinstance(core["a"], Holder) and core["a"].value == "x"
            assert raw["a"] == "x"
            assert core[held.c.a] is core["a"]
            with pytest.raises(KeyError):
                raw[held.c.a]


@pytest.mark.asyncio
async def test_a_cycle_through_a_record_is_collected(
    database_url: str, create_tables: typing.Callable[[sqlalchemy.MetaData], None]
) -> None:
    """A record starts untracked by the cyclic GC; once it keeps a value that could refer
    back to it, it is tracked and shows the GC that value, so a cycle through it is freed."""
    create_tables(held_metadata)
    async with Database(database_url) as database:
        await database.execute(held.insert().values(id=1, a="x"))
        fetched = [
            await database.fetch_all(held.select()),
            [await database.fetch_one(held.select())],
            [row async for row in database.iterate(held.select())],
        ]
        refs = []
        for rows in fetched:
            row = rows[0]
            assert not gc.is_tracked(row)
            assert row["id"] == 1 and not gc.is_tracked(row)  # an int cannot refer back
            holder = row["a"]
            assert holder.value == "x" and gc.is_tracked(row)
            assert holder in gc.get_referents(row)
            holder.row = row
            refs.append(weakref.ref(holder))
        del fetched, rows, row, holder
        gc.collect()
        assert [ref() for ref in refs] == [None, None, None]
