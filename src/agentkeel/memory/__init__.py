"""The memory server and its stores: durable agent memory with a hash-chained log.

>>> store = open_memory_store("sqlite:///.keel/memory/memory.db")
>>> await store.open()
>>> await store.write([CreateMemory(namespace="agent:support/user:42", content="likes tea")])

Agents reach the server through ``MemoryClient`` (``turn.memory``): reads fail fast
while it is down, writes wait in a durable local outbox.

The store contract (records, operations, the ``MemoryStore`` Protocol) and the
settings are imported eagerly; everything else loads on first use, so the tool
server and agent replicas, which only need the client, never load the memory
server, its stores or the PostgreSQL driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentkeel.config.memory import MemoryClientSettings, MemorySettings, RetentionSettings
from agentkeel.memory.store import (
    CreateMemory,
    DeleteMemory,
    MemoryRecord,
    MemoryStore,
    SearchHit,
    SearchQuery,
    SearchResult,
    UpdateMemory,
    WriteResult,
)

if TYPE_CHECKING:
    from agentkeel.memory.api_client import MemoryApiClient
    from agentkeel.memory.app import create_app
    from agentkeel.memory.backends import MemoryBackend, open_memory_store
    from agentkeel.memory.client import MemoryClient, WriteOutcome, build_memory_client
    from agentkeel.memory.integrity import IntegrityReport, check_integrity
    from agentkeel.memory.outbox import MemoryOutbox
    from agentkeel.memory.postgres_store import PostgresMemoryStore
    from agentkeel.memory.snapshots import SnapshotManager, plan_retention
    from agentkeel.memory.sqlite_search import SearchBudget
    from agentkeel.memory.sqlite_store import SqliteMemoryStore

# Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    "IntegrityReport": "agentkeel.memory.integrity",
    "MemoryApiClient": "agentkeel.memory.api_client",
    "MemoryBackend": "agentkeel.memory.backends",
    "MemoryClient": "agentkeel.memory.client",
    "MemoryOutbox": "agentkeel.memory.outbox",
    "PostgresMemoryStore": "agentkeel.memory.postgres_store",
    "SearchBudget": "agentkeel.memory.sqlite_search",
    "SnapshotManager": "agentkeel.memory.snapshots",
    "SqliteMemoryStore": "agentkeel.memory.sqlite_store",
    "WriteOutcome": "agentkeel.memory.client",
    "build_memory_client": "agentkeel.memory.client",
    "check_integrity": "agentkeel.memory.integrity",
    "create_app": "agentkeel.memory.app",
    "open_memory_store": "agentkeel.memory.backends",
    "plan_retention": "agentkeel.memory.snapshots",
}

__all__ = [
    "CreateMemory",
    "DeleteMemory",
    "IntegrityReport",
    "MemoryApiClient",
    "MemoryBackend",
    "MemoryClient",
    "MemoryClientSettings",
    "MemoryOutbox",
    "MemoryRecord",
    "MemorySettings",
    "MemoryStore",
    "PostgresMemoryStore",
    "RetentionSettings",
    "SearchBudget",
    "SearchHit",
    "SearchQuery",
    "SearchResult",
    "SnapshotManager",
    "SqliteMemoryStore",
    "UpdateMemory",
    "WriteOutcome",
    "WriteResult",
    "build_memory_client",
    "check_integrity",
    "create_app",
    "open_memory_store",
    "plan_retention",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkeel.memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
