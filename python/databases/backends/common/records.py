"""Kept for imports written against encode/databases."""

from databases._native import Record

__all__ = ["Record"]
