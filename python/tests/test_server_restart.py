"""A PostgreSQL server of the test's own (a temporary cluster on another port, removed
afterwards; the shared servers are never touched): restarted under an open pool, and killed
with SIGKILL after commits returned.

Skipped with a message where PostgreSQL's server programs (initdb, pg_ctl) are not
installed, or where the test cannot run them as a non-root user.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing

import pytest

from databases import Database
from databases.exceptions import OperationalError


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster in a temporary directory, run as the `postgres` user when the
    tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not initdb or not self.pg_ctl:
            pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                pytest.skip("running as root without runuser: cannot start PostgreSQL")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="databases-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        if self.prefix:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([initdb, "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8"])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def _run(self, args: list[str]) -> None:
        # Output to files, not pipes: a server started here would hold a pipe open.
        out = self.dir / "ctl.out"
        with open(out, "ab") as sink:
            done = subprocess.run(
                self.prefix + args, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, timeout=120
            )
        if done.returncode != 0:
            log = self.dir / "log"
            raise RuntimeError(
                f"{' '.join(args[:1])} failed: {out.read_text()[-300:]}"
                + (log.read_text()[-2000:] if log.exists() else "")
            )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run([self.pg_ctl, "-D", str(self.data), "-o", options, "-w", "-t", "60", "-l",
                   str(self.dir / "log"), "start"])

    def restart(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "-l",
                   str(self.dir / "log"), "restart"])

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend: a crash, not a shutdown."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
        for p in [pid, *map(int, children)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in [pid, *map(int, children)]):
            assert time.monotonic() < deadline, "the killed server did not exit"
            time.sleep(0.05)
        # Where nothing reaps orphans (a container whose first process does not), the dead
        # postmaster stays a zombie, which PostgreSQL's stale-lock check takes for a live
        # server: remove its lock files, as an operator would after a crash.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        (self.dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def remove(self) -> None:
        try:
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        except (RuntimeError, subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it is gone for our purposes.
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def cluster() -> typing.Iterator[Cluster]:
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.remove()


@pytest.mark.asyncio
async def test_server_restart_under_an_open_pool(cluster: Cluster) -> None:
    async with Database(cluster.url, min_size=2, max_size=2) as database:
        await database.execute("CREATE TABLE t (x INTEGER)")
        await database.execute("INSERT INTO t VALUES (1)")
        # A statement in flight while the server restarts fails, with a connection error.
        slow = asyncio.create_task(database.fetch_one("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(cluster.restart)
        with pytest.raises(OperationalError) as info:
            await asyncio.wait_for(slow, 30)
        assert info.value.kind in ("connection_lost", "database")
        # The idle connections died with the server: they are replaced, and the next calls
        # succeed without reconnecting the Database.
        await asyncio.sleep(0.2)
        for _ in range(5):
            assert await database.fetch_val("SELECT COUNT(*) FROM t") == 1


@pytest.mark.asyncio
async def test_commits_survive_sigkill(cluster: Cluster) -> None:
    committed: list[int] = []
    async with Database(cluster.url, max_size=2) as database:
        await database.execute("CREATE TABLE d (x INTEGER PRIMARY KEY)")
        for i in range(200):
            async with database.transaction():
                await database.execute("INSERT INTO d VALUES (:x)", {"x": i})
            committed.append(i)  # the commit returned
        # One more, killed mid-transaction: it must not appear.
        async with database.connection() as connection:
            tx = await connection.transaction()
            await connection.execute("INSERT INTO d VALUES (-1)")
            await asyncio.to_thread(cluster.kill)
            with pytest.raises(OperationalError):
                await tx.commit()
    await asyncio.to_thread(cluster.start)
    async with Database(cluster.url) as database:
        rows = [r[0] for r in await database.fetch_all("SELECT x FROM d ORDER BY x")]
    assert rows == committed
