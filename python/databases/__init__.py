"""Async access to PostgreSQL, MySQL/MariaDB and SQLite on a Rust core.

A drop-in replacement for encode/databases 0.9: ``from databases import Database``.
"""

import collections.abc

from databases._native import Record
from databases._native import __version__ as __version__
from databases.core import Connection, Database, DatabaseURL, ExecuteResult, Transaction
from databases.exceptions import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

collections.abc.Mapping.register(Record)

__all__ = [
    "Connection",
    "DataError",
    "Database",
    "DatabaseError",
    "DatabaseURL",
    "Error",
    "ExecuteResult",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Record",
    "Transaction",
    "__version__",
]
