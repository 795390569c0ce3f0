"""DatabaseURL reads URLs exactly as upstream does."""

from __future__ import annotations

import pytest

from databases import DatabaseURL


def test_components() -> None:
    u = DatabaseURL("postgresql+asyncpg://user:p%40ss%2Fw@HOST.Example.com:5433/mydb?min_size=2&a=1&a=2")
    assert u.scheme == "postgresql+asyncpg"
    assert u.dialect == "postgresql"
    assert u.driver == "asyncpg"
    assert u.username == "user"
    assert u.password == "p@ss/w"
    assert u.userinfo == b"user:p%40ss%2Fw"
    assert u.hostname == "host.example.com"
    assert u.port == 5433
    assert u.netloc == "user:p%40ss%2Fw@HOST.Example.com:5433"
    assert u.database == "mydb"
    assert u.options == {"min_size": "2", "a": "2"}
    assert str(u).startswith("postgresql+asyncpg://user:p%40ss%2Fw@")


def test_defaults_and_sqlite_paths() -> None:
    assert DatabaseURL("postgresql://localhost/db").driver == ""
    assert DatabaseURL("postgresql://localhost/db").username is None
    assert DatabaseURL("postgresql://localhost/db").port is None
    assert DatabaseURL("sqlite:///:memory:").database == ":memory:"
    assert DatabaseURL("sqlite://").database == ""
    assert DatabaseURL("sqlite:///./rel/x.db").database == "./rel/x.db"
    assert DatabaseURL("sqlite:////abs/x.db").database == "/abs/x.db"
    assert DatabaseURL("postgresql://u@/db?host=/var/run/postgresql").hostname == "/var/run/postgresql"
    assert DatabaseURL("mysql+aiomysql://u:@h/db").password == ""


def test_replace() -> None:
    u = DatabaseURL("postgresql://user:pass@localhost:5432/name")
    assert str(u.replace(database="test_name")) == "postgresql://user:pass@localhost:5432/test_name"
    assert str(u.replace(port=123)) == "postgresql://user:pass@localhost:123/name"
    assert str(u.replace(driver="asyncpg")) == "postgresql+asyncpg://user:pass@localhost:5432/name"
    assert str(u.replace(driver="asyncpg").replace(driver="")) == str(u)
    assert str(u.replace(username="other")) == "postgresql://other:pass@localhost:5432/name"
    assert str(u.replace(hostname="db")) == "postgresql://user:pass@db:5432/name"
    s = DatabaseURL("sqlite:///mydatabase")
    assert str(s.replace(database="test_" + s.database)) == "sqlite:///test_mydatabase"
    a = DatabaseURL("sqlite:////absolute/path")
    assert str(a.replace(database=a.database + "_test")) == "sqlite:////absolute/path_test"
    with pytest.raises(ValueError):
        u.replace(nonsense=1)


def test_obscured_password_repr_and_equality() -> None:
    u = DatabaseURL("postgresql://username:password@localhost/name")
    assert u.obscure_password == "postgresql://username:********@localhost/name"
    assert repr(u) == "DatabaseURL('postgresql://username:********@localhost/name')"
    assert "password" not in repr(u).replace("********", "")
    assert u == "postgresql://username:password@localhost/name"
    assert u == DatabaseURL("postgresql://username:password@localhost/name")
    assert DatabaseURL(u) == u
    assert DatabaseURL("mysql://u:@h/db").obscure_password == "mysql://u:@h/db"
    with pytest.raises(TypeError, match="Invalid type"):
        DatabaseURL(123)  # type: ignore[arg-type]
