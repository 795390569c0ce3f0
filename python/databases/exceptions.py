"""The exceptions this package raises: the PEP 249 hierarchy, the same on every database.

``Error`` is the base of them all. Each exception raised for a database error carries:

* ``kind``: a portable name such as ``"unique_violation"``, ``"connection_lost"`` or
  ``"pool_timeout"``;
* ``code``: the database's own code (PostgreSQL SQLSTATE, MySQL error number, SQLite result
  code), or ``None``;
* ``sqlstate``: the SQLSTATE where the database gives one (PostgreSQL), else ``None``;
* ``db_message``: the message the database reported, or ``None``.
"""

from databases._native import (
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

__all__ = [
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
]
