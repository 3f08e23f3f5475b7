"""Session store backends and ``open_store``, which picks one from a URL.

>>> store = open_store("sqlite:///.keel/sessions.db")
>>> await store.open()
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from agentkeel.errors import ConfigError
from agentkeel.runtime.store import BudgetLedger, SessionStore
from agentkeel.runtime.stores.postgres import PostgresSessionStore
from agentkeel.runtime.stores.sqlite import SqliteSessionStore

__all__ = ["PostgresSessionStore", "SessionBackend", "SqliteSessionStore", "open_store"]

_ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, a bare file path, "
    "or postgresql://USER@HOST:PORT/DATABASE (postgres:// also works)"
)
# A URL scheme, but not a one-letter Windows drive such as C:.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


@runtime_checkable
class SessionBackend(SessionStore, BudgetLedger, Protocol):
    """A store for sessions and token budgets alike: what ``open_store`` returns."""


def open_store(url: str, *, pool_size: int = 10) -> SessionBackend:
    """Build the session store a URL names; the caller then does ``await store.open()``.

    ``sqlite:///rel.db`` is relative to the working directory and
    ``sqlite:////var/lib/keel/sessions.db`` is absolute (as in SQLAlchemy); a bare
    path means a SQLite file too. ``postgresql://`` and ``postgres://`` URLs go to
    PostgreSQL with a pool of ``pool_size`` connections. Anything else is a
    ``ConfigError`` naming the value and the accepted forms.
    """
    value = url.strip()
    if not value:
        raise ConfigError(f"store URL is empty; use {_ACCEPTED}")
    match = _SCHEME.match(value)
    if match is None:
        return SqliteSessionStore(path=Path(value).expanduser())
    scheme = match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        return PostgresSessionStore(url=value, pool_size=pool_size)
    if scheme == "sqlite":
        prefix = value[: len("sqlite:///")].lower()
        path = value[len("sqlite:///") :]
        if prefix != "sqlite:///" or not path or "?" in path:
            raise ConfigError(
                f"store URL {value!r} is not a SQLite URL agentkeel understands; "
                f"write it as {_ACCEPTED}"
            )
        return SqliteSessionStore(path=Path(path).expanduser())
    shown = _PASSWORD.sub(r"\1***@", value)  # never echo a password into logs
    raise ConfigError(f"store URL {shown!r} has unsupported scheme {scheme!r}; use {_ACCEPTED}")
