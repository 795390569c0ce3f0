"""Kept for imports written against encode/databases: the record class of every backend."""

from databases._native import Record

__all__ = ["Record"]
