"""Session store backends and ``open_store``, which picks one from a URL.

>>> store = open_store("sqlite:///.keel/sessions.db")
>>> await store.open()
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agentkeel.runtime.store import BudgetLedger, QuotaWindowPurger, SessionStore
from agentkeel.runtime.stores.postgres import PostgresSessionStore
from agentkeel.runtime.stores.sqlite import SqliteSessionStore
from agentkeel.runtime.usage import UsageReader, UsageRecorder
from agentkeel.storage.urls import SqlitePath, parse_store_url

__all__ = ["PostgresSessionStore", "SessionBackend", "SqliteSessionStore", "open_store"]


@runtime_checkable
class SessionBackend(
    SessionStore, BudgetLedger, QuotaWindowPurger, UsageRecorder, UsageReader, Protocol
):
    """A store for sessions, token budgets (and their ended windows) and usage alike: what
    ``open_store`` returns."""


def open_store(url: str, *, pool_size: int = 10) -> SessionBackend:
    """Build the session store a URL names; the caller then does ``await store.open()``.

    ``sqlite:///rel.db`` is relative to the working directory and
    ``sqlite:////var/lib/keel/sessions.db`` is absolute (as in SQLAlchemy); a bare
    path means a SQLite file too. ``postgresql://`` and ``postgres://`` URLs go to
    PostgreSQL with a pool of ``pool_size`` connections. Anything else is a
    ``ConfigError`` naming the value and the accepted forms.
    """
    target = parse_store_url(url, what="store URL")
    if isinstance(target, SqlitePath):
        return SqliteSessionStore(path=target.path)
    return PostgresSessionStore(url=target.url, pool_size=pool_size)
