"""Exceptions: the PEP 249 classes, the same on every backend, carrying the database's code."""

from __future__ import annotations

import typing

import pytest
import sqlalchemy

import databases
from databases import (
    Database,
    DatabaseError,
    Error,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from databases import exceptions

metadata = sqlalchemy.MetaData()
users = sqlalchemy.Table(
    "err_users",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("email", sqlalchemy.String(100), unique=True, nullable=False),
)


@pytest.fixture
def tables(create_tables: typing.Callable[[sqlalchemy.MetaData], None]) -> None:
    create_tables(metadata)


def test_hierarchy() -> None:
    assert issubclass(InterfaceError, Error)
    assert issubclass(DatabaseError, Error)
    for name in (
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    ):
        cls = getattr(exceptions, name)
        assert issubclass(cls, DatabaseError)
        assert getattr(databases, name) is cls
    assert issubclass(Error, Exception)


@pytest.mark.asyncio
async def test_integrity_error(database_url: str, tables: None) -> None:
    async with Database(database_url) as database:
        await database.execute(users.insert(), {"email": "a@example.com"})
        with pytest.raises(IntegrityError) as info:
            await database.execute(users.insert(), {"email": "a@example.com"})
        assert info.value.kind == "unique_violation"
        assert info.value.code
        assert info.value.db_message
        with pytest.raises(IntegrityError) as info:
            await database.execute("INSERT INTO err_users (email) VALUES (NULL)")
        assert info.value.kind == "not_null_violation"
        if database_url.startswith("postgresql"):
            assert info.value.sqlstate == "23502"
        # Nothing is left half-done and the pool still works.
        assert await database.fetch_val("SELECT COUNT(*) FROM err_users") == 1


@pytest.mark.asyncio
async def test_programming_errors(database_url: str) -> None:
    async with Database(database_url) as database:
        with pytest.raises(ProgrammingError):
            await database.fetch_all("SELEC 1")
        with pytest.raises(DatabaseError):
            await database.fetch_all("SELECT * FROM no_such_table_here")
        with pytest.raises(ProgrammingError, match=":id") as info:
            await database.fetch_one("SELECT :id")
        assert info.value.kind == "missing_parameter"


@pytest.mark.asyncio
async def test_connection_failure_is_operational() -> None:
    database = Database("postgresql://nobody@127.0.0.1:9/nothing?connect_timeout=2")
    with pytest.raises(OperationalError):
        await database.connect()


def test_bad_urls_are_interface_errors() -> None:
    with pytest.raises(InterfaceError, match="oracle"):
        Database("oracle://u@h/db")
    with pytest.raises(InterfaceError, match="nonsense"):
        Database("sqlite:///x.db?nonsense=1")
    with pytest.raises(InterfaceError, match="max_size"):
        Database("postgresql://u@h/db?max_size=lots")


def test_passwords_stay_out_of_messages() -> None:
    with pytest.raises(InterfaceError) as info:
        Database("postgresql://user:s3cret@h/db?bogus=1")
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(Database("postgresql://user:s3cret@h/db"))
