"""``DatabaseURL``: a database URL, read the way encode/databases reads it.

The URL string is kept exactly as given; its parts are read with :func:`urllib.parse.urlsplit`,
so every property returns what upstream returns for the same string.
"""

from __future__ import annotations

import typing
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

__all__ = ["DatabaseURL"]


class _EmptyNetloc(str):
    """An empty netloc that still counts as present, so ``sqlite:///x`` keeps its slashes."""

    def __bool__(self) -> bool:
        return True


class DatabaseURL:
    """A database URL such as ``postgresql://user:secret@localhost:5432/app?min_size=2``."""

    def __init__(self, url: str | DatabaseURL) -> None:
        if isinstance(url, DatabaseURL):
            self._url: str = url._url
        elif isinstance(url, str):
            self._url = url
        else:
            raise TypeError(
                f"Invalid type for DatabaseURL. Expected str or DatabaseURL, got {type(url)}"
            )

    @property
    def components(self) -> SplitResult:
        if not hasattr(self, "_components"):
            self._components = urlsplit(self._url)
        return self._components

    @property
    def scheme(self) -> str:
        return self.components.scheme

    @property
    def dialect(self) -> str:
        return self.scheme.split("+")[0]

    @property
    def driver(self) -> str:
        if "+" not in self.scheme:
            return ""
        return self.scheme.split("+", 1)[1]

    @property
    def userinfo(self) -> bytes | None:
        if self.components.username:
            info = self.components.username
            if self.components.password:
                info += ":" + self.components.password
            return info.encode("utf-8")
        return None

    @property
    def username(self) -> str | None:
        if self.components.username is None:
            return None
        return unquote(self.components.username)

    @property
    def password(self) -> str | None:
        if self.components.password is None:
            return None
        return unquote(self.components.password)

    @property
    def hostname(self) -> str | None:
        return (
            self.components.hostname
            or self.options.get("host")
            or self.options.get("unix_sock")
        )

    @property
    def port(self) -> int | None:
        return self.components.port

    @property
    def netloc(self) -> str | None:
        return self.components.netloc

    @property
    def database(self) -> str:
        path = self.components.path
        if path.startswith("/"):
            path = path[1:]
        return unquote(path)

    @property
    def options(self) -> dict[str, str]:
        if not hasattr(self, "_options"):
            self._options = dict(parse_qsl(self.components.query))
        return self._options

    def replace(self, **kwargs: typing.Any) -> DatabaseURL:
        """A copy with some parts replaced: ``username``, ``password``, ``hostname``,
        ``port``, ``database``, ``dialect``, ``driver``, or any ``SplitResult`` field."""
        if any(k in kwargs for k in ("username", "password", "hostname", "port")):
            hostname = kwargs.pop("hostname", self.hostname)
            port = kwargs.pop("port", self.port)
            username = kwargs.pop("username", self.components.username)
            password = kwargs.pop("password", self.components.password)

            netloc = hostname
            if port is not None:
                netloc += f":{port}"
            if username is not None:
                userpass = username
                if password is not None:
                    userpass += f":{password}"
                netloc = f"{userpass}@{netloc}"
            kwargs["netloc"] = netloc

        if "database" in kwargs:
            kwargs["path"] = "/" + kwargs.pop("database")

        if "dialect" in kwargs or "driver" in kwargs:
            dialect = kwargs.pop("dialect", self.dialect)
            driver = kwargs.pop("driver", self.driver)
            kwargs["scheme"] = f"{dialect}+{driver}" if driver else dialect

        if not kwargs.get("netloc", self.netloc):
            # Keeps the empty authority of "sqlite:///file.db" when it is put back together.
            kwargs["netloc"] = _EmptyNetloc()

        components = self.components._replace(**kwargs)
        return self.__class__(components.geturl())

    @property
    def obscure_password(self) -> str:
        """The URL with its password, if any, shown as ``********``."""
        if self.password:
            return self.replace(password="********")._url
        return self._url

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({repr(self.obscure_password)})"

    def __eq__(self, other: typing.Any) -> bool:
        return str(self) == str(other)
