"""Servers of the test's own, restarted and killed: a PostgreSQL cluster and a MariaDB data
directory on other loopback ports, created by ``scripts/scratch-server`` and removed
afterwards (the shared servers are never touched); and a SQLite writer process killed.

Skipped with a message where a server's programs are not installed, or where the test
cannot run them as a non-root user.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import typing

import pytest

from databases import Database
from databases.exceptions import OperationalError

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "scratch-server"
SKIP = 77  # scratch-server's status for "cannot run this server here"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A scratch server in a temporary directory."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"databases-{kind}-"))
        done = self._run("create", kind, str(self.dir), str(_free_port()), check=False)
        if done.returncode == SKIP:
            pytest.skip(done.stderr.strip())
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        self.url = done.stdout.strip()
        # The sleep that a restart or crash interrupts.
        self.slow = "SELECT pg_sleep(30)" if kind == "postgres" else "SELECT SLEEP(30)"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SCRIPT), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"scratch-server {args[0]} failed: {done.stderr}")
        return done

    def start(self) -> None:
        self._run("start", str(self.dir))

    def restart(self) -> None:
        self._run("restart", str(self.dir))

    def kill(self) -> None:
        """SIGKILL to the server and its children: a crash, not a shutdown."""
        self._run("kill", str(self.dir))

    def remove(self) -> None:
        self._run("remove", str(self.dir), check=False)


@pytest.fixture(params=["postgres", "mariadb"])
def server(request: pytest.FixtureRequest) -> typing.Iterator[Server]:
    s = Server(request.param)
    try:
        s.start()
        yield s
    finally:
        s.remove()


@pytest.mark.asyncio
async def test_server_restart_under_an_open_pool(server: Server) -> None:
    async with Database(server.url, min_size=2, max_size=2) as database:
        await database.execute("CREATE TABLE t (x INTEGER)")
        await database.execute("INSERT INTO t VALUES (1)")
        # A statement in flight while the server restarts fails, with a connection error.
        slow = asyncio.create_task(database.fetch_one(server.slow))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.restart)
        with pytest.raises(OperationalError) as info:
            await asyncio.wait_for(slow, 30)
        assert info.value.kind in ("connection_lost", "database"), info.value
        # The idle connections died with the server: they are replaced, and the next calls
        # succeed without reconnecting the Database.
        await asyncio.sleep(0.2)
        for _ in range(5):
            assert await database.fetch_val("SELECT COUNT(*) FROM t") == 1


@pytest.mark.asyncio
async def test_commits_survive_sigkill(server: Server) -> None:
    committed: list[int] = []
    async with Database(server.url, max_size=2) as database:
        await database.execute("CREATE TABLE d (x INTEGER PRIMARY KEY)")
        for i in range(200):
            async with database.transaction():
                await database.execute("INSERT INTO d VALUES (:x)", {"x": i})
            committed.append(i)  # the commit returned
        # One more, killed mid-transaction: it must not appear.
        async with database.connection() as connection:
            tx = await connection.transaction()
            await connection.execute("INSERT INTO d VALUES (-1)")
            await asyncio.to_thread(server.kill)
            with pytest.raises(OperationalError):
                await tx.commit()
    await asyncio.to_thread(server.start)
    async with Database(server.url) as database:
        rows = [r[0] for r in await database.fetch_all("SELECT x FROM d ORDER BY x")]
    assert rows == committed


_SQLITE_WRITER = """
import asyncio, sys
from databases import Database

async def main(path):
    async with Database("sqlite:///" + path) as database:
        await database.execute("CREATE TABLE IF NOT EXISTS d (x INTEGER PRIMARY KEY)")
        i = 0
        while True:
            async with database.transaction():
                await database.execute("INSERT INTO d VALUES (:x)", {"x": i})
            print(i, flush=True)  # the commit returned
            i += 1

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.asyncio
async def test_sqlite_commits_survive_sigkill_of_the_process(tmp_path: pathlib.Path) -> None:
    """SQLite's server is the process itself: a writer process killed with SIGKILL after
    commits returned leaves every one of them in the file, and the file opens cleanly."""
    path = tmp_path / "durable.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", _SQLITE_WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert writer.stdout is not None
    committed: list[int] = []
    try:
        for line in writer.stdout:
            committed.append(int(line))
            if len(committed) == 300:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        rest, _ = writer.communicate(timeout=30)
    committed += [int(x) for x in rest.split()]
    assert len(committed) >= 300, "the writer stopped early"
    async with Database(f"sqlite:///{path}") as database:
        rows = [r[0] for r in await database.fetch_all("SELECT x FROM d ORDER BY x")]
        assert await database.fetch_val("PRAGMA integrity_check") == "ok"
    # Every reported commit is there; at most one more committed before its report.
    assert rows[: len(committed)] == committed
    assert len(rows) - len(committed) <= 1
