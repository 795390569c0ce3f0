"""``Database``, ``Connection`` and ``Transaction``: the encode/databases 0.9 API on the Rust core.

Connections are task-local as in upstream 0.8+: each asyncio task that runs a query outside a
``connection()`` or ``transaction()`` block borrows a pooled connection for that one statement;
inside such a block the task keeps its connection, and a child task gets its own. Transactions
are tracked per task in a context variable, and nested ones are savepoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import typing
import weakref
from contextvars import ContextVar
from types import TracebackType
from urllib.parse import urlencode

from databases import _native
from databases._url import DatabaseURL
from databases.exceptions import (
    InterfaceError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

if typing.TYPE_CHECKING:
    from sqlalchemy.sql import ClauseElement

    from databases._compile import Compiler

__all__ = ["Connection", "Database", "DatabaseURL", "ExecuteResult", "Transaction"]

logger = logging.getLogger("databases")

Query = typing.Union["ClauseElement", str]
_CallableT = typing.TypeVar("_CallableT", bound=typing.Callable[..., typing.Any])

# Per task context: each Transaction object's open level, or its levels (innermost last) when
# it is open more than once (a decorated function that calls itself). One level is stored
# alone, as upstream stored its one backend transaction there.
_ACTIVE_TRANSACTIONS: ContextVar[
    typing.Optional["weakref.WeakKeyDictionary[Transaction, typing.Any]"]
] = ContextVar("databases:active_transactions", default=None)

# Options that Database(**options) takes besides those of the URL, mapped to URL options.
_OPTION_ALIASES = {
    "timeout": "connect_timeout",
    "statement_cache_size": "statement_cache",
}


class ExecuteResult(typing.NamedTuple):
    """What a statement did, from ``execute_result()``: everything the database reports."""

    #: Rows inserted, updated or deleted (0 for a query), on every database.
    rows_affected: int
    #: The id of the row the statement inserted (SQLite's rowid, MySQL's AUTO_INCREMENT
    #: value), or ``None``. PostgreSQL has no such value: use ``INSERT ... RETURNING id``,
    #: whose value is in ``returned``.
    last_insert_id: int | None
    #: The first column of the first row the statement returned (``RETURNING``), or ``None``.
    returned: typing.Any


class _NotAcquired(InterfaceError, AssertionError):
    """A query on a Connection that nobody entered (upstream raised AssertionError)."""


def _option_text(name: str, value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        if name == "statement_cache" and not isinstance(value, str):
            return "true" if value else "false"
        return str(value)
    raise NotSupportedError(
        f"option {name}={value!r}: only str, int, float and bool option values are supported "
        "(for TLS use ssl=true or sslmode=... with sslrootcert=<path>)"
    )


def _native_url(url: DatabaseURL, options: dict[str, typing.Any]) -> str:
    """The URL handed to the core: the driver suffix dropped, keyword options merged into the
    query string (keyword arguments win over URL options, as upstream)."""
    merged = dict(url.options)
    for name, value in options.items():
        if url.dialect == "sqlite" and name == "uri":
            continue  # Upstream passed it to sqlite3.connect; our SQLite reads the URL itself.
        name = _OPTION_ALIASES.get(name, name)
        merged[name] = _option_text(name, value)
    if "ssl" in merged:
        merged["ssl"] = merged["ssl"].lower()
    if url.dialect == "sqlite":
        # A file keeps its own journal mode (`delete` for a new one), as with upstream: our
        # SQLite is a second copy of the library in the process, beside Python's `sqlite3`,
        # and WAL shared between two copies breaks (see the README).
        merged.setdefault("journal_mode", "keep")
    replaced = url.replace(driver="", query=urlencode(merged))
    return str(replaced)


class Database:
    """A database, configured by its URL; a pool of connections once connected.

    ``Database(url, force_rollback=False, **options)``. Options are ``min_size``,
    ``max_size``, ``ssl`` as upstream, and ``acquire_timeout``, ``pool_recycle``,
    ``disconnect_timeout``, ``statement_cache``, ``command_timeout``, ``connect_timeout`` and
    the backend's URL options (see the README); they may also be given in the URL's query
    string.
    """

    # URL dialects and the database each selects (any "+driver" suffix selects the same one).
    # Kept for code that reads it; the backends are in the Rust core and cannot be replaced.
    SUPPORTED_BACKENDS = {
        "postgresql": "postgresql",
        "postgres": "postgresql",
        "mysql": "mysql",
        "sqlite": "sqlite",
    }

    _connection_map: weakref.WeakKeyDictionary[asyncio.Task, Connection]

    def __init__(
        self,
        url: str | DatabaseURL,
        *,
        force_rollback: bool = False,
        **options: typing.Any,
    ) -> None:
        self.url = DatabaseURL(url)
        self.options = options
        self.is_connected = False
        self._connection_map = weakref.WeakKeyDictionary()
        self._force_rollback = force_rollback
        self._native = _native.NativeDatabase(_native_url(self.url, options))
        self._backend_name: str = self._native.backend
        self._compiler: Compiler | None = None
        self._global_connection: Connection | None = None
        self._global_transaction: Transaction | None = None

    # Task-local connections.

    @property
    def _current_task(self) -> asyncio.Task:
        task = asyncio.current_task()
        if not task:
            raise RuntimeError("No currently active asyncio.Task found")
        return task

    @property
    def _connection(self) -> Connection | None:
        return self._connection_map.get(self._current_task)

    @_connection.setter
    def _connection(self, connection: Connection | None) -> None:
        task = self._current_task
        if connection is None:
            self._connection_map.pop(task, None)
        else:
            self._connection_map[task] = connection

    def _compile(
        self, query: Query, values: dict | None
    ) -> tuple[str, dict | None, typing.Any]:
        if isinstance(query, str):
            return query, values, None
        if self._compiler is None:
            from databases._compile import Compiler

            self._compiler = Compiler(self._backend_name)
        return self._compiler.compile(query, values)

    def _compile_many(self, query: Query, values: list) -> tuple[str, list]:
        if isinstance(query, str):
            return query, values
        if self._compiler is None:
            from databases._compile import Compiler

            self._compiler = Compiler(self._backend_name)
        return self._compiler.compile_many(query, list(values))

    def _execute_value(self, result: tuple) -> typing.Any:
        rows_affected, last_insert_id, returned = result
        if self._backend_name == "postgresql":
            return returned
        return last_insert_id if last_insert_id else rows_affected

    def _idle_task(self) -> bool:
        """True when this task holds no connection: a statement then borrows one from the
        pool for just its own run, in a single call into the core."""
        if self._global_connection is not None:
            return False
        task = asyncio.current_task()
        if task is None:
            return False
        connection = self._connection_map.get(task)
        return connection is None or connection._connection_counter == 0

    # Lifecycle.

    async def connect(self) -> None:
        """Opens the pool. Does nothing when already connected."""
        if self.is_connected:
            logger.debug("Already connected, skipping connection")
            return None
        await self._native.connect()
        logger.info("Connected to database %s", self.url.obscure_password)
        self.is_connected = True
        if self._force_rollback:
            assert self._global_connection is None
            assert self._global_transaction is None
            self._global_connection = Connection(self)
            self._global_transaction = self._global_connection.transaction(
                force_rollback=True
            )
            await self._global_transaction.__aenter__()

    async def disconnect(self) -> None:
        """Closes the pool, first rolling back the ``force_rollback`` transaction. Does
        nothing when not connected. Connections other tasks still hold get up to
        ``disconnect_timeout`` seconds (default 10) to come back; then they are closed, and
        those tasks get an ``InterfaceError`` instead of waiting."""
        if not self.is_connected:
            logger.debug("Already disconnected, skipping disconnection")
            return None
        if self._force_rollback:
            assert self._global_connection is not None
            assert self._global_transaction is not None
            await self._global_transaction.__aexit__()
            self._global_transaction = None
            self._global_connection = None
        else:
            try:
                self._connection = None
            except RuntimeError:
                pass
        await self._native.disconnect()
        logger.info("Disconnected from database %s", self.url.obscure_password)
        self.is_connected = False

    async def __aenter__(self) -> Database:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.disconnect()

    # Queries.

    async def fetch_all(
        self, query: Query, values: dict | None = None
    ) -> list[_native.Record]:
        """All rows of a query."""
        if self._idle_task():
            sql, params, spec = self._compile(query, values)
            return await self._native.fetch_all(sql, params, spec)
        async with self.connection() as connection:
            return await connection.fetch_all(query, values)

    async def fetch_one(
        self, query: Query, values: dict | None = None
    ) -> _native.Record | None:
        """The first row of a query, or ``None``."""
        if self._idle_task():
            sql, params, spec = self._compile(query, values)
            return await self._native.fetch_one(sql, params, spec)
        async with self.connection() as connection:
            return await connection.fetch_one(query, values)

    async def fetch_val(
        self, query: Query, values: dict | None = None, column: typing.Any = 0
    ) -> typing.Any:
        """One value of the first row (``column``: position, name or SQLAlchemy column), or
        ``None`` when there is no row."""
        row = await self.fetch_one(query, values)
        return None if row is None else row[column]

    async def execute(self, query: Query, values: dict | None = None) -> typing.Any:
        """Runs a statement. Returns the new row's id on SQLite and MySQL (or the affected
        row count when there is none), and on PostgreSQL the first column of the first
        returned row (``INSERT ... RETURNING id``)."""
        if self._idle_task():
            sql, params, _ = self._compile(query, values)
            return self._execute_value(await self._native.execute(sql, params))
        async with self.connection() as connection:
            return await connection.execute(query, values)

    async def execute_result(self, query: Query, values: dict | None = None) -> ExecuteResult:
        """Runs a statement like ``execute()`` and returns all the database reports about it:
        the affected row count, the inserted id and the returned value (not in upstream)."""
        if self._idle_task():
            sql, params, _ = self._compile(query, values)
            return ExecuteResult(*await self._native.execute(sql, params))
        async with self.connection() as connection:
            return await connection.execute_result(query, values)

    async def execute_many(self, query: Query, values: list) -> None:
        """Runs a statement once per dict in ``values``, in one call (pipelined or batched)."""
        if self._idle_task():
            sql, rows = self._compile_many(query, values)
            await self._native.execute_many(sql, rows)
            return None
        async with self.connection() as connection:
            return await connection.execute_many(query, values)

    def iterate(self, query: Query, values: dict | None = None) -> _Rows:
        """The rows of a query, read from the database in chunks, on this task's connection.

        Queries inside the loop work (on the same connection, so in the same transaction);
        leaving the loop early stops the query. See ``_Rows``."""
        return _Rows(self, None, query, values)

    def connection(self) -> Connection:
        """This task's connection (the shared one in ``force_rollback`` mode). It takes a
        pooled connection when entered with ``async with`` or when a transaction starts."""
        if self._global_connection is not None:
            return self._global_connection
        task = self._current_task
        connection = self._connection_map.get(task)
        if connection is None:
            connection = self._connection_map[task] = Connection(self)
            # Weakly: the map's value must not keep its key alive, or a task that ends
            # without leaving its connection would stay in the map (with both objects).
            connection._task = weakref.ref(task)
        return connection

    def transaction(self, *, force_rollback: bool = False, **kwargs: typing.Any) -> Transaction:
        """A transaction on this task's connection: ``async with``, ``await`` or decorator.
        Keywords: ``isolation``, ``readonly``, ``deferrable`` where the database has them."""
        return Transaction(self.connection, force_rollback=force_rollback, **kwargs)

    @contextlib.contextmanager
    def force_rollback(self) -> typing.Iterator[None]:
        """Within the block, ``connect()`` opens one shared connection inside a transaction
        that ``disconnect()`` rolls back."""
        initial = self._force_rollback
        self._force_rollback = True
        try:
            yield
        finally:
            self._force_rollback = initial

    def __repr__(self) -> str:
        return f"Database({self.url.obscure_password!r})"


class Connection:
    """One pooled connection for a task, counted: taken at the first ``async with`` (or
    transaction), given back when the last one ends."""

    def __init__(self, database: Database, backend: typing.Any = None) -> None:
        self._database = database
        self._native_db = database._native
        self._connection_lock = asyncio.Lock()
        self._native: _native.NativeConnection | None = None
        self._connection_counter = 0
        self._transaction_lock = asyncio.Lock()
        self._transaction_stack: list[Transaction] = []
        self._query_lock = asyncio.Lock()
        # The task whose connection this is, for Database.connection().
        self._task: weakref.ref[asyncio.Task] | None = None

    async def __aenter__(self) -> Connection:
        async with self._connection_lock:
            self._connection_counter += 1
            try:
                if self._connection_counter == 1:
                    self._native = await self._native_db.acquire()
            except BaseException:
                self._connection_counter -= 1
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        async with self._connection_lock:
            assert self._native is not None
            self._connection_counter -= 1
            if self._connection_counter == 0:
                native, self._native = self._native, None
                try:
                    await native.release()
                except BaseException:
                    # Cancelled (or failed) while giving it back: give it back without
                    # waiting, rather than leave it to whenever the object is collected.
                    native.release_soon()
                    raise
                finally:
                    self._forget()

    async def _enter_and_begin(self, options: dict) -> int:
        """Enters this connection and starts a transaction (a savepoint inside one); returns
        its depth. Taking a connection and beginning is one native call."""
        async with self._connection_lock:
            if self._connection_counter == 0:
                self._connection_counter = 1
                try:
                    self._native = await self._native_db.acquire_begin(**options)
                except BaseException:
                    self._connection_counter = 0
                    raise
                return 1
        await self.__aenter__()
        try:
            async with self._query_lock:
                return await self._acquired().begin(**options)
        except BaseException:
            await self.__aexit__()
            raise

    async def _end_and_leave(self, commit: bool, depth: int) -> None:
        """Commits or rolls back the transaction at ``depth`` and leaves this connection.
        When that gives the connection back, both are one native call."""
        async with self._connection_lock:
            if self._connection_counter == 1 and depth == 1 and self._native is not None:
                native, self._native = self._native, None
                self._connection_counter = 0
                try:
                    await native.finish_release(depth, commit)
                except BaseException:
                    # Cancelled before the connection went back: it goes back without
                    # waiting (inside its transaction, so the pool closes it, which rolls
                    # the transaction back on the server).
                    native.release_soon()
                    raise
                finally:
                    self._forget()
                return
        try:
            async with self._query_lock:
                native = self._acquired()
                await (native.commit(depth) if commit else native.rollback(depth))
        finally:
            await self.__aexit__()

    def _leave_soon(self) -> None:
        """Leaves like ``__aexit__`` without awaiting, for code that cannot await (a
        finalizer): when this was the last user, the connection goes back to the pool in the
        background."""
        self._connection_counter -= 1
        if self._connection_counter == 0:
            native, self._native = self._native, None
            if native is not None:
                native.release_soon()
            self._forget()

    def _forget(self) -> None:
        """Drops this connection from its task's slot, so the task's next block takes a new one."""
        task = self._task() if self._task is not None else None
        if task is not None and self._database._connection_map.get(task) is self:
            del self._database._connection_map[task]

    def _acquired(self) -> _native.NativeConnection:
        if self._native is None:
            raise _NotAcquired(
                "Connection is not acquired: use 'async with connection:' or a Database method"
            )
        return self._native

    async def fetch_all(
        self, query: Query, values: dict | None = None
    ) -> list[_native.Record]:
        sql, params, spec = self._database._compile(query, values)
        async with self._query_lock:
            return await self._acquired().fetch_all(sql, params, spec)

    async def fetch_one(
        self, query: Query, values: dict | None = None
    ) -> _native.Record | None:
        sql, params, spec = self._database._compile(query, values)
        async with self._query_lock:
            return await self._acquired().fetch_one(sql, params, spec)

    async def fetch_val(
        self, query: Query, values: dict | None = None, column: typing.Any = 0
    ) -> typing.Any:
        row = await self.fetch_one(query, values)
        return None if row is None else row[column]

    async def execute(self, query: Query, values: dict | None = None) -> typing.Any:
        sql, params, _ = self._database._compile(query, values)
        async with self._query_lock:
            result = await self._acquired().execute(sql, params)
        return self._database._execute_value(result)

    async def execute_result(self, query: Query, values: dict | None = None) -> ExecuteResult:
        sql, params, _ = self._database._compile(query, values)
        async with self._query_lock:
            result = await self._acquired().execute(sql, params)
        return ExecuteResult(*result)

    async def execute_many(self, query: Query, values: list) -> None:
        sql, rows = self._database._compile_many(query, values)
        async with self._query_lock:
            await self._acquired().execute_many(sql, rows)

    def iterate(self, query: Query, values: dict | None = None) -> _Rows:
        return _Rows(self._database, self, query, values)

    def transaction(self, *, force_rollback: bool = False, **kwargs: typing.Any) -> Transaction:
        def connection_callable() -> Connection:
            return self

        return Transaction(connection_callable, force_rollback, **kwargs)

    @property
    def raw_connection(self) -> _native.NativeConnection:
        """The core's connection object (not a driver connection as upstream gave: there
        is no asyncpg, aiomysql or aiosqlite underneath)."""
        return self._acquired()

    @staticmethod
    def _build_query(query: Query, values: dict | None = None) -> typing.Any:
        """Upstream's query builder: a ``text()`` for raw SQL, ``.values()`` for a construct."""
        import sqlalchemy

        if isinstance(query, str):
            text = sqlalchemy.text(query)
            return text.bindparams(**values) if values is not None else text
        if values:
            return query.values(**values)  # type: ignore[attr-defined]
        return query


_END = object()


class _Rows:
    """What ``iterate()`` returns: an async iterator over a query's records, which the
    database sends a chunk at a time (upstream returned an async generator).

    - A query issued inside the loop runs on the same connection, so it sees the
      transaction's writes: the rest of this query's rows are first read into memory (a
      connection runs one statement at a time). Upstream deadlocked here (its issue #176).
    - Leaving the loop early (``break``, an exception) stops the query as soon as this
      object is dropped, without waiting for the event loop to finalize a generator; on
      PostgreSQL and MySQL the rest of the rows are read and dropped in the background, so
      that the connection stays usable. ``aclose()`` does the same explicitly.
    - A cancelled loop stops the statement as any cancelled operation does.
    """

    __slots__ = (
        "_database",
        "_connection",
        "_query",
        "_entered",
        "_cursor",
        "_records",
        "_started",
    )

    def __init__(
        self,
        database: Database,
        connection: Connection | None,
        query: Query,
        values: dict | None,
    ) -> None:
        self._database = database
        # None: the iterating task's connection, entered for the loop's duration.
        self._connection = connection
        self._query = (query, values)
        self._entered: Connection | None = None
        self._cursor: _native.NativeCursor | None = None
        self._records: typing.Iterator[_native.Record] = iter(())
        self._started = False

    def __aiter__(self) -> _Rows:
        return self

    async def __anext__(self) -> _native.Record:
        record = next(self._records, _END)
        if record is not _END:
            return record  # type: ignore[return-value]
        cursor = self._cursor
        if cursor is None:
            if self._started:
                raise StopAsyncIteration
            cursor = await self._start()
        try:
            chunk = await cursor.fetch()
        except asyncio.CancelledError:
            self._stop(cancelled=True)
            raise
        except BaseException:
            self._stop()
            raise
        if not chunk:
            self._cursor = None
            entered, self._entered = self._entered, None
            if entered is not None:
                await entered.__aexit__()
            raise StopAsyncIteration
        self._records = iter(chunk)
        return next(self._records)

    async def _start(self) -> _native.NativeCursor:
        self._started = True
        query, values = self._query
        sql, params, spec = self._database._compile(query, values)
        connection = self._connection
        if connection is None:
            connection = self._database.connection()
            await connection.__aenter__()
            self._entered = connection
        try:
            self._cursor = connection._acquired().iterate(sql, params, spec)
        except BaseException:
            self._stop()
            raise
        return self._cursor

    def _stop(self, cancelled: bool = False) -> None:
        self._started = True
        self._records = iter(())
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            if cancelled:
                cursor.cancel()
            else:
                cursor.close()
        entered, self._entered = self._entered, None
        if entered is not None:
            entered._leave_soon()

    async def aclose(self) -> None:
        """Stops the query (as leaving the loop early does)."""
        self._stop()

    def __del__(self) -> None:
        if self._cursor is not None or self._entered is not None:
            self._stop()


class _Level:
    """One open level of a Transaction in one task: its connection and savepoint depth."""

    __slots__ = ("connection", "depth")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.depth = 0


class Transaction:
    """A transaction: ``async with``, ``await database.transaction()`` then ``commit()`` or
    ``rollback()``, or a decorator. One started inside another is a savepoint."""

    def __init__(
        self,
        connection_callable: typing.Callable[[], Connection],
        force_rollback: bool,
        **kwargs: typing.Any,
    ) -> None:
        self._connection_callable = connection_callable
        self._force_rollback = force_rollback
        unknown = set(kwargs) - {"isolation", "readonly", "deferrable"}
        if unknown:
            raise TypeError(
                f"unexpected transaction option(s) {', '.join(sorted(unknown))}: "
                "the options are isolation, readonly and deferrable"
            )
        self._extra_options = kwargs

    @property
    def _connection(self) -> Connection:
        return self._connection_callable()

    def _levels(self) -> tuple:
        active = _ACTIVE_TRANSACTIONS.get()
        if active is None:
            return ()
        levels = active.get(self, ())
        return levels if isinstance(levels, tuple) else (levels,)

    def _set_levels(self, levels: tuple) -> None:
        active = _ACTIVE_TRANSACTIONS.get()
        active = weakref.WeakKeyDictionary() if active is None else active.copy()
        if levels:
            active[self] = levels[0] if len(levels) == 1 else levels
        else:
            active.pop(self, None)
        _ACTIVE_TRANSACTIONS.set(active)

    @property
    def _transaction(self) -> _Level | None:
        levels = self._levels()
        return levels[-1] if levels else None

    async def __aenter__(self) -> Transaction:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if self._transaction is None:
            # Committed or rolled back inside the block already.
            return
        if exc_type is not None or self._force_rollback:
            try:
                await self.rollback()
            except OperationalError:
                if exc_type is None:
                    raise
                # The connection was lost or abandoned (a cancelled query): the server ends
                # the transaction with it; the original exception is the one to report.
                logger.warning("rollback failed after an error", exc_info=True)
        else:
            await self.commit()

    def __await__(self) -> typing.Generator[typing.Any, None, Transaction]:
        return self.start().__await__()

    def __call__(self, func: _CallableT) -> _CallableT:
        @functools.wraps(func)
        async def wrapper(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            async with self:
                return await func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def _options(self, connection: Connection, is_root: bool) -> dict:
        options = dict(self._extra_options)
        if not is_root:
            # Upstream (asyncpg) let a savepoint repeat the outer options.
            return {}
        if connection._database._backend_name == "sqlite":
            # SQLite transactions are always serializable.
            if str(options.get("isolation", "serializable")).lower() == "serializable":
                options.pop("isolation", None)
        return options

    async def start(self) -> Transaction:
        connection = self._connection
        level = _Level(connection)
        self._set_levels(self._levels() + (level,))
        try:
            async with connection._transaction_lock:
                is_root = not connection._transaction_stack
                options = self._options(connection, is_root)
                level.depth = await connection._enter_and_begin(options)
                connection._transaction_stack.append(self)
        except BaseException:
            self._set_levels(tuple(lv for lv in self._levels() if lv is not level))
            raise
        return self

    def _finish(self, verb: str) -> tuple[Connection, _Level]:
        level = self._transaction
        if level is None:
            raise ProgrammingError(
                f"cannot {verb}: this transaction is not open in this task (it was never "
                "started, or was already committed or rolled back)"
            )
        connection = level.connection
        stack = connection._transaction_stack
        if not stack or stack[-1] is not self or connection._native is None:
            raise ProgrammingError(
                f"cannot {verb} this transaction while a transaction started inside it is "
                "still open: finish the inner one first"
            )
        return connection, level

    async def commit(self) -> None:
        """Commits (or releases the savepoint)."""
        await self._end("commit")

    async def rollback(self) -> None:
        """Rolls back (to the savepoint, for a nested transaction)."""
        await self._end("rollback")

    async def _end(self, how: str) -> None:
        connection = self._connection
        async with connection._transaction_lock:
            connection, level = self._finish("commit" if how == "commit" else "roll back")
            connection._transaction_stack.pop()
            self._set_levels(self._levels()[:-1])
            await connection._end_and_leave(how == "commit", level.depth)
