"""The object an import string names, ``"package.module:attribute.path"``: kept for code
written against encode/databases, which shipped this helper."""

from __future__ import annotations

import importlib
import typing


class ImportFromStringError(Exception):
    """The import string is malformed, or its module or attribute does not exist."""


def import_from_string(import_str: str) -> typing.Any:
    """Imports the module before the colon and returns the attribute path after it.

    An ``ImportError`` raised while the module itself runs (one of its own imports failing)
    propagates unchanged; only a module that does not exist becomes an
    ``ImportFromStringError``."""
    module_name, _, path = import_str.partition(":")
    if not module_name or not path:
        raise ImportFromStringError(
            f'Import string "{import_str}" must be in format "<module>:<attribute>".'
        )
    try:
        found: typing.Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ImportFromStringError(f'Could not import module "{module_name}".') from None
    try:
        for name in path.split("."):
            found = getattr(found, name)
    except AttributeError:
        raise ImportFromStringError(
            f'Attribute "{path}" not found in module "{module_name}".'
        ) from None
    return found
