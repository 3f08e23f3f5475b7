"""``open_memory_store``: the memory store a URL names."""

from __future__ import annotations

from agentkeel.memory.postgres_store import PostgresMemoryStore
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.resilience.clock import Clock
from agentkeel.storage.urls import SqlitePath, parse_store_url

__all__ = ["MemoryBackend", "open_memory_store"]

MemoryBackend = SqliteMemoryStore | PostgresMemoryStore


def open_memory_store(
    url: str, *, pool_size: int = 10, clock: Clock | None = None
) -> MemoryBackend:
    """Build (not open) the store ``url`` names; then ``await store.open()``.

    The forms are those of the session store's URL (``parse_store_url``).

    >>> store = open_memory_store("sqlite:///.keel/memory/memory.db")
    """
    target = parse_store_url(url, what="memory store URL")
    if isinstance(target, SqlitePath):
        return SqliteMemoryStore(path=target.path, clock=clock)
    return PostgresMemoryStore(url=target.url, pool_size=pool_size, clock=clock)
