"""Fixtures for memory tests: the memory store on every backend, and the server over it.

``memory_store`` runs a test once on SQLite and once on PostgreSQL (a fresh
schema per test, dropped afterwards; skipped when PostgreSQL is unreachable).
Both share one ``ManualClock``, so event times are predictable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from agentkeel.memory.backends import MemoryBackend, open_memory_store
from agentkeel.resilience.clock import ManualClock
from tests.memory.apphelpers import running_app, write_tokens


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def memory_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty memory store, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'memory.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=0.0, wall_start=1_700_000_000.0)


@pytest.fixture
async def memory_store(memory_store_url: str, clock: ManualClock) -> AsyncIterator[MemoryBackend]:
    """An open, empty memory store (SQLite, then PostgreSQL)."""
    store = open_memory_store(memory_store_url, clock=clock)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def served(
    memory_store: MemoryBackend, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The memory server app over ``memory_store``, with the test tokens, and a client."""
    async with running_app(write_tokens(tmp_path), memory_store, clock) as pair:
        yield pair


@pytest.fixture
def client(served: tuple[Starlette, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]
