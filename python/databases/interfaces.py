"""Names that code written for encode/databases imports from ``databases.interfaces``.

``Record`` is the class of every row this package returns. The backend base classes are
kept as names only: the backends are in the Rust core and cannot be replaced from Python.
"""

from databases._native import Record

__all__ = ["ConnectionBackend", "DatabaseBackend", "Record", "TransactionBackend"]


class DatabaseBackend:
    """Kept for imports; custom Python backends are not supported."""


class ConnectionBackend:
    """Kept for imports; custom Python backends are not supported."""


class TransactionBackend:
    """Kept for imports; custom Python backends are not supported."""
