"""The examples users of encode/databases read first, run as tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import typing

import pytest
import sqlalchemy

from databases import Database

from conftest import sync_url

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.asyncio
async def test_highscores_session(database_url: str) -> None:
    async with Database(database_url) as database:
        await database.execute("DROP TABLE IF EXISTS HighScores")
        # An auto-numbered key: SQLite's INTEGER PRIMARY KEY, or its server equivalent.
        key = {
            "postgresql": "SERIAL PRIMARY KEY",
            "mysql": "INTEGER PRIMARY KEY AUTO_INCREMENT",
        }.get(database.url.dialect, "INTEGER PRIMARY KEY")
        await database.execute(
            f"CREATE TABLE HighScores (id {key}, name VARCHAR(100), score INTEGER)"
        )
        try:
            query = "INSERT INTO HighScores(name, score) VALUES (:name, :score)"
            values = [
                {"name": "Daisy", "score": 92},
                {"name": "Neil", "score": 87},
                {"name": "Carol", "score": 43},
            ]
            await database.execute_many(query=query, values=values)
            rows = await database.fetch_all(query="SELECT * FROM HighScores")
            printed = f"High Scores: {rows}"
            assert printed == (
                "High Scores: [<Record id=1 name='Daisy' score=92>, "
                "<Record id=2 name='Neil' score=87>, <Record id=3 name='Carol' score=43>]"
            )
        finally:
            await database.execute("DROP TABLE HighScores")


def test_quickstart_script_reads_database_url(database_url: str, tmp_path: pathlib.Path) -> None:
    env = dict(os.environ, DATABASE_URL=database_url)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "<Record id=1 name='Daisy' score=92>" in done.stdout


def test_quickstart_script_defaults_to_sqlite(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Carol" in done.stdout
    assert (tmp_path / "highscores.db").exists()


# The "notes" table of upstream's documentation, declared with MetaData and created by a
# synchronous engine.
metadata = sqlalchemy.MetaData()
notes = sqlalchemy.Table(
    "notes",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.String(length=100)),
    sqlalchemy.Column("completed", sqlalchemy.Boolean),
)


@pytest.fixture
def notes_table(database_url: str) -> typing.Iterator[None]:
    engine = sqlalchemy.create_engine(sync_url(database_url))
    metadata.drop_all(engine)
    metadata.create_all(engine)
    yield
    metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.asyncio
async def test_notes_with_core(database_url: str, notes_table: None) -> None:
    database = Database(database_url)
    await database.connect()
    try:
        query = notes.insert()
        values = {"text": "example1", "completed": True}
        await database.execute(query=query, values=values)

        query = notes.insert()
        values_list = [
            {"text": "example2", "completed": False},
            {"text": "example3", "completed": True},
        ]
        await database.execute_many(query=query, values=values_list)

        query = notes.select()
        rows = await database.fetch_all(query=query)
        assert [(r["text"], r["completed"]) for r in rows] == [
            ("example1", True),
            ("example2", False),
            ("example3", True),
        ]
        row = await database.fetch_one(query=query)
        assert row is not None and row[notes.c.text] == "example1"
        value = await database.fetch_val(query=query)
        assert value == 1
        async for row in database.iterate(query=query):
            assert row["text"].startswith("example")
    finally:
        await database.disconnect()


def test_fastapi_app_with_lifespan(database_url: str, notes_table: None) -> None:
    import contextlib

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    database = Database(database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> typing.AsyncIterator[None]:
        await database.connect()
        yield
        await database.disconnect()

    app = FastAPI(lifespan=lifespan)

    @app.post("/notes")
    async def create_note(note: dict) -> dict:
        note_id = await database.execute(
            notes.insert(), {"text": note["text"], "completed": note.get("completed", False)}
        )
        return {"id": note_id, **note}

    @app.get("/notes")
    async def list_notes() -> list:
        return [dict(row) for row in await database.fetch_all(notes.select().order_by(notes.c.id))]

    with TestClient(app) as client:
        assert database.is_connected
        created = client.post("/notes", json={"text": "buy milk", "completed": True})
        assert created.status_code == 200, created.text
        assert created.json()["id"] == 1
        listed = client.get("/notes")
        assert listed.status_code == 200
        assert listed.json() == [{"id": 1, "text": "buy milk", "completed": True}]
    assert not database.is_connected


ALEMBIC_ENV = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

import databases

config = context.config
# The application's URL, for a synchronous driver: Alembic migrates synchronously.
url = databases.DatabaseURL(config.get_main_option("app_url"))
config.set_main_option("sqlalchemy.url", str(url.replace(driver="")))

connectable = engine_from_config(
    config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''

ALEMBIC_VERSION = '''
"""create notes"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.String(100)),
        sa.Column("completed", sa.Boolean),
    )


def downgrade():
    op.drop_table("notes")
'''


@pytest.mark.asyncio
async def test_alembic_recipe_on_sqlite(tmp_path: pathlib.Path) -> None:
    from alembic import command
    from alembic.config import Config

    app_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ALEMBIC_ENV)
    (tmp_path / "migrations" / "versions" / "0001_notes.py").write_text(ALEMBIC_VERSION)
    config = Config()
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    config.set_main_option("app_url", app_url)
    command.upgrade(config, "head")

    async with Database(app_url) as database:
        await database.execute(notes.insert(), {"text": "migrated", "completed": True})
        assert await database.fetch_val(sqlalchemy.select(notes.c.text)) == "migrated"
