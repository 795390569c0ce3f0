"""Test fixtures: one run per database.

SQLite always runs (a fresh file per test). PostgreSQL and MySQL/MariaDB run for each URL in
``TEST_DATABASE_URLS`` (comma-separated, as upstream's suite reads it); without one they are
skipped with a message.
"""

from __future__ import annotations

import os
import typing

import pytest
import sqlalchemy

if typing.TYPE_CHECKING:
    from databases import Database

SERVER_URLS = [
    u.strip()
    for u in os.environ.get("TEST_DATABASE_URLS", "").split(",")
    if u.strip() and not u.strip().startswith("sqlite")
]
BACKENDS = ["sqlite"] + [u.split(":", 1)[0].split("+", 1)[0] for u in SERVER_URLS]
SERVER_BY_DIALECT = {u.split(":", 1)[0].split("+", 1)[0]: u for u in SERVER_URLS}


def pytest_report_header(config: pytest.Config) -> str:
    if SERVER_URLS:
        return "database URLs: sqlite (temporary file), " + ", ".join(
            sqlalchemy.engine.make_url(u).render_as_string(hide_password=True)
            for u in SERVER_URLS
        )
    return (
        "database URLs: sqlite only; set TEST_DATABASE_URLS to also run PostgreSQL and "
        "MySQL/MariaDB"
    )


def _params() -> list:
    params = [pytest.param("sqlite", id="sqlite")]
    for dialect in ("postgresql", "mysql"):
        if dialect in SERVER_BY_DIALECT:
            params.append(pytest.param(dialect, id=dialect))
        else:
            params.append(
                pytest.param(
                    dialect,
                    id=dialect,
                    marks=pytest.mark.skip(
                        reason=f"no {dialect} URL in TEST_DATABASE_URLS"
                    ),
                )
            )
    return params


@pytest.fixture(params=_params())
def database_url(request: pytest.FixtureRequest, tmp_path: typing.Any) -> str:
    """The URL of a test database: a new SQLite file, or a server from the environment."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return SERVER_BY_DIALECT[request.param]


def sync_url(url: str) -> str:
    """The same database for a synchronous SQLAlchemy engine (table setup, Alembic)."""
    parsed = sqlalchemy.engine.make_url(url)
    dialect = parsed.get_backend_name()
    driver = {"postgresql": "psycopg", "mysql": "pymysql", "sqlite": "pysqlite"}[dialect]
    query = {k: v for k, v in parsed.query.items() if k not in _OUR_OPTIONS}
    return parsed.set(drivername=f"{dialect}+{driver}", query=query).render_as_string(
        hide_password=False
    )


_OUR_OPTIONS = {
    "min_size",
    "max_size",
    "ssl",
    "sslmode",
    "acquire_timeout",
    "statement_cache",
    "command_timeout",
    "connect_timeout",
    "pool_recycle",
    "force_rollback",
}


@pytest.fixture
def create_tables(database_url: str) -> typing.Iterator[typing.Callable[[sqlalchemy.MetaData], None]]:
    """Creates a MetaData's tables with a synchronous engine and drops them afterwards."""
    created: list[sqlalchemy.MetaData] = []
    engine = sqlalchemy.create_engine(sync_url(database_url))

    def create(metadata: sqlalchemy.MetaData) -> None:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        created.append(metadata)

    yield create
    for metadata in created:
        metadata.drop_all(engine)
    engine.dispose()


async def server_sessions(observer: Database, url: str, marker: str) -> int:
    """The server sessions of a pool whose URL carries ``application_name=marker``
    (PostgreSQL), or every session but the observer's own (MySQL, where sessions carry no
    name: the observer must be a pool of one). SQLite has none."""
    if url.startswith("sqlite"):
        return 0
    if url.startswith("postgresql"):
        sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = :m"
        return int(await observer.fetch_val(sql, {"m": marker}))
    return int(
        await observer.fetch_val(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
        )
    )


def with_marker(url: str, marker: str) -> str:
    """The URL with ``application_name=marker`` where the database has it (PostgreSQL)."""
    if not url.startswith("postgresql"):
        return url
    return url + ("&" if "?" in url else "?") + f"application_name={marker}"


def slow_query(url: str, seconds: int = 30) -> str:
    """A query that runs for a long time and returns one row: a sleep on the servers, an
    endless recursive count on SQLite (which only an interrupt stops)."""
    return {
        "postgresql": f"SELECT pg_sleep({seconds})",
        "mysql": f"SELECT SLEEP({seconds})",
        "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT count(*) FROM c",
    }[url.split(":", 1)[0].split("+", 1)[0]]
