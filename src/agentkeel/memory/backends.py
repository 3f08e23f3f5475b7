"""``open_memory_store``: the memory store a URL names."""

from __future__ import annotations

import re
from pathlib import Path

from agentkeel.errors import ConfigError
from agentkeel.memory.postgres_store import PostgresMemoryStore
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.resilience.clock import Clock

__all__ = ["MemoryBackend", "open_memory_store"]

MemoryBackend = SqliteMemoryStore | PostgresMemoryStore

_ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, a bare file path, "
    "or postgresql://USER@HOST:PORT/DATABASE"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def open_memory_store(
    url: str, *, pool_size: int = 10, clock: Clock | None = None
) -> MemoryBackend:
    """Build (not open) the store ``url`` names; then ``await store.open()``.

    >>> store = open_memory_store("sqlite:///.keel/memory/memory.db")
    """
    value = url.strip()
    if not value:
        raise ConfigError(f"memory store URL is empty; use {_ACCEPTED}")
    match = _SCHEME.match(value)
    if match is None:
        return SqliteMemoryStore(path=Path(value).expanduser(), clock=clock)
    scheme = match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        return PostgresMemoryStore(url=value, pool_size=pool_size, clock=clock)
    if scheme == "sqlite" and value[:10].lower() == "sqlite:///" and len(value) > 10:
        return SqliteMemoryStore(path=Path(value[10:]).expanduser(), clock=clock)
    raise ConfigError(f"memory store URL {value!r} is not understood; use {_ACCEPTED}")
