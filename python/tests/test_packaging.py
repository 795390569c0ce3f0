"""What the installed package ships."""

from __future__ import annotations

import pathlib
import re

import databases
from databases import _native

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_version_comes_from_the_crate() -> None:
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert version is not None
    assert databases.__version__ == version.group(1)


def test_public_names() -> None:
    for name in databases.__all__:
        assert hasattr(databases, name), name
    assert {"Database", "DatabaseURL"} <= set(databases.__all__)


def test_ships_typing_information() -> None:
    package = pathlib.Path(databases.__file__).parent
    assert (package / "py.typed").exists()
    stub = package / "_native.pyi"
    assert stub.exists()
    text = stub.read_text()
    for name in ("NativeDatabase", "NativeConnection", "NativeCursor", "Record", "Awaitable"):
        assert f"class {name}" in text
        assert hasattr(_native, name)
