"""SQLAlchemy Core queries compiled for the connected database, with a compilation cache.

A raw SQL string never comes here: it goes to the Rust core as it is. A SQLAlchemy construct
is compiled once per shape (SQLAlchemy's own cache key, which leaves the literal values out)
with the ``named`` parameter style, so the core sees the same ``:name`` placeholders as in raw
SQL. Bind processors run on the parameters (JSON to text, Enum to its name, ...), and the
result columns' processors are handed to the core, which applies them while it builds the
records.
"""

from __future__ import annotations

import typing
from collections import OrderedDict

import sqlalchemy
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.ddl import ExecutableDDLElement

__all__ = ["Compiler", "dialect_for"]

# (processors per column, extra column keys) or None for a query without typed columns.
Spec = typing.Optional[typing.Tuple[typing.Optional[tuple], typing.Optional[dict]]]

_CACHE_SIZE = 512


def dialect_for(backend: str) -> Dialect:
    """The SQLAlchemy dialect that queries for ``backend`` are compiled with."""
    if backend == "postgresql":
        from sqlalchemy.dialects.postgresql.base import PGDialect

        dialect: Dialect = PGDialect(paramstyle="named")
        # As upstream's asyncpg backend: JSON and numerics arrive undecoded, enums are native.
        dialect.implicit_returning = True  # type: ignore[attr-defined]
        dialect.supports_native_enum = True
        dialect.supports_smallserial = True  # type: ignore[attr-defined]
        dialect._backslash_escapes = False  # type: ignore[attr-defined]
        dialect.supports_sane_multi_rowcount = True
        dialect._has_native_hstore = True  # type: ignore[attr-defined]
        dialect.supports_native_decimal = True
        return dialect
    if backend == "mysql":
        from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql

        dialect = MySQLDialect_pymysql(paramstyle="named")
        dialect.supports_native_decimal = True
        return dialect
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    dialect = SQLiteDialect_pysqlite(paramstyle="named")
    dialect.supports_native_decimal = False
    return dialect


class _Entry:
    """One compiled query shape."""

    __slots__ = ("compiled", "expands", "processors", "spec", "sql")

    def __init__(self, compiled: typing.Any, dialect: Dialect) -> None:
        self.compiled = compiled
        self.sql: str = compiled.string
        self.expands = bool(
            getattr(compiled, "post_compile_params", None)
            or getattr(compiled, "literal_execute_params", None)
        )
        self.processors: dict = dict(getattr(compiled, "_bind_processors", {}) or {})
        self.spec = _result_spec(compiled, dialect)


def _result_spec(compiled: typing.Any, dialect: Dialect) -> Spec:
    columns = getattr(compiled, "_result_columns", None)
    if not columns:
        return None
    processors = []
    extra: dict = {}
    for index, (keyname, name, objects, type_) in enumerate(columns):
        processors.append(type_._cached_result_processor(dialect, None))
        extra.setdefault(keyname, index)
        for obj in objects:
            if isinstance(obj, sqlalchemy.Column) or hasattr(obj, "table"):
                extra.setdefault(str(obj), index)
    if not any(p is not None for p in processors):
        return (None, extra)
    return (tuple(processors), extra)


def _apply(processors: dict, params: dict) -> dict:
    for name, process in processors.items():
        if name in params:
            params[name] = process(params[name])
    return params


class Compiler:
    """Compiles SQLAlchemy constructs for one dialect, caching each query shape."""

    def __init__(self, backend: str) -> None:
        self.dialect = dialect_for(backend)
        self._cache: OrderedDict[typing.Any, _Entry] = OrderedDict()

    def _entry(self, query: ClauseElement, key: typing.Any, **kw: typing.Any) -> _Entry:
        if key is not None:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        entry = _Entry(query.compile(dialect=self.dialect, **kw), self.dialect)
        if key is not None:
            self._cache[key] = entry
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return entry

    def compile(
        self, query: ClauseElement, values: dict | None = None
    ) -> tuple[str, dict, Spec]:
        """SQL with ``:name`` placeholders, its parameters, and how to process results."""
        if values:
            query = query.values(**values)  # type: ignore[attr-defined]
        if isinstance(query, ExecutableDDLElement):
            return str(query.compile(dialect=self.dialect)), {}, None
        cache_key = query._generate_cache_key()
        key = None if cache_key is None else (cache_key.key, False)
        entry = self._entry(query, key, cache_key=cache_key)
        compiled = entry.compiled
        if cache_key is not None:
            params = compiled.construct_params(extracted_parameters=cache_key.bindparams)
        else:
            params = compiled.construct_params()
        if entry.expands:
            expanded = compiled._process_parameters_for_postcompile(params)
            return (
                expanded.statement,
                _apply(expanded.processors, dict(expanded.parameters)),
                entry.spec,
            )
        return entry.sql, _apply(entry.processors, params), entry.spec

    def compile_many(
        self, query: ClauseElement, rows: list[dict]
    ) -> tuple[str, list[dict]]:
        """One statement for many parameter sets (``execute_many``)."""
        if isinstance(query, ExecutableDDLElement):
            return str(query.compile(dialect=self.dialect)), [{} for _ in rows]
        keys = list(rows[0].keys()) if rows else []
        cache_key = query._generate_cache_key()
        key = None if cache_key is None else (cache_key.key, True, tuple(keys))
        entry = self._entry(
            query, key, cache_key=cache_key, column_keys=keys, for_executemany=True
        )
        compiled = entry.compiled
        extracted = None if cache_key is None else cache_key.bindparams
        out = []
        sql = entry.sql
        first = True
        for row in rows:
            params = compiled.construct_params(
                params=row, extracted_parameters=extracted
            )
            if entry.expands:
                expanded = compiled._process_parameters_for_postcompile(params)
                if not first and expanded.statement != sql:
                    raise ValueError(
                        "execute_many cannot run a query whose IN lists expand differently "
                        "per row; call execute for each row instead"
                    )
                sql = expanded.statement
                out.append(_apply(expanded.processors, dict(expanded.parameters)))
            else:
                out.append(_apply(entry.processors, params))
            first = False
        return sql, out
