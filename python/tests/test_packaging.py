"""What the installed package ships."""

from __future__ import annotations

import pathlib
import re

import pytest

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


def test_import_from_string(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``databases.importer``, which upstream shipped, is there with its messages."""
    import os.path

    from databases.importer import ImportFromStringError, import_from_string

    assert import_from_string("os.path:join") is os.path.join
    assert import_from_string("databases:Database.connect") is databases.Database.connect
    for bad, message in [
        ("os.path", 'Import string "os.path" must be in format "<module>:<attribute>".'),
        ("os.path:", 'Import string "os.path:" must be in format "<module>:<attribute>".'),
        ("no_such_module_here:x", 'Could not import module "no_such_module_here".'),
        ("os.path:no.such", 'Attribute "no.such" not found in module "os.path".'),
    ]:
        with pytest.raises(ImportFromStringError) as caught:
            import_from_string(bad)
        assert str(caught.value) == message
    # A module that exists but fails to import one of its own dependencies: that error is the
    # one to see.
    (tmp_path / "broken_module_for_import.py").write_text("import no_such_dependency_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_here"):
        import_from_string("broken_module_for_import:x")
