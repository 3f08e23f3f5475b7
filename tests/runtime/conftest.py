"""Fixtures for runtime tests: the session store on every backend.

``session_store`` runs a test once on SQLite and once on PostgreSQL. The
PostgreSQL run uses a fresh schema per test (dropped afterwards) and skips
when the server is unreachable (``postgres_url`` in the top-level conftest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from agentkeel.runtime.stores import SessionBackend, open_store

SessionStoreFactory = Callable[[], Awaitable[SessionBackend]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def session_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL for an empty store, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
async def session_store_factory(session_store_url: str) -> AsyncIterator[SessionStoreFactory]:
    """Opens store objects on the same database, as separate replicas would; closes them."""
    opened: list[SessionBackend] = []

    async def open_one() -> SessionBackend:
        store = open_store(session_store_url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.aclose()


@pytest.fixture
async def session_store(session_store_factory: SessionStoreFactory) -> SessionBackend:
    """An open, empty session store (SQLite, then PostgreSQL)."""
    return await session_store_factory()
